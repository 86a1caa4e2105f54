"""Starting points that do not depend on the machine: the teacher and the pre-distilled student of each embedded task,
trained once with PyTorch's portable kernels (ATEN_CPU_CAPABILITY=default) and once with this machine's own vector
kernels (which round differently, as another CPU does), must reach the same primary test metric within 2 points.

Slow (it trains the embedded starting chain of every task twice, the two kernel settings side by side on two cores;
two to three hours on 2 cores on the 20,000-example tasks at ambiguity 1: the portable chains took 50-56 CPU-minutes
per task there, more than CI's time beside the suite and the rehearsal): it runs where
KDLIB_CROSS_KERNEL=1 (`KDLIB_CROSS_KERNEL=1 ./run_tests.sh tests/test_cross_kernel.py`), and is skipped elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 2.0  # primary-metric points

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.environ.get("KDLIB_CROSS_KERNEL") != "1",
                                 reason="trains the embedded starting chains twice; set KDLIB_CROSS_KERNEL=1")]


def _train(task: str, cache: Path, capability: str | None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "KDLIB_PROGRESS": "0"}
    env.pop("ATEN_CPU_CAPABILITY", None)
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    cmd = [sys.executable, "-m", "kdlib", "train", "-f", "params/embedded/kit.yaml", "--set", f"task.name={task}",
           "--set", "method=predistill", "--set", f"cache_dir={cache}"]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _summary(cache: Path, task: str, stage: str) -> dict:
    (path,) = (cache / "runs" / task).glob(f"{stage}-*/summary.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("task", ["mini-xsum", "mini-europarl", "mini-gsm8k"])
def test_starting_points_agree_across_cpu_kernels(task, tmp_path):
    caches = {"default": tmp_path / "default", "native": tmp_path / "native"}
    procs = {name: _train(task, cache, "default" if name == "default" else None) for name, cache in caches.items()}
    for name, proc in procs.items():
        _, err = proc.communicate()
        assert proc.returncode == 0, f"{task} ({name} kernels) failed:\n{err[-3000:]}"
    for stage in ("teacher", "predistill"):
        a, b = (_summary(caches[name], task, stage) for name in ("default", "native"))
        primary = a["primary"]
        assert a["converged"] and b["converged"], f"{task} {stage}: not converged ({a['stop_reason']}, {b['stop_reason']})"
        gap = abs(a["test"][primary] - b["test"][primary])
        assert gap <= TOLERANCE, (f"{task} {stage}: test {primary} {a['test'][primary]:.2f} (default kernels, stopped at "
                                  f"{a['stopped_at']}) vs {b['test'][primary]:.2f} (native, stopped at {b['stopped_at']})")
