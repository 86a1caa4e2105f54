"""Variance (Eq. 20) and bias (Eq. 25) of the K-step return against the true return, per input (seed 000 Figure 2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kdlib.maths.returns import full_returns, kstep_returns, prepare_rows


# ----------------------------------------------------------------------------------------
# Figure 2: empirical variance and bias of the K-step return
# ----------------------------------------------------------------------------------------
@torch.no_grad()
def return_variance_bias(q_sa: Tensor, v: Tensor, mask: Tensor, k: int, tail: str = "algorithm1") -> dict:
    """Empirical variance (Eq. (20)) and bias (Eq. (25)) of ``G^`` for Figure 2 of seed 000.

    Inputs are (M, N, T): M inputs x, N sampled outputs per input (the paper: N = 32),
    T positions. With ``G^ = kstep_returns(..., k, tail)`` and ``G = full_returns(...)``
    (the true return, Eq. (10)), per input ``m``:

    * ``var_seq``  (M,): unbiased variance (ddof = 1) over the samples of ``G^_0``, the
      whole-sequence return (Eq. (20) at t = 0). Empty samples (no True in mask) are left out.
    * ``bias_seq`` (M,): mean over the samples of ``G^_0 - G_0`` (Eq. (25) estimated).
    * ``abs_bias_seq`` (M,): mean over the samples of ``|G^_0 - G_0|``. (When ``v >= q_sa``,
      as for Q-values from :func:`teacher_q`, ``G^ - G >= 0`` and this equals ``bias_seq``.)
    * ``var_pos``  (M,): for each position t, the unbiased variance of ``G^_t`` over the
      samples still alive at t (``t <= T_n``); then the plain mean over the positions where at
      least two samples are alive.
    * ``bias_pos`` (M,): for each t, the mean of ``G^_t - G_t`` over the samples alive at t;
      then the plain mean over positions with at least one alive sample.
    * ``n_samples`` (M,): non-empty samples per input.

    Entries with too few samples are NaN. Returns a dict of float64 tensors.
    """
    if q_sa.dim() != 3:
        raise ValueError(f"expected (M, N, T) inputs, got {tuple(q_sa.shape)}")
    q_sa, v = q_sa.double(), v.double()
    Ghat = kstep_returns(q_sa, v, mask, k, tail=tail)  # (M, N, T)
    G = full_returns(q_sa, v, mask)  # (M, N, T)
    _, _, alive, _ = prepare_rows(q_sa, v, mask)  # alive: (M, N, T)
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    a = alive.double()
    diff = (Ghat - G) * a  # (M, N, T)

    n_t = a.sum(dim=1)  # (M, T): samples alive at t
    mean_t = (Ghat * a).sum(dim=1) / n_t.clamp_min(1)  # (M, T)
    ss_t = (((Ghat - mean_t.unsqueeze(1)) * a) ** 2).sum(dim=1)  # (M, T)
    var_t = torch.where(n_t >= 2, ss_t / (n_t - 1).clamp_min(1), nan)  # (M, T)
    bias_t = torch.where(n_t >= 1, diff.sum(dim=1) / n_t.clamp_min(1), nan)  # (M, T)

    def _mean_over_t(x_t, ok):  # plain mean over positions with ok, NaN if none
        cnt = ok.sum(dim=-1)
        s = torch.where(ok, x_t, 0.0).sum(dim=-1)
        return torch.where(cnt > 0, s / cnt.clamp_min(1), nan)

    abs_diff0 = diff[..., 0].abs().sum(dim=1) / n_t[..., 0].clamp_min(1)  # (M,)
    return {
        "var_seq": var_t[..., 0],
        "bias_seq": bias_t[..., 0],
        "abs_bias_seq": torch.where(n_t[..., 0] >= 1, abs_diff0, nan),
        "var_pos": _mean_over_t(var_t, n_t >= 2),
        "bias_pos": _mean_over_t(bias_t, n_t >= 1),
        "n_samples": n_t[..., 0],
    }


def summarize_variance_bias(result: dict) -> dict:
    """Average :func:`return_variance_bias`'s per-input values over the inputs (NaNs ignored).

    Returns ``{name: float}`` for each (M,) entry, plus ``"<name>_sem"`` (standard error of
    that mean over inputs, NaN with fewer than two inputs) and ``"n_inputs"``.
    """
    out: dict = {}
    n_inputs = None
    for name, x in result.items():
        if name == "n_samples":
            continue
        x = torch.as_tensor(x, dtype=torch.float64).flatten()
        x = x[~torch.isnan(x)]
        n = x.numel()
        n_inputs = n if n_inputs is None else max(n_inputs, n)
        out[name] = float(x.mean()) if n else float("nan")
        out[f"{name}_sem"] = float(x.std(correction=1) / math.sqrt(n)) if n >= 2 else float("nan")
    out["n_inputs"] = int(n_inputs or 0)
    return out
