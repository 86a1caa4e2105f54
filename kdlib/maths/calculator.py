"""Safe calculator for GSM8K-style ``<<expr=result>>`` annotations.

GSM8K solutions annotate every arithmetic step as ``<<48/2=24>>``. During calculator-aware
decoding the model writes ``<<48/2=`` and the decoder inserts the result and the closing
``>>`` (``24>>``), so the student never has to do the arithmetic itself. This module is that
calculator.

It is a small recursive-descent parser, not ``eval``: the only things it understands are
numbers (integers and decimals, optional thousands commas such as ``1,200``), ``+ - * /``,
unary minus/plus and parentheses. Everything else -- names, calls, ``**``, ``%``, ``$``,
exponents like ``1e5`` -- is junk. Arithmetic is exact (``fractions.Fraction``), so
``0.1+0.2`` gives ``0.3``, and the result is formatted the way GSM8K writes it: integers
without ``.0`` (``24``), otherwise a decimal rounded half away from zero to at most 6 places
with trailing zeros stripped (``2.5``, ``0.333333``).

Guards: the expression is at most ``MAX_EXPRESSION_CHARS`` long, parentheses/unary signs nest at
most ``MAX_DEPTH`` deep, a number literal has at most ``MAX_NUMBER_DIGITS`` digits and every
intermediate value is at most ``MAX_ABS_VALUE`` in absolute value.

Public API:
- ``evaluate(expression) -> str | None``: result string, or None for junk.
- ``evaluate_strict(expression) -> str``: same, but raises ``CalculatorError`` saying why.
- ``inserted_text(expression) -> str | None``: what decoding inserts (``result + ">>"``).
- ``find_open_annotation(text) -> str | None``: the expression when ``text`` ends in ``<<EXPR=``.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = [
    "CalculatorError",
    "MAX_ABS_VALUE",
    "MAX_DEPTH",
    "MAX_EXPRESSION_CHARS",
    "MAX_NUMBER_DIGITS",
    "evaluate",
    "evaluate_strict",
    "find_open_annotation",
    "inserted_text",
]

MAX_EXPRESSION_CHARS = 256  # GSM8K annotations are far shorter; this bounds work and memory
MAX_DEPTH = 50  # nesting of parentheses and unary signs
MAX_NUMBER_DIGITS = 30  # digits in one literal
MAX_ABS_VALUE = 10**15  # every intermediate and the final value
DECIMAL_PLACES = 6

OPEN, CLOSE, RESULT_END = "<<", ">>", "="

# A comma is a thousands separator only between a digit and exactly three digits:
# "1,200,000" -> "1200000", while "1,2" keeps its comma (and is then rejected).
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_OPERATORS = frozenset("+-*/()")


class CalculatorError(ValueError):
    """The expression is not something the calculator evaluates (the message says why)."""


def _tokenize(expression: str) -> list[str]:
    """Split into number literals and single-character operators; reject anything else."""
    tokens: list[str] = []
    i, n = 0, len(expression)
    while i < n:
        ch = expression[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _OPERATORS:
            tokens.append(ch)
            i += 1
            continue
        m = _NUMBER.match(expression, i)
        # `isascii` so that e.g. Arabic-Indic digits (which `\d` accepts) are not numbers here.
        if m is None or not m.group().isascii():
            raise CalculatorError(f"unexpected character {ch!r} at position {i} in {expression!r}")
        literal = m.group()
        if sum(c.isdigit() for c in literal) > MAX_NUMBER_DIGITS:
            raise CalculatorError(f"number {literal[:20]}... has more than {MAX_NUMBER_DIGITS} digits")
        tokens.append(literal)
        i = m.end()
    return tokens


class _Parser:
    """Recursive descent over the grammar

        expr  := term (("+" | "-") term)*
        term  := unary (("*" | "/") unary)*
        unary := ("-" | "+") unary | atom
        atom  := NUMBER | "(" expr ")"
    """

    def __init__(self, tokens: list[str], source: str):
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.source = source

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise CalculatorError(f"unexpected end of expression in {self.source!r}")
        self.pos += 1
        return token

    def parse(self) -> Fraction:
        value = self.expr()
        if self.peek() is not None:
            raise CalculatorError(f"unexpected {self.peek()!r} in {self.source!r}")
        return value

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = _checked(value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            rhs = self.unary()
            if op == "*":
                value = _checked(value * rhs)
            else:
                if rhs == 0:
                    raise CalculatorError(f"division by zero in {self.source!r}")
                value = _checked(value / rhs)
        return value

    def unary(self) -> Fraction:
        if self.peek() in ("-", "+"):
            op = self.take()
            with _Nesting(self):
                value = self.unary()
            return -value if op == "-" else value
        return self.atom()

    def atom(self) -> Fraction:
        token = self.take()
        if token == "(":
            with _Nesting(self):
                value = self.expr()
            if self.take() != ")":
                raise CalculatorError(f"unbalanced parentheses in {self.source!r}")
            return value
        if token in _OPERATORS:
            raise CalculatorError(f"unexpected {token!r} in {self.source!r}")
        return _checked(Fraction(token))  # exact: Fraction("0.1") == 1/10


class _Nesting:
    """Context manager counting nesting depth, so deep inputs fail cleanly (no RecursionError)."""

    def __init__(self, parser: _Parser):
        self.parser = parser

    def __enter__(self) -> None:
        self.parser.depth += 1
        if self.parser.depth > MAX_DEPTH:
            raise CalculatorError(f"expression nests deeper than {MAX_DEPTH} levels")

    def __exit__(self, *exc) -> None:
        self.parser.depth -= 1


def _checked(value: Fraction) -> Fraction:
    if abs(value) > MAX_ABS_VALUE:
        raise CalculatorError(f"value exceeds {MAX_ABS_VALUE:.0e} in absolute value")
    return value


def _format(value: Fraction) -> str:
    """GSM8K style: "24", "-3", "2.5", "0.333333" (half away from zero at 6 places)."""
    if value.denominator == 1:
        return str(value.numerator)
    scale = 10**DECIMAL_PLACES
    # Exact rounding of |value| * 10^6 to the nearest integer, halves going up.
    scaled = (abs(value) * scale * 2 + 1) // 2  # floor(|v| * 10^6 + 1/2)
    whole, frac = divmod(int(scaled), scale)
    text = str(whole)
    if frac:
        text += "." + str(frac).rjust(DECIMAL_PLACES, "0").rstrip("0")
    if value < 0 and scaled != 0:  # a tiny negative that rounds to 0 is "0", not "-0"
        text = "-" + text
    return text


def evaluate_strict(expression: str) -> str:
    """Evaluate an annotation expression; raise ``CalculatorError`` (a ValueError) on junk.

    >>> evaluate_strict("1,200*2")
    '2400'
    >>> evaluate_strict("7/2")
    '3.5'
    """
    if not isinstance(expression, str):
        raise CalculatorError(f"expression must be a str, got {type(expression).__name__}")
    source = expression.strip()
    if not source:
        raise CalculatorError("empty expression")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(
            f"expression is {len(source)} characters long (at most {MAX_EXPRESSION_CHARS})"
        )
    source = _THOUSANDS_COMMA.sub("", source)
    tokens = _tokenize(source)
    return _format(_Parser(tokens, source).parse())


def evaluate(expression: str) -> str | None:
    """The result string GSM8K writes after ``=`` (e.g. "24", "3.5"), or None for junk."""
    try:
        return evaluate_strict(expression)
    except CalculatorError:
        return None


def inserted_text(expression: str) -> str | None:
    """What calculator-aware decoding inserts after ``<<EXPR=``: ``result + ">>"``, or None."""
    result = evaluate(expression)
    return None if result is None else result + CLOSE


def find_open_annotation(text: str) -> str | None:
    """If ``text`` ends with ``<<EXPR=`` (no ``>>`` after the last ``<<``), return EXPR.

    Returns None when there is no ``<<``, when the last annotation is already closed, when the
    text does not end with ``=``, when EXPR is empty, or when EXPR itself contains ``=`` (the
    model already wrote a result, so nothing is inserted).

    >>> find_open_annotation("He has <<3*4=")
    '3*4'
    """
    start = text.rfind(OPEN)
    if start < 0:
        return None
    tail = text[start + len(OPEN):]
    if CLOSE in tail or not tail.endswith(RESULT_END):
        return None
    expression = tail[: -len(RESULT_END)]
    if not expression.strip() or RESULT_END in expression:
        return None
    return expression
