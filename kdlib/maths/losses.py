"""Losses for distillation: REINFORCE with K-step returns, token-level divergences, NLL.

Pure functions, tensors in, a scalar loss out (to minimise); nothing else of the kit is
imported. Conventions: logits are (B, T, V), per-token tensors and masks are (B, T); a mask
is True at the tokens that count. The teacher side is always detached, so gradients flow
to the student only.

* :func:`policy_gradient_loss` -- seed 000 Eq. (8) (REINFORCE, Eq. (4), with ``G^_t``).
* :func:`authors_code_pg_loss` -- the learning signal of the KETCHUP authors' public code
  (spec ``seed001_brim_extras.md`` Sec. 8.2 item 2), for ``rl.compat: authors_code``.
* :func:`kl_divergence`, :func:`js_divergence`, :func:`tvd` -- word-level distillation on
  fixed prefixes with the f-divergences of Wen et al. (2023), "f-divergence minimization for
  sequence-level knowledge distillation" (the divergence-KD baselines of seed 000, Table 1).
* :func:`wen_js_divergence`, :func:`wen_tvd` -- Wen et al.'s step-wise decompositions of the
  sequence-level JS and TVD: one term on teacher prefixes plus one on student prefixes.
* :func:`sequence_nll` -- token-averaged cross-entropy (SeqKD / supervised training).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[:-1] != mask.shape:
        raise ValueError(f"mask must be (B, T) = {tuple(student_logits.shape[:-1])}, got {tuple(mask.shape)}")
    return mask.bool()


def masked_token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
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


def authors_code_pg_loss(logp: Tensor, G: Tensor, action_mask: Tensor, reward_clip: float = 100.0,
                         baseline: Tensor | None = None) -> Tensor:
    """The learning signal of the KETCHUP authors' public code (spec ``seed001_brim_extras.md``
    Sec. 8.2 item 2; not stated in either paper). Used by ``rl.compat: authors_code``.

    Per token, with ``rho_t = pi_theta(a_t | s_t)`` DETACHED (a GOLD-style probability weight,
    Pang & He 2021) and ``c = reward_clip``::

        loss_t = -log pi_theta(a_t | s_t) * clip(rho_t * G^_t, -c, c)
        loss   = sum_{b, t in action_mask} loss_t / (number of True entries of action_mask)

    So the clip acts on ``rho * G^`` (the code's ``denom`` is 1), not on ``G^`` or on the
    per-step reward, and the gradient is ``-(1/N) sum_t clip(rho_t G^_t) grad log pi(a_t|s_t)``:
    a REINFORCE gradient whose returns are down-weighted by the student's own probability.
    ``G^`` should be the kit's returns with ``tail="clamp"`` and ``normalize="mean"`` to match
    the code (Sec. 8.2 items 1 and 4); the paper's clip of ``G^`` is NOT applied here.

    Args:
        logp: (B, T) ``log pi_theta(a_t | s_t)`` of the sampled actions (carries the gradient).
        G: (B, T) returns ``G^_t``; treated as constants.
        action_mask: (B, T) bool, True at the policy's own tokens (not padding, not
            calculator-forced tokens). The denominator counts these.
        reward_clip: ``c > 0`` (paper Table 5: 100; the authors' script default: 50).
        baseline: optional (B, T) or scalar, subtracted from ``rho * G^`` before the clip (the
            code's "mean"/"min-variance" baselines: :func:`kdlib.maths.returns.authors_code_baseline`).

    Returns: scalar loss.
    """
    if logp.shape != G.shape or logp.shape != action_mask.shape:
        raise ValueError(
            f"logp, G and action_mask must have the same (B, T) shape, got {tuple(logp.shape)}, "
            f"{tuple(G.shape)}, {tuple(action_mask.shape)}"
        )
    if not reward_clip > 0:
        raise ValueError(f"reward_clip must be > 0, got {reward_clip}")
    m = action_mask.bool()
    zero = logp.new_zeros(())
    logp_m = torch.where(m, logp, zero)  # (B, T); a padded -inf must not become a NaN
    rho = logp_m.detach().exp()  # (B, T): pi_theta(a_t | s_t), no gradient
    signal = rho * torch.where(m, G.detach().to(logp.dtype), zero)  # (B, T)
    if baseline is not None:
        signal = signal - baseline.detach().to(logp.dtype)
    signal = signal.clamp(-reward_clip, reward_clip)
    return -(signal * logp_m).sum() / m.sum().clamp_min(1).to(logp.dtype)


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
    return masked_token_mean(kl, mask) * temperature**2


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
    kl_pm, kl_qm = js_stepwise_terms(student_logits, teacher_logits, beta)  # (B, T) each
    jsd = beta * kl_pm + (1.0 - beta) * kl_qm  # (B, T)
    return masked_token_mean(jsd, mask)


def tvd(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    """Total variation distance ``0.5 * sum_a |p(a) - q(a)|`` averaged over valid tokens (Wen et al. 2023).

    ``p``: teacher (detached), ``q``: student. Bounded by 1 (disjoint supports).
    Args: student_logits, teacher_logits: (B, T, V); mask: (B, T) bool. Returns: scalar in [0, 1].
    """
    mask = _check_logits(student_logits, teacher_logits, mask)
    return masked_token_mean(tvd_per_token(student_logits, teacher_logits), mask)


def js_stepwise_terms(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5) -> tuple[Tensor, Tensor]:
    """The two KL terms of the generalised JSD at every position, unreduced.

    With ``p = softmax(teacher_logits)`` (detached), ``q = softmax(student_logits)`` and
    ``m = beta * p + (1 - beta) * q`` (formed in log space with ``logsumexp``)::

        kl_pm[b, t] = KL(p || m),    kl_qm[b, t] = KL(q || m)

    Slots impossible under both distributions (``-inf`` logits) carry no mass and a finite
    gradient. Args: student_logits, teacher_logits: (B, T, V); beta in (0, 1).
    Returns: ``(kl_pm, kl_qm)``, each (B, T), >= 0.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
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
    return _kl_per_token(log_p, log_m), _kl_per_token(log_q, log_m)  # (B, T) each


def tvd_per_token(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """``0.5 * sum_a |p(a) - q(a)|`` at every position, unreduced; ``p`` teacher (detached),
    ``q`` student. Args: (B, T, V) each. Returns: (B, T) in [0, 1]."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student and teacher logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    q = F.softmax(_upcast(student_logits), dim=-1)  # (B, T, V)
    p = F.softmax(_upcast(teacher_logits.detach()), dim=-1)  # (B, T, V)
    return 0.5 * (p - q).abs().sum(dim=-1)  # (B, T)


def _prefix_average(per_token: Tensor, mask: Tensor, normalize: str, weights: Tensor | None) -> Tensor:
    """Average a (B, T) per-token term over one set of B prefixes (sequences).

    ``weights`` (B,): sequence weights (e.g. exact probabilities when every prefix is
    enumerated); ``None`` = each sequence 1/B (a Monte-Carlo average of sampled prefixes).
    * ``"tokens"``: ``sum_b w_b sum_t x_bt / sum_b w_b n_b`` (a token mean; Wen et al.'s code);
    * ``"batch"``:  ``sum_b w_b sum_t x_bt`` (a sum over steps, the step-wise decomposition of
      the sequence-level divergence, averaged over sequences).
    Entries where ``mask`` is False count for nothing (NaN-safe). Returns a scalar.
    """
    m = mask.bool()
    B = per_token.shape[0]
    if weights is None:
        w = per_token.new_full((B,), 1.0 / max(B, 1))  # (B,)
    else:
        if weights.shape != (B,):
            raise ValueError(f"weights must be (B,) = ({B},), got {tuple(weights.shape)}")
        w = weights.to(per_token.dtype).detach()  # (B,)
    per_seq = torch.where(m, per_token, per_token.new_zeros(())).sum(dim=-1)  # (B,)
    total = (w * per_seq).sum()
    if normalize == "batch":
        return total
    if normalize == "tokens":
        n_tok = (w * m.sum(dim=-1).to(per_token.dtype)).sum()
        return total / torch.where(n_tok > 0, n_tok, torch.ones_like(n_tok))
    raise ValueError(f"normalize must be 'tokens' or 'batch', got {normalize!r}")


def wen_js_divergence(s_logits_tp: Tensor, t_logits_tp: Tensor, mask_tp: Tensor,
                      s_logits_sp: Tensor, t_logits_sp: Tensor, mask_sp: Tensor, beta: float = 0.5,
                      normalize: str = "tokens", weights_tp: Tensor | None = None,
                      weights_sp: Tensor | None = None) -> Tensor:
    """JS distillation as Wen et al. (2023, ACL) define it: the step-wise decomposition of the
    sequence-level ``JS_beta(P || Q) = beta KL(P || M) + (1 - beta) KL(Q || M)``.

    ``P`` = teacher, ``Q`` = student; at every step the mixture is
    ``m_t = beta p(. | y_<t) + (1 - beta) q(. | y_<t)``, and each KL is decomposed over steps on
    prefixes drawn from ITS OWN left distribution::

        J = beta       * sum_t E_{y_<t ~ P} [ KL(p_t || m_t) ]     (teacher prefixes, "tp")
          + (1 - beta) * sum_t E_{y_<t ~ Q} [ KL(q_t || m_t) ]     (student prefixes, "sp")

    Both halves are computed every call (no coin flip). In the kit the teacher prefixes are the
    cached greedy teacher outputs (as Wen et al.'s code uses teacher-labelled targets) and the
    student prefixes are the student's own samples. The prefixes are constants: no gradient
    flows through their sampling (as in Wen et al.), only through ``q`` at each position.
    Wen et al.'s code weights the student term by beta with ``m = (1-beta) p + beta q``: the
    same objective with beta <-> 1 - beta; at beta = 0.5 they coincide.

    Args:
        s_logits_tp, t_logits_tp: (B1, T1, V) student / teacher logits on the teacher prefixes;
        mask_tp: (B1, T1) bool, valid positions of those prefixes.
        s_logits_sp, t_logits_sp: (B2, T2, V) student / teacher logits on the student prefixes;
        mask_sp: (B2, T2) bool.
        beta: in (0, 1); 0.5 is the symmetric JSD.
        normalize: ``"tokens"`` (default; each half a mean over its valid tokens, as Wen et
            al.'s code) or ``"batch"`` (each half a sum over steps averaged over sequences: the
            objective ``J`` above, estimated without bias).
        weights_tp, weights_sp: optional (B1,) / (B2,) sequence weights replacing the uniform
            1/B of a Monte-Carlo average, e.g. the exact probabilities of enumerated prefixes.

    Returns: scalar, >= 0.
    """
    mask_tp = _check_logits(s_logits_tp, t_logits_tp, mask_tp)
    mask_sp = _check_logits(s_logits_sp, t_logits_sp, mask_sp)
    kl_pm, _ = js_stepwise_terms(s_logits_tp, t_logits_tp, beta)  # (B1, T1): KL(p || m) on P's prefixes
    _, kl_qm = js_stepwise_terms(s_logits_sp, t_logits_sp, beta)  # (B2, T2): KL(q || m) on Q's prefixes
    return (beta * _prefix_average(kl_pm, mask_tp, normalize, weights_tp)
            + (1.0 - beta) * _prefix_average(kl_qm, mask_sp, normalize, weights_sp))


def wen_tvd(s_logits_tp: Tensor, t_logits_tp: Tensor, mask_tp: Tensor,
            s_logits_sp: Tensor, t_logits_sp: Tensor, mask_sp: Tensor, normalize: str = "tokens",
            weights_tp: Tensor | None = None, weights_sp: Tensor | None = None) -> Tensor:
    """TVD distillation as Wen et al. (2023, ACL) define it: the average of the two step-wise
    upper bounds of the sequence-level ``TVD(P, Q) = 0.5 sum_y |P(y) - Q(y)|``::

        TVD(P, Q) <= sum_t E_{y_<t ~ P} [ TVD(p_t, q_t) ]   and   <= sum_t E_{y_<t ~ Q} [ TVD(p_t, q_t) ]
        J = 0.5 * sum_t E_{y_<t ~ P} [ TVD(p_t, q_t) ] + 0.5 * sum_t E_{y_<t ~ Q} [ TVD(p_t, q_t) ]

    with ``TVD(p_t, q_t) = 0.5 sum_a |p(a | y_<t) - q(a | y_<t)|``. Teacher prefixes ("tp") and
    student prefixes ("sp"), normalisation and weights as in :func:`wen_js_divergence`.

    Args: s_logits_tp, t_logits_tp: (B1, T1, V); mask_tp: (B1, T1); s_logits_sp, t_logits_sp:
        (B2, T2, V); mask_sp: (B2, T2); normalize: ``"tokens"`` | ``"batch"``; weights_tp,
        weights_sp: optional (B1,) / (B2,).
    Returns: scalar, >= 0 (<= 1 with ``"tokens"``).
    """
    mask_tp = _check_logits(s_logits_tp, t_logits_tp, mask_tp)
    mask_sp = _check_logits(s_logits_sp, t_logits_sp, mask_sp)
    on_p = _prefix_average(tvd_per_token(s_logits_tp, t_logits_tp), mask_tp, normalize, weights_tp)
    on_q = _prefix_average(tvd_per_token(s_logits_sp, t_logits_sp), mask_sp, normalize, weights_sp)
    return 0.5 * on_p + 0.5 * on_q


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
    return masked_token_mean(nll, mask)
