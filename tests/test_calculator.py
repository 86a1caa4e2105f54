"""kdlib.maths.calculator: hand-checked results, junk rejection, and the decoding helpers."""

import time

import pytest

from kdlib.maths.calculator import (
    MAX_EXPRESSION_CHARS,
    CalculatorError,
    evaluate,
    evaluate_strict,
    find_open_annotation,
    inserted_text,
)


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("48/2", "24"),  # integer result: no ".0"
        ("3*(2+5)", "21"),  # 3 * 7
        ("7/2", "3.5"),
        ("1/3", "0.333333"),  # 0.3333333... rounded at 6 places
        ("2/3", "0.666667"),  # 0.6666666... rounds up at the 6th place
        ("1,200*2", "2400"),  # thousands comma removed: 1200 * 2
        ("1,200,000/1,000", "1200"),
        ("2-5", "-3"),
        ("-4*-2", "8"),  # unary minus binds tighter than *
        ("-(2+3)", "-5"),
        ("+7", "7"),
        ("10-2*3", "4"),  # precedence: 10 - 6
        ("(10-2)*3", "24"),
        ("8/4/2", "1"),  # left associative: (8/4)/2, not 8/(4/2) = 4
        ("10-4-3", "3"),  # left associative: (10-4)-3
        ("0.1+0.2", "0.3"),  # exact arithmetic: no 0.30000000000000004
        ("2.50*2", "5"),  # decimals that give an integer print as one
        (".5*10", "5"),
        ("1.5*1.5", "2.25"),
        ("  12 * 3 ", "36"),  # surrounding and inner spaces are fine
        ("0.0000005*1", "0.000001"),  # 5e-7 rounds half away from zero at 6 places
        ("1/8000000", "0"),  # 1.25e-7 rounds to 0 ...
        ("-1/8000000", "0"),  # ... and a tiny negative is "0", not "-0"
        ("-7/2", "-3.5"),
    ],
)
def test_evaluate_hand_checked(expression, expected):
    assert evaluate(expression) == expected
    assert evaluate_strict(expression) == expected


@pytest.mark.parametrize(
    "junk",
    [
        "__import__('os')",  # names and calls
        "a+1",  # a name
        "x.real",  # attribute access
        "1/0",  # division by zero
        "1/(2-2)",  # division by zero after evaluation
        "",  # empty
        "   ",  # blank
        "2**1000000",  # no power operator at all
        "2**3",
        "10%3",  # no modulo / percent
        "7//2",  # no floor division
        "$5+1",  # currency is not part of an expression
        "1e5",  # no exponent notation
        "0x10",
        "1_000",
        "1,2",  # not a thousands separator -> a stray comma
        "(1,2)",  # tuples
        "[1]",
        "3+",  # incomplete
        "(3+4",  # unbalanced
        "3+4)",
        "2(3)",  # no implicit multiplication
        "1 2",
        "9" * 31,  # a literal with too many digits
        "99999999*99999999*99999999",  # ~1e24 > cap on absolute value
        "(" * 60 + "1" + ")" * 60,  # nesting deeper than the parser allows
        "1+" * 200 + "1",  # longer than MAX_EXPRESSION_CHARS
        "٣+1",  # Arabic-Indic digit: \d would accept it, the calculator does not
    ],
)
def test_junk_is_none_and_strict_raises(junk):
    assert evaluate(junk) is None
    assert inserted_text(junk) is None
    with pytest.raises(CalculatorError) as info:
        evaluate_strict(junk)
    assert str(info.value)  # a message saying why


def test_error_messages_say_why():
    with pytest.raises(CalculatorError, match="division by zero"):
        evaluate_strict("1/0")
    with pytest.raises(CalculatorError, match="empty"):
        evaluate_strict("")
    with pytest.raises(CalculatorError, match="unexpected character 'a'"):
        evaluate_strict("a+1")
    with pytest.raises(CalculatorError, match="at most"):
        evaluate_strict("1" * (MAX_EXPRESSION_CHARS + 1))
    # CalculatorError is a ValueError, so callers may catch either.
    with pytest.raises(ValueError):
        evaluate_strict("2**1000000")


def test_non_string_is_rejected():
    assert evaluate(None) is None
    with pytest.raises(CalculatorError, match="str"):
        evaluate_strict(12)


def test_hostile_inputs_are_fast():
    start = time.perf_counter()
    for junk in ["9" * 255, "9*" * 127 + "9", "(" * 255, "-" * 255 + "1", "1/" * 127 + "3"]:
        assert evaluate(junk) is None or isinstance(evaluate(junk), str)
    assert time.perf_counter() - start < 1.0


def test_find_open_annotation():
    assert find_open_annotation("He has <<3*4=") == "3*4"
    assert find_open_annotation("He has <<3*4=12>>") is None  # already closed
    assert find_open_annotation("He has <<3*4=12>> apples") is None
    assert find_open_annotation("He has <<3*4") is None  # "=" not written yet
    assert find_open_annotation("He has 3*4=") is None  # no annotation
    assert find_open_annotation("") is None
    # Only the last annotation counts; an earlier closed one does not matter.
    assert find_open_annotation("<<2+2=4>> then <<4*5=") == "4*5"
    # The model already wrote a result and another "=": nothing to insert.
    assert find_open_annotation("<<3*4=12=") is None
    # Empty expression.
    assert find_open_annotation("<<=") is None


def test_inserted_text():
    assert inserted_text("3*4") == "12>>"
    assert inserted_text("7/2") == "3.5>>"
    assert inserted_text("a+1") is None


def test_decoding_round_trip():
    """What calculator-aware decoding does after each token: find, evaluate, insert."""
    text = "Natalia sold 48/2 = <<48/2="
    expression = find_open_annotation(text)
    text += inserted_text(expression)
    assert text == "Natalia sold 48/2 = <<48/2=24>>"
    assert find_open_annotation(text) is None  # no second insertion
