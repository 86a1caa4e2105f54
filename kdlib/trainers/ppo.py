"""Clipped policy optimisation family (floor 3): PPO and GRPO in one loop, top to bottom like
cleanrl's ``ppo.py``. One harness step is one iteration:

1. **rollout** -- ``ppo.batch_size`` prompts (this process's share of them under DDP), each
   answered ``ppo.group_size`` times by the current policy pi_old at ``ppo.temperature`` (1: the
   samples are on-policy, which the clipped surrogate's importance ratio assumes);
2. **score once**, without gradients -- log pi_old of the sampled tokens, V_old from the critic
   (if the method has one), log pi_ref of a frozen reference (if ``kl_coef`` > 0), and the
   method's :class:`Scorer`, which turns the batch into per-token advantages (and value targets);
3. **update** -- ``ppo.epochs`` passes over ``ppo.minibatches`` shuffled minibatches: the clipped
   surrogate (kdlib.maths.ppo_losses.ppo_policy_loss), plus the clipped value loss for a critic, minus an
   entropy bonus, plus the method's optional differentiable auxiliary loss; gradient clipping and
   one AdamW step per minibatch.

A method is a scorer plugged into this loop (nothing else changes). Seed 001 App. D's two:

* ``llmr_ppo``: the LLMR reward of Eq. (2) per token (folded onto the policy's actions: calculator
  insertions are environment transitions), a critic V(s_t) trained on the clipped value loss, and
  GAE advantages (gamma, lambda); the TD error delta_t is logged for Fig. 3a.
* ``ketchup_ppo``: no critic; the advantage is the K-step return of Algorithm 1 (as the paper
  says: "replacing the critic's advantage ... with our block-wise K-step return estimator"),
  unnormalised unless ``whiten_advantages``.

Rollouts cut at the length limit follow ``ppo.truncated`` (drop: no loss on them).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from kdlib.config import PPOParams
from kdlib.maths import advantages, returns
from kdlib.maths.full_vocab import entropy_from_logits
from kdlib.maths.ppo_losses import ppo_policy_loss, ppo_value_loss
from kdlib.modeling.evaluate import teacher_scores
from kdlib.modeling.generation import generate
from kdlib.modeling.models import (
    HEAD_ATTR,
    attach_head,
    forward_logits,
    forward_with_hidden,
    head_values,
    token_logprobs,
)
from kdlib.trainers.base import batch_src, micro_generator, shard, step_indices
from kdlib.trainers.tasks import Task


@dataclass
class Batch:
    """One iteration's rollouts (this process's share), everything (N, ...) with N = prompts x group."""

    idx: list[int]  # train-example index of each row (a group's rows are consecutive)
    src: Tensor  # (N, S) student prompt ids
    src_m: Tensor
    tokens: Tensor  # (N, T)
    mask: Tensor  # (N, T) valid positions (EOS included)
    action_mask: Tensor  # (N, T) the policy's own tokens
    ended: Tensor  # (N,) rows that produced EOS
    logp_old: Tensor  # (N, T) log pi_old of the sampled tokens
    values_old: Tensor | None = None  # (N, T) critic values V_old(s_t)
    logp_ref: Tensor | None = None  # (N, T) log pi_ref (KL penalty)
    logits_old: Tensor | None = None  # (N, T, V) pi_old's logits, kept only when the method asks (keep_logits)
    logs: dict = field(default_factory=dict)


@dataclass
class Scored:
    """What a scorer returns: per-token advantages, value targets for a critic, values to log."""

    advantages: Tensor  # (N, T), 0 off the loss positions
    value_targets: Tensor | None = None  # (N, T)
    logs: dict = field(default_factory=dict)
    loss_mask: Tensor | None = None  # (N, T) positions that get a policy loss (default: action mask)


Scorer = Callable[[Batch], Scored]
AuxLoss = Callable[[Batch, list[int], Tensor], Tensor]  # (batch, minibatch rows, student logits) -> scalar


@dataclass
class Method:
    """A clipped-policy-optimisation method: its scorer, whether it trains a critic, an optional
    differentiable auxiliary loss (seed 004's term II, Mini-LLM's single-step KL)."""

    scorer: Scorer
    critic: bool = False
    aux_loss: AuxLoss | None = None
    keep_logits: bool = False  # keep the rollout's (N, T, V) logits in Batch.logits_old (a scorer that needs them)


# ----------------------------------------------------------------------------- seed 001 App. D
def _teacher_q(teacher, task: Task, b: Batch, pp: PPOParams, teacher_cache=None):
    t_src, t_src_m = batch_src(task, "train", b.idx, "teacher", b.tokens.device)
    t_enc = None
    if teacher_cache is not None:
        t_enc, t_src_m = teacher_cache.get(b.idx)
    return teacher_scores(teacher, task.arch, t_src, t_src_m, b.tokens, b.mask, pp.normalize, t_enc)


def _teacher_logs(q_sa, v, t_logp, b: Batch) -> dict:
    n_tok = b.mask.sum().clamp(min=1)
    return {"return": float(returns.full_returns(q_sa, v, b.mask)[:, 0].mean()),  # Eq. (10) of the rollouts
            "kl": float(((b.logp_old - t_logp) * b.mask).sum() / n_tok)}  # MC KL(pi || teacher) per token


def llmr_ppo_scorer(teacher, task: Task, pp: PPOParams, teacher_cache=None) -> Scorer:
    """LLMR + PPO (seed 001 App. D; spec seed001 Sec. 3.2): r_t of Eq. (2), clipped to the reward
    clip, minus the k1 KL penalty when ``kl_coef`` > 0; GAE over the policy's actions with the
    critic's V_old; value targets A + V_old. Logs the TD error delta_t (Fig. 3a)."""

    def score(b: Batch) -> Scored:
        q_sa, v, t_logp = _teacher_q(teacher, task, b, pp, teacher_cache)
        r = returns.step_rewards(q_sa, v, b.mask).clamp(-pp.reward_clip, pp.reward_clip)  # (N, T)
        if pp.kl_coef > 0 and b.logp_ref is not None:
            r = r - pp.kl_coef * (b.logp_old - b.logp_ref) * b.action_mask
        r = advantages.fold_to_actions(r, b.action_mask, b.mask)  # calculator insertions: onto the action before
        adv, ret = advantages.gae(r, b.values_old, b.action_mask, pp.gamma, pp.lam)
        delta, _ = advantages.gae(r, b.values_old, b.action_mask, pp.gamma, 0.0)  # one-step TD errors
        n_act = b.action_mask.sum().clamp(min=1)
        early, middle, late = advantages.position_bucket_mean_sq(delta, b.action_mask, 3)
        logs = {**_teacher_logs(q_sa, v, t_logp, b), "td_error_sq": float((delta ** 2).sum() / n_act),
                "td_error_sq_early": early, "td_error_sq_middle": middle, "td_error_sq_late": late,
                "td_error_abs": float(delta.abs().sum() / n_act),
                "value_mean": float((b.values_old * b.action_mask).sum() / n_act),
                "explained_var": advantages.explained_variance(b.values_old, ret, b.action_mask)}
        return Scored(advantages=adv, value_targets=ret, logs=logs)

    return score


def ketchup_ppo_scorer(teacher, task: Task, pp: PPOParams, teacher_cache=None) -> Scorer:
    """KETCHUP (BRIM) + PPO (seed 001 App. D): no critic; the advantage of every action is the
    K-step return of Algorithm 1 (``ppo.tail``), clipped to the reward clip."""

    def score(b: Batch) -> Scored:
        q_sa, v, t_logp = _teacher_q(teacher, task, b, pp, teacher_cache)
        G = returns.truncated_kstep_returns(q_sa, v, b.mask, b.ended, pp.k, tail=pp.tail, truncated=pp.truncated)
        G = returns.clip_rewards(G, -pp.reward_clip, pp.reward_clip) * b.action_mask
        return Scored(advantages=G, logs=_teacher_logs(q_sa, v, t_logp, b))

    return score


SCORERS: dict[str, tuple[Callable[..., Scorer], bool]] = {
    "llmr_ppo": (llmr_ppo_scorer, True),  # (scorer factory, trains a critic)
    "ketchup_ppo": (ketchup_ppo_scorer, False),
}


def seed001_method(name: str, teacher, task: Task, pp: PPOParams, teacher_cache=None) -> Method:
    factory, critic = SCORERS[name]
    return Method(scorer=factory(teacher, task, pp, teacher_cache), critic=critic)


def prepare_policy(model, method: Method, pp: PPOParams):
    """Attach the critic (a head on the policy's hidden states, or a separate copy of the policy
    with its own head) when the method trains one."""
    if method.critic and getattr(model, HEAD_ATTR, None) is None:
        backbone = copy.deepcopy(model) if pp.value_model == "separate" else None
        attach_head(model, backbone)
    return model


# ----------------------------------------------------------------------------- the loop
def critic_warmup(model, b: Batch, sc: Scored, task: Task, pp: PPOParams, accelerator, opt, amp, rng) -> float:
    """``pp.critic_warmup`` epochs of value-loss-only minibatch updates on the first rollout batch (unclipped: there is
    no old critic worth staying near), so that GAE does not run on a critic that has never seen a return. The policy's
    head gets no gradient from them only where the critic is a separate network; on a shared trunk they move it too, as
    any value loss does. Returns the last warm-up loss."""
    N = len(b.idx)
    size = max(1, N // pp.minibatches)
    last = float("nan")
    for _ in range(pp.critic_warmup):
        perm = rng.permutation(N)
        for j in range(max(1, N // size)):
            rows = perm[j * size: (j + 1) * size].tolist()
            with amp():
                _, hidden = forward_with_hidden(model, task.arch, b.src[rows], b.src_m[rows], b.tokens[rows], b.mask[rows])
                values = head_values(model, task.arch, b.src[rows], b.src_m[rows], b.tokens[rows], b.mask[rows], hidden)
                v_loss, _ = ppo_value_loss(values, b.values_old[rows], sc.value_targets[rows], b.action_mask[rows], None)
            accelerator.backward(pp.vf_coef * v_loss)
            accelerator.clip_grad_norm_(model.parameters(), pp.max_grad_norm)
            opt.step()
            opt.zero_grad(set_to_none=True)
            last = float(v_loss.detach())
    return last


def ppo_step_fn(method: Method, task: Task, pp: PPOParams, accelerator, seed: int, reference=None,
                prompts: list[int] | None = None):
    """The harness ``step_fn`` of one PPO/GRPO iteration (see the module docstring). ``prompts``:
    the train indices the prompts are drawn from (default: every train example; seed 003 trains on
    D_R plus D_fail only)."""
    dev = accelerator.device
    rank = accelerator.process_index
    pool = list(prompts) if prompts is not None else None
    n_train = len(pool) if pool is not None else task.split_size("train")

    @torch.no_grad()
    def rollout(model, step: int, amp) -> Batch:
        policy = accelerator.unwrap_model(model)
        picks = step_indices(n_train, pp.batch_size, step, 0, 1, seed)
        chosen = shard(picks if pool is None else [pool[i] for i in picks], accelerator)
        idx = [i for i in chosen for _ in range(pp.group_size)]  # a group's samples are consecutive rows
        src, src_m = batch_src(task, "train", idx, "student", dev)  # (N, S)
        with amp():
            roll = generate(policy, task.tok, src, src_m, arch=task.arch, max_new_tokens=task.max_target_len,
                            do_sample=True, temperature=pp.temperature, use_calculator=task.use_calculator,
                            generator=micro_generator(seed, step, 0, rank, dev))
            logits, hidden = forward_with_hidden(policy, task.arch, src, src_m, roll.tokens, roll.mask)
            b = Batch(idx=idx, src=src, src_m=src_m, tokens=roll.tokens, mask=roll.mask, action_mask=roll.action_mask,
                      ended=roll.ended, logp_old=token_logprobs(logits, roll.tokens) * roll.mask)
            if method.keep_logits:
                b.logits_old = logits
            if method.critic:
                b.values_old = head_values(policy, task.arch, src, src_m, roll.tokens, roll.mask, hidden) * roll.mask
            if reference is not None:
                ref_logits = forward_logits(reference, task.arch, src, src_m, roll.tokens, roll.mask)
                b.logp_ref = token_logprobs(ref_logits, roll.tokens) * roll.mask
        b.logs = {"length": float(roll.mask.sum(1).float().mean()), "eos_rate": float(roll.ended.float().mean())}
        return b

    def step_fn(model, opt, step: int, amp) -> dict:
        t0 = time.perf_counter()
        b = rollout(model, step, amp)
        t1 = time.perf_counter()
        with torch.no_grad(), amp():
            sc = method.scorer(b)
        t2 = time.perf_counter()
        loss_mask = sc.loss_mask if sc.loss_mask is not None else b.action_mask
        if pp.truncated == "drop":
            loss_mask = loss_mask & b.ended[:, None]
        adv = sc.advantages.float()
        if pp.whiten_advantages:
            adv = advantages.whiten(adv, loss_mask)
        N = len(b.idx)
        size = N // pp.minibatches
        rng = np.random.default_rng([seed, step, rank, 7])
        sums: dict[str, float] = {}
        n_updates = 0
        if method.critic and step == 0 and pp.critic_warmup > 0:  # fit the critic before the first policy update
            sums["critic_warmup_loss"] = critic_warmup(model, b, sc, task, pp, accelerator, opt, amp, rng)
        for _ in range(pp.epochs):
            perm = rng.permutation(N)
            for j in range(pp.minibatches):
                rows = perm[j * size: (j + 1) * size].tolist()
                with amp():
                    logits, hidden = forward_with_hidden(model, task.arch, b.src[rows], b.src_m[rows], b.tokens[rows],
                                                         b.mask[rows])
                    logp = token_logprobs(logits, b.tokens[rows])
                    m = loss_mask[rows]
                    loss, st = ppo_policy_loss(logp, b.logp_old[rows], adv[rows], m, pp.clip_eps)
                    logs = {"policy_loss": float(loss.detach()), **{k: float(v) for k, v in st.items()}}
                    if method.critic:
                        values = head_values(model, task.arch, b.src[rows], b.src_m[rows], b.tokens[rows],
                                             b.mask[rows], hidden)
                        v_loss, v_st = ppo_value_loss(values, b.values_old[rows], sc.value_targets[rows], m, pp.value_clip)
                        loss = loss + pp.vf_coef * v_loss
                        logs.update({"value_loss": float(v_loss.detach()), **{k: float(v) for k, v in v_st.items()}})
                    ent = entropy_from_logits(logits, m)  # logged always; a bonus when entropy_coef > 0
                    logs["entropy"] = float(ent.detach())
                    if pp.entropy_coef > 0:
                        loss = loss - pp.entropy_coef * ent
                    if method.aux_loss is not None:
                        aux = method.aux_loss(b, rows, logits)
                        loss = loss + aux
                        logs["aux_loss"] = float(aux.detach())
                accelerator.backward(loss)
                logs["grad_norm"] = float(accelerator.clip_grad_norm_(model.parameters(), pp.max_grad_norm))
                opt.step()
                opt.zero_grad(set_to_none=True)
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_updates += 1
        t3 = time.perf_counter()
        out = {**b.logs, **sc.logs, **{k: v / max(1, n_updates) for k, v in sums.items()},
               "time_rollout_s": t1 - t0, "time_score_s": t2 - t1, "time_update_s": t3 - t2}
        out["loss"] = out.get("policy_loss", 0.0) + pp.vf_coef * out.get("value_loss", 0.0)
        out["adv_mean"] = float((adv * loss_mask).sum() / loss_mask.sum().clamp(min=1))
        return out

    return step_fn
