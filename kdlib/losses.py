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

__all__ = [
    "policy_gradient_loss",
    "authors_code_pg_loss",
    "kl_divergence",
    "js_divergence",
    "tvd",
    "js_stepwise_terms",
    "tvd_per_token",
    "wen_js_divergence",
    "wen_tvd",
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
            code's "mean"/"min-variance" baselines: :func:`kdlib.returns.authors_code_baseline`).

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
    kl_pm, kl_qm = js_stepwise_terms(student_logits, teacher_logits, beta)  # (B, T) each
    jsd = beta * kl_pm + (1.0 - beta) * kl_qm  # (B, T)
    return _masked_token_mean(jsd, mask)


def tvd(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor) -> Tensor:
    """Total variation distance ``0.5 * sum_a |p(a) - q(a)|`` averaged over valid tokens (Wen et al. 2023).

    ``p``: teacher (detached), ``q``: student. Bounded by 1 (disjoint supports).
    Args: student_logits, teacher_logits: (B, T, V); mask: (B, T) bool. Returns: scalar in [0, 1].
    """
    mask = _check_logits(student_logits, teacher_logits, mask)
    return _masked_token_mean(tvd_per_token(student_logits, teacher_logits), mask)


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
    return _masked_token_mean(nll, mask)


# ========================================================================================
# clipped policy optimisation (PPO, GRPO), full-vocabulary KL, reward-model losses
# (seed 001 App. D / spec seed001 Sec. 3; seed 003 Eqs. (4)-(6), (8); seed 004 Eqs. (5), (7))
# ========================================================================================
# Per-token tensors are (N, L) with an ACTION mask (True at the tokens the policy chose;
# False at padding and at calculator-inserted tokens). Nothing stored at masked positions
# (garbage, NaN, inf) reaches a loss, a statistic or a gradient.
__all__ += [
    "AGGREGATIONS",
    "ppo_policy_loss",
    "grpo_policy_loss",
    "ppo_value_loss",
    "k3_kl",
    "token_entropy",
    "entropy_from_logits",
    "full_vocab_kl",
    "rm_cls_loss",
    "rm_pref_loss",
    "rm_loss",
    "rm_pairwise_accuracy",
]

AGGREGATIONS = ("token_mean", "sequence_mean", "sequence_sum")

# Rows of (V,) logits per chunk when chunk_size is None: ~2^24 float32 elements (64 MiB) per
# (chunk, V) temporary, i.e. ~110 positions at a 150k vocabulary, the whole batch at a tiny one.
# A chunk holds about four such temporaries at its peak. Measured on CPU (N, L, V) = (8, 256,
# 32000), forward + backward, growth of peak RSS over the inputs: 1.5 GB for the plain autograd
# formula (six (N, L, V) float32 copies), 0.64 GB with the default chunks (0.25 GB of it the
# gradient itself), 0.29 GB with chunk_size=16.
_CHUNK_ELEMENTS = 1 << 24


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
        stats["ref_kl"] = _masked_token_mean(kl.detach(), m)
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
    returns: (N, L) targets (e.g. from :func:`kdlib.returns.gae`); mask: (N, L) bool.
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
    loss = 0.5 * _masked_token_mean(per_token, m)
    with torch.no_grad():
        frac = (clipped_larger & m).sum().to(loss.dtype) / m.sum().clamp_min(1).to(loss.dtype)
    return loss, {"value_clip_fraction": frac}


# ----------------------------------------------------------------------------------------
# chunked full-vocabulary statistics (entropy, KL) with a hand-written backward
# ----------------------------------------------------------------------------------------
def _rows_per_chunk(chunk_size: int | None, V: int) -> int:
    if chunk_size is None:
        return max(1, _CHUNK_ELEMENTS // max(V, 1))
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an int >= 1 or None, got {chunk_size!r}")
    return chunk_size


def _entropy_chunk(logits: Tensor, teacher_logits: Tensor, b: Tensor, t: Tensor, V: int, dtype, log_floor: float,
                   grad_out: Tensor | None = None):
    """Rows ``logits[b, t, :V]`` (C, V) -> ``H = -sum p log p`` (C,), or with ``grad_out`` (C,) the
    gradient ``grad_out * dH/dz = -grad_out * p (log p + H)`` (C, V).

    In-place where possible: about four (C, V) temporaries at a time. A -inf logit has
    ``p = 0`` and contributes 0 (its ``log p`` is read as 0).
    """
    logp = torch.log_softmax(logits[b, t, :V].to(dtype), dim=-1)  # (C, V)
    p = logp.exp()  # (C, V); exactly 0 where logp = -inf
    logp.masked_fill_(torch.isneginf(logp), 0.0)
    H = -torch.bmm(p.unsqueeze(1), logp.unsqueeze(2)).view(-1)  # (C,)
    if grad_out is None:
        return H
    return logp.add_(H.unsqueeze(-1)).mul_(p).mul_(-grad_out.to(dtype).unsqueeze(-1))  # (C, V)


def _kl_chunk(logits: Tensor, teacher_logits: Tensor, b: Tensor, t: Tensor, V: int, dtype, log_floor: float,
              grad_out: Tensor | None = None):
    """Rows (C, V) -> ``KL(pi || mu) = sum pi (log pi - log mu)`` (C,), or with ``grad_out`` (C,)
    the gradient ``grad_out * pi (log pi - log mu - KL)`` w.r.t. the student logits (C, V).

    ``log mu`` is the teacher's log-softmax over the first V entries, clamped at ``log_floor``
    (so finite); the student's -inf logits have ``pi = 0`` and contribute 0, with gradient 0.
    In-place where possible: about four (C, V) temporaries at a time.
    """
    diff = torch.log_softmax(logits[b, t, :V].to(dtype), dim=-1)  # (C, V): log pi for now
    p = diff.exp()  # (C, V)
    log_mu = torch.log_softmax(teacher_logits[b, t, :V].to(dtype), dim=-1).clamp_min_(log_floor)
    diff.sub_(log_mu)  # log pi - log mu; -inf exactly where pi = 0
    del log_mu
    diff.masked_fill_(torch.isneginf(diff), 0.0)
    kl = torch.bmm(p.unsqueeze(1), diff.unsqueeze(2)).view(-1)  # (C,)
    if grad_out is None:
        return kl
    return diff.sub_(kl.unsqueeze(-1)).mul_(p).mul_(grad_out.to(dtype).unsqueeze(-1))  # (C, V)


_CHUNK_FNS = {"kl": _kl_chunk, "entropy": _entropy_chunk}


class _ChunkedRowStat(torch.autograd.Function):
    """Per-position statistic of the logits' rows at the True entries of ``mask``, chunked.

    Forward keeps only the (N, L) result; backward recomputes each chunk, so at most a few
    (chunk, V) float32 temporaries exist at a time, plus the (N, L, V) gradient autograd needs.
    """

    @staticmethod
    def forward(ctx, logits, teacher_logits, mask, kind, V, rows, log_floor):
        b_idx, t_idx = mask.nonzero(as_tuple=True)  # (M,) each: valid positions
        dtype = torch.promote_types(logits.dtype, torch.float32)
        out = torch.zeros(mask.shape, dtype=dtype, device=logits.device)  # (N, L)
        fn = _CHUNK_FNS[kind]
        for start in range(0, b_idx.numel(), rows):
            b, t = b_idx[start:start + rows], t_idx[start:start + rows]
            out[b, t] = fn(logits, teacher_logits, b, t, V, dtype, log_floor)
        ctx.save_for_backward(logits, teacher_logits, b_idx, t_idx)
        ctx.kind, ctx.V, ctx.rows, ctx.log_floor = kind, V, rows, log_floor
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        logits, teacher_logits, b_idx, t_idx = ctx.saved_tensors
        grad = torch.zeros_like(logits)  # (N, L, V_s) in the logits' dtype
        dtype = torch.promote_types(logits.dtype, torch.float32)
        fn = _CHUNK_FNS[ctx.kind]
        for start in range(0, b_idx.numel(), ctx.rows):
            b, t = b_idx[start:start + ctx.rows], t_idx[start:start + ctx.rows]
            g = fn(logits, teacher_logits, b, t, ctx.V, dtype, ctx.log_floor, grad_out=grad_out[b, t])  # (C, V)
            grad[b, t, :ctx.V] = g.to(grad.dtype)
        return grad, None, None, None, None, None, None


def token_entropy(logits: Tensor, mask: Tensor, chunk_size: int | None = None) -> Tensor:
    """Per-token entropy ``H(pi(.|s_t)) = -sum_a pi log pi`` over the full vocabulary, chunked.

    Args: logits: (N, L, V); mask: (N, L) bool; chunk_size: positions per chunk (None: about
    2^24 logits per chunk). Computed in at least float32, differentiable (the backward
    recomputes each chunk: no (N, L, V) float32 copy is kept). Returns: (N, L), 0 where
    ``mask`` is False.
    """
    if logits.dim() != 3 or logits.shape[:-1] != mask.shape:
        raise ValueError(f"expected logits (N, L, V) and mask (N, L), got {tuple(logits.shape)}, {tuple(mask.shape)}")
    V = logits.shape[-1]
    return _ChunkedRowStat.apply(logits, logits, mask.bool(), "entropy", V, _rows_per_chunk(chunk_size, V), 0.0)


def entropy_from_logits(logits: Tensor, mask: Tensor, chunk_size: int | None = None) -> Tensor:
    """Mean per-token entropy over the True entries of ``mask`` (a PPO diagnostic, spec seed001 Sec. 3.3).

    Shapes as :func:`token_entropy`. Returns a scalar (0 if the mask is empty).
    """
    m = mask.bool()
    return _masked_token_mean(token_entropy(logits, m, chunk_size), m)


def full_vocab_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    floor: float = 1e-8,
    chunk_size: int | None = None,
) -> Tensor:
    """Per-token reverse KL ``KL(pi_theta(.|s_t) || mu(.|s_t)) = sum_a pi log(pi / mu)`` (seed 004 Eq. (7)).

    Exact over the full vocabulary and differentiable w.r.t. the student (the backward of
    Eq. (5)'s term II, ``d/dtheta phi``); the teacher is a constant. Spec B2 / B7.5 [choice]:
    the teacher's log-probabilities are clamped at ``log(floor)`` ("a small probability
    floor"), so the KL stays finite where the teacher gives zero mass (a -inf logit); the
    student's zero-mass tokens contribute 0. Computed in at least float32.

    Memory: the valid positions are processed ``chunk_size`` at a time (None: about 2^24
    logits per chunk, ~110 positions at a 150k vocabulary), and the backward recomputes each
    chunk, so no (N, L, V) float32 copy of either model's log-probs exists; the only full-size
    allocation is the gradient w.r.t. ``student_logits`` that autograd needs anyway.

    Vocabulary mismatch (spec B2 / B7.10, e.g. 151,936 vs 152,064 padding rows): both sides
    are sliced to the shared prefix ``V = min(V_s, V_t)`` and renormalised (log-softmax over
    the slice); the student's extra columns get zero gradient.

    Args:
        student_logits: (N, L, V_s), with gradient; teacher_logits: (N, L, V_t);
        mask: (N, L) bool action mask (calculator-inserted tokens and padding False);
        floor: probability floor in (0, 1); chunk_size: positions per chunk, or None.

    Returns: (N, L) per-token KL, 0 where ``mask`` is False.
    """
    if student_logits.dim() != 3 or teacher_logits.dim() != 3:
        raise ValueError(
            f"expected (N, L, V) logits, got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if student_logits.shape[:-1] != mask.shape or teacher_logits.shape[:-1] != mask.shape:
        raise ValueError(
            f"logits must be (N, L, V) over mask (N, L) = {tuple(mask.shape)}, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if not 0.0 < floor < 1.0:
        raise ValueError(f"floor must lie in (0, 1), got {floor}")
    V = min(student_logits.shape[-1], teacher_logits.shape[-1])
    return _ChunkedRowStat.apply(
        student_logits, teacher_logits.detach(), mask.bool(), "kl", V, _rows_per_chunk(chunk_size, V), math.log(floor)
    )


# ----------------------------------------------------------------------------------------
# reward model of seed 003 (Sec. 3.3, Eqs. (4)-(6)); scores (B, 3) in the order (T+, S+, S-)
# ----------------------------------------------------------------------------------------
def _check_triplet_scores(scores: Tensor) -> Tensor:
    if scores.dim() != 2 or scores.shape[1] != 3:
        raise ValueError(f"scores must be (B, 3) in the order (T+, S+, S-), got {tuple(scores.shape)}")
    return scores


def rm_cls_loss(scores: Tensor) -> Tensor:
    """Seed 003 Eq. (4): ``L_cls = -mean [z log sigma(s) + (1 - z) log(1 - sigma(s))]``, z = [1, 1, 0].

    Binary cross-entropy with logits over all 3B scores of a triplet batch (teacher-positive,
    student-positive: correct; student-negative: wrong), mean reduction. ``scores`` are the
    reward model's raw logits. Args: scores (B, 3). Returns: scalar.
    """
    s = _check_triplet_scores(scores)
    z = torch.tensor([1.0, 1.0, 0.0], dtype=s.dtype, device=s.device).expand_as(s)
    return F.binary_cross_entropy_with_logits(s, z, reduction="mean")


def rm_pref_loss(scores: Tensor) -> Tensor:
    """Seed 003 Eq. (5): ``L_pref = -mean log sigma(s_T - s_S+) - mean log sigma(s_S+ - s_S-)``.

    Two Bradley-Terry terms: teacher-positive over student-positive, student-positive over
    student-negative. Args: scores (B, 3) in the order (T+, S+, S-). Returns: scalar.
    """
    s = _check_triplet_scores(scores)
    s_T, s_Sp, s_Sm = s.unbind(dim=1)
    return -F.logsigmoid(s_T - s_Sp).mean() - F.logsigmoid(s_Sp - s_Sm).mean()


def rm_loss(scores: Tensor, lam: float = 0.5) -> Tensor:
    """Seed 003 Eq. (6): ``L = L_pref + lam * L_cls`` (lam = 0.5, Sec. 4.1).

    All-zero scores give ``2 log 2 + lam log 2`` (2.5 log 2 at lam = 0.5). Args: scores (B, 3)
    in the order (T+, S+, S-). Returns: scalar.
    """
    return rm_pref_loss(scores) + lam * rm_cls_loss(scores)


@torch.no_grad()
def rm_pairwise_accuracy(scores: Tensor) -> dict:
    """Seed 003 Table 3 [choice: the metric implied by the column names]: pairwise ranking accuracy.

    ``pos_neg = mean 1[s_S+ > s_S-]``, ``pos_pos = mean 1[s_T > s_S+]`` (ties count as
    wrong). Args: scores (B, 3) in the order (T+, S+, S-). Returns: dict of floats.
    """
    s = _check_triplet_scores(scores).float()
    return {
        "pos_neg": float((s[:, 1] > s[:, 2]).float().mean()) if len(s) else float("nan"),
        "pos_pos": float((s[:, 0] > s[:, 1]).float().mean()) if len(s) else float("nan"),
    }
