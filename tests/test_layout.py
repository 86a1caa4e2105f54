"""The house rules of kdlib's layout: imports point down, no import circle, ``maths`` imports nothing of the kit,
no source file over 600 lines, and every notebook has its params files and its study module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KDLIB = ROOT / "kdlib"
MAX_LINES = 600

# What each package may import (besides itself). Floors: maths 1; modeling, data, config, judge 2; trainers 3;
# chains 4; studies and report 5; the command line 6.
ALLOWED = {
    "maths": set(),
    "modeling": {"maths"},
    "data": {"maths"},
    "config": {"maths"},
    "judge": {"maths"},
    "trainers": {"maths", "modeling", "data", "config"},
    "chains": {"maths", "modeling", "data", "config", "trainers"},
    "report": {"maths", "config"},
    "studies": {"maths", "modeling", "data", "config", "judge", "trainers", "chains", "report"},
    "__main__": {"maths", "modeling", "data", "config", "judge", "trainers", "chains", "report", "studies"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in KDLIB.rglob("*.py"):
        parts = f.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every kdlib module ``name`` imports (top-level and inside functions), resolved to module names."""
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("kdlib"):
                    deps.add(a.name)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdlib") and not node.level:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                deps.add(sub if sub in MODULES else node.module)
    return {d for d in deps if d in MODULES and d != name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _package(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "kdlib"


def test_the_module_index_sees_the_packages():
    # Guards the checks below against passing vacuously on an empty or misread tree.
    assert {"kdlib.maths.returns", "kdlib.chains.core", "kdlib.studies.main_results", "kdlib.report"} <= set(MODULES)
    assert "kdlib.maths.returns" in GRAPH["kdlib.maths.variance_bias"]


def test_no_import_circle():
    state: dict[str, int] = {}
    cycles = []

    def visit(v: str, path: list[str]) -> None:
        state[v] = 1
        for w in sorted(GRAPH[v]):
            if state.get(w) == 1:
                cycles.append(" -> ".join(path[path.index(w):] + [w]))
            elif w not in state:
                visit(w, path + [w])
        state[v] = 2

    for v in sorted(GRAPH):
        if v not in state:
            visit(v, [v])
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def test_imports_point_down():
    bad = []
    for name, deps in GRAPH.items():
        pkg = _package(name)
        if pkg == "kdlib":
            assert not deps, f"kdlib/__init__.py imports {deps}"
            continue
        for d in deps:
            target = _package(d)
            if target != pkg and target not in ALLOWED[pkg]:
                bad.append(f"{name} (floor of {pkg}) imports {d}")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(sorted(bad))


def test_maths_imports_nothing_of_the_kit_but_maths():
    for name, deps in GRAPH.items():
        if _package(name) == "maths":
            assert all(_package(d) == "maths" for d in deps), f"{name} imports {deps}"


def test_no_source_file_over_the_size_limit():
    long = {str(p.relative_to(ROOT)): n for p in KDLIB.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_no_issue_numbers_in_code_comments():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in KDLIB.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if "issue " in line.lower() and "#" in line
            and any(ch.isdigit() for ch in line.lower().split("issue ", 1)[1][:3])]
    assert not hits, hits


@pytest.mark.parametrize("nb", sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
def test_each_notebook_has_its_params_and_its_study(nb):
    name = nb.split("_", 1)[1]
    assert (KDLIB / "studies" / f"{name}.py").is_file(), f"kdlib/studies/{name}.py is missing for {nb}"
    for profile in ("smoke", "embedded", "paper"):
        assert (ROOT / "params" / profile / f"{name}.yaml").is_file(), f"params/{profile}/{name}.yaml is missing"
    study = ast.parse((KDLIB / "studies" / f"{name}.py").read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "plan" for n in study.body), f"{name} has no plan()"
