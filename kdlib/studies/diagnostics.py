"""Notebook 11_diagnostics: exposure bias (ExError%), distinct-n, the reward-hacking watch and adaptive K.
"""

from __future__ import annotations

import pandas as pd
import torch

from kdlib.chains.core import BASE_SEED, _teacher_model, load_run_model, train
from kdlib.config import DiagnosticsParams, Params
from kdlib.maths.metrics import HIGHER_IS_BETTER
from kdlib.modeling.generation import generate
from kdlib.modeling.models import forward_logits, pad
from kdlib.studies.common import (
    analysis_key,
    cached_frames,
    ensure_runs,
    kit_params,
    method_plan,
    method_targets,
    result_rows,
)
from kdlib.trainers.base import get_accelerator
from kdlib.trainers.runs import Run
from kdlib.trainers.tasks import frozen, load_task_bundle


# ----------------------------------------------------------------------------- 11: diagnostics
@torch.no_grad()
def trajectory_kls(p: Params, run: Run, n_inputs: int, n_samples: int, seed: int = 0) -> dict:
    """Per-position forward KL(teacher || student) along trajectories SAMPLED by the student and by
    the teacher (temperature 1) on the first ``n_inputs`` test inputs, ``n_samples`` each: the
    ingredients of LLMR's ExError% (kdlib.maths.stats.excess_error_percent). Returns
    ``{"student": (kl (N, L), mask), "teacher": (kl, mask)}`` as CPU tensors."""
    from kdlib.maths.full_vocab import full_vocab_kl

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
    task, method, seed, distinct1, distinct2). Kept in the run cache (kdlib.studies.common.cached_frames): a warm
    re-run reads it."""
    ensure_runs(nb)
    return cached_frames(kit_params(nb).cache_dir, "11_exposure", analysis_key(nb), lambda: _exposure(nb))


def _exposure(nb: DiagnosticsParams) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    from kdlib.maths.metrics import distinct_n
    from kdlib.maths.stats import excess_error_percent

    curves, summary, div = [], [], []
    for task in nb.tasks:
        rows = [("predistill", {"method": "predistill"})] + method_plan(nb)
        for label, over in rows:
            for seed in (nb.seeds if label != "predistill" else [BASE_SEED]):
                p = kit_params(nb, **{"task.name": task, "seed": seed, **over})
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
                s = train(kit_params(nb, **{"task.name": task, "seed": seed, **over})).summary()
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
                s = train(kit_params(nb, **{"task.name": task, "seed": seed, "method": "ketchup", "rl.k": k})).summary()
                vals.append(s["dev"][s["primary"]])
            dev[k] = sum(vals) / len(vals)
        primary = s["primary"]
        higher = HIGHER_IS_BETTER.get(primary, True)
        best_k = max(dev, key=lambda k: dev[k] if higher else -dev[k])
        auto_dev, k_means = [], []
        for seed in nb.seeds:
            run = train(kit_params(nb, **{"task.name": task, "seed": seed, "method": "ketchup", "rl.k": "auto"}))
            s = run.summary()
            auto_dev.append(s["dev"][primary])
            k_means += run.curve("train/k_mean")[1]
            results += result_rows(task, "ketchup_kauto", seed, s)
            fixed = train(kit_params(nb, **{"task.name": task, "seed": seed, "method": "ketchup", "rl.k": best_k})).summary()
            results += result_rows(task, f"ketchup_k{best_k}", seed, fixed)
        choice.append({"task": task, "primary": primary, "best_fixed_k": best_k, "best_fixed_dev": dev[best_k],
                       "auto_dev": sum(auto_dev) / len(auto_dev), "auto_mean_k": sum(k_means) / max(1, len(k_means)),
                       **{f"dev_k{k}": v for k, v in dev.items()}})
    return pd.DataFrame(results), pd.DataFrame(choice)


def plan(nb: DiagnosticsParams) -> list[Params]:
    """Table 1's RL runs and adaptive K (``rl.k: auto``)."""
    return method_targets(nb, nb.tasks, nb.seeds, method_plan(nb) + [("ketchup_kauto", {"method": "ketchup", "rl.k": "auto"})])
