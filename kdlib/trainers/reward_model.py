"""Reward-model family (floor 3) of seed 003 ("Distill not only data but also rewards", Sec. 3.3-3.4),
and the PPO method that optimises its shaped score.

**The reward model** R(q, a) is the warmed-up student S_warmup with a :class:`kdlib.modeling.models.ScalarHead`
attached (shared trunk: ``attach_head(model)``), read at each answer's last position (the EOS
position of the decoder; spec A7.9). One harness step (kdlib.trainers.base.train_run, via
``micro_loss``) reads a batch of D_R triplets (T+, S+, S-), scores the 3B answers, and minimises

    Eq. (6)  L = L_pref + lam * L_cls     (kdlib.maths.reward_model.rm_loss; ``loss="cls"``: Eq. (4) alone, Table 4)

Model selection reads the pairwise accuracies of the RM-val triplets (:func:`rm_evaluator`:
``pos_neg`` = 1[s_S+ > s_S-], ``pos_pos`` = 1[s_T > s_S+], Table 3); the best checkpoint's
accuracies on RM-test are the summary's ``test``.

**The PPO method** (:func:`rd_ppo_method`) plugs into kdlib.trainers.ppo's loop: every rollout is
decoded, its final answer extracted; the frozen RM scores it (r, a logit), Eq. (7) shapes it
(kdlib.maths.pseudolabel.shaped_reward: -5 without an answer, min(r, 0) when the answer disagrees with the
question's pseudo-label y*, r otherwise), the k1 KL penalty to the frozen reference is added per token
(kdlib.maths.advantages.kl_penalised_rewards, beta = ``ppo.kl_coef``), and GAE over the policy's own actions
(calculator insertions are environment transitions) gives advantages and value targets for the
critic, a separate network initialised from the reward model (:func:`value_model_from_rm`; TRL's
convention, spec A7.13).
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from kdlib.config import PPOParams
from kdlib.maths import advantages as returns
from kdlib.maths.metrics import gsm8k_answer
from kdlib.maths.pseudolabel import shaped_reward
from kdlib.maths.reward_model import rm_cls_loss, rm_loss, rm_pairwise_accuracy
from kdlib.maths.stats import bootstrap_ci
from kdlib.modeling.models import HEAD_ATTR, attach_head, decode, forward_with_hidden
from kdlib.trainers.base import Evaluator, MicroLoss, batch_src, batch_tgt
from kdlib.trainers.ppo import Batch, Method, Scored
from kdlib.trainers.tasks import Task

Triplet = tuple[int, str, str, str]  # (train index of the question, T+, S+, S-): the order of Eqs. (4)-(5)


# ----------------------------------------------------------------------------- scores
def last_positions(mask: Tensor) -> Tensor:
    """Index of each row's last True position (B, T) -> (B,) long (0 for an empty row)."""
    T = mask.shape[1]
    pos = torch.arange(T, device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), pos, 0).amax(dim=1)


def decoder_hidden(model, arch: str, src: Tensor, src_m: Tensor, tgt: Tensor, tgt_m: Tensor) -> Tensor:
    """Last hidden states (B, T, D) at the target positions (position t has seen the source and
    ``tgt[:, :t]``, as in :func:`kdlib.modeling.models.forward_with_hidden`). A decoder-only model runs its
    base model only: a (B, T, V) logits tensor of a 128k vocabulary would dwarf everything else."""
    m = getattr(model, "module", model)
    base = getattr(m, "base_model", m)
    if arch == "causal" and base is not m:
        S = src.shape[1]
        ids = torch.cat([src, tgt], dim=1)
        attn = torch.cat([src_m, tgt_m], dim=1).long()
        pos = (attn.cumsum(1) - 1).clamp(min=0)
        h = base(input_ids=ids, attention_mask=attn, position_ids=pos).last_hidden_state  # (B, S+T, D)
        return h[:, S - 1: S - 1 + tgt.shape[1]]
    return forward_with_hidden(model, arch, src, src_m, tgt, tgt_m)[1]


def rm_scores(model, arch: str, src: Tensor, src_m: Tensor, tgt: Tensor, tgt_m: Tensor) -> Tensor:
    """R(q, a): the attached head's scalar at each answer's last valid position (the EOS position;
    for T5 the decoder state there has read the whole answer). src (B, S), tgt (B, T) -> (B,) logits."""
    head = getattr(getattr(model, "module", model), HEAD_ATTR)
    hidden = decoder_hidden(model, arch, src, src_m, tgt, tgt_m)  # (B, T, D)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return head(hidden[rows, last_positions(tgt_m)].unsqueeze(1)).squeeze(1)  # (B,)


def score_texts(model, task: Task, idx: Sequence[int], texts: Sequence[str], device, split: str = "train") -> Tensor:
    """R(q_i, a_i) of answer texts given train questions ``idx`` (student prompt, answers encoded as
    training targets: ending with EOS). (B,)"""
    src, src_m = batch_src(task, split, list(idx), "student", device)  # (B, S)
    tgt, tgt_m = batch_tgt(task, list(texts), device)  # (B, T)
    return rm_scores(model, task.arch, src, src_m, tgt, tgt_m)


def triplet_scores(model, task: Task, rows: Sequence[Triplet], device) -> Tensor:
    """Scores (B, 3) of triplets in the order (T+, S+, S-)."""
    idx = [r[0] for r in rows for _ in range(3)]
    texts = [t for r in rows for t in r[1:4]]
    return score_texts(model, task, idx, texts, device).view(-1, 3)


# ----------------------------------------------------------------------------- training
def rm_micro_loss(task: Task, triplets: Sequence[Triplet], device, lam: float = 0.5, loss: str = "rm") -> MicroLoss:
    """The loss of one micro-batch of triplets (``idx`` indexes ``triplets``): Eq. (6) with ``lam``
    (``loss="rm"``) or Eq. (4) alone (``loss="cls"``: the teacher-only RM of Table 4)."""
    if loss not in ("rm", "cls"):
        raise ValueError(f"loss must be 'rm' or 'cls', got {loss!r}")

    def micro_loss(model, idx: list[int], step: int, micro: int):
        s = triplet_scores(model, task, [triplets[i] for i in idx], device)  # (B, 3)
        L = rm_loss(s, lam) if loss == "rm" else rm_cls_loss(s)
        acc = rm_pairwise_accuracy(s.detach())
        return L, {"pos_neg": acc["pos_neg"], "pos_pos": acc["pos_pos"], "score_mean": float(s.detach().mean())}

    return micro_loss


@torch.no_grad()
def all_triplet_scores(model, task: Task, rows: Sequence[Triplet], device, batch_size: int = 64) -> Tensor:
    """Scores (M, 3) of every triplet, in batches, the model in eval mode (restored after)."""
    was = model.training
    model.eval()
    out = [triplet_scores(model, task, rows[i: i + batch_size], device).float() for i in range(0, len(rows), batch_size)]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, 3)


def rm_evaluator(task: Task, sets: dict[str, Sequence[Triplet]], device, lam: float = 0.5, loss: str = "rm",
                 batch_size: int = 64) -> Evaluator:
    """Model selection on ``sets["dev"]`` (RM-val) by ``pos_neg``; ``test`` scores ``sets["test"]``
    (RM-test: Table 3). Metrics: pos_neg, pos_pos (Table 3's pairwise accuracies, %; a tie counts as
    wrong), pos_pos_distinct (Pos/Pos over the triplets whose teacher and student answers differ as
    texts: on the generated tasks a correct student answer is often the teacher's, character for
    character, and no model can rank a text above itself) with identical_pos (their share, %), the
    loss, the mean score of each role, the number of triplets; CIs: bootstrap over test triplets."""

    def score(model, split: str) -> dict:
        rows = sets[split]
        if not rows:
            return {"pos_neg": float("nan"), "pos_pos": float("nan"), "pos_pos_distinct": float("nan"),
                    "identical_pos": float("nan"), "loss": float("nan"), "n": 0}
        s = all_triplet_scores(model, task, rows, device, batch_size)  # (M, 3)
        acc = rm_pairwise_accuracy(s)
        L = rm_loss(s, lam) if loss == "rm" else rm_cls_loss(s)
        distinct = torch.tensor([r[1] != r[2] for r in rows])  # T+ and S+ differ as texts
        pp_distinct = rm_pairwise_accuracy(s[distinct])["pos_pos"] if bool(distinct.any()) else float("nan")
        return {"pos_neg": 100 * acc["pos_neg"], "pos_pos": 100 * acc["pos_pos"], "pos_pos_distinct": 100 * pp_distinct,
                "identical_pos": 100 * float((~distinct).float().mean()), "loss": float(L), "n": len(rows),
                "score_teacher_pos": float(s[:, 0].mean()), "score_student_pos": float(s[:, 1].mean()),
                "score_student_neg": float(s[:, 2].mean())}

    def cis(model) -> dict:
        rows = sets["test"]
        if len(rows) < 2:
            return {}
        s = all_triplet_scores(model, task, rows, device, batch_size).numpy()
        distinct = np.array([r[1] != r[2] for r in rows])
        out = {}
        for name, hits in (("pos_neg", s[:, 1] > s[:, 2]), ("pos_pos", s[:, 0] > s[:, 1]),
                           ("pos_pos_distinct", (s[:, 0] > s[:, 1])[distinct])):
            lo, hi = bootstrap_ci(100.0 * hits.astype(float))
            out[name] = {"low": float(lo), "high": float(hi), "method": "percentile bootstrap over test triplets"}
        return out

    return Evaluator(primary="pos_neg", score=score, cis=cis)


# ----------------------------------------------------------------------------- PPO with the RM
def value_model_from_rm(policy, rm_init) -> None:
    """Attach to ``policy`` a critic with its own network initialised from the reward model
    (backbone and head; spec A7.13): ``rm_init`` (a trainable copy, head attached) becomes the
    critic's backbone, its head weights the critic head's. V(s_t) is then read at every position."""
    rm_head = getattr(rm_init, HEAD_ATTR)
    backbone = rm_init
    delattr(backbone, HEAD_ATTR)  # the backbone is a plain language model; the policy owns the head
    head = attach_head(policy, backbone)
    head.linear.load_state_dict(copy.deepcopy(rm_head.linear.state_dict()))
    for q in head.parameters():
        q.requires_grad_(True)


def rd_ppo_scorer(rm, task: Task, pp: PPOParams, y_star: dict[int, str | None], mode: str = "min0",
                  no_answer_reward: float = -5.0, truth: dict[int, str | None] | None = None,
                  answer_fn: Callable[[str], str | None] = gsm8k_answer) -> Callable[[Batch], Scored]:
    """Seed 003's reward (Eq. (7)) as a kdlib.trainers.ppo scorer.

    For N rollouts of train questions ``b.idx``: texts decoded, answers extracted (``answer_fn``);
    ``r = R(q, a)`` from the frozen reward model ``rm`` (answers re-encoded as in RM training);
    ``R~ = shaped_reward(has_answer, answer == y*, y* exists, r, mode)``; per-token rewards
    ``-kl_coef (log pi_old - log pi_ref) + 1[last action] R~`` (k1, TRL's default); GAE (gamma,
    lam) over the action positions with the critic's V_old; value targets A + V_old.
    ``truth`` (train index -> true answer, optional) only feeds the logs (true accuracy of the
    samples: the reward-hacking watch). Logs: rm_score (mean r over answered rows), reward (mean
    R~), answer_rate, agree_ystar (share of rows with a y* that match it), true_accuracy, kl."""

    def score(b: Batch) -> Scored:
        dev = b.tokens.device
        texts = decode(task.tok, b.tokens, b.mask)  # N strings
        answers = [answer_fn(t) for t in texts]
        ys = [y_star.get(i) for i in b.idx]
        has_answer = torch.tensor([a is not None for a in answers], device=dev)  # (N,)
        has_ystar = torch.tensor([y is not None for y in ys], device=dev)
        correct = torch.tensor([a is not None and y is not None and a == y for a, y in zip(answers, ys)], device=dev)
        tgt, tgt_m = batch_tgt(task, texts, dev)  # (N, T') as the RM was trained
        r = rm_scores(rm, task.arch, b.src, b.src_m, tgt, tgt_m).float()  # (N,)
        R = shaped_reward(has_answer, correct, has_ystar, r, mode=mode, no_answer_reward=no_answer_reward)  # (N,)
        logp_ref = b.logp_ref if b.logp_ref is not None else b.logp_old
        rewards = returns.kl_penalised_rewards(R, b.logp_old, logp_ref, b.action_mask, pp.kl_coef)  # (N, T)
        adv, ret = returns.gae(rewards, b.values_old, b.action_mask, pp.gamma, pp.lam)  # (N, T) each
        n_act = b.action_mask.sum().clamp(min=1)
        logs = {"reward": float(R.mean()), "answer_rate": float(has_answer.float().mean()),
                "rm_score": float(r[has_answer].mean()) if bool(has_answer.any()) else float("nan"),
                "agree_ystar": float(correct[has_ystar].float().mean()) if bool(has_ystar.any()) else float("nan"),
                "kl": float(((b.logp_old - logp_ref) * b.action_mask).sum() / n_act),
                "value_mean": float((b.values_old * b.action_mask).sum() / n_act)}
        if truth is not None:
            logs["true_accuracy"] = float(np.mean([a is not None and a == truth.get(i) for a, i in zip(answers, b.idx)]))
        return Scored(advantages=adv, value_targets=ret, logs=logs)

    return score


def rd_ppo_method(rm, task: Task, pp: PPOParams, y_star: dict[int, str | None], mode: str = "min0",
                  no_answer_reward: float = -5.0, truth: dict[int, str | None] | None = None) -> Method:
    """Seed 003's PPO: the Eq. (7) scorer with a critic (GAE)."""
    return Method(scorer=rd_ppo_scorer(rm, task, pp, y_star, mode, no_answer_reward, truth), critic=True)
