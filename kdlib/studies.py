"""The experiments behind each table and figure (floor 3). Notebooks call these and plot; every
loop over tasks, methods, seeds and K lives here. Each function trains what is missing (through
the run cache, so notebooks share runs) and returns tidy ``pandas`` frames.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from kdlib import returns
from kdlib.config import (ConstrainedKDStudyParams, DecoderOnlyParams, DiagnosticsParams, GradientVarianceParams,
                          LLMEvalParams, MainResultsParams, ModelSizeParams, NotebookParams, Params, PPOStudyParams,
                          ReturnsParams, RewardDistillStudyParams, VarianceBiasParams, kit_params_for, load_params)
from kdlib.evaluate import teacher_scores
from kdlib.experiment import (BASE_SEED, _teacher_model, ensure_predistill, ensure_teacher, ensure_zeroshot, load_run_model, run_for,
                              train)
from kdlib.generation import generate
from kdlib.metrics import HIGHER_IS_BETTER
from kdlib.models import pad, token_logprobs, forward_logits
from kdlib.runs import Run
from kdlib.trainers.base import frozen, get_accelerator, load_task_bundle


def _params(nb: NotebookParams, **overrides) -> Params:
    return kit_params_for(nb, **overrides)


def method_plan(nb: MainResultsParams | ReturnsParams) -> list[tuple[str, dict]]:
    """(run label, overrides) of every method row: the listed methods, then KETCHUP per K."""
    plan = [(m, {"method": m}) for m in nb.methods if m != "ketchup"]
    plan += [(f"ketchup_k{k}", {"method": "ketchup", "rl.k": k}) for k in nb.k_values]
    return plan


# ----------------------------------------------------------------------------- plans
def _chain_targets(nb: NotebookParams, task: str, over: dict | None = None) -> list[Params]:
    """Teacher, zero-shot and pre-distilled student of a task (the stages every table shows)."""
    base = {"task.name": task, **(over or {})}
    return [_params(nb, **{**base, "method": m}) for m in ("teacher", "zeroshot", "predistill")]


def _method_targets(nb, tasks, seeds, plan_rows) -> list[Params]:
    return [_params(nb, **{"task.name": t, "seed": s, **over}) for t in tasks for s in seeds for _, over in plan_rows]


def plan(nb: NotebookParams) -> list[Params]:
    """The runs a notebook reads (the scheduler adds the stages they build on). Training them
    first, in parallel (``kdlib.schedule.ensure`` / ``python -m kdlib prepare``), leaves the
    notebook only reading the run cache."""
    if isinstance(nb, MainResultsParams):
        return [q for t in nb.tasks for q in _chain_targets(nb, t)] + _method_targets(nb, nb.tasks, nb.seeds,
                                                                                       method_plan(nb))
    if isinstance(nb, ReturnsParams):
        return _method_targets(nb, nb.tasks, nb.seeds, method_plan(nb))
    if isinstance(nb, VarianceBiasParams):
        return [_variance_bias_params(nb, steps) for steps in nb.student_steps]
    if isinstance(nb, ModelSizeParams):
        return [_params(nb, **over) for over in _model_size_overrides(nb)]
    if isinstance(nb, LLMEvalParams):
        return [_params(nb, **over) for over in _llm_eval_overrides(nb)]
    if isinstance(nb, DecoderOnlyParams):
        return [q for t in nb.tasks for q in _chain_targets(nb, t)] + _method_targets(nb, nb.tasks, nb.seeds, method_plan(nb))
    if isinstance(nb, GradientVarianceParams):
        return [_variance_bias_params(nb, steps) for steps in nb.student_steps]
    if isinstance(nb, DiagnosticsParams):
        return _method_targets(nb, nb.tasks, nb.seeds, method_plan(nb) + [("ketchup_kauto", {"method": "ketchup", "rl.k": "auto"})])
    if isinstance(nb, PPOStudyParams):
        return [q for t in nb.tasks for q in _chain_targets(nb, t)] + [_params(nb, **o) for o in _ppo_overrides(nb)]
    if isinstance(nb, RewardDistillStudyParams):
        from kdlib.reward_distill import study_plan

        return [r.params for r in study_plan(nb, lambda **o: _params(nb, **o))]
    if isinstance(nb, ConstrainedKDStudyParams):  # seed 004: its first phase (the rest needs the budget d)
        from kdlib import cmdp_study

        return cmdp_study.plan(nb)
    return []


def ensure_runs(nb: NotebookParams, workers: int | None = None) -> int:
    """Train what ``nb`` needs that is not in the run cache yet (parallel workers); returns how many."""
    from kdlib.schedule import ensure

    return ensure(plan(nb), workers=workers)


def _rows(task: str, method: str, seed: int, summary: dict, split: str = "test") -> list[dict]:
    return [{"task": task, "method": method, "seed": seed, "metric": k, "value": float(v)}
            for k, v in summary[split].items() if isinstance(v, (int, float)) and math.isfinite(float(v))]


def main_results(nb: MainResultsParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Table 1: test scores at the best dev checkpoint of the teacher, the zero-shot and
    pre-distilled students and every method (x seeds). Returns (long results, runs)."""
    ensure_runs(nb)
    rows, runs = [], []
    for task in nb.tasks:
        base = _params(nb, **{"task.name": task})
        for label, run in (("teacher", ensure_teacher(base)), ("zeroshot", ensure_zeroshot(base)),
                           ("predistill", ensure_predistill(base))):
            rows += _rows(task, label, BASE_SEED, run.summary())
            runs.append(_run_row(task, label, BASE_SEED, run))
        for seed in nb.seeds:
            for label, over in method_plan(nb):
                run = train(_params(nb, **{"task.name": task, "seed": seed, **over}))
                rows += _rows(task, label, seed, run.summary())
                runs.append(_run_row(task, label, seed, run))
    return pd.DataFrame(rows), pd.DataFrame(runs)


def _run_row(task: str, label: str, seed: int, run: Run) -> dict:
    s = run.summary()
    return {"task": task, "method": label, "seed": seed, "run": str(run.path), "best_step": s.get("best_step"),
            "steps": s.get("steps"), "time_s": s.get("time_s")}


RL_SERIES = {  # logged key -> (series name in the curves frame)
    "eval/return": "dev return", "eval/length": "dev length", "eval/sampled_return": "dev sampled return",
    "train/return": "train return",
    "train/length": "train length", "train/kl": "train KL", "eval/distinct2": "dev distinct-2",
}


def run_curves(run: Run, primary: str) -> list[dict]:
    """Long rows (step, series, value) of one RL run: the greedy dev return (Eq. 10), length and
    primary metric at every evaluation, and the sampled training return, length and KL to the
    teacher at every logged step."""
    rows = []
    series = {**RL_SERIES, f"eval/{primary}": f"dev {primary}"}
    for r in run.metrics():
        for key, name in series.items():
            if key in r:
                rows.append({"step": r["step"], "series": name, "value": float(r[key])})
    return rows


def rl_returns(nb: ReturnsParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 1: the average true return (Eq. 10) of greedy test outputs for each RL method, and
    the learning curves of the same runs (:func:`run_curves`: dev greedy return, length and metric;
    sampled training return, length and KL). Returns (test returns, long curves)."""
    ensure_runs(nb)
    rows, curves = [], []
    for task in nb.tasks:
        for seed in nb.seeds:
            for label, over in method_plan(nb):
                run = train(_params(nb, **{"task.name": task, "seed": seed, **over}))
                s = run.summary()
                rows.append({"task": task, "method": label, "seed": seed, "return": s["test"]["return"],
                             "best_step": s.get("best_step")})
                curves += [{"task": task, "method": label, "seed": seed, **r} for r in run_curves(run, s["primary"])]
    return pd.DataFrame(rows), pd.DataFrame(curves)


@torch.no_grad()
def sample_q(p: Params, run: Run, n_inputs: int, n_samples: int, seed: int = 0):
    """Sample ``n_samples`` outputs per test input from a run's student and score them with the
    teacher. Returns q_sa, v, mask shaped (M, N, T) and the student's per-token KL to the teacher
    (Monte-Carlo estimate of KL(pi || p_teacher) on its own samples)."""
    acc = get_accelerator()
    task = load_task_bundle(p)
    teacher = _teacher_model(p, task).to(acc.device)
    student = frozen(load_run_model(p, run)[0]).to(acc.device)
    M = min(n_inputs, task.split_size("test"))
    g = torch.Generator(device=acc.device).manual_seed(seed)
    qs, vs, ms, kls = [], [], [], []
    for i in range(M):
        idx = [i] * n_samples
        src, sm = pad([task.student_src["test"][j] for j in idx], task.tok.pad_token_id, left=task.arch == "causal")
        tsrc, tsm = pad([task.teacher_src["test"][j] for j in idx], task.tok.pad_token_id, left=task.arch == "causal")
        roll = generate(student, task.tok, src.to(acc.device), sm.to(acc.device), arch=task.arch,
                        max_new_tokens=task.max_target_len, do_sample=True, temperature=p.rl.temperature,
                        use_calculator=task.use_calculator, generator=g)
        q_sa, v, t_logp = teacher_scores(teacher, task.arch, tsrc.to(acc.device), tsm.to(acc.device), roll.tokens,
                                         roll.mask, p.rl.normalize)
        s_logp = token_logprobs(forward_logits(student, task.arch, src.to(acc.device), sm.to(acc.device), roll.tokens,
                                               roll.mask), roll.tokens)
        kls.append(float(((s_logp - t_logp) * roll.mask).sum() / roll.mask.sum()))
        qs.append(q_sa.cpu()), vs.append(v.cpu()), ms.append(roll.mask.cpu())
    T = max(q.shape[1] for q in qs)
    padT = lambda x: torch.nn.functional.pad(x, (0, T - x.shape[1]))  # noqa: E731
    return (torch.stack([padT(q) for q in qs]), torch.stack([padT(v) for v in vs]),
            torch.stack([padT(m) for m in ms]).bool(), sum(kls) / len(kls))


def _variance_bias_params(nb: VarianceBiasParams | GradientVarianceParams, steps: int) -> Params:
    """The pre-distilled student stopped after ``steps`` updates (no plateau rule): students at
    several KL distances from the teacher."""
    return _params(nb, **{"task.name": nb.task, "method": "predistill", "predistill.steps": steps,
                          "predistill.eval_every": steps, "predistill.checkpoint_every": steps,
                          "predistill.patience": None})


def variance_bias(nb: VarianceBiasParams) -> pd.DataFrame:
    """Figure 2: variance and bias of the K-step return (Eqs. 20, 25) for students at several KL
    distances from the teacher (pre-distillation stopped after ``student_steps`` steps), both
    tail rules. One row per (student, K, tail), averaged over inputs."""
    ensure_runs(nb)
    rows = []
    for steps in nb.student_steps:
        p = _variance_bias_params(nb, steps)
        run = ensure_predistill(p)
        q_sa, v, mask, kl = sample_q(p, run, nb.n_inputs, nb.n_samples, seed=nb.seeds[0])
        for k in nb.k_values:
            for tail in ("algorithm1", "block"):
                est = returns.return_variance_bias(q_sa, v, mask, k, tail=tail)
                rows.append({"student": f"pre-distilled {steps} steps", "steps": steps, "kl": kl, "k": k, "tail": tail,
                             **{name: float(est[name].float().mean()) for name in
                                ("var_seq", "bias_seq", "var_pos", "bias_pos")},
                             "abs_bias_seq": float(est["bias_seq"].abs().mean()),
                             "abs_bias_pos": float(est["bias_pos"].abs().mean())})
    return pd.DataFrame(rows)


def _model_size_overrides(nb: ModelSizeParams) -> list[dict]:
    out = []
    for student in nb.students:
        for seed in nb.seeds:
            for m in nb.methods:
                over = {"task.name": nb.task, "models.student": student, "method": m, "seed": seed}
                if m == "ketchup":
                    over["rl.k"] = nb.k
                out.append(over)
    return out


def model_size_curves(nb: ModelSizeParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figure 3: dev learning curves (return of Eq. 10 and the task metric) of LLMR and KETCHUP
    for each student size, and their test scores."""
    ensure_runs(nb)
    curves, finals = [], []
    for over in _model_size_overrides(nb):
        student, seed, m = over["models.student"], over["seed"], over["method"]
        p = _params(nb, **over)
        run = train(p)
        label = f"ketchup_k{nb.k}" if m == "ketchup" else m
        s = run.summary()
        primary = s["primary"]
        for key in ("return", primary):
            for step, value in zip(*run.curve(f"eval/{key}")):
                curves.append({"student": student.split(":")[-1], "method": label, "seed": seed, "step": step,
                               "metric": key, "value": value})
        finals.append({"student": student.split(":")[-1], "method": label, "seed": seed,
                       **{f"test_{k}": v for k, v in s["test"].items()}})
    return pd.DataFrame(curves), pd.DataFrame(finals)


def _llm_eval_overrides(nb: LLMEvalParams) -> list[dict]:
    out = []
    for task in nb.tasks:
        for m in [nb.baseline] + nb.methods:
            over = {"task.name": task, "method": m, "seed": nb.seeds[0]}
            if m == "ketchup":
                over["rl.k"] = nb.k
            out.append(over)
    return out


def llm_eval(nb: LLMEvalParams, cache_dir: str) -> pd.DataFrame:
    """Table 2: pairwise judge win rates of each method against the KL baseline, per task and
    criterion, on the test outputs saved by the runs."""
    from kdlib import judge

    p0 = _params(nb)
    backend = judge.make_backend(judge.JudgeConfig(**{k: v for k, v in p0.judge.model_dump().items()
                                                      if k in judge.JudgeConfig.model_fields}))
    n = p0.judge.n_examples
    ensure_runs(nb)
    outputs: dict[str, dict[str, list[dict]]] = {}
    for over in _llm_eval_overrides(nb):
        task, m = over["task.name"], over["method"]
        run = train(_params(nb, **over))
        rows = run.outputs("test")
        outputs.setdefault(task, {})[m] = rows[:n] if n else rows
    kinds = {t: load_task_bundle(_params(nb, **{"task.name": t})).kind for t in nb.tasks}
    frames = []
    for task in nb.tasks:
        df = judge.judge_table({kinds[task]: outputs[task]}, baseline_method=nb.baseline, methods=nb.methods,
                               tasks=[kinds[task]], criteria=list(nb.criteria), backend=backend, cache_dir=cache_dir,
                               templates_dir=p0.judge.templates_dir, progress=False)
        df["task"] = task
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def return_gains(curves: pd.DataFrame, window: int = 5) -> pd.DataFrame:
    """Did each RL run raise the return it optimises? From the curves of :func:`rl_returns`.

    * greedy dev return (Eq. 10, the quantity of seed 000 Fig. 1): step 0 (the pre-distilled
      student) vs the last evaluation: ``start``, ``end``, ``gain``, ``raised``;
    * sampled return (what REINFORCE maximises): ``eval.sampled`` samples per dev input at the
      first and the last evaluation with the same random numbers (``dev sampled return``); runs
      without it fall back to the mean of the first ``window`` logged training steps vs the last
      ``window`` (different prompts every step: noisy): ``train_start``, ``train_end``,
      ``train_gain``, ``train_raised``, ``train_source``;
    * lengths beside them (greedy dev length at both ends, sampled length in both windows): a rise
      bought only by shorter outputs shows as a falling length;
    * the dev metric at both ends (a rising return with a falling metric is reward hacking's sign).
    """
    rows = []
    if curves.empty:
        return pd.DataFrame(rows)
    for (task, method, seed), g in curves.groupby(["task", "method", "seed"], sort=False):
        def series(name):
            return g[g.series == name].sort_values("step").value

        dev, train_r = series("dev return"), series("train return")
        dev_len, train_len = series("dev length"), series("train length")
        metric = next((n for n in g.series.unique() if n.startswith("dev ") and n not in
                       ("dev return", "dev length", "dev sampled return", "dev distinct-2")), None)
        row = {"task": task, "method": method, "seed": seed,
               "start": float(dev.iloc[0]), "end": float(dev.iloc[-1]), "gain": float(dev.iloc[-1] - dev.iloc[0]),
               "raised": bool(dev.iloc[-1] > dev.iloc[0])}
        sampled = series("dev sampled return")
        if len(sampled) >= 2:
            a, b = float(sampled.iloc[0]), float(sampled.iloc[-1])
            row.update({"train_start": a, "train_end": b, "train_gain": b - a, "train_raised": b > a,
                        "train_source": "dev samples, common random numbers"})
        elif len(train_r):
            w = max(1, min(window, len(train_r) // 2))
            a, b = float(train_r.iloc[:w].mean()), float(train_r.iloc[-w:].mean())
            row.update({"train_start": a, "train_end": b, "train_gain": b - a, "train_raised": b > a,
                        "train_source": f"training batches, first vs last {w} steps"})
        if len(train_len):
            w = max(1, min(window, len(train_len) // 2))
            row.update({"train_len_start": float(train_len.iloc[:w].mean()), "train_len_end": float(train_len.iloc[-w:].mean())})
        if len(dev_len):
            row.update({"len_start": float(dev_len.iloc[0]), "len_end": float(dev_len.iloc[-1])})
        if metric is not None:
            m = series(metric)
            row.update({"metric": metric[4:], "metric_start": float(m.iloc[0]), "metric_end": float(m.iloc[-1])})
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- 06: PPO (seed 001 App. D)
PPO_SERIES = {"eval/return": "dev return", "train/td_error_sq": "TD error^2", "train/approx_kl": "approx KL",
              "train/clip_fraction": "clip fraction", "train/value_loss": "value loss", "train/entropy": "entropy",
              "train/return": "train return", "eval/length": "dev length"}


def _ppo_overrides(nb: PPOStudyParams) -> list[dict]:
    return [{"task.name": t, "method": m, "seed": s, **({"ppo.k": nb.k} if m == "ketchup_ppo" else {})}
            for t in nb.tasks for s in nb.seeds for m in nb.methods]


def ppo_study(nb: PPOStudyParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seed 001 Fig. 3: LLMR + PPO (critic, GAE) against KETCHUP + PPO (K-step return, no critic).
    Returns (long curves: task, method, seed, step, series, value; long test results: task,
    method, seed, metric, value)."""
    from kdlib.experiment import run_label

    ensure_runs(nb)
    curves, results = [], []
    for over in _ppo_overrides(nb):
        p = _params(nb, **over)
        run = train(p)
        label = run_label(p)
        for r in run.metrics():
            for key, name in PPO_SERIES.items():
                if key in r:
                    curves.append({"task": p.task.name, "method": label, "seed": p.seed, "step": r["step"],
                                   "series": name, "value": float(r[key])})
        results += _rows(p.task.name, label, p.seed, run.summary())
    return pd.DataFrame(curves), pd.DataFrame(results)


def ppo_verdicts(curves: pd.DataFrame, tol_frac: float = 0.1) -> tuple[pd.DataFrame, list[str]]:
    """Does each run show seed 001 Fig. 3b's shape? Per (task, method), on the mean over seeds of
    the greedy dev return: start, peak (and its step), final, the drop from the peak, and the
    Spearman correlation of the curve with the step. A curve "keeps rising" when its final value
    is within ``tol_frac`` of the start-to-peak rise below its peak; it "falls back" otherwise.
    The paper's claim holds on a task when LLMR + PPO falls back and KETCHUP + PPO keeps rising."""
    from scipy.stats import spearmanr

    rows = []
    dev = curves[curves["series"] == "dev return"]
    for (task, method), g in dev.groupby(["task", "method"], sort=False):
        mean = g.groupby("step")["value"].mean().sort_index()
        start, final = float(mean.iloc[0]), float(mean.iloc[-1])
        peak_step, peak = int(mean.idxmax()), float(mean.max())
        rise = max(peak - start, 1e-12)
        rho = float(spearmanr(mean.index, mean.values).statistic) if len(mean) > 2 else float("nan")
        rows.append({"task": task, "method": method, "start": start, "peak": peak, "peak_step": peak_step,
                     "final": final, "drop_from_peak": peak - final, "spearman_with_step": rho,
                     "keeps_rising": bool(peak - final <= tol_frac * rise and final > start)})
    table = pd.DataFrame(rows)
    lines = []
    for task, g in table.groupby("task", sort=False):
        by = {r["method"]: r for r in g.to_dict(orient="records")}
        llmr = by.get("llmr_ppo")
        ket = next((r for m, r in by.items() if m.startswith("ketchup_ppo")), None)
        parts = []
        for r in (llmr, ket):
            if r is None:
                continue
            shape = "keeps rising" if r["keeps_rising"] else "falls back from its peak"
            parts.append(f"{r['method']} {shape} (start {r['start']:.2f}, peak {r['peak']:.2f} at step "
                         f"{r['peak_step']}, final {r['final']:.2f}, Spearman with step {r['spearman_with_step']:.2f})")
        holds = llmr is not None and ket is not None and not llmr["keeps_rising"] and ket["keeps_rising"]
        verdict = "the paper's pattern (LLMR+PPO falls back, KETCHUP+PPO keeps rising) holds" if holds else \
            "the paper's pattern (LLMR+PPO falls back, KETCHUP+PPO keeps rising) does NOT hold"
        lines.append(f"{task}: {verdict}: " + "; ".join(parts) + ".")
    return table, lines


# ----------------------------------------------------------------------------- 07: reward distillation (seed 003)
RD_PPO_SERIES = {"eval/accuracy": "dev accuracy", "train/reward": "shaped reward (Eq. 7)",
                 "train/true_accuracy": "sample accuracy (true answers)", "train/agree_ystar": "sample agrees with y*",
                 "train/rm_score": "RM score r", "train/kl": "KL to S_warmup", "train/answer_rate": "answer rate"}


def _correct_vector(rows: list[dict]) -> list[int]:
    from kdlib.metrics import gsm8k_answer

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
    from kdlib import reward_distill as rd

    ensure_runs(nb)
    planned = rd.study_plan(nb, lambda **o: _params(nb, **o))
    results, labels, rms, rm_curves, ppo_curves, pipeline, perturbations, runs = [], [], [], [], [], [], [], []
    for r in planned:
        run = train(r.params)
        s = run.summary()
        where = {"task": r.task, "teacher": r.teacher, "student": r.student}
        runs.append({**where, "role": r.role, "seed": r.seed, "value": r.value, "run": run.path.name,
                     "time_s": s.get("time_s")})
        if r.role in rd.ROW_LABELS:
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
                sft = train(rd.as_stage(r.params, "rd_sft", **{"rd.sft_data": "voted"})).summary()
                sft_all = train(rd.as_stage(r.params, "rd_sft", **{"rd.sft_data": "all"})).summary()
                st = train(rd.as_stage(r.params, "rd_student_samples")).summary()
                pipeline.append({**where, "questions sampled (D)": sft["n_questions"], "D_fail": sft["n_fail"],
                                 "D_sft pairs (voted)": sft["n_pairs"], "SFT pairs (all)": sft_all["n_pairs"],
                                 "student samples": st["n_samples"],
                                 "student samples agreeing with y*": st["agree_ystar"],
                                 "D_S (student fails once)": s["n_d_s"], "D_R questions": s["n_d_r"],
                                 "RM triplets train/val/test": f"{s['n_train']}/{s['n_dev']}/{s['n_test']}",
                                 "PPO prompts (D_R + D_fail)": s["n_d_r"] + s["n_fail"]})
    return {"results": pd.DataFrame(results), "labels": pd.DataFrame(labels), "rm": pd.DataFrame(rms),
            "rm_curves": pd.DataFrame(rm_curves), "ppo_curves": pd.DataFrame(ppo_curves), "pipeline": pd.DataFrame(pipeline),
            "perturbations": pd.DataFrame(perturbations), "runs": pd.DataFrame(runs)}


def rd_paired(results: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Paired differences ``a - b`` of accuracy (points) per (task, teacher, student, eval): on the same
    examples, each row's per-example correctness averaged over its seeds; mean and percentile
    bootstrap 95% CI over examples (kdlib.stats.bootstrap_ci of the differences)."""
    from kdlib.runs import read_jsonl
    from kdlib.stats import bootstrap_ci
    import numpy as np

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
        if len(vecs) != 2 or vecs[a].size != vecs[b].size:
            continue
        d = 100.0 * (vecs[a] - vecs[b])
        lo, hi = bootstrap_ci(d)
        diff = float(d.mean())
        diff = 0.0 if abs(diff) < 1e-9 else diff  # seed averages can leave -1e-15 where the rows tie
        out.append({**dict(zip(keys, key)), "comparison": f"{a} - {b}", "diff": diff, "low": lo, "high": hi,
                    "n": int(d.size)})
    return pd.DataFrame(out)


def rd_verdicts(results: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Does the embedded system show the paper's ordering SFT <= Ours w/o R <= Ours (Table 2)?
    Per (task, teacher, student, eval): the mean accuracy of each row over its seeds, and the paired
    differences w/o R - SFT and Ours - w/o R with bootstrap CIs. A step "holds" when its mean
    difference is >= 0, and is "significant" when its CI excludes 0."""
    diffs = pd.concat([rd_paired(results, "sft_voted", "sft_all"), rd_paired(results, "ours", "sft_voted"),
                       rd_paired(results, "ours", "sft_all"), rd_paired(results, "wod", "predistill")], ignore_index=True)
    lines = []
    if diffs.empty:
        return diffs, lines
    means = results.groupby(["task", "teacher", "student", "eval", "row"]).accuracy.mean()
    for (task, teacher, student, ev), g in diffs.groupby(["task", "teacher", "student", "eval"], sort=False):
        by = {r["comparison"]: r for r in g.to_dict(orient="records")}
        m = means.loc[(task, teacher, student, ev)]
        steps = [by.get("sft_voted - sft_all"), by.get("ours - sft_voted")]
        if any(x is None for x in steps):
            continue
        holds = all(x["diff"] >= 0 for x in steps)
        ties = holds and any(x["diff"] == 0 for x in steps)
        sig = [x["low"] > 0 or x["high"] < 0 for x in steps]

        def fmt(x, sg):
            return f"{x['diff']:+.2f} [{x['low']:+.2f}, {x['high']:+.2f}]{' (CI excludes 0)' if sg else ''}"

        lines.append(f"{ev} ({teacher} -> {student}): SFT {m.get('sft_all', float('nan')):.2f}, w/o R "
                     f"{m.get('sft_voted', float('nan')):.2f}, Ours {m.get('ours', float('nan')):.2f} (mean over seeds): "
                     f"the paper's ordering SFT <= w/o R <= Ours "
                     f"{('HOLDS only through a tie' if ties else 'HOLDS') if holds else 'does NOT hold'} "
                     f"(w/o R - SFT {fmt(steps[0], sig[0])}; Ours - w/o R {fmt(steps[1], sig[1])}, paired bootstrap "
                     f"over {steps[0]['n']} examples).")
    return diffs, lines


# ----------------------------------------------------------------------------- 11: diagnostics (issue 13)
@torch.no_grad()
def trajectory_kls(p: Params, run: Run, n_inputs: int, n_samples: int, seed: int = 0) -> dict:
    """Per-position forward KL(teacher || student) along trajectories SAMPLED by the student and by
    the teacher (temperature 1) on the first ``n_inputs`` test inputs, ``n_samples`` each: the
    ingredients of LLMR's ExError% (kdlib.stats.excess_error_percent). Returns
    ``{"student": (kl (N, L), mask), "teacher": (kl, mask)}`` as CPU tensors."""
    from kdlib.losses import full_vocab_kl

    acc = get_accelerator()
    task = load_task_bundle(p)
    teacher = _teacher_model(p, task).to(acc.device)
    student = frozen(load_run_model(p, run)[0]).to(acc.device)
    g = torch.Generator(device=acc.device).manual_seed(seed)
    out = {"student": ([], []), "teacher": ([], [])}
    M = min(n_inputs, task.split_size("test"))
    left = task.arch == "causal"
    for lo in range(0, M, max(1, 64 // n_samples)):
        idx = [i for i in range(lo, min(M, lo + max(1, 64 // n_samples))) for _ in range(n_samples)]
        src, sm = pad([task.student_src["test"][i] for i in idx], task.tok.pad_token_id, left=left, device=acc.device)
        tsrc, tsm = pad([task.teacher_src["test"][i] for i in idx], task.tok.pad_token_id, left=left, device=acc.device)
        for who, model, s_, m_ in (("student", student, src, sm), ("teacher", teacher, tsrc, tsm)):
            roll = generate(model, task.tok, s_, m_, arch=task.arch, max_new_tokens=task.max_target_len, do_sample=True,
                            use_calculator=task.use_calculator, generator=g)
            t_logits = forward_logits(teacher, task.arch, tsrc, tsm, roll.tokens, roll.mask)
            s_logits = forward_logits(student, task.arch, src, sm, roll.tokens, roll.mask)
            kl = full_vocab_kl(t_logits, s_logits, roll.action_mask)  # KL(p || q) per position
            out[who][0].append(kl.cpu())
            out[who][1].append(roll.action_mask.cpu())
    T = max(k.shape[1] for k, _ in (pair for who in out for pair in zip(*out[who])))
    padT = lambda x: torch.nn.functional.pad(x, (0, T - x.shape[1]))  # noqa: E731
    return {who: (torch.cat([padT(k) for k in ks]), torch.cat([padT(m) for m in ms])) for who, (ks, ms) in out.items()}


def exposure_and_diversity(nb: DiagnosticsParams) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Exposure bias (ExError%(l), seed 002) of every Table 1 method's student on each task (the
    first seed), and distinct-1/2 of its greedy test outputs (every seed). Returns (ExError curves:
    task, method, l, exerror; ExError summary at l = 5, 10, 20 and at the mean length; diversity:
    task, method, seed, distinct1, distinct2)."""
    from kdlib.metrics import distinct_n
    from kdlib.stats import excess_error_percent

    ensure_runs(nb)
    curves, summary, div = [], [], []
    for task in nb.tasks:
        rows = [("predistill", {"method": "predistill"})] + method_plan(nb)
        for label, over in rows:
            for seed in (nb.seeds if label != "predistill" else [BASE_SEED]):
                p = _params(nb, **{"task.name": task, "seed": seed, **over})
                run = train(p)
                texts = [r["output"] for r in run.outputs("test")]
                div.append({"task": task, "method": label, "seed": seed, "distinct1": distinct_n(texts, 1),
                            "distinct2": distinct_n(texts, 2)})
                if seed != (nb.seeds[0] if label != "predistill" else BASE_SEED):
                    continue
                kl = trajectory_kls(p, run, nb.n_inputs, nb.n_samples, seed=nb.seeds[0])
                ls, ex = excess_error_percent(kl["student"][0], kl["student"][1], kl["teacher"][0], kl["teacher"][1])
                curves += [{"task": task, "method": label, "l": int(li), "exerror": float(e)} for li, e in zip(ls, ex)]
                mean_len = float(kl["student"][1].sum(1).float().mean())
                at = {f"exerror_at_{n}": float(ex[n - 1]) for n in (5, 10, 20) if n <= len(ex)}
                at["exerror_at_mean_len"] = float(ex[min(len(ex), max(1, round(mean_len))) - 1])
                summary.append({"task": task, "method": label, "mean_length": mean_len, **at})
    return pd.DataFrame(curves), pd.DataFrame(summary), pd.DataFrame(div)


def reward_watch_runs(nb: DiagnosticsParams) -> pd.DataFrame:
    """The reward-hacking watch of every RL run of Table 1 (all seeds): how the greedy dev return,
    the dev metric, the length and distinct-2 moved over training, and the run's flag (return up
    while the metric went down; recorded in its summary.json)."""
    ensure_runs(nb)
    rows = []
    for task in nb.tasks:
        for seed in nb.seeds:
            for label, over in method_plan(nb):
                if over["method"] not in ("llmr", "llmr_mean", "llmr_minvar", "ketchup"):
                    continue
                s = train(_params(nb, **{"task.name": task, "seed": seed, **over})).summary()
                w = s.get("reward_watch") or {}
                rows.append({"task": task, "method": label, "seed": seed, **w})
    return pd.DataFrame(rows)


def reward_watch_correlation(watch: pd.DataFrame) -> pd.DataFrame:
    """Per task: Pearson and Spearman correlation, across RL runs, between the gain in the return
    RL optimises and the gain in the task metric; and how many runs were flagged."""
    from scipy.stats import pearsonr, spearmanr

    rows = []
    for task, g in watch.groupby("task", sort=False):
        g = g.dropna(subset=["return_gain", "metric_gain"])
        r = pearsonr(g.return_gain, g.metric_gain) if len(g) > 2 else None
        rho = spearmanr(g.return_gain, g.metric_gain) if len(g) > 2 else None
        rows.append({"task": task, "runs": len(g), "flagged": int(g["flag"].sum()) if "flag" in g else 0,
                     "pearson_r": float(r.statistic) if r else float("nan"), "pearson_p": float(r.pvalue) if r else float("nan"),
                     "spearman_rho": float(rho.statistic) if rho else float("nan"),
                     "mean_return_gain": float(g.return_gain.mean()), "mean_metric_gain": float(g.metric_gain.mean())})
    return pd.DataFrame(rows)


def adaptive_k_study(nb: DiagnosticsParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """rl.k: auto against the best fixed K of Table 1, chosen per task on DEV (mean over seeds of
    the primary metric at the best checkpoint). Returns (long test results of ketchup_kauto and
    the chosen fixed K, with ``role``; a table of the choice: task, best fixed K, its dev score,
    auto's dev score, the mean K auto used in training)."""
    ensure_runs(nb)
    results, choice = [], []
    for task in nb.tasks:
        dev = {}
        for k in nb.k_values:
            vals = []
            for seed in nb.seeds:
                s = train(_params(nb, **{"task.name": task, "seed": seed, "method": "ketchup", "rl.k": k})).summary()
                vals.append(s["dev"][s["primary"]])
            dev[k] = sum(vals) / len(vals)
        primary = s["primary"]
        higher = HIGHER_IS_BETTER.get(primary, True)
        best_k = max(dev, key=lambda k: dev[k] if higher else -dev[k])
        auto_dev, k_means = [], []
        for seed in nb.seeds:
            run = train(_params(nb, **{"task.name": task, "seed": seed, "method": "ketchup", "rl.k": "auto"}))
            s = run.summary()
            auto_dev.append(s["dev"][primary])
            k_means += run.curve("train/k_mean")[1]
            results += _rows(task, "ketchup_kauto", seed, s)
            fixed = train(_params(nb, **{"task.name": task, "seed": seed, "method": "ketchup", "rl.k": best_k})).summary()
            results += _rows(task, f"ketchup_k{best_k}", seed, fixed)
        choice.append({"task": task, "primary": primary, "best_fixed_k": best_k, "best_fixed_dev": dev[best_k],
                       "auto_dev": sum(auto_dev) / len(auto_dev), "auto_mean_k": sum(k_means) / max(1, len(k_means)),
                       **{f"dev_k{k}": v for k, v in dev.items()}})
    return pd.DataFrame(results), pd.DataFrame(choice)


# ----------------------------------------------------------------------------- 09: gradient variance (issue 13)
def logprob_jvps(model, arch: str, src, src_m, tokens, mask, directions: list[dict]) -> torch.Tensor:
    """Directional derivatives of every sampled token's log-probability: ``out[j, b, t] =
    grad_theta log pi(y_bt | s_bt) . v_j`` for each direction ``v_j`` (a dict of parameter name ->
    tensor; parameters it does not name are held fixed). One forward-mode pass (``torch.func.jvp``)
    per direction, whatever the batch: memory O(params + r B T), never a per-sample gradient.
    Needs the kit's fast forward (the library's attention has no forward-mode derivative).
    Returns (r, B, T)."""
    from torch.func import jvp
    from torch.nn.utils.stateless import _reparametrize_module

    names = list(directions[0])
    base = {n: t.detach() for n, t in model.named_parameters() if n in names}

    def logp(params):
        with _reparametrize_module(model, params, tie_weights=True):
            logits = forward_logits(model, arch, src, src_m, tokens, mask)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # at least float32
        return torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    return torch.stack([jvp(logp, (base,), ({n: v[n] for n in names},))[1] for v in directions])


def random_directions(model, n: int, seed: int, names=None) -> list[dict]:
    """``n`` directions v ~ N(0, I) over the named parameters (all of them by default)."""
    g = torch.Generator().manual_seed(seed)
    params = [(k, t) for k, t in model.named_parameters() if names is None or k in names]
    return [{k: torch.randn(t.shape, generator=g).to(t.device, t.dtype) for k, t in params} for _ in range(n)]


def gradient_variance(nb: GradientVarianceParams) -> pd.DataFrame:
    """Issue 13: the policy gradient's variance, signal-to-noise ratio and bias (cosine with the
    gradient under the true return) for K-step returns, measured directly. For each student of
    Figure 2, ``n_samples`` outputs per input are sampled, scored by the teacher, and each
    per-sample gradient ``g_n = sum_t G^_t grad log pi(y_t|s_t)`` (over the policy's own tokens) is
    projected on ``n_directions`` Gaussian directions through forward-mode derivatives of the
    log-probabilities (kdlib.stats.projected_gradient_stats). Beside it, the return variance of
    Figure 2 on the same samples. One row per (student, K, tail), averaged over inputs."""
    from kdlib.stats import projected_cosine, projected_gradient_stats

    ensure_runs(nb)
    acc = get_accelerator()
    rows = []
    for steps in nb.student_steps:
        p = _variance_bias_params(nb, steps)
        task = load_task_bundle(p)
        teacher = _teacher_model(p, task).to(acc.device)
        student = frozen(load_run_model(p, ensure_predistill(p))[0]).to(acc.device)
        dirs = random_directions(student, nb.n_directions, seed=nb.seeds[0])
        M, N = min(nb.n_inputs, task.split_size("test")), nb.n_samples
        g = torch.Generator(device=acc.device).manual_seed(nb.seeds[0])
        idx = [i for i in range(M) for _ in range(N)]
        left = task.arch == "causal"
        src, sm = pad([task.student_src["test"][i] for i in idx], task.tok.pad_token_id, left=left, device=acc.device)
        tsrc, tsm = pad([task.teacher_src["test"][i] for i in idx], task.tok.pad_token_id, left=left, device=acc.device)
        roll = generate(student, task.tok, src, sm, arch=task.arch, max_new_tokens=task.max_target_len, do_sample=True,
                        use_calculator=task.use_calculator, generator=g)
        q_sa, v, t_logp = teacher_scores(teacher, task.arch, tsrc, tsm, roll.tokens, roll.mask, p.rl.normalize)
        s_logp = token_logprobs(forward_logits(student, task.arch, src, sm, roll.tokens, roll.mask), roll.tokens)
        kl = float(((s_logp - t_logp) * roll.mask).sum() / roll.mask.sum())
        tan = logprob_jvps(student, task.arch, src, sm, roll.tokens, roll.mask, dirs)  # (r, M N, T)
        act = roll.action_mask.float()
        proj = {}
        for k in nb.k_values:
            for tail in ("algorithm1", "block"):  # K = 1 is the same estimator (LLMR) under both
                G = returns.kstep_returns(q_sa, v, roll.mask, k, tail=tail) * act  # (M N, T)
                proj[(k, tail)] = (tan * G.unsqueeze(0)).sum(-1).reshape(len(dirs), M, N).cpu().numpy()  # (r, M, N)
        true = proj[(1, "algorithm1")]
        for (k, tail), P in proj.items():
            per_input = [projected_gradient_stats(P[:, m, :]) for m in range(M)]
            ret = returns.kstep_returns(q_sa, v, roll.mask, k, tail=tail)[:, 0].reshape(M, N).double()
            rows.append({"student": f"pre-distilled {steps} steps", "steps": steps, "kl": kl, "k": k, "tail": tail,
                         "trace_var": float(np.mean([s["trace_var"] for s in per_input])),
                         "snr": float(np.nanmean([s["snr"] for s in per_input])),
                         "cosine_to_true": projected_cosine(P.reshape(len(dirs), -1), true.reshape(len(dirs), -1)),
                         "return_var": float(ret.var(dim=1, unbiased=True).mean())})
    return pd.DataFrame(rows)


def curve_shape(k, y) -> str:
    """'falls monotonically', 'U-shaped (lowest at K=k)', 'rises' or 'flat/mixed' for a curve y(K)."""
    order = np.argsort(np.asarray(k))
    k, y = np.asarray(k)[order], np.asarray(y, dtype=float)[order]
    d = np.diff(y)
    if np.all(d <= 0):
        return "falls monotonically"
    i = int(np.argmin(y))
    if 0 < i < len(y) - 1 and np.all(np.diff(y[: i + 1]) <= 0) and y[-1] > y[i]:
        return f"U-shaped (lowest at K={int(k[i])})"
    if y[-1] > y[0] and i == 0:
        return "rises"
    return f"mixed (lowest at K={int(k[i])})"


def gradient_variance_verdicts(df: pd.DataFrame) -> list[str]:
    """Does the gradient variance fall with K as the return variance does? Per tail and student:
    the shape of both curves over K and the ratio at the lowest point to K = 1."""
    lines = []
    for tail, g in df.groupby("tail", sort=False):
        for st, h in g.groupby("student", sort=False):
            h = h.sort_values("k")
            parts = []
            for col, name in (("return_var", "return variance"), ("trace_var", "gradient variance")):
                ratio = float(h[col].min() / h[col].iloc[0])
                parts.append(f"{name} {curve_shape(h['k'], h[col])}, lowest / K=1 = {ratio:.2f}")
            lines.append(f"{tail} tail, {st} (KL {h['kl'].iloc[0]:.2f}): " + "; ".join(parts) + ".")
    return lines


# ----------------------------------------------------------------------------- 10: decoder-only (seed 001 App. F)
def best_k_on_dev(p_of, tasks, seeds, k_values) -> pd.DataFrame:
    """The K of KETCHUP with the best mean dev score (primary metric at the best checkpoint) per
    task: seed 001 App. G's "lightweight grid search ... tuned by validation". ``p_of(task, seed,
    k)`` gives the run's params. Runs must exist (or are trained). One row per task."""
    rows = []
    for task in tasks:
        dev = {}
        for k in k_values:
            vals = []
            for seed in seeds:
                s = train(p_of(task, seed, k)).summary()
                vals.append(s["dev"][s["primary"]])
            dev[k] = float(np.mean(vals))
        higher = HIGHER_IS_BETTER.get(s["primary"], True)
        best = max(dev, key=lambda k: dev[k] if higher else -dev[k])
        rows.append({"task": task, "primary": s["primary"], "best_k": best, **{f"dev_k{k}": v for k, v in dev.items()}})
    return pd.DataFrame(rows)


def decoder_only(nb: DecoderOnlyParams) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seed 001 Tables 7-8 on decoder-only models. Returns (long test results for Table 7: teacher,
    zero-shot and pre-distilled students, KL, TVD, LLMR and KETCHUP at its dev-chosen K as
    ``ketchup_best``; the causal K grid on dev; Table 8: best K per architecture and task)."""
    ensure_runs(nb)
    results = []
    for task in nb.tasks:
        for label in ("teacher", "zeroshot", "predistill"):
            results += _rows(task, label, BASE_SEED, train(_params(nb, **{"task.name": task, "method": label})).summary())
        for seed in nb.seeds:
            for label, over in method_plan(nb):
                if over["method"] != "ketchup":
                    results += _rows(task, label, seed, train(_params(nb, **{"task.name": task, "seed": seed, **over})).summary())
    grid = best_k_on_dev(lambda t, s, k: _params(nb, **{"task.name": t, "seed": s, "method": "ketchup", "rl.k": k}),
                         nb.tasks, nb.seeds, nb.k_values)
    for r in grid.itertuples():
        for seed in nb.seeds:
            s = train(_params(nb, **{"task.name": r.task, "seed": seed, "method": "ketchup", "rl.k": r.best_k})).summary()
            results += _rows(r.task, f"ketchup_k{r.best_k}", seed, s)
    t5 = None
    runs_t5 = [load_params(*nb.t5_params_files, **{"task.name": t, "seed": s, "method": "ketchup", "rl.k": k})
               for t in nb.tasks for s in nb.t5_seeds for k in nb.k_values]
    if all(run_for(q).finished for q in runs_t5):  # Table 1's T5 runs, when 01_main_results has run
        t5 = best_k_on_dev(lambda t, s, k: load_params(*nb.t5_params_files, **{"task.name": t, "seed": s, "method": "ketchup",
                                                                                 "rl.k": k}), nb.tasks, nb.t5_seeds, nb.k_values)
    table8 = [{"architecture": "decoder-only (this run)", **{r.task: r.best_k for r in grid.itertuples()}}]
    if t5 is not None:
        table8.insert(0, {"architecture": "T5 (Table 1's runs)", **{r.task: r.best_k for r in t5.itertuples()}})
    return pd.DataFrame(results), grid, pd.DataFrame(table8)


def decoder_only_verdicts(numeric7: pd.DataFrame, table8: pd.DataFrame, tasks: list[str], n_seeds: int) -> list[str]:
    """One line per task (KETCHUP at its dev-chosen K minus LLMR on the task's primary metric, with
    the paired test when there are seeds for one) and one for Table 8."""
    from kdlib.report import PRIMARY_METRIC, task_kind

    lines = []
    for task in tasks:
        prim = PRIMARY_METRIC.get(task_kind(task) or "")
        sub = numeric7[(numeric7.task == task) & (numeric7.metric == prim)].set_index("method")
        ket = [m for m in sub.index if str(m).startswith("ketchup_k")]
        if not ket or "llmr" not in sub.index:
            continue
        d = float(sub.loc[ket[0], "mean"] - sub.loc["llmr", "mean"])
        p = sub.loc[ket[0]].get("p_vs_llmr", float("nan"))
        test = f", p = {p:.3f}" if isinstance(p, float) and p == p else " (one seed: no significance test)"
        lines.append(f"decoder-only {task}: KETCHUP at its dev-chosen K={ket[0].split('_k')[1]} minus LLMR = {d:+.2f} "
                     f"test {prim}{test}.")
    lines.append("Table 8 (best K on dev): " + "; ".join(
        f"{r['architecture']}: " + ", ".join(f"{t} K={r[t]}" for t in tasks if t in r) for r in table8.to_dict(orient="records")) + ".")
    return lines
