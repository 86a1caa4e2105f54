"""Where a PPO iteration's time goes, at embedded size (issue 10): rollout (sampling + log pi_old,
V_old), scoring (teacher forward, rewards/returns, GAE) and updates (epochs x minibatches of
forward/backward/AdamW), for LLMR + PPO (critic, GAE) and KETCHUP + PPO (K-step return, no critic).

    python benchmarks/ppo_step.py                      # mini-xsum, embedded sizes, 1 thread
    python benchmarks/ppo_step.py --task mini-gsm8k --student large --batch-size 32

Random weights (no training needed); the student samples the task's maximum length. The split is
read from the step's own timers (time_rollout_s, time_score_s, time_update_s in its logs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from kdlib.config import load_params
from kdlib.modeling.models import build_model
from kdlib.trainers.base import (
    get_accelerator,
    make_optimizer,
    set_lr,
    teacher_encoder_cache,
)
from kdlib.trainers.ppo import ppo_step_fn, prepare_policy, seed001_method
from kdlib.trainers.tasks import load_task_bundle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mini-xsum")
    ap.add_argument("--student", default="base")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache-dir", default=".cache/kdlib/bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"PPO iteration, {args.task}, student tiny-t5:{args.student}, teacher tiny-t5:teacher, {args.batch_size} rollouts, "
          f"{args.threads} thread(s)")
    print(f"{'method':14s} {'total':>8s} {'rollout':>9s} {'scoring':>9s} {'updates':>9s}   (median ms of {args.steps} iterations)")
    for name in ("llmr_ppo", "ketchup_ppo"):
        p = load_params("params/embedded/kit.yaml", cache_dir=args.cache_dir, method=name,
                        **{"task.name": args.task, "models.student": f"tiny-t5:{args.student}", "ppo.batch_size": args.batch_size})
        acc = get_accelerator()
        task = load_task_bundle(p)
        teacher = build_model(p.models.teacher, vocab_size=len(task.tok), seed=1).eval()
        for q in teacher.parameters():
            q.requires_grad_(False)
        cache = teacher_encoder_cache(p, task, teacher, "train")
        model = build_model(p.models.student, vocab_size=len(task.tok), seed=2)
        method = seed001_method(name, teacher, task, p.ppo, cache)
        prepare_policy(model, method, p.ppo)
        opt = make_optimizer(model, p.ppo)
        step = ppo_step_fn(method, task, p.ppo, acc, seed=0)
        rows = []
        for s in range(args.steps + 1):
            set_lr(opt, p.ppo, s)
            t0 = time.perf_counter()
            logs = step(model, opt, s, lambda: torch.autocast("cpu", enabled=False))
            rows.append((time.perf_counter() - t0, logs["time_rollout_s"], logs["time_score_s"], logs["time_update_s"]))
        rows = rows[1:]  # the first fills the teacher's encoder cache
        med = [1000 * statistics.median(r[i] for r in rows) for i in range(4)]
        tot = med[0]
        print(f"{name:14s} {tot:8.0f} {med[1]:6.0f} ({100 * med[1] / tot:2.0f}%) {med[2]:5.0f} ({100 * med[2] / tot:2.0f}%) "
              f"{med[3]:5.0f} ({100 * med[3] / tot:2.0f}%)")
    print(f"(updates = {p.ppo.epochs} epochs x {p.ppo.minibatches} minibatches of {args.batch_size // p.ppo.minibatches})")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
