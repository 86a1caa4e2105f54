"""LLM-as-judge pairwise protocol (Table 2), end to end against scripted OpenAI-compatible
servers on 127.0.0.1, plus the surrogate judge, the cache, the templates and the CLI."""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kdlib import judge as J

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "params" / "judge"
SECRET = "sk-test-SECRET-9f3c1d7e"

# --------------------------------------------------------------------------- scripted server

_SHOWN = re.compile(r"^(?:Summary|Translation) ([AB]): (.*)$", re.MULTILINE)


def shown(prompt: str) -> list[tuple[str, str]]:
    """[(id, text) of the first-shown, (id, text) of the second-shown] from a shipped template."""
    got = _SHOWN.findall(prompt)
    assert len(got) == 2, prompt
    return got


def always_a(prompt, attempt):
    return 200, "Overall Quality: A reads better.\nPreferred: A", 0.0


def positional(prompt, attempt):
    first_id = shown(prompt)[0][0]
    return 200, f"Overall Quality: the first one is better.\n**Preferred:** {first_id}", 0.0


def longer(prompt, attempt):
    (i1, t1), (i2, t2) = shown(prompt)
    return 200, f"Overall Quality: the longer one says more.\nPreferred: {i1 if len(t1) > len(t2) else i2}", 0.0


def malformed(prompt, attempt):
    return 200, "Both summaries are fine, I cannot choose.", 0.0


class ScriptedServer:
    """An OpenAI-compatible /v1/chat/completions server; ``script(prompt, attempt)`` returns
    (HTTP status, answer text, seconds to sleep first); ``attempt`` counts requests for that
    prompt from 1."""

    def __init__(self, script):
        self.script = script
        self.requests: list[dict] = []
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers),
                                           "body": body})
                    outer.attempts[prompt] += 1
                    attempt = outer.attempts[prompt]
                status, text, delay = outer.script(prompt, attempt)
                if delay:
                    time.sleep(delay)
                payload = (json.dumps({"choices": [{"message": {"role": "assistant",
                                                                "content": text}}]})
                           if status == 200 else json.dumps({"error": "scripted failure"}))
                data = payload.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    if status == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(script):
        s = ScriptedServer(script)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def backend(server, **kw):
    kw = {"timeout_s": 5, "max_retries": 2, "concurrency": 4, "backoff_s": 0.01,
          "api_key_env": "KDLIB_TEST_NO_SUCH_VAR", **kw}
    return J.OpenAIChatBackend(server.url, "scripted-judge", **kw)


def pairs(n=5, candidate_longer=True, with_reference=False):
    cand, base = [], []
    for i in range(n):
        long_, short = f"a long and detailed summary of document {i} with many words", f"summary {i}"
        c, b = (long_, short) if candidate_longer else (short, long_)
        cand.append({"source": f"Document number {i} about topic {i}.", "output": c})
        base.append({"source": f"Document number {i} about topic {i}.", "output": b})
        if with_reference:
            cand[-1]["reference"] = base[-1]["reference"] = c
    return cand, base


def run(cand, base, be, cache, task="summarization", criterion="overall"):
    return J.judge_pairs(cand, base, task=task, criterion=criterion, backend=be, cache_dir=cache,
                         templates_dir=TEMPLATES, progress=False)


# --------------------------------------------------------------------------- protocol


@pytest.mark.parametrize("script,first_rate,id_a_rate", [(always_a, 0.5, 1.0),
                                                           (positional, 1.0, 0.5)])
def test_biased_judges_score_exactly_half(serve, tmp_path, script, first_rate, id_a_rate):
    srv = serve(script)
    cand, base = pairs(5)
    r = run(cand, base, backend(srv), tmp_path / "cache")
    assert r["win_rate"] == 0.5 and r["ci_low"] == 0.5 and r["ci_high"] == 0.5
    assert r["consistency"] == 0.0  # fully inconsistent, and reported as such
    assert r["tie_rate"] == 1.0 and r["invalid_rate"] == 0.0
    assert r["first_position_rate"] == first_rate and r["id_a_rate"] == id_a_rate
    assert r["n_examples"] == 5 and r["n_queries"] == 20 and len(srv.requests) == 20
    # the four presentations of one pair: both orders x both IDs for the first-shown
    prompts = [q["body"]["messages"][-1]["content"] for q in srv.requests]
    one = [shown(p) for p in prompts if "Document number 0 " in p]
    assert sorted((s[0][0], s[0][1].startswith("a long")) for s in one) == [
        ("A", False), ("A", True), ("B", False), ("B", True)]
    assert all(q["body"]["model"] == "scripted-judge" and q["path"] == "/v1/chat/completions"
               for q in srv.requests)


@pytest.mark.parametrize("candidate_longer,expected", [(True, 1.0), (False, 0.0)])
def test_content_judge_is_consistent(serve, tmp_path, candidate_longer, expected):
    srv = serve(longer)
    cand, base = pairs(4, candidate_longer=candidate_longer)
    r = run(cand, base, backend(srv), tmp_path / "cache", task="translation",
            criterion="coherence")
    assert r["win_rate"] == expected and r["consistency"] == 1.0
    assert r["first_position_rate"] == 0.5 and r["tie_rate"] == 0.0
    assert r["scores"] == [expected] * 4


def test_malformed_answers_are_invalid(serve, tmp_path):
    srv = serve(malformed)
    cand, base = pairs(3)
    r = run(cand, base, backend(srv), tmp_path / "cache")
    assert r["invalid_rate"] == 1.0 and r["n_invalid"] == 12 and r["n_errors"] == 0
    assert r["win_rate"] is None and r["n_scored"] == 0 and r["consistency"] == 0.0

    # half malformed: only the presentations where the first-shown got ID "A" are answered
    def half(prompt, attempt):
        return always_a(prompt, attempt) if shown(prompt)[0][0] == "A" else malformed(prompt, attempt)

    srv2 = serve(half)
    r = run(cand, base, backend(srv2), tmp_path / "cache2")
    assert r["invalid_rate"] == 0.5 and r["n_scored"] == 3
    # valid verdicts: (candidate first, A) -> candidate; (baseline first, A) -> baseline
    assert r["win_rate"] == 0.5 and r["first_position_rate"] == 1.0 and r["consistency"] == 0.0


@pytest.mark.parametrize("first", [(500, 0.0), (429, 0.0), (200, 1.5)],
                         ids=["http500", "http429", "timeout"])
def test_transient_failures_are_retried(serve, tmp_path, first):
    status, delay = first

    def flaky(prompt, attempt):
        return (status, "", delay) if attempt == 1 else longer(prompt, attempt)

    srv = serve(flaky)
    cand, base = pairs(2)
    r = run(cand, base, backend(srv, timeout_s=0.5, concurrency=8), tmp_path / "cache")
    assert r["invalid_rate"] == 0.0 and r["win_rate"] == 1.0
    assert len(srv.requests) == 16  # every one of the 8 prompts: one failure, one retry


def test_client_errors_are_not_retried(serve, tmp_path):
    srv = serve(lambda p, a: (400, "", 0.0))
    cand, base = pairs(2)
    r = run(cand, base, backend(srv), tmp_path / "cache")
    assert len(srv.requests) == 8 and r["n_errors"] == 8 and r["invalid_rate"] == 1.0


def test_always_failing_server_counts_invalid_and_caches_nothing(serve, tmp_path):
    srv = serve(lambda p, a: (500, "", 0.0))
    cand, base = pairs(2)
    cache = tmp_path / "cache"
    r = run(cand, base, backend(srv, max_retries=2), cache)
    assert len(srv.requests) == 8 * 3  # 1 try + 2 retries each, then given up
    assert r["invalid_rate"] == 1.0 and r["n_errors"] == 8 and r["win_rate"] is None
    assert "HTTP 500" in r["per_example"][0]["errors"][0]
    assert not list(cache.rglob("*.json"))  # failures are never cached as answers
    # a re-run retries them all
    good = serve(longer)
    r = run(cand, base, backend(good), cache)
    assert len(good.requests) == 8 and r["win_rate"] == 1.0 and r["invalid_rate"] == 0.0


def test_interrupted_evaluation_resumes(serve, tmp_path):
    def half_down(prompt, attempt):  # fails for the presentations where the first-shown is "B"
        return (503, "", 0.0) if shown(prompt)[0][0] == "B" else longer(prompt, attempt)

    cand, base = pairs(3)
    cache = tmp_path / "cache"
    r1 = run(cand, base, backend(serve(half_down), max_retries=0), cache)
    assert r1["n_errors"] == 6 and r1["invalid_rate"] == 0.5
    good = serve(longer)
    r2 = run(cand, base, backend(good), cache)
    assert len(good.requests) == 6 and r2["n_cache_hits"] == 6 and r2["n_backend_calls"] == 6
    assert r2["invalid_rate"] == 0.0 and r2["win_rate"] == 1.0 and r2["consistency"] == 1.0


def test_cached_answers_survive_a_dead_server(serve, tmp_path):
    cand, base = pairs(4)
    cache = tmp_path / "cache"
    first = serve(always_a)
    r1 = run(cand, base, backend(first), cache)
    first.stop()
    dead = serve(lambda p, a: (500, "", 0.0))
    r2 = run(cand, base, backend(dead), cache)
    assert len(dead.requests) == 0 and r2["n_backend_calls"] == 0 and r2["n_cache_hits"] == 16
    strip = lambda r: {k: v for k, v in r.items() if k not in ("n_backend_calls", "n_cache_hits")}
    assert strip(r1) == strip(r2)
    # a corrupt cache file counts as missing (re-asked), never as an answer
    victim = next(cache.rglob("*.json"))
    victim.write_text('{"answer": "Prefer')
    good = serve(always_a)
    r3 = run(cand, base, backend(good), cache)
    assert len(good.requests) == 1 and strip(r3) == strip(r1)


def test_cache_key_depends_on_template_and_model(serve, tmp_path):
    srv = serve(always_a)
    cand, base = pairs(1)
    cache = tmp_path / "cache"
    run(cand, base, backend(srv), cache)
    run(cand, base, backend(srv), cache, criterion="coherence")  # another template
    J.judge_pairs(cand, base, task="summarization", criterion="overall", cache_dir=cache,
                  backend=J.OpenAIChatBackend(srv.url, "another-model", backoff_s=0.01),
                  templates_dir=TEMPLATES, progress=False)
    assert len(srv.requests) == 12


# --------------------------------------------------------------------------- secrets


def test_api_key_is_sent_but_never_written(serve, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDLIB_TEST_JUDGE_KEY", SECRET)
    srv = serve(longer)
    cand, base = pairs(2)
    cf, bf = tmp_path / "cand.jsonl", tmp_path / "base.jsonl"
    write_jsonl(cf, cand)
    write_jsonl(bf, base)
    cache, out = tmp_path / "cache", tmp_path / "result.json"
    rc = cli(["--candidate", str(cf), "--baseline", str(bf), "--task", "summarization",
              "--criterion", "overall", "--backend", "openai", "--base-url", srv.url,
              "--model", "scripted-judge", "--api-key-env", "KDLIB_TEST_JUDGE_KEY",
              "--cache-dir", str(cache), "--templates-dir", str(TEMPLATES),
              "--output", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert srv.requests and all(q["headers"].get("Authorization") == f"Bearer {SECRET}"
                                for q in srv.requests)
    result = json.loads(captured.out)
    assert result["win_rate"] == 1.0 and result["judge"] == "openai:scripted-judge"
    files = [p for p in cache.rglob("*") if p.is_file()] + [out]
    assert len(files) > 1
    for p in files:
        assert SECRET not in p.read_text(), p
    assert SECRET not in captured.out + captured.err
    be = J.OpenAIChatBackend(srv.url, "m", api_key_env="KDLIB_TEST_JUDGE_KEY")
    assert SECRET not in repr(be) + str(be) + json.dumps(be.identity()) + str(vars(be))
    with pytest.raises(ValueError, match="NAME of an environment variable") as e:
        J.JudgeConfig(backend="openai", base_url=srv.url, model="m", api_key_env=SECRET)
    assert SECRET not in str(e.value)


def test_no_key_no_header(serve, tmp_path, monkeypatch):
    monkeypatch.delenv("KDLIB_TEST_NO_SUCH_VAR", raising=False)
    srv = serve(always_a)
    run(*pairs(1), backend(srv), tmp_path / "c")
    assert all("Authorization" not in q["headers"] for q in srv.requests)


# --------------------------------------------------------------------------- surrogate judge


def test_surrogate_prefers_the_reference(tmp_path):
    cand = [{"source": "Het huis is groot.", "output": "the house is very big and old",
             "reference": "the house is very big and old"},
            {"source": "Ik eet appels.", "output": "i eat fresh apples every day",
             "reference": "i eat fresh apples every day"}]
    base = [{"source": c["source"], "output": "zq xv wk wk wk"} for c in cand]
    for task in J.TASKS:
        for crit in J.CRITERIA:
            r = run(cand, base, J.SurrogateJudge(), tmp_path / "c", task=task, criterion=crit)
            assert r["win_rate"] == 1.0 and r["consistency"] == 1.0, (task, crit)
            assert r["invalid_rate"] == 0.0 and r["judge"].startswith("surrogate:")
    r = run(cand, base, J.SurrogateJudge(), tmp_path / "c", task="translation")
    assert r["judge"] == "surrogate:chrf-vs-reference" and r["n_backend_calls"] == 0
    # an exact tie is said and counted invalid
    same = [dict(c, output="x y z") for c in cand]
    r = run(same, [dict(c) for c in same], J.SurrogateJudge(), tmp_path / "c")
    assert r["invalid_rate"] == 1.0 and r["win_rate"] is None
    with pytest.raises(J.InputError, match="reference"):
        run([{"source": "s", "output": "o"}], [{"source": "s", "output": "p"}],
            J.SurrogateJudge(), tmp_path / "c")


def test_surrogate_metrics_by_hand():
    assert J.content_recall("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert J.coherence_proxy("a b c", "a b c") == 1.0
    assert J.coherence_proxy("a b a b a b", "x y") == pytest.approx(0.5 * (1 - (3 / 5 + 2 / 4) / 2))


def test_judge_table(tmp_path):
    ref = ["the cat sat on the mat", "dogs bark at night"]
    mk = lambda outs: [{"source": f"src {i}", "output": o, "reference": ref[i]}
                       for i, o in enumerate(outs)]
    outputs = {"summarization": {"KL": mk(["zz", "yy"]), "KETCHUP": mk(ref),
                                 "LLMR": mk(["the cat", "yy"])}}
    df = J.judge_table(outputs, methods=["LLMR", "KETCHUP"], tasks=["summarization"],
                       backend=J.SurrogateJudge(), cache_dir=tmp_path / "c",
                       templates_dir=TEMPLATES, progress=False)
    assert len(df) == 6 and list(df.columns[:4]) == ["task", "criterion", "method", "win_rate"]
    k = df[(df.method == "KETCHUP") & (df.criterion == "overall")].iloc[0]
    assert k.win_rate == 1.0 and k.judge == "surrogate:rouge-l-vs-reference"
    # LLMR: wins example 1; example 2 is an exact tie ("yy" vs "yy"): invalid, left out
    llmr = df[(df.method == "LLMR") & (df.criterion == "overall")].iloc[0]
    assert llmr.win_rate == 1.0 and llmr.invalid_rate == 0.5


# --------------------------------------------------------------------------- parsing, templates


@pytest.mark.parametrize("text,want", [
    ("Overall Quality: A is tighter.\nPreferred: A", "A"),
    ("preferred:b", "B"),
    ("**Preferred:** **B**", "B"),
    ("Preferred: Summary A.", "A"),
    ("  PREFERRED :  [b]  ", "B"),
    ("Preferred: A\n...on reflection...\nPreferred: B", "B"),
    ("Preferred: A and B", None),
    ("Preferred: tie", None),
    ("Preferred: <summary ID>", None),
    ("I prefer A", None),
    ("", None),
    (None, None),
])
def test_parse_preferred(text, want):
    assert J.parse_preferred(text) == want


def test_templates(tmp_path):
    for task in J.TASKS:
        for crit in J.CRITERIA:
            t = J.load_template(task, crit, TEMPLATES)
            filled = J.fill_template(t, source="{id_2} S", id_1="B", candidate_1="one {source}",
                                     id_2="A", candidate_2="two")
            assert "one {source}" in filled and "{id_2} S" in filled  # values not re-expanded
            assert [i for i, _ in shown(filled)] == ["B", "A"] and "Preferred:" in filled
    with pytest.raises(J.TemplateError, match=r"summarization_overall\.txt"):
        J.load_template("summarization", "overall", tmp_path)
    (tmp_path / "translation_coherence.txt").write_text("{source} {id_1} {candidate_1} {id_2}")
    with pytest.raises(J.TemplateError, match=r"translation_coherence\.txt.*\{candidate_2\}"):
        J.load_template("translation", "coherence", tmp_path)
    (tmp_path / "translation_overall.txt").write_text(
        "{source} {id_1} {candidate_1} {id_2} {candidate_2} {candidate3}")
    with pytest.raises(J.TemplateError, match=r"translation_overall\.txt.*\{candidate3\}"):
        J.load_template("translation", "overall", tmp_path)
    with pytest.raises(ValueError, match="criterion"):
        J.load_template("translation", "fluency", TEMPLATES)


def test_config():
    assert isinstance(J.make_backend(J.JudgeConfig()), J.SurrogateJudge)
    be = J.make_backend(J.JudgeConfig(backend="openai", base_url="http://127.0.0.1:1/v1",
                                      model="m", concurrency=3))
    assert isinstance(be, J.OpenAIChatBackend) and be.concurrency == 3
    with pytest.raises(ValueError):
        J.JudgeConfig(backend="openai", model="m")
    with pytest.raises(ValueError):
        J.JudgeConfig(backend="surrogate", api_key="x")  # extra fields are forbidden


# --------------------------------------------------------------------------- command line


def write_jsonl(path, items):
    path.write_text("".join(json.dumps(x) + "\n" for x in items))


def cli(argv):
    return J.run_cli(J.build_parser(argparse.ArgumentParser()).parse_args(argv))


def test_cli_surrogate_and_bad_input(tmp_path, capsys):
    cand, base = pairs(3, with_reference=True)
    cf, bf = tmp_path / "cand.jsonl", tmp_path / "base.jsonl"
    write_jsonl(cf, cand)
    write_jsonl(bf, base)
    common = ["--task", "summarization", "--criterion", "informativeness", "--cache-dir",
              str(tmp_path / "cache"), "--templates-dir", str(TEMPLATES), "--no-progress"]
    assert cli(["--candidate", str(cf), "--baseline", str(bf), *common]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("win_rate", "tie_rate", "invalid_rate", "consistency", "first_position_rate"):
        assert 0.0 <= out[k] <= 1.0
    assert out["win_rate"] == 1.0 and out["n_examples"] == 3 and out["ci_low"] <= out["ci_high"]
    assert out["judge"] == "surrogate:content-recall-vs-reference"

    def bad(argv, *needles):
        assert cli(argv + common) == 2
        err = capsys.readouterr().err
        for n in needles:
            assert n in err, err

    # mismatched source on line 2
    other = [dict(b) for b in base]
    other[1]["source"] = "Something else entirely."
    of = tmp_path / "other.jsonl"
    write_jsonl(of, other)
    bad(["--candidate", str(cf), "--baseline", str(of)], str(of), "line 2", str(cf))
    # different lengths
    write_jsonl(of, base[:2])
    bad(["--candidate", str(cf), "--baseline", str(of)], str(cf), "line 3")
    # missing file
    missing = tmp_path / "nope.jsonl"
    bad(["--candidate", str(missing), "--baseline", str(bf)], str(missing), "not found")
    # malformed line
    of.write_text(json.dumps(base[0]) + "\n{not json\n")
    bad(["--candidate", str(cf), "--baseline", str(of)], str(of), "line 2")
    of.write_text(json.dumps({"source": "x"}) + "\n")
    bad(["--candidate", str(cf), "--baseline", str(of)], str(of), "line 1", "output")
    # the surrogate without references
    write_jsonl(of, [{k: v for k, v in b.items() if k != "reference"} for b in base])
    write_jsonl(tmp_path / "c2.jsonl", [{k: v for k, v in c.items() if k != "reference"}
                                        for c in cand])
    bad(["--candidate", str(tmp_path / "c2.jsonl"), "--baseline", str(of)], "reference", "line 1")


# --------------------------------------------------------------------------- local model


def test_transformers_backend_tiny_random_model(tmp_path):
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    box = {}

    def work():
        try:
            words = ["<pad>", "<s>", "</s>", "<unk>", "the", "cat", "dog", "summary", "a", "b",
                     ":", ".", "is", "good", "bad"]
            tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
            tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>",
                                          pad_token="<pad>", unk_token="<unk>")
            tok.chat_template = ("{% for m in messages %}<s> {{ m['content'] }} </s> {% endfor %}"
                                 "{% if add_generation_prompt %}<s> {% endif %}")
            tok.save_pretrained(tmp_path / "m")
            torch.manual_seed(0)
            cfg = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                              max_position_embeddings=1024, pad_token_id=0, bos_token_id=1,
                              eos_token_id=2)
            LlamaForCausalLM(cfg).save_pretrained(tmp_path / "m")
            be = J.make_backend(J.JudgeConfig(backend="transformers", model=str(tmp_path / "m"),
                                              max_tokens=6))
            box["r"] = run(*pairs(1), be, tmp_path / "cache")
        except Exception as e:  # reported below
            box["e"] = e

    th = threading.Thread(target=work, daemon=True)
    th.start()
    th.join(timeout=20)
    if th.is_alive():
        pytest.skip("tiny transformers judge took over 20 s on this machine")
    if "e" in box:
        raise box["e"]
    r = box["r"]
    assert r["n_queries"] == 4 and r["n_errors"] == 0 and r["invalid_rate"] == 1.0
    assert r["judge"].startswith("transformers:")
