"""Teacher-induced rewards and K-step returns (KETCHUP, seed 000, Sec. 2 and Algorithm 1).

Pure tensor maths: tensors in, tensors out; nothing else of the kit is imported.

Notation (seed 000, Sec. 2.1; LLMR, seed 002, Eqs. (2)-(4)). For a student-sampled output
``y_0 .. y_T`` (``T`` = index of the last generated token, EOS included) with states
``s_t = (x, y_<t)``:

* ``q_sa[b, t] = q(s_t, y_t)``         -- teacher logit of the sampled token (Eq. (1))
* ``v[b, t]    = max_a q(s_t, a)``     -- value of the state under Bellman optimality
* ``mask[b, t]``                        -- True for ``t <= T_b``

Masks are meant to be *prefix* masks (True up to the row's last token, ragged lengths per row).
To be robust to anything else, every function here defines the end of row ``b`` as the
**last True position** ``T_b``; positions ``t <= T_b`` are "alive", positions after it are
padding. A False entry *inside* a row (a hole) contributes nothing: its ``q_sa`` and ``v`` are
read as 0. Rows without any True entry are empty (all returns 0). Values stored at padded
positions never leak into a return, and every returned ``(B, T)`` tensor is 0 after the end.

All functions accept any number of leading dimensions, ``(..., T)``; the docstrings write
``(B, T)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

NORMALIZATIONS = ("raw", "mean", "log_softmax")
TAILS = ("algorithm1", "block", "clamp")  # clamp: the authors' public code (spec seed001 Sec. 2)


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------
def _check_k(k) -> int:
    # bool is an int subclass, but K=True is surely a mistake
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    return k


def _check_tail(tail: str) -> str:
    if tail not in TAILS:
        raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
    return tail


def prepare_rows(q_sa: Tensor, v: Tensor, mask: Tensor):
    """Validate shapes; return (q_sa, v) with holes/padding zeroed, ``alive`` and ``end``.

    ``end[b]`` = last True position of ``mask[b]`` (-1 for an empty row), shape (B,).
    ``alive[b, t] = t <= end[b]``, shape (B, T): the prefix mask the maths runs on.
    """
    if q_sa.shape != v.shape or q_sa.shape != mask.shape:
        raise ValueError(
            f"q_sa, v and mask must have the same shape, got {tuple(q_sa.shape)}, "
            f"{tuple(v.shape)}, {tuple(mask.shape)}"
        )
    if q_sa.dim() < 1:
        raise ValueError("q_sa must have a time dimension (..., T)")
    mask = mask.bool()
    T = mask.shape[-1]
    t_idx = torch.arange(T, device=mask.device)  # (T,)
    if T > 0:
        end = torch.where(mask, t_idx, -1).amax(dim=-1)  # (B,): last True position, -1 if none
    else:
        end = torch.full(mask.shape[:-1], -1, dtype=torch.long, device=mask.device)
    alive = t_idx <= end.unsqueeze(-1)  # (B, T)
    zero = q_sa.new_zeros(())
    q_sa = torch.where(mask, q_sa, zero)  # holes and padding read as 0
    v = torch.where(mask, v, zero)
    return q_sa, v, alive, end


def _shift_left(x: Tensor, k: int) -> Tensor:
    """``out[..., t] = x[..., t + k]``, 0 where ``t + k >= T``. Shape (B, T)."""
    out = torch.zeros_like(x)
    T = x.shape[-1]
    if k < T:
        out[..., : T - k] = x[..., k:]
    return out


def reverse_cumsum(x: Tensor) -> Tensor:
    """``out[..., t] = sum_{i >= t} x[..., i]``. Shape (B, T)."""
    return x.flip(-1).cumsum(-1).flip(-1)


# ----------------------------------------------------------------------------------------
# teacher Q-values
# ----------------------------------------------------------------------------------------
VALUES = ("max", "soft")


@torch.no_grad()
def teacher_q(logits: Tensor, actions: Tensor, mask: Tensor, normalize: str = "mean", value: str = "max"):
    """Teacher Q-values of the sampled actions and of the best action (seed 000, Eq. (1)).

    Teacher logits are read as Q-values (Eq. (1); LLMR Eq. (2)), evaluated in ONE teacher
    forward pass over the student's sampled sequence (teacher forcing on ``y``).

    Args:
        logits: (B, T, V) teacher logits; ``logits[b, t]`` scores ``y_t`` given ``s_t``.
        actions: (B, T) long, the sampled tokens ``y_t`` (any value at masked positions,
            e.g. -100, is fine).
        mask: (B, T) bool, True for ``t <= T_b``.
        normalize: per-state shift of the Q-values (it cancels in the policy but not in the
            rewards of Eq. (2)):
            * ``"raw"``: ``q = logit``;
            * ``"mean"`` (default): ``q = logit - mean_a logit`` -- what the LLMR authors'
              reference code does;
            * ``"log_softmax"``: ``q = log p_teacher(a | s)``.

        value: the state value the rewards bootstrap with: ``"max"`` (LLMR, seed 000: ``v = max_a q``, the Bellman
            optimality value) or ``"soft"`` (``v = logsumexp_a q``, the soft value). With the soft value the
            one-step reward is ``r_t = q_t(y_t) - v_{t+1}`` and the reward-to-go telescopes: writing z for the raw
            logits and c_t for the shift, ``q_t(y_t) = z_t(y_t) - c_t`` and ``v_i = lse_i z - c_i``, so
            ``G_t = sum_{i>=t} r_i = z_t(y_t) - c_t + sum_{i>t} (z_i(y_i) - lse_i z) = q_t(y_t) + sum_{i>t} log
            pi_T(y_i | s_i)``: the teacher's log-probabilities of the future tokens plus the logit of the present
            one. On-policy reverse KL's undiscounted return has teacher half ``sum_{i>=t} log pi_T(y_i | s_i)``;
            the two differ by ``q_t(y_t) - log pi_T(y_t | s_t) = v_t`` (soft), a function of the state alone: a
            per-state baseline. The K-step return with ``value="soft"`` bootstraps with the soft value every K steps.

    Returns:
        ``(q_sa, v)``, both (B, T), detached, float32 (float64 if the logits are float64),
        0 where ``mask`` is False: ``q_sa[b, t] = q(s_t, y_t)``, ``v[b, t] = max_a q(s_t, a)`` (``value="max"``) or
        ``logsumexp_a q(s_t, a)`` (``value="soft"``).

    Everything is reduced to (B, T) at once (gather, max, one reduction for the shift); no
    normalised (B, T, V) copy is kept.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if value not in VALUES:
        raise ValueError(f"value must be one of {VALUES}, got {value!r}")
    if logits.dim() < 2 or logits.shape[:-1] != actions.shape or actions.shape != mask.shape:
        raise ValueError(
            f"expected logits (B, T, V), actions (B, T), mask (B, T); got {tuple(logits.shape)}, "
            f"{tuple(actions.shape)}, {tuple(mask.shape)}"
        )
    mask = mask.bool()
    out_dtype = torch.promote_types(logits.dtype, torch.float32)
    safe_actions = torch.where(mask, actions.long(), 0)  # padding ids (e.g. -100) -> 0
    # selections are exact in the logits' own dtype; upcast only the (B, T) results
    logit_sa = logits.gather(-1, safe_actions.unsqueeze(-1)).squeeze(-1).to(out_dtype)  # (B, T)
    if value == "max":
        logit_max = logits.amax(dim=-1).to(out_dtype)  # (B, T)
    else:  # the soft value
        logit_max = torch.logsumexp(logits if logits.dtype == out_dtype else logits.to(out_dtype), dim=-1)  # (B, T)
    if normalize == "raw":
        shift = torch.zeros_like(logit_max)  # (B, T)
    elif normalize == "mean":
        shift = logits.mean(dim=-1, dtype=out_dtype)  # (B, T)
    else:  # log_softmax: q = logit - logsumexp(logit)
        lse_in = logits if logits.dtype == out_dtype else logits.to(out_dtype)  # transient
        shift = torch.logsumexp(lse_in, dim=-1)  # (B, T)
    zero = logit_sa.new_zeros(())
    q_sa = torch.where(mask, logit_sa - shift, zero)  # (B, T)
    v = torch.where(mask, logit_max - shift, zero)  # (B, T)
    return q_sa.detach(), v.detach()


# ----------------------------------------------------------------------------------------
# rewards and returns
# ----------------------------------------------------------------------------------------
def step_rewards(q_sa: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """One-step rewards ``r_t = q(s_t, y_t) - max_a q(s_{t+1}, a)`` (seed 000 Eq. (2); LLMR Eq. (3)).

    ``v`` after the end (``t + 1 > T_b``) is 0, so ``r_T = q_sa[T]``; ``r_t = 0`` for ``t > T_b``.

    Args: q_sa, v: (B, T) float; mask: (B, T) bool. Returns: (B, T).
    """
    q_sa, v, _, _ = prepare_rows(q_sa, v, mask)  # zero wherever mask is False, so past the end too
    v_next = _shift_left(v, 1)  # (B, T): v[t+1], 0 past the end
    return q_sa - v_next  # (B, T); 0 after the end, where both terms are 0


def full_returns(q_sa: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """Reward-to-go ``G_t = sum_{i >= t} r_i`` (LLMR Eq. (4) and its gain; seed 000 Eqs. (4), (10)).

    Computed as a reversed cumulative sum of :func:`step_rewards`.
    Args: q_sa, v: (B, T) float; mask: (B, T) bool. Returns: (B, T), 0 after the end.
    """
    return reverse_cumsum(step_rewards(q_sa, v, mask))


def kstep_returns(q_sa: Tensor, v: Tensor, mask: Tensor, k: int, tail: str = "algorithm1") -> Tensor:
    """KETCHUP K-step return ``G^_t`` (seed 000, Algorithm 1; Eqs. (6)-(7), (20)).

    ``tail="algorithm1"`` (default; what the paper trains with), per row with end ``T``::

        G^_T = q_sa[T]
        G^_t = q_sa[t] - v[t+1] + G^_{t+1}     if T - t < k     (the last k-1 steps chain
                                                                  one-step rewards: G^_t = G_t)
        G^_t = q_sa[t] - v[t+k] + G^_{t+k}     otherwise

    ``tail="block"``: the block form of Eq. (7)/(20),
    ``G^_t = sum_{i >= 0, t + i k <= T} ( q_sa[t + i k] - v[t + (i+1) k] )`` with ``v`` past the
    end = 0. (Eq. (7)'s upper limit ``floor((T-t+1)/K)`` may add one block starting at T+1,
    which is 0 under that convention, so it equals Eq. (20)'s ``floor((T-t)/k)``.)
    Theorem 1 / Eq. (24) is about this form.

    ``tail="clamp"``: the authors' public code (``n_step_reward_shift_upgrade``; spec
    ``seed001_brim_extras.md`` Sec. 2 table and Sec. 11). Chain ``t, t+k, ...``; a block that
    would pass ``T`` is truncated to end at ``s_T``, and ``q_sa[T]`` closes the chain::

        G^_t = sum_{i=0}^{m-1} ( q_sa[t+ik] - v[t+(i+1)k] ) + q_sa[T],      if (T - t) % k == 0
        G^_t = sum_{i=0}^{m-1} ( q_sa[t+ik] - v[t+(i+1)k] )
               + ( q_sa[t+mk] - v[T] ) + q_sa[T],                            otherwise

    with ``m = floor((T - t) / k)``. It equals Algorithm 1 for k <= 2 and differs for k >= 3
    wherever the final partial block has >= 2 steps (Algorithm 1 chains one-step rewards
    there; clamp jumps straight to ``v[T]``).

    K = 1 gives :func:`full_returns` for every tail.

    Vectorised (no loop over rows or time). Write ``d_t = v[t] - q_sa[t]`` (the gap
    between the best and the chosen action, >= 0 for teacher Q-values; 0 at masked positions). Telescoping,
    ``G^_t = q_sa[t] - sum_{i in J(t)} d_i`` where ``J(t)`` is the set of positions whose
    ``v`` is cancelled by a ``q_sa``: for the block form ``J(t) = {t+k, t+2k, ... <= T}``;
    for Algorithm 1 the same jumps up to the landing point ``L(t)`` (the first position of
    the chain with ``T - L < k``) plus every ``i > L(t)``. Hence ``G^ = v - H`` with
    ``H_t = y_t + H_{t+k}``, i.e. ``H_t = sum_j y_{t + j k}``, a reversed cumsum inside each
    residue class of t mod k (one reshape after padding T to a multiple of k), where
    * block: ``y = d``;
    * algorithm1: ``y_t = d_t`` where ``t + k <= T`` (a K-step jump), and
      ``y_t = sum_{i >= t} d_i`` on the last k positions (one-step chain, so ``G^_t = G_t``);
    * clamp: ``J(t)`` is the block form's set plus ``T`` itself when the chain does not land on
      ``T`` (the truncated block cancels ``v[T]`` against the closing ``q_sa[T]``). Every chain
      lands exactly once in ``(T - k, T]``, so ``y_t = d_t + d_T [T - k < t < T]``.
    Everything runs in reversed time so that both cumsums are forward ones.

    Args:
        q_sa, v: (B, T) float (see :func:`teacher_q`); mask: (B, T) bool, ragged lengths.
        k: segment length K, an int >= 1 (ValueError otherwise).
        tail: ``"algorithm1"``, ``"block"`` or ``"clamp"``.

    Returns:
        (B, T) returns ``G^_t``, 0 after each row's end.
    """
    k = _check_k(k)
    tail = _check_tail(tail)
    if q_sa.shape != v.shape or q_sa.shape != mask.shape or q_sa.dim() < 1:
        raise ValueError(
            f"q_sa, v and mask must have the same (..., T) shape, got {tuple(q_sa.shape)}, "
            f"{tuple(v.shape)}, {tuple(mask.shape)}"
        )
    if tail == "algorithm1" and k == 1:
        return full_returns(q_sa, v, mask)
    # This function is on the training hot path; the tensors are small, so the cost is the
    # number of ops: keep it to a dozen, and avoid the (slow) bool ops on CPU where possible.
    mask = mask.bool()
    *lead, T = q_sa.shape
    if T == 0:
        return torch.zeros_like(q_sa)
    zero = q_sa.new_zeros(())
    v_m = torch.where(mask, v, zero)  # (B, T): holes and padding read as 0 (even inf / NaN)
    d_rev = torch.where(mask, v - q_sa, zero).flip(-1)  # (B, T): gap d, reversed time s = T-1-t
    if tail == "block":
        y_rev = d_rev  # (B, T)
    elif tail == "clamp":
        s_idx = torch.arange(T, device=q_sa.device, dtype=torch.float32)  # (T,): exact ints < 2^24
        end = torch.where(mask, s_idx, -1.0).amax(dim=-1, keepdim=True)  # (B, 1): last True
        t_rev = (T - 1) - s_idx  # (T,): forward time of reversed position s
        d_end = torch.where(t_rev == end, d_rev, zero).sum(-1, keepdim=True)  # (B, 1): d_T (0 for an empty row)
        landing = (t_rev > end - k) & (t_rev < end)  # (B, T): landing points short of T
        y_rev = d_rev + torch.where(landing, d_end, zero)  # (B, T)
    else:
        s_idx = torch.arange(T, device=q_sa.device, dtype=torch.float32)  # (T,): exact ints < 2^24
        end = torch.where(mask, s_idx, -1.0).amax(dim=-1, keepdim=True)  # (B, 1): last True
        # a K-step jump at t iff t + k <= end; in reversed time t = T-1-s
        jump_rev = (T - 1 + k) - s_idx <= end  # (B, T)
        y_rev = torch.where(jump_rev, d_rev, d_rev.cumsum(-1))  # (B, T); cumsum = sum_{i>=t} d_i
    n_blocks = -(-T // k)
    if n_blocks * k != T:
        y_rev = torch.nn.functional.pad(y_rev, (0, n_blocks * k - T))  # (B, n_blocks * k)
    H_rev = y_rev.reshape(*lead, n_blocks, k).cumsum(-2)  # (B, n_blocks, k): t, t+k in a column
    H = H_rev.reshape(*lead, n_blocks * k)[..., :T].flip(-1)  # (B, T)
    return v_m - H  # 0 after the end: there v_m = 0 and H = 0


def kstep_returns_loop(q_sa: Tensor, v: Tensor, mask: Tensor, k: int, tail: str = "algorithm1") -> Tensor:
    """Reference implementation: a literal, line-by-line transcription (slow; for tests and benchmarks).

    ``tail="algorithm1"`` transcribes Algorithm 1's inner loop (``for t <- T to 0``) per row;
    ``tail="block"`` transcribes the sum of Eq. (20) term by term; ``tail="clamp"`` walks the
    chain ``t, t+k, ...`` block by block, cutting the last block at ``T``. Same conventions as
    :func:`kstep_returns` (end = last True position, masked entries read as 0, ``v`` past the
    end = 0, returns 0 after the end). Loops over Python floats; computes in float64 and
    returns the input dtype. Shapes: (B, T) -> (B, T).
    """
    k = _check_k(k)
    tail = _check_tail(tail)
    if q_sa.shape != v.shape or q_sa.shape != mask.shape:
        raise ValueError("q_sa, v and mask must have the same shape")
    shape, T_len = q_sa.shape, q_sa.shape[-1]
    qs = q_sa.detach().reshape(-1, T_len).double().tolist()
    vs = v.detach().reshape(-1, T_len).double().tolist()
    ms = mask.reshape(-1, T_len).bool().tolist()
    out = []
    for q_row, v_row, m_row in zip(qs, vs, ms):
        T = max((t for t, m in enumerate(m_row) if m), default=-1)  # last True position

        def q(t):
            return q_row[t] if m_row[t] else 0.0

        def max_q(t):  # max_a q(s_t, a); 0 past the end
            return v_row[t] if t <= T and m_row[t] else 0.0

        G = [0.0] * T_len
        if tail == "algorithm1":
            for t in range(T, -1, -1):
                if t == T:
                    G[t] = q(T)
                elif T - t < k:
                    G[t] = (q(t) - max_q(t + 1)) + G[t + 1]
                else:
                    G[t] = (q(t) - max_q(t + k)) + G[t + k]
        elif tail == "block":
            for t in range(0, T + 1):
                total, i = 0.0, 0
                while t + i * k <= T:  # i = 0 .. floor((T - t) / k)
                    total += q(t + i * k) - max_q(t + (i + 1) * k)
                    i += 1
                G[t] = total
        else:  # clamp
            for t in range(0, T + 1):
                total, j = 0.0, t
                while j + k <= T:  # full blocks j -> j + k (the last one may land on T)
                    total += q(j) - max_q(j + k)
                    j += k
                if j < T:  # the block from j would pass T: cut it to end at s_T
                    total += q(j) - max_q(T)
                G[t] = total + q(T)
        out.append(G)
    return torch.tensor(out, dtype=torch.float64).reshape(shape).to(q_sa.dtype)


def adaptive_k(q_sa: Tensor, v: Tensor, mask: Tensor, grid: tuple[int, ...] = (1, 2, 4, 8, 16), tol: float = 0.1,
               tail: str = "algorithm1") -> Tensor:
    """Per-sequence K for ``rl.k: auto`` (a kit extension; seed 001 Sec. 6 leaves adaptive K as
    future work). The K-step return is optimistic: ``G^_t - G_t >= 0`` is the sum of the teacher's logit
    gaps ``d_s = v_s - q_sa_s`` at the positions after ``t`` that its blocks skip (App. B), and for a sampled
    sequence those gaps are known exactly at every position. Row b gets the largest K of ``grid`` whose bias is
    within ``tol`` nats per token **at every position**: ``max_t (G^_t(K) - G_t) / T_b <= tol``, where ``T_b`` is
    the row's length (so the whole-sequence bias allowed is ``tol * T_b``, as for ``G^_0``). Bounding ``G^_0``
    alone is not enough: a block that starts at 0 can jump over a large gap that the blocks starting at
    ``t = 1 .. K-1`` skip. Where the student took the teacher's argmax the gaps are 0 and a long block costs no
    bias (so K grows and the variance falls); where it did not, K shrinks towards LLMR (K = 1, no bias).
    ``grid`` must contain 1.

    q_sa, v, mask: (B, T). Returns (B,) long.
    """
    if 1 not in grid:
        raise ValueError(f"the K grid must contain 1 (the unbiased fallback), got {grid}")
    G = full_returns(q_sa, v, mask)  # (B, T)
    length = mask.bool().sum(-1).clamp(min=1).to(G.dtype)  # (B,)
    k_row = torch.ones(G.shape[:-1], dtype=torch.long, device=G.device)
    for k in sorted(grid):
        if k == 1:
            continue
        bias = (kstep_returns(q_sa, v, mask, k, tail=tail) - G).amax(dim=-1) / length  # (B,) >= 0, worst position
        k_row = torch.where(bias <= tol, torch.full_like(k_row, k), k_row)  # larger K wins while within tol
    return k_row


def kstep_returns_per_row(q_sa: Tensor, v: Tensor, mask: Tensor, k_row: Tensor, tail: str = "algorithm1") -> Tensor:
    """K-step returns with a K per row (``k_row`` (B,)): one vectorised pass per distinct K,
    each row taking its own. (B, T) -> (B, T)."""
    out = torch.zeros_like(q_sa)
    for k in torch.unique(k_row).tolist():
        rows = k_row == k
        out[rows] = kstep_returns(q_sa[rows], v[rows], mask[rows], int(k), tail=tail)
    return out


TRUNCATION = ("keep", "drop", "bootstrap")


def truncated_kstep_returns(q_sa: Tensor, v: Tensor, mask: Tensor, ended: Tensor, k: int, tail: str = "algorithm1",
                            truncated: str = "keep") -> Tensor:
    """K-step returns when some rollouts were cut at the length limit (``ended[b]`` False).

    * ``keep``: the last generated token is treated as the end (Algorithm 1 as written: the value
      after it is 0). Same as :func:`kstep_returns`.
    * ``drop``: the LLMR authors' code drops unfinished rollouts; the returns are computed as for
      ``keep`` and the CALLER removes those rows from the loss (their rows here are 0).
    * ``bootstrap``: a cut rollout continues with the teacher's optimal actions, each with gap
      ``v - q = 0``. Their rewards telescope (Eq. (2)): the continuation is worth exactly
      ``v(s_{T+1})``, which cancels the ``-v(s_{T+1})`` of the last real reward, so for K = 1 the
      return is the same as ``keep``. For K > 1 the chain of Algorithm 1 no longer lands before the
      end, so blocks that cross the cut keep jumping: on cut rows the return is the block form of
      Eq. (7) (``tail="block"``), on finished rows the requested ``tail``.

    ``k``: an int, or a (B,) tensor of per-row K (``rl.k: auto``, :func:`adaptive_k`).
    q_sa, v, mask: (B, T); ended: (B,) bool. Returns (B, T), 0 after each row's end.
    """
    if truncated not in TRUNCATION:
        raise ValueError(f"truncated must be one of {TRUNCATION}, got {truncated!r}")
    per_row = isinstance(k, Tensor)

    def ret(tail_):
        return kstep_returns_per_row(q_sa, v, mask, k, tail=tail_) if per_row else kstep_returns(q_sa, v, mask, k, tail=tail_)

    G = ret(tail)
    ended = ended.bool().reshape(*G.shape[:-1], 1)  # (B, 1)
    if truncated == "drop":
        return torch.where(ended, G, G.new_zeros(()))
    if truncated == "bootstrap" and (per_row or k > 1) and tail != "block":
        return torch.where(ended, G, ret("block"))
    return G


def clip_rewards(G: Tensor, low: float = -100.0, high: float = 100.0) -> Tensor:
    """Clip returns/rewards to ``[low, high]`` (seed 000, Table 4: reward clip range [-100, 100]).

    Applied to the returns ``G^_t`` right before the policy gradient of Eq. (8). Shape kept.
    """
    if low > high:
        raise ValueError(f"clip range must have low <= high, got [{low}, {high}]")
    return G.clamp(min=low, max=high)


# ----------------------------------------------------------------------------------------
# batch baselines (seed 000, Sec. 3 "LLMR + mean baseline" / "+ min-variance baseline")
# ----------------------------------------------------------------------------------------
def _positionwise_weighted_mean(G: Tensor, alive: Tensor, w: Tensor) -> Tensor:
    """Per-position weighted mean over the rows alive at t, with a fallback.

    ``b_t = sum_b w[b,t] G[b,t] / sum_b w[b,t]`` over rows with ``alive[b, t]``. Where fewer
    than two rows are alive at ``t`` (a lone row would be its own baseline, zeroing its
    signal) or the weights sum to 0, ``b_t`` falls back to the same weighted mean over every
    valid token of the batch (and to the plain mean if all weights are 0).
    Shapes: (B, T) each -> (B, T), 0 where not alive. Leading dims beyond (B, T) are not
    supported: the batch is dim 0.
    """
    if G.dim() != 2:
        raise ValueError(f"baselines expect (B, T) tensors, got {tuple(G.shape)}")
    zero = G.new_zeros(())
    G = torch.where(alive, G, zero).detach()
    w = torch.where(alive, w, zero).detach()
    count_t = alive.sum(dim=0)  # (T,)
    wsum_t = w.sum(dim=0)  # (T,)
    num_t = (w * G).sum(dim=0)  # (T,)
    # no host syncs (no `if tensor:`), so this stays cheap on an accelerator
    n_all = alive.sum().clamp_min(1).to(G.dtype)
    wsum_all = w.sum()
    weighted_all = (w * G).sum() / torch.where(wsum_all > 0, wsum_all, torch.ones_like(wsum_all))
    overall = torch.where(wsum_all > 0, weighted_all, G.sum() / n_all)  # () fallback
    ok = (count_t >= 2) & (wsum_t > 0)  # (T,)
    b_t = torch.where(ok, num_t / torch.where(ok, wsum_t, torch.ones_like(wsum_t)), overall)  # (T,)
    return torch.where(alive, b_t.unsqueeze(0).expand_as(G), zero)  # (B, T)


def batch_mean_baseline(G: Tensor, mask: Tensor) -> Tensor:
    """Mean-return baseline ``b_t`` for REINFORCE with baseline (seed 000, Eq. (9), "LLMR + mean baseline").

    Choice: position-wise. ``b_t`` = the mean of ``G[b, t]`` over the rows of the batch still
    alive at position ``t`` (``t <= T_b``); where fewer than two rows are alive at ``t``, the
    mean return over every valid token of the batch is used instead. Returned detached,
    (B, T), 0 after each row's end, so ``G - b`` stays 0 there. Not leave-one-out: the row's
    own return is part of its baseline (a 1/B effect, as in the usual batch mean).

    Args: G: (B, T) returns; mask: (B, T) bool (end = last True position).
    """
    _, _, alive, _ = prepare_rows(G, G, mask)
    return _positionwise_weighted_mean(G, alive, torch.ones_like(G))


def authors_code_baseline(signal: Tensor, mask: Tensor) -> Tensor:
    """The baseline of the authors' public code, for BOTH "mean" and "min-variance" (spec
    ``seed001_brim_extras.md`` Sec. 8.2 item 5). Not the paper's baselines: see
    :func:`batch_mean_baseline` and :func:`min_variance_baseline` for those.

    * "mean" subtracts ONE scalar per batch: the mean of the weighted return
      ``signal = rho_t * G^_t`` over all ``B * T`` positions, padding included.
    * "min-variance" computes ``b = mean(signal * g^2) / mean(g^2)`` with
      ``g = d(sum lprobs) / d lprobs``, which is 1 at every position, so ``b`` is numerically
      the same scalar (the code's extra ``backward`` only adds ``grad sum log pi`` to the
      parameter gradients; that side effect is not reproduced here).

    So ``b = signal.sum() / (B * T)``. The kit's returns are 0 after each row's end, so padding
    dilutes ``b`` as in the code; the code's padded positions hold teacher-logit values instead
    of 0, so ``b`` matches it exactly only for batches without padding. Which of ``b`` and the
    clip of ``rho * G^`` is applied first is not stated in the spec; the caller decides.

    Args: signal: (B, T) ``rho_t * G^_t`` (see :func:`kdlib.maths.losses.authors_code_pg_loss`);
        mask: (B, T) bool (end = last True position).
    Returns: (B, T) detached, ``b`` at positions ``t <= T_b`` and 0 after each row's end.
    """
    signal, _, alive, _ = prepare_rows(signal, signal, mask)  # (B, T): 0 where mask is False
    b = signal.detach().sum() / max(signal.numel(), 1)  # (): mean over all B * T positions
    return torch.where(alive, b, signal.new_zeros(())).detach()


@torch.no_grad()
def score_norm_sq(student_logits: Tensor, actions: Tensor, mask: Tensor | None = None) -> Tensor:
    """``||grad_logits log pi(y_t | s_t)||^2`` for a softmax policy, a cheap proxy of ``||g||^2``.

    For ``pi = softmax(z)``, ``grad_z log pi(y) = onehot(y) - pi``, whose squared norm is
    ``1 - 2 pi(y_t | s_t) + sum_a pi(a | s_t)^2``. Used by :func:`min_variance_baseline`
    (the gradient w.r.t. the logits stands in for the one w.r.t. the parameters).

    Args:
        student_logits: (B, T, V); actions: (B, T) long; mask: optional (B, T) bool.
    Returns:
        (B, T) detached float32 (float64 for float64 logits), 0 where ``mask`` is False.
    Only one (B, T, V) temporary (the softmax) is created; the sum of squares is a norm
    reduction.
    """
    out_dtype = torch.promote_types(student_logits.dtype, torch.float32)
    if mask is None:
        mask = torch.ones_like(actions, dtype=torch.bool)
    mask = mask.bool()
    safe_actions = torch.where(mask, actions.long(), 0)
    p = torch.softmax(student_logits.to(out_dtype), dim=-1)  # (B, T, V) transient
    p_y = p.gather(-1, safe_actions.unsqueeze(-1)).squeeze(-1)  # (B, T)
    sum_p2 = torch.linalg.vector_norm(p, ord=2, dim=-1).square()  # (B, T)
    del p
    out = (1.0 - 2.0 * p_y + sum_p2).clamp_min(0.0)  # (B, T); clamp rounding below 0
    return torch.where(mask, out, out.new_zeros(()))


def min_variance_baseline(G: Tensor, mask: Tensor, score_norm_sq: Tensor) -> Tensor:
    """Optimal constant baseline ``b = E[||g||^2 G] / E[||g||^2]`` (Rosenberg 2021).

    Used by seed 000's "LLMR + min-variance baseline" (Sec. 3, Eq. (9) with this ``b_t``).

    ``g`` is the score function ``grad log pi(y_t | s_t)``; ``||g||^2`` is estimated by
    :func:`score_norm_sq` (the gradient w.r.t. the logits). As for
    :func:`batch_mean_baseline` the expectation is taken per position ``t`` over the rows
    alive at ``t``: ``b_t = sum_b w_bt G_bt / sum_b w_bt`` with ``w = score_norm_sq``;
    positions with fewer than two alive rows (or zero total weight) fall back to the same
    weighted mean over every valid token of the batch (plain mean if all weights are 0).

    Args: G: (B, T) returns; mask: (B, T) bool; score_norm_sq: (B, T) non-negative weights.
    Returns: (B, T) detached baseline, 0 after each row's end.
    """
    if score_norm_sq.shape != G.shape:
        raise ValueError(f"score_norm_sq must have G's shape {tuple(G.shape)}, got {tuple(score_norm_sq.shape)}")
    _, _, alive, _ = prepare_rows(G, G, mask)
    return _positionwise_weighted_mean(G, alive, score_norm_sq.to(G.dtype))
