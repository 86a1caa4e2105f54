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
* GKD (``gkd_jsd``; Agarwal et al. 2024, TRL ``GKDTrainer``): with probability ``gkd_lambda`` per micro-batch the
  student's own samples, otherwise the teacher's outputs, scored by the generalised JSD(``gkd_beta``) over the full
  vocabulary (kdlib.maths.onpolicy.generalized_jsd); no gradient through the sampling.
* DistiLLM (``distillm``; Ko et al. 2024, Algorithm 1): the alpha-skew KL or skew reverse KL on fresh student
  outputs, on earlier ones from a replay buffer, or on the teacher's outputs, the share of student outputs adapted
  to the student's dev cross-entropy (:class:`DistiLLMLoss`, whose schedule is checkpointed with the run).
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
from kdlib.maths.losses import sequence_nll
from kdlib.maths.onpolicy import (
    FIXED,
    FRESH,
    distillm_source,
    distillm_threshold,
    generalized_jsd,
    skew_kl,
    skew_rkl,
)
from kdlib.modeling.generation import generate
from kdlib.modeling.models import forward_logits, pad
from kdlib.trainers.base import (
    ensemble_batch,
    MicroLoss,
    batch_src,
    batch_tgt,
    micro_generator,
    shared_encoder,
)
from kdlib.trainers.tasks import Task


def divergence_micro_loss(method: str, teacher, task: Task, teacher_outputs: list[str], dp: DivergenceParams,
                          accelerator, seed: int, teacher_cache=None, n_dev: int | None = None) -> MicroLoss:
    """The loss of one micro-batch of the divergence family. ``teacher_cache``: an
    :class:`kdlib.modeling.models.EncoderCache` of the teacher over the train prompts. ``n_dev``: the dev examples
    DistiLLM's validation loss reads (None: all)."""
    if method == "distillm":
        return DistiLLMLoss(teacher, task, teacher_outputs, dp, accelerator, seed, teacher_cache, n_dev)
    if method not in ("kl", "js", "tvd", "gkd_jsd"):
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
        if method == "gkd_jsd":  # one coin per micro-batch: the student's samples (lambda) or the fixed outputs
            on_policy = float(torch.rand(1, generator=g, device=g.device)) < dp.gkd_lambda
        else:
            on_policy = method in ("js", "tvd") and float(torch.rand(1, generator=g, device=g.device)) < dp.student_mix
        if on_policy:
            y, mask = student_samples(model, src, src_m, g, enc)
        else:  # prefixes from the teacher's outputs
            y, mask = batch_tgt(task, [teacher_outputs[i] for i in idx], dev)
        s_logits, t_logits = logits_on(model, src, src_m, t_src, t_src_m, y, mask, enc, t_enc)
        if method == "gkd_jsd":
            loss = generalized_jsd(s_logits, t_logits, dp.gkd_beta, mask)
        elif method == "kl":
            loss = kl_divergence(s_logits, t_logits, mask)
        elif method == "js":
            loss = js_divergence(s_logits, t_logits, mask, beta=dp.js_beta)
        else:
            loss = tvd(s_logits, t_logits, mask)
        return loss, {"on_policy": float(on_policy)}

    return micro_loss


class DistiLLMLoss:
    """DistiLLM's micro-batch loss (Ko et al., ICML 2024, Algorithm 1, as the authors' ``finetune.py`` runs it):

    * every micro-batch draws u ~ U(0, 1) and :func:`kdlib.maths.onpolicy.distillm_source` picks its outputs: fresh
      student samples (at ``divergence.temperature``; added to the replay buffer of the last ``distillm_capacity``
      outputs), a batch drawn from that buffer, or the teacher's outputs (the kit's fixed outputs, as KL's);
    * the loss is the alpha-skew KL ``KL(p_T || a p_T + (1 - a) q)`` (``skl``) or skew reverse KL
      ``KL(q || a q + (1 - a) p_T)`` (``srkl``) over the full vocabulary, mean over the output tokens;
    * at step 0 and every ``eval_every`` updates the student's cross-entropy of the dev references (teacher-forced,
      the first ``n_dev``) is measured; when it has risen by ``distillm_loss_eps`` since the last increase, the share
      of student outputs ``phi`` grows by 0.1 (:func:`kdlib.maths.onpolicy.distillm_threshold`).

    The schedule (``phi``, the reference loss) and the buffer are this object's state: the harness saves
    :meth:`state_dict` with every checkpoint and restores it on resume, so a resumed run trains as the uninterrupted
    one. Not done: the language-modelling loss on pre-training data (``lm_data_dir``; the kit has no such corpus)."""

    def __init__(self, teacher, task: Task, teacher_outputs: list[str], dp: DivergenceParams, accelerator, seed: int,
                 teacher_cache=None, n_dev: int | None = None):
        self.teacher, self.task, self.teacher_outputs, self.dp = teacher, task, teacher_outputs, dp
        self.acc, self.seed, self.teacher_cache = accelerator, seed, teacher_cache
        self.n_dev = task.split_size("dev") if n_dev is None else min(n_dev, task.split_size("dev"))
        self.phi, self.ref_loss = dp.distillm_init, None
        self.buffer: list[tuple[int, list[int]]] = []  # (train index, the student's output tokens, EOS included)
        self.evaluated: int | None = None  # the step whose dev loss was last measured

    # -- the schedule's state (checkpointed by the harness) --
    def state_dict(self) -> dict:
        return {"phi": self.phi, "ref_loss": self.ref_loss, "buffer": self.buffer, "evaluated": self.evaluated}

    def load_state_dict(self, state: dict) -> None:
        self.phi, self.ref_loss = float(state["phi"]), state["ref_loss"]
        self.buffer = [(int(i), [int(x) for x in toks]) for i, toks in state["buffer"]]
        self.evaluated = state.get("evaluated")

    @torch.no_grad()
    def dev_loss(self, model) -> float:
        """Token-mean cross-entropy of the dev references under the student (teacher-forced, eval mode)."""
        policy = self.acc.unwrap_model(model)
        was = policy.training
        policy.eval()
        dev, bs = self.acc.device, 64
        total, count = 0.0, 0
        for lo in range(0, self.n_dev, bs):
            idx = list(range(lo, min(self.n_dev, lo + bs)))
            src, src_m = batch_src(self.task, "dev", idx, "student", dev)
            y, m = batch_tgt(self.task, [self.task.targets["dev"][i] for i in idx], dev)
            n = int(m.sum())
            total += float(sequence_nll(forward_logits(policy, self.task.arch, src, src_m, y, m), y, m)) * n
            count += n
        policy.train(was)
        return total / max(1, count)

    def _adapt(self, model, step: int) -> None:
        if self.evaluated == step or step % self.dp.eval_every:
            return
        loss = self.dev_loss(model)
        if self.ref_loss is None:  # the loss before training: the first reference
            self.ref_loss = loss
        else:
            self.phi, self.ref_loss = distillm_threshold(self.phi, self.ref_loss, loss, self.dp.distillm_loss_eps)
        self.evaluated = step

    def __call__(self, model, idx: list[int], step: int, micro: int):
        dp, task, dev = self.dp, self.task, self.acc.device
        if micro == 0:
            self._adapt(model, step)
        g = micro_generator(self.seed, step, micro, self.acc.process_index, dev)
        u = float(torch.rand(1, generator=g, device=g.device))
        source = distillm_source(u, self.phi, step, dp.steps, len(self.buffer), dp.distillm_capacity)
        src, src_m = batch_src(task, "train", idx, "student", dev)
        enc = shared_encoder(model, self.acc, task, src, src_m)
        if source == FRESH:
            roll = generate(self.acc.unwrap_model(model), task.tok, src, src_m, arch=task.arch,
                            max_new_tokens=task.max_target_len, do_sample=True, temperature=dp.temperature,
                            use_calculator=task.use_calculator, generator=g,
                            encoder_hidden=None if enc is None else enc.detach())
            y, mask = roll.tokens, roll.mask  # (B, T)
            self.buffer += [(i, y[b][mask[b]].tolist()) for b, i in enumerate(idx)]
            self.buffer = self.buffer[-dp.distillm_capacity:]
        elif source == FIXED:
            y, mask = batch_tgt(task, [self.teacher_outputs[i] for i in idx], dev)
        else:  # replay: a batch of earlier student outputs, drawn without replacement
            pick = torch.randperm(len(self.buffer), generator=g, device=g.device)[:len(idx)].tolist()
            idx = [self.buffer[j][0] for j in pick]
            y, mask = pad([self.buffer[j][1] for j in pick], task.tok.pad_token_id, device=dev)
            src, src_m = batch_src(task, "train", idx, "student", dev)
            enc = shared_encoder(model, self.acc, task, src, src_m)
        t_src, t_src_m = batch_src(task, "train", idx, "teacher", dev)
        t_enc = None
        if self.teacher_cache is not None:
            t_enc, t_src_m = self.teacher_cache.get(idx)
        with torch.no_grad():
            t_logits = forward_logits(self.teacher, task.arch, t_src, t_src_m, y, mask, t_enc)  # (B, T, V)
        s_logits = forward_logits(model, task.arch, src, src_m, y, mask, enc)  # (B, T, V)
        skew = skew_kl if dp.distillm_loss == "skl" else skew_rkl
        loss = skew(s_logits, t_logits, dp.distillm_alpha, mask)
        return loss, {"sgo_share": self.phi, "student_outputs": float(source != FIXED),
                      "replayed": float(source not in (FRESH, FIXED))}


def divergence_ensemble_micro_loss(method: str, teacher, task: Task, teacher_outputs: list[str], dp: DivergenceParams,
                                   accelerator, seeds: list[int], teacher_cache=None):
    """:func:`divergence_micro_loss` for a seed ensemble (kdlib.trainers.ensemble): member s scores its own
    micro-batch ``idxs[s]`` with its own generator (its coin, then its samples, drawn in the single run's order);
    the members' samples are decoded together, the teacher scores the concatenated batch in one pass, the students
    run batched, and each member's divergence is computed on its own rows. Returns the members' losses and logs."""
    if method not in ("kl", "js", "tvd"):
        raise ValueError(f"not a divergence method: {method!r}")
    dev = accelerator.device
    rank = accelerator.process_index
    S = len(seeds)
    pad_id = task.tok.pad_token_id

    def micro_loss(model, idxs: list[list[int]], step: int, micro: int):
        B = len(idxs[0])
        flat, gens, src, src_m, t_src, t_src_m = ensemble_batch(task, idxs, seeds, step, micro, rank, dev)  # (S*B, L)
        t_enc = None
        if teacher_cache is not None:
            t_enc, t_src_m = teacher_cache.get(flat)
        L = src.shape[1]
        enc = model.encoder_states(src.view(S, B, L), src_m.view(S, B, L))  # (S, B, L, D) with gradient

        def student_samples():
            roll = generate(model, task.tok, src, src_m, arch=task.arch, max_new_tokens=task.max_target_len,
                            do_sample=True, temperature=dp.temperature, use_calculator=task.use_calculator,
                            generator=gens, encoder_hidden=enc.detach().view(S * B, L, -1))
            return roll.tokens, roll.mask  # (S*B, T) each

        def logits_on(y, mask):  # per-member student logits [(B, T, V)] and the teacher's (S*B, T, V)
            with torch.no_grad():
                t_logits = forward_logits(teacher, task.arch, t_src, t_src_m, y, mask, t_enc)
            T = y.shape[1]
            hidden = model.forward_hidden(src.view(S, B, L), src_m.view(S, B, L), y.view(S, B, T), enc)
            return model.member_logits(hidden), t_logits

        rows = [slice(s * B, (s + 1) * B) for s in range(S)]
        if method in ("js", "tvd") and dp.estimator == "wen":
            y_tp, m_tp = batch_tgt(task, [teacher_outputs[i] for i in flat], dev)  # teacher prefixes
            y_sp, m_sp = student_samples()  # student prefixes
            s_tp, t_tp = logits_on(y_tp, m_tp)
            s_sp, t_sp = logits_on(y_sp, m_sp)
            losses, logs = [], []
            for s, r in enumerate(rows):
                if method == "js":
                    loss = wen_js_divergence(s_tp[s], t_tp[r], m_tp[r], s_sp[s], t_sp[r], m_sp[r], beta=dp.js_beta)
                else:
                    loss = wen_tvd(s_tp[s], t_tp[r], m_tp[r], s_sp[s], t_sp[r], m_sp[r])
                losses.append(loss)
                logs.append({"student_len": float(m_sp[r].sum(1).float().mean())})
            return losses, logs
        on = [method in ("js", "tvd") and float(torch.rand(1, generator=g, device=g.device)) < dp.student_mix
              for g in gens]
        y, mask = batch_tgt(task, [teacher_outputs[i] for i in flat], dev)  # prefixes from the teacher's outputs
        if any(on):  # members whose coin chose student prefixes read their own samples
            y_s, m_s = student_samples()
            T = max(y.shape[1], y_s.shape[1])
            y, mask = _pad_to(y, mask, T, pad_id)
            y_s, m_s = _pad_to(y_s, m_s, T, pad_id)
            pick = torch.tensor(on, device=dev).repeat_interleave(B)[:, None]  # (S*B, 1)
            y, mask = torch.where(pick, y_s, y), torch.where(pick, m_s, mask)
        s_logits, t_logits = logits_on(y, mask)
        losses, logs = [], []
        for s, r in enumerate(rows):
            if method == "kl":
                loss = kl_divergence(s_logits[s], t_logits[r], mask[r])
            elif method == "js":
                loss = js_divergence(s_logits[s], t_logits[r], mask[r], beta=dp.js_beta)
            else:
                loss = tvd(s_logits[s], t_logits[r], mask[r])
            losses.append(loss)
            logs.append({"on_policy": float(on[s])})
        return losses, logs

    return micro_loss


def _pad_to(y, mask, T: int, pad_id: int):
    """Right-pad (N, T0) tokens and their mask to T columns (pad id, mask False)."""
    extra = T - y.shape[1]
    if extra <= 0:
        return y, mask
    return (torch.cat([y, y.new_full((y.shape[0], extra), pad_id)], 1),
            torch.cat([mask, mask.new_zeros((mask.shape[0], extra))], 1))
