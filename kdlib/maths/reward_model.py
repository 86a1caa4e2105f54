"""Reward-model losses and accuracy on triplets (seed 003 Sec. 3.3, Eqs. (5)-(6)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


# ----------------------------------------------------------------------------------------
# reward model of seed 003 (Sec. 3.3, Eqs. (4)-(6)); scores (B, 3) in the order (T+, S+, S-)
# ----------------------------------------------------------------------------------------
def _check_triplet_scores(scores: Tensor) -> Tensor:
    if scores.dim() != 2 or scores.shape[1] != 3:
        raise ValueError(f"scores must be (B, 3) in the order (T+, S+, S-), got {tuple(scores.shape)}")
    return scores


def rm_cls_loss(scores: Tensor) -> Tensor:
    """Seed 003 Eq. (4): ``L_cls = -mean [z log sigma(s) + (1 - z) log(1 - sigma(s))]``, z = [1, 1, 0].

    Binary cross-entropy with logits over all 3B scores of a triplet batch (teacher-positive,
    student-positive: correct; student-negative: wrong), mean reduction. ``scores`` are the
    reward model's raw logits. Args: scores (B, 3). Returns: scalar.
    """
    s = _check_triplet_scores(scores)
    z = torch.tensor([1.0, 1.0, 0.0], dtype=s.dtype, device=s.device).expand_as(s)
    return F.binary_cross_entropy_with_logits(s, z, reduction="mean")


def rm_pref_loss(scores: Tensor) -> Tensor:
    """Seed 003 Eq. (5): ``L_pref = -mean log sigma(s_T - s_S+) - mean log sigma(s_S+ - s_S-)``.

    Two Bradley-Terry terms: teacher-positive over student-positive, student-positive over
    student-negative. Args: scores (B, 3) in the order (T+, S+, S-). Returns: scalar.
    """
    s = _check_triplet_scores(scores)
    s_T, s_Sp, s_Sm = s.unbind(dim=1)
    return -F.logsigmoid(s_T - s_Sp).mean() - F.logsigmoid(s_Sp - s_Sm).mean()


def rm_loss(scores: Tensor, lam: float = 0.5) -> Tensor:
    """Seed 003 Eq. (6): ``L = L_pref + lam * L_cls`` (lam = 0.5, Sec. 4.1).

    All-zero scores give ``2 log 2 + lam log 2`` (2.5 log 2 at lam = 0.5). Args: scores (B, 3)
    in the order (T+, S+, S-). Returns: scalar.
    """
    return rm_pref_loss(scores) + lam * rm_cls_loss(scores)


@torch.no_grad()
def rm_pairwise_accuracy(scores: Tensor) -> dict:
    """Seed 003 Table 3 [choice: the metric implied by the column names]: pairwise ranking accuracy.

    ``pos_neg = mean 1[s_S+ > s_S-]``, ``pos_pos = mean 1[s_T > s_S+]`` (ties count as
    wrong). Args: scores (B, 3) in the order (T+, S+, S-). Returns: dict of floats.
    """
    s = _check_triplet_scores(scores).float()
    return {
        "pos_neg": float((s[:, 1] > s[:, 2]).float().mean()) if len(s) else float("nan"),
        "pos_pos": float((s[:, 0] > s[:, 1]).float().mean()) if len(s) else float("nan"),
    }
