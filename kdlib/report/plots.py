"""Figures: every plot takes saved results (a DataFrame) and returns a matplotlib Figure.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from kdlib.maths.stats import mean_ci
from kdlib.report.labels import (
    _KETCHUP_PPO_RE,
    TASK_LABELS,
    _ketchup_k,
    _metric_label,
    _sort_tasks,
    method_label,
    sort_methods,
    task_label,
)
from kdlib.report.tables import _check_columns

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


MAX_WIDTH_IN = 15.0  # at 150 dpi: 2,250 px, under io.MAX_PNG_WIDTH_PX


def panel_grid(n: int, panel_w: float, panel_h: float, extra_w: float = 0.6) -> tuple[int, int, tuple[float, float]]:
    """(rows, columns, figsize) for ``n`` panels of ``panel_w`` x ``panel_h`` inches: one row when it fits in
    :data:`MAX_WIDTH_IN`, else as many columns as fit (panels wider than the limit are shrunk to it)."""
    panel_w = min(panel_w, MAX_WIDTH_IN - extra_w)
    cols = max(1, min(n, int((MAX_WIDTH_IN - extra_w) // panel_w)))
    rows = -(-n // cols)
    return rows, cols, (panel_w * cols + extra_w, panel_h * rows)


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
    rows, cols, figsize = panel_grid(len(tasks), max(3.2, 0.55 * n_methods + 1.2), 4.3)
    fig, axes = plt.subplots(rows, cols, figsize=figsize, squeeze=False, layout="constrained")
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    max_seeds = 0
    for ax, task in zip(axes.flat, tasks):
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
    for row in axes:
        row[0].set_ylabel(ylabel)
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
    """The policy gradient's total variance, the return's variance (Figure 2's, same samples), the gradient's
    relative bias ``|E g_K - E g_1|^2 / |E g_1|^2`` with its 95% CI (band), and its signal-to-noise ratio against K;
    one line per student (KL from the teacher), solid = Algorithm 1, dashed = block form."""
    _check_columns(df, ("student", "kl", "k", "tail", "trace_var", "return_var", "rel_bias", "rel_bias_low",
                        "rel_bias_high", "snr"), "plot_gradient_variance(df)")
    panels = (("trace_var", "tr Var of the policy gradient", True), ("return_var", "Var of the return G^_0 (Figure 2)", True),
              ("rel_bias", "gradient bias |E g_K - E g_1|^2 / |E g_1|^2 (95% CI)", False),
              ("snr", "SNR = |E g| / sqrt(tr Var g)", False))
    d = df.copy()
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
                if col == "rel_bias":
                    ax.fill_between(g["k"], g["rel_bias_low"], g["rel_bias_high"], color=c, alpha=0.12, linewidth=0)
        ax.set_xscale("log", base=2)
        ks = sorted(d["k"].unique())
        ax.set_xlim(min(ks) / 1.4, max(ks) * 1.4)  # set, not read off the lines: a panel of NaN has no data limits
        values = pd.to_numeric(d[col], errors="coerce").to_numpy(dtype=float)
        if log and (np.isfinite(values) & (values > 0)).any():  # a log axis needs a positive value to show
            ax.set_yscale("log")
        ax.set_xticks(sorted(d["k"].unique()), [str(k) for k in sorted(d["k"].unique())])
        ax.set_xlabel("K")
        ax.set_title(title, fontsize=10)
        if col == "rel_bias":
            ax.axhline(0.0, color="black", linewidth=0.7)
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
              ("value loss", "value loss", 1), ("explained variance", "critic explained variance, 1 - Var(G-V)/Var(G)", 1),
              ("entropy", "entropy (nats/token)", 1))


def plot_rl_curves(curves: pd.DataFrame, panels=RL_PANELS) -> Figure:
    """RL learning curves: rows = quantities (greedy dev return, sampled training return, greedy
    length, KL to the teacher), columns = tasks; one line per method, mean over seeds with a 95% CI
    band. Training series (logged every step) are smoothed by a 5-step rolling mean per seed.

    ``curves``: long rows (task, method, seed, step, series, value) as from
    :func:`kdlib.studies.common.returns.rl_returns`. A return that rises while the length falls is bought by
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
    fig.legend(handles, labels, fontsize=8.5, frameon=False, loc="outside right upper")
    return fig


def plot_regimes(gains: pd.DataFrame, min_left: float | None = None) -> Figure:
    """Notebook 12's map: KETCHUP (K chosen on dev) minus LLMR against the task's ambiguity level, one line per number
    of sequences per update, with 95% CIs over seeds; left the greedy test return (Eq. 10), right the test metric.
    With ``min_left``, a regime whose weaker method's share of seeds past step 0 (``left_start``) is not above it is
    drawn hollow and marked "§" (not tested: mostly the pre-distilled student against itself)."""
    _check_columns(gains, ("ambiguity", "batch_size", "gain_test_return", "gain_test_metric")
                   + (("left_start",) if min_left is not None else ()), "plot_regimes(gains)")
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 3.9), layout="constrained")
    cmap = plt.get_cmap("viridis")
    batches = sorted(gains["batch_size"].unique())
    for ax, what, label in zip(axes, ("test_return", "test_metric"), ("greedy test return (Eq. 10)", "test metric")):
        for i, b in enumerate(batches):
            g = gains[gains.batch_size == b].sort_values("ambiguity")
            err = g[f"gain_{what}_hw"].fillna(0.0).to_numpy()
            ax.errorbar(g["ambiguity"], g[f"gain_{what}"], yerr=err, marker="o", capsize=3,
                        color=cmap(i / max(1, len(batches) - 1) * 0.85), label=f"{b} sequences per update")
            lefts = g["left_start"] if min_left is not None else [None] * len(g)
            for a, kd, y, left in zip(g["ambiguity"], g["k_dev"], g[f"gain_{what}"], lefts):
                untested = min_left is not None and not left > min_left
                if untested:
                    ax.plot([a], [y], marker="o", markersize=9, markerfacecolor="white", zorder=3,
                            color=cmap(i / max(1, len(batches) - 1) * 0.85))
                ax.annotate(f"K={kd}" + (" §" if untested else ""), (a, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("task.ambiguity")
        ax.set_ylabel(f"KETCHUP - LLMR, {label}")
        _style_axes(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    if min_left is not None:
        handles.append(plt.Line2D([], [], marker="o", markerfacecolor="white", color="grey", linestyle="none"))
        labels.append(f"§ not tested: a method's share of seeds past step 0 <= {min_left:g}")
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), frameon=False, fontsize=8.5)
    return fig
