"""Notebook 12_regimes: a map of when the K-step return helps. KETCHUP (K chosen on dev) against LLMR across
sequences per update (at an equal number of sampled sequences) and task spread (``task.ambiguity``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from kdlib.chains.core import train
from kdlib.config import Params, RegimesParams
from kdlib.maths.metrics import HIGHER_IS_BETTER
from kdlib.maths.stats import paired_over_seeds
from kdlib.studies.common import ensure_runs, kit_params

ALPHA = 0.035  # seed 001 App. E's significance threshold, as in Table 1


def regime_overrides(nb: RegimesParams, ambiguity: float, batch_size: int) -> dict:
    """Kit overrides of one regime: the task at a spread, ``batch_size`` sequences per update for
    ``sequences / batch_size`` updates (the learning-rate schedule and the dev evaluations scale with the updates)."""
    steps = nb.sequences // batch_size
    return {"task.name": nb.task, "task.ambiguity": ambiguity, "rl.batch_size": batch_size, "rl.steps": steps,
            "rl.eval_every": max(1, steps // nb.evals), "rl.checkpoint_every": max(1, steps // 2)}


def _runs(nb: RegimesParams):
    """(ambiguity, batch size, method label, K, seed, params) of every run the notebook reads."""
    for a in nb.ambiguities:
        for b in nb.batch_sizes:
            over = regime_overrides(nb, a, b)
            for seed in nb.seeds:
                yield a, b, "llmr", 1, seed, kit_params(nb, **over, seed=seed, method="llmr")
                for k in nb.k_values:
                    yield a, b, f"ketchup_k{k}", k, seed, kit_params(nb, **over, seed=seed, method="ketchup", **{"rl.k": k})


def plan(nb: RegimesParams) -> list[Params]:
    """LLMR and KETCHUP per K x seed in every (ambiguity, batch size) regime."""
    return [p for *_, p in _runs(nb)]


def regimes(nb: RegimesParams) -> pd.DataFrame:
    """One row per run: regime, method, K, seed, the primary metric and the greedy return (Eq. 10) on dev (at the
    best checkpoint) and test, and the best step."""
    ensure_runs(nb)
    rows = []
    for a, b, label, k, seed, p in _runs(nb):
        s = train(p).summary()
        primary = s["primary"]
        rows.append({"ambiguity": a, "batch_size": b, "method": label, "k": k, "seed": seed, "primary": primary,
                     "dev_metric": s["dev"][primary], "dev_return": s["dev"]["return"],
                     "test_metric": s["test"][primary], "test_return": s["test"]["return"],
                     "best_step": s.get("best_step"), "steps": s.get("steps")})
    return pd.DataFrame(rows)


MIN_LEFT = 0.5  # a regime is tested where, for each method, more than half the seeds' best checkpoint is past step 0


def _left(runs: pd.DataFrame) -> float:
    """The share of ``runs`` whose best dev checkpoint is not step 0 (the method moved the pre-distilled student); a
    run without a recorded best step counts as moved, as in Table 1's § marks (kdlib.report.tables.start_markers)."""
    if "best_step" not in runs or runs["best_step"].isna().all():
        return math.nan
    return float((pd.to_numeric(runs["best_step"], errors="coerce") != 0).mean())


def regime_gains(runs: pd.DataFrame) -> pd.DataFrame:
    """Per regime: the K chosen on dev (best mean dev metric over seeds), and KETCHUP at that K minus LLMR, paired over
    seeds, on the greedy test return and the test metric (mean, 95% CI over seeds, paired two-sided t-test); and, per
    method, the share of seeds whose best dev checkpoint is past step 0 (``left_start_*``, and the weaker of the two,
    ``left_start``): where that is not above ``MIN_LEFT`` the row compares the pre-distilled student with itself on
    most seeds."""
    rows = []
    for (a, b), g in runs.groupby(["ambiguity", "batch_size"], sort=True):
        higher = HIGHER_IS_BETTER.get(g["primary"].iloc[0], True)
        dev = g[g.method != "llmr"].groupby("k")["dev_metric"].mean()
        k_star = int(dev.idxmax() if higher else dev.idxmin())
        ours = g[g.method == f"ketchup_k{k_star}"].set_index("seed")
        base = g[g.method == "llmr"].set_index("seed")
        left = {"left_start_ketchup": _left(ours), "left_start_llmr": _left(base)}
        row = {"ambiguity": a, "batch_size": b, "k_dev": k_star, **left, "left_start": min(left.values())}
        for what in ("test_return", "test_metric"):
            pair = (ours[what], base[what]) if what == "test_return" or higher else (base[what], ours[what])
            d = paired_over_seeds(*pair)  # positive = KETCHUP better, whatever the metric's direction
            row |= {"n_seeds": d["n"], f"gain_{what}": d["diff"], f"gain_{what}_hw": d["half_width"], f"p_{what}": d["p"]}
        rows.append(row)
    return pd.DataFrame(rows)


PREDICTION = ("The paper's argument (seed 000 Sec. 2, Theorem 1): the K-step return cuts the variance of the return, "
              "so its gain over LLMR should grow with the spread of the task (more return variance to cut) and shrink "
              "as more sequences per update average the variance away.")


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0]) if len(np.unique(x)) >= 2 else math.nan


def regime_preconditions(gains: pd.DataFrame) -> list[dict]:
    """Measured before the verdict, per regime: the share of seeds whose best dev checkpoint is past step 0, for the
    weaker of the two methods compared (KETCHUP at the dev-chosen K, LLMR); met above ``MIN_LEFT``."""
    out = []
    for _, g in gains.sort_values(["ambiguity", "batch_size"]).iterrows():
        left = g["left_start"]
        out.append({"name": f"ambiguity {g['ambiguity']:g}, {int(g['batch_size'])} sequences per update: share of "
                            "seeds past step 0 (best dev checkpoint; weaker of KETCHUP, LLMR)",
                    "value": float(left), "threshold": MIN_LEFT, "met": bool(left > MIN_LEFT)})
    return out


def regime_verdicts(gains: pd.DataFrame, what: str = "test_return") -> tuple[dict, list[str]]:
    """Did the prediction hold on ``gain_<what>``? Two parts, each computed, not read off a figure: (1) at every batch
    size the gain rises with the ambiguity level (slope of the gain on the level > 0), (2) at every ambiguity level the
    gain at the smallest batch exceeds the gain at the largest. "holds" needs both parts everywhere; where no regime's
    gain is distinguishable from 0 (p >= 0.035 everywhere) the verdict says the map has no gain to explain. Where a
    regime's precondition missed (:func:`regime_preconditions`: on most seeds a method's best checkpoint is its start)
    the prediction is NOT TESTED (``holds`` None): that row compares the pre-distilled student with itself."""
    col = f"gain_{what}"
    spread = {int(b): _slope(g["ambiguity"].to_numpy(float), g[col].to_numpy(float))
              for b, g in gains.groupby("batch_size")}
    small, large = gains["batch_size"].min(), gains["batch_size"].max()
    batch = {float(a): float(g.loc[g.batch_size == small, col].mean() - g.loc[g.batch_size == large, col].mean())
             for a, g in gains.groupby("ambiguity")}
    grows = all(s > 0 for s in spread.values())
    shrinks = all(d > 0 for d in batch.values())
    any_sig = bool((gains[f"p_{what}"] < ALPHA).any())
    result = {"what": what, "gain_slope_on_ambiguity": spread, "gain_small_minus_large_batch": batch,
              "grows_with_spread": grows, "shrinks_with_batch": shrinks, "any_significant_gain": any_sig,
              "holds": grows and shrinks}
    lines = [f"Gain on {what.replace('_', ' ')}: slope on the ambiguity level per batch size "
             + ", ".join(f"{b}: {s:+.3f}" for b, s in spread.items())
             + f" -> {'grows' if grows else 'does not grow'} with spread at every batch size.",
             f"Gain at {small} minus gain at {large} sequences per update, per ambiguity level: "
             + ", ".join(f"{a:g}: {d:+.3f}" for a, d in batch.items())
             + f" -> {'shrinks' if shrinks else 'does not shrink'} with batch size at every level."]
    missed = [c for c in regime_preconditions(gains) if not c["met"]]
    if missed:
        result["holds"] = None
        lines.append(f"Prediction NOT TESTED: in {len(missed)} of {len(gains)} regimes most seeds of KETCHUP or LLMR "
                     "kept their start as the best dev checkpoint (shares past step 0: "
                     + ", ".join(f"{c['name'].split(':')[0]} {c['value']:.1f}" for c in missed)
                     + f"; needed > {MIN_LEFT:g}), so those gains compare the pre-distilled student with itself.")
        return result, lines
    verdict = "holds" if result["holds"] else "does not hold"
    if not any_sig:
        verdict += " (no regime's gain differs from 0 at p < 0.035: the shapes compare noise-level gains)"
    lines.append(f"Prediction {verdict}.")
    return result, lines


def verdict_word(result: dict) -> str:
    return "is not tested" if result["holds"] is None else ("holds" if result["holds"] else "does not hold")
