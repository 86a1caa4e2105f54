"""Divergence family (floor 3): word-level KD with a full-vocabulary divergence between teacher
and student next-token distributions on fixed prefixes (Wen et al. 2023; seed 000 Sec. 3.1).

* KL: KL(teacher || student) on the teacher's outputs (Hinton et al. 2015, word-level KD).
* JS, TVD with ``divergence.estimator: wen`` (default): Wen et al.'s step-wise decomposition.
  Every micro-batch scores both halves: the teacher-prefix half on the cached teacher outputs
  (JS: beta KL(p||m); TVD: 1/2 TVD) and the student-prefix half on the student's own samples
  (JS: (1-beta) KL(q||m); TVD: 1/2 TVD), m = beta p + (1-beta) q (kdlib.maths.losses.wen_js_divergence,
  wen_tvd).
* JS, TVD with ``estimator: mixed_prefix``: the kit's earlier estimator. With probability
  ``student_mix`` a micro-batch uses the student's samples, otherwise the teacher's outputs, and
  the full JSD / TVD is scored on those prefixes. The coin is drawn from the same resumable RNG
  as the samples.
SeqKD lives in the supervised family (likelihood of the teacher's outputs).
"""

from __future__ import annotations

import torch

from kdlib.config import DivergenceParams
from kdlib.maths.losses import (
    js_divergence,
    kl_divergence,
    tvd,
    wen_js_divergence,
    wen_tvd,
)
from kdlib.modeling.generation import generate
from kdlib.modeling.models import forward_logits
from kdlib.trainers.base import (
    MicroLoss,
    batch_src,
    batch_tgt,
    micro_generator,
    shared_encoder,
)
from kdlib.trainers.tasks import Task


def divergence_micro_loss(method: str, teacher, task: Task, teacher_outputs: list[str], dp: DivergenceParams,
                          accelerator, seed: int, teacher_cache=None) -> MicroLoss:
    """The loss of one micro-batch of the divergence family. ``teacher_cache``: an
    :class:`kdlib.modeling.models.EncoderCache` of the teacher over the train prompts."""
    if method not in ("kl", "js", "tvd"):
        raise ValueError(f"not a divergence method: {method!r}")
    dev = accelerator.device
    rank = accelerator.process_index

    def student_samples(model, src, src_m, g, enc):  # prefixes sampled from the current student
        roll = generate(accelerator.unwrap_model(model), task.tok, src, src_m, arch=task.arch,
                        max_new_tokens=task.max_target_len, do_sample=True, temperature=dp.temperature,
                        use_calculator=task.use_calculator, generator=g,
                        encoder_hidden=None if enc is None else enc.detach())
        return roll.tokens, roll.mask  # (B, T) each

    def logits_on(model, src, src_m, t_src, t_src_m, y, mask, enc, t_enc):  # student and teacher logits on y
        with torch.no_grad():
            t_logits = forward_logits(teacher, task.arch, t_src, t_src_m, y, mask, t_enc)  # (B, T, V)
        s_logits = forward_logits(model, task.arch, src, src_m, y, mask, enc)  # (B, T, V)
        return s_logits, t_logits

    def micro_loss(model, idx: list[int], step: int, micro: int):
        g = micro_generator(seed, step, micro, rank, dev)
        src, src_m = batch_src(task, "train", idx, "student", dev)
        t_src, t_src_m = batch_src(task, "train", idx, "teacher", dev)
        t_enc = None
        if teacher_cache is not None:
            t_enc, t_src_m = teacher_cache.get(idx)  # (B, S, D), (B, S)
        enc = shared_encoder(model, accelerator, task, src, src_m)  # (B, S, D) with gradient, or None
        if method in ("js", "tvd") and dp.estimator == "wen":
            y_tp, m_tp = batch_tgt(task, [teacher_outputs[i] for i in idx], dev)  # teacher prefixes
            y_sp, m_sp = student_samples(model, src, src_m, g, enc)  # student prefixes
            s_tp, t_tp = logits_on(model, src, src_m, t_src, t_src_m, y_tp, m_tp, enc, t_enc)
            s_sp, t_sp = logits_on(model, src, src_m, t_src, t_src_m, y_sp, m_sp, enc, t_enc)
            if method == "js":
                loss = wen_js_divergence(s_tp, t_tp, m_tp, s_sp, t_sp, m_sp, beta=dp.js_beta)
            else:
                loss = wen_tvd(s_tp, t_tp, m_tp, s_sp, t_sp, m_sp)
            return loss, {"student_len": float(m_sp.sum(1).float().mean())}
        on_policy = method in ("js", "tvd") and float(torch.rand(1, generator=g, device=g.device)) < dp.student_mix
        if on_policy:
            y, mask = student_samples(model, src, src_m, g, enc)
        else:  # prefixes from the teacher's outputs
            y, mask = batch_tgt(task, [teacher_outputs[i] for i in idx], dev)
        s_logits, t_logits = logits_on(model, src, src_m, t_src, t_src_m, y, mask, enc, t_enc)
        if method == "kl":
            loss = kl_divergence(s_logits, t_logits, mask)
        elif method == "js":
            loss = js_divergence(s_logits, t_logits, mask, beta=dp.js_beta)
        else:
            loss = tvd(s_logits, t_logits, mask)
        return loss, {"on_policy": float(on_policy)}

    return micro_loss
