"""Fast paths through transformers models' own weights (floor 1): static-cache incremental
decoding, and the teacher-forced T5 forward used in training.

**Decoding.** ``generate`` (kdlib.modeling.generation) asks :func:`make_stepper` for an engine and feeds it
one token per row per step (``step(ids) -> logits``). Two engines compute the same logits:

* :class:`HFStepper` calls the model's own ``forward`` with a ``past_key_values`` cache: works for
  any transformers model, and pays the library's per-call overhead (cache objects, mask
  building, output dataclasses) at every token.
* The **static** engines (:class:`T5StaticStepper`, :class:`CausalStaticStepper`) run the same
  weights with a preallocated key/value cache: the encoder states, the cross-attention keys and
  values, the relative-position bias (T5) and the fused q/k/v weights are prepared once per
  call, and a step is ~15 tensor ops per layer.

**Teacher-forced T5.** :func:`t5_encoder_states` and :func:`t5_logits` compute what
``T5ForConditionalGeneration.forward`` computes (encoder states; decoder logits given encoder
states), differentiably, without the library's per-call mask building (at the embedded sizes on
CPU that building is about a third of the encoder's time). Used by ``kdlib.modeling.models.forward_logits``
and ``encoder_states`` when :func:`fast_supported` says so: no dropout is active (the fast path has
none), and the model is one these functions know.

In all of them norms, feed-forward blocks, embeddings and rotary embeddings are the model's own
modules, so the arithmetic is the library's; only attention, masks and caches are written here.
``tests/test_engines.py`` checks logits (and gradients) against the library's ``forward`` for T5
(ReLU and gated-GELU), and Qwen2-style decoder-only models with left padding and GQA.
``engine="auto"`` falls back to :class:`HFStepper` for any other model, so every hub model decodes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

ENGINES = ("auto", "static", "hf")


def _unwrap(model):
    return getattr(model, "module", model)  # DDP / accelerate wrappers


def _mask_value(dtype: torch.dtype) -> float:
    # transformers masks with the dtype's lowest value (not -inf): a row with every key masked
    # then softmaxes to uniform weights instead of NaN, as the library's own forward does
    return torch.finfo(dtype).min


# ----------------------------------------------------------------------------- the library's forward
class HFStepper:
    """One ``model.forward`` per token with the library's KV cache (any architecture)."""

    def __init__(self, model, arch: str, src_ids: Tensor, src_mask: Tensor, encoder_hidden: Tensor | None = None):
        self.model, self.arch = model, arch
        self.src_mask = src_mask.long()
        self.past = None
        if arch == "seq2seq":
            if encoder_hidden is None:
                encoder_hidden = model.get_encoder()(input_ids=src_ids, attention_mask=self.src_mask).last_hidden_state
            self.enc = (encoder_hidden,)
        else:
            self.src_ids = src_ids
            self.attn = self.src_mask
            self.pos = (self.attn.cumsum(1) - 1).clamp(min=0)

    def start_token(self, B: int, device) -> Tensor | None:
        """The first input of the decoder (seq2seq: the decoder start id); None for causal LMs,
        whose first step reads the prompt."""
        if self.arch == "seq2seq":
            return torch.full((B,), self.model.config.decoder_start_token_id or 0, dtype=torch.long, device=device)
        return None

    def step(self, ids: Tensor | None) -> Tensor:
        """ids: (B,) the previous token (None on a causal LM's first step) -> logits (B, V)."""
        m = self.model
        if self.arch == "seq2seq":
            out = m(encoder_outputs=self.enc, attention_mask=self.src_mask, decoder_input_ids=ids[:, None],
                    past_key_values=self.past, use_cache=True)
        elif ids is None:
            out = m(input_ids=self.src_ids, attention_mask=self.attn, position_ids=self.pos, use_cache=True)
            self.pos = self.pos[:, -1:]
        else:
            self.attn = torch.cat([self.attn, torch.ones_like(self.attn[:, :1])], dim=1)
            self.pos = self.pos + 1
            out = m(input_ids=ids[:, None], attention_mask=self.attn, position_ids=self.pos,
                    past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits[:, -1]


# ----------------------------------------------------------------------------- T5, teacher-forced
def has_active_dropout(model) -> bool:
    """True if a forward pass of ``model`` in its current mode would drop anything."""
    return model.training and any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def fast_supported(model, arch: str) -> bool:
    """Whether :func:`t5_encoder_states` / :func:`t5_logits` may replace the library's forward."""
    return arch == "seq2seq" and t5_supported(model) and not has_active_dropout(_unwrap(model))


def _t5_norm(ln, x: Tensor) -> Tensor:
    """T5LayerNorm (scale only, no mean subtraction) as the library computes it, in fewer ops
    for float32 inputs; other dtypes go through the module itself."""
    if x.dtype != torch.float32 or ln.weight.dtype != torch.float32:
        return ln(x)
    return ln.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + ln.variance_epsilon))


def _t5_position_bias(att, q_len: int, k_len: int, bidirectional: bool, device) -> Tensor:
    """T5's relative-position bias (1, H, q_len, k_len) from the attention layer that owns it."""
    ctx = torch.arange(q_len, device=device)[:, None]
    mem = torch.arange(k_len, device=device)[None, :]
    buckets = att._relative_position_bucket(mem - ctx, bidirectional=bidirectional,
                                            num_buckets=att.relative_attention_num_buckets,
                                            max_distance=att.relative_attention_max_distance)
    return att.relative_attention_bias(buckets).permute(2, 0, 1)[None]


def _key_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive bias (B, 1, 1, S) that masks padding keys."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask.bool(), _mask_value(dtype))[:, None, None]


def _t5_attention(att, x: Tensor, kv: Tensor | None, bias: Tensor, H: int, dk: int) -> Tensor:
    """Unscaled multi-head attention of a T5Attention layer: self-attention when ``kv`` is None,
    else cross-attention over ``kv`` (B, S, D). x: (B, n, D); bias broadcasts to (B, H, n, k)."""
    B, n, _ = x.shape
    if kv is None:
        q, k, v = F.linear(x, torch.cat([att.q.weight, att.k.weight, att.v.weight], 0)).view(
            B, n, 3, H, dk).permute(2, 0, 3, 1, 4)  # (B, H, n, dk) each
    else:
        S = kv.shape[1]
        q = F.linear(x, att.q.weight).view(B, n, H, dk).transpose(1, 2)
        k, v = F.linear(kv, torch.cat([att.k.weight, att.v.weight], 0)).view(B, S, 2, H, dk).permute(2, 0, 3, 1, 4)
    s = torch.matmul(q, k.transpose(-1, -2)) + bias  # (B, H, n, k)
    a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), v)  # (B, H, n, dk)
    return F.linear(a.transpose(1, 2).reshape(B, n, H * dk), att.o.weight)


def t5_encoder_states(model, src_ids: Tensor, src_mask: Tensor) -> Tensor:
    """The T5 encoder's last hidden states (B, S, D), as ``model.get_encoder()(...)`` gives them."""
    m = _unwrap(model)
    enc, cfg = m.encoder, m.config
    x = enc.embed_tokens(src_ids)  # (B, S, D)
    S = src_ids.shape[1]
    bias = _t5_position_bias(enc.block[0].layer[0].SelfAttention, S, S, True, x.device).to(x.dtype) + \
        _key_bias(src_mask, x.dtype)  # (B, H, S, S)
    for blk in enc.block:
        sa, ff = blk.layer[0], blk.layer[1]
        x = x + _t5_attention(sa.SelfAttention, sa.layer_norm(x), None, bias, cfg.num_heads, cfg.d_kv)
        x = x + ff.DenseReluDense(ff.layer_norm(x))
    return enc.final_layer_norm(x)


def t5_logits(model, encoder_hidden: Tensor, src_mask: Tensor, decoder_input_ids: Tensor,
              return_hidden: bool = False):
    """Decoder logits (B, T, V) of T5 given encoder states (B, S, D) and the (shifted) decoder
    inputs (B, T), as ``model(encoder_outputs=..., decoder_input_ids=...).logits`` gives them.
    ``return_hidden``: also the last decoder hidden states (B, T, D), after the final norm (what
    ``decoder_hidden_states[-1]`` holds)."""
    m = _unwrap(model)
    dec, cfg = m.decoder, m.config
    x = dec.embed_tokens(decoder_input_ids)  # (B, T, D)
    T = decoder_input_ids.shape[1]
    future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
    self_bias = _t5_position_bias(dec.block[0].layer[0].SelfAttention, T, T, False, x.device).to(x.dtype)
    self_bias = self_bias.masked_fill(future, _mask_value(x.dtype))  # (1, H, T, T)
    cross_bias = _key_bias(src_mask, x.dtype)  # (B, 1, 1, S)
    for blk in dec.block:
        sa, ca, ff = blk.layer[0], blk.layer[1], blk.layer[2]
        x = x + _t5_attention(sa.SelfAttention, sa.layer_norm(x), None, self_bias, cfg.num_heads, cfg.d_kv)
        x = x + _t5_attention(ca.EncDecAttention, ca.layer_norm(x), encoder_hidden, cross_bias, cfg.num_heads, cfg.d_kv)
        x = x + ff.DenseReluDense(ff.layer_norm(x))
    x = dec.final_layer_norm(x)
    hidden = x
    if getattr(cfg, "scale_decoder_outputs", cfg.tie_word_embeddings):
        x = x * (m.model_dim ** -0.5)
    logits = m.lm_head(x)
    return (logits, hidden) if return_hidden else logits


# ----------------------------------------------------------------------------- T5, static cache
def t5_supported(model) -> bool:
    m = _unwrap(model)
    if type(m).__name__ != "T5ForConditionalGeneration":
        return False
    blk = m.decoder.block
    return len(blk) > 0 and getattr(blk[0].layer[0].SelfAttention, "has_relative_attention_bias", False)


class T5StaticStepper:
    """T5 decoder steps over a preallocated self-attention cache (B, H, L, d_kv) per layer.

    Prepared once per call: encoder states (or the ones passed in), cross-attention K/V per layer
    (B, H, S, d_kv), the relative-position bias of the causal self-attention (H, L, L) with the
    future masked, the source padding mask as an additive bias (B, 1, 1, S), fused q/k/v weights.
    T5 attention is unscaled (the 1/sqrt(d) is folded into the initialisation)."""

    def __init__(self, model, src_ids: Tensor, src_mask: Tensor, max_new_tokens: int,
                 encoder_hidden: Tensor | None = None):
        m = _unwrap(model)
        self.model = m
        cfg = m.config
        if encoder_hidden is None:
            encoder_hidden = t5_encoder_states(m, src_ids, src_mask)
        dec = m.decoder
        B, S, _ = encoder_hidden.shape
        L = max(1, max_new_tokens)
        self.B, self.H, self.dk = B, cfg.num_heads, cfg.d_kv
        dtype, dev = encoder_hidden.dtype, encoder_hidden.device
        self.layers = []
        for blk in dec.block:
            sa, ca = blk.layer[0], blk.layer[1]
            att, cross = sa.SelfAttention, ca.EncDecAttention
            ck = F.linear(encoder_hidden, cross.k.weight).view(B, S, self.H, self.dk).permute(0, 2, 3, 1)  # (B,H,dk,S)
            cv = F.linear(encoder_hidden, cross.v.weight).view(B, S, self.H, self.dk).transpose(1, 2)  # (B,H,S,dk)
            self.layers.append({
                "ln0": sa.layer_norm, "wqkv": torch.cat([att.q.weight, att.k.weight, att.v.weight], 0), "wo": att.o.weight,
                "ln1": ca.layer_norm, "cq": cross.q.weight, "ckT": ck.contiguous(), "cv": cv.contiguous(), "co": cross.o.weight,
                "ln2": blk.layer[2].layer_norm, "ff": blk.layer[2].DenseReluDense,
                "K": encoder_hidden.new_zeros(B, self.H, L, self.dk), "V": encoder_hidden.new_zeros(B, self.H, L, self.dk),
            })
        rab = dec.block[0].layer[0].SelfAttention
        pos = torch.arange(L, device=dev)
        buckets = rab._relative_position_bucket(pos[None, :] - pos[:, None], bidirectional=False,
                                                num_buckets=cfg.relative_attention_num_buckets,
                                                max_distance=cfg.relative_attention_max_distance)
        bias = rab.relative_attention_bias(buckets).permute(2, 0, 1).to(dtype)  # (H, L, L)
        self.bias = bias.masked_fill(pos[None, :] > pos[:, None], _mask_value(dtype))  # causal
        self.cross_bias = torch.zeros(B, 1, 1, S, dtype=dtype, device=dev).masked_fill(
            ~src_mask.bool()[:, None, None, :], _mask_value(dtype))  # (B, 1, 1, S)
        self.emb = dec.embed_tokens
        self.final_ln = dec.final_layer_norm
        self.scale = m.model_dim ** -0.5 if getattr(cfg, "scale_decoder_outputs", cfg.tie_word_embeddings) else 1.0
        self.lm_head = m.lm_head
        self.t = 0

    def start_token(self, B: int, device) -> Tensor:
        return torch.full((B,), self.model.config.decoder_start_token_id or 0, dtype=torch.long, device=device)

    def step(self, ids: Tensor) -> Tensor:
        t, B, H, dk = self.t, self.B, self.H, self.dk
        x = self.emb(ids)[:, None]  # (B, 1, D)
        for ly in self.layers:
            h = _t5_norm(ly["ln0"], x)
            q, k, v = F.linear(h, ly["wqkv"]).view(B, 3, H, dk).unbind(1)  # (B, H, dk) each
            ly["K"][:, :, t] = k
            ly["V"][:, :, t] = v
            s = torch.matmul(q[:, :, None], ly["K"][:, :, : t + 1].transpose(-1, -2)) + self.bias[:, t: t + 1, : t + 1]
            a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), ly["V"][:, :, : t + 1])  # (B, H, 1, dk)
            x = x + F.linear(a.reshape(B, 1, H * dk), ly["wo"])
            h = _t5_norm(ly["ln1"], x)
            q = F.linear(h, ly["cq"]).view(B, H, 1, dk)
            s = torch.matmul(q, ly["ckT"]) + self.cross_bias  # (B, H, 1, S)
            a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), ly["cv"])
            x = x + F.linear(a.reshape(B, 1, H * dk), ly["co"])
            x = x + ly["ff"](_t5_norm(ly["ln2"], x))
        x = _t5_norm(self.final_ln, x)
        if self.scale != 1.0:
            x = x * self.scale
        self.t += 1
        return self.lm_head(x)[:, 0]


# ----------------------------------------------------------------------------- decoder-only, static cache
def causal_supported(model) -> bool:
    m = _unwrap(model)
    inner = getattr(m, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return False
    if type(m).__name__ not in ("Qwen2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM"):
        return False
    cfg = m.config
    if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
        return False
    layer_types = getattr(cfg, "layer_types", None)
    return not layer_types or all(t == "full_attention" for t in layer_types)


class CausalStaticStepper:
    """Qwen2/Llama-style decoder: RMSNorm, rotary positions, grouped-query attention, gated MLP.

    The prompt (left-padded, ``src_mask`` False on padding) is read in one pass into a cache of
    S + max_new_tokens slots; each step writes one slot. Padding slots are masked as keys."""

    def __init__(self, model, src_ids: Tensor, src_mask: Tensor, max_new_tokens: int):
        m = _unwrap(model)
        self.model, inner = m, m.model
        cfg = m.config
        B, S = src_ids.shape
        self.B, self.S = B, S
        self.Hq = cfg.num_attention_heads
        self.Hkv = getattr(cfg, "num_key_value_heads", None) or self.Hq
        self.dh = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.Hq
        self.g = self.Hq // self.Hkv
        L = S + max(1, max_new_tokens)
        self.inner = inner
        p = next(m.parameters())
        self.dtype, dev = p.dtype, src_ids.device
        self.layers = []
        for layer in inner.layers:
            att = layer.self_attn
            w = torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight], 0)
            b = None
            if att.q_proj.bias is not None:
                b = torch.cat([att.q_proj.bias, att.k_proj.bias, att.v_proj.bias], 0)
            self.layers.append({"ln0": layer.input_layernorm, "w": w, "b": b, "o": att.o_proj, "scale": att.scaling,
                                "ln1": layer.post_attention_layernorm, "mlp": layer.mlp,
                                "K": p.new_zeros(B, self.Hkv, L, self.dh), "V": p.new_zeros(B, self.Hkv, L, self.dh)})
        self.key_ok = torch.ones(B, L, dtype=torch.bool, device=dev)
        self.key_ok[:, :S] = src_mask.bool()
        self.pos = (src_mask.long().cumsum(1) - 1).clamp(min=0)  # (B, S)
        self.src_ids = src_ids
        self.t = 0  # tokens generated so far

    def start_token(self, B: int, device) -> None:
        return None

    def _rope(self, x: Tensor, k: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
        cos, sin = self.inner.rotary_emb(k, pos)  # (B, n, dh)
        cos, sin = cos[:, None], sin[:, None]

        def rot(z):
            z1, z2 = z[..., : z.shape[-1] // 2], z[..., z.shape[-1] // 2:]
            return torch.cat((-z2, z1), dim=-1)

        return x * cos + rot(x) * sin, k * cos + rot(k) * sin

    def _layers(self, x: Tensor, pos: Tensor, start: int, mask_bias: Tensor) -> Tensor:
        B, n, _ = x.shape
        Hq, Hkv, dh = self.Hq, self.Hkv, self.dh
        end = start + n
        for ly in self.layers:
            h = ly["ln0"](x)
            qkv = F.linear(h, ly["w"], ly["b"])  # (B, n, (Hq + 2 Hkv) dh)
            q = qkv[..., : Hq * dh].view(B, n, Hq, dh).transpose(1, 2)
            k = qkv[..., Hq * dh: (Hq + Hkv) * dh].view(B, n, Hkv, dh).transpose(1, 2)
            v = qkv[..., (Hq + Hkv) * dh:].view(B, n, Hkv, dh).transpose(1, 2)
            q, k = self._rope(q, k, pos)
            ly["K"][:, :, start:end] = k
            ly["V"][:, :, start:end] = v
            K, V = ly["K"][:, :, :end], ly["V"][:, :, :end]  # (B, Hkv, end, dh)
            qg = q.reshape(B, Hkv, self.g * n, dh)  # queries of one kv head together
            s = torch.matmul(qg, K.transpose(-1, -2)) * ly["scale"]  # (B, Hkv, g n, end)
            s = s.view(B, Hkv, self.g, n, end) + mask_bias[:, None, None]  # mask: (B, n, end)
            a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype).view(B, Hkv, self.g * n, end), V)
            a = a.view(B, Hq, n, dh).transpose(1, 2).reshape(B, n, Hq * dh)
            x = x + ly["o"](a)
            x = x + ly["mlp"](ly["ln1"](x))
        return x

    def step(self, ids: Tensor | None) -> Tensor:
        neg = _mask_value(self.dtype)
        if ids is None:  # the prompt, in one pass
            x = self.inner.embed_tokens(self.src_ids)
            S = self.S
            causal = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()
            ok = causal[None] & self.key_ok[:, None, :S]  # (B, S, S)
            bias = torch.zeros(ok.shape, dtype=self.dtype, device=x.device).masked_fill(~ok, neg)
            x = self._layers(x, self.pos, 0, bias)
            self.last_pos = self.pos[:, -1:]
        else:
            x = self.inner.embed_tokens(ids[:, None])
            start = self.S + self.t
            self.last_pos = self.last_pos + 1
            bias = torch.zeros(self.B, 1, start + 1, dtype=self.dtype, device=x.device).masked_fill(
                ~self.key_ok[:, None, : start + 1], neg)
            x = self._layers(x, self.last_pos, start, bias)
            self.t += 1
        x = self.inner.norm(x[:, -1:])
        return self.model.lm_head(x)[:, 0]


# ----------------------------------------------------------------------------- choice
def static_supported(model, arch: str) -> bool:
    return t5_supported(model) if arch == "seq2seq" else causal_supported(model)


def make_stepper(model, arch: str, src_ids: Tensor, src_mask: Tensor, max_new_tokens: int, *,
                 encoder_hidden: Tensor | None = None, engine: str = "auto"):
    """The decoding engine for ``model``: ``engine`` is ``auto`` (static when supported), ``static``
    (error if unsupported) or ``hf`` (the library's forward). ``encoder_hidden`` (B, S, D) reuses
    encoder states computed by the caller (seq2seq only)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    use_static = engine == "static" or (engine == "auto" and static_supported(model, arch))
    if use_static and not static_supported(model, arch):
        raise ValueError(f"no static decoding engine for {type(_unwrap(model)).__name__} ({arch}); use engine='hf'")
    if not use_static:
        return HFStepper(_unwrap(model), arch, src_ids, src_mask, encoder_hidden)
    if arch == "seq2seq":
        return T5StaticStepper(model, src_ids, src_mask, max_new_tokens, encoder_hidden)
    return CausalStaticStepper(model, src_ids, src_mask, max_new_tokens)
