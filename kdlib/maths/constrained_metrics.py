"""Seed 004's evaluation maths, pure (text and numpy in, numbers out; imports only kdlib.maths.metrics).

"Rethinking LLM distillation: a constrained MDP perspective", Sec. 4.1 and spec
``seeds003_004_rival_systems.md`` B4-B7:

* :func:`task_rewards` -- Eq. (6): R = 1 if the final answer is correct, else 0 (the ``\\boxed{}``
  answer when there is one, else the GSM8K ``#### N`` answer; numbers compared within 1e-6);
* :func:`constraint_satisfaction` -- CS: % of samples whose per-sample KL is <= d;
* :func:`choose_budget` -- d by the paper's procedure (B6): the ``q`` quantile (0.95) of the
  KL-only methods' per-sample KL on dev, so that they reach ~95% CS;
* :func:`step_overlap_score` -- the embedded profile's SURROGATE reasoning judge (B6): the share
  of a solution's calculator steps ``<<expr=value>>`` whose values appear in the gold chain,
  penalised for extra and for unused gold steps;
* :func:`win_matrix`, :func:`reasoning_win_loss` -- W[i, j] = P(i's reasoning judged better than
  j's), RWR_i = mean_j W[i, j], RLR_i = mean_j W[j, i] over the other methods; ties count for
  neither (Fig. 4 caption);
* :func:`pareto_front` -- the non-dominated set in (FAC up, CS up) (Fig. 3);
* :func:`radar_scale` -- Fig. 2's axes: per-axis min-max scaling across methods, lower-is-better
  axes (RLR, KL) inverted [choice B5].
"""

from __future__ import annotations

import math
import re
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Mapping, Sequence

import numpy as np

from kdlib.maths.metrics import gsm8k_answer, math_answer

__all__ = [
    "final_answer",
    "answers_match",
    "task_rewards",
    "constraint_satisfaction",
    "choose_budget",
    "calc_step_values",
    "step_overlap_score",
    "pairwise_outcomes",
    "win_matrix",
    "reasoning_win_loss",
    "pareto_front",
    "radar_scale",
]

TOLERANCE = Decimal("1e-6")
_STEP = re.compile(r"<<([^<>]*?)=([^<>=]*)>>")


def final_answer(text: str) -> str | None:
    """The final answer of a solution: the last ``\\boxed{...}`` (the paper's format, Eq. 6), else
    the number after the last ``####`` (GSM8K's and the embedded tasks' format), else None."""
    boxed = math_answer(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    return gsm8k_answer(text)


def _number(s: str) -> Decimal | None:
    """A finite number, or None (text, NaN and infinities are not numbers an answer can equal)."""
    t = s.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def answers_match(pred: str | None, gold: str | None) -> bool:
    """Numbers equal within 1e-6 when both parse as numbers, else equal text up to whitespace."""
    if pred is None or gold is None:
        return False
    a, b = _number(pred), _number(gold)
    if a is not None and b is not None:
        return abs(a - b) <= TOLERANCE
    return "".join(pred.split()) == "".join(gold.split())


def task_rewards(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Eq. (6): ``R = 1.0`` if the prediction's final answer equals the reference's, else 0.0.

    A reference without a readable final answer is a data error (ValueError naming its index)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    out = []
    for i, (p, r) in enumerate(zip(predictions, references)):
        gold = final_answer(r)
        if gold is None:
            raise ValueError(f"references[{i}] has no final answer (\\boxed{{}} or '#### N'): {r[-80:]!r}")
        out.append(1.0 if answers_match(final_answer(p), gold) else 0.0)
    return out


def constraint_satisfaction(kl: Sequence[float], d: float) -> float:
    """CS (%): share of samples with per-sample KL <= d (Sec. 4.1). NaN for no samples."""
    x = np.asarray(kl, dtype=float)
    return float(100.0 * np.mean(x <= d)) if x.size else math.nan


def choose_budget(kl: Sequence[float], q: float = 0.95, digits: int = 3) -> float:
    """The budget d of the paper's procedure (spec B6 [choice]): the ``q`` quantile of the
    KL-only methods' per-sample KL on dev (so they reach ~``100 q``% CS), rounded to ``digits``
    significant digits (a stable run key). ValueError on no or non-finite values."""
    x = np.asarray(kl, dtype=float)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("choose_budget needs finite per-sample KL values")
    if not 0.0 < q < 1.0:
        raise ValueError(f"q must be in (0, 1), got {q}")
    v = float(np.quantile(x, q))
    if v <= 0:
        return v
    return float(f"{v:.{digits}g}")


def calc_step_values(text: str) -> list[str]:
    """Values of a solution's calculator steps ``<<expr=value>>``, as normalised numbers
    (``"24.0"`` -> ``"24"``) where they parse, else the stripped text."""
    out = []
    for _, value in _STEP.findall(text):
        n = _number(value)
        out.append(_fmt(n) if n is not None and n.is_finite() else value.strip())
    return out


def _fmt(n: Decimal) -> str:
    if n == n.to_integral_value():
        return str(int(n))
    return format(n.normalize(), "f")


def step_overlap_score(output: str, gold: str) -> float:
    """Surrogate reasoning score (spec B6), in [0, 1]: ``matched / max(#steps, #gold steps)``.

    ``matched`` counts the solution's calculator-step values that appear in the gold chain
    (multiset, clipped counts). Dividing by the larger count penalises both extra steps and
    gold steps left unused; 1 iff the two chains have the same step values. A solution without
    steps scores 0; a gold solution without steps gives 0 (nothing to compare). NOT an LLM:
    every table it feeds says "surrogate judge"."""
    s, g = Counter(calc_step_values(output)), Counter(calc_step_values(gold))
    n_s, n_g = sum(s.values()), sum(g.values())
    if n_s == 0 or n_g == 0:
        return 0.0
    matched = sum(min(c, g[v]) for v, c in s.items())
    return matched / max(n_s, n_g)


def pairwise_outcomes(score_a: Sequence[float], score_b: Sequence[float], tol: float = 1e-12) -> np.ndarray:
    """Per example +1 (a strictly better), -1 (b strictly better), 0 (tie), from two score lists."""
    a, b = np.asarray(score_a, dtype=float), np.asarray(score_b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"score lists differ in length: {a.shape} vs {b.shape}")
    return np.where(a > b + tol, 1, np.where(b > a + tol, -1, 0))


def win_matrix(methods: Sequence[str], outcomes: Mapping[tuple[str, str], Sequence[int]]) -> np.ndarray:
    """W[i, j] = share of examples where method i's reasoning was judged better than j's (%).

    ``outcomes[(a, b)]``: per example +1 (a better), -1 (b better), 0 (tie); one entry per
    unordered pair is enough (the other direction is its negation). Ties count for neither
    side, so ``W[i, j] + W[j, i] <= 100``. The diagonal is NaN."""
    k = len(methods)
    W = np.full((k, k), np.nan)
    for i, a in enumerate(methods):
        for j, b in enumerate(methods):
            if i == j:
                continue
            if (a, b) in outcomes:
                o = np.asarray(outcomes[(a, b)])
            elif (b, a) in outcomes:
                o = -np.asarray(outcomes[(b, a)])
            else:
                raise KeyError(f"no judged outcomes for the pair ({a!r}, {b!r})")
            W[i, j] = 100.0 * float(np.mean(o > 0)) if o.size else math.nan
    return W


def reasoning_win_loss(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RWR_i = mean_j W[i, j] (row mean), RLR_i = mean_j W[j, i] (column mean), over j != i
    (Fig. 4 caption; the diagonal is ignored). Returns (RWR, RLR), each (k,) in %."""
    W = np.asarray(W, dtype=float)
    off = ~np.eye(W.shape[0], dtype=bool)
    rwr = np.array([np.nanmean(W[i][off[i]]) if off[i].any() else math.nan for i in range(W.shape[0])])
    rlr = np.array([np.nanmean(W[:, j][off[:, j]]) if off[:, j].any() else math.nan for j in range(W.shape[0])])
    return rwr, rlr


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Bool mask of the non-dominated points when maximising both x and y (Fig. 3: FAC, CS).

    A point is dominated when another is >= on both and > on at least one; equal points are
    both kept. NaN points are never on the front."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    out = np.zeros(x.shape, dtype=bool)
    for i in range(x.size):
        if not ok[i]:
            continue
        dominated = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        out[i] = not dominated.any()
    return out


def radar_scale(values: Mapping[str, Sequence[float]], lower_is_better: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Fig. 2's axes [choice B5]: each axis min-max scaled across methods to [0, 1], then
    ``1 - x`` on the axes where lower is better (RLR, KL), so outward is always better. An axis
    whose methods all agree maps to 1."""
    out = {}
    for axis, v in values.items():
        a = np.asarray(v, dtype=float)
        lo, hi = np.nanmin(a), np.nanmax(a)
        s = np.ones_like(a) if not hi > lo else (a - lo) / (hi - lo)
        out[axis] = 1.0 - s if axis in lower_is_better and hi > lo else s
    return out
