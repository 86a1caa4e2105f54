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


def measure(name: str, task_name: str, student: str, teacher: str, batch_size: int, steps: int, cache_dir: str,
            T: int | None = None) -> dict:
    """Median wall times (ms) of ``steps`` PPO iterations of ``name`` (llmr_ppo / ketchup_ppo) on the accelerator's
    device, random-weight tiny-t5 presets ``student`` and ``teacher``, split into rollout, scoring and updates."""
    over = {"task.name": task_name, "models.student": f"tiny-t5:{student}", "models.teacher": f"tiny-t5:{teacher}",
            "ppo.batch_size": batch_size}
    if T is not None:
        over["task.max_target_len"] = T
    p = load_params("params/embedded/kit.yaml", cache_dir=cache_dir, method=name, **over)
    acc = get_accelerator()
    dev = acc.device
    task = load_task_bundle(p)
    teacher_model = build_model(p.models.teacher, vocab_size=len(task.tok), seed=1).to(dev).eval()
    for q in teacher_model.parameters():
        q.requires_grad_(False)
    cache = teacher_encoder_cache(p, task, teacher_model, "train")
    model = build_model(p.models.student, vocab_size=len(task.tok), seed=2).to(dev)
    method = seed001_method(name, teacher_model, task, p.ppo, cache)
    prepare_policy(model, method, p.ppo)
    opt = make_optimizer(model, p.ppo)
    step = ppo_step_fn(method, task, p.ppo, acc, seed=0)
    rows = []
    for s in range(steps + 1):
        set_lr(opt, p.ppo, s)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logs = step(model, opt, s, lambda: torch.autocast(dev.type, enabled=False))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        rows.append((time.perf_counter() - t0, logs["time_rollout_s"], logs["time_score_s"], logs["time_update_s"]))
    rows = rows[1:]  # the first fills the teacher's encoder cache
    med = [1000 * statistics.median(r[i] for r in rows) for i in range(4)]
    return {"method": name, "device": str(dev), "batch_size": batch_size, "epochs": p.ppo.epochs,
            "minibatches": p.ppo.minibatches, "step_ms": med[0], "rollout_ms": med[1], "scoring_ms": med[2],
            "updates_ms": med[3]}


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
        r = measure(name, args.task, args.student, "teacher", args.batch_size, args.steps, args.cache_dir)
        tot = r["step_ms"]
        print(f"{name:14s} {tot:8.0f} {r['rollout_ms']:6.0f} ({100 * r['rollout_ms'] / tot:2.0f}%) "
              f"{r['scoring_ms']:5.0f} ({100 * r['scoring_ms'] / tot:2.0f}%) "
              f"{r['updates_ms']:5.0f} ({100 * r['updates_ms'] / tot:2.0f}%)")
    print(f"(updates = {r['epochs']} epochs x {r['minibatches']} minibatches of {args.batch_size // r['minibatches']})")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
