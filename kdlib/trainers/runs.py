"""Run folders (floor 1): keyed by a hash of the resolved parameters, finished only when their
summary is written (atomically), resumable from their last checkpoint.

Layout of ``<cache_dir>/runs/<task>/<stage>-<key>/``::

    params.json        resolved parameters of this stage (and its parents' keys)
    metrics.jsonl      one JSON line per log event: train/... and eval/... values by step
    ckpt/last/         resumable state: weights (safetensors), optimizer.pt, state.json (written last)
    ckpt/best/         weights at the best dev score (model selection)
    outputs/*.jsonl    decoded test outputs (source, output, reference)
    summary.json       written last, atomically: the run is finished iff this file exists
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from kdlib.config import params_hash


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file; a torn last line (a killed writer) is ignored."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text().splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


class Run:
    """One stage of one chain (teacher, pre-distillation, or a distillation method)."""

    def __init__(self, cache_dir: str | Path, task: str, stage: str, key_data: dict):
        self.key = params_hash(key_data)
        self.stage = stage
        self.task = task
        self.key_data = key_data
        self.path = Path(cache_dir) / "runs" / task / f"{stage}-{self.key}"

    def __repr__(self) -> str:
        return f"Run({self.stage}, {self.path})"

    # --- state
    @property
    def finished(self) -> bool:
        return (self.path / "summary.json").is_file()

    def summary(self) -> dict:
        if not self.finished:
            raise FileNotFoundError(f"{self.path}: run not finished (no summary.json); train it first")
        return json.loads((self.path / "summary.json").read_text())

    def start(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / "params.json", self.key_data)

    def lock(self, wait_s: float = 3600.0):
        """An exclusive lock on this run's folder while it trains (``with run.lock(): ...``): a
        second process asked to train the same run waits for the first, then finds it finished,
        instead of both writing the same checkpoints. Released when the process exits, even killed."""
        import fcntl
        import time

        @contextlib.contextmanager
        def held():
            self.path.mkdir(parents=True, exist_ok=True)
            fh = open(self.path / ".lock", "a+")
            t0, told = time.time(), False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not told:
                        print(f"[kdlib] {self.path} is being trained by another process; waiting", flush=True)
                        told = True
                    if time.time() - t0 > wait_s:
                        fh.close()
                        raise TimeoutError(f"{self.path}: still locked by another process after {wait_s:.0f} s")
                    time.sleep(1.0)
            with self._held(fh):
                yield self

        return held()

    @contextlib.contextmanager
    def _held(self, fh):
        """Yield this run with ``fh``'s lock held (taken by the caller); release and close it on exit."""
        import fcntl

        try:
            yield self
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def try_lock(self):
        """This folder's lock if no other process holds it, as a context manager that releases it (enter it at
        once); None when another process is training the run."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        fh = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            return None

        return self._held(fh)

    def finish(self, summary: dict) -> None:
        atomic_write_json(self.path / "summary.json", {"run": self.key, "stage": self.stage, **summary})

    # --- metrics
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()

    def metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def truncate_metrics(self, last_step: int) -> None:
        """On resume: keep only the records up to the checkpointed step (no duplicated curve)."""
        rows = [r for r in self.metrics() if r.get("step", 0) <= last_step]
        write_jsonl(self.metrics_path, rows)

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one logged metric, e.g. ``curve("eval/return")``."""
        xs, ys = [], []
        for r in self.metrics():
            if key in r:
                xs.append(r["step"])
                ys.append(r[key])
        return xs, ys

    # --- folders
    @property
    def last_dir(self) -> Path:
        return self.path / "ckpt" / "last"

    @property
    def best_dir(self) -> Path:
        return self.path / "ckpt" / "best"

    def outputs(self, split: str = "test") -> list[dict]:
        return read_jsonl(self.path / "outputs" / f"{split}.jsonl")

    def resume_state(self) -> dict | None:
        """``state.json`` of the last checkpoint if it is complete (its weights carry the same step)."""
        state_file = self.last_dir / "state.json"
        meta_file = self.last_dir / "kdlib_meta.json"
        if not (state_file.is_file() and meta_file.is_file()):
            return None
        state = json.loads(state_file.read_text())
        meta = json.loads(meta_file.read_text())
        if meta.get("step") != state.get("step") or not (self.last_dir / "optimizer.pt").is_file():
            return None
        return state


def iter_runs(cache_dir: str | Path, task: str | None = None) -> Iterator[Path]:
    root = Path(cache_dir) / "runs"
    pattern = f"{task}/*" if task else "*/*"
    yield from sorted(p for p in root.glob(pattern) if p.is_dir())
