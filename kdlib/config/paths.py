"""Where the project is: notebooks, scripts and tests all read paths relative to the repository root (``params/...``,
``outputs/...``), whatever folder they are started from (JupyterLab starts a kernel in ``notebooks/``)."""

from __future__ import annotations

import os
from pathlib import Path

from kdlib.config.base import ParamsError

_MARKERS = ("pyproject.toml", "kdlib", "params")


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root: the first folder at or above ``start`` (default: the working directory) that holds
    ``pyproject.toml``, ``kdlib/`` and ``params/``; else the folder above the installed ``kdlib`` package (an
    editable install). Raises :class:`ParamsError` when neither is a kit checkout."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / m).exists() for m in _MARKERS):
            return folder
    package_parent = Path(__file__).resolve().parents[2]
    if all((package_parent / m).exists() for m in _MARKERS):
        return package_parent
    raise ParamsError(f"no KETCHUP kit checkout at or above {here} (looked for {', '.join(_MARKERS)}); "
                      "start Jupyter or Python inside the repository")


def use_project_root(start: str | os.PathLike | None = None) -> Path:
    """Make the repository root the working directory (idempotent) and return it: a notebook calls this first, so it
    runs unchanged from ``notebooks/`` (JupyterLab), from the root (papermill with ``--cwd .``), or from any runner
    that starts kernels elsewhere."""
    root = project_root(start)
    if Path.cwd().resolve() != root:
        os.chdir(root)
    return root
