"""The paper profile's code path, offline: hub-schema data files and `from_pretrained` model
folders (tiny configs saved with save_pretrained), and decoder-only models through the same chain."""

from pathlib import Path

import pytest

from kdlib.chains.core import train
from kdlib.config import load_params
from kdlib.modeling.models import build_model, train_tokenizer

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests/fixtures/hub"
SHORT = {"teacher.steps": 4, "teacher.eval_every": 2, "predistill.steps": 2, "predistill.eval_every": 2,
         "rl.steps": 2, "rl.eval_every": 2, "rl.batch_size": 2, "predistill.batch_size": 2, "teacher.batch_size": 2,
         "task.max_source_len": 64, "task.max_target_len": 16}


@pytest.fixture(scope="module")
def hub_like_models(tmp_path_factory):
    """A 'hub' teacher and student: folders written by save_pretrained, tokenizer included."""
    root = tmp_path_factory.mktemp("hub_models")
    texts = [l for f in FIX.glob("xsum/*.jsonl") for l in f.read_text().splitlines()] * 5
    tok = train_tokenizer(texts, vocab_size=300)
    for name, size in (("teacher", "micro"), ("student", "micro")):
        model = build_model(f"tiny-t5:{size}", vocab_size=len(tok), seed=0)
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return root


def test_hub_schema_data_and_pretrained_folders(hub_like_models, tmp_path):
    p = load_params(ROOT / "params/paper/kit.yaml", cache_dir=str(tmp_path), method="llmr", **SHORT,
                    **{"task.name": "xsum", "task.path": str(FIX / "xsum"), "models.teacher": str(hub_like_models / "teacher"),
                       "models.student": str(hub_like_models / "student"), "models.dtype": "float32",
                       "teacher.train": True, "eval.n_dev": 2, "eval.batch_size": 2})
    run = train(p)
    s = run.summary()
    assert s["steps"] == 2 and {"rougeL", "return"} <= set(s["test"])
    assert len(run.outputs("test")) == 2  # the fixture's test split
    assert (run.best_dir / "model.safetensors").is_file()


def test_decoder_only_models_through_the_same_chain(tmp_path):
    p = load_params(ROOT / "params/smoke/kit.yaml", cache_dir=str(tmp_path), method="ketchup", **SHORT,
                    **{"task.name": "mini-europarl", "task.n_train": 32, "models.teacher": "tiny-causal:micro",
                       "models.student": "tiny-causal:micro", "models.arch": "causal"})
    s = train(p).summary()
    assert s["k"] == 2 and "bleu" in s["test"] and "return" in s["test"]


def test_a_pair_with_another_vocabulary_or_chat_template_is_refused_before_any_compute(hub_like_models, tmp_path):
    """Every method here scores the student's token ids with the teacher: a pair that does not share the vocabulary
    (TRL #4562) or the chat template (tinker-cookbook #796) is refused before anything trains, naming both models and
    the first difference, with exit code 2 from the command line."""
    import shutil
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from kdlib.config import ParamsError
    from kdlib.trainers.pairing import check_pairs

    texts = [l for f in FIX.glob("gsm8k/*.jsonl") for l in f.read_text().splitlines()] * 5
    other = tmp_path / "other_vocab"
    shutil.copytree(hub_like_models / "student", other)
    train_tokenizer(texts, vocab_size=280).save_pretrained(other)  # another corpus: another vocabulary
    chat = tmp_path / "other_template"
    shutil.copytree(hub_like_models / "student", chat)
    tok = AutoTokenizer.from_pretrained(chat)
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    tok.save_pretrained(chat)

    def params(student):
        return load_params(ROOT / "params/paper/kit.yaml", cache_dir=str(tmp_path / "cache"), method="llmr", **SHORT,
                           **{"task.name": "xsum", "task.path": str(FIX / "xsum"),
                              "models.teacher": str(hub_like_models / "teacher"), "models.student": str(student),
                              "models.dtype": "float32"})

    check_pairs([params(hub_like_models / "student")])  # the same tokenizer: accepted
    with pytest.raises(ParamsError, match=r"do not share a vocabulary: the first differing token is id \d+") as e:
        check_pairs([params(other)])
    assert str(hub_like_models / "teacher") in str(e.value) and str(other) in str(e.value)
    with pytest.raises(ParamsError, match="chat templates differ"):
        check_pairs([params(chat)])
    r = subprocess.run([sys.executable, "-m", "kdlib", "train", "-f", str(ROOT / "params/paper/kit.yaml"),
                        "--set", f"cache_dir={tmp_path / 'cli'}", "--set", f"models.teacher={hub_like_models / 'teacher'}",
                        "--set", f"models.student={other}", "--set", "task.name=xsum", "--set", f"task.path={FIX / 'xsum'}",
                        "--set", "models.dtype=float32", "--set", "method=llmr"],
                       cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "do not share a vocabulary" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "cli").exists() or not list((tmp_path / "cli").rglob("summary.json"))  # nothing trained
