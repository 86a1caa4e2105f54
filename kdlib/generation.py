"""Decoding (floor 1): sampling and greedy decoding with a KV cache, for encoder-decoder and
decoder-only models, with calculator-aware insertion for GSM8K-style tasks.

Calculator (seed 000 App. C, after Wang et al. 2024): when a row's text ends with ``<<expr=``,
the result from :func:`kdlib.calculator.evaluate` and ``>>`` are fed to the model as forced tokens
over the next steps (the batch stays in lockstep). Forced tokens are not the policy's actions:
``action_mask`` is False there, so they get no policy-gradient term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from kdlib import calculator


@dataclass
class Rollout:
    """A batch of generated sequences, right-padded.

    tokens: (B, T) ids, EOS included, pad after; mask: (B, T) True for t <= T_b (EOS included);
    action_mask: (B, T) ``mask`` minus calculator-inserted tokens; ended: (B,) rows that produced EOS.
    """

    tokens: Tensor
    mask: Tensor
    action_mask: Tensor
    ended: Tensor


class _Calculator:
    """Finds ``<<expr=`` at the end of a row's text and returns the token ids to insert."""

    def __init__(self, tok):
        self.tok = tok
        vocab = tok.get_vocab()
        self.eq_ids = torch.tensor(sorted(i for s, i in vocab.items() if "=" in s), dtype=torch.long)
        self._ctx = tok("=", add_special_tokens=False)["input_ids"]

    def trigger(self, new_tokens: Tensor) -> Tensor:
        return torch.isin(new_tokens, self.eq_ids.to(new_tokens.device))

    def insertion(self, generated: list[int]) -> list[int]:
        text = self.tok.decode(generated, skip_special_tokens=True)
        expr = calculator.find_open_annotation(text)
        if expr is None:
            return []
        ins = calculator.inserted_text(expr)
        if ins is None:
            return []
        # Encode in context ("=" before) so no word-initial space marker is added.
        ids = self.tok("=" + ins, add_special_tokens=False)["input_ids"]
        if ids[: len(self._ctx)] == self._ctx:
            ids = ids[len(self._ctx):]
        return ids


@torch.no_grad()
def generate(model, tok, src_ids: Tensor, src_mask: Tensor, *, arch: str, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, use_calculator: bool = False,
             generator: torch.Generator | None = None) -> Rollout:
    """Sample (or greedily decode) up to ``max_new_tokens`` tokens per row.

    src_ids, src_mask: (B, S) (left-padded for decoder-only models). Returns a :class:`Rollout`.
    """
    was_training = model.training
    model.eval()
    B = src_ids.shape[0]
    dev = src_ids.device
    eos, pad_id = tok.eos_token_id, tok.pad_token_id
    calc = _Calculator(tok) if use_calculator else None
    queues: list[list[int]] = [[] for _ in range(B)]
    gen_rows: list[list[int]] = [[] for _ in range(B)] if use_calculator else []

    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    forced = torch.zeros((B, max_new_tokens), dtype=torch.bool, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    lengths = torch.zeros(B, dtype=torch.long, device=dev)
    ended = torch.zeros(B, dtype=torch.bool, device=dev)

    past = None
    if arch == "seq2seq":
        enc = model.get_encoder()(input_ids=src_ids, attention_mask=src_mask.long())
        start = model.config.decoder_start_token_id or 0
        cur = torch.full((B, 1), start, dtype=torch.long, device=dev)
    else:
        attn = src_mask.long()
        pos = (attn.cumsum(1) - 1).clamp(min=0)
        cur = src_ids
    for t in range(max_new_tokens):
        if arch == "seq2seq":
            out = model(encoder_outputs=enc, attention_mask=src_mask.long(), decoder_input_ids=cur,
                        past_key_values=past, use_cache=True)
        else:
            out = model(input_ids=cur, attention_mask=attn, position_ids=pos, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[:, -1].float()  # (B, V)
        if do_sample:
            logits = logits / temperature
            if top_k and top_k < logits.shape[-1]:
                kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)
        else:
            nxt = logits.argmax(-1)
        if calc is not None:
            for b in range(B):
                if queues[b] and not done[b]:
                    nxt[b] = queues[b].pop(0)
                    forced[b, t] = True
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        lengths += (~done).long()
        newly = (~done) & (nxt == eos)
        ended |= newly
        if calc is not None:
            hits = calc.trigger(nxt) & ~done & ~forced[:, t]
            for b in range(B):
                if not done[b]:
                    gen_rows[b].append(int(nxt[b]))
                if hits[b]:
                    queues[b] = calc.insertion(gen_rows[b])
        done |= newly
        if bool(done.all()):
            break
        cur = nxt.unsqueeze(1)
        if arch == "causal":
            attn = torch.cat([attn, (~done | newly).long().unsqueeze(1)], dim=1)
            pos = pos[:, -1:] + 1
    T = int(lengths.max().item()) if B else 0
    T = max(T, 1)
    tokens = tokens[:, :T]
    ar = torch.arange(T, device=dev).unsqueeze(0)
    mask = ar < lengths.unsqueeze(1)
    action_mask = mask & ~forced[:, :T]
    if was_training:
        model.train()
    return Rollout(tokens=tokens, mask=mask, action_mask=action_mask, ended=ended)
