"""kdlib.maths.pseudolabel: voting, SFT set (Eq. 1), failed questions (Eq. 3), D_R triplets, Eq. (7).

Seed 003 Sec. 3; spec seeds003_004 A1 steps 2-8, A2, A7, C2.
"""

import math

import pytest
import torch

from kdlib.maths.pseudolabel import (
    GREEDY_COUNT,
    build_rm_triplets,
    build_sft_set,
    build_teacher_triplets,
    expand_counts,
    high_confidence_pool,
    label_quality,
    label_responses,
    select_failed,
    shaped_reward,
    split_questions,
    vote,
)


# ----------------------------------------------------------------------------------------
# voting
# ----------------------------------------------------------------------------------------
def test_vote_threshold_is_strict_over_all_high_confidence_answers():
    assert vote(["42"] * 15 + ["41"] * 5) == "42"  # 0.75 > 0.7
    assert vote(["42"] * 14 + ["41"] * 6) is None  # 0.70 is not > 0.7: D_fail
    # unextractable answers count in the denominator: 14 of 19 extracted agree (0.737), but 14/20 = 0.7
    assert vote(["42"] * 14 + ["41"] * 5 + [None]) is None
    assert vote(["42"] * 15 + [None] * 5) == "42"
    assert vote([None] * 20) is None and vote([]) is None


def test_vote_ties_and_low_thresholds():
    assert vote(["1", "1", "2", "2"], threshold=0.3) is None  # a tie has no majority
    assert vote(["1", "1", "2"], threshold=0.3) == "1"
    with pytest.raises(ValueError):
        vote(["1"], threshold=1.0)


def test_greedy_answer_counts_five_times():
    assert GREEDY_COUNT == 5
    assert expand_counts([("7", 2), (None, 1), ("8", 0)]) == ["7", "7", None]
    pool = high_confidence_pool("42", ["42"] * 10 + ["40"] * 5)
    assert len(pool) == 20 and pool.count("42") == 15
    assert vote(pool) == "42"  # 15/20 only because the greedy answer counts 5 times
    assert vote(["42"] + ["42"] * 10 + ["40"] * 5) is None  # counted once: 11/16 = 0.69
    with pytest.raises(ValueError):
        expand_counts([("1", -1)])


def test_label_responses():
    assert label_responses(["3", None, "4", "3"], "3") == [1, 0, 0, 1]
    with pytest.raises(ValueError):
        label_responses(["3"], None)


# ----------------------------------------------------------------------------------------
# Eq. (1), Eq. (3)
# ----------------------------------------------------------------------------------------
def test_build_sft_set_keeps_agreeing_answers_of_labelled_questions():
    questions = ["q0", "q1", "q2"]
    responses = [["a", "b", "a", "c"], ["d", "e"], ["f"]]
    answers = [["1", "2", "1", None], ["5", "5"], ["9"]]
    y_stars = ["1", None, "9"]
    assert build_sft_set(questions, responses, answers, y_stars) == [("q0", "a"), ("q0", "a"), ("q2", "f")]
    assert build_sft_set(questions, responses, answers, y_stars, dedupe=True) == [("q0", "a"), ("q2", "f")]
    with pytest.raises(ValueError):
        build_sft_set(questions, responses, answers, y_stars[:2])


def test_select_failed_eq3():
    student_answers = [["1", "1"], ["1", "2"], ["3", None], ["4"], ["5", "6"]]
    y_stars = ["1", "1", "3", None, "5"]
    # q0: all right; q1: one wrong; q2: an unextractable answer counts as wrong; q3: D_fail; q4: one wrong
    assert select_failed(student_answers, y_stars) == [1, 2, 4]


# ----------------------------------------------------------------------------------------
# D_R
# ----------------------------------------------------------------------------------------
def _rm_inputs():
    questions = ["q0", "q1", "q2", "q3"]
    s_resp = [
        [f"s0_{i}" for i in range(6)],
        [f"s1_{i}" for i in range(4)],
        [f"s2_{i}" for i in range(3)],
        [f"s3_{i}" for i in range(3)],
    ]
    s_ans = [
        ["7", "7", "7", "1", "2", None],  # |S+| = 3, |S-| = 3
        ["1", "2", "3", "4"],  # never right: |S+| = 0 -> no triplet
        ["5", "5", "5"],  # never wrong: not in D_S
        ["8", "0", "0"],  # |S+| = 1, |S-| = 2
    ]
    t_resp = [[f"t0_{i}" for i in range(5)], ["t1_0"], ["t2_0"], [f"t3_{i}" for i in range(4)]]
    t_ans = [["7", "7", "7", "7", "9"], ["9"], ["5"], ["8", "8", "8", None]]
    y_stars = ["7", "9", "5", "8"]
    return questions, s_resp, s_ans, t_resp, t_ans, y_stars


def test_build_rm_triplets_equal_numbers_and_labels():
    args = _rm_inputs()
    trip = build_rm_triplets(*args, m_max=4, seed=0)
    by_q = {}
    for tr in trip:
        by_q.setdefault(tr.qid, []).append(tr)
    assert sorted(by_q) == [0, 3]
    assert len(by_q[0]) == 3  # min(|S+| = 3, |S-| = 3, |T+| = 4, m_max = 4)
    assert len(by_q[3]) == 1  # min(1, 2, 3, 4)
    q, s_resp, s_ans, t_resp, t_ans, y = args
    for tr in trip:
        i = tr.qid
        assert tr.question == q[i] and tr.y_star == y[i]
        assert t_ans[i][t_resp[i].index(tr.teacher_pos)] == y[i]
        assert s_ans[i][s_resp[i].index(tr.student_pos)] == y[i]
        neg = s_ans[i][s_resp[i].index(tr.student_neg)]
        assert neg != y[i] and tr.y_neg == neg
    # without replacement: no response twice within a question
    for rows in by_q.values():
        for field in ("teacher_pos", "student_pos", "student_neg"):
            assert len({getattr(r, field) for r in rows}) == len(rows)
    # m_max caps the number per question
    assert len([t for t in build_rm_triplets(*args, m_max=2) if t.qid == 0]) == 2


def test_build_rm_triplets_is_seeded_and_per_question():
    args = _rm_inputs()
    assert build_rm_triplets(*args, seed=3) == build_rm_triplets(*args, seed=3)
    seeds = {tuple(build_rm_triplets(*args, seed=s)) for s in range(20)}
    assert len(seeds) > 1  # different seeds draw differently
    # a question's draw does not depend on the other questions
    q, s_resp, s_ans, t_resp, t_ans, y = args
    only0 = build_rm_triplets(q[:1], s_resp[:1], s_ans[:1], t_resp[:1], t_ans[:1], y[:1], seed=5)
    assert only0 == [t for t in build_rm_triplets(*args, seed=5) if t.qid == 0]


def test_build_rm_triplets_teacher_ratio_recycles_the_shorter_draw():
    args = _rm_inputs()
    more = [t for t in build_rm_triplets(*args, teacher_ratio=4 / 3) if t.qid == 0]
    # m_q = 3, n_T = round(4) = 4 (= |T+|): 4 triplets, every teacher positive used once, one S+/S- recycled
    assert len(more) == 4 and len({t.teacher_pos for t in more}) == 4
    assert more[3].student_pos == more[0].student_pos and more[3].student_neg == more[0].student_neg
    fewer = [t for t in build_rm_triplets(*args, teacher_ratio=0.5) if t.qid == 0]
    # n_T = round(1.5) = 2 (half up): 3 triplets, T+ recycled cyclically, each S+ once
    assert len(fewer) == 3 and len({t.teacher_pos for t in fewer}) == 2
    assert fewer[2].teacher_pos == fewer[0].teacher_pos and len({t.student_pos for t in fewer}) == 3
    tiny = [t for t in build_rm_triplets(*args, teacher_ratio=0.01) if t.qid == 0]
    assert len({t.teacher_pos for t in tiny}) == 1  # at least one teacher positive
    with pytest.raises(ValueError):
        build_rm_triplets(*args, teacher_ratio=0.0)
    with pytest.raises(ValueError):
        build_rm_triplets(*args, m_max=0)


def test_split_questions():
    train, val = split_questions(20, 0.1, seed=0)
    assert len(val) == 2 and len(train) == 18 and sorted(train + val) == list(range(20))
    assert split_questions(20, 0.1, seed=0) == (train, val)
    assert split_questions(3, 0.1)[1] != []  # at least one val question
    assert split_questions(5, 0.0) == ([0, 1, 2, 3, 4], [])


# ----------------------------------------------------------------------------------------
# Eq. (7): the table of spec C2
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "has_answer, correct, has_ystar, r, mode, expected",
    [
        (False, False, True, 3.0, "min0", -5.0),  # no answer -> -5
        (False, False, True, math.nan, "min0", -5.0),  # ... the RM is not queried (r may be NaN)
        (True, False, True, 2.0, "min0", 0.0),  # wrong, r = 2 -> 0
        (True, False, True, -1.0, "min0", -1.0),  # wrong, r = -1 -> -1
        (True, True, True, 2.0, "min0", 2.0),  # right -> r
        (True, True, True, -0.5, "min0", -0.5),
        (True, False, False, 2.0, "min0", 2.0),  # D_fail (no y*) -> r
        (True, False, True, 2.0, "minus1", 1.0),  # "Minus": r - 1
        (True, False, True, -1.0, "minus1", -2.0),
        (True, True, True, 2.0, "minus1", 2.0),
        (False, True, True, 2.0, "minus1", -5.0),
    ],
)
def test_shaped_reward_eq7_table(has_answer, correct, has_ystar, r, mode, expected):
    out = shaped_reward([has_answer], [correct], [has_ystar], [r], mode=mode)
    assert out.tolist() == [expected]


def test_shaped_reward_vectorised():
    has_answer = torch.tensor([False, True, True, True, True])
    correct = torch.tensor([False, False, False, True, False])
    has_ystar = torch.tensor([True, True, True, True, False])
    r = torch.tensor([math.nan, 2.0, -1.0, 0.3, 4.0], dtype=torch.float64)
    out = shaped_reward(has_answer, correct, has_ystar, r)
    assert out.dtype == torch.float64
    assert out.tolist() == [-5.0, 0.0, -1.0, 0.3, 4.0]
    with pytest.raises(ValueError):
        shaped_reward(has_answer, correct, has_ystar, r, mode="minus")
    with pytest.raises(ValueError):
        shaped_reward(has_answer[:2], correct, has_ystar, r)


# ----------------------------------------------------------------------------------------
# Table 4's teacher-only RM data; Fig. 3-4's pseudo-label quality
# ----------------------------------------------------------------------------------------
def test_build_teacher_triplets_two_positives_per_negative():
    resp = [["p1", "p2", "p3", "p4", "p5", "n1"], ["a", "b"], ["x", "y", "z"]]
    ans = [["7", "7", "7", "7", "7", "8"], ["1", "1"], [None, "3", "3"]]
    out = build_teacher_triplets(["q0", "q1", "q2"], resp, ans, ["7", "1", None], m_max=4, seed=0)
    # q0: |T+| = 5, |T-| = 1 -> m = min(2, 1) = 1; q1: no negative; q2: D_fail (no y*)
    assert len(out) == 1
    t = out[0]
    assert t.qid == 0 and t.teacher_pos != t.student_pos and {t.teacher_pos, t.student_pos} <= set(resp[0][:5])
    assert t.student_neg == "n1" and t.y_star == "7" and t.y_neg == "8"
    many = build_teacher_triplets(["q"], [["p"] * 6 + ["n", "m", "o"]], [["7"] * 6 + ["1", None, "2"]], ["7"], m_max=2)
    assert len(many) == 2 and all(x.student_neg in ("n", "m", "o") for x in many)  # min(3, 3, m_max = 2)
    assert build_teacher_triplets(["q"], [["p"] * 6 + ["n"]], [["7"] * 6 + ["1"]], ["7"], seed=3) == \
        build_teacher_triplets(["q"], [["p"] * 6 + ["n"]], [["7"] * 6 + ["1"]], ["7"], seed=3)


def test_label_quality_counts_the_2x2_confusion_against_the_truth():
    answers = [["7", "7", "8", None], ["5", "5"], ["1", "2"]]
    y_stars = ["7", "6", None]  # q1's label is wrong (the truth is 5); q2 is in D_fail
    truths = ["7", "5", "1"]
    q = label_quality(answers, y_stars, truths)
    assert q["n_questions"] == 3 and q["n_fail"] == 1 and math.isclose(q["share_fail"], 1 / 3)
    assert q["label_accuracy"] == 0.5
    assert (q["labelled_correct_true"], q["labelled_correct_false"]) == (2, 0)
    # labelled incorrect: "8" and None (truly wrong) of q0; "5", "5" of q1 (truly right)
    assert (q["labelled_incorrect_true"], q["labelled_incorrect_false"]) == (2, 2)
    assert q["precision"] == 1.0
    empty = label_quality([[None]], [None], ["1"])
    assert empty["share_fail"] == 1.0 and math.isnan(empty["label_accuracy"]) and math.isnan(empty["precision"])
