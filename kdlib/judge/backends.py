"""Judge backends: any OpenAI-compatible chat server, a local transformers chat model (API keys from the environment only).
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Callable, Sequence

from kdlib.judge.templates import JudgeError

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
            from transformers import (
                AutoConfig,
                AutoModelForCausalLM,
                AutoModelForSeq2SeqLM,
                AutoTokenizer,
            )

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
