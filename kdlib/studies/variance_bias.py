"""Figure 2 (notebook 03_variance_bias): variance and bias of the K-step return for students at several KL distances.
"""

from __future__ import annotations

import pandas as pd
import torch

from kdlib.chains.core import _teacher_model, ensure_predistill, load_run_model
from kdlib.config import GradientVarianceParams, Params, VarianceBiasParams
from kdlib.maths.variance_bias import return_variance_bias
from kdlib.modeling.evaluate import teacher_scores
from kdlib.modeling.generation import generate
from kdlib.modeling.models import forward_logits, pad, token_logprobs
from kdlib.studies.common import ensure_runs, kit_params
from kdlib.trainers.base import get_accelerator
from kdlib.trainers.runs import Run
from kdlib.trainers.tasks import frozen, load_task_bundle


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


def variance_bias_params(nb: VarianceBiasParams | GradientVarianceParams, steps: int) -> Params:
    """The pre-distilled student stopped after ``steps`` updates (no plateau rule): students at
    several KL distances from the teacher."""
    return kit_params(nb, **{"task.name": nb.task, "method": "predistill", "predistill.steps": steps,
                          "predistill.eval_every": steps, "predistill.checkpoint_every": steps,
                          "predistill.patience": None})


def variance_bias(nb: VarianceBiasParams) -> pd.DataFrame:
    """Figure 2: variance and bias of the K-step return (Eqs. 20, 25) for students at several KL
    distances from the teacher (pre-distillation stopped after ``student_steps`` steps), both
    tail rules. One row per (student, K, tail), averaged over inputs."""
    ensure_runs(nb)
    rows = []
    for steps in nb.student_steps:
        p = variance_bias_params(nb, steps)
        run = ensure_predistill(p)
        q_sa, v, mask, kl = sample_q(p, run, nb.n_inputs, nb.n_samples, seed=nb.seeds[0])
        for k in nb.k_values:
            for tail in ("algorithm1", "block"):
                est = return_variance_bias(q_sa, v, mask, k, tail=tail)
                rows.append({"student": f"pre-distilled {steps} steps", "steps": steps, "kl": kl, "k": k, "tail": tail,
                             **{name: float(est[name].float().mean()) for name in
                                ("var_seq", "bias_seq", "var_pos", "bias_pos")},
                             "abs_bias_seq": float(est["bias_seq"].abs().mean()),
                             "abs_bias_pos": float(est["bias_pos"].abs().mean())})
    return pd.DataFrame(rows)


def plan(nb: VarianceBiasParams) -> list[Params]:
    """The students at several KL distances (pre-distillation stopped at each of ``student_steps``)."""
    return [variance_bias_params(nb, steps) for steps in nb.student_steps]
