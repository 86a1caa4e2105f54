"""Tests of kdlib.data: the generated tasks, their cache, and the hub-schema loaders (local files)."""

from __future__ import annotations

import ast
import hashlib
import json
import operator
import re
from fractions import Fraction
from pathlib import Path

import datasets
import pytest

from kdlib import data
from kdlib.data import (
    DEFAULT_PROMPTS,
    EMBEDDED_TASKS,
    HUB_TASKS,
    apply_prompt,
    generate_embedded,
    generate_examples,
    load_task,
    task_kind,
)

FIXTURES = Path(__file__).parent / "fixtures" / "hub"


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def safe_eval(expr: str) -> Fraction:
    """Exact value of an arithmetic expression of numbers, + - * / and parentheses (no eval)."""

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = walk(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        raise ValueError(f"not plain arithmetic: {expr!r}")

    return walk(ast.parse(expr.replace(",", ""), mode="eval"))


ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>(\S*?)(?=[\s.,]|$)")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def sizes(dd: datasets.DatasetDict) -> dict[str, int]:
    return {split: len(dd[split]) for split in dd}


# ---------------------------------------------------------------------------------------------
# names, kinds, prompts
# ---------------------------------------------------------------------------------------------


def test_task_kinds_and_unknown_name():
    assert [task_kind(n) for n in EMBEDDED_TASKS] == ["summarization", "translation", "arithmetic"]
    assert [task_kind(n) for n in HUB_TASKS] == ["summarization", "translation", "arithmetic"]
    with pytest.raises(ValueError, match="cnn_dailymail"):
        task_kind("cnn_dailymail")
    with pytest.raises(ValueError, match="nope"):
        load_task("nope", cache_dir="unused")


def test_prompts_cover_every_task_and_substitute_literally():
    assert set(DEFAULT_PROMPTS) == set(EMBEDDED_TASKS + HUB_TASKS)
    for prompts in DEFAULT_PROMPTS.values():
        assert set(prompts) == {"student", "teacher"}
        assert all("{source}" in t for t in prompts.values())
    assert apply_prompt("summarize: {source}", "a {b} c") == "summarize: a {b} c"
    with pytest.raises(ValueError, match="source"):
        apply_prompt("summarize:", "text")


# ---------------------------------------------------------------------------------------------
# generated tasks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EMBEDDED_TASKS)
def test_generation_is_deterministic_in_the_seed(name):
    a = generate_examples(name, 300, seed=0)
    assert a == generate_examples(name, 300, seed=0)
    assert len(a) == 300 and len({e["source"] for e in a}) == 300
    assert len({e["id"] for e in a}) == 300 and all(e["id"].startswith(name) for e in a)
    assert generate_examples(name, 100, seed=0) == a[:100]  # prefix-stable
    b = generate_examples(name, 300, seed=1)
    assert [e["source"] for e in a] != [e["source"] for e in b]
    for e in a:
        assert e["source"].isascii() and e["target"].isascii()
        assert e["source"].strip() and e["target"].strip()


@pytest.mark.parametrize("name", EMBEDDED_TASKS)
def test_generate_embedded_splits_sizes_and_no_overlap(name):
    dd = generate_embedded(name, 400, 60, 70, seed=3)
    assert sizes(dd) == {"train": 400, "dev": 60, "test": 70}
    for split in ("train", "dev", "test"):
        assert dd[split].column_names == ["id", "source", "target"]
        assert dd[split][0]["id"] == f"{name}-{split}-000000"
    train = set(dd["train"]["source"])
    assert not train & set(dd["test"]["source"])
    assert not train & set(dd["dev"]["source"])
    assert not set(dd["dev"]["source"]) & set(dd["test"]["source"])
    # The test set depends on n_test and the seed only, not on n_train.
    assert generate_embedded(name, 50, 60, 70, seed=3)["test"]["source"] == dd["test"]["source"]


def test_generation_is_fast():
    import time

    start = time.perf_counter()
    for name in EMBEDDED_TASKS:
        generate_examples(name, 2000, seed=11)
    assert time.perf_counter() - start < 5.0  # typically ~2 s with the ambiguity grammars (0.2 s at ambiguity 0)


def test_embedded_names_only():
    with pytest.raises(ValueError, match="hub task"):
        generate_examples("xsum", 10, seed=0)
    with pytest.raises(ValueError, match="unknown task"):
        generate_embedded("mini-cnn", 1, 1, 1, seed=0)


def test_gsm8k_annotations_are_correct_and_answer_is_last_result():
    examples = generate_examples("mini-gsm8k", 1500, seed=0)
    for e in examples:
        lines = e["target"].split("\n")
        assert re.fullmatch(r"#### \d+", lines[-1]), e["target"]
        results = []
        n_ops = 0
        for line in lines[:-1]:
            found = ANNOTATION.findall(line)
            assert len(found) == 1, line  # one calculator step per worded line
            expr, result, shown = found[0]
            assert safe_eval(expr) == safe_eval(result), line
            assert shown == result, line  # the text after >> repeats the result
            assert line.split(" = ")[0].endswith(expr), line  # "... 48/2 = <<48/2=24>>24 ..."
            n_ops += len(re.findall(r"[-+*/]", expr))
            results.append(result)
        assert lines[-1] == f"#### {results[-1]}"
        assert 2 <= n_ops <= 4, e["target"]
        assert len(e["target"].split()) <= 60
        assert all(safe_eval(r).denominator == 1 and safe_eval(r) >= 0 for r in results)


def test_gsm8k_results_match_the_kit_calculator():
    calculator = pytest.importorskip("kdlib.maths.calculator")
    for e in generate_examples("mini-gsm8k", 300, seed=4):
        for expr, result, _ in ANNOTATION.findall(e["target"]):
            assert calculator.evaluate(expr) == result


def test_europarl_renders_correct_dutch_word_order():
    from kdlib.data.europarl import _render_europarl as render

    def clause(subj, verb, tense, noun, det="the", adj=None, plural=False, neg=False, **kw):
        return {"subj": (subj, None), "verb": verb, "tense": tense, "neg": neg,
                "obj": {"noun": noun, "det": det, "adj": adj, "plural": plural}, **kw}

    cases = [
        # verb second, inversion after a fronted adverbial
        ({"kind": "simple", "front": "tomorrow", "main": clause("committee", "discuss", "present", "report")},
         "Tomorrow the committee discusses the report.", "Morgen bespreekt de commissie het verslag."),
        # separable verb: particle at the end of the main clause
        ({"kind": "simple", "front": None, "main": clause("council", "reject", "present", "plan")},
         "The council rejects the plan.", "De raad wijst het plan af."),
        # verb-final subordinate clause; perfect with the participle at the end
        ({"kind": "trailing", "conj": "because", "main": clause("committee", "approve", "perfect", "report"),
          "sub": clause("minister", "support", "present", "proposal")},
         "The committee has approved the report because the minister supports the proposal.",
         "De commissie heeft het verslag goedgekeurd, omdat de minister het voorstel steunt."),
        # fronted subordinate clause -> inverted main clause; separable verb rejoined in it;
        # "een groot" (het) vs "een grote" (de); "niet" after a definite object
        ({"kind": "fronted", "conj": "because",
          "sub": clause("member states", "reject", "present", "directive", neg=True),
          "main": clause("committee", "approve", "present", "report", det="a", adj="large")},
         "Because the member states do not reject the directive, the committee approves a large report.",
         "Omdat de lidstaten de richtlijn niet afwijzen, keurt de commissie een groot verslag goed."),
        ({"kind": "simple", "front": None, "main": clause("council", "adopt", "future", "directive", det="a", adj="large")},
         "The council will adopt a large directive.", "De raad zal een grote richtlijn aannemen."),
        # English simple past -> Dutch perfect; "ons nieuwe" after a possessive
        ({"kind": "simple", "front": "yesterday", "main": clause("council", "withdraw", "past", "plan", det="our", adj="new", neg=True)},
         "Yesterday the council did not withdraw our new plan.",
         "Gisteren heeft de raad ons nieuwe plan niet ingetrokken."),
        # relative clause: "die" for a de-word, extraposed after the verb cluster
        ({"kind": "simple", "front": None,
          "main": clause("government", "adopt", "perfect", "agreement",
                         rel={"subj": ("ministers", None), "verb": "reject", "tense": "present"})},
         "The government has adopted the agreement that the ministers reject.",
         "De regering heeft de overeenkomst aangenomen die de ministers afwijzen."),
        # reported speech, plural demonstrative, modal + infinitive at the end
        ({"kind": "reported", "speaker": ("rapporteur", None), "say": "hope",
          "sub": clause("council", "welcome", "future", "measure", det="this", adj="European", plural=True)},
         "The rapporteur hopes that the council will welcome these European measures.",
         "De rapporteur hoopt dat de raad deze Europese maatregelen zal toejuichen."),
    ]
    for spec, en, nl in cases:
        assert render(spec) == (en, nl)


def test_europarl_targets_show_dutch_word_order():
    examples = generate_examples("mini-europarl", 2000, seed=0)
    targets = [e["target"] for e in examples]
    particles = ("af", "goed", "aan", "in", "toe", "uit", "voor")
    # separable verb, present tense, particle at the very end of the sentence
    assert sum(t.rsplit(" ", 1)[-1].rstrip(".") in particles for t in targets) > 50
    # verb-final subordinate clauses: "omdat ... steunt," / "... heeft goedgekeurd."
    assert sum(bool(re.search(r"\bomdat( \w+)+ (\w+t|\w+en|heeft \w+|zal \w+)[,.]", t)) for t in targets) > 50
    assert any(re.search(r"\bdat [^,.]* (afwijst|goedkeurt|aanneemt|indient|toejuicht|uitstelt|intrekt)\.$", t)
               for t in targets)
    # inversion after a fronted adverbial and after a fronted subordinate clause
    assert any(re.match(r"(Morgen|Vandaag|Gisteren) (bespreekt|steunt|heeft|zal|wil|moet|kan|keurt|wijst) (de|het) ", t)
               for t in targets)
    assert any(re.match(r"(Omdat|Hoewel|Als|Zodra) [^,]+, (heeft|zal|moet|kan|wil|\w+t|\w+en) (de|het) ", t)
               for t in targets)
    # de/het gender with adjective inflection in both directions
    assert any(re.search(r"\been (nieuw|groot|belangrijk|duidelijk) (verslag|voorstel|plan|besluit)\b", t) for t in targets)
    assert any(re.search(r"\bhet (nieuwe|grote|belangrijke|duidelijke) (verslag|voorstel|plan|besluit)\b", t) for t in targets)
    assert all(len(e["source"].split()) <= 22 for e in examples)


def test_xsum_targets_are_abstractive_and_name_actor_and_place():
    examples = generate_examples("mini-xsum", 1500, seed=0)
    for e in examples:
        source, target = e["source"], e["target"]
        assert target not in source
        assert 38 <= len(source.split()) <= 90
        assert 3 <= len(re.findall(r"[.!?]\"?(?:\s|$)", source)) <= 7
        # names (the actor and the place) come from the document; the first word may be a
        # capitalised headline word ("New ...", "Dogs outlawed ...")
        for word in re.findall(r"\b[A-Z][a-z]+\b", target)[1:]:
            assert word in source, (word, target, source)
    # headline paraphrases never appear in the documents
    verbs = ("unveils", "outlawed", "slashes", "clinch", "strikes deal", "pulls")
    assert sum(any(v in e["target"] for v in verbs) for e in examples) > 300
    assert not any(v in e["source"] for e in examples for v in verbs)


# ---------------------------------------------------------------------------------------------
# the cache of generated tasks
# ---------------------------------------------------------------------------------------------


def test_load_task_caches_generated_data(tmp_path, monkeypatch):
    dd = load_task("mini-europarl", cache_dir=tmp_path, n_train=50, n_dev=10, n_test=12, seed=5)
    assert sizes(dd) == {"train": 50, "dev": 10, "test": 12}
    assert dd["train"].column_names == ["id", "source", "target"]
    folders = list((tmp_path / "data").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("mini-europarl-")
    files = {p.name for p in folders[0].iterdir()}
    assert files == {"train.jsonl", "dev.jsonl", "test.jsonl", "meta.json"}  # no temp files left
    mtimes = {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()}

    def boom(*args, **kwargs):
        raise AssertionError("generate_embedded called although the cache is complete")

    monkeypatch.setattr(data, "generate_embedded", boom)
    again = load_task("mini-europarl", cache_dir=tmp_path, n_train=50, n_dev=10, n_test=12, seed=5)
    for split in ("train", "dev", "test"):
        assert again[split].to_list() == dd[split].to_list()
    assert {p.name: p.stat().st_mtime_ns for p in folders[0].iterdir()} == mtimes
    # other sizes or another seed: another folder (and here, the patched generator is called)
    with pytest.raises(AssertionError, match="cache is complete"):
        load_task("mini-europarl", cache_dir=tmp_path, n_train=50, n_dev=10, n_test=12, seed=6)


def test_folder_without_meta_is_regenerated(tmp_path, monkeypatch):
    kwargs = dict(cache_dir=tmp_path, n_train=30, n_dev=5, n_test=5, seed=0)
    first = load_task("mini-gsm8k", **kwargs)
    folder = next((tmp_path / "data").iterdir())
    (folder / "meta.json").unlink()
    (folder / "train.jsonl").write_text('{"id": "half-written"')  # as if killed mid-write

    calls = []
    real = data.generate_embedded

    def counting(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(data, "generate_embedded", counting)
    second = load_task("mini-gsm8k", **kwargs)
    assert len(calls) == 1
    assert second["train"].to_list() == first["train"].to_list()
    assert (folder / "meta.json").exists()
    # a corrupted split under a complete-looking meta.json is noticed too
    (folder / "dev.jsonl").write_text("")
    load_task("mini-gsm8k", **kwargs)
    assert len(calls) == 2
    load_task("mini-gsm8k", **kwargs)
    assert len(calls) == 2


def test_default_sizes_and_no_path_for_embedded(tmp_path):
    dd = load_task("mini-xsum", cache_dir=tmp_path, n_train=20)
    n_train, n_dev, n_test = data.DEFAULT_SIZES["mini-xsum"]
    assert sizes(dd) == {"train": 20, "dev": n_dev, "test": n_test}
    with pytest.raises(ValueError, match="path"):
        load_task("mini-xsum", cache_dir=tmp_path, path="somewhere")


# ---------------------------------------------------------------------------------------------
# hub tasks from local files in the hub schema
# ---------------------------------------------------------------------------------------------


def _xsum_rows(prefix: str, n: int) -> list[dict]:
    return [{"document": f"{prefix} document {i}. It has two sentences.", "summary": f"{prefix} summary {i}.",
             "id": str(1000 + i)} for i in range(n)]


def test_xsum_local_files(tmp_path):
    root = tmp_path / "xsum"
    write_jsonl(root / "train.jsonl", _xsum_rows("train", 12))
    write_jsonl(root / "validation.jsonl", _xsum_rows("val", 4))
    write_jsonl(root / "test.jsonl", _xsum_rows("test", 5))
    dd = load_task("xsum", cache_dir=tmp_path / "cache", path=str(root))
    assert sizes(dd) == {"train": 12, "dev": 4, "test": 5}
    assert dd["train"].column_names == ["id", "source", "target"]
    assert dd["dev"][0] == {"id": "1000", "source": "val document 0. It has two sentences.",
                            "target": "val summary 0."}
    # n_* subsample: the first n after a seeded shuffle
    small = load_task("xsum", cache_dir=tmp_path / "cache", path=str(root), n_train=5, n_test=2, seed=1)
    assert sizes(small) == {"train": 5, "dev": 4, "test": 2}
    assert set(small["train"]["id"]) <= set(dd["train"]["id"])
    assert small["train"]["id"] == load_task("xsum", cache_dir=tmp_path / "cache", path=str(root),
                                             n_train=5, n_test=2, seed=1)["train"]["id"]
    with pytest.raises(ValueError, match="n_train=50"):
        load_task("xsum", cache_dir=tmp_path / "cache", path=str(root), n_train=50)


def test_europarl_local_file_carves_dev_and_test(tmp_path):
    rows = [{"translation": {"en": f"Sentence number {i}.", "nl": f"Zin nummer {i}."}} for i in range(60)]
    path = write_jsonl(tmp_path / "europarl-en-nl.jsonl", rows)  # one file: all of it is train
    dd = load_task("europarl", cache_dir=tmp_path / "cache", path=str(path), n_dev=5, n_test=7, seed=0)
    assert sizes(dd) == {"train": 48, "dev": 5, "test": 7}
    ids = [set(dd[s]["id"]) for s in ("train", "dev", "test")]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == 60
    for row in dd["test"]:
        i = row["source"].split()[-1].rstrip(".")
        assert row["target"] == f"Zin nummer {i}."
    same = load_task("europarl", cache_dir=tmp_path / "cache", path=str(path), n_dev=5, n_test=7, seed=0)
    other = load_task("europarl", cache_dir=tmp_path / "cache", path=str(path), n_dev=5, n_test=7, seed=1)
    assert same["test"]["id"] == dd["test"]["id"] and other["test"]["id"] != dd["test"]["id"]
    with pytest.raises(ValueError, match="too few"):
        load_task("europarl", cache_dir=tmp_path / "cache", path=str(path), n_dev=40, n_test=30)


def test_gsm8k_local_files_carve_dev_from_train(tmp_path):
    fixture = [json.loads(line) for line in open(FIXTURES / "gsm8k" / "main" / "train.jsonl")]
    root = tmp_path / "gsm8k"
    write_jsonl(root / "train.jsonl", fixture * 4)  # 24 rows
    write_jsonl(root / "test.jsonl", fixture[:5])
    dd = load_task("gsm8k", cache_dir=tmp_path / "cache", path=str(root), n_dev=4)
    assert sizes(dd) == {"train": 20, "dev": 4, "test": 5}
    assert dd["test"][0]["source"] == fixture[0]["question"]
    assert dd["test"][0]["target"] == fixture[0]["answer"]  # annotations and "#### N" kept
    assert "<<" in dd["dev"][0]["target"] and "\n#### " in dd["dev"][0]["target"]
    assert not set(dd["train"]["id"]) & set(dd["dev"]["id"])


def test_parquet_in_hub_layout(tmp_path):
    """The hub's own layout: <config>/<split>-00000-of-00001.parquet."""
    fixture = [json.loads(line) for line in open(FIXTURES / "gsm8k" / "main" / "train.jsonl")]
    root = tmp_path / "openai-gsm8k"
    (root / "main").mkdir(parents=True)
    datasets.Dataset.from_list(fixture).to_parquet(str(root / "main" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(fixture[:2]).to_parquet(str(root / "main" / "test-00000-of-00001.parquet"))
    dd = load_task("gsm8k", cache_dir=tmp_path / "cache", path=str(root), n_dev=2)
    assert sizes(dd) == {"train": 4, "dev": 2, "test": 2}


def test_missing_field_names_file_and_field(tmp_path):
    bad = write_jsonl(tmp_path / "xsum" / "train.jsonl", [{"document": "d", "id": "1"}])
    with pytest.raises(ValueError, match=r"(?s)train\.jsonl.*'summary'"):
        load_task("xsum", cache_dir=tmp_path / "cache", path=str(bad.parent))
    bad = write_jsonl(tmp_path / "ep" / "train.jsonl", [{"translation": {"en": "a"}}] * 5)
    with pytest.raises(ValueError, match=r"(?s)train\.jsonl.*translation\.nl"):
        load_task("europarl", cache_dir=tmp_path / "cache", path=str(bad))
    bad = write_jsonl(tmp_path / "gsm" / "train.jsonl", [{"question": "q", "solution": "s"}] * 5)
    with pytest.raises(ValueError, match=r"(?s)train\.jsonl.*'answer'"):
        load_task("gsm8k", cache_dir=tmp_path / "cache", path=str(bad))


def test_missing_local_path(tmp_path):
    missing = tmp_path / "no" / "such" / "xsum"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_task("xsum", cache_dir=tmp_path, path=str(missing))
    with pytest.raises(FileNotFoundError, match="gsm8k.jsonl"):
        load_task("gsm8k", cache_dir=tmp_path, path="gsm8k.jsonl")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no data files"):
        load_task("gsm8k", cache_dir=tmp_path, path=str(empty))


def test_hub_fixtures(tmp_path):
    dd = load_task("xsum", cache_dir=tmp_path, path=str(FIXTURES / "xsum"))
    assert sizes(dd) == {"train": 4, "dev": 2, "test": 2}
    assert all(r["id"].isdigit() for r in dd["train"])

    with pytest.warns(UserWarning, match="carving"):  # 10 rows: paper-sized dev/test scale down
        dd = load_task("europarl", cache_dir=tmp_path, path=str(FIXTURES / "europarl"))
    assert sizes(dd) == {"train": 8, "dev": 1, "test": 1}

    dd = load_task("gsm8k", cache_dir=tmp_path, path=str(FIXTURES / "gsm8k"), n_dev=2)
    assert sizes(dd) == {"train": 4, "dev": 2, "test": 3}
    for split in ("train", "dev", "test"):
        for row in dd[split]:
            found = ANNOTATION.findall(row["target"])
            assert found and all(safe_eval(e) == safe_eval(r) for e, r, _ in found)
            assert row["target"].rsplit("\n", 1)[-1] == f"#### {found[-1][1]}"


def test_unreachable_hub_says_so_and_suggests_a_local_path(tmp_path, monkeypatch):
    seen = {}

    def offline(path, name=None, **kwargs):
        seen.update(path=path, name=name, **kwargs)
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match=r"(?s)Helsinki-NLP/europarl.*unreachable.*path="):
        load_task("europarl", cache_dir=tmp_path)
    assert seen["name"] == "en-nl" and "trust_remote_code" not in seen
    with pytest.raises(ConnectionError, match="openai/gsm8k"):
        load_task("gsm8k", cache_dir=tmp_path)
    assert seen["name"] == "main"


# ---------------------------------------------------------------------------------------------
# pinned output: the generated tasks must not change silently
# ---------------------------------------------------------------------------------------------

# sha256 (first 16 hex digits) of json.dumps({split: rows}, sort_keys=True) of generate_embedded,
# recorded at GENERATOR_VERSION 2 (commit ac1bba7, before kdlib/data.py became a package). If a
# generator change is intended, bump GENERATOR_VERSION (the cache key) and re-record these.
PINNED_DIGESTS = {
    ("mini-xsum", 0, (30, 5, 5)): "8778bcbe44670097",
    ("mini-xsum", 0, (400, 60, 70)): "2f32c01f37c106cb",
    ("mini-xsum", 0, (4000, 300, 300)): "ea39c04f53e5db30",
    ("mini-xsum", 1, (30, 5, 5)): "8af4626e3e1c9c6e",
    ("mini-xsum", 1, (400, 60, 70)): "fcb842758e5babf1",
    ("mini-xsum", 1, (4000, 300, 300)): "d81a8e59c486d3e1",
    ("mini-europarl", 0, (30, 5, 5)): "b42a6dba766291cd",
    ("mini-europarl", 0, (400, 60, 70)): "ec73915e93d2dbc6",
    ("mini-europarl", 0, (4000, 300, 300)): "0e1fd68a6ff23406",
    ("mini-europarl", 1, (30, 5, 5)): "5c7edb834a110cd2",
    ("mini-europarl", 1, (400, 60, 70)): "218d8d608b44427d",
    ("mini-europarl", 1, (4000, 300, 300)): "1b711efe2b540836",
    ("mini-gsm8k", 0, (30, 5, 5)): "d1fe50208da514e7",
    ("mini-gsm8k", 0, (400, 60, 70)): "46b03f3184cdfda6",
    ("mini-gsm8k", 0, (4000, 300, 300)): "e3e4f32c49e45c25",
    ("mini-gsm8k", 1, (30, 5, 5)): "273ab74195f6adb9",
    ("mini-gsm8k", 1, (400, 60, 70)): "15903e9e07dbddea",
    ("mini-gsm8k", 1, (4000, 300, 300)): "8ed1c41ed69f2249",
}


def _digest(dd: datasets.DatasetDict) -> str:
    payload = json.dumps({s: dd[s].to_list() for s in ("train", "dev", "test")}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name,seed,split_sizes", list(PINNED_DIGESTS))
def test_generated_tasks_are_pinned(name, seed, split_sizes):
    assert data.GENERATOR_VERSION == 2
    assert _digest(generate_embedded(name, *split_sizes, seed=seed)) == PINNED_DIGESTS[name, seed, split_sizes]


def test_cache_keys_are_pinned(tmp_path):
    """Same cache folder names as before: caches written by older checkouts stay valid."""
    for name in EMBEDDED_TASKS:
        load_task(name, cache_dir=tmp_path, n_train=30, n_dev=5, n_test=5, seed=0)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "mini-europarl-3455fe4ffe23", "mini-gsm8k-05b4ea30fc3b", "mini-xsum-39ec466dc6f7"]


# ---------------------------------------------------------------------------------------------
# held-out evaluation sets: registry and API
# ---------------------------------------------------------------------------------------------

EVAL_NAMES_EMBEDDED = ("mini-gsm-plus", "mini-gsm-symbolic", "mini-gsm-hard")
NUMBER = re.compile(r"\d+(?:\.\d+)?")
STEP = re.compile(r"<<([^=<>]+)=([^<>]+)>>(\d+(?:\.\d+)?)")


def test_eval_set_registry_matches_config_and_tasks():
    from kdlib import config

    assert data.EVAL_SETS == data.EMBEDDED_EVAL_SETS + data.HUB_EVAL_SETS == config.EVAL_SETS
    assert data.EMBEDDED_EVAL_SETS == EVAL_NAMES_EMBEDDED
    assert (data.EMBEDDED_TASKS, data.HUB_TASKS) == (config.EMBEDDED_TASKS, config.HUB_TASKS)
    for mapping in (data.EVAL_SET_TASK, data.EVAL_SET_ANSWER, data.EVAL_SET_COLUMNS):
        assert set(mapping) == set(data.EVAL_SETS)
    assert all(data.EVAL_SET_TASK[n] == "mini-gsm8k" for n in data.EMBEDDED_EVAL_SETS)
    assert all(task in DEFAULT_PROMPTS and task_kind(task) == "arithmetic" for task in data.EVAL_SET_TASK.values())
    assert data.EVAL_SET_ANSWER == {**{n: "gsm8k" for n in data.EVAL_SETS}, "math": "math"}
    assert all(cols[:3] == ("id", "source", "target") for cols in data.EVAL_SET_COLUMNS.values())
    assert set(data.HUB_EVAL_SOURCES) == set(data.HUB_EVAL_SETS)


def test_unknown_eval_set_lists_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown evaluation set 'gsm-hard'.*mini-gsm-plus.*gsm-symbolic.*math"):
        data.load_eval_set("gsm-hard", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="mini-gsm-hard"):
        data.generate_eval_set("gsm-plus", 10, seed=0)  # a hub set is not generated
    with pytest.raises(ValueError, match="no path"):
        data.load_eval_set("mini-gsm-plus", cache_dir=tmp_path, path="somewhere")
    with pytest.raises(ValueError, match="non-negative"):
        data.generate_eval_set("mini-gsm-symbolic", -1, seed=0)


# ---------------------------------------------------------------------------------------------
# held-out evaluation sets: generated (mini-gsm-plus, mini-gsm-symbolic, mini-gsm-hard)
# ---------------------------------------------------------------------------------------------

# Same digest as PINNED_DIGESTS, of generate_eval_set(name, n, seed).to_list(), recorded at
# EVAL_GENERATOR_VERSION 1. An intended change bumps EVAL_GENERATOR_VERSION and re-records these.
PINNED_EVAL_DIGESTS = {
    ("mini-gsm-plus", 0, 30): "b3d0083ba1d974fa",
    ("mini-gsm-plus", 0, 300): "4367446c6e6d31c0",
    ("mini-gsm-plus", 1, 30): "197da70818b0dbed",
    ("mini-gsm-plus", 1, 300): "d246919a723d8b23",
    ("mini-gsm-symbolic", 0, 30): "da64d63361e79657",
    ("mini-gsm-symbolic", 0, 300): "9a27a2b9a4864604",
    ("mini-gsm-symbolic", 1, 30): "162c3a0f8936a8d0",
    ("mini-gsm-symbolic", 1, 300): "42f9a543bd64c245",
    ("mini-gsm-hard", 0, 30): "0ee61ce69e2f3273",
    ("mini-gsm-hard", 0, 300): "475114d4ab1fb41a",
    ("mini-gsm-hard", 1, 30): "938bcd96e1b1e402",
    ("mini-gsm-hard", 1, 300): "8da636d92e1be43c",
}


@pytest.mark.parametrize("name,seed,n", list(PINNED_EVAL_DIGESTS))
def test_eval_sets_are_pinned(name, seed, n):
    assert data.EVAL_GENERATOR_VERSION == 1
    rows = data.generate_eval_set(name, n, seed=seed).to_list()
    payload = json.dumps(rows, sort_keys=True, ensure_ascii=False)
    assert hashlib.sha256(payload.encode()).hexdigest()[:16] == PINNED_EVAL_DIGESTS[name, seed, n]


@pytest.mark.parametrize("name", EVAL_NAMES_EMBEDDED)
def test_eval_sets_are_deterministic_and_prefix_stable(name):
    a = data.generate_eval_set(name, 120, seed=0)
    assert a.column_names == list(data.EVAL_SET_COLUMNS[name])
    assert a.to_list() == data.generate_eval_set(name, 120, seed=0).to_list()
    assert data.generate_eval_set(name, 50, seed=0).to_list() == a.to_list()[:50]
    assert a["source"] != data.generate_eval_set(name, 120, seed=1)["source"]
    assert len(set(a["id"])) == len(set(a["source"])) == 120
    assert a[0]["id"] == f"{name}-000000"
    assert len(data.generate_eval_set(name, 0, seed=0)) == 0


def check_gsm8k_target(target: str) -> str:
    """Every worded line has one exact calculator step; the last line is "#### <last result>"."""
    calculator = pytest.importorskip("kdlib.maths.calculator")
    from kdlib.maths.metrics import gsm8k_answer

    lines = target.split("\n")
    results = []
    for line in lines[:-1]:
        steps = STEP.findall(line)
        assert len(steps) == 1, line
        expr, result, shown = steps[0]
        assert safe_eval(expr) == safe_eval(result) and shown == result, line
        assert calculator.evaluate(expr) == result, line  # what calculator-aware decoding inserts
        assert line.split(" = ")[0].endswith(expr), line
        results.append(result)
    assert lines[-1] == f"#### {results[-1]}"
    assert gsm8k_answer(target) == results[-1]
    return results[-1]


@pytest.mark.parametrize("name", EVAL_NAMES_EMBEDDED)
@pytest.mark.parametrize("seed", [0, 1])
def test_eval_set_targets_keep_the_gsm8k_format_with_exact_answers(name, seed):
    for row in data.generate_eval_set(name, 300, seed=seed):
        answer = check_gsm8k_target(row["target"])
        assert safe_eval(answer) >= 0
        assert row["source"].isascii() and row["source"].endswith("?")


def test_decimals_print_like_the_calculator():
    from kdlib.data.gsm_eval import _Num
    from kdlib.maths.calculator import evaluate

    price = _Num(7) + Fraction(1, 4)
    for value, expr in ((price, "7.25"), (3 * price, "3*7.25"), (100 - 3 * price, "100-3*7.25"),
                        (price * 4, "7.25*4"), (-price / 2, "-7.25/2")):
        assert isinstance(value, _Num) and f"{value}" == str(value) == evaluate(expr)
    assert str(_Num(87, 2)) == "43.5" and (3 * price) // 2 == 10 and type((3 * price) // 2) is int


def test_eval_sets_are_held_out_from_mini_gsm8k_training_data():
    train = set(generate_embedded("mini-gsm8k", 4000, 300, 300, seed=0)["train"]["source"])
    for name in EVAL_NAMES_EMBEDDED:
        assert not train & set(data.generate_eval_set(name, 300, seed=0)["source"]), name


def test_mini_gsm_plus_perturbs_the_mini_gsm8k_test_problems():
    from kdlib.data.gsm_eval import _numbers_changed

    ds = data.generate_eval_set("mini-gsm-plus", 300, seed=1)
    assert set(ds["perturbation"]) == set(data.PERTURBATIONS)
    bases = sorted({int(b.rsplit("-", 1)[1]) for b in ds["base_id"]})
    assert bases == list(range(len(bases))) and len(bases) < 80  # 300 rows: the first ~65 test problems
    test = generate_embedded("mini-gsm8k", 0, 0, len(bases), seed=1)["test"]
    for row in ds:
        base = test[int(row["base_id"].rsplit("-", 1)[1])]
        assert row["base_id"] == base["id"]
        assert (row["base_source"], row["base_target"]) == (base["source"], base["target"])
        assert row["source"] != row["base_source"]
        kind, src, base_src = row["perturbation"], row["source"], row["base_source"]
        if kind in ("numerical substitution", "digit expansion", "integer-decimal-fraction conversion"):
            assert _numbers_changed(base_src, src) >= 1, (kind, src)  # only numbers differ
        if kind == "digit expansion":
            assert sum(map(len, NUMBER.findall(src))) > sum(map(len, NUMBER.findall(base_src)))
        if kind == "integer-decimal-fraction conversion":
            assert re.search(r"\$\d+\.\d+", src) and row["template"] in ("shopping", "wages", "savings", "fence")
        if kind in ("distraction insertion", "problem understanding"):
            assert row["target"] == row["base_target"]
        if kind == "problem understanding":  # reworded, same numbers
            assert sorted(NUMBER.findall(src)) == sorted(NUMBER.findall(base_src))
        if kind == "distraction insertion":  # one sentence with a number, right before the question
            head, question = base_src.rsplit(". ", 1)
            assert src.startswith(head + ". ") and src.endswith(" " + question)
            inserted = src[len(head) + 2:-len(question) - 1]
            assert re.fullmatch(r"[A-Z][^.?]* \$?\d+[^.?]*\.", inserted), inserted
    substitutions = ds.filter(lambda r: r["perturbation"] == "numerical substitution")
    one = [_numbers_changed(r["base_source"], r["source"]) == 1 for r in substitutions]
    assert sum(one) >= 0.9 * len(one)  # one number changed, as in GSM-Plus


def test_distractor_person_does_not_blur_the_pronouns():
    from kdlib.data.gsm8k import _GSM_PEOPLE

    gender = dict(_GSM_PEOPLE)
    ds = data.generate_eval_set("mini-gsm-plus", 600, seed=0)
    checked = 0
    for row in ds.filter(lambda r: r["perturbation"] == "distraction insertion"):
        head = row["base_source"].rsplit(". ", 1)[0]
        inserted = row["source"][len(head) + 2:].split(". ", 1)[0]
        first = inserted.split()[0]
        if first not in gender:
            continue
        assert first not in row["base_source"]
        he = re.search(r"\b(he|him|his|himself)\b", row["base_source"], re.I)
        she = re.search(r"\b(she|her|herself)\b", row["base_source"], re.I)
        if bool(he) != bool(she):
            assert gender[first] == ("she" if he else "he"), row["source"]
            checked += 1
    assert checked > 20


def test_mini_gsm_symbolic_uses_only_held_out_names():
    from kdlib.data.gsm8k import _GSM_PEOPLE, HELDOUT_PEOPLE
    from kdlib.data.xsum import _FIRST_NAMES, _LAST_NAMES

    held_out = {name for name, _ in HELDOUT_PEOPLE}
    assert len(held_out) == len(HELDOUT_PEOPLE) >= 30
    assert not held_out & ({name for name, _ in _GSM_PEOPLE} | set(_FIRST_NAMES) | set(_LAST_NAMES))
    assert {he for _, he in HELDOUT_PEOPLE} == {"he", "she"}
    train_words = {w for e in generate_examples("mini-gsm8k", 5000, seed=0)
                   for w in re.findall(r"[A-Za-z]+", e["source"] + e["target"])}
    assert not held_out & train_words  # never seen in training, whatever the seed (names come from one list)
    seen_names = set()
    for row in data.generate_eval_set("mini-gsm-symbolic", 300, seed=0):
        words = set(re.findall(r"[A-Za-z]+", row["source"] + row["target"]))
        assert not words & {name for name, _ in _GSM_PEOPLE}, row["source"]
        seen_names |= words & held_out
        if row["template"] not in ("bus", "boxes", "fraction"):  # the families without a person
            assert words & held_out, row["source"]
    assert len(seen_names) >= 25


def test_mini_gsm_hard_has_larger_numbers_and_the_longest_solutions():
    def biggest(rows):
        return sum(max(float(x) for x in NUMBER.findall(r["source"])) for r in rows) / len(rows)

    hard = data.generate_eval_set("mini-gsm-hard", 300, seed=0)
    base = generate_examples("mini-gsm8k", 300, seed=0)
    assert biggest(hard) > 5 * biggest(base)
    assert "ages" not in hard["template"] and len(set(hard["template"])) == 11
    # The longest branch (lines with "####"), unless it would not fit the length limits: then
    # another branch with the larger numbers (always for shopping's 4-step form, rarely otherwise).
    longest = {"sales": 4, "wages": 4, "share": 4, "pages": 4, "savings": 4}
    rows = [r for r in hard if r["template"] in longest]
    at_longest = [r["target"].count("\n") + 1 == longest[r["template"]] for r in rows]
    assert sum(at_longest) >= 0.9 * len(rows)
    assert all(r["target"].count("\n") + 1 == 4 for r in hard if r["template"] == "shopping")


def test_eval_sets_use_the_mini_gsm8k_vocabulary_and_fit_its_length_limits():
    """A tokenizer trained on mini-gsm8k (as the kit trains one) reads every set with the tokens it
    made for mini-gsm8k (digits, "<<", ">>", the task's words), the pieces of the held-out names
    aside, and within mini-gsm8k's length limits."""
    from kdlib.config import TASK_LENGTHS
    from kdlib.data.gsm8k import HELDOUT_PEOPLE
    from kdlib.modeling.models import train_tokenizer

    train = generate_embedded("mini-gsm8k", 2000, 0, 0, seed=0)["train"]
    prompt = DEFAULT_PROMPTS["mini-gsm8k"]["student"]
    prompts = [apply_prompt(prompt, s) for s in train["source"]]
    tok = train_tokenizer(prompts + prompts + list(train["target"]))
    known = {i for t in prompts + list(train["target"]) for i in tok(t)["input_ids"]}
    words = {w for t in prompts + list(train["target"]) for w in re.findall(r"[A-Za-z]+", t)}  # case counts
    names = {name for name, _ in HELDOUT_PEOPLE}
    name_pattern = re.compile(r"\b(" + "|".join(names) + r")\b")
    max_source, max_target = TASK_LENGTHS["mini-gsm8k"]
    for name in EVAL_NAMES_EMBEDDED:
        ds = data.generate_eval_set(name, 300, seed=0)
        for row in ds:
            src_text = apply_prompt(prompt, row["source"])
            for text, limit in ((src_text, max_source), (row["target"], max_target)):
                enc = tok(text, return_offsets_mapping=True)
                assert len(enc["input_ids"]) <= limit, (name, len(enc["input_ids"]), text)
                spans = [m.span() for m in name_pattern.finditer(text)]
                for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]):
                    in_name = any(a < e and s < b for s, e in spans)
                    assert i != tok.unk_token_id and (i in known or in_name), (name, tok.convert_ids_to_tokens(i), text)
            new = set(re.findall(r"[A-Za-z]+", row["source"] + row["target"])) - words - names
            assert not new, (name, new, row["source"])
        assert "<<" in tok.convert_ids_to_tokens(tok(ds[0]["target"])["input_ids"])


def test_load_eval_set_caches_atomically(tmp_path, monkeypatch):
    ds = data.load_eval_set("mini-gsm-symbolic", cache_dir=tmp_path, n=40, seed=2)
    assert ds.to_list() == data.generate_eval_set("mini-gsm-symbolic", 40, seed=2).to_list()
    folders = list((tmp_path / "data").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("mini-gsm-symbolic-")
    assert {p.name for p in folders[0].iterdir()} == {"test.jsonl", "meta.json"}
    calls = []
    real = data.generate_eval_set

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(data, "generate_eval_set", counting)
    assert data.load_eval_set("mini-gsm-symbolic", cache_dir=tmp_path, n=40, seed=2).to_list() == ds.to_list()
    assert calls == []  # complete cache: read, not regenerated
    (folders[0] / "meta.json").unlink()  # as if killed before the end
    (folders[0] / "test.jsonl").write_text('{"id": "half')
    assert data.load_eval_set("mini-gsm-symbolic", cache_dir=tmp_path, n=40, seed=2).to_list() == ds.to_list()
    assert len(calls) == 1 and (folders[0] / "meta.json").exists()
    (folders[0] / "test.jsonl").write_text("")  # corrupted under a complete-looking meta.json
    data.load_eval_set("mini-gsm-symbolic", cache_dir=tmp_path, n=40, seed=2)
    assert len(calls) == 2
    default = data.load_eval_set("mini-gsm-plus", cache_dir=tmp_path)  # default size, another folder
    assert len(default) == data.DEFAULT_EVAL_SIZES["mini-gsm-plus"] and len(list((tmp_path / "data").iterdir())) == 2


def test_eval_set_generation_is_fast():
    import time

    start = time.perf_counter()
    for name in EVAL_NAMES_EMBEDDED:
        data.generate_eval_set(name, 1000, seed=7)
    assert time.perf_counter() - start < 5.0  # typically ~0.5 s


# ---------------------------------------------------------------------------------------------
# held-out evaluation sets: hub (GSM-Plus, GSM-Symbolic, MATH) from local files in the hub schema
# ---------------------------------------------------------------------------------------------


def test_gsm_plus_fixture(tmp_path):
    from kdlib.maths.metrics import gsm8k_answer

    with pytest.warns(UserWarning, match="dropping 1 rows"):  # "critical thinking": no numeric answer
        ds = data.load_eval_set("gsm-plus", cache_dir=tmp_path, path=str(FIXTURES / "gsm-plus"))
    raw = [json.loads(line) for line in open(FIXTURES / "gsm-plus" / "test.jsonl")]
    assert ds.column_names == list(data.EVAL_SET_COLUMNS["gsm-plus"])
    assert len(ds) == 7  # test.jsonl less the critical-thinking row; testmini.jsonl is not read
    assert ds["perturbation"] == [r["perturbation_type"] for r in raw if r["answer"] != "None"]
    for row, r in zip(ds, [r for r in raw if r["answer"] != "None"]):
        assert row["source"] == r["question"] and row["base_source"] == r["seed_question"]
        assert row["base_target"] == r["seed_solution"]
        assert gsm8k_answer(row["target"]) == r["answer"]  # "#### 3,400" -> "3400"
    appended = ds[ds["perturbation"].index("distraction insertion")]["target"]
    assert appended.endswith("16 rolls left.\n#### 16")  # the answer field, where the solution had no ####
    assert ds["id"][:2] == ["gsm-plus-000000", "gsm-plus-000001"]


def test_gsm_symbolic_fixture(tmp_path):
    from kdlib.maths.metrics import gsm8k_answer

    ds = data.load_eval_set("gsm-symbolic", cache_dir=tmp_path, path=str(FIXTURES / "gsm-symbolic"))
    assert ds.column_names == list(data.EVAL_SET_COLUMNS["gsm-symbolic"])
    assert ds["id"] == ["gsm-symbolic-0-0", "gsm-symbolic-0-1", "gsm-symbolic-1-0", "gsm-symbolic-1-1"]  # main/ only
    assert [gsm8k_answer(t) for t in ds["target"]] == ["11", "21", "56", "55"]
    assert ds[0]["base_source"].startswith("Pia has 5 kites") and ds[0]["template_id"] == "0"
    for row in ds:
        check_gsm8k_target(row["target"])


def test_math_fixture(tmp_path):
    from kdlib.maths.metrics import math_answer

    ds = data.load_eval_set("math", cache_dir=tmp_path, path=str(FIXTURES / "math"))
    assert ds.column_names == list(data.EVAL_SET_COLUMNS["math"])
    assert len(ds) == 5  # the test files of three subjects; algebra/train.jsonl is not read
    assert [math_answer(t) for t in ds["target"]] == [r"\frac{7}{2}", "80", "2", r"\{1, 2, 4\}", "2.5"]
    assert ds["subject"] == ["Algebra", "Algebra", "Number Theory", "Number Theory", "Prealgebra"]
    assert ds[0] == {"id": "math-000000", "source": "What is $x$ if $2x + 3 = 10$?",
                     "target": r"Subtract 3 and divide by 2: $x = \boxed{\frac{7}{2}}$.",
                     "subject": "Algebra", "level": "Level 1"}


def test_math_parquet_in_hub_layout_and_subsampling(tmp_path):
    root = tmp_path / "hendrycks_math"
    for subject in data.MATH_SUBJECTS:
        (root / subject).mkdir(parents=True)
        rows = [{"problem": f"{subject} problem {i}?", "level": "Level 1", "type": subject,
                 "solution": f"So $\\boxed{{{i}}}$."} for i in range(3)]
        datasets.Dataset.from_list(rows).to_parquet(str(root / subject / "test-00000-of-00001.parquet"))
        datasets.Dataset.from_list(rows[:1]).to_parquet(str(root / subject / "train-00000-of-00001.parquet"))
    ds = data.load_eval_set("math", cache_dir=tmp_path / "cache", path=str(root))
    assert len(ds) == 21 and ds["subject"][::3] == list(data.MATH_SUBJECTS)
    small = data.load_eval_set("math", cache_dir=tmp_path / "cache", path=str(root), n=5, seed=1)
    assert len(small) == 5 and set(small["id"]) <= set(ds["id"])
    assert small["id"] == data.load_eval_set("math", cache_dir=tmp_path / "cache", path=str(root), n=5, seed=1)["id"]
    assert small["id"] != data.load_eval_set("math", cache_dir=tmp_path / "cache", path=str(root), n=5, seed=2)["id"]
    with pytest.raises(ValueError, match="n=22"):
        data.load_eval_set("math", cache_dir=tmp_path / "cache", path=str(root), n=22)


def test_eval_set_missing_field_names_file_and_field(tmp_path):
    bad = write_jsonl(tmp_path / "gp" / "test.jsonl", [{"question": "q?", "answer": "3"}])
    with pytest.raises(ValueError, match=r"(?s)test\.jsonl.*'solution'"):
        data.load_eval_set("gsm-plus", cache_dir=tmp_path / "cache", path=str(bad.parent))
    bad = write_jsonl(tmp_path / "m" / "test.jsonl", [{"question": "q?", "solution": r"\boxed{1}"}])
    with pytest.raises(ValueError, match=r"(?s)test\.jsonl.*'problem'"):
        data.load_eval_set("math", cache_dir=tmp_path / "cache", path=str(bad))
    with pytest.raises(FileNotFoundError, match="no/such"):
        data.load_eval_set("gsm-symbolic", cache_dir=tmp_path, path=str(tmp_path / "no" / "such"))


def test_hub_eval_sets_load_the_test_split_of_the_hub_names(tmp_path, monkeypatch):
    calls = []
    math_rows = [json.loads(line) for line in open(FIXTURES / "math" / "algebra" / "test.jsonl")]
    symbolic_rows = [json.loads(line) for line in open(FIXTURES / "gsm-symbolic" / "main" / "test.jsonl")]

    def fake_hub(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        rows = {"EdinburghNLP": None, "apple": symbolic_rows, "EleutherAI": math_rows}[path.split("/")[0]]
        return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:1]),
                                     "test": datasets.Dataset.from_list(rows)})

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    ds = data.load_eval_set("math", cache_dir=tmp_path)
    assert [(p, n) for p, n, _ in calls] == [("EleutherAI/hendrycks_math", s) for s in data.MATH_SUBJECTS]
    assert len(ds) == 2 * len(data.MATH_SUBJECTS) and len(set(ds["id"])) == len(ds)
    calls.clear()
    assert len(data.load_eval_set("gsm-symbolic", cache_dir=tmp_path)) == 4
    assert [(p, n) for p, n, _ in calls] == [("apple/GSM-Symbolic", "main")]
    assert all("trust_remote_code" not in kw for _, _, kw in calls)

    def offline(path, name=None, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match=r"(?s)qintongli/GSM-Plus.*path="):
        data.load_eval_set("gsm-plus", cache_dir=tmp_path)
