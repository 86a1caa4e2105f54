"""Seed 004 through the kit's plumbing: the five methods' scorers and auxiliary losses on the GRPO
loop (kdlib.trainers.cmdp + kdlib.trainers.ppo), run keys and stages (kdlib.chains.constrained_kd),
evaluation maths (kdlib.maths.constrained_metrics), the judge protocol (kdlib.studies.constrained_kd) and params.

The pure maths (Eq. 4, term II, GKD-GRPO, the floor) is tested in tests/test_constrained.py and
tests/test_policyopt.py; here the same properties are checked through what training runs.
"""

import contextlib
import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlib.config import (
    ConstrainedKDParams,
    ParamsError,
    load_notebook_params,
    load_params,
)
from kdlib.maths import constrained_metrics as M
from kdlib.trainers.cmdp import (
    ScoredBatch,
    aux_loss_value,
    cmdp_method,
    plan_method,
    score_batch,
)

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "params/smoke/kit.yaml")
G = 4


def _cp(**kw):
    return ConstrainedKDParams(**{"group_size": G, "batch_size": 2, **kw})


def _scored(kl_rows, R=None, T=6, holes=(2,), seed=0):
    """A scored batch: per-sample KL ``kl_rows`` spread over the action tokens, a calculator hole
    at ``holes`` (garbage there), one padded tail position."""
    g = torch.Generator().manual_seed(seed)
    N = len(kl_rows)
    mask = torch.ones(N, T, dtype=torch.bool)
    mask[:, -1] = False
    for h in holes:
        mask[:, h] = False
    n_act = mask.sum(1, keepdim=True).float()
    kl_tok = torch.where(mask, torch.tensor(kl_rows).float()[:, None].expand(N, T), torch.tensor(1e6))
    R = torch.zeros(N) if R is None else torch.tensor(R, dtype=torch.float32)
    t_logp = torch.where(mask, -torch.rand(N, T, generator=g), torch.tensor(float("nan")))
    logp_old = torch.where(mask, -torch.rand(N, T, generator=g), torch.tensor(float("nan")))
    from kdlib.maths.constrained import sequence_kl

    return ScoredBatch(R=R, kl_tok=kl_tok, kl_seq=sequence_kl(kl_tok, mask), t_logp=t_logp, action_mask=mask,
                       logp_old=logp_old), n_act


# ----------------------------------------------------------------------------- plan_method
def test_gkd_grpo_lambda_zero_gives_grpo_advantages_exactly():
    s, _ = _scored([0.1, 0.5, 0.9, 0.2, 1.4, 0.3, 0.05, 0.7], R=[1, 0, 1, 0, 0, 0, 1, 1])
    a = plan_method("grpo", s, _cp()).advantages
    b = plan_method("gkd_grpo", s, _cp(gkd_lambda=0.0)).advantages
    assert torch.equal(a, b)
    c = plan_method("gkd_grpo", s, _cp(gkd_lambda=1.0)).advantages
    assert not torch.equal(a, c)


def test_all_violating_group_zero_advantages_without_phi_kl_ordered_with_phi():
    kls = [0.4, 0.9, 1.2, 0.6]  # all > d
    s, _ = _scored(kls, R=[1, 0, 1, 0])
    no_phi = plan_method("cmdp", s, _cp(d=0.35, use_phi=False)).advantages
    assert torch.all(no_phi == 0)
    phi = plan_method("cmdp", s, _cp(d=0.35, use_phi=True)).advantages[:, 0]
    order = np.argsort(kls)  # the lower the KL, the higher the advantage
    assert torch.all(phi[order][:-1] > phi[order][1:])


def test_feasible_rows_keep_R_and_infeasible_rows_are_penalised():
    # one group: two feasible (R = 1, 0), two violating; with n = 20 the violators sit far below
    s, _ = _scored([0.1, 0.2, 0.5, 0.8], R=[1, 0, 1, 1])
    A = plan_method("cmdp", s, _cp(d=0.35)).advantages[:, 0]
    assert A[0] > A[1] > A[2] > A[3]  # R=1 feasible > R=0 feasible > -(20+0.5) > -(20+0.8)
    r = torch.tensor([1.0, 0.0, -20.5, -20.8])
    want = (r - r.mean()) / (r.std() + 1e-4)
    assert torch.allclose(A, want, atol=1e-5)


def test_advantages_vanish_on_calculator_tokens_and_padding():
    s, _ = _scored([0.1, 0.5, 0.9, 0.2], R=[1, 0, 1, 0])
    for method in ("cmdp", "grpo", "gkd_grpo", "gkd", "minillm"):
        adv = plan_method(method, s, _cp(d=0.35)).advantages
        assert torch.all(adv[~s.action_mask] == 0) and torch.isfinite(adv).all(), method
    adv = plan_method("cmdp", s, _cp(d=0.35, granularity="token")).advantages
    assert torch.all(adv[~s.action_mask] == 0) and torch.isfinite(adv).all()


# ----------------------------------------------------------------------------- the auxiliary loss
def _logits(N, T, V=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, T, V, generator=g, requires_grad=True), torch.randn(N, T, V, generator=g)


def test_term_ii_is_zero_on_feasible_rows_through_the_aux_loss():
    from kdlib.maths.full_vocab import full_vocab_kl

    s, _ = _scored([0.1, 0.5, 0.9, 0.2])
    cp = _cp(d=0.35)
    plan = plan_method("cmdp", s, cp)
    assert plan.aux_rows.tolist() == [False, True, True, False]
    logits, t_logits = _logits(4, 6)
    rows = [0, 1, 2, 3]
    calls = []

    def kl_fn(local):
        calls.append(local)
        return full_vocab_kl(logits[local], t_logits[[rows[j] for j in local]], s.action_mask[[rows[j] for j in local]])

    loss = aux_loss_value("cmdp", plan, rows, kl_fn, s.action_mask, cp)
    assert calls == [[1, 2]]  # the KL with gradient is computed on the violating rows only
    loss.backward()
    g = logits.grad
    assert torch.all(g[[0, 3]] == 0) and g[[1, 2]].abs().sum() > 0
    full = full_vocab_kl(logits.detach(), t_logits, s.action_mask)
    want = (full[1].sum() / s.action_mask[1].sum() + full[2].sum() / s.action_mask[2].sum()) / 4
    assert torch.allclose(loss.detach(), want, atol=1e-6)
    # a minibatch of feasible rows only: no term at all
    assert aux_loss_value("cmdp", plan, [0, 3], kl_fn, s.action_mask, cp) is None
    assert aux_loss_value("grpo", plan_method("grpo", s, cp), rows, kl_fn, s.action_mask, cp) is None


def test_calculator_tokens_are_excluded_from_the_kl_and_the_aux_loss():
    """Garbage logits at calculator-inserted positions change neither the KL nor the gradient."""
    from kdlib.maths.full_vocab import full_vocab_kl

    s, _ = _scored([0.5, 0.6, 0.7, 0.8])
    cp = _cp(d=0.35)
    logits, t_logits = _logits(4, 6)
    dirty_s, dirty_t = logits.detach().clone(), t_logits.clone()
    dirty_s[:, 2] = 1e4
    dirty_t[:, 2] = -1e4  # the teacher gives the hole ~0 mass everywhere
    dirty_s.requires_grad_(True)
    for method in ("cmdp", "minillm"):
        plan = plan_method(method, s, cp)
        out = []
        for lg, tl in ((logits, t_logits), (dirty_s, dirty_t)):
            lg.grad = None
            loss = aux_loss_value(method, plan, [0, 1, 2, 3],
                                  lambda local, lg=lg, tl=tl: full_vocab_kl(lg[local], tl[local], s.action_mask[local]),
                                  s.action_mask, cp)
            loss.backward()
            out.append((loss.detach(), lg.grad.clone()))
        assert torch.allclose(out[0][0], out[1][0])
        keep = s.action_mask
        assert torch.allclose(out[0][1][keep], out[1][1][keep]) and torch.all(out[1][1][~keep] == 0)
    # and the sequence KL of the scorer ignores the garbage stored at the hole (1e6 in _scored)
    assert torch.allclose(s.kl_seq, torch.tensor([0.5, 0.6, 0.7, 0.8]))


# ----------------------------------------------------------------------------- through the loop
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A smoke mini-gsm8k task and two random micro models (no training needed)."""
    from kdlib.trainers.tasks import load_model, load_task_bundle

    cache = tmp_path_factory.mktemp("cmdp")
    p = load_params(SMOKE, cache_dir=str(cache), **{"task.name": "mini-gsm8k", "task.n_train": 16, "task.n_dev": 4,
                                                    "task.n_test": 4, "method": "grpo", "cmdp.batch_size": 2,
                                                    "cmdp.group_size": 4})
    task = load_task_bundle(p)
    student = load_model(p, task, "tiny-t5:micro", seed=1)
    teacher = load_model(p, task, "tiny-t5:micro", seed=2).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    return p, task, student, teacher


def _one_step(p, task, student, teacher, method, **cmdp):
    from kdlib.trainers.base import get_accelerator, make_optimizer
    from kdlib.trainers.ppo import ppo_step_fn

    cp = p.cmdp.model_copy(update={"lr": 1e-2, **cmdp})
    model = copy.deepcopy(student)
    m = cmdp_method(method, teacher, model, task, cp)
    step = ppo_step_fn(m, task, cp, get_accelerator(), 0, None)
    opt = make_optimizer(model, cp)
    model.train()
    logs = step(model, opt, 0, contextlib.nullcontext)
    return model, logs


def test_lambda_zero_gkd_grpo_trains_exactly_like_grpo(tiny):
    p, task, student, teacher = tiny
    a, la = _one_step(p, task, student, teacher, "grpo")
    b, lb = _one_step(p, task, student, teacher, "gkd_grpo", gkd_lambda=0.0)
    c, _ = _one_step(p, task, student, teacher, "gkd_grpo", gkd_lambda=1.0)
    assert la["policy_loss"] == lb["policy_loss"] and la["adv_mean"] == lb["adv_mean"]
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert any(not torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_term_ii_runs_through_the_loop_only_when_rows_violate(tiny):
    p, task, student, teacher = tiny
    _, feasible = _one_step(p, task, student, teacher, "cmdp", d=1e6)
    assert feasible["aux_loss"] == 0.0 and feasible["term_ii_rows"] == 0.0 and feasible["feasible"] == 1.0
    _, violating = _one_step(p, task, student, teacher, "cmdp", d=1e-6)
    assert violating["term_ii_rows"] == 1.0 and violating["aux_loss"] > 0
    assert math.isclose(violating["aux_loss"], violating["kl"], rel_tol=1e-3)  # c_II * mean KL_i, all rows violate
    _, tok = _one_step(p, task, student, teacher, "cmdp", d=1e-6, granularity="token")
    assert tok["aux_loss"] > 0 and 0 < tok["term_ii_token_share"] <= 1


def test_identical_teacher_and_student_give_zero_kl_and_the_rollout_logits_are_reused(tiny):
    from kdlib.trainers.base import get_accelerator
    from kdlib.trainers.ppo import ppo_step_fn

    p, task, student, _ = tiny
    twin = copy.deepcopy(student).eval()
    cp = p.cmdp
    seen = {}

    m = cmdp_method("gkd", twin, student, task, cp)
    assert m.keep_logits
    inner = m.scorer

    def spy(b):
        seen["logits_old"] = b.logits_old is not None
        s, _ = score_batch(student, twin, task, b, cp)
        seen["kl"] = s.kl_seq.clone()
        return inner(b)

    m.scorer = spy
    step = ppo_step_fn(m, task, cp, get_accelerator(), 0, None)
    from kdlib.trainers.base import make_optimizer

    logs = step(copy.deepcopy(student), make_optimizer(copy.deepcopy(student), cp), 0, contextlib.nullcontext)
    assert seen["logits_old"]
    assert torch.allclose(seen["kl"], torch.zeros_like(seen["kl"]), atol=1e-5)
    assert abs(logs["kl"]) < 1e-5


def test_every_method_takes_a_step(tiny):
    p, task, student, teacher = tiny
    for method in ("cmdp", "grpo", "gkd_grpo", "gkd", "minillm"):
        model, logs = _one_step(p, task, student, teacher, method, d=0.5)
        assert math.isfinite(logs["loss"]) and math.isfinite(logs["kl"]), method
        moved = any(not torch.equal(x, y) for x, y in zip(model.parameters(), student.parameters()))
        if method == "grpo" and logs["accuracy"] == 0:  # a random student: every R = 0, no signal, no update
            assert not moved
        else:
            assert moved, method


# ----------------------------------------------------------------------------- run keys and params
def _p(**kw):
    return load_params(SMOKE, **{"task.name": "mini-gsm8k", **kw})


def test_run_keys_hold_what_changes_a_run():
    from kdlib.chains.constrained_kd import cmdp_label, cmdp_run, start_run

    assert cmdp_run(_p(method="cmdp", **{"cmdp.d": 0.3})).path != cmdp_run(_p(method="cmdp", **{"cmdp.d": 0.4})).path
    assert cmdp_run(_p(method="grpo", **{"cmdp.d": 0.3})).path == cmdp_run(_p(method="grpo", **{"cmdp.d": 0.4})).path
    assert cmdp_run(_p(method="grpo", **{"cmdp.gkd_lambda": 1.0})).path == cmdp_run(_p(method="grpo")).path
    a = cmdp_run(_p(method="gkd_grpo", **{"cmdp.gkd_lambda": 1.0}))
    assert a.path != cmdp_run(_p(method="gkd_grpo", **{"cmdp.gkd_lambda": 0.01})).path
    assert cmdp_label(_p(method="gkd_grpo", **{"cmdp.gkd_lambda": 10.0})) == "gkd_grpo_lam10"
    # what is only evaluated is not in the key; the start is
    assert cmdp_run(_p(method="gkd", **{"cmdp.eval_sets": ["dev"]})).path == cmdp_run(_p(method="gkd")).path
    assert cmdp_run(_p(method="gkd", **{"cmdp.start_steps": 3})).path != cmdp_run(_p(method="gkd")).path
    assert start_run(_p(method="gkd", **{"cmdp.start_steps": 3})).stage == "predistill"


def test_params_refuse_non_math_tasks_and_bad_values():
    with pytest.raises(ParamsError, match="task.name.*math-only"):
        load_params(SMOKE, method="cmdp")
    with pytest.raises(ParamsError, match="cmdp.group_size"):
        _p(method="grpo", **{"cmdp.group_size": 1})
    with pytest.raises(ParamsError, match="cmdp.gkd_lambda"):
        _p(method="gkd_grpo", **{"cmdp.gkd_lambda": -1})
    with pytest.raises(ParamsError, match="cmdp.eval_sets"):
        _p(method="gkd", **{"cmdp.eval_sets": ["mini-xsum"]})
    with pytest.raises(ParamsError, match="cmdp.kl_coef"):
        _p(method="gkd", **{"cmdp.kl_coef": 0.1})
    _p(method="gkd_grpo", **{"cmdp.gkd_lambda": 10.0})  # the paper's largest lambda is fine


def test_notebook_params_validate_on_every_profile_and_refuse_other_tasks(tmp_path):
    for profile in ("smoke", "embedded", "paper"):
        nb = load_notebook_params(ROOT / f"params/{profile}/constrained_kd.yaml")
        assert nb.notebook == "08_constrained_kd"
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "params/smoke/constrained_kd.yaml").read_text() + "\ntasks: [mini-xsum]\n")
    with pytest.raises(ParamsError, match="tasks.*math-only"):
        load_notebook_params(bad)


def test_paper_profile_names_the_papers_models_and_hyperparameters():
    from kdlib.config import kit_params_for

    nb = load_notebook_params(ROOT / "params/paper/constrained_kd.yaml")
    p = kit_params_for(nb, **{"task.name": "gsm8k", "method": "cmdp"})
    assert p.models.teacher == "Qwen/Qwen2.5-Math-7B-Instruct" and p.models.student == "Qwen/Qwen2.5-Math-1.5B"
    assert p.models.arch == "causal" and p.cmdp.vocab == "shared_prefix"
    c = p.cmdp
    assert (c.batch_size, c.group_size, c.lr, c.d, c.n, c.start_steps) == (8, 8, 1e-5, 0.35, 20.0, 0)
    assert nb.gkd_lambdas == [0.001, 0.01, 0.1, 1.0, 10.0] and nb.budget == "fixed"
    assert "DeepSeek-R1-Distill-Qwen-32B" in p.judge.model and p.judge.backend == "openai"


# ----------------------------------------------------------------------------- evaluation maths
def test_final_answers_and_eq6_rewards():
    assert M.final_answer("so \\boxed{42}. #### 41") == "42"  # the boxed answer wins
    assert M.final_answer("3 + 4 = <<3+4=7>>7\n#### 7") == "7"
    assert M.final_answer("no answer") is None
    assert M.task_rewards(["#### 7.0", "#### 8", "\\boxed{7}", "nothing"], ["#### 7"] * 4) == [1.0, 0.0, 1.0, 0.0]
    assert M.answers_match("\\frac{1}{2}", "\\frac{1}{2}") and not M.answers_match(None, "1")
    with pytest.raises(ValueError, match="references\\[0\\]"):
        M.task_rewards(["#### 1"], ["no answer here"])


def test_budget_constraint_satisfaction_and_pareto():
    kl = np.linspace(0, 1, 101)
    assert M.choose_budget(kl, 0.95) == 0.95
    assert M.choose_budget([0.123456] * 3) == 0.123
    assert M.constraint_satisfaction([0.1, 0.35, 0.36, 2.0], 0.35) == 50.0
    front = M.pareto_front([90, 50, 95, 40, 95], [50, 90, 10, 40, 10])
    assert front.tolist() == [True, True, True, False, True]


def test_step_overlap_surrogate_judge():
    gold = "a <<2*3=6>>6 b <<6+4=10>>10\n#### 10"
    assert M.step_overlap_score(gold, gold) == 1.0
    assert M.step_overlap_score("<<2*3=6>>6 #### 6", gold) == 0.5  # one gold step unused
    assert M.step_overlap_score("<<2*3=6>>6 <<6+4=10>>10 <<10-1=9>>9", gold) == pytest.approx(2 / 3)  # an extra step
    assert M.step_overlap_score("#### 10", gold) == 0.0 and M.step_overlap_score("<<1+1=2.0>>2", "<<1+1=2>>2") == 1.0


def test_win_matrix_rwr_rlr_with_ties():
    methods = ["a", "b", "c"]
    out = {("a", "b"): [1, 1, 0, -1], ("a", "c"): [1, 0, 0, 0], ("b", "c"): [-1, -1, -1, -1]}
    W = M.win_matrix(methods, out)
    assert W[0, 1] == 50 and W[1, 0] == 25 and W[0, 2] == 25 and W[2, 0] == 0 and W[2, 1] == 100
    off = ~np.eye(3, dtype=bool)
    assert np.isnan(W[0, 0]) and np.all((W + W.T)[off] <= 100 + 1e-9)
    rwr, rlr = M.reasoning_win_loss(W)
    assert rwr.tolist() == [37.5, 12.5, 50.0] and rlr.tolist() == [12.5, 75.0, 12.5]
    s = M.radar_scale({"fac": [1, 2, 3], "kl": [0.1, 0.2, 0.3]}, lower_is_better=("kl",))
    assert np.allclose(s["fac"], [0, 0.5, 1]) and np.allclose(s["kl"], [1, 0.5, 0])


# ----------------------------------------------------------------------------- the LLM judge protocol
def test_llm_judge_both_orders_cache_and_verdicts(tmp_path):
    import pandas as pd

    from kdlib import judge as J
    from kdlib.studies import constrained_kd as S

    assert S.parse_verdict("reasoning...\nVerdict: **B**") == "B" and S.parse_verdict("Verdict: tie") == "tie"
    assert S.parse_verdict("no verdict") is None
    calls = []

    class Fake(J.JudgeBackend):
        name = "fake"

        def complete(self, prompt):
            calls.append(prompt)
            a = prompt.split("[Response A]")[1].split("[Response B]")[0]
            b = prompt.split("[Response B]")[1]
            if "good" in a and "good" not in b:
                return "A is right.\nVerdict: A"
            if "good" in b and "good" not in a:
                return "Verdict: B"
            return "Verdict: A"  # a pure first-position bias when both are alike

    p = load_params(SMOKE, **{"task.name": "mini-gsm8k"})
    A = pd.DataFrame({"source": ["q1", "q2", "q3"], "reference": ["#### 1"] * 3, "output": ["good", "bad", "x"]})
    B = pd.DataFrame({"source": ["q1", "q2", "q3"], "reference": ["#### 1"] * 3, "output": ["bad", "good", "y"]})
    orig = J.make_backend
    J.make_backend = lambda cfg: Fake()
    try:
        out, name = S.llm_outcomes(p, A, B, tmp_path)
        assert out.tolist() == [1, -1, 0]  # the position bias cancels over the two orders
        assert len(calls) == 6 and name == "fake"
        out2, _ = S.llm_outcomes(p, A, B, tmp_path)
        assert out2.tolist() == [1, -1, 0] and len(calls) == 6  # all answers from the cache
    finally:
        J.make_backend = orig
    assert "{question}" not in S.fill_judge_template(S.load_judge_template(), "Q {gold}", "G", "a", "b")


def test_shared_prefix_vocabulary_mode(tiny):
    """Spec B2: a teacher with more logit rows than the student (Qwen2.5-Math 7B vs 1.5B) is refused
    unless cmdp.vocab is shared_prefix; then the KL is taken over the shared prefix."""
    from kdlib.chains.constrained_kd import check_vocab
    from kdlib.maths.full_vocab import full_vocab_kl
    from kdlib.trainers.tasks import load_model

    p, task, student, _ = tiny
    V = len(task.tok)
    big = load_model(p, task, "tiny-t5:micro", seed=3)
    big.resize_token_embeddings(V + 16)
    with pytest.raises(ValueError, match="shared_prefix"):
        check_vocab(p, task, big, student)
    q = p.model_copy(update={"cmdp": p.cmdp.model_copy(update={"vocab": "shared_prefix"})})
    check_vocab(q, task, big, student)
    s_logits, t_logits = torch.randn(2, 3, V), torch.randn(2, 3, V + 16)
    m = torch.ones(2, 3, dtype=torch.bool)
    assert torch.allclose(full_vocab_kl(s_logits, t_logits, m), full_vocab_kl(s_logits, t_logits[..., :V], m))
