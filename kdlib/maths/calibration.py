"""The testbed's calibration statistics (``python -m kdlib calibrate``): how spread a teacher is and how far
its pre-distilled student is from it, per token, from logits.

- ``token_entropy_sum(logits, mask)``: ``sum_{b,t: mask} H_t``, ``H_t = -sum_v p_t(v) log p_t(v)``,
  ``p_t = softmax(logits[b, t])``; logits (B, T, V), mask (B, T). Returns (sum in nats, tokens).
- ``token_kl_sum(p_logits, q_logits, mask)``: ``sum_{b,t: mask} KL(p_t || q_t)``,
  ``KL = sum_v p_t(v) (log p_t(v) - log q_t(v))``; both (B, T, V) over one vocabulary.
- ``per_token(total, count)``: the mean per token (NaN when count is 0).
- ``check_targets(record, targets)``: which calibration targets one task's record meets.

Summed, not averaged, so that batches of different lengths add up to the exact mean per token.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check(logits: Tensor, mask: Tensor) -> None:
    if logits.dim() != 3 or logits.shape[:2] != mask.shape:
        raise ValueError(f"expected logits (B, T, V) and mask (B, T), got {tuple(logits.shape)}, {tuple(mask.shape)}")


def token_entropy_sum(logits: Tensor, mask: Tensor) -> tuple[float, int]:
    """(sum over masked positions of the entropy of softmax(logits), number of positions); nats."""
    _check(logits, mask)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    h = -(logp.exp() * logp).sum(-1)  # (B, T); p log p = 0 where p = 0 (exp(-inf) * -inf is NaN)
    h = torch.where(torch.isnan(h), torch.zeros_like(h), h)
    m = mask.bool()
    return float(h[m].sum()), int(m.sum())


def token_kl_sum(p_logits: Tensor, q_logits: Tensor, mask: Tensor) -> tuple[float, int]:
    """(sum over masked positions of KL(softmax(p_logits) || softmax(q_logits)), positions); nats."""
    _check(p_logits, mask)
    _check(q_logits, mask)
    if p_logits.shape[-1] != q_logits.shape[-1]:
        raise ValueError(f"the two models' vocabularies differ: {p_logits.shape[-1]} vs {q_logits.shape[-1]}")
    logp = torch.log_softmax(p_logits.float(), dim=-1)
    logq = torch.log_softmax(q_logits.float(), dim=-1)
    p = logp.exp()
    kl = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)  # (B, T)
    m = mask.bool()
    return float(kl[m].sum()), int(m.sum())


def per_token(total: float, count: int) -> float:
    return total / count if count else math.nan


def check_targets(record: dict, targets: dict) -> dict[str, bool | None]:
    """Which targets a task's calibration record meets (None: the value is unknown).

    ``targets``: ``teacher_entropy_samples`` (a minimum, nats per token), ``ref_length`` (a minimum,
    tokens), ``predistill_ratio`` ((low, high): predistill_metric / teacher_metric), and
    ``best_student_not_above_teacher`` (True to check best_student_metric <= teacher_metric).
    """
    out: dict[str, bool | None] = {}
    if "teacher_entropy_samples" in targets:
        out["teacher_entropy_samples"] = record["teacher_entropy_samples"] >= targets["teacher_entropy_samples"]
    if "ref_length" in targets:
        out["ref_length"] = record["ref_length"] >= targets["ref_length"]
    if "predistill_ratio" in targets:
        lo, hi = targets["predistill_ratio"]
        t, s = record["teacher_metric"], record["predistill_metric"]
        out["predistill_ratio"] = (lo <= s / t <= hi) if t else None
    if targets.get("best_student_not_above_teacher"):
        b = record.get("best_student_metric")
        out["best_student_not_above_teacher"] = None if b is None else b <= record["teacher_metric"]
    return out
