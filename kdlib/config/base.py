"""Parameter constants, the error type and the settings shared by every chain: task, models, optimiser, teacher.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import (
    BaseModel,
    ConfigDict,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

EMBEDDED_TASKS = ("mini-xsum", "mini-europarl", "mini-gsm8k")
HUB_TASKS = ("xsum", "europarl", "gsm8k")
TASKS = EMBEDDED_TASKS + HUB_TASKS
# Held-out evaluation sets (kdlib.data.load_eval_set), for params that name them; same tuple as
# kdlib.data.EVAL_SETS (tests/test_data.py checks it).
EVAL_SETS = ("mini-gsm-plus", "mini-gsm-symbolic", "mini-gsm-hard", "gsm-plus", "gsm-symbolic", "math")
# (max source tokens, max target tokens); hub values are the paper's Tables 4-5.
# Embedded targets at ambiguity > 0 are longer (summaries add facts, mini-europarl translates two-sentence
# passages, solutions add connectives and a closing line): the limits cover the longest at ambiguity 1.
TASK_LENGTHS = {"mini-xsum": (160, 64), "mini-europarl": (64, 48), "mini-gsm8k": (112, 160),
                "xsum": (1024, 64), "europarl": (80, 80), "gsm8k": (200, 300)}
# task.ambiguity when a params file leaves it out: the spread of the generated targets (kdlib.data.variants).
# 1.0 is the widest the grammars allow (word-level synonyms since VARIANTS_VERSION 2); the trained teachers' entropy
# there is 0.51 / 0.48 / 0.16 nats per token, still below the targets 1.0 / 0.6 / 0.25 (README: "The embedded tasks
# and models"); `python -m kdlib calibrate` measures the trained models.
# 0 = the older, nearly deterministic tasks.
DEFAULT_AMBIGUITY = {"mini-xsum": 1.0, "mini-europarl": 1.0, "mini-gsm8k": 1.0}
# gkd_jsd: GKD (generalised JSD on a student/fixed mix, TRL's GKDTrainer); distillm: DistiLLM (skew KL, adaptive
# student-generated outputs). Named apart from seed 004's `gkd` below, its GRPO-loop baseline with a -KL reward.
DIVERGENCE_METHODS = ("seqkd", "kl", "js", "tvd", "gkd_jsd", "distillm")
# opd: on-policy reverse KL; minillm_pg: MiniLLM's reverse-KL policy gradient (LMOps), named apart from seed 004's
# `minillm` (its long-term return group-normalised on the GRPO loop). Both REINFORCE family.
RL_METHODS = ("llmr", "llmr_mean", "llmr_minvar", "ketchup", "opd", "minillm_pg")
PPO_METHODS = ("llmr_ppo", "ketchup_ppo")  # seed 001 App. D: PPO with a critic + GAE, PPO with the K-step return
# Seed 004 (constrained KD, kdlib.chains.constrained_kd): its start stage and five methods on one GRPO loop.
CMDP_METHODS = ("cmdp", "grpo", "gkd_grpo", "gkd", "minillm")
CMDP_STAGES = ("cmdp_start", "cmdp_teacher") + CMDP_METHODS  # the start student, the teacher's evaluation
MATH_TASKS = ("mini-gsm8k", "gsm8k")  # seed 004 is math-only, as the paper
# Seed 003 ("Distill not only data but also rewards", notebook 07): the stages of its pipeline
# (kdlib.chains.reward_distill), each one a params.method. The method needs an extractable final answer
# (majority voting, Eq. (7)), so it runs on the arithmetic tasks only.
RD_STAGES = ("rd_samples", "rd_sft", "rd_student_samples", "rd_rm", "rd_ppo", "rd_eval")
RD_TASKS = ("mini-gsm8k", "gsm8k")
METHODS = ("teacher", "zeroshot", "predistill") + DIVERGENCE_METHODS + RL_METHODS + PPO_METHODS + CMDP_STAGES + RD_STAGES


class ParamsError(ValueError):
    """Bad parameters. The message names the file and the field."""


class _FieldError(ValueError):
    """A check across sections that blames one dotted field (reported like a field error)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


PosInt = StrictInt


def _check_tasks(names):
    for t in names:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; known tasks: {', '.join(TASKS)}")
    return names


def _pos(v: int | float, name: str = "value") -> int | float:
    if v is not None and v <= 0:
        raise ValueError(f"must be > 0, got {v}")
    return v


def _nonneg(v: int | float) -> int | float:
    if v < 0:
        raise ValueError(f"must be >= 0, got {v}")
    return v


class TaskParams(_Strict):
    """Which task, where its data lives, and how long its sequences may be."""

    name: str = "mini-xsum"
    path: Optional[str] = None  # hub dataset name or local path (hub tasks); unused for embedded ones
    n_train: Optional[StrictInt] = None  # None: the task's default size (all of it for hub data)
    n_dev: Optional[StrictInt] = None
    n_test: Optional[StrictInt] = None
    data_seed: StrictInt = 0  # seed of the generated data / of the dev split carved from train
    max_source_len: Optional[StrictInt] = None  # tokens; None = TASK_LENGTHS[name]
    max_target_len: Optional[StrictInt] = None  # tokens, also the maximum rollout length T
    student_prompt: Optional[str] = None  # "{source}" template; None = kdlib.data.DEFAULT_PROMPTS
    teacher_prompt: Optional[str] = None
    calculator: Optional[StrictBool] = None  # None = on for arithmetic tasks (GSM8K), off otherwise
    # Chat models: the filled prompt becomes the user turn (after a system turn with ``system_prompt``, if set) of the
    # tokenizer's own chat template, rendered with the generation prompt; one rendering for teacher and student.
    chat: StrictBool = False
    system_prompt: Optional[str] = None
    # Spread of a generated task's targets in [0, 1] (each choice of the generator's grammar is drawn at
    # random with this probability, else canonical); None = DEFAULT_AMBIGUITY[name]. Hub tasks: must be None.
    ambiguity: Optional[float] = None

    @field_validator("ambiguity")
    @classmethod
    def _ambiguity(cls, v):
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"must be in [0, 1], got {v}")
        return v

    @model_validator(mode="after")
    def _lengths(self):
        if self.system_prompt is not None and not self.chat:
            raise _FieldError("system_prompt", "a system turn needs a chat template: set task.chat: true")
        if self.name in EMBEDDED_TASKS:
            if self.ambiguity is None:
                self.ambiguity = DEFAULT_AMBIGUITY[self.name]
        elif self.ambiguity is not None:
            raise _FieldError("ambiguity", f"{self.name!r} is a hub task: its targets are the data's own, "
                              "so ambiguity must be left out")
        src, tgt = TASK_LENGTHS[self.name]
        if self.max_source_len is None:
            self.max_source_len = src
        if self.max_target_len is None:
            self.max_target_len = tgt
        return self

    @field_validator("name")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASKS:
            raise ValueError(f"unknown task {v!r}; known tasks: {', '.join(TASKS)}")
        return v

    @field_validator("n_train", "n_dev", "n_test", "max_source_len", "max_target_len")
    @classmethod
    def _positive(cls, v):
        return _pos(v)

    @field_validator("student_prompt", "teacher_prompt")
    @classmethod
    def _template(cls, v):
        if v is not None and "{source}" not in v:
            raise ValueError("a prompt template must contain '{source}'")
        return v

    @field_validator("path")
    @classmethod
    def _path_exists(cls, v):
        if v is not None and looks_local(v) and not Path(v).expanduser().exists():
            raise ValueError(f"data path {v!r} does not exist")
        return v


def looks_local(path: str) -> bool:
    """A data/model reference is a local path if it exists or looks like one (else a hub name)."""
    return (
        os.path.exists(path)
        or path.startswith((".", "/", "~"))
        or Path(path).suffix in {".json", ".jsonl", ".parquet", ".csv", ".txt", ".arrow"}
    )


class ModelParams(_Strict):
    """Teacher and student. ``tiny-t5:<size>`` / ``tiny-causal:<size>`` are the kit's from-scratch
    presets (see kdlib.modeling.models.TINY_SIZES); anything else is a hub name or a local folder."""

    teacher: str = "tiny-t5:teacher"
    student: str = "tiny-t5:base"
    arch: Literal["seq2seq", "causal"] = "seq2seq"
    tokenizer: Optional[str] = None  # None: trained on the task (tiny presets) or the teacher's
    dtype: Literal["float32", "bfloat16"] = "float32"
    trust_remote_code: StrictBool = False
    dropout: float = 0.0  # the paper's Table 4-5 value
    # Encoder states of a frozen seq2seq teacher are computed once per source and kept (they never
    # change); above this many MiB (the paper's FLAN-T5-XL on XSum) they are recomputed each step.
    teacher_cache_mb: float = 1024.0

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), got {v}")
        return v


class OptimParams(_Strict):
    """One training stage: AdamW, linear warm-up then constant, gradient clipping.

    ``steps`` and ``warmup_steps`` count OPTIMISER UPDATES (one update = ``grad_accum``
    micro-batches of ``batch_size``), as the KETCHUP authors' code steps its scheduler. Seed 001
    Table 5's 5,000-step warm-up, read this way, is longer than its whole GSM8K RL run (81
    updates at 8 x 32 per update for 3 epochs), so the learning rate never reaches its peak there.
    """

    lr: float = 1e-3
    batch_size: StrictInt = 16
    grad_accum: StrictInt = 1
    steps: StrictInt = 500  # optimiser updates
    warmup_steps: StrictInt = 0  # optimiser updates of linear warm-up (not micro-batches)
    # After the warm-up: "constant", or "linear" decay to 0 at `steps` (transformers'
    # get_linear_schedule_with_warmup, the Trainer default the papers' code runs with).
    lr_schedule: Literal["constant", "linear"] = "constant"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # LLMR reference code clips at 1.0
    eval_every: StrictInt = 100  # steps between dev evaluations (model selection)
    log_every: StrictInt = 10
    checkpoint_every: StrictInt = 100  # steps between resumable checkpoints
    # Plateau rule (kdlib.trainers.base.PlateauRule): with plateau_window > 0, stop once the dev metric smoothed
    # over `plateau_smooth` evaluations has not risen by more than `min_delta` (primary-metric units) over the
    # last max(`patience` evaluations, `plateau_window` x the updates done), and not before `min_steps`. The
    # defaults (window 0, smooth 1) are the older rule: `patience` evaluations in a row without a new best.
    # `steps` stays the cap; patience None: train all `steps`. summary.json records converged / stop_reason /
    # last_improvement either way.
    patience: Optional[StrictInt] = None
    min_delta: float = 0.0
    plateau_window: float = 0.0
    plateau_smooth: StrictInt = 1
    min_steps: StrictInt = 0

    @field_validator("lr", "max_grad_norm")
    @classmethod
    def _pos_float(cls, v):
        return _pos(v)

    @field_validator("plateau_window")
    @classmethod
    def _window(cls, v):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1) (a share of the updates done), got {v}")
        return v

    @field_validator("batch_size", "grad_accum", "eval_every", "log_every", "checkpoint_every", "patience",
                     "plateau_smooth")
    @classmethod
    def _pos_int(cls, v):
        return _pos(v)

    @field_validator("min_delta")
    @classmethod
    def _min_delta(cls, v):
        return _nonneg(v)

    @field_validator("steps", "warmup_steps", "weight_decay", "min_steps")
    @classmethod
    def _nonneg(cls, v):
        return _nonneg(v)


class TeacherParams(OptimParams):
    """Teacher preparation: fine-tuned on references (``train: false`` = prompted only)."""

    train: StrictBool = True


def _check_ks(v: list[int]) -> list[int]:
    for k in v:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"K must be an integer >= 1, got {k!r}")
    return v
