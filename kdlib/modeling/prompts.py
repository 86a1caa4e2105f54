"""Prompts as a model sees them, and the teacher/student pair checks that read tokenizers only (floor 2).

Every method scores the student's token ids with the teacher, so teacher and student must share one vocabulary and,
where prompts go through a chat template, render a conversation to the same ids. The kit encodes every prompt once,
with one tokenizer, for both models; these checks refuse a pair whose own tokenizers disagree, naming the first
token where they do.
"""

from __future__ import annotations

from typing import Sequence


class TokenizerMismatch(ValueError):
    """A teacher/student pair whose vocabularies or chat templates differ."""


def id_to_token(tok) -> dict[int, str]:
    """Every id of a tokenizer (added and special tokens included) -> its token string."""
    return {i: t for t, i in tok.get_vocab().items()}


def first_vocab_difference(teacher_tok, student_tok) -> tuple[int, str | None, str | None] | None:
    """The first id where two vocabularies differ, as ``(id, teacher's token, student's token)`` (None where a
    vocabulary has no such id), or None when they are the same map of ids to tokens."""
    if teacher_tok is student_tok:
        return None
    a, b = id_to_token(teacher_tok), id_to_token(student_tok)
    if a == b:
        return None
    for i in sorted(set(a) | set(b)):
        if a.get(i) != b.get(i):
            return i, a.get(i), b.get(i)
    return None  # unreachable: different maps differ at some id


def chat_messages(user: str, system: str | None = None) -> list[dict]:
    """A one-turn conversation: an optional system turn, then the user turn."""
    return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def render_chat(tok, user: str, system: str | None = None) -> str:
    """``user`` (and ``system``) as the tokenizer's chat template renders them, ending with the generation prompt
    (the assistant turn's opening): the text a chat model continues. Raises TokenizerMismatch without a template."""
    if not has_chat_template(tok):
        raise TokenizerMismatch(f"tokenizer {getattr(tok, 'name_or_path', '')!r} has no chat template")
    return tok.apply_chat_template(chat_messages(user, system), tokenize=False, add_generation_prompt=True)


def bos_prefix(tok) -> int | None:
    """The id a tokenizer puts before every text on its own (Llama 3's ``<|begin_of_text|>``), else None: a tokenizer
    whose special-token template adds exactly one token, its BOS, in front of an empty text."""
    bos = getattr(tok, "bos_token_id", None)
    if bos is None:
        return None
    return bos if tok("", add_special_tokens=True)["input_ids"] == [bos] else None


def first_token_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first position where two id sequences differ (the shorter one's length if one is a prefix), or None."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check_shared_chat_template(teacher_tok, student_tok, user: str, system: str | None = None,
                               names: tuple[str, str] = ("teacher", "student")) -> None:
    """Refuse a pair whose chat templates render ``user`` (and ``system``) differently.

    Both tokenizers render the same conversation with their own template and tokenize it; a pair passes when the ids
    are equal, or when neither tokenizer has a template. The message names both models and the first differing
    token (position, and each side's token there)."""
    t_name, s_name = names
    t_has, s_has = has_chat_template(teacher_tok), has_chat_template(student_tok)
    if not t_has and not s_has:
        return
    if t_has != s_has:
        who, other = (t_name, s_name) if t_has else (s_name, t_name)
        raise TokenizerMismatch(f"chat templates differ: {who} has one and {other} has none, so the two models "
                                "expect their prompts in different formats; teacher and student are prompted alike")
    t_ids = teacher_tok(render_chat(teacher_tok, user, system), add_special_tokens=False)["input_ids"]
    s_ids = student_tok(render_chat(student_tok, user, system), add_special_tokens=False)["input_ids"]
    pos = first_token_difference(t_ids, s_ids)
    if pos is None:
        return

    def token_at(tok, ids):
        return repr(tok.convert_ids_to_tokens(ids[pos])) if pos < len(ids) else "(end of prompt)"

    raise TokenizerMismatch(
        f"chat templates differ: the same conversation renders differently from token {pos} on: "
        f"{token_at(teacher_tok, t_ids)} ({t_name}) vs {token_at(student_tok, s_ids)} ({s_name}); teacher and "
        "student would read different prompts")
