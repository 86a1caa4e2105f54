"""Ground truth of the generated tasks: every source's distribution of valid targets.

A generator draws ``(source, node)`` from its task's random stream, where ``node`` (a
:mod:`kdlib.data.variants` grammar) is the distribution of the source's valid targets. The target
stored in the data is one draw from ``node`` at the task's ambiguity, with its own random stream
seeded by (task, seed, source): the sources never depend on the draw. Because the generator knows
``node``, :class:`TaskTruth` answers for any output of any model what no real dataset can: whether
it is a valid target of its source (``is_valid``) and its log-likelihood under the true
distribution (``log_prob``, ``-inf`` when not valid).
"""

from __future__ import annotations

import math
import random
from functools import lru_cache
from typing import Callable, Iterator

from kdlib.data.common import _derive_seed, _stream_rng
from kdlib.data.europarl_variants import _gen_europarl_node
from kdlib.data.gsm8k import _gen_gsm8k_node
from kdlib.data.variants import Node, canonical, log_prob, sample, support
from kdlib.data.xsum import _gen_xsum_node

# Each generator draws one example from the task's stream: (source, the distribution of its valid
# targets). ``passage``: the two-sentence form mini-europarl uses at ambiguity > 0 (others ignore it).
GENERATORS: dict[str, Callable[[random.Random, bool], tuple[str, Node]]] = {
    "mini-xsum": lambda rng, passage: _gen_xsum_node(rng),
    "mini-europarl": _gen_europarl_node,
    "mini-gsm8k": lambda rng, passage: _gen_gsm8k_node(rng),
}


def check_ambiguity(a) -> float:
    """``a`` as a float in [0, 1]; ValueError otherwise."""
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not (0.0 <= float(a) <= 1.0) or math.isnan(a):
        raise ValueError(f"ambiguity must be a number in [0, 1], got {a!r}")
    return float(a)


def example_stream(name: str, seed: int, ambiguity: float, generate=None,
                   budget: int | None = None) -> Iterator[tuple[str, Node]]:
    """The task's distinct (source, node) pairs in stream order (a repeated source is skipped, as
    generate_examples does); stops after ``budget`` draws (None: never)."""
    rng = _stream_rng(name, seed)
    generate = generate or GENERATORS[name]
    seen: set[str] = set()
    tries = 0
    while budget is None or tries < budget:
        tries += 1
        source, node = generate(rng, ambiguity > 0)
        if source in seen:
            continue
        seen.add(source)
        yield source, node


def target_draw(name: str, seed: int, source: str, node: Node, ambiguity: float) -> str:
    """The stored target of ``source``: the canonical one at ambiguity 0, else one draw at ``ambiguity``
    from a stream of its own (seeded by task, data seed and source; the same at every level, so the
    draws of two levels are coupled)."""
    if ambiguity == 0:
        return canonical(node)
    return sample(node, random.Random(_derive_seed("kdlib.data.target", name, seed, source)), ambiguity)


class TaskTruth:
    """The true distribution of one generated task (name, data seed, ambiguity), source by source.

    Sources are found by walking the task's stream (test split first, then dev, then train, as
    :func:`kdlib.data.generate_embedded` lays them out), so any source of any split is known.
    """

    def __init__(self, name: str, seed: int = 0, ambiguity: float = 0.0, horizon: int = 50_000):
        if name not in GENERATORS:
            raise ValueError(f"no ground truth for {name!r}: only generated tasks have one ({', '.join(GENERATORS)})")
        self.name, self.seed, self.ambiguity = name, int(seed), check_ambiguity(ambiguity)
        self.horizon = horizon
        self._nodes: dict[str, Node] = {}
        self._stream = example_stream(name, self.seed, self.ambiguity)

    def node(self, source: str) -> Node:
        """The distribution of ``source``'s valid targets; ValueError for a source the task never drew."""
        while source not in self._nodes:
            if len(self._nodes) >= self.horizon:
                raise ValueError(f"not a source of {self.name} (seed {self.seed}, ambiguity {self.ambiguity}) "
                                 f"among its first {self.horizon} examples: {source[:80]!r}")
            s, node = next(self._stream)
            self._nodes[s] = node
        return self._nodes[source]

    def target(self, source: str) -> str:
        """The target the data stores for ``source``."""
        return target_draw(self.name, self.seed, source, self.node(source), self.ambiguity)

    def log_prob(self, source: str, output: str) -> float:
        """``log P_true(output | source)``, whitespace normalised; ``-inf`` when not a valid target."""
        return log_prob(self.node(source), output, self.ambiguity)

    def is_valid(self, source: str, output: str) -> bool:
        """Whether ``output`` is one of the valid targets of ``source`` (whitespace normalised).

        At ambiguity 0 the only valid target is the canonical one; at any level > 0 the valid set is
        every output of the grammar (their probabilities depend on the level)."""
        return self.log_prob(source, output) > -math.inf

    def support(self, source: str) -> dict[str, float]:
        """Every valid target of ``source`` with its probability (small grammars only)."""
        return support(self.node(source), self.ambiguity)


@lru_cache(maxsize=16)
def task_truth(name: str, seed: int = 0, ambiguity: float = 0.0) -> TaskTruth:
    """The (cached) :class:`TaskTruth` of a generated task."""
    return TaskTruth(name, seed, check_ambiguity(ambiguity))
