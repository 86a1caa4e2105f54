"""LLM-as-judge pairwise evaluation (seed 000, Sec. 3.3 "LLM Evaluation", Table 2, App. D).

A method's outputs (the *candidate*) are compared with the KL-distillation baseline's outputs
(the *baseline*) on the same test inputs, for one criterion (overall quality, informativeness,
coherence) of one task (summarization, translation).

Protocol (the paper queries the judge four times per pair "by swapping the two candidates and
their IDs"): every pair is judged in the four presentations

    shown first in {candidate, baseline}  x  ID of the first-shown in {"A", "B"}

so that a judge with a pure position bias or a pure ID bias scores exactly 50%. Each answer is
parsed from its last ``Preferred: <ID>`` line (case, whitespace and markdown tolerant; anything
else is *invalid*). Then, over N pairs (4N queries):

- an example's score = share of its *valid* verdicts that prefer the candidate; an example
  with no valid verdict is left out of the win rate (its queries count in ``invalid_rate``);
- ``win_rate`` = mean example score (a fraction in [0, 1]) with a seeded percentile-bootstrap
  95% CI over examples (``ci_low``, ``ci_high``). With every answer valid this equals the share
  of the 4N queries won, which is what Table 2 reports (in %);
- ``tie_rate``: share of scored examples whose valid verdicts split evenly (score 0.5);
- ``invalid_rate``: share of the 4N queries that were unparseable or failed (after retries);
- ``consistency``: share of all examples whose four verdicts are valid and prefer the same
  *system* (content-consistent); a position- or ID-biased judge gets 0;
- ``first_position_rate``: share of valid verdicts that pick whichever text was shown first
  (0.5 = no position bias); ``id_a_rate``: share of valid verdicts that pick ID "A".

Answers are cached on disk (one JSON file per answer, written atomically) under a key that
hashes the judge identity (backend, model, decoding settings; never the URL or the API key),
the template text and the filled prompt inputs. Answers that failed (network errors, HTTP
errors after retries) are not cached, so a re-run retries them; a successful answer is cached
whether or not it parses. An interrupted evaluation therefore resumes, and a finished one
re-runs with zero backend calls.

Backends: ``OpenAIChatBackend`` (any OpenAI-compatible ``/chat/completions`` server, e.g.
``vllm serve Qwen/Qwen2.5-72B-Instruct`` as in the paper), ``TransformersChatBackend`` (a local
chat model) and ``SurrogateJudge`` (no LLM: a reference-based metric answering through the
same prompt/parse protocol; the offline default, clearly labelled ``surrogate:...``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

TASKS = ("summarization", "translation")
CRITERIA = ("overall", "informativeness", "coherence")
IDS = ("A", "B")
PLACEHOLDERS = ("source", "id_1", "candidate_1", "id_2", "candidate_2")
DEFAULT_TEMPLATES_DIR = "params/judge"
CACHE_FORMAT = 1  # bump to invalidate every cached answer

_REPO_ROOT = Path(__file__).resolve().parents[1]
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_ANY_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class JudgeError(RuntimeError):
    """A judge backend could not produce an answer (network/HTTP failure, missing input)."""


class TemplateError(ValueError):
    """A prompt template file is missing or malformed; the message names the file."""


class InputError(ValueError):
    """Bad evaluation inputs; the message names the file (or list) and the line."""


# --------------------------------------------------------------------------- templates


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def resolve_templates_dir(templates_dir: str | os.PathLike = DEFAULT_TEMPLATES_DIR) -> Path:
    """A relative folder is looked up in the working directory first, then in the repository
    root (so notebooks running inside ``notebooks/`` find ``params/judge``)."""
    path = Path(templates_dir)
    if path.is_absolute() or path.is_dir():
        return path
    alt = _REPO_ROOT / path
    return alt if alt.is_dir() else path


def template_path(task: str, criterion: str, templates_dir=DEFAULT_TEMPLATES_DIR) -> Path:
    _check_choice(task, TASKS, "task")
    _check_choice(criterion, CRITERIA, "criterion")
    return resolve_templates_dir(templates_dir) / f"{task}_{criterion}.txt"


def load_template(task: str, criterion: str, templates_dir=DEFAULT_TEMPLATES_DIR) -> str:
    """The text of ``<templates_dir>/<task>_<criterion>.txt``, checked to hold each placeholder
    ``{source} {id_1} {candidate_1} {id_2} {candidate_2}`` and no other ``{name}``."""
    path = template_path(task, criterion, templates_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(
            f"judge template not found: {path} (expected one file per task and criterion, "
            f"named <task>_<criterion>.txt; see params/judge/README.md)"
        ) from None
    except OSError as e:
        raise TemplateError(f"cannot read judge template {path}: {e}") from None
    missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in text]
    if missing:
        raise TemplateError(
            f"judge template {path} lacks placeholder(s) "
            + ", ".join("{" + p + "}" for p in missing)
        )
    unknown = sorted({m for m in _ANY_PLACEHOLDER_RE.findall(text) if m not in PLACEHOLDERS})
    if unknown:
        raise TemplateError(
            f"judge template {path} has unknown placeholder(s) "
            + ", ".join("{" + u + "}" for u in unknown)
            + f"; allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )
    return text


def fill_template(template: str, **values: str) -> str:
    """Substitute the five placeholders in one pass (text inside the values is never
    re-interpreted, and other braces in the template are left alone)."""
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


# --------------------------------------------------------------------------- parsing

_PREFERRED_RE = re.compile(r"preferred\s*(?:id|choice|answer)?\s*[:：]\s*(.*)$", re.IGNORECASE)
_DECORATION = str.maketrans({c: " " for c in "*_`#>\"'[]<>(){}.,;:!|~="})
_LEAD_WORDS = {"summary", "translation", "candidate", "id", "option", "response", "text", "output"}


def parse_preferred(text: str | None, ids: Sequence[str] = IDS) -> str | None:
    """The ID named on the last ``Preferred: <ID>`` line of ``text``, or None (invalid).

    Tolerant of case, whitespace, markdown (``**Preferred:** **A**``), brackets/quotes and a
    leading word (``Summary B``); anything else (``A and B``, ``tie``, ``none``) is invalid."""
    if not text:
        return None
    value = None
    for line in text.splitlines():
        clean = line.replace("*", "").replace("_", " ").strip()
        m = None
        for m in _PREFERRED_RE.finditer(clean):
            pass
        if m is not None:
            value = m.group(1)
    if value is None:
        return None
    words = value.translate(_DECORATION).split()
    while len(words) > 1 and words[0].lower() in _LEAD_WORDS:
        words = words[1:]
    if len(words) != 1:
        return None
    by_lower = {i.lower(): i for i in ids}
    return by_lower.get(words[0].lower())


# --------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class JudgeQuery:
    """One judge query: the filled prompt, plus its parts (a side channel that only the
    surrogate judge reads; LLM backends see ``prompt`` alone)."""

    prompt: str
    task: str
    criterion: str
    source: str
    id_1: str
    candidate_1: str
    id_2: str
    candidate_2: str
    reference: str | None = None


OnResult = Callable[[int, "str | None", "JudgeError | None"], None]


class JudgeBackend(ABC):
    """A judge: ``complete(prompt) -> answer text``; raises ``JudgeError`` on failure."""

    name: str = "judge"
    concurrency: int = 1
    requires_reference: bool = False

    @abstractmethod
    def complete(self, prompt: str) -> str: ...

    def answer(self, query: JudgeQuery) -> str:
        return self.complete(query.prompt)

    def identity(self) -> dict:
        """What determines the answers (the cache key); never a secret nor a URL."""
        return {"backend": type(self).__name__, "name": self.name}

    def label(self, task: str, criterion: str) -> str:
        """The judge's name as reported with a result."""
        return self.name

    def complete_batch(self, queries: Sequence[JudgeQuery], on_result: OnResult,
                       progress: bool = True) -> None:
        """Answer every query, calling ``on_result(i, answer, None)`` or
        ``on_result(i, None, error)`` in the calling thread as each one finishes."""
        from tqdm.auto import tqdm

        workers = max(1, int(self.concurrency))
        bar = tqdm(total=len(queries), desc=f"judge {self.name}", disable=not progress,
                   unit="query")
        try:
            if workers == 1 or len(queries) <= 1:
                for i, q in enumerate(queries):
                    on_result(i, *self._safe_answer(q))
                    bar.update(1)
                return
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="judge")
            try:
                futures = {pool.submit(self._safe_answer, q): i for i, q in enumerate(queries)}
                for fut in as_completed(futures):
                    on_result(futures[fut], *fut.result())
                    bar.update(1)
            finally:
                # On Ctrl-C, drop what has not started; answers already received are cached.
                pool.shutdown(wait=True, cancel_futures=True)
        finally:
            bar.close()

    def _safe_answer(self, query: JudgeQuery) -> tuple[str | None, JudgeError | None]:
        try:
            return self.answer(query), None
        except JudgeError as e:
            return None, e

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_env_name(name: str | None) -> None:
    # Catch a key pasted where the variable's NAME belongs, without echoing it.
    if name and not _ENV_NAME_RE.match(name):
        raise ValueError("api_key_env must be the NAME of an environment variable (like "
                         "OPENAI_API_KEY), not the key itself")


class OpenAIChatBackend(JudgeBackend):
    """An OpenAI-compatible ``POST {base_url}/chat/completions`` judge (``vllm serve`` exposes
    one; the paper used Qwen2.5-72B-Instruct).

    The API key is read from the environment variable ``api_key_env`` at each request (it may
    be absent for a local vLLM server) and sent as ``Authorization: Bearer``; it is never
    stored on the object, logged, cached or returned. Timeouts, HTTP 429/5xx and connection
    errors are retried up to ``max_retries`` times with exponential backoff (``backoff_s``,
    doubled each time, capped at 30 s, honouring ``Retry-After``); other 4xx are not retried.
    A batch runs on ``concurrency`` worker threads.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 60, max_retries: int = 3, concurrency: int = 8,
                 temperature: float = 0.0, max_tokens: int = 128, backoff_s: float = 1.0,
                 system_prompt: str | None = None):
        if not base_url:
            raise ValueError("OpenAIChatBackend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if not model:
            raise ValueError("OpenAIChatBackend needs model (e.g. Qwen/Qwen2.5-72B-Instruct)")
        _check_env_name(api_key_env)
        if max_retries < 0 or concurrency < 1 or timeout_s <= 0:
            raise ValueError("need max_retries >= 0, concurrency >= 1, timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.concurrency = int(concurrency)
        self.temperature = float(temperature)
        self.max_tokens = int(max_tokens)
        self.backoff_s = float(backoff_s)
        self.system_prompt = system_prompt
        self.name = f"openai:{model}"
        self._client = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"OpenAIChatBackend(base_url={self.base_url!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})")

    __str__ = __repr__

    def identity(self) -> dict:
        # The URL is left out on purpose: the same model behind another host/port gives the
        # same answers, and a moved server must not throw the cache away.
        return {"backend": "openai-chat", "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "system_prompt": self.system_prompt}

    def _http(self):
        import httpx

        with self._lock:
            if self._client is None:
                limits = httpx.Limits(max_connections=self.concurrency,
                                      max_keepalive_connections=self.concurrency)
                self._client = httpx.Client(timeout=httpx.Timeout(self.timeout_s),
                                            limits=limits)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _sleep_before_retry(self, attempt: int, retry_after: str | None) -> None:
        delay = min(30.0, self.backoff_s * (2 ** attempt))
        if retry_after:
            try:
                delay = min(30.0, max(delay, float(retry_after)))
            except ValueError:
                pass
        time.sleep(delay * (0.75 + 0.5 * random.random()))

    def complete(self, prompt: str) -> str:
        import httpx

        messages = [{"role": "user", "content": prompt}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        payload = {"model": self.model, "messages": messages,
                   "temperature": self.temperature, "max_tokens": self.max_tokens}
        url = f"{self.base_url}/chat/completions"
        client = self._http()
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                resp = client.post(url, json=payload, headers=self._headers())
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s:g} s"
            except httpx.TransportError as e:
                last = f"connection error ({type(e).__name__}: {e})"
            else:
                if resp.status_code == 200:
                    return self._content(resp)
                body = resp.text[:200].replace("\n", " ")
                last = f"HTTP {resp.status_code}: {body}"
                if not (resp.status_code == 429 or resp.status_code >= 500):
                    raise JudgeError(f"{url}: {last} (not retried)")
                retry_after = resp.headers.get("retry-after")
            if attempt < self.max_retries:
                self._sleep_before_retry(attempt, retry_after)
        raise JudgeError(f"{url}: {last} (after {self.max_retries + 1} attempts)")

    @staticmethod
    def _content(resp) -> str:
        try:
            data = resp.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise JudgeError(f"malformed chat-completions response ({type(e).__name__}): "
                             f"{resp.text[:200]!r}") from None
        return content if isinstance(content, str) else ""


class TransformersChatBackend(JudgeBackend):
    """A local transformers model as judge: the chat template when the tokenizer has one (else
    the raw prompt), greedy decoding, only the new tokens returned. Decoder-only and
    encoder-decoder models both work. Imports and loading are lazy (first query)."""

    def __init__(self, model_name_or_path: str, device: str = "cpu", max_new_tokens: int = 128,
                 trust_remote_code: bool = False):
        self.model_name_or_path = str(model_name_or_path)
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.trust_remote_code = bool(trust_remote_code)
        self.name = f"transformers:{self.model_name_or_path}"
        self._loaded = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"TransformersChatBackend({self.model_name_or_path!r}, device={self.device!r}, "
                f"max_new_tokens={self.max_new_tokens})")

    def identity(self) -> dict:
        return {"backend": "transformers-chat", "model": self.model_name_or_path,
                "max_new_tokens": self.max_new_tokens, "decoding": "greedy"}

    def _load(self):
        if self._loaded is None:
            from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                                      AutoTokenizer)

            kw = {"trust_remote_code": self.trust_remote_code}
            try:
                tok = AutoTokenizer.from_pretrained(self.model_name_or_path, **kw)
                cfg = AutoConfig.from_pretrained(self.model_name_or_path, **kw)
                cls = AutoModelForSeq2SeqLM if cfg.is_encoder_decoder else AutoModelForCausalLM
                model = cls.from_pretrained(self.model_name_or_path, **kw).to(self.device).eval()
            except (OSError, ValueError) as e:
                raise JudgeError(f"cannot load judge model {self.model_name_or_path!r}: {e}") from e
            self._loaded = (tok, model)
        return self._loaded

    def complete(self, prompt: str) -> str:
        import torch

        with self._lock:  # one model, one generation at a time
            tok, model = self._load()
            if getattr(tok, "chat_template", None):
                text = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                               tokenize=False, add_generation_prompt=True)
                enc = tok(text, return_tensors="pt", add_special_tokens=False)
            else:
                enc = tok(prompt, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            try:
                with torch.no_grad():
                    out = model.generate(**enc, do_sample=False, max_new_tokens=self.max_new_tokens,
                                         pad_token_id=pad)
            except (RuntimeError, ValueError) as e:
                raise JudgeError(f"generation failed with {self.name}: {e}") from e
            new = out[0] if model.config.is_encoder_decoder else out[0, enc["input_ids"].shape[1]:]
            return tok.decode(new, skip_special_tokens=True)


# --------------------------------------------------------------------------- surrogate judge

# Small stop-word list (English + Dutch, the kit's languages) for "content words".
_STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it its
this that these those he she they them his her their we our you your i me my not no so than then
there here has have had do does did will would can could should may might must also into over
about after before up down out off just more most such very which who whom whose what when where
why how all any both each few other some own same too s t
de het een en of maar als van te in op aan bij voor met uit is zijn was waren wordt worden werd
dat die dit deze hij zij ze hem haar hun wij we jullie u ik mij mijn niet geen zo dan er hier
heeft hebben had doen doet zal zullen kan kunnen moet moeten ook naar over om tot door nog al
wel wat wie waar hoe ook""".split())
_WORD_RE = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def content_recall(output: str, reference: str) -> float:
    """Share of the reference's content words (lower-cased ``\\w+`` tokens not in the EN+NL
    stop-word list) that the output contains, with clipped counts; 0 if the reference has
    none."""
    ref = Counter(w for w in _words(reference) if w not in _STOPWORDS)
    out = Counter(w for w in _words(output) if w not in _STOPWORDS)
    total = sum(ref.values())
    return sum(min(c, out[w]) for w, c in ref.items()) / total if total else 0.0


def coherence_proxy(output: str, reference: str) -> float:
    """``0.5 * (1 - repetition) + 0.5 * fluency`` in [0, 1], where
    repetition = mean over n in {2, 3} of the share of the output's n-grams that repeat an
    earlier one (0 when it has none), and fluency = share of the output's bigrams found in the
    reference (clipped counts; 0 for outputs under two words), i.e. word order that follows
    a fluent human text with the same content."""
    toks = _words(output)
    reps = []
    for n in (2, 3):
        grams = _ngrams(toks, n)
        reps.append(1.0 - len(set(grams)) / len(grams) if grams else 0.0)
    repetition = sum(reps) / len(reps)
    out_bi = Counter(_ngrams(toks, 2))
    ref_bi = Counter(_ngrams(_words(reference), 2))
    n_out = sum(out_bi.values())
    fluency = sum(min(c, ref_bi[g]) for g, c in out_bi.items()) / n_out if n_out else 0.0
    return 0.5 * (1.0 - repetition) + 0.5 * fluency


def _rouge_l(output: str, reference: str) -> float:
    from kdlib.metrics import rouge  # floor 0; imported lazily

    return float(rouge([output], [reference])["rougeL"])


def _chrf(output: str, reference: str) -> float:
    from kdlib.metrics import sacrebleu_scores

    return float(sacrebleu_scores([output], [reference])["chrf"])


_SURROGATE_METRICS: dict[str, tuple[str, Callable[[str, str], float]]] = {
    "rougeL": ("ROUGE-L F1", _rouge_l),
    "chrf": ("chrF", _chrf),
    "content_recall": ("content-word recall", content_recall),
    "coherence_proxy": ("coherence proxy", coherence_proxy),
}
_AUTO = {
    ("summarization", "overall"): "rougeL",
    ("translation", "overall"): "chrf",
    ("summarization", "informativeness"): "content_recall",
    ("translation", "informativeness"): "content_recall",
    ("summarization", "coherence"): "coherence_proxy",
    ("translation", "coherence"): "coherence_proxy",
}
_SLUG = {"rougeL": "rouge-l", "chrf": "chrf", "content_recall": "content-recall",
         "coherence_proxy": "coherence-proxy"}
_CRITERION_LABEL = {"overall": "Overall Quality", "informativeness": "Informativeness",
                    "coherence": "Coherence"}


class SurrogateJudge(JudgeBackend):
    """An offline stand-in for the LLM judge: NO language model. It prefers the candidate with
    the higher reference-based score and answers through the same prompt/parse protocol.

    ``metric="auto"`` picks, per task and criterion:
    overall -> ROUGE-L F1 (summarization) / chrF (translation) against the reference
    (``kdlib.metrics``); informativeness -> ``content_recall``; coherence ->
    ``coherence_proxy`` (see those functions). Or fix one of ``rougeL``, ``chrf``,
    ``content_recall``, ``coherence_proxy`` for every criterion.

    Its answer is one sentence giving both scores, then ``Preferred: <ID>``. When the two
    scores are equal (to 1e-9) it says so and answers ``Preferred: tie``, which the parser
    counts as invalid: an example tied in all four queries is left out of the win rate and
    counted in ``invalid_rate`` (not in ``tie_rate``). It needs each example's ``reference``.
    """

    requires_reference = True

    def __init__(self, metric: str = "auto"):
        if metric != "auto" and metric not in _SURROGATE_METRICS:
            raise ValueError(f"unknown surrogate metric {metric!r}; expected 'auto' or one of "
                             f"{', '.join(_SURROGATE_METRICS)}")
        self.metric = metric
        self.name = f"surrogate:{metric}-vs-reference"
        self._memo: dict[tuple[str, str, str], float] = {}

    def __repr__(self) -> str:
        return f"SurrogateJudge(metric={self.metric!r})"

    def metric_for(self, task: str, criterion: str) -> str:
        return _AUTO[(task, criterion)] if self.metric == "auto" else self.metric

    def label(self, task: str, criterion: str) -> str:
        return f"surrogate:{_SLUG[self.metric_for(task, criterion)]}-vs-reference"

    def identity(self) -> dict:
        return {"backend": "surrogate", "metric": self.metric, "version": 1}

    def complete(self, prompt: str) -> str:
        raise JudgeError("SurrogateJudge needs the candidates and the reference, not just a "
                         "prompt; call it through judge_pairs()/judge_table()")

    def score(self, metric: str, output: str, reference: str) -> float:
        key = (metric, output, reference)
        if key not in self._memo:
            self._memo[key] = _SURROGATE_METRICS[metric][1](output, reference)
        return self._memo[key]

    def answer(self, query: JudgeQuery) -> str:
        if query.reference is None:
            raise JudgeError("SurrogateJudge needs a 'reference' for every example")
        metric = self.metric_for(query.task, query.criterion)
        mname = _SURROGATE_METRICS[metric][0]
        s1 = self.score(metric, query.candidate_1, query.reference)
        s2 = self.score(metric, query.candidate_2, query.reference)
        head = _CRITERION_LABEL.get(query.criterion, query.criterion)
        if abs(s1 - s2) <= 1e-9:
            return (f"{head}: {query.id_1} and {query.id_2} have the same {mname} against the "
                    f"reference ({s1:.4g}), so the surrogate judge cannot separate them.\n"
                    f"Preferred: tie")
        win, lose, sw, sl = ((query.id_1, query.id_2, s1, s2) if s1 > s2
                             else (query.id_2, query.id_1, s2, s1))
        return (f"{head}: {win} has the higher {mname} against the reference ({sw:.4g} vs "
                f"{sl:.4g} for {lose}), so the surrogate judge prefers {win}.\n"
                f"Preferred: {win}")


# --------------------------------------------------------------------------- settings


class JudgeConfig(BaseModel):
    """Judge settings (e.g. a ``judge:`` block of a params file). Unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["surrogate", "openai", "transformers"] = "surrogate"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(3, ge=0)
    concurrency: int = Field(8, ge=1)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(128, ge=1)
    templates_dir: str = DEFAULT_TEMPLATES_DIR
    device: str = "cpu"
    trust_remote_code: bool = False
    surrogate_metric: str = "auto"

    @model_validator(mode="after")
    def _needs(self):
        _check_env_name(self.api_key_env)
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("backend 'openai' needs base_url and model")
        if self.backend == "transformers" and not self.model:
            raise ValueError("backend 'transformers' needs model (a hub name or a local path)")
        return self


def make_backend(cfg: JudgeConfig) -> JudgeBackend:
    if cfg.backend == "openai":
        return OpenAIChatBackend(cfg.base_url, cfg.model, api_key_env=cfg.api_key_env,
                                 timeout_s=cfg.timeout_s, max_retries=cfg.max_retries,
                                 concurrency=cfg.concurrency, temperature=cfg.temperature,
                                 max_tokens=cfg.max_tokens)
    if cfg.backend == "transformers":
        return TransformersChatBackend(cfg.model, device=cfg.device,
                                       max_new_tokens=cfg.max_tokens,
                                       trust_remote_code=cfg.trust_remote_code)
    return SurrogateJudge(metric=cfg.surrogate_metric)


# --------------------------------------------------------------------------- cache


class AnswerCache:
    """One JSON file per answer, ``<dir>/<key[:2]>/<key>.json``, written to a temporary file
    and renamed into place: a crash never leaves a half-written answer, and earlier answers
    are never rewritten. Unreadable files are treated as missing (and later overwritten)."""

    def __init__(self, cache_dir: str | os.PathLike):
        self.dir = Path(cache_dir)

    @staticmethod
    def key(identity: dict, template: str, inputs: dict) -> str:
        blob = json.dumps({"format": CACHE_FORMAT, "judge": identity, "template": template,
                           "inputs": inputs}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> str | None:
        try:
            rec = json.loads(self._path(key).read_text(encoding="utf-8"))
            return rec["answer"] if isinstance(rec.get("answer"), str) else None
        except (OSError, ValueError, AttributeError, KeyError):
            return None

    def put(self, key: str, answer: str, judge: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"key": key, "judge": judge, "answer": answer, "time": time.time()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(rec, f, ensure_ascii=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


# --------------------------------------------------------------------------- evaluation


def _check_items(items: Sequence[dict], name: str) -> None:
    if not isinstance(items, (list, tuple)):
        raise InputError(f"{name}: expected a list of {{'source', 'output'}} dicts")
    for i, it in enumerate(items, 1):
        if not isinstance(it, dict):
            raise InputError(f"{name} line {i}: expected a JSON object, got {type(it).__name__}")
        for field in ("source", "output"):
            if not isinstance(it.get(field), str):
                raise InputError(f"{name} line {i}: field {field!r} missing or not a string")
        ref = it.get("reference")
        if ref is not None and not isinstance(ref, str):
            raise InputError(f"{name} line {i}: field 'reference' is not a string")


def check_pairs(candidate: Sequence[dict], baseline: Sequence[dict],
                names: tuple[str, str] = ("candidate", "baseline")) -> list[str | None]:
    """Validate that both lists hold the same inputs in the same order; return the references
    (None where neither side has one). Errors name the first mismatching line (1-based)."""
    cn, bn = names
    _check_items(candidate, cn)
    _check_items(baseline, bn)
    for i, (c, b) in enumerate(zip(candidate, baseline), 1):
        if c["source"].strip() != b["source"].strip():
            raise InputError(f"{cn} line {i} and {bn} line {i} have different 'source' "
                             f"(first mismatch): {c['source'][:60]!r} vs {b['source'][:60]!r}")
    if len(candidate) != len(baseline):
        n = min(len(candidate), len(baseline)) + 1
        longer = cn if len(candidate) > len(baseline) else bn
        raise InputError(f"{cn} has {len(candidate)} lines but {bn} has {len(baseline)}; "
                         f"{longer} line {n} has no partner")
    refs: list[str | None] = []
    for i, (c, b) in enumerate(zip(candidate, baseline), 1):
        rc, rb = c.get("reference"), b.get("reference")
        if rc is not None and rb is not None and rc.strip() != rb.strip():
            raise InputError(f"{cn} line {i} and {bn} line {i} have different 'reference'")
        refs.append(rc if rc is not None else rb)
    return refs


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean; ``kdlib.stats.bootstrap_ci`` when it exists."""
    vals = np.asarray(values, dtype=float)
    if vals.size == 0:
        return float("nan"), float("nan")
    try:
        from kdlib.stats import bootstrap_ci as _stats_ci
    except ImportError:
        _stats_ci = None
    if _stats_ci is not None:
        try:
            lo, hi = _stats_ci(vals, confidence=confidence, n_boot=n_boot, seed=seed)
            return float(lo), float(hi)
        except TypeError:  # a different signature: fall back to the local version
            pass
    rng = np.random.default_rng(seed)
    means = vals[rng.integers(0, vals.size, size=(n_boot, vals.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


# The four presentations of a pair: (system shown first, ID given to the first-shown text).
PRESENTATIONS = (("candidate", "A"), ("candidate", "B"), ("baseline", "A"), ("baseline", "B"))


def _opt(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def judge_pairs(candidate: list[dict], baseline: list[dict], *, task: str, criterion: str,
                backend: JudgeBackend, cache_dir: str | os.PathLike,
                templates_dir: str | os.PathLike = DEFAULT_TEMPLATES_DIR, seed: int = 0,
                progress: bool = True, names: tuple[str, str] = ("candidate", "baseline"),
                ) -> dict:
    """Judge ``candidate`` against ``baseline`` (lists of ``{"source", "output",
    optional "reference"}``, same inputs in the same order) with the four-query protocol.

    Returns a dict: ``win_rate, ci_low, ci_high`` (fractions; None if no example could be
    scored), ``tie_rate, invalid_rate, consistency, first_position_rate, id_a_rate``,
    ``n_examples, n_scored, n_queries, n_invalid, n_errors, n_backend_calls, n_cache_hits``,
    ``judge, task, criterion``, ``scores`` (per example, None if unscored) and ``per_example``
    (each example's verdicts: the system picked, or None)."""
    _check_choice(task, TASKS, "task")
    _check_choice(criterion, CRITERIA, "criterion")
    refs = check_pairs(candidate, baseline, names)
    if backend.requires_reference:
        missing = [i for i, r in enumerate(refs, 1) if r is None]
        if missing:
            raise InputError(f"{backend.name} compares against a reference, but {names[0]} "
                             f"line {missing[0]} (and {len(missing) - 1} more) has none: add "
                             f"a 'reference' field or use an LLM judge")
    template = load_template(task, criterion, templates_dir)
    identity = backend.identity()
    cache = AnswerCache(cache_dir)

    # Build the 4N queries.
    queries: list[JudgeQuery] = []
    keys: list[str] = []
    for i, (c, b) in enumerate(zip(candidate, baseline)):
        for first, first_id in PRESENTATIONS:
            second_id = "B" if first_id == "A" else "A"
            t1, t2 = (c["output"], b["output"]) if first == "candidate" else (b["output"], c["output"])
            fields = {"source": c["source"], "id_1": first_id, "candidate_1": t1,
                      "id_2": second_id, "candidate_2": t2}
            q = JudgeQuery(prompt=fill_template(template, **fields), task=task,
                           criterion=criterion, reference=refs[i], **fields)
            inputs = dict(fields)
            if backend.requires_reference:
                inputs["reference"] = refs[i]
            queries.append(q)
            keys.append(AnswerCache.key(identity, template, inputs))

    # Cached answers first; identical queries are sent once.
    answers: list[str | None] = [None] * len(queries)
    errors: list[str | None] = [None] * len(queries)
    todo: dict[str, list[int]] = {}
    n_hits = 0
    for qi, key in enumerate(keys):
        if key in todo:
            todo[key].append(qi)
            continue
        hit = cache.get(key)
        if hit is not None:
            answers[qi] = hit
            n_hits += 1
        else:
            todo[key] = [qi]

    pending = list(todo.items())
    label = backend.label(task, criterion)

    def on_result(j: int, answer: str | None, err: JudgeError | None) -> None:
        key, idxs = pending[j]
        if err is None:
            cache.put(key, answer, label)
        for qi in idxs:
            answers[qi] = answer
            errors[qi] = None if err is None else str(err)

    if pending:
        backend.complete_batch([queries[idxs[0]] for _, idxs in pending], on_result,
                               progress=progress)

    # Score.
    n = len(candidate)
    scores: list[float | None] = []
    per_example = []
    n_valid = n_first = n_a = n_invalid = 0
    n_consistent = n_ties = 0
    for i in range(n):
        picks = []
        for k, (first, first_id) in enumerate(PRESENTATIONS):
            qi = 4 * i + k
            got = parse_preferred(answers[qi], (queries[qi].id_1, queries[qi].id_2))
            if got is None:
                n_invalid += 1
                picks.append(None)
                continue
            picked_first = got == queries[qi].id_1
            second = "baseline" if first == "candidate" else "candidate"
            picks.append(first if picked_first else second)
            n_valid += 1
            n_first += picked_first
            n_a += got == "A"
        valid = [p for p in picks if p is not None]
        if valid:
            wins = sum(p == "candidate" for p in valid)
            score = wins / len(valid)
            n_ties += 2 * wins == len(valid)
        else:
            score = None
        n_consistent += len(valid) == 4 and len(set(valid)) == 1
        scores.append(score)
        per_example.append({"line": i + 1, "score": score, "verdicts": picks,
                            "errors": [errors[4 * i + k] for k in range(4) if errors[4 * i + k]]})

    scored = [s for s in scores if s is not None]
    win = float(np.mean(scored)) if scored else None
    lo, hi = bootstrap_ci(scored, seed=seed) if scored else (None, None)
    n_q = len(queries)
    return {
        "win_rate": win,
        "ci_low": _opt(lo),
        "ci_high": _opt(hi),
        "tie_rate": n_ties / len(scored) if scored else None,
        "invalid_rate": n_invalid / n_q if n_q else None,
        "consistency": n_consistent / n if n else None,
        "first_position_rate": n_first / n_valid if n_valid else None,
        "id_a_rate": n_a / n_valid if n_valid else None,
        "n_examples": n,
        "n_scored": len(scored),
        "n_queries": n_q,
        "n_invalid": n_invalid,
        "n_errors": sum(e is not None for e in errors),
        "n_backend_calls": len(pending),
        "n_cache_hits": n_hits,
        "judge": label,
        "task": task,
        "criterion": criterion,
        "scores": scores,
        "per_example": per_example,
    }


SUMMARY_KEYS = ("win_rate", "ci_low", "ci_high", "tie_rate", "invalid_rate", "consistency",
                "first_position_rate", "id_a_rate", "n_examples", "n_scored", "n_queries",
                "n_invalid", "n_errors", "n_backend_calls", "n_cache_hits", "judge", "task",
                "criterion")


def _lookup(outputs: dict, task: str, method: str, single_task: bool) -> list[dict]:
    if isinstance(outputs.get(task), dict):
        if method in outputs[task]:
            return outputs[task][method]
    elif f"{task}/{method}" in outputs:
        return outputs[f"{task}/{method}"]
    elif single_task and method in outputs:
        return outputs[method]
    raise KeyError(f"no outputs for task {task!r}, method {method!r}: pass outputs as "
                   f"{{task: {{method: [...]}}}}, {{'task/method': [...]}} or, for one task, "
                   f"{{method: [...]}}")


def judge_table(outputs: dict, *, baseline_method: str = "KL",
                methods: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                criteria: Sequence[str] = CRITERIA, backend: JudgeBackend,
                cache_dir: str | os.PathLike, templates_dir=DEFAULT_TEMPLATES_DIR,
                seed: int = 0, progress: bool = True):
    """Table 2 in long format: one row per (task, criterion, method) with win_rate, ci_low,
    ci_high, tie_rate, invalid_rate, consistency, first_position_rate (fractions), n_examples
    and judge. ``outputs`` maps ``{task: {method: items}}``, ``{"task/method": items}`` or,
    with a single task, ``{method: items}``."""
    import pandas as pd

    if tasks is None:
        tasks = [t for t in TASKS if isinstance(outputs.get(t), dict)]
        if not tasks:
            raise ValueError("pass tasks=[...] (cannot infer them from the outputs' keys)")
    if methods is None:
        if len(tasks) == 1 and isinstance(outputs.get(tasks[0]), dict):
            pool = outputs[tasks[0]].keys()
        elif len(tasks) == 1:
            pool = [k for k in outputs if "/" not in k]
        else:
            pool = {m for t in tasks for m in (outputs.get(t) or {})}
        methods = [m for m in pool if m != baseline_method]
    rows = []
    for task in tasks:
        base = _lookup(outputs, task, baseline_method, len(tasks) == 1)
        for criterion in criteria:
            for method in methods:
                cand = _lookup(outputs, task, method, len(tasks) == 1)
                r = judge_pairs(cand, base, task=task, criterion=criterion, backend=backend,
                                cache_dir=cache_dir, templates_dir=templates_dir, seed=seed,
                                progress=progress, names=(f"{task}/{method}",
                                                          f"{task}/{baseline_method}"))
                row = {"task": task, "criterion": criterion, "method": method}
                for k in ("win_rate", "ci_low", "ci_high", "tie_rate", "invalid_rate",
                          "consistency", "first_position_rate"):
                    row[k] = np.nan if r[k] is None else r[k]
                row["n_examples"] = r["n_examples"]
                row["judge"] = r["judge"]
                rows.append(row)
    return pd.DataFrame(rows, columns=["task", "criterion", "method", "win_rate", "ci_low",
                                       "ci_high", "tie_rate", "invalid_rate", "consistency",
                                       "first_position_rate", "n_examples", "judge"])


# --------------------------------------------------------------------------- command line


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read ``{"source", "output", optional "reference"}`` records, one per line (blank lines
    are skipped but counted). Errors name the file and the line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    items = []
    with p.open(encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{p} line {ln}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{p} line {ln}: expected a JSON object")
            for field in ("source", "output"):
                if not isinstance(rec.get(field), str):
                    raise InputError(f"{p} line {ln}: field {field!r} missing or not a string")
            if rec.get("reference") is not None and not isinstance(rec["reference"], str):
                raise InputError(f"{p} line {ln}: field 'reference' is not a string")
            items.append(rec)
    return items


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``judge`` verb's arguments to ``parser``."""
    parser.description = ("Pairwise LLM-as-judge evaluation (Table 2): candidate outputs vs a "
                          "baseline's, four queries per pair; prints one JSON object.")
    parser.add_argument("--candidate", required=True, help="JSONL of {source, output[, reference]}")
    parser.add_argument("--baseline", required=True, help="JSONL of the baseline (e.g. KL), same inputs")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--criterion", required=True, choices=CRITERIA)
    parser.add_argument("--backend", default="surrogate", choices=["surrogate", "openai", "transformers"])
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="judge model name (openai) or path/hub name (transformers)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="name of the environment variable holding the API key (never the key itself)")
    parser.add_argument("--cache-dir", default="outputs/judge_cache")
    parser.add_argument("--templates-dir", default=DEFAULT_TEMPLATES_DIR)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--device", default="cpu", help="transformers backend only")
    parser.add_argument("--surrogate-metric", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--output", default=None, help="also write the full result (with per-example verdicts) here")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run the ``judge`` verb; print one JSON object. Bad input: message on stderr, exit 2."""
    try:
        cfg = JudgeConfig(backend=args.backend, base_url=args.base_url, model=args.model,
                          api_key_env=args.api_key_env, timeout_s=args.timeout,
                          max_retries=args.max_retries, concurrency=args.concurrency,
                          temperature=args.temperature, max_tokens=args.max_tokens,
                          templates_dir=args.templates_dir, device=args.device,
                          surrogate_metric=args.surrogate_metric)
        candidate = read_jsonl(args.candidate)
        baseline = read_jsonl(args.baseline)
        backend = make_backend(cfg)
        try:
            result = judge_pairs(candidate, baseline, task=args.task, criterion=args.criterion,
                                 backend=backend, cache_dir=args.cache_dir,
                                 templates_dir=cfg.templates_dir, seed=args.seed,
                                 progress=not args.no_progress,
                                 names=(str(args.candidate), str(args.baseline)))
        finally:
            backend.close()
    except (InputError, TemplateError, ValueError, JudgeError) as e:
        # pydantic's ValidationError is a ValueError
        print(f"kdlib judge: error: {e}", file=sys.stderr)
        return 2
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        os.replace(tmp, out)
    print(json.dumps({k: result[k] for k in SUMMARY_KEYS}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kdlib.judge ...`` (the same as ``python -m kdlib judge ...``)."""
    return run_cli(build_parser(argparse.ArgumentParser(prog="kdlib judge")).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
