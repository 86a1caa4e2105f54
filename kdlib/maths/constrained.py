"""Constrained distillation rewards of seed 004 (a CMDP solved by Sauté-style reward replacement).

"Rethinking Large Language Model Distillation: A Constrained Markov Decision Process
Perspective": maximise a task reward R subject to a budget d on the student->teacher KL
along the student's own trajectory (Eq. (2)); instead of a Lagrangian, the reward is replaced
by ``-(n + phi)`` once the budget is exhausted (Eq. (4)), and the explicit dependence of phi on
theta adds a second gradient term (Eq. (5) term II). Baselines on the same GRPO loop: GRPO
(R), GKD-GRPO (R - lam KL, Eq. (1)), GKD (-KL); Mini-LLM lives in
:func:`kdlib.maths.advantages.minillm_advantages`. Spec: ``specs/seeds003_004_rival_systems.md``
Part B (B1, B2, B7) and C2.

Floor 0: tensors in, tensors out; nothing else of the kit is imported. Shapes: ``N = B * G``
rollouts (G consecutive samples per prompt), ``L`` padded response length. ``kl_tok`` is the
per-token full-vocabulary KL of Eq. (7) (``kdlib.maths.full_vocab.full_vocab_kl``), ``mask`` the ACTION
mask: calculator-inserted tokens are environment transitions, so they add nothing to any KL
sum, budget or loss, and neither does padding (garbage stored there never leaks).

[choice B7.1] the per-state cost is ``C_t = kl_t / L_i`` (``L_i`` = the row's number of action
tokens), so the trajectory's cost ``sum_t C_t`` is the per-token MEAN KL, the quantity the paper
reports and checks against d = 0.35; ``reduction="sum"`` gives the literal Eq. (2) sum.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "REDUCTIONS",
    "CUMSUMS",
    "sequence_kl",
    "budget_used",
    "constrained_reward",
    "constrained_token_rewards",
    "explicit_term_mask",
    "explicit_term_mask_tokens",
    "term_ii_loss",
    "term_ii_token_loss",
    "gkd_grpo_reward",
    "gkd_reward",
    "feasibility_breakdown",
]

REDUCTIONS = ("mean", "sum")
CUMSUMS = ("exclusive", "inclusive")


def _check(kl_tok: Tensor, mask: Tensor, reduction: str = "mean") -> Tensor:
    if kl_tok.dim() != 2 or kl_tok.shape != mask.shape:
        raise ValueError(f"expected kl_tok and mask of one (N, L) shape, got {tuple(kl_tok.shape)}, {tuple(mask.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return mask.bool()


def _cost_cumsum(kl_tok: Tensor, m: Tensor, reduction: str) -> Tensor:
    """``sum_{u <= t, u an action} C_u`` (N, L): the one computation both granularities share.

    ``C_u = kl_u / L_i`` (mean) or ``kl_u`` (sum). The cumsum runs over the raw KL and is
    divided once, so the value at a row's last action is bitwise :func:`sequence_kl`.
    """
    kl = kl_tok if kl_tok.is_floating_point() else kl_tok.float()
    csum = torch.where(m, kl, kl.new_zeros(())).cumsum(dim=-1)  # (N, L)
    if reduction == "mean":
        n_act = m.sum(dim=-1, keepdim=True).to(csum.dtype)  # (N, 1): L_i
        csum = csum / n_act.clamp_min(1)
    return csum


def sequence_kl(kl_tok: Tensor, mask: Tensor, reduction: str = "mean") -> Tensor:
    """Per-sample KL ``KL_i`` = mean (default) or sum of ``kl_t`` over the row's action tokens.

    Seed 004 Eq. (2)'s ``sum_t C(s_t)`` with [choice B7.1] ``C_t = kl_t / L_i`` (mean) or
    ``C_t = kl_t`` (sum). Keeps the gradient of ``kl_tok`` (use it with gradient for Eq. (5)
    term II, detached for rewards and the feasibility check). A row without actions: 0.

    Args: kl_tok: (N, L); mask: (N, L) bool action mask; reduction: "mean" | "sum".
    Returns: (N,).
    """
    m = _check(kl_tok, mask, reduction)
    if m.shape[-1] == 0:
        return kl_tok.new_zeros(m.shape[:-1])
    return _cost_cumsum(kl_tok, m, reduction)[..., -1]


@torch.no_grad()
def budget_used(kl_tok: Tensor, mask: Tensor, reduction: str = "mean", cumsum: str = "exclusive") -> Tensor:
    """Budget spent before step t: ``sum_{u < t} C_u`` (Eq. (4), "exclusive") or ``sum_{u <= t} C_u``.

    Eq. (4) checks ``d - sum_{u=0}^{T-1} C(s_u) >= 0`` at step T, i.e. the costs of the steps
    BEFORE it (Sauté's ``z_t``, Eq. (3)), so a row's own last step does not count in the
    exclusive form. With ``cumsum="inclusive"`` and non-negative ``kl_tok`` (a divergence;
    monotone cumsum) the value at the row's last action equals :func:`sequence_kl`, so a row
    has an infeasible token iff its sequence KL exceeds d (spec C2).

    Args: kl_tok: (N, L) (detached here); mask: (N, L) bool action mask; reduction as
    :func:`sequence_kl`; cumsum: "exclusive" | "inclusive". Returns: (N, L), 0 off the mask.
    """
    m = _check(kl_tok, mask, reduction)
    if cumsum not in CUMSUMS:
        raise ValueError(f"cumsum must be one of {CUMSUMS}, got {cumsum!r}")
    incl = _cost_cumsum(kl_tok.detach(), m, reduction)  # (N, L)
    if cumsum == "inclusive":
        used = incl
    else:
        used = torch.zeros_like(incl)
        used[..., 1:] = incl[..., :-1]  # holes add 0, so position t-1 holds the sum over u < t
    return torch.where(m, used, used.new_zeros(()))


def _float(x) -> Tensor:
    x = torch.as_tensor(x)
    return x.to(torch.promote_types(x.dtype, torch.float32))


@torch.no_grad()
def constrained_reward(R: Tensor, kl_seq: Tensor, d: float, n: float = 20.0, use_phi: bool = True) -> Tensor:
    """Seed 004 Eq. (4) at sequence granularity [choice B7.2, the default]: the constrained reward.

    ``r^_i = R_i`` if ``KL_i <= d`` (budget not exhausted), else ``-(n + phi_i)`` with
    [choice B7.3] ``phi_i = KL_i``; ``use_phi=False`` gives Sauté's plain ``-n`` (Eq. (3)),
    under which a group of all-infeasible samples has identical rewards and zero GRPO
    advantages (the paper's argument for phi, Sec. 4.2-B). Paper values: d = 0.35, n = 20.

    Args: R: (N,) task rewards (Eq. (6), in {0, 1}); kl_seq: (N,) per-sample KL
    (:func:`sequence_kl`). Returns: (N,) detached.
    """
    R, kl = _float(R), _float(kl_seq).detach()
    if R.shape != kl.shape:
        raise ValueError(f"R and kl_seq must have one (N,) shape, got {tuple(R.shape)}, {tuple(kl.shape)}")
    dtype = torch.promote_types(R.dtype, kl.dtype)
    R, kl = R.to(dtype), kl.to(dtype)
    penalty = -(n + kl) if use_phi else torch.full_like(kl, -float(n))
    return torch.where(kl <= d, R, penalty)


@torch.no_grad()
def constrained_token_rewards(
    R: Tensor,
    kl_tok: Tensor,
    mask: Tensor,
    d: float,
    n: float = 20.0,
    use_phi: bool = True,
    reduction: str = "mean",
    cumsum: str = "exclusive",
) -> Tensor:
    """Seed 004 Eq. (4) at token granularity (the literal per-step form; spec B2 option).

    With ``used_t`` from :func:`budget_used` (exclusive by default: Eq. (4)'s check at step t
    uses the costs of u < t) and ``feasible_t = d - used_t >= 0``::

        r^_t = R_i               at the row's last action, if feasible there
             = 0                 at earlier feasible actions
             = -(n + kl_t)       at every infeasible action (-n with use_phi=False)

    Spec warning: the penalty applies at every violating token, so the return scales with
    their number; a very different balance from the sequence form. Feed the result to
    :func:`kdlib.maths.advantages.grpo_process_advantages`.

    Args: R: (N,); kl_tok: (N, L) per-token KL (detached here); mask: (N, L) bool action mask;
    d, n, use_phi as :func:`constrained_reward`; reduction, cumsum as :func:`budget_used`.
    Returns: (N, L) detached, 0 off the mask.
    """
    m = _check(kl_tok, mask, reduction)
    R = _float(R)
    if R.shape != m.shape[:1]:
        raise ValueError(f"R must be (N,) = {tuple(m.shape[:1])}, got {tuple(R.shape)}")
    kl = _float(kl_tok).detach()
    dtype = torch.promote_types(R.dtype, kl.dtype)
    zero = torch.zeros((), dtype=dtype, device=kl.device)
    kl = torch.where(m, kl.to(dtype), zero)  # garbage off the mask -> 0
    used = budget_used(kl, m, reduction, cumsum)  # (N, L)
    feasible = (d - used >= 0) & m  # (N, L)
    L = m.shape[-1]
    t_idx = torch.arange(L, device=m.device)
    last = torch.where(m, t_idx, -1).amax(dim=-1, keepdim=True)  # (N, 1): -1 for an empty row
    at_last = t_idx == last  # (N, L)
    out = torch.where(feasible & at_last, R.to(dtype).unsqueeze(-1), zero)
    penalty = -(n + kl) if use_phi else torch.full_like(kl, -float(n))
    return torch.where(m & ~feasible, penalty, out)


@torch.no_grad()
def explicit_term_mask(kl_seq: Tensor, d: float, eps_b: float = 0.0) -> Tensor:
    """Rows where Eq. (5)'s term II is active: ``1{d - KL_i <= eps_b}`` (sequence granularity).

    [choice B7.4] tolerance ``eps_b = 0``. Literal Eq. (5): at ``KL_i = d`` exactly (a feasible
    row in Eq. (4)) term II is already active with ``eps_b = 0``; every row with ``KL_i < d``
    is inactive. Args: kl_seq: (N,) (detached here). Returns: (N,) bool.
    """
    return (d - _float(kl_seq).detach()) <= eps_b


@torch.no_grad()
def explicit_term_mask_tokens(
    kl_tok: Tensor,
    mask: Tensor,
    d: float,
    eps_b: float = 0.0,
    reduction: str = "mean",
    cumsum: str = "exclusive",
) -> Tensor:
    """Tokens where Eq. (5)'s term II is active: ``1{d - sum_{u<t} C_u <= eps_b}`` (token granularity).

    Args: kl_tok, mask: (N, L); reduction, cumsum as :func:`budget_used`. Returns: (N, L)
    bool, False off the mask.
    """
    m = _check(kl_tok, mask, reduction)
    used = budget_used(kl_tok, m, reduction, cumsum)
    return ((d - used) <= eps_b) & m


def term_ii_loss(kl_seq: Tensor, viol: Tensor, c_ii: float = 1.0) -> Tensor:
    """Seed 004 Eq. (5) term II at sequence granularity, as a loss: ``c_II * sum_i viol_i KL_i / N``.

    ``kl_seq`` (N,) must carry the gradient (``sequence_kl`` of ``full_vocab_kl``): backprop
    through the exact full-vocabulary KL is ``d/dtheta phi`` of Eq. (5). Its gradient w.r.t.
    ``KL_i`` is ``c_II * viol_i / N``, exactly 0 on rows where term II is inactive.
    ``viol`` (N,) bool from :func:`explicit_term_mask`; [choice B7.4] ``c_II = 1``.
    Returns: scalar (the total loss is ``L_I + term_ii_loss``).
    """
    if kl_seq.shape != viol.shape or kl_seq.dim() != 1:
        raise ValueError(f"expected kl_seq and viol of one (N,) shape, got {tuple(kl_seq.shape)}, {tuple(viol.shape)}")
    v = viol.bool()
    picked = torch.where(v, kl_seq, kl_seq.new_zeros(()))  # where(), not a product: inf on a feasible row stays out
    return c_ii * picked.sum() / max(kl_seq.shape[0], 1)


def term_ii_token_loss(kl_tok: Tensor, viol_tok: Tensor, mask: Tensor, c_ii: float = 1.0) -> Tensor:
    """Seed 004 Eq. (5) term II at token granularity: ``c_II * sum_{i,t} viol_t kl_t / sum mask``.

    Args: kl_tok: (N, L) with gradient; viol_tok: (N, L) bool from
    :func:`explicit_term_mask_tokens`; mask: (N, L) bool action mask. Returns: scalar.
    """
    m = _check(kl_tok, mask)
    if viol_tok.shape != m.shape:
        raise ValueError(f"viol_tok must be (N, L) = {tuple(m.shape)}, got {tuple(viol_tok.shape)}")
    picked = torch.where(viol_tok.bool() & m, kl_tok, kl_tok.new_zeros(()))
    return c_ii * picked.sum() / m.sum().clamp_min(1).to(picked.dtype)


@torch.no_grad()
def gkd_grpo_reward(R: Tensor, kl_seq: Tensor, lam: float) -> Tensor:
    """GKD-GRPO (seed 004 Eq. (1) with D = reverse KL): ``r_i = R_i - lam * KL_i`` (detached).

    [choice B7.8] lam multiplies the per-sample mean KL, the constraint's quantity. lam = 0 is
    GRPO exactly (``R - 0 * KL`` is ``R`` bit for bit for finite KL). Args: R, kl_seq: (N,).
    Returns: (N,).
    """
    R, kl = _float(R), _float(kl_seq).detach()
    if R.shape != kl.shape:
        raise ValueError(f"R and kl_seq must have one (N,) shape, got {tuple(R.shape)}, {tuple(kl.shape)}")
    return R - lam * kl


@torch.no_grad()
def gkd_reward(kl_seq: Tensor) -> Tensor:
    """GKD on the GRPO loop (seed 004 baselines, spec B2): ``r_i = -KL_i`` (task reward ignored). (N,) -> (N,)."""
    return -_float(kl_seq).detach()


@torch.no_grad()
def feasibility_breakdown(kl_seq: Tensor, d: float, group_size: int) -> dict:
    """Shares of groups that are all-feasible / mixed / all-infeasible (spec B2: "log per step").

    In a mixed group feasibility dominates the normalised advantage; in an all-feasible group
    the task reward is normalised at full strength. Args: kl_seq: (N,), N a multiple of
    ``group_size``. Returns: ``{"all_feasible", "mixed", "all_infeasible"}`` floats summing to 1.
    """
    kl = _float(kl_seq).detach()
    if kl.dim() != 1 or group_size < 1 or kl.shape[0] % group_size:
        raise ValueError(f"kl_seq must be (N,) with N a multiple of group_size={group_size}, got {tuple(kl.shape)}")
    feasible = (kl <= d).reshape(-1, group_size)  # (B, G)
    n_groups = max(feasible.shape[0], 1)
    all_f = feasible.all(dim=1)
    none_f = ~feasible.any(dim=1)
    return {
        "all_feasible": float(all_f.sum()) / n_groups,
        "mixed": float((~all_f & ~none_f).sum()) / n_groups,
        "all_infeasible": float(none_f.sum()) / n_groups,
    }
