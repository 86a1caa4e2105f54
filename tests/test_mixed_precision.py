"""bf16 runs keep float32 master weights: at the paper's RL learning rate they move like fp32 runs."""

import torch

from kdlib.config import Params
from kdlib.modeling.models import build_model
from kdlib.trainers.base import (
    autocast,
    get_accelerator,
    make_optimizer,
    optimizer_step,
)


def _train(dtype: str, steps: int = 5, lr: float = 1e-6):
    p = Params(models={"dtype": dtype}, rl={"lr": lr, "batch_size": 8, "steps": steps})
    torch.manual_seed(0)
    model = build_model("tiny-t5:micro", vocab_size=64, seed=3)  # a trained model: float32 master weights
    start = [q.detach().clone() for q in model.parameters()]
    opt = make_optimizer(model, p.rl)
    g = torch.Generator().manual_seed(1)
    src = torch.randint(3, 64, (8, 12), generator=g)
    tgt = torch.randint(3, 64, (8, 7), generator=g)

    def micro_loss(m, idx, step, micro):
        out = m(input_ids=src, attention_mask=torch.ones_like(src), labels=tgt)
        return out.loss, {}

    acc = get_accelerator()
    for step in range(steps):
        optimizer_step(model, opt, acc, micro_loss, p.rl, step, 0, 8, amp=lambda: autocast(p, "cpu"))
    delta = torch.cat([(q.detach() - s).flatten() for q, s in zip(model.parameters(), start)])
    return model, delta


def test_bf16_autocast_run_moves_weights_like_fp32_at_lr_1e6():
    m32, d32 = _train("float32")
    m16, d16 = _train("bfloat16")
    assert all(q.dtype == torch.float32 for q in m16.parameters())  # master weights stay float32
    moved32 = (d32 != 0).float().mean().item()
    moved16 = (d16 != 0).float().mean().item()
    assert moved32 > 0.9 and moved16 > 0.9  # bf16 *storage* would leave almost every weight unchanged
    cos = torch.nn.functional.cosine_similarity(d32, d16, dim=0).item()
    assert cos > 0.9, cos
    ratio = (d16.norm() / d32.norm()).item()
    assert 0.8 < ratio < 1.25, ratio


def test_bf16_storage_would_not_move():
    """The failure the kit avoids: AdamW on bf16 weights at lr 1e-6 changes almost nothing."""
    model = build_model("tiny-t5:micro", vocab_size=64, seed=3, dtype="bfloat16")
    before = [q.detach().clone() for q in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    src = torch.randint(3, 64, (8, 12), generator=torch.Generator().manual_seed(1))
    for _ in range(5):
        model(input_ids=src, attention_mask=torch.ones_like(src), labels=src[:, :7].contiguous()).loss.backward()
        opt.step()
        opt.zero_grad()
    moved = torch.cat([(q.detach() != b).flatten() for q, b in zip(model.parameters(), before)]).float().mean().item()
    assert moved < 0.2


def test_trained_models_load_in_float32_and_frozen_teachers_in_bf16(tmp_path):
    from types import SimpleNamespace

    from kdlib.modeling.models import save_checkpoint
    from kdlib.trainers.tasks import load_model

    model = build_model("tiny-t5:micro", vocab_size=64)
    save_checkpoint(model, None, tmp_path / "ck")
    p = Params(models={"dtype": "bfloat16"})
    task = SimpleNamespace(arch="seq2seq", tok=list(range(64)))
    trained = load_model(p, task, "tiny-t5:micro", checkpoint=str(tmp_path / "ck"))
    teacher = load_model(p, task, "tiny-t5:micro", checkpoint=str(tmp_path / "ck"), frozen_weights=True)
    assert next(trained.parameters()).dtype == torch.float32
    assert next(teacher.parameters()).dtype == torch.bfloat16
