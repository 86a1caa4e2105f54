"""Seed 004's chain of runs (floor 4): teacher -> start student -> five methods, registered in
the stage registry of kdlib.chains.core (so ``train(p)``, ``python -m kdlib train`` and the
parallel scheduler know them), plus the cached greedy evaluations every table reads.

Stages (``params.method``):

* ``cmdp_start`` -- the student every method starts from (spec B6 [choice]): the student
  pre-distilled (cross-entropy on the teacher's greedy outputs, the ``predistill`` section) for a
  FIXED number of updates, ``cmdp.start_steps``, with no plateau rule: a partially distilled
  student whose KL to the teacher is still several times the budget d, so that the constraint
  binds (a student already within budget would make every method trivially feasible). It is the
  ``predistill`` run of those settings (shared with any notebook asking for the same student).
  ``start_steps: 0`` is the student as loaded (the paper's base checkpoints; a random tiny model
  on the embedded profile).
* ``cmdp``, ``grpo``, ``gkd_grpo``, ``gkd``, ``minillm`` -- one GRPO run each
  (kdlib.trainers.ppo's loop with kdlib.trainers.cmdp's scorer/auxiliary loss), ``cmdp.steps``
  iterations of ``batch_size`` prompts x ``group_size`` samples, keyed by the settings that change
  their numbers (``d``, ``n``, ``phi``, granularity only for ``cmdp``; ``gkd_lambda`` only for
  ``gkd_grpo``). The final weights are kept (``ckpt/final``) beside the harness's best-dev ones:
  the paper evaluates after its 20 epochs (``cmdp.selection: final``, the default).

After training, a worker evaluates its run on ``EVAL_SETS_OF(p)`` (greedy outputs, Eq. (6)
correctness, per-sample KL to the teacher), cached as JSONL in the run folder
(``cmdp_eval/<weights>-<set>-n<n>-<kl settings>.jsonl``, written atomically); the study reads
them (and computes any that are missing).
"""

from __future__ import annotations

from pathlib import Path

from kdlib import data as kdata
from kdlib.chains.core import (
    BASE_SEED,
    _optim_key,
    _teacher_model,
    as_stage,
    ensure_predistill,
    predistill_run,
    register_stage,
    teacher_run,
)
from kdlib.config import CMDP_METHODS, Params, params_hash
from kdlib.modeling.models import (
    check_shared_vocab,
    is_tiny,
    load_hub_tokenizer,
    save_checkpoint,
)
from kdlib.trainers.base import get_accelerator, teacher_encoder_cache, train_run
from kdlib.trainers.runs import Run, read_jsonl, write_jsonl
from kdlib.trainers.tasks import (
    Task,
    data_key,
    encode_prompts,
    frozen,
    load_model,
    load_task_bundle,
)

CMDP_VERSION = 1  # bump when a change alters what a seed-004 run computes
FINAL = "final"


# ----------------------------------------------------------------------------- run keys
def start_params(p: Params) -> Params:
    """The ``predistill`` settings of the partially pre-distilled start (``cmdp.start_steps``
    updates, evaluated at the end only, no plateau rule)."""
    s = p.cmdp.start_steps
    return as_stage(p, "predistill", **{"predistill.steps": s, "predistill.eval_every": s,
                                        "predistill.checkpoint_every": min(s, 500), "predistill.patience": None})


def teacher_key(p: Params):
    """What identifies the teacher: its run (trained teachers) or its hub name (prompted)."""
    if p.teacher.train:
        return teacher_run(p).key
    return {"hub": p.models.teacher, "dtype": p.models.dtype, "data": data_key(p)}


def start_run(p: Params) -> Run:
    if p.cmdp.start_steps > 0:
        return predistill_run(start_params(p))
    key = {"v": CMDP_VERSION, "stage": "cmdp_start", "student": p.models.student, "data": data_key(p),
           "models": {"arch": p.models.arch, "dtype": p.models.dtype, "dropout": p.models.dropout}, "seed": BASE_SEED}
    return Run(p.cache_dir, p.task.name, "cmdp_start", key)


_NOT_TRAINING = ("selection", "score_rows", "kl_chunk", "start_steps", "eval_sets", "k", "tail", "normalize",
                 "reward_clip", "value_clip", "vf_coef", "value_model")
_CMDP_ONLY = ("d", "n", "use_phi", "granularity", "c_ii", "eps_b")
_KL_SETTINGS = ("kl_floor", "kl_reduction", "vocab")


def cmdp_optim_key(p: Params) -> dict:
    """The ``cmdp`` settings that change a method run's numbers."""
    d = _optim_key(p.cmdp)
    for k in _NOT_TRAINING:
        d.pop(k, None)
    if p.method != "cmdp":
        for k in _CMDP_ONLY:
            d.pop(k)
    d.pop("lam")  # GAE lambda: no critic here
    if p.method != "gkd_grpo":
        d.pop("gkd_lambda")
    if p.method == "grpo":
        for k in _KL_SETTINGS:
            d.pop(k)
    if p.method == "minillm":
        d.pop("kl_reduction")  # MiniLLM reads per-token KL and log-ratios, never KL_i
    return d


def cmdp_label(p: Params) -> str:
    """The name a method's runs and table rows carry (GKD-GRPO with its lambda)."""
    if p.method == "gkd_grpo":
        return f"gkd_grpo_lam{p.cmdp.gkd_lambda:g}"
    return p.method


def cmdp_run(p: Params) -> Run:
    if p.method not in CMDP_METHODS:
        raise ValueError(f"{p.method!r} is not a seed-004 method ({', '.join(CMDP_METHODS)})")
    key = {"v": CMDP_VERSION, "parent": start_run(p).key, "teacher": teacher_key(p), "stage": p.method,
           "optim": cmdp_optim_key(p), "seed": p.seed}
    return Run(p.cache_dir, p.task.name, cmdp_label(p), key)


# ----------------------------------------------------------------------------- models
def cmdp_teacher(p: Params, task: Task):
    """The frozen teacher: the trained teacher run (embedded), or the hub model as prompted
    (``teacher.train: false``, the paper's instruct teachers), without generating its outputs."""
    if p.teacher.train:
        return _teacher_model(p, task)
    return frozen(load_model(p, task, p.models.teacher, frozen_weights=True))


def check_vocab(p: Params, task: Task, teacher, student) -> None:
    """One tokenizer for both, and output vocabularies that are equal (``cmdp.vocab: exact``) or
    share a prefix holding every token (``shared_prefix``, spec B2: 151,936 vs 152,064 rows)."""
    student_tok = task.tok
    if not is_tiny(p.models.student) and p.models.tokenizer is None:
        student_tok = load_hub_tokenizer(p.models.student, p.models.trust_remote_code)
    check_shared_vocab(task.tok, student_tok)
    vt = teacher.get_output_embeddings().weight.shape[0]
    vs = student.get_output_embeddings().weight.shape[0]
    if vt == vs:
        return
    if p.cmdp.vocab == "exact":
        raise ValueError(f"teacher and student output vocabularies differ ({vt} vs {vs} logits); set "
                         "cmdp.vocab: shared_prefix to compare them on their shared prefix (spec B2)")
    if min(vt, vs) < len(task.tok):
        raise ValueError(f"the shared prefix of the output vocabularies ({min(vt, vs)} logits) does not hold "
                         f"all {len(task.tok)} tokens of the tokenizer")


def start_checkpoint(p: Params) -> str | None:
    return str(start_run(p).best_dir) if p.cmdp.start_steps > 0 else None


def load_start(p: Params, task: Task):
    """The start student (a fresh copy)."""
    if p.cmdp.start_steps > 0:
        return load_model(p, task, p.models.student, checkpoint=start_checkpoint(p))
    return load_model(p, task, p.models.student, seed=BASE_SEED)


def weights_dir(run: Run, which: str) -> Path:
    """``final`` weights of a method run (falling back to the best-dev ones of a run that saved
    none, e.g. zero steps) or ``best`` (= best_dev)."""
    final = run.path / "ckpt" / FINAL
    if which == "final" and (final / "model.safetensors").is_file():
        return final
    return run.best_dir


# ----------------------------------------------------------------------------- stages
def ensure_start(p: Params) -> Run:
    run = start_run(p)
    if p.cmdp.start_steps > 0:
        ensure_predistill(start_params(p))
    elif not run.finished:
        run.start()
        run.finish({"task": p.task.name, "student": p.models.student, "checkpoint": None, "steps": 0})
    evaluate_all(p, "start")
    return run


def ensure_cmdp(p: Params) -> Run:
    """One seed-004 method from the start student, on the GRPO loop."""
    from kdlib.trainers.cmdp import cmdp_method
    from kdlib.trainers.ppo import ppo_step_fn

    run = cmdp_run(p)
    if not run.finished:
        task = load_task_bundle(p)
        acc = get_accelerator()
        teacher = cmdp_teacher(p, task).to(acc.device)
        model = load_start(p, task)
        check_vocab(p, task, teacher, model)
        cache = teacher_encoder_cache(p, task, teacher, "train", optim=p.cmdp)
        method = cmdp_method(p.method, teacher, model, task, p.cmdp, cache)
        inner = ppo_step_fn(method, task, p.cmdp, acc, p.seed, None)
        final_dir = run.path / "ckpt" / FINAL

        def step_fn(model_, opt, step, amp):
            logs = inner(model_, opt, step, amp)
            if step + 1 == p.cmdp.steps and acc.is_main_process:  # the paper evaluates the final weights
                save_checkpoint(acc.unwrap_model(model_), None, final_dir, {"step": step + 1})
            return logs

        extra = {"method": p.method, "label": cmdp_label(p), "d": p.cmdp.d, "gkd_lambda": p.cmdp.gkd_lambda,
                 "granularity": p.cmdp.granularity, "kl_reduction": p.cmdp.kl_reduction,
                 "start_steps": p.cmdp.start_steps}
        train_run(run, params=p, optim=p.cmdp, task=task, model=model, seed=p.seed, teacher=teacher,
                  step_fn=step_fn, extra_summary=extra)
    evaluate_all(p, "method")
    return run


def _cmdp_parents(p: Params) -> list[Params]:
    out = [as_stage(p, "cmdp_start")]
    if p.teacher.train:
        out.append(as_stage(p, "teacher"))
    return out


def _start_parents(p: Params) -> list[Params]:
    return [as_stage(p, "teacher")] if p.cmdp.start_steps > 0 else []


def ensure_teacher_eval(p: Params) -> Run:
    """The teacher's greedy evaluations (its FAC row), a stage of its own so that the scheduler runs
    it beside the start student's training."""
    run = teacher_eval_run(p)
    evaluate_all(p, "teacher")
    if not run.finished:
        run.start()
        run.finish({"task": p.task.name, "teacher": p.models.teacher, "sets": list(eval_sets_of(p))})
    return run


register_stage("cmdp_start", start_run, ensure_start, _start_parents)
register_stage("cmdp_teacher", lambda p: teacher_eval_run(p), ensure_teacher_eval,
               lambda p: [as_stage(p, "teacher")] if p.teacher.train else [])
for _m in CMDP_METHODS:
    register_stage(_m, cmdp_run, ensure_cmdp, _cmdp_parents)


# ----------------------------------------------------------------------------- evaluation
DEFAULT_EVAL_SETS = ("dev", "test")


def eval_sets_of(p: Params) -> tuple[str, ...]:
    """The sets a worker evaluates after training (``cmdp.eval_sets``, or by default dev (the
    budget's procedure), test and the task's held-out sets: GSM-Symbolic and MATH analogues)."""
    if p.cmdp.eval_sets is not None:
        return tuple(p.cmdp.eval_sets)
    if p.task.name == "mini-gsm8k":
        return DEFAULT_EVAL_SETS + ("mini-gsm-symbolic", "mini-gsm-hard")
    return DEFAULT_EVAL_SETS + ("gsm-symbolic", "math")


def eval_size(p: Params, name: str) -> int | None:
    if name == "dev":
        return p.eval.n_dev
    return p.eval.n_test


def eval_examples(p: Params, task: Task, name: str, n: int | None) -> tuple[list[str], list[str], list[str]]:
    """(sources, references, ids) of an evaluation set: the task's dev/test split (first n) or a
    held-out set from kdlib.data.load_eval_set (seeded with the task's data seed)."""
    if name in ("dev", "test"):
        k = task.split_size(name) if n is None else min(n, task.split_size(name))
        return task.sources[name][:k], task.targets[name][:k], [f"{name}-{i}" for i in range(k)]
    if name not in kdata.EVAL_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; known: dev, test, {', '.join(kdata.EVAL_SETS)}")
    if kdata.EVAL_SET_TASK[name] != task.name:
        raise ValueError(f"evaluation set {name!r} is for models trained on {kdata.EVAL_SET_TASK[name]!r}, "
                         f"not {task.name!r}")
    hub = name in kdata.HUB_EVAL_SETS
    k = None if hub and n is None else n
    if hub and n is not None:  # a hub set smaller than n: all of it
        try:
            ds = kdata.load_eval_set(name, cache_dir=p.cache_dir, n=n, seed=p.task.data_seed)
        except ValueError:
            ds = kdata.load_eval_set(name, cache_dir=p.cache_dir, n=None, seed=p.task.data_seed)
    else:
        ds = kdata.load_eval_set(name, cache_dir=p.cache_dir, n=k, seed=p.task.data_seed)
    return list(ds["source"]), list(ds["target"]), list(ds["id"])


def _eval_tag(p: Params) -> str:
    c = p.cmdp
    return params_hash({"floor": c.kl_floor, "reduction": c.kl_reduction, "vocab": c.vocab, "teacher": teacher_key(p),
                        "v": CMDP_VERSION}, 8)


def teacher_eval_run(p: Params) -> Run:
    """The run folder of the teacher's own evaluations (accuracy; its KL to itself is 0)."""
    return Run(p.cache_dir, p.task.name, "cmdp_teacher", {"v": CMDP_VERSION, "teacher": teacher_key(p),
                                                            "data": data_key(p)})


def eval_path(p: Params, run: Run, name: str, which: str) -> Path:
    n = eval_size(p, name)
    return run.path / "cmdp_eval" / f"{which}-{name}-n{n if n is not None else 'all'}-{_eval_tag(p)}.jsonl"


def _role_run(p: Params, role: str) -> tuple[Run, str]:
    """(run, which weights) of a role: ``teacher``, ``start`` or ``method`` (p.method's run)."""
    if role == "teacher":
        return teacher_eval_run(p), "teacher"
    if role == "start":
        return start_run(p), "start"
    return cmdp_run(p), "final" if p.cmdp.selection == "final" else "best"


def evaluate(p: Params, role: str, name: str, models: dict | None = None) -> list[dict]:
    """The cached greedy evaluation of one role on one set (computed and written if missing)."""
    from kdlib.trainers.cmdp import greedy_kl_eval

    run, which = _role_run(p, role)
    path = eval_path(p, run, name, which)
    rows = read_jsonl(path)
    n = eval_size(p, name)
    task = load_task_bundle(p)
    sources, refs, ids = eval_examples(p, task, name, n)
    if len(rows) == len(sources) and rows:
        return rows
    models = models if models is not None else {}
    acc = get_accelerator()
    if "teacher" not in models:
        models["teacher"] = cmdp_teacher(p, task).to(acc.device)
    teacher = models["teacher"]
    if role == "teacher":
        student, t_for_kl = teacher, None
    else:
        key = (role, which)
        if key not in models:
            if role == "start":
                m = load_start(p, task)
            else:
                m = load_model(p, task, p.models.student, checkpoint=str(weights_dir(run, which)))
            models[key] = frozen(m).to(acc.device)
        student, t_for_kl = models[key], teacher
    s_src = encode_prompts(p, task, sources, "student")
    t_src = encode_prompts(p, task, sources, "teacher")
    out = greedy_kl_eval(student, t_for_kl, task, s_src, t_src, refs, p.cmdp, p.eval.batch_size, acc.device)
    for r, i, src in zip(out, ids, sources):
        r["id"], r["source"] = i, src
    if acc.is_main_process:
        write_jsonl(path, out)
    return out


def evaluate_all(p: Params, role: str, names=None) -> dict[str, list[dict]]:
    """Every evaluation set of a role (shared models loaded once)."""
    models: dict = {}
    return {name: evaluate(p, role, name, models) for name in (names or eval_sets_of(p))}
