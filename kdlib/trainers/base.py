"""What every training family shares (floor 3): the accelerator and one training harness that owns the optimiser, gradient accumulation and
clipping, logging, dev evaluation with best-checkpoint selection, resumable checkpoints and the
final test evaluation. A family (supervised, divergence, rl) only supplies the loss of one
micro-batch, so each family's maths reads top to bottom in its own file.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.profiler import record_function
from tqdm.auto import tqdm

from kdlib.config import OptimParams, Params
from kdlib.maths import metrics, returns
from kdlib.modeling.engines import has_active_dropout  # noqa: F401  (re-exported for the families)
from kdlib.modeling.evaluate import evaluate, teacher_scores
from kdlib.modeling.generation import generate
from kdlib.modeling.models import (
    HEAD_ATTR,
    EncoderCache,
    encode_targets,
    encoder_states,
    load_head,
    pad,
    save_checkpoint,
)
from kdlib.trainers.runs import Run, atomic_write_json, write_jsonl
from kdlib.trainers.tasks import Task

TRAINER_VERSION = 3  # bump when a change alters what a run computes (invalidates cached runs)


# ----------------------------------------------------------------------------- accelerator
_ACCELERATOR = None


def get_accelerator(dtype: str = "float32"):
    """One ``accelerate.Accelerator`` per process: plain CPU here, DDP under ``accelerate launch``
    or ``torchrun`` (gloo on CPU, NCCL on GPUs). Mixed precision is not the accelerator's job here:
    the harness enters :func:`autocast` itself (the fast paths call submodules directly, which an
    accelerator-wrapped ``forward`` would not cover). ``dtype`` is accepted for compatibility."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        _ACCELERATOR = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="no")
    return _ACCELERATOR


def autocast(params: Params, device):
    """bf16 autocast on the device when ``models.dtype`` is ``bfloat16`` (CPU and CUDA), else a
    no-op. Trained models keep float32 master weights (AdamW updates them in float32: at the
    paper's RL learning rate 1e-6 a bf16 weight would not move), matmuls run in bf16."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=params.models.dtype == "bfloat16")


def progress_enabled() -> bool:
    return os.environ.get("KDLIB_PROGRESS", "1") != "0"


# ----------------------------------------------------------------------------- batching
def step_indices(n: int, batch_size: int, step: int, micro: int, grad_accum: int, seed: int) -> list[int]:
    """The global indices of one micro-batch: a seeded permutation per epoch, read in order, so a
    resumed run sees exactly the batches the uninterrupted run would have seen."""
    start = (step * grad_accum + micro) * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out += perm[offset: offset + batch_size - len(out)].tolist()
    return out


def shard(indices: list[int], accelerator) -> list[int]:
    """This process's share of a global micro-batch (DDP averages the gradients)."""
    return indices[accelerator.process_index:: accelerator.num_processes]


def micro_generator(seed: int, step: int, micro: int, rank: int, device="cpu") -> torch.Generator:
    """A sampling RNG on ``device`` (where the logits are) that depends only on (seed, step, micro,
    rank): resumable, and reproducible on that device."""
    g = torch.Generator(device=torch.device(device))
    return g.manual_seed(int(np.random.default_rng([seed, step, micro, rank]).integers(2**62)))


def ensemble_batch(task: "Task", idxs: list[list[int]], seeds: list[int], step: int, micro: int, rank: int, device):
    """A seed ensemble's micro-batch: the members' indices concatenated (S*B, member-major), each member's own
    sampling generator (:func:`micro_generator` of its seed, as its single run draws), and the student and teacher
    prompts of the concatenated batch, (S*B, L) each. Returns (flat, gens, src, src_m, t_src, t_src_m)."""
    flat = [i for idx in idxs for i in idx]
    gens = [micro_generator(sd, step, micro, rank, device) for sd in seeds]
    src, src_m = batch_src(task, "train", flat, "student", device)
    t_src, t_src_m = batch_src(task, "train", flat, "teacher", device)
    return flat, gens, src, src_m, t_src, t_src_m


def shared_encoder(model, accelerator, task: "Task", src: Tensor, src_m: Tensor) -> Tensor | None:
    """The student's encoder states (B, S, D), with gradient, when one encoder pass can serve both
    sampling (detached) and the loss: a seq2seq model, not wrapped for DDP (whose gradient hooks
    need its own forward), no active dropout (sampling is dropout-free). Otherwise None, and each
    use runs the encoder itself."""
    if task.arch != "seq2seq" or model is not accelerator.unwrap_model(model) or has_active_dropout(model):
        return None
    return encoder_states(model, src, src_m)


def teacher_encoder_cache(params: Params, task: Task, teacher, split: str, n: int | None = None,
                          optim: OptimParams | None = None, runs: int = 1):
    """An :class:`EncoderCache` of the frozen teacher over ``split``'s teacher prompts (the first
    ``n``), or None: decoder-only teacher, cache turned off, over ``models.teacher_cache_mb``, or
    a run (``optim``: its schedule) that scores fewer rows than the split has sources. The cache
    encodes sources in fixed chunks, so a short run on a large split would encode nearly all of
    them to read a few (an embedded RL run: 30 x 64 rows from 20,000 sources, 12 of its 33 s);
    without it the teacher's encoder runs on each batch. ``runs``: how many runs share the cache (the members of a
    seed ensemble each score ``scored_rows(optim)`` rows through one teacher)."""
    if teacher is None or task.arch != "seq2seq" or params.models.teacher_cache_mb <= 0:
        return None
    src = task.teacher_src[split][:n] if n is not None else task.teacher_src[split]
    if optim is not None and runs * scored_rows(optim) < len(src):
        return None
    if EncoderCache.estimate_mb(teacher, src) > params.models.teacher_cache_mb:
        return None
    return EncoderCache(teacher, src, task.tok.pad_token_id)


def scored_rows(optim: OptimParams) -> int:
    """How many source rows the teacher scores over a whole run (each rollout batch scored once): updates x
    micro-batches x batch size x samples per prompt (``group_size`` of the clipped family; 1 elsewhere)."""
    return optim.steps * optim.grad_accum * optim.batch_size * getattr(optim, "group_size", 1)


def batch_src(task: Task, split: str, idx: list[int], which: str = "student", device="cpu") -> tuple[Tensor, Tensor]:
    src = task.student_src if which == "student" else task.teacher_src
    return pad([src[split][i] for i in idx], task.tok.pad_token_id, left=task.arch == "causal", device=device)


def batch_tgt(task: Task, texts: list[str], device="cpu") -> tuple[Tensor, Tensor]:
    return encode_targets(task.tok, texts, task.max_target_len, device=device)


# ----------------------------------------------------------------------------- evaluation
def eval_split(model, task: Task, split: str, n: int | None, params: Params, teacher=None, device="cpu",
               teacher_cache=None):
    n = task.split_size(split) if n is None else min(n, task.split_size(split))
    return evaluate(model, task.tok, arch=task.arch, src=task.student_src[split][:n], references=task.targets[split][:n],
                    kind=task.kind, max_new_tokens=task.max_target_len, batch_size=params.eval.batch_size,
                    use_calculator=task.use_calculator, teacher=teacher,
                    teacher_src=task.teacher_src[split][:n] if teacher is not None else None,
                    normalize=params.rl.normalize, device=device, teacher_cache=teacher_cache,
                    sources=task.sources[split][:n], truth=task.truth)


def load_weights(model, folder) -> None:
    """Load a checkpoint's safetensors weights into ``model`` in place (tied weights re-tied)."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    load_head(model, folder)  # a critic / reward head, if the model has one and the checkpoint too


@torch.no_grad()
def sampled_return(model, task: Task, split: str, n: int | None, params: Params, teacher, device,
                   teacher_cache=None, seed: int = 0) -> float:
    """Mean return (Eq. 10) of outputs SAMPLED at temperature 1 (``eval.sampled`` per input) on the
    first ``n`` inputs of ``split``: the objective REINFORCE maximises, measured on fixed prompts.
    The sampling generator is seeded by ``seed`` only, so two calls on different policies use the
    same random numbers (common random numbers: their difference is not sampling noise)."""
    n = task.split_size(split) if n is None else min(n, task.split_size(split))
    k = params.eval.sampled
    g = torch.Generator(device=torch.device(device)).manual_seed(int(seed))
    total, count = 0.0, 0
    bs = max(1, params.eval.batch_size // k)
    for lo in range(0, n, bs):
        idx = [i for i in range(lo, min(n, lo + bs)) for _ in range(k)]
        src, src_m = batch_src(task, split, idx, "student", device)
        t_src, t_src_m = batch_src(task, split, idx, "teacher", device)
        roll = generate(model, task.tok, src, src_m, arch=task.arch, max_new_tokens=task.max_target_len, do_sample=True,
                        use_calculator=task.use_calculator, generator=g)
        t_enc = None
        if teacher_cache is not None:
            t_enc, t_src_m = teacher_cache.get(idx)
        q_sa, v, _ = teacher_scores(teacher, task.arch, t_src, t_src_m, roll.tokens, roll.mask, params.rl.normalize, t_enc)
        total += float(returns.full_returns(q_sa, v, roll.mask)[:, 0].sum())
        count += len(idx)
    return total / max(1, count)


def reward_watch(records: list[dict], primary: str) -> dict | None:
    """Reward-hacking watch (seed 000 Sec. 3.2): how the teacher-induced return of greedy dev
    outputs moved over training against the task metric, the output length and distinct-2, from
    the first to the last dev evaluation. ``flag`` is True when the return rose while the dev
    metric fell: the objective was optimised at the task's expense. None without a teacher."""
    ev = [r for r in records if "eval/return" in r and f"eval/{primary}" in r]
    if len(ev) < 2:
        return None
    first, last = ev[0], ev[-1]
    higher = metrics.HIGHER_IS_BETTER.get(primary, True)
    d = {name: float(last[f"eval/{key}"] - first[f"eval/{key}"]) for name, key in
         (("return_gain", "return"), ("metric_gain", primary), ("length_change", "length"),
          ("distinct2_change", "distinct2")) if f"eval/{key}" in first and f"eval/{key}" in last}
    metric_better = d.get("metric_gain", 0.0) * (1 if higher else -1)
    return {**d, "metric": primary, "flag": bool(d.get("return_gain", 0.0) > 0 and metric_better < 0)}


def test_cis(task: Task, preds: list[str], params: Params) -> dict:
    """Bootstrap 95% CIs of the test metrics over test examples (kdlib.maths.metrics.bootstrap_cis)."""
    n = len(preds)
    return metrics.bootstrap_cis(task.kind, preds, task.targets["test"][:n])


def write_test_outputs(run: Run, task: Task, preds: list[str]) -> None:
    """Decoded test outputs beside their sources and references (what the judge reads)."""
    write_jsonl(run.path / "outputs" / "test.jsonl",
                [{"id": i, "source": task.sources["test"][i], "output": p, "reference": task.targets["test"][i]}
                 for i, p in enumerate(preds)])


# ----------------------------------------------------------------------------- the harness
def make_optimizer(model, optim: OptimParams) -> torch.optim.Optimizer:
    """AdamW (betas 0.9/0.999, the paper's) over the trainable parameters; the fused kernel (one
    pass over all parameters; CPU and CUDA) when the parameters are all float32 on one device."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.dtype == torch.float32 for p in params) and len({p.device for p in params}) == 1
    head = getattr(model, HEAD_ATTR, None)
    vf_lr = getattr(optim, "vf_lr", None)
    if head is not None and vf_lr is not None:  # a critic with its own learning rate (PPO's ppo.vf_lr)
        in_head = {id(p) for p in head.parameters()}
        groups = [{"params": [p for p in params if id(p) not in in_head], "base_lr": optim.lr},
                  {"params": [p for p in params if id(p) in in_head], "lr": vf_lr, "base_lr": vf_lr}]
        return torch.optim.AdamW(groups, lr=optim.lr, weight_decay=optim.weight_decay, betas=(0.9, 0.999), fused=fused)
    return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay, betas=(0.9, 0.999), fused=fused)


MicroLoss = Callable[..., tuple[Tensor, dict]]  # (model, indices, step, micro) -> (loss, logs)
LOSS_STATE = "loss_state.json"  # a micro-loss with state_dict()/load_state_dict() is checkpointed in it


def lr_factor(optim: OptimParams, step: int) -> float:
    """The learning-rate multiplier of update ``step`` (0-based): linear warm-up over
    ``warmup_steps`` updates, then constant or (``lr_schedule: linear``) a linear decay that
    reaches 0 after ``steps`` updates, as transformers' ``get_linear_schedule_with_warmup``."""
    if step < optim.warmup_steps:
        return (step + 1) / max(1, optim.warmup_steps)
    if optim.lr_schedule == "linear":
        return max(0.0, (optim.steps - step) / max(1, optim.steps - optim.warmup_steps))
    return 1.0


def set_lr(opt, optim: OptimParams, step: int) -> None:
    for g in opt.param_groups:
        g["lr"] = g.get("base_lr", optim.lr) * lr_factor(optim, step)


def optimizer_step(model, opt, acc, micro_loss: MicroLoss, optim: OptimParams, step: int, seed: int,
                   n_train: int, amp=None) -> dict[str, float]:
    """One optimiser step: warm-up learning rate, ``grad_accum`` micro-batches (each process takes
    its shard of the global micro-batch), gradient-norm clipping, AdamW update. Returns the logs."""
    set_lr(opt, optim, step)
    model.train()
    logs: dict[str, float] = {}
    for micro in range(optim.grad_accum):
        idx = shard(step_indices(n_train, optim.batch_size, step, micro, optim.grad_accum, seed), acc)
        with amp() if amp is not None else contextlib.nullcontext():
            loss, info = micro_loss(model, idx, step, micro)  # the prepared (DDP-wrapped) model
        with record_function("kdlib.backward"):
            acc.backward(loss / optim.grad_accum)
        for k, v in {"loss": float(loss.detach()), **info}.items():
            logs[k] = logs.get(k, 0.0) + float(v) / optim.grad_accum
    with record_function("kdlib.optimizer"):
        logs["grad_norm"] = float(acc.clip_grad_norm_(model.parameters(), optim.max_grad_norm))
        opt.step()
        opt.zero_grad(set_to_none=True)
    return logs


StepFn = Callable[..., dict]  # (model, opt, step, amp) -> logs: one whole training step of its own


@dataclass
class Evaluator:
    """Model selection for a family whose model is not scored by greedy decoding (a reward model,
    seed 003): ``score(model, split)`` returns the metrics of ``split`` ("dev" for selection, "test"
    for the summary), ``primary`` names the one the best checkpoint is chosen on (higher is better
    unless kdlib.maths.metrics.HIGHER_IS_BETTER says otherwise), ``cis(model)`` the test CIs (optional)."""

    primary: str
    score: Callable[[object, str], dict]
    cis: Callable[[object], dict] | None = None


def train_run(run: Run, *, params: Params, optim: OptimParams, task: Task, model, micro_loss: MicroLoss | None = None,
              seed: int, teacher=None, n_train: int | None = None, extra_summary: dict | None = None,
              step_fn: StepFn | None = None, evaluator: Evaluator | None = None) -> dict:
    """Train ``model`` with ``micro_loss`` and finish ``run``; returns its summary.

    Every ``optim.eval_every`` steps (and at step 0) the dev split is decoded greedily; the best
    dev score of the task's primary metric keeps ``ckpt/best`` (the paper reports test at the best
    dev checkpoint). Every ``optim.checkpoint_every`` steps ``ckpt/last`` is written for resuming.
    ``micro_loss(model, indices, step, micro)`` returns the loss of this process's share of one
    micro-batch and a dict of values to log; it gets the model as prepared by accelerate (wrapped in
    DDP when there are several processes), so gradients are averaged across processes. A family
    whose step is more than one update (PPO: rollout, then epochs of minibatch updates) passes
    ``step_fn(model, opt, step, amp)`` instead, which performs the whole step and returns its logs;
    the learning-rate schedule is set before it is called. ``evaluator`` replaces the greedy-decoding
    dev/test evaluation (a model that is not a generator, e.g. a reward model).
    """
    if (micro_loss is None) == (step_fn is None):
        raise ValueError("train_run needs exactly one of micro_loss and step_fn")
    acc = get_accelerator(params.models.dtype)
    dev = acc.device
    n_train = n_train or task.split_size("train")
    t0 = time.time()
    run.start()
    model.to(dev)
    opt = make_optimizer(model, optim)
    step0, best, best_step = 0, None, -1
    primary = evaluator.primary if evaluator is not None else task.primary
    higher = metrics.HIGHER_IS_BETTER.get(primary, True)
    rule = PlateauRule(optim.patience, optim.min_delta, optim.eval_every, higher, window=optim.plateau_window,
                       smooth=optim.plateau_smooth, min_steps=optim.min_steps)
    state = run.resume_state()
    if state is not None:  # resume: weights, optimiser and counters of the last checkpoint
        load_weights(model, run.last_dir)
        opt.load_state_dict(torch.load(run.last_dir / "optimizer.pt", weights_only=True, map_location=dev))
        step0, best, best_step = state["step"], state["best"], state["best_step"]
        rule.load(state.get("plateau_rule", {}))
        if hasattr(micro_loss, "load_state_dict") and (run.last_dir / LOSS_STATE).is_file():  # a stateful loss
            micro_loss.load_state_dict(json.loads((run.last_dir / LOSS_STATE).read_text()))
        run.truncate_metrics(step0)
        if acc.is_main_process:
            print(f"[kdlib] resuming {run.path} from step {step0}")
    elif acc.is_main_process and run.metrics_path.exists():
        run.metrics_path.unlink()  # a run killed before its first checkpoint starts over
    model, opt = acc.prepare(model, opt)
    amp = lambda: autocast(params, dev)  # noqa: E731

    dev_cache = teacher_encoder_cache(params, task, teacher, "dev", params.eval.n_dev) if acc.is_main_process else None

    def dev_eval(step: int, last: bool = False) -> bool:
        """Score dev, keep the best checkpoint; True when the plateau rule says stop."""
        nonlocal best, best_step
        stop = False
        if acc.is_main_process:
            with amp():
                if evaluator is not None:
                    m = evaluator.score(acc.unwrap_model(model), "dev")
                else:
                    m, _ = eval_split(acc.unwrap_model(model), task, "dev", params.eval.n_dev, params, teacher, dev,
                                      dev_cache)
                    if teacher is not None and params.eval.sampled and (step == 0 or last):
                        m["sampled_return"] = sampled_return(acc.unwrap_model(model), task, "dev", params.eval.n_dev,
                                                             params, teacher, dev, dev_cache, seed=seed)
            run.log({"step": step, **{f"eval/{k}": v for k, v in m.items()}})
            score = m[primary]
            # Ties go to the later checkpoint (it has trained more); matters when a metric is flat.
            if best is None or (score >= best if higher else score <= best):
                best, best_step = score, step
                save_checkpoint(acc.unwrap_model(model), None, run.best_dir, {"step": step, "dev": m})
            stop = rule.update(step, score)
        stop = _agree(acc, stop)
        return stop

    def checkpoint(step: int):
        if acc.is_main_process:
            save_checkpoint(acc.unwrap_model(model), None, run.last_dir, {"step": step})
            tmp = run.last_dir / "optimizer.pt.tmp"
            torch.save(opt.state_dict(), tmp)
            os.replace(tmp, run.last_dir / "optimizer.pt")
            atomic_write_json(run.last_dir / "state.json", {"step": step, "best": best, "best_step": best_step,
                                                            "plateau_rule": rule.state()})
            if hasattr(micro_loss, "state_dict"):  # a loss with a schedule of its own (DistiLLM's)
                atomic_write_json(run.last_dir / LOSS_STATE, micro_loss.state_dict())
        acc.wait_for_everyone()

    stopped_early = False
    if step0 == 0:
        dev_eval(0)
    bar = tqdm(range(step0, optim.steps), desc=f"{run.stage} {task.name}", initial=step0, total=optim.steps,
               disable=not (acc.is_main_process and progress_enabled()), mininterval=2.0, leave=False)
    done = step0
    for step in bar:
        if step_fn is not None:
            set_lr(opt, optim, step)
            model.train()
            logs = step_fn(model, opt, step, amp)
        else:
            logs = optimizer_step(model, opt, acc, micro_loss, optim, step, seed, n_train, amp=amp)
        done = step + 1
        if acc.is_main_process and (done % optim.log_every == 0 or done == optim.steps):
            run.log({"step": done, **{f"train/{k}": v for k, v in logs.items()}, "train/lr": opt.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{logs['loss']:.3g}")
        report_progress(run, done, optim.steps)
        if done % optim.eval_every == 0 or done == optim.steps:
            if dev_eval(done, last=done == optim.steps) and done < optim.steps:
                stopped_early = True
                break
        if done % optim.checkpoint_every == 0 and done < optim.steps:
            checkpoint(done)
            if os.environ.get("KDLIB_CRASH_AFTER_CHECKPOINT") == str(done):  # fault injection for the resume test
                os._exit(137)
    bar.close()
    # Converged: stopped by the plateau rule, or the cap reached after `patience` flat evaluations.
    converged = stopped_early or rule.flat_since(done)

    # Final: every process loads the best dev checkpoint (so all ranks hold the same model); the
    # main process scores it on test.
    acc.wait_for_everyone()
    final = acc.unwrap_model(model)
    if run.best_dir.is_dir():
        load_weights(final, run.best_dir)
    summary = {}
    if acc.is_main_process:
        with amp():
            if evaluator is not None:
                m_test = evaluator.score(final, "test")
                test_ci = evaluator.cis(final) if evaluator.cis is not None else {}
            else:
                m_test, preds = eval_split(final, task, "test", params.eval.n_test, params, teacher, dev)
                write_test_outputs(run, task, preds)
                test_ci = test_cis(task, preds, params)
        dev_best = next((r for r in reversed(run.metrics()) if r.get("step") == best_step and f"eval/{primary}" in r), {})
        summary = {"task": task.name, "kind": task.kind, "primary": primary, "best_step": best_step,
                   "steps": optim.steps, "stopped_at": done, "stop_reason": "plateau" if stopped_early else "steps",
                   "converged": bool(converged), "last_improvement": rule.last_improvement,
                   "plateau_rule": rule.settings(),
                   "best_is_start": best_step == 0 and optim.steps > 0, "seed": seed, "time_s": round(time.time() - t0, 2),
                   "dev": {k[5:]: v for k, v in dev_best.items() if k.startswith("eval/")}, "test": m_test,
                   "test_ci": test_ci, "reward_watch": reward_watch(run.metrics(), primary),
                   **(extra_summary or {})}
        run.finish(summary)
    acc.wait_for_everyone()
    return run.summary()


class PlateauRule:
    """When a training stage has converged: the smoothed dev curve has stopped rising over a window that grows with
    the updates done.

    The dev metric is smoothed by a trailing mean over ``smooth`` evaluations. At update ``s`` the rule compares the
    smoothed value now with the smoothed value ``W = max(patience * eval_every, window * s)`` updates earlier, and
    stops once the rise over that window is at most ``min_delta`` (primary-metric units; ``higher`` says which way is
    better) and ``s >= min_steps``. Inside a climb the rise over the last quarter of the run is large, so a dip of a
    few evaluations (tiny models learn in jumps) does not stop it; on a noisy plateau the rise hovers around 0 and it
    stops, where a running best would keep creeping up with the noise. No plateau is declared before the metric has
    first left its starting value by more than ``min_delta`` (mini-GSM8K sits at 0% accuracy for hundreds of steps).
    ``patience`` None: never stop early. ``window=0, smooth=1`` is the older rule: stop after ``patience`` evaluations
    in a row without a new best by more than ``min_delta`` (it can fire on a dip inside a climb)."""

    def __init__(self, patience: int | None, min_delta: float, eval_every: int, higher: bool = True,
                 window: float = 0.0, smooth: int = 1, min_steps: int = 0):
        self.patience, self.min_delta, self.eval_every, self.higher = patience, min_delta, eval_every, higher
        self.window, self.smooth, self.min_steps = window, smooth, min_steps
        self.history: list[tuple[int, float]] = []  # (step, raw dev score) of every evaluation so far
        self.last_improvement = 0  # step of the last new best of the smoothed curve by > min_delta (0: none yet)
        self._best: float | None = None

    def _smoothed(self, i: int) -> float:
        recent = [v for _, v in self.history[max(0, i - self.smooth + 1): i + 1]]
        return sum(recent) / len(recent)

    def update(self, step: int, score: float) -> bool:
        """Record a dev score; True when training should stop."""
        self.history.append((step, float(score)))
        sign = 1.0 if self.higher else -1.0
        now = self._smoothed(len(self.history) - 1)
        if self._best is None or sign * (now - self._best) > self.min_delta:
            if self._best is not None and step > 0:
                self.last_improvement = step
            self._best = now
        return self.flat_since(step)

    def patience_at(self, step: int) -> float:
        """The window (in updates) over which the smoothed curve must not have risen, to stop at ``step``."""
        return max((self.patience or 0) * self.eval_every, self.window * step)

    def rise(self, step: int) -> float | None:
        """Rise of the smoothed curve over the window ending at the last evaluation (None: not enough history)."""
        if not self.history:
            return None
        past = [i for i, (st, _) in enumerate(self.history) if st <= step - self.patience_at(step)]
        if not past:
            return None
        sign = 1.0 if self.higher else -1.0
        return sign * (self._smoothed(len(self.history) - 1) - self._smoothed(past[-1]))

    def flat_since(self, step: int) -> bool:
        """Has the metric left its start, and has its smoothed curve not risen by more than ``min_delta`` over the last
        :meth:`patience_at` updates (and ``step >= min_steps``)?"""
        if self.patience is None or self.last_improvement == 0 or step < self.min_steps:
            return False
        if self.window == 0 and self.smooth == 1:  # the older rule: `patience` evaluations without a new best
            return step - self.last_improvement >= self.patience * self.eval_every
        r = self.rise(step)
        return r is not None and r <= self.min_delta

    def state(self) -> dict:
        return {"history": self.history, "last_improvement": self.last_improvement, "best": self._best}

    def load(self, state: dict) -> None:
        self.history = [(int(s), float(v)) for s, v in state.get("history", [])]
        self.last_improvement = state.get("last_improvement", 0)
        self._best = state.get("best", state.get("reference"))

    def settings(self) -> dict:
        return {"patience": self.patience, "min_delta": self.min_delta, "eval_every": self.eval_every,
                "window": self.window, "smooth": self.smooth, "min_steps": self.min_steps}


def _agree(acc, flag: bool) -> bool:
    """The main process's decision, on every process (DDP ranks must stop together)."""
    if acc.num_processes == 1:
        return flag
    from accelerate.utils import broadcast

    return bool(broadcast(torch.tensor([int(flag)], device=acc.device)).item())


_PROGRESS_HOOK: Callable | None = None


def set_progress_hook(fn: Callable | None) -> None:
    """``fn(run, step, total)`` is called after every optimiser step of every run in this process
    (the run scheduler reports progress through it). None removes it."""
    global _PROGRESS_HOOK
    _PROGRESS_HOOK = fn


def report_progress(run: Run, step: int, total: int) -> None:
    if _PROGRESS_HOOK is not None:
        _PROGRESS_HOOK(run, step, total)


def evaluate_only(run: Run, *, params: Params, task: Task, model, teacher=None, extra_summary: dict | None = None) -> dict:
    """Finish a run that trains nothing (a prompted teacher, the zero-shot student)."""
    acc = get_accelerator(params.models.dtype)
    run.start()
    if acc.is_main_process:
        t0 = time.time()
        model.to(acc.device)
        with autocast(params, acc.device):
            m_dev, _ = eval_split(model, task, "dev", params.eval.n_dev, params, teacher, acc.device)
        run.log({"step": 0, **{f"eval/{k}": v for k, v in m_dev.items()}})
        with autocast(params, acc.device):
            m_test, preds = eval_split(model, task, "test", params.eval.n_test, params, teacher, acc.device)
        write_test_outputs(run, task, preds)
        save_checkpoint(model, None, run.best_dir, {"step": 0})
        run.finish({"task": task.name, "kind": task.kind, "primary": task.primary, "best_step": 0, "steps": 0,
                    "time_s": round(time.time() - t0, 2), "dev": m_dev, "test": m_test,
                    "test_ci": test_cis(task, preds, params), "reward_watch": reward_watch(run.metrics(), task.primary),
                   **(extra_summary or {})})
    acc.wait_for_everyone()
    return run.summary()
