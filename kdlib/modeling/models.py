"""Tokenizers and models (floor 1): tiny from-scratch presets for the embedded profile, hub
models by name for the paper profile, one interface for encoder-decoder and decoder-only LMs.

Model specs (``params.models.teacher`` / ``.student``):
  * ``tiny-t5:<size>``     a T5 config from TINY_SIZES, randomly initialised (embedded, smoke);
  * ``tiny-causal:<size>`` a Qwen2-style decoder-only config of the same sizes (seed 001 App. F);
  * anything else          a hub name or a local folder, loaded with ``from_pretrained``
                           (``trust_remote_code`` only if the params turn it on).
Teacher and student must share one vocabulary (inner-family distillation): the reward is read
off the teacher's logits at the student's token ids.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

from kdlib.modeling import engines

# Sizes mirror the T5 family at toy scale: small < base < large < teacher. Chosen on the embedded
# tasks so that the teacher converges within the run_all budget and the default (base) student,
# pre-distilled to its plateau, stays clearly below the teacher (room for distillation methods).
TINY_SIZES: dict[str, dict] = {
    "micro": dict(d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16),  # the smoke profile's
    "small": dict(d_model=24, d_ff=96, num_layers=1, num_heads=4, d_kv=6),
    "base": dict(d_model=32, d_ff=128, num_layers=1, num_heads=4, d_kv=8),
    "large": dict(d_model=48, d_ff=192, num_layers=2, num_heads=4, d_kv=12),
    "teacher": dict(d_model=64, d_ff=256, num_layers=2, num_heads=4, d_kv=16),
}
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]  # ids 0, 1, 2 as in T5
TOKENIZER_VERSION = 1


def is_tiny(spec: str) -> bool:
    return spec.startswith(("tiny-t5:", "tiny-causal:"))


def tiny_arch(spec: str) -> str:
    return "causal" if spec.startswith("tiny-causal:") else "seq2seq"


# ----------------------------------------------------------------------------- tokenizers
def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """A BPE tokenizer trained offline with ``tokenizers`` on the task's own corpus, wrapped as a
    transformers fast tokenizer. Digits are split one by one (arithmetic), ``<<``/``>>`` are single
    pieces (calculator annotations), spaces are kept SentencePiece-style so decoding round-trips."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Split(Regex(r"<<|>>|[0-9]|[^\w▁]"), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def load_or_train_tokenizer(folder: str | Path, texts_fn, vocab_size: int = 2000):
    """Tokenizer cached in ``folder`` (trained from ``texts_fn()`` on first use)."""
    from transformers import PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file() and (folder / "done").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    tok = train_tokenizer(texts_fn(), vocab_size=vocab_size)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    tok.save_pretrained(str(tmp))
    (tmp / "done").write_text("ok")
    import shutil

    if folder.exists() and not (folder / "done").is_file():
        shutil.rmtree(folder, ignore_errors=True)  # a folder left unfinished by a killed process
    try:
        os.replace(tmp, folder)
    except OSError:  # another process (a DDP rank) finished the same deterministic tokenizer first: use it
        if not (folder / "done").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return PreTrainedTokenizerFast.from_pretrained(str(folder))


def load_hub_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:  # decoder-only tokenizers often lack one
        tok.pad_token = tok.eos_token
    return tok


def check_shared_vocab(teacher_tok, student_tok, teacher_model=None, student_model=None) -> None:
    """Refuse a teacher/student pair that do not share a vocabulary (``prompts.TokenizerMismatch``, a ValueError,
    naming the first id whose token differs)."""
    from kdlib.modeling.prompts import TokenizerMismatch, first_vocab_difference

    diff = first_vocab_difference(teacher_tok, student_tok)
    if diff is not None:
        i, t, s = diff
        raise TokenizerMismatch(f"teacher and student tokenizers differ (first at id {i}: {t!r} for the teacher, {s!r} "
                                "for the student): the LLMR/KETCHUP reward needs one shared vocabulary "
                                "(inner-family distillation, e.g. FLAN-T5 -> T5, Qwen -> Qwen)")
    if teacher_model is not None and student_model is not None:
        vt = teacher_model.get_output_embeddings().weight.shape[0]
        vs = student_model.get_output_embeddings().weight.shape[0]
        if vt != vs:
            raise ValueError(f"teacher and student output vocabularies differ ({vt} vs {vs} logits)")


# ----------------------------------------------------------------------------- models
# Config fields that hold a dropout probability in the model families the kit meets (T5:
# dropout_rate; Qwen2 / Llama: attention_dropout; GPT-2: resid/embd/attn_pdrop; BERT-style:
# hidden_dropout_prob, attention_probs_dropout_prob; BART / OPT: dropout, activation_dropout).
# Any other numeric field whose name contains "dropout" or ends in "pdrop" is set as well.
DROPOUT_FIELDS = ("dropout_rate", "attention_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout",
                  "hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "activation_dropout",
                  "classifier_dropout", "summary_first_dropout")


def _is_dropout_name(name: str) -> bool:
    return name in DROPOUT_FIELDS or "dropout" in name or name.endswith("pdrop")


def _is_prob(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def set_config_dropout(config, p: float) -> None:
    """Set every dropout probability of a transformers config (and of its sub-configs, e.g. a
    ``text_config``) to ``p``, in place. Fields that are ``None`` (e.g. ``classifier_dropout``
    meaning "use the hidden dropout") stay ``None``."""
    from transformers import PretrainedConfig

    for name, value in list(vars(config).items()):
        if isinstance(value, PretrainedConfig):
            set_config_dropout(value, p)
        elif not name.startswith("_") and _is_dropout_name(name) and _is_prob(value):
            setattr(config, name, float(p))


def apply_dropout(model, p: float):
    """Make ``model`` run with dropout probability ``p`` everywhere; returns ``model``.

    Three places hold a dropout probability and all three are set: the config's fields (what a
    saved checkpoint records), the ``p`` of every ``torch.nn.Dropout``-family module, and the
    plain float attributes that attention modules copy from the config at build time and pass to
    functional dropout (T5Attention.dropout, Qwen2/Llama ``attention_dropout``). ``p = 0`` makes a
    model in train mode deterministic.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    if getattr(model, "config", None) is not None:
        set_config_dropout(model.config, p)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = float(p)
        for name, value in list(vars(module).items()):
            if not name.startswith("_") and _is_dropout_name(name) and _is_prob(value):
                setattr(module, name, float(p))
    return model


def build_model(spec: str, *, vocab_size: int, arch: str = "seq2seq", dropout: float = 0.0,
                seed: int = 0, dtype: str = "float32", trust_remote_code: bool = False,
                max_positions: int = 1024):
    """A model from a spec: a tiny preset (random init from ``seed``) or ``from_pretrained``.

    ``dropout`` applies to every model, hub or tiny (:func:`apply_dropout`)."""
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    if is_tiny(spec):
        size = spec.split(":", 1)[1]
        if size not in TINY_SIZES:
            raise ValueError(f"unknown tiny size {size!r} in {spec!r}; sizes: {', '.join(TINY_SIZES)}")
        s = TINY_SIZES[size]
        torch.manual_seed(seed)
        if tiny_arch(spec) == "seq2seq":
            from transformers import T5Config, T5ForConditionalGeneration

            cfg = T5Config(vocab_size=vocab_size, d_model=s["d_model"], d_ff=s["d_ff"], num_layers=s["num_layers"],
                           num_decoder_layers=s["num_layers"], num_heads=s["num_heads"], d_kv=s["d_kv"],
                           dropout_rate=dropout, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                           feed_forward_proj="relu", tie_word_embeddings=True)
            model = T5ForConditionalGeneration(cfg)
        else:
            from transformers import Qwen2Config, Qwen2ForCausalLM

            cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=s["d_model"], intermediate_size=s["d_ff"],
                              num_hidden_layers=2 * s["num_layers"], num_attention_heads=s["num_heads"],
                              num_key_value_heads=s["num_heads"], max_position_embeddings=max_positions,
                              attention_dropout=dropout, tie_word_embeddings=True, pad_token_id=0,
                              eos_token_id=1, bos_token_id=1)
            model = Qwen2ForCausalLM(cfg)
        return apply_dropout(model, dropout).to(torch_dtype)
    return load_pretrained(spec, arch=arch, dtype=dtype, trust_remote_code=trust_remote_code, dropout=dropout)


def load_pretrained(path: str, *, arch: str, dtype: str = "float32", trust_remote_code: bool = False,
                    dropout: float | None = None):
    """``from_pretrained`` for a hub name or a folder (our checkpoints are safetensors).

    ``dropout``: the probability the model runs with, whatever its saved config says (a hub T5
    says 0.1): set in the config before the model is built and then on every module
    (:func:`apply_dropout`). ``None`` keeps the saved values; the kit always passes one.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    cls = AutoModelForSeq2SeqLM if arch == "seq2seq" else AutoModelForCausalLM
    kwargs = {}
    if dropout is not None:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        set_config_dropout(config, dropout)
        kwargs["config"] = config
    model = cls.from_pretrained(path, dtype=torch_dtype, trust_remote_code=trust_remote_code, use_safetensors=True,
                                **kwargs)
    return model if dropout is None else apply_dropout(model, dropout)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- batching
def encode_sources(tok, texts: Sequence[str], max_len: int, arch: str, device="cpu") -> tuple[Tensor, Tensor]:
    """Token ids and attention mask of prompts, ``(B, S)``. Encoder-decoder sources end with EOS and
    are right-padded; decoder-only prompts are left-padded so generation continues at the right."""
    ids = [tok(t, add_special_tokens=(arch == "seq2seq"))["input_ids"][:max_len] for t in texts]
    if arch == "seq2seq":
        ids = [x if x[-1] == tok.eos_token_id else x[:-1] + [tok.eos_token_id] for x in ids]
    return pad(ids, tok.pad_token_id, left=(arch == "causal"), device=device)


def encode_targets(tok, texts: Sequence[str], max_len: int, device="cpu") -> tuple[Tensor, Tensor]:
    """Target ids ending with EOS (truncated to ``max_len`` with EOS kept last), right-padded, and
    the mask of valid positions ``(B, T)``."""
    out = []
    for t in texts:
        x = tok(t, add_special_tokens=False)["input_ids"][: max_len - 1]
        out.append(x + [tok.eos_token_id])
    return pad(out, tok.pad_token_id, left=False, device=device)


def pad(seqs: Sequence[Sequence[int]], pad_id: int, left: bool = False, device="cpu") -> tuple[Tensor, Tensor]:
    T = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, s in enumerate(seqs):
        if not s:
            continue
        if left:
            ids[i, T - len(s):] = torch.tensor(s)
            mask[i, T - len(s):] = True
        else:
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = True
    return ids.to(device), mask.to(device)


def decode(tok, ids: Tensor, mask: Tensor) -> list[str]:
    """Texts of generated ids, up to (not including) EOS."""
    out = []
    for row, m in zip(ids.tolist(), mask.tolist()):
        toks = [t for t, keep in zip(row, m) if keep and t != tok.eos_token_id and t != tok.pad_token_id]
        out.append(tok.decode(toks, skip_special_tokens=True).strip())
    return out


# ----------------------------------------------------------------------------- one interface
def forward_logits(model, arch: str, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor, tgt_mask: Tensor,
                   encoder_hidden: Tensor | None = None) -> Tensor:
    """Teacher-forced next-token logits over the target: ``logits[b, t]`` scores ``tgt[b, t]``
    given the source and ``tgt[b, :t]``.

    src_ids, src_mask: (B, S); tgt_ids, tgt_mask: (B, T) -> logits (B, T, V). ``encoder_hidden``
    (B, S, D), seq2seq only: encoder states computed by the caller (the encoder is not run again).
    """
    if arch == "seq2seq":
        start = torch.zeros_like(tgt_ids[:, :1])  # decoder_start_token_id = pad = 0 (T5)
        start.fill_(getattr(model, "module", model).config.decoder_start_token_id or 0)  # .module: under DDP
        dec_in = torch.cat([start, tgt_ids[:, :-1]], dim=1)  # (B, T)
        if engines.fast_supported(model, arch) and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            if encoder_hidden is None:
                encoder_hidden = engines.t5_encoder_states(model, src_ids, src_mask)
            return engines.t5_logits(model, encoder_hidden, src_mask, dec_in)
        if encoder_hidden is not None:
            return model(encoder_outputs=(encoder_hidden,), attention_mask=src_mask.long(), decoder_input_ids=dec_in).logits
        return model(input_ids=src_ids, attention_mask=src_mask.long(), decoder_input_ids=dec_in).logits
    S = src_ids.shape[1]
    ids = torch.cat([src_ids, tgt_ids], dim=1)  # (B, S+T)
    attn = torch.cat([src_mask, tgt_mask], dim=1).long()
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits  # (B, S+T, V)
    return logits[:, S - 1: S - 1 + tgt_ids.shape[1]]


def encoder_states(model, src_ids: Tensor, src_mask: Tensor) -> Tensor:
    """The encoder's last hidden states (B, S, D) of a seq2seq model (through its own encoder)."""
    m = getattr(model, "module", model)
    if engines.fast_supported(m, "seq2seq"):
        return engines.t5_encoder_states(m, src_ids, src_mask)
    return m.get_encoder()(input_ids=src_ids, attention_mask=src_mask.long()).last_hidden_state


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log pi(y_t | s_t) of the given tokens: logits (B, T, V), tokens (B, T) -> (B, T).

    Computed as minus the token cross-entropy: the same numbers as log_softmax + gather, with a
    backward pass that is ~40% cheaper on CPU (one fused softmax-minus-one-hot kernel)."""
    B, T, V = logits.shape
    return -torch.nn.functional.cross_entropy(logits.float().reshape(B * T, V), tokens.reshape(B * T),
                                              reduction="none").view(B, T)


def save_checkpoint(model, tok, folder: str | Path, meta: dict | None = None) -> None:
    """safetensors weights + config + tokenizer, written to a temp folder then renamed."""
    import shutil

    folder = Path(folder)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    head = getattr(model, HEAD_ATTR, None)
    if head is None:
        model.save_pretrained(str(tmp), safe_serialization=True)
    else:  # the language model as transformers saves it, the scalar head (and its backbone) beside it
        from safetensors.torch import save_model

        lm_state = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_ATTR + ".")}
        model.save_pretrained(str(tmp), safe_serialization=True, state_dict=lm_state)
        save_model(head, str(tmp / HEAD_FILE))
    if tok is not None:
        tok.save_pretrained(str(tmp))
    (tmp / "kdlib_meta.json").write_text(json.dumps(meta or {}, indent=1))
    if folder.exists():
        old = folder.with_name(folder.name + f".old{os.getpid()}")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
    else:
        os.replace(tmp, folder)


# ----------------------------------------------------------------------------- scalar heads
HEAD_ATTR = "kdlib_head"  # attribute of an attached ScalarHead (a value function or a reward model's score)
HEAD_FILE = "head.safetensors"  # saved beside model.safetensors; from_pretrained ignores it


class ScalarHead(torch.nn.Module):
    """A scalar read-out ``w . h + b`` on decoder hidden states: a critic V(s_t) or a reward model's
    score. ``backbone`` None: it reads the hidden states of the model it is attached to (a shared
    trunk: one forward pass gives logits and values); otherwise it owns a separate language model
    (a separate value network, e.g. initialised from a reward model, seed 003). Zero-initialised
    weight: a fresh head predicts its bias (0), whatever the hidden states."""

    def __init__(self, hidden_size: int, backbone=None):
        super().__init__()
        self.backbone = backbone
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden: (B, T, D) -> (B, T)."""
        return self.linear(hidden.to(self.linear.weight.dtype)).squeeze(-1)


def hidden_size(model) -> int:
    cfg = getattr(model, "module", model).config
    return getattr(cfg, "d_model", None) or cfg.hidden_size


def attach_head(model, backbone=None) -> ScalarHead:
    """Attach a :class:`ScalarHead` to ``model`` (as ``model.kdlib_head``, so the optimiser, DDP and
    checkpoints see it) and return it."""
    m = getattr(model, "module", model)
    head = ScalarHead(hidden_size(backbone if backbone is not None else m), backbone)
    head.to(next(m.parameters()).device)
    setattr(m, HEAD_ATTR, head)
    return head


def load_head(model, folder: str | Path) -> bool:
    """Load ``head.safetensors`` of a checkpoint into ``model``'s attached head; False if either is missing."""
    from safetensors.torch import load_model

    m = getattr(model, "module", model)
    path = Path(folder) / HEAD_FILE
    head = getattr(m, HEAD_ATTR, None)
    if head is None or not path.is_file():
        return False
    load_model(head, str(path))
    return True


def forward_with_hidden(model, arch: str, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor, tgt_mask: Tensor,
                        encoder_hidden: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Like :func:`forward_logits`, also returning the last decoder hidden states (B, T, D) at the
    same positions (position t has seen the source and ``tgt[:, :t]``: the state s_t)."""
    if arch == "seq2seq":
        m = getattr(model, "module", model)
        start = torch.full_like(tgt_ids[:, :1], m.config.decoder_start_token_id or 0)
        dec_in = torch.cat([start, tgt_ids[:, :-1]], dim=1)
        if engines.fast_supported(model, arch) and not isinstance(model, torch.nn.parallel.DistributedDataParallel):
            if encoder_hidden is None:
                encoder_hidden = engines.t5_encoder_states(model, src_ids, src_mask)
            return engines.t5_logits(model, encoder_hidden, src_mask, dec_in, return_hidden=True)
        kw = {"encoder_outputs": (encoder_hidden,)} if encoder_hidden is not None else {"input_ids": src_ids}
        out = model(attention_mask=src_mask.long(), decoder_input_ids=dec_in, output_hidden_states=True, **kw)
        return out.logits, out.decoder_hidden_states[-1]
    S = src_ids.shape[1]
    ids = torch.cat([src_ids, tgt_ids], dim=1)
    attn = torch.cat([src_mask, tgt_mask], dim=1).long()
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=True)
    T = tgt_ids.shape[1]
    return out.logits[:, S - 1: S - 1 + T], out.hidden_states[-1][:, S - 1: S - 1 + T]


def head_values(model, arch: str, src_ids: Tensor, src_mask: Tensor, tgt_ids: Tensor, tgt_mask: Tensor,
                hidden: Tensor | None = None) -> Tensor:
    """The attached head's scalar at every target position (B, T): V(s_t) of a critic. A shared
    head reads ``hidden`` (the policy's own hidden states, from :func:`forward_with_hidden`); a head
    with its own backbone runs it."""
    m = getattr(model, "module", model)
    head = getattr(m, HEAD_ATTR)
    if head.backbone is not None:
        _, hidden = forward_with_hidden(head.backbone, arch, src_ids, src_mask, tgt_ids, tgt_mask)
    elif hidden is None:
        raise ValueError("a shared-trunk head needs the policy's hidden states")
    return head(hidden)


class EncoderCache:
    """Encoder states of a frozen seq2seq model (a teacher) for a fixed list of sources.

    A frozen model's encoder gives the same states for a source at every step, so they are computed
    once and kept. They are computed in fixed chunks of consecutive indices (``chunk``), never in
    the order batches ask for them: a state never depends on which batch needed it first, so a
    resumed run reads exactly the numbers the uninterrupted run read. ``get`` pads the rows it
    returns with zeros; their mask is False there, and a masked key gets exactly zero attention
    weight, so the result equals the encoder run on the padded batch up to float rounding.

    Memory: ``sum(len(source)) * d_model`` values; :meth:`estimate_mb` tells callers whether it
    fits their budget (the paper profile's FLAN-T5-XL on 200k XSum documents does not).
    """

    def __init__(self, model, sources: Sequence[Sequence[int]], pad_id: int, chunk: int = 64):
        self.model, self.sources, self.pad_id, self.chunk = model, sources, pad_id, chunk
        self.states: dict[int, Tensor] = {}

    @staticmethod
    def estimate_mb(model, sources: Sequence[Sequence[int]]) -> float:
        m = getattr(model, "module", model)
        p = next(m.parameters())
        return sum(len(s) for s in sources) * m.config.d_model * p.element_size() / 2**20

    @torch.no_grad()
    def _fill(self, c: int) -> None:
        lo, hi = c * self.chunk, min(len(self.sources), (c + 1) * self.chunk)
        dev = next(self.model.parameters()).device
        ids, mask = pad([self.sources[i] for i in range(lo, hi)], self.pad_id, device=dev)
        enc = encoder_states(self.model, ids, mask)  # (n, S, D)
        for j, i in enumerate(range(lo, hi)):
            self.states[i] = enc[j, : len(self.sources[i])].clone()

    def get(self, idx: Sequence[int]) -> tuple[Tensor, Tensor]:
        """Encoder states (B, S, D) of the given source indices, zero-padded, and their mask (B, S)."""
        for i in idx:
            if i not in self.states:
                self._fill(i // self.chunk)
        rows = [self.states[i] for i in idx]
        S = max(r.shape[0] for r in rows)
        out = rows[0].new_zeros(len(rows), S, rows[0].shape[1])
        mask = torch.zeros(len(rows), S, dtype=torch.bool, device=out.device)
        for b, r in enumerate(rows):
            out[b, : r.shape[0]] = r
            mask[b, : r.shape[0]] = True
        return out, mask
