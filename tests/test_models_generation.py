"""Tokenizer, both model families through one interface, and calculator-aware decoding."""

from types import SimpleNamespace

import pytest
import torch

from kdlib.modeling.generation import generate
from kdlib.modeling.models import (
    build_model,
    check_shared_vocab,
    decode,
    encode_sources,
    encode_targets,
    forward_logits,
    load_pretrained,
    save_checkpoint,
    train_tokenizer,
)

TEXTS = ["Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
         "summarize: The mayor of Lindenburg opened a new bridge on Tuesday.",
         "De commissie wijst het voorstel af, omdat de minister het plan steunt."] * 30


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXTS, vocab_size=400)


def test_tokenizer_round_trips_and_splits_digits(tok):
    for t in TEXTS[:3]:
        ids = tok(t)["input_ids"]
        assert ids[-1] == tok.eos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == t
    pieces = tok.tokenize("<<48/2=24>>")
    assert "<<" in pieces and ">>" in pieces and "4" in pieces and "8" in pieces
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)


@pytest.mark.parametrize("spec,arch", [("tiny-t5:micro", "seq2seq"), ("tiny-causal:micro", "causal")])
def test_greedy_decoding_matches_teacher_forced_logits(tok, spec, arch):
    """The KV-cached decoder and the one-pass forward see the same distribution at every step."""
    model = build_model(spec, vocab_size=len(tok), seed=1).eval()
    src, sm = encode_sources(tok, TEXTS[:3], 40, arch)
    roll = generate(model, tok, src, sm, arch=arch, max_new_tokens=12)
    logits = forward_logits(model, arch, src, sm, roll.tokens, roll.mask)
    assert logits.shape[:2] == roll.tokens.shape
    assert torch.equal(logits.argmax(-1)[roll.mask], roll.tokens[roll.mask])
    assert torch.equal(roll.mask, roll.action_mask)  # no calculator: every token is an action


def test_sampling_is_reproducible_with_a_generator(tok):
    model = build_model("tiny-t5:micro", vocab_size=len(tok), seed=1)
    src, sm = encode_sources(tok, TEXTS[:3], 40, "seq2seq")
    a = generate(model, tok, src, sm, arch="seq2seq", max_new_tokens=10, do_sample=True,
                 generator=torch.Generator().manual_seed(3))
    b = generate(model, tok, src, sm, arch="seq2seq", max_new_tokens=10, do_sample=True,
                 generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens)


class ScriptedSeq2Seq(torch.nn.Module):
    """Emits a fixed token script whatever it is fed (to drive the calculator deterministically)."""

    def __init__(self, script, vocab):
        super().__init__()
        self.script, self.vocab = script, vocab
        self.config = SimpleNamespace(decoder_start_token_id=0)
        self.fed = []

    def get_encoder(self):
        return lambda **kw: SimpleNamespace(last_hidden_state=None)

    def forward(self, decoder_input_ids=None, past_key_values=None, **kw):
        t = 0 if past_key_values is None else past_key_values
        self.fed.append(decoder_input_ids[:, -1].tolist())
        logits = torch.full((decoder_input_ids.shape[0], 1, self.vocab), -1e9)
        logits[:, 0, self.script[min(t, len(self.script) - 1)]] = 0.0
        return SimpleNamespace(logits=logits, past_key_values=t + 1)


def test_calculator_inserts_result_and_masks_inserted_tokens(tok):
    # The model writes "<<48/2=" then (wrongly) "7 7 >> ..." — the calculator must override.
    script_text = "Natalia sold <<48/2="
    script = tok(script_text, add_special_tokens=False)["input_ids"]
    wrong = tok("77>> clips", add_special_tokens=False)["input_ids"]
    model = ScriptedSeq2Seq(script + wrong + [tok.eos_token_id] * 10, len(tok))
    src, sm = encode_sources(tok, ["q"], 8, "seq2seq")
    roll = generate(model, tok, src, sm, arch="seq2seq", max_new_tokens=len(script) + 12, use_calculator=True)
    text = decode(tok, roll.tokens, roll.mask)[0]
    assert text.startswith("Natalia sold <<48/2=24>>"), text
    n = len(script)
    ctx = len(tok("=", add_special_tokens=False)["input_ids"])
    inserted = tok("=24>>", add_special_tokens=False)["input_ids"][ctx:]
    assert roll.tokens[0, n: n + len(inserted)].tolist() == inserted
    assert not roll.action_mask[0, n: n + len(inserted)].any()  # forced tokens are not actions
    assert roll.action_mask[0, :n].all() and roll.action_mask[0, n + len(inserted)]
    off = generate(ScriptedSeq2Seq(script + wrong + [tok.eos_token_id] * 10, len(tok)), tok, src, sm, arch="seq2seq",
                   max_new_tokens=len(script) + 12, use_calculator=False)
    assert "<<48/2=77>>" in decode(tok, off.tokens, off.mask)[0].replace(" ", "")


def test_targets_end_with_eos_and_masks_are_prefixes(tok):
    ids, m = encode_targets(tok, ["a b c", "a"], max_len=3)
    assert ids[0, 2] == tok.eos_token_id and ids[1, 1] == tok.eos_token_id
    assert m.tolist() == [[True, True, True], [True, True, False]]


def test_checkpoints_are_safetensors_and_reload(tok, tmp_path):
    model = build_model("tiny-t5:micro", vocab_size=len(tok), seed=0)
    save_checkpoint(model, tok, tmp_path / "ckpt", {"step": 3})
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    assert not list((tmp_path / "ckpt").glob("*.bin")) and not list((tmp_path / "ckpt").glob("*.pt"))
    again = load_pretrained(str(tmp_path / "ckpt"), arch="seq2seq")
    src, sm = encode_sources(tok, TEXTS[:2], 30, "seq2seq")
    tgt, tm = encode_targets(tok, TEXTS[:2], 10)
    assert torch.allclose(forward_logits(model.eval(), "seq2seq", src, sm, tgt, tm),
                          forward_logits(again.eval(), "seq2seq", src, sm, tgt, tm), atol=1e-5)


def test_vocabulary_mismatch_is_refused(tok):
    other = train_tokenizer(["completely different words here"] * 20, vocab_size=60)
    with pytest.raises(ValueError, match="shared"):
        check_shared_vocab(tok, other)
    a = build_model("tiny-t5:micro", vocab_size=len(tok))
    b = build_model("tiny-t5:micro", vocab_size=len(tok) + 5)
    with pytest.raises(ValueError, match="vocabularies differ"):
        check_shared_vocab(tok, tok, a, b)


# ----------------------------------------------------------------------------------------
# dropout: the params' value reaches every model the kit builds or loads
# ----------------------------------------------------------------------------------------
def _hub_like_folder(tmp_path, arch, tok):
    """A tiny T5 / Qwen2 saved with save_pretrained whose config says dropout 0.1 (as t5-base's)."""
    from transformers import (
        Qwen2Config,
        Qwen2ForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    torch.manual_seed(0)
    if arch == "seq2seq":
        model = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=32, d_ff=64, num_layers=1, num_heads=2,
                                                    d_kv=16, dropout_rate=0.1, classifier_dropout=0.1, pad_token_id=0,
                                                    eos_token_id=1, decoder_start_token_id=0))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                             attention_dropout=0.1, pad_token_id=0, eos_token_id=1, bos_token_id=1))
    folder = tmp_path / arch
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _dropout_values(model):
    """Every dropout probability the model holds: config fields, Dropout modules, float attributes."""
    from kdlib.modeling.models import _is_dropout_name

    vals = {f"config.{k}": v for k, v in vars(model.config).items() if _is_dropout_name(k) and isinstance(v, float)}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Dropout):
            vals[f"{name}.p"] = mod.p
        for k, v in vars(mod).items():
            if _is_dropout_name(k) and isinstance(v, float):
                vals[f"{name}.{k}"] = v
    return vals


def _two_train_passes(model, tok, arch):
    model.train()
    src, sm = encode_sources(tok, TEXTS[:2], 30, arch)
    tgt, tm = encode_targets(tok, TEXTS[:2], 10)
    return forward_logits(model, arch, src, sm, tgt, tm), forward_logits(model, arch, src, sm, tgt, tm)


@pytest.mark.parametrize("arch", ["seq2seq", "causal"])
def test_dropout_of_the_params_reaches_every_loaded_model(tok, tmp_path, arch):
    from kdlib.config import Params
    from kdlib.trainers.tasks import load_model

    folder = _hub_like_folder(tmp_path, arch, tok)
    kept = load_pretrained(str(folder), arch=arch)  # dropout=None keeps the saved 0.1 ...
    assert 0.1 in _dropout_values(kept).values()
    a, b = _two_train_passes(kept, tok, arch)
    assert not torch.equal(a, b)  # ... and a model in train mode is then stochastic

    for model in (load_pretrained(str(folder), arch=arch, dropout=0.0),
                  build_model(str(folder), vocab_size=len(tok), arch=arch, dropout=0.0)):  # a hub spec
        vals = _dropout_values(model)
        assert vals and set(vals.values()) == {0.0}, vals
        assert any(k.startswith("config.") for k in vals) and any(not k.startswith("config.") for k in vals)
        a, b = _two_train_passes(model, tok, arch)
        assert torch.equal(a, b)

    # the harness's loader: models.dropout, and divergence.dropout for a divergence-KD method stage
    task = SimpleNamespace(arch=arch)
    p = Params(method="ketchup", models={"dropout": 0.0, "arch": arch}, divergence={"dropout": 0.25})
    assert set(_dropout_values(load_model(p, task, "unused", checkpoint=str(folder))).values()) == {0.0}
    p = Params(method="tvd", models={"dropout": 0.0, "arch": arch}, divergence={"dropout": 0.25})
    assert p.method_dropout() == 0.25
    assert set(_dropout_values(load_model(p, task, "unused", checkpoint=str(folder))).values()) == {0.25}


def test_tiny_presets_apply_dropout_everywhere(tok):
    for spec in ("tiny-t5:micro", "tiny-causal:micro"):
        assert set(_dropout_values(build_model(spec, vocab_size=len(tok), dropout=0.3)).values()) == {0.3}
        assert set(_dropout_values(build_model(spec, vocab_size=len(tok))).values()) == {0.0}
    with pytest.raises(ValueError):
        build_model("tiny-t5:micro", vocab_size=len(tok), dropout=1.0)


def test_tokenizer_cache_survives_another_process_finishing_first(tmp_path, monkeypatch):
    """Two DDP ranks train the same (deterministic) tokenizer: when the other one renames its folder in first, this
    one's rename fails, and it must load the finished folder instead of failing (a race seen in the two-rank test)."""
    import os as _os
    import shutil

    from kdlib.modeling import models as mm

    folder = tmp_path / "tok"
    real_replace = _os.replace

    def other_rank_wins(src, dst):
        shutil.copytree(src, dst)  # the other rank's identical folder lands first
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(mm.os, "replace", other_rank_wins)
    tok = mm.load_or_train_tokenizer(folder, lambda: ["a b c d", "b c d e"] * 20, vocab_size=60)
    monkeypatch.setattr(mm.os, "replace", real_replace)
    assert (folder / "done").is_file() and tok("a b")["input_ids"]
    assert not list(tmp_path.glob("tok.tmp*"))  # its own copy cleaned up
