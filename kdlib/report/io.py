"""Writing tables (CSV, Markdown, LaTeX), figures (PNG, PDF) and provenance, atomically.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# ---------------------------------------------------------------------------------------------
# Writing files
# ---------------------------------------------------------------------------------------------


def _publish(tmp: str | Path, path: Path) -> None:
    """Give a temporary file the usual permissions (mkstemp makes it 0600), then move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _atomic_write(path: Path, data: str | bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _cell_text(x) -> str:
    """Plain text of one cell for Markdown/LaTeX: floats with 2 decimals (3 significant if < 1)."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (float, np.floating)):
        x = float(x)
        if x != 0 and abs(x) < 1:
            return f"{x:.3g}"
        return f"{x:.2f}"
    return str(x)


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    """Keep a meaningful index as leading column(s); flatten MultiIndex columns."""
    out = df.copy()
    if not isinstance(out.index, pd.RangeIndex) or out.index.name is not None:
        out = out.reset_index()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [" ".join(str(c) for c in col if str(c)) for col in out.columns]
    out.columns = [str(c) for c in out.columns]
    return out


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "↓": r"$\downarrow$", "↑": r"$\uparrow$", "–": "--", "<": r"$<$", ">": r"$>$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials; ``±``/``↓``/``↑``/``->`` become math symbols."""
    return "$\\rightarrow$".join("".join(_LATEX_SPECIALS.get(ch, ch) for ch in part) for part in str(text).split("->"))


def _to_latex(df: pd.DataFrame, caption: str | None, label: str) -> str:
    def cell(x) -> str:
        text = _cell_text(x)
        if text.endswith(" *"):  # the best-student marker: bold instead of a star
            return r"\textbf{" + latex_escape(text[:-2]) + "}"
        return latex_escape(text)

    align = "l" + "r" * (df.shape[1] - 1)
    lines = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering"]
    if caption:  # the " *" marker is set in bold in LaTeX, so say so
        caption = caption.replace("* best student", "Bold: best student")
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines.append(r"\label{tab:" + re.sub(r"[^A-Za-z0-9:_-]", "-", label) + "}")
    lines += [r"\resizebox{\linewidth}{!}{%", r"\begin{tabular}{" + align + "}", r"\toprule",
              " & ".join(latex_escape(c) for c in df.columns) + r" \\", r"\midrule"]
    for row in df.itertuples(index=False):
        lines.append(" & ".join(cell(x) for x in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}", ""]
    return "\n".join(lines)


def _to_markdown(df: pd.DataFrame, caption: str | None) -> str:
    from tabulate import tabulate

    def md(x) -> str:
        return _cell_text(x).replace("|", r"\|").replace("\n", " ")

    body = tabulate([[md(x) for x in row] for row in df.itertuples(index=False)],
                    headers=[md(c) for c in df.columns], tablefmt="github", disable_numparse=True)
    head = f"### {' '.join(str(caption).split())}\n\n" if caption else ""
    return head + body + "\n"


def write_table(df: pd.DataFrame, out_dir: str | Path, name: str, caption: str | None = None,
                latex: bool = True) -> dict[str, Path]:
    """Write ``<name>.csv``, ``<name>.md`` (GitHub table, caption as a ``###`` line above) and,
    with ``latex=True``, ``<name>.tex`` (booktabs; cells ending in " *" set in bold), each atomically.

    ``caption`` defaults to ``df.attrs["caption"]``. A non-default index is written as leading
    column(s). Returns ``{"csv": path, "md": path, "tex": path}``.
    """
    out_dir = Path(out_dir)
    caption = caption if caption is not None else df.attrs.get("caption")
    flat = _flat(df)
    paths = {"csv": _atomic_write(out_dir / f"{name}.csv", flat.to_csv(index=False)),
             "md": _atomic_write(out_dir / f"{name}.md", _to_markdown(flat, caption))}
    if latex:
        paths["tex"] = _atomic_write(out_dir / f"{name}.tex", _to_latex(flat, caption, name))
    return paths


PNG_DPI = 150
MAX_PNG_WIDTH_PX = 2400  # legible at page width (about 1,100 px) without zooming past 2x


class FigureLayoutWarning(UserWarning):
    """A saved figure that will not read well: wider than ``MAX_PNG_WIDTH_PX`` or with a legend over its data."""


def figure_layout_problems(fig: Figure, dpi: int = PNG_DPI) -> list[str]:
    """What makes ``fig`` hard to read when saved at ``dpi``: a width over :data:`MAX_PNG_WIDTH_PX` (as saved, tight
    bounding box), or an axes-level legend whose box overlaps its axes' data area. Empty when the figure is fine."""
    problems = []
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    width_px = fig.get_tightbbox(renderer).width * dpi
    if width_px > MAX_PNG_WIDTH_PX:
        problems.append(f"{width_px:.0f} px wide at {dpi} dpi (at most {MAX_PNG_WIDTH_PX})")
    for ax in fig.axes:
        leg = ax.get_legend()
        if leg is not None and leg.get_visible() and leg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)):
            problems.append(f"the legend of panel {ax.get_title()!r} lies over its data")
    return problems


def save_figure(fig: Figure, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Save ``<name>.png`` (150 dpi) and ``<name>.pdf`` atomically, close the figure, return the paths. A figure that
    will not read well (:func:`figure_layout_problems`) is saved all the same, with a :class:`FigureLayoutWarning`."""
    for problem in figure_layout_problems(fig):
        warnings.warn(f"figure {name}: {problem}", FigureLayoutWarning, stacklevel=2)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    try:
        for ext, kwargs in (("png", {"dpi": PNG_DPI}), ("pdf", {})):
            path = out_dir / f"{name}.{ext}"
            fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            try:
                fig.savefig(tmp, format=ext, bbox_inches="tight", **kwargs)
                _publish(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            paths[ext] = path
    finally:
        plt.close(fig)
    return paths


# ---------------------------------------------------------------------------------------------
# Provenance
# ---------------------------------------------------------------------------------------------

_SECRET_WORDS = ("key", "token", "secret", "password")
_NOT_SECRETS = ("tokenizer", "max_tokens")  # hold a model id / a length, whatever their names contain
_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "sacrebleu", "rouge-score", "pydantic",
             "papermill", "numpy", "pandas", "matplotlib", "kdlib")


def _drop_secrets(obj):
    """Drop, recursively, every mapping entry whose key contains key/token/secret/password."""
    if hasattr(obj, "model_dump") and callable(obj.model_dump):  # pydantic models, without importing pydantic
        obj = obj.model_dump(mode="json")
    if isinstance(obj, Mapping):
        return {str(k): _drop_secrets(v) for k, v in obj.items()
                if str(k).lower() in _NOT_SECRETS or not any(w in str(k).lower() for w in _SECRET_WORDS)}
    if isinstance(obj, (list, tuple, set)):
        return [_drop_secrets(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args], capture_output=True,
                             text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def _package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def write_provenance(out_dir: str | Path, params: dict | None = None) -> Path:
    """Write ``<out_dir>/provenance.json``: git commit and dirty flag, Python, platform, package
    versions, date (UTC) and ``params`` with secret-looking keys (key/token/secret/password)
    dropped recursively; a notebook's params (``{"notebook": ...}``) also get the kit params they
    resolve to (``"kit"``: the models' hub ids, the task, the judge). Environment variables are never recorded."""
    root = Path(__file__).resolve().parents[2]  # the repo root for an editable install
    if not (root / ".git").exists():
        root = Path.cwd()
    head = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain") if head is not None else None
    notebook = (params or {}).get("notebook")
    if isinstance(notebook, Mapping) and notebook.get("params_files") and "kit" not in params:
        from kdlib.config import ParamsError, load_params

        try:  # the kit params the notebook's runs build on, resolved: models (hub ids), task, judge, every setting
            kit = load_params(*notebook["params_files"], **(notebook.get("overrides") or {}))
            params = {**params, "kit": kit.model_dump(mode="json")}
        except (ParamsError, OSError):
            pass
    record = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": {"commit": head.strip() if head else None,
                "dirty": bool(status.strip()) if status is not None else None},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": {name: _package_version(name) for name in _PACKAGES},
        "params": _drop_secrets(params) if params is not None else None,
    }
    return _atomic_write(Path(out_dir) / "provenance.json", json.dumps(record, indent=2, sort_keys=False) + "\n")
