"""Supervised family (floor 3): teacher fine-tuning on references, pre-distillation and SeqKD
(Kim & Rush 2016) on the teacher's outputs. The loss is token-level cross-entropy."""

from __future__ import annotations

from kdlib.maths.losses import sequence_nll
from kdlib.modeling.models import forward_logits
from kdlib.trainers.base import MicroLoss, batch_src, batch_tgt
from kdlib.trainers.tasks import Task


def nll_micro_loss(task: Task, targets: list[str], device, which_src: str = "student",
                   src_index: list[int] | None = None) -> MicroLoss:
    """Cross-entropy of ``targets[i]`` given the ``which_src`` prompt of train source i, or of
    train source ``src_index[i]`` when given (several targets per source: seed 003's D_sft)."""

    def micro_loss(model, idx: list[int], step: int, micro: int):
        src_idx = idx if src_index is None else [src_index[i] for i in idx]
        src, src_m = batch_src(task, "train", src_idx, which_src, device)  # (B, S)
        tgt, tgt_m = batch_tgt(task, [targets[i] for i in idx], device)  # (B, T)
        logits = forward_logits(model, task.arch, src, src_m, tgt, tgt_m)  # (B, T, V)
        return sequence_nll(logits, tgt, tgt_m), {"tokens": float(tgt_m.sum())}

    return micro_loss
