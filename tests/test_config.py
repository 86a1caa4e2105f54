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
def test_every_shipped_params_file_validates(path, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    if Path(path).parent.name == "rehearsal":  # layers over params/paper/, as run_all.sh --rehearse writes them
        if Path(path).name == "kit.yaml":
            load_params("params/paper/kit.yaml", path)
        else:
            import importlib.util

            spec = importlib.util.spec_from_file_location("rehearsal", ROOT / "scripts" / "rehearsal.py")
            rehearsal = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(rehearsal)
            nb = next(p.stem for p in (ROOT / "notebooks").glob(f"[0-9][0-9]_{Path(path).stem}.ipynb"))
            load_any(rehearsal.params_file(nb, tmp_path / "mirror", tmp_path / "out"))
    elif Path(path).parent.name == "paper" and Path(path).name != "kit.yaml" and "notebook" not in yaml.safe_load(Path(path).read_text()):
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
    # off-policy sampling for an RL method (kit.yaml's method is ketchup)
    ({"rl": {"temperature": 0.7}}, "rl.temperature", "off-policy"),
    ({"rl": {"top_k": 5}}, "rl.top_k", "off-policy"),
    ({"method": "llmr", "rl": {"top_k": 1}}, "rl.top_k", "rl.allow_off_policy"),
    ({"rl": {"allow_off_policy": "yes"}}, "rl.allow_off_policy", "valid boolean"),
    ({"rl": {"tail": "eq7"}}, "rl.tail", "'algorithm1', 'block' or 'clamp'"),
    ({"rl": {"compat": "authors"}}, "rl.compat", "'paper' or 'authors_code'"),
    ({"divergence": {"estimator": "coin"}}, "divergence.estimator", "'wen' or 'mixed_prefix'"),
    ({"divergence": {"dropout": 1.0}}, "divergence.dropout", "[0, 1)"),
    ({"divergence": {"dropout": -0.1}}, "divergence.dropout", "[0, 1)"),
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
    assert p.rl.k == 8 and p.rl.lr == 3e-4  # untouched keys survive the layer
    assert p.task.max_target_len == 160  # per-task default length (mini-gsm8k at ambiguity > 0)
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


def test_off_policy_sampling_needs_the_flag_and_only_for_rl_methods(tmp_path):
    base = ROOT / "params/embedded/kit.yaml"
    p = load_params(base, **{"rl.temperature": 0.7, "rl.top_k": 5, "rl.allow_off_policy": True})
    assert (p.rl.temperature, p.rl.top_k, p.rl.allow_off_policy) == (0.7, 5, True)
    assert load_params(base, **{"rl.top_k": 5, "method": "tvd"}).rl.top_k == 5  # not an RL method
    assert load_params().rl.allow_off_policy is False
    # the blamed field's own file is named, not the last file layered
    hot = _write(tmp_path, {"rl": {"temperature": 2.0}}, "hot.yaml")
    later = _write(tmp_path, {"rl": {"k": 3}}, "later.yaml")
    with pytest.raises(ParamsError, match=r"hot\.yaml: field 'rl\.temperature'"):
        load_params(base, hot, later)


def test_new_rl_and_divergence_fields(tmp_path):
    base = ROOT / "params/embedded/kit.yaml"
    p = load_params(base, **{"rl.tail": "clamp", "rl.compat": "authors_code"})
    assert (p.rl.tail, p.rl.compat) == ("clamp", "authors_code")
    p = load_params(base)
    assert (p.rl.compat, p.rl.tail, p.divergence.estimator, p.divergence.dropout) == ("paper", "algorithm1", "wen", None)
    # divergence.dropout overrides models.dropout for divergence-KD methods only
    p = load_params(base, **{"divergence.dropout": 0.25, "models.dropout": 0.1, "method": "js"})
    assert p.method_dropout() == 0.25
    assert load_params(base, **{"divergence.dropout": 0.25, "models.dropout": 0.1}).method_dropout() == 0.1  # ketchup
    assert load_params(base, **{"models.dropout": 0.1, "method": "seqkd"}).method_dropout() == 0.1  # unset


def test_cli_exit_code_2_for_the_new_checks(tmp_path):
    bad = _write(tmp_path, {"rl": {"top_k": 4}})
    r = subprocess.run([sys.executable, "-m", "kdlib", "validate", "-f", "params/embedded/kit.yaml", "-f", str(bad)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "'rl.top_k'" in r.stderr and str(bad) in r.stderr and "off-policy" in r.stderr
    r = subprocess.run([sys.executable, "-m", "kdlib", "validate", "-f", "params/embedded/kit.yaml", "--set",
                        "rl.temperature=0.5"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "override rl.temperature: field 'rl.temperature'" in r.stderr
    bad = _write(tmp_path, {"divergence": {"estimator": "coin"}}, "bad2.yaml")
    r = subprocess.run([sys.executable, "-m", "kdlib", "validate", "-f", "params/embedded/kit.yaml", "-f", str(bad)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "'divergence.estimator'" in r.stderr and str(bad) in r.stderr
    r = subprocess.run([sys.executable, "-m", "kdlib", "validate", "-f", "params/paper/kit.yaml", "-f",
                        "params/paper/brim.yaml"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# seed 001 Tables 5-6 as updates per task: epochs * ceil(ceil(n_train / batch) / grad_accum)
BRIM_STEPS = {"xsum": (202_926, 2379, 794), "europarl": (1_167_808, 13686, 4562), "gsm8k": (6_705, 81, 28)}


@pytest.mark.parametrize("task", sorted(BRIM_STEPS))
def test_brim_layer_has_seed001_tables_5_and_6(task, monkeypatch):
    import math

    monkeypatch.chdir(ROOT)
    n_train, rl_steps, div_steps = BRIM_STEPS[task]
    assert rl_steps == 3 * math.ceil(math.ceil(n_train / 8) / 32)
    assert div_steps == 2 * math.ceil(math.ceil(n_train / 32) / 16)
    p = load_params("params/paper/kit.yaml", "params/paper/brim.yaml", **{"task.name": task})
    assert (p.rl.lr, p.rl.warmup_steps, p.rl.batch_size, p.rl.grad_accum, p.rl.steps) == (1e-5, 5000, 8, 32, rl_steps)
    assert (p.divergence.lr, p.divergence.warmup_steps, p.divergence.batch_size, p.divergence.grad_accum,
            p.divergence.steps) == (5e-5, 5000, 32, 16, div_steps)
    assert p.models.dropout == 0.0 and p.divergence.dropout == 0.25
    assert p.method_dropout() == 0.0 and p.model_copy(update={"method": "tvd"}).method_dropout() == 0.25
    # layered after seed 000's GSM8K file, Table 5's grad_accum 32 still holds
    p = load_params("params/paper/kit.yaml", "params/paper/gsm8k.yaml", "params/paper/brim.yaml", **{"task.name": task})
    assert (p.rl.grad_accum, p.rl.steps) == (32, rl_steps)


def test_paper_main_results_uses_seed001_seeds(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert load_any("params/paper/main_results.yaml").seeds == [19083, 34007, 84122, 310, 55080]


def test_k_auto_and_its_grid_are_validated():
    p = load_params(ROOT / "params/embedded/kit.yaml", **{"method": "ketchup", "rl.k": "auto"})
    assert p.rl.k == "auto" and p.k_effective() == "auto" and 1 in p.rl.auto_k_grid
    with pytest.raises(ParamsError, match="rl.k"):
        load_params(ROOT / "params/embedded/kit.yaml", **{"rl.k": "banana"})
    with pytest.raises(ParamsError, match="auto_k_grid"):
        load_params(ROOT / "params/embedded/kit.yaml", **{"rl.auto_k_grid": [2, 4]})


def test_a_params_file_that_is_not_text_exits_2_naming_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\x00\xff")
    r = subprocess.run([sys.executable, "-m", "kdlib", "validate", "-f", str(bad)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and str(bad) in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(ParamsError, match="not a text file"):
        load_params(str(bad))


def test_notebook_params_read_the_file_and_take_only_the_values_set(tmp_path, monkeypatch):
    from kdlib.config import notebook_params

    nb = notebook_params("02_returns", "params/smoke/returns.yaml", seeds=None, k_values=[3], output_dir=None)
    assert nb.k_values == [3] and nb.seeds == [0] and nb.profile == "smoke"  # seeds from the file, K from the cell
    assert nb.output_dir == "outputs/scratch/smoke"  # never run_all's outputs/smoke unless told
    monkeypatch.delenv("KDLIB_PROFILE", raising=False)
    assert notebook_params("02_returns").profile == "embedded"  # what run_all.sh reads by default
    monkeypatch.setenv("KDLIB_PROFILE", "smoke")
    assert notebook_params("02_returns", output_dir="x").output_dir == "x"
    with pytest.raises(ParamsError, match="this file is for '01_main_results'"):
        notebook_params("02_returns", "params/smoke/main_results.yaml")


def test_project_root_is_found_from_the_notebooks_folder(tmp_path, monkeypatch):
    from kdlib.config import project_root, use_project_root

    monkeypatch.chdir(ROOT / "notebooks")
    assert use_project_root() == ROOT and Path.cwd() == ROOT
    assert use_project_root() == ROOT  # idempotent
    assert project_root(ROOT / "kdlib" / "maths") == ROOT


def test_power_seeds_add_seeds_to_the_named_rows_only():
    from kdlib.config import MainResultsParams, ParamsError
    from kdlib.studies.common import method_plan

    nb = MainResultsParams(seeds=[1, 2], power_seeds=[3, 4, 5], methods=["kl", "llmr", "opd"], k_values=[2, 4])
    seeds = {label: nb.seeds_of(label) for label, _ in method_plan(nb)}
    assert seeds == {"kl": [1, 2], "llmr": [1, 2, 3, 4, 5], "opd": [1, 2], "ketchup_k2": [1, 2, 3, 4, 5],
                     "ketchup_k4": [1, 2, 3, 4, 5]}
    for bad in ({"power_seeds": [2, 3]}, {"power_seeds": [3, 3]}, {"power_rows": ["tvd"]}):
        with pytest.raises((ValueError, ParamsError)):
            MainResultsParams(seeds=[1, 2], methods=["kl", "llmr"], **bad)
