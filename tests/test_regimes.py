"""Notebook 12's analysis: the K chosen on dev, paired gains per regime, and the computed verdict on the prediction."""

import numpy as np
import pandas as pd
import pytest

from kdlib.studies.regimes import regime_gains, regime_verdicts


def _runs(gain, best_step=lambda a, b, label, seed: 10):
    """Synthetic runs: KETCHUP K=4 is better on dev than K=16; its test gain over LLMR is gain(ambiguity, batch);
    each run's best dev checkpoint is ``best_step(...)``."""
    rng = np.random.default_rng(0)
    rows = []
    for a in (0.0, 0.5, 1.0):
        for b in (8, 64):
            for seed in range(5):
                base = 30 + rng.normal(0, 1)
                noise = rng.normal(0, 0.01)
                for label, k, dev, extra in (("llmr", 1, 29.0, 0.0), ("ketchup_k4", 4, 31.0, gain(a, b) + noise),
                                             ("ketchup_k16", 16, 30.0, -5.0)):
                    rows.append({"ambiguity": a, "batch_size": b, "method": label, "k": k, "seed": seed,
                                 "primary": "rougeL", "dev_metric": dev, "dev_return": 0.0,
                                 "test_metric": base + extra, "test_return": base + extra,
                                 "best_step": best_step(a, b, label, seed)})
    return pd.DataFrame(rows)


def test_gains_pair_over_seeds_at_the_k_chosen_on_dev():
    gains = regime_gains(_runs(lambda a, b: 1.0 + a))
    assert set(gains["k_dev"]) == {4}  # K=16 is worse on dev, and far worse on test: not chosen
    assert gains.loc[(gains.ambiguity == 1.0) & (gains.batch_size == 8), "gain_test_return"].item() == pytest.approx(2.0, abs=0.05)
    assert (gains["p_test_return"] < 1e-6).all()  # a constant gain with tiny noise: paired over seeds


def test_the_verdict_is_computed_from_the_shape_of_the_gains():
    holds, _ = regime_verdicts(regime_gains(_runs(lambda a, b: a * (2.0 if b == 8 else 1.0) + 0.1)))
    assert holds["grows_with_spread"] and holds["shrinks_with_batch"] and holds["holds"]
    flat, lines = regime_verdicts(regime_gains(_runs(lambda a, b: 0.5 - 0.4 * a)))
    assert not flat["grows_with_spread"] and not flat["holds"] and lines[-1].startswith("Prediction does not hold")


def test_a_regime_whose_runs_kept_their_start_makes_the_prediction_not_tested():
    """The shape that would hold, but in one regime LLMR's best dev checkpoint is step 0 on 3 of 5 seeds: that row
    compares the pre-distilled student with itself, so the verdict is NOT TESTED (holds None), never "does not hold"."""
    from kdlib.studies.regimes import regime_preconditions

    shape = lambda a, b: a * (2.0 if b == 8 else 1.0) + 0.1  # noqa: E731
    stuck = lambda a, b, label, seed: 0 if (a, b, label) == (0.5, 64, "llmr") and seed < 3 else 10  # noqa: E731
    gains = regime_gains(_runs(shape, stuck))
    row = gains[(gains.ambiguity == 0.5) & (gains.batch_size == 64)].iloc[0]
    assert row["left_start_llmr"] == pytest.approx(0.4) and row["left_start_ketchup"] == 1.0
    pre = regime_preconditions(gains)
    assert len(pre) == 6 and [c["met"] for c in pre].count(False) == 1
    result, lines = regime_verdicts(gains)
    assert result["holds"] is None and lines[-1].startswith("Prediction NOT TESTED: in 1 of 6 regimes")
    two_of_five = lambda a, b, label, seed: 0 if (a, b, label) == (0.5, 64, "llmr") and seed < 2 else 10  # noqa: E731
    assert regime_verdicts(regime_gains(_runs(shape, two_of_five)))[0]["holds"] is True  # 3 of 5 past step 0: tested


def test_the_map_marks_the_regimes_that_were_not_tested():
    import matplotlib

    matplotlib.use("Agg")
    from kdlib.report.plots import plot_regimes
    from kdlib.studies.regimes import MIN_LEFT

    stuck = lambda a, b, label, seed: 0 if (a, b, label) == (0.5, 64, "llmr") and seed < 3 else 10  # noqa: E731
    gains = regime_gains(_runs(lambda a, b: a + 0.1, stuck))
    marks = [t.get_text() for ax in plot_regimes(gains, min_left=MIN_LEFT).axes for t in ax.texts]
    assert sorted(marks).count("K=4 §") == 2 and len(marks) == 12  # that regime, once per panel, of 6 per panel
    assert not any("§" in t.get_text() for ax in plot_regimes(gains).axes for t in ax.texts)  # no threshold: no marks
