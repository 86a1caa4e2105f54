"""Task metrics: ROUGE (summarisation), BLEU/chrF/TER (translation), GSM8K accuracy, distinct-n.

Every function takes plain lists of strings (one prediction and one reference per example) and
returns floats on a 0-100 scale. Corpus-level metrics raise ``ValueError`` on empty input or
mismatched lengths (sacrebleu itself would silently truncate to the shorter list).

Public API:
- ``rouge(predictions, references)`` -> {"rouge1", "rouge2", "rougeL"}: mean F x 100, stemmed.
- ``sacrebleu_scores(predictions, references)`` -> {"bleu", "chrf", "ter"}: corpus level.
- ``gsm8k_answer(text)`` -> the number after the last ``####`` ("72", "-3", "2.5"), or None.
- ``gsm8k_accuracy(predictions, references)`` -> % with the same final answer (tolerance 1e-6).
- ``distinct_n(texts, n)`` -> #distinct n-grams / #n-grams x 100 over the corpus.
- ``validity(valid)`` -> % of outputs that are valid targets (generated tasks, whose valid sets are known).
- ``math_answer(text)`` -> the content of the last ``\\boxed{...}`` (MATH), or None.
- ``task_metrics(kind, predictions, references)`` -> the task's metrics plus "distinct2".
- ``PRIMARY_METRIC``, ``HIGHER_IS_BETTER``, ``TASK_KINDS``.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Sequence

__all__ = [
    "BOOTSTRAP_SEED",
    "GSM8K_TOLERANCE",
    "bootstrap_cis",
    "HIGHER_IS_BETTER",
    "PRIMARY_METRIC",
    "TASK_KINDS",
    "distinct_n",
    "gsm8k_accuracy",
    "gsm8k_answer",
    "math_answer",
    "rouge",
    "sacrebleu_scores",
    "task_metrics",
    "validity",
]

PRIMARY_METRIC = {"summarization": "rougeL", "translation": "bleu", "arithmetic": "accuracy"}
TASK_KINDS = tuple(PRIMARY_METRIC)
HIGHER_IS_BETTER = {
    "rouge1": True,
    "rouge2": True,
    "rougeL": True,
    "bleu": True,
    "chrf": True,
    "ter": False,  # an edit rate: fewer edits is better
    "accuracy": True,
    "distinct2": True,
    "validity": True,  # % of outputs that are valid targets (generated tasks only)
}
GSM8K_TOLERANCE = Decimal("1e-6")
ANSWER_MARKER = "####"


def _check_pairs(predictions: Sequence[str], references: Sequence[str]) -> tuple[list[str], list[str]]:
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"got {len(predictions)} predictions but {len(references)} references; "
            "need one reference per prediction"
        )
    if not predictions:
        raise ValueError("no examples: predictions and references are empty")
    for name, texts in (("predictions", predictions), ("references", references)):
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"{name}[{i}] is a {type(text).__name__}, expected str")
    return predictions, references


# ---------------------------------------------------------------------------------------------
# Summarisation
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _rouge_scorer():
    # Imported lazily: rouge_score pulls in nltk and absl, which a calculator-only user never needs.
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean per-example ROUGE-1/2/L F-measure x 100 (Porter stemming, rouge_score's tokenizer).

    rouge_score's tokenizer lowercases and keeps only ``[a-z0-9]`` runs, and stems only tokens
    longer than 3 characters. ``rougeL`` is sentence-level LCS (not ``rougeLsum``).
    """
    predictions, references = _check_pairs(predictions, references)
    scorer = _rouge_scorer()
    totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # note the order: (target, prediction)
        for key in totals:
            totals[key] += scores[key].fmeasure
    return {key: 100.0 * total / len(predictions) for key, total in totals.items()}


# ---------------------------------------------------------------------------------------------
# Translation
# ---------------------------------------------------------------------------------------------


def sacrebleu_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU (13a, exp smoothing), chrF (char order 6, beta 2) and TER, sacrebleu defaults.

    One reference per prediction. Note sacrebleu's TER default is case-insensitive
    (``case_sensitive=False``) while BLEU and chrF are case-sensitive.
    """
    from sacrebleu.metrics import BLEU, CHRF, TER

    predictions, references = _check_pairs(predictions, references)
    # sacrebleu wants a list of reference *streams*: refs[k][i] is the k-th reference of example i.
    streams = [references]
    return {
        "bleu": float(BLEU().corpus_score(predictions, streams).score),
        "chrf": float(CHRF().corpus_score(predictions, streams).score),
        "ter": float(TER().corpus_score(predictions, streams).score),
    }


# ---------------------------------------------------------------------------------------------
# Arithmetic (GSM8K)
# ---------------------------------------------------------------------------------------------

# After the marker: optional "$" and sign in either order, then the number (commas allowed).
_ANSWER = re.compile(r"\s*\$?\s*(-?)\s*\$?\s*([0-9][0-9,]*(?:\.[0-9]*)?|\.[0-9]+)")


def _answer_decimal(text: str) -> Decimal | None:
    start = text.rfind(ANSWER_MARKER)
    if start < 0:
        return None
    m = _ANSWER.match(text, start + len(ANSWER_MARKER))
    if m is None:
        return None
    sign, number = m.groups()
    number = number.replace(",", "").rstrip(".")  # "1,234." -> "1234"
    try:
        return Decimal(sign + number)
    except InvalidOperation:  # pragma: no cover - the regex only admits valid literals
        return None


def _normalise(value: Decimal) -> str:
    """Plain decimal notation without trailing zeros, at any number of digits (no context rounding, no int()
    digit limit): "72.0" -> "72", "2.50" -> "2.5", "-0" -> "0", "1E+3" -> "1000"."""
    s = format(value, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "", "-") else s


def gsm8k_answer(text: str) -> str | None:
    """The final answer: the number right after the last ``####``, normalised.

    Commas and ``$`` are removed and a trailing period stripped: "#### 1,234" -> "1234",
    "#### $5." -> "5", "#### 72.0" -> "72", "#### -3" -> "-3". The number must come first
    after the marker (only spaces and ``$`` may precede it); otherwise, or without a marker,
    the answer is None.
    """
    value = _answer_decimal(text)
    return None if value is None else _normalise(value)


def gsm8k_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """% of examples whose final answers agree within 1e-6; a prediction with no answer is wrong.

    Raises ValueError if a reference has no ``#### answer`` (a data error, not a model error).
    """
    predictions, references = _check_pairs(predictions, references)
    correct = 0
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        target = _answer_decimal(reference)
        if target is None:
            raise ValueError(f"references[{i}] has no '#### <number>' answer: {reference[-80:]!r}")
        answer = _answer_decimal(prediction)
        if answer is not None and abs(answer - target) <= GSM8K_TOLERANCE:
            correct += 1
    return 100.0 * correct / len(predictions)


# ---------------------------------------------------------------------------------------------
# Diversity
# ---------------------------------------------------------------------------------------------


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct-n (Li et al., 2016; reported by LLMR): #distinct n-grams / #n-grams x 100.

    Corpus level over whitespace tokens; n-grams do not cross text boundaries. 0.0 when the
    corpus has no n-gram at all (empty list, or every text shorter than n tokens).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = text.split()
        for i in range(len(tokens) - n + 1):
            seen.add(tuple(tokens[i : i + n]))
            total += 1
    return 100.0 * len(seen) / total if total else 0.0


def validity(valid: Sequence[bool]) -> float:
    """% of outputs that are valid targets of their input (``valid[i]``: output i is one of the
    generator's valid outputs for input i): ``100 * mean(valid)``. Exact, unlike any overlap metric,
    and only defined where the valid set is known (the generated tasks). ValueError when empty."""
    valid = list(valid)
    if not valid:
        raise ValueError("no outputs to score")
    return 100.0 * sum(bool(v) for v in valid) / len(valid)


# ---------------------------------------------------------------------------------------------
# Per task
# ---------------------------------------------------------------------------------------------


def task_metrics(kind: str, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """All metrics of one task kind, plus "distinct2" (diversity of the predictions).

    summarization -> rouge1, rouge2, rougeL; translation -> bleu, chrf, ter;
    arithmetic -> accuracy. ``PRIMARY_METRIC[kind]`` names the headline one.
    """
    if kind not in PRIMARY_METRIC:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
    predictions, references = _check_pairs(predictions, references)
    if kind == "summarization":
        result = rouge(predictions, references)
    elif kind == "translation":
        result = sacrebleu_scores(predictions, references)
    else:
        result = {"accuracy": gsm8k_accuracy(predictions, references)}
    result["distinct2"] = distinct_n(predictions, 2)
    return result


# ---------------------------------------------------------------------------------------------
# Per-run confidence intervals (seed 001 App. E, footnote 3)
# ---------------------------------------------------------------------------------------------

BOOTSTRAP_SEED = 12345  # sacrebleu's own default seed, used for every bootstrap here


def _correct(predictions: Sequence[str], references: Sequence[str]) -> list[int]:
    out = []
    for p, r in zip(predictions, references):
        target, answer = _answer_decimal(r), _answer_decimal(p)
        out.append(int(answer is not None and target is not None and abs(answer - target) <= GSM8K_TOLERANCE))
    return out


def _sacrebleu_bootstrap(metric, predictions, references, n_bootstrap: int) -> tuple[float, float]:
    """sacrebleu's paired-bootstrap interval (``corpus_score(..., n_bootstrap)``: mean of the resampled scores and
    half the width between the 2.5th and 97.5th of them), computed from the same resamples but with the scores cast
    to float first: sacrebleu's own ``estimate_ci`` fails ("don't know how to coerce float and float32") when some
    resamples score exactly 0 (a Python float) and others not (a numpy float32), as a zero-shot student's do."""
    import statistics

    from sacrebleu.significance import _bootstrap_resample

    stats = metric._extract_corpus_statistics(predictions, [references])
    _, scores = _bootstrap_resample(stats, metric, n_bootstrap)
    raw = sorted(float(x.score) for x in scores)
    lo = len(raw) // 40
    return float(statistics.mean(raw)), 0.5 * (raw[len(raw) - lo - 1] - raw[lo])


def bootstrap_cis(kind: str, predictions: Sequence[str], references: Sequence[str], n_bootstrap: int = 1000,
                  seed: int = BOOTSTRAP_SEED) -> dict[str, dict[str, float]]:
    """95% confidence intervals of one run's test metrics over the test examples, as seed 001 App. E
    reports them: ROUGE with rouge_score's ``BootstrapAggregator`` (percentile bootstrap of the mean
    F-measure), BLEU/chrF/TER with sacrebleu's paired bootstrap (``n_bootstrap`` resamples; its
    interval is mean +- half-width around the bootstrap mean), accuracy with a percentile bootstrap
    of the per-example correctness (the paper gives no protocol for it; a kit default). Every
    bootstrap is seeded: the same outputs give the same interval.

    Returns ``{metric: {"low": .., "high": .., "method": ..}}`` in the metric's units (x 100).
    """
    import numpy as np

    predictions, references = _check_pairs(predictions, references)
    out: dict[str, dict[str, float]] = {}
    if kind == "summarization":
        from rouge_score import scoring

        agg = scoring.BootstrapAggregator(confidence_interval=0.95, n_samples=n_bootstrap)
        scorer = _rouge_scorer()
        for p, r in zip(predictions, references):
            agg.add_scores(scorer.score(r, p))
        state = np.random.get_state()  # rouge_score draws from numpy's global generator
        try:
            np.random.seed(seed)
            res = agg.aggregate()
        finally:
            np.random.set_state(state)
        for key, v in res.items():
            out[key] = {"low": 100 * float(v.low.fmeasure), "high": 100 * float(v.high.fmeasure),
                        "method": "rouge_score BootstrapAggregator"}
    elif kind == "translation":
        import os

        from sacrebleu.metrics import BLEU, CHRF, TER

        old = os.environ.get("SACREBLEU_SEED")
        os.environ["SACREBLEU_SEED"] = str(seed)
        try:
            for name, metric in (("bleu", BLEU()), ("chrf", CHRF()), ("ter", TER())):
                mean, half = _sacrebleu_bootstrap(metric, predictions, references, n_bootstrap)
                out[name] = {"low": mean - half, "high": mean + half, "method": "sacrebleu bootstrap"}
        finally:
            if old is None:
                os.environ.pop("SACREBLEU_SEED", None)
            else:
                os.environ["SACREBLEU_SEED"] = old
    elif kind == "arithmetic":
        c = np.asarray(_correct(predictions, references), dtype=float)
        rng = np.random.default_rng(seed)
        means = c[rng.integers(0, len(c), size=(n_bootstrap, len(c)))].mean(axis=1)
        lo, hi = np.percentile(means, [2.5, 97.5])
        out["accuracy"] = {"low": 100 * float(lo), "high": 100 * float(hi), "method": "percentile bootstrap"}
    else:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
    return out


# ---------------------------------------------------------------------------------------------
# MATH (Hendrycks et al., 2021): the final answer is boxed
# ---------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])\s*(\{)?")
_BARE_BOXED = re.compile(r"[^\s$]+")


def math_answer(text: str) -> str | None:
    r"""The content of the last ``\boxed{...}`` (or ``\fbox{...}``), nested braces matched, stripped.

    ``"so the answer is \boxed{\frac{1}{2}}."`` -> ``"\frac{1}{2}"``; ``"\boxed{\{1, 2\}}"`` ->
    ``"\{1, 2\}"`` (escaped braces do not count); the brace-less ``"\boxed 5"`` -> ``"5"`` (up to
    whitespace or ``$``). None without a box, or when the last box's braces are not closed. No
    further normalisation (``\dfrac`` vs ``\frac``, ``0.5`` vs ``\frac{1}{2}``): that is an
    equivalence checker's job.
    """
    boxes = list(_BOXED.finditer(text))
    if not boxes:
        return None
    box = boxes[-1]
    if box.group(1) is None:
        bare = _BARE_BOXED.match(text, box.end())
        return bare.group(0) if bare else None
    depth, i = 1, box.end()
    while i < len(text):
        char = text[i]
        if char == "\\":  # an escaped character such as \{ or \}
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[box.end():i].strip()
        i += 1
    return None
