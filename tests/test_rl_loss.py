"""The REINFORCE family's batch loss: truncated rollouts and the authors'-code switch."""

import torch

from kdlib.config import RLParams
from kdlib.maths import returns
from kdlib.maths.losses import authors_code_pg_loss, policy_gradient_loss
from kdlib.trainers.rl import rl_loss


def _batch(seed=0, B=5, T=9):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(3, T + 1, (B,), generator=g)
    mask = torch.arange(T)[None] < lens[:, None]
    v = torch.randn(B, T, generator=g) + 3
    q = v - torch.rand(B, T, generator=g)
    logp = (-torch.rand(B, T, generator=g)).requires_grad_(True)
    ended = torch.tensor([True, False, True, True, False])
    return logp, q, v, mask, ended


def test_dropped_rollouts_get_no_gradient_and_do_not_count():
    logp, q, v, mask, ended = _batch()
    for method in ("llmr", "llmr_mean", "ketchup"):
        rp = RLParams(truncated="drop", k=4)
        loss, G = rl_loss(method, logp, q, v, mask, mask, ended, rp)
        (grad,) = torch.autograd.grad(loss, logp)
        assert (grad[~ended] == 0).all() and (grad[ended][mask[ended]] != 0).any()
        assert (G[~ended] == 0).all()
    # the mean over the kept rollouts: the loss equals the same loss on the kept rows alone
    rp = RLParams(truncated="drop")
    loss, _ = rl_loss("llmr", logp, q, v, mask, mask, ended, rp)
    kept = ended
    ref, _ = rl_loss("llmr", logp[kept], q[kept], v[kept], mask[kept], mask[kept], ended[kept], rp)
    assert torch.allclose(loss, ref)


def test_keep_treats_every_rollout_as_finished():
    logp, q, v, mask, ended = _batch(1)
    rp = RLParams(truncated="keep", k=2)
    loss, G = rl_loss("ketchup", logp, q, v, mask, mask, ended, rp)
    want = returns.clip_rewards(returns.kstep_returns(q, v, mask, 2), -100, 100) * mask
    assert torch.allclose(G, want)
    assert torch.allclose(loss, policy_gradient_loss(logp, want, mask))


def test_authors_code_switch_uses_clamp_tail_and_the_rho_weighted_signal():
    logp, q, v, mask, ended = _batch(2)
    rp = RLParams(compat="authors_code", truncated="keep", k=4, reward_clip=50.0)
    loss, G = rl_loss("ketchup", logp, q, v, mask, mask, ended, rp)
    clamp = returns.kstep_returns(q, v, mask, 4, tail="clamp") * mask
    assert torch.allclose(G, clamp)
    assert torch.allclose(loss, authors_code_pg_loss(logp, clamp, mask, 50.0))
    loss_mean, _ = rl_loss("llmr_mean", logp, q, v, mask, mask, ended, rp)
    loss_minvar, _ = rl_loss("llmr_minvar", logp, q, v, mask, mask, ended, rp)
    assert torch.allclose(loss_mean, loss_minvar)  # the code's min-variance baseline is its mean baseline
    G1 = returns.kstep_returns(q, v, mask, 1) * mask
    b = returns.authors_code_baseline(logp.detach().exp() * G1, mask)
    assert torch.allclose(loss_mean, authors_code_pg_loss(logp, G1, mask, 50.0, baseline=b))


def test_sampling_generators_live_on_the_accelerators_device(monkeypatch, tmp_path):
    """Every sampled rollout used a CPU torch.Generator, which crashes torch.multinomial / rand on
    CUDA logits: the REINFORCE and divergence families must build theirs on accelerator.device."""
    from types import SimpleNamespace

    from kdlib.chains.core import _teacher_model, ensure_predistill
    from kdlib.config import load_params
    from kdlib.trainers import divergence as div_mod
    from kdlib.trainers import rl as rl_mod
    from kdlib.trainers.base import micro_generator
    from kdlib.trainers.tasks import load_model, load_task_bundle

    assert micro_generator(1, 2, 3, 0, "cpu").device.type == "cpu"
    p = load_params("params/smoke/kit.yaml", cache_dir=str(tmp_path), **{"task.n_train": 32, "teacher.steps": 2,
                                                                        "predistill.steps": 2})
    pre = ensure_predistill(p)
    task = load_task_bundle(p)
    teacher = _teacher_model(p, task)
    model = load_model(p, task, p.models.student, checkpoint=str(pre.best_dir))
    seen = []

    def spy(seed, step, micro, rank, device=None):  # None: the caller did not say where
        seen.append(None if device is None else torch.device(device))
        return micro_generator(seed, step, micro, rank, device or "cpu")

    # "cpu:0" stands in for an accelerator: it differs from the default "cpu", so a family that
    # does not pass its device is caught (a CUDA machine is not needed for that).
    acc = SimpleNamespace(device=torch.device("cpu", 0), process_index=0, unwrap_model=lambda m: m)
    monkeypatch.setattr(rl_mod, "micro_generator", spy)
    monkeypatch.setattr(div_mod, "micro_generator", spy)
    rl_mod.rl_micro_loss("llmr", teacher, task, p.rl, acc, 0)(model, [0, 1], 0, 0)
    div_mod.divergence_micro_loss("js", teacher, task, [""] * 32, p.divergence, acc, 0)(model, [0, 1], 0, 0)
    assert seen == [acc.device, acc.device]


def test_opd_is_reinforce_with_the_per_token_log_ratio_as_its_return():
    """On-policy reverse KL in the REINFORCE family: the loss is -sum_t A_t log pi(y_t) / B with A_t the (discounted)
    log ratio of teacher to student on the student's own tokens, and no gradient through A."""
    from kdlib.maths.onpolicy import opd_advantages

    g = torch.Generator().manual_seed(0)
    B, T = 3, 5
    logp = (-torch.rand(B, T, generator=g, dtype=torch.float64)).requires_grad_(True)
    t_logp = -torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    ended = torch.tensor([True, True, True])
    for gamma in (0.0, 1.0):
        rp = RLParams(opd_gamma=gamma)
        q = torch.zeros(B, T, dtype=torch.float64)
        loss, A = rl_loss("opd", logp, q, q, mask, mask, ended, rp, t_logp=t_logp)
        want_A = opd_advantages(t_logp, logp.detach(), mask, gamma)
        assert torch.allclose(A, want_A)
        assert torch.allclose(loss, -(want_A * logp * mask).sum() / B)
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.allclose(grad, -want_A * mask / B)  # A is a constant: REINFORCE's gradient


def test_opd_and_soft_value_ketchup_train_end_to_end_with_their_own_runs(tmp_path):
    from kdlib.chains.core import run_for, train
    from kdlib.config import load_params

    base = load_params("params/smoke/kit.yaml", **{"cache_dir": str(tmp_path), "task.name": "mini-xsum"})
    plain = run_for(base.model_copy(update={"method": "ketchup"}))
    soft_p = load_params("params/smoke/kit.yaml", **{"cache_dir": str(tmp_path), "task.name": "mini-xsum",
                                                      "method": "ketchup", "rl.value": "soft"})
    soft = train(soft_p)
    opd = train(load_params("params/smoke/kit.yaml", **{"cache_dir": str(tmp_path), "task.name": "mini-xsum",
                                                         "method": "opd", "rl.opd_gamma": 0.5}))
    assert soft.finished and opd.finished
    assert soft.path.name.startswith("ketchup_soft_k") and soft.key != plain.key  # its own run and table row
    assert opd.path.name.startswith("opd-")
    assert any("train/return_soft" in r for r in soft.metrics()) and not any("train/return" in r for r in soft.metrics())
    assert any("train/return" in r for r in opd.metrics())
    assert all(k in soft.summary()["test"] for k in ("rougeL", "return"))


def test_minillm_loss_is_the_weighted_long_term_gradient_plus_the_exact_single_step_kl():
    from kdlib.maths.onpolicy import generalized_jsd, minillm_long_term, teacher_mix_weights
    from kdlib.trainers.rl import minillm_loss

    g = torch.Generator().manual_seed(1)
    B, T, V = 3, 5, 6
    s_logits = torch.randn(B, T, V, generator=g, dtype=torch.float64, requires_grad=True)
    t_logits = torch.randn(B, T, V, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (B, T), generator=g)
    logp = torch.log_softmax(s_logits, -1).gather(-1, y[..., None])[..., 0]
    t_logp = torch.log_softmax(t_logits, -1).gather(-1, y[..., None])[..., 0]
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    ended = torch.tensor([True, False, True])
    for mix, trunc in ((0.0, "keep"), (0.2, "drop")):
        rp = RLParams(minillm_mix=mix, minillm_whiten=False, truncated=trunc)
        loss, A = minillm_loss(logp, t_logp, s_logits, t_logits, mask, ended, rp)
        counted = mask & ended[:, None] if trunc == "drop" else mask
        want_A = minillm_long_term(t_logp, logp.detach(), counted, False)
        w = teacher_mix_weights(logp, t_logp, counted, mix)
        n = counted.sum()
        want = -(w * want_A * logp * counted).sum() / n + generalized_jsd(s_logits, t_logits, 1.0, counted)
        assert torch.allclose(A, want_A) and torch.allclose(loss, want)
        if mix == 0.0:
            assert torch.equal(w, counted.to(w.dtype))  # on-policy: no importance weights


def test_todays_methods_train_end_to_end_with_their_own_runs(tmp_path):
    """gkd_jsd, distillm and minillm_pg each train as a Table 1 method, with their own run and key."""
    from kdlib.chains.core import run_for, train
    from kdlib.config import load_params

    for m in ("gkd_jsd", "distillm", "minillm_pg"):
        p = load_params("params/smoke/kit.yaml", **{"cache_dir": str(tmp_path), "task.name": "mini-xsum", "method": m})
        run = train(p)
        assert run.finished and run.path.name.startswith(m), run.path
        assert all(k in run.summary()["test"] for k in ("rougeL", "return"))
        assert run.key != run_for(p.model_copy(update={"method": "kl"})).key
