"""The teacher/student pair check that runs before any compute: tokenizers only, no model, no data.

Every method scores the student's token ids with the teacher (the reward of LLMR/KETCHUP, every divergence, the
constrained-KD KL), and the kit prompts both models with one rendering of each prompt. A pair whose own tokenizers
disagree on the vocabulary, or whose chat templates render a conversation differently, is refused with a
:class:`kdlib.config.ParamsError` (exit code 2 on the command line) that names both models and the first token where
they differ.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

from kdlib import data as kdata
from kdlib.config import Params, ParamsError
from kdlib.modeling.models import is_tiny, load_hub_tokenizer
from kdlib.modeling.prompts import (
    TokenizerMismatch,
    check_shared_chat_template,
    first_vocab_difference,
    has_chat_template,
)

# The question the chat templates are compared on (through the task's own student prompt and system turn).
PROBE_QUESTION = "Natalia sold clips to 48 of her friends in April. How many clips did she sell?"


@lru_cache(maxsize=32)
def _tokenizer(name: str, trust_remote_code: bool):
    return load_hub_tokenizer(name, trust_remote_code)


def _pair_key(p: Params) -> tuple:
    t = p.task
    return (p.models.teacher, p.models.student, p.models.tokenizer, p.models.trust_remote_code, t.name,
            t.student_prompt, t.chat, t.system_prompt)


def check_pair(p: Params) -> str:
    """Refuse ``p``'s teacher/student pair (ParamsError) if their tokenizers differ in vocabulary or chat template.

    Returns what was checked: ``"tiny"`` (the kit's presets share the tokenizer it trains), ``"declared"``
    (``models.tokenizer`` names one tokenizer for both; with ``task.chat`` it must have a template), ``"mixed"``
    (a preset and a hub model: checked when the student is built) or ``"checked"``."""
    m = p.models
    if m.tokenizer is not None:
        if p.task.chat and not has_chat_template(_tokenizer(m.tokenizer, m.trust_remote_code)):
            raise ParamsError(f"field 'task.chat': models.tokenizer {m.tokenizer!r} has no chat template")
        return "declared"
    if is_tiny(m.teacher) and is_tiny(m.student):
        if p.task.chat:
            raise ParamsError("field 'task.chat': the kit's preset models use a tokenizer trained on the task, "
                              "which has no chat template")
        return "tiny"
    if is_tiny(m.teacher) or is_tiny(m.student):
        return "mixed"
    teacher_tok = _tokenizer(m.teacher, m.trust_remote_code)
    student_tok = _tokenizer(m.student, m.trust_remote_code)
    where = f"field 'models.student': teacher {m.teacher!r} and student {m.student!r}"
    diff = first_vocab_difference(teacher_tok, student_tok)
    if diff is not None:
        i, t, s = diff
        raise ParamsError(f"{where} do not share a vocabulary: the first differing token is id {i}: {t!r} (teacher) "
                          f"vs {s!r} (student). Every method scores the student's token ids with the teacher; "
                          "distil within one tokenizer family")
    template = p.task.student_prompt or kdata.DEFAULT_PROMPTS[p.task.name]["student"]
    try:
        check_shared_chat_template(teacher_tok, student_tok, kdata.apply_prompt(template, PROBE_QUESTION),
                                   p.task.system_prompt)
    except TokenizerMismatch as e:
        raise ParamsError(f"{where}: {e}. Every method scores the student's token ids with the teacher on one "
                          "rendering of each prompt; distil between models of one chat format") from None
    if p.task.chat and not has_chat_template(teacher_tok):
        raise ParamsError(f"field 'task.chat': teacher {m.teacher!r} has no chat template to render prompts with")
    return "checked"


def check_pairs(targets: Iterable[Params]) -> dict[tuple, str]:
    """:func:`check_pair` once per distinct pair (models, task, prompt settings) among ``targets``."""
    done: dict[tuple, str] = {}
    for p in targets:
        key = _pair_key(p)
        if key not in done:
            done[key] = check_pair(p)
    return done
