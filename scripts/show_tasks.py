"""Print what the embedded tasks look like: split sizes, vocabulary, lengths, two examples each.

    python scripts/show_tasks.py [--seed 0] [--examples 2] [--eval-examples 1]

Then the held-out evaluation sets for mini-gsm8k models (kdlib.data.load_eval_set): size, the
mix of problem families (and of GSM-Plus perturbation types), lengths, and one example each.

Vocabulary counts whitespace word types over all splits (source and target together, and
each side alone; also the types containing no digit, since numbers and GSM8K's <<a*b=c>>
annotations make many one-off types that the tokenizer splits into digits anyway); lengths are in whitespace words. "~tok" is a rough token count (every digit
and punctuation mark counted as one token, each word as one), to compare with the kit's length
limits (kdlib.config.TASK_LENGTHS). Generation only: nothing is written.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import textwrap
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
from kdlib.data import (
    DEFAULT_EVAL_SIZES,
    DEFAULT_SIZES,
    EMBEDDED_EVAL_SETS,
    EMBEDDED_TASKS,
    EVAL_SET_TASK,
    SPLITS,
    generate_embedded,
    generate_eval_set,
    task_kind,
)

_ROUGH_TOKEN = re.compile(r"\d|[A-Za-z]+|[^\sA-Za-z\d]")


def _words(text: str) -> int:
    return len(text.split())


def _rough_tokens(text: str) -> int:
    return len(_ROUGH_TOKEN.findall(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=2)
    parser.add_argument("--eval-examples", type=int, default=1)
    args = parser.parse_args()

    for name in EMBEDDED_TASKS:
        n_train, n_dev, n_test = DEFAULT_SIZES[name]
        dd = generate_embedded(name, n_train, n_dev, n_test, seed=args.seed)
        rows = [row for split in SPLITS for row in dd[split]]
        src_vocab = {w for r in rows for w in r["source"].split()}
        tgt_vocab = {w for r in rows for w in r["target"].split()}
        src_len = [_words(r["source"]) for r in rows]
        tgt_len = [_words(r["target"]) for r in rows]
        src_tok = [_rough_tokens(r["source"]) for r in rows]
        tgt_tok = [_rough_tokens(r["target"]) for r in rows]
        print(f"== {name} ({task_kind(name)}), seed {args.seed}")
        print("   splits: " + ", ".join(f"{s} {len(dd[s])}" for s in SPLITS))
        vocab = src_vocab | tgt_vocab
        no_digits = {w for w in vocab if not any(ch.isdigit() for ch in w)}
        print(f"   vocabulary (word types): {len(vocab)} (source {len(src_vocab)}, target {len(tgt_vocab)});"
              f" {len(no_digits)} without digits (the tokenizer splits digits)")
        print(f"   source words: mean {statistics.mean(src_len):.1f}, min {min(src_len)}, max {max(src_len)}"
              f" | ~tok mean {statistics.mean(src_tok):.0f}, max {max(src_tok)}")
        print(f"   target words: mean {statistics.mean(tgt_len):.1f}, min {min(tgt_len)}, max {max(tgt_len)}"
              f" | ~tok mean {statistics.mean(tgt_tok):.0f}, max {max(tgt_tok)}")
        for row in dd["train"].select(range(min(args.examples, len(dd["train"])))):
            _print_example(row)
        print()

    for name in EMBEDDED_EVAL_SETS:
        ds = generate_eval_set(name, DEFAULT_EVAL_SIZES[name], seed=args.seed)
        print(f"== {name} (held-out evaluation set for {EVAL_SET_TASK[name]} models), seed {args.seed}")
        print(f"   size: {len(ds)}; columns: {', '.join(ds.column_names)}")
        print("   families: " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(ds["template"]).items())))
        if "perturbation" in ds.column_names:
            print("   perturbations: " + ", ".join(f"{k} {v}" for k, v in Counter(ds["perturbation"]).items()))
        src_tok = [_rough_tokens(s) for s in ds["source"]]
        tgt_tok = [_rough_tokens(t) for t in ds["target"]]
        print(f"   ~tok source mean {statistics.mean(src_tok):.0f}, max {max(src_tok)}"
              f" | target mean {statistics.mean(tgt_tok):.0f}, max {max(tgt_tok)}")
        for row in ds.select(range(min(args.eval_examples, len(ds)))):
            _print_example(row)
            if "base_source" in row:
                print(f"     (perturbation of {row['base_id']}: {row['perturbation']})")
                print(textwrap.indent(textwrap.fill(row["base_source"], 96), "       base: ").replace(
                    "\n       base: ", "\n             "))
        print()


def _print_example(row: dict) -> None:
    print(f"   [{row['id']}]")
    print(textwrap.indent(textwrap.fill(row["source"], 96), "     source: ").replace(
        "\n     source: ", "\n             "))
    for i, line in enumerate(row["target"].split("\n")):
        print(("     target: " if i == 0 else "             ") + line)


if __name__ == "__main__":
    main()
