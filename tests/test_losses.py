"""Properties of kdlib.maths.losses: REINFORCE loss (seed 000 Eq. (8)), token-level divergences, NLL."""

import math

import pytest
import torch
import torch.nn.functional as F

from kdlib.maths.losses import (
    authors_code_pg_loss,
    js_divergence,
    js_stepwise_terms,
    kl_divergence,
    policy_gradient_loss,
    sequence_nll,
    tvd,
    tvd_per_token,
    wen_js_divergence,
    wen_tvd,
)

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
# the authors' learning signal (spec seed001_brim_extras.md Sec. 8.2 item 2)
# ----------------------------------------------------------------------------------------
def test_authors_code_pg_loss_gradient_equals_a_hand_written_loop():
    gen = torch.Generator().manual_seed(30)
    B, T, V, c = 2, 4, 5, 3.0
    logits = (torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 2).requires_grad_(True)
    actions = torch.randint(0, V, (B, T), generator=gen)
    G = torch.randn(B, T, generator=gen, dtype=torch.float64) * 20  # large: some rho * G get clipped
    am = torch.tensor([[True, True, False, True], [True, True, True, False]])  # a forced token, a pad
    logp = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)  # (B, T)
    loss = authors_code_pg_loss(logp, G, am, reward_clip=c)
    loss.backward()

    # by hand: loss = -(1/N) sum_{valid} s_bt log pi(a_bt), s = clip(pi(a_bt) G_bt, -c, c) a constant,
    # so d loss / d logits[b, t] = -(s_bt / N) (onehot(a_bt) - softmax(logits[b, t]))
    n = int(am.sum())
    expected_loss = 0.0
    expected_grad = torch.zeros(B, T, V, dtype=torch.float64)
    clipped = 0
    for b in range(B):
        for t in range(T):
            if not am[b, t]:
                continue
            probs = torch.softmax(logits.detach()[b, t], -1)
            rho = float(probs[actions[b, t]])
            s_bt = min(max(rho * float(G[b, t]), -c), c)
            clipped += abs(rho * float(G[b, t])) > c
            expected_loss += -s_bt * math.log(rho) / n
            onehot = torch.zeros(V, dtype=torch.float64)
            onehot[actions[b, t]] = 1.0
            expected_grad[b, t] = -(s_bt / n) * (onehot - probs)
    assert 0 < clipped < n  # the case exercises both branches of the clip
    assert math.isclose(loss.item(), expected_loss, rel_tol=1e-12)
    assert torch.allclose(logits.grad, expected_grad, atol=1e-12)


def test_authors_code_pg_loss_clips_rho_times_G_not_G():
    # rho = 0.5 at both tokens. G = 150: rho G = 75 stays (clipping G first would give 50);
    # G = 300: rho G = 150 -> 100 (clipping G first would give 50). Gradient wrt logp = -s / N,
    # with no term from rho (it is detached).
    logp = torch.full((1, 2), math.log(0.5), dtype=torch.float64, requires_grad=True)
    G = torch.tensor([[150.0, 300.0]], dtype=torch.float64, requires_grad=True)
    am = torch.ones(1, 2, dtype=torch.bool)
    loss = authors_code_pg_loss(logp, G, am, reward_clip=100.0)
    assert math.isclose(loss.item(), -(75.0 + 100.0) * math.log(0.5) / 2, rel_tol=1e-12)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-75.0 / 2, -100.0 / 2]], dtype=torch.float64))
    assert G.grad is None
    # the paper's form for comparison: clip G, no rho, mean over tokens
    paper = policy_gradient_loss(logp.detach(), G.clamp(-100, 100), am, normalize="tokens")
    assert not math.isclose(loss.item(), paper.item())
    # padding (-inf log-prob, NaN return) neither enters the loss nor makes NaN gradients
    logp2 = torch.tensor([[math.log(0.5), float("-inf")]], requires_grad=True)
    loss2 = authors_code_pg_loss(logp2, torch.tensor([[150.0, float("nan")]]), torch.tensor([[True, False]]))
    assert math.isclose(loss2.item(), -75.0 * math.log(0.5), rel_tol=1e-6)
    loss2.backward()
    assert torch.isfinite(logp2.grad).all()
    with pytest.raises(ValueError):
        authors_code_pg_loss(logp2, G, am, reward_clip=0.0)


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
# Wen et al. (2023): step-wise JS and TVD on teacher AND student prefixes
# ----------------------------------------------------------------------------------------
V_TOY = 3


def _toy(seed):
    """A two-step toy: teacher p and student q over a vocabulary of 3, as logit tables.
    Step 0 logits (V,); step 1 logits (V, V) indexed by the first token."""
    gen = torch.Generator().manual_seed(seed)
    tab = [torch.randn(V_TOY, generator=gen, dtype=torch.float64) * 1.5 for _ in range(2)]
    tab1 = [torch.randn(V_TOY, V_TOY, generator=gen, dtype=torch.float64) * 1.5 for _ in range(2)]
    return (tab[0], tab1[0]), (tab[1], tab1[1])  # (teacher P0, P1), (student Q0, Q1)


def _logits_on(seqs, table0, table1):
    """(B, 2, V) logits of a model on the sequences (a0, a1): position 0 scores a0 given the
    empty prefix, position 1 scores a1 given a0."""
    a0 = seqs[:, 0]
    return torch.stack([table0.expand(len(seqs), V_TOY), table1[a0]], dim=1)


def _kl(a, b):
    return sum(x * math.log(x / y) for x, y in zip(a, b))


def _closed_forms(teacher, student, beta):
    """J_JS and J_TVD of the two-step toy in plain Python floats (no kdlib code)."""
    p0, p1 = torch.softmax(teacher[0], -1).tolist(), torch.softmax(teacher[1], -1).tolist()
    q0, q1 = torch.softmax(student[0], -1).tolist(), torch.softmax(student[1], -1).tolist()

    def mix(a, b):
        return [beta * x + (1 - beta) * y for x, y in zip(a, b)]

    def tv(a, b):
        return 0.5 * sum(abs(x - y) for x, y in zip(a, b))

    m0 = mix(p0, q0)
    js = (beta * (_kl(p0, m0) + sum(p0[a] * _kl(p1[a], mix(p1[a], q1[a])) for a in range(V_TOY)))
          + (1 - beta) * (_kl(q0, m0) + sum(q0[a] * _kl(q1[a], mix(p1[a], q1[a])) for a in range(V_TOY))))
    on_p = tv(p0, q0) + sum(p0[a] * tv(p1[a], q1[a]) for a in range(V_TOY))
    on_q = tv(p0, q0) + sum(q0[a] * tv(p1[a], q1[a]) for a in range(V_TOY))
    seq_tvd = 0.5 * sum(abs(p0[a] * p1[a][b] - q0[a] * q1[a][b]) for a in range(V_TOY) for b in range(V_TOY))
    return js, 0.5 * on_p + 0.5 * on_q, (seq_tvd, on_p, on_q)


def _all_sequences():
    return torch.tensor([[a, b] for a in range(V_TOY) for b in range(V_TOY)])  # (9, 2)


def _seq_probs(seqs, table0, table1):
    p0, p1 = torch.softmax(table0, -1), torch.softmax(table1, -1)
    return p0[seqs[:, 0]] * p1[seqs[:, 0], seqs[:, 1]]  # (B,)


@pytest.mark.parametrize("beta", [0.5, 0.2])
def test_wen_estimators_with_exact_prefix_probabilities_equal_the_closed_form(beta):
    teacher, student = _toy(40)
    js_exact, tvd_exact, (seq_tvd, on_p, on_q) = _closed_forms(teacher, student, beta)
    seqs = _all_sequences()
    s_l, t_l = _logits_on(seqs, *student), _logits_on(seqs, *teacher)  # (9, 2, V)
    mask = torch.ones(len(seqs), 2, dtype=torch.bool)
    w_p, w_q = _seq_probs(seqs, *teacher), _seq_probs(seqs, *student)  # (9,): P(y), Q(y)
    args = (s_l, t_l, mask, s_l, t_l, mask)  # both halves see every sequence, weighted differently
    js = wen_js_divergence(*args, beta=beta, normalize="batch", weights_tp=w_p, weights_sp=w_q)
    assert math.isclose(js.item(), js_exact, rel_tol=1e-12)
    tv = wen_tvd(*args, normalize="batch", weights_tp=w_p, weights_sp=w_q)
    assert math.isclose(tv.item(), tvd_exact, rel_tol=1e-12)
    # "tokens": every sequence has 2 steps, so the token mean is half the sum over steps
    js_tok = wen_js_divergence(*args, beta=beta, normalize="tokens", weights_tp=w_p, weights_sp=w_q)
    assert math.isclose(js_tok.item(), js_exact / 2, rel_tol=1e-12)
    # Wen et al.'s bounds: the sequence-level TVD is below both step-wise sums
    assert seq_tvd <= on_p + 1e-12 and seq_tvd <= on_q + 1e-12
    # the step-wise pieces themselves
    kl_pm, kl_qm = js_stepwise_terms(s_l, t_l, beta)
    assert kl_pm.shape == kl_qm.shape == tvd_per_token(s_l, t_l).shape == (9, 2)


@pytest.mark.parametrize("beta", [0.5, 0.2])
def test_wen_estimators_monte_carlo_average_converges_to_the_closed_form(beta):
    teacher, student = _toy(41)
    js_exact, tvd_exact, _ = _closed_forms(teacher, student, beta)
    gen = torch.Generator().manual_seed(42)

    def sample(table0, table1, n):
        a0 = torch.multinomial(torch.softmax(table0, -1).expand(n, V_TOY), 1, generator=gen)[:, 0]
        a1 = torch.multinomial(torch.softmax(table1, -1)[a0], 1, generator=gen)[:, 0]
        return torch.stack([a0, a1], dim=1)  # (n, 2)

    js_vals, tv_vals = [], []
    n_batches, B = 100, 256
    mask = torch.ones(B, 2, dtype=torch.bool)
    for _ in range(n_batches):
        y_p, y_q = sample(*teacher, B), sample(*student, B)  # teacher prefixes, student prefixes
        args = (_logits_on(y_p, *student), _logits_on(y_p, *teacher), mask,
                _logits_on(y_q, *student), _logits_on(y_q, *teacher), mask)
        js_vals.append(wen_js_divergence(*args, beta=beta, normalize="batch").item())
        tv_vals.append(wen_tvd(*args, normalize="batch").item())
    for vals, exact in ((js_vals, js_exact), (tv_vals, tvd_exact)):
        x = torch.tensor(vals, dtype=torch.float64)
        mean, se = x.mean().item(), (x.std() / math.sqrt(n_batches)).item()
        assert se < 0.01 * exact  # the test has the power to see a wrong objective
        assert abs(mean - exact) < 4 * se, (mean, exact, se)


def test_wen_estimators_handle_ragged_prefixes_and_gradients():
    s1, t1, m1 = _logits(50, B=3, T=5)
    s2, t2, m2 = _logits(51, B=4, T=7)
    s1.requires_grad_(True)
    s2.requires_grad_(True)
    beta = 0.3
    got = wen_js_divergence(s1, t1, m1, s2, t2, m2, beta=beta)
    kl_pm, _ = js_stepwise_terms(s1, t1, beta)
    _, kl_qm = js_stepwise_terms(s2, t2, beta)
    assert torch.isclose(got, beta * kl_pm[m1].mean() + (1 - beta) * kl_qm[m2].mean())
    got.backward()
    assert (s1.grad[~m1] == 0).all() and (s2.grad[~m2] == 0).all()
    assert s1.grad[m1].abs().sum() > 0 and s2.grad[m2].abs().sum() > 0
    tv = wen_tvd(s1.detach(), t1, m1, s2.detach(), t2, m2, normalize="batch")
    assert torch.isclose(tv, 0.5 * tvd_per_token(s1, t1)[m1].sum() / 3 + 0.5 * tvd_per_token(s2, t2)[m2].sum() / 4)
    # each half on its own prefixes: identical student and teacher give 0
    assert wen_tvd(t1, t1, m1, t2, t2, m2).item() == 0.0
    with pytest.raises(ValueError):
        wen_tvd(s1, t1, m1, s2, t2, m2, normalize="mean")
    with pytest.raises(ValueError):
        wen_js_divergence(s1, t1, m1, s2, t2, m2, weights_tp=torch.ones(2))


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


def test_full_vocab_statistics_stay_float32_under_bf16_autocast():
    """A bf16 paper-profile step runs PPO's entropy and the KL under autocast: the chunked statistics must not
    mix dtypes (the rehearsal found `Index put requires the source and destination dtypes match`)."""
    from kdlib.maths.full_vocab import full_vocab_kl, token_entropy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 11, generator=g).to(torch.bfloat16).requires_grad_(True)
    teacher = torch.randn(2, 3, 11, generator=g).to(torch.bfloat16)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        H = token_entropy(logits, mask)
        kl = full_vocab_kl(logits, teacher, mask)
    assert H.dtype == torch.float32 and kl.dtype == torch.float32
    want = -(torch.softmax(logits.float(), -1) * torch.log_softmax(logits.float(), -1)).sum(-1) * mask
    assert torch.allclose(H, want, atol=1e-5)
    (H.sum() + kl.sum()).backward()
    assert logits.grad is not None and logits.grad.dtype == torch.bfloat16
