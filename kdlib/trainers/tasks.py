"""The task bundle (data + tokenizer + token ids) and model loading for a run: what every family and chain reads before training.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache

from kdlib import data as kdata
from kdlib.config import Params, ParamsError, params_hash
from kdlib.maths import metrics
from kdlib.modeling.engines import has_active_dropout  # noqa: F401  (re-exported for the families)
from kdlib.modeling.models import (
    build_model,
    is_tiny,
    load_hub_tokenizer,
    load_or_train_tokenizer,
    load_pretrained,
    tiny_arch,
)
from kdlib.modeling.prompts import bos_prefix, render_chat


# ----------------------------------------------------------------------------- task bundle
@dataclass
class Task:
    """A task ready for training: texts, token ids with each prompt, tokenizer, metric names."""

    name: str
    kind: str
    arch: str
    tok: object
    sources: dict[str, list[str]]  # raw sources by split
    targets: dict[str, list[str]]  # references by split
    student_src: dict[str, list[list[int]]]  # token ids of the student's prompt by split
    teacher_src: dict[str, list[list[int]]]
    use_calculator: bool
    max_target_len: int
    fingerprint: str = ""  # hash of every source and target: run keys change when the data does
    truth: object = None  # generated tasks: their kdlib.data.TaskTruth (valid outputs, true likelihood)
    primary: str = field(init=False)

    def __post_init__(self):
        self.primary = metrics.PRIMARY_METRIC[self.kind]

    def split_size(self, split: str) -> int:
        return len(self.targets[split])


def resolve_arch(params: Params) -> str:
    spec = params.models.student
    return tiny_arch(spec) if is_tiny(spec) else params.models.arch


def data_key(params: Params) -> dict:
    task = params.task.model_dump()
    if not task["chat"]:  # plain prompts: keys as before the chat settings existed
        task.pop("chat"), task.pop("system_prompt")
    if not task.get("ambiguity"):  # ambiguity 0 (the older tasks) and hub tasks: keys as before
        task.pop("ambiguity", None)
    else:  # the grammars' version: runs trained on other grammars' draws are never reused
        task["variants_version"] = kdata.VARIANTS_VERSION
    return {"task": task, "arch": resolve_arch(params), "tokenizer": params.models.tokenizer,
            "teacher": params.models.teacher if not is_tiny(params.models.teacher) else "tiny"}


def load_task_bundle(params: Params) -> Task:
    """The task bundle of ``params`` (cached per data-relevant parameters within a process)."""
    sub = {"task": params.task.model_dump(), "models": params.models.model_dump(), "cache_dir": params.cache_dir}
    return _load_task_bundle(json.dumps(sub, sort_keys=True))


@lru_cache(maxsize=8)
def _load_task_bundle(sub_json: str) -> Task:
    sub = json.loads(sub_json)
    params = Params(task=sub["task"], models=sub["models"], cache_dir=sub["cache_dir"])
    tp = params.task
    ds = kdata.load_task(tp.name, cache_dir=params.cache_dir, path=tp.path, n_train=tp.n_train, n_dev=tp.n_dev,
                         n_test=tp.n_test, seed=tp.data_seed, ambiguity=tp.ambiguity)
    kind = kdata.task_kind(tp.name)
    prompts = kdata.DEFAULT_PROMPTS[tp.name]
    s_tpl = tp.student_prompt or prompts["student"]
    t_tpl = tp.teacher_prompt or prompts["teacher"]
    arch = resolve_arch(params)
    sources = {s: list(ds[s]["source"]) for s in ("train", "dev", "test")}
    targets = {s: list(ds[s]["target"]) for s in ("train", "dev", "test")}
    s_text = {s: [kdata.apply_prompt(s_tpl, x) for x in xs] for s, xs in sources.items()}
    t_text = {s: [kdata.apply_prompt(t_tpl, x) for x in xs] for s, xs in sources.items()}
    if params.models.tokenizer or not is_tiny(params.models.teacher):
        tok = load_hub_tokenizer(params.models.tokenizer or params.models.teacher, params.models.trust_remote_code)
    else:
        h = hashlib.sha256(params_hash(data_key(params)).encode()).hexdigest()[:12]
        folder = os.path.join(params.cache_dir, "tokenizers", f"{tp.name}-{h}")
        tok = load_or_train_tokenizer(folder, lambda: s_text["train"] + t_text["train"] + targets["train"])
    if tp.chat:  # one rendering for teacher and student: the shared tokenizer's template
        s_text = {s: chat_prompts(tok, xs, tp.system_prompt) for s, xs in s_text.items()}
        t_text = {s: chat_prompts(tok, xs, tp.system_prompt) for s, xs in t_text.items()}

    def ids(texts):
        return encode_sources(tok, texts, arch, tp.max_source_len)

    use_calc = tp.calculator if tp.calculator is not None else kind == "arithmetic"
    fingerprint = params_hash([sources, targets, s_tpl, t_tpl, len(tok), tok.convert_ids_to_tokens(list(range(len(tok))))]
                              + ([tp.system_prompt, tok.chat_template] if tp.chat else []))
    return Task(fingerprint=fingerprint, name=tp.name, kind=kind, arch=arch, tok=tok, sources=sources, targets=targets,
                student_src={s: ids(x) for s, x in s_text.items()},
                teacher_src={s: ids(x) for s, x in t_text.items()},
                use_calculator=use_calc, max_target_len=tp.max_target_len,
                truth=kdata.task_truth(tp.name, tp.data_seed, tp.ambiguity) if tp.name in kdata.EMBEDDED_TASKS else None)


def chat_prompts(tok, texts: list[str], system: str | None) -> list[str]:
    """Filled prompts as user turns of the tokenizer's chat template (after ``system``), with the generation prompt."""
    if not getattr(tok, "chat_template", None):
        raise ParamsError(f"field 'task.chat': the tokenizer {getattr(tok, 'name_or_path', '')!r} has no chat template "
                          "to render prompts with (set task.chat: false, or models.tokenizer to one that has)")
    return [render_chat(tok, t, system) for t in texts]


def encode_sources(tok, texts: list[str], arch: str, max_len: int) -> list[list[int]]:
    """Token ids of prompted source texts, truncated to ``max_len``; seq2seq sources end in EOS. Decoder-only prompts
    start with the tokenizer's BOS where its own template puts one there (Llama 3), once."""
    add = arch == "seq2seq"
    bos = None if add else bos_prefix(tok)
    out = []
    for x in (tok(list(texts), add_special_tokens=add)["input_ids"] if texts else []):  # one batched call (Rust)
        if bos is not None and x[:1] != [bos]:
            x = [bos] + x
        x = x[:max_len]
        if add and x[-1] != tok.eos_token_id:
            x[-1] = tok.eos_token_id
        out.append(x)
    return out


def encode_prompts(params: Params, task: Task, sources: list[str], which: str) -> list[list[int]]:
    """Token ids of raw ``sources`` (e.g. a held-out evaluation set) under the task's ``which``
    (student / teacher) prompt, exactly as :func:`load_task_bundle` encodes the task's own splits."""
    prompts = kdata.DEFAULT_PROMPTS[task.name]
    tpl = (params.task.teacher_prompt if which == "teacher" else params.task.student_prompt) or prompts[which]
    texts = [kdata.apply_prompt(tpl, s) for s in sources]
    if params.task.chat:
        texts = chat_prompts(task.tok, texts, params.task.system_prompt)
    return encode_sources(task.tok, texts, task.arch, params.task.max_source_len)


def rendered_prompt(params: Params, split: str = "test", index: int = 0) -> dict:
    """One prompt exactly as the models read it: the token ids of the ``index``-th ``split`` example under the
    student's and the teacher's prompt, decoded with every special token kept (chat template, BOS, EOS)."""
    task = load_task_bundle(params)
    out = {"task": params.task.name, "split": split, "index": index, "chat": params.task.chat,
           "tokenizer": params.models.tokenizer or (params.models.teacher if not is_tiny(params.models.teacher)
                                                    else "the kit's BPE (trained on the task)")}
    for which, src in (("student", task.student_src), ("teacher", task.teacher_src)):
        ids = src[split][index]
        out[which] = task.tok.decode(ids, skip_special_tokens=False)
        out[f"{which}_tokens"] = len(ids)
    out["identical"] = task.student_src[split][index] == task.teacher_src[split][index]
    return out


def quiet_transformers() -> None:
    """No per-checkpoint progress bars from transformers (our own bars show the work)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_model(params: Params, task: Task, spec: str, checkpoint: str | None = None, seed: int = 0,
               frozen_weights: bool = False):
    """A model from a run checkpoint (safetensors) or freshly built from its spec.

    A model that trains is loaded in float32 whatever ``models.dtype`` says (fp32 master weights;
    bf16 is the compute dtype under :func:`autocast`); a frozen one (``frozen_weights``: a teacher
    used for rewards) is stored in ``models.dtype``, which halves its memory in bf16."""
    quiet_transformers()
    dtype = params.models.dtype if frozen_weights else "float32"
    if checkpoint is not None:
        return load_pretrained(checkpoint, arch=task.arch, dtype=dtype,
                               trust_remote_code=params.models.trust_remote_code, dropout=params.method_dropout())
    return build_model(spec, vocab_size=len(task.tok), arch=task.arch, dropout=params.models.dropout, seed=seed,
                       dtype=dtype, trust_remote_code=params.models.trust_remote_code)


def frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
