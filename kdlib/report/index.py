"""The index page (index.html, index.md) listing every output of a profile, grouped by notebook; ``python -m kdlib.report index OUT_DIR``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import re
import sys
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from kdlib.report.io import _atomic_write

# ---------------------------------------------------------------------------------------------
# Index page
# ---------------------------------------------------------------------------------------------

_GROUP_RE = re.compile(r"^(\d\d)_")
_TABLE_EXT = (".csv", ".md", ".tex")
_FIGURE_EXT = (".png", ".pdf", ".svg")
_MAX_ROWS = 25  # a longer or wider table is linked, not inlined (the page stays readable at 1,100 px)
_MAX_COLS = 10
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
a { color: #0b61a4; text-decoration: none; } a:hover { text-decoration: underline; }
table.data { border-collapse: collapse; font-size: .85em; margin: .5em 0 1em; }
table.data th, table.data td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
table.data th { background: #f6f6f6; } table.data td:first-child { text-align: left; }
.wide { overflow-x: auto; }
figure { margin: .5em 0 1.5em; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .caption, .muted { color: #555; font-size: .9em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .8em; }
.headlines { background: #f4f8fc; border: 1px solid #cfe0f0; padding: .3em 1em .6em; margin: 1em 0; }
.headlines h2 { margin-top: .4em; border: none; }
ul.files { padding-left: 1.2em; } code { font-size: .9em; }
"""


def _group_of(rel: Path) -> str | None:
    for part in rel.parts:
        m = _GROUP_RE.match(part)
        if m:
            return m.group(1)
    return None


def _listed(out_dir: Path) -> list[Path]:
    files = []
    for p in sorted(out_dir.rglob("*")):
        rel = p.relative_to(out_dir)
        if not p.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if rel.as_posix() in ("index.html", "index.md") or p.name.endswith(".tmp"):
            continue
        files.append(rel)
    return files


def _href(rel: Path) -> str:
    return quote(rel.as_posix())


def _md_caption(path: Path) -> str | None:
    try:
        first = path.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return first[4:].strip() if first.startswith("### ") else None


def _sections(out_dir: Path) -> list[tuple[str, str, dict[str, list[Path]], dict[str, int]]]:
    """[(group id, title, {kind: [relative paths]}, {folder: number of files})] in display order."""
    groups: dict[str | None, list[Path]] = {}
    for rel in _listed(out_dir):
        groups.setdefault(_group_of(rel), []).append(rel)
    out = []
    for gid in sorted((g for g in groups if g is not None)) + ([None] if None in groups else []):
        files, folders = _folded(groups[gid])
        if gid is None:
            title = "Run information and other files"
        else:
            nbs = [f for f in files if f.suffix == ".ipynb" and _GROUP_RE.match(f.name)]
            title = nbs[0].stem if nbs else f"Notebook {gid}"
        kinds: dict[str, list[Path]] = {"notebooks": [], "tables": [], "figures": [], "provenance": [],
                                        "logs": [], "other": []}
        kinds["data"] = []
        # A table written for reading (write_table: .md with rounded cells) is shown; a bare CSV or
        # JSON (long-format results at full precision) is raw data, one link away.
        table_stems = {f.with_suffix("") for f in files if f.suffix == ".md"}
        figure_stems = {f.with_suffix("") for f in files if f.suffix in _FIGURE_EXT}
        for f in files:
            stem = f.with_suffix("")
            if f.suffix == ".ipynb" or (f.suffix == ".html" and f.with_suffix(".ipynb") in files):
                kinds["notebooks"].append(f)
            elif stem in table_stems and f.suffix in _TABLE_EXT + (".html",):
                kinds["tables"].append(f)
            elif f.suffix in (".csv", ".json") and "provenance" not in f.name:
                kinds["data"].append(f)
            elif stem in figure_stems and f.suffix in _FIGURE_EXT:
                kinds["figures"].append(f)
            elif "provenance" in f.name and f.suffix == ".json":
                kinds["provenance"].append(f)
            elif f.suffix == ".log":
                kinds["logs"].append(f)
            else:
                kinds["other"].append(f)
        out.append((gid or "", title, kinds, folders))
    return out


def _folded(paths: list[Path]) -> tuple[list[Path], dict[str, int]]:
    """Files at the top of the section, and {folder: number of files} for everything inside a folder (a judge
    cache holds thousands of answers: the page counts them rather than listing them)."""
    top, folders = [], {}
    for p in paths:
        if len(p.parts) > 1 and not _GROUP_RE.match(p.parts[0]):
            folders[p.parts[0]] = folders.get(p.parts[0], 0) + 1
        else:
            top.append(p)
    return top, folders


def _stems(paths: list[Path]) -> list[Path]:
    return list(dict.fromkeys(p.with_suffix("") for p in paths))


def _links(stem: Path, paths: list[Path], exts: tuple[str, ...]) -> list[tuple[str, Path]]:
    return [(ext.lstrip(".").upper(), stem.with_suffix(ext)) for ext in exts if stem.with_suffix(ext) in paths]


def _read_text(path: Path, limit: int = 200_000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[:limit]
    except OSError:
        return ""


def _html_table(out_dir: Path, stem: Path, paths: list[Path]) -> str:
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    if csv in paths:
        try:
            df = pd.read_csv(out_dir / csv, keep_default_na=False, dtype=str)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
            return f'<p class="muted">(could not read {html.escape(csv.as_posix())}: {html.escape(str(e))})</p>'
        if len(df) > _MAX_ROWS or len(df.columns) > _MAX_COLS:
            return (f'<p class="muted">{len(df)} rows x {len(df.columns)} columns: too large to show here; open it '
                    "with the links above.</p>")
        return '<div class="wide">' + df.to_html(index=False, classes="data", border=0, escape=True) + "</div>"
    if md in paths:
        return f"<pre>{html.escape(_read_text(out_dir / md))}</pre>"
    return ""


def headlines(out_dir: Path) -> list[tuple[str, str]]:
    """(notebook, line) pairs: the one-line verdicts each notebook recorded under ``"headlines"``
    in its ``NN_name.json`` record."""
    lines = []
    for rec in sorted(out_dir.glob("[0-9][0-9]_*.json")):
        try:
            data = json.loads(rec.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for line in data.get("headlines", []) if isinstance(data, dict) else []:
            lines.append((rec.stem, str(line)))
    return lines


def _index_html(out_dir: Path, sections) -> str:
    title = f"KETCHUP kit outputs: {out_dir.resolve().name}"
    generated = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="muted">Generated {html.escape(generated)} by <code>python -m kdlib.report index</code>. '
             "Every link is relative to this folder. Each section shows a notebook's figures and tables; "
             "the full-precision data behind them is one link away.</p>"]
    heads = headlines(out_dir)
    if heads:
        parts.append('<div class="headlines"><h2>What the runs say</h2><ul>')
        parts += [f"<li><span class='muted'>{html.escape(nb)}</span>: {html.escape(line)}</li>" for nb, line in heads]
        parts.append("</ul></div>")
    if sections:
        parts.append("<p>Contents: " + " · ".join(
            f'<a href="#{html.escape(gid or "other")}">{html.escape(t)}</a>' for gid, t, _, _ in sections) + "</p>")
    else:
        parts.append("<p>No outputs yet.</p>")
    for gid, title_, kinds, folders in sections:
        parts.append(f'<h2 id="{html.escape(gid or "other")}">{html.escape(title_)}</h2>')
        files = [f for fs in kinds.values() for f in fs]
        if kinds["figures"]:
            for stem in _stems(kinds["figures"]):
                links = " · ".join(f'<a href="{_href(p)}">{label}</a>' for label, p in _links(stem, files, _FIGURE_EXT))
                img = stem.with_suffix(".png") if stem.with_suffix(".png") in files else (
                    stem.with_suffix(".svg") if stem.with_suffix(".svg") in files else None)
                body = (f'<a href="{_href(img)}"><img src="{_href(img)}" alt="{html.escape(stem.name)}" '
                        f'loading="lazy"></a>') if img else ""
                parts.append(f"<figure>{body}<figcaption><code>{html.escape(stem.as_posix())}</code> ({links})"
                             "</figcaption></figure>")
        if kinds["tables"]:
            for stem in _stems(kinds["tables"]):
                caption = _md_caption(out_dir / stem.with_suffix(".md")) if stem.with_suffix(".md") in files else None
                links = " · ".join(f'<a href="{_href(p)}">{label}</a>'
                                   for label, p in _links(stem, files, _TABLE_EXT + (".html",)))
                parts.append(f"<h4><code>{html.escape(stem.as_posix())}</code> <span class='muted'>({links})</span></h4>")
                if caption:
                    parts.append(f'<p class="caption">{html.escape(caption)}</p>')
                parts.append(_html_table(out_dir, stem, files))
        if kinds["notebooks"]:
            parts.append("<p>Executed notebook: " + " · ".join(
                f"<code>{html.escape(stem.as_posix())}</code> (" + " · ".join(
                    f'<a href="{_href(p)}">{label}</a>' for label, p in _links(stem, files, (".html", ".ipynb"))) + ")"
                for stem in _stems(kinds["notebooks"])) + "</p>")
        if kinds["data"]:
            parts.append("<p class='muted'>Raw data: " + " · ".join(
                f'<a href="{_href(p)}">{html.escape(p.as_posix())}</a>' for p in kinds["data"]) + "</p>")
        for kind, heading in (("provenance", "Provenance"), ("logs", "Run log")):
            for p in kinds[kind]:
                text = _read_text(out_dir / p, 200_000)
                tail = "\n".join(text.splitlines()[-40:])
                parts.append(f'<details><summary>{heading}: <a href="{_href(p)}">{html.escape(p.as_posix())}</a> '
                             f"({len(text.splitlines())} lines; the last 40 below)</summary>"
                             f"<pre>{html.escape(tail)}</pre></details>")
        top = kinds["other"]
        if top or folders:
            items = [f'<li><a href="{_href(p)}">{html.escape(p.as_posix())}</a></li>' for p in top]
            items += [f'<li><a href="{quote(d)}/">{html.escape(d)}/</a>: {n:,} files</li>' for d, n in sorted(folders.items())]
            parts.append(f"<details><summary>Other files: {len(top)} here, {sum(folders.values()):,} in "
                         f"{len(folders)} folder(s)</summary><ul class='files'>" + "".join(items) + "</ul></details>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _md_link(text: str, rel: Path) -> str:
    return f"[{text}](<{rel.as_posix()}>)"


def _index_md(out_dir: Path, sections) -> str:
    lines = [f"# KETCHUP kit outputs: {out_dir.resolve().name}", ""]
    heads = headlines(out_dir)
    if heads:
        lines += ["## What the runs say", ""] + [f"- {nb}: {line}" for nb, line in heads] + [""]
    if not sections:
        lines.append("No outputs yet.")
    for _, title_, kinds, folders in sections:
        lines += [f"## {title_}", ""]
        files = [f for fs in kinds.values() for f in fs]
        for stem in _stems(kinds["notebooks"]):
            links = ", ".join(_md_link(label, p) for label, p in _links(stem, files, (".html", ".ipynb")))
            lines.append(f"- notebook `{stem.as_posix()}`: {links}")
        if kinds["notebooks"]:
            lines.append("")
        for stem in _stems(kinds["tables"]):
            links = ", ".join(_md_link(label, p) for label, p in _links(stem, files, _TABLE_EXT + (".html",)))
            lines += [f"**Table `{stem.as_posix()}`** ({links})", ""]
            md = stem.with_suffix(".md")
            if md in files:
                text = _read_text(out_dir / md)
                if _md_caption(out_dir / md):  # the table's own "### caption" line becomes a quote
                    text = "> " + text[4:]
                lines += [text, ""]
        for stem in _stems(kinds["figures"]):
            links = ", ".join(_md_link(label, p) for label, p in _links(stem, files, _FIGURE_EXT))
            png = stem.with_suffix(".png")
            if png in files:
                lines.append(f"![{stem.name}](<{png.as_posix()}>)")
            lines += [f"Figure `{stem.as_posix()}` ({links})", ""]
        for p in kinds["provenance"] + kinds["logs"] + kinds["other"] + kinds.get("data", []):
            lines.append(f"- {_md_link(p.as_posix(), p)}")
        lines += [f"- {_md_link(d + '/', Path(d))}: {n:,} files" for d, n in sorted(folders.items())]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_index(out_dir: str | Path) -> Path:
    """Write ``index.html`` and ``index.md`` listing everything under ``out_dir``, grouped by
    notebook prefix (``01_``, ``02_``, ...; a file belongs to the group of the first path part
    that starts with ``NN_``): notebooks and their HTML copies, tables (CSV rendered inline),
    figures (PNG inline, PDF linked), provenance and run logs. Returns the path of index.html."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sections = _sections(out_dir)
    _atomic_write(out_dir / "index.md", _index_md(out_dir, sections))
    return _atomic_write(out_dir / "index.html", _index_html(out_dir, sections))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kdlib.report", description="Reporting helpers of the KETCHUP kit")
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("index", help="write OUT_DIR/index.html and index.md listing every output")
    p.add_argument("out_dir", metavar="OUT_DIR")
    args = ap.parse_args(argv)
    if args.verb == "index":
        if not Path(args.out_dir).is_dir():
            print(f"error: {args.out_dir} is not a folder", file=sys.stderr)
            return 2
        print(write_index(args.out_dir))
    return 0

