"""Today's on-policy distillation maths against direct computation and literal loops on ragged batches."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlib.maths.onpolicy import generalized_jsd, opd_advantages, skew_kl, skew_rkl
from kdlib.maths.returns import full_returns, teacher_q


def _batch(seed=0, N=3, L=5, V=7):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(N, L, V, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(N, L, V, generator=g, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)[:N, :L]
    return s, t, mask


def _kl(p, q):  # KL(p || q) for probability vectors, literally
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p.tolist(), q.tolist()) if pi > 0)


def _loop_mean(s, t, mask, fn):
    vals = [fn(F.softmax(s[n, l].detach(), -1), F.softmax(t[n, l], -1)) for n in range(s.shape[0])
            for l in range(s.shape[1]) if mask[n, l]]
    return sum(vals) / len(vals)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_generalized_jsd_against_direct_computation(beta):
    s, t, mask = _batch()

    def direct(ps, pt):
        if beta == 0.0:
            return _kl(pt, ps)  # forward KL(p_T || p_S)
        if beta == 1.0:
            return _kl(ps, pt)  # reverse KL(p_S || p_T)
        m = beta * pt + (1 - beta) * ps
        return beta * _kl(pt, m) + (1 - beta) * _kl(ps, m)

    got = generalized_jsd(s, t, beta, mask, chunk_size=2)
    assert float(got.detach()) == pytest.approx(_loop_mean(s, t, mask, direct), rel=1e-10)
    got.backward()
    assert s.grad is not None and float(s.grad[~mask].abs().sum()) == 0.0  # padding gets no gradient


def test_skew_kl_and_rkl_against_direct_computation():
    s, t, mask = _batch(1)
    a = 0.1
    want_kl = _loop_mean(s, t, mask, lambda ps, pt: _kl(pt, a * pt + (1 - a) * ps))
    want_rkl = _loop_mean(s, t, mask, lambda ps, pt: _kl(ps, a * ps + (1 - a) * pt))
    assert float(skew_kl(s, t, a, mask).detach()) == pytest.approx(want_kl, rel=1e-10)
    assert float(skew_rkl(s, t, a, mask, chunk_size=1).detach()) == pytest.approx(want_rkl, rel=1e-10)
    assert skew_kl(s, t, 0.0, mask).item() == pytest.approx(generalized_jsd(s, t, 0.0, mask).item(), rel=1e-12)


def test_chunking_and_padding_never_change_a_value():
    s, t, mask = _batch(2)
    ref = generalized_jsd(s, t, 0.5, mask)
    assert generalized_jsd(s, t, 0.5, mask, chunk_size=1).item() == pytest.approx(ref.item(), rel=1e-12)
    s2, t2 = s.detach().clone(), t.clone()
    s2[~mask], t2[~mask] = 1e6, -1e6  # garbage at padded positions
    assert generalized_jsd(s2, t2, 0.5, mask).item() == pytest.approx(ref.item(), rel=1e-12)
    grads = []
    for chunk in (None, 1):
        x = s.detach().clone().requires_grad_(True)
        generalized_jsd(x, t, 0.5, mask, chunk_size=chunk).backward()
        grads.append(x.grad)
    assert torch.allclose(grads[0], grads[1])  # checkpointed chunks: the same gradient


def _opd_loop(lt, ls, mask, gamma):
    N, L = mask.shape
    out = torch.zeros(N, L, dtype=torch.float64)
    for n in range(N):
        valid = [i for i in range(L) if mask[n, i]]
        for j, t in enumerate(valid):
            out[n, t] = sum(gamma ** (k - j) * float(lt[n, valid[k]] - ls[n, valid[k]]) for k in range(j, len(valid)))
    return out


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_opd_advantages_against_a_literal_loop_on_ragged_rows_with_holes(gamma):
    g = torch.Generator().manual_seed(3)
    lt, ls = -torch.rand(3, 6, generator=g, dtype=torch.float64) * 3, -torch.rand(3, 6, generator=g, dtype=torch.float64) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    got = opd_advantages(lt, ls, mask, gamma)
    assert torch.allclose(got, _opd_loop(lt, ls, mask, gamma))
    if gamma == 0.0:
        assert torch.equal(got, torch.where(mask, lt - ls, torch.zeros(())))  # the per-token log ratio
    lt2 = lt.clone()
    lt2[~mask] = float("nan")  # padding never leaks
    assert torch.allclose(opd_advantages(lt2, ls, mask, gamma), got)


def test_the_soft_value_turns_llmr_reward_to_go_into_teacher_log_probs_plus_the_present_logit():
    """With v = logsumexp z, G_t = q_t(y_t) + sum_{i>t} log pi_T(y_i | s_i), and G_t minus the teacher half of OPD's
    undiscounted return is the soft value v_t, a per-state baseline."""
    g = torch.Generator().manual_seed(4)
    z = torch.randn(2, 6, 9, generator=g, dtype=torch.float64)
    y = torch.randint(0, 9, (2, 6), generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    for normalize in ("raw", "mean"):
        q_sa, v = teacher_q(z, y, mask, normalize=normalize, value="soft")
        G = full_returns(q_sa, v, mask)
        logp_t = torch.where(mask, F.log_softmax(z, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1), torch.zeros(()))
        future = torch.flip(torch.cumsum(torch.flip(logp_t, [-1]), -1), [-1]) - logp_t  # sum_{i > t}
        assert torch.allclose(G, torch.where(mask, q_sa + future, torch.zeros(())))
        teacher_half = opd_advantages(logp_t, torch.zeros_like(logp_t), mask, gamma=1.0)
        assert torch.allclose(torch.where(mask, G - teacher_half, torch.zeros(())), v)
    q_max, v_max = teacher_q(z, y, mask, value="max")
    assert torch.all(v_max <= teacher_q(z, y, mask, value="soft")[1] + 1e-12)  # max <= logsumexp
    with pytest.raises(ValueError, match="value must be one of"):
        teacher_q(z, y, mask, value="hard")


# ---------------------------------------------------------------- MiniLLM and DistiLLM pieces
from kdlib.maths.onpolicy import (  # noqa: E402
    FIXED,
    FRESH,
    REPLAY,
    distillm_source,
    distillm_threshold,
    minillm_long_term,
    mix_logits,
    teacher_mix_weights,
)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.9])
def test_mix_logits_is_the_log_of_the_mixed_distribution(alpha):
    s, t, _ = _batch(1)
    got = mix_logits(s.detach(), t, alpha)
    want = torch.log(alpha * F.softmax(t, -1) + (1 - alpha) * F.softmax(s.detach(), -1))
    assert torch.allclose(got, want, atol=1e-12)
    assert torch.allclose(got.exp().sum(-1), torch.ones(got.shape[:-1], dtype=got.dtype))
    with pytest.raises(ValueError):
        mix_logits(s, t, 1.0)


@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_teacher_mix_weights_against_a_literal_loop(alpha):
    g = torch.Generator().manual_seed(3)
    ls = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 3
    lt = -torch.rand(3, 5, generator=g, dtype=torch.float64) * 3
    _, _, mask = _batch()
    w = teacher_mix_weights(ls, lt, mask, alpha)
    for n in range(3):
        for l in range(5):
            q, p = math.exp(ls[n, l]), math.exp(lt[n, l])
            want = q / (alpha * p + (1 - alpha) * q) if mask[n, l] else 0.0
            assert w[n, l].item() == pytest.approx(want, rel=1e-12)
    assert float(w.max()) <= 1 / (1 - alpha) + 1e-12


def test_minillm_long_term_is_the_mean_of_the_strictly_future_log_ratios():
    g = torch.Generator().manual_seed(4)
    ls = -torch.rand(3, 6, generator=g, dtype=torch.float64) * 3
    lt = -torch.rand(3, 6, generator=g, dtype=torch.float64) * 3
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)  # a hole
    R = minillm_long_term(lt, ls, mask, whiten_batch=False)
    for n in range(3):
        valid = [l for l in range(6) if mask[n, l]]
        for l in range(6):
            fut = [float(lt[n, u] - ls[n, u]) for u in valid if u > l]
            want = sum(fut) / len(fut) if (mask[n, l] and fut) else 0.0
            assert R[n, l].item() == pytest.approx(want, abs=1e-12)
    W = minillm_long_term(lt, ls, mask, whiten_batch=True)
    vals = R[mask]
    assert torch.allclose(W[mask], (vals - vals.mean()) / vals.std(), atol=1e-6)
    assert bool((W[~mask] == 0).all())


def test_distillm_schedule_follows_algorithm_1():
    # phi = 0: the fixed outputs only
    assert {distillm_source(u, 0.0, 5, 100, 0, 10) for u in (0.0, 0.3, 0.99)} == {FIXED}
    # below the decreasing share s = phi (1 - (step + 1) / steps): fresh student outputs
    assert distillm_source(0.1, 0.5, 9, 100, 10, 10) == FRESH  # s = 0.45
    # between s and phi with a full buffer: replay; with room left: fresh
    assert distillm_source(0.48, 0.5, 9, 100, 10, 10) == REPLAY
    assert distillm_source(0.48, 0.5, 9, 100, 3, 10) == FRESH
    assert distillm_source(0.6, 0.5, 9, 100, 10, 10) == FIXED
    # the share grows by 0.1 once the dev loss has risen by eps over the reference, which then moves
    assert distillm_threshold(0.0, 2.0, 2.05, 0.1) == (0.0, 2.0)
    assert distillm_threshold(0.0, 2.0, 2.1, 0.1) == (0.1, 2.1)
    assert distillm_threshold(0.95, 2.0, 3.0, 0.1) == (1.0, 3.0)
