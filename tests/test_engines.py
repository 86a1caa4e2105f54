"""The static-cache decoding engines compute the library's logits, step by step."""

import pytest
import torch

from kdlib.modeling.engines import (
    CausalStaticStepper,
    HFStepper,
    T5StaticStepper,
    make_stepper,
    static_supported,
)
from kdlib.modeling.generation import generate, sample_tokens
from kdlib.modeling.models import pad


def _t5(gated: bool, seed=0, V=97):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=V, d_model=32, d_ff=64, num_layers=2, num_decoder_layers=3, num_heads=4, d_kv=8,
                   dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                   feed_forward_proj="gated-gelu" if gated else "relu", tie_word_embeddings=not gated,
                   relative_attention_num_buckets=8, relative_attention_max_distance=16)
    return T5ForConditionalGeneration(cfg).eval()


def _qwen(seed=0, V=97, kv_heads=2):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=kv_heads, max_position_embeddings=128, tie_word_embeddings=True,
                      pad_token_id=0, eos_token_id=1, bos_token_id=1)
    return Qwen2ForCausalLM(cfg).eval()


def _src(B=5, S=11, V=97, left=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(3, S + 1, (B,), generator=g).tolist()
    lens[0] = S
    seqs = [torch.randint(3, V, (n,), generator=g).tolist() for n in lens]
    return pad(seqs, 0, left=left)


@torch.no_grad()
def _compare(model, arch, src, sm, steps=9, V=97):
    ref = HFStepper(model, arch, src, sm)
    fast = make_stepper(model, arch, src, sm, steps, engine="static")
    g = torch.Generator().manual_seed(1)
    ids_ref = ids_fast = ref.start_token(src.shape[0], src.device)
    worst = 0.0
    for t in range(steps):
        a, b = ref.step(ids_ref), fast.step(ids_fast)
        assert a.shape == b.shape == (src.shape[0], V)
        worst = max(worst, float((a - b).abs().max()))
        nxt = torch.randint(2, V, (src.shape[0],), generator=g)  # teacher-forced random continuation
        ids_ref = ids_fast = nxt
    return worst


@pytest.mark.parametrize("gated", [False, True])
def test_t5_static_engine_matches_library_forward(gated):
    model = _t5(gated)
    src, sm = _src()
    assert static_supported(model, "seq2seq")
    assert isinstance(make_stepper(model, "seq2seq", src, sm, 4), T5StaticStepper)
    assert _compare(model, "seq2seq", src, sm) < 1e-4


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_causal_static_engine_matches_library_forward_with_left_padding(kv_heads):
    model = _qwen(kv_heads=kv_heads)
    src, sm = _src(left=True)
    assert isinstance(make_stepper(model, "causal", src, sm, 4), CausalStaticStepper)
    assert _compare(model, "causal", src, sm) < 1e-4


def test_unknown_architectures_fall_back_to_the_library_forward():
    class Other(torch.nn.Module):
        pass

    src, sm = _src()
    assert not static_supported(Other(), "seq2seq") and not static_supported(Other(), "causal")
    with pytest.raises(ValueError, match="no static decoding engine"):
        make_stepper(Other(), "causal", src, sm, 4, engine="static")
    with pytest.raises(ValueError, match="engine must be"):
        make_stepper(_t5(False), "seq2seq", src, sm, 4, engine="fast")


@pytest.mark.parametrize("arch", ["seq2seq", "causal"])
def test_generate_is_the_same_with_either_engine(arch):
    from types import SimpleNamespace

    model = _t5(False) if arch == "seq2seq" else _qwen()
    tok = SimpleNamespace(eos_token_id=1, pad_token_id=0)
    src, sm = _src(B=6, left=arch == "causal")
    for do_sample in (False, True):
        rolls = [generate(model, tok, src, sm, arch=arch, max_new_tokens=10, do_sample=do_sample, engine=e,
                          generator=torch.Generator().manual_seed(5)) for e in ("hf", "static")]
        assert torch.equal(rolls[0].tokens, rolls[1].tokens)
        assert torch.equal(rolls[0].mask, rolls[1].mask)


def test_encoder_states_passed_in_are_used():
    model = _t5(True)
    src, sm = _src()
    enc = model.get_encoder()(input_ids=src, attention_mask=sm.long()).last_hidden_state
    a = make_stepper(model, "seq2seq", src, sm, 3, encoder_hidden=enc)
    b = make_stepper(model, "seq2seq", src, sm, 3)
    start = a.start_token(src.shape[0], src.device)
    assert torch.allclose(a.step(start), b.step(start), atol=1e-6)
    c = make_stepper(model, "seq2seq", src, sm, 3, encoder_hidden=torch.zeros_like(enc))
    assert not torch.allclose(c.step(start), b.step(start), atol=1e-3)


def test_inverse_cdf_sampling_has_the_right_frequencies():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.0, 0.0, 1.0, 0.0]]))
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_tokens(logits, g) for _ in range(20000)])  # (N, 2)
    freq = torch.bincount(draws[:, 0], minlength=4).float() / draws.shape[0]
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.015)
    assert (draws[:, 1] == 2).all()  # zero-probability tokens are never drawn
    assert (draws[:, 0] != 3).all()
    top1 = torch.stack([sample_tokens(logits[:1], g, top_k=1) for _ in range(200)])
    assert (top1 == 0).all()
    hot = torch.stack([sample_tokens(logits[:1], g, temperature=0.05) for _ in range(200)])
    assert (hot == 0).float().mean() > 0.99


@pytest.mark.parametrize("gated", [False, True])
def test_t5_teacher_forced_fast_path_matches_library_forward_and_gradients(gated):
    from kdlib.modeling.engines import fast_supported, t5_encoder_states, t5_logits

    model = _t5(gated).train()  # dropout 0: the fast path applies in train mode too
    assert fast_supported(model, "seq2seq")
    src, sm = _src(B=4)
    dec_in = torch.randint(2, 97, (4, 7), generator=torch.Generator().manual_seed(3))
    ref = model(input_ids=src, attention_mask=sm.long(), decoder_input_ids=dec_in).logits
    enc = t5_encoder_states(model, src, sm)
    ref_enc = model.get_encoder()(input_ids=src, attention_mask=sm.long()).last_hidden_state
    assert torch.allclose(enc, ref_enc, atol=1e-5)
    mine = t5_logits(model, enc, sm, dec_in)
    assert torch.allclose(mine, ref, atol=1e-4)
    params = [p for p in model.parameters() if p.requires_grad]
    g_ref = torch.autograd.grad(ref.logsumexp(-1).sum(), params, allow_unused=True)
    g_mine = torch.autograd.grad(mine.logsumexp(-1).sum(), params, allow_unused=True)
    for a, b in zip(g_ref, g_mine):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-4)


def test_fast_path_is_off_while_dropout_is_active():
    from kdlib.modeling.engines import fast_supported, has_active_dropout

    model = _t5(False)
    for mod in model.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.1
    model.train()
    assert has_active_dropout(model) and not fast_supported(model, "seq2seq")
    model.eval()
    assert not has_active_dropout(model) and fast_supported(model, "seq2seq")


def test_token_logprobs_equal_log_softmax_gather():
    from kdlib.modeling.models import token_logprobs

    logits = torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 11, (3, 5))
    ref = torch.log_softmax(logits, -1).gather(-1, y[..., None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, y), ref, atol=1e-6)
