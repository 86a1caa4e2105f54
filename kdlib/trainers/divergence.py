"""Divergence family (floor 3): word-level KD with a full-vocabulary divergence between teacher
and student next-token distributions on fixed prefixes (Wen et al. 2023; seed 000 Sec. 3.1).

* KL: KL(teacher || student) on the teacher's outputs (Hinton et al. 2015, word-level KD).
* JS, TVD: on a mix of prefixes: with probability ``student_mix`` a micro-batch uses the student's
  own samples (on-policy), otherwise the teacher's outputs. The coin is drawn from the same
  resumable RNG as the samples.
SeqKD lives in the supervised family (likelihood of the teacher's outputs).
"""

from __future__ import annotations

import torch

from kdlib.config import DivergenceParams
from kdlib.generation import generate
from kdlib.losses import js_divergence, kl_divergence, tvd
from kdlib.models import forward_logits
from kdlib.trainers.base import MicroLoss, Task, batch_src, batch_tgt, micro_generator


def divergence_micro_loss(method: str, teacher, task: Task, teacher_outputs: list[str], dp: DivergenceParams,
                          accelerator, seed: int) -> MicroLoss:
    dev = accelerator.device
    rank = accelerator.process_index

    def micro_loss(model, idx: list[int], step: int, micro: int):
        g = micro_generator(seed, step, micro, rank)
        src, src_m = batch_src(task, "train", idx, "student", dev)
        t_src, t_src_m = batch_src(task, "train", idx, "teacher", dev)
        on_policy = method in ("js", "tvd") and float(torch.rand(1, generator=g)) < dp.student_mix
        if on_policy:  # prefixes sampled from the current student
            roll = generate(accelerator.unwrap_model(model), task.tok, src, src_m, arch=task.arch,
                            max_new_tokens=task.max_target_len, do_sample=True, temperature=dp.temperature,
                            use_calculator=task.use_calculator, generator=g)
            y, mask = roll.tokens, roll.mask  # (B, T)
        else:  # prefixes from the teacher's outputs
            y, mask = batch_tgt(task, [teacher_outputs[i] for i in idx], dev)
        with torch.no_grad():
            t_logits = forward_logits(teacher, task.arch, t_src, t_src_m, y, mask)  # (B, T, V)
        s_logits = forward_logits(model, task.arch, src, src_m, y, mask)  # (B, T, V)
        if method == "kl":
            loss = kl_divergence(s_logits, t_logits, mask)
        elif method == "js":
            loss = js_divergence(s_logits, t_logits, mask, beta=dp.js_beta)
        elif method == "tvd":
            loss = tvd(s_logits, t_logits, mask)
        else:
            raise ValueError(f"not a divergence method: {method!r}")
        return loss, {"on_policy": float(on_policy)}

    return micro_loss
