"""Run under `torchrun --nproc_per_node 2`: RL training on CPU (gloo), then each rank writes a
hash of its final weights so the test can check that every rank ends with the same model."""

import hashlib
import sys
from pathlib import Path

import torch

from kdlib.config import load_params
from kdlib.experiment import _teacher_model, ensure_predistill, method_run
from kdlib.trainers.base import get_accelerator, load_model, load_task_bundle, train_run
from kdlib.trainers.rl import rl_micro_loss

cache, out = sys.argv[1], Path(sys.argv[2])
p = load_params("params/smoke/kit.yaml", cache_dir=cache, method="ketchup", **{"rl.steps": 3, "rl.batch_size": 4})
acc = get_accelerator()
task = load_task_bundle(p)
pre = ensure_predistill(p)
teacher = _teacher_model(p, task)
model = load_model(p, task, p.models.student, checkpoint=str(pre.best_dir))
train_run(method_run(p), params=p, optim=p.rl, task=task, model=model, seed=p.seed, teacher=teacher,
          micro_loss=rl_micro_loss("ketchup", model, teacher, task, p.rl, acc, p.seed))
h = hashlib.sha256()
for name, t in sorted(model.state_dict().items()):
    h.update(name.encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
(out / f"rank{acc.process_index}.txt").write_text(f"{acc.num_processes} {acc.distributed_type} {h.hexdigest()}")
