"""Today's on-policy distillation objectives, as small pure functions (the maths layer of GKD, on-policy reverse KL and
DistiLLM; their training methods plug into the existing families).

Conventions: logits are (N, L, V) (student with gradient, teacher detached here), per-token tensors and masks (N, L);
``mask`` is True at the positions that count (the student's own tokens); every result is 0 (per token) or ignores
(means) the other positions, whatever is stored there. Means are over valid positions (tokens) of the batch.

* :func:`generalized_jsd` -- GKD (Agarwal et al., ICLR 2024, Eq. 3; TRL ``GKDTrainer.generalized_jsd_loss``).
* :func:`skew_kl`, :func:`skew_rkl` -- DistiLLM's alpha-skew KL and reverse KL (Ko et al., ICML 2024, Eqs. 4-5).
* :func:`opd_advantages` -- on-policy reverse KL (tinker-cookbook's on-policy distillation, Qwen3, NeMo RL MOPD):
  per-token rewards ``log pi_T(y_t) - log pi_S(y_t)``, optionally discounted over the future by distance.

The full-vocabulary divergences are computed over the valid rows only, ``chunk_size`` rows at a time, each chunk under
activation checkpointing: its (rows, V) temporaries are recomputed in the backward instead of being kept, so memory
grows with the chunk, not with N x L x V (as :func:`kdlib.maths.full_vocab.full_vocab_kl`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

_CHUNK_ROWS_ELEMENTS = 1 << 24  # about 2^24 logits per chunk when chunk_size is None


def _rows(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    if student_logits.dim() != 3 or teacher_logits.shape != student_logits.shape or student_logits.shape[:-1] != mask.shape:
        raise ValueError(f"expected student and teacher logits (N, L, V) over a mask (N, L); got "
                         f"{tuple(student_logits.shape)}, {tuple(teacher_logits.shape)}, {tuple(mask.shape)}")
    m = mask.bool()
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    return student_logits[m].to(dtype), teacher_logits.detach()[m].to(dtype)  # (n_valid, V) each


def _chunked_mean(per_row, s: Tensor, t: Tensor, chunk_size: int | None) -> Tensor:
    """Mean over rows of ``per_row(s_chunk, t_chunk) -> (rows,)``, chunk by chunk under checkpointing."""
    n, V = s.shape
    if n == 0:
        return s.sum() * 0.0  # no valid position: 0, still attached to the graph
    rows = chunk_size or max(1, _CHUNK_ROWS_ELEMENTS // max(V, 1))
    total = s.new_zeros(())
    for i in range(0, n, rows):
        sc, tc = s[i:i + rows], t[i:i + rows]
        part = checkpoint(per_row, sc, tc, use_reentrant=False) if sc.requires_grad else per_row(sc, tc)
        total = total + part.sum()
    return total / n


def _kl_rows(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a || b) per row from log-probabilities (rows, V) -> (rows,); 0 log 0 = 0."""
    return (log_a.exp() * (log_a - log_b)).nan_to_num(nan=0.0).sum(-1)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float, mask: Tensor,
                    chunk_size: int | None = None) -> Tensor:
    """GKD's generalised Jensen-Shannon divergence per token, mean over valid positions:

        JSD(beta) = beta KL(p_T || m) + (1 - beta) KL(p_S || m),   m = beta p_T + (1 - beta) p_S,

    with the endpoints as TRL defines them: beta = 0 is the forward KL(p_T || p_S), beta = 1 the reverse
    KL(p_S || p_T) (the mixture form would give 0 there). Full vocabulary. student_logits, teacher_logits: (N, L, V);
    mask: (N, L). Returns a scalar (differentiable w.r.t. the student)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    s, t = _rows(student_logits, teacher_logits, mask)

    def per_row(sc: Tensor, tc: Tensor) -> Tensor:
        log_s, log_t = F.log_softmax(sc, -1), F.log_softmax(tc, -1)
        if beta == 0.0:
            return _kl_rows(log_t, log_s)
        if beta == 1.0:
            return _kl_rows(log_s, log_t)
        log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1 - beta)]), dim=0)
        return beta * _kl_rows(log_t, log_m) + (1 - beta) * _kl_rows(log_s, log_m)

    return _chunked_mean(per_row, s, t, chunk_size)


def _skew(student_logits: Tensor, teacher_logits: Tensor, alpha: float, mask: Tensor, chunk_size: int | None,
          reverse: bool) -> Tensor:
    """KL(p || alpha p + (1 - alpha) q) per token, mean over valid positions; p = p_T, q = p_S, or swapped (reverse)."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
    s, t = _rows(student_logits, teacher_logits, mask)

    def per_row(sc: Tensor, tc: Tensor) -> Tensor:
        log_p, log_q = F.log_softmax(tc, -1), F.log_softmax(sc, -1)
        if reverse:
            log_p, log_q = log_q, log_p
        if alpha == 0.0:
            return _kl_rows(log_p, log_q)
        log_mix = torch.logsumexp(torch.stack([log_p + math.log(alpha), log_q + math.log(1 - alpha)]), dim=0)
        return _kl_rows(log_p, log_mix)

    return _chunked_mean(per_row, s, t, chunk_size)


def skew_kl(student_logits: Tensor, teacher_logits: Tensor, alpha: float, mask: Tensor,
            chunk_size: int | None = None) -> Tensor:
    """DistiLLM's alpha-skew KL per token, mean over valid positions: ``KL(p_T || alpha p_T + (1 - alpha) p_S)``
    (alpha = 0 is the forward KL; the paper uses alpha = 0.1). (N, L, V) logits, (N, L) mask -> scalar."""
    return _skew(student_logits, teacher_logits, alpha, mask, chunk_size, reverse=False)


def skew_rkl(student_logits: Tensor, teacher_logits: Tensor, alpha: float, mask: Tensor,
             chunk_size: int | None = None) -> Tensor:
    """DistiLLM's alpha-skew reverse KL per token, mean over valid positions:
    ``KL(p_S || alpha p_S + (1 - alpha) p_T)`` (alpha = 0 is the reverse KL). (N, L, V) logits -> scalar."""
    return _skew(student_logits, teacher_logits, alpha, mask, chunk_size, reverse=True)


def opd_advantages(logp_teacher: Tensor, logp_student: Tensor, mask: Tensor, gamma: float = 0.0) -> Tensor:
    """On-policy reverse-KL advantages on student samples:

        A_t = sum_{i >= t, valid} gamma^(d(t, i)) (log pi_T(y_i | s_i) - log pi_S(y_i | s_i)),

    where d(t, i) counts the valid positions from t to i (the discount is by distance from t, never by absolute
    position; positions outside ``mask`` are not steps and are skipped). gamma = 0 is the per-token log ratio (the
    default of today's toolkits), gamma = 1 the reward-to-go of the sampled reverse KL. Detached inputs expected
    (advantages carry no gradient). logp_teacher, logp_student, mask: (N, L). Returns (N, L), 0 where mask is False."""
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    if not (logp_teacher.shape == logp_student.shape == mask.shape):
        raise ValueError(f"expected three (N, L) tensors, got {tuple(logp_teacher.shape)}, "
                         f"{tuple(logp_student.shape)}, {tuple(mask.shape)}")
    m = mask.bool()
    dtype = torch.promote_types(logp_teacher.dtype, torch.float32)
    r = torch.where(m, (logp_teacher - logp_student).to(dtype), torch.zeros((), dtype=dtype))  # (N, L)
    if gamma == 0.0:
        return r
    out = torch.zeros_like(r)
    carry = torch.zeros(r.shape[:-1], dtype=dtype, device=r.device)  # (N,)
    for t in range(r.shape[-1] - 1, -1, -1):
        carry = torch.where(m[..., t], r[..., t] + gamma * carry, carry)
        out[..., t] = torch.where(m[..., t], carry, torch.zeros((), dtype=dtype))
    return out
