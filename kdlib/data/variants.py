"""A known distribution of valid outputs: the target side of every generated task.

A target is a small probabilistic grammar over strings built from three nodes:

* ``Lit(text)``: exactly ``text``;
* ``Seq(a, b, ...)``: the concatenation of its parts' outputs;
* ``Alt(options, weights)``: one option. Option 0 is the *canonical* one (the task's output at
  ambiguity 0); at ambiguity ``a`` in [0, 1] option ``i`` is taken with probability

      P(i) = (1 - a) [i == 0] + a w_i,       w = weights / sum(weights) (uniform by default),

  so ``a = 0`` always gives the canonical output and ``a = 1`` draws every choice from ``w``.

Outputs are compared after whitespace normalisation (``normalise``: runs of whitespace -> one space,
ends stripped), so the distribution is over normalised strings: ``P(y) = sum of P(r)`` over the
grammar's raw outputs ``r`` with ``normalise(r) == normalise(y)``. :func:`log_prob` computes it
exactly with a dynamic programme over (node, position in y) that sums over every derivation (two
options that print the same text both count); ``-inf`` when ``y`` is not an output.
:func:`support` enumerates a small grammar (tests check that it sums to 1 and agrees with
``log_prob``).

Sampling draws from its own ``random.Random`` (the task's source stream is never touched), and
each ``Alt`` draws ``u = rng.random()`` first, taking a non-canonical choice only when ``u < a``:
with one target seed the draws at two ambiguity levels are coupled (every choice made at the lower
level is made the same way at the higher one).
"""

from __future__ import annotations

import itertools
import math
import random
import re

# The version of the tasks' grammars of valid targets (kdlib.data.xsum / europarl_variants / gsm8k / lexicons): part of
# the data and run keys at ambiguity > 0, so a cache made with other grammars is never reused. Ambiguity 0 (the
# canonical targets, which no grammar change touches) keeps its older keys. 2: word-level synonyms.
VARIANTS_VERSION = 2
from typing import Iterable, Sequence

__all__ = ["VARIANTS_VERSION", "Alt", "Lit", "Node", "Seq", "alt", "canonical", "lexical", "log_prob", "normalise", "opt", "perms",
           "sample", "support", "tidy"]


def normalise(text: str) -> str:
    """Runs of whitespace (spaces, newlines) become one space; ends stripped."""
    return " ".join(text.split())


def tidy(raw: str) -> str:
    """A raw grammar output as a target: each line's spaces collapsed, newlines kept (GSM8K's lines)."""
    return "\n".join(" ".join(line.split()) for line in raw.strip().split("\n"))


class Node:
    """A distribution over strings (see the module docstring)."""

    def raw(self, rng: random.Random | None, a: float) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def ends(self, s: str, state: tuple[int, int], a: float, memo: dict) -> dict[tuple[int, int], float]:
        """Where this node can end when it starts at ``state`` of the normalised output ``s``, with the
        probability of each end: ``{(position, mode): P}``. ``mode``: 0 = a character was just matched,
        1 = whitespace is pending (one space must come before the next character), 2 = nothing
        matched yet (leading whitespace is dropped)."""
        key = (id(self), state)
        if key not in memo:
            memo[key] = self._ends(s, state, a, memo)
        return memo[key]

    def _ends(self, s, state, a, memo):  # pragma: no cover - abstract
        raise NotImplementedError

    def _support(self, a: float) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError


class Lit(Node):
    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def raw(self, rng, a):
        return self.text

    def _ends(self, s, state, a, memo):
        i, mode = state
        for ch in self.text:
            if ch.isspace():
                if mode == 0:
                    mode = 1
                continue
            if mode == 1:
                if i >= len(s) or s[i] != " ":
                    return {}
                i += 1
            if i >= len(s) or s[i] != ch:
                return {}
            i, mode = i + 1, 0
        return {(i, mode): 1.0}

    def _support(self, a):
        return {self.text: 1.0}

    def __repr__(self):
        return f"Lit({self.text!r})"


class Seq(Node):
    __slots__ = ("parts",)

    def __init__(self, *parts):
        self.parts = tuple(_node(p) for p in parts)

    def raw(self, rng, a):
        return "".join(p.raw(rng, a) for p in self.parts)

    def _ends(self, s, state, a, memo):
        cur = {state: 1.0}
        for part in self.parts:
            nxt: dict = {}
            for st, p in cur.items():
                for st2, q in part.ends(s, st, a, memo).items():
                    nxt[st2] = nxt.get(st2, 0.0) + p * q
            if not nxt:
                return {}
            cur = nxt
        return cur

    def _support(self, a):
        out = {"": 1.0}
        for part in self.parts:
            sub = part._support(a)
            out = _merge((x + y, p * q) for x, p in out.items() for y, q in sub.items())
        return out


class Alt(Node):
    __slots__ = ("options", "weights")

    def __init__(self, options: Sequence, weights: Sequence[float] | None = None):
        if not options:
            raise ValueError("Alt needs at least one option")
        self.options = tuple(_node(o) for o in options)
        w = [1.0] * len(self.options) if weights is None else [float(x) for x in weights]
        if len(w) != len(self.options) or any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"bad weights {weights!r} for {len(self.options)} options")
        total = sum(w)
        self.weights = tuple(x / total for x in w)

    def probs(self, a: float) -> list[float]:
        """P(option i) at ambiguity ``a`` (module docstring)."""
        return [(1.0 - a) * (i == 0) + a * w for i, w in enumerate(self.weights)]

    def raw(self, rng, a):
        if rng is None or len(self.options) == 1 or a <= 0.0 or rng.random() >= a:
            return self.options[0].raw(rng, a)
        i = rng.choices(range(len(self.options)), weights=self.weights)[0]
        return self.options[i].raw(rng, a)

    def _ends(self, s, state, a, memo):
        out: dict = {}
        for p, option in zip(self.probs(a), self.options):
            if p <= 0.0:
                continue
            for st, q in option.ends(s, state, a, memo).items():
                out[st] = out.get(st, 0.0) + p * q
        return out

    def _support(self, a):
        return _merge((x, p * q) for p, o in zip(self.probs(a), self.options) if p > 0
                      for x, q in o._support(a).items())


def _node(x) -> Node:
    if isinstance(x, Node):
        return x
    if isinstance(x, str):
        return Lit(x)
    raise TypeError(f"not a grammar node: {x!r}")


def _merge(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for x, p in pairs:
        out[x] = out.get(x, 0.0) + p
    return out


# ----------------------------------------------------------------------------- builders
def alt(*options, weights=None) -> Node:
    """``Alt`` of the distinct options (first = canonical); a single option is just that option."""
    seen, uniq = set(), []
    for o in options:
        k = o if isinstance(o, str) else id(o)
        if k not in seen:
            seen.add(k)
            uniq.append(o)
    if len(uniq) == 1 and weights is None:
        return _node(uniq[0])
    return Alt(uniq if weights is None else options, weights)


def opt(node, present_first: bool = True) -> Node:
    """``node`` or nothing; the canonical choice is ``present_first``."""
    return Alt([node, ""] if present_first else ["", node])


def perms(parts: Sequence, sep="", canonical_order: Sequence[int] | None = None) -> Node:
    """Any order of ``parts`` (joined by ``sep``), uniformly; the canonical is ``canonical_order``
    (default: as given)."""
    parts = [_node(p) for p in parts]
    order = tuple(range(len(parts))) if canonical_order is None else tuple(canonical_order)
    orders = [order] + [o for o in itertools.permutations(range(len(parts))) if o != order]
    options = []
    for o in orders:
        seq = []
        for j, k in enumerate(o):
            if j:
                seq.append(sep)
            seq.append(parts[k])
        options.append(Seq(*seq))
    return Alt(options)


_WORD = re.compile(r"[A-Za-z][A-Za-z-]*")


# Rewritten literals per lexicon (literals are immutable, so one rewrite serves every grammar that prints the text).
_LIT_CACHE: dict[tuple, dict[str, Node]] = {}


def _lexical_lit(text: str, lexicon) -> Node:
    parts, last = [], 0
    for m in _WORD.finditer(text):
        word = m.group(0)
        if word in lexicon:
            if m.start() > last:
                parts.append(Lit(text[last:m.start()]))
            parts.append(alt(word, *lexicon[word]))
            last = m.end()
    if not parts:
        return Lit(text)
    if last < len(text):
        parts.append(Lit(text[last:]))
    return parts[0] if len(parts) == 1 else Seq(*parts)


def lexical(node: Node, lexicon: dict[str, Sequence[str]]) -> Node:
    """``node`` with every word of its literals that ``lexicon`` lists (exact, case-sensitive match of
    a whole word) replaced by ``Alt([word] + lexicon[word])``: the word itself stays the canonical
    option, so the output at ambiguity 0 is unchanged, and at ambiguity ``a`` each occurrence is
    drawn on its own. Shared sub-nodes stay shared (one rewrite per node)."""
    memo: dict[int, Node] = {}
    lits = _LIT_CACHE.setdefault(tuple(sorted((k, tuple(v)) for k, v in lexicon.items())), {})
    if len(lits) > 200_000:
        lits.clear()

    def lit(n: Lit) -> Node:
        if n.text not in lits:
            new = _lexical_lit(n.text, lexicon)
            lits[n.text] = None if isinstance(new, Lit) else new  # None: no listed word, the literal stays
        new = lits[n.text]
        return n if new is None else new

    def walk(n: Node) -> Node:
        # A node none of whose literals changes is returned itself (nodes are never mutated).
        if id(n) not in memo:
            if isinstance(n, Lit):
                memo[id(n)] = lit(n)
            elif isinstance(n, Seq):
                parts = tuple(walk(p) for p in n.parts)
                memo[id(n)] = n if all(a is b for a, b in zip(parts, n.parts)) else Seq(*parts)
            elif isinstance(n, Alt):
                options = tuple(walk(o) for o in n.options)
                memo[id(n)] = (n if all(a is b for a, b in zip(options, n.options))
                               else Alt(options, n.weights))
            else:
                raise TypeError(f"not a grammar node: {n!r}")
        return memo[id(n)]

    return walk(node)


# ----------------------------------------------------------------------------- queries
def canonical(node: Node) -> str:
    """The output at ambiguity 0 (every ``Alt`` takes option 0), tidied."""
    return tidy(node.raw(None, 0.0))


def sample(node: Node, rng: random.Random, a: float) -> str:
    """One draw at ambiguity ``a``, tidied (``tidy``)."""
    return tidy(node.raw(rng, a))


def log_prob(node: Node, output: str, a: float) -> float:
    """``log P(normalise(output))`` under ``node`` at ambiguity ``a``; ``-inf`` when not an output."""
    s = normalise(output)
    memo: dict = {}
    ends = node.ends(s, (0, 2), a, memo)
    p = sum(q for (i, _), q in ends.items() if i == len(s))
    return math.log(p) if p > 0 else -math.inf


def support(node: Node, a: float) -> dict[str, float]:
    """Every output (normalised) with its probability; only for small grammars (exponential)."""
    return _merge((normalise(x), p) for x, p in node._support(a).items())
