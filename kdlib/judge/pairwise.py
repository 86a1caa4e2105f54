"""Pairwise judging in four presentations, the on-disk answer cache, win rates with bootstrap CIs, the judge table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kdlib.judge.backends import (
    JudgeBackend,
    JudgeQuery,
    OpenAIChatBackend,
    TransformersChatBackend,
    _check_env_name,
)
from kdlib.judge.surrogate import SurrogateJudge
from kdlib.judge.templates import (
    CACHE_FORMAT,
    CRITERIA,
    DEFAULT_TEMPLATES_DIR,
    TASKS,
    InputError,
    JudgeError,
    _check_choice,
    fill_template,
    load_template,
    parse_preferred,
)

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
    """Percentile-bootstrap CI of the mean; ``kdlib.maths.stats.bootstrap_ci`` when it exists."""
    vals = np.asarray(values, dtype=float)
    if vals.size == 0:
        return float("nan"), float("nan")
    try:
        from kdlib.maths.stats import bootstrap_ci as _stats_ci
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
