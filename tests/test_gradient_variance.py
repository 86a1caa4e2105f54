"""Issue 13: the policy-gradient variance is measured from random projections of per-sample
gradients (forward-mode derivatives of the token log-probabilities)."""

import math

import numpy as np
import pytest
import torch

from kdlib.maths.stats import projected_cosine, projected_gradient_stats


def test_scripted_policy_matches_the_analytic_gradient_variance():
    """A context-free softmax policy over V tokens, T independent tokens per sample, constant
    return c: g = c sum_t (e_{a_t} - pi), so tr Cov(g) = c^2 T (1 - |pi|^2) and E g = 0."""
    from torch.func import jvp

    V, T, N, c = 6, 5, 4000, 2.0
    theta = torch.tensor([0.5, -0.3, 1.0, 0.0, -1.0, 0.2], dtype=torch.float64)
    pi = torch.softmax(theta, 0)
    g = torch.Generator().manual_seed(0)
    actions = torch.multinomial(pi.expand(N, V), T, replacement=True, generator=g)  # (N, T)

    def logp(th):
        return torch.log_softmax(th, 0)[actions]  # (N, T)

    dirs = [torch.randn(V, generator=g, dtype=torch.float64) for _ in range(400)]
    tan = torch.stack([jvp(logp, (theta,), (d,))[1] for d in dirs])  # (r, N, T)
    P = (c * tan).sum(-1).numpy()  # projections of g_n
    s = projected_gradient_stats(P)
    analytic = c * c * T * (1 - float((pi ** 2).sum()))
    assert abs(s["trace_var"] - analytic) / analytic < 0.1  # random directions: within sampling error
    assert s["mean_sq"] < 0.05 * analytic  # E g = 0
    # With the full orthonormal basis instead of random directions the estimate is exact:
    basis = torch.eye(V, dtype=torch.float64)
    tanb = torch.stack([jvp(logp, (theta,), (basis[i],))[1] for i in range(V)])
    Pb = (c * tanb).sum(-1).numpy()
    grads = (c * (torch.nn.functional.one_hot(actions, V).double() - pi).sum(1)).numpy()  # (N, V) closed form
    assert math.isclose(projected_gradient_stats(Pb, "basis")["trace_var"], grads.var(axis=0, ddof=1).sum(), rel_tol=1e-9)


def test_k1_has_zero_gradient_bias_and_cosine_is_scale_free():
    P = np.random.default_rng(0).normal(size=(16, 50)) + 1.0
    assert projected_cosine(P, P) == pytest.approx(1.0)
    assert projected_cosine(P, 3.0 * P) == pytest.approx(1.0) and projected_cosine(P, -P) == pytest.approx(-1.0)


def test_projection_estimator_equals_the_full_vector_estimator_on_a_tiny_model():
    """Per-sample gradients of sum_t G_t log pi(y_t|s_t) w.r.t. a parameter block, computed by
    backward one sample at a time, against projections on that block's orthonormal basis through
    the kit's forward-mode pipeline: same trace variance, mean and cosines."""
    from transformers import T5Config, T5ForConditionalGeneration

    from kdlib.modeling.models import forward_logits
    from kdlib.studies.gradient_variance import logprob_jvps

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=23, d_model=8, d_ff=16, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=4,
                   dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    model = T5ForConditionalGeneration(cfg).double().eval()
    name = "decoder.block.0.layer.2.DenseReluDense.wo.weight"  # 8 x 16 = 128 parameters
    N, T = 6, 5
    src = torch.randint(2, 23, (N, 7))
    sm = torch.ones_like(src, dtype=torch.bool)
    y = torch.randint(2, 23, (N, T))
    ym = torch.ones_like(y, dtype=torch.bool)
    G = {k: torch.randn(N, T, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) for k in (1, 2)}
    param = dict(model.named_parameters())[name]
    basis = [{name: e.reshape(param.shape)} for e in torch.eye(param.numel(), dtype=torch.float64)]
    tan = logprob_jvps(model, "seq2seq", src, sm, y, ym, basis)  # (128, N, T)
    full = {}
    for k, Gk in G.items():
        rows = []
        for n in range(N):
            model.zero_grad()
            logits = forward_logits(model, "seq2seq", src[n:n + 1], sm[n:n + 1], y[n:n + 1], ym[n:n + 1])
            logp = torch.log_softmax(logits, -1).gather(-1, y[n:n + 1, :, None]).squeeze(-1)
            (Gk[n:n + 1] * logp).sum().backward()
            rows.append(param.grad.flatten().clone())
        full[k] = torch.stack(rows).numpy()  # (N, 128) per-sample gradients
        P = (tan * Gk.unsqueeze(0)).sum(-1).detach().numpy()  # (128, N)
        # Exact up to rounding: the library's T5LayerNorm computes its variance in float32 even in a
        # float64 model, and forward- and reverse-mode round there differently (float32 precision).
        assert np.allclose(P.T, full[k], rtol=1e-5, atol=1e-5), float(np.abs(P.T - full[k]).max())
        s = projected_gradient_stats(P, "basis")
        assert math.isclose(s["trace_var"], full[k].var(axis=0, ddof=1).sum(), rel_tol=1e-6)
        m = full[k].mean(axis=0)
        assert math.isclose(s["mean_sq"], max(0.0, (m ** 2).sum() - s["trace_var"] / N), rel_tol=1e-5, abs_tol=1e-9)
    m1, m2 = full[1].mean(0), full[2].mean(0)
    cos = (m1 * m2).sum() / np.sqrt((m1 ** 2).sum() * (m2 ** 2).sum())
    P1 = (tan * G[1].unsqueeze(0)).sum(-1).detach().numpy()
    P2 = (tan * G[2].unsqueeze(0)).sum(-1).detach().numpy()
    assert projected_cosine(P1, P2) == pytest.approx(cos, rel=1e-6)


def test_curve_shapes_are_named_honestly():
    from kdlib.studies.gradient_variance import curve_shape

    ks = [1, 2, 4, 8, 16]
    assert curve_shape(ks, [5, 4, 3, 2, 1]) == "falls monotonically"
    assert curve_shape(ks, [5, 3, 2, 3, 6]) == "U-shaped (lowest at K=4)"
    assert curve_shape(ks, [1, 2, 3, 4, 5]) == "rises"


def _projections(rng, r, M, N, delta, snr=0.1):
    """Synthetic projections of per-sample gradients on r random directions: an unbiased estimator g_1 (mean mu, a
    per-input effect, per-sample noise; |E g_1| / sqrt(tr Var g) = snr) and g_K = g_1 + delta + extra zero-mean noise
    (the K-step return's gradient: noisier, and biased by exactly delta)."""
    mu = rng.normal(size=(r, 1, 1))
    sd = np.sqrt((mu ** 2).mean()) / snr
    p1 = mu + rng.normal(scale=sd / 3, size=(r, M, 1)) + rng.normal(scale=sd, size=(r, M, N))
    pk = p1 + delta.reshape(r, 1, 1) + rng.normal(scale=sd, size=(r, M, N))
    return pk, p1, float((mu ** 2).mean())


def test_relative_bias_is_centred_on_zero_for_an_unbiased_estimator_where_1_minus_cos_is_not():
    from kdlib.maths.stats import projected_cosine, projected_relative_bias

    rng = np.random.default_rng(0)
    r, M, N = 32, 16, 16
    rel, one_minus_cos, covered = [], [], 0
    for _ in range(60):
        pk, p1, _ = _projections(rng, r, M, N, delta=np.zeros(r))
        out = projected_relative_bias(pk, p1)
        rel.append(out["rel_bias"])
        covered += out["rel_bias_low"] <= 0.0 <= out["rel_bias_high"]
        one_minus_cos.append(1 - projected_cosine(pk.reshape(r, -1), p1.reshape(r, -1)))
    assert abs(np.mean(rel)) < 3 * np.std(rel) / np.sqrt(len(rel))  # centred on the true 0
    assert np.mean(one_minus_cos) > 0.03  # the old measure reports "bias" for an unbiased estimator
    assert covered >= 50  # the CI covers 0 in most replications


def test_relative_bias_recovers_a_known_bias():
    from kdlib.maths.stats import projected_relative_bias

    rng = np.random.default_rng(1)
    r, M, N = 32, 64, 16
    delta = rng.normal(size=r)
    pk, p1, signal = _projections(rng, r, M, N, delta=delta, snr=0.5)
    out = projected_relative_bias(pk, p1)
    truth = float((delta ** 2).mean()) / signal
    assert out["rel_bias_low"] <= truth <= out["rel_bias_high"]
    assert out["rel_bias"] == pytest.approx(truth, rel=0.35)
    zero = projected_relative_bias(p1, p1)
    assert zero["bias_sq"] == 0.0 and zero["rel_bias"] == 0.0  # the same estimator: no bias, exactly
