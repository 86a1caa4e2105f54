"""Figure 1 (notebook 02_returns): the true return of each RL method, its learning curves, and whether every run raised it.
"""

from __future__ import annotations

import pandas as pd

from kdlib.chains.core import train
from kdlib.config import Params, ReturnsParams
from kdlib.studies.common import ensure_runs, kit_params, method_plan, method_targets
from kdlib.trainers.runs import Run

RL_SERIES = {  # logged key -> (series name in the curves frame)
    "eval/return": "dev return", "eval/length": "dev length", "eval/sampled_return": "dev sampled return",
    "train/return": "train return",
    "train/length": "train length", "train/kl": "train KL", "eval/distinct2": "dev distinct-2",
}


def run_curves(run: Run, primary: str) -> list[dict]:
    """Long rows (step, series, value) of one RL run: the greedy dev return (Eq. 10), length and
    primary metric at every evaluation, and the sampled training return, length and KL to the
    teacher at every logged step."""
    rows = []
    series = {**RL_SERIES, f"eval/{primary}": f"dev {primary}"}
    for r in run.metrics():
        for key, name in series.items():
            if key in r:
                rows.append({"step": r["step"], "series": name, "value": float(r[key])})
    return rows


def rl_returns(nb: ReturnsParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 1: the average true return (Eq. 10) of greedy test outputs for each RL method, and
    the learning curves of the same runs (:func:`run_curves`: dev greedy return, length and metric;
    sampled training return, length and KL). Returns (test returns, long curves)."""
    ensure_runs(nb)
    rows, curves = [], []
    for task in nb.tasks:
        for seed in nb.seeds:
            for label, over in method_plan(nb):
                run = train(kit_params(nb, **{"task.name": task, "seed": seed, **over}))
                s = run.summary()
                rows.append({"task": task, "method": label, "seed": seed, "return": s["test"]["return"],
                             "best_step": s.get("best_step")})
                curves += [{"task": task, "method": label, "seed": seed, **r} for r in run_curves(run, s["primary"])]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def return_gains(curves: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Did each RL run raise the return it optimises? From the curves of :func:`rl_returns`.

    * greedy dev return (Eq. 10, the quantity of seed 000 Fig. 1): step 0 (the pre-distilled
      student) vs the last evaluation: ``start``, ``end``, ``gain``, ``raised``;
    * sampled return (what REINFORCE maximises): ``eval.sampled`` samples per dev input at the
      first and the last evaluation with the same random numbers (``dev sampled return``); runs
      without it fall back to the mean of the first ``window`` logged training steps vs the last
      ``window`` (different prompts every step: noisy): ``train_start``, ``train_end``,
      ``train_gain``, ``train_raised``, ``train_source``;
    * lengths beside them (greedy dev length at both ends, sampled length in both windows): a rise
      bought only by shorter outputs shows as a falling length;
    * the dev metric at both ends (a rising return with a falling metric is reward hacking's sign).
    """
    rows = []
    if curves.empty:
        return pd.DataFrame(rows)
    for (task, method, seed), g in curves.groupby(["task", "method", "seed"], sort=False):
        def series(name):
            return g[g.series == name].sort_values("step").value

        dev, train_r = series("dev return"), series("train return")
        dev_len, train_len = series("dev length"), series("train length")
        metric = next((n for n in g.series.unique() if n.startswith("dev ") and n not in
                       ("dev return", "dev length", "dev sampled return", "dev distinct-2")), None)
        row = {"task": task, "method": method, "seed": seed,
               "start": float(dev.iloc[0]), "end": float(dev.iloc[-1]), "gain": float(dev.iloc[-1] - dev.iloc[0]),
               "raised": bool(dev.iloc[-1] > dev.iloc[0])}
        sampled = series("dev sampled return")
        if len(sampled) >= 2:
            a, b = float(sampled.iloc[0]), float(sampled.iloc[-1])
            row.update({"train_start": a, "train_end": b, "train_gain": b - a, "train_raised": b > a,
                        "train_source": "dev samples, common random numbers"})
        elif len(train_r):
            w = max(1, min(window, len(train_r) // 2))
            a, b = float(train_r.iloc[:w].mean()), float(train_r.iloc[-w:].mean())
            row.update({"train_start": a, "train_end": b, "train_gain": b - a, "train_raised": b > a,
                        "train_source": f"training batches, first vs last {w} steps"})
        if len(train_len):
            w = max(1, min(window, len(train_len) // 2))
            row.update({"train_len_start": float(train_len.iloc[:w].mean()), "train_len_end": float(train_len.iloc[-w:].mean())})
        if len(dev_len):
            row.update({"len_start": float(dev_len.iloc[0]), "len_end": float(dev_len.iloc[-1])})
        if metric is not None:
            m = series(metric)
            row.update({"metric": metric[4:], "metric_start": float(m.iloc[0]), "metric_end": float(m.iloc[-1])})
        rows.append(row)
    return pd.DataFrame(rows)


def plan(nb: ReturnsParams) -> list[Params]:
    """The RL runs Figure 1 reads (Table 1's, through the run cache)."""
    return method_targets(nb, nb.tasks, nb.seeds, method_plan(nb))
