"""Seed 004's five methods on the one GRPO loop (floor 3): scorers and auxiliary losses for
:func:`kdlib.trainers.ppo.ppo_step_fn`, and the greedy evaluation with the student-teacher KL.

"Rethinking LLM distillation: a constrained MDP perspective" (spec seeds003_004 Part B). Every
method samples ``group_size`` responses per prompt from the student, scores them ONCE with the
teacher (exact full-vocabulary reverse KL per token, Eq. (7), teacher probabilities floored,
calculator insertions excluded: they are environment transitions, not actions), turns the
batch into group-normalised advantages and runs the clipped surrogate; they differ only in the
reward and the auxiliary loss:

======================  ==============================================  ===============================
method                  reward / advantage                              auxiliary loss (with gradient)
======================  ==============================================  ===============================
``cmdp`` (ours)         Eq. (4): R_i if KL_i <= d else -(n + KL_i)      Eq. (5) term II: c_II * KL_i
                        (sequence); token option: Eq. (4) per step,     on violating rows (tokens)
                        GRPO process supervision
``grpo``                R_i (lambda = 0)                                none
``gkd_grpo``            R_i - lambda KL_i (Eq. 1)                       none
``gkd``                 -KL_i                                           none
``minillm``             future mean of log mu - log pi (MiniLLM's       single-step KL: masked mean of
                        length-normalised long-term return), group      the full-vocabulary kl_t
                        normalised on the whole-sequence return
======================  ==============================================  ===============================

``R_i`` is Eq. (6) (0/1 correctness of the final answer, kdlib.maths.constrained_metrics.task_rewards) and
``KL_i`` the per-sample KL (per-token mean by default, ``kl_reduction: sum`` for the literal
Eq. (2) sum). The pure maths is in kdlib.maths.constrained, kdlib.maths.losses and kdlib.maths.returns; this file
only wires it to the loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from kdlib.config import ConstrainedKDParams
from kdlib.maths import constrained as C
from kdlib.maths.advantages import (
    grpo_advantages,
    grpo_process_advantages,
    minillm_advantages,
)
from kdlib.maths.constrained_metrics import final_answer, task_rewards
from kdlib.maths.full_vocab import full_vocab_kl
from kdlib.modeling.generation import generate
from kdlib.modeling.models import decode, forward_logits, pad
from kdlib.trainers.base import batch_src
from kdlib.trainers.ppo import Batch, Method, Scored
from kdlib.trainers.tasks import Task

# --------------------------------------------------------------------------------------------
# the advantage and the auxiliary loss of each method, from a scored batch (pure tensor wiring)
# --------------------------------------------------------------------------------------------


@dataclass
class ScoredBatch:
    """What one teacher pass over a batch gives every method (all detached), N = B x G rows."""

    R: Tensor  # (N,) Eq. (6) task rewards
    kl_tok: Tensor  # (N, T) per-token full-vocabulary KL, 0 off the action mask
    kl_seq: Tensor  # (N,) per-sample KL (kl_reduction)
    t_logp: Tensor  # (N, T) teacher log-prob of the sampled tokens (floored), 0 off the mask
    action_mask: Tensor  # (N, T) bool
    logp_old: Tensor  # (N, T) student log-prob of the sampled tokens


@dataclass
class Plan:
    """A method's per-batch decision: advantages for the clipped surrogate, the rows (or
    tokens) where the auxiliary loss is active, values to log."""

    advantages: Tensor  # (N, T), 0 off the action mask
    aux_rows: Tensor | None = None  # (N,) bool: sequence-level aux (term II / single-step KL) rows
    aux_tokens: Tensor | None = None  # (N, T) bool: token-level term II positions
    logs: dict = field(default_factory=dict)


def plan_method(method: str, s: ScoredBatch, cp: ConstrainedKDParams) -> Plan:
    """The reward -> advantage -> auxiliary-loss decisions of one method on a scored batch.

    Pure (no model): what the tests check through the loop's plumbing. ``cp.group_size`` rows
    are one prompt's group (consecutive)."""
    G, m = cp.group_size, s.action_mask.bool()
    N = m.shape[0]
    logs: dict = {}
    aux_rows = aux_tokens = None
    if method == "minillm":
        adv = minillm_advantages(s.t_logp, s.logp_old, m, G, eps=cp.adv_eps)
        aux_rows = torch.ones(N, dtype=torch.bool, device=m.device)  # single-step KL on every row
        return Plan(adv, aux_rows, None, logs)
    if method == "cmdp" and cp.granularity == "token":
        r_tok = C.constrained_token_rewards(s.R, s.kl_tok, m, cp.d, cp.n, cp.use_phi, cp.kl_reduction)
        adv = grpo_process_advantages(r_tok, m, G, eps=cp.adv_eps)
        aux_tokens = C.explicit_term_mask_tokens(s.kl_tok, m, cp.d, cp.eps_b, cp.kl_reduction)
        logs["reward"] = float((r_tok * m).sum(1).mean())
        logs["term_ii_token_share"] = float(aux_tokens.sum() / m.sum().clamp(min=1))
        return Plan(adv, None, aux_tokens, logs)
    if method == "cmdp":
        r = C.constrained_reward(s.R, s.kl_seq, cp.d, cp.n, cp.use_phi)  # Eq. (4), sequence level
        aux_rows = C.explicit_term_mask(s.kl_seq, cp.d, cp.eps_b)  # Eq. (5) term II rows
        logs["term_ii_rows"] = float(aux_rows.float().mean())
    elif method == "grpo":
        r = s.R.float()
    elif method == "gkd_grpo":
        r = C.gkd_grpo_reward(s.R, s.kl_seq, cp.gkd_lambda)
    elif method == "gkd":
        r = C.gkd_reward(s.kl_seq)
    else:
        raise ValueError(f"unknown seed-004 method {method!r}")
    a = grpo_advantages(r, G, eps=cp.adv_eps)  # (N,)
    adv = torch.where(m, a.unsqueeze(-1).to(torch.float32), torch.zeros((), device=m.device))
    logs["reward"] = float(r.float().mean())
    return Plan(adv, aux_rows, aux_tokens, logs)


def aux_loss_value(method: str, plan: Plan, rows: Sequence[int], kl_tok_grad_fn, action_mask: Tensor,
                   cp: ConstrainedKDParams) -> Tensor | None:
    """The auxiliary loss on one minibatch ``rows``; ``kl_tok_grad_fn(local_rows)`` returns the
    per-token KL (with gradient) of those minibatch rows (local indices). None when inactive.

    * ``cmdp`` sequence: Eq. (5) term II ``c_II * sum_i viol_i KL_i / n_rows``
      (kdlib.maths.constrained.term_ii_loss), KL computed only on the violating rows;
    * ``cmdp`` token: ``c_II * sum_{i,t} viol_t kl_t / sum mask`` (term_ii_token_loss);
    * ``minillm``: MiniLLM's single-step term ``sum_{i,t} kl_t / sum mask``.
    """
    rows = list(rows)
    m = action_mask[rows].bool()
    if method == "minillm":
        kl = kl_tok_grad_fn(list(range(len(rows))))  # (n, T)
        return torch.where(m, kl, kl.new_zeros(())).sum() / m.sum().clamp(min=1).to(kl.dtype)
    if method != "cmdp":
        return None
    if cp.granularity == "token":
        viol = plan.aux_tokens[rows]
        local = [j for j in range(len(rows)) if bool(viol[j].any())]
        if not local:
            return None
        kl = kl_tok_grad_fn(local)  # (n_viol, T)
        full = torch.zeros(m.shape, dtype=kl.dtype, device=kl.device)
        full = full.index_put((torch.tensor(local, device=kl.device),), kl)
        return C.term_ii_token_loss(full, viol, m, cp.c_ii)
    viol = plan.aux_rows[rows]
    local = [j for j in range(len(rows)) if bool(viol[j])]
    if not local:
        return None
    kl = kl_tok_grad_fn(local)  # (n_viol, T)
    kl_seq = C.sequence_kl(kl, m[local], cp.kl_reduction)  # (n_viol,) with gradient
    full = torch.zeros(len(rows), dtype=kl_seq.dtype, device=kl_seq.device)
    full = full.index_put((torch.tensor(local, device=kl_seq.device),), kl_seq)
    return C.term_ii_loss(full, viol, cp.c_ii)


KEEP_LOGITS_BYTES = 512 * 2**20

# --------------------------------------------------------------------------------------------
# the teacher pass
# --------------------------------------------------------------------------------------------


def _teacher_src(task: Task, idx: list[int], device, teacher_cache=None, split: str = "train"):
    t_src, t_src_m = batch_src(task, split, idx, "teacher", device)
    t_enc = None
    if teacher_cache is not None:
        t_enc, t_src_m = teacher_cache.get(idx)
    return t_src, t_src_m, t_enc


@torch.no_grad()
def score_batch(policy, teacher, task: Task, b: Batch, cp: ConstrainedKDParams, teacher_cache=None,
                keep_teacher_logits: bool = False, teacher_logp: bool = False) -> tuple[ScoredBatch, Tensor | None]:
    """One teacher pass (and one student pass, for the full-vocabulary KL, unless the rollout
    kept pi_old's logits) over the rollouts, ``cp.score_rows`` rows at a time. Returns the
    scored batch and, when asked, the teacher's logits (N, T, V) for the auxiliary loss.
    ``teacher_logp``: also the teacher's (floored) log-probabilities of the sampled tokens
    (MiniLLM's log-ratio); else ``t_logp`` is zeros."""
    N, T = b.tokens.shape
    dev = b.tokens.device
    m = b.action_mask.bool()
    kl_tok = torch.zeros(N, T, device=dev)
    t_logp = torch.zeros(N, T, device=dev)
    kept = []
    for lo in range(0, N, cp.score_rows):
        rows = list(range(lo, min(N, lo + cp.score_rows)))
        if b.logits_old is not None:
            s_logits = b.logits_old[rows]
        else:
            s_logits = forward_logits(policy, task.arch, b.src[rows], b.src_m[rows], b.tokens[rows], b.mask[rows])
        t_src, t_src_m, t_enc = _teacher_src(task, [b.idx[i] for i in rows], dev, teacher_cache)
        t_logits = forward_logits(teacher, task.arch, t_src, t_src_m, b.tokens[rows], b.mask[rows], t_enc)
        kl_tok[rows] = full_vocab_kl(s_logits, t_logits, m[rows], cp.kl_floor, cp.kl_chunk).float()
        if teacher_logp:
            V = min(s_logits.shape[-1], t_logits.shape[-1])  # shared prefix (exact vocabularies: all of it)
            lt = torch.log_softmax(t_logits[..., :V].float(), dim=-1).clamp_min(float(np.log(cp.kl_floor)))
            tok = b.tokens[rows].unsqueeze(-1).clamp(max=V - 1)
            t_logp[rows] = torch.where(m[rows], lt.gather(-1, tok).squeeze(-1), 0.0)
        if keep_teacher_logits:
            kept.append(t_logits)
        del s_logits
    texts = decode(task.tok, b.tokens, b.mask)
    R = torch.tensor(task_rewards(texts, [task.targets["train"][i] for i in b.idx]), device=dev)
    kl_seq = C.sequence_kl(kl_tok, m, cp.kl_reduction)
    s = ScoredBatch(R=R, kl_tok=kl_tok, kl_seq=kl_seq, t_logp=t_logp, action_mask=m, logp_old=b.logp_old.float())
    return s, (torch.cat(kept) if keep_teacher_logits else None)


def cmdp_method(method: str, teacher, policy, task: Task, cp: ConstrainedKDParams, teacher_cache=None) -> Method:
    """The :class:`kdlib.trainers.ppo.Method` of a seed-004 method: a scorer (one teacher pass,
    :func:`plan_method`) and, for ``cmdp`` and ``minillm``, the auxiliary loss on the minibatch
    logits (:func:`aux_loss_value`). ``policy`` is the (unwrapped) student being trained: the
    scorer reads its full next-token distributions at the sampled states."""
    needs_aux = method in ("cmdp", "minillm")
    state: dict = {}
    # pi_old's logits from the rollout serve the KL (no second student pass) when they are small
    # (embedded: 32 x 128 x 2,000 floats); at paper scale the scorer recomputes them in row chunks.
    n_logits = cp.batch_size * cp.group_size * task.max_target_len * len(task.tok)
    keep = n_logits * 4 <= KEEP_LOGITS_BYTES

    def score(b: Batch) -> Scored:
        s, t_logits = score_batch(policy, teacher, task, b, cp, teacher_cache, keep_teacher_logits=needs_aux and keep,
                                  teacher_logp=method == "minillm")
        b.logits_old = None  # not needed past scoring
        plan = plan_method(method, s, cp)
        state.update(plan=plan, t_logits=t_logits)
        logs = {"accuracy": float(s.R.mean()), "kl": float(s.kl_seq.mean()), "kl_p95": float(s.kl_seq.quantile(0.95)),
                **plan.logs}
        if method == "cmdp":  # only ours knows d: the share within budget, and the groups' mix (spec B2)
            logs["feasible"] = float((s.kl_seq <= cp.d).float().mean())
            logs.update({f"groups_{k}": v for k, v in C.feasibility_breakdown(s.kl_seq, cp.d, cp.group_size).items()})
        return Scored(advantages=plan.advantages, logs=logs)

    def aux(b: Batch, rows: list[int], logits: Tensor) -> Tensor:
        plan, t_logits = state["plan"], state["t_logits"]

        def kl_tok_grad(local: list[int]) -> Tensor:
            g = [rows[j] for j in local]
            if t_logits is not None:
                t = t_logits[g]
            else:  # paper scale: the teacher's logits of these rows again (they were not kept)
                with torch.no_grad():
                    t_src, t_src_m, t_enc = _teacher_src(task, [b.idx[i] for i in g], b.tokens.device, teacher_cache)
                    t = forward_logits(teacher, task.arch, t_src, t_src_m, b.tokens[g], b.mask[g], t_enc)
            return full_vocab_kl(logits[local], t, b.action_mask[g], cp.kl_floor, cp.kl_chunk)

        out = aux_loss_value(method, plan, rows, kl_tok_grad, b.action_mask, cp)
        return logits.new_zeros(()) if out is None else out

    return Method(scorer=score, critic=False, aux_loss=aux if needs_aux else None, keep_logits=keep)


# --------------------------------------------------------------------------------------------
# evaluation: greedy outputs, their correctness and their per-sample KL to the teacher
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def greedy_kl_eval(student, teacher, task: Task, student_src: Sequence[Sequence[int]],
                   teacher_src: Sequence[Sequence[int]], references: Sequence[str], cp: ConstrainedKDParams,
                   batch_size: int = 64, device="cpu") -> list[dict]:
    """Greedy decoding (the paper's evaluation, B7.13) of ``student`` on the given prompts; per
    example the output, Eq. (6) correctness, and the per-sample KL of the greedy output to the
    teacher (the quantity of CS; ``cp.kl_reduction``, calculator insertions excluded). With
    ``teacher`` None (the teacher evaluated itself) the KL is 0."""
    rows = []
    left = task.arch == "causal"
    for lo in range(0, len(student_src), batch_size):
        idx = list(range(lo, min(len(student_src), lo + batch_size)))
        ids, m = pad([student_src[i] for i in idx], task.tok.pad_token_id, left=left, device=device)
        roll = generate(student, task.tok, ids, m, arch=task.arch, max_new_tokens=task.max_target_len,
                        do_sample=False, use_calculator=task.use_calculator)
        texts = decode(task.tok, roll.tokens, roll.mask)
        am = roll.action_mask.bool()
        if teacher is not None:
            kl_seq = torch.zeros(len(idx), device=device)
            for c in range(0, len(idx), cp.score_rows):
                r = list(range(c, min(len(idx), c + cp.score_rows)))
                s_logits = forward_logits(student, task.arch, ids[r], m[r], roll.tokens[r], roll.mask[r])
                t_ids, t_m = pad([teacher_src[idx[i]] for i in r], task.tok.pad_token_id, left=left, device=device)
                t_logits = forward_logits(teacher, task.arch, t_ids, t_m, roll.tokens[r], roll.mask[r])
                kl_tok = full_vocab_kl(s_logits, t_logits, am[r], cp.kl_floor, cp.kl_chunk)
                kl_seq[r] = C.sequence_kl(kl_tok, am[r], cp.kl_reduction).float()
        else:
            kl_seq = torch.zeros(len(idx), device=device)
        for j, i in enumerate(idx):
            ref = references[i]
            ok = task_rewards([texts[j]], [ref])[0]
            rows.append({"i": i, "output": texts[j], "reference": ref, "answer": final_answer(texts[j]),
                         "correct": ok, "kl": float(kl_seq[j]), "n_actions": int(am[j].sum()),
                         "ended": bool(roll.ended[j])})
    return rows
