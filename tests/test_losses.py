"""Properties of kdlib.losses: REINFORCE loss (seed 000 Eq. (8)), token-level divergences, NLL."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlib.losses import js_divergence, kl_divergence, policy_gradient_loss, sequence_nll, tvd

DIVERGENCES = [kl_divergence, js_divergence, tvd]


def _logits(seed, B=3, T=5, V=11, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * scale
    t = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * scale
    mask = torch.arange(T) < torch.randint(1, T + 1, (B, 1), generator=gen)
    return s, t, mask


# ----------------------------------------------------------------------------------------
# policy gradient
# ----------------------------------------------------------------------------------------
def test_policy_gradient_loss_hand_computed():
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    G = torch.tensor([[2.0, 1.0], [4.0, 5.0]])
    am = torch.tensor([[True, True], [True, False]])
    # sum of G * logp over actions = 2*(-1) + 1*(-2) + 4*(-0.5) = -6
    assert torch.isclose(policy_gradient_loss(logp, G, am), torch.tensor(3.0))  # / B = 2
    assert torch.isclose(policy_gradient_loss(logp, G, am, normalize="tokens"), torch.tensor(2.0))  # / 3
    policy_gradient_loss(logp, G, am).backward()
    assert torch.equal(logp.grad, torch.tensor([[-1.0, -0.5], [-2.0, 0.0]]))  # -G * mask / B
    with pytest.raises(ValueError):
        policy_gradient_loss(logp, G, am, normalize="mean")


def test_forced_tokens_get_no_gradient_and_returns_are_constants():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, 9, generator=gen, requires_grad=True)
    actions = torch.randint(0, 9, (2, 6), generator=gen)
    logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)  # (B, T)
    G = torch.randn(2, 6, generator=gen, requires_grad=True)
    am = torch.ones(2, 6, dtype=torch.bool)
    am[0, 2] = am[1, 4:] = False  # calculator-forced token and padding
    policy_gradient_loss(logp, G, am).backward()
    assert G.grad is None  # G is detached inside the loss
    assert (logits.grad[~am] == 0).all()
    assert (logits.grad[am].abs().sum(-1) > 0).all()


def test_policy_gradient_ignores_nan_at_masked_positions():
    logp = torch.tensor([[-1.0, float("-inf")]], requires_grad=True)
    G = torch.tensor([[2.0, float("nan")]])
    loss = policy_gradient_loss(logp, G, torch.tensor([[True, False]]))
    assert torch.isclose(loss, torch.tensor(2.0))
    loss.backward()
    assert torch.isfinite(logp.grad).all()


# ----------------------------------------------------------------------------------------
# divergences
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", DIVERGENCES)
def test_identical_logits_give_zero(fn):
    s, _, mask = _logits(1)
    assert abs(fn(s, s.clone(), mask).item()) < 1e-12


@pytest.mark.parametrize("fn", DIVERGENCES)
def test_nonnegative_and_gradient_flows_to_student_only(fn):
    s, t, mask = _logits(2)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss = fn(s, t, mask)
    assert loss.item() > 0
    loss.backward()
    assert t.grad is None
    assert s.grad is not None and s.grad[mask].abs().sum() > 0
    assert (s.grad[~mask] == 0).all()  # padded positions do not count


def test_kl_matches_torch_kl_div():
    s, t, mask = _logits(3)
    per_tok = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="none", log_target=True).sum(-1)
    expected = per_tok[mask].mean()
    assert torch.isclose(kl_divergence(s, t, mask), expected)
    # temperature: tau^2 * KL of the tempered distributions
    per_tok2 = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), reduction="none", log_target=True).sum(-1)
    assert torch.isclose(kl_divergence(s, t, mask, temperature=2.0), 4.0 * per_tok2[mask].mean())


def test_js_formula_symmetry_and_bounds():
    s, t, mask = _logits(4, scale=5.0)
    p, q = torch.softmax(t, -1), torch.softmax(s, -1)
    for beta in (0.5, 0.2, 0.9):
        m = beta * p + (1 - beta) * q
        direct = beta * (p * (p / m).log()).sum(-1) + (1 - beta) * (q * (q / m).log()).sum(-1)
        assert torch.isclose(js_divergence(s, t, mask, beta=beta), direct[mask].mean())
        # swapping the roles of teacher and student mirrors beta
        assert torch.isclose(js_divergence(s, t, mask, beta=beta), js_divergence(t, s, mask, beta=1 - beta))
        h = -beta * math.log(beta) - (1 - beta) * math.log(1 - beta)
        assert js_divergence(s, t, mask, beta=beta).item() <= h
    assert torch.isclose(js_divergence(s, t, mask), js_divergence(t, s, mask))  # symmetric at 0.5
    # disjoint one-hot-ish distributions reach log 2
    a = torch.full((1, 1, 4), -60.0, dtype=torch.float64)
    b = a.clone()
    a[..., 0] = b[..., 1] = 60.0
    one = torch.ones(1, 1, dtype=torch.bool)
    assert math.isclose(js_divergence(a, b, one).item(), math.log(2), rel_tol=1e-9)
    with pytest.raises(ValueError):
        js_divergence(s, t, mask, beta=0.0)


def test_tvd_bounds_and_disjoint():
    s, t, mask = _logits(5, scale=10.0)
    d = tvd(s, t, mask).item()
    assert 0 < d <= 1
    p, q = torch.softmax(t, -1), torch.softmax(s, -1)
    assert math.isclose(d, (0.5 * (p - q).abs().sum(-1))[mask].mean().item(), rel_tol=1e-12)
    a = torch.full((2, 3, 5), -60.0, dtype=torch.float64)
    b = a.clone()
    a[..., 0] = 60.0
    b[..., 3] = 60.0
    assert math.isclose(tvd(a, b, torch.ones(2, 3, dtype=torch.bool)).item(), 1.0, rel_tol=1e-9)


def test_divergences_are_stable_for_extreme_logits():
    s, t, mask = _logits(6, scale=1.0)
    s = s * 1e4
    t = t * 1e4
    for fn in DIVERGENCES:
        assert torch.isfinite(fn(s, t, mask))


@pytest.mark.parametrize("fn", DIVERGENCES)
def test_minus_inf_logits_are_handled(fn):
    # masked vocabulary slots (-inf logits) in both models: finite loss, finite gradient
    s, t, mask = _logits(9)
    s[..., 0] = float("-inf")
    t[..., 0] = float("-inf")
    t[..., 1] = float("-inf")
    s.requires_grad_(True)
    loss = fn(s, t, mask)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(s.grad).all()
    # a slot that both models rule out changes nothing
    assert torch.isclose(loss, fn(s.detach()[..., 1:], t[..., 1:], mask))


def test_shape_mismatch_raises():
    s, t, mask = _logits(7)
    with pytest.raises(ValueError):
        kl_divergence(s, t[..., :-1], mask)
    with pytest.raises(ValueError):
        tvd(s, t, mask[:, :-1])


# ----------------------------------------------------------------------------------------
# sequence NLL
# ----------------------------------------------------------------------------------------
def test_sequence_nll_matches_cross_entropy():
    s, _, mask = _logits(8)
    gen = torch.Generator().manual_seed(8)
    y = torch.randint(0, s.shape[-1], mask.shape, generator=gen)
    y_ignored = torch.where(mask, y, -100)
    expected = F.cross_entropy(s.reshape(-1, s.shape[-1]), y_ignored.reshape(-1), ignore_index=-100)
    assert torch.isclose(sequence_nll(s, y_ignored, mask), expected)
    # hand case: uniform over V gives log V
    V = 7
    uniform = sequence_nll(torch.zeros(1, 2, V), torch.tensor([[3, 0]]), torch.ones(1, 2, dtype=torch.bool))
    assert math.isclose(uniform.item(), math.log(V), rel_tol=1e-6)
