"""Tokenizer, both model families through one interface, and calculator-aware decoding."""

from types import SimpleNamespace

import pytest
import torch

from kdlib.generation import generate
from kdlib.models import (build_model, check_shared_vocab, decode, encode_sources, encode_targets, forward_logits,
                          load_pretrained, save_checkpoint, train_tokenizer)

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
