"""Seed ensembles: S seeds of one method trained as one batched model must train each seed as its run alone would.

The stacked engine against each model (logits, gradients, decoding); one optimiser step of every served method,
each member against its own single run (same samples, loss, gradient and updated weights); a killed ensemble
resumes to the numbers of an uninterrupted one; the scheduler groups runs that differ only by seed."""

import copy
import types
from pathlib import Path

import pytest
import torch

from kdlib.config import load_params
from kdlib.modeling import generation
from kdlib.modeling.models import build_model, forward_logits
from kdlib.modeling.stacked import StackedT5
from kdlib.trainers.base import make_optimizer, set_lr, step_indices
from kdlib.trainers.ensemble import clip_per_member
from kdlib.trainers.tasks import load_model, load_task_bundle

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "params/smoke/kit.yaml")
ACC = types.SimpleNamespace(device=torch.device("cpu"), process_index=0, num_processes=1, unwrap_model=lambda m: m)
SEEDS = [11, 7, 23]
TOL = 1e-5


def _perturbed(model, k: int):
    """A copy of ``model`` with weights moved by a k-dependent amount (the members must differ)."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(100 + k)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m


# ----------------------------------------------------------------------------- the stacked engine
@pytest.mark.parametrize("variant", ["relu_tied", "gated_untied"])
def test_stacked_engine_equals_each_model(variant):
    from types import SimpleNamespace

    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    V, S, B, L, T = 40, 3, 4, 7, 6
    if variant == "relu_tied":
        models = [build_model("tiny-t5:base", vocab_size=V, seed=i) for i in range(S)]
    else:  # T5 v1.1 / FLAN-T5 style: gated-GELU, untied output layer, 2 layers
        cfg = T5Config(vocab_size=V, d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8, dropout_rate=0.0,
                       feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0)
        models = []
        for i in range(S):
            torch.manual_seed(i)
            models.append(T5ForConditionalGeneration(cfg))
    stacked = StackedT5(models[0], [dict(m.named_parameters()) for m in models])
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, V, (S, B, L), generator=g)
    src_m = torch.ones(S, B, L, dtype=torch.bool)
    src_m[:, 1, 4:] = False  # a padded row
    tgt = torch.randint(3, V, (S, B, T), generator=g)
    logits = stacked.forward_logits(src, src_m, tgt)  # (S, B, T, V)
    w = torch.randn(logits.shape, generator=g)
    (logits * w).sum().backward()
    for s, m in enumerate(models):
        one = forward_logits(m, "seq2seq", src[s], src_m[s], tgt[s], torch.ones(B, T, dtype=torch.bool))
        assert torch.allclose(one, logits[s], atol=1e-6, rtol=0)
        (one * w[s]).sum().backward()
        for n, p in m.named_parameters():
            assert torch.allclose(p.grad, stacked.params[n].grad[s], atol=1e-6, rtol=0), n
    tok = SimpleNamespace(eos_token_id=1, pad_token_id=0)
    for sample in (False, True):
        gens = [torch.Generator().manual_seed(5 + s) for s in range(S)] if sample else None
        roll = generation.generate(stacked, tok, src.view(S * B, L), src_m.view(S * B, L), arch="seq2seq",
                                   max_new_tokens=8, do_sample=sample, generator=gens)
        for s, m in enumerate(models):
            one = generation.generate(m, tok, src[s], src_m[s], arch="seq2seq", max_new_tokens=8, do_sample=sample,
                                      generator=torch.Generator().manual_seed(5 + s) if sample else None)
            rows = roll.tokens[s * B: (s + 1) * B, : one.tokens.shape[1]]
            assert torch.equal(rows, one.tokens) and torch.equal(roll.ended[s * B: (s + 1) * B], one.ended)


def test_a_finished_block_stops_drawing_from_its_generator():
    """A generator shared across calls (the sampled dev return) must be consumed as by the block alone: a block
    whose rows have all ended draws nothing more, even while other blocks decode."""
    from kdlib.modeling.generation import _block_uniforms

    gens = [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)]
    done = torch.tensor([True, True, False, True])
    u = _block_uniforms(gens, done, "cpu")
    assert (u[:2] == 0).all()
    assert torch.equal(u[2:], torch.rand(2, 1, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(torch.rand(1, generator=gens[0]), torch.rand(1, generator=torch.Generator().manual_seed(1)))


# ----------------------------------------------------------------------------- one step, every served method
@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke task, a teacher and a student (random micro models: the equivalence does not need trained ones)."""
    p = load_params(SMOKE, cache_dir=str(tmp_path_factory.mktemp("cache")), method="llmr",
                    **{"task.n_train": 32, "task.max_target_len": 10, "rl.batch_size": 4, "divergence.batch_size": 4,
                       "rl.truncated": "keep"})
    task = load_task_bundle(p)
    teacher = load_model(p, task, "tiny-t5:micro", seed=1).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    student = load_model(p, task, "tiny-t5:micro", seed=2)
    outputs = task.targets["train"]  # stand-ins for the cached teacher outputs
    return p, task, teacher, student, outputs


class _Recorder:
    """Records every rollout ``generate`` returns (to compare the samples)."""

    def __init__(self, monkeypatch, module):
        self.rolls = []
        real = generation.generate

        def wrapped(*a, **kw):
            r = real(*a, **kw)
            self.rolls.append(r)
            return r

        monkeypatch.setattr(module, "generate", wrapped)


def _losses(p, method, task, teacher, outputs, seeds, estimator="wen"):
    """(single micro-loss factory by seed, ensemble micro-loss) for ``method``."""
    from kdlib.trainers import divergence, rl, supervised

    if method == "seqkd":
        return (lambda sd: supervised.nll_micro_loss(task, outputs, "cpu"),
                supervised.nll_ensemble_micro_loss(task, outputs, "cpu"), p.divergence, None)
    if method in ("kl", "js", "tvd"):
        dp = p.divergence.model_copy(update={"estimator": estimator, "student_mix": 0.5})
        return (lambda sd: divergence.divergence_micro_loss(method, teacher, task, outputs, dp, ACC, sd),
                divergence.divergence_ensemble_micro_loss(method, teacher, task, outputs, dp, ACC, seeds),
                dp, divergence)
    return (lambda sd: rl.rl_micro_loss(method, teacher, task, p.rl, ACC, sd),
            rl.rl_ensemble_micro_loss(method, teacher, task, p.rl, ACC, seeds), p.rl, rl)


@pytest.mark.parametrize("method,estimator", [("llmr", "wen"), ("llmr_mean", "wen"), ("llmr_minvar", "wen"),
                                              ("ketchup", "wen"), ("opd", "wen"), ("kl", "wen"), ("js", "wen"),
                                              ("tvd", "wen"), ("js", "mixed_prefix"), ("seqkd", "wen")])
def test_one_ensemble_step_equals_each_seed_alone(smoke, monkeypatch, method, estimator):
    p, task, teacher, student, outputs = smoke
    if method == "ketchup":
        p = p.model_copy(update={"rl": p.rl.model_copy(update={"k": 3})}, deep=True)
    single_loss, ens_loss, optim, module = _losses(p, method, task, teacher, outputs, SEEDS, estimator)
    optim = optim.model_copy(update={"steps": 10, "warmup_steps": 2, "max_grad_norm": 0.05})  # clipping bites
    step, n = 1, task.split_size("train")
    members = [_perturbed(student, k) for k in range(len(SEEDS))]
    stacked = StackedT5(members[0], [dict(m.named_parameters()) for m in members])
    rec = _Recorder(monkeypatch, module) if module is not None else None
    # the ensemble: one step for all members
    idxs = [step_indices(n, optim.batch_size, step, 0, 1, sd) for sd in SEEDS]
    losses, logs = ens_loss(stacked, idxs, step, 0)
    torch.stack(losses).sum().backward()
    grads = {k: t.grad.clone() for k, t in stacked.params.items()}
    opt = torch.optim.AdamW(stacked.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, betas=(0.9, 0.999),
                            fused=True)
    set_lr(opt, optim, step)
    clip_per_member(stacked, optim.max_grad_norm)
    opt.step()
    ens_rolls = list(rec.rolls) if rec else []
    B = optim.batch_size
    for s, (sd, m) in enumerate(zip(SEEDS, members)):
        if rec:
            rec.rolls.clear()
        loss, info = single_loss(sd)(m, idxs[s], step, 0)
        if rec and rec.rolls:  # the same samples
            one, both = rec.rolls[-1], ens_rolls[-1]
            T = one.tokens.shape[1]
            assert torch.equal(both.tokens[s * B: (s + 1) * B, :T], one.tokens)
            assert torch.equal(both.mask[s * B: (s + 1) * B, :T], one.mask)
            assert not both.mask[s * B: (s + 1) * B, T:].any()
        assert abs(float(loss.detach()) - float(losses[s].detach())) <= TOL * max(1.0, abs(float(loss.detach())))
        assert logs[s].keys() == info.keys()
        for k in info:
            assert abs(info[k] - logs[s][k]) <= TOL * max(1.0, abs(info[k])), k
        loss.backward()
        for nme, q in m.named_parameters():
            assert torch.allclose(q.grad, grads[nme][s], atol=TOL, rtol=TOL), (nme, (q.grad - grads[nme][s]).abs().max())
        o = make_optimizer(m, optim)
        set_lr(o, optim, step)
        torch.nn.utils.clip_grad_norm_(m.parameters(), optim.max_grad_norm)
        o.step()
        for nme, q in m.named_parameters():
            assert torch.allclose(q.detach(), stacked.params[nme][s].detach(), atol=TOL, rtol=0), nme
    # the members really differ (the test compares something)
    assert float(losses[0]) != float(losses[1])


# ----------------------------------------------------------------------------- whole runs, resume, the scheduler
def kit_params(cache, **kw):
    return load_params(SMOKE, cache_dir=str(cache), **{"task.n_train": 64, "teacher.steps": 6, "predistill.steps": 4,
                                                        "rl.steps": 4, **kw})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from kdlib.chains.core import train

    cache = tmp_path_factory.mktemp("base")
    train(kit_params(cache, method="predistill"))
    return cache


def _copy(prepared, dst):
    import shutil

    shutil.copytree(prepared, dst)
    return dst


def _strip(rows):  # the numbers of a learning curve (wall-clock timings are not)
    return [{k: v for k, v in r.items() if not k.startswith("train/time_")} for r in rows]


@pytest.mark.slow
def test_a_killed_ensemble_resumes_every_member_to_the_same_numbers(prepared, tmp_path, monkeypatch):
    from kdlib.chains.core import method_run
    from kdlib.chains.schedule import ensure

    def targets(cache):
        return [kit_params(cache, method="ketchup", seed=sd) for sd in SEEDS]

    crashed = _copy(prepared, tmp_path / "crashed")
    monkeypatch.setenv("KDLIB_ENSEMBLE", "1")
    monkeypatch.setenv("KDLIB_CRASH_AFTER_CHECKPOINT", "2")
    with pytest.raises(RuntimeError):
        ensure(targets(crashed), workers=1, log=lambda s: None)
    runs = [method_run(p) for p in targets(crashed)]
    assert all(not r.finished and r.resume_state()["step"] == 2 for r in runs)  # every member checkpointed
    monkeypatch.delenv("KDLIB_CRASH_AFTER_CHECKPOINT")
    ensure(targets(crashed), workers=1, log=lambda s: None)
    clean = _copy(prepared, tmp_path / "clean")
    ensure(targets(clean), workers=1, log=lambda s: None)
    for a, b in zip(runs, [method_run(p) for p in targets(clean)]):
        sa, sb = a.summary(), b.summary()
        assert sa["ensemble"]["size"] == len(SEEDS) and sa["ensemble"]["seeds"] == sorted(SEEDS)
        assert sa["test"] == sb["test"] and sa["dev"] == sb["dev"]
        assert _strip(a.metrics()) == _strip(b.metrics())
        steps = [r["step"] for r in a.metrics() if "train/loss" in r]
        assert steps == sorted(set(steps))  # no duplicated part of the learning curve


@pytest.mark.slow
def test_an_ensemble_trains_what_single_runs_train(prepared, tmp_path, monkeypatch):
    """Whole runs: the members of an ensemble end where their single runs end (same best step, test metrics within
    float rounding of each other), and the run folders are the single runs' folders."""
    from kdlib.chains.core import method_run
    from kdlib.chains.schedule import ensure

    def targets(cache):
        return [kit_params(cache, method="llmr_mean", seed=sd) for sd in SEEDS[:2]]

    ens, one = _copy(prepared, tmp_path / "ens"), _copy(prepared, tmp_path / "one")
    monkeypatch.setenv("KDLIB_ENSEMBLE", "1")
    ensure(targets(ens), workers=1, log=lambda s: None)
    monkeypatch.setenv("KDLIB_ENSEMBLE", "0")
    ensure(targets(one), workers=1, log=lambda s: None)
    for a, b in zip([method_run(p) for p in targets(ens)], [method_run(p) for p in targets(one)]):
        assert a.path.relative_to(ens) == b.path.relative_to(one)
        sa, sb = a.summary(), b.summary()
        assert "ensemble" in sa and "ensemble" not in sb
        assert sa["best_step"] == sb["best_step"]
        for k, v in sb["test"].items():
            assert abs(sa["test"][k] - v) <= 1e-4 * max(1.0, abs(v)), k
        ta = [r["train/loss"] for r in a.metrics() if "train/loss" in r]
        tb = [r["train/loss"] for r in b.metrics() if "train/loss" in r]
        assert len(ta) == len(tb) and all(abs(x - y) <= 1e-4 * max(1.0, abs(y)) for x, y in zip(ta, tb))


def test_the_scheduler_trains_runs_that_differ_only_by_seed_as_ensembles(tmp_path, monkeypatch):
    from kdlib.chains import ensembles

    ps = ([kit_params(tmp_path, method="ketchup", seed=s) for s in (5, 1, 3)]
          + [kit_params(tmp_path, method="ketchup", seed=s, **{"rl.k": 4}) for s in (1, 2)]
          + [kit_params(tmp_path, method="llmr_ppo", seed=s) for s in (1, 2)]
          + [kit_params(tmp_path, method="kl", seed=s, **{"divergence.dropout": 0.1}) for s in (1, 2)])
    got = ensembles.groups(ps)
    seeds = sorted((g[0].method, g[0].rl.k, tuple(q.seed for q in g)) for g in got)
    assert seeds == sorted([("ketchup", 2, (1, 3, 5)), ("ketchup", 4, (1, 2)), ("llmr_ppo", 2, (1,)),
                            ("llmr_ppo", 2, (2,)), ("kl", 2, (1,)), ("kl", 2, (2,))])  # PPO, dropout: alone
    assert [len(g) for g in ensembles.groups(ps[:3], size=2)] == [2, 1]
    from kdlib.chains.schedule import plan

    jobs = plan(ps[:5], ensembles=True)
    method_jobs = [j for j in jobs.values() if j.members]
    assert sorted(len(j.members) for j in method_jobs) == [2, 3]
    monkeypatch.setenv("KDLIB_ENSEMBLE", "0")
    assert not any(j.members for j in plan(ps[:5]).values())
    monkeypatch.delenv("KDLIB_ENSEMBLE")  # the default: off (not faster on CPU, benchmarks/seeds.py)
    assert not any(j.members for j in plan(ps[:5]).values())
    monkeypatch.setenv("KDLIB_ENSEMBLE", "1")
    assert sorted(len(j.members) for j in plan(ps[:5]).values() if j.members) == [2, 3]
