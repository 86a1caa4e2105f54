"""Judge prompt templates (params/judge/*.txt), their placeholders, and parsing the judge's answer.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

TASKS = ("summarization", "translation")
CRITERIA = ("overall", "informativeness", "coherence")
IDS = ("A", "B")
PLACEHOLDERS = ("source", "id_1", "candidate_1", "id_2", "candidate_2")
DEFAULT_TEMPLATES_DIR = "params/judge"
CACHE_FORMAT = 1  # bump to invalidate every cached answer

_REPO_ROOT = Path(__file__).resolve().parents[2]
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_ANY_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


class JudgeError(RuntimeError):
    """A judge backend could not produce an answer (network/HTTP failure, missing input)."""


class TemplateError(ValueError):
    """A prompt template file is missing or malformed; the message names the file."""


class InputError(ValueError):
    """Bad evaluation inputs; the message names the file (or list) and the line."""


# --------------------------------------------------------------------------- templates


def _check_choice(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


def resolve_templates_dir(templates_dir: str | os.PathLike = DEFAULT_TEMPLATES_DIR) -> Path:
    """A relative folder is looked up in the working directory first, then in the repository
    root (so notebooks running inside ``notebooks/`` find ``params/judge``)."""
    path = Path(templates_dir)
    if path.is_absolute() or path.is_dir():
        return path
    alt = _REPO_ROOT / path
    return alt if alt.is_dir() else path


def template_path(task: str, criterion: str, templates_dir=DEFAULT_TEMPLATES_DIR) -> Path:
    _check_choice(task, TASKS, "task")
    _check_choice(criterion, CRITERIA, "criterion")
    return resolve_templates_dir(templates_dir) / f"{task}_{criterion}.txt"


def load_template(task: str, criterion: str, templates_dir=DEFAULT_TEMPLATES_DIR) -> str:
    """The text of ``<templates_dir>/<task>_<criterion>.txt``, checked to hold each placeholder
    ``{source} {id_1} {candidate_1} {id_2} {candidate_2}`` and no other ``{name}``."""
    path = template_path(task, criterion, templates_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TemplateError(
            f"judge template not found: {path} (expected one file per task and criterion, "
            f"named <task>_<criterion>.txt; see params/judge/README.md)"
        ) from None
    except OSError as e:
        raise TemplateError(f"cannot read judge template {path}: {e}") from None
    missing = [p for p in PLACEHOLDERS if "{" + p + "}" not in text]
    if missing:
        raise TemplateError(
            f"judge template {path} lacks placeholder(s) "
            + ", ".join("{" + p + "}" for p in missing)
        )
    unknown = sorted({m for m in _ANY_PLACEHOLDER_RE.findall(text) if m not in PLACEHOLDERS})
    if unknown:
        raise TemplateError(
            f"judge template {path} has unknown placeholder(s) "
            + ", ".join("{" + u + "}" for u in unknown)
            + f"; allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
        )
    return text


def fill_template(template: str, **values: str) -> str:
    """Substitute the five placeholders in one pass (text inside the values is never
    re-interpreted, and other braces in the template are left alone)."""
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template)


# --------------------------------------------------------------------------- parsing

_PREFERRED_RE = re.compile(r"preferred\s*(?:id|choice|answer)?\s*[:：]\s*(.*)$", re.IGNORECASE)
_DECORATION = str.maketrans({c: " " for c in "*_`#>\"'[]<>(){}.,;:!|~="})
_LEAD_WORDS = {"summary", "translation", "candidate", "id", "option", "response", "text", "output"}


def parse_preferred(text: str | None, ids: Sequence[str] = IDS) -> str | None:
    """The ID named on the last ``Preferred: <ID>`` line of ``text``, or None (invalid).

    Tolerant of case, whitespace, markdown (``**Preferred:** **A**``), brackets/quotes and a
    leading word (``Summary B``); anything else (``A and B``, ``tie``, ``none``) is invalid."""
    if not text:
        return None
    value = None
    for line in text.splitlines():
        clean = line.replace("*", "").replace("_", " ").strip()
        m = None
        for m in _PREFERRED_RE.finditer(clean):
            pass
        if m is not None:
            value = m.group(1)
    if value is None:
        return None
    words = value.translate(_DECORATION).split()
    while len(words) > 1 and words[0].lower() in _LEAD_WORDS:
        words = words[1:]
    if len(words) != 1:
        return None
    by_lower = {i.lower(): i for i in ids}
    return by_lower.get(words[0].lower())
