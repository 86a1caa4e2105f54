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


# ----------------------------------------------------------------------------------------
# MiniLLM (Gu et al., ICLR 2024; microsoft/LMOps minillm/): teacher-mixed sampling and the long-term return
# ----------------------------------------------------------------------------------------
def mix_logits(student_logits: Tensor, teacher_logits: Tensor, alpha: float) -> Tensor:
    """Log-probabilities of MiniLLM's teacher-mixed sampling distribution (Sec. 2.2):

        log p~(.|s) = log(alpha p_T(.|s) + (1 - alpha) q(.|s)),

    computed as a logsumexp of the two log-softmaxes (exact where either probability underflows). Any leading shape,
    vocabulary last: (..., V) -> (..., V). ``alpha = 0`` is the student's own distribution."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # float32 at least; float64 stays
    log_s = F.log_softmax(student_logits.to(dtype), -1)
    if alpha == 0.0:
        return log_s
    log_t = F.log_softmax(teacher_logits.to(dtype), -1)
    return torch.logaddexp(log_t + math.log(alpha), log_s + math.log(1 - alpha))


def teacher_mix_weights(logp_student: Tensor, logp_teacher: Tensor, mask: Tensor, alpha: float) -> Tensor:
    """MiniLLM's per-token importance weights of samples drawn from the teacher-mixed distribution:

        w_t = q(y_t | s_t) / (alpha p_T(y_t | s_t) + (1 - alpha) q(y_t | s_t))   (the paper's rho_t; w_t ~ rho_t),

    bounded by ``1 / (1 - alpha)`` (1.25 at the paper's alpha = 0.2), so no clipping is needed. Detached.
    logp_student, logp_teacher, mask: (N, L). Returns (N, L), 0 where ``mask`` is False (1 everywhere valid when
    alpha = 0: on-policy samples)."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1), got {alpha}")
    m = mask.bool()
    dtype = torch.promote_types(logp_student.dtype, torch.float32)
    zero = torch.zeros((), dtype=dtype, device=logp_student.device)
    ls = torch.where(m, logp_student.detach().to(dtype), zero)
    if alpha == 0.0:
        return torch.where(m, torch.ones_like(ls), zero)
    lt = torch.where(m, logp_teacher.detach().to(dtype), zero)
    log_mix = torch.logaddexp(lt + math.log(alpha), ls + math.log(1 - alpha))
    return torch.where(m, (ls - log_mix).exp(), zero)


def minillm_long_term(logp_teacher: Tensor, logp_student: Tensor, mask: Tensor, whiten_batch: bool = True) -> Tensor:
    """MiniLLM's length-normalised long-term return (Eq. 7), the advantage of its policy-gradient part:

        R^Norm_{t+1} = 1 / (T - t - 1) sum_{t' > t} r_t',   r_t = log p_T(y_t | s_t) - log q(y_t | s_t),

    over the valid positions strictly after t (0 at a row's last valid position), then, with ``whiten_batch``
    (LMOps ``_get_advantages_and_returns(use_whitening=True)``), whitened over every valid position of the batch.
    The present token's term is left to the single-step part (its expectation over the vocabulary, the exact
    KL(q || p_T) with gradient). Detached inputs expected. (N, L) each -> (N, L), 0 where ``mask`` is False."""
    from kdlib.maths.advantages import future_mean, whiten

    if not (logp_teacher.shape == logp_student.shape == mask.shape):
        raise ValueError(f"expected three (N, L) tensors, got {tuple(logp_teacher.shape)}, "
                         f"{tuple(logp_student.shape)}, {tuple(mask.shape)}")
    m = mask.bool()
    dtype = torch.promote_types(logp_teacher.dtype, torch.float32)
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    r = torch.where(m, logp_teacher.detach().to(dtype) - logp_student.detach().to(dtype), zero)
    R = future_mean(r, m)
    return whiten(R, m) if whiten_batch else R


# ----------------------------------------------------------------------------------------
# DistiLLM's adaptive off-policy schedule (Ko et al., ICML 2024, Algorithm 1; jongwooko/distillm finetune.py)
# ----------------------------------------------------------------------------------------
FRESH, REPLAY, FIXED = "fresh", "replay", "fixed"


def distillm_source(u: float, phi: float, step: int, total_steps: int, buffer_len: int, capacity: int) -> str:
    """Which outputs one DistiLLM batch trains on, from one uniform draw ``u`` in [0, 1) (the authors' code, its
    default ``replay_ratio: decreasing``): with ``phi`` the current probability of student-generated outputs (SGOs)
    and ``s = phi (1 - (step + 1) / total_steps)`` (the code's 1-based global step),

    * ``u < s``, or ``u < phi`` while the replay buffer holds fewer than ``capacity`` outputs: ``"fresh"`` -- sample
      new outputs from the student, add them to the buffer, train on them;
    * else ``u < phi``: ``"replay"`` -- train on a batch drawn from the buffer (earlier student outputs: off-policy);
    * else ``"fixed"`` -- the fixed outputs."""
    s = phi * (1.0 - (step + 1) / max(1, total_steps))
    if u < s or (u < phi and buffer_len < capacity):
        return FRESH
    if u < phi:
        return REPLAY
    return FIXED


def distillm_threshold(phi: float, ref_loss: float, loss: float, eps: float = 0.1, increment: float = 0.1,
                       ) -> tuple[float, float]:
    """DistiLLM's adaptive SGO probability after a validation: when the validation loss has risen by at least
    ``eps`` over the reference (the loss at the start, then at the last increase), ``phi`` grows by ``increment``
    (capped at 1) and the reference becomes this loss; otherwise both stay. Returns ``(phi, ref_loss)``."""
    if loss >= ref_loss + eps:
        return min(phi + increment, 1.0), loss
    return phi, ref_loss
