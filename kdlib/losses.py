"""Losses for distillation: REINFORCE with K-step returns, token-level divergences, NLL.

Pure functions, tensors in, a scalar loss out (to minimise); nothing else of the kit is
imported. Conventions: logits are (B, T, V), per-token tensors and masks are (B, T); a mask
is True at the tokens that count. The teacher side is always detached, so gradients flow
to the student only.

* :func:`policy_gradient_loss` -- seed 000 Eq. (8) (REINFORCE, Eq. (4), with ``G^_t``).
* :func:`kl_divergence`, :func:`js_divergence`, :func:`tvd` -- word-level distillation on
  fixed prefixes with the f-divergences of Wen et al. (2023), "f-divergence minimization for
  sequence-level knowledge distillation" (the divergence-KD baselines of seed 000, Table 1).
* :func:`sequence_nll` -- token-averaged cross-entropy (SeqKD / supervised training).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "policy_gradient_loss",
    "kl_divergence",
    "js_divergence",
    "tvd",
    "sequence_nll",
]


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[:-1] != mask.shape:
        raise ValueError(f"mask must be (B, T) = {tuple(student_logits.shape[:-1])}, got {tuple(mask.shape)}")
    return mask.bool()


def _masked_token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Mean of a (B, T) per-token value over the True entries of ``mask`` (0 if none)."""
    total = torch.where(mask, per_token, per_token.new_zeros(())).sum()
    return total / mask.sum().clamp_min(1).to(per_token.dtype)


def _kl_per_token(log_a: Tensor, log_b: Tensor) -> Tensor:
    """``sum_x a(x) (log a(x) - log b(x))`` over the last dim, with ``0 log 0 = 0``.

    Log-space inputs (B, T, V) -> (B, T). Entries with ``a(x) = 0`` (a ``-inf`` logit, e.g.
    a masked vocabulary slot) contribute exactly 0, with a finite gradient.
    """
    finite = torch.isfinite(log_a)  # (B, T, V)
    log_a = torch.where(finite, log_a, log_a.new_zeros(()))
    return torch.where(finite, log_a.exp() * (log_a - log_b), log_a.new_zeros(())).sum(dim=-1)


def _upcast(x: Tensor) -> Tensor:
    """At least float32 (half/bfloat16 logits are upcast; float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def policy_gradient_loss(logp: Tensor, G: Tensor, action_mask: Tensor, normalize: str = "batch") -> Tensor:
    """REINFORCE loss whose gradient is ``-sum_t G^_t grad log pi(y_t | s_t)`` (seed 000 Eq. (8)).

    ``loss = -(G.detach() * logp * action_mask).sum() / normaliser``

    Args:
        logp: (B, T) ``log pi_theta(y_t | s_t)`` of the sampled actions (carries the gradient).
        G: (B, T) returns ``G^_t`` (K-step, full, clipped or baselined); treated as constants.
        action_mask: (B, T) bool, True at tokens the policy chose. False at padding AND at
            tokens forced by the calculator (``<<a*b=c>>`` results are written, not sampled,
            so they are no policy actions and get no gradient).
        normalize: ``"batch"`` (default) divides by B: a sum over time and a mean over
            sequences, the per-trajectory sum of REINFORCE (Eq. (4)/(8)). ``"tokens"`` divides
            by the number of True entries of ``action_mask`` (a per-token mean).

    Returns: scalar loss.
    """
    if logp.shape != G.shape or logp.shape != action_mask.shape:
        raise ValueError(
            f"logp, G and action_mask must have the same (B, T) shape, got {tuple(logp.shape)}, "
            f"{tuple(G.shape)}, {tuple(action_mask.shape)}"
        )
    m = action_mask.bool()
    # where() on both factors rather than a product with the mask: a padded -inf / NaN in
    # logp or G must turn into neither a NaN loss nor a NaN gradient
    zero = logp.new_zeros(())
    G_m = torch.where(m, G.detach().to(logp.dtype), zero)  # (B, T)
    logp_m = torch.where(m, logp, zero)  # (B, T)
    weighted = G_m * logp_m  # (B, T)
    if normalize == "batch":
        denom = max(logp.shape[0], 1)
    elif normalize == "tokens":
        denom = m.sum().clamp_min(1).to(logp.dtype)
    else:
        raise ValueError(f"normalize must be 'batch' or 'tokens', got {normalize!r}")
    return -weighted.sum() / denom


def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, temperature: float = 1.0) -> Tensor:
    """Word-level KD: ``KL(p || q) = sum_a p(a) (log p(a) - log q(a))`` averaged over valid tokens.

    ``p = softmax(teacher_logits / tau)`` (detached), ``q = softmax(student_logits / tau)``,
    on the same fixed prefixes (Hinton et al. 2015; Wen et al. 2023, forward KL). The loss is
    multiplied by ``tau^2`` (Hinton's convention, so gradient scale does not depend on tau; no
    effect at the default tau = 1).

    Args: student_logits, teacher_logits: (B, T, V); mask: (B, T) bool; temperature: tau > 0.
    Returns: scalar, >= 0.
    """
    mask = _check_logits(student_logits, teacher_logits, mask)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    log_q = F.log_softmax(_upcast(student_logits) / temperature, dim=-1)  # (B, T, V)
    log_p = F.log_softmax(_upcast(teacher_logits.detach()) / temperature, dim=-1)  # (B, T, V)
    kl = _kl_per_token(log_p, log_q)  # (B, T)
    return _masked_token_mean(kl, mask) * temperature**2


def js_divergence(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, beta: float = 0.5) -> Tensor:
    """Generalised Jensen-Shannon divergence, averaged over valid tokens (Wen et al. 2023).

    With ``p`` the teacher and ``q`` the student distribution at each position, and the
    mixture ``m = beta * p + (1 - beta) * q``::

        JSD_beta(p, q) = beta * KL(p || m) + (1 - beta) * KL(q || m)

    (the convention of TRL's ``generalized_jsd_loss``). At beta = 0.5 it is the symmetric
    JSD, bounded by ``log 2``; in general it is bounded by the binary entropy
    ``-beta log beta - (1 - beta) log(1 - beta)``. The mixture is formed in log space with
    ``logsumexp``. ``beta`` must lie strictly inside (0, 1) (at the ends the divergence is 0).

    Args: student_logits, teacher_logits: (B, T, V); mask: (B, T) bool; beta in (0, 1).
    Returns: scalar, >= 0.
    """
    mask = _check_logits(student_logits, teacher_logits, mask)
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    log_q = F.log_softmax(_upcast(student_logits), dim=-1)  # (B, T, V)
    log_p = F.log_softmax(_upcast(teacher_logits.detach()), dim=-1)  # (B, T, V)
    # slots impossible under both (-inf logits) would make logsumexp's gradient NaN; they
    # carry no mass in either KL term, so any finite log m does there
    void = torch.isneginf(log_p) & torch.isneginf(log_q)  # (B, T, V)
    zero = log_q.new_zeros(())
    log_m = torch.logsumexp(
        torch.stack([torch.where(void, zero, log_p) + math.log(beta),
                     torch.where(void, zero, log_q) + math.log(1.0 - beta)]),
        dim=0,
    )  # (B, T, V): log(beta p + (1 - beta) q)
    kl_pm = _kl_per_token(log_p, log_m)  # (B, T)
    kl_qm = _kl_per_token(log_q, log_m)  # (B, T)
    jsd = beta * kl_pm + (1.0 - beta) * kl_qm  # (B, T)
    return _masked_token_mean(jsd, mask)


def tvd(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    """Total variation distance ``0.5 * sum_a |p(a) - q(a)|`` averaged over valid tokens (Wen et al. 2023).

    ``p``: teacher (detached), ``q``: student. Bounded by 1 (disjoint supports).
    Args: student_logits, teacher_logits: (B, T, V); mask: (B, T) bool. Returns: scalar in [0, 1].
    """
    mask = _check_logits(student_logits, teacher_logits, mask)
    q = F.softmax(_upcast(student_logits), dim=-1)  # (B, T, V)
    p = F.softmax(_upcast(teacher_logits.detach()), dim=-1)  # (B, T, V)
    per_token = 0.5 * (p - q).abs().sum(dim=-1)  # (B, T)
    return _masked_token_mean(per_token, mask)


def sequence_nll(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Token-averaged cross-entropy ``-mean_{valid t} log q(y_t | y_<t, x)`` (SeqKD, Kim & Rush 2016).

    Args:
        logits: (B, T, V) student logits; targets: (B, T) long (anything, e.g. -100, where
            ``mask`` is False); mask: (B, T) bool.
    Returns: scalar.
    """
    if logits.shape[:-1] != targets.shape or targets.shape != mask.shape:
        raise ValueError(
            f"expected logits (B, T, V), targets (B, T), mask (B, T); got {tuple(logits.shape)}, "
            f"{tuple(targets.shape)}, {tuple(mask.shape)}"
        )
    mask = mask.bool()
    safe_targets = torch.where(mask, targets.long(), 0)
    nll = F.cross_entropy(
        _upcast(logits).reshape(-1, logits.shape[-1]), safe_targets.reshape(-1), reduction="none"
    ).reshape(targets.shape)  # (B, T)
    return _masked_token_mean(nll, mask)
