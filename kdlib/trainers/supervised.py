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


def nll_ensemble_micro_loss(task: Task, targets: list[str], device):
    """:func:`nll_micro_loss` (student prompts) for a seed ensemble (kdlib.trainers.ensemble): member s's
    cross-entropy on its own micro-batch ``idxs[s]``, the students run batched. Returns the members' losses and logs."""

    def micro_loss(model, idxs: list[list[int]], step: int, micro: int):
        S, B = len(idxs), len(idxs[0])
        flat = [i for idx in idxs for i in idx]
        src, src_m = batch_src(task, "train", flat, "student", device)  # (S*B, L)
        tgt, tgt_m = batch_tgt(task, [targets[i] for i in flat], device)  # (S*B, T)
        L, T = src.shape[1], tgt.shape[1]
        hidden = model.forward_hidden(src.view(S, B, L), src_m.view(S, B, L), tgt.view(S, B, T))  # (S, B, T, D)
        losses, logs = [], []
        for s, logits in enumerate(model.member_logits(hidden)):  # (B, T, V) each
            r = slice(s * B, (s + 1) * B)
            losses.append(sequence_nll(logits, tgt[r], tgt_m[r]))
            logs.append({"tokens": float(tgt_m[r].sum())})
        return losses, logs

    return micro_loss
