"""Seed 003 (notebook 07_reward_distill): voting, SFT warm-up, reward model, shaped-reward PPO; tables and verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kdlib import data as kdata
from kdlib.chains.core import BASE_SEED, as_stage, train
from kdlib.config import Params, RewardDistillStudyParams
from kdlib.report.reward_distill import ROW_LABELS
from kdlib.studies.common import ensure_runs, kit_params


@dataclass
class PlannedRun:
    """One run notebook 07 reads: its role, where it sits, and its params (``p.method`` = stage)."""

    role: str  # a ROW_LABELS key, "samples", "rm", "rm_lambda", "rm_ratio", "rm_teacher", or "eval:<set>:<row>"
    task: str
    teacher: str
    student: str
    seed: int
    params: Params
    value: float | None = None  # the swept value (lambda, teacher ratio)


def study_plan(nb, params_fn) -> list[PlannedRun]:
    """Every run of notebook 07 (``nb``: kdlib.config.RewardDistillStudyParams; ``params_fn(**over)``
    -> the kit params with the notebook's overrides): teacher sampling for every teacher (Figs. 3-4);
    per pipeline teacher x student the rows of Table 2 and their held-out evaluations; on the first
    pair the ablations (Table 4, Figs. 5-7)."""
    out: list[PlannedRun] = []
    pipeline = nb.pipeline_teachers or [next(iter(nb.teachers))]
    abl_seeds = nb.seeds[: nb.ablation_seeds]
    first_student = next(iter(nb.students))
    for task in nb.tasks:
        for t_label, t_over in nb.teachers.items():
            s_label = first_student
            base = params_fn(**{"task.name": task, **nb.students[s_label], **t_over,
                                **nb.pair_overrides.get(f"{t_label}|{s_label}", {})})
            out.append(PlannedRun("samples", task, t_label, s_label, BASE_SEED, as_stage(base, "rd_samples")))
        for t_label in pipeline:
            for s_label, s_over in nb.students.items():
                base = params_fn(**{"task.name": task, **s_over, **nb.teachers[t_label],
                                    **nb.pair_overrides.get(f"{t_label}|{s_label}", {})})

                def add(role, p, seed=BASE_SEED, value=None):
                    out.append(PlannedRun(role, task, t_label, s_label, seed, p, value))

                rows = [("teacher", as_stage(base, "teacher"), BASE_SEED), ("zeroshot", as_stage(base, "zeroshot"), BASE_SEED)]
                if base.rd.student_init == "predistill":
                    rows.append(("predistill", as_stage(base, "predistill"), BASE_SEED))
                # The SFT rows at every seed of the notebook (paired over seeds with "Ours"); S_warmup, where the
                # pipeline's RM and PPO start, is the voted SFT at BASE_SEED (kdlib.chains.reward_distill._warmup).
                rows += [(f"sft_{data}", as_stage(base, "rd_sft", seed=s, **{"rd.sft_data": data}), s)
                         for data in ("all", "voted") for s in nb.seeds]
                rows += [("ours", as_stage(base, "rd_ppo", seed=s), s) for s in nb.seeds]
                wod = params_fn(**{"task.name": task, **s_over, **nb.teachers[t_label],
                                   **nb.pair_overrides.get(f"{t_label}|{s_label}", {}), **nb.wod_overrides})
                rows += [("wod", as_stage(wod, "rd_ppo", seed=s, **{"rd.policy_init": "base"}), s) for s in abl_seeds]
                for role, p, seed in rows:
                    add(role, p, seed)
                    for eval_set in nb.eval_sets:
                        if kdata.EVAL_SET_TASK[eval_set] == task:
                            add(f"eval:{eval_set}:{role}", as_stage(p, "rd_eval", **{"rd.eval_target": p.method,
                                                                                      "rd.eval_set": eval_set}), seed)
                add("rm", as_stage(base, "rd_rm"))
                if t_label == pipeline[0] and s_label == first_student:  # the ablations: the paper's 70B -> 1B pair
                    for lam in nb.lambdas:
                        add("rm_lambda", as_stage(base, "rd_rm", **{"rd.lam": lam}), value=lam)
                    for ratio in nb.teacher_ratios:
                        add("rm_ratio", as_stage(base, "rd_rm", **{"rd.teacher_ratio": ratio}), value=ratio)
                    add("rm_teacher", as_stage(base, "rd_rm", **{"rd.rm_data": "teacher"}))
                    for s in abl_seeds:
                        add("ppo_teacherrm", as_stage(base, "rd_ppo", seed=s, **{"rd.rm_data": "teacher"}), s)
                        add("minus1", as_stage(base, "rd_ppo", seed=s, **{"rd.shaping": "minus1"}), s)
    return out


# ----------------------------------------------------------------------------- 07: reward distillation (seed 003)
RD_PPO_SERIES = {"eval/accuracy": "dev accuracy", "train/reward": "shaped reward (Eq. 7)",
                 "train/true_accuracy": "sample accuracy (true answers)", "train/agree_ystar": "sample agrees with y*",
                 "train/rm_score": "RM score r", "train/kl": "KL to S_warmup", "train/answer_rate": "answer rate"}


def _correct_vector(rows: list[dict]) -> list[int]:
    from kdlib.maths.metrics import gsm8k_answer

    return [int(gsm8k_answer(r["output"]) is not None and gsm8k_answer(r["output"]) == gsm8k_answer(r["reference"]))
            for r in rows]


def reward_distill(nb: RewardDistillStudyParams) -> dict[str, pd.DataFrame]:
    """Seed 003 (notebook 07): trains what is missing, then reads every run into tidy frames:

    * ``results``: Table 2 (and Table 4's rows): task, teacher, student, row, seed, eval (the task's
      test set or a held-out set), accuracy and its bootstrap 95% CI over examples, run folder;
    * ``labels``: Figs. 3-4: per teacher, |D_fail| / |D|, pseudo-label accuracy and the 2 x 2
      confusion of the labelled teacher answers against the true answers;
    * ``rm``: Table 3 and Fig. 6: every reward model's RM-test pairwise accuracies (with CIs);
    * ``rm_curves``: Fig. 5: RM-val Pos/Neg accuracy over RM training steps per lambda;
    * ``ppo_curves``: Fig. 7 and the PPO diagnostics, per PPO row and seed;
    * ``pipeline``: the sizes of D, D_fail, D_sft, D_S, D_R and the PPO prompt pool;
    * ``perturbations``: held-out accuracy per perturbation type (GSM-Plus style sets);
    * ``runs``: every run read, with its role and wall time (``time_s``; parents not listed).
    """

    ensure_runs(nb)
    planned = study_plan(nb, lambda **o: kit_params(nb, **o))
    results, labels, rms, rm_curves, ppo_curves, pipeline, perturbations, runs = [], [], [], [], [], [], [], []
    for r in planned:
        run = train(r.params)
        s = run.summary()
        where = {"task": r.task, "teacher": r.teacher, "student": r.student}
        runs.append({**where, "role": r.role, "seed": r.seed, "value": r.value, "run": run.path.name,
                     "time_s": s.get("time_s")})
        if r.role in ROW_LABELS:
            ci = s.get("test_ci", {}).get("accuracy", {})
            results.append({**where, "row": r.role, "seed": r.seed, "eval": r.task, "accuracy": s["test"]["accuracy"],
                            "low": ci.get("low"), "high": ci.get("high"), "best_step": s.get("best_step"),
                            "run": str(run.path)})
            if r.params.method == "rd_ppo":
                for rec in run.metrics():
                    for key, name in RD_PPO_SERIES.items():
                        if key in rec and rec[key] == rec[key]:  # not NaN
                            ppo_curves.append({**where, "row": r.role, "seed": r.seed, "step": rec["step"],
                                               "series": name, "value": float(rec[key])})
        elif r.role.startswith("eval:"):
            _, eval_set, row = r.role.split(":", 2)
            ci = s.get("test_ci", {}).get("accuracy", {})
            results.append({**where, "row": row, "seed": r.seed, "eval": eval_set, "accuracy": s["test"]["accuracy"],
                            "low": ci.get("low"), "high": ci.get("high"), "best_step": None, "run": str(run.path)})
            for kind, v in s.get("by_perturbation", {}).items():
                perturbations.append({**where, "row": row, "seed": r.seed, "eval": eval_set, "perturbation": kind, **v})
        elif r.role == "samples":
            labels.append({**where, **{k: s[k] for k in ("n_questions", "n_fail", "share_fail", "label_accuracy",
                                                         "precision", "labelled_correct_true", "labelled_correct_false",
                                                         "labelled_incorrect_true", "labelled_incorrect_false")}})
        else:  # reward models
            ci = s.get("test_ci", {})
            rms.append({**where, "variant": r.role, "value": r.value, "rm_data": s.get("rm_data", r.params.rd.rm_data),
                        "lam": r.params.rd.lam, "teacher_ratio": r.params.rd.teacher_ratio,
                        "pos_neg": s["test"]["pos_neg"], "pos_pos": s["test"]["pos_pos"],
                        "pos_pos_distinct": s["test"].get("pos_pos_distinct"), "identical_pos": s["test"].get("identical_pos"),
                        "ppd_low": ci.get("pos_pos_distinct", {}).get("low"),
                        "ppd_high": ci.get("pos_pos_distinct", {}).get("high"),
                        "pos_neg_low": ci.get("pos_neg", {}).get("low"), "pos_neg_high": ci.get("pos_neg", {}).get("high"),
                        "pos_pos_low": ci.get("pos_pos", {}).get("low"), "pos_pos_high": ci.get("pos_pos", {}).get("high"),
                        "n_train": s.get("n_train"), "n_test": s.get("n_test"), "best_step": s.get("best_step")})
            if r.role == "rm_lambda":
                for rec in run.metrics():
                    if "eval/pos_neg" in rec:
                        rm_curves.append({**where, "lam": r.value, "step": rec["step"], "pos_neg": rec["eval/pos_neg"],
                                          "pos_pos": rec["eval/pos_pos"],
                                          "pos_pos_distinct": rec.get("eval/pos_pos_distinct", float("nan")),
                                          "loss": rec["eval/loss"]})
            if r.role == "rm":
                sft = train(as_stage(r.params, "rd_sft", **{"rd.sft_data": "voted"})).summary()
                sft_all = train(as_stage(r.params, "rd_sft", **{"rd.sft_data": "all"})).summary()
                st = train(as_stage(r.params, "rd_student_samples")).summary()
                pipeline.append({**where, "questions sampled (D)": sft["n_questions"], "D_fail": sft["n_fail"],
                                 "D_sft pairs (voted)": sft["n_pairs"], "SFT pairs (all)": sft_all["n_pairs"],
                                 "student samples": st["n_samples"],
                                 "student samples agreeing with y*": st["agree_ystar"],
                                 "D_S (student fails once)": s["n_d_s"], "D_R questions": s["n_d_r"],
                                 "RM triplets train/val/test": f"{s['n_train']}/{s['n_dev']}/{s['n_test']}",
                                 "PPO prompts (D_S + D_fail)": s["n_d_s"] + s["n_fail"]})
    return {"results": pd.DataFrame(results), "labels": pd.DataFrame(labels), "rm": pd.DataFrame(rms),
            "rm_curves": pd.DataFrame(rm_curves), "ppo_curves": pd.DataFrame(ppo_curves), "pipeline": pd.DataFrame(pipeline),
            "perturbations": pd.DataFrame(perturbations), "runs": pd.DataFrame(runs)}


def rd_paired(results: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Paired differences ``a - b`` of accuracy (points) per (task, teacher, student, eval): on the same
    examples, each row's per-example correctness averaged over its seeds; mean and percentile
    bootstrap 95% CI over examples (kdlib.maths.stats.bootstrap_ci of the differences)."""
    from kdlib.maths.stats import bootstrap_ci
    from kdlib.trainers.runs import read_jsonl

    out = []
    keys = ["task", "teacher", "student", "eval"]
    for key, g in results.groupby(keys, sort=False):
        vecs = {}
        for row in (a, b):
            runs = g[g.row == row]["run"].tolist()
            if not runs:
                break
            mats = [np.asarray(_correct_vector(read_jsonl(f"{r}/outputs/test.jsonl")), dtype=float) for r in runs]
            if len({m.size for m in mats}) != 1:
                break
            vecs[row] = np.mean(mats, axis=0)
        if len(vecs) != 2 or vecs[a].size != vecs[b].size or vecs[a].size == 0:
            continue
        d = 100.0 * (vecs[a] - vecs[b])
        lo, hi = bootstrap_ci(d)
        diff = float(d.mean())
        diff = 0.0 if abs(diff) < 1e-9 else diff  # seed averages can leave -1e-15 where the rows tie
        out.append({**dict(zip(keys, key)), "comparison": f"{a} - {b}", "diff": diff, "low": lo, "high": hi,
                    "n": int(d.size)})
    return pd.DataFrame(out)


MIN_TRIPLETS = 1000  # enough disagreement between student answers to learn a reward from
MIN_FAIL_SHARE = 5.0  # % of questions the vote leaves unlabelled (D_fail)


def rd_preconditions(res: dict[str, pd.DataFrame]) -> list[dict]:
    """What seed 003's reward step needs before "Ours - w/o R" is read, per pipeline pair (name, measured value,
    threshold, met): at least ``MIN_TRIPLETS`` RM training triplets; D_fail at least ``MIN_FAIL_SHARE``% of the
    questions; the RM ranks correct over wrong student answers on held-out triplets above chance (the lower end of
    its bootstrap 95% interval of Pos/Neg accuracy above 50%)."""
    out = []
    rm = res["rm"]
    for r in rm[rm.variant == "rm"].to_dict(orient="records") if len(rm) else []:
        where = f"{r['task']} ({r['teacher']} -> {r['student']})"
        n = r.get("n_train") or 0
        out.append({"name": f"{where}: RM training triplets", "value": float(n), "threshold": MIN_TRIPLETS,
                    "met": bool(n >= MIN_TRIPLETS)})
        low = r.get("pos_neg_low")
        low = float("nan") if low is None else float(low)
        out.append({"name": f"{where}: RM Pos/Neg accuracy, lower end of 95% CI (%)", "value": low,
                    "threshold": 50.0, "met": bool(low == low and low > 50.0)})
    labels = res["labels"]
    for r in labels.to_dict(orient="records") if len(labels) else []:
        share = 100.0 * float(r["share_fail"])  # a fraction of the questions
        out.append({"name": f"{r['task']} ({r['teacher']}): D_fail share of questions (%)", "value": share,
                    "threshold": MIN_FAIL_SHARE, "met": bool(share >= MIN_FAIL_SHARE)})
    return out


def rd_seed_paired(results: pd.DataFrame, a: str, b: str, alpha: float = 0.035) -> pd.DataFrame:
    """Paired differences ``a - b`` of test accuracy (points) over training seeds, as Table 1 pairs its rows: per
    (task, teacher, student, eval), the seeds both rows were trained with; the mean difference, its 95% t interval
    (kdlib.maths.stats.mean_ci) and the paired t-test's p (kdlib.maths.stats.paired_ttest; NaN for a constant
    difference). Groups with fewer than two common seeds are left out (a single run has no seed variance)."""
    from kdlib.maths.stats import paired_over_seeds

    out = []
    keys = ["task", "teacher", "student", "eval"]
    for key, g in results.groupby(keys, sort=False):
        d = paired_over_seeds(*(g[g.row == row].groupby("seed").accuracy.mean() for row in (a, b)))
        if d["n"] < 2:
            continue
        pval = d["p"]
        out.append({**dict(zip(keys, key)), "comparison": f"{a} - {b}", "diff": float(d["diff"]),
                    "low": float(d["diff"] - d["half_width"]), "high": float(d["diff"] + d["half_width"]), "p": pval,
                    "n_seeds": d["n"], "significant": bool(pval == pval and pval < alpha)})
    return pd.DataFrame(out)


def rd_verdicts(results: pd.DataFrame, alpha: float = 0.035,
                preconditions: list[dict] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Does the embedded system show the paper's ordering SFT <= Ours w/o R <= Ours (Table 2)?
    Per (task, teacher, student, eval): each row's mean accuracy over its seeds, and the two steps w/o R - SFT and
    Ours - w/o R paired over training seeds (:func:`rd_seed_paired`: mean, 95% t interval, paired t-test; a step
    is "significant" at p < ``alpha``, seed 001 App. E's threshold, two tests per evaluation set, uncorrected).
    A step "holds" when its mean difference is >= 0. The bootstrap over test examples (:func:`rd_paired`, each
    row's correctness averaged over its seeds) stays in the table as a within-run interval: it ignores the
    variance between training runs. Where a precondition of the pair's reward model missed (``preconditions``,
    :func:`rd_preconditions`), its line reads "NOT TESTED". Returns (every difference, with ``basis`` "over
    seeds" / "within-run bootstrap", and the verdict lines)."""
    seed_diffs = pd.concat([rd_seed_paired(results, "sft_voted", "sft_all", alpha),
                            rd_seed_paired(results, "ours", "sft_voted", alpha),
                            rd_seed_paired(results, "ours", "sft_all", alpha)], ignore_index=True)
    boot = pd.concat([rd_paired(results, "sft_voted", "sft_all"), rd_paired(results, "ours", "sft_voted"),
                      rd_paired(results, "ours", "sft_all"), rd_paired(results, "wod", "predistill")], ignore_index=True)
    diffs = pd.concat([seed_diffs.assign(basis="over seeds"), boot.assign(basis="within-run bootstrap")],
                      ignore_index=True)
    lines = []
    if seed_diffs.empty:
        return diffs, lines
    means = results.groupby(["task", "teacher", "student", "eval", "row"]).accuracy.mean()
    for (task, teacher, student, ev), g in seed_diffs.groupby(["task", "teacher", "student", "eval"], sort=False):
        by = {r["comparison"]: r for r in g.to_dict(orient="records")}
        m = means.loc[(task, teacher, student, ev)]
        steps = [by.get("sft_voted - sft_all"), by.get("ours - sft_voted")]
        if any(x is None for x in steps):
            continue
        holds = all(x["diff"] >= 0 for x in steps)
        ties = holds and any(x["diff"] == 0 for x in steps)

        def fmt(x):
            p = "n/a (constant difference)" if x["p"] != x["p"] else f"{x['p']:.3f}"
            return f"{x['diff']:+.2f} [{x['low']:+.2f}, {x['high']:+.2f}], p = {p}{' (significant)' if x['significant'] else ''}"

        missed = [c for c in (preconditions or []) if c["name"].startswith(f"{task} ({teacher} -> {student})")
                  and not c["met"]]
        if missed:
            lines.append(f"{ev} ({teacher} -> {student}): the paper's ordering SFT <= w/o R <= Ours is NOT TESTED at "
                         "its reward step (Ours - w/o R): the reward model lacks what it needs (" + "; ".join(
                             f"{c['name'].split(': ', 1)[1]} {c['value']:.1f} vs {c['threshold']:g}" for c in missed)
                         + f"); Ours - w/o R {fmt(steps[1])}; w/o R - SFT {fmt(steps[0])} (paired over "
                         f"{steps[0]['n_seeds']} training seeds).")
            continue
        lines.append(f"{ev} ({teacher} -> {student}): SFT {m.get('sft_all', float('nan')):.2f}, w/o R "
                     f"{m.get('sft_voted', float('nan')):.2f}, Ours {m.get('ours', float('nan')):.2f} (mean over seeds): "
                     f"the paper's ordering SFT <= w/o R <= Ours "
                     f"{('HOLDS only through a tie' if ties else 'HOLDS') if holds else 'does NOT hold'} "
                     f"(w/o R - SFT {fmt(steps[0])}; Ours - w/o R {fmt(steps[1])}; paired over {steps[0]['n_seeds']} "
                     f"training seeds, p < {alpha} uncorrected, 2 tests per set).")
    return diffs, lines


def plan(nb: RewardDistillStudyParams) -> list[Params]:
    """Every run of notebook 07 (:func:`study_plan`)."""
    return [r.params for r in study_plan(nb, lambda **o: kit_params(nb, **o))]
