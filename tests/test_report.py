"""kdlib.report: tables with hand-checked numbers, files written, figures, provenance, index page."""

import json
import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from kdlib import report as R
from kdlib.report import index as report_index

T_975_2 = 4.302652729911275  # t_{0.975, 2}: the 95% CI half-width over 3 seeds is t * s / sqrt(3)


# ---------------------------------------------------------------------------------------------- data
def _long(rows):
    return pd.DataFrame(rows, columns=["task", "method", "seed", "metric", "value"])


def _results(seeds=(0, 1, 2)):
    """mini-xsum + mini-europarl; the teacher beats every student (and must not be marked)."""
    rows = []
    per_seed = {  # method -> metric -> values over seeds 0, 1, 2
        "llmr": {"rougeL": [20.0, 21.0, 22.0], "rouge1": [30, 30, 30], "rouge2": [10, 10, 10],
                 "bleu": [10.0, 11.0, 12.0], "chrf": [40, 40, 40], "ter": [70.0, 71.0, 72.0]},
        "ketchup_k2": {"rougeL": [21.0, 23.0, 24.0], "rouge1": [31, 31, 31], "rouge2": [11, 11, 11],
                       "bleu": [10.5, 11.2, 12.9], "chrf": [41, 41, 41], "ter": [69.0, 70.0, 71.0]},
        "ketchup_k16": {"rougeL": [19.0, 22.0, 22.5], "rouge1": [29, 29, 29], "rouge2": [9, 9, 9],
                        "bleu": [9.0, 10.0, 14.0], "chrf": [39, 39, 39], "ter": [60.0, 61.0, 62.0]},
        "kl": {"rougeL": [18.0, 18.0, 18.0], "rouge1": [28, 28, 28], "rouge2": [8, 8, 8],
               "bleu": [8.0, 8.0, 8.0], "chrf": [38, 38, 38], "ter": [80.0, 80.0, 80.0]},
    }
    task_of = {"rougeL": "mini-xsum", "rouge1": "mini-xsum", "rouge2": "mini-xsum",
               "bleu": "mini-europarl", "chrf": "mini-europarl", "ter": "mini-europarl"}
    for method, metrics in per_seed.items():
        for metric, values in metrics.items():
            for seed in seeds:
                rows.append((task_of[metric], method, seed, metric, float(values[seed])))
    for metric, v in {"rougeL": 35.0, "rouge1": 45.0, "rouge2": 20.0, "bleu": 30.0, "chrf": 60.0, "ter": 50.0}.items():
        rows.append((task_of[metric], "teacher", 0, metric, v))
        rows.append((task_of[metric], "zeroshot", 0, metric, 1.0 if metric != "ter" else 1.0))
    return _long(rows)


# ---------------------------------------------------------------------------------------------- labels
def test_method_labels_and_order():
    assert R.method_label("llmr_minvar") == "LLMR + min-var baseline"
    assert R.method_label("ketchup_k16") == "KETCHUP (K=16)"
    assert R.method_label("zeroshot") == "Student (zero-shot)"
    assert R.method_label("mystery") == "mystery"
    assert R.sort_methods(["ketchup_k16", "mystery", "ketchup_k2", "llmr", "teacher", "ketchup_k4", "kl"]) == [
        "teacher", "kl", "llmr", "ketchup_k2", "ketchup_k4", "ketchup_k16", "mystery"]
    assert [R.task_kind(t) for t in ("mini-xsum", "europarl", "gsm8k", "other")] == [
        "summarization", "translation", "arithmetic", None]
    assert R.TASK_LABELS["mini-europarl"] == "mini-Europarl EN-NL"


# ---------------------------------------------------------------------------------------------- main table
def test_main_table_three_seeds_hand_checked():
    display, numeric = R.main_table(_results())
    assert list(display["Method"]) == ["Teacher", "Student (zero-shot)", "KL", "LLMR", "KETCHUP (K=2)",
                                       "KETCHUP (K=16)"]
    assert list(display.columns) == [
        "Method", "mini-XSum R-1", "mini-XSum R-2", "mini-XSum R-L", "mini-XSum vs LLMR",
        "mini-Europarl EN-NL BLEU", "mini-Europarl EN-NL chrF", "mini-Europarl EN-NL TER↓",
        "mini-Europarl EN-NL vs LLMR"]
    row = display.set_index("Method")
    # LLMR R-L over seeds [20, 21, 22]: mean 21, s = 1, half-width t_{0.975,2} / sqrt(3) = 2.484
    assert math.isclose(T_975_2 / math.sqrt(3), 2.4841, abs_tol=1e-4)
    assert row.loc["LLMR", "mini-XSum R-L"] == "21.00 ± 2.48"
    # KETCHUP K=2 R-L [21, 23, 24]: mean 22.667, s = sqrt(7/3) = 1.5275, hw = 4.3027 * 1.5275 / sqrt(3) = 3.79
    assert row.loc["KETCHUP (K=2)", "mini-XSum R-L"] == "22.67 ± 3.79 *"
    # constant values: zero-width interval; single-seed teacher: no ±
    assert row.loc["KL", "mini-XSum R-1"] == "28.00 ± 0.00"
    assert row.loc["Teacher", "mini-XSum R-L"] == "35.00"
    # best student, teacher excluded: the teacher has the highest R-1 / lowest TER but is not marked
    assert not row.loc["Teacher"].str.endswith(" *").any()
    assert row.loc["KETCHUP (K=2)", "mini-XSum R-1"].endswith(" *")
    # TER: lower is better -> K=16 (61) is best, not K=2 or the teacher (50)
    assert row.loc["KETCHUP (K=16)", "mini-Europarl EN-NL TER↓"] == "61.00 ± 2.48 *"
    assert not row.loc["KETCHUP (K=2)", "mini-Europarl EN-NL TER↓"].endswith(" *")
    # BLEU: K=16 mean 11.0 vs K=2 mean 11.533 -> K=2
    assert row.loc["KETCHUP (K=2)", "mini-Europarl EN-NL BLEU"].endswith(" *")
    # exactly one marked cell per metric column here (no ties)
    for col in [c for c in display.columns if c != "Method" and "vs LLMR" not in c]:
        assert display[col].str.endswith(" *").sum() == 1, col

    # p vs LLMR: paired t-test over seeds on the primary metric (R-L / BLEU) = scipy's ttest_rel
    ref = sps.ttest_rel([21.0, 23.0, 24.0], [20.0, 21.0, 22.0])
    p_num = numeric.query("task == 'mini-xsum' and method == 'ketchup_k2' and metric == 'rougeL'")["p_vs_llmr"].item()
    assert math.isclose(p_num, ref.pvalue, rel_tol=1e-12)
    # cell: mean paired difference (positive = KETCHUP better), p, and the significance marker
    marker = " ‡" if ref.pvalue < 0.035 else (" †" if ref.pvalue < 0.05 else "")
    # ...and Holm's adjustment over every KETCHUP row of the table (one family), by hand from the raw p-values
    tested = numeric.dropna(subset=["p_vs_llmr"]).drop_duplicates(["task", "method"])
    ps = sorted(tested["p_vs_llmr"])
    m = len(ps)
    holm_by_hand = {}
    running = 0.0
    for i, p in enumerate(ps):
        running = max(running, min(1.0, p * (m - i)))
        holm_by_hand[p] = running
    holm = holm_by_hand[ref.pvalue]
    assert row.loc["KETCHUP (K=2)", "mini-XSum vs LLMR"] == f"+1.67, p = {ref.pvalue:.3f}{marker} (Holm = {holm:.3f})"
    ref_bleu = sps.ttest_rel([9.0, 10.0, 14.0], [10.0, 11.0, 12.0])
    assert row.loc["KETCHUP (K=16)", "mini-Europarl EN-NL vs LLMR"] == (
        f"+0.00, p = {ref_bleu.pvalue:.3f} (Holm = {holm_by_hand[ref_bleu.pvalue]:.3f})")
    assert row.loc["LLMR", "mini-XSum vs LLMR"] == "" and row.loc["Teacher", "mini-XSum vs LLMR"] == ""

    # numeric: tidy, one row per (task, method, metric)
    assert not numeric.duplicated(["task", "method", "metric"]).any()
    llmr = numeric.query("task == 'mini-xsum' and method == 'llmr' and metric == 'rougeL'").iloc[0]
    assert llmr["mean"] == 21.0 and llmr["n_seeds"] == 3
    assert math.isclose(llmr["half_width"], T_975_2 / math.sqrt(3), rel_tol=1e-9)
    assert numeric.query("method == 'ketchup_k16' and metric == 'ter'")["best"].item()
    assert "95% CI" in display.attrs["caption"]


def test_main_table_one_seed():
    display, numeric = R.main_table(_results(seeds=(0,)))
    row = display.set_index("Method")
    assert row.loc["LLMR", "mini-XSum R-L"] == "20.00"  # no ± with one seed
    assert row.loc["KETCHUP (K=2)", "mini-XSum R-L"] == "21.00 *"
    assert row.loc["KETCHUP (K=2)", "mini-XSum vs LLMR"] == "n/a (1 seed)"
    assert row.loc["KETCHUP (K=16)", "mini-Europarl EN-NL vs LLMR"] == "n/a (1 seed)"
    assert numeric["n_seeds"].max() == 1 and numeric["p_vs_llmr"].isna().all()


def test_main_table_pairs_by_seed_and_rejects_duplicates():
    rows = [("mini-gsm8k", "llmr", s, "accuracy", v) for s, v in [(0, 10.0), (1, 12.0), (2, 11.0)]]
    rows += [("mini-gsm8k", "ketchup_k4", s, "accuracy", v) for s, v in [(2, 14.0), (0, 11.0), (1, 15.0), (7, 99.0)]]
    display, numeric = R.main_table(_long(rows))
    ref = sps.ttest_rel([11.0, 15.0, 14.0], [10.0, 12.0, 11.0])  # seeds 0, 1, 2; seed 7 has no pair
    got = numeric.query("method == 'ketchup_k4'").iloc[0]
    assert math.isclose(got["p_vs_llmr"], ref.pvalue, rel_tol=1e-12) and got["n_paired"] == 3
    assert list(display.columns) == ["Method", "Seeds", "mini-GSM8K Acc.", "mini-GSM8K vs LLMR"]  # 3 and 4 seeds
    with pytest.raises(ValueError, match="several values"):
        R.main_table(_long(rows + [("mini-gsm8k", "llmr", 0, "accuracy", 3.0)]))


def test_main_table_constant_difference_with_rounding_noise_has_zero_sd():
    """A row one answer ahead of LLMR on every seed whose differences carry float rounding (SD ~1e-15, what the
    smoke PPO study gave): no t-test, SD 0, minimum detectable effect 0, instead of an overflow in the power."""
    llmr = [0.1 + 0.2, 0.7, 0.9]
    rows = [("mini-gsm8k", "llmr", s, "accuracy", v) for s, v in enumerate(llmr)]
    rows += [("mini-gsm8k", "ketchup_k2", s, "accuracy", v + 1 / 3) for s, v in enumerate(llmr)]
    assert np.std(np.array([v + 1 / 3 for v in llmr]) - np.array(llmr), ddof=1) > 0  # the rounding noise is there
    _, numeric = R.main_table(_long(rows))
    got = numeric.query("method == 'ketchup_k2'").iloc[0]
    assert math.isnan(got["p_vs_llmr"]) and got["sd_diff"] == 0.0 and got["mde"] == 0.0


def test_paper_table1_reproduces_the_papers_bold_cells():
    df = R.paper_table1().set_index("Method")
    assert "not reproduced" in df.attrs["caption"] and "FLAN-T5-XL" in df.attrs["caption"]
    assert (df["Source"].str.contains("paper")).all()
    assert df.loc["Teacher", "XSum R-1"] == "41.32" and df.loc["Student (zero-shot)", "Europarl EN-NL TER↓"] == "100.21"
    marked = {(r, c) for r in df.index for c in df.columns if str(df.loc[r, c]).endswith(" *")}
    assert marked == {("KETCHUP (K=2)", "XSum R-1"), ("KETCHUP (K=4)", "XSum R-2"), ("KETCHUP (K=2)", "XSum R-L"),
                      ("KETCHUP (K=8)", "Europarl EN-NL BLEU"), ("KETCHUP (K=2)", "Europarl EN-NL chrF"),
                      ("KETCHUP (K=2)", "Europarl EN-NL TER↓"), ("KETCHUP (K=8)", "GSM8K Acc.")}


# ---------------------------------------------------------------------------------------------- files
def test_write_table_writes_csv_md_tex(tmp_path):
    display, _ = R.main_table(_results())
    paths = R.write_table(display, tmp_path / "t", "table1", caption="Main results, 5% of the data")
    assert set(paths) == {"csv", "md", "tex"} and all(p.stat().st_size > 0 for p in paths.values())
    back = pd.read_csv(paths["csv"], keep_default_na=False, dtype=str)
    pd.testing.assert_frame_equal(back, display.astype(str), check_dtype=False)
    md = paths["md"].read_text(encoding="utf-8")
    assert md.startswith("### Main results, 5% of the data\n\n| Method")
    assert "| 22.67 ± 3.79 *" in md and "mini-Europarl EN-NL TER↓" in md
    tex = paths["tex"].read_text(encoding="utf-8")
    for piece in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{Main results, 5\% of the data}",
                  r"\textbf{22.67 $\pm$ 3.79}", r"TER$\downarrow$", "21.00 $\\pm$ 2.48"):
        assert piece in tex, piece
    assert "±" not in tex and "*" not in tex.split(r"\midrule")[1]
    assert not list((tmp_path / "t").glob("*.tmp")) and not list((tmp_path / "t").glob(".*"))

    odd = pd.DataFrame({"run_name": ["a_b", "c|d"], "share": [0.5, 12.3456]})
    paths = R.write_table(odd, tmp_path, "odd", latex=True)
    tex = paths["tex"].read_text()
    assert r"run\_name" in tex and r"a\_b" in tex and "12.35" in tex and "0.5" in tex
    assert r"c\|d" in paths["md"].read_text()  # a pipe must not split the Markdown cell
    assert not R.write_table(odd, tmp_path, "nolatex", latex=False).get("tex")


# ---------------------------------------------------------------------------------------------- figures
def _returns_df():
    rng = np.random.default_rng(0)
    rows = []
    for task, offset in [("mini-xsum", -2.0), ("mini-europarl", 3.0), ("mini-gsm8k", 10.0)]:
        for i, m in enumerate(["llmr", "llmr_mean", "llmr_minvar", "ketchup_k2", "ketchup_k8"]):
            for s in range(3):
                rows.append({"task": task, "method": m, "seed": s, "return": offset + 0.3 * i + rng.normal(0, 0.2)})
    return pd.DataFrame(rows)


def _vb_df():
    rows = []
    for student, kl, scale in [("pre-distilled 50 steps", 2.3, 1.5), ("pre-distilled 800 steps", 0.4, 1.0)]:
        for k in [1, 2, 4, 8, 16]:
            for tail, var in [("algorithm1", 128 / k + 2 * k), ("block", 128 / k)]:
                for _ in range(2):  # two rows per (student, k, tail): averaged
                    rows.append({"student": student, "kl": kl, "k": k, "tail": tail, "var_seq": scale * var,
                                 "bias_seq": -0.5 * (k - 1) * scale, "var_pos": scale * var / 2,
                                 "bias_pos": -0.25 * (k - 1) * scale})
    return pd.DataFrame(rows)


def _lc_df():
    rows = []
    for student in ["small", "base", "large"]:
        for m in ["llmr", "ketchup_k2"]:
            for s in range(2):
                for step in range(0, 500, 100):
                    rows.append({"student": student, "method": m, "seed": s, "step": step,
                                 "value": 20 + step / 100 + s + (m == "ketchup_k2")})
    return pd.DataFrame(rows)


def _has_legend(fig):
    return bool(fig.legends) or any(ax.get_legend() is not None for ax in fig.axes)


@pytest.mark.parametrize("make, n_axes", [
    (lambda: R.plot_returns(_returns_df()), 3),
    (lambda: R.plot_variance_bias(_vb_df()), 4),
    (lambda: R.plot_learning_curves(_lc_df(), value_label="dev ROUGE-L"), 3),
])
def test_plots_return_labelled_figures(make, n_axes, tmp_path):
    fig = make()
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == n_axes
    assert _has_legend(fig)
    assert all(ax.get_title() for ax in fig.axes)
    assert fig.axes[0].get_ylabel()
    assert all(ax.get_xlabel() or ax.get_xticklabels() for ax in fig.axes)
    paths = R.save_figure(fig, tmp_path, "fig")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 5000
    assert paths["pdf"].read_bytes()[:5] == b"%PDF-"
    assert not plt.fignum_exists(fig.number)  # save_figure closes it


def test_plot_details():
    fig = R.plot_returns(_returns_df())
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["LLMR", "LLMR + mean baseline", "LLMR + min-var baseline", "KETCHUP (K=2)", "KETCHUP (K=8)"]
    assert "Eq. (10)" in fig.axes[0].get_ylabel()
    assert fig.axes[0].get_ylim()[0] < -2  # negative returns are drawn below zero
    plt.close(fig)

    fig = R.plot_variance_bias(_vb_df())
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [1, 2, 4, 8, 16]
    assert ax.get_yscale() == "log"  # variance spans > 10x
    assert fig.axes[1].get_yscale() == "linear"
    texts = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert any("KL=0.40" in t for t in texts) and any("Algorithm 1" in t for t in texts)
    assert any("Eq. (7)" in t for t in texts)
    solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(solid) == 2 and len(dashed) == 2
    plt.close(fig)

    fig = R.plot_learning_curves(_lc_df(), value_label="dev BLEU")
    assert [ax.get_title() for ax in fig.axes] == ["student: small", "student: base", "student: large"]
    assert fig.axes[0].get_ylabel() == "dev BLEU" and fig.axes[0].get_xlabel() == "RL training step"
    assert fig.axes[0].get_shared_y_axes().joined(fig.axes[0], fig.axes[2])
    assert fig.axes[0].collections  # shaded band with two seeds
    plt.close(fig)
    fig = R.plot_learning_curves(_lc_df().replace({"student": {"small": "mini-xsum"}}))
    assert fig.axes[0].get_title() == "mini-XSum"  # curves per task reuse the same plot
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- provenance, index
def test_write_provenance_drops_secrets(tmp_path):
    params = {"seeds": [0, 1], "judge": {"api_key": "sk-SECRET1", "model": "qwen", "base_url": "http://x"},
              "HF_TOKEN": "hf_SECRET2", "runs": [{"db_password": "SECRET3", "k": 4}], "client_secret": "SECRET4",
              "path": tmp_path}
    path = R.write_provenance(tmp_path, params)
    text = path.read_text()
    assert "SECRET" not in text
    prov = json.loads(text)
    assert prov["params"]["seeds"] == [0, 1] and prov["params"]["judge"] == {"model": "qwen", "base_url": "http://x"}
    assert prov["params"]["runs"] == [{"k": 4}] and prov["params"]["path"] == str(tmp_path)
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["packages"]["numpy"] == np.__version__ and "torch" in prov["packages"]
    assert prov["python"] and prov["date_utc"]
    assert R.write_provenance(tmp_path / "none").exists()


def test_write_index_lists_files_and_embeds_tables_and_images(tmp_path):
    out = tmp_path / "outputs" / "smoke"
    nb = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    out.mkdir(parents=True)
    (out / "01_main_results.ipynb").write_text(json.dumps(nb))
    (out / "01_main_results.html").write_text("<html></html>")
    display, _ = R.main_table(_results())
    R.write_table(display, out / "01_main_results", "table1", caption="Main results")
    R.save_figure(R.plot_returns(_returns_df()), out, "02_returns_fig1")
    R.write_provenance(out, {"a": 1})
    (out / "run_all.log").write_text("01_main_results ok 12s\n")
    html_path = R.write_index(out)
    assert html_path == out / "index.html"
    page = html_path.read_text(encoding="utf-8")
    assert page.index("01_main_results") < page.index("02_returns_fig1")  # grouped by prefix, in order
    assert 'href="01_main_results.html"' in page and 'href="01_main_results.ipynb"' in page
    assert "<table" in page and "22.67 ± 3.79 *" in page and "Main results" in page  # CSV rendered inline
    assert 'href="01_main_results/table1.tex"' in page
    assert '<img src="02_returns_fig1.png"' in page and 'href="02_returns_fig1.pdf"' in page
    assert "provenance.json" in page and "run_all.log" in page
    assert str(tmp_path) not in page  # relative links only
    md = (out / "index.md").read_text(encoding="utf-8")
    assert "01_main_results/table1.csv" in md and "![02_returns_fig1](<02_returns_fig1.png>)" in md
    assert "| 22.67 ± 3.79 *" in md
    assert report_index.main(["index", str(out)]) == 0


def test_significance_markers_and_verdicts():
    assert R.significance_marker(0.01) == " ‡" and R.significance_marker(0.04) == " †"
    assert R.significance_marker(0.2) == "" and R.significance_marker(float("nan")) == ""
    rows = []
    for seed in range(5):  # KETCHUP is 1 point better on every seed but one: significant
        rows.append(("mini-xsum", "llmr", seed, "rougeL", 20.0 + 0.1 * seed))
        rows.append(("mini-xsum", "ketchup_k2", seed, "rougeL", 21.0 + 0.1 * seed + (0.2 if seed == 3 else 0.0)))
        rows.append(("mini-xsum", "ketchup_k4", seed, "rougeL", 20.0 + 0.1 * seed + (0.3 if seed % 2 else -0.3)))
    display, numeric = R.main_table(_long(rows))
    k2 = numeric.query("method == 'ketchup_k2'").iloc[0]
    assert k2["significant_0035"] and k2["delta_vs_llmr"] > 0
    lines = R.ketchup_verdicts(numeric)
    assert len(lines) == 1 and "beat LLMR with p < 0.035 (5 seeds)" in lines[0] and "KETCHUP (K=2)" in lines[0]
    rows = [r for r in rows if r[1] != "ketchup_k2"]
    _, numeric = R.main_table(_long(rows))
    assert "did not beat LLMR" in R.ketchup_verdicts(numeric)[0]
    # Ahead of LLMR at p = 0.047 (K=2; paired differences 1, 1, 1, 1, -0.3) and further ahead on
    # average but at p = 0.23 (K=4): the closest is the row with the smaller p, flagged as 0.05-only.
    rows = []
    for seed in range(5):
        rows.append(("mini-xsum", "llmr", seed, "rougeL", 20.0))
        rows.append(("mini-xsum", "ketchup_k2", seed, "rougeL", 20.0 + [1.0, 1.0, 1.0, 1.0, -0.3][seed]))
        rows.append(("mini-xsum", "ketchup_k4", seed, "rougeL", 20.0 + [3.0, -1.0, 3.0, -1.0, 3.0][seed]))
    _, numeric = R.main_table(_long(rows))
    assert abs(numeric.query("method == 'ketchup_k2'").iloc[0]["p_vs_llmr"] - 0.0466) < 1e-3
    line = R.ketchup_verdicts(numeric)[0]
    assert "closest: KETCHUP (K=2) +0.74" in line and "p < 0.05 only" in line, line


def test_rows_whose_best_checkpoint_is_step_zero_are_marked():
    rows = [("mini-xsum", m, s, "rougeL", 20.0 + s) for m in ("llmr", "llmr_minvar") for s in range(3)]
    runs = pd.DataFrame([{"task": "mini-xsum", "method": m, "seed": s, "best_step": (0 if (m == "llmr_minvar" and s < 2) else 8),
                          "steps": 40} for m in ("llmr", "llmr_minvar") for s in range(3)])
    display, numeric = R.main_table(_long(rows), runs)
    row = display.set_index("Method")
    assert row.loc["LLMR + min-var baseline", "mini-XSum R-L"].endswith("§2/3")
    assert "§" not in row.loc["LLMR", "mini-XSum R-L"]
    assert "§k/n" in display.attrs["caption"]


def test_main_table_tests_against_a_named_baseline_and_drops_the_column_without_one():
    rows = [("mini-gsm8k", "llmr_ppo", s, "accuracy", v) for s, v in [(0, 10.0), (1, 12.0), (2, 11.0)]]
    rows += [("mini-gsm8k", "ketchup_ppo_k2", s, "accuracy", v) for s, v in [(0, 11.0), (1, 15.0), (2, 14.0)]]
    display, numeric = R.main_table(_long(rows), baseline="llmr_ppo")
    ref = sps.ttest_rel([11.0, 15.0, 14.0], [10.0, 12.0, 11.0])
    got = numeric.query("method == 'ketchup_ppo_k2' and metric == 'accuracy'").iloc[0]
    assert math.isclose(got["p_vs_llmr"], ref.pvalue, rel_tol=1e-12) and got["delta_vs_llmr"] == pytest.approx(7 / 3)
    col = f"mini-GSM8K vs {R.method_label('llmr_ppo')}"
    assert list(display.columns) == ["Method", "mini-GSM8K Acc.", col]
    assert "vs LLMR + PPO" in display.attrs["caption"]
    # No run of the baseline at all (here: plain LLMR): no test column, no "n/a" cells, no caption text.
    display, numeric = R.main_table(_long(rows))
    assert list(display.columns) == ["Method", "mini-GSM8K Acc."]
    assert numeric["p_vs_llmr"].isna().all() and "paired difference" not in display.attrs["caption"]


def test_index_counts_folders_of_files_and_links_large_tables(tmp_path):
    from kdlib.report import index as report_index

    out = tmp_path / "embedded"
    cache = out / "judge_cache" / "ab"
    cache.mkdir(parents=True)
    for i in range(500):
        (cache / f"answer-{i}.json").write_text("{}")
    big = pd.DataFrame({"run": [f"r{i}" for i in range(105)], "gain": np.arange(105) / 7})
    R.write_table(big, out, "02_return_gains", latex=False)
    small = pd.DataFrame({"method": ["llmr", "ketchup_k4"], "return": [1.0, 2.0]})
    R.write_table(small, out, "02_small", latex=False)
    page = report_index.write_index(out).read_text(encoding="utf-8")
    assert "answer-3.json" not in page and "500 files" in page  # counted, not listed
    assert "r104" not in page and "105 rows x 2 columns" in page  # linked, not inlined
    assert "ketchup_k4" in page  # a small table is still shown
    assert page.count("<a ") < 40


def test_figure_layout_problems_flag_wide_figures_and_legends_over_data():
    import matplotlib.pyplot as plt

    from kdlib.report.io import figure_layout_problems
    from kdlib.report.plots import MAX_WIDTH_IN, panel_grid

    wide, ax = plt.subplots(figsize=(24, 3))
    ax.plot([0, 1], [0, 1], label="a")
    fig_out, ax2 = plt.subplots(figsize=(6, 3), layout="constrained")
    ax2.plot([0, 1], [0, 1], label="a")
    fig_out.legend(loc="outside right upper")
    fig_in, ax3 = plt.subplots(figsize=(6, 3))
    ax3.plot([0, 1], [0, 1], label="a")
    ax3.legend(loc="upper left")
    try:
        assert any("px wide" in p for p in figure_layout_problems(wide))
        assert figure_layout_problems(fig_out) == []
        assert any("legend" in p for p in figure_layout_problems(fig_in))
    finally:
        for f in (wide, fig_out, fig_in):
            plt.close(f)
    rows, cols, (w, h) = panel_grid(3, 7.0, 4.0)  # three 7-in panels do not fit in one 15-in row
    assert (rows, cols) == (2, 2) and w <= MAX_WIDTH_IN and h == 8.0
    assert panel_grid(3, 4.0, 4.0)[:2] == (1, 3)


def test_table1_states_power_and_calls_an_underpowered_null_a_lack_of_power():
    rng = np.random.default_rng(0)
    rows = [("mini-xsum", m, s, "rougeL", 30 + off + rng.normal(0, 1))
            for s in range(5) for m, off in (("llmr", 0.0), ("ketchup_k4", 0.3))]
    _, numeric = R.main_table(_long(rows))
    row = numeric.dropna(subset=["p_vs_llmr"]).iloc[0]
    diffs = (pd.Series([v for t, m, s, _, v in rows if m == "ketchup_k4"])
             - pd.Series([v for t, m, s, _, v in rows if m == "llmr"]))
    assert row["sd_diff"] == pytest.approx(float(diffs.std(ddof=1)))
    assert row["mde"] > abs(row["delta_vs_llmr"]) and row["seeds_needed"] > 5
    (line,) = R.ketchup_verdicts(numeric)
    assert "lack of power" in line and f"{row['mde']:.2f}" in line and "1 comparisons against LLMR in the table" in line
    power = R.power_table(numeric)
    assert list(power["seeds"]) == [5] and power["detectable (power 0.8)"].iloc[0] == round(row["mde"], 2)


def test_table1_tests_todays_rows_against_llmr_and_a_second_baseline_opd():
    from scipy import stats as sps

    rng = np.random.default_rng(1)
    offs = {"llmr": 0.0, "opd": 2.0, "gkd_jsd": 1.0, "ketchup_k4": 3.0, "kl": -1.0}
    rows = [("mini-xsum", m, s, "rougeL", 30 + off + (s * 0.7 if m != "opd" else 0.0) + rng.normal(0, 0.5))
            for s in range(5) for m, off in offs.items()]
    display, numeric = R.main_table(_long(rows), second="opd")
    assert "mini-XSum vs OPD" in display.columns and "mini-XSum vs LLMR" in display.columns
    prim = numeric[numeric["metric"] == "rougeL"].set_index("method")
    # against LLMR: KETCHUP and the on-policy rows, not KL; against OPD: KETCHUP, GKD and LLMR, not OPD itself
    assert set(prim.dropna(subset=["p_vs_llmr"]).index) == {"ketchup_k4", "opd", "gkd_jsd"}
    assert set(prim.dropna(subset=["p_vs_opd"]).index) == {"ketchup_k4", "gkd_jsd", "llmr"}
    val = lambda m: [v for t, mm, s, _, v in rows if mm == m]  # noqa: E731
    assert prim.loc["gkd_jsd", "p_vs_opd"] == pytest.approx(sps.ttest_rel(val("gkd_jsd"), val("opd")).pvalue)
    assert prim.loc["llmr", "delta_vs_opd"] == pytest.approx(np.mean(val("llmr")) - np.mean(val("opd")))
    (line,) = R.ketchup_verdicts(numeric, against="opd")
    assert "vs" not in line.split(":")[0] and ("beat OPD" in line or "did not beat OPD" in line)
    assert "comparisons against OPD" in line
    (best,) = R.best_method_lines(numeric)
    assert best.startswith("mini-XSum: best") and "KETCHUP (K=4)" in best.split(";")[0]


def test_table1_says_how_many_seeds_each_row_has_and_pairs_over_common_seeds():
    rng = np.random.default_rng(2)
    rows = [("mini-xsum", "llmr", s, "rougeL", 30 + rng.normal(0, 1)) for s in range(20)]
    rows += [("mini-xsum", "ketchup_k4", s, "rougeL", 30.5 + rng.normal(0, 1)) for s in range(20)]
    rows += [("mini-xsum", "kl", s, "rougeL", 29 + rng.normal(0, 1)) for s in range(5)]
    rows += [("mini-xsum", "opd", s, "rougeL", 29 + rng.normal(0, 1)) for s in range(5)]
    display, numeric = R.main_table(_long(rows))
    seeds = dict(zip(display["Method"], display["Seeds"]))
    assert seeds["LLMR"] == 20 and seeds["KL"] == 5 and seeds["KETCHUP (K=4)"] == 20
    prim = numeric[numeric["metric"] == "rougeL"].set_index("method")
    assert prim.loc["ketchup_k4", "n_paired"] == 20 and prim.loc["opd", "n_paired"] == 5  # pairs: common seeds
    assert "5-20 seed(s)" in display.attrs["caption"]


def test_gradient_variance_figure_draws_panels_without_a_positive_value(tmp_path):
    """Variances that could not be estimated (NaN: the paper rehearsal's two inputs x two samples) leave nothing to
    log-scale: the figure draws those panels on a linear axis instead of failing when it is saved."""
    nan = float("nan")
    rows = [{"student": "s", "kl": 0.1, "k": k, "tail": tail, "trace_var": nan, "return_var": nan,
             "rel_bias": nan, "rel_bias_low": nan, "rel_bias_high": nan, "snr": 0.0}
            for k in (1, 2) for tail in ("algorithm1", "block")]
    fig = R.plot_gradient_variance(pd.DataFrame(rows))
    try:
        files = R.save_figure(fig, tmp_path, "gv")
        assert all(__import__("os").path.getsize(f) > 0 for f in files.values())
    finally:
        plt.close(fig)


def test_verdicts_say_when_a_row_has_fewer_seeds_than_the_task_s_most():
    rng = np.random.default_rng(3)
    rows = [("mini-xsum", "llmr", s, "rougeL", 30 + s * 0.3 + rng.normal(0, 0.2)) for s in range(20)]
    rows += [("mini-xsum", "ketchup_k4", s, "rougeL", 30 + s * 0.3 + rng.normal(0, 0.2)) for s in range(20)]
    rows += [("mini-xsum", "ketchup_soft_k4", s, "rougeL", 31 + s * 0.3 + rng.normal(0, 0.2)) for s in range(5)]
    _, numeric = R.main_table(_long(rows))
    (line,) = R.ketchup_verdicts(numeric)
    assert "(20 seeds)" in line and "KETCHUP, soft value (K=4) (+" in line and ", 5 seeds)" in line
