"""Tasks: each one is a ``datasets.DatasetDict`` with splits train/dev/test and columns id/source/target.

Two families share one entry point, :func:`load_task`:

* **Embedded tasks** (``mini-xsum``, ``mini-europarl``, ``mini-gsm8k``) are generated here,
  deterministically from a seed, so the whole kit runs on a laptop with no network. Each mirrors
  one of the paper's datasets (seed 000, Sec. 3.1):

  - ``mini-xsum``: a 3-6 sentence news-like document about one event (main actor, event, place,
    time) padded with distractors (quotes, background, a rival actor's event last year); the
    target is one *abstractive* headline-style sentence (actor shortened, event verb paraphrased
    through a lexicon, place folded in), never a substring of the document.
  - ``mini-europarl``: English -> Dutch from a small bilingual grammar with Dutch word order:
    verb-second main clauses with inversion after a fronted adverbial or subordinate clause,
    verb-final subordinate and relative clauses, separable verbs (``wijst ... af``), the perfect
    with the participle at the end, de/het gender with adjective inflection, ``niet`` placement.
  - ``mini-gsm8k``: 2-4 step word problems whose solutions use GSM8K's own format, one worded
    step per line with a calculator annotation (``... 48/2 = <<48/2=24>>24 clips ...``) and a
    final ``#### 72`` line. All results are integers by construction.

  ``load_task`` caches a generated task as JSONL under ``cache_dir/data/<name>-<hash>/``; the
  folder counts as complete only once ``meta.json`` (written last, atomically) exists.

* **Hub tasks** (``xsum``, ``europarl``, ``gsm8k``) are the paper's datasets, read either from the
  Hugging Face hub (``EdinburghNLP/xsum``; ``Helsinki-NLP/europarl`` config ``en-nl``;
  ``openai/gsm8k`` config ``main``) or from local files in the hub's own schema
  (JSONL/JSON/Parquet/CSV). Missing splits are carved out of train with the paper's sizes
  (Table 3, App. C), scaled down for small files. ``trust_remote_code`` is never used.

Held-out **evaluation sets** (one ``datasets.Dataset`` each, columns id/source/target plus extras,
``EVAL_SET_COLUMNS``) share :func:`load_eval_set`; they are for models trained on the task
``EVAL_SET_TASK[name]`` (its prompts, tokenizer and length limits):

* embedded, generated from a seed for mini-gsm8k models (:mod:`kdlib.data.gsm_eval`):
  ``mini-gsm-plus`` (GSM-Plus perturbations of mini-gsm8k's test problems, ``perturbation``
  column), ``mini-gsm-symbolic`` (the templates with held-out names and new numbers),
  ``mini-gsm-hard`` (longest solutions, larger numbers); cached like the tasks;
* hub (:mod:`kdlib.data.hub`): ``gsm-plus`` (``qintongli/GSM-Plus``), ``gsm-symbolic``
  (``apple/GSM-Symbolic`` config ``main``), ``math`` (``EleutherAI/hendrycks_math``, all subjects);
  their final answers are read with ``kdlib.maths.metrics.gsm8k_answer`` or ``kdlib.maths.metrics.math_answer``
  (``EVAL_SET_ANSWER``).

The package imports nothing else of the kit (floor 1, but self-contained). Layout: ``common`` (seeds,
schema, prompts, cache), ``xsum``/``europarl``/``gsm8k`` (one generator each), ``gsm_eval`` (the
embedded evaluation sets), ``hub`` (the hub loaders); this ``__init__`` is the registry and the
public API.
"""

from __future__ import annotations


import datasets

from kdlib.data.common import (
    FEATURES,
    GENERATOR_VERSION,
    SPLITS,
    _cache_folder,
    _empty,
    _keyed_folder,
    _read_cached,
    _string_features,
    _write_cache,
    apply_prompt,
)
from kdlib.data.gsm_eval import (
    DEFAULT_EVAL_SIZES,
    EMBEDDED_EVAL_SETS,
    EVAL_COLUMNS,
    EVAL_GENERATOR_VERSION,
    PERTURBATIONS,
    generate_eval_set,
)
from kdlib.data.hub import (
    HUB_EVAL_COLUMNS,
    HUB_EVAL_SETS,
    HUB_EVAL_SOURCES,
    HUB_SOURCES,
    MATH_SUBJECTS,
    PAPER_SPLIT_SIZES,
    _load_hub,
    _load_hub_eval,
)
from kdlib.data.truth import GENERATORS as _GENERATORS
from kdlib.data.truth import TaskTruth, check_ambiguity, example_stream, target_draw, task_truth
from kdlib.data.variants import VARIANTS_VERSION

__all__ = [
    "DEFAULT_EVAL_SIZES",
    "DEFAULT_PROMPTS",
    "DEFAULT_SIZES",
    "EMBEDDED_EVAL_SETS",
    "EMBEDDED_TASKS",
    "EVAL_GENERATOR_VERSION",
    "EVAL_SETS",
    "EVAL_SET_ANSWER",
    "EVAL_SET_COLUMNS",
    "EVAL_SET_TASK",
    "FEATURES",
    "GENERATOR_VERSION",
    "HUB_EVAL_SETS",
    "HUB_EVAL_SOURCES",
    "HUB_SOURCES",
    "HUB_TASKS",
    "MATH_SUBJECTS",
    "PAPER_SPLIT_SIZES",
    "PERTURBATIONS",
    "SPLITS",
    "apply_prompt",
    "generate_embedded",
    "generate_eval_set",
    "generate_examples",
    "is_valid",
    "log_likelihood",
    "TaskTruth",
    "VARIANTS_VERSION",
    "task_truth",
    "load_eval_set",
    "load_task",
    "task_kind",
]

EMBEDDED_TASKS = ("mini-xsum", "mini-europarl", "mini-gsm8k")
HUB_TASKS = ("xsum", "europarl", "gsm8k")

# (n_train, n_dev, n_test) when load_task is given None.
DEFAULT_SIZES = {name: (4000, 300, 300) for name in EMBEDDED_TASKS}

EVAL_SETS = EMBEDDED_EVAL_SETS + HUB_EVAL_SETS
# The task whose trained models an evaluation set is for: its prompts (DEFAULT_PROMPTS), its
# tokenizer and its length limits apply.
EVAL_SET_TASK = {
    "mini-gsm-plus": "mini-gsm8k", "mini-gsm-symbolic": "mini-gsm8k", "mini-gsm-hard": "mini-gsm8k",
    "gsm-plus": "gsm8k", "gsm-symbolic": "gsm8k", "math": "gsm8k",
}
# How a target's final answer is read: "gsm8k" = kdlib.maths.metrics.gsm8k_answer (the number after the
# last "####"), "math" = kdlib.maths.metrics.math_answer (the content of the last \boxed{...}).
EVAL_SET_ANSWER = {name: "math" if name == "math" else "gsm8k" for name in EVAL_SETS}
EVAL_SET_COLUMNS = {**EVAL_COLUMNS, **HUB_EVAL_COLUMNS}

_KINDS = {
    "mini-xsum": "summarization",
    "xsum": "summarization",
    "mini-europarl": "translation",
    "europarl": "translation",
    "mini-gsm8k": "arithmetic",
    "gsm8k": "arithmetic",
}

# Student prompts follow T5's task prefixes. The paper prompts FLAN-T5-XL zero-shot for XSum, so
# its teacher prompt is an instruction; for Europarl and GSM8K the teacher is fine-tuned on the
# same prompt as the student. Embedded teachers are trained from scratch on the student prompt.
DEFAULT_PROMPTS: dict[str, dict[str, str]] = {
    "mini-xsum": {"student": "summarize: {source}", "teacher": "summarize: {source}"},
    "mini-europarl": {
        "student": "translate English to Dutch: {source}",
        "teacher": "translate English to Dutch: {source}",
    },
    "mini-gsm8k": {"student": "solve: {source}", "teacher": "solve: {source}"},
    "xsum": {
        "student": "summarize: {source}",
        "teacher": "Summarize this article in one sentence.\n\n{source}",
    },
    "europarl": {
        "student": "translate English to Dutch: {source}",
        "teacher": "translate English to Dutch: {source}",
    },
    "gsm8k": {"student": "solve: {source}", "teacher": "solve: {source}"},
}


# =============================================================================================
# Small public helpers
# =============================================================================================


def task_kind(name: str) -> str:
    """``"summarization"``, ``"translation"`` or ``"arithmetic"``; ValueError for an unknown task."""
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(
            f"unknown task {name!r}; known tasks: {', '.join(EMBEDDED_TASKS + HUB_TASKS)}"
        ) from None




# =============================================================================================
# Embedded tasks: generation and caching
# =============================================================================================


def _check_embedded(name: str) -> None:
    if name not in EMBEDDED_TASKS:
        task_kind(name)  # ValueError for unknown names
        raise ValueError(f"{name!r} is a hub task, not a generated one; use load_task({name!r}, path=...)")


def generate_examples(name: str, n: int, seed: int, ambiguity: float = 0.0) -> list[dict]:
    """``n`` examples ``{"id", "source", "target"}`` with distinct sources, deterministic in (name, n, seed,
    ambiguity).

    Each target is one draw, at ``ambiguity``, from the distribution of valid targets of its source
    (:mod:`kdlib.data.variants`); ambiguity 0 gives the canonical target (the task as it always was).
    Prefix-stable: the first ``m`` examples of ``generate_examples(name, n, seed)`` are
    ``generate_examples(name, m, seed)``. Ids are ``"<name>-<index:06d>"``.
    """
    _check_embedded(name)
    ambiguity = check_ambiguity(ambiguity)
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    out: list[dict] = []
    budget = 20 * n + 1000  # duplicates are rare; this only guards against an exhausted grammar
    stream = example_stream(name, seed, ambiguity, _GENERATORS[name], budget)
    while len(out) < n:
        try:
            source, node = next(stream)
        except StopIteration:
            raise RuntimeError(f"{name}: only {len(out)} distinct sources after {budget} draws (asked {n})") from None
        target = target_draw(name, seed, source, node, ambiguity)
        out.append({"id": f"{name}-{len(out):06d}", "source": source, "target": target})
    return out


def generate_embedded(name: str, n_train: int, n_dev: int, n_test: int, seed: int,
                      ambiguity: float = 0.0) -> datasets.DatasetDict:
    """Splits "train"/"dev"/"test" of an embedded task; no source appears in two splits.

    Test takes the first ``n_test`` distinct examples of the seed's stream, dev the next
    ``n_dev``, train the rest, so the test set does not change when only ``n_train`` does.
    Ids: ``"<name>-<split>-<index:06d>"``.
    """
    _check_embedded(name)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    for split, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n_{split} must be a non-negative int, got {n!r}")
    examples = generate_examples(name, n_train + n_dev + n_test, seed, ambiguity)
    bounds = {"test": (0, n_test), "dev": (n_test, n_test + n_dev), "train": (n_test + n_dev, len(examples))}
    out = {}
    for split in SPLITS:
        lo, hi = bounds[split]
        rows = [{"id": f"{name}-{split}-{i:06d}", "source": e["source"], "target": e["target"]}
                for i, e in enumerate(examples[lo:hi])]
        out[split] = datasets.Dataset.from_list(rows, features=FEATURES) if rows else _empty()
    return datasets.DatasetDict(out)


def _load_embedded(name, cache_dir, path, n_train, n_dev, n_test, seed, ambiguity=0.0) -> datasets.DatasetDict:
    if path is not None:
        raise ValueError(f"{name!r} is generated, so it takes no path (got path={path!r})")
    defaults = dict(zip(SPLITS, DEFAULT_SIZES[name]))
    sizes = {s: (n if n is not None else defaults[s]) for s, n in zip(SPLITS, (n_train, n_dev, n_test))}
    folder, key = _cache_folder(cache_dir, name, sizes, seed)
    if ambiguity:  # ambiguity 0 keeps the older cache folders
        folder, key = _keyed_folder(cache_dir, name, dict(key, ambiguity=ambiguity, variants_version=VARIANTS_VERSION))
    cached = _read_cached(folder, key)
    if cached is not None:
        return cached
    dd = generate_embedded(name, sizes["train"], sizes["dev"], sizes["test"], seed, ambiguity)
    _write_cache(folder, key, dd)
    return dd


# =============================================================================================
# Entry point
# =============================================================================================


def load_task(name: str, *, cache_dir, path: str | None = None, n_train: int | None = None,
              n_dev: int | None = None, n_test: int | None = None, seed: int = 0,
              ambiguity: float | None = None) -> datasets.DatasetDict:
    """A task as splits "train"/"dev"/"test" with columns id/source/target.

    Embedded tasks are generated (sizes default to ``DEFAULT_SIZES``) and cached as JSONL under
    ``cache_dir/data/<name>-<hash>/``. Hub tasks are read from ``path`` (a local directory/file/glob
    in the hub's schema, or a hub dataset name; default ``HUB_SOURCES[name]``); ``n_*`` subsample
    the first n rows after a shuffle seeded by ``seed``, which also seeds the carved splits.
    ``ambiguity`` (embedded tasks only; None = 0): the spread of the targets, in [0, 1] (see
    :func:`generate_examples`).
    """
    task_kind(name)
    if name in EMBEDDED_TASKS:
        return _load_embedded(name, cache_dir, path, n_train, n_dev, n_test, seed, check_ambiguity(ambiguity or 0.0))
    if ambiguity is not None:
        raise ValueError(f"{name!r} is a hub task: its targets are what the data says (ambiguity must be None)")
    return _load_hub(name, cache_dir, path, n_train, n_dev, n_test, seed)


def load_eval_set(name: str, *, cache_dir, path: str | None = None, n: int | None = None,
                  seed: int = 0) -> datasets.Dataset:
    """A held-out evaluation set as one ``datasets.Dataset`` with columns ``EVAL_SET_COLUMNS[name]``
    (id/source/target first).

    Embedded sets are generated (``n`` rows, default ``DEFAULT_EVAL_SIZES``) and cached as JSONL
    under ``cache_dir/data/<name>-<hash>/`` (complete only once ``meta.json`` is written). Their
    ``seed`` is the mini-gsm8k data seed of the models evaluated (``task.data_seed``): it seeds the
    set, mini-gsm-plus perturbs that seed's test problems, and no set holds that seed's training
    problems. Hub sets are read from ``path`` (a local file/folder in the hub's schema, or a hub
    name; default ``HUB_EVAL_SOURCES[name]``), test split; ``n`` keeps the first n rows after a
    shuffle seeded by ``seed`` (None: all). An unknown name raises a ValueError listing the known ones.
    """
    if name not in EVAL_SETS:
        raise ValueError(f"unknown evaluation set {name!r}; known evaluation sets: {', '.join(EVAL_SETS)}")
    if name in HUB_EVAL_SETS:
        return _load_hub_eval(name, cache_dir, path, n, seed)
    if path is not None:
        raise ValueError(f"{name!r} is generated, so it takes no path (got path={path!r})")
    n = DEFAULT_EVAL_SIZES[name] if n is None else n
    features = _string_features(EVAL_SET_COLUMNS[name])
    key = {"name": name, "n": n, "seed": seed, "generator_version": GENERATOR_VERSION,
           "eval_generator_version": EVAL_GENERATOR_VERSION}
    folder, key = _keyed_folder(cache_dir, name, key)
    cached = _read_cached(folder, key, splits=("test",), features=features)
    if cached is not None:
        return cached["test"]
    ds = generate_eval_set(name, n, seed)
    _write_cache(folder, key, {"test": ds}, splits=("test",), features=features)
    return ds


def is_valid(name: str, source: str, output: str, *, seed: int = 0, ambiguity: float = 0.0) -> bool:
    """Whether ``output`` (whitespace normalised) is a valid target of ``source``, a source of the
    embedded task ``name`` generated with ``seed`` and ``ambiguity``."""
    return task_truth(name, seed, ambiguity).is_valid(source, output)


def log_likelihood(name: str, source: str, output: str, *, seed: int = 0, ambiguity: float = 0.0) -> float:
    """``log P_true(output | source)`` under the generator's distribution (-inf when not valid)."""
    return task_truth(name, seed, ambiguity).log_prob(source, output)
