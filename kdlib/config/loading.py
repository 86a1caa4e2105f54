"""Reading, layering and validating params files; every error names the file and the dotted field.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdlib.config.base import ParamsError, TaskParams, _FieldError
from kdlib.config.kit import Params
from kdlib.config.notebooks import NOTEBOOK_PARAMS, NotebookParams


# ----------------------------------------------------------------------------- loading
def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"{p}: params file not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(f"{p}: not a text file (not UTF-8 at byte {e.start}); a params file is YAML text") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{p}: the top level must be a mapping of keys to values")
    return data


def _set_dotted(data: dict, key: str, value: Any, source: str, sources: dict) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    sources[key] = source


def _merge(base: dict, new: dict, source: str, sources: dict, prefix: str = "") -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, sources, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)
            sources[dotted] = source
            if isinstance(value, dict):
                for sub in _leaves(value, dotted + "."):
                    sources[sub] = source


def _leaves(d: dict, prefix: str):
    for k, v in d.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")


def _source_of(field: str, sources: dict, default: str) -> str:
    parts = field.split(".")
    for i in range(len(parts), 0, -1):
        src = sources.get(".".join(parts[:i]))
        if src:
            return src
    return default


def _validate(model: type[BaseModel], data: dict, sources: dict, default_source: str):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"])
            msg = err["msg"]
            blamed = (err.get("ctx") or {}).get("error")
            if isinstance(blamed, _FieldError):  # a cross-section check names its own field
                field = ".".join(x for x in (field, blamed.field) if x)
                msg = str(blamed)
            src = _source_of(field, sources, default_source)
            if err["type"] == "extra_forbidden":
                msg = "unknown key (a typo?); allowed keys are the fields of this section"
            lines.append(f"{src}: field '{field}': {msg}")
        raise ParamsError("\n".join(lines)) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"rl.k=4"`` -> ``("rl.k", 4)``; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ParamsError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_params(*paths: str | Path, **overrides: Any) -> Params:
    """Layer YAML files (later wins), apply dotted overrides (``rl__k=4`` or ``**{"rl.k": 4}``),
    validate. Raises :class:`ParamsError` naming the file and the field."""
    data: dict = {}
    sources: dict = {}
    for path in paths:
        raw = _read_yaml(path)
        if "notebook" in raw:
            raise ParamsError(f"{path}: this is a notebook params file (notebook: {raw['notebook']}); "
                              "use load_notebook_params or name the kit params it points to")
        _merge(data, raw, str(path), sources)
    overrides = {k.replace("__", "."): v for k, v in overrides.items()}
    task = overrides.get("task.name", (data.get("task") or {}).get("name", TaskParams().name))
    per_task = data.get("task_overrides") or {}
    if isinstance(per_task, dict) and isinstance(per_task.get(task), dict):
        origin = _source_of("task_overrides", sources, "<task_overrides>")
        for key, value in per_task[task].items():
            if key.split(".")[0] in ("task_overrides", "task"):
                raise ParamsError(f"{origin}: field 'task_overrides.{task}.{key}': a per-task override cannot "
                                  "change the task or other per-task overrides")
            _set_dotted(data, key, value, f"{origin} (task_overrides.{task})", sources)
    for key, value in overrides.items():
        _set_dotted(data, key, value, f"override {key}", sources)
    default = str(paths[-1]) if paths else "<defaults>"
    return _validate(Params, data, sources, default)


def load_notebook_params(path: str | Path, **overrides: Any) -> NotebookParams:
    """Validate a notebook params file, and the kit params files and overrides it names."""
    raw = _read_yaml(path)
    raw.update(overrides)
    return _notebook_params(raw, str(path), Path(path).parent)


def notebook_params(notebook: str, params_file: str | Path | None = None, **values: Any) -> NotebookParams:
    """A notebook's validated params: the values of ``params_file``, overridden by every value of the notebook's
    parameters cell that is not None (what the user set there, or what papermill injected).

    ``params_file`` None is ``params/<profile>/<name>.yaml`` for notebook ``NN_<name>``, the profile being
    ``$KDLIB_PROFILE`` or ``embedded``: the file ``./run_all.sh`` passes, so an interactive run reads what the
    regenerated one reads. ``output_dir`` None is ``outputs/scratch/<profile>``: an interactive run never writes over
    ``./run_all.sh``'s ``outputs/<profile>/`` unless told to. The file must be this notebook's."""
    if params_file is None:
        profile = os.environ.get("KDLIB_PROFILE") or "embedded"
        params_file = f"params/{profile}/{notebook.split('_', 1)[-1]}.yaml"
    raw = _read_yaml(params_file)
    if raw.get("notebook") != notebook:
        raise ParamsError(f"{params_file}: field 'notebook': this file is for {raw.get('notebook')!r}, not {notebook!r}")
    raw.update({k: v for k, v in values.items() if v is not None})
    if values.get("output_dir") is None:
        raw["output_dir"] = str(Path("outputs") / "scratch" / str(raw.get("profile", "embedded")))
    return _notebook_params(raw, str(params_file), Path(params_file).parent)


def validate_notebook(**values: Any) -> NotebookParams:
    """Validate the values of a notebook's ``parameters`` cell (what papermill injected)."""
    return _notebook_params(values, f"notebook {values.get('notebook')} parameters", Path("params"))


def _notebook_params(raw: dict, path: str, base: Path) -> NotebookParams:
    name = raw.get("notebook")
    if name not in NOTEBOOK_PARAMS:
        raise ParamsError(f"{path}: field 'notebook': expected one of {', '.join(NOTEBOOK_PARAMS)}, got {name!r}")
    nb = _validate(NOTEBOOK_PARAMS[name], raw, {}, str(path))
    files = [_resolve_params_path(f, base) for f in nb.params_files]
    for f in files:
        if not Path(f).is_file():
            raise ParamsError(f"{path}: field 'params_files': {f} not found")
    try:
        load_params(*files, **nb.overrides)
    except ParamsError as e:
        raise ParamsError(f"{path} (through params_files/overrides):\n{e}") from None
    for field, extra in getattr(nb, "kit_override_sets", lambda: [])():  # per-variant kit overrides
        try:
            load_params(*files, **{**nb.overrides, **extra})
        except ParamsError as e:
            raise ParamsError(f"{path}: field '{field}':\n{e}") from None
    return nb


def _resolve_params_path(f: str, base: Path) -> str:
    """Paths in a notebook params file are relative to the repo root (the working directory);
    fall back to the params file's folder."""
    if Path(f).is_file() or Path(f).is_absolute():
        return f
    alt = base / Path(f).name
    return str(alt) if alt.is_file() else f


def kit_params_for(nb: NotebookParams, **overrides: Any) -> Params:
    """The kit params a notebook builds on, with its ``set`` and the given overrides applied."""
    return load_params(*nb.params_files, **{**nb.overrides, **overrides})


def load_any(path: str | Path, *more: str | Path, **overrides: Any):
    """Validate whatever the files are: notebook params (one file) or layered kit params."""
    raw = _read_yaml(path)
    if "notebook" in raw:
        if more:
            raise ParamsError(f"{path}: a notebook params file is validated on its own")
        return load_notebook_params(path, **overrides)
    return load_params(path, *more, **overrides)


def params_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of JSON-able data (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
