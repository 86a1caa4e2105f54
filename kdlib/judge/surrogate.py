"""The offline surrogate judge: a reference-based metric answering through the same prompt/parse protocol.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

from kdlib.judge.backends import JudgeBackend, JudgeQuery
from kdlib.judge.templates import JudgeError

# --------------------------------------------------------------------------- surrogate judge

# Small stop-word list (English + Dutch, the kit's languages) for "content words".
_STOPWORDS = frozenset("""
a an the and or but if of to in on at by for with from as is are was were be been being it its
this that these those he she they them his her their we our you your i me my not no so than then
there here has have had do does did will would can could should may might must also into over
about after before up down out off just more most such very which who whom whose what when where
why how all any both each few other some own same too s t
de het een en of maar als van te in op aan bij voor met uit is zijn was waren wordt worden werd
dat die dit deze hij zij ze hem haar hun wij we jullie u ik mij mijn niet geen zo dan er hier
heeft hebben had doen doet zal zullen kan kunnen moet moeten ook naar over om tot door nog al
wel wat wie waar hoe ook""".split())
_WORD_RE = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.lower())


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def content_recall(output: str, reference: str) -> float:
    """Share of the reference's content words (lower-cased ``\\w+`` tokens not in the EN+NL
    stop-word list) that the output contains, with clipped counts; 0 if the reference has
    none."""
    ref = Counter(w for w in _words(reference) if w not in _STOPWORDS)
    out = Counter(w for w in _words(output) if w not in _STOPWORDS)
    total = sum(ref.values())
    return sum(min(c, out[w]) for w, c in ref.items()) / total if total else 0.0


def coherence_proxy(output: str, reference: str) -> float:
    """``0.5 * (1 - repetition) + 0.5 * fluency`` in [0, 1], where
    repetition = mean over n in {2, 3} of the share of the output's n-grams that repeat an
    earlier one (0 when it has none), and fluency = share of the output's bigrams found in the
    reference (clipped counts; 0 for outputs under two words), i.e. word order that follows
    a fluent human text with the same content."""
    toks = _words(output)
    reps = []
    for n in (2, 3):
        grams = _ngrams(toks, n)
        reps.append(1.0 - len(set(grams)) / len(grams) if grams else 0.0)
    repetition = sum(reps) / len(reps)
    out_bi = Counter(_ngrams(toks, 2))
    ref_bi = Counter(_ngrams(_words(reference), 2))
    n_out = sum(out_bi.values())
    fluency = sum(min(c, ref_bi[g]) for g, c in out_bi.items()) / n_out if n_out else 0.0
    return 0.5 * (1.0 - repetition) + 0.5 * fluency


def _rouge_l(output: str, reference: str) -> float:
    from kdlib.maths.metrics import rouge  # floor 0; imported lazily

    return float(rouge([output], [reference])["rougeL"])


def _chrf(output: str, reference: str) -> float:
    from kdlib.maths.metrics import sacrebleu_scores

    return float(sacrebleu_scores([output], [reference])["chrf"])


_SURROGATE_METRICS: dict[str, tuple[str, Callable[[str, str], float]]] = {
    "rougeL": ("ROUGE-L F1", _rouge_l),
    "chrf": ("chrF", _chrf),
    "content_recall": ("content-word recall", content_recall),
    "coherence_proxy": ("coherence proxy", coherence_proxy),
}
_AUTO = {
    ("summarization", "overall"): "rougeL",
    ("translation", "overall"): "chrf",
    ("summarization", "informativeness"): "content_recall",
    ("translation", "informativeness"): "content_recall",
    ("summarization", "coherence"): "coherence_proxy",
    ("translation", "coherence"): "coherence_proxy",
}
_SLUG = {"rougeL": "rouge-l", "chrf": "chrf", "content_recall": "content-recall",
         "coherence_proxy": "coherence-proxy"}
_CRITERION_LABEL = {"overall": "Overall Quality", "informativeness": "Informativeness",
                    "coherence": "Coherence"}


class SurrogateJudge(JudgeBackend):
    """An offline stand-in for the LLM judge: NO language model. It prefers the candidate with
    the higher reference-based score and answers through the same prompt/parse protocol.

    ``metric="auto"`` picks, per task and criterion:
    overall -> ROUGE-L F1 (summarization) / chrF (translation) against the reference
    (``kdlib.maths.metrics``); informativeness -> ``content_recall``; coherence ->
    ``coherence_proxy`` (see those functions). Or fix one of ``rougeL``, ``chrf``,
    ``content_recall``, ``coherence_proxy`` for every criterion.

    Its answer is one sentence giving both scores, then ``Preferred: <ID>``. When the two
    scores are equal (to 1e-9) it says so and answers ``Preferred: tie``, which the parser
    counts as invalid: an example tied in all four queries is left out of the win rate and
    counted in ``invalid_rate`` (not in ``tie_rate``). It needs each example's ``reference``.
    """

    requires_reference = True

    def __init__(self, metric: str = "auto"):
        if metric != "auto" and metric not in _SURROGATE_METRICS:
            raise ValueError(f"unknown surrogate metric {metric!r}; expected 'auto' or one of "
                             f"{', '.join(_SURROGATE_METRICS)}")
        self.metric = metric
        self.name = f"surrogate:{metric}-vs-reference"
        self._memo: dict[tuple[str, str, str], float] = {}

    def __repr__(self) -> str:
        return f"SurrogateJudge(metric={self.metric!r})"

    def metric_for(self, task: str, criterion: str) -> str:
        return _AUTO[(task, criterion)] if self.metric == "auto" else self.metric

    def label(self, task: str, criterion: str) -> str:
        return f"surrogate:{_SLUG[self.metric_for(task, criterion)]}-vs-reference"

    def identity(self) -> dict:
        return {"backend": "surrogate", "metric": self.metric, "version": 1}

    def complete(self, prompt: str) -> str:
        raise JudgeError("SurrogateJudge needs the candidates and the reference, not just a "
                         "prompt; call it through judge_pairs()/judge_table()")

    def score(self, metric: str, output: str, reference: str) -> float:
        key = (metric, output, reference)
        if key not in self._memo:
            self._memo[key] = _SURROGATE_METRICS[metric][1](output, reference)
        return self._memo[key]

    def answer(self, query: JudgeQuery) -> str:
        if query.reference is None:
            raise JudgeError("SurrogateJudge needs a 'reference' for every example")
        metric = self.metric_for(query.task, query.criterion)
        mname = _SURROGATE_METRICS[metric][0]
        s1 = self.score(metric, query.candidate_1, query.reference)
        s2 = self.score(metric, query.candidate_2, query.reference)
        head = _CRITERION_LABEL.get(query.criterion, query.criterion)
        if abs(s1 - s2) <= 1e-9:
            return (f"{head}: {query.id_1} and {query.id_2} have the same {mname} against the "
                    f"reference ({s1:.4g}), so the surrogate judge cannot separate them.\n"
                    f"Preferred: tie")
        win, lose, sw, sl = ((query.id_1, query.id_2, s1, s2) if s1 > s2
                             else (query.id_2, query.id_1, s2, s1))
        return (f"{head}: {win} has the higher {mname} against the reference ({sw:.4g} vs "
                f"{sl:.4g} for {lose}), so the surrogate judge prefers {win}.\n"
                f"Preferred: {win}")
