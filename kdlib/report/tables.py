"""Table 1 of the kit: mean ± 95% CI over seeds, the best student marked, paired t-tests against a baseline, verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from kdlib.maths.metrics import PRIMARY_METRIC
from kdlib.maths.stats import (
    format_mean_ci,
    holm_adjust,
    mean_ci,
    min_detectable_effect,
    paired_diff_sd,
    paired_ttest,
    seeds_needed,
)
from kdlib.report.labels import (
    NOT_STUDENTS,
    TASK_METRICS,
    _higher_is_better,
    _metric_label,
    _sort_tasks,
    method_label,
    sort_methods,
    task_kind,
    task_label,
)

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


# Today's on-policy distillation rows: tested against the baselines as KETCHUP's are (and LLMR against them).
ONPOLICY_ROWS = ("opd", "gkd_jsd", "minillm_pg", "distillm")
_SHORT_LABELS = {"opd": "OPD"}  # column headers ("mini-XSum vs OPD")


def _tested(method: str, baseline: str) -> bool:
    """Which rows a comparison column tests: every KETCHUP row and every on-policy row (not the baseline itself),
    and LLMR when the baseline is an on-policy method."""
    m = str(method)
    if m == baseline:
        return False
    return m.startswith("ketchup") or m in ONPOLICY_ROWS or (m == "llmr" and baseline in ONPOLICY_ROWS)


def _p_values(results: pd.DataFrame, baseline: str = "llmr") -> pd.DataFrame:
    """Paired t-test (over seeds) of every KETCHUP run and every on-policy run (:func:`_tested`) against ``baseline``
    (LLMR; LLMR + PPO in the PPO study; OPD) on each task's primary metric. Tasks without any ``baseline`` run get
    no test. Holm's adjustment runs over every test of the column (one family of comparisons)."""
    rows = []
    for task in results["task"].unique():
        primary = PRIMARY_METRIC.get(task_kind(task) or "")
        sub = results[(results["task"] == task) & (results["metric"] == primary)]
        llmr = sub[sub["method"] == baseline].groupby("seed")["value"].mean()
        if llmr.empty:
            continue
        for method in sort_methods(sub["method"]):
            if not _tested(method, baseline):
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
                text = f"{delta:+.2f} on every seed (a constant difference: no t-test)"
            else:
                text = f"{delta:+.2f}, p {_format_p(p)}{significance_marker(p)}"
            sd = paired_diff_sd(paired["ours"], paired["llmr"])
            rows.append({"task": task, "method": method, "metric": primary, "t_vs_llmr": t,
                         "p_vs_llmr": p, "n_paired": n, "delta_vs_llmr": delta, "sd_diff": sd,
                         "mde": min_detectable_effect(sd, n, alpha=ALPHA, power=POWER),
                         "seeds_needed": seeds_needed(delta, sd, alpha=ALPHA, power=POWER),
                         "significant_0035": bool(p < ALPHA) if not math.isnan(p) else False,
                         "significant_005": bool(p < 0.05) if not math.isnan(p) else False, "p_text": text})
    out = pd.DataFrame(rows, columns=["task", "method", "metric", "t_vs_llmr", "p_vs_llmr", "n_paired", "delta_vs_llmr",
                                      "sd_diff", "mde", "seeds_needed", "significant_0035", "significant_005", "p_text"])
    # Every row tested against the baseline, on every task, is one family of comparisons: Holm's adjustment over it.
    out["p_holm"] = holm_adjust(out["p_vs_llmr"].to_numpy(dtype=float)) if len(out) else []
    out["n_comparisons"] = int(out["p_vs_llmr"].notna().sum()) if len(out) else 0
    has_p = out["p_vs_llmr"].notna()
    out.loc[has_p, "p_text"] = [f"{text} (Holm {_format_p(ph)})" for text, ph in zip(out.loc[has_p, "p_text"],
                                                                                    out.loc[has_p, "p_holm"])]
    return out


ALPHA = 0.035  # seed 001 App. E: "p < 0.035 indicating the differences are deemed significant"
POWER = 0.8  # the power at which minimum detectable effects and seeds needed are stated


def significance_marker(p: float) -> str:
    """" ‡" for p < 0.035 (the paper's threshold), " †" for 0.035 <= p < 0.05, else ""."""
    if p is None or math.isnan(p):
        return ""
    return " ‡" if p < ALPHA else (" †" if p < 0.05 else "")


def _format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def _second_columns(p2: pd.DataFrame, name: str) -> pd.DataFrame:
    """The second comparison's numeric columns, named after its baseline: ``p_vs_llmr`` -> ``p_vs_opd``, any other
    column ``c`` -> ``c_vs_opd``."""
    keep = [c for c in p2.columns if c != "p_text"]
    return p2[keep].rename(columns={c: _second_name(c, name) for c in keep if c not in ("task", "method", "metric")})


def _build_table(stats: pd.DataFrame, p_values: pd.DataFrame,
                 markers: Mapping[tuple[str, str], str] | None = None,
                 baseline_label: str = "LLMR", p2: pd.DataFrame | None = None,
                 second: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
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
        if p2 is not None and not p2.empty and (p2["task"] == task).any():
            columns.append((f"{task_label(task)} vs {_SHORT_LABELS.get(second, method_label(second))}", task, "p2"))

    by_key = stats.set_index(["task", "method", "metric"])
    p_by_key = p_values.set_index(["task", "method"]) if not p_values.empty else None
    p2_by_key = p2.set_index(["task", "method"]) if p2 is not None and not p2.empty else None
    table = []
    seeds_per_method = stats.groupby("method")["n_seeds"].max()
    # method rows with different numbers of seeds (power_seeds, or missing runs): a column says how many each has
    show_seeds = seeds_per_method.drop(list(NOT_STUDENTS) + ["predistill"], errors="ignore").nunique() > 1
    for method in methods:
        row = {"Method": method_label(method)}
        if show_seeds:
            row["Seeds"] = int(seeds_per_method.get(method, 0))
        for col, task, metric in columns:
            if metric in ("p", "p2"):
                by = p_by_key if metric == "p" else p2_by_key
                row[col] = by.loc[(task, method), "p_text"] if (task, method) in by.index else ""
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
    display = pd.DataFrame(table, columns=["Method"] + (["Seeds"] if show_seeds else []) + [c for c, _, _ in columns])

    numeric = stats.copy()
    numeric["best_at_step0"] = [markers.get((t, m), "") for t, m in zip(numeric["task"], numeric["method"])]
    if not p_values.empty:
        numeric = numeric.merge(p_values.drop(columns="p_text"), on=["task", "method", "metric"], how="left")
    else:
        numeric = numeric.assign(t_vs_llmr=math.nan, p_vs_llmr=math.nan, n_paired=pd.NA)
    if p2 is not None and not p2.empty:
        numeric = numeric.merge(_second_columns(p2, second), on=["task", "method", "metric"], how="left")
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
               baseline: str = "llmr", second: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
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
      ``llmr_ppo`` in the PPO study); without any run of it there is no such column. The on-policy rows (OPD, GKD,
      MiniLLM, DistiLLM; :data:`ONPOLICY_ROWS`) are tested as KETCHUP's are. ``second`` (e.g. ``"opd"``) adds a
      second comparison column per task, ``"<task> vs OPD"``, testing every KETCHUP and on-policy row and LLMR
      against it (its own Holm family). ``display.attrs["caption"]`` explains all this; :func:`write_table` uses it.
    * ``numeric``: one row per (task, method, metric): mean, half_width, n_seeds, best, and for
      tested rows on the primary metric t_vs_llmr, p_vs_llmr, n_paired, ... (against ``baseline``) and the same
      against ``second`` as t_vs_<second>, p_vs_<second>, n_paired_vs_<second>, p_holm_vs_<second>, ...
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
    p2 = _p_values(results, second) if second else None
    display, numeric = _build_table(stats, p_values, markers, base, p2, second)
    n = sorted(set(numeric["n_seeds"]))
    seeds = f"{n[0]}" if len(n) == 1 else f"{n[0]}-{n[-1]}"
    display.attrs["caption"] = (
        f"Test-set results ({seeds} seed(s) per method). Cells: mean ± 95% CI half-width "
        "(t-distribution) over seeds; no ± for single runs. * best student per column "
        "(teacher and zero-shot student excluded); ↓ lower is better. "
        + (f"vs {base}: mean paired difference on the task's primary metric (positive = the row better) and the "
           "two-sided paired t-test over seeds; ‡ p < 0.035 (seed 001 App. E's threshold), † p < 0.05 (unadjusted); "
           "Holm: p adjusted over every row tested in that column (one family of comparisons). "
           if not p_values.empty else "")
        + (f"vs {_SHORT_LABELS.get(second, method_label(second))}: the same against "
           f"{method_label(second)}, its own family. " if p2 is not None and not p2.empty else "")
        + "§k/n after a primary-metric cell: in k of n seeds the best dev checkpoint was step 0, so the row "
        "is the pre-distilled student there, not the method.")
    return display, numeric


_COMPARISON_COLUMNS = ("t_vs_llmr", "p_vs_llmr", "delta_vs_llmr", "n_paired", "sd_diff", "mde", "seeds_needed",
                       "significant_0035", "significant_005", "p_holm", "n_comparisons")


def _second_name(column: str, name: str) -> str:
    """A comparison column of the second baseline: ``p_vs_llmr`` -> ``p_vs_opd``, ``mde`` -> ``mde_vs_opd``."""
    return column.replace("_vs_llmr", f"_vs_{name}") if "_vs_llmr" in column else f"{column}_vs_{name}"


def _against(numeric: pd.DataFrame, against: str | None) -> tuple[pd.DataFrame, str]:
    """The numeric frame with ``against``'s comparison columns under the first baseline's names, and its label."""
    if against is None:
        return numeric, "LLMR"
    out = numeric.drop(columns=[c for c in _COMPARISON_COLUMNS if c in numeric.columns])
    out = out.rename(columns={_second_name(c, against): c for c in _COMPARISON_COLUMNS})
    return out, _SHORT_LABELS.get(against, method_label(against))


def ketchup_verdicts(numeric: pd.DataFrame, against: str | None = None) -> list[str]:
    """One line per task: did any KETCHUP row (either value) beat LLMR (or, with ``against="opd"``, the second
    comparison of :func:`main_table`, OPD) with p < 0.035 (seed 001 App. E)? Read off the numeric frame; says so
    plainly when none did."""
    numeric, who = _against(numeric, against)
    lines = []
    if "p_vs_llmr" not in numeric:
        return [f"No KETCHUP-vs-{who} test (no KETCHUP rows or one seed)."]
    tested = numeric.dropna(subset=["p_vs_llmr"])
    tested = tested[tested["method"].astype(str).str.startswith("ketchup")]
    for task in _sort_tasks(numeric["task"]):
        sub = tested[tested["task"] == task]
        if sub.empty:
            lines.append(f"{task_label(task)}: not tested (fewer than two paired seeds).")
            continue
        metric = _metric_label(sub["metric"].iloc[0])
        better = sub[(sub["p_vs_llmr"] < ALPHA) & (sub["delta_vs_llmr"] > 0)]
        worse = sub[(sub["p_vs_llmr"] < ALPHA) & (sub["delta_vs_llmr"] < 0)]
        n = int(sub["n_paired"].max())

        def seeds_of(k) -> str:  # a row paired over fewer seeds than the task's most says how many
            return "" if int(k) == n else f", {int(k)} seeds"

        if not better.empty:
            parts = [f"{method_label(m)} ({d:+.2f} {metric}, p {_format_p(p)}{seeds_of(k)})"
                     for m, d, p, k in zip(better["method"], better["delta_vs_llmr"], better["p_vs_llmr"],
                                           better["n_paired"])]
            text = f"KETCHUP beat {who} with p < 0.035 ({n} seeds): " + "; ".join(parts)
        else:
            # "closest": the KETCHUP row ahead of the baseline with the smallest p (or, when none is ahead, the
            # row least behind); rows that pass only the looser 0.05 level are named as such.
            ahead = sub[sub["delta_vs_llmr"] > 0]
            best = ahead.loc[ahead["p_vs_llmr"].idxmin()] if not ahead.empty else sub.loc[sub["delta_vs_llmr"].idxmax()]
            text = (f"KETCHUP did not beat {who} with p < 0.035 ({n} seeds); closest: {method_label(best['method'])} "
                    f"{best['delta_vs_llmr']:+.2f} {metric}, p {_format_p(best['p_vs_llmr'])}{seeds_of(best['n_paired'])}")
            if math.isfinite(best.get("mde", math.nan)) and abs(best["delta_vs_llmr"]) < best["mde"]:
                needed = best.get("seeds_needed", math.nan)
                text += (f"; a lack of power, not evidence of no difference: with {int(best['n_paired'])} seeds the "
                         "smallest difference "
                         f"detectable (p < {ALPHA}, power {POWER:.0%}) is {best['mde']:.2f} {metric}, and "
                         + (f"{needed:.0f} seeds would be needed to detect {best['delta_vs_llmr']:+.2f}"
                            if math.isfinite(needed) else "no number of seeds would detect a zero difference"))
            loose = ahead[ahead["p_vs_llmr"] < 0.05]
            if not loose.empty:
                text += " (p < 0.05 only, not the paper's 0.035: " + ", ".join(method_label(m) for m in loose["method"]) + ")"
            elif ahead.empty:
                text += f" (every KETCHUP row is behind {who})"
        if not worse.empty:
            text += f"; significantly WORSE than {who}: " + ", ".join(method_label(m) for m in worse["method"])
        if "p_holm" in sub:
            m = int(sub["n_comparisons"].max())
            holm = sub[(sub["p_holm"] < ALPHA)]
            text += (f"; {m} comparisons against {who} in the table (every tested row x task), Holm-adjusted p < {ALPHA}: "
                     + (", ".join(f"{method_label(r)} ({d:+.2f})" for r, d in zip(holm["method"], holm["delta_vs_llmr"]))
                        if not holm.empty else "none"))
        lines.append(f"{task_label(task)}: {text}.")
    return lines


def best_method_lines(numeric: pd.DataFrame) -> list[str]:
    """One line per task: the distillation method with the best mean test score on the task's primary metric (the
    teacher and the zero-shot and pre-distilled students left out), with its 95% CI, and the runner-up. Read off
    :func:`main_table`'s numeric frame."""
    lines = []
    for task in _sort_tasks(numeric["task"]):
        primary = PRIMARY_METRIC.get(task_kind(task) or "")
        sub = numeric[(numeric["task"] == task) & (numeric["metric"] == primary)
                      & ~numeric["method"].isin(NOT_STUDENTS + ("predistill",))]
        if sub.empty:
            continue
        sub = sub.sort_values("mean", ascending=not _higher_is_better(primary), kind="stable")
        first = sub.iloc[0]

        def cell(r):
            hw = r["half_width"] if r["n_seeds"] >= 2 else math.nan
            return f"{method_label(r['method'])} {format_mean_ci(float(r['mean']), float(hw), digits=2)}"

        text = f"{task_label(task)}: best {_metric_label(primary)}: {cell(first)} ({int(first['n_seeds'])} seed(s))"
        if len(sub) > 1:
            text += f"; runner-up {cell(sub.iloc[1])}"
        lines.append(text + ".")
    return lines


def power_table(numeric: pd.DataFrame) -> pd.DataFrame:
    """Statistical power of each KETCHUP-vs-baseline comparison in :func:`main_table`'s numeric frame: the mean paired
    difference (positive = KETCHUP better), the SD of the paired differences, the smallest difference the paired t-test
    detects at p < 0.035 with power 0.8 with the row's seeds, the seeds needed to detect the observed difference with
    that power, and p. A "no difference" whose observed difference is below the detectable one is a lack of power."""
    cols = ["Task", "Method", "seeds", "difference", "SD of differences", "detectable (power 0.8)", "seeds needed", "p"]
    if "sd_diff" not in numeric:
        return pd.DataFrame(columns=cols)
    rows = numeric.dropna(subset=["p_vs_llmr"]) if "p_vs_llmr" in numeric else numeric.iloc[0:0]
    out = [{"Task": task_label(r["task"]), "Method": method_label(r["method"]), "seeds": int(r["n_paired"]),
            "difference": round(float(r["delta_vs_llmr"]), 2), "SD of differences": round(float(r["sd_diff"]), 2),
            "detectable (power 0.8)": round(float(r["mde"]), 2),
            "seeds needed": (f"{r['seeds_needed']:.0f}" if math.isfinite(r["seeds_needed"]) else "never (no difference)"),
            "p": _format_p(float(r["p_vs_llmr"])).lstrip("= ")} for _, r in rows.iterrows()]
    return pd.DataFrame(out, columns=cols)
