"""Advantages for clipped policy optimisation (seed 001 App. D; seed 003 Sec. 3.4; seed 004): GAE, whitening, group-relative and MiniLLM advantages.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdlib.maths.returns import reverse_cumsum

# ========================================================================================
# clipped policy optimisation: GAE, whitening, group-relative advantages
# (seed 001 App. D / spec seed001 Sec. 3; seed 003 Sec. 3.4 / spec A2; seed 004 / spec B2)
# ========================================================================================
# Conventions of this section (they differ from the K-step returns above on purpose):
# ``mask`` is the ACTION mask, True at the tokens the policy chose. A False entry inside a
# row is not a step of the trajectory at all (a calculator-inserted token is an environment
# transition, not an action): the trajectory is compressed to its action positions, and
# whatever is stored at the other positions (rewards, values, log-probs; garbage, NaN, inf
# included) is never read. Every per-token result is 0 at positions where ``mask`` is False.


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"expected tensors of the same (N, L) shape, got {shapes}")


def _float_dtype(*tensors: Tensor) -> torch.dtype:
    """At least float32 (float64 stays float64)."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def _check_group(n: int, group_size) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    if n % group_size != 0:
        raise ValueError(f"the number of samples ({n}) is not a multiple of group_size={group_size}")
    return group_size


def _last_action(mask: Tensor) -> Tensor:
    """(N, L) bool: True at each row's last True position (none for an empty row)."""
    L = mask.shape[-1]
    t_idx = torch.arange(L, device=mask.device)
    last = torch.where(mask, t_idx, -1).amax(dim=-1, keepdim=True)  # (N, 1)
    return t_idx == last


@torch.no_grad()
def terminal_rewards(score: Tensor, mask: Tensor) -> Tensor:
    """A sequence-level reward placed on each row's LAST ACTION: (N,) -> (N, L), 0 elsewhere.

    The outcome reward of an RLHF-style PPO (seed 003 Eq. (7)'s shaped score, spec A2
    ``1[t = last action of row] * R~``). Rows without actions get nothing.
    Args: score: (N,); mask: (N, L) bool action mask. Returns: (N, L) detached.
    """
    if mask.dim() != 2 or score.shape != mask.shape[:1]:
        raise ValueError(f"expected score (N,) and mask (N, L), got {tuple(score.shape)}, {tuple(mask.shape)}")
    m = mask.bool()
    s = score.detach().to(_float_dtype(score))
    return torch.where(_last_action(m), s.unsqueeze(-1), s.new_zeros(()))


@torch.no_grad()
def kl_penalised_rewards(score: Tensor, logp: Tensor, logp_ref: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Per-token PPO rewards ``r_t = -beta (logp_t - logp_ref_t) + 1[t = last action] score`` (spec A2).

    The k1 KL penalty against a frozen reference on the sampled tokens, TRL PPOTrainer's
    default (seed 003: beta = 0.2, the "KL penalty coefficient"; [choice A7.11] against the
    frozen S_warmup, not pi_old as Eq. (8) writes). Feed the result to :func:`gae`.
    Args: score: (N,); logp, logp_ref: (N, L) rollout-policy and reference log-probs of the
    sampled tokens; mask: (N, L) bool action mask. Returns: (N, L) detached, 0 off the mask.
    """
    _check_same_shape(logp=logp, logp_ref=logp_ref, mask=mask)
    m = mask.bool()
    dtype = _float_dtype(logp, logp_ref, score)
    zero = torch.zeros((), dtype=dtype, device=logp.device)
    kl = torch.where(m, logp.detach().to(dtype) - logp_ref.detach().to(dtype), zero)
    return torch.where(m, -beta * kl, zero) + terminal_rewards(score.to(dtype), m)


@torch.no_grad()
def fold_to_actions(rewards: Tensor, action_mask: Tensor, mask: Tensor) -> Tensor:
    """Move the rewards of non-action positions (calculator-inserted tokens: environment
    transitions, not the policy's choices) onto the action that caused them: the nearest action
    position at or before them. (N, L) -> (N, L), 0 off the action positions; every row's sum
    over ``mask`` is kept. Used before :func:`gae`, which reads rewards at action positions only.
    Rewards before a row's first action (none in the kit: the first token is always sampled) go to
    that first action."""
    if rewards.shape != action_mask.shape or rewards.shape != mask.shape:
        raise ValueError(f"rewards, action_mask and mask must have the same (N, L) shape, got {tuple(rewards.shape)}, "
                         f"{tuple(action_mask.shape)}, {tuple(mask.shape)}")
    N, L = rewards.shape
    act, m = action_mask.bool() & mask.bool(), mask.bool()
    pos = torch.arange(L, device=rewards.device).expand(N, L)
    last = torch.where(act, pos, -1).cummax(dim=1).values  # (N, L): latest action at or before t
    first = torch.where(act, pos, L).amin(dim=1, keepdim=True).clamp(max=L - 1)  # (N, 1)
    target = torch.where(last >= 0, last, first)  # (N, L)
    r = torch.where(m, rewards, rewards.new_zeros(()))
    out = torch.zeros_like(r).scatter_add_(1, target, r)
    return torch.where(act, out, out.new_zeros(()))


def gae(
    rewards: Tensor,
    values: Tensor,
    mask: Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
    next_value: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2015b, "GAE", Eqs. (16)-(18)).

    Used by PPO with a critic: LLMR + PPO of seed 001 App. D (spec seed001 Sec. 3.2) and the
    RM-shaped PPO of seed 003 Sec. 3.4 (spec A2, Step 9). Per row, over its ACTION positions
    ``t_0 < t_1 < ... < t_{n-1}`` (the True entries of ``mask``)::

        delta_{t_j} = r_{t_j} + gamma * V(t_{j+1}) - V(t_j),   V(t_n) := next_value (default 0)
        A_{t_j}     = delta_{t_j} + gamma * lam * A_{t_{j+1}},  A_{t_n} := 0
        Ret_{t_j}   = A_{t_j} + V(t_j)                          (the value target)

    **Holes are skipped, not zero-filled**: a False entry inside a row (a calculator-inserted
    token, spec A2 "compress the trajectory to action positions before GAE") is not a step, so
    the recursion links consecutive *action* positions and one discount ``gamma`` spans the
    gap. Its reward and value are never read, so a reward placed on a non-action position is
    ignored: put a transition's reward on the action that caused it. The row's end is its last
    action; ``next_value`` is the value after it (0 for a terminated episode; the critic's
    value of the truncated state to bootstrap a time-limit cut). With ``lam = gamma = 1``,
    ``A = reward-to-go - V``; with ``lam = 0``, ``A = delta`` (the one-step TD error of
    seed 001 Fig. 3a).

    A reverse loop over L with vectorised row updates (no loop over rows), in at least float32.

    Args:
        rewards: (N, L) per-token rewards r_t (e.g. ``-beta * kl_t`` plus the sequence reward
            at the last action, spec A2).
        values: (N, L) critic values ``V(s_t)`` of the rollout policy.
        mask: (N, L) bool action mask.
        gamma: discount in [0, 1]; lam: GAE lambda in [0, 1].
        next_value: optional (N,) value after each row's last action (default 0).

    Returns:
        ``(advantages, returns)``, both (N, L), detached, 0 where ``mask`` is False.
    """
    _check_same_shape(rewards=rewards, values=values, mask=mask)
    if rewards.dim() < 1:
        raise ValueError("rewards must have a time dimension (..., L)")
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    shape, L = rewards.shape, rewards.shape[-1]
    dtype = _float_dtype(rewards, values)
    m = mask.bool().reshape(-1, L)  # (N, L)
    zero = torch.zeros((), dtype=dtype, device=rewards.device)
    r = torch.where(m, rewards.detach().reshape(-1, L).to(dtype), zero)  # (N, L); garbage -> 0
    V = torch.where(m, values.detach().reshape(-1, L).to(dtype), zero)  # (N, L)
    N = m.shape[0]
    if next_value is None:
        v_next = torch.zeros(N, dtype=dtype, device=rewards.device)  # (N,)
    else:
        if next_value.numel() != N:
            raise ValueError(f"next_value must hold one value per row ({N}), got {tuple(next_value.shape)}")
        v_next = next_value.detach().reshape(N).to(dtype)
    a_next = torch.zeros(N, dtype=dtype, device=rewards.device)  # (N,): A at the next action
    adv = torch.zeros((N, L), dtype=dtype, device=rewards.device)
    for t in range(L - 1, -1, -1):
        m_t = m[:, t]  # (N,)
        delta = r[:, t] + gamma * v_next - V[:, t]  # (N,)
        a_t = delta + (gamma * lam) * a_next  # (N,)
        adv[:, t] = torch.where(m_t, a_t, zero)
        # a hole leaves the carries alone: the next step back links to the next action
        v_next = torch.where(m_t, V[:, t], v_next)
        a_next = torch.where(m_t, a_t, a_next)
    ret = torch.where(m, adv + V, zero)  # (N, L)
    return adv.reshape(shape), ret.reshape(shape)


def _masked_mean_var(x: Tensor, mask: Tensor, unbiased: bool) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``x[mask]`` over the whole tensor; var = 0 below two entries."""
    zero = x.new_zeros(())
    n = mask.sum().to(x.dtype)
    mean = torch.where(mask, x, zero).sum() / n.clamp_min(1)
    ss = torch.where(mask, (x - mean) ** 2, zero).sum()
    denom = (n - 1.0) if unbiased else n
    var = torch.where(n >= 2, ss / denom.clamp_min(1), zero)
    return mean, var


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True, eps: float = 1e-8, unbiased: bool = True) -> Tensor:
    """Masked whitening ``(x - mu) / sqrt(var + eps)`` over ALL True entries of ``mask``.

    The advantage normalisation of PPO (spec A2 "Â whitened over valid tokens"), with TRL's
    ``masked_whiten`` semantics: ``mu``/``var`` are the mean and variance of ``x[mask]`` (the
    variance unbiased, ``n / (n - 1)``, as TRL's ``masked_var``; ``unbiased=False`` for the
    population variance); with ``shift_mean=False`` the mean is added back (unit spread,
    original location). Fewer than two valid entries: variance 0.

    Args: x: (N, L) (any shape); mask: same shape, bool. Returns: x's shape, 0 where ``mask``
    is False (garbage there never leaks into the statistics).
    """
    _check_same_shape(x=x, mask=mask)
    m = mask.bool()
    dtype = _float_dtype(x)
    zero = torch.zeros((), dtype=dtype, device=x.device)
    xs = torch.where(m, x.to(dtype), zero)
    mean, var = _masked_mean_var(xs, m, unbiased)
    out = (xs - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, zero)


def _group_normalise(x: Tensor, valid: Tensor, eps: float, scale: bool, unbiased: bool) -> Tensor:
    """``(x - mean_g) / (std_g + eps)`` per group, the group being dim 1 of (B, G*...) rows.

    ``x``, ``valid``: (B, M) with M entries per group (only valid ones count). A group whose
    valid entries are all equal (or that has fewer than two) gets exactly 0, not a rounding
    residue divided by eps. Returns (B, M), 0 at invalid entries.
    """
    zero = x.new_zeros(())
    x = torch.where(valid, x, zero)
    n = valid.sum(dim=1, keepdim=True).to(x.dtype)  # (B, 1)
    mean = x.sum(dim=1, keepdim=True) / n.clamp_min(1)  # (B, 1)
    centred = torch.where(valid, x - mean, zero)  # (B, M)
    if scale:
        ss = (centred**2).sum(dim=1, keepdim=True)  # (B, 1)
        denom = (n - 1.0) if unbiased else n
        std = torch.where(n >= 2, (ss / denom.clamp_min(1)).sqrt(), zero)  # (B, 1)
        centred = centred / (std + eps)
    big = torch.finfo(x.dtype).max
    constant = torch.where(valid, x, -big).amax(1, keepdim=True) == torch.where(valid, x, big).amin(1, keepdim=True)
    return torch.where(valid & ~constant, centred, zero)


def grpo_advantages(
    rewards: Tensor, group_size: int, eps: float = 1e-4, scale: bool = True, unbiased: bool = True
) -> Tensor:
    """GRPO outcome-supervision advantages (Shao et al. 2024, DeepSeekMath Sec. 4.1.2).

    For each group of ``G = group_size`` CONSECUTIVE samples (the G responses to one prompt;
    rows ``[k G, (k+1) G)``): ``A_i = (r_i - mean_g r) / (std_g r + eps)`` (seed 004 spec B2,
    ``eps = 1e-4``); ``scale=False`` gives ``r_i - mean_g r`` (Dr. GRPO). Every token of
    sample i then gets ``A_i`` (broadcast it as ``A[:, None]``).

    [choice] ``std_g`` is the UNBIASED sample std (``n - 1``) by default, as TRL's
    ``GRPOTrainer`` (``rewards.view(-1, G).std(dim=1)``, torch's default correction) and
    verl. The spec's worked numbers (B2: a mixed group {1, 1, 0, 0, -20.2, ...} ->
    {1.05, ..., -1.00}; KL 0.4-1.2 -> -1.75 ... +1.45) were computed with the population
    std: pass ``unbiased=False`` to reproduce them; the unbiased values are those times
    ``sqrt((G - 1) / G)`` (0.935 at G = 8), up to eps. A group of identical rewards (or
    G = 1) gets exactly 0.

    Args: rewards: (N,) with N a multiple of G. Returns: (N,) detached, at least float32.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be (N,), got {tuple(rewards.shape)}")
    G = _check_group(rewards.shape[0], group_size)
    r = rewards.detach().to(_float_dtype(rewards)).reshape(-1, G)  # (B, G)
    valid = torch.ones_like(r, dtype=torch.bool)
    return _group_normalise(r, valid, eps, scale, unbiased).reshape(-1)


def grpo_process_advantages(
    token_rewards: Tensor, mask: Tensor, group_size: int, eps: float = 1e-4, unbiased: bool = True
) -> Tensor:
    """GRPO process-supervision advantages at token granularity (Shao et al. 2024, Sec. 4.1.3).

    Seed 004 spec B2 "token granularity": every action token is a step. Per group of G
    consecutive rows, ``r~ = (r - mean) / (std + eps)`` with mean/std over ALL action tokens
    of the group's G rows (std unbiased by default, as :func:`grpo_advantages`), then
    ``A_t = sum_{u >= t, u an action} r~_u`` (gamma = 1). Non-action positions are skipped
    (their rewards never read) and get 0. A group whose token rewards are all equal gets 0.

    Args: token_rewards: (N, L); mask: (N, L) bool action mask; N a multiple of G.
    Returns: (N, L) detached, 0 where ``mask`` is False.
    """
    _check_same_shape(token_rewards=token_rewards, mask=mask)
    if token_rewards.dim() != 2:
        raise ValueError(f"token_rewards must be (N, L), got {tuple(token_rewards.shape)}")
    N, L = token_rewards.shape
    G = _check_group(N, group_size)
    m = mask.bool()
    r = token_rewards.detach().to(_float_dtype(token_rewards))
    r_tilde = _group_normalise(r.reshape(-1, G * L), m.reshape(-1, G * L), eps, True, unbiased).reshape(N, L)
    adv = reverse_cumsum(r_tilde)  # (N, L); r~ = 0 off the mask, so holes are skipped
    return torch.where(m, adv, adv.new_zeros(()))


def future_mean(g: Tensor, mask: Tensor) -> Tensor:
    """Length-normalised future return ``mean_{u > t} g_u`` over action positions (MiniLLM).

    Gu et al. (2024), MiniLLM Eq. (6)-(7): ``R^Norm_{t+1} = 1/(T - t - 1) sum_{t' > t} r_t'``.
    Only action positions ``u`` (True in ``mask``) strictly after ``t`` count; where none
    remain (the row's last action) the mean is 0. Args: g, mask: (N, L). Returns: (N, L),
    0 where ``mask`` is False.
    """
    _check_same_shape(g=g, mask=mask)
    m = mask.bool()
    zero = torch.zeros((), dtype=_float_dtype(g), device=g.device)
    gm = torch.where(m, g.detach().to(zero.dtype), zero)
    s_incl = reverse_cumsum(gm)  # sum_{u >= t}
    n_incl = reverse_cumsum(m.to(zero.dtype))
    s_excl = s_incl - gm  # sum_{u > t}
    n_excl = n_incl - m.to(zero.dtype)
    out = torch.where(n_excl > 0, s_excl / n_excl.clamp_min(1), zero)
    return torch.where(m, out, zero)


def minillm_advantages(
    logp_teacher: Tensor,
    logp_student: Tensor,
    mask: Tensor,
    group_size: int,
    eps: float = 1e-4,
    unbiased: bool = True,
) -> Tensor:
    """Mini-LLM advantages on the GRPO loop (seed 004 spec B2 "Mini-LLM", a [choice] of the spec).

    ``g_u = log mu(y_u | s_u) - log pi(y_u | s_u)`` (detached sampled log-ratio, minus the
    sampled reverse KL), ``R_long_{i,t} = mean_{u > t} g_u`` (MiniLLM's length-normalised
    long-term return, :func:`future_mean`), normalised with the group's whole-sequence
    return ``R_long_{.,0}`` (taken at each row's FIRST action position)::

        A_{i,t} = (R_long_{i,t} - mean_g R_long_{.,0}) / (std_g R_long_{.,0} + eps)

    (std unbiased by default, as :func:`grpo_advantages`). The single-step part of MiniLLM is
    a separate loss term (the masked mean of the full-vocabulary KL with gradient). Only
    action positions count; rows with no action contribute ``R_long_0 = 0`` to their group.

    Args: logp_teacher, logp_student: (N, L) log-probs of the sampled tokens; mask: (N, L)
    bool action mask; N a multiple of G. Returns: (N, L) detached, 0 where ``mask`` is False.
    """
    _check_same_shape(logp_teacher=logp_teacher, logp_student=logp_student, mask=mask)
    if mask.dim() != 2:
        raise ValueError(f"expected (N, L) tensors, got {tuple(mask.shape)}")
    N, L = mask.shape
    G = _check_group(N, group_size)
    m = mask.bool()
    dtype = _float_dtype(logp_teacher, logp_student)
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    g = torch.where(m, logp_teacher.detach().to(dtype) - logp_student.detach().to(dtype), zero)
    r_long = future_mean(g, m)  # (N, L)
    first = m.to(torch.int8).argmax(dim=1)  # (N,): first action position (0 for an empty row)
    r0 = r_long.gather(1, first.unsqueeze(1)).squeeze(1).reshape(-1, G)  # (B, G)
    mean = r0.mean(dim=1, keepdim=True)  # (B, 1)
    if G >= 2:
        std = r0.std(dim=1, keepdim=True, correction=1 if unbiased else 0)  # (B, 1)
    else:
        std = torch.zeros_like(mean)
    adv = (r_long.reshape(-1, G, L) - mean.unsqueeze(-1)) / (std.unsqueeze(-1) + eps)  # (B, G, L)
    return torch.where(m, adv.reshape(N, L), zero)


def explained_variance(values: Tensor, targets: Tensor, mask: Tensor) -> float:
    """How much of the value targets' variance a critic explains, over the positions of ``mask``:

        EV = 1 - Var(targets - values) / Var(targets)      (values, targets, mask: (N, L))

    1: a perfect critic; 0: no better than a constant at the targets' mean (e.g. V = 0 when the targets are centred);
    below 0: worse than that. nan when the targets have no variance or no position is valid."""
    m = mask.bool()
    if int(m.sum()) < 2:
        return float("nan")
    g = targets[m].double()
    var_g = float(g.var(unbiased=False))
    if var_g <= 0:
        return float("nan")
    return 1.0 - float((g - values[m].double()).var(unbiased=False)) / var_g


def position_bucket_mean_sq(delta: Tensor, mask: Tensor, n_buckets: int = 3) -> list[float]:
    """Mean square of ``delta`` (e.g. one-step TD errors) per relative position bucket of each sequence:

        bucket(i, t) = floor(n_buckets * rank(i, t) / n_i),   rank = index of position t among row i's valid ones,

    with n_i the number of valid positions of row i (``mask``: (N, L); ``delta``: (N, L)), so bucket 0 holds each
    sequence's first third of actions (``n_buckets`` = 3: early / middle / late), whatever its length. Returns one
    mean of ``delta ** 2`` per bucket over all rows (nan for an empty bucket)."""
    m = mask.bool()
    rank = torch.cumsum(m.to(torch.long), dim=1) - 1  # (N, L): index among the valid positions
    n = m.sum(dim=1, keepdim=True).clamp(min=1)  # (N, 1)
    bucket = torch.div(rank * n_buckets, n, rounding_mode="floor").clamp(max=n_buckets - 1)  # (N, L)
    sq = delta.detach().double() ** 2
    out = []
    for k in range(n_buckets):
        sel = m & (bucket == k)
        out.append(float(sq[sel].mean()) if bool(sel.any()) else float("nan"))
    return out
