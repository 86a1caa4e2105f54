"""Small statistics for reporting results over seeds (rliable-style pure numpy/scipy functions).

Used for the 5-seed results with paired t-tests and 95% confidence intervals of seed 001,
App. E. Every function takes array-likes of floats and returns plain Python floats / str;
none of them raises on small or degenerate samples (they return NaN instead).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import optimize as _sps_optimize
from scipy import stats as _sps

__all__ = ["mean_ci", "paired_ttest", "paired_over_seeds", "bootstrap_ci", "format_mean_ci"]


def _as_1d(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).ravel()


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float]:
    """Sample mean and half-width of its two-sided t confidence interval.

    ``half_width = t_{(1 + confidence)/2, n - 1} * s / sqrt(n)`` with ``s`` the sample
    standard deviation (ddof = 1). Example: ``mean_ci([1, 2, 3]) == (2.0, 4.3027 / sqrt(3))``
    = ``(2.0, 2.4841...)``.

    n = 0 gives ``(nan, nan)``; n = 1 gives ``(value, nan)`` (no spread can be estimated
    from one run). Returns ``(mean, half_width)`` as floats.
    """
    _check_confidence(confidence)
    x = _as_1d(values)
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    mean = float(x.mean())
    if n == 1:
        return mean, float("nan")
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    t_crit = float(_sps.t.ppf(0.5 + confidence / 2.0, df=n - 1))
    return mean, t_crit * sem


CONSTANT_RTOL = 1e-9  # differences equal up to this share of the scores' magnitude are one constant difference


def _constant_difference(x: np.ndarray, y: np.ndarray) -> bool:
    """Whether the paired differences ``x - y`` are one constant, up to :data:`CONSTANT_RTOL` of the largest score."""
    scale = max(float(np.max(np.abs(x))), float(np.max(np.abs(y))), 1.0)
    return float(np.ptp(x - y)) <= CONSTANT_RTOL * scale


def paired_diff_sd(a, b) -> float:
    """SD (ddof 1) of the paired differences ``a - b``; exactly 0 for a constant difference by :func:`paired_ttest`'s
    rule (its rounding noise, SD ~1e-15, is not a spread); nan below two pairs."""
    x, y = _as_1d(a), _as_1d(b)
    if x.size != y.size:
        raise ValueError(f"paired_diff_sd needs samples of equal length, got {x.size} and {y.size}")
    if x.size < 2:
        return float("nan")
    d = x - y
    if np.all(np.isfinite(d)) and _constant_difference(x, y):
        return 0.0
    return float(d.std(ddof=1))


def paired_ttest(a, b) -> tuple[float, float]:
    """Two-sided paired t-test of ``a`` against ``b`` (``scipy.stats.ttest_rel``), e.g. per-seed scores.

    Returns ``(t, p)`` as floats. Degenerate cases never raise: fewer than two pairs, or differences that are one
    constant (all pairs differ by the same amount, 0 included) give ``(nan, nan)``: the t statistic is undefined
    there. "The same amount" is one rule with a relative tolerance (:data:`CONSTANT_RTOL` of the largest score):
    accuracies on 300 examples with one method exactly one answer ahead on every seed are a constant difference
    whether the seeds' scores are equal (the differences are then bit-identical) or not (they then differ in the
    last bits of a float). Raises ``ValueError`` only when the lengths differ.
    """
    x, y = _as_1d(a), _as_1d(b)
    if x.size != y.size:
        raise ValueError(f"paired_ttest needs samples of equal length, got {x.size} and {y.size}")
    if x.size < 2:
        return float("nan"), float("nan")
    d = x - y
    if not np.all(np.isfinite(d)) or _constant_difference(x, y):
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _sps.ttest_rel(x, y)
    return float(res.statistic), float(res.pvalue)


def paired_over_seeds(a, b, confidence: float = 0.95) -> dict:
    """``a - b`` paired over the seeds both have: ``a`` and ``b`` map seed -> score (a dict or a pandas Series indexed
    by seed). Returns ``n`` (common seeds), ``diff`` (mean difference), ``half_width`` (:func:`mean_ci` of the
    per-seed differences) and ``p`` (:func:`paired_ttest`; NaN below two seeds or for a constant difference)."""
    a, b = dict(a), dict(b)
    seeds = sorted(set(a) & set(b))
    x = np.array([a[s] for s in seeds], dtype=np.float64)
    y = np.array([b[s] for s in seeds], dtype=np.float64)
    diff, hw = mean_ci(x - y, confidence)
    return {"n": len(seeds), "diff": diff, "half_width": hw, "p": paired_ttest(x, y)[1]}


def holm_adjust(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate): sort the m finite
    p-values ascending, ``p_(i) * (m - i + 1)``, made monotone by a running maximum and capped at 1. NaN entries are
    not tests: they stay NaN and do not count in m. Same shape as the input."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p.ravel()))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p.ravel()[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p.ravel()[order] * (m - np.arange(m))))
    flat = out.ravel()
    flat[order] = adjusted
    return flat.reshape(p.shape)


def bootstrap_ci(values, confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval ``(low, high)`` of the mean.

    Resamples ``values`` with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``,
    so the result is reproducible), and returns the ``(1 - confidence)/2`` and
    ``(1 + confidence)/2`` percentiles of the resampled means. n = 0 gives ``(nan, nan)``;
    n = 1 gives ``(value, value)``.
    """
    _check_confidence(confidence)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    x = _as_1d(values)
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n)
    means = x[idx].mean(axis=1)  # (n_boot,)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def format_mean_ci(mean: float, hw: float, digits: int = 2) -> str:
    """``"28.56 ± 0.31"``; just ``"28.56"`` when the half-width is NaN (e.g. a single run)."""
    if hw is None or math.isnan(float(hw)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {hw:.{digits}f}"


def excess_error_percent(kl_student_paths, mask_student, kl_teacher_paths, mask_teacher, max_len: int | None = None):
    """ExError%(l) of LLMR (seed 002, after Arora et al. 2022): the excess accumulated error when
    the models follow the student's own trajectories instead of the teacher's::

        D_s(l) = E_{y ~ student} sum_{t <= l} KL(p(.|y_<t, x) || q(.|y_<t, x))
        D_t(l) = E_{y ~ teacher} sum_{t <= l} KL(p(.|y_<t, x) || q(.|y_<t, x))
        ExError%(l) = 100 (D_s(l) - D_t(l)) / D_t(l)

    Inputs are per-position forward KLs (teacher p || student q) along sampled trajectories:
    ``kl_*_paths`` (N, L) with their masks; a trajectory that ended before l keeps its total
    (no further steps). Positive = exposure bias. Returns (l = 1..max_len, ExError%) arrays."""
    ks, ms = _as_2d(kl_student_paths), _as_2d(mask_student).astype(bool)
    kt, mt = _as_2d(kl_teacher_paths), _as_2d(mask_teacher).astype(bool)
    L = max_len or max(ks.shape[1], kt.shape[1])

    def accumulated(k, m):
        k = np.where(m, k, 0.0)
        if k.shape[1] < L:
            k = np.pad(k, ((0, 0), (0, L - k.shape[1])))
        return np.cumsum(k[:, :L], axis=1).mean(axis=0)  # (L,)

    d_s, d_t = accumulated(ks, ms), accumulated(kt, mt)
    with np.errstate(divide="ignore", invalid="ignore"):
        ex = np.where(d_t > 0, 100.0 * (d_s - d_t) / d_t, np.nan)
    return np.arange(1, L + 1), ex


def _as_2d(x) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"expected an (N, L) array, got shape {a.shape}")
    return a


def projected_gradient_stats(P, directions: str = "gaussian") -> dict:
    """Variance and signal of a stochastic gradient from its random projections (a
    measurement the KETCHUP papers do not make: they measure the variance of the return).

    ``P`` (r, N): ``P[j, n] = g_n . v_j``, N per-sample gradients g_n (e.g. one sampled output's
    ``sum_t G^_t grad log pi(y_t|s_t)``) projected on r directions v_j ~ N(0, I). Because
    ``E_v[(a . v)^2] = |a|^2``:

    * ``trace_var`` = mean_j of the unbiased sample variance over n of P[j, :]: an unbiased estimate
      of tr Cov(g) (the total variance of the single-sample gradient);
    * ``mean_sq`` = mean_j (mean_n P[j, n])^2 - trace_var / N: an unbiased estimate of |E g|^2
      (the plug-in estimate is biased up by the noise of the mean; clipped at 0);
    * ``snr`` = sqrt(mean_sq / trace_var): |E g| / sqrt(tr Var g).

    ``directions="basis"``: the v_j are an orthonormal basis of the gradient's space (r = dim g);
    then sum_j (a . v_j)^2 = |a|^2 exactly, so the means over j above become sums and the
    estimates are exact (tests/test_gradient_variance.py checks this against per-sample gradients
    computed by backward). Returns floats."""
    if directions not in ("gaussian", "basis"):
        raise ValueError(f"directions must be 'gaussian' or 'basis', got {directions!r}")
    P = _as_2d(P)
    r, n = P.shape
    if n < 2:
        raise ValueError("need at least two samples per input")
    scale = float(r) if directions == "basis" else 1.0
    tv = scale * float(P.var(axis=1, ddof=1).mean())
    ms = max(0.0, scale * float((P.mean(axis=1) ** 2).mean()) - tv / n)
    return {"trace_var": tv, "mean_sq": ms, "snr": math.sqrt(ms / tv) if tv > 0 else float("nan")}


def projected_cosine(PA, PB) -> float:
    """Cosine between the mean gradients E g_A and E g_B of two estimators measured on the same
    samples and directions (``P*`` (r, N) as in :func:`projected_gradient_stats`): the plug-in
    estimate ``<mean_A, mean_B> / (|mean_A| |mean_B|)`` over the projected means (directions
    v ~ N(0, I) preserve inner products in expectation). 1 = same direction."""
    A, B = _as_2d(PA).mean(axis=1), _as_2d(PB).mean(axis=1)
    den = float(np.sqrt((A ** 2).sum() * (B ** 2).sum()))
    return float((A * B).sum() / den) if den > 0 else float("nan")


def projected_mean_sq(P) -> float:
    """An unbiased estimate of |E g|^2 from projections ``P`` (r, M, N): ``P[j, m, n] = g_{m,n} . v_j`` for N
    sampled outputs of each of M inputs drawn at random, on r directions v_j ~ N(0, I) (``E_v[(a . v)^2] = |a|^2``).

    Per direction, the grand mean over inputs of the per-input means estimates ``E g . v_j``; its square is biased up
    by its own variance, estimated without bias by the spread of the M per-input means / M (samples of one input are
    not independent of each other, inputs are):  ``mean_j [ gbar_j^2 - s^2_j / M ]``. Not clipped at 0 (clipping
    would bias it): a value near 0 or below says |E g|^2 is below the noise."""
    P = np.asarray(P, dtype=float)
    if P.ndim != 3 or P.shape[1] < 2:
        raise ValueError(f"expected projections (r, M, N) with M >= 2 inputs, got shape {P.shape}")
    means = P.mean(axis=2)  # (r, M)
    grand = means.mean(axis=1)  # (r,)
    return float((grand ** 2 - means.var(axis=1, ddof=1) / P.shape[1]).mean())


def projected_relative_bias(PK, P1, confidence: float = 0.95) -> dict:
    """The bias of a gradient estimator g_K relative to the unbiased g_1, measured on the same samples and directions
    (``PK``, ``P1``: (r, M, N) as in :func:`projected_mean_sq`): ``|E g_K - E g_1|^2 / |E g_1|^2``, each squared norm
    estimated without bias from the paired per-sample differences (``PK - P1``) and from ``P1``.

    Unlike ``1 - cos(mean g_K, mean g_1)``, which Monte Carlo noise alone pulls above 0 (more so for the noisier g_K),
    this is centred on 0 for an unbiased estimator. CI: normal, with the delete-one-input jackknife's standard error
    (inputs are the independent units). Returns floats: ``bias_sq``, ``signal_sq``, ``rel_bias``, ``rel_bias_se``,
    ``rel_bias_low``, ``rel_bias_high``."""
    _check_confidence(confidence)
    PK, P1 = np.asarray(PK, dtype=float), np.asarray(P1, dtype=float)
    if PK.shape != P1.shape:
        raise ValueError(f"PK and P1 must have one shape, got {PK.shape} and {P1.shape}")
    D = PK - P1
    num, den = projected_mean_sq(D), projected_mean_sq(P1)
    rel = num / den if den > 0 else float("nan")
    M = P1.shape[1]
    if M >= 3 and den > 0:
        keep = [np.delete(np.arange(M), m) for m in range(M)]
        jack = np.array([projected_mean_sq(D[:, k]) / projected_mean_sq(P1[:, k]) for k in keep])
        se = float(np.sqrt((M - 1) / M * ((jack - jack.mean()) ** 2).sum()))
    else:
        se = float("nan")
    z = float(_sps.norm.ppf(0.5 + confidence / 2))
    return {"bias_sq": num, "signal_sq": den, "rel_bias": rel, "rel_bias_se": se,
            "rel_bias_low": rel - z * se, "rel_bias_high": rel + z * se}


# ---------------------------------------------------------------------------------------------
# statistical power of a paired t-test over seeds
# ---------------------------------------------------------------------------------------------
def paired_t_power(effect: float, sd: float, n: int, alpha: float = 0.035) -> float:
    """Power of the two-sided paired t-test (one-sample t on the ``n`` paired differences, df = n - 1) to reject a
    zero mean difference when the true mean difference is ``effect`` and the differences' SD is ``sd``:

        P(|T| > t_{1-alpha/2, n-1}),  T ~ noncentral t(df = n - 1, nc = effect / sd * sqrt(n))   (scipy.stats.nct).

    ``sd`` 0 with a nonzero effect is power 1; n < 2 is nan (no test)."""
    if n < 2 or not math.isfinite(effect) or not math.isfinite(sd):
        return float("nan")
    if sd <= 0:
        return 1.0 if effect != 0 else float(alpha)
    df = n - 1
    nc = abs(effect) / sd * math.sqrt(n)
    crit = _sps.t.ppf(1 - alpha / 2, df)
    # lower tail P(T < -crit) as P(T' > crit) with T' noncentral t at -nc (the same number: scipy's nct.cdf returns
    # nan there for large nc, e.g. df 4, nc 8.9)
    return float(_sps.nct.sf(crit, df, nc) + _sps.nct.sf(crit, df, -nc))


def min_detectable_effect(sd: float, n: int, alpha: float = 0.035, power: float = 0.8) -> float:
    """The smallest mean paired difference the two-sided paired t-test over ``n`` seeds detects with probability
    ``power`` at level ``alpha``, given the SD ``sd`` of the paired differences (solved exactly on
    :func:`paired_t_power`). nan when n < 2 or sd is not finite."""
    if n < 2 or not math.isfinite(sd):
        return float("nan")
    if sd <= 0:
        return 0.0
    # the power depends on effect / sd only: solve for the standardised effect, then scale (no tolerance that
    # shrinks with a tiny sd, which brentq rejects)
    hi = 1.0
    while paired_t_power(hi, 1.0, n, alpha) < power:
        hi *= 2
    return sd * float(_sps_optimize.brentq(lambda z: paired_t_power(z, 1.0, n, alpha) - power, 0.0, hi, xtol=1e-12))


def seeds_needed(effect: float, sd: float, alpha: float = 0.035, power: float = 0.8, n_max: int = 10_000) -> float:
    """The fewest paired seeds (>= 2) at which the two-sided paired t-test detects a true mean difference ``effect``
    (SD of the differences ``sd``) with probability ``power`` at level ``alpha``; inf when even ``n_max`` seeds do not
    (e.g. a zero effect), nan when the inputs are not finite."""
    if not (math.isfinite(effect) and math.isfinite(sd)):
        return float("nan")
    if effect == 0:
        return float("inf")
    lo, hi = 2, 2
    while paired_t_power(effect, sd, hi, alpha) < power:
        if hi >= n_max:
            return float("inf")
        lo, hi = hi, min(2 * hi, n_max)
    while lo < hi:  # power grows with n: the first n that reaches it
        mid = (lo + hi) // 2
        if paired_t_power(effect, sd, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid + 1
    return float(hi)
