"""Seeds trained per minute: a seed ensemble (one process, the students' weights stacked) against one process per seed,
with the same total threads, at the embedded sizes.

Both sides run the real training code on the same work: S seeds of one method (LLMR by default; ``--method``) on one
task, each seed ``--steps`` updates of ``rl.batch_size`` rollouts (sampling, one teacher pass, returns, loss, backward,
per-seed gradient clipping and AdamW), from random weights of the embedded presets (tiny-t5:base student,
tiny-t5:teacher teacher), the teacher's encoder states cached as in training. Evaluation, checkpoints and logging are
left out on both sides (they are the same per-seed work in both paths).

* **single**: ``kdlib.trainers.base.optimizer_step`` with ``rl_micro_loss``, one seed per process, ``--threads``
  worker processes of one thread each, S seeds spread over them (what ``run_all`` did before ensembles);
* **ensemble**: ``rl_ensemble_micro_loss`` on a :class:`kdlib.modeling.stacked.StackedT5` of S members, one fused
  AdamW, per-member clipping (``kdlib.trainers.ensemble.clip_per_member``), in ``--threads`` worker processes of one
  thread each, the S seeds split into that many ensembles (what ``run_all`` does now: a worker per ensemble).

Printed per S: training seconds of each side (the slowest worker's, set-up left out), seeds trained per minute of each side,
the ratio ensemble / single, and where the ensemble's time went (sampling, teacher, student forward, backward,
optimiser).
Target (issue 21): at least 3x at S = 10 on 2 cores.

    .venv/bin/python benchmarks/seeds.py                     # S in 5 10 20, LLMR, mini-xsum, 2 threads
    .venv/bin/python benchmarks/seeds.py --sizes 10 --steps 10 --method kl
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's kdlib, in the spawned workers too
    sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
PARAMS = "params/embedded/kit.yaml"


BATCH = {"size": None}  # --batch-size (None: the kit's rl.batch_size / divergence.batch_size)


def _setup(method: str, task_name: str, cache_dir: str, steps: int, runs: int):
    from kdlib.config import load_params
    from kdlib.modeling.models import build_model
    from kdlib.trainers.base import get_accelerator, teacher_encoder_cache
    from kdlib.trainers.tasks import load_task_bundle

    p = load_params(PARAMS, cache_dir=cache_dir, method=method, **{"task.name": task_name})
    task = load_task_bundle(p)
    teacher = build_model(p.models.teacher, vocab_size=len(task.tok), seed=1).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    acc = get_accelerator()
    optim = p.rl if method in ("llmr", "llmr_mean", "llmr_minvar", "ketchup", "opd") else p.divergence
    optim = optim.model_copy(update={"steps": steps, "grad_accum": 1,
                                     **({"batch_size": BATCH["size"]} if BATCH["size"] else {})})
    cache = teacher_encoder_cache(p, task, teacher, "train", optim=optim, runs=runs)  # the rule training uses
    return p, task, teacher, acc, optim, cache


def _outputs(task):
    return task.targets["train"]  # stand-ins for the teacher's outputs (divergence methods)


def single_worker(args) -> float:
    """Train ``seeds`` one after another, each alone, in this process (1 thread); returns wall seconds."""
    method, task_name, cache_dir, steps, seeds, BATCH["size"] = args
    torch.set_num_threads(1)
    from kdlib.modeling.models import build_model
    from kdlib.trainers.base import make_optimizer, optimizer_step
    from kdlib.trainers.divergence import divergence_micro_loss
    from kdlib.trainers.rl import rl_micro_loss

    p, task, teacher, acc, optim, cache = _setup(method, task_name, cache_dir, steps, len(seeds))
    n = task.split_size("train")
    t0 = time.perf_counter()
    for sd in seeds:
        model = build_model(p.models.student, vocab_size=len(task.tok), seed=sd)
        opt = make_optimizer(model, optim)
        if method in ("kl", "js", "tvd"):
            loss = divergence_micro_loss(method, teacher, task, _outputs(task), optim, acc, sd, cache)
        else:
            loss = rl_micro_loss(method, teacher, task, optim, acc, sd, cache)
        for step in range(steps):
            optimizer_step(model, opt, acc, loss, optim, step, sd, n)
    return time.perf_counter() - t0


def ensemble_worker(args) -> float:
    """Train ``seeds`` as one ensemble in this process (1 thread); returns (wall seconds, seconds by phase)."""
    method, task_name, cache_dir, steps, seeds, BATCH["size"] = args
    torch.set_num_threads(1)
    from kdlib.modeling.models import build_model
    from kdlib.modeling.stacked import StackedT5
    from kdlib.trainers.base import set_lr, step_indices
    from kdlib.trainers.divergence import divergence_ensemble_micro_loss
    from kdlib.trainers.ensemble import Clock, clip_per_member
    from kdlib.trainers.rl import rl_ensemble_micro_loss

    p, task, teacher, acc, optim, cache = _setup(method, task_name, cache_dir, steps, len(seeds))
    n = task.split_size("train")
    clock = Clock()
    t0 = time.perf_counter()
    members = [build_model(p.models.student, vocab_size=len(task.tok), seed=sd) for sd in seeds]
    model = StackedT5(members[0], [dict(m.named_parameters()) for m in members])
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, betas=(0.9, 0.999),
                            fused=True)
    if method in ("kl", "js", "tvd"):
        loss_fn = divergence_ensemble_micro_loss(method, teacher, task, _outputs(task), optim, acc, seeds, cache)
    else:
        loss_fn = rl_ensemble_micro_loss(method, teacher, task, optim, acc, seeds, cache, clock=clock)
    for step in range(steps):
        set_lr(opt, optim, step)
        idxs = [step_indices(n, optim.batch_size, step, 0, 1, sd) for sd in seeds]
        losses, _ = loss_fn(model, idxs, step, 0)
        with clock("backward"):
            torch.stack(losses).sum().backward()
        with clock("optimizer"):
            clip_per_member(model, optim.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, dict(clock)


def _spread(seeds: list[int], k: int) -> list[list[int]]:
    return [seeds[i::k] for i in range(k) if seeds[i::k]]


def timed(worker, method, task_name, cache_dir, steps, seeds, procs) -> float:
    """Training seconds of ``procs`` worker processes (spawned, one thread each) sharing ``seeds``, run in
    parallel: the slowest worker's time from its first model built to its last update (process start, imports,
    task and teacher loading left out: the same on both sides)."""
    ctx = mp.get_context("spawn")
    jobs = [(method, task_name, cache_dir, steps, part, BATCH["size"]) for part in _spread(seeds, procs)]
    with ctx.Pool(len(jobs)) as pool:
        return pool.map(worker, jobs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20], help="seeds per comparison (S)")
    ap.add_argument("--steps", type=int, default=6, help="updates per seed")
    ap.add_argument("--method", default="llmr")
    ap.add_argument("--task", default="mini-xsum")
    ap.add_argument("--threads", type=int, default=2, help="total threads of each side (worker processes)")
    ap.add_argument("--batch-size", type=int, default=None, help="rollouts per update (default: the kit's, 64)")
    args = ap.parse_args()
    BATCH["size"] = args.batch_size
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as cache_dir:
        single_worker((args.method, args.task, cache_dir, 1, [0], args.batch_size))  # the tokenizer, trained once into the cache
        print(f"# seeds per minute, {args.method} on {args.task}, {args.steps} updates of "
              f"{args.batch_size or 'the kit default'} rollouts per seed, embedded sizes, "
              f"{args.threads} worker process(es) of one thread on each side")
        print(f"{'S':>4s} {'single s':>9s} {'ensemble s':>11s} {'single seeds/min':>17s} {'ensemble seeds/min':>19s} "
              f"{'ratio':>6s}")
        for S in args.sizes:
            seeds = list(range(1000, 1000 + S))
            t_single = max(timed(single_worker, args.method, args.task, cache_dir, args.steps, seeds, args.threads))
            ens = timed(ensemble_worker, args.method, args.task, cache_dir, args.steps, seeds, args.threads)
            t_ens = max(t for t, _ in ens)
            print(f"{S:4d} {t_single:9.1f} {t_ens:11.1f} {60 * S / t_single:17.2f} {60 * S / t_ens:19.2f} "
                  f"{t_single / t_ens:6.2f}x", flush=True)
            split = {}
            for _, phases in ens:
                for k, v in phases.items():
                    split[k] = split.get(k, 0.0) + v
            total = sum(split.values()) or 1.0
            print("      ensemble time split: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in
                                                          sorted(split.items(), key=lambda kv: -kv[1])), flush=True)


if __name__ == "__main__":
    main()
