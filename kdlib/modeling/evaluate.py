"""Evaluation (floor 2): greedy decoding scored with the task's metrics and, when a teacher is
given, with the true return of Eq. (10) (seed 000) read off the teacher's logits."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from kdlib.maths import metrics, returns
from kdlib.modeling.generation import Rollout, generate
from kdlib.modeling.models import decode, forward_logits, pad, token_logprobs


@torch.no_grad()
def teacher_scores(teacher, arch: str, t_src: Tensor, t_src_mask: Tensor, tokens: Tensor, mask: Tensor,
                   normalize: str = "mean", encoder_hidden: Tensor | None = None,
                   value: str = "max") -> tuple[Tensor, Tensor, Tensor]:
    """One teacher forward pass over the student's sequence, reduced to ``(B, T)`` at once.

    Returns ``q_sa``, ``v`` (Sec. 2: teacher logits as Q-values) and the teacher's log-probability
    of the student's tokens (for the student-teacher KL estimate). The ``(B, T, V)`` logits are
    freed before returning. ``encoder_hidden``: the teacher's encoder states of ``t_src`` if the
    caller has them (a frozen teacher's are cached across steps). ``value``: ``max`` or ``soft``
    (:func:`kdlib.maths.returns.teacher_q`).
    """
    logits = forward_logits(teacher, arch, t_src, t_src_mask, tokens, mask, encoder_hidden)  # (B, T, V)
    q_sa, v = returns.teacher_q(logits, tokens, mask, normalize=normalize, value=value)  # (B, T) each
    t_logp = token_logprobs(logits, tokens)  # (B, T)
    del logits
    return q_sa, v, t_logp * mask


def sequence_return(q_sa: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """True return of the whole sequence, Eq. (10) at t = 0: ``G_0 = sum_t r_t``. Shape (B,)."""
    return returns.full_returns(q_sa, v, mask)[:, 0]


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield list(range(i, min(n, i + size)))


@torch.no_grad()
def evaluate(model, tok, *, arch: str, src: Sequence[Sequence[int]], references: Sequence[str], kind: str,
             max_new_tokens: int, batch_size: int = 64, use_calculator: bool = False, teacher=None,
             teacher_src: Sequence[Sequence[int]] | None = None, normalize: str = "mean",
             device="cpu", teacher_cache=None, sources: Sequence[str] | None = None,
             truth=None) -> tuple[dict, list[str]]:
    """Greedy decoding (the paper's evaluation) of ``src`` (token ids with the student prompt),
    scored against ``references``. Returns (metrics, predictions). Metrics hold the task's metrics
    (ROUGE / BLEU-chrF-TER / accuracy, plus distinct-2), the mean output length, the share of
    outputs that ended with EOS, and with a teacher the mean true return of Eq. (10).
    ``teacher_cache``: a :class:`kdlib.modeling.models.EncoderCache` of the teacher over ``teacher_src``.
    ``truth`` (generated tasks: a :class:`kdlib.data.TaskTruth`) with the raw ``sources``: also
    ``validity``, the % of outputs that are valid targets of their source (absent otherwise)."""
    preds: list[str] = []
    lengths, ended, rets = [], [], []
    left = arch == "causal"
    for idx in _batches(len(src), batch_size):
        ids, m = pad([src[i] for i in idx], tok.pad_token_id, left=left, device=device)
        roll: Rollout = generate(model, tok, ids, m, arch=arch, max_new_tokens=max_new_tokens, do_sample=False,
                                 use_calculator=use_calculator)
        preds += decode(tok, roll.tokens, roll.mask)
        lengths += roll.mask.sum(1).tolist()
        ended += roll.ended.tolist()
        if teacher is not None:
            t_ids, t_m = pad([teacher_src[i] for i in idx], tok.pad_token_id, left=left, device=device)
            t_enc = None
            if teacher_cache is not None:
                t_enc, t_m = teacher_cache.get(idx)
            q_sa, v, _ = teacher_scores(teacher, arch, t_ids, t_m, roll.tokens, roll.mask, normalize, t_enc)
            rets += sequence_return(q_sa, v, roll.mask).tolist()
    out = metrics.task_metrics(kind, preds, list(references))
    out["length"] = float(sum(lengths) / max(1, len(lengths)))
    out["eos_rate"] = float(sum(ended) / max(1, len(ended)))
    if teacher is not None:
        out["return"] = float(sum(rets) / max(1, len(rets)))
    if truth is not None and sources is not None:
        out["validity"] = validity_of(truth, sources, preds)
    return out, preds


def validity_of(truth, sources: Sequence[str], preds: Sequence[str]) -> float:
    """% of ``preds`` that are valid targets of their source (``truth``: a :class:`kdlib.data.TaskTruth`)."""
    return metrics.validity([truth.is_valid(s, y) for s, y in zip(sources, preds, strict=True)])
