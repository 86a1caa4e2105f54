"""Calibration of the embedded testbed (``python -m kdlib calibrate -f params/<profile>/kit.yaml``): per task,
from the trained teacher and the pre-distilled student of the run cache (trained first if missing),

- ``teacher_entropy_samples``: the teacher's entropy per token on its own samples (temperature 1, the
  task's calculator as in decoding; calculator-inserted tokens are not the teacher's and are left out);
- ``teacher_entropy_refs``: the same on the references (teacher forcing);
- ``kl_teacher_student``: KL(teacher || pre-distilled student) per token on the references;
- ``ref_length``: mean reference length in tokens (the kit's tokenizer, EOS included);
- ``data_entropy``: the entropy per token of the task's own distribution of valid targets, which only a generated
  task knows: ``draws`` targets y ~ P_true(. | x) per dev input from the generator's grammar, their exact
  -log P_true(y | x) summed over the tokens of y (None for a hub task). A teacher fitted to the data cannot be
  much sharper or flatter than this, so a teacher-entropy target above it needs a richer grammar, not training;
- ``teacher_metric`` / ``predistill_metric``: the primary test metric of the two runs;
  ``best_student_metric``: the best test primary metric of any finished distillation run of the cache
  that starts from this pre-distilled student (None when there is none);
- ``ambiguity``, ``n``, ``primary``, and ``targets_met`` (DESIGN.md "The embedded regime").

The statistics are computed on the first ``n`` dev inputs (model selection's split; the test split stays
untouched). Written to ``<output_dir>/calibration.json``, one record per task.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from kdlib.chains.core import ensure_predistill, ensure_teacher, predistill_run
from kdlib.config import EMBEDDED_TASKS, Params, load_params
from kdlib.data.variants import log_prob, sample
from kdlib.maths import calibration as cal
from kdlib.modeling.generation import generate
from kdlib.modeling.models import encode_targets, forward_logits, pad
from kdlib.trainers.runs import atomic_write_json, iter_runs
from kdlib.trainers.tasks import frozen, load_model, load_task_bundle

# DESIGN.md, "The embedded regime": the embedded default's targets.
TARGETS = {
    "mini-xsum": {"teacher_entropy_samples": 1.0, "ref_length": 20},
    "mini-europarl": {"teacher_entropy_samples": 0.6, "ref_length": 20},
    "mini-gsm8k": {"teacher_entropy_samples": 0.25, "ref_length": 80},
}
PREDISTILL_RATIO = (0.55, 0.92)


def targets_for(task: str) -> dict:
    """The calibration targets of a task ({} for hub tasks: the data is what it is)."""
    if task not in TARGETS:
        return {}
    return {**TARGETS[task], "predistill_ratio": PREDISTILL_RATIO, "best_student_not_above_teacher": True}


def best_student_metric(p: Params, primary: str) -> float | None:
    """Best test ``primary`` of the cache's finished runs whose parent is this pre-distilled student."""
    pre = predistill_run(p)
    best = None
    for folder in iter_runs(p.cache_dir, p.task.name):
        params_file, summary = folder / "params.json", folder / "summary.json"
        if not (params_file.is_file() and summary.is_file()):
            continue
        try:
            key = json.loads(params_file.read_text())
            test = json.loads(summary.read_text()).get("test") or {}
        except (OSError, ValueError):
            continue
        if key.get("parent") == pre.key and primary in test:  # a run's params.json names its parent by run key
            best = test[primary] if best is None else max(best, test[primary])
    return best


def calibrate_task(p: Params, n: int = 100, seed: int = 0, batch_size: int = 50) -> dict:
    """The calibration record of ``p.task`` (module docstring); trains the teacher and pre-distilled
    student first when the cache lacks them."""
    task = load_task_bundle(p)
    t_run, s_run = ensure_teacher(p, task), ensure_predistill(p)  # trains (with gradients) when missing
    with torch.no_grad():
        sums = _measure(p, task, t_run, s_run, n, seed, batch_size)
    n = min(n, task.split_size("dev"))
    primary = task.primary
    record = {
        "ambiguity": p.task.ambiguity,
        "n": n,
        "primary": primary,
        "teacher_entropy_samples": cal.per_token(*sums["samples"]),
        "teacher_entropy_refs": cal.per_token(*sums["refs"]),
        "kl_teacher_student": cal.per_token(*sums["kl"]),
        "ref_length": sums["refs"][1] / n,
        "data_entropy": (None if task.truth is None else
                         cal.per_token(*data_entropy_sum(task.truth, task.sources["dev"][:n], task.tok,
                                                         task.max_target_len, seed=seed))),
        "teacher_metric": t_run.summary()["test"][primary],
        "predistill_metric": s_run.summary()["test"][primary],
        "best_student_metric": best_student_metric(p, primary),
    }
    record["targets_met"] = cal.check_targets(record, targets_for(p.task.name))
    return record


def _measure(p: Params, task, t_run, s_run, n: int, seed: int, batch_size: int) -> dict:
    """Summed entropies and KL with their token counts: samples, refs, kl."""
    teacher = frozen(load_model(p, task, p.models.teacher, checkpoint=str(t_run.best_dir), frozen_weights=True))
    student = frozen(load_model(p, task, p.models.student, checkpoint=str(s_run.best_dir)))
    n = min(n, task.split_size("dev"))
    left = task.arch == "causal"
    pad_id = task.tok.pad_token_id
    g = torch.Generator().manual_seed(int(seed))
    sums = {k: [0.0, 0] for k in ("samples", "refs", "kl")}
    for lo in range(0, n, batch_size):
        idx = list(range(lo, min(n, lo + batch_size)))
        t_ids, t_m = pad([task.teacher_src["dev"][i] for i in idx], pad_id, left=left)
        s_ids, s_m = pad([task.student_src["dev"][i] for i in idx], pad_id, left=left)
        roll = generate(teacher, task.tok, t_ids, t_m, arch=task.arch, max_new_tokens=task.max_target_len,
                        do_sample=True, temperature=1.0, use_calculator=task.use_calculator, generator=g)
        logits = forward_logits(teacher, task.arch, t_ids, t_m, roll.tokens, roll.mask)  # (B, T, V)
        _add(sums["samples"], cal.token_entropy_sum(logits, roll.action_mask))
        refs, r_m = encode_targets(task.tok, [task.targets["dev"][i] for i in idx], task.max_target_len)
        t_logits = forward_logits(teacher, task.arch, t_ids, t_m, refs, r_m)
        _add(sums["refs"], cal.token_entropy_sum(t_logits, r_m))
        s_logits = forward_logits(student, task.arch, s_ids, s_m, refs, r_m)
        _add(sums["kl"], cal.token_kl_sum(t_logits, s_logits, r_m))
    return sums


def data_entropy_sum(truth, sources, tok, max_len: int, draws: int = 5, seed: int = 0) -> tuple[float, int]:
    """Sum over ``draws`` targets y ~ P_true(. | x) per source x (the generator's own sampler, one seeded stream) of
    the exact -log P_true(y | x) (kdlib.data.variants.log_prob over every derivation), and the number of their
    tokens (the kit's tokenizer, EOS included, as ``ref_length``): a Monte Carlo estimate of the true
    distribution's entropy per token, ``sum / count`` (``truth``: a :class:`kdlib.data.truth.TaskTruth`)."""
    rng = random.Random(seed)
    nats, count = 0.0, 0
    for x in sources:
        node = truth.node(x)
        ys = [sample(node, rng, truth.ambiguity) for _ in range(draws)]
        nats += sum(-log_prob(node, y, truth.ambiguity) for y in ys)
        count += int(encode_targets(tok, ys, max_len)[1].sum())
    return nats, count


def _add(acc: list, pair: tuple[float, int]) -> None:
    acc[0] += pair[0]
    acc[1] += pair[1]


def calibrate(files, overrides: dict | None = None, tasks=EMBEDDED_TASKS, n: int = 100, log=print) -> dict:
    """Calibration records of ``tasks``, one task at a time: the kit params ``files`` with ``overrides`` and
    ``task.name`` set to each (so each task's ``task_overrides`` apply)."""
    out = {}
    for name in tasks:
        q = load_params(*files, **{**(overrides or {}), "task.name": name})
        out[name] = calibrate_task(q, n=n)
        log(format_record(name, out[name]))
    return out


def format_record(name: str, r: dict) -> str:
    """One line per task: the values and the targets met."""
    met = ", ".join(f"{k} {'ok' if v else ('?' if v is None else 'MISSED')}" for k, v in r["targets_met"].items())
    best = "-" if r["best_student_metric"] is None else f"{r['best_student_metric']:.2f}"
    ratio = r["predistill_metric"] / r["teacher_metric"] if r["teacher_metric"] else float("nan")
    return (f"{name} (ambiguity {r['ambiguity']}): teacher entropy {r['teacher_entropy_samples']:.3f} nats/token on its "
            f"samples, {r['teacher_entropy_refs']:.3f} on references; KL(teacher||pre-distilled) "
            f"{r['kl_teacher_student']:.3f}; reference length {r['ref_length']:.1f} tokens; the data's own entropy "
            f"{'-' if r.get('data_entropy') is None else format(r['data_entropy'], '.3f')} nats/token; {r['primary']}: teacher "
            f"{r['teacher_metric']:.2f}, pre-distilled {r['predistill_metric']:.2f} ({100 * ratio:.0f}%), best student "
            f"{best}. Targets: {met or 'none (hub task)'}")


def write(records: dict, output_dir: str | Path) -> Path:
    """``<output_dir>/calibration.json`` (atomic)."""
    path = Path(output_dir) / "calibration.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, records)
    return path
