"""Seed 003 as a system: Eq. (7) through the PPO scorer, the reward model's head and trainer, the
prompt pool of the PPO loop, the run keys and stage graph, and the refused tasks.

Spec seeds003_004 A1-A2, A7, C2; the pure maths (voting, Eqs. (1), (3)-(7)) is in test_pseudolabel.py
and test_policyopt.py.
"""

import contextlib
import math

import pytest
import torch

from kdlib.chains.core import as_stage, parents_of, run_for
from kdlib.config import (
    OptimParams,
    ParamsError,
    PPOParams,
    load_params,
    validate_notebook,
)
from kdlib.maths.metrics import gsm8k_answer
from kdlib.modeling.models import (
    HEAD_ATTR,
    attach_head,
    build_model,
    decode,
    forward_with_hidden,
)
from kdlib.trainers import reward_model as rmod
from kdlib.trainers.base import (
    batch_src,
    batch_tgt,
    get_accelerator,
    make_optimizer,
    train_run,
)
from kdlib.trainers.ppo import Batch, Method, Scored, ppo_step_fn
from kdlib.trainers.runs import Run
from kdlib.trainers.tasks import load_task_bundle

SMOKE = "params/smoke/kit.yaml"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    cache = tmp_path_factory.mktemp("rd")
    p = load_params(SMOKE, cache_dir=str(cache), **{"task.name": "mini-gsm8k"})
    return p, load_task_bundle(p)


def test_encode_prompts_matches_the_task_bundle(smoke):
    # Held-out sets (mini-GSM-Plus, seed 004's evaluation sets) are encoded by encode_prompts; on
    # the task's own test sources it must give exactly the bundle's student and teacher ids.
    from kdlib.trainers.tasks import encode_prompts
    p, task = smoke
    src = task.sources["test"][:20]
    assert encode_prompts(p, task, src, "student") == task.student_src["test"][:20]
    assert encode_prompts(p, task, src, "teacher") == task.teacher_src["test"][:20]


def _model(task, seed=0):
    return build_model("tiny-t5:micro", vocab_size=len(task.tok), arch="seq2seq", seed=seed)


# ----------------------------------------------------------------------------- Eq. (7) through the scorer
TEXTS = ["3 + 4 = 7 #### 7", "#### 9", "#### 9", "no answer here", "#### 5"]
Y_STAR = {0: "7", 1: "7", 2: "7", 3: "7", 4: None}  # question 4 is in D_fail
R = [1.5, 2.0, -1.0, 3.0, 2.0]


def _batch(task, logp_old=0.0, hole=True):
    idx = list(range(len(TEXTS)))
    src, src_m = batch_src(task, "train", idx)
    tokens, mask = batch_tgt(task, TEXTS)  # (N, T), EOS included
    action = mask.clone()
    if hole:
        action[0, 1] = False  # a calculator-inserted token: an environment transition
    N, T = tokens.shape
    return Batch(idx=idx, src=src, src_m=src_m, tokens=tokens, mask=mask, action_mask=action,
                 ended=torch.ones(N, dtype=torch.bool), logp_old=torch.full((N, T), logp_old) * mask,
                 values_old=torch.zeros(N, T), logp_ref=torch.zeros(N, T))


@pytest.mark.parametrize("mode, expected", [
    ("min0", [1.5, 0.0, -1.0, -5.0, 2.0]),  # right -> r; wrong -> min(r, 0); no answer -> -5; D_fail -> r
    ("minus1", [1.5, 1.0, -2.0, -5.0, 2.0]),  # Fig. 7's "Minus": wrong -> r - 1
])
def test_eq7_table_through_the_ppo_scorer(smoke, monkeypatch, mode, expected):
    _, task = smoke
    b = _batch(task)
    assert [gsm8k_answer(t) for t in decode(task.tok, b.tokens, b.mask)] == ["7", "9", "9", None, "5"]
    monkeypatch.setattr(rmod, "rm_scores", lambda *a, **k: torch.tensor(R))  # a reward model that says R
    pp = PPOParams(lr=1e-4, kl_coef=0.0, gamma=1.0, lam=1.0)
    sc = rmod.rd_ppo_scorer(None, task, pp, Y_STAR, mode=mode)(b)
    # gamma = lambda = 1, V = 0, no KL: every action's advantage is the reward-to-go = R~ (terminal)
    for n, want in enumerate(expected):
        acts = b.action_mask[n].nonzero().flatten()
        assert torch.allclose(sc.advantages[n, acts], torch.full((len(acts),), want))
        assert torch.allclose(sc.value_targets[n, acts], torch.full((len(acts),), want))
    assert sc.advantages[0, 1] == 0 and sc.advantages[~b.mask].abs().sum() == 0  # holes and padding get nothing
    assert math.isclose(sc.logs["reward"], sum(expected) / len(expected), rel_tol=1e-6)
    assert math.isclose(sc.logs["answer_rate"], 0.8, rel_tol=1e-6) and math.isclose(sc.logs["agree_ystar"], 0.25)


def test_scorer_adds_the_k1_penalty_per_action(smoke, monkeypatch):
    _, task = smoke
    b = _batch(task, logp_old=0.1)
    monkeypatch.setattr(rmod, "rm_scores", lambda *a, **k: torch.tensor(R))
    pp = PPOParams(lr=1e-4, kl_coef=0.2, gamma=1.0, lam=1.0)
    sc = rmod.rd_ppo_scorer(None, task, pp, Y_STAR)(b)
    for n, shaped in enumerate([1.5, 0.0, -1.0, -5.0, 2.0]):
        n_act = int(b.action_mask[n].sum())
        first = int(b.action_mask[n].nonzero()[0])
        assert math.isclose(float(sc.advantages[n, first]), shaped - 0.2 * 0.1 * n_act, rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(sc.logs["kl"], 0.1, rel_tol=1e-5)


# ----------------------------------------------------------------------------- the reward model
def test_rm_scores_read_the_last_valid_position_whatever_the_padding(smoke):
    _, task = smoke
    model = _model(task).eval()
    head = attach_head(model)
    torch.nn.init.normal_(head.linear.weight, std=1.0)
    texts = ["#### 7", "3 + 4 = 7 and then some more words #### 7"]
    src, src_m = batch_src(task, "train", [0, 1])
    tgt, tgt_m = batch_tgt(task, texts)
    with torch.no_grad():
        both = rmod.rm_scores(model, task.arch, src, src_m, tgt, tgt_m)
        _, hidden = forward_with_hidden(model, task.arch, src, src_m, tgt, tgt_m)
        for i in range(2):
            t, m = batch_tgt(task, [texts[i]])
            alone = rmod.rm_scores(model, task.arch, src[i:i + 1], src_m[i:i + 1], t, m)
            assert torch.allclose(both[i], alone[0], atol=1e-5)
            last = int(tgt_m[i].sum()) - 1
            assert torch.allclose(both[i], head(hidden[i, last][None, None])[0, 0], atol=1e-5)
    assert rmod.last_positions(torch.tensor([[1, 1, 0], [1, 1, 1], [0, 0, 0]])).tolist() == [1, 2, 0]


def _triplets(n=16):
    return [(q, f"so the sum is {q} #### 7", "#### 7", "#### 8") for q in range(n)]


def test_rm_trainer_learns_ranks_and_saves_its_head(smoke, tmp_path):
    p, task = smoke
    dev = get_accelerator().device
    trip = _triplets()
    model = _model(task)
    attach_head(model)
    run = Run(tmp_path, task.name, "rd_rm_test", {"t": 1})
    optim = OptimParams(lr=3e-3, batch_size=8, steps=30, eval_every=10, checkpoint_every=30)
    ev = rmod.rm_evaluator(task, {"dev": trip[:8], "test": trip[8:]}, dev)
    s = train_run(run, params=p, optim=optim, task=task, model=model, seed=0, n_train=len(trip),
                  micro_loss=rmod.rm_micro_loss(task, trip, dev, lam=0.5), evaluator=ev)
    assert s["primary"] == "pos_neg" and s["test"]["pos_neg"] == 100.0 and s["test"]["pos_pos"] == 100.0
    assert s["test"]["loss"] < 2.5 * math.log(2)  # below the all-zero value of Eq. (6)
    assert set(s["test_ci"]) == {"pos_neg", "pos_pos", "pos_pos_distinct"} and s["test"]["identical_pos"] == 0.0
    first, last = [r for r in run.metrics() if "eval/loss" in r][0], [r for r in run.metrics() if "eval/loss" in r][-1]
    assert last["eval/loss"] < first["eval/loss"]
    # the best checkpoint carries the head: reloaded, it gives the same scores
    assert (run.best_dir / "head.safetensors").is_file()
    again = _model(task, seed=1)
    from kdlib.trainers.base import load_weights
    attach_head(again)
    load_weights(again, run.best_dir)
    a = rmod.all_triplet_scores(model, task, trip, dev)
    b = rmod.all_triplet_scores(again, task, trip, dev)
    assert torch.allclose(a, b, atol=1e-5)


def test_value_model_from_rm_copies_backbone_and_head(smoke):
    _, task = smoke
    rm = _model(task, seed=3)
    attach_head(rm)
    torch.nn.init.normal_(getattr(rm, HEAD_ATTR).linear.weight)
    w = getattr(rm, HEAD_ATTR).linear.weight.clone()
    policy = _model(task, seed=4)
    for q in rm.parameters():
        q.requires_grad_(False)
    rmod.value_model_from_rm(policy, rm)
    head = getattr(policy, HEAD_ATTR)
    assert head.backbone is rm and not hasattr(rm, HEAD_ATTR)
    assert torch.equal(head.linear.weight, w) and all(q.requires_grad for q in head.parameters())


# ----------------------------------------------------------------------------- the PPO loop's prompt pool
def test_ppo_draws_prompts_from_the_pool_only(smoke):
    _, task = smoke
    seen = []

    def scorer(b):
        seen.extend(b.idx)
        return Scored(advantages=torch.zeros_like(b.logp_old), value_targets=None)

    pp = PPOParams(lr=1e-4, batch_size=4, epochs=1, minibatches=1, steps=3)
    model = _model(task)
    acc = get_accelerator()
    step = ppo_step_fn(Method(scorer=scorer), task, pp, acc, seed=0, prompts=[5, 17, 42])
    opt = make_optimizer(model, pp)
    for s in range(3):
        step(model, opt, s, contextlib.nullcontext)
    assert set(seen) == {5, 17, 42} and len(seen) == 12


# ----------------------------------------------------------------------------- stages, keys, refusals
def test_stage_graph_and_keys(tmp_path):
    base = load_params(SMOKE, cache_dir=str(tmp_path), **{"task.name": "mini-gsm8k"})
    ppo = as_stage(base, "rd_ppo")
    chain, todo = [], [ppo]
    while todo:
        q = todo.pop()
        chain.append(run_for(q).stage)
        todo += parents_of(q)
    assert {"rd_ppo", "rd_rm_student", "rd_student_samples", "rd_sft_voted", "rd_samples", "predistill",
            "teacher"} <= set(chain)
    key = lambda stage, **kw: run_for(as_stage(base, stage, **kw)).path  # noqa: E731
    assert key("rd_rm", **{"rd.lam": 0.0}) != key("rd_rm", **{"rd.lam": 0.5})
    assert key("rd_rm", **{"rd.teacher_ratio": 2.0}) != key("rd_rm")
    # the teacher-only RM ignores lambda and the ratio (Eq. 4 alone, teacher data)
    assert key("rd_rm", **{"rd.rm_data": "teacher", "rd.lam": 0.0}) == key("rd_rm", **{"rd.rm_data": "teacher"})
    assert key("rd_ppo", seed=1) != key("rd_ppo", seed=2)
    assert key("rd_ppo", **{"rd.shaping": "minus1"}) != key("rd_ppo")
    assert "rd_ppo_wod" in str(key("rd_ppo", **{"rd.policy_init": "base"}))
    # a weaker teacher (or the pre-distilled student as teacher) samples into its own run
    assert key("rd_samples", **{"teacher.steps": 10}) != key("rd_samples")
    assert key("rd_samples", **{"rd.sampler": "predistill"}) != key("rd_samples")
    # the SFT baseline and S_warmup share the samples, not the run; the vote threshold is in S_warmup's key
    assert key("rd_sft", **{"rd.sft_data": "all"}) != key("rd_sft")
    assert key("rd_sft", **{"rd.vote_threshold": 0.5}) != key("rd_sft")
    assert key("rd_samples", **{"rd.vote_threshold": 0.5}) == key("rd_samples")
    # the PPO settings of seed 001 that seed 003 does not read do not split its runs
    assert key("rd_ppo", **{"ppo.k": 5}) == key("rd_ppo")
    # the SFT rows train at their own seed; S_warmup (where the RM's samples and PPO start) is the voted SFT at
    # BASE_SEED, whatever the seed of the PPO run built on it
    from kdlib.chains.core import BASE_SEED
    from kdlib.chains.reward_distill import _warmup, sft_run
    assert key("rd_sft", seed=1) != key("rd_sft", seed=2)
    for s in (1, 2):
        q = as_stage(base, "rd_ppo", seed=s)
        assert sft_run(_warmup(q)).path == sft_run(as_stage(base, "rd_sft", seed=BASE_SEED)).path


def test_study_plan_trains_the_sft_rows_at_every_seed():
    from kdlib.config import notebook_params
    from kdlib.studies.common import kit_params
    from kdlib.studies.reward_distill import study_plan

    nb = notebook_params("07_reward_distill", "params/embedded/reward_distill.yaml")
    plan = study_plan(nb, lambda **o: kit_params(nb, **o))
    for row in ("sft_all", "sft_voted", "ours"):
        seeds = sorted(r.seed for r in plan if r.role == row)
        assert seeds == sorted(nb.seeds) and len(seeds) >= 3, (row, seeds)
        assert sorted(r.params.seed for r in plan if r.role == row) == seeds


def test_ordering_steps_are_paired_over_training_seeds():
    """Analytic case: w/o R beats SFT by 1, 2, 3 points on seeds 1-3 (mean 2, sd 1: t interval 2 +- 2.484,
    p = 0.0742); Ours ties w/o R exactly one answer ahead on every seed (a constant difference: no t-test). The
    over-seed pairing uses only common seeds (seed 4 of SFT alone is left out)."""
    import pandas as pd

    from kdlib.studies.reward_distill import rd_seed_paired, rd_verdicts

    rows = []
    for seed, (sft, wor, ours) in {1: (50.0, 51.0, 51 + 1 / 3), 2: (60.0, 62.0, 62 + 1 / 3),
                                   3: (55.0, 58.0, 58 + 1 / 3)}.items():
        for row, acc in (("sft_all", sft), ("sft_voted", wor), ("ours", ours)):
            rows.append({"task": "t", "teacher": "T", "student": "S", "eval": "t", "row": row, "seed": seed,
                         "accuracy": acc, "run": "-"})
    rows.append({"task": "t", "teacher": "T", "student": "S", "eval": "t", "row": "sft_all", "seed": 4,
                 "accuracy": 99.0, "run": "-"})
    res = pd.DataFrame(rows)
    d = rd_seed_paired(res, "sft_voted", "sft_all").iloc[0]
    assert d["n_seeds"] == 3 and d["diff"] == pytest.approx(2.0)
    assert d["high"] - d["diff"] == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert d["p"] == pytest.approx(0.07417990022744853) and not d["significant"]
    c = rd_seed_paired(res, "ours", "sft_voted").iloc[0]
    assert c["diff"] == pytest.approx(1 / 3) and math.isnan(c["p"]) and not c["significant"]
    diffs, lines = rd_verdicts(res.assign(run="-"))
    assert set(diffs.basis) == {"over seeds"}  # no test outputs to bootstrap over: the within-run rows are absent
    assert len(lines) == 1 and "HOLDS" in lines[0] and "paired over 3 training seeds" in lines[0]
    assert "n/a (constant difference)" in lines[0]


@pytest.mark.parametrize("task", ["mini-xsum", "mini-europarl", "xsum", "europarl"])
def test_free_text_tasks_are_refused_naming_the_field(task, tmp_path):
    with pytest.raises(ParamsError, match=r"field 'task.name'.*extractable final answer"):
        load_params(SMOKE, cache_dir=str(tmp_path), method="rd_sft", **{"task.name": task})
    with pytest.raises(ParamsError, match=r"field 'tasks'.*extractable final answer"):
        validate_notebook(notebook="07_reward_distill", params_files=[SMOKE], tasks=[task])
    load_params(SMOKE, method="ketchup", **{"task.name": task})  # the kit's own methods still run there


def test_notebook_params_check_labels_and_every_variants_overrides():
    with pytest.raises(ParamsError, match="pipeline_teachers"):
        validate_notebook(notebook="07_reward_distill", params_files=[SMOKE], teachers={"a": {}}, pipeline_teachers=["b"])
    with pytest.raises(ParamsError, match=r"teachers\.bad"):
        validate_notebook(notebook="07_reward_distill", params_files=[SMOKE], teachers={"bad": {"teacher.stepz": 3}})
    with pytest.raises(ParamsError, match="pair_overrides"):
        validate_notebook(notebook="07_reward_distill", params_files=[SMOKE], pair_overrides={"x|y": {}})


def test_sharded_student_sampling_gives_the_unsharded_samples(tmp_path):
    """rd.sample_shards splits S_warmup's sampling into runs the scheduler can run side by side;
    every chunk keeps its own RNG, so the samples are those of one run."""
    from kdlib.chains import reward_distill as rd
    from kdlib.chains.core import train

    over = {"task.name": "mini-gsm8k", "task.n_train": 24, "rd.n_questions": 10, "rd.sample_chunk": 3,
            "rd.student_samples": 2, "rd.high_temperatures": [0.0], "rd.low_temperatures": [], "rd.n_high": 2}
    p = load_params(SMOKE, "params/smoke/seed003.yaml", cache_dir=str(tmp_path), **over)
    # hand-written teacher samples (the smoke teacher never answers): 8 labelled questions, 2 in D_fail
    run = rd.samples_run(p)
    run.start()
    rows = [{"i": i, "high": [[0.0, f"#### {i}"]] if i < 8 else [[0.0, "no answer"]], "low": []} for i in range(10)]
    from kdlib.trainers.runs import write_jsonl
    write_jsonl(run.path / "samples" / "part-00000.jsonl", rows)
    run.finish({"n_questions": 10})
    one = as_stage(p, "rd_student_samples")
    two = as_stage(p, "rd_student_samples", **{"rd.sample_shards": 2})
    train(one), train(two)
    assert [run_for(q).stage for q in parents_of(two)] == ["rd_student_samples_shard0of2", "rd_student_samples_shard1of2"]
    a, b = rd.student_samples(one), rd.student_samples(two)
    assert sorted(a) == list(range(8)) and a == b and all(len(v) == 2 for v in a.values())
    assert run_for(two).summary()["n_samples"] == 16


def test_the_rl_prompt_set_keeps_the_questions_the_student_always_failed():
    """Step 7: prompts = D_S (student failed at least once) + D_fail. A D_S question the student got wrong every time
    gives no triplet (no correct student answer), so it is not in D_R, but it stays an RL prompt."""
    from kdlib.chains.reward_distill import RMData, ppo_prompts

    d = RMData(y_star={1: "3", 2: "5", 3: None, 4: "7"}, d_s=[1, 2], train=[], dev=[], test=[], d_r=[1], d_fail=[3])
    assert ppo_prompts(d) == [1, 2, 3]  # 2: always wrong (not in D_R) but kept; 4: never failed, not a prompt


def test_preconditions_gate_the_reward_step_verdict():
    import pandas as pd

    from kdlib.studies.reward_distill import rd_preconditions, rd_verdicts

    rm = pd.DataFrame([{"task": "t", "teacher": "T", "student": "S", "variant": "rm", "n_train": 1200,
                        "pos_neg_low": 48.0}])
    labels = pd.DataFrame([{"task": "t", "teacher": "T", "share_fail": 0.08}])
    pre = rd_preconditions({"rm": rm, "labels": labels})
    by = {c["name"].split(": ", 1)[1]: c for c in pre}
    assert by["RM training triplets"]["met"] and not by["RM Pos/Neg accuracy, lower end of 95% CI (%)"]["met"]
    assert by["D_fail share of questions (%)"]["value"] == pytest.approx(8.0) and by["D_fail share of questions (%)"]["met"]
    rows = [{"task": "t", "teacher": "T", "student": "S", "eval": "t", "row": row, "seed": seed,
             "accuracy": acc + seed, "run": "-"}
            for seed in (1, 2, 3) for row, acc in (("sft_all", 50.0), ("sft_voted", 52.0), ("ours", 55.0))]
    rows[0]["accuracy"] += 0.5  # not a constant difference
    _, lines = rd_verdicts(pd.DataFrame(rows), preconditions=pre)
    assert "NOT TESTED" in lines[0] and "does NOT hold" not in lines[0]
    _, lines = rd_verdicts(pd.DataFrame(rows), preconditions=[dict(c, met=True) for c in pre])
    assert "HOLDS" in lines[0]
