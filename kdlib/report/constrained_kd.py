"""Seed 004's tables and figures (floor 2): the paper's Tables 1-2 beside ours, the radar of
Fig. 2, the FAC-vs-CS Pareto plot of Fig. 3 (non-dominated points marked), the pairwise
reasoning-win heatmap of Fig. 4, and training curves. Functions take the frames of
kdlib.studies.constrained_kd and return figures / tables; kdlib.report saves them.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from kdlib.maths import constrained_metrics as M
from kdlib.report import method_label
from kdlib.report.plots import _method_color, _style_axes

# ----------------------------------------------------------------------------- the paper's numbers
# Appendix Tables 1 (Qwen2.5-Math-7B-Instruct -> Qwen2.5-Math-1.5B, trained on GSM8K) and 2
# (Llama-3.2-11B-Instruct -> Llama-3.2-3B, trained on MATH), transcribed in spec B4. Per set:
# FAC, RWR, RLR, KL mean, KL std, CS (%). d = 0.35, n = 20, judge DeepSeek-R1-Distill-Qwen-32B.
PAPER_SETS = ("GSM-Symbolic", "GSM8K", "MATH")
_Q = {
    "Ours": [(70.80, 60.55, 10.58, 0.16, 0.17, 96.1), (76.11, 58.72, 7.86, 0.15, 0.19, 94.99),
             (25.78, 41.65, 14.44, 0.15, 0.17, 96.2)],
    "GRPO λ=0.0": [(75.94, 14.89, 53.58, 0.41, 0.28, 41.74), (80.06, 12.15, 54.67, 0.41, 0.29, 42.83),
                   (29.04, 19.49, 39.62, 0.27, 0.19, 78.68)],
    "GKD-GRPO λ=0.001": [(75.50, 10.64, 57.88, 0.29, 0.23, 76.6), (80.51, 10.94, 55.71, 0.28, 0.17, 78.01),
                         (28.60, 18.5, 38.73, 0.23, 0.17, 87.40)],
    "GKD-GRPO λ=0.01": [(72.52, 34.87, 25.27, 0.18, 0.25, 94.2), (75.89, 34.52, 23.76, 0.18, 0.23, 92.11),
                        (29.04, 26.55, 24.23, 0.15, 0.14, 94.94)],
    "GKD-GRPO λ=0.1": [(69.88, 22.34, 36.04, 0.16, 0.23, 94.92), (75.13, 20.82, 35.36, 0.14, 0.20, 94.61),
                       (27.68, 20.86, 30.23, 0.14, 0.15, 95.46)],
    "GKD-GRPO λ=1.0": [(67.47, 29.12, 17.74, 0.17, 0.29, 94.34), (73.69, 29.01, 16.37, 0.16, 0.32, 94.08),
                       (27.16, 24.04, 17.37, 0.15, 0.21, 95.02)],
    "GKD-GRPO λ=10": [(67.8, 30.01, 17.59, 0.16, 0.25, 94.66), (74.07, 28.94, 16.73, 0.15, 0.23, 93.1),
                      (26.6, 24.01, 17.82, 0.15, 0.18, 95.12)],
    "GKD": [(68.34, 28.1, 19.24, 0.16, 0.25, 94.88), (74.37, 27.03, 18.18, 0.15, 0.23, 94.08),
            (26.42, 23.12, 18.07, 0.15, 0.17, 94.98)],
    "Mini-LLM": [(68.02, 27.65, 20.24, 0.16, 0.28, 94.2), (74.22, 26.20, 19.68, 0.15, 0.26, 93.78),
                 (27.06, 22.01, 19.71, 0.15, 0.21, 95.56)],
    "Student model": [(0.0, None, None, 2.08, 1.89, 0.14), (0.22, None, None, 1.96, 1.82, 0.45),
                      (0.54, None, None, 2.47, 2.09, 3.4)],
    "Teacher model": [(88.12, None, None, None, None, None), (92.27, None, None, None, None, None),
                      (34.46, None, None, None, None, None)],
}
_L = {
    "Ours": [(36.78, 42.33, 21.44, 0.22, 0.07, 94.64), (38.36, 51.76, 19.78, 0.21, 0.07, 99.60),
             (17.10, 34.40, 23.58, 0.15, 0.06, 99.48)],
    "GRPO λ=0.0": [(42.48, 33.82, 39.12, 0.71, 0.15, 0.16), (49.73, 21.30, 57.14, 0.73, 0.15, 0.3),
                   (18.90, 25.44, 47.96, 0.64, 0.2, 8.08)],
    "GKD-GRPO λ=0.001": [(40.20, 38.42, 32.37, 0.49, 0.12, 14.56), (53.44, 37.18, 34.36, 0.5, 0.13, 12.81),
                         (18.52, 33.87, 34.65, 0.39, 0.14, 38.98)],
    "GKD-GRPO λ=0.01": [(40.22, 23.81, 33.77, 0.29, 0.09, 72.86), (52.53, 43.60, 28.22, 0.28, 0.09, 80.89),
                        (17.62, 29.21, 29.32, 0.21, 0.08, 93.52)],
    "GKD-GRPO λ=0.1": [(42.28, 27.21, 27.65, 0.23, 0.08, 90.56), (53.37, 32.74, 35.67, 0.23, 0.08, 92.57),
                       (17.48, 30.07, 25.38, 0.16, 0.07, 98.20)],
    "GKD-GRPO λ=1.0": [(38.02, 24.31, 30.63, 0.21, 0.08, 94.18), (42.45, 31.99, 35.24, 0.21, 0.07, 95.98),
                       (17.80, 27.38, 29.90, 0.14, 0.06, 99.22)],
    "GKD-GRPO λ=10": [(37.92, 26.16, 28.10, 0.21, 0.08, 94.5), (38.66, 30.08, 36.90, 0.20, 0.07, 95.60),
                      (18.42, 30.17, 28.18, 0.14, 0.06, 99.46)],
    "GKD": [(36.88, 26.87, 27.71, 0.21, 0.08, 94.7), (38.36, 41.74, 28.42, 0.20, 0.07, 95.98),
            (17.80, 29.80, 25.66, 0.14, 0.06, 99.24)],
    "Mini-LLM": [(37.34, 26.46, 28.66, 0.21, 0.08, 94.38), (39.25, 26.12, 40.73, 0.21, 0.07, 95.52),
                 (15.88, 30.27, 26.22, 0.14, 0.06, 99.20)],
    "Student model": [(0.0, None, None, 0.73, 0.88, None), (2.75, None, None, 1.45, 1.57, None),
                      (0.08, None, None, 1.02, 0.9, None)],
    "Teacher model": [(51.86, None, None, None, None, None), (54.58, None, None, None, None, None),
                      (32.08, None, None, None, None, None)],
}
PAPER_SETTINGS = {"qwen": ("Appendix Table 1: Qwen2.5-Math-7B-Instruct -> Qwen2.5-Math-1.5B, trained on GSM8K", _Q),
                  "llama": ("Appendix Table 2: Llama-3.2-11B-Instruct -> Llama-3.2-3B, trained on MATH", _L)}
# Which of our evaluation sets stands in for which of the paper's (embedded / paper profile).
SET_ANALOGUE = {"mini-gsm-symbolic": "GSM-Symbolic", "test": "GSM8K", "mini-gsm-hard": "MATH",
                "gsm-symbolic": "GSM-Symbolic", "math": "MATH"}
METRICS = ("fac", "rwr", "rlr", "kl", "kl_std", "cs")


def paper_table(setting: str = "qwen") -> pd.DataFrame:
    """The paper's table in long-ish form: one row per (set, method) with FAC, RWR, RLR, KL, KL std, CS."""
    _, t = PAPER_SETTINGS[setting]
    rows = []
    for method, per_set in t.items():
        for s, vals in zip(PAPER_SETS, per_set):
            rows.append({"set": s, "method": method, **{k: (math.nan if v is None else v) for k, v in zip(METRICS, vals)}})
    return pd.DataFrame(rows)


def paper_method(label: str) -> str:
    """Our run label -> the paper's row name."""
    if label == "cmdp":
        return "Ours"
    if label == "grpo":
        return "GRPO λ=0.0"
    if label.startswith("gkd_grpo_lam"):
        lam = float(label[len("gkd_grpo_lam"):])
        return f"GKD-GRPO λ={lam:g}" if lam not in (0.1, 1.0) else f"GKD-GRPO λ={lam:.1f}"
    return {"gkd": "GKD", "minillm": "Mini-LLM", "start": "Student model", "teacher": "Teacher model"}.get(label, label)


def cmdp_label(label: str) -> str:
    """Display label of one of notebook 08's rows."""
    if label.startswith("gkd_grpo_lam"):
        return f"GKD-GRPO (λ={label[len('gkd_grpo_lam'):]})"
    return {"start": "Student (start)", "teacher": "Teacher"}.get(label, method_label(label))


def _order(labels) -> list[str]:
    first = ["cmdp", "grpo"]
    lams = sorted([x for x in labels if x.startswith("gkd_grpo_lam")], key=lambda s: float(s[len("gkd_grpo_lam"):]))
    rest = ["gkd", "minillm", "start", "teacher"]
    known = first + lams + rest
    return [x for x in known if x in set(labels)] + [x for x in labels if x not in known]


def _fmt(v, digits=1):
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _fmt_ci(r, k: str) -> str:
    """``mean +- half-width`` of the 95% interval over training seeds where the table has one (several seeds)."""
    ci, base = r.get(f"{k}_ci", math.nan), _fmt(r[k])
    return base if base == "" or math.isnan(ci) else f"{base} ± {ci:.1f}"


def beside_table(table: pd.DataFrame, setting: str = "qwen", task: str | None = None) -> pd.DataFrame:
    """Table 1/2 analogue: per evaluation set and method, our FAC / RWR / RLR / KL (± std) / CS
    beside the paper's on the analogous set (labelled columns)."""
    paper = paper_table(setting).set_index(["set", "method"])
    t = table if task is None else table[table.task == task]
    rows = []
    for set_ in t["set"].unique():
        g = t[t.set == set_].set_index("method")
        analogue = SET_ANALOGUE.get(set_, "")
        for m in _order(list(g.index)):
            r = g.loc[m]
            pm = paper_method(m)
            pr = paper.loc[(analogue, pm)] if (analogue, pm) in paper.index else None
            kl = "" if math.isnan(r.kl) else f"{r.kl:.2f} (±{r.kl_std:.2f})"
            pkl = "" if pr is None or math.isnan(pr.kl) else f"{pr.kl:.2f} (±{pr.kl_std:.2f})"
            rows.append({"set (paper's analogue)": f"{set_} ({analogue})" if analogue else set_, "method": cmdp_label(m),
                         "FAC": _fmt_ci(r, "fac"), "FAC paper": _fmt(None if pr is None else pr.fac),
                         "RWR": _fmt(r.rwr), "RWR paper": _fmt(None if pr is None else pr.rwr),
                         "RLR": _fmt(r.rlr), "RLR paper": _fmt(None if pr is None else pr.rlr),
                         "KL": kl, "KL paper": pkl,
                         "CS": _fmt_ci(r, "cs"), "CS paper": _fmt(None if pr is None else pr.cs)})
    return pd.DataFrame(rows)


def averaged(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, each metric averaged over the evaluation sets (Fig. 2 and Fig. 3 use these)."""
    return table.groupby("method", sort=False)[["fac", "rwr", "rlr", "kl", "cs"]].mean().reset_index()


def _paper_averaged(setting: str) -> pd.DataFrame:
    return paper_table(setting).groupby("method", sort=False)[["fac", "rwr", "rlr", "kl", "cs"]].mean().reset_index()


# ----------------------------------------------------------------------------- Fig. 2: radar
RADAR_AXES = (("fac", "FAC"), ("rwr", "RWR"), ("rlr", "RLR (inv.)"), ("kl", "KL (inv.)"), ("cs", "CS"))


def _radar(ax, avg: pd.DataFrame, labels: list[str], colours: list, title: str) -> None:
    vals = {k: avg[k].to_numpy(float) for k, _ in RADAR_AXES}
    scaled = M.radar_scale(vals, lower_is_better=("rlr", "kl"))
    angles = np.linspace(0, 2 * np.pi, len(RADAR_AXES), endpoint=False).tolist()
    for i, (lab, col) in enumerate(zip(labels, colours)):
        v = [scaled[k][i] for k, _ in RADAR_AXES]
        ax.plot(angles + angles[:1], v + v[:1], color=col, linewidth=2.2 if i == 0 else 1.3, label=lab)
        ax.fill(angles + angles[:1], v + v[:1], color=col, alpha=0.12 if i == 0 else 0.04)
    ax.set_xticks(angles, [name for _, name in RADAR_AXES])
    ax.set_yticks([0.25, 0.5, 0.75, 1.0], ["", "", "", ""])
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=10, pad=14)


def plot_radar(table: pd.DataFrame, setting: str = "qwen") -> Figure:
    """Fig. 2: five axes averaged over the evaluation sets (FAC, RWR, RLR inverted, KL inverted,
    CS), each min-max scaled across the methods [choice B5]; ours (left) and the paper's (right)."""
    ours = averaged(table[~table.method.isin(["teacher", "start"])])
    ours = ours.set_index("method").loc[_order(list(ours.method))].reset_index()
    paper = _paper_averaged(setting)
    paper = paper[~paper.method.isin(["Teacher model", "Student model"])]
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.2), subplot_kw={"polar": True}, layout="constrained")
    _radar(axes[0], ours, [cmdp_label(m) for m in ours.method], [_colour(m) for m in ours.method],
           "this run (averaged over its evaluation sets)")
    inv = {paper_method(m): m for m in _order(list(ours.method))}
    pcols = [_colour(inv.get(m, "")) if m in inv else "#bbbbbb" for m in paper.method]
    _radar(axes[1], paper, list(paper.method), pcols, f"paper ({PAPER_SETTINGS[setting][0].split(':')[0]})")
    axes[0].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.suptitle("Fig. 2 analogue: outward is better on every axis (each axis min-max scaled across the methods "
                 "shown: a method lowest on every axis sits at the centre)", fontsize=10)
    return fig


_COLOURS = {"cmdp": "#d62728", "grpo": "#1f77b4", "gkd": "#8c564b", "minillm": "#9467bd", "start": "#7f7f7f",
            "teacher": "#222222"}


def _colour(label: str):
    if label in _COLOURS:
        return _COLOURS[label]
    if label.startswith("gkd_grpo_lam"):
        lam = float(label[len("gkd_grpo_lam"):])
        return plt.cm.Greens(min(0.95, 0.45 + 0.12 * (math.log10(max(lam, 1e-3)) + 3)))
    return _method_color(label)


# ----------------------------------------------------------------------------- Fig. 3: Pareto
def _annotate(ax, x, y, labels, min_gap: float = 0.045) -> None:
    """Labels beside points, nudged down (in axis fractions) where two would overlap."""
    xr = (np.nanmax(x) - np.nanmin(x)) or 1.0
    yr = (np.nanmax(y) - np.nanmin(y)) or 1.0
    placed: list[tuple[float, float]] = []
    for i in np.argsort(-y):
        fx, fy = (x[i] - np.nanmin(x)) / xr, (y[i] - np.nanmin(y)) / yr
        dy = 0.0
        while any(abs(fx - px) < 0.25 and abs(fy + dy - py) < min_gap for px, py in placed):
            dy -= min_gap
        placed.append((fx, fy + dy))
        ax.annotate(labels[i], (x[i], y[i]), textcoords="offset points", xytext=(6, 3 + dy * 260), fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "#999999", "linewidth": 0.5} if dy else None)


def plot_pareto(table: pd.DataFrame, d: float, setting: str = "qwen") -> Figure:
    """Fig. 3: FAC vs CS of every method configuration (averaged over the evaluation sets); the
    non-dominated points (maximising both) in red and joined. Left ours, right the paper's."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    ours = averaged(table[~table.method.isin(["teacher", "start"])])
    paper = _paper_averaged(setting)
    paper = paper[~paper.method.isin(["Teacher model", "Student model"])]
    for ax, df, name_of, title in ((axes[0], ours, cmdp_label, f"this run (d = {d:.3g})"),
                                   (axes[1], paper, str, f"paper ({PAPER_SETTINGS[setting][0].split(':')[0]}, d = 0.35)")):
        front = M.pareto_front(df.cs.to_numpy(float), df.fac.to_numpy(float))
        ax.scatter(df.cs[~front], df.fac[~front], s=46, color="#9e9e9e", edgecolor="black", linewidth=0.5, zorder=3,
                   label="dominated")
        ax.scatter(df.cs[front], df.fac[front], s=70, color="#d62728", edgecolor="black", linewidth=0.6, zorder=4,
                   label="Pareto-optimal")
        f = df[front].sort_values("cs")
        ax.plot(f.cs, f.fac, color="#d62728", linewidth=1.0, alpha=0.6, zorder=2)
        _annotate(ax, df.cs.to_numpy(float), df.fac.to_numpy(float), [name_of(m) for m in df.method])
        ax.set_xlabel("constraint satisfaction CS (%)")
        ax.set_ylabel("final-answer accuracy FAC (%)")
        ax.set_title(title, fontsize=10)
        _style_axes(ax)
        lo, hi = float(np.nanmin(df.cs)), float(np.nanmax(df.cs))
        ax.set_xlim(lo - 0.12 * (hi - lo + 1) - 1, hi + 0.35 * (hi - lo + 1) + 1)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle("Fig. 3 analogue: accuracy vs constraint satisfaction (averaged over evaluation sets)", fontsize=11)
    return fig


# ----------------------------------------------------------------------------- Fig. 4: win heatmap
def plot_win_heatmap(wins: pd.DataFrame, judge: str) -> Figure:
    """Fig. 4: W[row, col] = % of examples where the row method's reasoning was judged better
    than the column's, averaged over evaluation sets and seeds (ties count for neither).
    Row means are RWR, column means RLR."""
    W = wins.groupby(["method", "opponent"])["win"].mean().unstack()
    order = _order(list(W.index))
    W = W.loc[order, order]
    k = len(order)
    fig, ax = plt.subplots(figsize=(1.0 * k + 3.2, 0.8 * k + 2.2), layout="constrained")
    vmax = max(1.0, float(np.nanmax(W.to_numpy(float))))
    im = ax.imshow(W.to_numpy(float), cmap="YlOrRd", vmin=0, vmax=vmax)
    for i in range(k):
        for j in range(k):
            v = W.iat[i, j]
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=9,
                        color="white" if v > 0.65 * vmax else "black")
    ax.set_xticks(range(k), [cmdp_label(m) for m in order], rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), [cmdp_label(m) for m in order])
    ax.set_xlabel("opponent (column)")
    ax.set_ylabel("method (row)")
    fig.colorbar(im, ax=ax, label="reasoning judged better (%)")
    ax.set_title(f"Fig. 4 analogue: pairwise reasoning wins (row means = RWR, column means = RLR; ties count "
                 f"for neither)\njudge: {judge}", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- training curves
CURVE_PANELS = ("sampled KL (per sample, mean)", "share within budget d (ours)", "sampled accuracy (R)",
                "dev accuracy (greedy)")


def plot_curves(curves: pd.DataFrame, d: float, window: int = 5) -> Figure:
    """Training curves per method (moving average over ``window`` logged steps): the sampled
    per-sample KL with the budget d, the share of ours' samples within d (only ours trains with
    d; the KL-only methods ran before d was known), the sampled accuracy (the task reward R) and
    the greedy dev accuracy."""
    fig, axes = plt.subplots(2, 2, figsize=(10.0, 7.0), layout="constrained")
    axes = list(axes.flat)
    for ax, series in zip(axes, CURVE_PANELS):
        g = curves[curves.series == series]
        for m in _order(list(g.method.unique())):
            s = g[g.method == m].groupby("step")["value"].mean().sort_index()
            if series != "dev accuracy (greedy)":
                s = s.rolling(window, min_periods=1).mean()
            ax.plot(s.index, s.values, color=_colour(m), label=cmdp_label(m), linewidth=1.6 if m == "cmdp" else 1.1)
        if series.startswith("sampled KL"):
            ax.axhline(d, color="black", linestyle="--", linewidth=0.9, label=f"d = {d:.3g}")
        ax.set_title(series, fontsize=10)
        ax.set_xlabel("GRPO iteration")
        _style_axes(ax)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False)
    return fig
