"""Held-out evaluation sets for models trained on mini-gsm8k (seeds 003 and 004).

Three sets, each generated deterministically from a seed by the mini-gsm8k templates
(:mod:`kdlib.data.gsm8k`), in mini-gsm8k's surface vocabulary (digits, ``<<``/``>>``, ``####``, the
same words), with targets in GSM8K's format and exact answers:

* ``mini-gsm-plus`` (GSM-Plus, Li et al. 2024): perturbations of mini-gsm8k's *test* problems.
  Base problem ``b`` is example ``b`` of the mini-gsm8k stream of the same seed, i.e.
  ``mini-gsm8k-test-<b>`` whenever that task's ``n_test`` exceeds ``b`` (the default 300 rows use
  the first ~65). Each base gets, in this order, the GSM-Plus perturbation types that fit a
  generator (GSM-Plus's own names, in the ``perturbation`` column):

  - ``numerical substitution``: one quantity replaced by another with as many digits;
  - ``digit expansion``: every quantity that can sensibly grow gets one more digit (hours a day,
    days a week and ages stay; a problem with nothing to grow is skipped);
  - ``integer-decimal-fraction conversion``: prices, wages and savings become decimals (x.25, x.5,
    x.75), so results stay exact (only the families with money; decimals only, no fractions);
  - ``distraction insertion``: an irrelevant sentence with a number (another person, of the
    other gender when the problem uses pronouns) just before the question;
  - ``problem understanding``: the problem reworded, same numbers and same solution.

  A perturbed problem re-runs the base's own draws with some changed (quantities that depend on a
  changed one are kept when still valid, else redrawn), so the solution is recomputed, not edited.
  Not generated: GSM-Plus's "adding/reversing operation" (new solution structures) and "critical
  thinking" (no numeric answer).
* ``mini-gsm-symbolic`` (GSM-Symbolic, Mirzadeh et al. 2024): the templates re-instantiated with
  names never used by mini-gsm8k (``HELDOUT_PEOPLE``) and newly drawn numbers. The three families
  without a person (bus, boxes, fraction) differ from training problems by their numbers only;
  fraction has so few distinct problems that mini-gsm8k's training stream holds nearly all of
  them, so it is rare here.
* ``mini-gsm-hard`` (a stand-in for MATH): the longest branch of every family whose numbers can
  grow, with every such quantity 10 times larger (two- to four-digit operands, four- and five-digit
  results). No new operations: the families' own longest solutions (3-4 steps); where the longest
  form would exceed the length limits (shopping with change), another branch with the larger
  numbers.

Every problem stays within mini-gsm8k's length limits (``MAX_SOURCE_TOKENS``/``MAX_TARGET_TOKENS``);
longer candidates are skipped. No problem is one of mini-gsm8k's training problems for the same
seed (the first ``TRAIN_HORIZON`` problems of its stream are excluded): evaluate a model with the
seed of the data it was trained on (``task.data_seed``).

Columns: ``id``, ``source``, ``target``, ``template`` (the problem family), and for mini-gsm-plus
also ``perturbation``, ``base_id``, ``base_source``, ``base_target``.
"""

from __future__ import annotations

import functools
import math
import random
import re
from decimal import Decimal
from fractions import Fraction
from typing import Callable, Iterator

import datasets

from kdlib.data.common import _derive_seed, _empty, _stream_rng, _string_features
from kdlib.data.gsm8k import (
    _GSM_PEOPLE,
    _GSM_TEMPLATES,
    _SHARE_ITEMS,
    _VEHICLES,
    HELDOUT_PEOPLE,
    Draws,
    _render,
)

EMBEDDED_EVAL_SETS = ("mini-gsm-plus", "mini-gsm-symbolic", "mini-gsm-hard")
# Bump whenever an evaluation set's output changes: it is part of the cache key (with the
# generator version of mini-gsm8k, whose templates and test problems the sets are built from).
EVAL_GENERATOR_VERSION = 1
DEFAULT_EVAL_SIZES = {name: 300 for name in EMBEDDED_EVAL_SETS}

# GSM-Plus's names for the perturbation types generated here (qintongli/GSM-Plus "perturbation_type").
PERTURBATIONS = (
    "numerical substitution",
    "digit expansion",
    "integer-decimal-fraction conversion",
    "distraction insertion",
    "problem understanding",
)
EVAL_COLUMNS = {
    "mini-gsm-plus": ("id", "source", "target", "template", "perturbation", "base_id", "base_source",
                      "base_target"),
    "mini-gsm-symbolic": ("id", "source", "target", "template"),
    "mini-gsm-hard": ("id", "source", "target", "template"),
}
_HARD_SCALE = 10  # mini-gsm-hard: quantities 10 times larger
_EXPAND_SCALE = 10  # digit expansion: one more digit
# Every problem fits mini-gsm8k's length limits (kdlib.config.TASK_LENGTHS: 112 source tokens with
# the "solve: " prompt, 128 target tokens, EOS included), less a margin of 2. Tokens are counted
# as the kit's tokenizer (kdlib.modeling.models.train_tokenizer) splits text before BPE: a word with the
# space before it, each digit, "<<", ">>", each other mark, and a lone space before a digit or a
# mark. Trained on mini-gsm8k, it keeps each of that task's words whole, so the count is exact
# there; a held-out name (never seen by the tokenizer) counts as one token per letter, plus one.
# A longer candidate is skipped (a digit expansion of a long solution, some mini-gsm-hard
# shopping problems).
MAX_SOURCE_TOKENS, MAX_TARGET_TOKENS = 110, 126
# No problem of an evaluation set is one of the first TRAIN_HORIZON distinct problems of mini-gsm8k's
# stream for the same seed, i.e. of its train split whenever n_test + n_dev + n_train stays within it
# (4,600 by default). Evaluate a model with the seed of the data it was trained on.
TRAIN_HORIZON = 20_000
_PIECE = re.compile(r"<<|>>|\d|[^\w\u2581]|[\u2581A-Za-z_]+")
_HELDOUT_NAME = re.compile(r"\b(?:" + "|".join(name for name, _ in HELDOUT_PEOPLE) + r")\b")


def _n_tokens(text: str) -> int:
    """Tokens of ``text`` for a tokenizer trained on mini-gsm8k (an upper bound), EOS included."""
    pieces = sum(len(_PIECE.findall("\u2581" + chunk)) for chunk in text.split(" "))
    names = sum(len(m.group(0)) for m in _HELDOUT_NAME.finditer(text))
    return pieces + names + 1


def _fits(source: str, target: str) -> bool:
    return _n_tokens("solve: " + source) <= MAX_SOURCE_TOKENS and _n_tokens(target) <= MAX_TARGET_TOKENS


def _template_name(template: Callable) -> str:
    return template.__name__.removeprefix("_gsm_")


# =============================================================================================
# Exact decimals that print the way the kit's calculator prints them
# =============================================================================================


class _Num(Fraction):
    """An exact number that prints like ``kdlib.maths.calculator`` results: ``12``, ``12.5``, ``0.25``.

    Arithmetic with ints and other numbers stays a ``_Num``; ``//`` gives an int, as for Fraction.
    Only values with a finite decimal expansion are made (denominators 2 and 4).
    """

    def __str__(self) -> str:
        if self.denominator == 1:
            return str(self.numerator)
        value = Decimal(self.numerator) / Decimal(self.denominator)  # exact: denominator 2^a 5^b
        return format(value.normalize(), "f")

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _binary(name: str):
    op = getattr(Fraction, name)

    def method(self, other):
        result = op(self, other)
        return _Num(result) if isinstance(result, Fraction) else result  # NotImplemented stays

    return method


def _unary(name: str):
    op = getattr(Fraction, name)
    return lambda self: _Num(op(self))


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__"):
    setattr(_Num, _name, _binary(_name))
for _name in ("__neg__", "__pos__", "__abs__"):
    setattr(_Num, _name, _unary(_name))


# =============================================================================================
# Recording a problem's draws and replaying them with changes
# =============================================================================================

class _Record(Draws):
    """mini-gsm8k's own draws (the same calls on ``rng``), logged as ``(kind, bounds, value)``."""

    def __init__(self, rng: random.Random):
        super().__init__(rng)
        self.log: list[tuple[str, tuple, object]] = []

    def choice(self, seq):
        value = super().choice(seq)
        self.log.append(("choice", (len(seq),), seq.index(value)))
        return value

    def sample(self, seq, k):
        values = super().sample(seq, k)
        self.log.append(("sample", (len(seq), k), tuple(seq.index(v) for v in values)))
        return values

    def randrange(self, n):
        value = super().randrange(n)
        self.log.append(("randrange", (n,), value))
        return value

    def coin(self, p, longer=None):
        value = super().coin(p, longer)
        self.log.append(("coin", (p,), value))
        return value

    def pick(self, lo, hi):
        return self._int("pick", lo, hi, super().pick(lo, hi))

    def qty(self, lo, hi, expand=True):
        return self._int("qty", lo, hi, super().qty(lo, hi, expand), expand)

    def money(self, lo, hi):
        return self._int("money", lo, hi, super().money(lo, hi))

    def part(self, lo, hi):
        return self._int("part", lo, hi, super().part(lo, hi))

    def _int(self, kind, lo, hi, value, expand=True):
        self.log.append((kind, (lo, hi, expand), value))
        return value


# override(index, kind, (lo, hi, expand), logged value) -> the value to use instead (or the same)
Override = Callable[[int, str, tuple, object], object]


class _Replay(Draws):
    """Draws that repeat a logged problem, optionally changed.

    Draw ``i`` returns ``override(i, ...)`` of the logged value. A quantity that depends on earlier
    ones (``part``), and any structural draw, is checked against the bounds of *this* run and drawn
    afresh from ``rng`` when the logged value no longer fits; once the calls stop matching the log
    (another branch), every draw is fresh.
    """

    def __init__(self, log, rng: random.Random, *, override: Override | None = None,
                 paraphrase: bool = False, people=_GSM_PEOPLE):
        super().__init__(rng)
        self.log, self.i, self.diverged = log, 0, False
        self.override = override
        self.paraphrase = paraphrase
        self.people = people

    def _logged(self, kind):
        """(index, bounds, value) of the next logged draw if it is of this kind, else None."""
        if not self.diverged and self.i < len(self.log) and self.log[self.i][0] == kind:
            i = self.i
            self.i += 1
            return i, self.log[i][1], self.log[i][2]
        self.diverged = True
        return None

    def choice(self, seq):
        got = self._logged("choice")
        if got is not None and got[2] < len(seq):
            return seq[got[2]]
        return self.rng.choice(seq)

    def sample(self, seq, k):
        got = self._logged("sample")
        if got is not None and len(got[2]) == k and max(got[2]) < len(seq):
            return [seq[j] for j in got[2]]
        return self.rng.sample(seq, k)

    def randrange(self, n):
        got = self._logged("randrange")
        if got is not None and got[2] < n:
            return got[2]
        return self.rng.randrange(n)

    def coin(self, p, longer=None):
        got = self._logged("coin")
        return got[2] if got is not None else self.rng.random() < p

    def pick(self, lo, hi):
        return self._int("pick", lo, hi, True)

    def qty(self, lo, hi, expand=True):
        return self._int("qty", lo, hi, expand)

    def money(self, lo, hi):
        return self._int("money", lo, hi, True)

    def part(self, lo, hi):
        return self._int("part", lo, hi, True)

    def _int(self, kind, lo, hi, expand):
        got = self._logged(kind)
        if got is not None:
            i, bounds, value = got
            if self.override is not None:
                new = self.override(i, kind, bounds, value)
                # A free quantity may leave its bounds (expansion, decimals); anything tied to
                # earlier values must still fit the bounds of this run.
                if kind in ("qty", "money") and new != value:
                    return new
                value = new
            if lo <= value <= hi:
                return value
        return self.rng.randint(math.ceil(lo), math.floor(hi))


class _Base:
    """One mini-gsm8k problem with its template and logged draws."""

    def __init__(self, index: int, state: tuple, source: str, target: str):
        rng = random.Random()
        rng.setstate(state)
        self.template = rng.choice(_GSM_TEMPLATES)
        record = _Record(rng)
        rendered = _render(*self.template(record))
        if rendered != (source, target):  # pragma: no cover - the log must reproduce the task
            raise RuntimeError(f"mini-gsm8k example {index} does not replay from its seed state")
        self.index, self.log, self.source, self.target = index, record.log, source, target

    def replay(self, rng: random.Random, **kwargs) -> tuple[str, str]:
        return _render(*self.template(_Replay(self.log, rng, **kwargs)))


@functools.lru_cache(maxsize=4)
def _mini_gsm8k_sources(seed: int) -> frozenset[str]:
    """The first ``TRAIN_HORIZON`` distinct sources of mini-gsm8k for ``seed`` (test, dev, train)."""
    rng = _stream_rng("mini-gsm8k", seed)
    sources: set[str] = set()
    while len(sources) < TRAIN_HORIZON:
        template = rng.choice(_GSM_TEMPLATES)
        sources.add(_render(*template(Draws(rng)))[0])
    return frozenset(sources)


def _base_problems(seed: int) -> Iterator[_Base]:
    """mini-gsm8k's distinct problems for ``seed`` in stream order (test split first)."""
    rng = _stream_rng("mini-gsm8k", seed)
    seen: set[str] = set()
    index = 0
    while True:
        state = rng.getstate()
        template = rng.choice(_GSM_TEMPLATES)
        source, target = _render(*template(Draws(rng)))
        if source in seen:  # as in generate_examples: duplicates are skipped
            continue
        seen.add(source)
        yield _Base(index, state, source, target)
        index += 1


# =============================================================================================
# GSM-Plus perturbations of one base problem (None: the type does not apply to it)
# =============================================================================================


def _same_digits(value: int, lo, hi, rng: random.Random) -> int | None:
    """Another integer in [lo, hi] with as many digits as ``value`` (or any other one in range)."""
    lo, hi = math.ceil(lo), math.floor(hi)
    width = len(str(value))
    low, high = max(lo, 10 ** (width - 1) if width > 1 else 0), min(hi, 10 ** width - 1)
    for a, b in ((low, high), (lo, hi)):
        if b - a >= 1:
            other = rng.randint(a, b - 1)
            return other + 1 if other >= value else other
    return None


_NUMBER = re.compile(r"(\d+(?:\.\d+)?)")


def _numbers_changed(a: str, b: str) -> int | None:
    """How many numbers differ between two texts that differ only in numbers (else None)."""
    pa, pb = _NUMBER.split(a), _NUMBER.split(b)
    if len(pa) != len(pb) or pa[0::2] != pb[0::2]:
        return None
    return sum(x != y for x, y in zip(pa[1::2], pb[1::2]))


def _numerical_substitution(base: _Base, rng: random.Random):
    """One number of the question replaced by another with as many digits.

    Tries the quantities in a random order and keeps the first whose change shows as exactly one
    changed number in the question (a quantity that others depend on may move them too; such a
    change is kept only when no single-number one exists).
    """
    candidates = [i for i, (kind, _, _) in enumerate(base.log) if kind in ("qty", "money", "part")]
    rng.shuffle(candidates)
    fallback = None
    for j in candidates:
        _, (lo, hi, _), value = base.log[j]
        for _ in range(4):  # a few values: some move the quantities that depend on this one
            new = _same_digits(value, lo, hi, rng)
            if new is None:
                break
            out = base.replay(rng, override=lambda i, kind, bounds, v: new if i == j else v)
            if out[0] == base.source:
                continue
            if _numbers_changed(base.source, out[0]) == 1:
                return out
            fallback = fallback or out
    return fallback


def _digit_expansion(base: _Base, rng: random.Random):
    def grow(i, kind, bounds, value):
        if kind in ("qty", "money", "part") and bounds[2]:
            return value * _EXPAND_SCALE + rng.randrange(_EXPAND_SCALE)
        return value

    out = base.replay(rng, override=grow)
    return out if out[0] != base.source else None


def _decimal_conversion(base: _Base, rng: random.Random):
    if not any(kind == "money" for kind, _, _ in base.log):
        return None

    def to_decimal(i, kind, bounds, value):
        if kind == "money":
            return _Num(value) + rng.choice((Fraction(1, 4), Fraction(1, 2), Fraction(3, 4)))
        return value

    return base.replay(rng, override=to_decimal)


_PRONOUNS = {"he": re.compile(r"\b(he|him|his|himself)\b", re.I),
             "she": re.compile(r"\b(she|her|herself)\b", re.I)}
# (sentence, families it would confuse, range of its number)
_DISTRACTORS = (
    ("{other} is {k} years old.", ("ages",), (6, 15)),
    ("{other} reads {k} pages a day.", ("pages",), (4, 20)),
    ("{other} has {k} {item}.", (), (3, 30)),
    ("{other} earns ${k} an hour.", ("wages",), (8, 30)),
    ("{other} saves ${k} every week.", ("savings",), (5, 40)),
    ("A book has {k} pages.", ("pages",), (40, 300)),
    ("A {vehicle} leaves the station with {k} passengers.", ("bus",), (15, 60)),
)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text))


def _distraction_insertion(base: _Base, rng: random.Random):
    family = _template_name(base.template)
    words = _words(base.source)
    used = {he for he, pattern in _PRONOUNS.items() if pattern.search(base.source)}
    others = [(name, he) for name, he in _GSM_PEOPLE if name not in words and (len(used) != 1 or he not in used)]
    sentence, _, (lo, hi) = rng.choice([d for d in _DISTRACTORS if family not in d[1]])
    fill = {
        "other": rng.choice(others)[0],
        "k": rng.randint(lo, hi),
        "item": rng.choice([item for item in _SHARE_ITEMS if item not in words]),
        "vehicle": rng.choice([v for v in _VEHICLES if v not in words]),
    }
    head, question = base.source.rsplit(". ", 1)  # the question is the last sentence
    return f"{head}. {sentence.format(**fill)} {question}", base.target


def _problem_understanding(base: _Base, rng: random.Random):
    source, target = base.replay(rng, paraphrase=True)
    if target != base.target:  # pragma: no cover - a paraphrase keeps every draw
        raise RuntimeError(f"the reworded {_template_name(base.template)} problem changed its solution")
    return source, target


_PERTURB: dict[str, Callable[[_Base, random.Random], tuple[str, str] | None]] = {
    "numerical substitution": _numerical_substitution,
    "digit expansion": _digit_expansion,
    "integer-decimal-fraction conversion": _decimal_conversion,
    "distraction insertion": _distraction_insertion,
    "problem understanding": _problem_understanding,
}


def _gsm_plus_rows(n: int, seed: int) -> list[dict]:
    rows: list[dict] = []
    seen = set(_mini_gsm8k_sources(seed))  # the bases, and every training problem
    for base in _base_problems(seed):
        seen.add(base.source)
        for perturbation in PERTURBATIONS:
            if len(rows) == n:
                return rows
            rng = random.Random(_derive_seed("kdlib.data", "mini-gsm-plus", seed, base.index, perturbation,
                                             EVAL_GENERATOR_VERSION))
            out = _PERTURB[perturbation](base, rng)
            if out is None or out[0] in seen or not _fits(*out):
                continue
            seen.add(out[0])
            rows.append({
                "id": f"mini-gsm-plus-{len(rows):06d}", "source": out[0], "target": out[1],
                "template": _template_name(base.template), "perturbation": perturbation,
                "base_id": f"mini-gsm8k-test-{base.index:06d}", "base_source": base.source,
                "base_target": base.target,
            })
        if len(rows) == n:
            return rows
    raise AssertionError("unreachable")  # pragma: no cover - the base stream is endless


# =============================================================================================
# GSM-Symbolic: held-out names, new numbers; hard: longest branches, larger numbers
# =============================================================================================


class _Symbolic(Draws):
    people = HELDOUT_PEOPLE


class _Hard(Draws):
    """The longer outcome of every branch; quantities that can grow are ``_HARD_SCALE`` times larger."""

    force_longer = True

    def coin(self, p, longer=None):
        value = self.rng.random() < p
        return longer if (self.force_longer and longer is not None) else value

    def qty(self, lo, hi, expand=True):
        return self.rng.randint(lo * _HARD_SCALE, hi * _HARD_SCALE) if expand else self.rng.randint(lo, hi)

    def money(self, lo, hi):
        return self.qty(lo, hi)


class _HardAnyBranch(_Hard):
    """Larger numbers on whichever branch is drawn: for a problem whose longest form is too long."""

    force_longer = False


def _fresh_rows(name: str, kinds: tuple[type[Draws], ...], templates, n: int, seed: int) -> list[dict]:
    """``n`` distinct problems of ``templates``; each draw tries the Draws ``kinds`` in order (from
    the same random state) and keeps the first problem that fits the length limits."""
    rng = random.Random(_derive_seed("kdlib.data", name, seed, EVAL_GENERATOR_VERSION))
    rows: list[dict] = []
    seen = set(_mini_gsm8k_sources(seed))  # never a training problem
    budget = 20 * n + 1000
    for _ in range(budget):
        if len(rows) == n:
            return rows
        template = rng.choice(templates)
        state = rng.getstate()
        for kind in kinds:
            rng.setstate(state)
            source, target = _render(*template(kind(rng)))
            if _fits(source, target):
                break
        else:
            continue
        if source in seen:
            continue
        seen.add(source)
        rows.append({"id": f"{name}-{len(rows):06d}", "source": source, "target": target,
                     "template": _template_name(template)})
    if len(rows) == n:
        return rows
    raise RuntimeError(f"{name}: only {len(rows)} distinct problems after {budget} draws (asked {n})")


# Families with nothing that can grow (ages) are left out of mini-gsm-hard.
_HARD_TEMPLATES = tuple(t for t in _GSM_TEMPLATES if _template_name(t) != "ages")


def generate_eval_set(name: str, n: int, seed: int) -> datasets.Dataset:
    """``n`` rows of the embedded evaluation set ``name``; deterministic in (name, n, seed) and prefix-stable."""
    if name not in EMBEDDED_EVAL_SETS:
        raise ValueError(f"unknown embedded evaluation set {name!r}; known: {', '.join(EMBEDDED_EVAL_SETS)}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if name == "mini-gsm-plus":
        rows = _gsm_plus_rows(n, seed)
    elif name == "mini-gsm-symbolic":
        rows = _fresh_rows(name, (_Symbolic,), _GSM_TEMPLATES, n, seed)
    else:
        rows = _fresh_rows(name, (_Hard, _HardAnyBranch), _HARD_TEMPLATES, n, seed)
    features = _string_features(EVAL_COLUMNS[name])
    return datasets.Dataset.from_list(rows, features=features) if rows else _empty(features)
