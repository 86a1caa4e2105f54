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
