"""GPU check, ready to run on one GPU (at most ~8 minutes): prints one JSON object with

* ``rehearsal``: the paper profile's code path on the device (CUDA), in float32 and in bfloat16, on the local hub
  mirror (``scripts/make_hub_mirror.py``; written to a temporary folder unless ``--mirror DIR``), with the rehearsal's
  small settings (``params/rehearsal/kit.yaml``): KETCHUP (REINFORCE, FLAN-T5-XL -> T5-base on XSum), LLMR + PPO
  (critic, GAE) and seed 004's constrained KD (GRPO, Qwen2.5-Math pair, chat template). Per run: no crash, finite
  test metrics, seconds; and one sampled batch from the trained student, with the generator on the device;
* ``weights_move_alike``: float32 master weights under bf16 autocast at the paper's RL learning rate (1e-6): the
  weight update of 5 AdamW steps with bf16 autocast against the float32 one (cosine, norm ratio, share of weights
  moved), at T5-base shape, as ``tests/test_mixed_precision.py`` checks on CPU;
* ``rl_step``: ``benchmarks/rl_step.py``'s measurement at the T5-base/T5-large shapes (random weights): the kit's
  REINFORCE step and a peer-style step (ms), their ratio, sampled tokens/s, peak GPU memory, for B = 16 and 64 with
  the T5-base-shaped student and B = 16 with a T5-large-shaped student;
* ``ppo_step``: ``benchmarks/ppo_step.py``'s PPO iteration (rollout, scoring, updates) at the same shapes;
* ``elapsed_s`` and any section skipped for the time budget (``--budget-s``, default 420 s of measuring).

    .venv/bin/python benchmarks/gpu_check.py                 # on a GPU machine
    .venv/bin/python benchmarks/gpu_check.py --dry-run       # on CPU: the same code at tiny sizes, and what it
                                                             # would measure on the GPU ("would_measure")

Everything the measurements print goes to stderr; stdout is the JSON alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]

GPU_PLAN = {
    "rl_step": [{"student": "t5-base-shape", "teacher": "t5-large-shape", "B": 16, "T": 64, "steps": 6},
                {"student": "t5-base-shape", "teacher": "t5-large-shape", "B": 64, "T": 64, "steps": 6},
                {"student": "t5-large-shape", "teacher": "t5-large-shape", "B": 16, "T": 64, "steps": 4}],
    "ppo_step": [{"method": m, "student": "t5-base-shape", "teacher": "t5-large-shape", "B": 64, "T": 64, "steps": 4}
                 for m in ("llmr_ppo", "ketchup_ppo")],
    "weights_move_alike": {"size": "t5-base-shape", "steps": 5, "lr": 1e-6},
}
DRY_PLAN = {
    "rl_step": [{"student": "base", "teacher": "teacher", "B": 4, "T": 8, "steps": 2}],
    "ppo_step": [{"method": "llmr_ppo", "student": "base", "teacher": "teacher", "B": 4, "T": 8, "steps": 1}],
    "weights_move_alike": {"size": "micro", "steps": 5, "lr": 1e-6},
}
REHEARSAL_RUNS = (  # (label, params files, overrides)
    ("ketchup_xsum_t5", ["params/paper/kit.yaml"], {"method": "ketchup", "task.name": "xsum"}),
    ("llmr_ppo_xsum_t5", ["params/paper/kit.yaml"], {"method": "llmr_ppo", "task.name": "xsum"}),
    ("cmdp_gsm8k_qwen_chat", ["params/paper/kit.yaml", "params/paper/constrained_kd_qwen.yaml"], {"method": "cmdp"}),
)


def _finite(d: dict) -> bool:
    return all(math.isfinite(v) for v in d.values() if isinstance(v, (int, float)))


def rehearsal(dtype: str, mirror: Path, cache: Path) -> dict:
    """A few paper-profile runs on the accelerator's device in ``dtype``, on the mirror, with the rehearsal layer."""
    import torch

    from kdlib.chains.core import train
    from kdlib.config import load_params
    from kdlib.modeling.generation import generate
    from kdlib.modeling.models import load_pretrained, pad
    from kdlib.trainers.base import get_accelerator
    from kdlib.trainers.tasks import load_task_bundle

    dev = get_accelerator().device
    out = {"device": str(dev), "runs": {}}
    for label, files, over in REHEARSAL_RUNS:
        p = load_params(*files, "params/rehearsal/kit.yaml", cache_dir=str(cache / dtype),
                        **{**over, "models.dtype": dtype})
        t0 = time.perf_counter()
        try:
            run = train(p)
            s = run.summary()
            row = {"seconds": round(time.perf_counter() - t0, 1), "steps": s.get("steps"), "test": s.get("test"),
                   "finite": _finite(s.get("test") or {})}
            task = load_task_bundle(p)
            model = load_pretrained(str(run.best_dir), arch=task.arch, dtype="float32").to(dev).eval()
            ids, mask = pad(task.student_src["test"][:2], task.tok.pad_token_id, left=task.arch == "causal", device=dev)
            g = torch.Generator(device=dev).manual_seed(0)
            with torch.no_grad():
                sample = generate(model, task.tok, ids, mask, arch=task.arch, max_new_tokens=4, do_sample=True,
                                  generator=g)
            row["sampling_device"] = str(sample.tokens.device)
        except Exception as e:  # reported, not raised: the other checks still run
            row = {"error": f"{type(e).__name__}: {e}"[:2000], "seconds": round(time.perf_counter() - t0, 1)}
        out["runs"][label] = row
    out["ok"] = all(r.get("finite") and r.get("sampling_device", "").startswith(dev.type) for r in out["runs"].values())
    return out


def weights_move_alike(size: str, steps: int, lr: float) -> dict:
    """The weight update of ``steps`` AdamW steps on one fixed batch, bf16 autocast against float32."""
    import torch

    from kdlib.config import Params
    from kdlib.modeling.models import build_model
    from kdlib.trainers.base import autocast, get_accelerator, make_optimizer, optimizer_step

    acc = get_accelerator()
    dev = acc.device

    def train(dtype: str):
        p = Params(models={"dtype": dtype}, rl={"lr": lr, "batch_size": 8, "steps": steps})
        model = build_model(f"tiny-t5:{size}", vocab_size=512, seed=3).to(dev)
        start = [q.detach().clone() for q in model.parameters()]
        opt = make_optimizer(model, p.rl)
        g = torch.Generator().manual_seed(1)
        src = torch.randint(3, 512, (8, 24), generator=g).to(dev)
        tgt = torch.randint(3, 512, (8, 16), generator=g).to(dev)

        def micro_loss(m, idx, step, micro):
            return m(input_ids=src, attention_mask=torch.ones_like(src), labels=tgt).loss, {}

        for step in range(steps):
            optimizer_step(model, opt, acc, micro_loss, p.rl, step, 0, 8, amp=lambda: autocast(p, dev))
        return torch.cat([(q.detach() - s).flatten().float() for q, s in zip(model.parameters(), start)]), model

    d32, _ = train("float32")
    d16, m16 = train("bfloat16")
    return {"size": size, "steps": steps, "lr": lr, "device": str(dev),
            "master_weights_float32": all(q.dtype == torch.float32 for q in m16.parameters()),
            "cosine": torch.nn.functional.cosine_similarity(d32, d16, dim=0).item(),
            "norm_ratio_bf16_over_fp32": (d16.norm() / d32.norm()).item(),
            "share_moved_fp32": (d32 != 0).float().mean().item(), "share_moved_bf16": (d16 != 0).float().mean().item()}


def rl_steps(plan: list[dict], cache: Path) -> list[dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import rl_step

    out = []
    for c in plan:
        args = SimpleNamespace(task="mini-xsum", T=c["T"], steps=c["steps"], cache_dir=str(cache / "bench"))
        out.append(rl_step.run(args, c["B"], c["student"], c["teacher"]))
    return out


def ppo_steps(plan: list[dict], cache: Path) -> list[dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import ppo_step
    import rl_step  # noqa: F401  (registers the *-shape sizes)

    return [ppo_step.measure(c["method"], "mini-xsum", c["student"], c["teacher"], c["B"], c["steps"],
                             str(cache / "bench"), T=c["T"]) for c in plan]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes; say what the GPU run would measure")
    ap.add_argument("--mirror", default=None, help="a hub mirror folder (default: write one to a temporary folder)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new sections after this long")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="kdlib-gpu-check-"))
    mirror = Path(args.mirror).resolve() if args.mirror else work / "mirror"
    if args.dry_run:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported
    os.environ.update({"HF_HOME": str(mirror), "HF_HUB_OFFLINE": "1", "KDLIB_PROGRESS": "0",
                       "TOKENIZERS_PARALLELISM": "false"})
    os.chdir(ROOT)
    sys.path.insert(0, str(ROOT))
    import torch

    result = {"dry_run": args.dry_run, "device": "cuda" if torch.cuda.is_available() else "cpu",
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
              "torch": torch.__version__, "mirror": str(mirror)}
    if not args.dry_run and not torch.cuda.is_available():
        result["error"] = "no CUDA device: run with --dry-run on CPU"
        print(json.dumps(result, indent=1))
        return 1
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if args.dry_run:
        result["would_measure"] = {
            "rehearsal": [f"{label}: params {' + '.join(files + ['params/rehearsal/kit.yaml'])}, {over}, on cuda in "
                          "float32 and bfloat16: finite test metrics, seconds, sampling on the device"
                          for label, files, over in REHEARSAL_RUNS],
            "weights_move_alike": GPU_PLAN["weights_move_alike"],
            "rl_step": GPU_PLAN["rl_step"], "ppo_step": GPU_PLAN["ppo_step"],
            "budget_s": args.budget_s}
    with contextlib.redirect_stdout(sys.stderr):
        if not (mirror / "mirror.json").is_file():
            sys.path.insert(0, str(ROOT / "scripts"))
            import make_hub_mirror

            make_hub_mirror.make_mirror(mirror, log=lambda s: print(s, file=sys.stderr))
        sections = [("rehearsal_float32", lambda: rehearsal("float32", mirror, work)),
                    ("rehearsal_bfloat16", lambda: rehearsal("bfloat16", mirror, work)),
                    ("weights_move_alike", lambda: weights_move_alike(**plan["weights_move_alike"])),
                    ("rl_step", lambda: rl_steps(plan["rl_step"], work)),
                    ("ppo_step", lambda: ppo_steps(plan["ppo_step"], work))]
        for name, fn in sections:
            if time.perf_counter() - t_start > args.budget_s:
                result[name] = {"skipped": f"time budget of {args.budget_s:.0f} s spent"}
                continue
            t0 = time.perf_counter()
            try:
                result[name] = fn()
            except Exception as e:  # one failing section does not hide the others
                result[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            print(f"[gpu_check] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
