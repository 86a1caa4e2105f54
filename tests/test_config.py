"""Params: every shipped file validates; each bad case is rejected naming file and field, exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdlib.config import ParamsError, load_any, load_params, parse_override

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "params").glob("*/*.yaml"))


@pytest.mark.parametrize("path", SHIPPED)
def test_every_shipped_params_file_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    if Path(path).parent.name == "paper" and Path(path).name != "kit.yaml" and "notebook" not in yaml.safe_load(Path(path).read_text()):
        load_params("params/paper/kit.yaml", path)  # paper overlays are layered on the paper kit
    else:
        load_any(path)


def _write(tmp_path, data, name="bad.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


BAD = [
    ({"rl": {"k": 0}}, "rl.k", "K must be an integer >= 1"),
    ({"rl": {"k": 2.5}}, "rl.k", "integer"),
    ({"rl": {"k": "two"}}, "rl.k", "integer"),
    ({"method": "ppo"}, "method", "unknown method"),
    ({"task": {"name": "cnn-dm"}}, "task.name", "unknown task"),
    ({"task": {"max_target_len": -3}}, "task.max_target_len", "> 0"),
    ({"task": {"max_source_len": 0}}, "task.max_source_len", "> 0"),
    ({"rl": {"lr": -1e-5}}, "rl.lr", "> 0"),
    ({"predistill": {"lr": 0}}, "predistill.lr", "> 0"),
    ({"task": {"name": "xsum", "path": "./no/such/dir"}}, "task.path", "does not exist"),
    ({"rl": {"kk": 2}}, "rl.kk", "unknown key"),
    ({"teacherr": {"lr": 1e-3}}, "teacherr", "unknown key"),
]


@pytest.mark.parametrize("data,field,msg", BAD)
def test_bad_input_names_file_and_field(tmp_path, data, field, msg):
    bad = _write(tmp_path, data)
    with pytest.raises(ParamsError) as e:
        load_params(ROOT / "params/embedded/kit.yaml", bad)
    text = str(e.value)
    assert str(bad) in text and f"'{field}'" in text and msg in text


def test_layering_later_wins_and_overrides(tmp_path):
    over = _write(tmp_path, {"rl": {"k": 8}, "task": {"name": "mini-gsm8k"}})
    p = load_params(ROOT / "params/embedded/kit.yaml", over)
    assert p.rl.k == 8 and p.rl.lr == 1e-4  # untouched keys survive the layer
    assert p.task.max_target_len == 128  # per-task default length
    p = load_params(ROOT / "params/embedded/kit.yaml", over, **{"rl.k": 3})
    assert p.rl.k == 3
    assert parse_override("rl.k=4") == ("rl.k", 4)
    assert parse_override("models.student=tiny-t5:large") == ("models.student", "tiny-t5:large")
    assert p.k_effective() == 3 and load_params(method="llmr").k_effective() == 1


def test_override_error_names_the_override():
    with pytest.raises(ParamsError, match=r"override rl.k: field 'rl.k'"):
        load_params(ROOT / "params/embedded/kit.yaml", **{"rl.k": 0})


def test_notebook_params_checked_with_kit_params(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    nb = _write(tmp_path, {"notebook": "01_main_results", "k_values": [2, 0]})
    with pytest.raises(ParamsError, match="k_values"):
        load_any(nb)
    nb = _write(tmp_path, {"notebook": "01_main_results", "overrides": {"rl.k": -1}}, "nb2.yaml")
    with pytest.raises(ParamsError, match="rl.k"):
        load_any(nb)


def test_cli_validate_exit_codes(tmp_path):
    bad = _write(tmp_path, {"rl": {"k": 0}})
    r = subprocess.run([sys.executable, "-m", "kdlib", "validate", "-f", "params/embedded/kit.yaml", "-f", str(bad)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "rl.k" in r.stderr and str(bad) in r.stderr
    r = subprocess.run([sys.executable, "-m", "kdlib", "validate", "-f", "params/embedded/kit.yaml", "--set", "rl.k=4"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "k: 4" in r.stdout
    r = subprocess.run([sys.executable, "-m", "kdlib", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert all(v in r.stdout for v in ("validate", "train", "judge", "status"))


def test_task_overrides_apply_to_their_task_only(tmp_path):
    f = _write(tmp_path, {"task_overrides": {"mini-gsm8k": {"teacher.steps": 1234, "rl.grad_accum": 4}}})
    base = ROOT / "params/embedded/kit.yaml"
    assert load_params(base, f).teacher.steps != 1234  # task is mini-xsum
    p = load_params(base, f, **{"task.name": "mini-gsm8k"})
    assert p.teacher.steps == 1234 and p.rl.grad_accum == 4
    assert load_params(base, f, **{"task.name": "mini-gsm8k", "teacher.steps": 7}).teacher.steps == 7  # explicit wins
    bad = _write(tmp_path, {"task_overrides": {"mini-gsm8k": {"teacher.stepz": 1}}}, "bad2.yaml")
    with pytest.raises(ParamsError, match=r"task_overrides.mini-gsm8k.*'teacher.stepz'"):
        load_params(base, bad, **{"task.name": "mini-gsm8k"})
    with pytest.raises(ParamsError, match="unknown task"):
        load_params(base, _write(tmp_path, {"task_overrides": {"gsm9k": {}}}, "bad3.yaml"))
