"""The divergence family's micro-batch loss: with ``estimator: wen`` every micro-batch scores the
teacher-prefix half AND the student-prefix half (Wen et al. 2023); ``mixed_prefix`` keeps the
kit's earlier one-coin estimator."""

import types
from pathlib import Path

import pytest
import torch

from kdlib.config import load_params
from kdlib.maths.losses import js_divergence, tvd, wen_js_divergence, wen_tvd
from kdlib.modeling.generation import generate
from kdlib.modeling.models import forward_logits
from kdlib.trainers.base import batch_src, batch_tgt, micro_generator
from kdlib.trainers.divergence import divergence_micro_loss
from kdlib.trainers.tasks import load_model, load_task_bundle

ROOT = Path(__file__).resolve().parents[1]
ACC = types.SimpleNamespace(device=torch.device("cpu"), process_index=0, unwrap_model=lambda m: m)
IDX = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    p = load_params(ROOT / "params/smoke/kit.yaml", cache_dir=str(tmp_path_factory.mktemp("cache")), method="js",
                    **{"task.n_train": 16, "task.max_target_len": 12, "divergence.js_beta": 0.3})
    task = load_task_bundle(p)
    teacher = load_model(p, task, "tiny-t5:micro", seed=1).eval()
    student = load_model(p, task, "tiny-t5:micro", seed=2)
    outputs = task.targets["train"]  # stand-ins for the cached teacher outputs
    return p, task, teacher, student, outputs


def _logits(model, teacher, task, y, mask):
    src, src_m = batch_src(task, "train", IDX, "student")
    t_src, t_src_m = batch_src(task, "train", IDX, "teacher")
    with torch.no_grad():
        s = forward_logits(model, task.arch, src, src_m, y, mask)
        t = forward_logits(teacher, task.arch, t_src, t_src_m, y, mask)
    return s, t


@pytest.mark.parametrize("method", ["js", "tvd"])
def test_wen_micro_loss_scores_teacher_and_student_prefixes(setup, method):
    p, task, teacher, student, outputs = setup
    assert p.divergence.estimator == "wen"  # the default
    loss, info = divergence_micro_loss(method, teacher, task, outputs, p.divergence, ACC, seed=5)(student, IDX, 3, 1)
    # by hand: teacher prefixes = the teacher outputs; student prefixes = samples drawn with the
    # micro-batch's own generator (nothing else draws from it first)
    y_tp, m_tp = batch_tgt(task, [outputs[i] for i in IDX])
    src, src_m = batch_src(task, "train", IDX, "student")
    roll = generate(student, task.tok, src, src_m, arch=task.arch, max_new_tokens=task.max_target_len, do_sample=True,
                    temperature=p.divergence.temperature, use_calculator=task.use_calculator,
                    generator=micro_generator(5, 3, 1, 0))
    s_tp, t_tp = _logits(student, teacher, task, y_tp, m_tp)
    s_sp, t_sp = _logits(student, teacher, task, roll.tokens, roll.mask)
    if method == "js":
        expected = wen_js_divergence(s_tp, t_tp, m_tp, s_sp, t_sp, roll.mask, beta=0.3)
        halves = (js_divergence(s_tp, t_tp, m_tp, beta=0.3), js_divergence(s_sp, t_sp, roll.mask, beta=0.3))
    else:
        expected = wen_tvd(s_tp, t_tp, m_tp, s_sp, t_sp, roll.mask)
        halves = (tvd(s_tp, t_tp, m_tp), tvd(s_sp, t_sp, roll.mask))
    assert torch.allclose(loss.detach(), expected, rtol=1e-6, atol=0)
    assert not any(torch.isclose(loss.detach(), h) for h in halves)  # neither one-sided estimate
    assert info["student_len"] == float(roll.mask.sum(1).float().mean())
    loss.backward()
    assert all(q.grad is None or torch.isfinite(q.grad).all() for q in student.parameters())
    student.zero_grad(set_to_none=True)


def test_mixed_prefix_keeps_the_one_coin_estimator(setup):
    p, task, teacher, student, outputs = setup
    dp = p.divergence.model_copy(update={"estimator": "mixed_prefix", "student_mix": 0.0})  # always teacher outputs
    loss, info = divergence_micro_loss("js", teacher, task, outputs, dp, ACC, seed=5)(student, IDX, 0, 0)
    y, m = batch_tgt(task, [outputs[i] for i in IDX])
    s, t = _logits(student, teacher, task, y, m)
    assert info == {"on_policy": 0.0}
    assert torch.allclose(loss.detach(), js_divergence(s, t, m, beta=0.3), rtol=1e-6, atol=0)


def test_gkd_scores_the_generalised_jsd_on_fixed_outputs_or_student_samples(setup):
    from kdlib.maths.onpolicy import generalized_jsd

    p, task, teacher, student, outputs = setup
    fixed = p.divergence.model_copy(update={"gkd_lambda": 0.0, "gkd_beta": 0.3})
    loss, info = divergence_micro_loss("gkd_jsd", teacher, task, outputs, fixed, ACC, seed=5)(student, IDX, 0, 0)
    y, m = batch_tgt(task, [outputs[i] for i in IDX])
    s, t = _logits(student, teacher, task, y, m)
    assert info == {"on_policy": 0.0}
    assert torch.allclose(loss.detach(), generalized_jsd(s, t, 0.3, m), rtol=1e-6, atol=0)
    onp = p.divergence.model_copy(update={"gkd_lambda": 1.0, "gkd_beta": 0.3})
    loss, info = divergence_micro_loss("gkd_jsd", teacher, task, outputs, onp, ACC, seed=5)(student, IDX, 0, 0)
    assert info == {"on_policy": 1.0}
    g = micro_generator(5, 0, 0, 0, torch.device("cpu"))
    float(torch.rand(1, generator=g))  # the coin
    src, src_m = batch_src(task, "train", IDX, "student")
    roll = generate(student, task.tok, src, src_m, arch=task.arch, max_new_tokens=task.max_target_len, do_sample=True,
                    temperature=onp.temperature, use_calculator=task.use_calculator, generator=g)
    s, t = _logits(student, teacher, task, roll.tokens, roll.mask)
    assert torch.allclose(loss.detach(), generalized_jsd(s, t, 0.3, roll.mask), rtol=1e-5, atol=1e-7)


def test_distillm_starts_on_fixed_outputs_with_the_skew_kl_and_checkpoints_its_schedule(setup):
    from kdlib.maths.onpolicy import skew_kl, skew_rkl

    p, task, teacher, student, outputs = setup
    for kind, fn in (("skl", skew_kl), ("srkl", skew_rkl)):
        dp = p.divergence.model_copy(update={"distillm_loss": kind, "distillm_alpha": 0.1, "distillm_init": 0.0})
        loss_fn = divergence_micro_loss("distillm", teacher, task, outputs, dp, ACC, seed=5, n_dev=8)
        loss, info = loss_fn(student, IDX, 0, 0)  # phi = 0 at the start: the fixed outputs
        assert info["student_outputs"] == 0.0 and info["sgo_share"] == 0.0
        y, m = batch_tgt(task, [outputs[i] for i in IDX])
        s, t = _logits(student, teacher, task, y, m)
        assert torch.allclose(loss.detach(), fn(s, t, 0.1, m), rtol=1e-6, atol=0)
        assert loss_fn.ref_loss is not None and loss_fn.ref_loss > 0  # the dev loss before training: the reference
    # all student outputs: fresh samples fill the buffer; the schedule's state survives a checkpoint round trip
    dp = p.divergence.model_copy(update={"distillm_init": 1.0, "distillm_capacity": 8})
    loss_fn = divergence_micro_loss("distillm", teacher, task, outputs, dp, ACC, seed=5, n_dev=8)
    _, info = loss_fn(student, IDX, 0, 0)
    assert info["student_outputs"] == 1.0 and info["replayed"] == 0.0 and len(loss_fn.buffer) == len(IDX)
    again = divergence_micro_loss("distillm", teacher, task, outputs, dp, ACC, seed=5, n_dev=8)
    again.load_state_dict(__import__("json").loads(__import__("json").dumps(loss_fn.state_dict())))
    assert again.state_dict() == loss_fn.state_dict()
