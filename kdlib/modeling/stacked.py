"""S copies of one T5 model with their weights stacked along a leading seed dimension (floor 2): the engines of
:mod:`kdlib.modeling.engines` (teacher-forced encoder and decoder, static-cache decoding) run on all S at once.

Why: at the embedded sizes a training step is mostly per-operation overhead, not arithmetic. Stacking the weights
of S seeds' students, ``W[s]`` of shape ``(S, *shape)``, turns every matrix product of S separate models into one
batched product (``torch.bmm``: one call, S slices), so S seeds pay the overhead of one. Nothing mixes seeds: slice
``s`` of every output depends only on ``W[s]`` and on seed s's rows of the batch, and its gradient lands only in
``W[s].grad``.

Layout. Inputs are ``(S, B, ...)`` (seed-major: rows ``s*B .. s*B+B-1`` of a flattened ``(S*B, ...)`` batch belong
to seed s). Every function computes what its counterpart in :mod:`kdlib.modeling.engines` computes for one model
(same operations in the same order: norms, fused q/k/v, unscaled attention, masks with the dtype's lowest value,
tied-embedding rescaling), so a seed's slice equals the single model's output up to float rounding (bitwise where
the shapes agree; the padding of a concatenated batch can differ from a seed's own batch, which moves rounding only).
Dropout is not applied: the stacked path serves models without active dropout.

Supported: ``T5ForConditionalGeneration`` with relative attention (what :func:`kdlib.modeling.engines.t5_supported`
accepts), ReLU or gated feed-forward blocks, tied or untied output embeddings, float32 weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlib.modeling.engines import _mask_value, _unwrap, t5_supported


def stack_supported(model) -> bool:
    """Whether ``model`` can be stacked: a T5 the static engine knows, float32, no dropout module with p > 0."""
    m = _unwrap(model)
    if not t5_supported(m):
        return False
    if any(p.dtype != torch.float32 for p in m.parameters()):
        return False
    return not any(isinstance(x, torch.nn.Dropout) and x.p > 0 for x in m.modules())


def blinear(x: Tensor, w: Tensor) -> Tensor:
    """Per-seed ``F.linear``: x (S, ..., I), w (S, O, I) -> (S, ..., O); one batched product."""
    S, I = x.shape[0], x.shape[-1]
    out = torch.matmul(x.reshape(S, -1, I), w.transpose(1, 2))  # (S, N, O)
    return out.view(*x.shape[:-1], w.shape[1])


def bembed(w: Tensor, ids: Tensor) -> Tensor:
    """Per-seed embedding lookup: w (S, V, D), ids (S, ...) -> (S, ..., D) (one lookup in the flattened table)."""
    S, V, D = w.shape
    offset = (torch.arange(S, device=ids.device) * V).view(S, *([1] * (ids.dim() - 1)))
    return F.embedding(ids + offset, w.reshape(S * V, D))


def bnorm(w: Tensor, x: Tensor, eps: float) -> Tensor:
    """T5LayerNorm per seed: w (S, D), x (S, ..., D) (scale only, variance in float32, as the library)."""
    variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
    return w.view(w.shape[0], *([1] * (x.dim() - 2)), w.shape[1]) * (x * torch.rsqrt(variance + eps))


class StackedT5:
    """The weights of S T5 students of one architecture, ``params[name]`` of shape ``(S, *shape)`` (names as
    ``template.named_parameters()`` gives them; tied weights once), and the forward passes over them.

    ``template``: a model of the architecture (its config, its static relative-position bucketing, and the module
    the members are copied into to be saved). The stacked tensors are leaves (``requires_grad`` when ``trainable``),
    so an optimiser steps them as it would one model's parameters: AdamW is elementwise, so one fused AdamW over the
    stacked tensors updates every seed as its own AdamW would."""

    def __init__(self, template, states: Sequence[dict[str, Tensor]], trainable: bool = True):
        m = _unwrap(template)
        if not stack_supported(m):
            raise ValueError(f"cannot stack {type(m).__name__}: a float32 T5 with relative attention and no dropout "
                             "is needed")
        self.template, self.cfg = m, m.config
        self.names = [n for n, _ in m.named_parameters()]
        self.S = len(states)
        dev = next(m.parameters()).device
        self.params: dict[str, Tensor] = {}
        for n in self.names:
            t = torch.stack([sd[n].detach().to(dev, torch.float32) for sd in states]).contiguous()
            self.params[n] = t.requires_grad_(trainable)
        self.H, self.dk, self.D = self.cfg.num_heads, self.cfg.d_kv, self.cfg.d_model
        self.eps = self.cfg.layer_norm_epsilon
        self.n_enc, self.n_dec = len(m.encoder.block), len(m.decoder.block)
        ff = m.encoder.block[0].layer[1].DenseReluDense
        self.gated = hasattr(ff, "wi_0")
        self.act = ff.act
        tied = getattr(self.cfg, "tie_word_embeddings", True)
        self.lm_name = "shared.weight" if (tied or "lm_head.weight" not in self.params) else "lm_head.weight"
        self.scale = self.D ** -0.5 if getattr(self.cfg, "scale_decoder_outputs", self.cfg.tie_word_embeddings) else 1.0
        self.start_id = self.cfg.decoder_start_token_id or 0

    # ----------------------------------------------------------------------------- members
    def parameters(self) -> list[Tensor]:
        """The stacked tensors in ``template.parameters()`` order (what a single run's optimiser holds)."""
        return [self.params[n] for n in self.names]

    def member_state(self, s: int) -> dict[str, Tensor]:
        """Seed ``s``'s weights, as the template's ``named_parameters`` (views, no copy)."""
        return {n: self.params[n][s].detach() for n in self.names}

    @torch.no_grad()
    def load_member(self, s: int, state: dict[str, Tensor]) -> None:
        for n in self.names:
            self.params[n][s].copy_(state[n])

    @torch.no_grad()
    def to_template(self, s: int):
        """The template model holding seed ``s``'s weights (for saving and for code that takes one model)."""
        for n, p in self.template.named_parameters():
            p.copy_(self.params[n][s])
        return self.template

    def train(self, mode: bool = True):  # the generation loop toggles a model's mode; nothing here depends on it
        return self

    def eval(self):
        return self

    training = False

    # ----------------------------------------------------------------------------- pieces
    def _w(self, name: str) -> Tensor:
        return self.params[name]

    def _position_bias(self, prefix: str, q_len: int, k_len: int, bidirectional: bool, device) -> Tensor:
        """T5's relative-position bias per seed (S, H, q_len, k_len) from the bias table of ``prefix``'s block 0."""
        att = (self.template.encoder if prefix == "encoder" else self.template.decoder).block[0].layer[0].SelfAttention
        ctx = torch.arange(q_len, device=device)[:, None]
        mem = torch.arange(k_len, device=device)[None, :]
        buckets = att._relative_position_bucket(mem - ctx, bidirectional=bidirectional,
                                                num_buckets=self.cfg.relative_attention_num_buckets,
                                                max_distance=self.cfg.relative_attention_max_distance)  # (q, k)
        table = self._w(f"{prefix}.block.0.layer.0.SelfAttention.relative_attention_bias.weight")  # (S, nb, H)
        return bembed(table, buckets.expand(self.S, q_len, k_len)).permute(0, 3, 1, 2)  # (S, H, q, k)

    def _ff(self, prefix: str, h: Tensor) -> Tensor:
        if self.gated:
            h = self.act(blinear(h, self._w(f"{prefix}.wi_0.weight"))) * blinear(h, self._w(f"{prefix}.wi_1.weight"))
        else:
            h = self.act(blinear(h, self._w(f"{prefix}.wi.weight")))
        return blinear(h, self._w(f"{prefix}.wo.weight"))

    def _attention(self, prefix: str, x: Tensor, kv: Tensor | None, bias: Tensor) -> Tensor:
        """Unscaled multi-head attention of the T5Attention at ``prefix``: self-attention when ``kv`` is None, else
        cross-attention over ``kv`` (S, B, k, D). x: (S, B, n, D); bias broadcasts to (S, B, H, n, k)."""
        S, B, n, _ = x.shape
        H, dk = self.H, self.dk
        w = lambda part: self._w(f"{prefix}.{part}.weight")  # noqa: E731
        if kv is None:
            q, k, v = blinear(x, torch.cat([w("q"), w("k"), w("v")], 1)).view(
                S * B, n, 3, H, dk).permute(2, 0, 3, 1, 4)  # (S*B, H, n, dk) each
        else:
            L = kv.shape[2]
            q = blinear(x, w("q")).view(S * B, n, H, dk).transpose(1, 2)
            k, v = blinear(kv, torch.cat([w("k"), w("v")], 1)).view(S * B, L, 2, H, dk).permute(2, 0, 3, 1, 4)
        s = torch.matmul(q, k.transpose(-1, -2))  # (S*B, H, n, k)
        s = (s.view(S, B, H, n, -1) + bias).view(S * B, H, n, -1)
        a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), v)  # (S*B, H, n, dk)
        return blinear(a.transpose(1, 2).reshape(S, B, n, H * dk), w("o"))

    # ----------------------------------------------------------------------------- teacher-forced
    def encoder_states(self, src_ids: Tensor, src_mask: Tensor) -> Tensor:
        """The encoders' last hidden states (S, B, L, D) of src_ids, src_mask (S, B, L)
        (:func:`kdlib.modeling.engines.t5_encoder_states` per seed)."""
        x = bembed(self._w("shared.weight"), src_ids)  # (S, B, L, D)
        L = src_ids.shape[2]
        key = torch.zeros(src_mask.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~src_mask.bool(), _mask_value(x.dtype))[:, :, None, None]  # (S, B, 1, 1, L)
        bias = self._position_bias("encoder", L, L, True, x.device).to(x.dtype)[:, None] + key  # (S, B, H, L, L)
        for i in range(self.n_enc):
            p = f"encoder.block.{i}.layer"
            x = x + self._attention(f"{p}.0.SelfAttention", bnorm(self._w(f"{p}.0.layer_norm.weight"), x, self.eps),
                                    None, bias)
            x = x + self._ff(f"{p}.1.DenseReluDense", bnorm(self._w(f"{p}.1.layer_norm.weight"), x, self.eps))
        return bnorm(self._w("encoder.final_layer_norm.weight"), x, self.eps)

    def decoder_logits(self, encoder_hidden: Tensor, src_mask: Tensor, decoder_input_ids: Tensor) -> Tensor:
        """Decoder logits (S, B, T, V) given encoder states (S, B, L, D), their mask (S, B, L) and the shifted
        decoder inputs (S, B, T) (:func:`kdlib.modeling.engines.t5_logits` per seed)."""
        return blinear(self.decoder_hidden(encoder_hidden, src_mask, decoder_input_ids), self.lm_weight())

    def lm_weight(self) -> Tensor:
        """The output embeddings (S, V, D)."""
        return self._w(self.lm_name)

    def member_logits(self, hidden: Tensor) -> list[Tensor]:
        """Per-seed logits [(B, T, V)] * S from :meth:`decoder_hidden` (S, B, T, D): one ``F.linear`` per seed, so the
        vocabulary-sized tensors (and their backward) are computed seed by seed, each small enough to stay in cache,
        as the single model computes them."""
        return [F.linear(h, w) for h, w in zip(hidden.unbind(0), self.lm_weight().unbind(0))]

    def decoder_hidden(self, encoder_hidden: Tensor, src_mask: Tensor, decoder_input_ids: Tensor) -> Tensor:
        """The decoder's last states (S, B, T, D) after the final norm, rescaled as the output layer reads them
        (tied embeddings: times d_model ** -0.5)."""
        x = bembed(self._w("shared.weight"), decoder_input_ids)  # (S, B, T, D)
        T = decoder_input_ids.shape[2]
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        self_bias = self._position_bias("decoder", T, T, False, x.device).to(x.dtype)
        self_bias = self_bias.masked_fill(future, _mask_value(x.dtype))[:, None]  # (S, 1, H, T, T)
        cross_bias = torch.zeros(src_mask.shape, dtype=x.dtype, device=x.device).masked_fill(
            ~src_mask.bool(), _mask_value(x.dtype))[:, :, None, None]  # (S, B, 1, 1, L)
        for i in range(self.n_dec):
            p = f"decoder.block.{i}.layer"
            x = x + self._attention(f"{p}.0.SelfAttention", bnorm(self._w(f"{p}.0.layer_norm.weight"), x, self.eps),
                                    None, self_bias)
            x = x + self._attention(f"{p}.1.EncDecAttention", bnorm(self._w(f"{p}.1.layer_norm.weight"), x, self.eps),
                                    encoder_hidden, cross_bias)
            x = x + self._ff(f"{p}.2.DenseReluDense", bnorm(self._w(f"{p}.2.layer_norm.weight"), x, self.eps))
        x = bnorm(self._w("decoder.final_layer_norm.weight"), x, self.eps)
        if self.scale != 1.0:
            x = x * self.scale
        return x

    def forward_logits(self, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor,
                       encoder_hidden: Tensor | None = None) -> Tensor:
        """Teacher-forced next-token logits (S, B, T, V) of targets (S, B, T) given sources (S, B, L)
        (:func:`kdlib.modeling.models.forward_logits` per seed); ``encoder_hidden`` (S, B, L, D) reuses encoder
        states the caller computed."""
        return blinear(self.forward_hidden(src_ids, src_mask, tgt_ids, encoder_hidden), self.lm_weight())

    def forward_hidden(self, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor,
                       encoder_hidden: Tensor | None = None) -> Tensor:
        """:meth:`forward_logits` before the output layer: (S, B, T, D), for :meth:`member_logits`."""
        start = torch.full_like(tgt_ids[..., :1], self.start_id)
        dec_in = torch.cat([start, tgt_ids[..., :-1]], dim=-1)  # (S, B, T)
        if encoder_hidden is None:
            encoder_hidden = self.encoder_states(src_ids, src_mask)
        return self.decoder_hidden(encoder_hidden, src_mask, dec_in)

    # ----------------------------------------------------------------------------- decoding
    def stepper(self, src_ids: Tensor, src_mask: Tensor, max_new_tokens: int,
                encoder_hidden: Tensor | None = None) -> "StackedT5Stepper":
        """A decoding engine over the flattened batch (S*B rows, seed-major) for
        :func:`kdlib.modeling.generation.generate`. src_ids, src_mask: (S*B, L); encoder_hidden: (S*B, L, D)."""
        return StackedT5Stepper(self, src_ids, src_mask, max_new_tokens, encoder_hidden)


class StackedT5Stepper:
    """:class:`kdlib.modeling.engines.T5StaticStepper` for S stacked models: the same preallocated self-attention
    cache (S*B, H, L, d_kv) per layer, cross-attention K/V, causal relative-position bias and source padding bias,
    prepared once per call; ``step(ids (S*B,)) -> logits (S*B, V)``."""

    def __init__(self, model: StackedT5, src_ids: Tensor, src_mask: Tensor, max_new_tokens: int,
                 encoder_hidden: Tensor | None = None):
        S = model.S
        N, Ls = src_ids.shape
        if N % S:
            raise ValueError(f"{N} rows cannot be split into {S} seeds")
        B = N // S
        self.m, self.S, self.B = model, S, B
        if encoder_hidden is None:
            encoder_hidden = model.encoder_states(src_ids.view(S, B, Ls), src_mask.view(S, B, Ls))
        enc = encoder_hidden.reshape(S, B, Ls, -1)
        H, dk = model.H, model.dk
        L = max(1, max_new_tokens)
        dtype, dev = enc.dtype, enc.device
        w = model._w
        self.layers = []
        for i in range(model.n_dec):
            p = f"decoder.block.{i}.layer"
            sa, ca = f"{p}.0.SelfAttention", f"{p}.1.EncDecAttention"
            ck = blinear(enc, w(f"{ca}.k.weight")).view(S * B, Ls, H, dk).permute(0, 2, 3, 1)  # (S*B, H, dk, Ls)
            cv = blinear(enc, w(f"{ca}.v.weight")).view(S * B, Ls, H, dk).transpose(1, 2)  # (S*B, H, Ls, dk)
            self.layers.append({
                "ln0": w(f"{p}.0.layer_norm.weight"),
                "wqkv": torch.cat([w(f"{sa}.q.weight"), w(f"{sa}.k.weight"), w(f"{sa}.v.weight")], 1),
                "wo": w(f"{sa}.o.weight"), "ln1": w(f"{p}.1.layer_norm.weight"), "cq": w(f"{ca}.q.weight"),
                "ckT": ck.contiguous(), "cv": cv.contiguous(), "co": w(f"{ca}.o.weight"),
                "ln2": w(f"{p}.2.layer_norm.weight"), "ff": f"{p}.2.DenseReluDense",
                "K": enc.new_zeros(S * B, H, L, dk), "V": enc.new_zeros(S * B, H, L, dk),
            })
        pos = torch.arange(L, device=dev)
        bias = model._position_bias("decoder", L, L, False, dev).to(dtype)  # (S, H, L, L)
        self.bias = bias.masked_fill(pos[None, :] > pos[:, None], _mask_value(dtype))[:, None]  # (S, 1, H, L, L)
        self.cross_bias = torch.zeros(S * B, 1, 1, Ls, dtype=dtype, device=dev).masked_fill(
            ~src_mask.bool()[:, None, None, :], _mask_value(dtype))  # (S*B, 1, 1, Ls)
        self.t = 0

    def start_token(self, B: int, device) -> Tensor:
        return torch.full((B,), self.m.start_id, dtype=torch.long, device=device)

    def step(self, ids: Tensor) -> Tensor:
        m, S, B, t = self.m, self.S, self.B, self.t
        H, dk, eps = m.H, m.dk, m.eps
        x = bembed(m._w("shared.weight"), ids.view(S, B))[:, :, None]  # (S, B, 1, D)
        for ly in self.layers:
            h = bnorm(ly["ln0"], x, eps)
            q, k, v = blinear(h, ly["wqkv"]).view(S * B, 3, H, dk).unbind(1)  # (S*B, H, dk) each
            ly["K"][:, :, t] = k
            ly["V"][:, :, t] = v
            s = torch.matmul(q[:, :, None], ly["K"][:, :, : t + 1].transpose(-1, -2))  # (S*B, H, 1, t+1)
            s = (s.view(S, B, H, 1, t + 1) + self.bias[..., t: t + 1, : t + 1]).view(S * B, H, 1, t + 1)
            a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), ly["V"][:, :, : t + 1])  # (S*B, H, 1, dk)
            x = x + blinear(a.reshape(S, B, 1, H * dk), ly["wo"])
            h = bnorm(ly["ln1"], x, eps)
            q = blinear(h, ly["cq"]).view(S * B, H, 1, dk)
            s = torch.matmul(q, ly["ckT"]) + self.cross_bias  # (S*B, H, 1, Ls)
            a = torch.matmul(torch.softmax(s.float(), -1).to(q.dtype), ly["cv"])
            x = x + blinear(a.reshape(S, B, 1, H * dk), ly["co"])
            x = x + m._ff(ly["ff"], bnorm(ly["ln2"], x, eps))
        x = bnorm(m._w("decoder.final_layer_norm.weight"), x, eps)
        if m.scale != 1.0:
            x = x * m.scale
        self.t += 1
        return blinear(x, m._w(m.lm_name)).view(S * B, -1)
