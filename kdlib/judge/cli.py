"""``python -m kdlib judge``: judge two JSONL files of outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from kdlib.judge.pairwise import SUMMARY_KEYS, JudgeConfig, judge_pairs, make_backend
from kdlib.judge.templates import (
    CRITERIA,
    DEFAULT_TEMPLATES_DIR,
    TASKS,
    InputError,
    JudgeError,
    TemplateError,
)

# --------------------------------------------------------------------------- command line


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read ``{"source", "output", optional "reference"}`` records, one per line (blank lines
    are skipped but counted). Errors name the file and the line."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: file not found")
    items = []
    with p.open(encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{p} line {ln}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise InputError(f"{p} line {ln}: expected a JSON object")
            for field in ("source", "output"):
                if not isinstance(rec.get(field), str):
                    raise InputError(f"{p} line {ln}: field {field!r} missing or not a string")
            if rec.get("reference") is not None and not isinstance(rec["reference"], str):
                raise InputError(f"{p} line {ln}: field 'reference' is not a string")
            items.append(rec)
    return items


def build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``judge`` verb's arguments to ``parser``."""
    parser.description = ("Pairwise LLM-as-judge evaluation (Table 2): candidate outputs vs a "
                          "baseline's, four queries per pair; prints one JSON object.")
    parser.add_argument("--candidate", required=True, help="JSONL of {source, output[, reference]}")
    parser.add_argument("--baseline", required=True, help="JSONL of the baseline (e.g. KL), same inputs")
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--criterion", required=True, choices=CRITERIA)
    parser.add_argument("--backend", default="surrogate", choices=["surrogate", "openai", "transformers"])
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="judge model name (openai) or path/hub name (transformers)")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY",
                        help="name of the environment variable holding the API key (never the key itself)")
    parser.add_argument("--cache-dir", default="outputs/judge_cache")
    parser.add_argument("--templates-dir", default=DEFAULT_TEMPLATES_DIR)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--max-retries", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--device", default="cpu", help="transformers backend only")
    parser.add_argument("--surrogate-metric", default="auto")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--output", default=None, help="also write the full result (with per-example verdicts) here")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def run_cli(args: argparse.Namespace) -> int:
    """Run the ``judge`` verb; print one JSON object. Bad input: message on stderr, exit 2."""
    try:
        cfg = JudgeConfig(backend=args.backend, base_url=args.base_url, model=args.model,
                          api_key_env=args.api_key_env, timeout_s=args.timeout,
                          max_retries=args.max_retries, concurrency=args.concurrency,
                          temperature=args.temperature, max_tokens=args.max_tokens,
                          templates_dir=args.templates_dir, device=args.device,
                          surrogate_metric=args.surrogate_metric)
        candidate = read_jsonl(args.candidate)
        baseline = read_jsonl(args.baseline)
        backend = make_backend(cfg)
        try:
            result = judge_pairs(candidate, baseline, task=args.task, criterion=args.criterion,
                                 backend=backend, cache_dir=args.cache_dir,
                                 templates_dir=cfg.templates_dir, seed=args.seed,
                                 progress=not args.no_progress,
                                 names=(str(args.candidate), str(args.baseline)))
        finally:
            backend.close()
    except (InputError, TemplateError, ValueError, JudgeError) as e:
        # pydantic's ValidationError is a ValueError
        print(f"kdlib judge: error: {e}", file=sys.stderr)
        return 2
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
        os.replace(tmp, out)
    print(json.dumps({k: result[k] for k in SUMMARY_KEYS}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kdlib.judge ...`` (the same as ``python -m kdlib judge ...``)."""
    return run_cli(build_parser(argparse.ArgumentParser(prog="kdlib judge")).parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
