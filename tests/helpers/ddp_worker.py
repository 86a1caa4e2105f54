"""Run under `torchrun --nproc_per_node 2`: RL optimiser steps on CPU (gloo) through the
harness's `optimizer_step`, each rank sampling its own shard of every batch; then each rank writes
a hash of its weights so the test can check that DDP kept every rank on the same model."""

import contextlib
import hashlib
import sys
from pathlib import Path

import torch

from kdlib.chains.core import _teacher_model, ensure_predistill
from kdlib.config import load_params
from kdlib.trainers.base import get_accelerator, optimizer_step
from kdlib.trainers.ppo import ppo_step_fn, prepare_policy, seed001_method
from kdlib.trainers.rl import rl_micro_loss
from kdlib.trainers.tasks import load_model, load_task_bundle

cache, out = sys.argv[1], Path(sys.argv[2])
family = sys.argv[3] if len(sys.argv) > 3 else "rl"
p = load_params("params/smoke/kit.yaml", cache_dir=cache, method="ketchup" if family == "rl" else "llmr_ppo",
                **{"rl.batch_size": 4, "rl.lr": 1e-3, "ppo.batch_size": 4, "ppo.lr": 1e-3, "ppo.epochs": 1,
                   "ppo.minibatches": 2})
acc = get_accelerator()
task = load_task_bundle(p)
pre = ensure_predistill(p)
teacher = _teacher_model(p, task)
model = load_model(p, task, p.models.student, checkpoint=str(pre.best_dir))
if family == "ppo":  # PPO with a critic: the value head is part of the DDP-wrapped model
    method = seed001_method("llmr_ppo", teacher, task, p.ppo)
    prepare_policy(model, method, p.ppo)
opt = torch.optim.AdamW(model.parameters(), lr=p.rl.lr)
model, opt = acc.prepare(model, opt)
if family == "ppo":
    step_fn = ppo_step_fn(method, task, p.ppo, acc, p.seed)
    for step in range(3):
        logs = step_fn(model, opt, step, contextlib.nullcontext)
else:
    micro = rl_micro_loss("ketchup", teacher, task, p.rl, acc, p.seed)
    for step in range(3):
        logs = optimizer_step(model, opt, acc, micro, p.rl, step, p.seed, task.split_size("train"))
h = hashlib.sha256()
for name, t in sorted(acc.unwrap_model(model).state_dict().items()):
    h.update(name.encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
(out / f"rank{acc.process_index}.txt").write_text(
    f"{acc.num_processes} {acc.distributed_type} {h.hexdigest()} {type(model).__name__} {logs['return']:.6f}")
