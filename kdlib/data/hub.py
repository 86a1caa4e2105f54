"""The paper's datasets, from the Hugging Face hub or from local files in the hub's own schema.

Tasks (train/dev/test): ``EdinburghNLP/xsum``; ``Helsinki-NLP/europarl`` config ``en-nl``;
``openai/gsm8k`` config ``main``. Missing splits are carved out of train with the paper's sizes
(Table 3, App. C), scaled down for small files.

Evaluation sets of the rival systems (seeds 003 and 004), test split only: GSM-Plus
(``qintongli/GSM-Plus``), GSM-Symbolic (``apple/GSM-Symbolic`` config ``main``) and MATH
(``EleutherAI/hendrycks_math``, its seven subject configs).

Local files may be JSONL/JSON/Parquet/CSV, one file or a folder (the hub layout
``<config>/<split>-*.parquet`` included). ``trust_remote_code`` is never used.
"""

from __future__ import annotations

import glob
import os
import re
import warnings

import datasets
import numpy as np

from kdlib.data.common import SPLITS, _derive_seed, _string_features

# Hub dataset name and config of each real task.
HUB_SOURCES = {
    "xsum": ("EdinburghNLP/xsum", None),
    "europarl": ("Helsinki-NLP/europarl", "en-nl"),
    "gsm8k": ("openai/gsm8k", "main"),
}

# The paper's split sizes (seed 000, App. C, Table 3). Used as the default size of a split that
# has to be carved out of train (Europarl dev/test, GSM8K dev), scaled down for small files.
PAPER_SPLIT_SIZES = {
    "xsum": {"train": 202_926, "dev": 11_332, "test": 11_333},
    "europarl": {"train": 1_167_808, "dev": 10_014, "test": 10_016},
    "gsm8k": {"train": 6_705, "dev": 768, "test": 1_319},
}

_BUILDERS = ((".jsonl.gz", "json"), (".json.gz", "json"), (".jsonl", "json"), (".json", "json"),
             (".parquet", "parquet"), (".csv.gz", "csv"), (".csv", "csv"), (".arrow", "arrow"))
_SPLIT_PATTERNS = (
    ("test", re.compile(r"(^|[^a-z])(test|testing)([^a-z]|$)")),
    ("dev", re.compile(r"(^|[^a-z])(validation|valid|val|dev)([^a-z]|$)")),
    ("train", re.compile(r"(^|[^a-z])(train|training)([^a-z]|$)")),
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_HUB_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}


def _builder_of(path: str) -> str | None:
    low = path.lower()
    for ext, builder in _BUILDERS:
        if low.endswith(ext):
            return builder
    return None


def _looks_local(path: str) -> bool:
    """True for strings that can only be a filesystem path (not a hub ``org/name``)."""
    return (path.startswith(("/", ".", "~", "\\")) or os.sep in path.replace("/", "") or
            not _HUB_ID.match(path) or _builder_of(path) is not None or path.count("/") > 1)


def _local_split_files(path: str, config: str | None, strict: bool = True) -> tuple[dict[str, list[str]], str]:
    """Data files of a local path by split ("train"/"dev"/"test"), and the datasets builder.

    Files whose name gives no split are all train when no file does; otherwise ``strict`` refuses
    them and ``strict=False`` leaves them out (an evaluation set's folder may hold other files,
    such as GSM-Plus's ``testmini``).
    """
    if os.path.isdir(path):
        root = path
        if config and os.path.isdir(os.path.join(path, config)):  # hub layout: <config>/<split>-*.parquet
            root = os.path.join(path, config)
        files = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            files += [os.path.join(dirpath, f) for f in sorted(filenames)
                      if not f.startswith(".") and _builder_of(f) is not None]
        rel = {f: os.path.relpath(f, root) for f in files}
    elif os.path.isfile(path):
        files, rel = [path], {path: os.path.basename(path)}
    else:
        files = sorted(f for f in glob.glob(path) if os.path.isfile(f) and _builder_of(f))
        rel = {f: os.path.basename(f) for f in files}
    if not files:
        raise FileNotFoundError(f"no data files (.jsonl/.json/.parquet/.csv) found at {path!r}")
    builders = {_builder_of(f) for f in files}
    if len(builders) > 1:
        raise ValueError(f"{path!r} mixes data formats ({', '.join(sorted(builders))}); keep one format")
    by_split: dict[str, list[str]] = {}
    unassigned = []
    for f in files:
        name = rel[f].lower()
        split = next((s for s, pattern in _SPLIT_PATTERNS if pattern.search(name)), None)
        if split is None:
            unassigned.append(f)
        else:
            by_split.setdefault(split, []).append(f)
    if unassigned and by_split and strict:
        raise ValueError(f"cannot tell the split of {unassigned} under {path!r}: name files"
                         " train/validation/test (e.g. train.jsonl, validation.jsonl, test.jsonl)")
    if unassigned and not by_split:
        by_split["train"] = unassigned  # one unnamed file (or several): all of it is train
    return by_split, builders.pop()


def _read_raw(name: str, source: str, config: str | None, cache_dir,
              strict: bool = True) -> dict[str, tuple[datasets.Dataset, str]]:
    """Raw splits ``{split: (dataset in the hub schema, where it came from)}``."""
    hf_cache = os.path.join(os.fspath(cache_dir), "hf-datasets")
    local = os.path.expanduser(source)
    if os.path.exists(local) or (glob.has_magic(local) and glob.glob(local)):
        by_split, builder = _local_split_files(local, config, strict)
        out = {}
        for split, files in by_split.items():
            origin = files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more)"
            try:
                ds = datasets.load_dataset(builder, data_files={"train": files}, split="train", cache_dir=hf_cache)
            except Exception as e:  # malformed file: say which one
                raise ValueError(f"could not read {origin} as {builder}: {e}") from e
            out[split] = (ds, origin)
        return out
    if _looks_local(source):
        raise FileNotFoundError(f"data path for task {name!r} does not exist: {source!r}")
    # A hub dataset goes through the library's own cache (HF_DATASETS_CACHE, by default $HF_HOME/datasets): offline
    # (HF_HUB_OFFLINE=1), `datasets` finds a hub dataset only there, where a pre-download put it.
    try:
        try:
            dd = datasets.load_dataset(source, config)
        except RuntimeError as e:
            if "script" not in str(e).lower():
                raise
            # A repository that still ships a loading script (no longer run by `datasets`, and
            # never with trust_remote_code here): read the hub's own Parquet conversion instead.
            dd = datasets.load_dataset(source, config, revision="refs/convert/parquet")
    except Exception as e:
        error = ConnectionError if isinstance(e, OSError) else RuntimeError  # ConnectionError is an OSError
        raise error(
            f"could not load {source!r} (config {config!r}) for task {name!r} from the Hugging Face hub"
            f" ({type(e).__name__}: {e}). No local path {source!r} exists either. If the hub is"
            f" unreachable (offline), pass path=<a local directory or file in the hub's schema>."
        ) from e
    return {_HUB_SPLITS[s]: (ds, f"{source}[{s}]") for s, ds in dd.items() if s in _HUB_SPLITS}


def _to_source_target(name: str, split: str, ds: datasets.Dataset, origin: str) -> datasets.Dataset:
    """Map one raw split to columns id/source/target, checking the schema."""
    def require(column: str) -> None:
        if column not in ds.column_names:
            raise ValueError(f"{origin}: missing required field {column!r} for task {name!r}"
                             f" (columns: {ds.column_names})")

    if name == "xsum":
        require("document")
        require("summary")
        src, tgt = "document", "summary"
    elif name == "gsm8k":
        require("question")
        require("answer")
        src, tgt = "question", "answer"
    else:  # europarl: {"translation": {"en": ..., "nl": ...}}
        require("translation")
        feature = ds.features["translation"]
        if isinstance(feature, datasets.Translation):  # the hub's own feature type: a struct of the languages
            feature = dict.fromkeys(feature.languages)
        if not isinstance(feature, dict):
            raise ValueError(f"{origin}: field 'translation' must be an object with 'en' and 'nl'"
                             f" (got {feature})")
        for lang in ("en", "nl"):
            if lang not in feature:
                raise ValueError(f"{origin}: missing required field 'translation.{lang}' for task {name!r}")
        ds = ds.flatten()
        src, tgt = "translation.en", "translation.nl"

    keep_id = name == "xsum" and "id" in ds.column_names
    ds = ds.select_columns([c for c in (("id",) if keep_id else ()) + (src, tgt)])
    ds = ds.rename_columns({src: "source", tgt: "target"})
    if keep_id:
        if ds.features["id"] != datasets.Value("string"):
            ds = ds.cast_column("id", datasets.Value("string"))
    else:
        ds = ds.add_column("id", [f"{name}-{split}-{i:07d}" for i in range(len(ds))])
    for column in ("source", "target"):
        if ds.features[column] != datasets.Value("string"):
            ds = ds.cast_column(column, datasets.Value("string"))
    # Rows with a null source/target cannot be used; drop them and say so.
    valid = np.ones(len(ds), dtype=bool)
    for column in ("id", "source", "target"):
        col = ds.data.column(column)
        if col.null_count:
            valid &= ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if not valid.all():
        warnings.warn(f"{origin}: dropping {int((~valid).sum())} rows with an empty id/source/target", stacklevel=3)
        ds = ds.select(np.flatnonzero(valid))
    return ds.select_columns(["id", "source", "target"])


def _permutation(n: int, *key: object) -> np.ndarray:
    return np.random.default_rng(_derive_seed("kdlib.data", *key)).permutation(n)


def _default_carve_size(name: str, split: str, n_rows: int) -> int:
    """The paper's size of a split carved from train, scaled down for a small file."""
    paper = PAPER_SPLIT_SIZES[name]
    carved = [s for s in ("dev", "test") if s in _CARVED[name]]
    pool = paper["train"] + sum(paper[s] for s in carved)  # the paper's train before carving
    return min(paper[split], max(1, round(n_rows * paper[split] / pool)))


# Splits the hub lacks and that are carved from train (seed 000, Sec. 3.1 / Table 3).
_CARVED = {"xsum": (), "europarl": ("dev", "test"), "gsm8k": ("dev",)}


def _load_hub(name, cache_dir, path, n_train, n_dev, n_test, seed) -> datasets.DatasetDict:
    hub_name, config = HUB_SOURCES[name]
    source = hub_name if path is None else os.fspath(path)
    raw = _read_raw(name, source, config, cache_dir)
    if "train" not in raw:
        raise ValueError(f"{source!r}: no train split found for task {name!r} (splits: {sorted(raw)})")
    splits = {s: _to_source_target(name, s, ds, origin) for s, (ds, origin) in raw.items()}
    asked = {"train": n_train, "dev": n_dev, "test": n_test}
    for s, n in asked.items():
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ValueError(f"n_{s} must be a non-negative int or None, got {n!r}")

    # Carve the missing splits out of train: one seeded permutation, test first, then dev.
    missing = [s for s in ("test", "dev") if s not in splits]
    if missing:
        train, origin = splits["train"], raw["train"][1]
        sizes = {}
        for s in missing:
            if asked[s] is not None:
                sizes[s] = asked[s]
            else:
                sizes[s] = _default_carve_size(name, s, len(train))
                if sizes[s] < PAPER_SPLIT_SIZES[name][s]:
                    warnings.warn(f"{name}: {origin} has {len(train)} train rows; carving {s}={sizes[s]}"
                                  f" (paper: {PAPER_SPLIT_SIZES[name][s]})", stacklevel=3)
        need = sum(sizes.values()) + max(1, n_train or 0)
        if need > len(train):
            raise ValueError(
                f"{origin} has {len(train)} rows, too few to carve "
                + ", ".join(f"n_{s}={sizes[s]}" for s in missing)
                + f" and keep n_train={max(1, n_train or 0)}; pass smaller n_dev/n_test")
        perm = _permutation(len(train), name, seed, "carve")
        start = 0
        for s in missing:
            splits[s] = train.select(perm[start:start + sizes[s]])
            start += sizes[s]
            asked[s] = None  # already exactly the asked size
        splits["train"] = train.select(perm[start:])

    # Subsample: the first n after a seeded shuffle.
    for s in SPLITS:
        n = asked[s]
        if n is None:
            continue
        if n > len(splits[s]):
            raise ValueError(f"{name}: asked n_{s}={n} but the {s} split has only {len(splits[s])} rows")
        splits[s] = splits[s].select(_permutation(len(splits[s]), name, seed, "subsample", s)[:n])
    return datasets.DatasetDict({s: splits[s] for s in SPLITS})


# =============================================================================================
# Evaluation sets of seeds 003 and 004 (test split only)
# =============================================================================================

HUB_EVAL_SETS = ("gsm-plus", "gsm-symbolic", "math")
MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
                 "prealgebra", "precalculus")
# Hub dataset name and config(s). MATH: the full 5,000-problem test set (seed 004 evaluates on
# it) as EleutherAI's Parquet copy of hendrycks/competition_math, one config per subject;
# HuggingFaceH4/MATH-500 (the 500-problem subset, same problem/solution fields) works as a path.
HUB_EVAL_SOURCES: dict[str, tuple[str, str | tuple[str, ...] | None]] = {
    "gsm-plus": ("qintongli/GSM-Plus", None),
    "gsm-symbolic": ("apple/GSM-Symbolic", "main"),
    "math": ("EleutherAI/hendrycks_math", MATH_SUBJECTS),
}
HUB_EVAL_COLUMNS = {
    "gsm-plus": ("id", "source", "target", "perturbation", "base_source", "base_target"),
    "gsm-symbolic": ("id", "source", "target", "template_id", "instance", "base_source", "base_target"),
    "math": ("id", "source", "target", "subject", "level"),
}
# Required fields (-> source, target) and optional ones (-> extra columns) of each hub schema.
_EVAL_FIELDS = {
    "gsm-plus": (("question", "solution"),
                 {"perturbation": "perturbation_type", "base_source": "seed_question", "base_target": "seed_solution"}),
    "gsm-symbolic": (("question", "answer"),
                     {"template_id": "id", "instance": "instance", "base_source": "original_question",
                      "base_target": "original_answer"}),
    "math": (("problem", "solution"), {"subject": ("type", "subject"), "level": "level"}),
}
# A number right after the last "####" (the rule of kdlib.maths.metrics.gsm8k_answer).
_FINAL_NUMBER = re.compile(r"\s*\$?\s*-?\s*\$?\s*(?:[0-9][0-9,]*(?:\.[0-9]*)?|\.[0-9]+)")
_NUMBER = re.compile(r"\s*-?\$?[0-9][0-9,]*(?:\.[0-9]+)?\s*")


def _has_final_number(text: str) -> bool:
    start = text.rfind("####")
    return start >= 0 and _FINAL_NUMBER.match(text, start + 4) is not None


def _read_eval_split(name: str, source: str, config: str | None, cache_dir) -> tuple[datasets.Dataset, str]:
    """The test split of one source (hub name or local path), or its only split."""
    raw = _read_raw(name, source, config, cache_dir, strict=False)
    if "test" in raw:
        return raw["test"]
    if len(raw) == 1:  # an unnamed local file, or a hub dataset with one split
        return next(iter(raw.values()))
    raise ValueError(f"{source!r}: no test split found for evaluation set {name!r} (splits: {sorted(raw)})")


def _eval_rows(name: str, ds: datasets.Dataset, origin: str, start: int) -> tuple[list[dict], int]:
    """Rows id/source/target/extras of one raw split in the hub schema, and how many were dropped."""
    (src, tgt), extras = _EVAL_FIELDS[name]
    for column in (src, tgt):
        if column not in ds.column_names:
            raise ValueError(f"{origin}: missing required field {column!r} for evaluation set {name!r}"
                             f" (columns: {ds.column_names})")
    rows, dropped = [], 0
    for i, raw in enumerate(ds.to_list(), start=start):
        source, target = raw.get(src), raw.get(tgt)
        if not isinstance(source, str) or not isinstance(target, str) or not source.strip() or not target.strip():
            dropped += 1
            continue
        if name in ("gsm-plus", "gsm-symbolic") and not _has_final_number(target):
            answer = raw.get("answer")
            if name == "gsm-plus" and isinstance(answer, (str, int, float)) and _NUMBER.fullmatch(str(answer)):
                target = f"{target.rstrip()}\n#### {str(answer).strip()}"
            else:  # GSM-Plus "critical thinking" rows ("#### None"): no numeric answer to score
                dropped += 1
                continue
        row = {"source": source, "target": target}
        for column, fields in extras.items():
            value = next((raw[f] for f in ((fields,) if isinstance(fields, str) else fields)
                          if raw.get(f) is not None), "")
            row[column] = str(value)
        if name == "gsm-symbolic" and row["template_id"] and row["instance"]:
            row["id"] = f"gsm-symbolic-{row['template_id']}-{row['instance']}"
        elif name == "math" and raw.get("unique_id"):  # MATH-500
            row["id"] = str(raw["unique_id"])
        else:
            row["id"] = f"{name}-{i:06d}"
        rows.append(row)
    return rows, dropped


def _load_hub_eval(name: str, cache_dir, path, n: int | None, seed: int) -> datasets.Dataset:
    hub_name, configs = HUB_EVAL_SOURCES[name]
    source = hub_name if path is None else os.fspath(path)
    if not isinstance(configs, tuple):
        configs = (configs,)
    elif source != hub_name:  # a local copy (all subjects under one folder) or another hub name
        configs = (None,)
    rows, dropped, origins = [], 0, []
    for config in configs:
        ds, origin = _read_eval_split(name, source, config, cache_dir)
        got, lost = _eval_rows(name, ds, origin, start=len(rows) + dropped)
        rows += got
        dropped += lost
        origins.append(origin)
    if dropped:
        warnings.warn(f"{name}: dropping {dropped} rows of {', '.join(origins)} without a question or a numeric"
                      f" final answer", stacklevel=3)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
        raise ValueError(f"n must be a non-negative int or None, got {n!r}")
    features = _string_features(HUB_EVAL_COLUMNS[name])
    ds = datasets.Dataset.from_list([{c: r[c] for c in features} for r in rows], features=features)
    if n is not None:
        if n > len(ds):
            raise ValueError(f"{name}: asked n={n} but {', '.join(origins)} has only {len(ds)} usable rows")
        ds = ds.select(_permutation(len(ds), name, seed, "subsample", "test")[:n])
    return ds
