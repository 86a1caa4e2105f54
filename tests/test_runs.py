"""Run behaviour: reuse, resume after a crash, determinism, and data-parallel training."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdlib.chains.core import method_run, predistill_run, teacher_run, train
from kdlib.config import load_params

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "params/smoke/kit.yaml")


def kit_params(cache, **kw):
    return load_params(SMOKE, cache_dir=str(cache), **{"task.n_train": 64, "teacher.steps": 6, "predistill.steps": 4,
                                                        "rl.steps": 4, "ppo.steps": 4, **kw})


def _train_cli(cache, *sets, env=None):
    args = [sys.executable, "-m", "kdlib", "train", "-f", SMOKE, "--set", f"cache_dir={cache}", "--set", "task.n_train=64",
            "--set", "teacher.steps=6", "--set", "predistill.steps=4", "--set", "rl.steps=4", "--set", "ppo.steps=4"]
    for s in sets:
        args += ["--set", s]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "KDLIB_PROGRESS": "0", **(env or {})})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A smoke teacher and pre-distilled student, shared (copied) by the tests below."""
    cache = tmp_path_factory.mktemp("base")
    train(kit_params(cache, method="predistill"))
    return cache


def _copy(prepared, tmp_path):
    dst = tmp_path / "cache"
    shutil.copytree(prepared, dst)
    return dst


def test_finished_runs_are_reused_and_keyed_by_params(prepared, tmp_path):
    cache = _copy(prepared, tmp_path)
    p = kit_params(cache, method="llmr")
    run = train(p)
    stamp = (run.path / "summary.json").stat().st_mtime_ns
    assert train(p).path == run.path and (run.path / "summary.json").stat().st_mtime_ns == stamp
    assert method_run(kit_params(cache, method="ketchup", **{"rl.k": 3})).path != method_run(
        kit_params(cache, method="ketchup", **{"rl.k": 4})).path
    # LLMR ignores K: its run is the same whatever rl.k says.
    assert method_run(kit_params(cache, method="llmr", **{"rl.k": 8})).path == run.path
    # Every method shares one teacher and one pre-distilled student.
    assert predistill_run(kit_params(cache, method="kl")).path == predistill_run(p).path
    assert teacher_run(kit_params(cache, method="tvd")).path == teacher_run(p).path


@pytest.mark.parametrize("method", ["ketchup", "llmr_ppo"])
def test_a_killed_run_resumes_and_matches_an_uninterrupted_one(prepared, tmp_path, method):
    cache = _copy(prepared, tmp_path)
    crashed = _train_cli(cache, f"method={method}", env={"KDLIB_CRASH_AFTER_CHECKPOINT": "2"})
    assert crashed.returncode == 137
    run = method_run(kit_params(cache, method=method))
    assert not run.finished and run.resume_state()["step"] == 2  # partial: not a result
    if method == "llmr_ppo":  # the critic is saved with the checkpoint
        assert (run.last_dir / "head.safetensors").is_file()
    again = _train_cli(cache, f"method={method}")
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stdout + again.stderr and "from step 2" in again.stdout + again.stderr
    assert run.finished
    steps = [r["step"] for r in run.metrics() if "train/loss" in r]
    assert steps == sorted(set(steps))  # no duplicated part of the learning curve
    # The resumed run equals one that was never interrupted.
    cache2 = _copy(prepared, tmp_path / "b")
    clean = train(kit_params(cache2, method=method))
    assert clean.summary()["test"] == run.summary()["test"]
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("train/time_")}  # noqa: E731
                        for r in rs if "train/loss" in r]  # wall-clock timings are not the run's numbers
    assert strip(clean.metrics()) == strip(run.metrics())


def test_same_seed_same_numbers(prepared, tmp_path):
    a = train(kit_params(_copy(prepared, tmp_path / "a"), method="tvd"))
    b = train(kit_params(_copy(prepared, tmp_path / "b"), method="tvd"))
    assert a.summary()["test"] == b.summary()["test"]
    assert [r for r in a.metrics() if "train/loss" in r] == [r for r in b.metrics() if "train/loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("family,port", [("rl", 29533), ("ppo", 29534)])
def test_two_processes_end_with_identical_weights(prepared, tmp_path, family, port):
    cache = _copy(prepared, tmp_path)
    out = tmp_path / "ranks"
    out.mkdir()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                        str(ROOT / "tests/helpers/ddp_worker.py"), str(cache), str(out), family],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "KDLIB_PROGRESS": "0", "OMP_NUM_THREADS": "1"},
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [(out / f"rank{i}.txt").read_text().split() for i in range(2)]
    assert ranks[0][0] == ranks[1][0] == "2" and "MULTI_CPU" in ranks[0][1]
    assert ranks[0][3] == "DistributedDataParallel"
    assert ranks[0][4] != ranks[1][4]  # the ranks trained on different samples...
    assert ranks[0][2] == ranks[1][2]  # ...and still hold identical weights (gradients averaged)


def test_plateau_rule_waits_for_the_metric_to_move_then_stops_after_patience():
    from kdlib.trainers.base import PlateauRule

    rule = PlateauRule(patience=3, min_delta=0.5, eval_every=100)
    scores = {0: 0.0, 100: 0.0, 200: 0.0, 300: 0.0, 400: 0.0, 500: 0.3, 600: 12.0, 700: 30.0, 800: 30.2,
              900: 29.0, 1000: 30.4, 1100: 30.5}
    stops = {step: rule.update(step, score) for step, score in scores.items()}
    assert not any(stops[s] for s in range(0, 1000, 100))  # a flat start is not a plateau
    assert rule.last_improvement == 700  # 30.2, 30.4, 30.6 are within min_delta of 30.0
    assert stops[1000] and stops[1100]  # 300 steps (3 evaluations) after the last improvement
    never = PlateauRule(patience=None, min_delta=0.0, eval_every=10)
    assert not any(never.update(s, 1.0) for s in range(0, 100, 10))
    lower = PlateauRule(patience=2, min_delta=0.0, eval_every=10, higher=False)  # e.g. TER
    assert [lower.update(s, v) for s, v in [(0, 90.0), (10, 80.0), (20, 85.0), (30, 81.0)]] == [False, False, False, True]
    again = PlateauRule(patience=2, min_delta=0.0, eval_every=10)
    again.load(lower.state())
    assert again.last_improvement == 10 and again.state() == lower.state()


def _climb_with_a_dip() -> dict[int, float]:
    """A tiny model's dev BLEU as it learns in jumps: a steady rise, a climb to 74 by update 2,400, a dip of three
    evaluations, then a second climb to 89 by 3,400 and a plateau (the mini-Europarl chain the old rule stopped at 2,800)."""
    curve = {s: 61.0 * s / 2100 for s in range(0, 2200, 100)}
    curve.update({2200: 66.0, 2300: 70.0, 2400: 74.0, 2500: 72.0, 2600: 71.5, 2700: 73.5, 2800: 74.3, 2900: 78.0,
                  3000: 82.0, 3100: 85.0, 3200: 87.0, 3300: 88.5})
    curve.update({s: 89.0 + 0.3 * ((s // 100) % 3 - 1) for s in range(3400, 6100, 100)})
    return curve


def _climb_rise_at(step: int) -> float:
    from kdlib.trainers.base import PlateauRule

    rule = PlateauRule(patience=4, min_delta=0.5, eval_every=100, window=0.25, smooth=3)
    for s, v in _climb_with_a_dip().items():
        if s <= step:
            rule.update(s, v)
    return rule.rise(step)


def _first_stop(rule, curve) -> int | None:
    for step, score in curve.items():
        if rule.update(step, score):
            return step
    return None


def test_plateau_rule_does_not_fire_inside_a_climb():
    from kdlib.trainers.base import PlateauRule

    curve = _climb_with_a_dip()
    old = PlateauRule(patience=4, min_delta=0.5, eval_every=100)  # patience only: stops on the dip
    assert _first_stop(old, curve) == 2800
    new = PlateauRule(patience=4, min_delta=0.5, eval_every=100, window=0.25, smooth=3)
    stop = _first_stop(new, curve)
    assert stop is not None and 3400 < stop <= 5000  # after the second climb, once flat for a quarter of the run
    assert new.rise(stop) <= 0.5 < _climb_rise_at(3300)
    # A noisy plateau (dev BLEU 97 +- 3 from update 2,400, as the mini-Europarl teacher): a running best keeps creeping
    # up with the noise, the smoothed rise over the window does not, so the rule stops instead of running to the cap.
    rng = np.random.default_rng(0)
    noisy = {s: min(97.0, 97.0 * s / 2400) + (3.0 * rng.standard_normal() if s >= 2400 else 0.0) for s in range(0, 6100, 100)}
    stop_noisy = _first_stop(PlateauRule(patience=4, min_delta=0.5, eval_every=100, window=0.25, smooth=3), noisy)
    assert stop_noisy is not None and 2400 < stop_noisy <= 4200
    late = PlateauRule(patience=4, min_delta=0.5, eval_every=100, window=0.25, smooth=3, min_steps=5500)
    assert _first_stop(late, curve) == 5500
    resumed = PlateauRule(patience=4, min_delta=0.5, eval_every=100, window=0.25, smooth=3)
    steps = list(curve)
    for s in steps[:30]:
        resumed.update(s, curve[s])
    again = PlateauRule(patience=4, min_delta=0.5, eval_every=100, window=0.25, smooth=3)
    again.load(resumed.state())  # a resumed run smooths over the scores before its checkpoint
    assert _first_stop(again, {s: curve[s] for s in steps[30:]}) == stop


def test_reward_watch_flags_a_return_that_rises_while_the_metric_falls():
    from kdlib.trainers.base import reward_watch

    recs = [{"step": 0, "eval/return": -5.0, "eval/rougeL": 40.0, "eval/length": 14.0, "eval/distinct2": 50.0},
            {"step": 5, "train/loss": 1.0},
            {"step": 10, "eval/return": -2.0, "eval/rougeL": 38.0, "eval/length": 10.0, "eval/distinct2": 45.0}]
    w = reward_watch(recs, "rougeL")
    assert w["flag"] and w["return_gain"] == 3.0 and w["metric_gain"] == -2.0 and w["length_change"] == -4.0
    recs[-1]["eval/rougeL"] = 41.0
    assert not reward_watch(recs, "rougeL")["flag"]
    ter = [{"step": 0, "eval/return": 1.0, "eval/ter": 50.0}, {"step": 4, "eval/return": 2.0, "eval/ter": 55.0}]
    assert reward_watch(ter, "ter")["flag"]  # TER is lower-is-better: a rise is a fall in quality
    assert reward_watch(recs[:1], "rougeL") is None


def test_linear_schedule_warms_up_then_decays_to_zero():
    from kdlib.config import OptimParams
    from kdlib.trainers.base import lr_factor

    o = OptimParams(lr=1.0, steps=10, warmup_steps=2, lr_schedule="linear")
    f = [lr_factor(o, s) for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0  # warm-up, then the decay starts from 1
    assert all(a > b for a, b in zip(f[2:], f[3:])) and abs(f[-1] - 1 / 8) < 1e-12  # reaches 0 after `steps`
    c = OptimParams(lr=1.0, steps=10, warmup_steps=2)
    assert [lr_factor(c, s) for s in range(10)] == [0.5] + [1.0] * 9  # constant after the warm-up


def test_a_run_folder_is_trained_by_one_process_at_a_time(tmp_path):
    import multiprocessing as mp
    import time

    from kdlib.trainers.runs import Run

    run = Run(tmp_path, "t", "stage", {"a": 1})
    ctx = mp.get_context("spawn")
    with run.lock():
        p = ctx.Process(target=_hold_lock, args=(str(tmp_path), str(tmp_path / "got")))
        p.start()
        time.sleep(1.5)
        assert not (tmp_path / "got").exists()  # the second process waits while we hold the lock
    p.join(20)
    assert (tmp_path / "got").exists() and p.exitcode == 0


def _hold_lock(cache, marker):
    from pathlib import Path

    from kdlib.trainers.runs import Run

    with Run(cache, "t", "stage", {"a": 1}).lock():
        Path(marker).write_text("ok")


def test_sampled_return_uses_common_random_numbers(prepared, tmp_path):
    """The same policy measured twice gives the same sampled return (the random numbers depend on
    the seed only), so a start-vs-end difference is the policy's, not the sampling's."""
    from kdlib.chains.core import _teacher_model, load_run_model
    from kdlib.trainers.base import sampled_return
    from kdlib.trainers.tasks import load_task_bundle

    cache = _copy(prepared, tmp_path)
    p = kit_params(cache, method="predistill")
    task = load_task_bundle(p)
    teacher = _teacher_model(p, task)
    student, _ = load_run_model(p, predistill_run(p))
    a = sampled_return(student, task, "dev", 8, p, teacher, "cpu", seed=3)
    b = sampled_return(student, task, "dev", 8, p, teacher, "cpu", seed=3)
    c = sampled_return(student, task, "dev", 8, p, teacher, "cpu", seed=4)
    assert a == b and a != c


@pytest.mark.slow
def test_same_machine_same_numbers_whatever_the_number_of_workers(tmp_path):
    """The scheduler trains every run single-threaded in its own process, so a plan's numbers do
    not depend on how many workers share the machine (nor on the order runs finish in)."""
    import json

    from kdlib.chains.schedule import ensure

    def targets(cache):
        return [kit_params(cache, **{"task.name": "mini-europarl", "method": m, "seed": 7}) for m in ("kl", "llmr", "ketchup")]

    a, b = tmp_path / "a", tmp_path / "b"
    ensure(targets(a), workers=2, log=lambda s: None)
    ensure(targets(b), workers=1, log=lambda s: None)
    sa = {p.relative_to(a): json.loads(p.read_text()) for p in a.glob("runs/*/*/summary.json")}
    sb = {p.relative_to(b): json.loads(p.read_text()) for p in b.glob("runs/*/*/summary.json")}
    assert sa.keys() == sb.keys() and len(sa) == 1 + 1 + 3  # teacher, pre-distilled student, 3 methods
    for k in sa:
        assert sa[k]["test"] == sb[k]["test"], k
        assert sa[k]["dev"] == sb[k]["dev"], k


def test_teacher_encoder_cache_only_where_the_run_reads_more_rows_than_the_split_has():
    """The cache encodes sources in fixed chunks: for a run that scores fewer rows than the split has sources it
    would encode nearly every source to read a few (an embedded RL run: 1,920 rows of 20,000 sources), so the
    teacher's encoder runs on each batch instead."""
    from types import SimpleNamespace

    from kdlib.config import Params
    from kdlib.modeling.models import EncoderCache, build_model
    from kdlib.trainers.base import scored_rows, teacher_encoder_cache

    teacher = build_model("tiny-t5:teacher", vocab_size=64)
    task = SimpleNamespace(arch="seq2seq", teacher_src={"train": [[3, 4, 5]] * 1000}, tok=SimpleNamespace(pad_token_id=0))
    p = Params(rl={"batch_size": 16, "steps": 30, "grad_accum": 2})
    assert scored_rows(p.rl) == 960
    assert teacher_encoder_cache(p, task, teacher, "train", optim=p.rl) is None  # 960 rows < 1,000 sources
    long = Params(rl={"batch_size": 16, "steps": 40, "grad_accum": 2})  # 1,280 rows
    assert isinstance(teacher_encoder_cache(long, task, teacher, "train", optim=long.rl), EncoderCache)
    assert isinstance(teacher_encoder_cache(p, task, teacher, "train"), EncoderCache)  # no schedule given: as before
    # a seed ensemble of 2 such runs scores 1,920 rows through one teacher: cached
    assert isinstance(teacher_encoder_cache(p, task, teacher, "train", optim=p.rl, runs=2), EncoderCache)
    grpo = Params(cmdp={"batch_size": 4, "group_size": 8, "steps": 60})
    assert scored_rows(grpo.cmdp) == 4 * 8 * 60


def test_a_cached_analysis_is_read_back_exactly_and_not_recomputed(tmp_path):
    import pandas as pd

    from kdlib.studies.common import cached_frames

    calls = []

    def compute():
        calls.append(1)
        return (pd.DataFrame({"k": [1, 16], "tail": ["algorithm1", "block"], "x": [1 / 3, float("nan")],
                              "flag": [True, False]}), pd.DataFrame({"y": [2.0 ** -40]}))

    cold = cached_frames(tmp_path, "demo", {"runs": ["abc"]}, compute)
    warm = cached_frames(tmp_path, "demo", {"runs": ["abc"]}, compute)
    assert len(calls) == 1
    for a, b in zip(cold, warm):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert warm[0]["x"][0] == 1 / 3 and warm[1]["y"][0] == 2.0 ** -40
    cached_frames(tmp_path, "demo", {"runs": ["abd"]}, compute)  # another run key: computed again
    assert len(calls) == 2
    single = cached_frames(tmp_path, "one", {}, lambda: pd.DataFrame({"a": [1, 2]}))
    pd.testing.assert_frame_equal(cached_frames(tmp_path, "one", {}, compute), single, check_exact=True)
    assert len(calls) == 2


@pytest.mark.parametrize("name", ["ppo", "constrained_kd"])
def test_notebooks_06_and_08_skip_the_sampled_return_they_do_not_read_under_the_same_run_keys(name, tmp_path):
    """Notebooks 06 and 08 never read the sampled dev return (notebook 02 does): their runs do not compute it, and
    since it only logs, the runs they train are the runs they would have trained with it (same folders)."""
    from kdlib.chains.core import run_for
    from kdlib.config.loading import load_notebook_params
    from kdlib.studies.common import plan

    nb = load_notebook_params(ROOT / f"params/smoke/{name}.yaml")
    nb = nb.model_copy(update={"overrides": {**nb.overrides, "cache_dir": str(tmp_path)}})
    methods = [p for p in plan(nb) if p.method not in ("teacher", "zeroshot", "predistill", "cmdp_teacher")]
    assert methods
    for p in methods:
        assert p.eval.sampled == 0, p.method
        with_sampled = p.model_copy(update={"eval": p.eval.model_copy(update={"sampled": 4})})
        assert run_for(p).path == run_for(with_sampled).path, p.method
