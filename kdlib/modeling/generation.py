"""Decoding (floor 1): sampling and greedy decoding for encoder-decoder and decoder-only models,
with calculator-aware insertion for GSM8K-style tasks.

The per-token work runs through a decoding engine from :mod:`kdlib.modeling.engines` (a static KV cache
for the architectures it knows, the library's ``forward`` otherwise; both give the same logits).

Sampling draws one uniform number per row from ``generator`` on the logits' device and inverts the
cumulative distribution (``searchsorted``): exact, reproducible from the generator's state, and on
CPU far cheaper than ``torch.multinomial`` (which draws one exponential per vocabulary entry).

Calculator (seed 000 App. C, after Wang et al. 2024): when a row's text ends with ``<<expr=``,
the result from :func:`kdlib.maths.calculator.evaluate` and ``>>`` are fed to the model as forced tokens
over the next steps (the batch stays in lockstep). Forced tokens are not the policy's actions:
``action_mask`` is False there, so they get no policy-gradient term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from kdlib.maths import calculator
from kdlib.maths.onpolicy import mix_logits
from kdlib.modeling.engines import make_stepper


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
        self.eq_ids = {i for s, i in vocab.items() if "=" in s}
        self._ctx = tok("=", add_special_tokens=False)["input_ids"]

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


def sample_tokens(logits: Tensor, generator: torch.Generator | None = None, temperature: float = 1.0,
                  top_k: int = 0, u: Tensor | None = None) -> Tensor:
    """One token per row from ``softmax(logits / temperature)`` (restricted to the ``top_k`` largest
    logits when ``top_k > 0``), by inverting the cumulative distribution with one uniform draw per
    row. logits: (B, V) -> (B,) long. Zero-probability tokens are never drawn. ``u`` (B, 1): the
    uniform draws, when the caller made them (else drawn here from ``generator``)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    # float32 cumulative sums: their rounding (~1e-7 relative) is far below any probability that
    # matters; a zero-probability token adds nothing to the sum, so it is still never drawn
    cdf = torch.softmax(logits, -1).cumsum(-1)  # (B, V)
    if u is None:
        u = torch.rand(logits.shape[0], 1, generator=generator, device=logits.device)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # first index with cdf > u
    return idx.clamp_(max=logits.shape[-1] - 1).squeeze(1)


def _block_uniforms(generators: Sequence[torch.Generator], done: Tensor, device) -> Tensor:
    """(B, 1) uniforms: block g's rows from generator g while the block has an unfinished row, zeros otherwise
    (a finished block's tokens are padding whatever is drawn)."""
    G, B = len(generators), done.shape[0]
    if B % G:
        raise ValueError(f"{B} rows cannot be split into {G} generator blocks")
    n = B // G
    active = (~done.view(G, n)).any(1).tolist()
    return torch.cat([torch.rand(n, 1, generator=g, device=device) if a else torch.zeros(n, 1, device=device)
                      for g, a in zip(generators, active)])


@torch.no_grad()
def generate(model, tok, src_ids: Tensor, src_mask: Tensor, *, arch: str, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_k: int = 0, use_calculator: bool = False,
             generator: torch.Generator | Sequence[torch.Generator] | None = None,
             encoder_hidden: Tensor | None = None, engine: str = "auto", teacher_mix: tuple | None = None) -> Rollout:
    """Sample (or greedily decode) up to ``max_new_tokens`` tokens per row.

    src_ids, src_mask: (B, S) (left-padded for decoder-only models). ``encoder_hidden`` (B, S, D):
    encoder states already computed by the caller (seq2seq), reused instead of a second encoder
    pass. ``engine``: see :func:`kdlib.modeling.engines.make_stepper`. ``teacher_mix``: ``(teacher, t_src_ids,
    t_src_mask, t_encoder_hidden or None, alpha)`` samples each token from ``alpha p_T + (1 - alpha) pi`` instead of
    ``pi`` (MiniLLM's teacher-mixed sampling; the teacher decodes in lockstep on its own prompt; same vocabulary).
    Returns a :class:`Rollout`.

    ``generator`` may be a list of G generators: the rows are G equal blocks (seeds of an ensemble),
    block g draws its uniforms from generator g, and only while one of its rows is unfinished, so
    each block consumes its generator exactly as a call on that block alone would.
    """
    was_training = model.training
    model.eval()
    B = src_ids.shape[0]
    dev = src_ids.device
    eos, pad_id = tok.eos_token_id, tok.pad_token_id
    calc = _Calculator(tok) if use_calculator else None
    queues: list[list[int]] = [[] for _ in range(B)]
    gen_rows: list[list[int]] = [[] for _ in range(B)]
    forced_rows: list[list[int]] = [[] for _ in range(B)]  # steps at which row b was forced

    tokens = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    lengths = torch.zeros(B, dtype=torch.long, device=dev)
    ended = torch.zeros(B, dtype=torch.bool, device=dev)

    own = getattr(model, "stepper", None)
    if callable(own):
        stepper = own(src_ids, src_mask, max_new_tokens, encoder_hidden)
    else:
        stepper = make_stepper(model, arch, src_ids, src_mask, max_new_tokens, encoder_hidden=encoder_hidden,
                               engine=engine)
    blocks = generator if isinstance(generator, (list, tuple)) else None
    cur = stepper.start_token(B, dev)
    t_stepper = None
    if teacher_mix is not None:
        t_model, t_ids, t_m, t_enc, alpha = teacher_mix
        t_stepper = make_stepper(t_model, arch, t_ids, t_m, max_new_tokens, encoder_hidden=t_enc, engine=engine)
    for t in range(max_new_tokens):
        logits = stepper.step(cur)  # (B, V)
        if t_stepper is not None:
            logits = mix_logits(logits, t_stepper.step(cur), alpha)  # log(alpha p_T + (1 - alpha) pi)
        if do_sample and blocks is not None:
            nxt = sample_tokens(logits, None, temperature, top_k, u=_block_uniforms(blocks, done, dev))
        elif do_sample:
            nxt = sample_tokens(logits, generator, temperature, top_k)
        else:
            nxt = logits.argmax(-1)
        if calc is not None and any(queues):
            done_l = done.tolist()
            for b in range(B):
                if queues[b] and not done_l[b]:
                    nxt[b] = queues[b].pop(0)
                    forced_rows[b].append(t)
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        tokens[:, t] = nxt
        lengths += (~done).long()
        newly = (~done) & (nxt == eos)
        ended |= newly
        if calc is not None:
            nxt_l, done_l = nxt.tolist(), done.tolist()
            for b in range(B):
                if done_l[b]:
                    continue
                gen_rows[b].append(nxt_l[b])
                forced_now = bool(forced_rows[b]) and forced_rows[b][-1] == t
                if not forced_now and nxt_l[b] in calc.eq_ids:
                    queues[b] = calc.insertion(gen_rows[b])
        done |= newly
        if bool(done.all()):
            break
        cur = nxt
    T = max(int(lengths.max().item()) if B else 0, 1)
    tokens = tokens[:, :T]
    mask = torch.arange(T, device=dev).unsqueeze(0) < lengths.unsqueeze(1)
    forced = torch.zeros(B, T, dtype=torch.bool)
    for b, steps in enumerate(forced_rows):
        steps = [s for s in steps if s < T]
        if steps:
            forced[b, steps] = True
    action_mask = mask & ~forced.to(dev)
    if was_training:
        model.train()
    return Rollout(tokens=tokens, mask=mask, action_mask=action_mask, ended=ended)
