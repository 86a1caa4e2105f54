"""Pseudo-labels, data sets and the shaped reward of seed 003 (Zhang et al. 2025, Sec. 3).

"Distill Not Only Data but Also Rewards": the teacher's high-confidence answers vote a
pseudo-label ``y*`` per question (Sec. 3.1); teacher answers that agree with it form the SFT
set (Eq. (1)); questions the warmed-up student still gets wrong (Eq. (3)) give reward-model
triplets (D_R, Sec. 3.3); PPO then optimises a shaped reward-model score (Eq. (7)).
Spec: ``specs/seeds003_004_rival_systems.md`` Part A (A1 steps 2-8, A2, A7).

Floor 0: pure functions of already-extracted answers. Answer extraction is the caller's
(``kdlib.maths.metrics.gsm8k_answer`` in the kit, which returns a normalised string or None), so two
answers agree iff their strings are equal; ``None`` (no extractable answer) never agrees with
anything. Nothing else of the kit is imported.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "GREEDY_COUNT",
    "expand_counts",
    "high_confidence_pool",
    "vote",
    "label_responses",
    "build_sft_set",
    "select_failed",
    "RMTriplet",
    "build_rm_triplets",
    "build_teacher_triplets",
    "split_questions",
    "label_quality",
    "SHAPING_MODES",
    "shaped_reward",
]

Answer = Hashable | None  # an extracted final answer (a normalised string), None if unextractable

GREEDY_COUNT = 5  # 5 samples at temperature 0 are 5 copies of the greedy answer (spec A1 step 1)
SHAPING_MODES = ("min0", "minus1")


# ----------------------------------------------------------------------------------------
# Step 2: voting (Sec. 3.1)
# ----------------------------------------------------------------------------------------
def expand_counts(pairs: Iterable[tuple[Answer, int]]) -> list[Answer]:
    """``[(answer, count), ...]`` -> the flat list with each answer repeated ``count`` times.

    For an answer that stands for several identical samples, e.g. the one greedy decode that
    stands for the 5 samples at temperature 0 (spec A7.2): ``expand_counts([(a0, 5)])``.
    """
    out: list[Answer] = []
    for answer, count in pairs:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"counts must be ints >= 0, got {count!r}")
        out.extend([answer] * count)
    return out


def high_confidence_pool(greedy_answer: Answer, sampled_answers: Sequence[Answer],
                         greedy_count: int = GREEDY_COUNT) -> list[Answer]:
    """The high-confidence answers H(q) of one question (Sec. 4.1; spec A1 step 1, A7.1-2).

    Temperatures {0, 0.1, 0.2, 0.3} x 5 samples: the greedy (temperature-0) answer is decoded
    once and counted ``greedy_count`` = 5 times [choice: identical under greedy decoding];
    ``sampled_answers`` are the 15 answers at temperatures 0.1-0.3. Returns a list of 20.
    """
    return expand_counts([(greedy_answer, greedy_count)]) + list(sampled_answers)


def vote(answers: Sequence[Answer], threshold: float = 0.7) -> Answer:
    """Pseudo-final-answer voting (seed 003 Sec. 3.1; spec A1 step 2): ``y*(q)`` or None.

    ``answers`` are the extracted answers of ALL high-confidence responses of one question
    (None where nothing could be extracted; the caller expands the greedy answer, see
    :func:`high_confidence_pool`). The most frequent extracted answer is ``y*`` if its share
    ``count / len(answers)`` EXCEEDS ``threshold`` (sh = 0.7):

    * [choice A7.3] the denominator is all responses, so unextractable ones count against
      agreement;
    * [choice A7.4] strict ``>`` ("exceeding"): 15/20 passes, 14/20 (exactly 0.7) fails.

    None means the question goes to D_fail ("teacher fails"): no answer passes, no answers at
    all, or (possible only with ``threshold < 0.5``) a tie for the top answer.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = counts.most_common(2)
    if len(top) == 2 and top[0][1] == top[1][1]:
        return None  # a tie has no majority answer
    y_top, c = top[0]
    return y_top if c / len(answers) > threshold else None


def label_responses(answers: Sequence[Answer], y_star: Answer) -> list[int]:
    """``label(a) = 1 if extract(a) == y*(q) else 0`` for every response of one question (Sec. 3.1).

    Applied to the teacher's high- AND low-confidence responses, and to the student's samples
    (Sec. 3.3). An unextractable answer (None) is labelled 0. ``y_star`` must not be None:
    a D_fail question has no labels (ValueError).
    """
    if y_star is None:
        raise ValueError("a question without a pseudo-label (D_fail) has no labels")
    return [int(a is not None and a == y_star) for a in answers]


def _check_parallel(**seqs: Sequence) -> int:
    lengths = {name: len(s) for name, s in seqs.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"expected one entry per question in each argument, got lengths {lengths}")
    return next(iter(lengths.values()))


# ----------------------------------------------------------------------------------------
# Step 3: SFT data (Eq. (1)); Step 4: questions the student fails (Eq. (3))
# ----------------------------------------------------------------------------------------
def build_sft_set(
    questions: Sequence[str],
    responses: Sequence[Sequence[str]],
    answers: Sequence[Sequence[Answer]],
    y_stars: Sequence[Answer],
    dedupe: bool = False,
) -> list[tuple[str, str]]:
    """Seed 003 Eq. (1): ``D_sft = {(q, a) | extract(a) = y*(q)}``, over H(q) and Lo(q), q not in D_fail.

    Args:
        questions: the Q questions.
        responses: per question, the teacher's responses (high- and low-confidence).
        answers: per question, the extracted answer of each response (same lengths).
        y_stars: per question, the voted pseudo-label or None (D_fail: left out).
        dedupe: [choice A7.6] keep duplicates by default ("compile all teacher-generated
            responses"); True keeps the first copy of each (q, a) pair.

    Returns: ``[(question, response), ...]`` in input order.
    """
    _check_parallel(questions=questions, responses=responses, answers=answers, y_stars=y_stars)
    out: list[tuple[str, str]] = []
    seen: set = set()
    for q, resp, ans, y_star in zip(questions, responses, answers, y_stars):
        if y_star is None:
            continue
        _check_parallel(responses=resp, answers=ans)
        for a, lab in zip(resp, label_responses(ans, y_star)):
            if lab and not (dedupe and (q, a) in seen):
                seen.add((q, a))
                out.append((q, a))
    return out


def select_failed(student_answers: Sequence[Sequence[Answer]], y_stars: Sequence[Answer]) -> list[int]:
    """Seed 003 Eq. (3): indices of ``D_S = {q | q not in D_fail, exists a in a^S: extract(a) != y*}``.

    ``student_answers[i]`` are the extracted answers of the warmed-up student's samples of
    question i (30 at temperature 0.7 in the paper). [choice] an unextractable answer (None)
    counts as ``!= y*``. Returns the question indices, ascending.
    """
    _check_parallel(student_answers=student_answers, y_stars=y_stars)
    return [
        i for i, (ans, y_star) in enumerate(zip(student_answers, y_stars))
        if y_star is not None and any(a is None or a != y_star for a in ans)
    ]


# ----------------------------------------------------------------------------------------
# Step 5: reward-model triplets D_R (Sec. 3.3)
# ----------------------------------------------------------------------------------------
class RMTriplet(NamedTuple):
    """One element of D_R, in the order the reward-model losses expect (T+, S+, S-)."""

    qid: int  # index of the question in the inputs
    question: str
    teacher_pos: str  # a^{T+}: a teacher response whose answer is y*
    student_pos: str  # a^{S+}: a student response whose answer is y*
    student_neg: str  # a^{S-}: a student response whose answer is not y* (or none)
    y_star: Answer  # y^{S+} = y^{T+} = y*
    y_neg: Answer  # y^{S-} != y* (None if unextractable)


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def build_rm_triplets(
    questions: Sequence[str],
    student_responses: Sequence[Sequence[str]],
    student_answers: Sequence[Sequence[Answer]],
    teacher_responses: Sequence[Sequence[str]],
    teacher_answers: Sequence[Sequence[Answer]],
    y_stars: Sequence[Answer],
    m_max: int = 4,
    teacher_ratio: float = 1.0,
    seed: int = 0,
) -> list[RMTriplet]:
    """Seed 003's reward-model data D_R (Sec. 3.3, unnumbered definition; spec A1 step 5, A7.7-8).

    For each question of D_S (:func:`select_failed`), with S+ / S- the student responses whose
    answer is / is not y* and T+ the teacher responses whose answer is y*:

    * [choice] ``m_q = min(|S+|, |S-|, |T+|, m_max)`` ("uniformly sample an equal number");
      ``m_q = 0`` (e.g. the student is never right) gives no triplet;
    * ``m_q`` S+ and ``m_q`` S- are drawn uniformly without replacement, and
      ``n_T = max(1, round(teacher_ratio * m_q))`` T+ (rounded half up, at most |T+|);
      ``teacher_ratio`` is Fig. 6's teacher:student ratio (1 = the paper's equal numbers);
    * [choice] triplets zip the three draws; with ``n_T != m_q`` there are ``max(m_q, n_T)``
      triplets and the shorter draw is recycled cyclically (row k uses T+[k mod n_T],
      S+[k mod m_q], S-[k mod m_q]), so every drawn T+ enters L_cls and every S+ is paired
      with a T+ in L_pref; recycled responses simply appear in several triplets.

    Sampling is seeded per question (``random.Random(f"{seed}:{qid}")``), so a question's
    draw does not depend on the other questions.

    Args: per question (parallel sequences): the question, the student's responses and their
    extracted answers, the teacher's responses (H and Lo) and their extracted answers, y* or
    None. ``m_max`` >= 1 (spec: 4 at paper scale, 2 embedded); ``teacher_ratio`` > 0.

    Returns: the triplets, grouped by question in input order.
    """
    _check_parallel(questions=questions, student_responses=student_responses, student_answers=student_answers,
                    teacher_responses=teacher_responses, teacher_answers=teacher_answers, y_stars=y_stars)
    if isinstance(m_max, bool) or not isinstance(m_max, int) or m_max < 1:
        raise ValueError(f"m_max must be an int >= 1, got {m_max!r}")
    if not teacher_ratio > 0:
        raise ValueError(f"teacher_ratio must be > 0, got {teacher_ratio}")
    out: list[RMTriplet] = []
    for qid in select_failed(student_answers, y_stars):
        y_star = y_stars[qid]
        s_resp, s_ans = student_responses[qid], student_answers[qid]
        t_resp, t_ans = teacher_responses[qid], teacher_answers[qid]
        _check_parallel(student_responses=s_resp, student_answers=s_ans)
        _check_parallel(teacher_responses=t_resp, teacher_answers=t_ans)
        s_lab, t_lab = label_responses(s_ans, y_star), label_responses(t_ans, y_star)
        pos = [i for i, lab in enumerate(s_lab) if lab]
        neg = [i for i, lab in enumerate(s_lab) if not lab]
        tpos = [i for i, lab in enumerate(t_lab) if lab]
        m_q = min(len(pos), len(neg), len(tpos), m_max)
        if m_q == 0:
            continue
        n_T = min(max(1, _round_half_up(teacher_ratio * m_q)), len(tpos))
        rng = random.Random(f"{seed}:{qid}")
        pos_draw = rng.sample(pos, m_q)
        neg_draw = rng.sample(neg, m_q)
        t_draw = rng.sample(tpos, n_T)
        for k in range(max(m_q, n_T)):
            i_p, i_n, i_t = pos_draw[k % m_q], neg_draw[k % m_q], t_draw[k % n_T]
            out.append(RMTriplet(qid, questions[qid], t_resp[i_t], s_resp[i_p], s_resp[i_n], y_star, s_ans[i_n]))
    return out


def build_teacher_triplets(
    questions: Sequence[str],
    teacher_responses: Sequence[Sequence[str]],
    teacher_answers: Sequence[Sequence[Answer]],
    y_stars: Sequence[Answer],
    m_max: int = 4,
    seed: int = 0,
) -> list[RMTriplet]:
    """Table 4's reward-model data from TEACHER answers only (seed 003 Sec. 4.3, "RM trained on the
    teacher's responses with L_cls"): per labelled question, ``m_q = min(floor(|T+| / 2), |T-|, m_max)``
    items ``(T+, T+', T-)`` drawn without replacement (T+ / T- the teacher responses whose answer is /
    is not y*), in the field order of :class:`RMTriplet` (``teacher_pos``, ``student_pos`` = a second
    teacher positive, ``student_neg`` = a teacher negative), so Eq. (4)'s labels z = [1, 1, 0] apply
    unchanged: 2 positives per negative, as in the student triplets. Questions without a y* or
    without a teacher negative give nothing. Seeded per question like :func:`build_rm_triplets`.
    """
    _check_parallel(questions=questions, teacher_responses=teacher_responses, teacher_answers=teacher_answers,
                    y_stars=y_stars)
    if isinstance(m_max, bool) or not isinstance(m_max, int) or m_max < 1:
        raise ValueError(f"m_max must be an int >= 1, got {m_max!r}")
    out: list[RMTriplet] = []
    for qid, (q, resp, ans, y_star) in enumerate(zip(questions, teacher_responses, teacher_answers, y_stars)):
        if y_star is None:
            continue
        _check_parallel(teacher_responses=resp, teacher_answers=ans)
        lab = label_responses(ans, y_star)
        pos = [i for i, z in enumerate(lab) if z]
        neg = [i for i, z in enumerate(lab) if not z]
        m_q = min(len(pos) // 2, len(neg), m_max)
        if m_q == 0:
            continue
        rng = random.Random(f"teacher:{seed}:{qid}")
        pos_draw = rng.sample(pos, 2 * m_q)
        neg_draw = rng.sample(neg, m_q)
        for k in range(m_q):
            i_a, i_b, i_n = pos_draw[2 * k], pos_draw[2 * k + 1], neg_draw[k]
            out.append(RMTriplet(qid, q, resp[i_a], resp[i_b], resp[i_n], y_star, ans[i_n]))
    return out


def label_quality(answers: Sequence[Sequence[Answer]], y_stars: Sequence[Answer], truths: Sequence[Answer]) -> dict:
    """Pseudo-label quality against the ground truth (seed 003 Fig. 3-4), over Q questions.

    ``answers[i]``: the extracted answers of question i's teacher responses (each response once,
    the greedy one with its multiplicity); ``y_stars[i]``: the vote (None: D_fail); ``truths[i]``:
    the true answer. Returns counts and shares: ``n_questions``, ``n_fail``, ``share_fail``
    (|D_fail| / |D|, Fig. 3); ``label_accuracy`` (share of labelled questions whose y* is the true
    answer); and over the responses of labelled questions the 2 x 2 confusion of the pseudo-label
    (labelled correct = answer == y*) against the truth (answer == true answer), Fig. 4:
    ``labelled_correct_true``, ``labelled_correct_false``, ``labelled_incorrect_true``,
    ``labelled_incorrect_false`` (counts), and ``precision`` (truly correct among labelled correct).
    """
    _check_parallel(answers=answers, y_stars=y_stars, truths=truths)
    out = {"n_questions": len(y_stars), "n_fail": sum(y is None for y in y_stars)}
    labelled = [(a, y, t) for a, y, t in zip(answers, y_stars, truths) if y is not None]
    out["share_fail"] = out["n_fail"] / len(y_stars) if y_stars else float("nan")
    out["label_accuracy"] = (sum(y == t for _, y, t in labelled) / len(labelled)) if labelled else float("nan")
    c = {"labelled_correct_true": 0, "labelled_correct_false": 0, "labelled_incorrect_true": 0,
         "labelled_incorrect_false": 0}
    for ans, y, t in labelled:
        for a, lab in zip(ans, label_responses(ans, y)):
            true = a is not None and a == t
            c[f"labelled_{'correct' if lab else 'incorrect'}_{'true' if true else 'false'}"] += 1
    out.update(c)
    n_pos = c["labelled_correct_true"] + c["labelled_correct_false"]
    out["precision"] = c["labelled_correct_true"] / n_pos if n_pos else float("nan")
    return out


def split_questions(n_questions: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split question indices into train / val (D_R's 90/10 split by question, spec A1 step 5 [choice]).

    A seeded permutation; ``round(val_fraction * n)`` questions (at least 1 when n >= 2 and
    val_fraction > 0) go to val. Returns ``(train, val)``, each sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    idx = list(range(n_questions))
    random.Random(seed).shuffle(idx)
    n_val = _round_half_up(val_fraction * n_questions)
    if val_fraction > 0 and n_questions >= 2:
        n_val = max(n_val, 1)
    return sorted(idx[n_val:]), sorted(idx[:n_val])


# ----------------------------------------------------------------------------------------
# Step 8: the shaped reward (Eq. (7))
# ----------------------------------------------------------------------------------------
def shaped_reward(
    has_answer,
    correct,
    has_ystar,
    r,
    mode: str = "min0",
    no_answer_reward: float = -5.0,
) -> Tensor:
    """Seed 003 Eq. (7), vectorised over N responses::

        R~ = -5          if the response has no extractable answer (the RM is not queried)
           = min(r, 0)   if its answer != y*            (only where the question has a y*)
           = r           if its answer == y*, or if the question is in D_fail (no y*)

    ``mode="minus1"`` is Fig. 7's "Minus" ablation: ``r - 1`` instead of ``min(r, 0)``.
    ``r`` is the reward model's raw scalar (a logit, [choice A7.10]); it is never read where
    ``has_answer`` is False (it may hold NaN there), and ``correct`` is never read where
    ``has_ystar`` is False.

    Args: has_answer, correct, has_ystar: (N,) bool; r: (N,) float (tensors or sequences).
    Returns: (N,) float tensor (r's dtype, at least float32).
    """
    if mode not in SHAPING_MODES:
        raise ValueError(f"mode must be one of {SHAPING_MODES}, got {mode!r}")
    r = torch.as_tensor(r)
    r = r.to(torch.promote_types(r.dtype, torch.float32))
    has_answer = torch.as_tensor(has_answer, dtype=torch.bool, device=r.device)
    correct = torch.as_tensor(correct, dtype=torch.bool, device=r.device)
    has_ystar = torch.as_tensor(has_ystar, dtype=torch.bool, device=r.device)
    if not (has_answer.shape == correct.shape == has_ystar.shape == r.shape):
        raise ValueError(
            f"expected (N,) inputs of one shape, got {tuple(has_answer.shape)}, {tuple(correct.shape)}, "
            f"{tuple(has_ystar.shape)}, {tuple(r.shape)}"
        )
    wrong = has_ystar & ~correct
    penalised = r.clamp_max(0.0) if mode == "min0" else r - 1.0
    shaped = torch.where(wrong, penalised, r)
    return torch.where(has_answer, shaped, torch.full_like(r, no_answer_reward))
