"""kdlib.maths.metrics against values computed by hand (the arithmetic is in the comments)."""

import math

import pytest

from kdlib.maths.metrics import (
    HIGHER_IS_BETTER,
    PRIMARY_METRIC,
    distinct_n,
    gsm8k_accuracy,
    gsm8k_answer,
    rouge,
    sacrebleu_scores,
    task_metrics,
)

# ---------------------------------------------------------------------------------------------
# ROUGE
# ---------------------------------------------------------------------------------------------


def test_rouge_prediction_shorter_than_reference():
    r = rouge(["the cat sat"], ["the cat sat down"])
    # ROUGE-1: 3 matching unigrams; P = 3/3 = 1, R = 3/4.
    #   F = 2PR/(P+R) = 2 * 1 * 0.75 / 1.75 = 6/7 = 0.857142...
    assert r["rouge1"] == pytest.approx(100 * 6 / 7)
    # ROUGE-2: prediction bigrams {the cat, cat sat} both in the reference
    #   {the cat, cat sat, sat down}; P = 2/2, R = 2/3, F = 2 * (2/3) / (5/3) = 0.8
    assert r["rouge2"] == pytest.approx(80.0)
    # ROUGE-L: LCS = "the cat sat" = 3, so P = 1, R = 3/4, same as ROUGE-1.
    assert r["rougeL"] == pytest.approx(100 * 6 / 7)


def test_rouge_l_sees_order_rouge_1_does_not():
    r = rouge(["the cat sat"], ["the sat cat"])
    # Same bag of words: ROUGE-1 P = R = 3/3 -> 100.
    assert r["rouge1"] == pytest.approx(100.0)
    # Bigrams {the cat, cat sat} vs {the sat, sat cat}: no match -> 0.
    assert r["rouge2"] == pytest.approx(0.0)
    # LCS = 2 ("the cat" or "the sat"): P = R = 2/3 -> F = 2/3.
    assert r["rougeL"] == pytest.approx(100 * 2 / 3)


def test_rouge_stemming_and_case():
    # Porter stemmer: "running" -> "run"; the tokenizer lowercases and drops punctuation.
    assert rouge(["running"], ["run"])["rouge1"] == pytest.approx(100.0)
    assert rouge(["The Cats!"], ["the cat"])["rouge1"] == pytest.approx(100.0)


def test_rouge_is_mean_over_examples():
    # Example 1 identical (F = 1), example 2 disjoint (F = 0): mean = 0.5 -> 50.
    r = rouge(["a b c", "x y z"], ["a b c", "p q r"])
    assert r == pytest.approx({"rouge1": 50.0, "rouge2": 50.0, "rougeL": 50.0})


def test_rouge_empty_prediction_scores_zero():
    assert rouge([""], ["the cat"]) == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})


# ---------------------------------------------------------------------------------------------
# BLEU / chrF / TER
# ---------------------------------------------------------------------------------------------


def test_identical_translation():
    s = sacrebleu_scores(["de kat zat op de mat"], ["de kat zat op de mat"])
    assert s["bleu"] == pytest.approx(100.0)
    assert s["chrf"] == pytest.approx(100.0)
    assert s["ter"] == pytest.approx(0.0)


def test_bleu_brevity_penalty():
    s = sacrebleu_scores(["the cat sat on the mat"], ["the cat sat on the mat today"])
    # Every n-gram of the hypothesis matches: p1 = 6/6, p2 = 5/5, p3 = 4/4, p4 = 3/3.
    # Hypothesis 6 tokens < reference 7: BP = exp(1 - 7/6) = exp(-1/6) = 0.846482...
    assert s["bleu"] == pytest.approx(100 * math.exp(-1 / 6))  # 84.648...


def test_bleu_geometric_mean_of_precisions():
    s = sacrebleu_scores(["the cat sat on a mat"], ["the cat sat on the mat"])
    # Hypothesis tokens: the cat sat on a mat (6); reference: the cat sat on the mat (6).
    # p1: the cat sat on mat match, "a" does not           -> 5/6
    # p2: the-cat cat-sat sat-on match; on-a a-mat do not   -> 3/5
    # p3: the-cat-sat cat-sat-on match; 2 others do not     -> 2/4
    # p4: the-cat-sat-on matches; 2 others do not           -> 1/3
    # Equal lengths: BP = 1. BLEU = (5/6 * 3/5 * 1/2 * 1/3)^(1/4) = (1/12)^(1/4) = 0.537284...
    assert s["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)


def test_bleu_exp_smoothing_with_brevity_penalty():
    s = sacrebleu_scores(["the cat sat down"], ["the cat sat on the mat"])
    # p1 = 3/4 (down misses), p2 = 2/3, p3 = 1/2, p4 = 0/1.
    # sacrebleu's default 'exp' smoothing (mteval NIST): the k-th zero-count order gets
    # 1 / (2^k * total), here the first zero -> p4 = 1 / (2 * 1) = 1/2.
    # BP = exp(1 - 6/4) = exp(-0.5).
    # BLEU = exp(-0.5) * (3/4 * 2/3 * 1/2 * 1/2)^(1/4) = exp(-0.5) * (1/8)^(1/4) = 0.360645...
    assert s["bleu"] == pytest.approx(100 * math.exp(-0.5) * (1 / 8) ** 0.25)


def test_bleu_is_corpus_level_not_mean_of_sentences():
    # Corpus BLEU pools n-gram counts over all sentences before taking precisions.
    s = sacrebleu_scores(["a b c d e f", "x y"], ["a b c d e f", "p q"])
    # p1 = (6 + 0) / (6 + 2) = 6/8; p2 = (5 + 0) / (5 + 1) = 5/6;
    # p3 = 4/4 and p4 = 3/3 (the 2-word pair has no 3- or 4-grams); lengths 8 vs 8 -> BP = 1.
    # BLEU = (6/8 * 5/6)^(1/4) = (5/8)^(1/4) = 0.889..., not the sentence mean (100 + 0) / 2.
    assert s["bleu"] == pytest.approx(100 * (5 / 8) ** 0.25)


def test_ter_one_substitution():
    s = sacrebleu_scores(["the cat sat up"], ["the cat sat down"])
    # One substitution / 4 reference words = 25 %.
    assert s["ter"] == pytest.approx(25.0)


def test_ter_is_case_insensitive_by_default_bleu_is_not():
    # sacrebleu's TER lowercases by default (case_sensitive=False); BLEU and chrF do not.
    s = sacrebleu_scores(["The cat sat down"], ["the cat sat down"])
    assert s["ter"] == pytest.approx(0.0)
    assert s["bleu"] < 100.0
    assert s["chrf"] < 100.0


# ---------------------------------------------------------------------------------------------
# GSM8K
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She sold 1,000 + 234 = <<1000+234=1234>>1234 clips.\n#### 1,234", "1234"),
        ("#### $5.", "5"),  # dollar sign and trailing period removed
        ("no marker here, answer 5", None),
        ("#### abc", None),
        ("#### -3", "-3"),
        ("#### 72.0", "72"),
        ("#### 2.50", "2.5"),
        ("####72", "72"),
        ("#### $-7", "-7"),
        ("#### -$1,000.5", "-1000.5"),
        ("#### .5", "0.5"),
        ("#### 100.", "100"),
        ("#### 1 #### 2", "2"),  # the last marker wins
        ("#### 18\n\nQuestion: next one has 7", "18"),  # trailing generation is ignored
        ("####", None),
        ("#### abc 5", None),  # the number must come first after the marker
    ],
)
def test_gsm8k_answer(text, expected):
    assert gsm8k_answer(text) == expected


def test_gsm8k_accuracy():
    predictions = [
        "... #### 72",  # correct
        "... #### 72.0",  # correct: numerically equal
        "... #### 10",  # wrong
        "... no final answer",  # None -> wrong
    ]
    references = ["#### 72", "#### 72", "#### 12", "#### 5"]
    # 2 correct out of 4 -> 50 %.
    assert gsm8k_accuracy(predictions, references) == pytest.approx(50.0)


def test_gsm8k_accuracy_tolerance():
    # |0.3333333 - 0.333333| = 3e-7 <= 1e-6: correct; |0.334 - 0.333333| > 1e-6: wrong.
    assert gsm8k_accuracy(["#### 0.3333333"], ["#### 0.333333"]) == pytest.approx(100.0)
    assert gsm8k_accuracy(["#### 0.334"], ["#### 0.333333"]) == pytest.approx(0.0)


def test_gsm8k_accuracy_rejects_reference_without_answer():
    with pytest.raises(ValueError, match=r"references\[0\]"):
        gsm8k_accuracy(["#### 1"], ["no answer"])


# ---------------------------------------------------------------------------------------------
# distinct-n
# ---------------------------------------------------------------------------------------------


def test_distinct_n():
    texts = ["a b a b", "a b c"]
    # Unigrams: a b a b a b c = 7, distinct {a, b, c} = 3 -> 300/7.
    assert distinct_n(texts, 1) == pytest.approx(300 / 7)
    # Bigrams (not across texts): ab ba ab | ab bc = 5, distinct {ab, ba, bc} = 3 -> 60.
    assert distinct_n(texts, 2) == pytest.approx(60.0)
    assert distinct_n([], 2) == 0.0
    assert distinct_n(["a"], 2) == 0.0  # no bigram at all
    with pytest.raises(ValueError):
        distinct_n(texts, 0)


# ---------------------------------------------------------------------------------------------
# task_metrics and the tables
# ---------------------------------------------------------------------------------------------


def test_task_metrics_keys_and_values():
    summ = task_metrics("summarization", ["the cat sat"], ["the cat sat down"])
    assert set(summ) == {"rouge1", "rouge2", "rougeL", "distinct2"}
    assert summ["rouge1"] == pytest.approx(100 * 6 / 7)
    assert summ["distinct2"] == pytest.approx(100.0)  # 2 bigrams, both distinct

    trans = task_metrics("translation", ["the cat sat up"], ["the cat sat down"])
    assert set(trans) == {"bleu", "chrf", "ter", "distinct2"}
    assert trans["ter"] == pytest.approx(25.0)

    arith = task_metrics("arithmetic", ["#### 3", "#### 4"], ["#### 3", "#### 5"])
    assert set(arith) == {"accuracy", "distinct2"}
    assert arith["accuracy"] == pytest.approx(50.0)


def test_task_metrics_errors():
    with pytest.raises(ValueError, match="poetry"):
        task_metrics("poetry", ["a"], ["a"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        task_metrics("translation", ["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        task_metrics("summarization", [], [])


def test_primary_metric_and_direction():
    assert PRIMARY_METRIC == {"summarization": "rougeL", "translation": "bleu", "arithmetic": "accuracy"}
    assert HIGHER_IS_BETTER["ter"] is False
    for primary in PRIMARY_METRIC.values():
        assert HIGHER_IS_BETTER[primary] is True
    # Every metric task_metrics can return has a direction.
    for kind in PRIMARY_METRIC:
        refs = ["#### 1"] if kind == "arithmetic" else ["a b c"]
        assert set(task_metrics(kind, refs, refs)) <= set(HIGHER_IS_BETTER)


# ---------------------------------------------------------------------------------------------
# MATH: the content of the last \boxed{...}
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, answer", [
    (r"so $x = \boxed{5}$.", "5"),
    (r"first \boxed{1}, then the answer \boxed{ 2 }", "2"),  # the last box, stripped
    (r"$\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),  # nested braces
    (r"$\boxed{\left( 3, \frac{\pi}{2} \right)}$", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"$\boxed{\{1, 2\}}$", r"\{1, 2\}"),  # escaped braces do not close the box
    (r"the answer is $\fbox{7}$", "7"),
    (r"$\boxed 9$", "9"),  # brace-less form, up to "$"
    (r"\boxed{x^{2}} and \boxed{a}{b}", "a"),
])
def test_math_answer(text, answer):
    from kdlib.maths.metrics import math_answer

    assert math_answer(text) == answer


@pytest.mark.parametrize("text", ["no box here", r"\boxed{\frac{1}{2}", r"\boxedx{3}", "#### 5", ""])
def test_math_answer_none(text):
    from kdlib.maths.metrics import math_answer

    assert math_answer(text) is None


JUNK = ["#### nan", "#### NaN", "#### inf", "#### -Infinity", "#### 1e999999", "\\boxed{nan}", "\\boxed{inf}",
        "\\boxed{-Infinity}", "\\boxed{1e400}", "#### " + "9" * 5000, "\\boxed{" + "9" * 5000 + "}", "\x00#### 5",
        "####", "\\boxed{", "", "#### 5e3", "\\boxed{\\frac{1}{0}}", "#### 1,2,3,4", "\\boxed{1e-999999}"]


@pytest.mark.parametrize("text", JUNK)
def test_every_answer_parser_survives_junk_nan_infinity_and_huge_numbers(text):
    """A paper-profile model can sample anything: no parser may raise on what it writes."""
    from kdlib.maths.constrained_metrics import (
        answers_match,
        final_answer,
        task_rewards,
    )
    from kdlib.maths.metrics import gsm8k_accuracy, gsm8k_answer, math_answer

    for parse in (gsm8k_answer, math_answer, final_answer):
        out = parse(text)
        assert out is None or isinstance(out, str)
    for gold in ("5", "nan", "inf", "9" * 5000):
        assert answers_match(final_answer(text), gold) in (True, False)
    assert gsm8k_accuracy([text], ["#### 5"]) in (0.0, 100.0)
    assert task_rewards([text], ["#### 5"])[0] in (0.0, 1.0)


def test_huge_and_special_answers_compare_as_numbers_or_not_at_all():
    from kdlib.maths.constrained_metrics import answers_match
    from kdlib.maths.metrics import gsm8k_answer

    assert gsm8k_answer("#### " + "9" * 5000) == "9" * 5000  # no int-conversion digit limit
    assert gsm8k_answer("#### -0.00") == "0" and gsm8k_answer("#### 72.0") == "72"
    assert not answers_match("nan", "5")  # NaN is not a number an answer can equal; the text rule applies
    assert answers_match("1e400", "1" + "0" * 400) and not answers_match("inf", "5")


def test_translation_bootstrap_matches_sacrebleu_and_survives_zero_resamples():
    """The BLEU/chrF/TER intervals are sacrebleu's own (same resamples, same bounds) on ordinary data, and a corpus
    of nearly empty outputs (a zero-shot student's) gets an interval instead of sacrebleu's TypeError."""
    import os

    from sacrebleu.metrics import BLEU

    from kdlib.maths.metrics import bootstrap_cis

    refs = [f"de raad keurt het verslag {i} goed" for i in range(40)]
    preds = [r if i % 3 else "het verslag" for i, r in enumerate(refs)]
    out = bootstrap_cis("translation", preds, refs, n_bootstrap=200, seed=12345)
    os.environ["SACREBLEU_SEED"] = "12345"
    try:
        sc = BLEU().corpus_score(preds, [refs], n_bootstrap=200)
    finally:
        os.environ.pop("SACREBLEU_SEED")
    assert out["bleu"]["low"] == pytest.approx(sc._mean - sc._ci)
    assert out["bleu"]["high"] == pytest.approx(sc._mean + sc._ci)
    # outputs nearly all empty (an untrained student's): resamples of only empty lines score chrF 0.0 (a float), the
    # others a float32, and sacrebleu's own interval raises TypeError on the mix
    cis = bootstrap_cis("translation", ["de"] + [""] * 39, refs, n_bootstrap=1000)
    assert 0.0 <= cis["chrf"]["high"] < 5.0 and cis["chrf"]["low"] <= cis["chrf"]["high"]
