"""Helpers shared by the task generators, the evaluation sets and the hub loaders.

Seeds derived from names (stable across processes), the row schema, prompt substitution, and the
JSONL cache: a cache folder counts as complete only once its ``meta.json`` (written last,
atomically) exists and matches the key; every file goes through a temp file and ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile

import datasets

SPLITS = ("train", "dev", "test")

# Bump whenever a generator's output changes: it is part of the cache key.
GENERATOR_VERSION = 2

FEATURES = datasets.Features(
    {"id": datasets.Value("string"), "source": datasets.Value("string"), "target": datasets.Value("string")}
)


def apply_prompt(template: str, source: str) -> str:
    """Put ``source`` where ``{source}`` is in ``template``.

    Plain substitution rather than ``str.format``, so braces elsewhere in the template or in the
    source are left alone.
    """
    if "{source}" not in template:
        raise ValueError(f"prompt template must contain '{{source}}': {template!r}")
    return template.replace("{source}", source)


def _derive_seed(*parts: object) -> int:
    """A 64-bit seed from any parts, stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(word: str) -> str:
    """English indefinite article for ``word`` ("a European", "an important")."""
    w = word.lower()
    vowel = w[:1] in "aeiou" and not w.startswith(("eu", "uni", "use"))
    return "an" if vowel else "a"


def _stream_rng(name: str, seed: int) -> random.Random:
    """The random stream of generated task ``name`` (every example is drawn from it in turn)."""
    return random.Random(_derive_seed("kdlib.data", name, seed, GENERATOR_VERSION))


def _empty(features: datasets.Features = FEATURES) -> datasets.Dataset:
    return datasets.Dataset.from_dict({c: [] for c in features}, features=features)


def _string_features(columns) -> datasets.Features:
    """A schema of string columns (the evaluation sets: id/source/target and their extras)."""
    return datasets.Features({c: datasets.Value("string") for c in columns})


def _atomic_write(path: str, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the cache is plain data
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _keyed_folder(cache_dir, name: str, key: dict) -> tuple[str, dict]:
    """``cache_dir/data/<name>-<hash of key>``, and the key (stored in meta.json)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(os.fspath(cache_dir), "data", f"{name}-{digest}"), key


def _cache_folder(cache_dir, name: str, sizes: dict, seed: int) -> tuple[str, dict]:
    key = {"name": name, **{f"n_{s}": sizes[s] for s in SPLITS}, "seed": seed,
           "generator_version": GENERATOR_VERSION}
    return _keyed_folder(cache_dir, name, key)


def _read_cached(folder: str, key: dict, splits=SPLITS,
                 features: datasets.Features = FEATURES) -> datasets.DatasetDict | None:
    """The cached splits, or None when the folder is incomplete or does not match ``key``."""
    try:
        with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        if meta.get("key") != key:
            return None
        out = {}
        for split in splits:
            with open(os.path.join(folder, f"{split}.jsonl"), encoding="utf-8") as f:
                text = f.read()
            if hashlib.sha256(text.encode()).hexdigest() != meta["sha256"][split]:
                return None
            rows = [json.loads(line) for line in text.splitlines() if line]
            out[split] = datasets.Dataset.from_list(rows, features=features) if rows else _empty(features)
        return datasets.DatasetDict(out)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(folder: str, key: dict, dd, splits=SPLITS, features: datasets.Features = FEATURES) -> None:
    """Write the splits of ``dd`` as JSONL, then ``meta.json`` (last: it marks the folder complete)."""
    os.makedirs(folder, exist_ok=True)
    meta_path = os.path.join(folder, "meta.json")
    try:  # stale or corrupt: un-mark the folder before touching the splits
        os.unlink(meta_path)
    except FileNotFoundError:
        pass
    digests, counts = {}, {}
    for split in splits:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in dd[split].to_list())
        _atomic_write(os.path.join(folder, f"{split}.jsonl"), text)
        digests[split] = hashlib.sha256(text.encode()).hexdigest()
        counts[split] = len(dd[split])
    meta = {"key": key, "sizes": counts, "sha256": digests, "columns": list(features)}
    _atomic_write(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")  # last: marks completion
