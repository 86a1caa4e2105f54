"""Seed ensembles (floor 3): S runs of one method on one task that differ only by seed, trained in one process as one
batched model (the students' weights stacked along a seed dimension, :class:`kdlib.modeling.stacked.StackedT5`).

What each member sees is what its run alone would see (:func:`kdlib.trainers.base.train_run`): its own batches
(``step_indices`` keyed by its seed), its own sampling stream (``micro_generator(seed, step, micro, rank)``), its own
loss, gradient-norm clipping over its own gradient, AdamW (elementwise, so one fused AdamW over the stacked tensors
is S AdamWs), the same learning-rate schedule, dev evaluation, plateau rule, best and last checkpoints, test
evaluation and summary in its own run folder. Checkpoints are the single run's files (weights, ``optimizer.pt`` in
the single optimiser's format, ``state.json``), so a killed ensemble resumes every member from its checkpoint and a
member's checkpoint resumes as a single run too. What is shared is the work: one sampling loop, one teacher pass,
one batched forward and backward, one optimiser step, one greedy decoding per evaluation for all S members.

A member's numbers equal its single run's up to float rounding (the concatenated batch is padded to the longest
sequence of any member, which changes summation lengths, not values; tests/test_ensemble.py checks one step to
1e-5); two trainings of the same ensemble give the same numbers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from safetensors.torch import load_file
from torch import Tensor

from kdlib.config import OptimParams, Params
from kdlib.maths import metrics, returns
from kdlib.modeling.evaluate import teacher_scores, validity_of
from kdlib.modeling.generation import generate
from kdlib.modeling.models import decode, pad, save_checkpoint
from kdlib.modeling.stacked import StackedT5
from kdlib.trainers.base import (
    PlateauRule,
    batch_src,
    get_accelerator,
    lr_factor,
    make_optimizer,
    report_progress,
    reward_watch,
    shard,
    step_indices,
    teacher_encoder_cache,
    test_cis,
    write_test_outputs,
)
from kdlib.trainers.runs import Run, atomic_write_json
from kdlib.trainers.tasks import Task

# (model, per-member indices, step, micro) -> (per-member losses, per-member logs)
EnsembleLoss = Callable[[StackedT5, list[list[int]], int, int], tuple[list[Tensor], list[dict]]]


class Clock(dict):
    """Wall seconds by phase, summed (``with clock("sample"): ...``)."""

    def __call__(self, phase: str):
        clock = self

        class _Timer:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                clock[phase] = clock.get(phase, 0.0) + time.perf_counter() - self.t0

        return _Timer()


@dataclass
class Member:
    """One run of the ensemble and its training state."""

    run: Run
    seed: int
    step0: int = 0
    best: float | None = None
    best_step: int = -1
    rule: PlateauRule | None = None
    stopped: bool = False  # by the plateau rule
    done: int = 0
    logs: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- evaluation of all members
@torch.no_grad()
def ensemble_evaluate(model: StackedT5, task: Task, split: str, n: int | None, params: Params, teacher=None,
                      device="cpu", teacher_cache=None) -> list[tuple[dict, list[str]]]:
    """:func:`kdlib.trainers.base.eval_split` for every member: greedy decoding of the first ``n`` inputs of
    ``split``, the same batches for every member, decoded together (S*B rows), scored per member."""
    S = model.S
    n = task.split_size(split) if n is None else min(n, task.split_size(split))
    src, refs = task.student_src[split][:n], task.targets[split][:n]
    preds: list[list[str]] = [[] for _ in range(S)]
    lengths, ended, rets = [[] for _ in range(S)], [[] for _ in range(S)], [[] for _ in range(S)]
    left = task.arch == "causal"
    bs = params.eval.batch_size
    for lo in range(0, n, bs):
        idx = list(range(lo, min(n, lo + bs)))
        B = len(idx)
        ids, m = pad([src[i] for i in idx], task.tok.pad_token_id, left=left, device=device)
        roll = generate(model, task.tok, ids.repeat(S, 1), m.repeat(S, 1), arch=task.arch,
                        max_new_tokens=task.max_target_len, do_sample=False, use_calculator=task.use_calculator)
        for s in range(S):
            r = slice(s * B, (s + 1) * B)
            preds[s] += decode(task.tok, roll.tokens[r], roll.mask[r])
            lengths[s] += roll.mask[r].sum(1).tolist()
            ended[s] += roll.ended[r].tolist()
        if teacher is not None:
            t_ids, t_m = pad([task.teacher_src[split][i] for i in idx], task.tok.pad_token_id, left=left, device=device)
            t_enc = None
            if teacher_cache is not None:
                t_enc, t_m = teacher_cache.get(idx)
                t_enc = t_enc.repeat(S, 1, 1)
            q_sa, v, _ = teacher_scores(teacher, task.arch, t_ids.repeat(S, 1), t_m.repeat(S, 1), roll.tokens,
                                             roll.mask, params.rl.normalize, t_enc)
            g0 = returns.full_returns(q_sa, v, roll.mask)[:, 0]  # (S*B,)
            for s in range(S):
                rets[s] += g0[s * B: (s + 1) * B].tolist()
    out = []
    for s in range(S):
        m_s = metrics.task_metrics(task.kind, preds[s], list(refs))
        m_s["length"] = float(sum(lengths[s]) / max(1, len(lengths[s])))
        m_s["eos_rate"] = float(sum(ended[s]) / max(1, len(ended[s])))
        if teacher is not None:
            m_s["return"] = float(sum(rets[s]) / max(1, len(rets[s])))
        if task.truth is not None:  # generated tasks: % of outputs valid for their source, as eval_split
            m_s["validity"] = validity_of(task.truth, task.sources[split][:n], preds[s])
        out.append((m_s, preds[s]))
    return out


@torch.no_grad()
def ensemble_sampled_return(model: StackedT5, task: Task, split: str, n: int | None, params: Params, teacher, device,
                            seeds: list[int], teacher_cache=None) -> list[float]:
    """:func:`kdlib.trainers.base.sampled_return` for every member, each with its own generator seeded by its seed
    (consumed exactly as the single call consumes it)."""
    S = model.S
    n = task.split_size(split) if n is None else min(n, task.split_size(split))
    k = params.eval.sampled
    gens = [torch.Generator(device=torch.device(device)).manual_seed(int(sd)) for sd in seeds]
    total, count = [0.0] * S, 0
    bs = max(1, params.eval.batch_size // k)
    for lo in range(0, n, bs):
        idx = [i for i in range(lo, min(n, lo + bs)) for _ in range(k)]
        B = len(idx)
        src, src_m = batch_src(task, split, idx, "student", device)
        t_src, t_src_m = batch_src(task, split, idx, "teacher", device)
        roll = generate(model, task.tok, src.repeat(S, 1), src_m.repeat(S, 1), arch=task.arch,
                        max_new_tokens=task.max_target_len, do_sample=True, use_calculator=task.use_calculator,
                        generator=gens)
        t_enc = None
        if teacher_cache is not None:
            t_enc, t_src_m = teacher_cache.get(idx)
            t_enc = t_enc.repeat(S, 1, 1)
        q_sa, v, _ = teacher_scores(teacher, task.arch, t_src.repeat(S, 1), t_src_m.repeat(S, 1), roll.tokens,
                                         roll.mask, params.rl.normalize, t_enc)
        g0 = returns.full_returns(q_sa, v, roll.mask)[:, 0]
        for s in range(S):
            total[s] += float(g0[s * B: (s + 1) * B].sum())
        count += B
    return [t / max(1, count) for t in total]


# ----------------------------------------------------------------------------- optimiser state in the single format
def _single_optimizer(template, optim: OptimParams):
    return make_optimizer(template, optim)


def load_optimizer_states(opt: torch.optim.Optimizer, model: StackedT5, folders: list, template,
                          optim: OptimParams) -> None:
    """Stack the members' ``optimizer.pt`` (each a single run's AdamW state) into ``opt``'s state."""
    single = _single_optimizer(template, optim)
    per_member = []
    for folder in folders:
        single.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True, map_location="cpu"))
        per_member.append([single.state.get(p, {}) for p in single.param_groups[0]["params"]])
    dev = model.parameters()[0].device
    for i, p in enumerate(model.parameters()):
        states = [m[i] for m in per_member]
        if not states[0]:
            continue
        steps = {float(st["step"]) for st in states}
        if len(steps) != 1:
            raise ValueError(f"ensemble members resume from different optimiser steps {sorted(steps)}")
        opt.state[p] = {"step": states[0]["step"].clone().to(dev),
                        **{k: torch.stack([st[k] for st in states]).to(dev) for k in ("exp_avg", "exp_avg_sq")}}


def save_optimizer_state(opt: torch.optim.Optimizer, model: StackedT5, s: int, single, path) -> None:
    """Member ``s``'s AdamW state written as a single run writes it (``torch.save`` of the single optimiser's
    ``state_dict``), atomically."""
    single.state.clear()
    for p_single, p in zip(single.param_groups[0]["params"], model.parameters()):
        st = opt.state.get(p)
        if st:
            single.state[p_single] = {"step": st["step"].clone(), "exp_avg": st["exp_avg"][s].clone(),
                                      "exp_avg_sq": st["exp_avg_sq"][s].clone()}
    for g in single.param_groups:
        g["lr"] = opt.param_groups[0]["lr"]
    tmp = path.with_name(path.name + ".tmp")
    torch.save(single.state_dict(), tmp)
    os.replace(tmp, path)


def clip_per_member(model: StackedT5, max_norm: float) -> list[float]:
    """``torch.nn.utils.clip_grad_norm_`` for each member over its own gradient: the L2 norm over all its
    parameters, and the gradients scaled by min(1, max_norm / (norm + 1e-6)). Returns the norms before clipping."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    S = model.S
    norms = torch.stack([g.reshape(S, -1).norm(2, dim=1) for g in grads], 1).norm(2, dim=1)  # (S,)
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(S, *([1] * (g.dim() - 1))))
    return norms.tolist()


# ----------------------------------------------------------------------------- the harness
def train_ensemble(runs: list[Run], *, params: Params, optim: OptimParams, task: Task, template, seeds: list[int],
                   micro_loss: EnsembleLoss, teacher=None, n_train: int | None = None,
                   extra_summary: dict | None = None, clock: Clock | None = None) -> list[dict]:
    """Train the members (``runs[i]`` with ``seeds[i]``, all from ``template``'s weights or from their own last
    checkpoints, all at the same step) and finish every run; returns their summaries. ``micro_loss`` is the
    family's ensemble loss; the rest mirrors :func:`kdlib.trainers.base.train_run` member by member."""
    acc = get_accelerator(params.models.dtype)
    if acc.num_processes != 1:
        raise ValueError("seed ensembles train in one process (no DDP); use single runs")
    dev = acc.device
    clock = clock if clock is not None else Clock()
    n_train = n_train or task.split_size("train")
    t0 = time.time()
    template.to(dev)
    primary = task.primary
    higher = metrics.HIGHER_IS_BETTER.get(primary, True)
    members, states, resume_dirs = [], [], []
    base = {n: p.detach().clone() for n, p in template.named_parameters()}
    from kdlib.trainers.base import load_weights

    for run, seed in zip(runs, seeds):
        run.start()
        mb = Member(run=run, seed=seed, rule=PlateauRule(optim.patience, optim.min_delta, optim.eval_every, higher,
                                                           window=optim.plateau_window, smooth=optim.plateau_smooth,
                                                           min_steps=optim.min_steps))
        state = run.resume_state()
        if state is not None:
            load_weights(template, run.last_dir)
            states.append({n: p.detach().clone() for n, p in template.named_parameters()})
            mb.step0, mb.best, mb.best_step = state["step"], state["best"], state["best_step"]
            mb.rule.load(state.get("plateau_rule", {}))
            run.truncate_metrics(mb.step0)
            resume_dirs.append(run.last_dir)
            print(f"[kdlib] resuming {run.path} from step {mb.step0}")
        else:
            if run.metrics_path.exists():
                run.metrics_path.unlink()  # a run killed before its first checkpoint starts over
            states.append(base)
        mb.done = mb.step0
        members.append(mb)
    if len({m.step0 for m in members}) != 1:
        raise ValueError("ensemble members must resume from the same step; group them by step first")
    if resume_dirs and len(resume_dirs) != len(members):
        raise ValueError("either every member resumes or none")
    model = StackedT5(template, states)
    S = model.S
    fused = all(p.dtype == torch.float32 for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=optim.lr, weight_decay=optim.weight_decay, betas=(0.9, 0.999),
                            fused=fused)
    single_opt = _single_optimizer(template, optim)
    if len(single_opt.param_groups[0]["params"]) != len(model.parameters()):
        raise ValueError("the template has frozen parameters; a seed ensemble trains every parameter")
    if resume_dirs:
        load_optimizer_states(opt, model, resume_dirs, template, optim)
    step0 = members[0].step0

    dev_cache = teacher_encoder_cache(params, task, teacher, "dev", params.eval.n_dev)

    def dev_eval(step: int, last: bool = False, can_stop: bool = True) -> None:
        live = [i for i, m in enumerate(members) if not m.stopped]
        with clock("eval"):
            results = ensemble_evaluate(model, task, "dev", params.eval.n_dev, params, teacher, dev, dev_cache)
            sampled = None
            if teacher is not None and params.eval.sampled and (step == 0 or last):
                sampled = ensemble_sampled_return(model, task, "dev", params.eval.n_dev, params, teacher, dev,
                                                  [m.seed for m in members], dev_cache)
        for i in live:
            mb = members[i]
            m = dict(results[i][0])
            if sampled is not None:
                m["sampled_return"] = sampled[i]
            mb.run.log({"step": step, **{f"eval/{k}": v for k, v in m.items()}})
            score = m[primary]
            if mb.best is None or (score >= mb.best if higher else score <= mb.best):
                mb.best, mb.best_step = score, step
                with clock("checkpoint"):
                    save_checkpoint(model.to_template(i), None, mb.run.best_dir, {"step": step, "dev": m})
            if mb.rule.update(step, score) and can_stop and step < optim.steps:
                mb.stopped, mb.done = True, step

    def checkpoint(step: int) -> None:
        with clock("checkpoint"):
            for i, mb in enumerate(members):
                if mb.stopped:
                    continue
                save_checkpoint(model.to_template(i), None, mb.run.last_dir, {"step": step})
                save_optimizer_state(opt, model, i, single_opt, mb.run.last_dir / "optimizer.pt")
                atomic_write_json(mb.run.last_dir / "state.json", {"step": step, "best": mb.best,
                                                                   "best_step": mb.best_step,
                                                                   "plateau_rule": mb.rule.state()})

    if step0 == 0:
        dev_eval(0, can_stop=False)
    for step in range(step0, optim.steps):
        if all(m.stopped for m in members):
            break
        for g in opt.param_groups:
            g["lr"] = optim.lr * lr_factor(optim, step)
        for mb in members:
            mb.logs = {}
        for micro in range(optim.grad_accum):
            idxs = [shard(step_indices(n_train, optim.batch_size, step, micro, optim.grad_accum, m.seed), acc)
                    for m in members]
            losses, infos = micro_loss(model, idxs, step, micro)
            with clock("backward"):
                (torch.stack(losses).sum() / optim.grad_accum).backward()
            for mb, loss, info in zip(members, losses, infos):
                for k, v in {"loss": float(loss.detach()), **info}.items():
                    mb.logs[k] = mb.logs.get(k, 0.0) + float(v) / optim.grad_accum
        with clock("optimizer"):
            norms = clip_per_member(model, optim.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
        done = step + 1
        for i, mb in enumerate(members):
            if mb.stopped:
                continue
            mb.done = done
            mb.logs["grad_norm"] = norms[i]
            if done % optim.log_every == 0 or done == optim.steps:
                mb.run.log({"step": done, **{f"train/{k}": v for k, v in mb.logs.items()},
                            "train/lr": opt.param_groups[0]["lr"]})
            report_progress(mb.run, done, optim.steps)
        if done % optim.eval_every == 0 or done == optim.steps:
            dev_eval(done, last=done == optim.steps)
        if done % optim.checkpoint_every == 0 and done < optim.steps:
            checkpoint(done)
            if os.environ.get("KDLIB_CRASH_AFTER_CHECKPOINT") == str(done):  # fault injection for the resume test
                os._exit(137)

    # Final: every member's best dev checkpoint, scored on test together.
    with clock("test"):
        for i, mb in enumerate(members):
            if mb.run.best_dir.is_dir():
                model.load_member(i, _checkpoint_state(template, mb.run.best_dir))
        results = ensemble_evaluate(model, task, "test", params.eval.n_test, params, teacher, dev)
        summaries = []
        for i, mb in enumerate(members):
            m_test, preds = results[i]
            write_test_outputs(mb.run, task, preds)
            stopped_early = mb.stopped
            converged = stopped_early or mb.rule.flat_since(mb.done)
            dev_best = next((r for r in reversed(mb.run.metrics()) if r.get("step") == mb.best_step
                             and f"eval/{primary}" in r), {})
            summary = {"task": task.name, "kind": task.kind, "primary": primary, "best_step": mb.best_step,
                       "steps": optim.steps, "stopped_at": mb.done,
                       "stop_reason": "plateau" if stopped_early else "steps", "converged": bool(converged),
                       "last_improvement": mb.rule.last_improvement, "plateau_rule": mb.rule.settings(),
                       "best_is_start": mb.best_step == 0 and optim.steps > 0, "seed": mb.seed,
                       "time_s": round(time.time() - t0, 2),
                       "dev": {k[5:]: v for k, v in dev_best.items() if k.startswith("eval/")}, "test": m_test,
                       "test_ci": test_cis(task, preds, params), "reward_watch": reward_watch(mb.run.metrics(), primary),
                       **(extra_summary or {})}
            summaries.append(summary)
    split = {k: round(v, 3) for k, v in sorted(clock.items())}
    for mb, summary in zip(members, summaries):
        summary["ensemble"] = {"size": S, "seeds": [m.seed for m in members], "time_split_s": split}
        mb.run.finish(summary)
    return [mb.run.summary() for mb in members]


def _checkpoint_state(template, folder) -> dict[str, Tensor]:
    """A checkpoint's weights by ``template.named_parameters()`` names (tied weights resolved as loading does)."""
    from kdlib.trainers.base import load_weights

    load_weights(template, folder)
    return {n: p.detach().clone() for n, p in template.named_parameters()}
