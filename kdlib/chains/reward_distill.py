"""Seed 003 ("Distill not only data but also rewards", Zhang et al. 2025) as a chain of cached runs
(floor 3, beside kdlib.chains.core; spec seeds003_004 Part A). Every stage is a
:class:`kdlib.trainers.runs.Run` keyed by what changes its numbers and registered in the stage registry
(``params.method`` names it), so ``kdlib.chains.core.train`` and the parallel scheduler order and
share them like the kit's own stages:

============================  ==========================================================  ==========
stage (``method``)            what it computes                                            parents
============================  ==========================================================  ==========
``rd_samples``                Step 1: the teacher (``rd.sampler``) answers each of the    teacher
                              ``rd.n_questions`` train questions at high (greedy decoded
                              once, counted ``n_high`` times) and low temperatures;
                              JSONL parts written atomically (a killed run resumes by part)
``rd_sft``                    Steps 2-3: voting (Sec. 3.1) and SFT on D_sft (Eq. (1)-(2),     rd_samples,
                              ``rd.sft_data: voted`` = S_warmup = "Ours w/o R") or on all     predistill
                              teacher answers (``all`` = the SFT baseline); best dev ckpt
``rd_student_samples``        Step 4: S_warmup samples ``rd.student_samples`` answers per     rd_sft
                              labelled question at ``rd.student_temperature``
``rd_rm``                     Steps 5-6: D_R triplets (Eq. (3), m_max, teacher_ratio), split  rd_student_samples
                              by question into RM train/val/test; S_warmup + scalar head
                              trained on Eq. (6) (or Eq. (4) on teacher answers: Table 4)
``rd_ppo``                    Steps 7-9: PPO on D_R and D_fail prompts with Eq. (7)'s shaped  rd_rm (+ the
                              RM score, k1 KL to the frozen start policy, critic from the RM  policy's start)
``rd_eval``                   a finished run's best checkpoint on a held-out evaluation set   its target
                              (GSM-Plus style), with bootstrap CIs and per-perturbation
                              accuracy
============================  ==========================================================  ==========

The pure maths lives on floor 0 (kdlib.maths.pseudolabel: voting, Eq. (1), Eq. (3), D_R, Eq. (7);
kdlib.maths.losses: Eqs. (4)-(6); kdlib.maths.returns: k1 penalty, GAE); the reward-model loop and the PPO
scorer in kdlib.trainers.reward_model; the PPO loop is kdlib.trainers.ppo's.

The embedded students are not pretrained, so the SFT warm-up starts from the kit's pre-distilled
student (``rd.student_init: predistill``), which stands in for the paper's pretrained base student:
"Ours w/o D" is PPO from that same starting point. ``student_init: base`` starts from
``models.student`` as loaded (the paper profile's hub model).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdlib import data as kdata
from kdlib.chains.core import (
    BASE_SEED,
    _eval_key,
    _models_key,
    _optim_key,
    _teacher_model,
    as_stage,
    predistill_run,
    register_stage,
    run_for,
    teacher_run,
)
from kdlib.config import Params
from kdlib.maths import metrics
from kdlib.maths.pseudolabel import (
    build_rm_triplets,
    build_sft_set,
    build_teacher_triplets,
    expand_counts,
    label_quality,
    label_responses,
    select_failed,
    split_questions,
    vote,
)
from kdlib.modeling.generation import generate
from kdlib.modeling.models import attach_head, decode, load_head, pad
from kdlib.trainers.base import (
    TRAINER_VERSION,
    get_accelerator,
    report_progress,
    train_run,
)
from kdlib.trainers.ppo import ppo_step_fn
from kdlib.trainers.reward_model import (
    Triplet,
    rd_ppo_method,
    rm_evaluator,
    rm_micro_loss,
    value_model_from_rm,
)
from kdlib.trainers.runs import Run, read_jsonl, write_jsonl
from kdlib.trainers.supervised import nll_micro_loss
from kdlib.trainers.tasks import (
    Task,
    encode_prompts,
    frozen,
    load_model,
    load_task_bundle,
)

RD_VERSION = 1  # bump when a change alters what a seed-003 stage computes


def answer_of(text: str) -> str | None:
    """The extracted final answer (kdlib.maths.metrics.gsm8k_answer: the number after the last ``####``)."""
    return metrics.gsm8k_answer(text)


# ----------------------------------------------------------------------------- run keys
def _sampling_key(p: Params) -> dict:
    r = p.rd
    return {"n_questions": r.n_questions, "high": r.high_temperatures, "n_high": r.n_high, "low": r.low_temperatures,
            "n_low": r.n_low, "chunk": r.sample_chunk}


def samples_run(p: Params) -> Run:
    parent = teacher_run(p).key if p.rd.sampler == "teacher" else {"predistill": predistill_run(p).key}
    key = {"v": (TRAINER_VERSION, RD_VERSION), "stage": "rd_samples", "parent": parent,
           "sampling": _sampling_key(p), "seed": BASE_SEED}
    return Run(p.cache_dir, p.task.name, "rd_samples" if p.rd.sampler == "teacher" else "rd_samples_predistill", key)


def _init_key(p: Params) -> dict:
    """Where the SFT stages (and "Ours w/o D") start: the pre-distilled student or the student spec."""
    if p.rd.student_init == "predistill":
        return {"predistill": predistill_run(p).key}
    return {"student": p.models.student, "models": _models_key(p)}


def sft_run(p: Params) -> Run:
    r = p.rd
    key = {"parent": samples_run(p).key, "stage": "rd_sft", "init": _init_key(p), "sft_data": r.sft_data,
           "threshold": r.vote_threshold, "dedupe": r.dedupe, "optim": _optim_key(r.sft), "eval": _eval_key(p),
           "seed": p.seed}
    return Run(p.cache_dir, p.task.name, f"rd_sft_{r.sft_data}", key)


def _warmup(p: Params) -> Params:
    """S_warmup: the voted SFT at BASE_SEED, whatever the seed of the run built on it (one warm-up per pipeline)."""
    return as_stage(p, "rd_sft", seed=BASE_SEED, **{"rd.sft_data": "voted"})


def student_samples_run(p: Params) -> Run:
    """S_warmup's samples; with ``rd.sample_shards`` > 1 either one shard (``rd.sample_shard`` = k:
    the chunks c with c mod shards = k) or, with ``sample_shard`` None, the run that joins them."""
    r = p.rd
    key = {"parent": sft_run(_warmup(p)).key, "stage": "rd_student_samples", "n": r.student_samples,
           "temperature": r.student_temperature, "chunk": r.sample_chunk, "seed": BASE_SEED}
    if r.sample_shards > 1:
        key["shards"] = r.sample_shards
        if r.sample_shard is not None:
            key["shard"] = r.sample_shard
            return Run(p.cache_dir, p.task.name, f"rd_student_samples_shard{r.sample_shard}of{r.sample_shards}", key)
    return Run(p.cache_dir, p.task.name, "rd_student_samples", key)


def _shards(p: Params) -> list[Params]:
    return [as_stage(p, "rd_student_samples", **{"rd.sample_shard": k}) for k in range(p.rd.sample_shards)]


def rm_run(p: Params) -> Run:
    r = p.rd
    key = {"parent": student_samples_run(p).key, "stage": "rd_rm", "data": r.rm_data, "m_max": r.m_max,
           "split": [r.rm_val_fraction, r.rm_test_fraction], "optim": _optim_key(r.rm), "seed": BASE_SEED}
    if r.rm_data == "student":
        key.update(lam=r.lam, teacher_ratio=r.teacher_ratio)
    return Run(p.cache_dir, p.task.name, f"rd_rm_{r.rm_data}", key)


def _ppo_key(p: Params) -> dict:
    d = _optim_key(p.ppo)
    for k in ("k", "tail", "normalize", "reward_clip"):  # the teacher-reward settings of seed 001's PPO
        d.pop(k, None)
    return d


def ppo_label(p: Params) -> str:
    """The folder / row name of an rd_ppo run: rd_ppo[_minus1][_wod][_teacherrm]."""
    r = p.rd
    return "rd_ppo" + ("_minus1" if r.shaping == "minus1" else "") + ("_wod" if r.policy_init == "base" else "") + \
        ("_teacherrm" if r.rm_data == "teacher" else "")


def ppo_run(p: Params) -> Run:
    r = p.rd
    init = sft_run(_warmup(p)).key if r.policy_init == "warmup" else _init_key(p)
    key = {"parent": rm_run(p).key, "stage": "rd_ppo", "policy_init": init, "optim": _ppo_key(p),
           "shaping": r.shaping, "no_answer_reward": r.no_answer_reward, "eval": _eval_key(p), "seed": p.seed,
           "prompts": "d_s+d_fail"}
    return Run(p.cache_dir, p.task.name, ppo_label(p), key)


def eval_run(p: Params) -> Run:
    r = p.rd
    target = run_for(as_stage(p, r.eval_target))
    key = {"parent": target.key, "stage": "rd_eval", "target": str(Path(target.path).name), "set": r.eval_set,
           "n": r.eval_n, "data_seed": p.task.data_seed, "v": RD_VERSION}
    return Run(p.cache_dir, p.task.name, f"rd_eval_{r.eval_set}_{target.stage}", key)


# ----------------------------------------------------------------------------- reading what the stages wrote
def _parts(run: Run, folder: str = "samples") -> list[dict]:
    rows = []
    for f in sorted((run.path / folder).glob("part-*.jsonl")):
        rows += read_jsonl(f)
    return sorted(rows, key=lambda r: r["i"])


@dataclass
class TeacherSamples:
    """The teacher's answers of the sampled questions (Step 1), expanded: the greedy answer (one
    decode) stands for ``n_high`` identical samples at temperature 0, in the vote and in D_sft."""

    idx: list[int]  # train indices
    responses: list[list[str]]  # per question: every response, high-confidence first
    answers: list[list[str | None]]  # their extracted answers
    temperatures: list[list[float]]
    n_high: list[int]  # per question: how many of the responses are high-confidence

    def high_answers(self, q: int) -> list[str | None]:
        return self.answers[q][: self.n_high[q]]

    def votes(self, threshold: float) -> list[str | None]:
        """y*(q) per question (None: D_fail), Sec. 3.1."""
        return [vote(self.high_answers(q), threshold) for q in range(len(self.idx))]


def read_teacher_samples(run: Run, n_high: int) -> TeacherSamples:
    idx, resp, ans, temps, nh = [], [], [], [], []
    for row in _parts(run):
        r_high = expand_counts([((t, x), n_high if t == 0 else 1) for t, x in row["high"]])
        r_low = [(t, x) for t, x in row["low"]]
        both = r_high + r_low
        idx.append(row["i"])
        resp.append([x for _, x in both])
        ans.append([answer_of(x) for _, x in both])
        temps.append([t for t, _ in both])
        nh.append(len(r_high))
    return TeacherSamples(idx, resp, ans, temps, nh)


def teacher_samples(p: Params) -> TeacherSamples:
    return read_teacher_samples(samples_run(p), p.rd.n_high)


def student_samples(p: Params) -> dict[int, list[str]]:
    """S_warmup's samples per train index (labelled questions only), from every shard."""
    runs = [student_samples_run(q) for q in _shards(p)] if p.rd.sample_shards > 1 else [student_samples_run(p)]
    return {row["i"]: row["samples"] for run in runs for row in _parts(run)}


@dataclass
class RMData:
    """D_S, D_R and its split (Steps 4-5), and the PPO prompt pool (Step 7), for params ``p``."""

    y_star: dict[int, str | None]  # train index -> y* (None: D_fail), every sampled question
    d_s: list[int]  # Eq. (3): labelled questions with at least one wrong student answer
    train: list[Triplet]  # RM-train triplets (student data with rd.teacher_ratio, or teacher-only data)
    dev: list[Triplet]  # RM-val triplets (teacher_ratio 1: fixed whatever the ratio trained on)
    test: list[Triplet]  # RM-test triplets (Table 3)
    d_r: list[int]  # questions with at least one student triplet
    d_fail: list[int]


def _as_triplets(rows, idx: list[int]) -> list[Triplet]:
    return [(idx[t.qid], t.teacher_pos, t.student_pos, t.student_neg) for t in rows]


def ppo_prompts(d: RMData) -> list[int]:
    """The RL prompt set of Step 7 (Sec. 3.4 "Data"): every question of D_S (the student failed at least once, with or
    without a correct answer of its own: a question it failed every time yields no triplet for D_R but stays an RL
    prompt) and of D_F (the teacher's vote failed). Train indices, sorted."""
    return sorted(set(d.d_s) | set(d.d_fail))


def rm_data(p: Params) -> RMData:
    r = p.rd
    ts = teacher_samples(p)
    ys = ts.votes(r.vote_threshold)
    st = student_samples(p)
    lab = [q for q in range(len(ts.idx)) if ys[q] is not None]  # positions of labelled questions
    s_resp = [st.get(ts.idx[q], []) for q in range(len(ts.idx))]
    s_ans = [[answer_of(x) for x in xs] for xs in s_resp]
    d_s = select_failed([s_ans[q] for q in lab], [ys[q] for q in lab])  # positions in `lab`
    d_s_pos = [lab[j] for j in d_s]
    held_frac = r.rm_val_fraction + r.rm_test_fraction
    tr, held = split_questions(len(d_s_pos), held_frac, seed=BASE_SEED)
    rest, share = split_questions(len(held), r.rm_test_fraction / held_frac if held_frac else 0.0, seed=BASE_SEED + 1)
    val, test = [held[j] for j in rest], [held[j] for j in share]
    split = {"train": [d_s_pos[j] for j in tr], "dev": [d_s_pos[j] for j in val], "test": [d_s_pos[j] for j in test]}

    def student_triplets(positions: list[int], ratio: float) -> list[Triplet]:
        rows = build_rm_triplets([str(ts.idx[q]) for q in positions], [s_resp[q] for q in positions],
                                 [s_ans[q] for q in positions], [ts.responses[q] for q in positions],
                                 [ts.answers[q] for q in positions], [ys[q] for q in positions], m_max=r.m_max,
                                 teacher_ratio=ratio, seed=BASE_SEED)
        return _as_triplets(rows, [ts.idx[q] for q in positions])

    dev, test_t = student_triplets(split["dev"], 1.0), student_triplets(split["test"], 1.0)
    if r.rm_data == "student":
        train = student_triplets(split["train"], r.teacher_ratio)
    else:  # Table 4: teacher answers only, every labelled question outside RM-val/test
        held_out = set(split["dev"]) | set(split["test"])
        pos = [q for q in lab if q not in held_out]
        rows = build_teacher_triplets([str(ts.idx[q]) for q in pos], [ts.responses[q] for q in pos],
                                      [ts.answers[q] for q in pos], [ys[q] for q in pos], m_max=r.m_max, seed=BASE_SEED)
        train = _as_triplets(rows, [ts.idx[q] for q in pos])
    all_student = student_triplets(d_s_pos, 1.0)
    d_r = sorted({t[0] for t in all_student})
    return RMData(y_star={ts.idx[q]: ys[q] for q in range(len(ts.idx))}, d_s=[ts.idx[q] for q in d_s_pos], train=train,
                  dev=dev, test=test_t, d_r=d_r, d_fail=[ts.idx[q] for q in range(len(ts.idx)) if ys[q] is None])


# ----------------------------------------------------------------------------- stage 1: teacher samples
def _generator(dev, *parts) -> torch.Generator:
    g = torch.Generator(device=torch.device(dev))
    return g.manual_seed(int(np.random.default_rng(list(parts)).integers(2**62)))


@torch.no_grad()
def _sample(model, task: Task, idx: list[int], which: str, temperature: float, g, dev) -> list[str]:
    src = task.teacher_src["train"] if which == "teacher" else task.student_src["train"]
    ids, m = pad([src[i] for i in idx], task.tok.pad_token_id, left=task.arch == "causal", device=dev)
    roll = generate(model, task.tok, ids, m, arch=task.arch, max_new_tokens=task.max_target_len,
                    do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
                    use_calculator=task.use_calculator, generator=g)
    return decode(task.tok, roll.tokens, roll.mask)


def _n_questions(p: Params, task: Task) -> int:
    n = task.split_size("train")
    return n if p.rd.n_questions is None else min(p.rd.n_questions, n)


def ensure_samples(p: Params) -> Run:
    """Step 1 (Sec. 3.1, 4.1): teacher answers at the high- and low-confidence temperatures."""
    task = load_task_bundle(p)
    run = samples_run(p)
    if run.finished:
        return run
    t0 = time.time()
    acc = get_accelerator()
    dev = acc.device
    r = p.rd
    if r.sampler == "teacher":
        teacher, which = _teacher_model(p, task).to(dev), "teacher"
    else:  # the pre-distilled student answers with its own prompt
        teacher = frozen(load_model(p, task, p.models.student, checkpoint=str(predistill_run(p).best_dir))).to(dev)
        which = "student"
    run.start()
    n = _n_questions(p, task)
    chunks = math.ceil(n / r.sample_chunk)
    for c in range(chunks):
        part = run.path / "samples" / f"part-{c:05d}.jsonl"
        if part.is_file():
            continue
        idx = list(range(c * r.sample_chunk, min(n, (c + 1) * r.sample_chunk)))
        rows = {i: {"i": i, "high": [], "low": []} for i in idx}
        for kind, temps, k in (("high", r.high_temperatures, r.n_high), ("low", r.low_temperatures, r.n_low)):
            for ti, temp in enumerate(temps):
                reps = 1 if temp == 0 else k  # greedy: decoded once, counted n_high times when read
                batch = [i for i in idx for _ in range(reps)]
                texts = _sample(teacher, task, batch, which, temp, _generator(dev, BASE_SEED, c, ti, kind == "high"), dev)
                for i, x in zip(batch, texts):
                    rows[i][kind].append([temp, x])
        write_jsonl(part, list(rows.values()))
        report_progress(run, c + 1, chunks)
    ts = read_teacher_samples(run, r.n_high)
    q = label_quality(ts.answers, ts.votes(r.vote_threshold), [answer_of(task.targets["train"][i]) for i in ts.idx])
    run.finish({"task": task.name, "kind": task.kind, "n_questions": n, "n_responses": sum(map(len, ts.responses)),
                "vote_threshold": r.vote_threshold, "time_s": round(time.time() - t0, 2), **q})
    return run


# ----------------------------------------------------------------------------- stage 2-3: SFT
def _start_model(p: Params, task: Task):
    """The student the SFT stages (and "Ours w/o D") start from."""
    if p.rd.student_init == "predistill":
        return load_model(p, task, p.models.student, checkpoint=str(predistill_run(p).best_dir))
    return load_model(p, task, p.models.student, seed=BASE_SEED)


def ensure_sft(p: Params) -> Run:
    """Steps 2-3: voting, then SFT on D_sft (Eq. (1)-(2)) or on every teacher answer (the SFT
    baseline), to the best dev checkpoint (plateau rule of ``rd.sft``)."""
    task = load_task_bundle(p)
    run = sft_run(p)
    if run.finished:
        return run
    r = p.rd
    ts = teacher_samples(p)
    ys = ts.votes(r.vote_threshold)
    if r.sft_data == "voted":
        pairs = build_sft_set(ts.idx, ts.responses, ts.answers, ys, dedupe=r.dedupe)  # Eq. (1)
    else:  # the SFT baseline: every teacher answer, unfiltered (spec A7.15)
        pairs = [(i, x) for i, xs in zip(ts.idx, ts.responses) for x in xs]
        if r.dedupe:
            pairs = list(dict.fromkeys(pairs))
    model = _start_model(p, task)
    optim = r.sft if pairs else r.sft.model_copy(update={"steps": 0})
    acc = get_accelerator()
    loss = nll_micro_loss(task, [x for _, x in pairs], acc.device, src_index=[i for i, _ in pairs])
    train_run(run, params=p, optim=optim, task=task, model=model, seed=p.seed, micro_loss=loss,
              n_train=max(1, len(pairs)), extra_summary={"method": f"rd_sft_{r.sft_data}", "n_pairs": len(pairs),
                                                         "n_questions": len(ts.idx),
                                                         "n_fail": sum(y is None for y in ys)})
    return run


# ----------------------------------------------------------------------------- stage 4: student samples
def ensure_student_samples(p: Params) -> Run:
    """Step 4 (Sec. 3.3): S_warmup answers every labelled question ``rd.student_samples`` times
    (a shard: the chunks it owns; the joining run of several shards only summarises them)."""
    task = load_task_bundle(p)
    run = student_samples_run(p)
    if run.finished:
        return run
    r = p.rd
    t0 = time.time()
    sharded = r.sample_shards > 1
    mine = (lambda c: c % r.sample_shards == r.sample_shard) if sharded and r.sample_shard is not None else \
        (lambda c: not sharded)  # the joining run samples nothing
    dev = get_accelerator().device
    ts = teacher_samples(p)
    ys = ts.votes(r.vote_threshold)
    lab = [i for i, y in zip(ts.idx, ys) if y is not None]
    run.start()
    chunks = math.ceil(len(lab) / r.sample_chunk)
    model = None
    for c in range(chunks):
        part = run.path / "samples" / f"part-{c:05d}.jsonl"
        if part.is_file() or not mine(c):
            continue
        if model is None:
            model = frozen(load_model(p, task, p.models.student, checkpoint=str(sft_run(_warmup(p)).best_dir))).to(dev)
        idx = lab[c * r.sample_chunk: (c + 1) * r.sample_chunk]
        batch = [i for i in idx for _ in range(r.student_samples)]
        texts = _sample(model, task, batch, "student", r.student_temperature, _generator(dev, BASE_SEED, c, 7), dev)
        rows = {i: {"i": i, "samples": []} for i in idx}
        for i, x in zip(batch, texts):
            rows[i]["samples"].append(x)
        write_jsonl(part, list(rows.values()))
        report_progress(run, c + 1, chunks)
    if sharded and r.sample_shard is not None:
        run.finish({"task": task.name, "kind": task.kind, "shard": r.sample_shard, "shards": r.sample_shards,
                    "time_s": round(time.time() - t0, 2)})
        return run
    st = student_samples(p)
    y_of = dict(zip(ts.idx, ys))
    truth = {i: answer_of(task.targets["train"][i]) for i in st}
    agree = [z for i, xs in st.items() for z in label_responses([answer_of(x) for x in xs], y_of[i])]
    true = [int(answer_of(x) == truth[i] and truth[i] is not None) for i, xs in st.items() for x in xs]
    d_s = select_failed([[answer_of(x) for x in st[i]] for i in lab], [y_of[i] for i in lab])
    run.finish({"task": task.name, "kind": task.kind, "n_questions": len(lab), "n_samples": len(agree),
                "agree_ystar": float(np.mean(agree)) if agree else float("nan"),
                "true_accuracy": float(np.mean(true)) if true else float("nan"), "n_d_s": len(d_s),
                "time_s": round(time.time() - t0, 2)})
    return run


# ----------------------------------------------------------------------------- stage 5-6: reward model
def load_rm(p: Params, task: Task, checkpoint: Path | None = None, trainable: bool = False):
    """S_warmup + a scalar head; with ``checkpoint`` (a finished rd_rm run's best) its weights and head."""
    ckpt = checkpoint if checkpoint is not None else sft_run(_warmup(p)).best_dir
    model = load_model(p, task, p.models.student, checkpoint=str(ckpt))
    attach_head(model)
    if checkpoint is not None and not load_head(model, checkpoint):
        raise FileNotFoundError(f"{checkpoint}: no reward-model head (head.safetensors)")
    return model if trainable else frozen(model)


def ensure_rm(p: Params) -> Run:
    """Steps 5-6 (Sec. 3.3): D_R triplets and the reward model (Eq. (6); Eq. (4) for Table 4's
    teacher-only RM), best RM-val pairwise accuracy; Table 3's accuracies on RM-test."""
    task = load_task_bundle(p)
    run = rm_run(p)
    if run.finished:
        return run
    r = p.rd
    d = rm_data(p)
    dev = get_accelerator().device
    loss = "rm" if r.rm_data == "student" else "cls"
    model = load_rm(p, task, trainable=True)
    optim = r.rm if d.train else r.rm.model_copy(update={"steps": 0})
    train_run(run, params=p, optim=optim, task=task, model=model, seed=BASE_SEED, n_train=max(1, len(d.train)),
              micro_loss=rm_micro_loss(task, d.train, dev, r.lam, loss),
              evaluator=rm_evaluator(task, {"dev": d.dev, "test": d.test}, dev, r.lam, loss),
              extra_summary={"method": f"rd_rm_{r.rm_data}", "loss": loss, "lam": r.lam if loss == "rm" else None,
                             "teacher_ratio": r.teacher_ratio, "n_train": len(d.train), "n_dev": len(d.dev),
                             "n_test": len(d.test), "n_d_s": len(d.d_s), "n_d_r": len(d.d_r), "n_fail": len(d.d_fail)})
    return run


# ----------------------------------------------------------------------------- stage 7-9: PPO
def ensure_ppo(p: Params) -> Run:
    """Steps 7-9 (Sec. 3.4): PPO from S_warmup (or, "Ours w/o D", from the SFT start point) on
    D_R and D_fail prompts with the shaped reward of Eq. (7), a k1 KL penalty to the frozen start
    policy, and a critic initialised from the reward model; best dev checkpoint."""
    task = load_task_bundle(p)
    run = ppo_run(p)
    if run.finished:
        return run
    r = p.rd
    acc = get_accelerator()
    dev = acc.device
    rm_dir = rm_run(p).best_dir
    d = rm_data(p)
    if r.policy_init == "warmup":
        ckpt = str(sft_run(_warmup(p)).best_dir)
        policy = load_model(p, task, p.models.student, checkpoint=ckpt)
        reference = frozen(load_model(p, task, p.models.student, checkpoint=ckpt)) if p.ppo.kl_coef > 0 else None
    else:
        policy = _start_model(p, task)
        reference = frozen(_start_model(p, task)) if p.ppo.kl_coef > 0 else None
    rm = load_rm(p, task, rm_dir).to(dev)
    value_model_from_rm(policy, load_rm(p, task, rm_dir, trainable=True))
    if reference is not None:
        reference.to(dev)
    prompts = ppo_prompts(d)
    truth = {i: answer_of(task.targets["train"][i]) for i in prompts}
    method = rd_ppo_method(rm, task, p.ppo, d.y_star, r.shaping, r.no_answer_reward, truth)
    optim = p.ppo if prompts else p.ppo.model_copy(update={"steps": 0})
    train_run(run, params=p, optim=optim, task=task, model=policy, seed=p.seed,
              step_fn=ppo_step_fn(method, task, p.ppo, acc, p.seed, reference, prompts=prompts or [0]),
              extra_summary={"method": ppo_label(p), "n_prompts": len(prompts), "n_d_r": len(d.d_r), "n_d_s": len(d.d_s),
                             "n_fail": len(d.d_fail), "shaping": r.shaping, "policy_init": r.policy_init,
                             "rm_data": r.rm_data})
    return run


# ----------------------------------------------------------------------------- held-out evaluation
def ensure_eval(p: Params) -> Run:
    """Greedy accuracy of the best checkpoint of the ``rd.eval_target`` run on ``rd.eval_set``
    (mini-GSM-Plus: the perturbed mini-GSM8K test problems), with a bootstrap CI and the accuracy
    per perturbation type; outputs saved beside."""
    from kdlib.modeling.evaluate import evaluate
    from kdlib.trainers.base import autocast

    task = load_task_bundle(p)
    run = eval_run(p)
    if run.finished:
        return run
    r = p.rd
    if kdata.EVAL_SET_TASK[r.eval_set] != p.task.name:
        raise ValueError(f"evaluation set {r.eval_set!r} is for models trained on {kdata.EVAL_SET_TASK[r.eval_set]!r}, "
                         f"not {p.task.name!r}")
    t0 = time.time()
    target = run_for(as_stage(p, r.eval_target))
    which = "teacher" if r.eval_target == "teacher" else "student"
    spec = p.models.teacher if which == "teacher" else p.models.student
    dev = get_accelerator().device
    model = frozen(load_model(p, task, spec, checkpoint=str(target.best_dir))).to(dev)
    ds = kdata.load_eval_set(r.eval_set, cache_dir=p.cache_dir, n=r.eval_n, seed=p.task.data_seed)
    sources, refs = list(ds["source"]), list(ds["target"])
    run.start()
    with autocast(p, dev):
        m, preds = evaluate(model, task.tok, arch=task.arch, src=encode_prompts(p, task, sources, which), references=refs,
                            kind=task.kind, max_new_tokens=task.max_target_len, batch_size=p.eval.batch_size,
                            use_calculator=task.use_calculator, device=dev)
    correct = [int(answer_of(x) is not None and answer_of(x) == answer_of(y)) for x, y in zip(preds, refs)]
    by = {}
    if "perturbation" in ds.column_names:
        for kind in sorted(set(ds["perturbation"])):
            hits = [c for c, k in zip(correct, ds["perturbation"]) if k == kind]
            by[kind] = {"accuracy": 100.0 * float(np.mean(hits)), "n": len(hits)}
    write_jsonl(run.path / "outputs" / "test.jsonl",
                [{"id": ds["id"][i], "output": preds[i], "reference": refs[i], "correct": correct[i]}
                 for i in range(len(preds))])
    run.finish({"task": task.name, "kind": task.kind, "primary": task.primary, "eval_set": r.eval_set,
                "target": str(target.path), "target_stage": r.eval_target, "test": m,
                "test_ci": metrics.bootstrap_cis(task.kind, preds, refs), "by_perturbation": by, "n": len(preds),
                "time_s": round(time.time() - t0, 2)})
    return run


# ----------------------------------------------------------------------------- registry
def _parents_sft(p: Params) -> list[Params]:
    return [as_stage(p, "rd_samples")] + ([as_stage(p, "predistill")] if p.rd.student_init == "predistill" else [])


def _parents_ppo(p: Params) -> list[Params]:
    out = [as_stage(p, "rd_rm")]
    if p.rd.policy_init == "base" and p.rd.student_init == "predistill":
        out.append(as_stage(p, "predistill"))
    return out


register_stage("rd_samples", samples_run, ensure_samples,
               lambda p: [as_stage(p, "teacher" if p.rd.sampler == "teacher" else "predistill")])
register_stage("rd_sft", sft_run, ensure_sft, _parents_sft)
register_stage("rd_student_samples", student_samples_run, ensure_student_samples,
               lambda p: _shards(p) if p.rd.sample_shards > 1 and p.rd.sample_shard is None else [_warmup(p)])
register_stage("rd_rm", rm_run, ensure_rm, lambda p: [as_stage(p, "rd_student_samples")])
register_stage("rd_ppo", ppo_run, ensure_ppo, _parents_ppo)
register_stage("rd_eval", eval_run, ensure_eval, lambda p: [as_stage(p, p.rd.eval_target)])

__all__ = ["RMData", "TeacherSamples", "answer_of", "eval_run", "ppo_label", "ppo_run", "rm_data", "rm_run",
           "samples_run", "sft_run", "student_samples", "student_samples_run", "teacher_samples"]
