"""Seed 001 App. F (notebook 10_decoder_only): Tables 7-8 with a decoder-only teacher and student.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from kdlib.chains.core import BASE_SEED, run_for, train
from kdlib.config import DecoderOnlyParams, Params, load_params
from kdlib.maths.metrics import HIGHER_IS_BETTER
from kdlib.studies.common import (
    chain_targets,
    ensure_runs,
    kit_params,
    method_plan,
    method_targets,
    result_rows,
)


# ----------------------------------------------------------------------------- 10: decoder-only (seed 001 App. F)
def best_k_on_dev(p_of, tasks, seeds, k_values) -> pd.DataFrame:
    """The K of KETCHUP with the best mean dev score (primary metric at the best checkpoint) per
    task: seed 001 App. G's "lightweight grid search ... tuned by validation". ``p_of(task, seed,
    k)`` gives the run's params. Runs must exist (or are trained). One row per task."""
    rows = []
    for task in tasks:
        dev = {}
        for k in k_values:
            vals = []
            for seed in seeds:
                s = train(p_of(task, seed, k)).summary()
                vals.append(s["dev"][s["primary"]])
            dev[k] = float(np.mean(vals))
        higher = HIGHER_IS_BETTER.get(s["primary"], True)
        best = max(dev, key=lambda k: dev[k] if higher else -dev[k])
        rows.append({"task": task, "primary": s["primary"], "best_k": best, **{f"dev_k{k}": v for k, v in dev.items()}})
    return pd.DataFrame(rows)


def decoder_only(nb: DecoderOnlyParams) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seed 001 Tables 7-8 on decoder-only models. Returns (long test results for Table 7: teacher,
    zero-shot and pre-distilled students, KL, TVD, LLMR and KETCHUP at its dev-chosen K as
    ``ketchup_best``; the causal K grid on dev; Table 8: best K per architecture and task)."""
    ensure_runs(nb)
    results = []
    for task in nb.tasks:
        for label in ("teacher", "zeroshot", "predistill"):
            results += result_rows(task, label, BASE_SEED, train(kit_params(nb, **{"task.name": task, "method": label})).summary())
        for seed in nb.seeds:
            for label, over in method_plan(nb):
                if over["method"] != "ketchup":
                    results += result_rows(task, label, seed, train(kit_params(nb, **{"task.name": task, "seed": seed, **over})).summary())
    grid = best_k_on_dev(lambda t, s, k: kit_params(nb, **{"task.name": t, "seed": s, "method": "ketchup", "rl.k": k}),
                         nb.tasks, nb.seeds, nb.k_values)
    for r in grid.itertuples():
        for seed in nb.seeds:
            s = train(kit_params(nb, **{"task.name": r.task, "seed": seed, "method": "ketchup", "rl.k": r.best_k})).summary()
            results += result_rows(r.task, f"ketchup_k{r.best_k}", seed, s)
    t5 = None
    runs_t5 = [load_params(*nb.t5_params_files, **{"task.name": t, "seed": s, "method": "ketchup", "rl.k": k})
               for t in nb.tasks for s in nb.t5_seeds for k in nb.k_values]
    if all(run_for(q).finished for q in runs_t5):  # Table 1's T5 runs, when 01_main_results has run
        t5 = best_k_on_dev(lambda t, s, k: load_params(*nb.t5_params_files, **{"task.name": t, "seed": s, "method": "ketchup",
                                                                                 "rl.k": k}), nb.tasks, nb.t5_seeds, nb.k_values)
    table8 = [{"architecture": "decoder-only (this run)", **{r.task: r.best_k for r in grid.itertuples()}}]
    if t5 is not None:
        table8.insert(0, {"architecture": "T5 (Table 1's runs)", **{r.task: r.best_k for r in t5.itertuples()}})
    return pd.DataFrame(results), grid, pd.DataFrame(table8)


def decoder_only_verdicts(numeric7: pd.DataFrame, table8: pd.DataFrame, tasks: list[str], n_seeds: int) -> list[str]:
    """One line per task (KETCHUP at its dev-chosen K minus LLMR on the task's primary metric, with
    the paired test when there are seeds for one) and one for Table 8."""
    from kdlib.maths.metrics import PRIMARY_METRIC
    from kdlib.report import task_kind

    lines = []
    for task in tasks:
        prim = PRIMARY_METRIC.get(task_kind(task) or "")
        sub = numeric7[(numeric7.task == task) & (numeric7.metric == prim)].set_index("method")
        ket = [m for m in sub.index if str(m).startswith("ketchup_k")]
        if not ket or "llmr" not in sub.index:
            continue
        d = float(sub.loc[ket[0], "mean"] - sub.loc["llmr", "mean"])
        p = sub.loc[ket[0]].get("p_vs_llmr", float("nan"))
        test = f", p = {p:.3f}" if isinstance(p, float) and p == p else " (one seed: no significance test)"
        lines.append(f"decoder-only {task}: KETCHUP at its dev-chosen K={ket[0].split('_k')[1]} minus LLMR = {d:+.2f} "
                     f"test {prim}{test}.")
    lines.append("Table 8 (best K on dev): " + "; ".join(
        f"{r['architecture']}: " + ", ".join(f"{t} K={r[t]}" for t in tasks if t in r) for r in table8.to_dict(orient="records")) + ".")
    return lines


def plan(nb: DecoderOnlyParams) -> list[Params]:
    """Tables 7-8: the decoder-only chain of each task, then every method x seed."""
    return [q for t in nb.tasks for q in chain_targets(nb, t)] + method_targets(nb, nb.tasks, nb.seeds, method_plan(nb))
