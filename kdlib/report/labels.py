"""Names, labels and the order of methods, tasks and metrics in every table and figure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from kdlib.maths.metrics import HIGHER_IS_BETTER

# ---------------------------------------------------------------------------------------------
# Names and labels
# ---------------------------------------------------------------------------------------------

# Row order of every table and figure. KETCHUP runs are named ``ketchup_k<K>`` and come after
# these, ordered by K (numerically); unknown names come last, in the order they first appear.
METHOD_ORDER: tuple[str, ...] = (
    "teacher", "zeroshot", "predistill",
    "seqkd", "kl", "js", "tvd",
    "llmr", "llmr_mean", "llmr_minvar",
    "ketchup", "opd", "ketchup_soft", "gkd_jsd", "minillm_pg", "distillm",
    "llmr_ppo", "ketchup_ppo",
    "cmdp", "grpo", "gkd_grpo", "gkd", "minillm",
)
_METHOD_LABELS = {
    "teacher": "Teacher",
    "zeroshot": "Student (zero-shot)",
    "predistill": "Student (pre-distilled)",
    "seqkd": "SeqKD",
    "kl": "KL",
    "js": "JS",
    "tvd": "TVD",
    "llmr": "LLMR",
    "llmr_mean": "LLMR + mean baseline",
    "llmr_minvar": "LLMR + min-var baseline",
    "ketchup": "KETCHUP",
    "opd": "On-policy reverse KL (OPD)",
    "gkd_jsd": "GKD (generalised JSD)",  # Agarwal et al. 2024; seed 004's GRPO-loop "gkd" is labelled "GKD"
    "minillm_pg": "MiniLLM (reverse-KL policy gradient)",  # Gu et al. 2024; seed 004's is "Mini-LLM"
    "distillm": "DistiLLM (skew KL)",
    "llmr_ppo": "LLMR + PPO (critic, GAE)",
    "ketchup_ppo": "KETCHUP + PPO",
    "cmdp": "Ours (constrained KD)",  # seed 004
    "grpo": "GRPO",
    "gkd_grpo": "GKD-GRPO",
    "gkd": "GKD",
    "minillm": "Mini-LLM",
}
NOT_STUDENTS = ("teacher", "zeroshot")  # excluded when marking the best student (as in the paper)
_KETCHUP_RE = re.compile(r"^ketchup_k(\d+|auto)$")
_KETCHUP_PPO_RE = re.compile(r"^ketchup_ppo_k(\d+)$")

TASK_LABELS: dict[str, str] = {
    "mini-xsum": "mini-XSum",
    "mini-europarl": "mini-Europarl EN-NL",
    "mini-gsm8k": "mini-GSM8K",
    "xsum": "XSum",
    "europarl": "Europarl EN-NL",
    "gsm8k": "GSM8K",
}
# Which metric columns a task shows, by task kind (see task_kind), in display order.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "summarization": ("rouge1", "rouge2", "rougeL", "validity"),
    "translation": ("bleu", "chrf", "ter", "validity"),
    "arithmetic": ("accuracy", "validity"),
}  # validity: % of outputs valid for their input (generated tasks only: the generator knows every valid output)
METRIC_LABELS: dict[str, str] = {
    "rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L",
    "bleu": "BLEU", "chrf": "chrF", "ter": "TER↓",
    "accuracy": "Acc.", "distinct2": "Distinct-2", "validity": "Valid %",
}


def _ketchup_k(name: str) -> int | None:
    """K of a KETCHUP run name (``ketchup_k4`` -> 4; ``ketchup_kauto`` -> 10**6, after every fixed K)."""
    m = _KETCHUP_RE.match(str(name))
    if not m:
        return None
    return 10**6 if m.group(1) == "auto" else int(m.group(1))


_KETCHUP_SOFT_RE = re.compile(r"^ketchup_soft_k(\d+)$")


def method_label(name: str) -> str:
    """Display label of a run name: ``"llmr_mean"`` -> ``"LLMR + mean baseline"``,
    ``"ketchup_k4"`` -> ``"KETCHUP (K=4)"``; unknown names are returned unchanged."""
    k = _ketchup_k(name)
    if k is not None:
        return "KETCHUP (K=auto)" if k == 10**6 else f"KETCHUP (K={k})"
    m = _KETCHUP_PPO_RE.match(str(name))
    if m:
        return f"KETCHUP + PPO (K={m.group(1)})"
    m = _KETCHUP_SOFT_RE.match(str(name))
    if m:
        return f"KETCHUP, soft value (K={m.group(1)})"
    return _METHOD_LABELS.get(name, str(name))


def _method_key(name: str, first_seen: Mapping[str, int]) -> tuple:
    k = _ketchup_k(name)
    if k is not None:
        return (1, METHOD_ORDER.index("ketchup"), k, 0)
    m = _KETCHUP_PPO_RE.match(str(name))
    if m:
        return (1, METHOD_ORDER.index("ketchup_ppo"), int(m.group(1)), 0)
    m = _KETCHUP_SOFT_RE.match(str(name))
    if m:
        return (1, METHOD_ORDER.index("ketchup_soft"), int(m.group(1)), 0)
    if name in METHOD_ORDER:
        return (0 if name != "ketchup" else 1, METHOD_ORDER.index(name), -1, 0)
    return (2, 0, 0, first_seen.get(name, 0))


def sort_methods(names: Iterable[str]) -> list[str]:
    """Unique run names in ``METHOD_ORDER``, KETCHUP runs by K, unknown names last (as first seen)."""
    seen: dict[str, int] = {}
    for n in names:
        seen.setdefault(str(n), len(seen))
    return sorted(seen, key=lambda n: _method_key(n, seen))


def task_kind(task: str) -> str | None:
    """``"summarization"`` / ``"translation"`` / ``"arithmetic"`` from a task name, else None."""
    t = str(task).lower()
    if "xsum" in t:
        return "summarization"
    if "europarl" in t:
        return "translation"
    if "gsm8k" in t:
        return "arithmetic"
    return None


def task_label(task: str) -> str:
    return TASK_LABELS.get(task, str(task))


def _sort_tasks(tasks: Iterable[str]) -> list[str]:
    order = list(TASK_LABELS)
    seen: dict[str, int] = {}
    for t in tasks:
        seen.setdefault(str(t), len(seen))
    return sorted(seen, key=lambda t: (order.index(t), 0) if t in order else (len(order), seen[t]))


def _metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def _higher_is_better(metric: str) -> bool:
    return HIGHER_IS_BETTER.get(metric, True)
