"""Table 2 (notebook 05_llm_eval): pairwise judge win rates against KL.
"""

from __future__ import annotations

import pandas as pd

from kdlib.chains.core import train
from kdlib.config import LLMEvalParams, Params
from kdlib.studies.common import ensure_runs, kit_params
from kdlib.trainers.tasks import load_task_bundle


def _llm_eval_overrides(nb: LLMEvalParams) -> list[dict]:
    out = []
    for task in nb.tasks:
        for m in [nb.baseline] + nb.methods:
            over = {"task.name": task, "method": m, "seed": nb.seeds[0]}
            if m == "ketchup":
                over["rl.k"] = nb.k
            out.append(over)
    return out


def llm_eval(nb: LLMEvalParams, cache_dir: str) -> pd.DataFrame:
    """Table 2: pairwise judge win rates of each method against the KL baseline, per task and
    criterion, on the test outputs saved by the runs."""
    from kdlib import judge

    p0 = kit_params(nb)
    backend = judge.make_backend(judge.JudgeConfig(**{k: v for k, v in p0.judge.model_dump().items()
                                                      if k in judge.JudgeConfig.model_fields}))
    n = p0.judge.n_examples
    ensure_runs(nb)
    outputs: dict[str, dict[str, list[dict]]] = {}
    for over in _llm_eval_overrides(nb):
        task, m = over["task.name"], over["method"]
        run = train(kit_params(nb, **over))
        rows = run.outputs("test")
        outputs.setdefault(task, {})[m] = rows[:n] if n else rows
    kinds = {t: load_task_bundle(kit_params(nb, **{"task.name": t})).kind for t in nb.tasks}
    frames = []
    for task in nb.tasks:
        df = judge.judge_table({kinds[task]: outputs[task]}, baseline_method=nb.baseline, methods=nb.methods,
                               tasks=[kinds[task]], criteria=list(nb.criteria), backend=backend, cache_dir=cache_dir,
                               templates_dir=p0.judge.templates_dir, progress=False)
        df["task"] = task
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def plan(nb: LLMEvalParams) -> list[Params]:
    """The runs whose test outputs are judged."""
    return [kit_params(nb, **over) for over in _llm_eval_overrides(nb)]
