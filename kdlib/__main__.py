"""Command line (floor 4): ``python -m kdlib VERB ...``; ``--help`` lists the verbs.

Bad input exits with code 2 and a message naming the file and the field, before any compute.
"""

from __future__ import annotations

import argparse
import json
import sys


def _add_params_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", action="append", required=True, dest="files", metavar="YAML",
                   help="params file; repeat to layer (later wins)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one value, e.g. --set rl.k=4 --set method=ketchup")


def _load(args):
    from kdlib.config import load_params, parse_override

    overrides = dict(parse_override(s) for s in args.set)
    return load_params(*args.files, **overrides)


def cmd_validate(args) -> int:
    from kdlib.config import Params, load_any, parse_override

    overrides = dict(parse_override(s) for s in args.set)
    obj = load_any(*args.files, **overrides)
    kind = "kit params" if isinstance(obj, Params) else f"notebook params ({obj.notebook})"
    print(f"# valid {kind}: {' + '.join(args.files)}")
    import yaml

    print(yaml.safe_dump(obj.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def cmd_train(args) -> int:
    from kdlib.chains.core import train
    from kdlib.trainers.pairing import check_pairs

    p = _load(args)
    check_pairs([p])  # before any compute: a teacher/student pair that does not share a tokenizer exits 2
    run = train(p)
    s = run.summary()
    print(json.dumps({"run": str(run.path), "stage": run.stage, "best_step": s.get("best_step"), "test": s.get("test")},
                     indent=1))
    return 0


def cmd_status(args) -> int:
    from kdlib.chains.core import run_for

    p = _load(args)
    run = run_for(p)
    state = "finished" if run.finished else ("resumable" if run.resume_state() else "not started")
    print(json.dumps({"run": str(run.path), "state": state}, indent=1))
    return 0


def cmd_prepare(args) -> int:
    """Train every run the named notebooks need (parallel workers), so the notebooks only read."""
    from kdlib.chains.schedule import ensure
    from kdlib.config import ParamsError, load_notebook_params
    from kdlib.studies.common import plan

    targets = []
    for f in args.files:
        nb = load_notebook_params(f)
        if nb is None:
            raise ParamsError(f"{f}: not a notebook params file")
        targets += plan(nb)
    if args.check:
        from kdlib.trainers.pairing import check_pairs

        checked = check_pairs(targets)
        print(f"# {len(targets)} runs, {len(checked)} teacher/student pairs checked: tokenizers agree")
        return 0
    log = None
    if args.log:
        def log(line: str, _path=args.log) -> None:
            print(line, flush=True)
            with open(_path, "a") as fh:
                fh.write(line + "\n")
    ensure(targets, workers=args.workers, log=log, every_s=args.every)
    return 0


def cmd_data(args) -> int:
    from kdlib import data

    p = _load(args)
    ds = data.load_task(p.task.name, cache_dir=p.cache_dir, path=p.task.path, n_train=p.task.n_train,
                        n_dev=p.task.n_dev, n_test=p.task.n_test, seed=p.task.data_seed, ambiguity=p.task.ambiguity)
    print(json.dumps({s: len(ds[s]) for s in ds}, indent=1))
    for row in ds["train"].select(range(min(args.show, len(ds["train"])))):
        print(json.dumps(row, ensure_ascii=False))
    return 0


def cmd_calibrate(args) -> int:
    """Per task: the teacher's spread and the pre-distilled student's distance from it (trains them if missing)."""
    from pathlib import Path

    from kdlib.config import EMBEDDED_TASKS, parse_override
    from kdlib.chains.calibration import calibrate, write

    overrides = dict(parse_override(s) for s in args.set)
    p = _load(args)  # validates everything (exit 2) before any training
    tasks = args.tasks or ([p.task.name] if "task.name" in overrides else list(EMBEDDED_TASKS))
    records = calibrate(args.files, overrides, tasks=tasks, n=args.n)
    path = write(records, args.output_dir or Path("outputs") / p.profile)
    print(f"# written: {path}")
    return 0


def cmd_judge(args) -> int:
    from kdlib import judge

    return judge.run_cli(args)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kdlib", description="KETCHUP kit: RL-based knowledge distillation")
    sub = ap.add_subparsers(dest="verb", required=True, metavar="VERB")
    p = sub.add_parser("validate", help="validate params files and print the resolved values (exit 2 if bad)")
    p.add_argument("-f", "--file", action="append", required=True, dest="files", metavar="YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(fn=cmd_validate)
    p = sub.add_parser("train", help="train the run named by `method` (and the runs it builds on); reuse or resume")
    _add_params_args(p)
    p.set_defaults(fn=cmd_train)
    p = sub.add_parser("status", help="where the run named by the params stands (finished / resumable / not started)")
    _add_params_args(p)
    p.set_defaults(fn=cmd_status)
    p = sub.add_parser("prepare", help="train (in parallel) every run the given notebook params files need")
    p.add_argument("-f", "--file", action="append", required=True, dest="files", metavar="YAML",
                   help="a notebook params file, e.g. params/embedded/main_results.yaml; repeatable")
    p.add_argument("--workers", type=int, default=None, help="parallel 1-thread processes (default: CPUs, or KDLIB_WORKERS)")
    p.add_argument("--log", default=None, help="also append the progress lines to this file")
    p.add_argument("--every", type=float, default=15.0, help="seconds between status lines")
    p.add_argument("--check", action="store_true", help="only check every teacher/student pair the notebooks need "
                   "(vocabulary and chat template, tokenizers only; exit 2 on a mismatch) and train nothing")
    p.set_defaults(fn=cmd_prepare)
    p = sub.add_parser("data", help="generate or load the task's data and show a few examples")
    _add_params_args(p)
    p.add_argument("--show", type=int, default=3)
    p.set_defaults(fn=cmd_data)
    p = sub.add_parser("calibrate", help="per task: teacher entropy on its samples and on references, KL(teacher || "
                       "pre-distilled student), reference length, metrics; writes outputs/<profile>/calibration.json")
    _add_params_args(p)
    p.add_argument("--task", action="append", default=[], dest="tasks", metavar="NAME",
                   help="calibrate only this task (repeatable; default: every embedded task)")
    p.add_argument("--n", type=int, default=100, help="dev inputs to measure on (default 100)")
    p.add_argument("--output-dir", default=None, help="where calibration.json goes (default outputs/<profile>)")
    p.set_defaults(fn=cmd_calibrate)
    p = sub.add_parser("judge", help="pairwise LLM-judge evaluation of two JSONL output files (Table 2 protocol)")
    from kdlib import judge

    judge.build_parser(p)
    p.set_defaults(fn=cmd_judge)
    return ap


def main(argv: list[str] | None = None) -> int:
    from kdlib.config import ParamsError
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
