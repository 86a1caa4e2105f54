"""Helpers every study shares: kit params of a notebook, method plans, the run targets of a chain, training what a notebook reads (``plan`` dispatches to the notebook's own study module, found by its name).
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from pathlib import Path

from kdlib.config import (
    MainResultsParams,
    NotebookParams,
    Params,
    ReturnsParams,
    kit_params_for,
    params_hash,
)
from kdlib.trainers.runs import Run, atomic_write_json

# For the notebooks that never read the sampled dev return (``eval.sampled``, 2 x 4 samples per dev input per run;
# notebook 02 reads it): turned off in their runs' params. It only logs, so the run keys stay the same.
SKIP_SAMPLED_RETURN = {"eval.sampled": 0}

# Part of every cached analysis's key (``cached_frames``): bump it when an analysis's code changes its numbers.
ANALYSES_VERSION = 1


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


def analysis_key(nb: NotebookParams) -> dict:
    """What an analysis of ``nb`` depends on: the notebook's values (not where it writes) and the key of every run
    it reads (a run key covers its parameters, data and parents)."""
    from kdlib.chains.core import run_for

    return {"nb": nb.model_dump(mode="json", exclude={"output_dir"}), "runs": sorted(run_for(p).key for p in plan(nb))}


def cached_frames(cache_dir: str | Path, name: str, key: dict, compute: Callable):
    """``compute()`` (a DataFrame or a tuple of them), kept in ``<cache_dir>/analyses/<name>-<hash of key>.json`` and
    read back on the next call with the same key, so a warm re-run of a notebook does not redo an analysis of runs
    that have not changed. Written atomically, numbers exactly (JSON floats are the shortest repr that reads back
    equal); an unreadable file is recomputed."""
    import pandas as pd

    path = Path(cache_dir) / "analyses" / f"{name}-{params_hash({'key': key, 'v': ANALYSES_VERSION})}.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
            frames = [pd.DataFrame(f["data"], columns=f["columns"]).astype(dict(zip(f["columns"], f["dtypes"])))
                      for f in data["frames"]]
            return frames[0] if data["single"] else tuple(frames)
        except (OSError, ValueError, KeyError):
            pass
    out = compute()
    single = isinstance(out, pd.DataFrame)
    frames = [out] if single else list(out)
    atomic_write_json(path, {"name": name, "key": key, "single": single,
                             "frames": [_frame_record(f) for f in frames]})
    return out


def _frame_record(f) -> dict:
    """A DataFrame as JSON-ready columns, dtypes and rows of plain Python values (read back by ``cached_frames``)."""
    rows = [[v.item() if hasattr(v, "item") else v for v in row] for row in f.itertuples(index=False, name=None)]
    return {"columns": [str(c) for c in f.columns], "dtypes": [str(t) for t in f.dtypes], "data": rows}
