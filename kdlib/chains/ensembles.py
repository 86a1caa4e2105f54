"""Seed ensembles of the run cache (floor 4): the runs of one method on one task that differ only by seed, trained
as one batched ensemble (kdlib.trainers.ensemble) instead of one process each.

Each member is the run :func:`kdlib.chains.core.method_run` names (same key, same folder, same files), so the cache,
``kdlib status`` and the notebooks cannot tell an ensemble-trained run from a single one, and an interrupted ensemble
resumes every member from its own checkpoint. Served: the REINFORCE family (llmr, llmr_mean, llmr_minvar, ketchup,
opd), the divergence family (kl, js, tvd) and SeqKD, for float32 T5 students without dropout in one process; any
other run (PPO, decoder-only or hub students the stacked engine does not know, dropout, bf16, DDP) trains alone.
"""

from __future__ import annotations

import contextlib
import json
import os

from kdlib.config import RL_METHODS, Params
from kdlib.trainers.runs import Run

# The methods whose micro-batch loss has an ensemble form (rl_ensemble_micro_loss, divergence_ensemble_micro_loss,
# nll_ensemble_micro_loss); today's gkd_jsd, distillm (a stateful schedule per run) and minillm_pg (teacher-mixed
# sampling) train alone.
ENSEMBLE_METHODS = ("llmr", "llmr_mean", "llmr_minvar", "ketchup", "opd", "seqkd", "kl", "js", "tvd")


def enabled() -> bool:
    """Seed ensembles only with ``KDLIB_ENSEMBLE=1``: off by default, because on the embedded profile's CPU they are not
    faster (benchmarks/seeds.py: 0.78-0.90x at the kit's 64 rollouts per update, 1.2x at 16; the teacher's pass, the
    same arithmetic stacked or not, takes 38-75% of an ensemble's time)."""
    return os.environ.get("KDLIB_ENSEMBLE", "0") == "1"


def max_size() -> int:
    """Members per ensemble at most (``KDLIB_ENSEMBLE_MAX``, default 10): bounds the memory of one batch."""
    return max(1, int(os.environ.get("KDLIB_ENSEMBLE_MAX", "10")))


def supported(p: Params) -> bool:
    """Whether the run named by ``p`` can train as a member of a seed ensemble (from its params alone; the loaded
    student is checked again before training)."""
    from kdlib.trainers.tasks import resolve_arch

    return (p.method in ENSEMBLE_METHODS and resolve_arch(p) == "seq2seq" and p.models.dtype == "float32"
            and p.method_dropout() == 0.0 and int(os.environ.get("WORLD_SIZE", "1")) == 1)


def group_key(p: Params) -> str:
    """Runs with equal keys differ only by seed (the same method, task, models and every setting)."""
    d = p.model_dump(mode="json")
    d.pop("seed", None)
    return json.dumps(d, sort_keys=True, default=str)


def groups(targets: list[Params], size: int | None = None) -> list[list[Params]]:
    """``targets`` partitioned into ensembles: the supported runs that differ only by seed, by seed, in chunks of at
    most ``size`` (default :func:`max_size`); every other run alone."""
    size = size or max_size()
    out: dict[str, list[Params]] = {}
    alone = []
    for p in targets:
        if supported(p):
            out.setdefault(group_key(p), []).append(p)
        else:
            alone.append([p])
    chunks = []
    for members in out.values():
        members = sorted({p.seed: p for p in members}.values(), key=lambda q: q.seed)
        chunks += [members[i: i + size] for i in range(0, len(members), size)]
    return chunks + alone


def train_ensemble(members: list[Params]) -> list[Run]:
    """Finish the runs of ``members`` (one method, one task, differing only by seed) and return them. Runs already
    finished are skipped; runs another process is training are waited for afterwards; the rest train as one
    ensemble per resume step (a member alone, or an unsupported student, trains as a single run)."""
    from kdlib.chains.core import method_run, parents_of, train

    runs = [method_run(p) for p in members]
    todo = [(p, r) for p, r in zip(members, runs) if not r.finished]
    if not todo:
        return runs
    for parent in parents_of(todo[0][0]):
        train(parent)
    waiting = []
    with contextlib.ExitStack() as held:
        mine = []
        for p, r in todo:
            lock = r.try_lock()
            if lock is None:
                waiting.append(p)
                continue
            held.enter_context(lock)
            if not r.finished:  # finished by a process that held the lock before us
                mine.append((p, r))
        by_step: dict[int, list[tuple[Params, Run]]] = {}
        for p, r in mine:
            state = r.resume_state()
            by_step.setdefault(state["step"] if state else 0, []).append((p, r))
        for group in by_step.values():
            _train_locked([p for p, _ in group])
    for p in waiting:
        train(p)
    return runs


def _train_locked(members: list[Params]) -> None:
    """Train ``members`` (locked by this process, unfinished, at one resume step) as one ensemble, or one by one
    where an ensemble cannot serve them."""
    from kdlib.chains.core import STAGES, _teacher_model, ensure_predistill, method_run, teacher_outputs
    from kdlib.modeling.stacked import stack_supported
    from kdlib.trainers.base import get_accelerator, teacher_encoder_cache
    from kdlib.trainers.ensemble import Clock, train_ensemble as train_members
    from kdlib.trainers.tasks import load_model, load_task_bundle

    p0 = members[0]
    if len(members) == 1 or not supported(p0):
        for p in members:
            STAGES[p.method].train(p)
        return
    task = load_task_bundle(p0)
    pre = ensure_predistill(p0)
    teacher = _teacher_model(p0, task)
    template = load_model(p0, task, p0.models.student, checkpoint=str(pre.best_dir))
    if not stack_supported(template):
        for p in members:
            STAGES[p.method].train(p)
        return
    acc = get_accelerator()
    seeds = [p.seed for p in members]
    clock = Clock()
    if p0.method == "seqkd":
        from kdlib.trainers.supervised import nll_ensemble_micro_loss

        loss = nll_ensemble_micro_loss(task, teacher_outputs(p0), acc.device)
        optim = p0.divergence
    elif p0.method in RL_METHODS:
        from kdlib.trainers.rl import rl_ensemble_micro_loss

        teacher.to(acc.device)
        cache = teacher_encoder_cache(p0, task, teacher, "train", optim=p0.rl, runs=len(seeds))
        loss = rl_ensemble_micro_loss(p0.method, teacher, task, p0.rl, acc, seeds, cache, clock=clock)
        optim = p0.rl
    else:
        from kdlib.trainers.divergence import divergence_ensemble_micro_loss

        teacher.to(acc.device)
        cache = teacher_encoder_cache(p0, task, teacher, "train", optim=p0.divergence, runs=len(seeds))
        loss = divergence_ensemble_micro_loss(p0.method, teacher, task, teacher_outputs(p0), p0.divergence, acc,
                                              seeds, cache)
        optim = p0.divergence
    train_members([method_run(p) for p in members], params=p0, optim=optim, task=task, template=template,
                  seeds=seeds, micro_loss=loss, teacher=teacher, clock=clock,
                  extra_summary={"method": p0.method, "k": p0.k_effective()})
