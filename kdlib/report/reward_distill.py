"""Tables and figures of notebook 07, seed 003 (floor 2, beside kdlib.report, whose helpers it uses).

Everything takes the frames of ``kdlib.studies.reward_distill.reward_distill.reward_distill`` and returns a DataFrame or a Figure:

- ``PAPER_TABLE2`` / ``PAPER_TABLE3`` / ``PAPER_TABLE4``: the paper's own numbers (spec A4; some
  recovered from garbled text, marked there), for display beside ours, always labelled as the paper's.
- ``table2(results)``: accuracy per row and evaluation set, mean and 95% interval;
- ``plot_dfail`` (Fig. 3), ``plot_label_quality`` (Fig. 4), ``plot_lambda_curves`` (Fig. 5),
  ``plot_ratio`` (Fig. 6), ``plot_shaping`` (Fig. 7).
"""

from __future__ import annotations

import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from kdlib.maths.stats import mean_ci
from kdlib.report.plots import _style_axes

ROW_ORDER = ("teacher", "zeroshot", "predistill", "sft_all", "sft_voted", "wod", "ours", "ppo_teacherrm", "minus1")
ROW_LABELS = {
    "teacher": "Teacher",
    "zeroshot": "Student before training (zero-shot)",
    "predistill": "Student, pre-distilled (where SFT starts)",
    "sft_all": "SFT (all teacher answers)",
    "sft_voted": "Ours w/o R (SFT on voted answers)",
    "wod": "Ours w/o D (PPO from where SFT starts)",
    "ours": "Ours (SFT + RM + PPO)",
    "ppo_teacherrm": "PPO, RM on teacher answers (Eq. 4)",
    "minus1": "Ours with r - 1 shaping ('Minus')",
}
ROW_COLORS = {"teacher": "#222222", "zeroshot": "#bdbdbd", "predistill": "#7f7f7f", "sft_all": "#9c755f",
              "sft_voted": "#edc948", "wod": "#76b7b2", "ours": "#e15759", "ppo_teacherrm": "#4e79a7",
              "minus1": "#b07aa1"}

# Seed 003 Table 2 (accuracy %), spec A4 (8B -> 1B SFT GSM8K reconstructed from the text's "+3.18").
_T2 = [
    ("Llama3-70B", "-", "Teacher", 93.18, 83.24, 56.85),
    ("Llama3-70B", "1B", "ICL", 41.55, 28.92, 15.97), ("Llama3-70B", "1B", "SFT", 61.03, 39.95, 31.00),
    ("Llama3-70B", "1B", "Ours w/o R", 61.41, 40.38, 32.83), ("Llama3-70B", "1B", "Ours w/o D", 61.25, 42.86, 26.16),
    ("Llama3-70B", "1B", "Ours", 64.06, 41.86, 35.27),
    ("Llama3-70B", "3B", "ICL", 72.48, 45.48, 29.62), ("Llama3-70B", "3B", "SFT", 80.74, 61.76, 41.54),
    ("Llama3-70B", "3B", "Ours w/o R", 80.89, 62.24, 42.10), ("Llama3-70B", "3B", "Ours w/o D", 80.29, 63.76, 35.30),
    ("Llama3-70B", "3B", "Ours", 82.64, 63.05, 44.50),
    ("Llama3-8B", "-", "Teacher", 80.97, 68.19, 39.88),
    ("Llama3-8B", "1B", "ICL", 41.55, 28.92, 15.97), ("Llama3-8B", "1B", "SFT", 62.85, 42.23, 22.62),
    ("Llama3-8B", "1B", "Ours w/o R", 63.08, 43.14, 23.85), ("Llama3-8B", "1B", "Ours w/o D", 60.12, 40.95, 26.44),
    ("Llama3-8B", "1B", "Ours", 66.03, 43.00, 32.00),
    ("Llama3-8B", "3B", "ICL", 72.48, 45.48, 29.62), ("Llama3-8B", "3B", "SFT", 79.75, 62.85, 31.78),
    ("Llama3-8B", "3B", "Ours w/o R", 79.91, 62.86, 34.50), ("Llama3-8B", "3B", "Ours w/o D", 80.36, 64.19, 36.08),
    ("Llama3-8B", "3B", "Ours", 83.02, 64.24, 40.02),
]
PAPER_TABLE2 = pd.DataFrame(_T2, columns=["teacher", "student", "method", "GSM8K", "GSM-Plus", "MMLU-Pro"])
PAPER_TABLE2.attrs["caption"] = ("The paper's Table 2 (seed 003, accuracy %; Llama teachers and students, not ours; "
                                 "8B->1B SFT on GSM8K reconstructed from the text)")
PAPER_TABLE3 = pd.DataFrame([("70B", "1B", 70.42, 72.23, 66.38, 77.52), ("70B", "3B", 70.81, 70.34, 66.70, 90.27),
                             ("8B", "1B", 65.73, 88.29, 74.17, 85.10), ("8B", "3B", 68.19, 93.82, 76.09, 87.98)],
                            columns=["teacher", "student", "GSM8K Pos/Neg", "GSM8K Pos/Pos", "MMLU-Pro Pos/Neg",
                                     "MMLU-Pro Pos/Pos"])
PAPER_TABLE3.attrs["caption"] = "The paper's Table 3 (seed 003): reward-model pairwise accuracy (%), not ours"
PAPER_TABLE4 = pd.DataFrame([("w/o Reward (S_warmup)", 61.41), ("RM on teacher answers, L_cls (Eq. 4)", 62.85),
                             ("Ours (RM on student answers, Eq. 6)", 64.06)], columns=["method", "GSM8K"])
PAPER_TABLE4.attrs["caption"] = "The paper's Table 4 (seed 003; 70B -> 1B, GSM8K accuracy %), not ours"


def _wrap(text: str, width: int) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _missing(x) -> bool:
    return x is None or (isinstance(x, (float, np.floating)) and math.isnan(x))


def _num(x, digits: int = 1) -> str:
    return "n/a" if _missing(x) else f"{x:.{digits}f}"


def _fmt(mean: float, low: float, high: float) -> str:
    """"63.20 [58.1, 68.3]"; just the mean without an interval; "n/a" without a mean."""
    if _missing(mean):
        return "n/a"
    if _missing(low) or _missing(high):
        return f"{mean:.2f}"
    return f"{mean:.2f} [{low:.1f}, {high:.1f}]"


def _interval(g: pd.DataFrame) -> tuple[float, float, float, int]:
    """Mean and 95% interval of one row: over seeds (t interval) when there are several, else the
    run's bootstrap interval over examples."""
    v = g["accuracy"].to_numpy(dtype=float)
    if len(v) >= 2:
        m, hw = mean_ci(v)
        return float(m), float(m - hw), float(m + hw), len(v)
    return float(v[0]), g["low"].iloc[0], g["high"].iloc[0], 1


def table2(results: pd.DataFrame, rows=ROW_ORDER) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 2 of the kit: one line per (teacher, student, row), one column per evaluation set
    ("mean [low, high]": over seeds when a row has several, else the bootstrap over examples).
    Returns (display, numeric long)."""
    num = []
    for (task, teacher, student, row, ev), g in results.groupby(["task", "teacher", "student", "row", "eval"], sort=False):
        m, lo, hi, n = _interval(g)
        num.append({"task": task, "teacher": teacher, "student": student, "row": row, "eval": ev, "mean": m, "low": lo,
                    "high": hi, "seeds": n})
    num = pd.DataFrame(num)
    if num.empty:
        return num, num
    order = {r: i for i, r in enumerate(rows)}
    num = num[num.row.isin(rows)].copy()
    num["_o"] = num.row.map(order)
    evals = list(dict.fromkeys(num["eval"]))
    out = []
    for (task, teacher, student, row), g in num.sort_values("_o").groupby(["task", "teacher", "student", "row"], sort=False):
        line = {"teacher": teacher, "student": student, "method": ROW_LABELS.get(row, row), "seeds": int(g.seeds.max())}
        for ev in evals:
            h = g[g["eval"] == ev]
            line[ev] = _fmt(h["mean"].iloc[0], h["low"].iloc[0], h["high"].iloc[0]) if len(h) else ""
        out.append(line)
    return pd.DataFrame(out), num.drop(columns="_o")


# ----------------------------------------------------------------------------- figures
def plot_dfail(labels: pd.DataFrame) -> Figure:
    """Fig. 3: the share of sampled questions without a reliable pseudo-label (|D_fail| / |D|) per
    teacher, with the share of labelled questions whose label is wrong beside it."""
    fig, ax = plt.subplots(figsize=(2.0 + 2.2 * len(labels), 3.4))
    x = np.arange(len(labels))
    fail = 100 * labels["share_fail"].to_numpy(dtype=float)
    wrong = 100 * (1 - labels["label_accuracy"].to_numpy(dtype=float))
    b1 = ax.bar(x - 0.2, fail, 0.4, color="#e15759", label="no pseudo-label (D_fail)")
    b2 = ax.bar(x + 0.2, wrong, 0.4, color="#4e79a7", label="pseudo-label wrong (of labelled)")
    for bars in (b1, b2):
        for b in bars:
            ax.annotate(f"{b.get_height():.1f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=8)
    ax.set_xticks(x, [_wrap(f"{t} ({int(n)} questions)", 26) for t, n in zip(labels["teacher"], labels["n_questions"])],
                  fontsize=8)
    ax.set_ylim(0, max(5.0, 1.25 * float(np.nanmax(np.r_[fail, wrong, 0.0]))))
    ax.set_ylabel("% of questions")
    ax.set_title("Fig. 3: questions the teacher's vote leaves unlabelled", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _style_axes(ax)
    return fig


def plot_label_quality(labels: pd.DataFrame) -> Figure:
    """Fig. 4: the teacher's answers on labelled questions, by pseudo-label (labelled incorrect /
    correct) and by the truth (the generator's own answer): stacked shares per teacher."""
    n = len(labels)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.6), squeeze=False)
    for ax, (_, r) in zip(axes[0], labels.iterrows()):
        cols = [("labelled\nincorrect", r["labelled_incorrect_true"], r["labelled_incorrect_false"]),
                ("labelled\ncorrect", r["labelled_correct_true"], r["labelled_correct_false"])]
        for i, (name, t, f) in enumerate(cols):
            tot = max(1, t + f)
            ax.bar(i, 100 * t / tot, color="#59a14f", width=0.6)
            ax.bar(i, 100 * f / tot, bottom=100 * t / tot, color="#e15759", width=0.6)
            ax.annotate(f"n = {int(t + f)}", (i, 102), ha="center", fontsize=8)
        ax.set_xticks([0, 1], [c[0] for c in cols], fontsize=8)
        ax.set_xlim(-0.6, 1.6)
        ax.set_ylim(0, 112)
        ax.set_title(_wrap(str(r["teacher"]), 30) + f"\nlabelled correct: {100 * r['precision']:.1f}% truly correct",
                     fontsize=8.5)
        _style_axes(ax)
    axes[0][0].set_ylabel("% of the teacher's answers")
    fig.legend(handles=[Patch(color="#59a14f", label="truly correct"), Patch(color="#e15759", label="truly wrong")],
               loc="lower center", ncol=2, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Fig. 4: pseudo-labels against the generator's true answers (labelled questions)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_lambda_curves(curves: pd.DataFrame) -> Figure:
    """Fig. 5: RM-val Pos/Neg accuracy (and Pos/Pos over distinct teacher/student texts) over
    reward-model training steps, one line per lambda (Eq. 6). Step 0 (the zero-initialised head:
    every score ties, counted wrong) is left out."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    cmap = plt.cm.viridis
    curves = curves[curves.step > 0] if len(curves) else curves
    lams = sorted(curves["lam"].unique()) if len(curves) else []
    for j, lam in enumerate(lams):
        g = curves[curves.lam == lam].sort_values("step")
        c = cmap(0.85 * j / max(1, len(lams) - 1))
        axes[0].plot(g.step, g.pos_neg, marker="o", ms=3, color=c, label=f"λ = {lam:g}")
        axes[1].plot(g.step, g.pos_pos_distinct, marker="o", ms=3, color=c, label=f"λ = {lam:g}")
    for ax, name in zip(axes, ("Pos/Neg: correct over wrong student answer",
                               "Pos/Pos: teacher over student (distinct texts)")):
        ax.set_xlabel("reward-model training step")
        ax.set_ylabel("RM-val accuracy (%)")
        ax.set_title(name, fontsize=9)
        ax.axhline(50, color="#999999", lw=0.8, ls=":")
        ax.set_ylim(-3, 103)
        _style_axes(ax)
    axes[-1].legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Fig. 5: reward-model accuracy over training for each λ of Eq. (6)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_ratio(rm: pd.DataFrame) -> Figure:
    """Fig. 6: RM-test Pos/Neg and Pos/Pos accuracy against the teacher:student answer ratio in the
    RM training data, with bootstrap 95% intervals over test triplets."""
    d = rm[rm.variant == "rm_ratio"].sort_values("value")
    fig, ax = plt.subplots(figsize=(5.0, 3.5))
    for key, lk, color, name in (("pos_neg", "pos_neg", "#e15759", "Pos/Neg"),
                                 ("pos_pos_distinct", "ppd", "#4e79a7", "Pos/Pos (distinct texts)")):
        y = d[key].to_numpy(dtype=float)
        lo = np.clip(y - d[f"{lk}_low"].to_numpy(dtype=float), 0, None)
        hi = np.clip(d[f"{lk}_high"].to_numpy(dtype=float) - y, 0, None)
        ax.errorbar(d["value"], y, yerr=[lo, hi], marker="o", capsize=3, color=color, label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(d["value"], [f"{v:g}:1\n({int(n)} triplets)" for v, n in zip(d["value"], d["n_train"])], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("teacher : student answers in RM training data")
    if len(d) and not _missing(d["identical_pos"].iloc[0]):
        n_test = int(d["n_test"].iloc[0])
        n_distinct = int(round(n_test * (1 - float(d["identical_pos"].iloc[0]) / 100)))
        ax.text(0.02, 0.02, f"RM-test: {n_test} triplets, {n_distinct} with T+ and S+ distinct", transform=ax.transAxes,
                fontsize=7.5, color="#555555")
    ax.set_ylabel("RM-test accuracy (%)")
    ax.set_ylim(-3, 103)
    ax.axhline(50, color="#999999", lw=0.8, ls=":")
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Fig. 6: RM data ratio vs pairwise accuracy", fontsize=10)
    _style_axes(ax)
    return fig


def plot_shaping(curves: pd.DataFrame, rows=("ours", "minus1"), smooth: int = 5) -> Figure:
    """Fig. 7: PPO with min(r, 0) (Eq. 7) against r - 1 ("Minus"): dev accuracy, the shaped
    reward and the true accuracy of the sampled answers over PPO steps (mean over the seeds both
    rows have); the per-iteration training series are smoothed by a ``smooth``-iteration moving
    average (each iteration scores only ``ppo.batch_size`` samples)."""
    series = ("dev accuracy", "shaped reward (Eq. 7)", "sample accuracy (true answers)")
    curves = curves[curves.row.isin(rows)]
    common = set.intersection(*[set(curves[curves.row == r].seed) for r in rows]) if len(curves) else set()
    curves = curves[curves.seed.isin(common)]  # the same seeds on every line
    fig, axes = plt.subplots(1, len(series), figsize=(4.0 * len(series), 3.2))
    for ax, name in zip(axes, series):
        for row in rows:
            g = curves[(curves.row == row) & (curves.series == name)]
            if g.empty:
                continue
            m = g.groupby("step").value.mean().sort_index()
            if name != series[0] and smooth > 1:
                m = m.rolling(smooth, min_periods=1).mean()
            ax.plot(m.index, (100 * m if "sample accuracy" in name else m).values, marker="o" if name == series[0] else None,
                    ms=3, color=ROW_COLORS.get(row), label=ROW_LABELS.get(row, row))
        ax.set_xlabel("PPO iteration")
        title = name + (" (%)" if "accuracy" in name else "")
        ax.set_title(title if name == series[0] else f"{title}, {smooth}-iteration mean", fontsize=9)
        _style_axes(ax)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(rows), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle("Fig. 7: reward correction min(r, 0) vs r - 1 during PPO (training prompts: D_R and D_fail)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


# ----------------------------------------------------------------------------- Tables 3-4, headlines
def table3(rm: pd.DataFrame) -> pd.DataFrame:
    """Table 3 of the kit: RM-test pairwise accuracy (%) of each pipeline pair's reward model, with
    bootstrap 95% intervals over the test triplets."""
    d = rm[rm.variant == "rm"]
    return pd.DataFrame([{"teacher": r.teacher, "student": r.student,
                          "Pos/Neg": _fmt(r.pos_neg, r.pos_neg_low, r.pos_neg_high),
                          "Pos/Pos (all; ties wrong)": _fmt(r.pos_pos, r.pos_pos_low, r.pos_pos_high),
                          "Pos/Pos (distinct texts)": _fmt(r.pos_pos_distinct, r.ppd_low, r.ppd_high),
                          "T+ = S+ as text (%)": _num(r.identical_pos, 0),
                          "RM triplets (train / test)": f"{r.n_train} / {r.n_test}"} for r in d.itertuples()])


def table4(results: pd.DataFrame, rm: pd.DataFrame) -> pd.DataFrame:
    """Table 4 of the kit: the RM's data source on the first pipeline pair: S_warmup alone, PPO with
    an RM trained on teacher answers only (Eq. 4), PPO with the RM on student answers (Ours). Test
    accuracy (mean and 95% interval as in Table 2) beside each RM's RM-test accuracies."""
    if results.empty:
        return pd.DataFrame()
    first = results.iloc[0]
    d = results[(results.teacher == first.teacher) & (results.student == first.student) & (results["eval"] == first.task)]
    rms = {r.variant: r for r in rm.itertuples()}
    out = []
    for row, rm_key in (("sft_voted", None), ("ppo_teacherrm", "rm_teacher"), ("ours", "rm")):
        g = d[d.row == row]
        if g.empty:
            continue
        if row == "ours":  # the seeds the ablation has, for a like-for-like comparison
            g = g[g.seed.isin(d[d.row == "ppo_teacherrm"].seed)] if (d.row == "ppo_teacherrm").any() else g
        m, lo, hi, n = _interval(g)
        r = rms.get(rm_key)
        out.append({"method": ROW_LABELS[row] if row != "sft_voted" else "w/o Reward (S_warmup)",
                    "accuracy": _fmt(m, lo, hi), "seeds": n,
                    "RM Pos/Neg": "" if r is None else _num(r.pos_neg),
                    "RM Pos/Pos (distinct texts)": "" if r is None else _num(r.pos_pos_distinct)})
    return pd.DataFrame(out)


def headlines(res: dict, verdicts: list[str]) -> list[str]:
    """One-line findings of notebook 07 for the index page, computed from the study's frames."""
    out = list(verdicts)
    lab = res["labels"]
    if len(lab):
        out.append("Pseudo-labels: " + "; ".join(
            f"{r.teacher}: {100 * r.share_fail:.1f}% of {int(r.n_questions)} questions in D_fail, y* right on "
            f"{100 * r.label_accuracy:.1f}% of the labelled ones" for r in lab.itertuples()) + ".")
    rm = res["rm"]
    main = rm[rm.variant == "rm"]
    if len(main):
        r = main.iloc[0]
        out.append(f"Reward model (RM-test, {int(r.n_test)} triplets): Pos/Neg "
                   f"{_fmt(r.pos_neg, r.pos_neg_low, r.pos_neg_high)}%, Pos/Pos over distinct texts "
                   f"{_fmt(r.pos_pos_distinct, r.ppd_low, r.ppd_high)}% ({_num(r.identical_pos, 0)}% of the teacher/student "
                   f"positive pairs are the same text) (the paper's 70B->1B GSM8K: 70.4% / 72.2%).")
    curves = res["ppo_curves"]
    dev = curves[curves.series == "dev accuracy"] if len(curves) else curves
    if len(dev) and {"ours", "minus1"} <= set(dev.row):
        seeds = set(dev[dev.row == "minus1"].seed)
        fin = {row: dev[(dev.row == row) & dev.seed.isin(seeds)].groupby("step").value.mean() for row in ("ours", "minus1")}
        out.append(f"Fig. 7: dev accuracy after {int(fin['ours'].index.max())} PPO iterations: min(r, 0) "
                   f"{fin['ours'].iloc[-1]:.1f}%, r - 1 {fin['minus1'].iloc[-1]:.1f}% (start {fin['ours'].iloc[0]:.1f}%; "
                   f"{len(seeds)} seed(s)).")
    return out
