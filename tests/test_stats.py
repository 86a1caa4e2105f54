"""Hand-checked numbers for kdlib.maths.stats."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from kdlib.maths.stats import bootstrap_ci, format_mean_ci, mean_ci, paired_ttest


def test_mean_ci_hand_checked():
    mean, hw = mean_ci([1, 2, 3])
    # s = 1; for 2 degrees of freedom t_p = (2p - 1) / sqrt(2 p (1 - p)), so
    # t_{0.975, 2} = 0.95 / sqrt(0.04875) = 4.3026527...
    assert mean == 2.0
    assert math.isclose(hw, 0.95 / math.sqrt(2 * 0.975 * 0.025) / math.sqrt(3), rel_tol=1e-12)
    assert math.isclose(hw, 2.4841, abs_tol=1e-4)
    # 90%: t_{0.95, 3} = 2.353363435 (t table); values 1..4 have s = sqrt(5/3)
    mean, hw = mean_ci([1, 2, 3, 4], confidence=0.90)
    assert mean == 2.5
    assert math.isclose(hw, 2.353363435 * math.sqrt(5 / 3) / 2, rel_tol=1e-9)


def test_mean_ci_small_samples():
    assert mean_ci([5.0])[0] == 5.0 and math.isnan(mean_ci([5.0])[1])
    assert all(math.isnan(x) for x in mean_ci([]))
    assert mean_ci([3.0, 3.0, 3.0]) == (3.0, 0.0)
    with pytest.raises(ValueError):
        mean_ci([1, 2], confidence=1.5)


def test_paired_ttest_hand_checked_and_against_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 1.0]
    t, p = paired_ttest(a, b)
    d = np.array([1.0, 2.0, 3.0, 3.0])  # mean 2.25, s = sqrt(2.75 / 3)
    assert math.isclose(t, 2.25 / (math.sqrt(2.75 / 3) / 2), rel_tol=1e-12)
    assert math.isclose(p, 2 * sps.t.sf(t, df=3), rel_tol=1e-9)
    assert math.isclose(t, d.mean() / (d.std(ddof=1) / 2), rel_tol=1e-12)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=5), rng.normal(size=5)
    ref = sps.ttest_rel(x, y)
    assert np.allclose(paired_ttest(x, y), (ref.statistic, ref.pvalue))


def test_paired_ttest_degenerate_cases_never_crash():
    assert all(math.isnan(x) for x in paired_ttest([1.0], [2.0]))
    assert all(math.isnan(x) for x in paired_ttest([], []))
    assert math.isnan(paired_ttest([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])[1])  # all differences 0
    assert math.isnan(paired_ttest([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])[1])  # constant difference
    with pytest.raises(ValueError):
        paired_ttest([1.0, 2.0], [1.0])


def test_bootstrap_ci():
    lo, hi = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert lo <= 3.0 <= hi and 1.0 <= lo and hi <= 5.0
    assert bootstrap_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == (lo, hi)  # reproducible with the seed
    assert bootstrap_ci([7.0, 7.0, 7.0]) == (7.0, 7.0)
    assert bootstrap_ci([4.0]) == (4.0, 4.0)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    # hand-checkable: two values resampled twice -> means in {0, 0.5, 1} with probs 1/4, 1/2, 1/4
    lo, hi = bootstrap_ci([0.0, 1.0], confidence=0.5, n_boot=4000)
    assert (lo, hi) == (0.5, 0.5)
    # a large normal sample agrees with the t interval
    x = np.random.default_rng(1).normal(10.0, 2.0, size=400)
    m, hw = mean_ci(x)
    lo, hi = bootstrap_ci(x)
    assert abs(lo - (m - hw)) < 0.05 and abs(hi - (m + hw)) < 0.05


def test_format_mean_ci():
    assert format_mean_ci(28.5612, 0.3149) == "28.56 ± 0.31"
    assert format_mean_ci(1.0, 0.25, digits=1) == "1.0 ± 0.2"
    assert format_mean_ci(28.5612, float("nan")) == "28.56"


def test_excess_error_percent_by_hand():
    from kdlib.maths.stats import excess_error_percent

    ks = np.array([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])  # student paths; the second ended after one step
    ms = np.array([[1, 1, 1], [1, 0, 0]])
    kt = np.array([[1.0, 0.5, 0.5]])
    mt = np.array([[1, 1, 1]])
    l, ex = excess_error_percent(ks, ms, kt, mt)
    # D_s = mean([1, 2, 3], [3, 3, 3]) = [2, 2.5, 3]; D_t = [1, 1.5, 2]
    assert l.tolist() == [1, 2, 3]
    assert np.allclose(ex, [100.0, 100 * 1.0 / 1.5, 50.0])
    _, same = excess_error_percent(kt, mt, kt, mt)
    assert np.allclose(same, 0.0)  # no exposure bias when both follow the same trajectories


def test_paired_t_power_matches_a_published_value_and_a_simulation():
    from scipy import stats as sps

    from kdlib.maths.stats import min_detectable_effect, paired_t_power, seeds_needed

    # One-sample / paired two-sided t-test, d = 1, n = 10, alpha = 0.05: power 0.8031 (G*Power, Cohen's tables).
    assert paired_t_power(1.0, 1.0, 10, alpha=0.05) == pytest.approx(0.8031, abs=5e-4)
    # The minimum detectable effect at 5 seeds, alpha 0.035, power 0.8, checked by simulating the test itself.
    sd, n = 1.7, 5
    mde = min_detectable_effect(sd, n, alpha=0.035, power=0.8)
    assert paired_t_power(mde, sd, n, alpha=0.035) == pytest.approx(0.8, abs=1e-8)
    rng = np.random.default_rng(0)
    d = rng.normal(mde, sd, size=(40_000, n))
    p = sps.ttest_1samp(d, 0.0, axis=1).pvalue
    assert float(np.mean(p < 0.035)) == pytest.approx(0.8, abs=0.01)
    # Seeds needed: the first n whose power reaches 0.8.
    k = seeds_needed(0.5, 1.0, alpha=0.035, power=0.8)
    assert paired_t_power(0.5, 1.0, int(k), 0.035) >= 0.8 > paired_t_power(0.5, 1.0, int(k) - 1, 0.035)
    assert seeds_needed(0.0, 1.0) == float("inf") and math.isnan(min_detectable_effect(1.0, 1))
    assert min_detectable_effect(1.0, 20) < min_detectable_effect(1.0, 5)  # more seeds, smaller effects


def test_one_answer_ahead_on_every_seed_is_one_constant_difference_whatever_the_seeds_scores():
    from kdlib.maths.stats import paired_ttest

    n = 300
    counts = np.array([255, 258, 253, 257, 261])
    llmr, ours = counts / n * 100, (counts + 1) / n * 100  # KETCHUP exactly one answer ahead on every seed
    assert np.ptp(ours - llmr) > 0  # float rounding: the old rule saw a varying difference here (p ~ 1e-50)
    same = np.full(5, 255)
    t1, p1 = paired_ttest(ours, llmr)
    t2, p2 = paired_ttest((same + 1) / n * 100, same / n * 100)
    assert math.isnan(p1) and math.isnan(p2)  # one rule: no t-test on a constant difference, in both cases
    t3, p3 = paired_ttest(ours + np.array([0, 1, 0, 0, 0]) / n * 100, llmr)  # one seed two answers ahead: a real test
    assert math.isfinite(p3) and p3 > 1e-6


def test_holm_adjustment_by_hand():
    from kdlib.maths.stats import holm_adjust

    p = [0.01, 0.04, 0.03, float("nan"), 0.005]
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> monotone 0.06
    assert np.allclose(holm_adjust(p), [0.03, 0.06, 0.06, np.nan, 0.02], equal_nan=True)
    assert np.allclose(holm_adjust([0.9, 0.8]), [1.0, 1.0])
    assert np.isnan(holm_adjust([np.nan])).all()


def test_paired_over_seeds_uses_common_seeds_only():
    from kdlib.maths.stats import paired_over_seeds

    a = {1: 51.0, 2: 62.0, 3: 58.0, 9: 0.0}  # seed 9 has no partner: left out
    b = {1: 50.0, 2: 60.0, 3: 55.0, 4: 99.0}
    d = paired_over_seeds(a, b)
    assert d["n"] == 3 and d["diff"] == pytest.approx(2.0)
    assert d["half_width"] == pytest.approx(4.302652729911275 / np.sqrt(3))
    assert d["p"] == pytest.approx(0.07417990022744853)
    one = paired_over_seeds({1: 1.0}, {1: 0.0})
    assert one["n"] == 1 and np.isnan(one["p"]) and np.isnan(one["half_width"])


def test_power_has_no_nan_where_scipys_lower_tail_fails():
    """paired_t_power at large noncentrality (df 4, nc 8.9; df 1, nc 11.3), where scipy's nct.cdf returns nan: a
    power in [0, 1], monotone in the effect, and the minimum detectable effect solvable for 2 and 5 seeds."""
    from kdlib.maths.stats import min_detectable_effect, paired_t_power

    for n in (2, 3, 5):
        powers = [paired_t_power(z, 1.0, n) for z in (1, 2, 4, 8, 16, 64)]
        assert all(0.0 <= p <= 1.0 for p in powers) and powers == sorted(powers)
        assert 0.0 < min_detectable_effect(1.0, n) < 1e3
    assert min_detectable_effect(2e-15, 3) == pytest.approx(2e-15 * min_detectable_effect(1.0, 3))


def test_paired_diff_sd_uses_the_t_tests_constant_rule():
    from kdlib.maths.stats import paired_diff_sd

    a, b = [11.0, 15.0, 14.0], [10.0, 12.0, 11.0]
    assert paired_diff_sd(a, b) == pytest.approx(np.std([1.0, 3.0, 3.0], ddof=1))
    llmr = [0.1 + 0.2, 0.7, 0.9]  # one third ahead on every seed, with rounding noise in the differences
    ahead = [v + 1 / 3 for v in llmr]
    assert paired_diff_sd(ahead, llmr) == 0.0 and math.isnan(paired_ttest(ahead, llmr)[1])
    assert math.isnan(paired_diff_sd([1.0], [0.0]))
