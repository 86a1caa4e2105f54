"""Table 1 (notebook 01_main_results): test scores at the best dev checkpoint of every method x task x seed.
"""

from __future__ import annotations

import pandas as pd

from kdlib.chains.core import (
    BASE_SEED,
    ensure_predistill,
    ensure_teacher,
    ensure_zeroshot,
    train,
)
from kdlib.chains.calibration import calibrate_task, format_record
from kdlib.config import EMBEDDED_TASKS, MainResultsParams, Params
from kdlib.studies.common import (
    chain_targets,
    ensure_runs,
    kit_params,
    method_plan,
    method_targets,
    result_rows,
    run_row,
)


def main_results(nb: MainResultsParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1: test scores at the best dev checkpoint of the teacher, the zero-shot and
    pre-distilled students and every method (x seeds). Returns (long results, runs)."""
    ensure_runs(nb)
    rows, runs = [], []
    for task in nb.tasks:
        base = kit_params(nb, **{"task.name": task})
        for label, run in (("teacher", ensure_teacher(base)), ("zeroshot", ensure_zeroshot(base)),
                           ("predistill", ensure_predistill(base))):
            rows += result_rows(task, label, BASE_SEED, run.summary())
            runs.append(run_row(task, label, BASE_SEED, run))
        for label, over in method_plan(nb):
            for seed in nb.seeds_of(label):
                run = train(kit_params(nb, **{"task.name": task, "seed": seed, **over}))
                rows += result_rows(task, label, seed, run.summary())
                runs.append(run_row(task, label, seed, run))
    return pd.DataFrame(rows), pd.DataFrame(runs)


def calibration(nb: MainResultsParams, n: int = 100) -> tuple[pd.DataFrame, dict]:
    """The testbed's calibration (kdlib.chains.calibration) for every generated task of Table 1, from its trained
    teacher and pre-distilled student and the best distilled student of the cache: one row per task with the
    targets met; also the records as ``python -m kdlib calibrate`` writes them to ``calibration.json``."""
    records = {t: calibrate_task(kit_params(nb, **{"task.name": t}), n=n) for t in nb.tasks if t in EMBEDDED_TASKS}
    rows = []
    for t, r in records.items():
        missed = [k for k, v in r["targets_met"].items() if v is False]
        rows.append({"task": t, **{k: v for k, v in r.items() if k != "targets_met"},
                     "targets missed": ", ".join(missed) if missed else "none"})
    return pd.DataFrame(rows), records


def plan(nb: MainResultsParams) -> list[Params]:
    """The runs Table 1 reads: each task's chain, then every method x its seeds (``power_seeds`` for ``power_rows``)."""
    out = [q for t in nb.tasks for q in chain_targets(nb, t)]
    for label, over in method_plan(nb):
        out += method_targets(nb, nb.tasks, nb.seeds_of(label), [(label, over)])
    return out
