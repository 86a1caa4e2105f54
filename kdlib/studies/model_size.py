"""Figure 3 (notebook 04_model_size): dev learning curves of LLMR and KETCHUP for three student sizes.
"""

from __future__ import annotations

import pandas as pd

from kdlib.chains.core import train
from kdlib.config import ModelSizeParams, Params
from kdlib.studies.common import ensure_runs, kit_params


def _model_size_overrides(nb: ModelSizeParams) -> list[dict]:
    out = []
    for student in nb.students:
        for seed in nb.seeds:
            for m in nb.methods:
                over = {"task.name": nb.task, "models.student": student, "method": m, "seed": seed}
                if m == "ketchup":
                    over["rl.k"] = nb.k
                out.append(over)
    return out


def model_size_curves(nb: ModelSizeParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 3: dev learning curves (return of Eq. 10 and the task metric) of LLMR and KETCHUP
    for each student size, and their test scores."""
    ensure_runs(nb)
    curves, finals = [], []
    for over in _model_size_overrides(nb):
        student, seed, m = over["models.student"], over["seed"], over["method"]
        p = kit_params(nb, **over)
        run = train(p)
        label = f"ketchup_k{nb.k}" if m == "ketchup" else m
        s = run.summary()
        primary = s["primary"]
        for key in ("return", primary):
            for step, value in zip(*run.curve(f"eval/{key}")):
                curves.append({"student": student.split(":")[-1], "method": label, "seed": seed, "step": step,
                               "metric": key, "value": value})
        finals.append({"student": student.split(":")[-1], "method": label, "seed": seed,
                       **{f"test_{k}": v for k, v in s["test"].items()}})
    return pd.DataFrame(curves), pd.DataFrame(finals)


def plan(nb: ModelSizeParams) -> list[Params]:
    """LLMR and KETCHUP for each student size and seed."""
    return [kit_params(nb, **over) for over in _model_size_overrides(nb)]
