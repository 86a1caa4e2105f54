"""Training many runs at once (floor 4): the run cache's dependency graph, executed by a pool of
single-thread worker processes.

Every table and figure needs many runs (Table 1: tasks x methods x seeds), and most of them are
independent: a method run needs only its task's pre-distilled student, which needs only the
teacher. :func:`ensure` takes the parameters of the runs a notebook needs, adds the stages they
build on (teacher, pre-distillation), drops the ones already finished, and trains the rest with
``workers`` processes, each run starting as soon as its parent is finished (longest chains
first). While it works it prints one line per finished run and, every ``every_s`` seconds, which
runs are training, their step, and an ETA.

Why processes with one thread each: the embedded models are small, so a run's time is mostly
per-operation overhead, which threads do not share out; on 2 cores two 1-thread processes train
two runs in the time of one, while two 2-thread processes would fight over the cores (measured
here: a teacher step went from 0.08 to 3 s). One thread per run also makes a run's numbers the
same whatever the number of workers (different thread counts may sum floating-point numbers in a
different order). Under ``accelerate launch`` (several processes already) and on a GPU the runs
are trained one after another in this process.

Runs of one method on one task that differ only by seed are trained together as one seed ensemble (one job, one
worker, the students' weights stacked: kdlib.chains.ensembles), where the method supports it, with ``KDLIB_ENSEMBLE=1``
trains every run alone. An ensemble writes the same run folders its single runs would.

Killed part-way, nothing is lost: finished runs are in the cache and interrupted ones resume
from their last checkpoint the next time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable, Iterable

from kdlib.config import Params
from kdlib.trainers.pairing import check_pairs

# Relative cost of a run by (task, stage family), to start long chains first and to estimate the ETA
# before any run has finished. Measured on the embedded profile; only the order matters.
_TASK_WEIGHT = {"mini-gsm8k": 3.0, "mini-xsum": 1.5}


@dataclass
class Job:
    """One run to finish: its params (``p.method`` names the stage), its run, the runs it needs."""

    params: Params
    key: str
    label: str
    stage: str
    parents: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    members: list[Params] = field(default_factory=list)  # a seed ensemble's runs (``params`` is the first's)


def _stage_chain(p: Params) -> list[tuple[Params, object, list[str]]]:
    """(params, run, parent run keys) of every stage the run named by ``p`` needs, parents first
    (the stage registry of kdlib.chains.core says what builds on what)."""
    from kdlib.chains.core import parents_of, run_for

    out, seen = [], set()

    def visit(q: Params) -> str:
        run = run_for(q)
        key = str(run.path)
        if key not in seen:
            seen.add(key)
            parent_keys = [visit(par) for par in parents_of(q)]
            out.append((q, run, parent_keys))
        return key

    visit(p)
    return out


def _label(p: Params, run) -> str:
    if run.stage in ("teacher", "zeroshot"):
        return f"{p.task.name} {run.stage}"
    if run.stage == "predistill":
        return f"{p.task.name} predistill ({p.models.student})"
    return f"{p.task.name} {run.stage} seed {p.seed}"


def plan(targets: Iterable[Params], ensembles: bool | None = None) -> dict[str, Job]:
    """The jobs that finish every target run and the runs they build on, keyed by run path;
    finished runs are left out. ``ensembles`` (default: on only with ``KDLIB_ENSEMBLE=1``; never under
    ``accelerate launch``): unfinished runs that differ only by seed become one seed-ensemble job,
    keyed by its first member's run."""
    jobs: dict[str, Job] = {}
    edges: list[tuple[str, str]] = []
    for p in targets:
        for q, run, parent_keys in _stage_chain(p):
            key = str(run.path)
            if not run.finished and key not in jobs:
                jobs[key] = Job(params=q, key=key, label=_label(q, run), stage=run.stage)
            edges += [(par, key) for par in parent_keys]
    for par, key in edges:
        if key in jobs and par in jobs and par not in jobs[key].parents:
            jobs[key].parents.append(par)
            jobs[par].children.append(key)
    from kdlib.chains import ensembles as ens

    if (ens.enabled() if ensembles is None else ensembles) and not _in_distributed():
        _group_seeds(jobs)
    return jobs


def _group_seeds(jobs: dict[str, Job]) -> None:
    """Merge the jobs of runs that differ only by seed into seed-ensemble jobs (kdlib.chains.ensembles.groups), in
    place: the first member's job holds them all and inherits the others' edges."""
    from kdlib.chains import ensembles as ens

    by_id = {id(j.params): k for k, j in jobs.items() if j.params.method in ens.ENSEMBLE_METHODS}
    for members in ens.groups([jobs[k].params for k in by_id.values()]):
        if len(members) < 2:
            continue
        keys = [by_id[id(p)] for p in members]
        head = jobs[keys[0]]
        head.members = list(members)
        head.label = (f"{head.params.task.name} {head.stage} seeds {','.join(str(p.seed) for p in members)} "
                      f"(ensemble of {len(members)})")
        for k in keys[1:]:
            j = jobs.pop(k)
            for par in j.parents:
                jobs[par].children = [c for c in jobs[par].children if c != k]
                if par not in head.parents:
                    head.parents.append(par)
                    jobs[par].children.append(head.key)
            for c in j.children:
                jobs[c].parents = [head.key if q == k else q for q in jobs[c].parents]
                if c not in head.children:
                    head.children.append(c)


def _cost(job: Job) -> float:
    p = job.params
    w = _TASK_WEIGHT.get(p.task.name, 1.0)
    stage_w = {"teacher": 20.0, "predistill": 10.0, "zeroshot": 0.2}.get(job.stage, 1.0)
    if job.members:  # a seed ensemble: a guess from benchmarks/seeds.py, refined by the measured progress
        stage_w *= 1.0 + 0.3 * (len(job.members) - 1)
    return w * stage_w


def _priority(jobs: dict[str, Job]) -> dict[str, float]:
    """Longest remaining chain (by estimated cost) below each job: start the long ones first."""
    memo: dict[str, float] = {}

    def tail(k: str) -> float:
        if k not in memo:
            memo[k] = _cost(jobs[k]) + max((tail(c) for c in jobs[k].children), default=0.0)
        return memo[k]

    return {k: tail(k) for k in jobs}


# ----------------------------------------------------------------------------- workers
_QUEUE = None


def _init_worker(queue, threads: int) -> None:
    global _QUEUE
    os.environ["KDLIB_PROGRESS"] = "0"  # no per-run bars in workers: the parent prints status lines
    import torch

    torch.set_num_threads(threads)
    _QUEUE = queue
    from kdlib.trainers.base import set_progress_hook

    last = [0.0]

    def hook(run, step: int, total: int) -> None:
        now = time.time()
        if step == total or now - last[0] > 1.0:
            last[0] = now
            queue.put((str(run.path), step, total, now))

    set_progress_hook(hook)


def _train_job(params: Params, members: list[Params] | None = None) -> dict:
    """Train one stage (or one seed ensemble: ``members``) in a worker (its parents are finished); returns a
    summary of its (first) run."""
    from kdlib.chains.core import train

    t0 = time.time()
    if members:
        from kdlib.chains.ensembles import train_ensemble

        run = train_ensemble(members)[0]
    else:
        run = train(params)
    s = run.summary()
    return {"time_s": time.time() - t0, "best_step": s.get("best_step"), "steps": s.get("steps"),
            "stop_reason": s.get("stop_reason")}


def default_workers() -> int:
    env = os.environ.get("KDLIB_WORKERS")
    if env:
        return max(1, int(env))
    import torch

    if torch.cuda.is_available():
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def _fmt_s(s: float) -> str:
    s = max(0, int(round(s)))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Status:
    """Progress lines: what is running, its step, the ETA of the whole plan."""

    def __init__(self, jobs: dict[str, Job], workers: int, log: Callable[[str], None], every_s: float):
        self.jobs, self.workers, self.log, self.every_s = jobs, workers, log, every_s
        self.t0 = time.time()
        self.last_print = 0.0
        self.done: dict[str, float] = {}  # key -> seconds it took
        self.steps: dict[str, tuple[int, int, float, float]] = {}  # key -> (step, total, t_first, t_last)

    def progress(self, key: str, step: int, total: int, t: float) -> None:
        first = self.steps.get(key, (step, total, t, t))[2]
        self.steps[key] = (step, total, first, t)

    def _rate(self) -> float:
        """Seconds per unit of estimated cost, from the runs finished so far."""
        if not self.done:
            return 1.0
        return sum(self.done.values()) / sum(_cost(self.jobs[k]) for k in self.done)

    def eta(self, running: Iterable[str]) -> float:
        rate = self._rate()
        left = 0.0
        for k, job in self.jobs.items():
            if k in self.done:
                continue
            est = _cost(job) * rate
            if k in running and k in self.steps:
                step, total, t_first, t_last = self.steps[k]
                if step > 0 and t_last > t_first:
                    est = (t_last - t_first) / step * (total - step)
            left += est
        return left / self.workers

    def finished(self, key: str, seconds: float, info: dict) -> None:
        self.done[key] = seconds
        job = self.jobs[key]
        extra = ""
        if info.get("stop_reason") == "plateau":
            extra = f", plateau at step {info.get('best_step')}"
        self.log(f"[train] {len(self.done)}/{len(self.jobs)} done: {job.label} in {_fmt_s(seconds)}{extra}")

    def maybe_print(self, running: Iterable[str], force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last_print < self.every_s:
            return
        self.last_print = now
        parts = []
        for k in running:
            step, total, _, _ = self.steps.get(k, (0, 0, 0, 0))
            parts.append(f"{self.jobs[k].label} step {step}/{total}" if total else f"{self.jobs[k].label} starting")
        self.log(f"[train] {len(self.done)}/{len(self.jobs)} done, {_fmt_s(now - self.t0)} so far, "
                 f"ETA {_fmt_s(self.eta(running))} | " + "; ".join(parts))


def _in_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def ensure(targets: Iterable[Params], workers: int | None = None, log: Callable[[str], None] | None = None,
           every_s: float = 15.0, threads: int = 1, ensembles: bool | None = None) -> int:
    """Finish every run named by ``targets`` (and the stages they build on). Returns the number of
    runs trained. ``workers``: parallel processes (default: ``KDLIB_WORKERS`` or the CPUs this
    process may use; 1 on a GPU). Runs already finished are not touched. ``ensembles``: train runs that
    differ only by seed as seed ensembles (default: only with ``KDLIB_ENSEMBLE=1``)."""
    log = log or (lambda s: print(s, flush=True))
    targets = list(targets)
    check_pairs(targets)  # tokenizers only: a mismatched teacher/student pair stops here, before any compute
    jobs = plan(targets, ensembles)
    if not jobs:
        return 0
    workers = workers or default_workers()
    status = _Status(jobs, min(workers, len(jobs)), log, every_s)
    n_runs = sum(max(1, len(j.members)) for j in jobs.values())
    n_ens = sum(1 for j in jobs.values() if j.members)
    log(f"[train] {n_runs} runs to train with {workers} worker(s) "
        f"({sum(1 for j in jobs.values() if j.stage in ('teacher', 'predistill'))} teacher/pre-distillation stages"
        + (f"; {sum(len(j.members) for j in jobs.values())} of them as {n_ens} seed ensembles" if n_ens else "") + ")")
    if _in_distributed():  # every rank walks the same plan in the same order
        return _ensure_in_process(jobs, status)
    prio = _priority(jobs)
    ctx = mp.get_context("spawn")
    queue = ctx.Manager().Queue()
    finished: set[str] = set()
    running: dict[Future, str] = {}
    failed: list[tuple[str, str]] = []
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(queue, threads)) as pool:
        def submit_ready():
            busy = set(running.values())
            ready = [k for k, j in jobs.items() if k not in finished and k not in busy
                     and all(par in finished for par in j.parents)]
            for k in sorted(ready, key=lambda k: -prio[k])[: max(0, workers - len(running))]:
                running[pool.submit(_train_job, jobs[k].params, jobs[k].members)] = k

        submit_ready()
        while running:
            done, _ = wait(list(running), timeout=1.0, return_when=FIRST_COMPLETED)
            while not queue.empty():
                key, step, total, t = queue.get()
                if key in jobs:
                    status.progress(key, step, total, t)
            for fut in done:
                key = running.pop(fut)
                try:
                    info = fut.result()
                except Exception as e:  # noqa: BLE001 - report which run failed, then stop
                    failed.append((jobs[key].label, "".join(traceback.format_exception_only(type(e), e)).strip()))
                    continue
                finished.add(key)
                status.finished(key, info["time_s"], info)
            if failed:
                for fut in running:
                    fut.cancel()
                break
            submit_ready()
            status.maybe_print(running.values())
    if failed:
        label, err = failed[0]
        raise RuntimeError(f"training {label} failed: {err}\n(finished runs are kept; re-running resumes the rest)")
    log(f"[train] all {n_runs} runs finished in {_fmt_s(time.time() - status.t0)}")
    return n_runs


def _ensure_in_process(jobs: dict[str, Job], status: _Status) -> int:
    from kdlib.trainers.base import set_progress_hook

    order, seen = [], set()

    def visit(k):
        if k in seen:
            return
        seen.add(k)
        for par in jobs[k].parents:
            visit(par)
        order.append(k)

    for k in jobs:
        visit(k)
    set_progress_hook(lambda run, step, total: (status.progress(str(run.path), step, total, time.time()),
                                                status.maybe_print([str(run.path)])))
    try:
        for k in order:
            info = _train_job(jobs[k].params, jobs[k].members)
            status.finished(k, info["time_s"], info)
    finally:
        set_progress_hook(None)
    return len(jobs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use kdlib.chains.schedule.ensure(...) or `python -m kdlib prepare`")
