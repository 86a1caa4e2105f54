"""Clipped policy optimisation maths: GAE, whitening, GRPO / Mini-LLM advantages (kdlib.maths.returns),
PPO / GRPO / value losses, k3, chunked entropy and full-vocabulary KL, reward-model losses (kdlib.maths.losses).

Seeds 001 App. D, 003 Eqs. (4)-(8), 004 Eqs. (5), (7); spec seeds003_004 A2, B2, C2.
"""

import math
import statistics

import pytest
import torch

from kdlib.maths.advantages import (
    future_mean,
    gae,
    grpo_advantages,
    grpo_process_advantages,
    kl_penalised_rewards,
    minillm_advantages,
    terminal_rewards,
    whiten,
)
from kdlib.maths.full_vocab import entropy_from_logits, full_vocab_kl, token_entropy
from kdlib.maths.ppo_losses import (
    grpo_policy_loss,
    k3_kl,
    ppo_policy_loss,
    ppo_value_loss,
)
from kdlib.maths.reward_model import (
    rm_cls_loss,
    rm_loss,
    rm_pairwise_accuracy,
    rm_pref_loss,
)

NAN, INF = float("nan"), float("inf")


def _ragged_mask(N, L, gen, holes=True, min_len=0):
    """(N, L) action mask: ragged prefix lengths in [min_len, L], plus random holes inside."""
    lengths = torch.randint(min_len, L + 1, (N,), generator=gen)
    mask = torch.arange(L) < lengths[:, None]
    if holes:
        mask &= torch.rand(N, L, generator=gen) > 0.25
    return mask


def _poison(x, mask, value=NAN):
    """A copy of x with ``value`` written wherever mask is False."""
    return torch.where(mask, x, torch.full_like(x, value))


# ========================================================================================
# GAE
# ========================================================================================
def _gae_loop(r, V, mask, gamma, lam, next_value):
    """Literal per-row transcription: compress each row to its action positions, then recurse."""
    N, L = r.shape
    adv = torch.zeros(N, L, dtype=torch.float64)
    ret = torch.zeros(N, L, dtype=torch.float64)
    for i in range(N):
        pos = [t for t in range(L) if mask[i, t]]
        A_next, V_next = 0.0, float(next_value[i])
        for t in reversed(pos):
            delta = float(r[i, t]) + gamma * V_next - float(V[i, t])
            A = delta + gamma * lam * A_next
            adv[i, t], ret[i, t] = A, A + float(V[i, t])
            A_next, V_next = A, float(V[i, t])
    return adv, ret


def test_gae_hand_computed_with_a_calculator_hole():
    # one row, actions at 0, 1, 3 (2 is a calculator-inserted token), 4 is padding
    r = torch.tensor([[1.0, 0.0, 99.0, 2.0, 7.0]], dtype=torch.float64)
    V = torch.tensor([[0.5, 1.0, -50.0, 0.25, 3.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False, True, False]])
    adv, ret = gae(r, V, mask, gamma=0.5, lam=0.5)
    # delta_3 = 2 + 0.5*0 - 0.25 = 1.75;              A_3 = 1.75
    # delta_1 = 0 + 0.5*0.25 - 1 = -0.875;            A_1 = -0.875 + 0.25*1.75 = -0.4375
    # delta_0 = 1 + 0.5*1 - 0.5 = 1.0;                A_0 = 1.0 + 0.25*(-0.4375) = 0.890625
    expected = torch.tensor([[0.890625, -0.4375, 0.0, 1.75, 0.0]], dtype=torch.float64)
    assert torch.equal(adv, expected)
    assert torch.equal(ret, torch.where(mask, expected + V, 0.0))


@pytest.mark.parametrize("seed", range(4))
def test_gae_lambda_gamma_one_is_reward_to_go_minus_value(seed):
    gen = torch.Generator().manual_seed(seed)
    N, L = 6, 9
    r = torch.randn(N, L, generator=gen, dtype=torch.float64)
    V = torch.randn(N, L, generator=gen, dtype=torch.float64)
    mask = _ragged_mask(N, L, gen, holes=False)
    adv, ret = gae(r, V, mask, gamma=1.0, lam=1.0)
    rtg = torch.where(mask, r, 0.0).flip(-1).cumsum(-1).flip(-1)
    assert torch.allclose(adv, torch.where(mask, rtg - V, 0.0), atol=1e-12)
    assert torch.allclose(ret, torch.where(mask, rtg, 0.0), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_gae_lambda_zero_is_the_td_error(seed):
    gen = torch.Generator().manual_seed(seed)
    N, L, gamma = 5, 8, 0.9
    r = torch.randn(N, L, generator=gen, dtype=torch.float64)
    V = torch.randn(N, L, generator=gen, dtype=torch.float64)
    nv = torch.randn(N, generator=gen, dtype=torch.float64)
    mask = _ragged_mask(N, L, gen, holes=False)
    adv, _ = gae(r, V, mask, gamma=gamma, lam=0.0, next_value=nv)
    lengths = mask.sum(1)
    V_next = torch.cat([V[:, 1:], torch.zeros(N, 1, dtype=torch.float64)], 1)
    V_next[torch.arange(N)[lengths > 0], lengths[lengths > 0] - 1] = nv[lengths > 0]  # bootstrap at the end
    delta = r + gamma * V_next - V
    assert torch.allclose(adv, torch.where(mask, delta, 0.0), atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_gae_equals_a_literal_per_row_loop_on_ragged_rows_with_holes(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    N, L = 7, 11
    gamma = float(torch.rand((), generator=gen))
    lam = float(torch.rand((), generator=gen))
    r = torch.randn(N, L, generator=gen, dtype=torch.float64)
    V = torch.randn(N, L, generator=gen, dtype=torch.float64)
    nv = torch.randn(N, generator=gen, dtype=torch.float64)
    mask = _ragged_mask(N, L, gen)
    adv, ret = gae(r, V, mask, gamma=gamma, lam=lam, next_value=nv)
    adv_ref, ret_ref = _gae_loop(r, V, mask, gamma, lam, nv)
    assert torch.allclose(adv, adv_ref, atol=1e-12)
    assert torch.allclose(ret, ret_ref, atol=1e-12)
    # skipped positions (holes and padding) get exactly 0
    assert (adv[~mask] == 0).all() and (ret[~mask] == 0).all()


def test_gae_ignores_garbage_off_the_mask_and_is_detached():
    gen = torch.Generator().manual_seed(3)
    N, L = 4, 7
    r = torch.randn(N, L, generator=gen, requires_grad=True)
    V = torch.randn(N, L, generator=gen)
    mask = _ragged_mask(N, L, gen)
    clean = gae(r, V, mask)
    for bad in (NAN, INF, -INF):
        dirty = gae(_poison(r.detach(), mask, bad), _poison(V, mask, bad), mask)
        assert torch.equal(clean[0], dirty[0]) and torch.equal(clean[1], dirty[1])
    assert not clean[0].requires_grad
    assert clean[0].dtype == torch.float32


def test_gae_bad_arguments():
    x = torch.zeros(2, 3)
    m = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError):
        gae(x, torch.zeros(2, 4), m)
    with pytest.raises(ValueError):
        gae(x, x, m, gamma=1.5)
    with pytest.raises(ValueError):
        gae(x, x, m, next_value=torch.zeros(3))


# ========================================================================================
# PPO token rewards
# ========================================================================================
def test_terminal_and_kl_penalised_rewards():
    mask = torch.tensor([[True, True, False, True, False], [True, False, False, False, False],
                         [False, False, False, False, False]])
    score = torch.tensor([2.0, -5.0, 7.0], dtype=torch.float64)
    term = terminal_rewards(score, mask)
    assert torch.equal(term, torch.tensor([[0, 0, 0, 2.0, 0], [-5.0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
                                          dtype=torch.float64))
    logp = torch.tensor([[-1.0, -2.0, NAN, -0.5, INF]] * 3, dtype=torch.float64)
    logp_ref = torch.tensor([[-1.5, -1.0, 0.0, -0.5, NAN]] * 3, dtype=torch.float64)
    r = kl_penalised_rewards(score, logp, logp_ref, mask, beta=0.2)
    expected = torch.tensor([[-0.1, 0.2, 0, 2.0, 0], [-5.1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float64)
    assert torch.allclose(r, expected, atol=1e-15)
    # end to end with GAE (gamma = lam = 1): the advantage at t is the reward-to-go minus V
    adv, _ = gae(r, torch.zeros_like(r), mask, gamma=1.0, lam=1.0)
    assert torch.allclose(adv[0], torch.tensor([2.1, 2.2, 0, 2.0, 0], dtype=torch.float64))


# ========================================================================================
# whiten
# ========================================================================================
def test_whiten_hand_computed_and_garbage_free():
    x = torch.tensor([[1.0, 2.0, NAN], [3.0, INF, -INF]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    out = whiten(x, mask)
    # valid 1, 2, 3: mean 2, unbiased var 1
    s = 1.0 / math.sqrt(1.0 + 1e-8)
    assert torch.allclose(out, torch.tensor([[-s, 0.0, 0.0], [s, 0.0, 0.0]], dtype=torch.float64), atol=1e-15)
    kept = whiten(x, mask, shift_mean=False)
    assert torch.allclose(kept, torch.tensor([[2 - s, 2.0, 0.0], [2 + s, 0.0, 0.0]], dtype=torch.float64))
    biased = whiten(x, mask, unbiased=False)  # population var 2/3
    assert torch.allclose(biased[0, 0], torch.tensor(-1.0 / math.sqrt(2 / 3 + 1e-8), dtype=torch.float64))


def test_whiten_moments_and_degenerate_masks():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 9, generator=gen, dtype=torch.float64) * 3 + 7
    mask = _ragged_mask(5, 9, gen, min_len=3)
    w = whiten(x, mask, eps=0.0)
    assert torch.isclose(w[mask].mean(), torch.tensor(0.0, dtype=torch.float64), atol=1e-12)
    assert torch.isclose(w[mask].std(), torch.tensor(1.0, dtype=torch.float64))
    one = torch.zeros(5, 9, dtype=torch.bool)
    one[2, 4] = True
    assert (whiten(x, one) == 0).all()  # one valid entry: var 0, centred value 0
    assert (whiten(x, torch.zeros_like(one)) == 0).all()


# ========================================================================================
# GRPO advantages
# ========================================================================================
def test_grpo_constant_group_is_exactly_zero_and_shapes():
    r = torch.tensor([0.1] * 8 + [-20.3] * 8 + [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    A = grpo_advantages(r, 8)
    assert A.shape == (24,)
    assert torch.equal(A[:16], torch.zeros(16))
    assert (A[16:][r[16:] == 1] > 0).all() and (A[16:][r[16:] == 0] < 0).all()
    assert torch.equal(grpo_advantages(torch.randn(6), 1), torch.zeros(6))  # G = 1: no baseline but itself


def test_grpo_matches_a_literal_loop_biased_and_unbiased():
    gen = torch.Generator().manual_seed(0)
    r = torch.randn(12, generator=gen, dtype=torch.float64)
    for unbiased, std in ((True, statistics.stdev), (False, statistics.pstdev)):
        A = grpo_advantages(r, 4, unbiased=unbiased)
        for g in range(3):
            vals = r[4 * g: 4 * g + 4].tolist()
            mu, sd = statistics.fmean(vals), std(vals)
            assert torch.allclose(A[4 * g: 4 * g + 4], torch.tensor([(v - mu) / (sd + 1e-4) for v in vals],
                                                                     dtype=torch.float64))
    centred = grpo_advantages(r, 4, scale=False)
    assert torch.allclose(centred, (r.reshape(3, 4) - r.reshape(3, 4).mean(1, keepdim=True)).reshape(-1))


def test_grpo_reproduces_the_spec_mixed_group_numbers():
    # spec B2: rewards {1, 1, 0, 0, -20.2, -20.5, -20.1, -20.3} -> {1.05, 1.05, 0.95, 0.95, -0.99, -1.02, -0.98, -1.00}
    # (population std; the TRL-style unbiased default is the same times sqrt(7/8), up to eps)
    r = torch.tensor([1.0, 1.0, 0.0, 0.0, -20.2, -20.5, -20.1, -20.3], dtype=torch.float64)
    A = grpo_advantages(r, 8, unbiased=False)
    expected = torch.tensor([1.05, 1.05, 0.95, 0.95, -0.99, -1.02, -0.98, -1.00], dtype=torch.float64)
    assert torch.allclose(A, expected, atol=0.005)
    A_unb = grpo_advantages(r, 8)
    assert torch.allclose(A_unb, A * math.sqrt(7 / 8), rtol=1e-4)


def test_grpo_bad_group():
    with pytest.raises(ValueError):
        grpo_advantages(torch.zeros(7), 2)
    with pytest.raises(ValueError):
        grpo_advantages(torch.zeros(4, 1), 2)
    with pytest.raises(ValueError):
        grpo_advantages(torch.zeros(4), 0)


def _process_loop(r, mask, G, eps, unbiased):
    N, L = r.shape
    out = torch.zeros(N, L, dtype=torch.float64)
    for g in range(N // G):
        rows = range(g * G, g * G + G)
        vals = [float(r[i, t]) for i in rows for t in range(L) if mask[i, t]]
        if len(vals) < 2 or len(set(vals)) == 1:
            continue
        mu = statistics.fmean(vals)
        sd = statistics.stdev(vals) if unbiased else statistics.pstdev(vals)
        for i in rows:
            acc = 0.0
            for t in reversed(range(L)):
                if mask[i, t]:
                    acc += (float(r[i, t]) - mu) / (sd + eps)
                    out[i, t] = acc
    return out


@pytest.mark.parametrize("unbiased", [True, False])
def test_grpo_process_advantages_match_a_literal_loop(unbiased):
    gen = torch.Generator().manual_seed(1)
    N, L, G = 8, 6, 4
    r = torch.randn(N, L, generator=gen, dtype=torch.float64)
    mask = _ragged_mask(N, L, gen, min_len=1)
    A = grpo_process_advantages(_poison(r, mask), mask, G, unbiased=unbiased)
    assert torch.allclose(A, _process_loop(r, mask, G, 1e-4, unbiased), atol=1e-12)
    assert (A[~mask] == 0).all()
    const = torch.full((N, L), -20.0, dtype=torch.float64)
    assert torch.equal(grpo_process_advantages(const, mask, G), torch.zeros(N, L, dtype=torch.float64))


def test_future_mean_and_minillm_advantages_match_a_literal_loop():
    gen = torch.Generator().manual_seed(2)
    N, L, G = 6, 7, 3
    lt = torch.randn(N, L, generator=gen, dtype=torch.float64)
    ls = torch.randn(N, L, generator=gen, dtype=torch.float64)
    mask = _ragged_mask(N, L, gen, min_len=1)
    g = lt - ls
    fm = future_mean(_poison(g, mask), mask)
    r_long = torch.zeros(N, L, dtype=torch.float64)
    r0 = []
    for i in range(N):
        pos = [t for t in range(L) if mask[i, t]]
        for j, t in enumerate(pos):
            later = [float(g[i, u]) for u in pos[j + 1:]]
            r_long[i, t] = statistics.fmean(later) if later else 0.0
        r0.append(float(r_long[i, pos[0]]) if pos else 0.0)
    assert torch.allclose(fm, r_long, atol=1e-12)
    A = minillm_advantages(_poison(lt, mask, INF), _poison(ls, mask), mask, G)
    expected = torch.zeros(N, L, dtype=torch.float64)
    for grp in range(N // G):
        vals = r0[grp * G: grp * G + G]
        mu, sd = statistics.fmean(vals), statistics.stdev(vals)
        for i in range(grp * G, grp * G + G):
            expected[i] = torch.where(mask[i], (r_long[i] - mu) / (sd + 1e-4), 0.0)
    assert torch.allclose(A, expected, atol=1e-12)


# ========================================================================================
# PPO / GRPO policy loss
# ========================================================================================
def test_ppo_ratio_one_is_minus_mean_advantage_and_reinforce_gradient():
    gen = torch.Generator().manual_seed(0)
    N, L = 4, 6
    logp = (-torch.rand(N, L, generator=gen, dtype=torch.float64)).requires_grad_(True)
    A = torch.randn(N, L, generator=gen, dtype=torch.float64)
    mask = _ragged_mask(N, L, gen, min_len=1)
    loss, stats = ppo_policy_loss(logp, logp.detach(), A, mask)
    n = mask.sum()
    assert torch.isclose(loss, -A[mask].sum() / n)
    assert stats["clip_fraction"] == 0 and stats["approx_kl"] == 0 and stats["ratio_mean"] == 1
    loss.backward()
    assert torch.allclose(logp.grad, torch.where(mask, -A / n, 0.0))


def test_ppo_clipped_branch_has_zero_gradient_in_the_advantage_direction():
    eps = 0.2
    log_r = torch.log(torch.tensor([[1.5, 0.5, 1.5, 0.5, 1.1, 0.9]], dtype=torch.float64))
    A = torch.tensor([[1.0, -1.0, -1.0, 1.0, 1.0, -1.0]], dtype=torch.float64)
    logp_old = torch.full_like(log_r, -1.0)
    logp = (logp_old + log_r).requires_grad_(True)
    mask = torch.ones_like(A, dtype=torch.bool)
    loss, stats = ppo_policy_loss(logp, logp_old, A, mask, clip_eps=eps)
    loss.backward()
    g = logp.grad[0]
    # rho = 1.5 with A > 0 and rho = 0.5 with A < 0: clipped, no gradient
    assert g[0] == 0 and g[1] == 0
    # the other direction stays unclipped (pessimistic bound): gradient -A rho / n
    rho = log_r.exp()[0]
    assert torch.isclose(g[2], -A[0, 2] * rho[2] / 6) and torch.isclose(g[3], -A[0, 3] * rho[3] / 6)
    assert torch.isclose(g[4], -A[0, 4] * rho[4] / 6) and torch.isclose(g[5], -A[0, 5] * rho[5] / 6)
    # loss: per token max(-A rho, -A clip(rho))
    per = [-1.2, 0.8, 1.5, -0.5, -1.1, 0.9]
    assert torch.isclose(loss, torch.tensor(sum(per) / 6, dtype=torch.float64))
    assert torch.isclose(stats["clip_fraction"], torch.tensor(2 / 6, dtype=torch.float64))
    k3 = [(r - 1) - math.log(r) for r in (1.5, 0.5, 1.5, 0.5, 1.1, 0.9)]
    assert torch.isclose(stats["approx_kl"], torch.tensor(sum(k3) / 6, dtype=torch.float64))
    assert torch.isclose(stats["ratio_mean"], torch.tensor(6.0 / 6, dtype=torch.float64))


def test_ppo_masked_positions_get_no_gradient_even_with_garbage():
    gen = torch.Generator().manual_seed(1)
    N, L = 3, 5
    logits = torch.randn(N, L, 7, generator=gen, requires_grad=True)
    actions = torch.randint(0, 7, (N, L), generator=gen)
    logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)
    mask = _ragged_mask(N, L, gen, min_len=1)
    logp_old = _poison(logp.detach() + 0.1 * torch.randn(N, L, generator=gen), mask, -INF)
    A = _poison(torch.randn(N, L, generator=gen), mask, NAN)
    loss, stats = ppo_policy_loss(logp, logp_old, A, mask)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
    assert (logits.grad[~mask] == 0).all()
    assert torch.isfinite(logits.grad).all()


def test_ppo_aggregations_and_sequence_advantages():
    logp_old = torch.zeros(2, 3, dtype=torch.float64)
    logp = logp_old.clone().requires_grad_(True)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    A = torch.tensor([[1.0, 2.0, 3.0], [4.0, NAN, NAN]], dtype=torch.float64)
    tm, _ = ppo_policy_loss(logp, logp_old, A, mask)
    sm, _ = ppo_policy_loss(logp, logp_old, A, mask, aggregation="sequence_mean")
    ss, _ = ppo_policy_loss(logp, logp_old, A, mask, aggregation="sequence_sum")
    assert tm.item() == pytest.approx(-10 / 4)
    assert sm.item() == pytest.approx(-(2.0 + 4.0) / 2)
    assert ss.item() == pytest.approx(-(6.0 + 4.0) / 2)
    seq_A = torch.tensor([0.5, -2.0], dtype=torch.float64)
    a, _ = ppo_policy_loss(logp, logp_old, seq_A, mask)
    b, _ = ppo_policy_loss(logp, logp_old, seq_A[:, None].expand(2, 3), mask)
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        ppo_policy_loss(logp, logp_old, A, mask, aggregation="mean")


def test_k3_and_grpo_policy_loss():
    logp = torch.log(torch.tensor([[0.5, 0.25]], dtype=torch.float64)).requires_grad_(True)
    logp_ref = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    mask = torch.tensor([[True, True]])
    k3 = k3_kl(logp, logp_ref, mask)
    assert torch.allclose(k3, torch.tensor([[0.0, 2.0 - math.log(2.0) - 1.0]], dtype=torch.float64))
    assert torch.equal(k3_kl(logp, _poison(logp_ref, torch.tensor([[True, False]]), NAN),
                             torch.tensor([[True, False]])), torch.zeros(1, 2, dtype=torch.float64))
    A = torch.tensor([1.0], dtype=torch.float64)
    base, _ = ppo_policy_loss(logp, logp.detach(), A, mask)
    same, _ = grpo_policy_loss(logp, logp.detach(), A, mask)
    assert torch.equal(base, same)
    with_kl, stats = grpo_policy_loss(logp, logp.detach(), A, mask, beta=0.1, logp_ref=logp_ref)
    assert torch.isclose(with_kl, base + 0.1 * k3.sum() / 2)
    assert torch.isclose(stats["ref_kl"], k3.sum() / 2)
    with pytest.raises(ValueError):
        grpo_policy_loss(logp, logp.detach(), A, mask, beta=0.1)


# ========================================================================================
# value loss
# ========================================================================================
def test_ppo_value_loss_hand_computed():
    values = torch.tensor([[1.0, 0.0, 5.0, 2.0]], dtype=torch.float64, requires_grad=True)
    values_old = torch.tensor([[0.0, 0.0, 0.0, NAN]], dtype=torch.float64)
    returns = torch.tensor([[0.0, 1.0, 1.0, INF]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    loss, stats = ppo_value_loss(values, values_old, returns, mask, clip_eps=0.2)
    # t0: (1-0)^2 = 1 vs (0.2-0)^2 = 0.04 -> 1;  t1: 1 vs 1 -> 1;  t2: 16 vs (0.2-1)^2 = 0.64 -> 16
    assert loss.item() == pytest.approx(0.5 * (1 + 1 + 16) / 3)
    assert stats["value_clip_fraction"].item() == 0.0
    loss.backward()
    assert torch.isfinite(values.grad).all() and values.grad[0, 3] == 0
    # V moved towards the target past the clip range: the clipped error is the larger one (pessimistic)
    loss2, stats2 = ppo_value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]),
                                   torch.tensor([[True]]))
    assert loss2.item() == pytest.approx(0.5 * 1.8**2) and stats2["value_clip_fraction"].item() == 1.0
    loss3, _ = ppo_value_loss(values, values_old, returns, mask, clip_eps=None)
    assert loss3.item() == pytest.approx(0.5 * (1 + 1 + 16) / 3)


# ========================================================================================
# chunked entropy and full-vocabulary KL
# ========================================================================================
def _naive_kl(s, t, floor=1e-8):
    logp = torch.log_softmax(s, -1)
    log_mu = torch.log_softmax(t, -1).clamp_min(math.log(floor))
    p = logp.exp()
    return torch.where(p > 0, p * (logp - log_mu), 0.0).sum(-1)


def _logits(seed, N=3, L=5, V=13, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    s = (torch.randn(N, L, V, generator=gen, dtype=dtype) * 2).requires_grad_(True)
    t = torch.randn(N, L, V, generator=gen, dtype=dtype) * 2
    mask = _ragged_mask(N, L, gen, min_len=1)
    return s, t, mask


def test_full_vocab_kl_identical_logits_is_zero():
    s, _, mask = _logits(0)
    kl = full_vocab_kl(s, s.detach().clone(), mask)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 1, 2, 5, 1000])
def test_full_vocab_kl_chunked_equals_unchunked_values_and_gradients(chunk):
    s, t, mask = _logits(1)
    w = torch.randn(mask.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    kl = full_vocab_kl(s, t, mask, chunk_size=chunk)
    (kl * w).sum().backward()
    g = s.grad.clone()
    s.grad = None
    ref = torch.where(mask, _naive_kl(s, t), 0.0)
    (ref * w).sum().backward()
    assert torch.allclose(kl, ref, atol=1e-12)
    assert torch.allclose(g, s.grad, atol=1e-12)
    assert (g[~mask] == 0).all()


def test_full_vocab_kl_floor_keeps_it_finite_where_the_teacher_has_no_mass():
    s = torch.tensor([[[0.0, 0.0]]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[[0.0, -INF]]], dtype=torch.float64)
    mask = torch.tensor([[True]])
    kl = full_vocab_kl(s, t, mask, floor=1e-8)
    # pi = (1/2, 1/2), mu = (1, floor): KL = 1/2 log(1/2) + 1/2 (log(1/2) - log 1e-8)
    expected = 0.5 * math.log(0.5) + 0.5 * (math.log(0.5) - math.log(1e-8))
    assert kl.item() == pytest.approx(expected, rel=1e-12)
    kl.sum().backward()
    assert torch.isfinite(s.grad).all()
    # the student's own zero-mass tokens contribute 0 (no NaN from 0 * -inf)
    s2 = torch.tensor([[[0.0, -INF, 0.0]]], dtype=torch.float64, requires_grad=True)
    t2 = torch.zeros(1, 1, 3, dtype=torch.float64)
    kl2 = full_vocab_kl(s2, t2, mask)
    assert kl2.item() == pytest.approx(math.log(0.5) - math.log(1 / 3))
    kl2.sum().backward()
    assert torch.isfinite(s2.grad).all() and s2.grad[0, 0, 1] == 0


def test_full_vocab_kl_masked_positions_are_zero_and_garbage_free():
    s, t, mask = _logits(2)
    clean = full_vocab_kl(s, t, mask)
    s_bad = torch.where(mask[..., None], s, NAN)
    t_bad = torch.where(mask[..., None], t, INF)
    dirty = full_vocab_kl(s_bad, t_bad, mask)
    assert torch.equal(clean, dirty) and (dirty[~mask] == 0).all()
    dirty.sum().backward()
    assert torch.isfinite(s.grad).all() and (s.grad[~mask] == 0).all()


def test_full_vocab_kl_different_vocab_sizes_use_the_shared_prefix():
    s, t, mask = _logits(3, V=13)
    t_wide = torch.cat([t, torch.full((*t.shape[:-1], 4), 50.0, dtype=t.dtype)], -1)  # teacher padding rows
    s_wide = torch.cat([s, torch.full((*s.shape[:-1], 2), 30.0, dtype=s.dtype)], -1).detach().requires_grad_(True)
    ref = torch.where(mask, _naive_kl(s.detach(), t), 0.0)
    assert torch.allclose(full_vocab_kl(s.detach(), t_wide, mask), ref, atol=1e-12)
    kl = full_vocab_kl(s_wide, t, mask)  # student wider: sliced to 13 and renormalised
    assert torch.allclose(kl, ref, atol=1e-12)
    kl.sum().backward()
    assert (s_wide.grad[..., 13:] == 0).all()


def test_full_vocab_kl_float32_from_bf16_and_teacher_is_constant():
    s, t, mask = _logits(4, dtype=torch.float32)
    s_bf = s.detach().bfloat16().requires_grad_(True)
    t_bf = t.bfloat16().requires_grad_(True)
    kl = full_vocab_kl(s_bf, t_bf, mask)
    assert kl.dtype == torch.float32
    ref = torch.where(mask, _naive_kl(s_bf.detach().float(), t_bf.detach().float()), 0.0)
    assert torch.allclose(kl, ref, atol=1e-6)
    kl.sum().backward()
    assert s_bf.grad.dtype == torch.bfloat16 and t_bf.grad is None


def test_full_vocab_kl_saves_no_vocabulary_sized_copy_for_backward():
    s, t, mask = _logits(5, N=4, L=8, V=257, dtype=torch.float32)
    saved = []

    def pack(x):
        saved.append((x.data_ptr(), x.numel()))
        return x

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        full_vocab_kl(s, t, mask, chunk_size=3).sum().backward()
    inputs = {s.data_ptr(), t.data_ptr()}
    big = [(ptr, n) for ptr, n in saved if n >= s.shape[-1]]
    assert big and all(ptr in inputs for ptr, _ in big)  # only the two logits tensors themselves

    # the unchunked autograd formula, for contrast, keeps (N, L, V) intermediates
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        _naive_kl(s, t).sum().backward()
    assert any(ptr not in inputs and n >= s.numel() for ptr, n in saved)


def test_token_entropy_uniform_and_matches_autograd():
    V = 11
    uniform = torch.zeros(2, 3, V, dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    H = token_entropy(uniform, mask)
    assert torch.allclose(H, torch.where(mask, math.log(V), 0.0).double())
    assert entropy_from_logits(uniform, mask).item() == pytest.approx(math.log(V))
    s, _, mask = _logits(6)
    w = torch.randn(mask.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for chunk in (None, 1, 4):
        s.grad = None
        (token_entropy(s, mask, chunk_size=chunk) * w).sum().backward()
        g = s.grad.clone()
        s.grad = None
        logp = torch.log_softmax(s, -1)
        ref = torch.where(mask, -(logp.exp() * logp).sum(-1), 0.0)
        (ref * w).sum().backward()
        assert torch.allclose(g, s.grad, atol=1e-12)
    assert torch.allclose(token_entropy(s, mask), ref)
    with pytest.raises(ValueError):
        token_entropy(s, mask, chunk_size=0)
    # a -inf logit has probability 0 and contributes 0, with a finite gradient
    z = torch.tensor([[[0.0, -INF, 0.0]]], dtype=torch.float64, requires_grad=True)
    H = token_entropy(z, torch.tensor([[True]]))
    assert H.item() == pytest.approx(math.log(2))
    H.sum().backward()
    assert torch.isfinite(z.grad).all() and z.grad[0, 0, 1] == 0


# ========================================================================================
# reward model (seed 003 Eqs. (4)-(6))
# ========================================================================================
def test_rm_losses_at_zero_scores():
    s = torch.zeros(5, 3)
    assert rm_cls_loss(s).item() == pytest.approx(math.log(2))
    assert rm_pref_loss(s).item() == pytest.approx(2 * math.log(2))
    assert rm_loss(s).item() == pytest.approx(2.5 * math.log(2))
    assert rm_loss(s, lam=0.0).item() == pytest.approx(2 * math.log(2))


def test_rm_losses_hand_computed():
    s = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 1.5]], dtype=torch.float64)

    def sig(x):
        return 1 / (1 + math.exp(-x))

    cls = -(math.log(sig(2.0)) + math.log(sig(0.5)) + math.log(1 - sig(-1.0))
            + math.log(sig(0.0)) + math.log(sig(1.0)) + math.log(1 - sig(1.5))) / 6
    pref = -(math.log(sig(1.5)) + math.log(sig(-1.0))) / 2 - (math.log(sig(1.5)) + math.log(sig(-0.5))) / 2
    assert rm_cls_loss(s).item() == pytest.approx(cls)
    assert rm_pref_loss(s).item() == pytest.approx(pref)
    assert rm_loss(s, lam=0.5).item() == pytest.approx(pref + 0.5 * cls)
    assert rm_pairwise_accuracy(s) == {"pos_neg": 0.5, "pos_pos": 0.5}
    with pytest.raises(ValueError):
        rm_loss(torch.zeros(4, 2))


def test_one_gradient_step_orders_teacher_above_student_positive_above_negative():
    s = torch.zeros(4, 3, requires_grad=True)
    rm_loss(s).backward()
    with torch.no_grad():
        s -= 0.1 * s.grad
    assert (s[:, 0] > s[:, 1]).all() and (s[:, 1] > s[:, 2]).all()


def test_fold_to_actions_moves_calculator_rewards_to_the_action_before():
    from kdlib.maths.advantages import fold_to_actions

    r = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 9.0], [1.0, 1.0, 1.0, 0.0, 7.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    act = torch.tensor([[1, 0, 0, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)  # positions 1, 2 forced
    out = fold_to_actions(r, act, mask)
    assert out.tolist() == [[6.0, 0.0, 0.0, 4.0, 5.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]]
    assert torch.allclose(out.sum(1), torch.where(mask, r, 0.0).sum(1))


def test_explained_variance_by_hand():
    from kdlib.maths.advantages import explained_variance

    targets = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True], [False, False, False, False]])
    assert explained_variance(targets, targets, mask) == 1.0  # a perfect critic
    assert explained_variance(torch.zeros_like(targets), targets - 2.5, mask) == pytest.approx(0.0)  # V = 0, centred G
    half = targets.clone()
    half[0] = torch.tensor([1.5, 1.5, 3.5, 3.5])  # residuals +-0.5: Var 0.25 of Var 1.25 -> EV 0.8
    assert explained_variance(half, targets, mask) == pytest.approx(0.8)
    garbage = targets.clone()
    garbage[1] = 1e9  # masked positions never count
    assert explained_variance(targets, garbage, mask) == 1.0
    assert math.isnan(explained_variance(targets, targets, torch.zeros_like(mask)))


def test_ppo_critic_has_its_own_learning_rate(tmp_path):
    """ppo.vf_lr puts the critic head in its own AdamW group (scheduled with the policy's warm-up and decay);
    ppo.critic_warmup fits the critic on the first rollout before any policy update, which raises its explained
    variance on that batch."""
    from kdlib.config import load_params
    from kdlib.trainers.base import lr_factor, make_optimizer, set_lr

    p = load_params("params/smoke/kit.yaml", **{"ppo.vf_lr": 1e-2, "ppo.lr": 1e-4})
    from kdlib.modeling.models import attach_head, build_model

    model = build_model("tiny-t5:micro", vocab_size=50, arch="seq2seq", seed=0)
    attach_head(model)
    opt = make_optimizer(model, p.ppo)
    assert [g["base_lr"] for g in opt.param_groups] == [1e-4, 1e-2]
    set_lr(opt, p.ppo, 0)
    f = lr_factor(p.ppo, 0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4 * f, 1e-2 * f])
    plain = make_optimizer(model, load_params("params/smoke/kit.yaml", **{"ppo.vf_lr": None}).ppo)
    assert len(plain.param_groups) == 1  # no vf_lr: one group, as before


def test_position_buckets_match_a_literal_loop_on_ragged_rows():
    from kdlib.maths.advantages import position_bucket_mean_sq

    g = torch.Generator().manual_seed(3)
    delta = torch.randn(4, 9, generator=g)
    mask = torch.zeros(4, 9, dtype=torch.bool)
    for i, (start, n) in enumerate(((0, 9), (0, 3), (2, 6), (1, 4))):
        mask[i, start:start + n] = True
    mask[2, 4] = False  # a calculator insertion inside a row: not an action
    got = position_bucket_mean_sq(delta, mask, 3)
    sums, counts = [0.0] * 3, [0] * 3
    for i in range(4):
        pos = [t for t in range(9) if mask[i, t]]
        for r, t in enumerate(pos):
            k = min(2, (3 * r) // len(pos))
            sums[k] += float(delta[i, t]) ** 2
            counts[k] += 1
    assert got == pytest.approx([s / c for s, c in zip(sums, counts)])
    # one action per row: everything is early, the other buckets are empty
    one = torch.zeros(2, 5, dtype=torch.bool)
    one[:, 0] = True
    e, m, late = position_bucket_mean_sq(delta[:2, :5], one, 3)
    assert e == pytest.approx(float((delta[:2, 0] ** 2).mean())) and math.isnan(m) and math.isnan(late)


def test_td_by_position_reads_the_last_half_and_respects_the_critic_precondition():
    import pandas as pd

    from kdlib.studies.ppo import td_by_position

    rows = []
    for seed in (1, 2):
        for step in (0, 1, 2, 3):
            for b, v in (("early", 1.0), ("middle", 2.0), ("late", 4.0)):
                rows.append({"task": "t", "method": "llmr_ppo", "seed": seed, "step": step,
                             "series": f"TD error^2, {b} third", "value": v if step >= 2 else 100.0})
            rows.append({"task": "t", "method": "llmr_ppo", "seed": seed, "step": step,
                         "series": "explained variance", "value": 0.9})
    table, lines = td_by_position(pd.DataFrame(rows))
    assert table.iloc[0]["late_over_early"] == pytest.approx(4.0) and "GROWS" in lines[0]
    low = pd.DataFrame(rows).assign(value=lambda d: d.value.where(d.series != "explained variance", 0.1))
    _, lines = td_by_position(low)
    assert "NOT TESTED" in lines[0]
