"""Properties of kdlib.maths.returns: rewards, LLMR and K-step returns (seed 000, Sec. 2, Algorithm 1)."""

import math

import numpy as np
import pytest
import torch

from kdlib.maths.returns import TAILS as KIT_TAILS
from kdlib.maths.returns import (
    authors_code_baseline,
    batch_mean_baseline,
    clip_rewards,
    full_returns,
    kstep_returns,
    kstep_returns_loop,
    min_variance_baseline,
    score_norm_sq,
    step_rewards,
    teacher_q,
)
from kdlib.maths.variance_bias import return_variance_bias, summarize_variance_bias

TAILS = ("algorithm1", "block", "clamp")


def _ragged(B, T, gen, min_len=0, dtype=torch.float64):
    """Random q_sa, v (B, T) and a prefix mask with ragged lengths in [min_len, T]."""
    q = torch.randn(B, T, generator=gen, dtype=dtype)
    v = torch.randn(B, T, generator=gen, dtype=dtype)
    lengths = torch.randint(min_len, T + 1, (B,), generator=gen)
    mask = torch.arange(T) < lengths[:, None]
    return q, v, mask, lengths


# ----------------------------------------------------------------------------------------
# teacher_q
# ----------------------------------------------------------------------------------------
def test_teacher_q_hand_computed_normalisations():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 3.0], [5.0, 1.0, 1.0]]])  # (1, 3, 3)
    actions = torch.tensor([[0, 2, -100]])  # padding id at the masked position
    mask = torch.tensor([[True, True, False]])

    q, v = teacher_q(logits, actions, mask, normalize="raw")
    assert torch.allclose(q, torch.tensor([[1.0, 3.0, 0.0]]))
    assert torch.allclose(v, torch.tensor([[3.0, 3.0, 0.0]]))

    q, v = teacher_q(logits, actions, mask)  # default: "mean"; means are 2 and 1
    assert torch.allclose(q, torch.tensor([[-1.0, 2.0, 0.0]]))
    assert torch.allclose(v, torch.tensor([[1.0, 2.0, 0.0]]))

    q, v = teacher_q(logits, actions, mask, normalize="log_softmax")
    lse0 = math.log(math.e + math.e**2 + math.e**3)
    lse1 = math.log(2.0 + math.e**3)
    assert torch.allclose(q, torch.tensor([[1.0 - lse0, 3.0 - lse1, 0.0]]))
    assert torch.allclose(v, torch.tensor([[3.0 - lse0, 3.0 - lse1, 0.0]]))


def test_teacher_q_dtype_detached_and_bad_normalize():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 7, generator=gen).bfloat16().requires_grad_(True)
    actions = torch.randint(0, 7, (2, 4), generator=gen)
    mask = torch.ones(2, 4, dtype=torch.bool)
    q, v = teacher_q(logits, actions, mask)
    assert q.dtype == torch.float32 and v.dtype == torch.float32
    assert not q.requires_grad and not v.requires_grad
    assert (v >= q).all()  # the max is at least the chosen action's value
    with pytest.raises(ValueError):
        teacher_q(logits, actions, mask, normalize="softmax")


def test_teacher_q_normalisations_only_shift_rewards_per_state():
    # all three normalisations give the same q_sa - v (the shift cancels within a state)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 11, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, 11, (3, 5), generator=gen)
    mask = torch.ones(3, 5, dtype=torch.bool)
    gaps = [torch.sub(*teacher_q(logits, actions, mask, normalize=n)) for n in ("raw", "mean", "log_softmax")]
    for g in gaps[1:]:
        assert torch.allclose(g, gaps[0])


# ----------------------------------------------------------------------------------------
# step rewards, full returns
# ----------------------------------------------------------------------------------------
def test_step_rewards_and_full_returns_hand_computed():
    q = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    v = torch.tensor([[10.0, 20.0, 30.0], [10.0, 20.0, 30.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    r = step_rewards(q, v, mask)
    assert torch.equal(r, torch.tensor([[1 - 20.0, 2 - 30.0, 3.0], [1 - 20.0, 2.0, 0.0]]))
    G = full_returns(q, v, mask)
    assert torch.equal(G, torch.tensor([[-44.0, -25.0, 3.0], [-17.0, 2.0, 0.0]]))


def test_k1_equals_reversed_cumsum_of_step_rewards_ragged():
    gen = torch.Generator().manual_seed(2)
    for _ in range(20):
        B, T = int(torch.randint(1, 8, (1,), generator=gen)), int(torch.randint(1, 30, (1,), generator=gen))
        q, v, mask, _ = _ragged(B, T, gen)
        r = step_rewards(q, v, mask)
        expected = torch.flip(torch.cumsum(torch.flip(r, [-1]), -1), [-1])
        assert torch.equal(full_returns(q, v, mask), expected)
        assert torch.equal(kstep_returns(q, v, mask, 1), full_returns(q, v, mask))
        assert torch.allclose(kstep_returns(q, v, mask, 1, tail="block"), expected, atol=1e-12)
        assert torch.allclose(kstep_returns(q, v, mask, 1, tail="clamp"), expected, atol=1e-12)
        # telescoping form of Eq. (10): G_t = sum_{i>=t} q_i - sum_{i>t} v_i
        qm, vm = q * mask, v * mask
        tel = torch.flip(torch.cumsum(torch.flip(qm, [-1]), -1), [-1]) - torch.flip(
            torch.cumsum(torch.flip(vm, [-1]), -1), [-1]
        ) + vm
        assert torch.allclose(expected, tel * mask, atol=1e-10)


# ----------------------------------------------------------------------------------------
# K-step returns
# ----------------------------------------------------------------------------------------
def test_kstep_hand_computed_both_tails():
    q = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    v = torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    # Algorithm 1, K=2, T=4: G4=5; G3=4-50+5; G2=3-50+G4; G1=2-40+G3; G0=1-30+G2
    assert torch.equal(kstep_returns(q, v, mask, 2), torch.tensor([[-71.0, -79.0, -42.0, -41.0, 5.0]]))
    # block, K=2: G_t = sum_i q[t+2i] - v[t+2(i+1)], v past the end = 0
    block = torch.tensor([[1 - 30 + 3 - 50 + 5.0, 2 - 40 + 4.0, 3 - 50 + 5.0, 4.0, 5.0]])
    assert torch.equal(kstep_returns(q, v, mask, 2, tail="block"), block)


@pytest.mark.parametrize("tail", TAILS)
def test_vectorised_equals_literal_algorithm(tail):
    gen = torch.Generator().manual_seed(3)
    for _ in range(150):
        B = int(torch.randint(1, 6, (1,), generator=gen))
        T = int(torch.randint(1, 40, (1,), generator=gen))
        k = int(torch.randint(1, T + 6, (1,), generator=gen))
        q, v, mask, _ = _ragged(B, T, gen)
        got = kstep_returns(q, v, mask, k, tail=tail)
        ref = kstep_returns_loop(q, v, mask, k, tail=tail)
        assert torch.allclose(got, ref, atol=1e-10), (B, T, k, tail)


@pytest.mark.parametrize("tail", TAILS)
def test_extra_leading_dims_and_float32(tail):
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(3, 4, 17, generator=gen)
    v = torch.randn(3, 4, 17, generator=gen)
    mask = torch.arange(17) < torch.randint(0, 18, (3, 4, 1), generator=gen)
    got = kstep_returns(q, v, mask, 3, tail=tail)
    assert got.shape == (3, 4, 17) and got.dtype == torch.float32
    ref = kstep_returns_loop(q.reshape(12, 17), v.reshape(12, 17), mask.reshape(12, 17), 3, tail=tail)
    assert torch.allclose(got.reshape(12, 17), ref, atol=1e-5)


def test_k_larger_than_sequence_gives_full_return_algorithm1():
    gen = torch.Generator().manual_seed(5)
    q, v, mask, lengths = _ragged(6, 20, gen, min_len=1)
    G = full_returns(q, v, mask)
    for k in (int(lengths.max()), 20, 21, 100):
        assert torch.allclose(kstep_returns(q, v, mask, k), G, atol=1e-12)
    # row-wise: a row no longer than K equals its full return, even with longer rows around
    k = 7
    short = lengths <= k
    got = kstep_returns(q, v, mask, k)
    assert torch.allclose(got[short], G[short], atol=1e-12)
    # the last K-1 steps of every row chain one-step rewards: G^_t = G_t for T - t < K
    tail = mask & (torch.arange(20) > (lengths[:, None] - 1 - k))
    assert torch.allclose(got[tail], G[tail], atol=1e-12)


def test_k_larger_than_sequence_block_form_is_q_sa():
    # block form, K > T: a single block, G^_t = q_sa[t] - v(past the end) = q_sa[t]
    gen = torch.Generator().manual_seed(6)
    q, v, mask, _ = _ragged(5, 12, gen)
    assert torch.allclose(kstep_returns(q, v, mask, 12, tail="block"), q * mask, atol=1e-12)


@pytest.mark.parametrize("tail", TAILS)
@pytest.mark.parametrize("normalize", ["raw", "mean", "log_softmax"])
def test_argmax_trajectory_has_zero_bias_for_every_k(tail, normalize):
    # always taking the teacher's argmax makes q_sa == v, so both telescoping sums collapse
    # to q_sa[t]: G^_t == G_t for every K (both tails)
    gen = torch.Generator().manual_seed(7)
    B, T, V = 4, 15, 9
    logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    actions = logits.argmax(-1)
    mask = torch.arange(T) < torch.tensor([15, 1, 8, 11])[:, None]
    q, v = teacher_q(logits, actions, mask, normalize=normalize)
    G = full_returns(q, v, mask)
    assert torch.allclose(G, q, atol=1e-12)
    for k in range(1, T + 3):
        assert torch.allclose(kstep_returns(q, v, mask, k, tail=tail), G, atol=1e-12), k


@pytest.mark.parametrize("tail", TAILS)
def test_bias_is_nonnegative_for_teacher_q_values(tail):
    # v >= q_sa pointwise, so G^ - G = sum of skipped (v - q_sa) gaps >= 0 (Eq. (25))
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(6, 20, 13, generator=gen, dtype=torch.float64)
    actions = torch.randint(0, 13, (6, 20), generator=gen)
    mask = torch.arange(20) < torch.randint(1, 21, (6, 1), generator=gen)
    q, v = teacher_q(logits, actions, mask)
    G = full_returns(q, v, mask)
    for k in (2, 3, 5, 8):
        assert ((kstep_returns(q, v, mask, k, tail=tail) - G) >= -1e-12).all()


@pytest.mark.parametrize("tail", TAILS)
def test_zero_after_end_and_padding_never_leaks(tail):
    gen = torch.Generator().manual_seed(9)
    q, v, mask, _ = _ragged(7, 25, gen)
    q2 = torch.where(mask, q, torch.full_like(q, 1e6))
    v2 = torch.where(mask, v, torch.randn(q.shape, generator=gen, dtype=q.dtype) * 1e3)
    for k in (1, 2, 4, 30):
        a = kstep_returns(q, v, mask, k, tail=tail)
        assert (a[~mask] == 0).all()
        assert torch.equal(a, kstep_returns(q2, v2, mask, k, tail=tail))
    for fn in (step_rewards, full_returns):
        out = fn(q, v, mask)
        assert (out[~mask] == 0).all() and torch.equal(out, fn(q2, v2, mask))


def test_non_prefix_mask_ends_at_last_true_position():
    q = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    v = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    mask = torch.tensor([[True, False, True, False]])  # hole at t=1, end at t=2
    # the hole reads as q = v = 0: r = [1 - 0, 0 - 30, 3]
    assert torch.equal(step_rewards(q, v, mask), torch.tensor([[1.0, -30.0, 3.0, 0.0]]))
    assert torch.allclose(kstep_returns(q, v, mask, 2), kstep_returns_loop(q, v, mask, 2))
    empty = torch.zeros(1, 4, dtype=torch.bool)
    assert (kstep_returns(q, v, empty, 3) == 0).all()


@pytest.mark.parametrize("bad", [0, -1, 2.0, "2", True, None])
def test_k_must_be_positive_int(bad):
    q = torch.zeros(1, 3)
    with pytest.raises(ValueError):
        kstep_returns(q, q, torch.ones(1, 3, dtype=torch.bool), bad)


def test_bad_tail_and_shapes():
    q = torch.zeros(1, 3)
    m = torch.ones(1, 3, dtype=torch.bool)
    with pytest.raises(ValueError):
        kstep_returns(q, q, m, 2, tail="eq7")
    with pytest.raises(ValueError):
        kstep_returns(q, torch.zeros(1, 4), m, 2)


# ----------------------------------------------------------------------------------------
# tail="clamp": the authors' public code (spec seed001_brim_extras.md Sec. 2 and Sec. 11)
# ----------------------------------------------------------------------------------------
def test_clamp_is_a_known_tail():
    assert KIT_TAILS == ("algorithm1", "block", "clamp")


def test_clamp_hand_computed_k3():
    q = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    v = torch.tensor([[10.0, 20.0, 30.0, 40.0, 50.0]])
    mask = torch.ones(1, 5, dtype=torch.bool)
    # T = 4, K = 3. G4 = q4; G3 = q3 - v4 + q4; G2 = q2 - v4 + q4 (block 2 -> 5 cut at 4);
    # G1 = q1 - v4 + q4 (full block lands on T); G0 = q0 - v3 + (q3 - v4) + q4
    clamp = torch.tensor([[1 - 40 + 4 - 50 + 5.0, 2 - 50 + 5.0, 3 - 50 + 5.0, 4 - 50 + 5.0, 5.0]])
    assert torch.equal(kstep_returns(q, v, mask, 3, tail="clamp"), clamp)
    assert torch.equal(kstep_returns_loop(q, v, mask, 3, tail="clamp"), clamp)
    # Algorithm 1 differs only at t = 2, where the final partial block has T - t = 2 steps
    alg1 = kstep_returns(q, v, mask, 3)
    assert torch.equal(alg1[:, [0, 1, 3, 4]], clamp[:, [0, 1, 3, 4]])
    assert alg1[0, 2] == 3 - 40 + (4 - 50 + 5.0) != clamp[0, 2]


def test_clamp_equals_algorithm1_for_k_le_2_and_differs_exactly_where_the_partial_block_is_long():
    gen = torch.Generator().manual_seed(21)
    for _ in range(60):
        B, T = int(torch.randint(1, 6, (1,), generator=gen)), int(torch.randint(1, 35, (1,), generator=gen))
        q, v, mask, lengths = _ragged(B, T, gen)
        for k in (1, 2):
            assert torch.allclose(kstep_returns(q, v, mask, k, tail="clamp"), kstep_returns(q, v, mask, k), atol=1e-10)
        for k in (3, 4, 7):
            diff = (kstep_returns(q, v, mask, k, tail="clamp") - kstep_returns(q, v, mask, k)).abs()  # (B, T)
            partial = (lengths[:, None] - 1 - torch.arange(T)) % k  # (B, T): (T_b - t) mod k, steps of the last block
            long_tail = mask & (partial >= 2)
            assert (diff[~long_tail] <= 1e-10).all(), k
            assert (diff[long_tail] > 1e-9).all(), k  # random q, v: every such position differs


def _authors_n_step_reward_shift_upgrade(q_row: np.ndarray, v_row: np.ndarray, K: int) -> np.ndarray:
    """A literal NumPy transcription of the authors' ``n_step_reward_shift_upgrade`` (spec Sec. 2
    table; repo jiabinfan/KETCHUP, utils/helper.py), for ONE EOS-terminated sequence of n = T + 1
    tokens with n > K + 1 (batch dimension 1, as the code's per-device batch of 1).

    Its inputs are built the way the spec describes the caller: ``selection_value[t] = q(s_t, a_t)``;
    ``next_state_value = torch.roll(max_a q, -K)`` (wrapping), set to 0 where ``a_t`` is EOS
    (t = n - 1); ``reward = selection_value - next_state_value`` (the K-step block reward).
    """
    n = q_row.shape[0]
    selection_value = q_row[None, :].copy()  # (1, n)
    next_state_value = np.roll(v_row, -K)[None, :].copy()  # (1, n): v[t + K], wrapped
    next_state_value[:, n - 1] = 0.0  # a_{n-1} = EOS
    reward = selection_value - next_state_value
    n_step = K
    for t in range(0, n):
        if t + n_step >= n - 1:
            if t != n - 1:
                if n_step < next_state_value.shape[1]:
                    reward[:, t] = selection_value[:, t] - next_state_value[:, -((1 + n_step) % n)]
            elif t == n - 1:
                pass  # no change for the last one
    returns = np.zeros_like(reward)
    for k in range(n_step):
        m = np.zeros_like(reward)
        m[:, k::n_step] = 1
        m[:, n - 1] = 1
        shifted_rewards = reward * m
        _return = np.flip(np.cumsum(np.flip(shifted_rewards, -1), -1), -1)  # calc_returns
        returns[:, k::n_step] = _return[:, k::n_step]
    return returns[0]


def test_clamp_equals_the_authors_recursion_per_sequence_and_in_padded_batches():
    rng = np.random.default_rng(22)
    for K in range(1, 9):
        rows = []
        for _ in range(6):
            n = int(rng.integers(K + 2, 31))  # n > K + 1: where the code's tail index is meaningful
            q_row, v_row = rng.standard_normal(n), rng.standard_normal(n)
            ref = _authors_n_step_reward_shift_upgrade(q_row, v_row, K)
            q1, v1 = torch.from_numpy(q_row)[None], torch.from_numpy(v_row)[None]
            got = kstep_returns(q1, v1, torch.ones(1, n, dtype=torch.bool), K, tail="clamp")[0]
            assert np.allclose(got.numpy(), ref, atol=1e-10), (K, n)
            rows.append((q_row, v_row, ref))
        # the same sequences right-padded into one batch, with garbage in the padding
        T = max(len(r[0]) for r in rows)
        q = torch.full((len(rows), T), 1e6, dtype=torch.float64)
        v = torch.full((len(rows), T), -1e6, dtype=torch.float64)
        mask = torch.zeros(len(rows), T, dtype=torch.bool)
        for b, (q_row, v_row, _) in enumerate(rows):
            q[b, : len(q_row)], v[b, : len(v_row)], mask[b, : len(q_row)] = torch.from_numpy(q_row), torch.from_numpy(v_row), True
        got = kstep_returns(q, v, mask, K, tail="clamp")
        for b, (_, _, ref) in enumerate(rows):
            assert np.allclose(got[b, : len(ref)].numpy(), ref, atol=1e-10)
            assert (got[b, len(ref):] == 0).all()


def test_clamp_variance_of_whole_sequence_return():
    # iid standard normals, T = 64 (last index 63): G^_0 = q_0 + sum_{i=1..m} (q - v)_{iK}
    # [+ (q_T - v_T) when the chain does not land on T], so Var = 1 + 2m + 2 [63 % K != 0]
    T, n = 64, 4000
    gen = torch.Generator().manual_seed(23)
    q = torch.randn(n, T, generator=gen, dtype=torch.float64)
    v = torch.randn(n, T, generator=gen, dtype=torch.float64)
    mask = torch.ones(n, T, dtype=torch.bool)
    for k in (1, 2, 3, 4, 8, 16, 32):
        exact = 1 + 2 * (63 // k) + 2 * (63 % k != 0)
        var = float(kstep_returns(q, v, mask, k, tail="clamp")[:, 0].var())
        assert abs(var - exact) <= 0.1 * exact + 0.3, (k, var, exact)


# ----------------------------------------------------------------------------------------
# Theorem 1 (Eq. (24)) on i.i.d. standard normals
# ----------------------------------------------------------------------------------------
# DESIGN.md's table (T = 64, 20,000 samples); the exact values are 2 * (#blocks) - 1 for the
# block form (Eq. (24) minus the last v, which lies past the end) and U-shaped for Algorithm 1.
DESIGN_TABLE = {
    "block": {1: 125, 2: 62, 4: 31, 8: 15, 16: 7, 32: 3},
    "algorithm1": {1: 125, 2: 64, 4: 37, 8: 29, 16: 37, 32: 65},
}


def _exact_var(T, k, tail):
    last = T - 1
    if tail == "block":
        return 2 * (last // k + 1) - 1
    n_jump = last // k if last >= k else 0
    land = n_jump * k
    return 2 * n_jump + (last - land + 1) + (last - land)


@pytest.mark.parametrize("tail", ["algorithm1", "block"])
def test_theorem1_variance_of_whole_sequence_return(tail):
    T, n = 64, 4000
    gen = torch.Generator().manual_seed(10)
    q = torch.randn(n, T, generator=gen, dtype=torch.float64)
    v = torch.randn(n, T, generator=gen, dtype=torch.float64)
    mask = torch.ones(n, T, dtype=torch.bool)
    var = {}
    for k, table in DESIGN_TABLE[tail].items():
        var[k] = float(kstep_returns(q, v, mask, k, tail=tail)[:, 0].var())
        exact = _exact_var(T, k, tail)
        assert abs(var[k] - exact) <= 0.1 * exact + 0.3, (k, var[k], exact)
        assert abs(var[k] - table) <= 0.12 * table + 0.5, (k, var[k], table)
        if tail == "block":  # Eq. (24): (floor((T-1)/K) + 1) * (1 + 1), up to the last v
            assert abs(var[k] - 2 * ((T - 1) // k + 1)) <= 0.1 * 2 * ((T - 1) // k + 1) + 1.0
    ks = sorted(var)
    if tail == "block":  # falls monotonically with K
        assert all(var[a] > var[b] for a, b in zip(ks, ks[1:]))
    else:  # U-shaped, lowest near sqrt(T) = 8
        assert min(var, key=var.get) == 8


# ----------------------------------------------------------------------------------------
# clipping and baselines
# ----------------------------------------------------------------------------------------
def test_clip_rewards():
    G = torch.tensor([-500.0, -100.0, 3.0, 100.0, 1e9])
    assert torch.equal(clip_rewards(G), torch.tensor([-100.0, -100.0, 3.0, 100.0, 100.0]))
    assert torch.equal(clip_rewards(G, -1, 1), torch.tensor([-1.0, -1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError):
        clip_rewards(G, 1.0, -1.0)


def test_batch_mean_baseline_hand_computed():
    G = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 99.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    b = batch_mean_baseline(G, mask)
    # t=0: (1+3)/2; t=1: (2+4)/2; t=2: one row alive -> mean of all valid tokens = 13/5
    assert torch.allclose(b, torch.tensor([[2.0, 3.0, 2.6], [2.0, 3.0, 0.0]]))


def test_min_variance_baseline_hand_computed():
    G = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 99.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    w = torch.tensor([[1.0, 3.0, 1.0], [3.0, 1.0, 7.0]])
    b = min_variance_baseline(G, mask, w)
    # t=0: (1*1+3*3)/4; t=1: (3*2+1*4)/4; t=2: fallback (1+6+3+9+4)/(1+3+1+3+1)
    assert torch.allclose(b, torch.tensor([[2.5, 2.5, 23 / 9], [2.5, 2.5, 0.0]]))
    # constant weights give the mean baseline
    assert torch.allclose(min_variance_baseline(G, mask, torch.ones_like(G)), batch_mean_baseline(G, mask))


def test_authors_code_baseline_is_one_scalar_over_all_positions():
    signal = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    b = authors_code_baseline(signal, mask)
    # padding reads as 0 but counts in the mean: (1 + 2 + 3 + 4 + 5) / 6
    assert torch.equal(b, torch.tensor([[2.5, 2.5, 2.5], [2.5, 2.5, 0.0]]))
    # the code's "min-variance" b = mean(signal g^2) / mean(g^2), g = d(sum lprobs)/d lprobs
    lprobs = torch.randn(2, 3, requires_grad=True)
    (g,) = torch.autograd.grad(lprobs.sum(), lprobs)
    padded = torch.where(mask, signal, 0.0)
    assert torch.equal(g, torch.ones(2, 3))
    assert torch.allclose((padded * g**2).mean() / (g**2).mean(), b[0, 0])
    assert not authors_code_baseline(signal.requires_grad_(True), mask).requires_grad


def test_baselines_degenerate_batches():
    G = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    empty = torch.zeros(2, 2, dtype=torch.bool)
    assert torch.equal(batch_mean_baseline(G, empty), torch.zeros(2, 2))
    assert torch.equal(min_variance_baseline(G, empty, torch.ones(2, 2)), torch.zeros(2, 2))
    mask = torch.ones(2, 2, dtype=torch.bool)
    # all-zero weights (a deterministic policy): fall back to the plain mean of all tokens
    assert torch.allclose(min_variance_baseline(G, mask, torch.zeros(2, 2)), torch.full((2, 2), 2.5))
    # a single row: its baseline is the mean over its own tokens, not its own return
    one = torch.tensor([[1.0, 2.0, 6.0]])
    assert torch.allclose(batch_mean_baseline(one, torch.ones(1, 3, dtype=torch.bool)), torch.full((1, 3), 3.0))


def test_baselines_are_detached():
    G = torch.randn(3, 4, requires_grad=True)
    mask = torch.ones(3, 4, dtype=torch.bool)
    assert not batch_mean_baseline(G, mask).requires_grad
    assert not min_variance_baseline(G, mask, torch.rand(3, 4)).requires_grad


def test_score_norm_sq_equals_literal_gradient_norm():
    gen = torch.Generator().manual_seed(11)
    B, T, V = 3, 5, 8
    z = torch.randn(B, T, V, generator=gen, dtype=torch.float64)
    y = torch.randint(0, V, (B, T), generator=gen)
    got = score_norm_sq(z, y)
    literal = ((torch.nn.functional.one_hot(y, V) - torch.softmax(z, -1)) ** 2).sum(-1)
    assert torch.allclose(got, literal)
    # and it is ||d log pi(y|s) / d logits||^2
    zg = z.clone().requires_grad_(True)
    torch.log_softmax(zg, -1).gather(-1, y[..., None]).sum().backward()
    assert torch.allclose(got, (zg.grad**2).sum(-1))
    mask = torch.arange(T) < torch.tensor([5, 2, 0])[:, None]
    masked = score_norm_sq(z, torch.where(mask, y, -100), mask)
    assert torch.allclose(masked, literal * mask)


# ----------------------------------------------------------------------------------------
# Figure 2 estimators
# ----------------------------------------------------------------------------------------
def test_return_variance_bias_hand_checked():
    gen = torch.Generator().manual_seed(12)
    M, N, T, k = 3, 5, 9, 3
    q = torch.randn(M, N, T, generator=gen, dtype=torch.float64)
    v = torch.randn(M, N, T, generator=gen, dtype=torch.float64)
    lengths = torch.randint(1, T + 1, (M, N), generator=gen)
    mask = torch.arange(T) < lengths[..., None]
    out = return_variance_bias(q, v, mask, k)
    Gh = kstep_returns_loop(q.reshape(-1, T), v.reshape(-1, T), mask.reshape(-1, T), k).reshape(M, N, T)
    G = full_returns(q, v, mask)
    for m in range(M):
        assert math.isclose(out["var_seq"][m], Gh[m, :, 0].var().item(), rel_tol=1e-9)
        assert math.isclose(out["bias_seq"][m], (Gh[m, :, 0] - G[m, :, 0]).mean().item(), rel_tol=1e-9, abs_tol=1e-12)
        abs_bias = (Gh[m, :, 0] - G[m, :, 0]).abs().mean().item()
        assert math.isclose(out["abs_bias_seq"][m], abs_bias, rel_tol=1e-9, abs_tol=1e-12)
        var_t, bias_t = [], []
        for t in range(T):
            alive = [n for n in range(N) if t < lengths[m, n]]
            if len(alive) >= 2:
                var_t.append(Gh[m, alive, t].var().item())
            if alive:
                bias_t.append((Gh[m, alive, t] - G[m, alive, t]).mean().item())
        assert math.isclose(out["var_pos"][m], sum(var_t) / len(var_t), rel_tol=1e-9)
        assert math.isclose(out["bias_pos"][m], sum(bias_t) / len(bias_t), rel_tol=1e-9, abs_tol=1e-12)
    s = summarize_variance_bias(out)
    assert math.isclose(s["var_seq"], out["var_seq"].mean().item(), rel_tol=1e-9)
    assert s["n_inputs"] == M


def test_return_variance_bias_k1_has_zero_bias():
    gen = torch.Generator().manual_seed(13)
    q = torch.randn(2, 4, 6, generator=gen)
    v = torch.randn(2, 4, 6, generator=gen)
    mask = torch.ones(2, 4, 6, dtype=torch.bool)
    out = return_variance_bias(q, v, mask, 1)
    assert torch.allclose(out["bias_seq"], torch.zeros(2, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(out["bias_pos"], torch.zeros(2, dtype=torch.float64), atol=1e-12)
    one = return_variance_bias(q[:, :1], v[:, :1], mask[:, :1], 2)  # one sample: no variance
    assert torch.isnan(one["var_seq"]).all() and torch.isnan(one["var_pos"]).all()


# --------------------------------------------------------------------------- truncated rollouts
def _explicit_bootstrap(q_sa, v, mask, ended, k, tail, extra=40):
    """Append `extra` teacher-optimal steps (gap 0) after every cut row and run the recursion on
    the longer rows: the literal meaning of bootstrapping with the teacher's continuation."""
    from kdlib.maths.returns import kstep_returns_loop

    B, T = q_sa.shape
    q2 = torch.zeros(B, T + extra, dtype=torch.float64)
    v2 = torch.zeros_like(q2)
    m2 = torch.zeros(B, T + extra, dtype=torch.bool)
    q2[:, :T], v2[:, :T], m2[:, :T] = q_sa.double(), v.double(), mask
    for b in range(B):
        if not ended[b]:
            end = int(mask[b].nonzero().max())
            c = float(torch.randn(()))  # any value: an optimal step has q = v
            q2[b, end + 1: end + 1 + extra] = c
            v2[b, end + 1: end + 1 + extra] = c
            m2[b, end + 1: end + 1 + extra] = True
    return kstep_returns_loop(q2, v2, m2, k, tail=tail)[:, :T]


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("tail", ["algorithm1", "block", "clamp"])
def test_bootstrap_equals_an_explicit_teacher_optimal_continuation(k, tail):
    from kdlib.maths.returns import truncated_kstep_returns

    g = torch.Generator().manual_seed(k)
    B, T = 6, 13
    lens = torch.randint(3, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lens[:, None]
    v = torch.randn(B, T, generator=g, dtype=torch.float64) + 2
    q_sa = v - torch.rand(B, T, generator=g, dtype=torch.float64)  # gaps >= 0
    ended = torch.tensor([True, False, True, False, False, True])
    got = truncated_kstep_returns(q_sa, v, mask, ended, k, tail, "bootstrap")
    # the extra steps are far longer than any block, so the continuation's value telescopes fully
    want = _explicit_bootstrap(q_sa, v, mask, ended, k, tail if tail != "clamp" else "algorithm1")
    if tail == "clamp":  # finished rows keep the clamp tail; cut rows continue like the others
        want[ended] = truncated_kstep_returns(q_sa, v, mask, ended, k, "clamp", "keep")[ended]
    assert torch.allclose(got * mask, want * mask, atol=1e-9)
    keep = truncated_kstep_returns(q_sa, v, mask, ended, k, tail, "keep")
    assert torch.allclose(got[ended], keep[ended])
    if k == 1:  # telescoping: bootstrapping changes nothing for LLMR's reward-to-go
        assert torch.allclose(got, keep)
    drop = truncated_kstep_returns(q_sa, v, mask, ended, k, tail, "drop")
    assert (drop[~ended] == 0).all() and torch.allclose(drop[ended], keep[ended])
    with pytest.raises(ValueError, match="truncated must be"):
        truncated_kstep_returns(q_sa, v, mask, ended, k, tail, "cut")


# --------------------------------------------------------------------------- adaptive K
def test_adaptive_k_follows_the_exact_bias_of_each_sequence():
    from kdlib.maths.returns import (
        adaptive_k,
        kstep_returns_loop,
        kstep_returns_per_row,
    )

    T = 20
    mask = torch.ones(3, T, dtype=torch.bool)
    v = torch.randn(3, T, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 5
    q = v.clone()  # row 0: the student took the teacher's argmax everywhere (every gap 0)
    q[1] = v[1] - 2.0  # row 1: large gaps everywhere
    q[2, 10:] = v[2, 10:] - 0.05  # row 2: small gaps in the second half
    k = adaptive_k(q, v, mask, grid=(1, 2, 4, 8, 16), tol=0.1)
    assert k[0] == 16 and k[1] == 1  # no bias -> the largest K; any skipped gap too costly -> LLMR
    assert 1 < k[2] <= 16
    for row in range(3):  # the chosen K keeps the bias per token within tol at every position
        G = kstep_returns_loop(q[row:row + 1], v[row:row + 1], mask[row:row + 1], 1)[0]
        chosen = kstep_returns_loop(q[row:row + 1], v[row:row + 1], mask[row:row + 1], int(k[row]))[0]
        assert float((chosen - G).max()) / T <= 0.1 + 1e-12
    got = kstep_returns_per_row(q, v, mask, k)
    for row in range(3):
        assert torch.allclose(got[row], kstep_returns_loop(q[row:row + 1], v[row:row + 1], mask[row:row + 1], int(k[row]))[0])
    with pytest.raises(ValueError, match="must contain 1"):
        adaptive_k(q, v, mask, grid=(2, 4))


def test_adaptive_k_bounds_the_bias_at_every_position_not_only_the_first():
    """T = 48, teacher gaps of 5 nats only at positions 16 and 32: K = 16's block from t = 0 lands on both (zero bias
    at t = 0) while the blocks from t = 1..15 skip them (G^_t - G_t = 10 nats, twice the tolerance of 0.1 x 48)."""
    from kdlib.maths.returns import adaptive_k, full_returns, kstep_returns_loop

    T = 48
    mask = torch.ones(1, T, dtype=torch.bool)
    v = torch.randn(1, T, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    q = v.clone()
    q[0, [16, 32]] -= 5.0
    g16 = kstep_returns_loop(q, v, mask, 16)[0] - full_returns(q, v, mask)[0]
    assert abs(float(g16[0])) < 1e-9 and float(g16[1:16].min()) == pytest.approx(10.0)  # the trap G^_0 alone misses
    assert int(adaptive_k(q, v, mask, grid=(1, 2, 4, 8, 16), tol=0.1)) == 1  # every K > 1 skips a 5-nat gap somewhere
    q_small = v.clone()
    q_small[0, [16, 32]] -= 1.0  # 2 nats of skipped gaps at most: 2 / 48 <= 0.1 at every position
    assert int(adaptive_k(q_small, v, mask, grid=(1, 2, 4, 8, 16), tol=0.1)) == 16
