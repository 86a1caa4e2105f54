"""Chains of runs (floor 4): teacher -> pre-distilled student -> one distillation method.

Each stage is a :class:`kdlib.trainers.runs.Run` keyed by the parameters that change what it computes
(and its parent's key), so every notebook shares one cache: ``02_returns`` reuses what
``01_main_results`` trained, and adding K=3 trains only the K=3 runs. A finished run is reused,
an interrupted one resumes from its last checkpoint.

The teacher and the pre-distilled student use ``base_seed`` (shared by every method and seed,
as in the paper: "all methods adopt pre-distillation"); a method run uses ``seed``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from kdlib.config import (
    CMDP_STAGES,
    DIVERGENCE_METHODS,
    PPO_METHODS,
    RD_STAGES,
    RL_METHODS,
    Params,
)
from kdlib.modeling.models import (
    check_shared_vocab,
    decode,
    is_tiny,
    load_hub_tokenizer,
    pad,
)
from kdlib.trainers.base import (
    TRAINER_VERSION,
    evaluate_only,
    get_accelerator,
    teacher_encoder_cache,
    train_run,
)
from kdlib.trainers.divergence import divergence_micro_loss
from kdlib.trainers.ppo import ppo_step_fn, prepare_policy, seed001_method
from kdlib.trainers.rl import rl_micro_loss
from kdlib.trainers.runs import Run, read_jsonl, write_jsonl
from kdlib.trainers.supervised import nll_micro_loss
from kdlib.trainers.tasks import Task, data_key, frozen, load_model, load_task_bundle

BASE_SEED = 0


def _optim_key(optim) -> dict:
    """What of a stage's optimiser settings changes its numbers (not how often it logs or saves)."""
    d = optim.model_dump()
    for k in ("log_every", "checkpoint_every"):
        d.pop(k, None)
    legacy = {"plateau_window": 0.0, "plateau_smooth": 1, "min_steps": 0}  # the older plateau rule: keys as before
    if d.get("patience") is None or all(d.get(k) == v for k, v in legacy.items()):
        for k in legacy:
            d.pop(k, None)
    for k, neutral in (("vf_lr", None), ("critic_warmup", 0)):  # critic settings at their neutral value: keys as before
        if k in d and d[k] == neutral:
            d.pop(k)
    return d


def _eval_key(p: Params) -> dict:
    """What of the evaluation settings changes a run's numbers (dev set size: model selection;
    test set size; batch size: padding). Not what it only logs (eval.sampled)."""
    return {k: getattr(p.eval, k) for k in ("batch_size", "n_dev", "n_test")}


def _models_key(p: Params) -> dict:
    m = p.models
    return {"arch": m.arch, "tokenizer": m.tokenizer, "dtype": m.dtype, "dropout": m.dropout}


def teacher_run(p: Params) -> Run:
    key = {"v": TRAINER_VERSION, "stage": "teacher", "data": data_key(p),
           "fingerprint": load_task_bundle(p).fingerprint, "teacher": p.models.teacher,
           "models": _models_key(p), "optim": _optim_key(p.teacher), "eval": _eval_key(p), "seed": BASE_SEED}
    return Run(p.cache_dir, p.task.name, "teacher", key)


def zeroshot_run(p: Params) -> Run:
    key = {"parent": teacher_run(p).key, "stage": "zeroshot", "student": p.models.student, "seed": BASE_SEED}
    return Run(p.cache_dir, p.task.name, "zeroshot", key)


def predistill_run(p: Params) -> Run:
    key = {"parent": teacher_run(p).key, "stage": "predistill", "student": p.models.student,
           "optim": _optim_key(p.predistill), "seed": BASE_SEED}
    return Run(p.cache_dir, p.task.name, "predistill", key)


# Settings only one method reads: left out of every other method's key (so adding them changed no earlier run's key).
_OWN_FIELDS = {"gkd_jsd": ("gkd_beta", "gkd_lambda"),
               "distillm": ("distillm_loss", "distillm_alpha", "distillm_init", "distillm_loss_eps", "distillm_capacity"),
               "minillm_pg": ("minillm_mix", "minillm_whiten")}


def _drop_others(optim: dict, method: str) -> None:
    for owner, fields in _OWN_FIELDS.items():
        if owner != method:
            for k in fields:
                optim.pop(k, None)


def method_run(p: Params) -> Run:
    if p.method in DIVERGENCE_METHODS:
        optim = _optim_key(p.divergence)
        _drop_others(optim, p.method)
        if p.method in ("seqkd", "kl"):  # these ignore the student-sample settings
            for k in ("student_mix", "js_beta", "temperature"):
                optim.pop(k)
        elif p.method in ("gkd_jsd", "distillm"):  # their own mixes; no JS/TVD estimator
            for k in ("student_mix", "js_beta", "estimator"):
                optim.pop(k)
    elif p.method in RL_METHODS:
        optim = _optim_key(p.rl)
        _drop_others(optim, p.method)
        optim["k"] = p.k_effective()
        optim.pop("allow_off_policy")  # a check, not a setting
        if p.method != "ketchup":
            optim.pop("tail")
        if optim["k"] != "auto":
            optim.pop("auto_k_grid"), optim.pop("auto_k_tol")
        else:  # adaptive K bounds the bias at every position since rule 2 (rule 1 bounded G^_0's only)
            optim["auto_k_rule"] = 2
        if p.method != "opd":
            optim.pop("opd_gamma")
        if p.method in ("opd", "minillm_pg") or optim["value"] == "max":  # the papers' value: keys as before
            optim.pop("value")
    elif p.method in PPO_METHODS:
        optim = _optim_key(p.ppo)
        if p.method != "ketchup_ppo":
            optim.pop("k"), optim.pop("tail")
    else:
        raise ValueError(f"{p.method!r} is a stage, not a distillation method")
    key = {"parent": predistill_run(p).key, "stage": p.method, "optim": optim, "seed": p.seed}
    name = run_label(p)
    return Run(p.cache_dir, p.task.name, name, key)


def run_label(p: Params) -> str:
    """The name a method's runs and table rows carry (KETCHUP with its K)."""
    if p.method == "ketchup":
        return f"ketchup_soft_k{p.rl.k}" if p.rl.value == "soft" else f"ketchup_k{p.rl.k}"
    if p.method == "ketchup_ppo":
        return f"ketchup_ppo_k{p.ppo.k}"
    return p.method


# ----------------------------------------------------------------------------- the stage registry
@dataclass(frozen=True)
class Stage:
    """A kind of run the kit trains, named by ``params.method``: where its run lives (``run``,
    trains nothing), how to finish it (``train``, which may assume its parents are finished) and
    the stages it builds on (``parents``: their params, ``method`` set to the parent stage). The
    scheduler (kdlib.chains.schedule) walks ``parents`` to order and parallelise a notebook's runs; the
    rival systems (seeds 003, 004) register their own chains here."""

    run: Callable[[Params], Run]
    train: Callable[[Params], Run]
    parents: Callable[[Params], list[Params]]


STAGES: dict[str, Stage] = {}


def register_stage(name: str, run: Callable[[Params], Run], train: Callable[[Params], Run],
                   parents: Callable[[Params], list[Params]]) -> None:
    STAGES[name] = Stage(run=run, train=train, parents=parents)


def as_stage(p: Params, stage: str, **updates) -> Params:
    """``p`` naming another stage (``method``), with nested fields updated as given."""
    q = p.model_copy(update={"method": stage}, deep=True)
    for key, value in updates.items():
        section, field = key.split(".", 1) if "." in key else (None, key)
        if section is None:
            setattr(q, field, value)
        else:
            setattr(getattr(q, section), field, value)
    return q


# The rival systems register their own stages in their chain modules. The registry imports none of them: the
# first time one of their stage names is asked for, the module that owns it is imported (by name), so every process
# that can train (the scheduler's workers included) knows every stage.
SYSTEM_CHAINS = {"kdlib.chains.constrained_kd": CMDP_STAGES, "kdlib.chains.reward_distill": RD_STAGES}


def _stage(p: Params) -> Stage:
    if p.method not in STAGES:
        for module, stages in SYSTEM_CHAINS.items():
            if p.method in stages:
                importlib.import_module(module)
    if p.method not in STAGES:
        raise ValueError(f"no stage {p.method!r} is registered; known: {', '.join(sorted(STAGES))}")
    return STAGES[p.method]


def run_for(p: Params) -> Run:
    """The run that ``train(p)`` finishes (without training anything)."""
    return _stage(p).run(p)


def parents_of(p: Params) -> list[Params]:
    return _stage(p).parents(p)


# ----------------------------------------------------------------------------- stages
def _teacher_model(p: Params, task: Task):
    run = ensure_teacher(p, task)
    return frozen(load_model(p, task, p.models.teacher, checkpoint=str(run.best_dir), frozen_weights=True))


def ensure_teacher(p: Params, task: Task | None = None) -> Run:
    """Teacher preparation: fine-tuned on references (embedded teachers from scratch), or only
    evaluated when ``teacher.train`` is false (the paper prompts FLAN-T5-XL for XSum)."""
    task = task or load_task_bundle(p)
    run = teacher_run(p)
    if not run.finished:
        model = load_model(p, task, p.models.teacher, seed=BASE_SEED)
        if p.teacher.train and p.teacher.steps > 0:
            train_run(run, params=p, optim=p.teacher, task=task, model=model, seed=BASE_SEED,
                      micro_loss=nll_micro_loss(task, task.targets["train"], get_accelerator().device, "teacher"))
        else:
            evaluate_only(run, params=p, task=task, model=model)
    _ensure_teacher_outputs(p, task, run)
    return run


def _ensure_teacher_outputs(p: Params, task: Task, run: Run) -> None:
    """Greedy teacher outputs on the train sources: the data of pre-distillation, SeqKD and KL."""
    path = run.path / "outputs" / "train_teacher.jsonl"
    acc = get_accelerator()
    if not path.is_file() and acc.is_main_process:
        from kdlib.modeling.generation import generate

        teacher = frozen(load_model(p, task, p.models.teacher, checkpoint=str(run.best_dir), frozen_weights=True)).to(acc.device)
        outs = []
        src = task.teacher_src["train"]
        bs = p.eval.batch_size
        for i in range(0, len(src), bs):
            ids, m = pad(src[i: i + bs], task.tok.pad_token_id, left=task.arch == "causal", device=acc.device)
            roll = generate(teacher, task.tok, ids, m, arch=task.arch, max_new_tokens=task.max_target_len,
                            use_calculator=task.use_calculator)
            outs += decode(task.tok, roll.tokens, roll.mask)
        write_jsonl(path, [{"id": i, "output": o} for i, o in enumerate(outs)])
    acc.wait_for_everyone()


def _new_student(p: Params, task: Task, teacher):
    """The student before training, refused if it does not share the teacher's vocabulary."""
    model = load_model(p, task, p.models.student, seed=BASE_SEED)
    student_tok = task.tok
    if not is_tiny(p.models.student) and p.models.tokenizer is None:
        student_tok = load_hub_tokenizer(p.models.student, p.models.trust_remote_code)
    check_shared_vocab(task.tok, student_tok, teacher, model)
    return model


def teacher_outputs(p: Params) -> list[str]:
    return [r["output"] for r in read_jsonl(teacher_run(p).path / "outputs" / "train_teacher.jsonl")]


def ensure_zeroshot(p: Params) -> Run:
    """The student before any training (the embedded students start from random weights)."""
    task = load_task_bundle(p)
    run = zeroshot_run(p)
    if not run.finished:
        teacher = _teacher_model(p, task)
        model = _new_student(p, task, teacher)
        evaluate_only(run, params=p, task=task, model=model, teacher=teacher)
    return run


def ensure_predistill(p: Params) -> Run:
    """Pre-distillation: the student trained by cross-entropy on the teacher's outputs, the shared
    starting point of every method (seed 000 Sec. 3.1)."""
    task = load_task_bundle(p)
    run = predistill_run(p)
    if not run.finished:
        teacher = _teacher_model(p, task)
        model = _new_student(p, task, teacher)
        train_run(run, params=p, optim=p.predistill, task=task, model=model, seed=BASE_SEED, teacher=teacher,
                  micro_loss=nll_micro_loss(task, teacher_outputs(p), get_accelerator().device))
    return run


def ensure_method(p: Params) -> Run:
    """One distillation method from the pre-distilled student."""
    task = load_task_bundle(p)
    run = method_run(p)
    if run.finished:
        return run
    pre = ensure_predistill(p)
    teacher = _teacher_model(p, task)
    model = load_model(p, task, p.models.student, checkpoint=str(pre.best_dir))
    acc = get_accelerator()
    extra = {"method": p.method, "k": p.k_effective()}
    if p.method in PPO_METHODS:
        teacher.to(acc.device)
        cache = teacher_encoder_cache(p, task, teacher, "train", optim=p.ppo)
        method = seed001_method(p.method, teacher, task, p.ppo, cache)
        prepare_policy(model, method, p.ppo)
        reference = None
        if p.ppo.kl_coef > 0:  # a frozen copy of the start policy
            reference = frozen(load_model(p, task, p.models.student, checkpoint=str(pre.best_dir))).to(acc.device)
        train_run(run, params=p, optim=p.ppo, task=task, model=model, seed=p.seed, teacher=teacher,
                  step_fn=ppo_step_fn(method, task, p.ppo, acc, p.seed, reference), extra_summary=extra)
        return run
    if p.method in RL_METHODS:
        teacher.to(acc.device)
        cache = teacher_encoder_cache(p, task, teacher, "train", optim=p.rl)
        loss = rl_micro_loss(p.method, teacher, task, p.rl, acc, p.seed, cache)
        optim = p.rl
    elif p.method == "seqkd":
        loss = nll_micro_loss(task, teacher_outputs(p), acc.device)
        optim = p.divergence
    else:
        teacher.to(acc.device)
        loss = divergence_micro_loss(p.method, teacher, task, teacher_outputs(p), p.divergence, acc, p.seed,
                                     teacher_encoder_cache(p, task, teacher, "train", optim=p.divergence), n_dev=p.eval.n_dev)
        optim = p.divergence
    train_run(run, params=p, optim=optim, task=task, model=model, seed=p.seed, teacher=teacher, micro_loss=loss,
              extra_summary=extra)
    return run


def train(p: Params) -> Run:
    """Finish the run named by ``p.method`` (and every run it builds on); return it. A run another
    process is training is waited for (its folder is locked), not trained twice."""
    run = run_for(p)
    if run.finished:
        return run
    for parent in parents_of(p):
        train(parent)
    with run.lock():
        if run.finished:  # finished by the process we waited for
            return run
        return _stage(p).train(p)


_TEACHER = lambda p: [as_stage(p, "teacher")]  # noqa: E731
register_stage("teacher", teacher_run, ensure_teacher, lambda p: [])
register_stage("zeroshot", zeroshot_run, ensure_zeroshot, _TEACHER)
register_stage("predistill", predistill_run, ensure_predistill, _TEACHER)
for _m in DIVERGENCE_METHODS + RL_METHODS + PPO_METHODS:
    register_stage(_m, method_run, ensure_method, lambda p: [as_stage(p, "predistill")])


def load_run_model(p: Params, run: Run, which: str = "best"):
    """The weights of a finished run (``best`` dev checkpoint) with the task's tokenizer."""
    task = load_task_bundle(p)
    spec = p.models.teacher if run.stage == "teacher" else p.models.student
    return load_model(p, task, spec, checkpoint=str(run.best_dir if which == "best" else run.last_dir)), task
