"""Tables, figures, provenance and the index page (floor 2: imports kdlib.stats and kdlib.metrics only).

Everything here takes *saved results* (pandas DataFrames read from run folders or result files)
and returns a DataFrame or a matplotlib Figure; nothing trains, loads a model or reads a run.

Public API
- ``METHOD_ORDER``, ``method_label(name)``, ``sort_methods(names)``: run names -> display labels/order.
- ``TASK_LABELS``, ``TASK_METRICS``, ``METRIC_LABELS``, ``task_label(task)``, ``task_kind(task)``.
- ``PAPER_TABLE1``, ``paper_table1()``: the paper's own Table 1 (seed 000), labelled as such.
- ``main_table(results)`` -> (display, numeric): Table 1 of the kit, mean ± 95% CI over seeds,
  best student marked, paired t-test of every KETCHUP row against LLMR.
- ``write_table(df, out_dir, name, caption=None, latex=True)``: CSV + Markdown (+ LaTeX), atomically.
- ``save_figure(fig, out_dir, name)``: PNG (150 dpi) + PDF, atomically; closes the figure.
- ``plot_returns(df)``: Figure 1 (average true return, Eq. (10), per RL method and task).
- ``plot_variance_bias(df)``: Figure 2 (variance and |bias| of the K-step return against K).
- ``plot_learning_curves(df, value_label)``: Figure 3 (dev metric against RL step, per student size).
- ``write_provenance(out_dir, params)``: provenance.json (commit, versions, date, params without secrets).
- ``write_index(out_dir)``: index.html + index.md listing every output, grouped by notebook.

``python -m kdlib.report index OUT_DIR`` rebuilds the index page (``run_all.sh`` calls it last).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

import matplotlib


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")  # only look: importing IPython here would be slow
    try:
        return ipython is not None and ipython.get_ipython() is not None
    except Exception:  # noqa: BLE001 - any trouble means "not a live IPython session"
        return False


if not _in_ipython():
    # Scripts and tests: never open a window. Inside Jupyter/IPython the session's backend (inline)
    # is kept, or figures would silently stop appearing in the notebook.
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, NullLocator  # noqa: E402

from kdlib.metrics import HIGHER_IS_BETTER, PRIMARY_METRIC  # noqa: E402
from kdlib.stats import format_mean_ci, mean_ci, paired_ttest  # noqa: E402

__all__ = [
    "METHOD_ORDER",
    "METRIC_LABELS",
    "PAPER_TABLE1",
    "TASK_LABELS",
    "TASK_METRICS",
    "main_table",
    "method_label",
    "paper_table1",
    "plot_learning_curves",
    "plot_returns",
    "plot_variance_bias",
    "save_figure",
    "sort_methods",
    "task_kind",
    "task_label",
    "write_index",
    "write_provenance",
    "write_table",
]

# ---------------------------------------------------------------------------------------------
# Names and labels
# ---------------------------------------------------------------------------------------------

# Row order of every table and figure. KETCHUP runs are named ``ketchup_k<K>`` and come after
# these, ordered by K (numerically); unknown names come last, in the order they first appear.
METHOD_ORDER: tuple[str, ...] = (
    "teacher", "zeroshot", "predistill",
    "seqkd", "kl", "js", "tvd",
    "llmr", "llmr_mean", "llmr_minvar",
    "ketchup",
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
    "summarization": ("rouge1", "rouge2", "rougeL"),
    "translation": ("bleu", "chrf", "ter"),
    "arithmetic": ("accuracy",),
}
METRIC_LABELS: dict[str, str] = {
    "rouge1": "R-1", "rouge2": "R-2", "rougeL": "R-L",
    "bleu": "BLEU", "chrf": "chrF", "ter": "TER↓",
    "accuracy": "Acc.", "distinct2": "Distinct-2",
}


def _ketchup_k(name: str) -> int | None:
    """K of a KETCHUP run name (``ketchup_k4`` -> 4; ``ketchup_kauto`` -> 10**6, after every fixed K)."""
    m = _KETCHUP_RE.match(str(name))
    if not m:
        return None
    return 10**6 if m.group(1) == "auto" else int(m.group(1))


def method_label(name: str) -> str:
    """Display label of a run name: ``"llmr_mean"`` -> ``"LLMR + mean baseline"``,
    ``"ketchup_k4"`` -> ``"KETCHUP (K=4)"``; unknown names are returned unchanged."""
    k = _ketchup_k(name)
    if k is not None:
        return "KETCHUP (K=auto)" if k == 10**6 else f"KETCHUP (K={k})"
    m = _KETCHUP_PPO_RE.match(str(name))
    if m:
        return f"KETCHUP + PPO (K={m.group(1)})"
    return _METHOD_LABELS.get(name, str(name))


def _method_key(name: str, first_seen: Mapping[str, int]) -> tuple:
    k = _ketchup_k(name)
    if k is not None:
        return (1, METHOD_ORDER.index("ketchup"), k, 0)
    m = _KETCHUP_PPO_RE.match(str(name))
    if m:
        return (1, METHOD_ORDER.index("ketchup_ppo"), int(m.group(1)), 0)
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


# ---------------------------------------------------------------------------------------------
# The paper's Table 1 (seed 000)
# ---------------------------------------------------------------------------------------------

PAPER_TABLE1_CAPTION = ("Table 1 as reported in the KETCHUP paper (FLAN-T5-XL -> T5-base; XSum, Europarl "
                        "EN-NL, GSM8K test sets); not reproduced here. * best student per column.")

# method -> task -> metric -> value, transcribed from seed 000, Table 1. "zeroshot" is the
# paper's "Student" row (the off-the-shelf T5-base prompted zero-shot). The extended version
# (seed 001, where the method is called BRIM) reports different numbers for some KETCHUP rows
# (e.g. K=2 XSum R-1 36.63); these are the seed-000 numbers.
PAPER_TABLE1: dict[str, dict[str, dict[str, float]]] = {}


def _paper_row(r1, r2, rl, bleu, chrf, ter, acc):
    return {"xsum": {"rouge1": r1, "rouge2": r2, "rougeL": rl},
            "europarl": {"bleu": bleu, "chrf": chrf, "ter": ter},
            "gsm8k": {"accuracy": acc}}


PAPER_TABLE1.update({
    "teacher": _paper_row(41.32, 18.86, 33.79, 25.36, 51.11, 63.17, 40.71),
    "zeroshot": _paper_row(19.60, 3.19, 13.72, 0.95, 24.80, 100.21, 0.00),
    "seqkd": _paper_row(33.54, 11.90, 26.67, 22.09, 48.33, 66.18, 20.02),
    "kl": _paper_row(34.36, 12.86, 27.38, 22.35, 48.58, 65.93, 23.96),
    "js": _paper_row(34.87, 13.18, 27.84, 22.55, 48.71, 65.74, 24.72),
    "tvd": _paper_row(35.17, 13.30, 28.10, 22.63, 48.66, 65.79, 24.94),
    "llmr": _paper_row(35.54, 13.70, 28.56, 22.72, 49.04, 65.38, 25.21),
    "llmr_mean": _paper_row(35.60, 13.76, 28.64, 22.67, 49.03, 65.39, 25.39),
    "llmr_minvar": _paper_row(35.59, 13.78, 28.66, 22.70, 48.97, 65.55, 25.10),
    "ketchup_k2": _paper_row(36.03, 13.95, 28.89, 22.93, 49.25, 65.15, 25.32),
    "ketchup_k4": _paper_row(35.96, 13.96, 28.87, 22.93, 49.21, 65.21, 25.40),
    "ketchup_k8": _paper_row(35.68, 13.88, 28.76, 22.95, 49.23, 65.20, 25.71),
    "ketchup_k16": _paper_row(35.31, 13.68, 28.51, 22.94, 49.24, 65.18, 25.47),
})


def _paper_long() -> pd.DataFrame:
    rows = [{"task": task, "method": method, "seed": 0, "metric": metric, "value": value}
            for method, tasks in PAPER_TABLE1.items()
            for task, metrics in tasks.items()
            for metric, value in metrics.items()]
    return pd.DataFrame(rows)


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 in the layout of :func:`main_table` (best student marked " *"),
    with a "Source" column and ``df.attrs["caption"]`` saying these numbers are the paper's
    (FLAN-T5-XL -> T5-base), not reproduced by this kit."""
    display, _ = _build_table(_aggregate(_paper_long()), p_values=pd.DataFrame())
    display["Source"] = "KETCHUP paper (not reproduced)"
    display.attrs["caption"] = PAPER_TABLE1_CAPTION
    return display


def paper_table7() -> pd.DataFrame:
    """Seed 001 App. F, Table 7 (Qwen1.5-4B teacher -> Qwen1.5-0.5B student), verbatim, labelled."""
    rows = [("Teacher (Qwen1.5-4B)", 38.15, 21.32, 42.08), ("Student (Qwen1.5-0.5B)", 8.80, 0.02, 0.00),
            ("KL", 31.29, 15.76, 26.31), ("TVD", 31.18, 16.22, 26.99), ("LLMR", 31.61, 15.90, 27.29),
            ("BRIM / KETCHUP (best K = 2/2/16)", 32.28, 16.46, 28.13)]
    df = pd.DataFrame(rows, columns=["Method", "XSum R-1", "Europarl BLEU", "GSM8K Acc."])
    df["Source"] = "BRIM paper, Table 7 (not reproduced)"
    df.attrs["caption"] = ("Seed 001 Table 7 as printed (decoder-only Qwen1.5-4B -> Qwen1.5-0.5B, full datasets, single "
                           "runs as far as the paper says): for reference, not what this kit ran.")
    return df


def paper_table8() -> pd.DataFrame:
    """Seed 001 Table 8: the best K per architecture and task, verbatim."""
    df = pd.DataFrame([("T5 (paper)", 2, 2, 8), ("Qwen (paper)", 2, 2, 16)],
                      columns=["Architecture", "XSum (T=64)", "Europarl (T=64)", "GSM8K (T=256)"])
    df.attrs["caption"] = "Seed 001 Table 8 as printed: best K per architecture and task (not reproduced)."
    return df


# ---------------------------------------------------------------------------------------------
# Main table
# ---------------------------------------------------------------------------------------------

_RESULT_COLUMNS = ("task", "method", "seed", "metric", "value")


def _check_columns(df: pd.DataFrame, needed: Iterable[str], what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}; got {', '.join(map(str, df.columns))}")


def _aggregate(results: pd.DataFrame) -> pd.DataFrame:
    """(task, method, metric) -> mean, 95% CI half-width (t), n_seeds; NaN values are dropped."""
    rows = []
    for (task, method, metric), g in results.groupby(["task", "method", "metric"], sort=False):
        values = pd.to_numeric(g["value"], errors="coerce").dropna().to_numpy(dtype=float)
        if values.size == 0:
            continue
        mean, hw = mean_ci(values)
        rows.append({"task": task, "method": method, "metric": metric,
                     "mean": mean, "half_width": hw, "n_seeds": int(values.size)})
    return pd.DataFrame(rows, columns=["task", "method", "metric", "mean", "half_width", "n_seeds"])


def _p_values(results: pd.DataFrame, baseline: str = "llmr") -> pd.DataFrame:
    """Paired t-test (over seeds) of every KETCHUP run against ``baseline`` (LLMR; LLMR + PPO in the
    PPO study) on each task's primary metric. Tasks without any ``baseline`` run get no test."""
    rows = []
    for task in results["task"].unique():
        primary = PRIMARY_METRIC.get(task_kind(task) or "")
        sub = results[(results["task"] == task) & (results["metric"] == primary)]
        llmr = sub[sub["method"] == baseline].groupby("seed")["value"].mean()
        if llmr.empty:
            continue
        for method in sort_methods(sub["method"]):
            if not str(method).startswith("ketchup"):
                continue
            ours = sub[sub["method"] == method].groupby("seed")["value"].mean()
            paired = pd.concat([ours.rename("ours"), llmr.rename("llmr")], axis=1, join="inner").dropna()
            n = len(paired)
            t, p = paired_ttest(paired["ours"], paired["llmr"]) if n >= 2 else (math.nan, math.nan)
            delta = float((paired["ours"] - paired["llmr"]).mean()) if n else math.nan
            if not _higher_is_better(primary):
                delta = -delta  # positive = KETCHUP better, whatever the metric's direction
            if n < 2:
                text = "n/a (1 seed)" if n == 1 or len(ours) <= 1 else "n/a (no paired seeds)"
            elif math.isnan(p):
                text = "n/a (constant difference)"
            else:
                text = f"{delta:+.2f}, p {_format_p(p)}{significance_marker(p)}"
            rows.append({"task": task, "method": method, "metric": primary, "t_vs_llmr": t,
                         "p_vs_llmr": p, "n_paired": n, "delta_vs_llmr": delta,
                         "significant_0035": bool(p < ALPHA) if not math.isnan(p) else False,
                         "significant_005": bool(p < 0.05) if not math.isnan(p) else False, "p_text": text})
    return pd.DataFrame(rows, columns=["task", "method", "metric", "t_vs_llmr", "p_vs_llmr", "n_paired", "delta_vs_llmr",
                                       "significant_0035", "significant_005", "p_text"])


ALPHA = 0.035  # seed 001 App. E: "p < 0.035 indicating the differences are deemed significant"


def significance_marker(p: float) -> str:
    """" ‡" for p < 0.035 (the paper's threshold), " †" for 0.035 <= p < 0.05, else ""."""
    if p is None or math.isnan(p):
        return ""
    return " ‡" if p < ALPHA else (" †" if p < 0.05 else "")


def _format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _build_table(stats: pd.DataFrame, p_values: pd.DataFrame,
                 markers: Mapping[tuple[str, str], str] | None = None,
                 baseline_label: str = "LLMR") -> tuple[pd.DataFrame, pd.DataFrame]:
    markers = markers or {}
    tasks = _sort_tasks(stats["task"])
    methods = sort_methods(stats["method"])
    stats = stats.copy()
    stats["best"] = False
    columns: list[tuple[str, str, str]] = []  # (column name, task, metric or "p")
    for task in tasks:
        in_task = stats[stats["task"] == task]
        present = list(dict.fromkeys(in_task["metric"]))
        kind = task_kind(task)
        shown = [m for m in TASK_METRICS.get(kind, ()) if m in present] if kind else present
        for metric in shown:
            columns.append((f"{task_label(task)} {_metric_label(metric)}", task, metric))
            # Best student: compare at the displayed precision so ties are all marked.
            cand = in_task[(in_task["metric"] == metric) & ~in_task["method"].isin(NOT_STUDENTS)]
            if not cand.empty:
                shown_values = cand["mean"].round(2)
                best = shown_values.max() if _higher_is_better(metric) else shown_values.min()
                stats.loc[shown_values[shown_values == best].index, "best"] = True
        if not p_values.empty and (p_values["task"] == task).any():
            columns.append((f"{task_label(task)} vs {baseline_label}", task, "p"))

    by_key = stats.set_index(["task", "method", "metric"])
    p_by_key = p_values.set_index(["task", "method"]) if not p_values.empty else None
    table = []
    for method in methods:
        row = {"Method": method_label(method)}
        for col, task, metric in columns:
            if metric == "p":
                row[col] = p_by_key.loc[(task, method), "p_text"] if (task, method) in p_by_key.index else ""
                continue
            if (task, method, metric) not in by_key.index:
                row[col] = "–"
                continue
            s = by_key.loc[(task, method, metric)]
            hw = s["half_width"] if s["n_seeds"] >= 2 else math.nan
            cell = format_mean_ci(float(s["mean"]), float(hw), digits=2)
            cell = cell + " *" if bool(s["best"]) else cell
            if metric == PRIMARY_METRIC.get(task_kind(task) or "") and (task, method) in markers:
                cell += " " + markers[(task, method)]
            row[col] = cell
        table.append(row)
    display = pd.DataFrame(table, columns=["Method"] + [c for c, _, _ in columns])

    numeric = stats.copy()
    numeric["best_at_step0"] = [markers.get((t, m), "") for t, m in zip(numeric["task"], numeric["method"])]
    if not p_values.empty:
        numeric = numeric.merge(p_values.drop(columns="p_text"), on=["task", "method", "metric"], how="left")
    else:
        numeric = numeric.assign(t_vs_llmr=math.nan, p_vs_llmr=math.nan, n_paired=pd.NA)
    numeric.insert(1, "task_label", numeric["task"].map(task_label))
    numeric.insert(3, "method_label", numeric["method"].map(method_label))
    order = {m: i for i, m in enumerate(methods)}
    numeric = (numeric.assign(_t=numeric["task"].map({t: i for i, t in enumerate(tasks)}),
                              _m=numeric["method"].map(order))
               .sort_values(["_t", "_m", "metric"], kind="stable").drop(columns=["_t", "_m"])
               .reset_index(drop=True))
    return display, numeric


def start_markers(runs: pd.DataFrame | None) -> dict[tuple[str, str], str]:
    """``{(task, method): "§k/n"}`` for methods whose best dev checkpoint was step 0 in k of their n
    trained seeds: there the reported row IS the pre-distilled student, not the method."""
    out: dict[tuple[str, str], str] = {}
    if runs is None or runs.empty or "best_step" not in runs:
        return out
    trained = runs[pd.to_numeric(runs["steps"], errors="coerce").fillna(0) > 0]
    for (task, method), g in trained.groupby(["task", "method"]):
        if method in ("teacher", "predistill"):
            continue
        k = int((pd.to_numeric(g["best_step"], errors="coerce") == 0).sum())
        if k:
            out[(task, method)] = f"§{k}/{len(g)}"
    return out


def main_table(results: pd.DataFrame, runs: pd.DataFrame | None = None,
               baseline: str = "llmr") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The kit's Table 1 from long-format results (columns task, method, seed, metric, value).

    Returns ``(display, numeric)``:

    * ``display``: one row per method (``METHOD_ORDER``, KETCHUP by K), a "Method" column, then
      per task its metric columns (``"mini-XSum R-L"``; metrics from ``TASK_METRICS``) and, when
      KETCHUP rows exist, a ``"<task> vs LLMR"`` column (mean paired difference, p, markers). Cells read ``"mean ± half-width"``
      (95% CI, t-distribution over seeds) when a method has several seeds, else ``"mean"``; two
      decimals; ``"–"`` when missing. The best student per column (teacher and zero-shot
      student excluded; TER lower is better; ties at two decimals all marked) ends in ``" *"``.
      The p column holds the two-sided paired t-test (pairs matched by seed) of each KETCHUP
      run against LLMR on the task's primary metric, or ``"n/a (1 seed)"`` with fewer than two
      paired seeds. ``baseline`` names the method KETCHUP rows are tested against (default LLMR;
      ``llmr_ppo`` in the PPO study); without any run of it there is no such column.
      ``display.attrs["caption"]`` explains all this; :func:`write_table` uses it.
    * ``numeric``: one row per (task, method, metric): mean, half_width, n_seeds, best, and for
      KETCHUP rows on the primary metric t_vs_llmr, p_vs_llmr, n_paired.
    """
    _check_columns(results, _RESULT_COLUMNS, "main_table(results)")
    results = results.loc[:, list(_RESULT_COLUMNS)].copy()
    results["value"] = pd.to_numeric(results["value"], errors="coerce")
    dup = results.duplicated(["task", "method", "seed", "metric"], keep=False)
    if dup.any():
        example = results[dup].iloc[0]
        raise ValueError(f"main_table(results): several values for task={example['task']!r}, "
                         f"method={example['method']!r}, seed={example['seed']!r}, metric={example['metric']!r}; "
                         "expected one value per (task, method, seed, metric)")
    stats = _aggregate(results)
    if stats.empty:
        raise ValueError("main_table(results): no numeric values")
    markers = start_markers(runs)
    base = method_label(baseline)
    p_values = _p_values(results, baseline)
    display, numeric = _build_table(stats, p_values, markers, base)
    n = sorted(set(numeric["n_seeds"]))
    seeds = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    display.attrs["caption"] = (
        f"Test-set results ({seeds} seed(s) per method). Cells: mean ± 95% CI half-width "
        "(t-distribution) over seeds; no ± for single runs. * best student per column "
        "(teacher and zero-shot student excluded); ↓ lower is better. "
        + (f"vs {base}: mean paired difference on the task's primary metric (positive = KETCHUP better) and the "
           "two-sided paired t-test over seeds; ‡ p < 0.035 (seed 001 App. E's threshold), † p < 0.05. "
           if not p_values.empty else "")
        + "§k/n after a primary-metric cell: in k of n seeds the best dev checkpoint was step 0, so the row "
        "is the pre-distilled student there, not the method.")
    return display, numeric


def ketchup_verdicts(numeric: pd.DataFrame) -> list[str]:
    """One line per task: did any KETCHUP row beat LLMR with p < 0.035 (seed 001 App. E)? Read off
    :func:`main_table`'s numeric frame; says so plainly when none did."""
    lines = []
    if "p_vs_llmr" not in numeric:
        return ["No KETCHUP-vs-LLMR test (no KETCHUP rows or one seed)."]
    tested = numeric.dropna(subset=["p_vs_llmr"])
    for task in _sort_tasks(numeric["task"]):
        sub = tested[tested["task"] == task]
        if sub.empty:
            lines.append(f"{task_label(task)}: not tested (fewer than two paired seeds).")
            continue
        metric = _metric_label(sub["metric"].iloc[0])
        better = sub[(sub["p_vs_llmr"] < ALPHA) & (sub["delta_vs_llmr"] > 0)]
        worse = sub[(sub["p_vs_llmr"] < ALPHA) & (sub["delta_vs_llmr"] < 0)]
        n = int(sub["n_paired"].max())
        if not better.empty:
            parts = [f"{method_label(m)} ({d:+.2f} {metric}, p {_format_p(p)})"
                     for m, d, p in zip(better["method"], better["delta_vs_llmr"], better["p_vs_llmr"])]
            text = f"KETCHUP beat LLMR with p < 0.035 ({n} seeds): " + "; ".join(parts)
        else:
            # "closest": the KETCHUP row ahead of LLMR with the smallest p (or, when none is ahead, the
            # row least behind); rows that pass only the looser 0.05 level are named as such.
            ahead = sub[sub["delta_vs_llmr"] > 0]
            best = ahead.loc[ahead["p_vs_llmr"].idxmin()] if not ahead.empty else sub.loc[sub["delta_vs_llmr"].idxmax()]
            text = (f"KETCHUP did not beat LLMR with p < 0.035 ({n} seeds); closest: {method_label(best['method'])} "
                    f"{best['delta_vs_llmr']:+.2f} {metric}, p {_format_p(best['p_vs_llmr'])}")
            loose = ahead[ahead["p_vs_llmr"] < 0.05]
            if not loose.empty:
                text += " (p < 0.05 only, not the paper's 0.035: " + ", ".join(method_label(m) for m in loose["method"]) + ")"
            elif ahead.empty:
                text += " (every KETCHUP row is behind LLMR)"
        if not worse.empty:
            text += "; significantly WORSE than LLMR: " + ", ".join(method_label(m) for m in worse["method"])
        lines.append(f"{task_label(task)}: {text}.")
    return lines


# ---------------------------------------------------------------------------------------------
# Writing files
# ---------------------------------------------------------------------------------------------


def _publish(tmp: str | Path, path: Path) -> None:
    """Give a temporary file the usual permissions (mkstemp makes it 0600), then move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _atomic_write(path: Path, data: str | bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _cell_text(x) -> str:
    """Plain text of one cell for Markdown/LaTeX: floats with 2 decimals (3 significant if < 1)."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if x != 0 and abs(x) < 1:
            return f"{x:.3g}"
        return f"{x:.2f}"
    return str(x)


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """Keep a meaningful index as leading column(s); flatten MultiIndex columns."""
    out = df.copy()
    if not isinstance(out.index, pd.RangeIndex) or out.index.name is not None:
        out = out.reset_index()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(c) for c in col if str(c)) for col in out.columns]
    out.columns = [str(c) for c in out.columns]
    return out


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "–": "--", "<": r"$<$", ">": r"$>$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials; ``±``/``↓``/``↑``/``->`` become math symbols."""
    return "$\\rightarrow$".join("".join(_LATEX_SPECIALS.get(ch, ch) for ch in part) for part in str(text).split("->"))


def _to_latex(df: pd.DataFrame, caption: str | None, label: str) -> str:
    def cell(x) -> str:
        text = _cell_text(x)
        if text.endswith(" *"):  # the best-student marker: bold instead of a star
            return r"\textbf{" + latex_escape(text[:-2]) + "}"
        return latex_escape(text)

    align = "l" + "r" * (df.shape[1] - 1)
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering"]
    if caption:  # the " *" marker is set in bold in LaTeX, so say so
        caption = caption.replace("* best student", "Bold: best student")
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines.append(r"\label{tab:" + re.sub(r"[^A-Za-z0-9:_-]", "-", label) + "}")
    lines += [r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{" + align + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(cell(x) for x in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def _to_markdown(df: pd.DataFrame, caption: str | None) -> str:
    from tabulate import tabulate

    def md(x) -> str:
        return _cell_text(x).replace("|", r"\|").replace("\n", " ")

    body = tabulate([[md(x) for x in row] for row in df.itertuples(index=False)],
                    headers=[md(c) for c in df.columns], tablefmt="github", disable_numparse=True)
    head = f"### {' '.join(str(caption).split())}\n\n" if caption else ""
    return head + body + "\n"


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str, caption: str | None = None,
                latex: bool = True) -> dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.md`` (GitHub table, caption as a ``###`` line above) and,
    with ``latex=True``, ``<name>.tex`` (booktabs; cells ending in " *" set in bold), each atomically.

    ``caption`` defaults to ``df.attrs["caption"]``. A non-default index is written as leading
    column(s). Returns ``{"csv": path, "md": path, "tex": path}``.
    """
    out_dir = Path(out_dir)
    caption = caption if caption is not None else df.attrs.get("caption")
    flat = _flat(df)
    paths = {"csv": _atomic_write(out_dir / f"{name}.csv", flat.to_csv(index=False)),
             "md": _atomic_write(out_dir / f"{name}.md", _to_markdown(flat, caption))}
    if latex:
        paths["tex"] = _atomic_write(out_dir / f"{name}.tex", _to_latex(flat, caption, name))
    return paths


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Save ``<name>.png`` (150 dpi) and ``<name>.pdf`` atomically, close the figure, return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    try:
        for ext, kwargs in (("png", {"dpi": 150}), ("pdf", {})):
            path = out_dir / f"{name}.{ext}"
            fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            try:
                fig.savefig(tmp, format=ext, bbox_inches="tight", **kwargs)
                _publish(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            paths[ext] = path
    finally:
        plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

_FIXED_COLORS = {
    "teacher": "#222222", "zeroshot": "#9e9e9e", "predistill": "#7f7f7f",
    "seqkd": "#b07aa1", "kl": "#9c755f", "js": "#edc948", "tvd": "#76b7b2",
    "llmr": "#4e79a7", "llmr_mean": "#6b9bd1", "llmr_minvar": "#9ab8de",
    "ketchup": "#e15759", "llmr_ppo": "#1f3b73",
    "cmdp": "#d62728", "grpo": "#1f77b4", "gkd_grpo": "#2ca02c", "gkd": "#8c564b", "minillm": "#9467bd",
}


def _method_color(name: str):
    """One colour per method, the same in every figure: LLMR family blue, KETCHUP red/orange by K."""
    k = _ketchup_k(name)
    if k == 10**6:
        return "#6a3d9a"  # adaptive K
    if k is not None:
        return plt.cm.YlOrRd(min(0.95, 0.35 + 0.13 * math.log2(max(k, 1))))
    if _KETCHUP_PPO_RE.match(str(name)):
        return "#b2182b"
    return _FIXED_COLORS.get(name, "#59a14f")


def _style_axes(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.grid(axis="y", alpha=0.3, linewidth=0.6)
    ax.set_axisbelow(True)


def _mean_hw(values) -> tuple[float, float, int]:
    v = pd.to_numeric(pd.Series(values), errors="coerce").dropna().to_numpy(dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    mean, hw = mean_ci(v)
    return mean, (hw if v.size >= 2 else math.nan), int(v.size)


def plot_returns(df: pd.DataFrame) -> Figure:
    """Figure 1: the average true return of Eq. (10) on the test set, per RL method and task.

    ``df`` columns: task, method, seed, return (one row per run, or per run and input). Bars show
    the mean over seeds (a run's rows are averaged first), error bars the 95% CI (t) when there
    are several seeds; each bar is annotated with its mean. Negative returns hang below zero.
    """
    _check_columns(df, ("task", "method", "return"), "plot_returns(df)")
    handles = [Patch(facecolor=_method_color("llmr"), edgecolor="black", linewidth=0.5,
                     label="LLMR and its batch baselines (K=1)"),
               Patch(facecolor=_method_color("ketchup_k4"), edgecolor="black", linewidth=0.5,
                     label="KETCHUP (K-step return)")]
    return plot_method_bars(df, "return", "average return, Eq. (10)\n(teacher logit units)",
                            "Average return on the test set (higher is better)", handles)


def plot_method_bars(df: pd.DataFrame, value: str, ylabel: str, title: str, handles: list | None = None) -> Figure:
    """One panel per task, one bar per method: the mean of ``value`` over seeds (a run's rows are
    averaged first) with 95% CI error bars (t) when there are several seeds, each bar annotated."""
    _check_columns(df, ("task", "method", value), "plot_method_bars(df)")
    df = df.copy()
    if "seed" not in df.columns:
        df["seed"] = 0
    per_run = df.groupby(["task", "method", "seed"], sort=False)[value].mean().reset_index()
    tasks = _sort_tasks(per_run["task"])
    n_methods = per_run.groupby("task")["method"].nunique().max()
    width = max(3.2, 0.55 * n_methods + 1.2)
    fig, axes = plt.subplots(1, len(tasks), figsize=(width * len(tasks), 4.3), squeeze=False,
                             layout="constrained")
    max_seeds = 0
    for ax, task in zip(axes[0], tasks):
        sub = per_run[per_run["task"] == task]
        methods = sort_methods(sub["method"])
        stats = [_mean_hw(sub.loc[sub["method"] == m, value]) for m in methods]
        means = np.array([s[0] for s in stats])
        hws = np.array([s[1] for s in stats])
        max_seeds = max(max_seeds, max(s[2] for s in stats))
        x = np.arange(len(methods))
        err = np.where(np.isnan(hws), 0.0, hws)
        ax.bar(x, means, width=0.72, color=[_method_color(m) for m in methods], edgecolor="black", linewidth=0.5,
               yerr=err if np.any(err > 0) else None, capsize=3, error_kw={"elinewidth": 0.9})
        lo = min(0.0, float(np.nanmin(means - err)))
        hi = max(0.0, float(np.nanmax(means + err)))
        span = (hi - lo) or 1.0
        pad = 0.02 * span
        for xi, m, e in zip(x, means, err):
            if np.isnan(m):
                continue
            if m >= 0:
                ax.text(xi, m + e + pad, f"{m:.2f}", ha="center", va="bottom", fontsize=7.5)
            else:
                ax.text(xi, m - e - pad, f"{m:.2f}", ha="center", va="top", fontsize=7.5)
        ax.set_ylim(lo - (0.14 * span if lo < 0 else 0), hi + (0.14 * span if hi > 0 else 0))
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xticks(x, [method_label(m) for m in methods], rotation=35, ha="right", rotation_mode="anchor",
                      fontsize=8.5)
        ax.set_title(task_label(task))
        _style_axes(ax)
    axes[0][0].set_ylabel(ylabel)
    handles = list(handles or [])
    if max_seeds >= 2:
        handles.append(Line2D([], [], color="black", marker="|", linestyle="-", markersize=8, linewidth=0.9,
                              label=f"95% CI over {max_seeds} seeds (t)"))
    else:
        handles.append(Line2D([], [], linestyle="none", label="single seed: no error bars"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False, fontsize=8.5)
    fig.suptitle(title, fontsize=11)
    return fig


def plot_gradient_variance(df: pd.DataFrame) -> Figure:
    """Issue 13: the policy gradient's total variance, the return's variance (Figure 2's, same
    samples), the gradient's bias (1 - cosine with the gradient under the true return) and its
    signal-to-noise ratio against K; one line per student (KL from the teacher), solid =
    Algorithm 1, dashed = block form."""
    _check_columns(df, ("student", "kl", "k", "tail", "trace_var", "return_var", "cosine_to_true", "snr"),
                   "plot_gradient_variance(df)")
    panels = (("trace_var", "tr Var of the policy gradient", True), ("return_var", "Var of the return G^_0 (Figure 2)", True),
              ("bias", "gradient bias: 1 - cos(E g_K, E g_true)", False), ("snr", "SNR = |E g| / sqrt(tr Var g)", False))
    d = df.copy()
    d["bias"] = 1.0 - d["cosine_to_true"]
    fig, axes = plt.subplots(2, 2, figsize=(10.5, 7.4), layout="constrained")
    students = list(dict.fromkeys(d.sort_values("kl", ascending=False)["student"]))
    colors = plt.cm.viridis(np.linspace(0.1, 0.85, max(1, len(students))))
    for ax, (col, title, log) in zip(axes.flat, panels):
        for c, st in zip(colors, students):
            for tail, (ls, mk, _) in _TAIL_STYLE.items():
                g = d[(d["student"] == st) & (d["tail"] == tail)].sort_values("k")
                kl = g["kl"].iloc[0] if len(g) else float("nan")
                ax.plot(g["k"], g[col], linestyle=ls, marker=mk, color=c, markersize=4,
                        label=f"{st} (KL {kl:.2f})" if tail == "algorithm1" else None)
        ax.set_xscale("log", base=2)
        if log:
            ax.set_yscale("log")
        ax.set_xticks(sorted(d["k"].unique()), [str(k) for k in sorted(d["k"].unique())])
        ax.set_xlabel("K")
        ax.set_title(title, fontsize=10)
        _style_axes(ax)
    handles, labels = axes[0][0].get_legend_handles_labels()
    handles += [Line2D([], [], color="grey", linestyle=ls, marker=mk, label=lab) for ls, mk, lab in _TAIL_STYLE.values()]
    fig.legend(handles, labels + [h.get_label() for h in handles[len(labels):]], loc="outside lower center", ncol=3,
               fontsize=8, frameon=False)
    return fig


def plot_exerror(curves: pd.DataFrame) -> Figure:
    """LLMR's exposure-bias analysis (seed 002 Fig. 2): ExError%(l) against the length l, one
    panel per task, one line per method. ``curves``: task, method, l, exerror."""
    _check_columns(curves, ("task", "method", "l", "exerror"), "plot_exerror(curves)")
    tasks = _sort_tasks(curves["task"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.4 * len(tasks) + 0.6, 3.9), squeeze=False, layout="constrained")
    for ax, task in zip(axes[0], tasks):
        sub = curves[curves["task"] == task]
        for m in sort_methods(sub["method"]):
            g = sub[sub["method"] == m].sort_values("l")
            ax.plot(g["l"], g["exerror"], color=_method_color(m), linewidth=1.5, label=method_label(m))
        ax.axhline(0.0, color="black", linewidth=0.7)
        ax.set_title(task_label(task))
        ax.set_xlabel("length l (tokens)")
        _style_axes(ax)
    axes[0][0].set_ylabel("ExError%(l)\n(excess accumulated KL on own trajectories)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    return fig


def plot_watch(watch: pd.DataFrame) -> Figure:
    """Reward-hacking watch: for every RL run, the gain of the greedy dev return (x) against the
    gain of the dev task metric (y), one panel per task; a run in the lower-right quadrant raised
    the return it optimises while the task metric fell (flagged)."""
    _check_columns(watch, ("task", "method", "return_gain", "metric_gain"), "plot_watch(watch)")
    tasks = _sort_tasks(watch["task"])
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 0.6, 3.9), squeeze=False, layout="constrained")
    for ax, task in zip(axes[0], tasks):
        sub = watch[watch["task"] == task]
        for m in sort_methods(sub["method"]):
            g = sub[sub["method"] == m]
            ax.scatter(g["return_gain"], g["metric_gain"], color=_method_color(m), s=22, label=method_label(m),
                       edgecolor="black", linewidth=0.3)
        ax.axhline(0.0, color="black", linewidth=0.7)
        ax.axvline(0.0, color="black", linewidth=0.7)
        metric = sub["metric"].iloc[0] if "metric" in sub and len(sub) else "metric"
        ax.set_title(task_label(task))
        ax.set_xlabel("gain of the greedy dev return, Eq. (10)")
        ax.set_ylabel(f"gain of dev {_metric_label(str(metric))}")
        _style_axes(ax)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right upper", fontsize=8, frameon=False)
    return fig


_VB_PANELS = (
    ("var_seq", "Variance, whole-sequence return", r"Var$[\hat G_0]$ (logit units$^2$)"),
    ("bias_seq", "|Bias|, whole-sequence return", r"$|\mathbb{E}[\hat G_0 - G_0]|$ (logit units)"),
    ("var_pos", "Variance, averaged over positions t", r"mean$_t$ Var$[\hat G_t]$ (logit units$^2$)"),
    ("bias_pos", "|Bias|, averaged over positions t", r"mean$_t$ $|\mathbb{E}[\hat G_t - G_t]|$ (logit units)"),
)
_TAIL_STYLE = {"algorithm1": ("-", "o", "Algorithm 1 (used for training)"),
               "block": ("--", "s", "block form, Eq. (7) (Theorem 1)")}


def plot_variance_bias(df: pd.DataFrame) -> Figure:
    """Figure 2: variance and |bias| of the K-step return against K, per student.

    ``df`` columns: student (label), kl (student-teacher KL), k, tail ("algorithm1" or "block"),
    var_seq, bias_seq, var_pos, bias_pos. Several rows per (student, k, tail), e.g. one per input,
    are averaged (bias as the mean of |bias|). Panels: (a) variance and (b) |bias| of the
    whole-sequence return G_0, (c)-(d) the same averaged over positions. One colour per student
    (legend shows its KL), solid = Algorithm 1, dashed = block form of Eq. (7); x = K (log2).
    """
    value_cols = [c for c, _, _ in _VB_PANELS]
    _check_columns(df, ("student", "kl", "k", "tail", *value_cols), "plot_variance_bias(df)")
    d = df.copy()
    for c in ("bias_seq", "bias_pos"):
        d[c] = pd.to_numeric(d[c], errors="coerce").abs()
    agg = d.groupby(["student", "k", "tail"], sort=False)[value_cols].mean().reset_index()
    kl = d.groupby("student", sort=False)["kl"].mean()
    students = sorted(kl.index, key=lambda s: (kl[s], list(kl.index).index(s)))  # closest to teacher first
    colors = plt.cm.viridis(np.linspace(0.05, 0.8, max(len(students), 2)))
    tails = [t for t in _TAIL_STYLE if t in set(agg["tail"])] + sorted(set(agg["tail"]) - set(_TAIL_STYLE))
    ks = sorted(int(k) for k in agg["k"].unique())

    fig, axes = plt.subplots(2, 2, figsize=(10, 7.2), layout="constrained")
    for ax, (col, title, ylabel) in zip(axes.flat, _VB_PANELS):
        for i, student in enumerate(students):
            for tail in tails:
                line = agg[(agg["student"] == student) & (agg["tail"] == tail)].sort_values("k")
                if line.empty:
                    continue
                ls, marker, _ = _TAIL_STYLE.get(tail, (":", "^", tail))
                ax.plot(line["k"], line[col], linestyle=ls, marker=marker, markersize=4.5, color=colors[i],
                        linewidth=1.6)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([str(k) for k in ks])
        values = agg[col].to_numpy(dtype=float)
        positive = values[np.isfinite(values) & (values > 0)]
        if col.startswith("var") and positive.size and positive.max() / positive.min() > 10:
            ax.set_yscale("log")
        ax.set_title(f"({'abcd'[value_cols.index(col)]}) {title}", fontsize=10)
        ax.set_xlabel("K (segment length, log$_2$ scale)")
        ax.set_ylabel(ylabel)
        _style_axes(ax)
        ax.grid(axis="x", alpha=0.15, linewidth=0.6)
    student_handles = [Line2D([], [], color=colors[i], linewidth=2.2, label=f"KL={kl[s]:.2f} ({s})")
                       for i, s in enumerate(students)]
    tail_handles = [Line2D([], [], color="black", linestyle=_TAIL_STYLE.get(t, (":", "^", t))[0],
                           marker=_TAIL_STYLE.get(t, (":", "^", t))[1], markersize=4.5,
                           label=_TAIL_STYLE.get(t, (":", "^", t))[2]) for t in tails]
    fig.legend(handles=student_handles, loc="outside lower left", frameon=False, fontsize=8.5,
               title="student (KL to the teacher)", title_fontsize=9, alignment="left")
    fig.legend(handles=tail_handles, loc="outside lower right", frameon=False, fontsize=8.5,
               title="return estimator (line style)", title_fontsize=9, alignment="left")
    fig.suptitle("Variance and bias of the K-step return (K=1 is LLMR's return)", fontsize=11)
    return fig


def _method_lines(ax, d: pd.DataFrame, methods: list[str], smooth: int = 1) -> int:
    """One line per method (mean over seeds of ``value`` by ``step``) with a shaded 95% CI band
    (t) when there are several seeds; ``smooth`` > 1 first takes a per-seed rolling mean over that
    many steps (for per-step training logs). Returns the largest number of seeds seen."""
    max_seeds = 0
    for method in methods:
        sub = d[d["method"] == method]
        if sub.empty:
            continue
        per_seed = sub.groupby(["seed", "step"])["value"].mean().reset_index().sort_values(["seed", "step"])
        if smooth > 1:
            per_seed["value"] = per_seed.groupby("seed")["value"].transform(
                lambda v: v.rolling(smooth, min_periods=1).mean())
        rows = [(step, *_mean_hw(g["value"])) for step, g in per_seed.groupby("step")]
        steps = np.array([r[0] for r in rows], dtype=float)
        mean = np.array([r[1] for r in rows])
        hw = np.array([r[2] for r in rows])
        max_seeds = max(max_seeds, max(r[3] for r in rows))
        color = _method_color(method if method != "ketchup" else "ketchup_k4")
        ax.plot(steps, mean, color=color, linewidth=1.6, marker="o" if len(steps) <= 12 else None,
                markersize=3.0, label=method_label(method))
        if np.any(np.isfinite(hw)):
            ax.fill_between(steps, mean - np.nan_to_num(hw), mean + np.nan_to_num(hw), color=color,
                            alpha=0.18, linewidth=0)
    return max_seeds


def _legend_entries(axes, max_seeds: int) -> tuple[list, list]:
    """Each label once across panels, plus the CI band's entry when there are several seeds."""
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if max_seeds >= 2:
        handles.append(Patch(facecolor="grey", alpha=0.3, label=f"95% CI over {max_seeds} seeds (t)"))
        labels.append(handles[-1].get_label())
    return handles, labels


RL_PANELS = (("dev return", "greedy dev return, Eq. (10)", 1), ("train return", "sampled return (train)", 5),
             ("dev length", "greedy dev length (tokens)", 1), ("train KL", "KL(student || teacher) / token", 5))


PPO_PANELS = (("TD error^2", "(a) critic TD error, mean delta^2", 1), ("dev return", "(b) greedy dev return, Eq. (10)", 1),
              ("approx KL", "approx KL(pi_old || pi)", 1), ("clip fraction", "clip fraction", 1),
              ("value loss", "value loss", 1), ("entropy", "entropy (nats/token)", 1))


def plot_rl_curves(curves: pd.DataFrame, panels=RL_PANELS) -> Figure:
    """RL learning curves: rows = quantities (greedy dev return, sampled training return, greedy
    length, KL to the teacher), columns = tasks; one line per method, mean over seeds with a 95% CI
    band. Training series (logged every step) are smoothed by a 5-step rolling mean per seed.

    ``curves``: long rows (task, method, seed, step, series, value) as from
    :func:`kdlib.studies.rl_returns`. A return that rises while the length falls is bought by
    shorter outputs (the reward-hacking pattern seed 000 Sec. 3.2 warns about)."""
    _check_columns(curves, ("task", "method", "seed", "step", "series", "value"), "plot_rl_curves(curves)")
    tasks = _sort_tasks(curves["task"])
    panels = [p for p in panels if (curves["series"] == p[0]).any()]
    methods = sort_methods(curves["method"])
    fig, axes = plt.subplots(len(panels), len(tasks), figsize=(4.2 * len(tasks) + 0.6, 2.7 * len(panels) + 0.6),
                             squeeze=False, layout="constrained", sharex="col")
    max_seeds = 0
    for i, (series, label, smooth) in enumerate(panels):
        for j, task in enumerate(tasks):
            ax = axes[i][j]
            sub = curves[(curves["task"] == task) & (curves["series"] == series)]
            max_seeds = max(max_seeds, _method_lines(ax, sub, methods, smooth))
            if i == 0:
                ax.set_title(task_label(task))
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if i == len(panels) - 1:
                ax.set_xlabel("RL training step")
            _style_axes(ax)
    handles, labels = _legend_entries(axes.flat, max_seeds)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 5), fontsize=8.5, frameon=False)
    return fig


def plot_learning_curves(df: pd.DataFrame, value_label: str = "dev ROUGE-L") -> Figure:
    """Figure 3: a dev metric against the RL training step, one panel per student size.

    ``df`` columns: student (size label), method, step, value, optionally seed. Panels follow the
    order in which students first appear (a known task name in ``student`` is titled as the task);
    one line per method (LLMR, KETCHUP); the mean over seeds
    with a shaded 95% CI band (t) when there are several seeds. Panels share the y-axis.
    """
    _check_columns(df, ("student", "method", "step", "value"), "plot_learning_curves(df)")
    d = df.copy()
    if "seed" not in d.columns:
        d["seed"] = 0
    students = list(dict.fromkeys(d["student"]))
    methods = sort_methods(d["method"])
    fig, axes = plt.subplots(1, len(students), figsize=(4.0 * len(students) + 0.6, 3.8), sharey=True,
                             squeeze=False, layout="constrained")
    max_seeds = 0
    for ax, student in zip(axes[0], students):
        max_seeds = max(max_seeds, _method_lines(ax, d[d["student"] == student], methods))
        # Panels are student sizes; a task name (curves per task) gets the task's label instead.
        ax.set_title(task_label(student) if student in TASK_LABELS else f"student: {student}")
        ax.set_xlabel("RL training step")
        _style_axes(ax)
    axes[0][0].set_ylabel(value_label)
    handles, labels = _legend_entries(axes[0], max_seeds)
    axes[0][0].legend(handles, labels, fontsize=8.5, frameon=False, loc="best")
    return fig


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

_SECRET_WORDS = ("key", "token", "secret", "password")
_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "sacrebleu", "rouge-score", "pydantic",
             "papermill", "numpy", "pandas", "matplotlib", "kdlib")


def _drop_secrets(obj):
    """Drop, recursively, every mapping entry whose key contains key/token/secret/password."""
    if hasattr(obj, "model_dump") and callable(obj.model_dump):  # pydantic models, without importing pydantic
        obj = obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return {str(k): _drop_secrets(v) for k, v in obj.items()
                if not any(w in str(k).lower() for w in _SECRET_WORDS)}
    if isinstance(obj, (list, tuple, set)):
        return [_drop_secrets(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                             text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def write_provenance(out_dir: str | Path, params: dict | None = None) -> Path:
    """Write ``<out_dir>/provenance.json``: git commit and dirty flag, Python, platform, package
    versions, date (UTC) and ``params`` with secret-looking keys (key/token/secret/password)
    dropped recursively. Environment variables are never recorded."""
    root = Path(__file__).resolve().parent.parent  # the repo root for an editable install
    if not (root / ".git").exists():
        root = Path.cwd()
    head = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain") if head is not None else None
    record = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": {"commit": head.strip() if head else None,
                "dirty": bool(status.strip()) if status is not None else None},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": {name: _package_version(name) for name in _PACKAGES},
        "params": _drop_secrets(params) if params is not None else None,
    }
    return _atomic_write(Path(out_dir) / "provenance.json", json.dumps(record, indent=2, sort_keys=False) + "\n")


# ---------------------------------------------------------------------------------------------
# Index page
# ---------------------------------------------------------------------------------------------

_GROUP_RE = re.compile(r"^(\d\d)_")
_TABLE_EXT = (".csv", ".md", ".tex")
_FIGURE_EXT = (".png", ".pdf", ".svg")
_MAX_ROWS = 60
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
a { color: #0b61a4; text-decoration: none; } a:hover { text-decoration: underline; }
table.data { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em; }
table.data th, table.data td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
table.data th { background: #f6f6f6; } table.data td:first-child { text-align: left; }
figure { margin: .5em 0 1.5em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .caption, .muted { color: #555; font-size: .9em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .8em; }
.headlines { background: #f4f8fc; border: 1px solid #cfe0f0; padding: .3em 1em .6em; margin: 1em 0; }
.headlines h2 { margin-top: .4em; border: none; }
ul.files { padding-left: 1.2em; } code { font-size: .9em; }
"""


def _group_of(rel: Path) -> str | None:
    for part in rel.parts:
        m = _GROUP_RE.match(part)
        if m:
            return m.group(1)
    return None


def _listed(out_dir: Path) -> list[Path]:
    files = []
    for p in sorted(out_dir.rglob("*")):
        rel = p.relative_to(out_dir)
        if not p.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if rel.as_posix() in ("index.html", "index.md") or p.name.endswith(".tmp"):
            continue
        files.append(rel)
    return files


def _href(rel: Path) -> str:
    return quote(rel.as_posix())


def _md_caption(path: Path) -> str | None:
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return first[4:].strip() if first.startswith("### ") else None


def _sections(out_dir: Path) -> list[tuple[str, str, dict[str, list[Path]]]]:
    """[(group id, title, {kind: [relative paths]})] in display order."""
    groups: dict[str | None, list[Path]] = {}
    for rel in _listed(out_dir):
        groups.setdefault(_group_of(rel), []).append(rel)
    out = []
    for gid in sorted((g for g in groups if g is not None)) + ([None] if None in groups else []):
        files = groups[gid]
        if gid is None:
            title = "Run information and other files"
        else:
            nbs = [f for f in files if f.suffix == ".ipynb" and _GROUP_RE.match(f.name)]
            title = nbs[0].stem if nbs else f"Notebook {gid}"
        kinds: dict[str, list[Path]] = {"notebooks": [], "tables": [], "figures": [], "provenance": [],
                                        "logs": [], "other": []}
        kinds["data"] = []
        # A table written for reading (write_table: .md with rounded cells) is shown; a bare CSV or
        # JSON (long-format results at full precision) is raw data, one link away.
        table_stems = {f.with_suffix("") for f in files if f.suffix == ".md"}
        figure_stems = {f.with_suffix("") for f in files if f.suffix in _FIGURE_EXT}
        for f in files:
            stem = f.with_suffix("")
            if f.suffix == ".ipynb" or (f.suffix == ".html" and f.with_suffix(".ipynb") in files):
                kinds["notebooks"].append(f)
            elif stem in table_stems and f.suffix in _TABLE_EXT + (".html",):
                kinds["tables"].append(f)
            elif f.suffix in (".csv", ".json") and "provenance" not in f.name:
                kinds["data"].append(f)
            elif stem in figure_stems and f.suffix in _FIGURE_EXT:
                kinds["figures"].append(f)
            elif "provenance" in f.name and f.suffix == ".json":
                kinds["provenance"].append(f)
            elif f.suffix == ".log":
                kinds["logs"].append(f)
            else:
                kinds["other"].append(f)
        out.append((gid or "", title, kinds))
    return out


def _stems(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(p.with_suffix("") for p in paths))


def _links(stem: Path, paths: list[Path], exts: tuple[str, ...]) -> list[tuple[str, Path]]:
    return [(ext.lstrip(".").upper(), stem.with_suffix(ext)) for ext in exts if stem.with_suffix(ext) in paths]


def _read_text(path: Path, limit: int = 200_000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:limit]
    except OSError:
        return ""


def _html_table(out_dir: Path, stem: Path, paths: list[Path]) -> str:
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    if csv in paths:
        try:
            df = pd.read_csv(out_dir / csv, keep_default_na=False, dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
            return f'<p class="muted">(could not read {html.escape(csv.as_posix())}: {html.escape(str(e))})</p>'
        note = ""
        if len(df) > _MAX_ROWS:
            note = f'<p class="muted">first {_MAX_ROWS} of {len(df)} rows; see the CSV for all.</p>'
            df = df.head(_MAX_ROWS)
        return df.to_html(index=False, classes="data", border=0, escape=True) + note
    if md in paths:
        return f"<pre>{html.escape(_read_text(out_dir / md))}</pre>"
    return ""


def headlines(out_dir: Path) -> list[tuple[str, str]]:
    """(notebook, line) pairs: the one-line verdicts each notebook recorded under ``"headlines"``
    in its ``NN_name.json`` record."""
    lines = []
    for rec in sorted(out_dir.glob("[0-9][0-9]_*.json")):
        try:
            data = json.loads(rec.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for line in data.get("headlines", []) if isinstance(data, dict) else []:
            lines.append((rec.stem, str(line)))
    return lines


def _index_html(out_dir: Path, sections) -> str:
    title = f"KETCHUP kit outputs: {out_dir.resolve().name}"
    generated = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">Generated {html.escape(generated)} by <code>python -m kdlib.report index</code>. '
             "Every link is relative to this folder. Each section shows a notebook's figures and tables; "
             "the full-precision data behind them is one link away.</p>"]
    heads = headlines(out_dir)
    if heads:
        parts.append('<div class="headlines"><h2>What the runs say</h2><ul>')
        parts += [f"<li><span class='muted'>{html.escape(nb)}</span>: {html.escape(line)}</li>" for nb, line in heads]
        parts.append("</ul></div>")
    if sections:
        parts.append("<p>Contents: " + " · ".join(
            f'<a href="#{html.escape(gid or "other")}">{html.escape(t)}</a>' for gid, t, _ in sections) + "</p>")
    else:
        parts.append("<p>No outputs yet.</p>")
    for gid, title_, kinds in sections:
        parts.append(f'<h2 id="{html.escape(gid or "other")}">{html.escape(title_)}</h2>')
        files = [f for fs in kinds.values() for f in fs]
        if kinds["figures"]:
            for stem in _stems(kinds["figures"]):
                links = " · ".join(f'<a href="{_href(p)}">{label}</a>' for label, p in _links(stem, files, _FIGURE_EXT))
                img = stem.with_suffix(".png") if stem.with_suffix(".png") in files else (
                    stem.with_suffix(".svg") if stem.with_suffix(".svg") in files else None)
                body = (f'<a href="{_href(img)}"><img src="{_href(img)}" alt="{html.escape(stem.name)}" '
                        f'loading="lazy"></a>') if img else ""
                parts.append(f"<figure>{body}<figcaption><code>{html.escape(stem.as_posix())}</code> ({links})"
                             "</figcaption></figure>")
        if kinds["tables"]:
            for stem in _stems(kinds["tables"]):
                caption = _md_caption(out_dir / stem.with_suffix(".md")) if stem.with_suffix(".md") in files else None
                links = " · ".join(f'<a href="{_href(p)}">{label}</a>'
                                   for label, p in _links(stem, files, _TABLE_EXT + (".html",)))
                parts.append(f"<h4><code>{html.escape(stem.as_posix())}</code> <span class='muted'>({links})</span></h4>")
                if caption:
                    parts.append(f'<p class="caption">{html.escape(caption)}</p>')
                parts.append(_html_table(out_dir, stem, files))
        if kinds["notebooks"]:
            parts.append("<p>Executed notebook: " + " · ".join(
                f"<code>{html.escape(stem.as_posix())}</code> (" + " · ".join(
                    f'<a href="{_href(p)}">{label}</a>' for label, p in _links(stem, files, (".html", ".ipynb"))) + ")"
                for stem in _stems(kinds["notebooks"])) + "</p>")
        if kinds["data"]:
            parts.append("<p class='muted'>Raw data: " + " · ".join(
                f'<a href="{_href(p)}">{html.escape(p.as_posix())}</a>' for p in kinds["data"]) + "</p>")
        for kind, heading in (("provenance", "Provenance"), ("logs", "Run logs")):
            for p in kinds[kind]:
                parts.append(f'<h3>{heading}: <a href="{_href(p)}">{html.escape(p.as_posix())}</a></h3>')
                text = _read_text(out_dir / p, 20_000)
                parts.append(f"<details><summary>show</summary><pre>{html.escape(text)}</pre></details>")
        if kinds["other"]:
            parts.append("<h3>Other files</h3><ul class='files'>")
            parts += [f'<li><a href="{_href(p)}">{html.escape(p.as_posix())}</a></li>' for p in kinds["other"]]
            parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _md_link(text: str, rel: Path) -> str:
    return f"[{text}](<{rel.as_posix()}>)"


def _index_md(out_dir: Path, sections) -> str:
    lines = [f"# KETCHUP kit outputs: {out_dir.resolve().name}", ""]
    heads = headlines(out_dir)
    if heads:
        lines += ["## What the runs say", ""] + [f"- {nb}: {line}" for nb, line in heads] + [""]
    if not sections:
        lines.append("No outputs yet.")
    for _, title_, kinds in sections:
        lines += [f"## {title_}", ""]
        files = [f for fs in kinds.values() for f in fs]
        for stem in _stems(kinds["notebooks"]):
            links = ", ".join(_md_link(label, p) for label, p in _links(stem, files, (".html", ".ipynb")))
            lines.append(f"- notebook `{stem.as_posix()}`: {links}")
        if kinds["notebooks"]:
            lines.append("")
        for stem in _stems(kinds["tables"]):
            links = ", ".join(_md_link(label, p) for label, p in _links(stem, files, _TABLE_EXT + (".html",)))
            lines += [f"**Table `{stem.as_posix()}`** ({links})", ""]
            md = stem.with_suffix(".md")
            if md in files:
                text = _read_text(out_dir / md)
                if _md_caption(out_dir / md):  # the table's own "### caption" line becomes a quote
                    text = "> " + text[4:]
                lines += [text, ""]
        for stem in _stems(kinds["figures"]):
            links = ", ".join(_md_link(label, p) for label, p in _links(stem, files, _FIGURE_EXT))
            png = stem.with_suffix(".png")
            if png in files:
                lines.append(f"![{stem.name}](<{png.as_posix()}>)")
            lines += [f"Figure `{stem.as_posix()}` ({links})", ""]
        for p in kinds["provenance"] + kinds["logs"] + kinds["other"] + kinds.get("data", []):
            lines.append(f"- {_md_link(p.as_posix(), p)}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_index(out_dir: str | Path) -> Path:
    """Write ``index.html`` and ``index.md`` listing everything under ``out_dir``, grouped by
    notebook prefix (``01_``, ``02_``, ...; a file belongs to the group of the first path part
    that starts with ``NN_``): notebooks and their HTML copies, tables (CSV rendered inline),
    figures (PNG inline, PDF linked), provenance and run logs. Returns the path of index.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = _sections(out_dir)
    _atomic_write(out_dir / "index.md", _index_md(out_dir, sections))
    return _atomic_write(out_dir / "index.html", _index_html(out_dir, sections))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdlib.report", description="Reporting helpers of the KETCHUP kit")
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("index", help="write OUT_DIR/index.html and index.md listing every output")
    p.add_argument("out_dir", metavar="OUT_DIR")
    args = ap.parse_args(argv)
    if args.verb == "index":
        if not Path(args.out_dir).is_dir():
            print(f"error: {args.out_dir} is not a folder", file=sys.stderr)
            return 2
        print(write_index(args.out_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
