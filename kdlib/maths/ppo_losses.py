"""Losses of the clipped policy-optimisation family (PPO, GRPO): clipped policy loss, value loss, k3 KL.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdlib.maths.losses import masked_token_mean

# ========================================================================================
# clipped policy optimisation (PPO, GRPO)
# (seed 001 App. D / spec seed001 Sec. 3; seed 003 Eqs. (4)-(6), (8); seed 004 Eqs. (5), (7))
# ========================================================================================
# Per-token tensors are (N, L) with an ACTION mask (True at the tokens the policy chose;
# False at padding and at calculator-inserted tokens). Nothing stored at masked positions
# (garbage, NaN, inf) reaches a loss, a statistic or a gradient.

AGGREGATIONS = ("token_mean", "sequence_mean", "sequence_sum")



def _check_tokens(**tensors: Tensor) -> Tensor:
    """All tensors must share one (N, L) shape; returns that shape's first mask as bool."""
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"expected tensors of the same (N, L) shape, got {shapes}")
    return tensors["mask"].bool()


def _aggregate(per_token: Tensor, mask: Tensor, aggregation: str) -> Tensor:
    """Reduce an (N, L) per-token loss over the True entries of ``mask`` to a scalar.

    * ``"token_mean"``: sum over all valid tokens / their number (TRL's PPO ``masked_mean``;
      the spec's default for 003 PPO and 004 GRPO, B7.6);
    * ``"sequence_mean"``: per-row token mean, then the mean over the non-empty rows (the
      ``1/G sum_i 1/|o_i| sum_t`` of GRPO, Shao et al. 2024 Eq. (3));
    * ``"sequence_sum"``: sum over each row's tokens, mean over all N rows (the trajectory
      sum of REINFORCE, as ``policy_gradient_loss(normalize="batch")``).
    """
    zero = per_token.new_zeros(())
    x = torch.where(mask, per_token, zero)
    if aggregation == "token_mean":
        return x.sum() / mask.sum().clamp_min(1).to(x.dtype)
    if aggregation == "sequence_mean":
        n_tok = mask.sum(dim=-1).to(x.dtype)  # (N,)
        row = x.sum(dim=-1) / n_tok.clamp_min(1)  # (N,)
        return row.sum() / (n_tok > 0).sum().clamp_min(1).to(x.dtype)
    if aggregation == "sequence_sum":
        return x.sum() / max(x.shape[0], 1)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")


def ppo_policy_loss(
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    aggregation: str = "token_mean",
) -> tuple[Tensor, dict]:
    """PPO clipped surrogate, as a loss (Schulman et al. 2017, Eq. (7); seed 003 Eq. (8) term 1).

    ``rho_t = exp(logp_t - logp_old_t)`` and, per action token,
    ``l_t = max(-A_t rho_t, -A_t clip(rho_t, 1 - eps, 1 + eps))`` (minus the min of the paper's
    objective), reduced by ``aggregation`` (see ``AGGREGATIONS``; default the token mean).
    Where the ratio has left the clip range in the advantage's direction (``A > 0, rho > 1 + eps``
    or ``A < 0, rho < 1 - eps``) the clipped constant is the max, so that token has zero gradient.
    With ``rho = 1`` the loss is ``-mean(A)`` over the mask and the gradient is REINFORCE's.

    Args:
        logp: (N, L) ``log pi_theta(y_t | s_t)`` of the sampled tokens (with gradient).
        logp_old: (N, L) the same under the rollout policy (treated as constants).
        advantages: (N, L) per token, or (N,) per sequence (GRPO outcome supervision,
            broadcast over the row); treated as constants.
        mask: (N, L) bool action mask.
        clip_eps: epsilon > 0 of the clip range.
        aggregation: ``"token_mean"`` | ``"sequence_mean"`` | ``"sequence_sum"``.

    Returns:
        ``(loss, stats)``: a scalar; ``stats`` holds detached 0-dim tensors over the action
        tokens: ``clip_fraction`` (share where the clipped term is the max, i.e. no
        gradient), ``approx_kl`` (mean of ``(rho - 1) - log rho``, the k3 estimator of
        KL(pi_old || pi_theta) on pi_old's samples), ``ratio_mean``.
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)  # (N, L)
    m = _check_tokens(logp=logp, logp_old=logp_old, advantages=advantages, mask=mask)
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    zero = logp.new_zeros(())
    dtype = torch.promote_types(logp.dtype, torch.float32)
    # where() before exp(): a padded -inf / NaN must reach neither the loss nor the gradient
    log_ratio = torch.where(m, logp.to(dtype) - logp_old.detach().to(dtype), zero.to(dtype))  # (N, L)
    ratio = torch.exp(log_ratio)  # (N, L), 1 off the mask
    A = torch.where(m, advantages.detach().to(dtype), zero.to(dtype))  # (N, L)
    pg_unclipped = -A * ratio
    pg_clipped = -A * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    per_token = torch.maximum(pg_unclipped, pg_clipped)  # (N, L)
    loss = _aggregate(per_token, m, aggregation)
    with torch.no_grad():
        n = m.sum().clamp_min(1).to(dtype)
        stats = {
            "clip_fraction": ((pg_clipped > pg_unclipped) & m).sum().to(dtype) / n,
            "approx_kl": torch.where(m, (ratio - 1.0) - log_ratio, zero.to(dtype)).sum() / n,
            "ratio_mean": torch.where(m, ratio, zero.to(dtype)).sum() / n,
        }
    return loss, stats


def k3_kl(logp: Tensor, logp_ref: Tensor, mask: Tensor) -> Tensor:
    """Per sampled token ``pi_ref/pi_theta - log(pi_ref/pi_theta) - 1`` (Schulman's k3; GRPO Eq. (4)).

    An unbiased, non-negative estimate of ``KL(pi_theta || pi_ref)`` on pi_theta's samples
    (Shao et al. 2024, Eq. (4); spec B2 "GRPO core"). Differentiable w.r.t. ``logp``;
    ``logp_ref`` is a constant. Args: logp, logp_ref, mask: (N, L). Returns: (N, L), 0 where
    ``mask`` is False.
    """
    m = _check_tokens(logp=logp, logp_ref=logp_ref, mask=mask)
    zero = logp.new_zeros(())
    d = torch.where(m, logp_ref.detach().to(logp.dtype) - logp, zero)  # (N, L): log(pi_ref / pi)
    return torch.where(m, torch.exp(d) - d - 1.0, zero)


def grpo_policy_loss(
    logp: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    clip_eps: float = 0.2,
    beta: float = 0.0,
    logp_ref: Tensor | None = None,
    aggregation: str = "token_mean",
) -> tuple[Tensor, dict]:
    """GRPO loss: the clipped surrogate plus ``beta`` times the k3 KL to a reference (Shao et al. 2024, Eq. (3)).

    ``loss = ppo_policy_loss(...) + beta * aggregate(k3_kl(logp, logp_ref))`` with the same
    aggregation. Seed 004's default is ``beta = 0`` (spec B7.6: no reference model; the
    teacher is the anchor), where ``logp_ref`` may be None. Shapes as
    :func:`ppo_policy_loss`; ``stats`` gains ``ref_kl`` (token mean of k3) when beta > 0.
    """
    loss, stats = ppo_policy_loss(logp, logp_old, advantages, mask, clip_eps, aggregation)
    if beta != 0.0:
        if logp_ref is None:
            raise ValueError("beta > 0 needs logp_ref")
        kl = k3_kl(logp, logp_ref, mask)  # (N, L)
        m = mask.bool()
        loss = loss + beta * _aggregate(kl, m, aggregation)
        stats["ref_kl"] = masked_token_mean(kl.detach(), m)
    return loss, stats


def ppo_value_loss(
    values: Tensor,
    values_old: Tensor,
    returns: Tensor,
    mask: Tensor,
    clip_eps: float | None = 0.2,
) -> tuple[Tensor, dict]:
    """Clipped value loss ``0.5 * mean max((V - Ret)^2, (clip(V, V_old +- eps) - Ret)^2)``.

    PPO's critic loss as in TRL's PPOTrainer / the spec's A2 ``L_vf`` (and seed 001 spec
    Sec. 3.2 ``L_V``), averaged over the action tokens. ``clip_eps=None`` gives the unclipped
    ``0.5 * mean (V - Ret)^2``.

    Args: values: (N, L) ``V_phi(s_t)`` with gradient; values_old: (N, L) at rollout time;
    returns: (N, L) targets (e.g. from :func:`kdlib.maths.advantages.gae`); mask: (N, L) bool.
    Returns: ``(loss, stats)`` with ``stats["value_clip_fraction"]`` (share of tokens where the
    clipped error is the larger one).
    """
    m = _check_tokens(values=values, values_old=values_old, returns=returns, mask=mask)
    zero = values.new_zeros(())
    V = torch.where(m, values, zero)
    V_old = torch.where(m, values_old.detach().to(values.dtype), zero)
    Ret = torch.where(m, returns.detach().to(values.dtype), zero)
    err = (V - Ret) ** 2  # (N, L)
    if clip_eps is None:
        per_token, clipped_larger = err, torch.zeros_like(m)
    else:
        if clip_eps <= 0:
            raise ValueError(f"clip_eps must be > 0 or None, got {clip_eps}")
        V_clip = V_old + (V - V_old).clamp(-clip_eps, clip_eps)
        err_clip = (V_clip - Ret) ** 2
        per_token = torch.maximum(err, err_clip)
        clipped_larger = err_clip > err
    loss = 0.5 * masked_token_mean(per_token, m)
    with torch.no_grad():
        frac = (clipped_larger & m).sum().to(loss.dtype) / m.sum().clamp_min(1).to(loss.dtype)
    return loss, {"value_clip_fraction": frac}
