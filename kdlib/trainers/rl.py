"""Policy-gradient family (floor 3): REINFORCE distillation with a teacher-induced reward.

One loop, the return estimator a parameter (seed 000 Sec. 2, Algorithm 1, Eq. (8); seed 002):
  * ``llmr``        G_t = reward-to-go of r_t = q(s_t, a_t) - max_a q(s_{t+1}, a)   (K = 1)
  * ``llmr_mean``   LLMR minus the batch-mean baseline
  * ``llmr_minvar`` LLMR minus the minimum-variance baseline (Rosenberg 2021)
  * ``ketchup``     the K-step return of Algorithm 1 (``tail="block"`` for the Eq. (7) ablation)
  * ``opd``         on-policy reverse KL: the (discounted) teacher/student log ratio as the return
  * ``minillm_pg``  MiniLLM (Gu et al. 2024): teacher-mixed samples, importance-weighted length-normalised future log
                    ratio, plus the single-step term (:func:`minillm_loss`)
Per step: sample y ~ pi_theta (temperature, top-k), score it with ONE teacher forward pass, build
the return, clip it to [-reward_clip, reward_clip] (the paper's [-100, 100]), and minimise
-sum_t G_t log pi(y_t|s_t) over the policy's own tokens (calculator insertions excluded).
Defaults follow the LLMR authors' code: q normalised by the mean logit, gradient norm clipped at
1.0 (the harness), nothing after EOS (the mask), rollouts cut at the length limit dropped
(``rl.truncated``; ``keep`` and ``bootstrap`` are the alternatives, see
kdlib.maths.returns.truncated_kstep_returns). ``rl.compat: authors_code`` switches to the KETCHUP authors'
public code (clamp tail, returns weighted by the detached student probability and clipped, a
scalar batch baseline for both baselines; spec seed001_brim_extras.md Sec. 8.2).
"""

from __future__ import annotations

import contextlib

import torch
from torch.profiler import record_function

from kdlib.config import RLParams
from kdlib.maths import returns
from kdlib.maths.losses import authors_code_pg_loss, policy_gradient_loss
from kdlib.maths.onpolicy import generalized_jsd, minillm_long_term, teacher_mix_weights
from kdlib.maths.onpolicy import opd_advantages as advantages_opd
from kdlib.modeling.evaluate import teacher_scores
from kdlib.modeling.generation import generate
from kdlib.modeling.models import forward_logits, token_logprobs
from kdlib.trainers.base import MicroLoss, batch_src, ensemble_batch, micro_generator, shared_encoder
from kdlib.trainers.tasks import Task


def method_k(method: str, q_sa, v, mask, rp: RLParams):
    """K of the return estimator: 1 for LLMR and its baselines, ``rl.k`` for KETCHUP, or a (B,)
    tensor of per-sequence K for ``rl.k: auto`` (kdlib.maths.returns.adaptive_k)."""
    if method != "ketchup":
        return 1
    if rp.k == "auto":
        return returns.adaptive_k(q_sa, v, mask, tuple(rp.auto_k_grid), rp.auto_k_tol, tail=rp.tail)
    return rp.k


def estimate_returns(method: str, q_sa, v, mask, ended, rp: RLParams, student_logits=None, tokens=None,
                     t_logp=None, logp=None):
    """The return each method multiplies with grad log pi (paper semantics). Shapes (B, T). ``opd`` (on-policy
    reverse KL) needs the teacher's and the student's log-probabilities of the sampled tokens (``t_logp``, ``logp``)."""
    if method == "opd":
        counted = mask & ended[:, None] if rp.truncated == "drop" else mask
        A = advantages_opd(t_logp, logp.detach(), mask, rp.opd_gamma)
        return returns.clip_rewards(A, -rp.reward_clip, rp.reward_clip) * counted
    G = returns.truncated_kstep_returns(q_sa, v, mask, ended, method_k(method, q_sa, v, mask, rp), tail=rp.tail,
                                        truncated=rp.truncated)
    G = returns.clip_rewards(G, -rp.reward_clip, rp.reward_clip)
    counted = mask & ended[:, None] if rp.truncated == "drop" else mask  # baselines over the rollouts that count
    if method == "llmr_mean":
        G = G - returns.batch_mean_baseline(G, counted)
    elif method == "llmr_minvar":
        norm_sq = returns.score_norm_sq(student_logits.detach(), tokens)
        G = G - returns.min_variance_baseline(G, counted, norm_sq)
    return G * counted


def rl_loss(method: str, logp, q_sa, v, mask, action_mask, ended, rp: RLParams, student_logits=None, tokens=None,
            t_logp=None):
    """(loss, returns) of one batch for ``method`` under ``rp.compat``; rows cut at the length
    limit are left out of the loss when ``rp.truncated == "drop"``."""
    if rp.truncated == "drop":
        action_mask = action_mask & ended[:, None]
    if rp.compat == "authors_code" and method != "opd":  # spec seed001_brim_extras.md Sec. 8.2: clamp tail, rho * G^, clip, scalar baseline
        G = returns.truncated_kstep_returns(q_sa, v, mask, ended, method_k(method, q_sa, v, mask, rp), tail="clamp",
                                            truncated=rp.truncated) * mask
        b = None
        if method in ("llmr_mean", "llmr_minvar"):
            b = returns.authors_code_baseline(logp.detach().exp() * G, mask)
        return authors_code_pg_loss(logp, G, action_mask, rp.reward_clip, baseline=b), G
    G = estimate_returns(method, q_sa, v, mask, ended, rp, student_logits, tokens, t_logp, logp)
    if rp.pg_normalize == "batch" and rp.truncated == "drop":  # mean over the rollouts that count
        kept = max(1, int(ended.sum()))
        return policy_gradient_loss(logp, G, action_mask, normalize="batch") * (logp.shape[0] / kept), G
    return policy_gradient_loss(logp, G, action_mask, normalize=rp.pg_normalize), G


def minillm_loss(logp, t_logp, s_logits, t_logits, action_mask, ended, rp: RLParams):
    """MiniLLM's loss on one batch of (teacher-mixed) rollouts (Gu et al., ICLR 2024, Eqs. 5-7; LMOps ``ppo_loss`` with
    one update per rollout, so its PPO ratio is 1):

        L = - sum_t w_t A_t log pi(y_t | s_t) / n  +  sum_t KL(pi(.|s_t) || p_T(.|s_t)) / n,

    A_t the length-normalised future log ratio (:func:`kdlib.maths.onpolicy.minillm_long_term`, whitened with
    ``rl.minillm_whiten``; clipped to ``rl.reward_clip``), w_t the teacher-mixed sampling weight
    (:func:`kdlib.maths.onpolicy.teacher_mix_weights`, 1 when ``rl.minillm_mix`` is 0), the second term the
    single-step part (its exact expectation over the vocabulary, with gradient; unweighted, as LMOps's
    ``_reg_loss``), n the number of counted action tokens (rollouts cut at the length limit are left out when
    ``rl.truncated`` is ``drop``). logp (B, T) with gradient, t_logp (B, T), logits (B, T, V). Returns (loss, A)."""
    counted = action_mask & ended[:, None] if rp.truncated == "drop" else action_mask
    A = minillm_long_term(t_logp, logp.detach(), counted, rp.minillm_whiten)
    A = returns.clip_rewards(A, -rp.reward_clip, rp.reward_clip) * counted
    w = teacher_mix_weights(logp, t_logp, counted, rp.minillm_mix)
    pg = policy_gradient_loss(logp, w * A, counted, normalize="tokens")
    return pg + generalized_jsd(s_logits, t_logits, 1.0, counted), A


def rl_micro_loss(method: str, teacher, task: Task, rp: RLParams, accelerator, seed: int,
                  teacher_cache=None) -> MicroLoss:
    """The loss of one micro-batch of the REINFORCE family (sample, score, return, Eq. (8)).

    ``teacher_cache``: an :class:`kdlib.modeling.models.EncoderCache` of the teacher over the train prompts
    (its encoder states are then read, not recomputed). With one process and no active dropout
    the student's encoder runs once per micro-batch: its states (with gradient) feed the loss, and
    detached they feed the sampler."""
    dev = accelerator.device
    rank = accelerator.process_index

    def micro_loss(model, idx: list[int], step: int, micro: int):
        g = micro_generator(seed, step, micro, rank, dev)
        src, src_m = batch_src(task, "train", idx, "student", dev)  # (B, S)
        t_src, t_src_m = batch_src(task, "train", idx, "teacher", dev)
        policy = accelerator.unwrap_model(model)
        t_enc = None
        if teacher_cache is not None:
            t_enc, t_src_m = teacher_cache.get(idx)  # (B, S, D), (B, S)
        minillm = method == "minillm_pg"
        mix = (teacher, t_src, t_src_m, t_enc, rp.minillm_mix) if minillm and rp.minillm_mix > 0 else None
        with record_function("kdlib.sample"):
            enc = shared_encoder(model, accelerator, task, src, src_m)  # (B, S, D) with gradient, or None
            roll = generate(policy, task.tok, src, src_m, arch=task.arch, max_new_tokens=task.max_target_len,
                            do_sample=True, temperature=rp.temperature, top_k=rp.top_k,
                            use_calculator=task.use_calculator, generator=g,
                            encoder_hidden=None if enc is None else enc.detach(), teacher_mix=mix)
        y, mask = roll.tokens, roll.mask  # (B, T)
        with record_function("kdlib.teacher"):
            if minillm:  # the single-step term needs the teacher's whole next-token distributions
                with torch.no_grad():
                    t_logits = forward_logits(teacher, task.arch, t_src, t_src_m, y, mask, t_enc)  # (B, T, V)
                    q_sa, v = returns.teacher_q(t_logits, y, mask, normalize=rp.normalize)
                    t_logp = token_logprobs(t_logits, y) * mask
            else:
                q_sa, v, t_logp = teacher_scores(teacher, task.arch, t_src, t_src_m, y, mask, rp.normalize, t_enc,
                                                 value=rp.value if method != "opd" else "max")  # (B, T)
        with record_function("kdlib.student_forward"):
            s_logits = forward_logits(model, task.arch, src, src_m, y, mask, enc)  # (B, T, V)
            logp = token_logprobs(s_logits, y)  # (B, T)
        if minillm:
            loss, G = minillm_loss(logp, t_logp, s_logits, t_logits, roll.action_mask, roll.ended, rp)
        else:
            loss, G = rl_loss(method, logp, q_sa, v, mask, roll.action_mask, roll.ended, rp, s_logits, y, t_logp)
        info = rl_logs(method, rp, q_sa, v, mask, roll.ended, logp, t_logp, G)
        if mix is not None:  # the mean importance weight of the teacher-mixed samples
            info["mix_weight"] = float(teacher_mix_weights(logp, t_logp, roll.action_mask, rp.minillm_mix).sum()
                                       / roll.action_mask.sum().clamp(min=1))
        return loss, info

    return micro_loss


@torch.no_grad()
def rl_logs(method: str, rp: RLParams, q_sa, v, mask, ended, logp, t_logp, G) -> dict:
    """What a step of the REINFORCE family logs for one batch (all (B, T) but ``ended`` (B,))."""
    true_G0 = returns.full_returns(q_sa, v, mask)[:, 0]  # Eq. (10) of each rollout
    n_tok = mask.sum().clamp(min=1)
    kl = ((logp.detach() - t_logp) * mask).sum() / n_tok  # MC estimate of KL(pi || p_teacher) per token
    # Eq. (10)'s return bootstraps with the max value; a soft-value run logs its own (the evaluations log Eq. (10))
    key = "return_soft" if (rp.value == "soft" and method not in ("opd", "minillm_pg")) else "return"
    info = {key: float(true_G0.mean()), "kl": float(kl), "eos_rate": float(ended.float().mean()),
            "length": float(mask.sum(1).float().mean()), "G_mean": float((G.sum() / n_tok))}
    if method == "ketchup" and rp.k == "auto":
        info["k_mean"] = float(method_k(method, q_sa, v, mask, rp).float().mean())
    return info


def rl_ensemble_micro_loss(method: str, teacher, task: Task, rp: RLParams, accelerator, seeds: list[int],
                           teacher_cache=None, clock=None):
    """:func:`rl_micro_loss` for a seed ensemble (kdlib.trainers.ensemble): member s samples its own micro-batch
    ``idxs[s]`` from its own generator ``micro_generator(seeds[s], step, micro, rank)``; all members decode together
    (S*B rows of one stacked model), the teacher scores the concatenated batch in one pass, the students' encoder and
    decoder run batched, and each member's logits, log-probabilities, return and loss are computed on its own rows
    exactly as the single run computes them. Returns the members' losses and logs."""
    dev = accelerator.device
    rank = accelerator.process_index
    S = len(seeds)
    tick = clock if clock is not None else (lambda phase: contextlib.nullcontext())

    def micro_loss(model, idxs: list[list[int]], step: int, micro: int):
        B = len(idxs[0])
        flat, gens, src, src_m, t_src, t_src_m = ensemble_batch(task, idxs, seeds, step, micro, rank, dev)  # (S*B, L)
        L = src.shape[1]
        with tick("sample"), record_function("kdlib.sample"):
            enc = model.encoder_states(src.view(S, B, L), src_m.view(S, B, L))  # (S, B, L, D) with gradient
            roll = generate(model, task.tok, src, src_m, arch=task.arch, max_new_tokens=task.max_target_len,
                            do_sample=True, temperature=rp.temperature, top_k=rp.top_k,
                            use_calculator=task.use_calculator, generator=gens,
                            encoder_hidden=enc.detach().view(S * B, L, -1))
        y, mask = roll.tokens, roll.mask  # (S*B, T)
        T = y.shape[1]
        with tick("teacher"), record_function("kdlib.teacher"):
            t_enc = None
            if teacher_cache is not None:
                t_enc, t_src_m = teacher_cache.get(flat)  # (S*B, S_t, D)
            q_sa, v, t_logp = teacher_scores(teacher, task.arch, t_src, t_src_m, y, mask, rp.normalize, t_enc,
                                             value=rp.value if method != "opd" else "max")  # (S*B, T)
        with tick("student"), record_function("kdlib.student_forward"):
            hidden = model.forward_hidden(src.view(S, B, L), src_m.view(S, B, L), y.view(S, B, T), enc)
            losses, logs = [], []
            for s, s_logits in enumerate(model.member_logits(hidden)):  # (B, T, V) each
                r = slice(s * B, (s + 1) * B)
                logp = token_logprobs(s_logits, y[r])  # (B, T)
                loss, G = rl_loss(method, logp, q_sa[r], v[r], mask[r], roll.action_mask[r], roll.ended[r], rp,
                                  s_logits, y[r], t_logp[r])
                losses.append(loss)
                logs.append(rl_logs(method, rp, q_sa[r], v[r], mask[r], roll.ended[r], logp, t_logp[r], G))
        return losses, logs

    return micro_loss
