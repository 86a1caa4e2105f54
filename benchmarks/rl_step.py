"""The kit's RL training step against a peer-style step written inline, in the same process.

The peer-style step follows the LLMR authors' procedure as a careful peer would write it with
transformers: token-by-token sampling through the model's ``forward`` with its KV cache and
``torch.multinomial``, one teacher forward pass over (source, sample), the reward of Eq. (2) with a
flip-cumsum return, REINFORCE, gradient clipping and AdamW. The kit's step is the real thing:
``kdlib.trainers.base.optimizer_step`` with the ``rl_micro_loss`` closure (KETCHUP, K=4), i.e.
batching, the static-cache decoding engine, the frozen teacher's cached encoder states, one
student encoder pass shared by sampling and the loss, returns, clipping, AdamW, logging values.

Both run on the same task batches (the kit's tokenizer), from the same random weights (separate
copies, separate optimisers), with exactly T sampled tokens per row (random weights almost never
emit EOS), timed alternately; the printed ratio is median(peer) / median(kit). Then the kit's step
is profiled and its time split by phase (record_function labels inside the kit's code), and one dev
evaluation (greedy decoding, metrics, teacher return) is timed.

    python benchmarks/rl_step.py                              # embedded sizes, B = 16 and 64, T = 32
    python benchmarks/rl_step.py --sizes peer                 # bigger student and teacher (see SIZES)
    python benchmarks/rl_step.py --threads 2 --steps 20
    python benchmarks/rl_step.py --sizes t5-base-shape        # on a GPU machine: tokens/s, peak memory

Target (issue 14): peer / kit >= 2.0 at B = 16 and B = 64 at the embedded sizes on CPU.
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import time

import torch

from kdlib.config import load_params
from kdlib.modeling.models import TINY_SIZES, build_model
from kdlib.trainers.base import (
    batch_src,
    eval_split,
    get_accelerator,
    make_optimizer,
    optimizer_step,
    step_indices,
    teacher_encoder_cache,
)
from kdlib.trainers.rl import rl_micro_loss
from kdlib.trainers.tasks import load_task_bundle

# Random-weight shapes. "peer": a student and teacher 4-5x the embedded ones in width, as a peer's
# small CPU testbed might use; the *-shape entries are the paper's models, for GPU throughput.
TINY_SIZES.setdefault("peer-student", dict(d_model=128, d_ff=512, num_layers=2, num_heads=4, d_kv=32))
TINY_SIZES.setdefault("peer-teacher", dict(d_model=256, d_ff=1024, num_layers=3, num_heads=4, d_kv=64))
TINY_SIZES.setdefault("t5-base-shape", dict(d_model=768, d_ff=3072, num_layers=12, num_heads=12, d_kv=64))
TINY_SIZES.setdefault("t5-large-shape", dict(d_model=1024, d_ff=4096, num_layers=24, num_heads=16, d_kv=64))
SIZES = {"embedded": ("base", "teacher"), "peer": ("peer-student", "peer-teacher"),
         "t5-base-shape": ("t5-base-shape", "t5-large-shape")}
PHASES = ("kdlib.sample", "kdlib.teacher", "kdlib.student_forward", "kdlib.backward", "kdlib.optimizer")


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sync(dev) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def peer_step(student, teacher, opt, src, sm, tsrc, tsm, T: int, eos: int, pad: int, g, clock: dict) -> int:
    """A peer's REINFORCE step with the LLMR reward (see the module docstring). Returns sampled tokens."""
    B = src.shape[0]
    t0 = time.perf_counter()
    student.eval()
    with torch.no_grad():  # 1. token-by-token sampling with the library's KV cache
        enc = student.get_encoder()(input_ids=src, attention_mask=sm.long())
        cur = torch.zeros(B, 1, dtype=torch.long, device=src.device)
        past, toks = None, []
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        for _ in range(T):
            out = student(encoder_outputs=enc, attention_mask=sm.long(), decoder_input_ids=cur, past_key_values=past,
                          use_cache=True)
            past = out.past_key_values
            nxt = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1, generator=g).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            toks.append(nxt)
            done |= nxt == eos
            if bool(done.all()):
                break
            cur = nxt[:, None]
        y = torch.stack(toks, 1)  # (B, T)
        ends = torch.cat([torch.zeros_like(y[:, :1], dtype=torch.bool), (y == eos)[:, :-1]], 1).cumsum(1) > 0
        mask = ~ends  # (B, T): up to and including EOS
    sync(src.device)
    t1 = time.perf_counter()
    dec_in = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], 1)
    with torch.no_grad():  # 2. one teacher forward, reward of Eq. (2), flip-cumsum return
        tl = teacher(input_ids=tsrc, attention_mask=tsm.long(), decoder_input_ids=dec_in).logits.float()
        q = tl - tl.mean(-1, keepdim=True)
        q_sa = q.gather(-1, y[..., None]).squeeze(-1) * mask
        v = q.amax(-1) * mask
        r = q_sa - torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], 1)
        G = r.flip(1).cumsum(1).flip(1).clamp(-100, 100) * mask
    sync(src.device)
    t2 = time.perf_counter()
    student.train()  # 3. REINFORCE, clipping, AdamW
    logits = student(input_ids=src, attention_mask=sm.long(), decoder_input_ids=dec_in).logits
    logp = torch.log_softmax(logits.float(), -1).gather(-1, y[..., None]).squeeze(-1)
    loss = -(G * logp * mask).sum() / B
    sync(src.device)
    t3 = time.perf_counter()
    loss.backward()
    sync(src.device)
    t4 = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(src.device)
    t5 = time.perf_counter()
    for k, d in zip(("sample", "teacher", "student_forward", "backward", "optimizer"), (t1 - t0, t2 - t1, t3 - t2,
                                                                                         t4 - t3, t5 - t4)):
        clock[k] = clock.get(k, 0.0) + d
    return int(mask.sum())


def run(args, B: int, student_size: str, teacher_size: str) -> dict:
    """Time the kit's step against the peer-style step (printed); returns the measurements (``ratio``: peer / kit)."""
    p = load_params("params/embedded/kit.yaml", cache_dir=args.cache_dir, method="ketchup",
                    **{"task.name": args.task, "task.max_target_len": args.T, "models.student": f"tiny-t5:{student_size}",
                       "models.teacher": f"tiny-t5:{teacher_size}", "rl.batch_size": B, "rl.k": 4})
    acc = get_accelerator()
    dev = acc.device
    task = load_task_bundle(p)
    V = len(task.tok)
    teacher = build_model(p.models.teacher, vocab_size=V, seed=1).to(dev).eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    kit_model = build_model(p.models.student, vocab_size=V, seed=2).to(dev)
    peer_model = copy.deepcopy(kit_model)
    kit_opt = make_optimizer(kit_model, p.rl)
    peer_opt = torch.optim.AdamW(peer_model.parameters(), lr=p.rl.lr)
    kit_model, kit_opt = acc.prepare(kit_model, kit_opt)
    n_train = task.split_size("train")
    t0 = time.perf_counter()
    cache = teacher_encoder_cache(p, task, teacher, "train")
    if cache is not None:  # a run fills it once; fill it before timing (reported separately)
        cache.get(list(range(n_train)))
    fill_s = time.perf_counter() - t0
    micro = rl_micro_loss("ketchup", teacher, task, p.rl, acc, seed=0, teacher_cache=cache)
    eos, pad = task.tok.eos_token_id, task.tok.pad_token_id

    def kit(step: int) -> int:
        logs = optimizer_step(kit_model, kit_opt, acc, micro, p.rl, step, 0, n_train)
        return int(round(logs["length"] * B))

    def peer(step: int, clock: dict) -> int:
        idx = step_indices(n_train, B, step, 0, 1, 0)
        src, sm = batch_src(task, "train", idx, "student", dev)
        tsrc, tsm = batch_src(task, "train", idx, "teacher", dev)
        g = torch.Generator(device=dev).manual_seed(step)
        return peer_step(peer_model, teacher, peer_opt, src, sm, tsrc, tsm, args.T, eos, pad, g, clock)

    for s in range(2):  # warm-up
        kit(s), peer(s, {})
    t_kit, t_peer, tok_kit, tok_peer, clock = [], [], 0, 0, {}
    rss_start = rss_mib()
    for s in range(args.steps):
        sync(dev)
        t0 = time.perf_counter()
        tok_kit += kit(100 + s)
        sync(dev)
        t_kit.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        tok_peer += peer(100 + s, clock)
        sync(dev)
        t_peer.append(time.perf_counter() - t0)
    m_kit, m_peer = statistics.median(t_kit), statistics.median(t_peer)
    ratio = m_peer / m_kit
    print(f"\nB={B}, T={args.T}, {args.task}, student tiny-t5:{student_size} ({sum(q.numel() for q in peer_model.parameters()) / 1e6:.2f}M), "
          f"teacher tiny-t5:{teacher_size} ({sum(q.numel() for q in teacher.parameters()) / 1e6:.2f}M), device {dev}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"  peer-style step: {1000 * m_peer:8.1f} ms   ({tok_peer / sum(t_peer):7.0f} sampled tokens/s)")
    print(f"  kit step:        {1000 * m_kit:8.1f} ms   ({tok_kit / sum(t_kit):7.0f} sampled tokens/s)  "
          f"medians of {args.steps}, alternated")
    print(f"  ratio peer / kit: {ratio:.2f}  (target >= 2.0: {'MET' if ratio >= 2.0 else 'NOT MET'})")
    if cache is not None:
        print(f"  (teacher encoder states for all {n_train} train prompts cached once in {fill_s:.1f} s, "
              f"{cache.estimate_mb(teacher, task.teacher_src['train']):.0f} MiB)")

    # Where the time goes: the kit's phases (profiler, record_function labels) and the peer's (timers).
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for s in range(min(5, args.steps)):
            kit(200 + s)
    totals = {e.key: e.cpu_time_total for e in prof.key_averages() if e.key in PHASES}
    whole = sum(totals.values()) or 1.0
    peer_whole = sum(clock.values()) or 1.0
    print("  time split        kit     peer")
    for ph in PHASES:
        name = ph.split(".", 1)[1]
        print(f"    {name:16s} {100 * totals.get(ph, 0.0) / whole:5.1f}%   {100 * clock.get(name, 0.0) / peer_whole:5.1f}%")
    t0 = time.perf_counter()
    dev_cache = teacher_encoder_cache(p, task, teacher, "dev", p.eval.n_dev)
    eval_split(acc.unwrap_model(kit_model), task, "dev", p.eval.n_dev, p, teacher, dev, dev_cache)
    t_eval = time.perf_counter() - t0
    t0 = time.perf_counter()
    eval_split(acc.unwrap_model(kit_model), task, "dev", p.eval.n_dev, p, teacher, dev, dev_cache)
    print(f"    evaluation: one dev pass ({p.eval.n_dev} examples, greedy, metrics, teacher return) "
          f"{1000 * t_eval:.0f} ms first, {1000 * (time.perf_counter() - t0):.0f} ms with the teacher's states cached")
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None
    if peak_gpu is not None:
        print(f"  peak GPU memory: {peak_gpu:.0f} MiB")
    print(f"  peak RSS: {rss_start:.0f} MiB after warm-up, {rss_mib():.0f} MiB at the end")
    return {"B": B, "T": args.T, "device": str(dev), "vocab": V, "student": f"tiny-t5:{student_size}",
            "teacher": f"tiny-t5:{teacher_size}", "kit_step_ms": 1000 * m_kit, "peer_step_ms": 1000 * m_peer,
            "ratio": ratio, "kit_sampled_tokens_per_s": tok_kit / sum(t_kit),
            "peer_sampled_tokens_per_s": tok_peer / sum(t_peer), "eval_ms": 1000 * t_eval,
            "peak_gpu_mib": peak_gpu, "peak_rss_mib": rss_mib()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="mini-xsum")
    ap.add_argument("--sizes", default="embedded", choices=sorted(SIZES))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--T", type=int, default=32, help="sampled tokens per row")
    ap.add_argument("--steps", type=int, default=12, help="timed steps of each kind")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (run_all's workers use 1)")
    ap.add_argument("--cache-dir", default=".cache/kdlib/bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    student, teacher = SIZES[args.sizes]
    ratios = [run(args, B, student, teacher)["ratio"] for B in args.batch_sizes]
    print(f"\nsummary ({args.sizes}): " + ", ".join(f"B={B}: peer/kit {r:.2f}" for B, r in zip(args.batch_sizes, ratios)))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
