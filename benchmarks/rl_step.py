"""Overhead of the RL training step, and whether its memory grows with steps.

Prints the ratio of a full KETCHUP training step (kdlib.trainers.base.optimizer_step with the
rl_micro_loss closure: batching, sampling with the KV cache, one teacher forward, returns, student
forward/backward, clipping, AdamW, logging values) to the bare compute it contains (the same
sampling + one teacher forward + student forward/backward + optimiser step, written inline),
timed alternately in the same process. Target: at most 1.15 at embedded size.

    python benchmarks/rl_step.py                 # embedded sizes, CPU
    python benchmarks/rl_step.py --student large --teacher teacher --steps 30
    python benchmarks/rl_step.py --student t5-base-shape --teacher t5-large-shape   # on a GPU machine

accelerate picks the GPU when there is one (random weights; prints tokens/s and peak GPU memory).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from kdlib.config import load_params
from kdlib.evaluate import teacher_scores
from kdlib.generation import generate
from kdlib.models import TINY_SIZES, build_model, forward_logits, token_logprobs
from kdlib.trainers.base import batch_src, get_accelerator, load_task_bundle, optimizer_step
from kdlib.trainers.rl import rl_micro_loss

# Random-weight shapes of the paper's models, for GPU throughput only.
TINY_SIZES.setdefault("t5-base-shape", dict(d_model=768, d_ff=3072, num_layers=12, num_heads=12, d_kv=64))
TINY_SIZES.setdefault("t5-large-shape", dict(d_model=1024, d_ff=4096, num_layers=24, num_heads=16, d_kv=64))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mini-xsum")
    ap.add_argument("--student", default="base")
    ap.add_argument("--teacher", default="teacher")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20, help="timed steps of each kind")
    ap.add_argument("--cache-dir", default=".cache/kdlib/bench")
    args = ap.parse_args()
    torch.manual_seed(0)
    p = load_params("params/embedded/kit.yaml", cache_dir=args.cache_dir, method="ketchup",
                    **{"task.name": args.task, "models.student": f"tiny-t5:{args.student}",
                       "models.teacher": f"tiny-t5:{args.teacher}", "rl.batch_size": args.batch_size})
    acc = get_accelerator()
    dev = acc.device
    task = load_task_bundle(p)
    teacher = build_model(p.models.teacher, vocab_size=len(task.tok), seed=1).to(dev).eval()
    student = build_model(p.models.student, vocab_size=len(task.tok), seed=2).to(dev)
    opt = torch.optim.AdamW(student.parameters(), lr=p.rl.lr)
    model, opt = acc.prepare(student, opt)
    micro = rl_micro_loss("ketchup", teacher, task, p.rl, acc, seed=0)
    n_train = task.split_size("train")
    idx = list(range(args.batch_size))

    def full(step: int) -> int:
        logs = optimizer_step(model, opt, acc, micro, p.rl, step, 0, n_train)
        return int(logs["length"] * args.batch_size)

    def bare(step: int) -> int:
        g = torch.Generator().manual_seed(step)
        src, sm = batch_src(task, "train", idx, "student", dev)
        tsrc, tsm = batch_src(task, "train", idx, "teacher", dev)
        roll = generate(student, task.tok, src, sm, arch=task.arch, max_new_tokens=task.max_target_len,
                        do_sample=True, generator=g)
        q_sa, v, _ = teacher_scores(teacher, task.arch, tsrc, tsm, roll.tokens, roll.mask)
        logp = token_logprobs(forward_logits(model, task.arch, src, sm, roll.tokens, roll.mask), roll.tokens)
        (-(q_sa * logp * roll.mask).sum() / len(idx)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return int(roll.mask.sum())

    for s in range(3):  # warm-up
        full(s), bare(s)
    t_full, t_bare, toks = [], [], 0
    rss_start = rss_mib()
    rss_mid = None
    for s in range(args.steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        toks += full(100 + s)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_full.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        bare(100 + s)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t_bare.append(time.perf_counter() - t0)
        if s == args.steps // 2:
            rss_mid = rss_mib()
    # Sampled lengths differ between the two (the policy changes); compare per sampled token too.
    ratio = statistics.median(t_full) / statistics.median(t_bare)
    print(f"RL step, {args.task}, student tiny-t5:{args.student}, teacher tiny-t5:{args.teacher}, batch {args.batch_size}, "
          f"device {dev}, {torch.get_num_threads()} threads")
    print(f"  full training step (optimizer_step + rl_micro_loss): {1000 * statistics.median(t_full):8.1f} ms (median of {args.steps})")
    print(f"  bare compute (sample + teacher fwd + student fwd/bwd + AdamW): {1000 * statistics.median(t_bare):8.1f} ms")
    print(f"  ratio full / bare: {ratio:.3f}  (target <= 1.15: {'MET' if ratio <= 1.15 else 'NOT MET'})")
    print(f"  sampled tokens/s in full steps: {toks / sum(t_full):.0f}")
    if dev.type == "cuda":
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    print(f"  peak RSS: {rss_start:.0f} MiB after warm-up, {rss_mid:.0f} MiB at step {args.steps // 2}, "
          f"{rss_mib():.0f} MiB at step {args.steps} (growth in the second half: {rss_mib() - rss_mid:+.0f} MiB)")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
