"""Helpers every study shares: kit params of a notebook, method plans, the run targets of a chain, training what a notebook reads (``plan`` dispatches to the notebook's own study module, found by its name).
"""

from __future__ import annotations

import importlib
import math

from kdlib.config import (
    MainResultsParams,
    NotebookParams,
    Params,
    ReturnsParams,
    kit_params_for,
)
from kdlib.trainers.runs import Run


def kit_params(nb: NotebookParams, **overrides) -> Params:
    return kit_params_for(nb, **overrides)


def method_plan(nb: MainResultsParams | ReturnsParams) -> list[tuple[str, dict]]:
    """(run label, overrides) of every method row: the listed methods, then KETCHUP per K."""
    plan = [(m, {"method": m}) for m in nb.methods if m != "ketchup"]
    plan += [(f"ketchup_k{k}", {"method": "ketchup", "rl.k": k}) for k in nb.k_values]
    plan += [(f"ketchup_soft_k{k}", {"method": "ketchup", "rl.k": k, "rl.value": "soft"})
             for k in getattr(nb, "soft_k_values", [])]
    return plan


# ----------------------------------------------------------------------------- plans
def chain_targets(nb: NotebookParams, task: str, over: dict | None = None) -> list[Params]:
    """Teacher, zero-shot and pre-distilled student of a task (the stages every table shows)."""
    base = {"task.name": task, **(over or {})}
    return [kit_params(nb, **{**base, "method": m}) for m in ("teacher", "zeroshot", "predistill")]


def method_targets(nb, tasks, seeds, plan_rows) -> list[Params]:
    return [kit_params(nb, **{"task.name": t, "seed": s, **over}) for t in tasks for s in seeds for _, over in plan_rows]


def plan(nb: NotebookParams) -> list[Params]:
    """The runs a notebook reads (the scheduler adds the stages they build on), from the notebook's own study
    module ``kdlib.studies.<name>`` (notebook ``NN_<name>``). Training them first, in parallel
    (``kdlib.chains.schedule.ensure`` / ``python -m kdlib prepare``), leaves the notebook only reading the run cache."""
    return study_module(nb).plan(nb)


def study_module(nb: NotebookParams):
    """The study module of a notebook: ``01_main_results`` -> ``kdlib.studies.main_results``."""
    return importlib.import_module(f"kdlib.studies.{nb.notebook.split('_', 1)[1]}")


def ensure_runs(nb: NotebookParams, workers: int | None = None) -> int:
    """Train what ``nb`` needs that is not in the run cache yet (parallel workers); returns how many."""
    from kdlib.chains.schedule import ensure

    return ensure(plan(nb), workers=workers)


def result_rows(task: str, method: str, seed: int, summary: dict, split: str = "test") -> list[dict]:
    return [{"task": task, "method": method, "seed": seed, "metric": k, "value": float(v)}
            for k, v in summary[split].items() if isinstance(v, (int, float)) and math.isfinite(float(v))]


def run_row(task: str, label: str, seed: int, run: Run) -> dict:
    s = run.summary()
    return {"task": task, "method": label, "seed": seed, "run": str(run.path), "best_step": s.get("best_step"),
            "steps": s.get("steps"), "time_s": s.get("time_s")}
