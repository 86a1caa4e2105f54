"""Ground truth of the generated tasks: the grammar of valid outputs (kdlib.data.variants), the tasks' ambiguity
(kdlib.data.truth), validity in evaluation, the calibration maths and the ``calibrate`` command."""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from pathlib import Path

import pytest
import torch

from kdlib import data
from kdlib.config import DEFAULT_AMBIGUITY, EMBEDDED_TASKS, ParamsError, load_params
from kdlib.data.variants import Alt, Lit, Seq, canonical, lexical, log_prob, opt, perms, sample, support
from kdlib.maths import calibration as cal
from kdlib.maths.calculator import evaluate as calc
from kdlib.maths.metrics import gsm8k_answer, validity

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "params/smoke/kit.yaml")


# ----------------------------------------------------------------------------- the grammar
def _small():
    # "the council" / "council" x an optional reason x two orders of two facts; "a b" is printed by two
    # derivations (Lit "a b" and Seq "a", " ", "b"), so log_prob must add them up.
    return Seq(Alt(["The council", "Council", "The  council"]), " acts", opt(" to save money"),
               perms([" today", " in Oakfield"]), Alt([" a b", Seq(" a", " ", "b"), ""]), ".")


@pytest.mark.parametrize("a", [0.0, 0.3, 1.0])
def test_support_sums_to_one_and_matches_log_prob(a):
    g = _small()
    sup = support(g, a)
    assert sum(sup.values()) == pytest.approx(1.0)
    for text, p in sup.items():
        assert math.exp(log_prob(g, text, a)) == pytest.approx(p)
    assert log_prob(g, "The council acts.", a) == -math.inf  # a fact missing: not an output
    if a == 0:
        assert sup == {"The council acts to save money today in Oakfield a b.": pytest.approx(1.0)}


def test_alt_probabilities_by_hand_and_whitespace():
    g = Alt(["x", "y", "z"])
    # a = 0.3: P(x) = 0.7 + 0.3/3 = 0.8, P(y) = P(z) = 0.1
    assert math.exp(log_prob(g, "x", 0.3)) == pytest.approx(0.8)
    assert math.exp(log_prob(g, "z", 0.3)) == pytest.approx(0.1)
    assert log_prob(g, "y", 0.0) == -math.inf
    # "The  council" (two spaces) and "The council" are the same normalised output: 1/3 + 1/3 at a = 1
    s = Seq(Alt(["The council", "Council", "The  council"]), " acts.")
    assert math.exp(log_prob(s, "  The council\n acts. ", 1.0)) == pytest.approx(2 / 3)


def test_lexical_keeps_the_canonical_and_draws_each_occurrence():
    node = lexical(Seq("The plan and ", Alt(["the plan", "plans"]), "."), {"plan": ("scheme",), "and": ("plus",)})
    assert canonical(node) == "The plan and the plan."
    for a in (0.0, 0.5, 1.0):
        assert sum(support(node, a).values()) == pytest.approx(1.0)
    # ambiguity 1: three independent fair coins on "plan"/"plan"/"and" inside the first option (P 1/2)
    assert support(node, 1.0)["The scheme plus the plan."] == pytest.approx(0.5 * 0.5 ** 3)
    # ambiguity 0.5: a listed word stays with P (1 - a) + a / 2 = 0.75, the Alt keeps option 0 with P 0.75
    assert math.exp(log_prob(node, "The plan and the plan.", 0.5)) == pytest.approx(0.75 * 0.75 ** 3)
    assert log_prob(node, "The scheme and schemes.", 1.0) == -math.inf  # "plans" is not a listed word
    assert isinstance(lexical(Lit("no listed word"), {"plan": ("scheme",)}), Lit)


# The grammar's own entropy per word at ambiguity 1 (200 sampled targets of seed 0): the word-level synonyms of
# kdlib.data.lexicons and the Dutch synonyms raise it from 0.29 / 0.19 / 0.17 (previous grammars) to about
# 0.47 / 0.38 / 0.39 nats per word.
@pytest.mark.parametrize("name,floor", [("mini-xsum", 0.42), ("mini-europarl", 0.33), ("mini-gsm8k", 0.32)])
def test_true_entropy_per_word_at_ambiguity_one(name, floor):
    rng, nll, words = random.Random(0), 0.0, 0
    for i, (_, node) in enumerate(data.example_stream(name, 0, 1.0)):
        if i >= 200:
            break
        y = sample(node, rng, 1.0)
        nll -= log_prob(node, y, 1.0)
        words += len(y.split())
    assert nll / words > floor


def test_sampling_follows_the_probabilities():
    g = _small()
    rng = random.Random(0)
    n = 6000
    counts: dict[str, int] = {}
    for _ in range(n):
        y = " ".join(sample(g, rng, 0.6).split())
        counts[y] = counts.get(y, 0) + 1
    for text, p in support(g, 0.6).items():
        assert counts.get(text, 0) / n == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / n) + 1e-3)
    assert canonical(g) == "The council acts to save money today in Oakfield a b."


# ----------------------------------------------------------------------------- the tasks
@pytest.mark.parametrize("name", EMBEDDED_TASKS)
def test_ambiguity_zero_is_the_older_generator(name):
    # the digests tests/test_data.py pins for the older generator (recorded before ambiguity existed), now with
    # ambiguity 0 spelled out
    pinned = {"mini-xsum": "2f32c01f37c106cb", "mini-europarl": "ec73915e93d2dbc6", "mini-gsm8k": "46b03f3184cdfda6"}
    dd = data.generate_embedded(name, 400, 60, 70, seed=0, ambiguity=0.0)
    payload = json.dumps({s: dd[s].to_list() for s in ("train", "dev", "test")}, sort_keys=True, ensure_ascii=False)
    assert hashlib.sha256(payload.encode()).hexdigest()[:16] == pinned[name]


@pytest.mark.parametrize("name", EMBEDDED_TASKS)
@pytest.mark.parametrize("a", [0.5, 1.0])
def test_generated_targets_are_valid_and_corruptions_are_not(name, a):
    truth = data.task_truth(name, 0, a)
    rows = data.generate_examples(name, 150, seed=0, ambiguity=a)
    canonical_count = 0
    for r in rows:
        lp = truth.log_prob(r["source"], r["target"])
        assert math.isfinite(lp) and lp <= 0
        assert truth.is_valid(r["source"], "  " + r["target"].replace(" ", "\n ", 1) + " ")  # whitespace only
        assert truth.target(r["source"]) == r["target"]
        for bad in (r["target"] + " extra", r["target"][:-1], r["target"].replace(" ", " the ", 1)):
            assert not truth.is_valid(r["source"], bad), bad
        canonical_count += r["target"] == canonical(truth.node(r["source"]))
    assert canonical_count < (1 - 0.4 * a) * len(rows)  # the targets are spread
    # at ambiguity 0 only the canonical target is valid
    zero = data.task_truth(name, 0, 0.0)
    if name != "mini-europarl":  # (mini-europarl's sources are passages at ambiguity > 0)
        spread = [r for r in rows if r["target"] != canonical(truth.node(r["source"]))]
        assert not any(zero.is_valid(r["source"], r["target"]) for r in spread[:20])


@pytest.mark.parametrize("name", ["mini-xsum", "mini-gsm8k"])
def test_sources_do_not_depend_on_the_ambiguity(name):
    lo = data.generate_examples(name, 60, seed=2, ambiguity=0.0)
    hi = data.generate_examples(name, 60, seed=2, ambiguity=1.0)
    assert [r["source"] for r in lo] == [r["source"] for r in hi]
    assert sum(x["target"] != y["target"] for x, y in zip(lo, hi)) > 30


def test_probabilities_of_every_valid_translation_sum_to_one():
    # a real input whose valid outputs can be enumerated: a mini-europarl passage
    truth = data.task_truth("mini-europarl", 0, 0.7)
    rows = data.generate_examples("mini-europarl", 10, seed=0, ambiguity=0.7)
    for r in rows[:3]:
        sup = truth.support(r["source"])
        assert len(sup) > 1 and r["target"] in sup
        assert sum(sup.values()) == pytest.approx(1.0)
        for text in list(sup)[:5]:
            assert truth.log_prob(r["source"], text) == pytest.approx(math.log(sup[text]))


def test_gsm8k_variants_keep_the_format_and_the_answer():
    rows0 = data.generate_examples("mini-gsm8k", 150, seed=0)
    rows1 = data.generate_examples("mini-gsm8k", 150, seed=0, ambiguity=1.0)
    step = re.compile(r"<<([^=<>]+)=([^<>]+)>>(\d+)")
    for r0, r1 in zip(rows0, rows1):
        assert r1["target"].splitlines()[-1] == r0["target"].splitlines()[-1]  # "#### answer"
        assert gsm8k_answer(r1["target"]) == gsm8k_answer(r0["target"])
        for expr, value, shown in step.findall(r1["target"]):
            assert calc(expr) == value == shown


def test_unknown_source_and_bad_ambiguity_are_errors():
    with pytest.raises(ValueError, match="ambiguity"):
        data.generate_examples("mini-xsum", 5, seed=0, ambiguity=1.5)
    with pytest.raises(ValueError, match="not a source"):
        data.TaskTruth("mini-xsum", 0, 0.5, horizon=50).is_valid("no such document", "x")
    with pytest.raises(ValueError, match="hub task"):
        data.load_task("xsum", cache_dir="/nonexistent", ambiguity=0.5)


def test_task_ambiguity_param(tmp_path):
    p = load_params(SMOKE)
    assert p.task.ambiguity == DEFAULT_AMBIGUITY[p.task.name]
    assert load_params(SMOKE, **{"task.ambiguity": 0}).task.ambiguity == 0
    with pytest.raises(ParamsError, match="task.ambiguity"):
        load_params(SMOKE, **{"task.ambiguity": 1.5})
    with pytest.raises(ParamsError, match="task.ambiguity"):
        load_params(SMOKE, **{"task.name": "xsum", "task.ambiguity": 0.5})
    # ambiguity 0 keeps the older cache folder; another level gets its own
    data.load_task("mini-xsum", cache_dir=tmp_path, n_train=30, n_dev=5, n_test=5, seed=0, ambiguity=0.0)
    data.load_task("mini-xsum", cache_dir=tmp_path, n_train=30, n_dev=5, n_test=5, seed=0, ambiguity=0.5)
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert "mini-xsum-39ec466dc6f7" in names and len(names) == 2
    # the grammars' version is part of the keys above ambiguity 0 only (a cache of other grammars is never reused)
    from kdlib.trainers.tasks import data_key

    assert "variants_version" not in data_key(load_params(SMOKE, **{"task.ambiguity": 0}))["task"]
    assert data_key(p)["task"]["variants_version"] == data.VARIANTS_VERSION
    metas = [json.loads((tmp_path / "data" / n / "meta.json").read_text()) for n in names]
    assert sorted(m["key"].get("variants_version", 0) for m in metas) == [0, data.VARIANTS_VERSION]


def test_reference_lengths_at_the_default_ambiguity(tmp_path):
    """Mean reference length in the kit's tokens (EOS included) on 200 dev references: >= 20 / 20 / 80.

    The dev split does not depend on ``task.n_train``; the tokenizer does, so a 3,000-example train split stands in for
    the kit's 20,000 (a sixth of the generation time): measured, the mean lengths agree to 0.01 tokens
    (22.47 / 23.95 / 82.58 against 22.46 / 23.94 / 82.58) and the maxima exactly."""
    from kdlib.trainers.tasks import load_task_bundle

    need = {"mini-xsum": 20, "mini-europarl": 20, "mini-gsm8k": 80}
    for name in EMBEDDED_TASKS:
        p = load_params(ROOT / "params/embedded/kit.yaml", cache_dir=str(tmp_path),
                        **{"task.name": name, "task.n_train": 3000})
        task = load_task_bundle(p)
        lengths = [len(task.tok(t)["input_ids"]) for t in task.targets["dev"]]
        assert sum(lengths) / len(lengths) >= need[name], name
        assert max(lengths) <= p.task.max_target_len, name


# ----------------------------------------------------------------------------- metrics and maths
def test_validity_metric():
    assert validity([True, False, True, True]) == 75.0
    with pytest.raises(ValueError):
        validity([])


def test_entropy_and_kl_against_literal_loops():
    torch.manual_seed(0)
    p, q = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    h_sum, n = cal.token_entropy_sum(p, mask)
    kl_sum, _ = cal.token_kl_sum(p, q, mask)
    h_ref = kl_ref = 0.0
    for b in range(2):
        for t in range(5):
            if mask[b, t]:
                pp, qq = torch.softmax(p[b, t], 0), torch.softmax(q[b, t], 0)
                h_ref += float(sum(-x * math.log(x) for x in pp.tolist()))
                kl_ref += float(sum(x * math.log(x / y) for x, y in zip(pp.tolist(), qq.tolist())))
    assert n == 8
    assert h_sum == pytest.approx(h_ref, rel=1e-5) and kl_sum == pytest.approx(kl_ref, rel=1e-5)
    # uniform logits: log V nats; identical distributions: KL 0
    assert cal.per_token(*cal.token_entropy_sum(torch.zeros(1, 3, 7), torch.ones(1, 3, dtype=torch.bool))) == pytest.approx(math.log(7))
    assert cal.token_kl_sum(p, p, mask)[0] == pytest.approx(0.0, abs=1e-6)


def test_check_targets():
    rec = {"teacher_entropy_samples": 1.2, "ref_length": 19.0, "teacher_metric": 80.0, "predistill_metric": 60.0,
           "best_student_metric": 81.0}
    out = cal.check_targets(rec, {"teacher_entropy_samples": 1.0, "ref_length": 20, "predistill_ratio": (0.55, 0.92),
                                  "best_student_not_above_teacher": True})
    assert out == {"teacher_entropy_samples": True, "ref_length": False, "predistill_ratio": True,
                   "best_student_not_above_teacher": False}


def test_data_entropy_is_the_exact_entropy_of_the_grammar():
    """Two distinct equally likely targets: every draw costs exactly log 2 nats; two options that print the same text
    are one target of probability 1 (0 nats: log_prob sums over derivations); tokens counted as encode_targets does."""
    from types import SimpleNamespace

    from kdlib.chains.calibration import data_entropy_sum
    from kdlib.data.variants import Alt
    from kdlib.modeling.models import encode_targets
    from kdlib.trainers.tasks import load_task_bundle

    tok = load_task_bundle(load_params(SMOKE, **{"task.n_train": 64})).tok
    two = SimpleNamespace(ambiguity=1.0, node=lambda x: Alt(["the firm said", "jobs"]))
    nats, count = data_entropy_sum(two, ["a", "b", "c"], tok, 16, draws=4, seed=1)
    assert nats == pytest.approx(12 * math.log(2))
    lengths = {y: int(encode_targets(tok, [y], 16)[1].sum()) for y in ("the firm said", "jobs")}
    assert min(lengths.values()) * 12 <= count <= max(lengths.values()) * 12 and count > 0
    same = SimpleNamespace(ambiguity=1.0, node=lambda x: Alt(["jobs", "jobs"]))
    assert data_entropy_sum(same, ["a", "b"], tok, 16, draws=3)[0] == pytest.approx(0.0)
    canonical = SimpleNamespace(ambiguity=0.0, node=lambda x: Alt(["the firm said", "jobs"]))  # ambiguity 0: option 0
    assert data_entropy_sum(canonical, ["a"], tok, 16, draws=3) == (0.0, 3 * lengths["the firm said"])


# ----------------------------------------------------------------------------- evaluation and the command
def test_calibrate_command_on_smoke_writes_the_json(tmp_path):
    """Trains the smoke teacher and pre-distilled student of one task, prints and writes every field; the runs'
    test metrics carry validity (a generated task)."""
    from kdlib.__main__ import main
    from kdlib.chains.core import predistill_run, teacher_run

    cache, out = tmp_path / "cache", tmp_path / "out"
    rc = main(["calibrate", "-f", SMOKE, "--set", f"cache_dir={cache}", "--set", "task.n_train=64",
               "--task", "mini-xsum", "--n", "12", "--output-dir", str(out)])
    assert rc == 0
    rec = json.loads((out / "calibration.json").read_text())["mini-xsum"]
    for key in ("teacher_entropy_samples", "teacher_entropy_refs", "kl_teacher_student", "ref_length", "data_entropy",
                "teacher_metric", "predistill_metric"):
        assert isinstance(rec[key], float) and math.isfinite(rec[key]), key
    assert 0 < rec["teacher_entropy_samples"] <= math.log(10_000) and rec["kl_teacher_student"] >= 0
    assert 0 < rec["data_entropy"] < 5  # mini-xsum at ambiguity 1: synonyms and optional facts
    assert rec["best_student_metric"] is None and rec["n"] == 12 and rec["ambiguity"] == DEFAULT_AMBIGUITY["mini-xsum"]
    assert set(rec["targets_met"]) == {"teacher_entropy_samples", "ref_length", "predistill_ratio",
                                       "best_student_not_above_teacher"}
    p = load_params(SMOKE, cache_dir=str(cache), **{"task.n_train": 64})
    for run in (teacher_run(p), predistill_run(p)):
        test = run.summary()["test"]
        assert 0 <= test["validity"] <= 100
        assert rec["teacher_metric" if run.stage == "teacher" else "predistill_metric"] == test["rougeL"]
    # A distillation run from that student: the next calibration names its test metric as the best student's.
    assert main(["train", "-f", SMOKE, "--set", f"cache_dir={cache}", "--set", "task.n_train=64", "--set",
                 "task.name=mini-xsum", "--set", "method=kl"]) == 0
    kl = list((cache / "runs" / "mini-xsum").glob("kl-*/summary.json"))
    assert len(kl) == 1
    assert main(["calibrate", "-f", SMOKE, "--set", f"cache_dir={cache}", "--set", "task.n_train=64",
                 "--task", "mini-xsum", "--n", "12", "--output-dir", str(out)]) == 0
    rec = json.loads((out / "calibration.json").read_text())["mini-xsum"]
    assert rec["best_student_metric"] == json.loads(kl[0].read_text())["test"]["rougeL"]
    assert rec["targets_met"]["best_student_not_above_teacher"] == (rec["best_student_metric"] <= rec["teacher_metric"])


def test_bad_params_exit_2_before_calibrating(tmp_path, capsys):
    from kdlib.__main__ import main

    assert main(["calibrate", "-f", SMOKE, "--set", "task.ambiguity=7", "--output-dir", str(tmp_path)]) == 2
    assert "task.ambiguity" in capsys.readouterr().err
    assert not (tmp_path / "calibration.json").exists()


def test_validity_is_absent_without_a_truth():
    from kdlib.modeling.evaluate import evaluate
    from kdlib.trainers.tasks import load_model, load_task_bundle

    p = load_params(SMOKE, **{"task.n_train": 64})
    task = load_task_bundle(p)
    model = load_model(p, task, p.models.student)
    kwargs = dict(arch=task.arch, src=task.student_src["dev"][:4], references=task.targets["dev"][:4], kind=task.kind,
                  max_new_tokens=8)
    without, _ = evaluate(model, task.tok, **kwargs)
    with_truth, preds = evaluate(model, task.tok, sources=task.sources["dev"][:4], truth=task.truth, **kwargs)
    assert "validity" not in without
    assert with_truth["validity"] == 100.0 * sum(task.truth.is_valid(s, y) for s, y in zip(task.sources["dev"], preds)) / 4
