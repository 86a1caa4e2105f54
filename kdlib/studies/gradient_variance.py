"""Notebook 09_gradient_variance: variance, SNR and bias of the policy gradient itself against K.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from kdlib.chains.core import _teacher_model, ensure_predistill, load_run_model
from kdlib.config import GradientVarianceParams, Params
from kdlib.maths import returns
from kdlib.modeling.evaluate import teacher_scores
from kdlib.modeling.generation import generate
from kdlib.modeling.models import forward_logits, pad, token_logprobs
from kdlib.studies.common import analysis_key, cached_frames, ensure_runs, kit_params
from kdlib.studies.variance_bias import variance_bias_params
from kdlib.trainers.base import get_accelerator
from kdlib.trainers.tasks import frozen, load_task_bundle


# ----------------------------------------------------------------------------- 09: gradient variance
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
    """The policy gradient's variance, signal-to-noise ratio and bias for K-step returns, measured directly. The bias
    is ``|E g_K - E g_1|^2 / |E g_1|^2`` against the gradient under the true return (K = 1), estimated without bias
    from the paired per-sample differences, with a jackknife CI over inputs (kdlib.maths.stats.projected_relative_bias);
    the plug-in cosine is kept beside it (Monte Carlo noise alone pulls it below 1). For each student of
    Figure 2, ``n_samples`` outputs per input are sampled, scored by the teacher, and each
    per-sample gradient ``g_n = sum_t G^_t grad log pi(y_t|s_t)`` (over the policy's own tokens) is
    projected on ``n_directions`` Gaussian directions through forward-mode derivatives of the
    log-probabilities (kdlib.maths.stats.projected_gradient_stats). Beside it, the return variance of
    Figure 2 on the same samples. One row per (student, K, tail), averaged over inputs. Kept in the run cache
    (kdlib.studies.common.cached_frames): a warm re-run reads it."""
    ensure_runs(nb)
    return cached_frames(kit_params(nb).cache_dir, "09_gradient_variance", analysis_key(nb), lambda: _measure(nb))


def _measure(nb: GradientVarianceParams) -> pd.DataFrame:
    from kdlib.maths.stats import (
        projected_cosine,
        projected_gradient_stats,
        projected_relative_bias,
    )

    acc = get_accelerator()
    rows = []
    for steps in nb.student_steps:
        p = variance_bias_params(nb, steps)
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
                         **projected_relative_bias(P, true),
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
            if "rel_bias" in h:
                top = h.iloc[-1]
                if np.isfinite(top["rel_bias"]):
                    seen = "above 0" if top["rel_bias_low"] > 0 else "not distinguishable from 0"
                    parts.append(f"gradient bias at K={int(top['k'])}: {top['rel_bias']:.3f} [{top['rel_bias_low']:.3f}, "
                                 f"{top['rel_bias_high']:.3f}] of |E g_1|^2 ({seen})")
                else:
                    parts.append(f"gradient bias at K={int(top['k'])}: not measurable (|E g_1|^2 is below its noise "
                                 "on these samples)")
            lines.append(f"{tail} tail, {st} (KL {h['kl'].iloc[0]:.2f}): " + "; ".join(parts) + ".")
    return lines


def plan(nb: GradientVarianceParams) -> list[Params]:
    """The same students as Figure 2's."""
    return [variance_bias_params(nb, steps) for steps in nb.student_steps]
