"""Typed, validated parameters (floor 0: imports nothing else of the kit).

Two kinds of YAML file live under ``params/<profile>/``:

* **kit params** (``kit.yaml`` and overrides): the nested settings of one training/evaluation
  chain (task, models, teacher fine-tuning, pre-distillation, divergence KD, RL, evaluation,
  judge). ``load_params(*paths, **overrides)`` layers them (later wins) and validates them into
  :class:`Params`.
* **notebook params** (``main_results.yaml``, ``returns.yaml``, ...): flat values that papermill
  injects into a notebook's ``parameters`` cell. They carry ``notebook: <name>`` and name the kit
  params files they build on. ``load_notebook_params(path)`` validates them.

Every error is a :class:`ParamsError` (a ``ValueError``) whose message names the file and the
dotted field, so ``python -m kdlib validate`` can print it and exit 2 before any compute starts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator, model_validator

EMBEDDED_TASKS = ("mini-xsum", "mini-europarl", "mini-gsm8k")
HUB_TASKS = ("xsum", "europarl", "gsm8k")
TASKS = EMBEDDED_TASKS + HUB_TASKS
# Held-out evaluation sets (kdlib.data.load_eval_set), for params that name them; same tuple as
# kdlib.data.EVAL_SETS (tests/test_data.py checks it).
EVAL_SETS = ("mini-gsm-plus", "mini-gsm-symbolic", "mini-gsm-hard", "gsm-plus", "gsm-symbolic", "math")
# (max source tokens, max target tokens); hub values are the paper's Tables 4-5.
TASK_LENGTHS = {"mini-xsum": (160, 40), "mini-europarl": (48, 40), "mini-gsm8k": (112, 128),
                "xsum": (1024, 64), "europarl": (80, 80), "gsm8k": (200, 300)}
DIVERGENCE_METHODS = ("seqkd", "kl", "js", "tvd")
RL_METHODS = ("llmr", "llmr_mean", "llmr_minvar", "ketchup")
PPO_METHODS = ("llmr_ppo", "ketchup_ppo")  # seed 001 App. D: PPO with a critic + GAE, PPO with the K-step return
# Seed 004 (constrained KD, kdlib.cmdp_experiment): its start stage and five methods on one GRPO loop.
CMDP_METHODS = ("cmdp", "grpo", "gkd_grpo", "gkd", "minillm")
CMDP_STAGES = ("cmdp_start", "cmdp_teacher") + CMDP_METHODS  # the start student, the teacher's evaluation
MATH_TASKS = ("mini-gsm8k", "gsm8k")  # seed 004 is math-only, as the paper
# Seed 003 ("Distill not only data but also rewards", notebook 07): the stages of its pipeline
# (kdlib.reward_distill), each one a params.method. The method needs an extractable final answer
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

    @model_validator(mode="after")
    def _lengths(self):
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
    presets (see kdlib.models.TINY_SIZES); anything else is a hub name or a local folder."""

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
    # Plateau rule: stop once `patience` dev evaluations in a row have not beaten the best dev score
    # by more than `min_delta` (in the primary metric's units); `steps` stays the cap. None: train
    # all `steps`. summary.json records converged / stop_reason / last_improvement either way.
    patience: Optional[StrictInt] = None
    min_delta: float = 0.0

    @field_validator("lr", "max_grad_norm")
    @classmethod
    def _pos_float(cls, v):
        return _pos(v)

    @field_validator("batch_size", "grad_accum", "eval_every", "log_every", "checkpoint_every", "patience")
    @classmethod
    def _pos_int(cls, v):
        return _pos(v)

    @field_validator("min_delta")
    @classmethod
    def _min_delta(cls, v):
        return _nonneg(v)

    @field_validator("steps", "warmup_steps", "weight_decay")
    @classmethod
    def _nonneg(cls, v):
        return _nonneg(v)


class TeacherParams(OptimParams):
    """Teacher preparation: fine-tuned on references (``train: false`` = prompted only)."""

    train: StrictBool = True


class DivergenceParams(OptimParams):
    """SeqKD / KL / JS / TVD (Wen et al. 2023): token-level divergences on fixed prefixes.

    ``estimator`` (JS and TVD only):
      * ``wen`` (default): Wen et al.'s step-wise decomposition; every micro-batch scores the
        teacher-prefix half (the cached teacher outputs) AND the student-prefix half (the
        student's samples): JS = beta KL(p||m) on teacher prefixes + (1-beta) KL(q||m) on student
        prefixes; TVD = 1/2 TVD on each (kdlib.losses.wen_js_divergence / wen_tvd);
      * ``mixed_prefix``: the kit's earlier estimator, kept to reproduce earlier runs: one coin per
        micro-batch picks student samples (probability ``student_mix``) or teacher outputs, and
        the full JSD / TVD is scored on those prefixes.
    ``dropout`` overrides ``models.dropout`` for the student of a divergence-KD run (SeqKD, KL,
    JS, TVD; seed 001 Table 6 uses 0.25 there and 0.0 for RL); None = ``models.dropout``. It
    applies to the method stage only, not to the teacher or the pre-distillation it starts from.
    """

    estimator: Literal["wen", "mixed_prefix"] = "wen"
    student_mix: float = 0.5  # mixed_prefix only: share of micro-batches on student samples
    js_beta: float = 0.5  # JS mixture weight; 0.5 is the symmetric Jensen-Shannon divergence
    temperature: float = 1.0  # sampling temperature of the student prefixes
    dropout: Optional[float] = None  # None: models.dropout; else the divergence-KD student's dropout

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v):
        if v is not None and not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), got {v}")
        return v

    @field_validator("student_mix")
    @classmethod
    def _unit(cls, v):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"must be in [0, 1], got {v}")
        return v

    @field_validator("js_beta")
    @classmethod
    def _open_unit(cls, v):
        if not 0.0 < v < 1.0:
            raise ValueError(f"must be in (0, 1), got {v}")
        return v


class RLParams(OptimParams):
    """REINFORCE with a teacher-induced reward (LLMR) and KETCHUP's K-step return.

    ``compat``: ``paper`` (default) trains what the papers write (Algorithm 1, Eq. (8), returns
    clipped); ``authors_code`` selects the behaviour of the authors' public code (spec
    seed001_brim_extras.md Sec. 8.2): the learning signal of kdlib.losses.authors_code_pg_loss
    (clip of rho * G^, rho the detached student probability, mean over tokens), the ``clamp``
    tail, and a baseline that is one batch scalar (kdlib.returns.authors_code_baseline).
    ``tail``: ``algorithm1`` (Algorithm 1), ``block`` (Eq. (7)/(20)), ``clamp`` (authors' code).
    ``temperature`` != 1 or ``top_k`` > 0 samples from another distribution than the policy whose
    log-probabilities the gradient uses (off-policy REINFORCE): refused unless
    ``allow_off_policy`` is true.
    """

    k: Union[StrictInt, Literal["auto"]] = 2  # KETCHUP's K; LLMR and its baselines use K = 1
    # k: auto (a kit extension): per sequence, the largest K of auto_k_grid whose exact optimistic
    # bias per token stays within auto_k_tol nats (kdlib.returns.adaptive_k).
    auto_k_grid: list[StrictInt] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    auto_k_tol: float = 0.1
    tail: Literal["algorithm1", "block", "clamp"] = "algorithm1"
    compat: Literal["paper", "authors_code"] = "paper"
    normalize: Literal["raw", "mean", "log_softmax"] = "mean"  # LLMR code: logits minus vocab mean
    reward_clip: float = 100.0  # returns clipped to [-clip, clip] (paper Table 4)
    temperature: float = 1.0
    top_k: StrictInt = 0  # 0 = full vocabulary
    allow_off_policy: StrictBool = False  # permit temperature != 1 or top_k > 0 for RL methods
    # Rollouts cut at the length limit: drop (LLMR authors' code: no loss on them), keep (treat the
    # last token as the end, Algorithm 1 as written), bootstrap (continue with the teacher's optimal
    # actions; see kdlib.returns.truncated_kstep_returns). The embedded students rarely hit the limit.
    truncated: Literal["drop", "keep", "bootstrap"] = "drop"
    pg_normalize: Literal["batch", "tokens"] = "batch"

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v):
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"K must be an integer >= 1 or 'auto', got {v!r}")
        return v

    @field_validator("auto_k_grid")
    @classmethod
    def _grid(cls, v):
        _check_ks(v)
        if 1 not in v:
            raise ValueError("the auto-K grid must contain 1 (the unbiased fallback)")
        return sorted(set(v))

    @field_validator("reward_clip", "temperature")
    @classmethod
    def _pos_f(cls, v):
        return _pos(v)

    @field_validator("top_k")
    @classmethod
    def _topk(cls, v):
        return _nonneg(v)


class PPOParams(OptimParams):
    """Clipped policy optimisation: PPO and GRPO (seed 001 App. D; seeds 003, 004), one loop
    (kdlib.trainers.ppo). One harness step is one iteration: ``batch_size`` prompts x
    ``group_size`` samples are drawn from pi_old at ``temperature``, scored once, then ``epochs``
    passes of ``minibatches`` clipped-surrogate updates follow.

    The papers give none of these values for seed 001's PPO study; every default here is a kit
    default (TRL's PPOConfig where it has one) and is labelled so in notebook 06. ``k``, ``tail``,
    ``normalize``, ``reward_clip`` and ``truncated`` mean what they mean for the REINFORCE family:
    ``llmr_ppo`` uses the reward of Eq. (2) with a critic and GAE, ``ketchup_ppo`` uses the K-step
    return of Algorithm 1 as the advantage and no critic."""

    group_size: StrictInt = 1  # samples per prompt (GRPO: 8)
    epochs: StrictInt = 4  # PPO epochs per rollout batch [kit default]
    minibatches: StrictInt = 4  # updates per epoch [kit default]
    clip_eps: float = 0.2  # clipped surrogate [kit default]
    value_clip: Optional[float] = 0.2  # clipped value loss; None = unclipped [kit default]
    vf_coef: float = 0.5  # value-loss weight (shared trunk) [kit default]
    gamma: float = 1.0  # discount (the papers' MDPs are undiscounted)
    lam: float = 0.95  # GAE lambda [kit default]
    kl_coef: float = 0.0  # k1 KL penalty to a frozen reference (the start policy) in the reward
    entropy_coef: float = 0.0  # entropy bonus [kit default]
    whiten_advantages: StrictBool = False  # seed 001 App. D uses the K-step return unnormalised
    value_model: Literal["shared", "separate"] = "shared"  # critic head on the policy, or its own network
    temperature: float = 1.0  # rollouts at temperature 1 are on-policy samples of pi_old
    k: StrictInt = 2
    tail: Literal["algorithm1", "block", "clamp"] = "algorithm1"
    normalize: Literal["raw", "mean", "log_softmax"] = "mean"
    reward_clip: float = 100.0
    truncated: Literal["drop", "keep", "bootstrap"] = "drop"

    @field_validator("group_size", "epochs", "minibatches", "k")
    @classmethod
    def _pos_ints(cls, v):
        if v < 1:
            raise ValueError(f"must be an integer >= 1, got {v}")
        return v

    @field_validator("clip_eps", "temperature", "reward_clip")
    @classmethod
    def _pos_floats(cls, v):
        return _pos(v)

    @field_validator("vf_coef", "kl_coef", "entropy_coef", "gamma")
    @classmethod
    def _nonneg_floats(cls, v):
        return _nonneg(v)

    @field_validator("lam")
    @classmethod
    def _lam(cls, v):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"must be in [0, 1], got {v}")
        return v


class ConstrainedKDParams(PPOParams):
    """Seed 004, distillation as a constrained MDP (spec seeds003_004 Part B): five methods on
    the one GRPO loop of kdlib.trainers.ppo (``group_size`` samples per prompt, group-normalised
    outcome advantages, the clipped surrogate), differing only in their reward and auxiliary loss
    (kdlib.trainers.cmdp). The PPOParams fields are the GRPO settings (B2/B3/B7.6: eps 0.2,
    beta = ``kl_coef`` = 0, one update per batch, temperature 1, token-mean aggregation).

    * ``cmdp`` (ours, Eq. 4-5): R (0/1 answer correctness, Eq. 6) while the per-sample KL to the
      teacher is within ``d``, else ``-(n + KL)`` (``use_phi``); term II of Eq. (5) (``c_ii``
      times the KL with gradient, on violating rows) as the auxiliary loss. ``granularity``
      sequence (default, B7.2) or token (the literal per-step Eq. 4-5); ``kl_reduction`` mean
      (default: per-token mean, B7.1) or sum.
    * ``grpo`` (R), ``gkd_grpo`` (R - ``gkd_lambda`` KL), ``gkd`` (-KL), ``minillm`` (future log-ratio
      return + single-step KL, spec B2).

    The KL is the exact full-vocabulary reverse KL of Eq. (7) with the teacher's probabilities
    floored at ``kl_floor`` (B7.5), over the student's own tokens (calculator insertions excluded).
    ``vocab: shared_prefix`` slices both vocabularies to the shared prefix (spec B2/B7.10: Qwen2.5-Math
    1.5B has 151,936 logits, 7B-Instruct 152,064); ``exact`` refuses different sizes.
    ``start_steps``: every method starts from the student pre-distilled (cross-entropy on the
    teacher's outputs, the ``predistill`` section) for that many updates (0: the student as
    loaded, the paper's base checkpoints). ``selection``: which weights are evaluated, ``final``
    (the paper: after its 20 epochs) or ``best_dev`` (the kit's convention).
    """

    # GRPO settings of seed 004 (B3: 8 questions x 8 responses, lr 1e-5; B7.6: one update per batch)
    lr: float = 1e-5
    batch_size: StrictInt = 8  # prompts per iteration
    group_size: StrictInt = 8  # responses per prompt
    epochs: StrictInt = 1
    minibatches: StrictInt = 1
    steps: StrictInt = 100
    truncated: Literal["drop", "keep", "bootstrap"] = "keep"  # a cut response has no answer: R = 0, kept
    d: float = 0.35  # KL budget [paper]; the notebook may choose it by the paper's procedure (B6)
    n: float = 20.0  # penalty [paper]
    use_phi: StrictBool = True  # -(n + phi) (Eq. 4); False: Saute's -n (Eq. 3)
    granularity: Literal["sequence", "token"] = "sequence"
    kl_reduction: Literal["mean", "sum"] = "mean"
    kl_floor: float = 1e-8  # teacher probability floor [choice B7.5]
    c_ii: float = 1.0  # weight of Eq. (5) term II [choice B7.4]
    eps_b: float = 0.0  # tolerance of term II's indicator [choice B7.4]
    gkd_lambda: float = 0.01  # GKD-GRPO lambda (Eq. 1); not PPOParams.lam (GAE)
    adv_eps: float = 1e-4  # GRPO advantage denominator std + eps (spec B2)
    kl_chunk: Optional[StrictInt] = None  # positions per chunk of the full-vocabulary KL (None: automatic)
    score_rows: StrictInt = 64  # rollouts per teacher/student forward when scoring (memory at paper scale)
    vocab: Literal["exact", "shared_prefix"] = "exact"
    start_steps: StrictInt = 0
    selection: Literal["final", "best_dev"] = "final"
    # Sets evaluated after training (greedy outputs, correctness, KL to the teacher): "dev", "test"
    # and held-out sets of kdlib.data (EVAL_SETS). None: dev, test and the task's GSM-Symbolic and
    # MATH analogues (mini-gsm-symbolic, mini-gsm-hard / gsm-symbolic, math). Not part of run keys.
    eval_sets: Optional[list[str]] = None

    @field_validator("eval_sets")
    @classmethod
    def _eval_sets(cls, v):
        for name in v or []:
            if name not in ("dev", "test") + EVAL_SETS:
                raise ValueError(f"unknown evaluation set {name!r}; known: dev, test, {', '.join(EVAL_SETS)}")
        return v

    @field_validator("d", "kl_floor")
    @classmethod
    def _pos_cmdp(cls, v):
        return _pos(v)

    @field_validator("n", "c_ii", "eps_b", "gkd_lambda", "adv_eps", "start_steps")
    @classmethod
    def _nonneg_cmdp(cls, v):
        return _nonneg(v)

    @field_validator("kl_floor")
    @classmethod
    def _floor(cls, v):
        if not 0.0 < v < 1.0:
            raise ValueError(f"must be in (0, 1), got {v}")
        return v

    @field_validator("score_rows", "kl_chunk")
    @classmethod
    def _pos_rows(cls, v):
        return _pos(v)


def _rd_optim(**kw):
    return Field(default_factory=lambda: OptimParams(**kw))


class RewardDistillParams(_Strict):
    """Seed 003's pipeline (kdlib.reward_distill; spec seeds003_004 Part A). Defaults are the
    paper's values where it states them (Sec. 3-4, App. B.2; A3 of the spec), [choice] where not.

    Step 1, teacher sampling: each of the first ``n_questions`` train questions is answered (by the
    teacher, or with ``sampler: predistill`` by the pre-distilled student: a weaker teacher at no
    extra training cost, for Figs. 3-4) at
    every ``high_temperatures`` entry ``n_high`` times (temperature 0 is decoded once and counted
    ``n_high`` times) and at every ``low_temperatures`` entry ``n_low`` times. Step 2: voting over
    the high-confidence answers with ``vote_threshold``. Step 3: SFT on the agreeing answers
    (``sft_data: voted``, S_warmup) or on all of them (``all``: the SFT baseline), from the
    pre-distilled student (``student_init: predistill``, the embedded stand-in for a pretrained
    base) or from ``models.student`` as loaded (``base``: a hub model, or a fresh tiny one).
    Steps 4-5: ``student_samples`` samples of S_warmup at ``student_temperature``; D_R triplets
    with ``m_max`` and ``teacher_ratio``, split by question into RM train/val/test. Step 6: the
    reward model (``rm_data: student`` = Eq. (6) with ``lam``; ``teacher`` = Table 4's RM on
    teacher answers only, Eq. (4)). Steps 8-9: PPO (the ``ppo:`` section) with Eq. (7)'s shaping
    (``min0`` or Fig. 7's ``minus1``), from S_warmup (``policy_init: warmup``) or from the SFT
    start point (``base``: "Ours w/o D"). ``rd_eval`` scores the run of stage ``eval_target`` on
    the evaluation set ``eval_set`` (GSM-Plus style)."""

    sampler: Literal["teacher", "predistill"] = "teacher"  # who answers in Step 1 (predistill: a weaker, smaller "teacher")
    n_questions: Optional[StrictInt] = None  # None: every train question
    high_temperatures: list[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.3])  # Sec. 4.1
    n_high: StrictInt = 5
    low_temperatures: list[float] = Field(default_factory=lambda: [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    n_low: StrictInt = 5
    vote_threshold: float = 0.7  # sh, Sec. 3.1 (strict ">")
    sample_chunk: StrictInt = 64  # questions per generation chunk (x samples per temperature = one batch); part of the key
    student_init: Literal["predistill", "base"] = "predistill"
    sft_data: Literal["voted", "all"] = "voted"
    dedupe: StrictBool = False  # [choice A7.6] keep duplicate (q, a) pairs in D_sft
    sft: OptimParams = _rd_optim(lr=5e-6, batch_size=84, steps=14000, eval_every=100, patience=5)  # App. B.2
    student_samples: StrictInt = 30  # Sec. 3.3
    sample_shards: StrictInt = 1  # student sampling split into this many runs (the scheduler runs them in parallel)
    sample_shard: Optional[StrictInt] = None  # set by the stage graph: which shard an rd_student_samples run is
    student_temperature: float = 0.7
    m_max: StrictInt = 4  # [choice A7.7] triplets per question
    teacher_ratio: float = 1.0  # Fig. 6: teacher positives per student positive
    rm_val_fraction: float = 0.1  # [choice] D_R split by question
    rm_test_fraction: float = 0.1  # [choice] held-out triplets of Table 3 / Fig. 6
    rm_data: Literal["student", "teacher"] = "student"
    lam: float = 0.5  # Eq. (6)
    rm: OptimParams = _rd_optim(lr=5e-5, batch_size=48, steps=1200, eval_every=100, patience=3)  # App. B.2
    shaping: Literal["min0", "minus1"] = "min0"  # Eq. (7) / Fig. 7's "Minus"
    no_answer_reward: float = -5.0  # Eq. (7)
    policy_init: Literal["warmup", "base"] = "warmup"
    eval_target: Literal["teacher", "zeroshot", "predistill", "rd_sft", "rd_ppo"] = "rd_ppo"
    eval_set: str = "mini-gsm-plus"
    eval_n: Optional[StrictInt] = None  # None: the set's default size

    @field_validator("high_temperatures", "low_temperatures")
    @classmethod
    def _temps(cls, v):
        for t in v:
            if t < 0:
                raise ValueError(f"temperatures must be >= 0, got {t}")
        if len(set(v)) != len(v):
            raise ValueError(f"temperatures must be distinct, got {v}")
        return v

    @field_validator("n_questions", "n_high", "n_low", "sample_chunk", "student_samples", "m_max", "eval_n",
                     "sample_shards")
    @classmethod
    def _p(cls, v):
        return _pos(v)

    @field_validator("vote_threshold", "rm_val_fraction", "rm_test_fraction")
    @classmethod
    def _unit(cls, v):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), got {v}")
        return v

    @field_validator("teacher_ratio", "student_temperature")
    @classmethod
    def _pos_f(cls, v):
        return _pos(v)

    @field_validator("lam")
    @classmethod
    def _lam(cls, v):
        return _nonneg(v)

    @field_validator("eval_set")
    @classmethod
    def _eval_set(cls, v):
        if v not in EVAL_SETS:
            raise ValueError(f"unknown evaluation set {v!r}; known: {', '.join(EVAL_SETS)}")
        return v

    @model_validator(mode="after")
    def _splits(self):
        if self.rm_val_fraction + self.rm_test_fraction >= 1.0:
            raise _FieldError("rm_test_fraction", "rm_val_fraction + rm_test_fraction must stay below 1")
        if not self.high_temperatures:
            raise _FieldError("high_temperatures", "voting needs at least one high-confidence temperature")
        if self.sample_shard is not None and not 0 <= self.sample_shard < self.sample_shards:
            raise _FieldError("sample_shard", f"must be in [0, sample_shards = {self.sample_shards})")
        return self


class EvalParams(_Strict):
    batch_size: StrictInt = 64
    n_dev: Optional[StrictInt] = 200  # dev examples used for model selection (None = all)
    n_test: Optional[StrictInt] = None  # test examples scored (None = all)
    # Runs with a teacher (distillation methods) also measure the SAMPLED return (Eq. 10 of outputs
    # drawn at temperature 1, the quantity REINFORCE maximises) at their first and last dev
    # evaluation: this many samples per dev input, with the same random numbers at both ends so
    # the difference is not sampling noise. 0: off.
    sampled: StrictInt = 4

    @field_validator("batch_size", "n_dev", "n_test")
    @classmethod
    def _p(cls, v):
        return _pos(v)

    @field_validator("sampled")
    @classmethod
    def _s(cls, v):
        return _nonneg(v)


class JudgeParams(_Strict):
    backend: Literal["surrogate", "openai", "transformers"] = "surrogate"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen/Qwen2.5-72B-Instruct"
    api_key_env: str = "OPENAI_API_KEY"  # the NAME of the variable; keys are never in files
    timeout_s: float = 60.0
    max_retries: StrictInt = 3
    concurrency: StrictInt = 8
    temperature: float = 0.0
    max_tokens: StrictInt = 128
    templates_dir: str = "params/judge"
    n_examples: Optional[StrictInt] = None  # test examples judged (None = all)

    @field_validator("api_key_env")
    @classmethod
    def _no_key(cls, v):
        if v.startswith(("sk-", "sk_")) or len(v) > 64:
            raise ValueError("give the NAME of an environment variable, never the key itself")
        return v


class Params(_Strict):
    """The resolved parameters of one chain: teacher -> pre-distillation -> one method."""

    profile: str = "embedded"
    seed: StrictInt = 0
    cache_dir: str = ".cache/kdlib"  # datasets, tokenizers and runs (shared across notebooks)
    method: str = "ketchup"
    task: TaskParams = Field(default_factory=TaskParams)
    models: ModelParams = Field(default_factory=ModelParams)
    teacher: TeacherParams = Field(default_factory=lambda: TeacherParams(lr=1e-3, steps=1500))
    predistill: OptimParams = Field(default_factory=lambda: OptimParams(lr=1e-3, steps=800))
    divergence: DivergenceParams = Field(default_factory=lambda: DivergenceParams(lr=3e-4, steps=300))
    rl: RLParams = Field(default_factory=lambda: RLParams(lr=3e-5, steps=300))
    ppo: PPOParams = Field(default_factory=lambda: PPOParams(lr=3e-5, steps=40))
    cmdp: ConstrainedKDParams = Field(default_factory=ConstrainedKDParams)
    eval: EvalParams = Field(default_factory=EvalParams)
    judge: JudgeParams = Field(default_factory=JudgeParams)
    rd: RewardDistillParams = Field(default_factory=RewardDistillParams)  # seed 003 (notebook 07)
    # Per-task settings, applied when task.name matches (e.g. GSM8K's own Table 5 values):
    # {"mini-gsm8k": {"teacher.steps": 2000}}. Explicit overrides still win.
    task_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("task_overrides")
    @classmethod
    def _task_overrides(cls, v):
        return _check_tasks(v)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}; known methods: {', '.join(METHODS)}")
        return v

    @model_validator(mode="after")
    def _on_policy_sampling(self):
        # REINFORCE's gradient uses log pi at temperature 1 over the full vocabulary; samples
        # drawn at another temperature or from the top-k are off-policy (a biased gradient).
        if self.method in RL_METHODS and not self.rl.allow_off_policy:
            if self.rl.temperature != 1.0:
                raise _FieldError("rl.temperature", f"sampling at temperature {self.rl.temperature} makes REINFORCE "
                                  "off-policy (the gradient uses log pi at temperature 1); set "
                                  "rl.allow_off_policy: true to run it anyway")
            if self.rl.top_k > 0:
                raise _FieldError("rl.top_k", f"top-k sampling (top_k={self.rl.top_k}) makes REINFORCE off-policy "
                                  "(the gradient uses log pi over the full vocabulary); set "
                                  "rl.allow_off_policy: true to run it anyway")
        if self.method in PPO_METHODS and self.ppo.grad_accum != 1:
            raise _FieldError("ppo.grad_accum", "a PPO iteration already takes epochs x minibatches updates; "
                              "grad_accum must be 1 (scale batch_size or minibatches instead)")
        if self.method in RD_STAGES and self.task.name not in RD_TASKS:
            raise _FieldError("task.name", f"seed 003's reward distillation needs an extractable final answer "
                              f"(majority voting, Eq. (7)); it runs on {', '.join(RD_TASKS)} only, not on "
                              f"{self.task.name!r} (no adaptation to free-text tasks is offered)")
        if self.method == "rd_ppo" and self.ppo.grad_accum != 1:
            raise _FieldError("ppo.grad_accum", "a PPO iteration already takes epochs x minibatches updates; "
                              "grad_accum must be 1 (scale batch_size or minibatches instead)")
        if self.method == "rd_ppo" and (self.ppo.batch_size * self.ppo.group_size) % self.ppo.minibatches:
            raise _FieldError("ppo.minibatches", f"batch_size x group_size = {self.ppo.batch_size * self.ppo.group_size} "
                              f"rollouts do not split into {self.ppo.minibatches} equal minibatches")
        if self.method in PPO_METHODS and (self.ppo.batch_size * self.ppo.group_size) % self.ppo.minibatches:
            raise _FieldError("ppo.minibatches", f"batch_size x group_size = {self.ppo.batch_size * self.ppo.group_size} "
                              f"rollouts do not split into {self.ppo.minibatches} equal minibatches")
        return self

    @model_validator(mode="after")
    def _cmdp_checks(self):
        if self.method not in CMDP_STAGES:
            return self
        if self.task.name not in MATH_TASKS:
            raise _FieldError("task.name", f"seed 004 (constrained KD, method {self.method!r}) is math-only, as the "
                              f"paper: task.name must be one of {', '.join(MATH_TASKS)}, got {self.task.name!r}")
        c = self.cmdp
        if self.method in CMDP_METHODS:
            if c.group_size < 2:
                raise _FieldError("cmdp.group_size", "GRPO normalises rewards within a group of samples per prompt: "
                                  f"group_size must be >= 2, got {c.group_size}")
            if c.grad_accum != 1:
                raise _FieldError("cmdp.grad_accum", "a GRPO iteration already takes epochs x minibatches updates; "
                                  "grad_accum must be 1")
            if (c.batch_size * c.group_size) % c.minibatches:
                raise _FieldError("cmdp.minibatches", f"batch_size x group_size = {c.batch_size * c.group_size} "
                                  f"rollouts do not split into {c.minibatches} equal minibatches")
            if c.kl_coef != 0.0:
                raise _FieldError("cmdp.kl_coef", "the GRPO loop of seed 004 has no reference model (beta = 0, spec "
                                  "B7.6: the teacher is the anchor); kl_coef must be 0")
        return self

    def k_effective(self) -> int:
        """K used by the return estimator: LLMR and its baselines are K = 1."""
        if self.method == "ketchup_ppo":
            return self.ppo.k
        return self.rl.k if self.method == "ketchup" else 1

    def method_dropout(self) -> float:
        """Dropout of the student in the method stage: ``divergence.dropout`` for the
        divergence-KD methods (seqkd, kl, js, tvd) when it is set, else ``models.dropout``."""
        if self.method in DIVERGENCE_METHODS and self.divergence.dropout is not None:
            return self.divergence.dropout
        return self.models.dropout


# ----------------------------------------------------------------------------- notebook params
class NotebookParams(_Strict):
    """Flat values injected by papermill. Common fields; each notebook adds its own."""

    notebook: str
    profile: str = "embedded"
    params_files: list[str] = Field(default_factory=lambda: ["params/embedded/kit.yaml"])
    overrides: dict[str, Any] = Field(default_factory=dict)  # dotted overrides of the kit params
    output_dir: str = "outputs/embedded"
    seeds: list[StrictInt] = Field(default_factory=lambda: [0])
    tasks: list[str] = Field(default_factory=lambda: list(EMBEDDED_TASKS))

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v):
        return _check_tasks(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if not v:
            raise ValueError("at least one seed")
        return v


def _check_ks(v: list[int]) -> list[int]:
    for k in v:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"K must be an integer >= 1, got {k!r}")
    return v


class _MethodGridParams(NotebookParams):
    """Notebook params naming Table 1's method rows: ``methods`` (divergence and REINFORCE methods)
    and KETCHUP's ``k_values`` (one row per K)."""

    methods: list[str] = Field(default_factory=lambda: ["seqkd", "kl", "js", "tvd", "llmr", "llmr_mean", "llmr_minvar"])
    k_values: list[StrictInt] = Field(default_factory=lambda: [2, 4, 8, 16])

    @field_validator("methods")
    @classmethod
    def _methods(cls, v):
        for m in v:
            if m not in DIVERGENCE_METHODS + RL_METHODS:
                raise ValueError(f"unknown method {m!r}; known: {', '.join(DIVERGENCE_METHODS + RL_METHODS)}")
        return v

    @field_validator("k_values")
    @classmethod
    def _ks(cls, v):
        return _check_ks(v)


class MainResultsParams(_MethodGridParams):
    notebook: Literal["01_main_results"] = "01_main_results"


class ReturnsParams(NotebookParams):
    notebook: Literal["02_returns"] = "02_returns"
    methods: list[str] = Field(default_factory=lambda: ["llmr", "llmr_mean", "llmr_minvar"])
    k_values: list[StrictInt] = Field(default_factory=lambda: [2, 4, 8, 16])
    @field_validator("k_values")
    @classmethod
    def _ks(cls, v):
        return _check_ks(v)


class VarianceBiasParams(NotebookParams):
    notebook: Literal["03_variance_bias"] = "03_variance_bias"
    task: str = "mini-xsum"
    k_values: list[StrictInt] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    n_samples: StrictInt = 32  # sampled outputs per input (paper: 32)
    n_inputs: StrictInt = 64  # inputs averaged over (paper: 10K)
    student_steps: list[StrictInt] = Field(default_factory=lambda: [30, 100, 300])  # pre-distillation checkpoints
    @field_validator("k_values")
    @classmethod
    def _ks(cls, v):
        return _check_ks(v)


class ModelSizeParams(NotebookParams):
    notebook: Literal["04_model_size"] = "04_model_size"
    task: str = "mini-xsum"
    students: list[str] = Field(default_factory=lambda: ["tiny-t5:small", "tiny-t5:base", "tiny-t5:large"])
    k: StrictInt = 2
    methods: list[str] = Field(default_factory=lambda: ["llmr", "ketchup"])

    @field_validator("k")
    @classmethod
    def _k(cls, v):
        return _check_ks([v])[0]


class LLMEvalParams(NotebookParams):
    notebook: Literal["05_llm_eval"] = "05_llm_eval"
    tasks: list[str] = Field(default_factory=lambda: ["mini-xsum", "mini-europarl"])
    methods: list[str] = Field(default_factory=lambda: ["tvd", "llmr", "ketchup"])
    baseline: str = "kl"
    k: StrictInt = 2
    criteria: list[Literal["overall", "informativeness", "coherence"]] = Field(
        default_factory=lambda: ["overall", "informativeness", "coherence"])


class PPOStudyParams(NotebookParams):
    notebook: Literal["06_ppo"] = "06_ppo"
    methods: list[str] = Field(default_factory=lambda: list(PPO_METHODS))
    k: StrictInt = 2  # K of KETCHUP + PPO (the paper names none)

    @field_validator("methods")
    @classmethod
    def _methods(cls, v):
        for m in v:
            if m not in PPO_METHODS:
                raise ValueError(f"unknown PPO method {m!r}; known: {', '.join(PPO_METHODS)}")
        return v

    @field_validator("k")
    @classmethod
    def _k(cls, v):
        return _check_ks([v])[0]


class RewardDistillStudyParams(NotebookParams):
    """Notebook 07 (seed 003, kdlib.reward_distill): Tables 2-4 and Figs. 3-7.

    ``teachers`` / ``students``: display label -> kit overrides (``models.teacher`` etc.). Every
    teacher samples and votes (Figs. 3-4); the full pipeline (Table 2) runs for each of
    ``pipeline_teachers`` (None: the first teacher) x every student, with ``pair_overrides``
    (``"<teacher label>|<student label>"`` -> kit overrides: the paper's per-pair batch sizes).
    The ablations (Table 4, Figs. 5-7) use the first pipeline pair, as the paper does (70B -> 1B).
    ``seeds`` are the PPO seeds of "Ours"; the ablation PPO runs use the first ``ablation_seeds``."""

    notebook: Literal["07_reward_distill"] = "07_reward_distill"
    tasks: list[str] = Field(default_factory=lambda: ["mini-gsm8k"])
    teachers: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"teacher": {}})
    pipeline_teachers: Optional[list[str]] = None
    students: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"student": {}})
    pair_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)
    eval_sets: list[str] = Field(default_factory=lambda: ["mini-gsm-plus"])
    lambdas: list[float] = Field(default_factory=lambda: [0.0, 0.5, 2.0])  # Fig. 5
    teacher_ratios: list[float] = Field(default_factory=lambda: [0.5, 1.0, 2.0])  # Fig. 6
    ablation_seeds: StrictInt = 1
    wod_overrides: dict[str, Any] = Field(default_factory=lambda: {"ppo.kl_coef": 0.1})  # "Ours w/o D", App. B.2

    @field_validator("tasks")
    @classmethod
    def _rd_tasks(cls, v):
        for t in v:
            if t not in RD_TASKS:
                raise ValueError(f"seed 003's reward distillation needs an extractable final answer (majority "
                                 f"voting, Eq. (7)): it runs on {', '.join(RD_TASKS)} only, not on {t!r}")
        return v

    @field_validator("eval_sets")
    @classmethod
    def _eval_sets(cls, v):
        for e in v:
            if e not in EVAL_SETS:
                raise ValueError(f"unknown evaluation set {e!r}; known: {', '.join(EVAL_SETS)}")
        return v

    @field_validator("teachers", "students")
    @classmethod
    def _nonempty(cls, v):
        if not v:
            raise ValueError("at least one entry")
        return v

    @field_validator("lambdas")
    @classmethod
    def _lams(cls, v):
        for x in v:
            _nonneg(x)
        return v

    @field_validator("teacher_ratios")
    @classmethod
    def _ratios(cls, v):
        for x in v:
            _pos(x)
        return v

    @field_validator("ablation_seeds")
    @classmethod
    def _abl(cls, v):
        return _pos(v)

    @model_validator(mode="after")
    def _names(self):
        for t in self.pipeline_teachers or []:
            if t not in self.teachers:
                raise _FieldError("pipeline_teachers", f"{t!r} is not one of teachers ({', '.join(self.teachers)})")
        for pair in self.pair_overrides:
            t, _, s = pair.partition("|")
            if t not in self.teachers or s not in self.students:
                raise _FieldError("pair_overrides", f"{pair!r} must be '<teacher label>|<student label>' of "
                                  f"teachers ({', '.join(self.teachers)}) and students ({', '.join(self.students)})")
        return self

    def kit_override_sets(self) -> list[tuple[str, dict]]:
        """(field, kit overrides) of every variant this notebook trains, validated with the kit params."""
        out = [(f"teachers.{k}", v) for k, v in self.teachers.items()]
        out += [(f"students.{k}", v) for k, v in self.students.items()]
        out += [(f"pair_overrides.{k}", v) for k, v in self.pair_overrides.items()]
        out.append(("wod_overrides", self.wod_overrides))
        return [(f, {"task.name": t, **v}) for t in self.tasks for f, v in out]


class GradientVarianceParams(NotebookParams):
    """Notebook 09: the variance of the policy GRADIENT under K-step returns, measured directly
    (issue 13), for the students of Figure 2 (pre-distillation stopped after ``student_steps``)."""

    notebook: Literal["09_gradient_variance"] = "09_gradient_variance"
    task: str = "mini-xsum"
    k_values: list[StrictInt] = Field(default_factory=lambda: [1, 2, 4, 8, 16])
    student_steps: list[StrictInt] = Field(default_factory=lambda: [30, 100, 300])
    n_inputs: StrictInt = 16  # inputs; the variance is per input, then averaged
    n_samples: StrictInt = 16  # sampled outputs per input
    n_directions: StrictInt = 32  # random projections of each per-sample gradient

    @field_validator("k_values")
    @classmethod
    def _ks(cls, v):
        _check_ks(v)
        if 1 not in v:
            raise ValueError("k_values must contain 1: the true return (LLMR) the bias is measured against")
        return v

    @field_validator("task")
    @classmethod
    def _task(cls, v):
        return _check_tasks([v])[0]

    @field_validator("n_inputs", "n_directions")
    @classmethod
    def _pos_n(cls, v):
        return _pos(v)

    @field_validator("n_samples")
    @classmethod
    def _two(cls, v):
        if v < 2:
            raise ValueError("need at least 2 samples per input to estimate a variance")
        return v


class DecoderOnlyParams(_MethodGridParams):
    """Notebook 10: seed 001 App. F, Tables 7-8, on decoder-only (Qwen2-style) teacher and student:
    ``params_files`` layers a causal-models file over the kit params. KL, TVD, LLMR and KETCHUP
    for every K of ``k_values``; Table 7 shows KETCHUP at the K chosen on dev, Table 8 the best K
    per architecture (the T5 column from Table 1's runs, ``t5_params_files``) and task."""

    notebook: Literal["10_decoder_only"] = "10_decoder_only"
    methods: list[str] = Field(default_factory=lambda: ["kl", "tvd", "llmr"])
    t5_params_files: list[str] = Field(default_factory=lambda: ["params/embedded/kit.yaml"])
    t5_seeds: list[StrictInt] = Field(default_factory=lambda: [19083, 34007, 84122, 310, 55080])



class DiagnosticsParams(_MethodGridParams):
    """Notebook 11: what nobody publishes about RL-KD (issue 13): exposure bias (LLMR's ExError%)
    and diversity of every Table 1 method, the reward-hacking watch over every RL run, and
    adaptive K (rl.k: auto) against the best fixed K chosen on dev."""

    notebook: Literal["11_diagnostics"] = "11_diagnostics"
    n_inputs: StrictInt = 32  # test inputs for ExError% (LLMR used a test set)
    n_samples: StrictInt = 4  # sampled trajectories per input, student's and teacher's


    @field_validator("n_inputs", "n_samples")
    @classmethod
    def _pos_n(cls, v):
        return _pos(v)


class ConstrainedKDStudyParams(NotebookParams):
    """Notebook 08 (seed 004): five methods on one GRPO loop, the budget d by the paper's procedure."""

    notebook: Literal["08_constrained_kd"] = "08_constrained_kd"
    tasks: list[str] = Field(default_factory=lambda: ["mini-gsm8k"])
    methods: list[str] = Field(default_factory=lambda: list(CMDP_METHODS))
    gkd_lambdas: list[float] = Field(default_factory=lambda: [0.01, 1.0])  # full grid: 0.001, 0.01, 0.1, 1, 10
    # d: "kl_only_quantile" = the paper's procedure (B6: the KL-only methods reach ~95% CS on dev);
    # "fixed" = cmdp.d of the kit params (the paper's 0.35)
    budget: Literal["kl_only_quantile", "fixed"] = "kl_only_quantile"
    budget_quantile: float = 0.95
    eval_sets: list[str] = Field(default_factory=lambda: ["test", "mini-gsm-symbolic", "mini-gsm-hard"])
    judge_examples: Optional[StrictInt] = None  # examples per set judged pairwise (None: all)
    paper_setting: Literal["qwen", "llama"] = "qwen"  # which of the paper's tables is shown beside ours

    @field_validator("tasks")
    @classmethod
    def _math_only(cls, v):
        for t in v:
            if t not in MATH_TASKS:
                raise ValueError(f"seed 004 is math-only, as the paper: tasks must be among {', '.join(MATH_TASKS)}, "
                                 f"got {t!r}")
        return v

    @field_validator("methods")
    @classmethod
    def _cmdp_methods(cls, v):
        for m in v:
            if m not in CMDP_METHODS:
                raise ValueError(f"unknown seed-004 method {m!r}; known: {', '.join(CMDP_METHODS)}")
        return v

    @field_validator("gkd_lambdas")
    @classmethod
    def _lams(cls, v):
        for x in v:
            if x < 0:
                raise ValueError(f"lambda must be >= 0, got {x}")
        return v

    @field_validator("budget_quantile")
    @classmethod
    def _q(cls, v):
        if not 0.0 < v < 1.0:
            raise ValueError(f"must be in (0, 1), got {v}")
        return v

    @field_validator("eval_sets")
    @classmethod
    def _sets(cls, v):
        for name in v:
            if name not in ("dev", "test") + EVAL_SETS:
                raise ValueError(f"unknown evaluation set {name!r}; known: dev, test, {', '.join(EVAL_SETS)}")
        return v

    @field_validator("judge_examples")
    @classmethod
    def _je(cls, v):
        return _pos(v)


NOTEBOOK_PARAMS: dict[str, type[NotebookParams]] = {
    "01_main_results": MainResultsParams,
    "02_returns": ReturnsParams,
    "03_variance_bias": VarianceBiasParams,
    "04_model_size": ModelSizeParams,
    "05_llm_eval": LLMEvalParams,
    "06_ppo": PPOStudyParams,
    "07_reward_distill": RewardDistillStudyParams,
    "08_constrained_kd": ConstrainedKDStudyParams,
    "09_gradient_variance": GradientVarianceParams,
    "10_decoder_only": DecoderOnlyParams,
    "11_diagnostics": DiagnosticsParams,
}


# ----------------------------------------------------------------------------- loading
def _read_yaml(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ParamsError(f"{p}: params file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{p}: the top level must be a mapping of keys to values")
    return data


def _set_dotted(data: dict, key: str, value: Any, source: str, sources: dict) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    sources[key] = source


def _merge(base: dict, new: dict, source: str, sources: dict, prefix: str = "") -> None:
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, sources, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)
            sources[dotted] = source
            if isinstance(value, dict):
                for sub in _leaves(value, dotted + "."):
                    sources[sub] = source


def _leaves(d: dict, prefix: str):
    for k, v in d.items():
        yield f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _leaves(v, f"{prefix}{k}.")


def _source_of(field: str, sources: dict, default: str) -> str:
    parts = field.split(".")
    for i in range(len(parts), 0, -1):
        src = sources.get(".".join(parts[:i]))
        if src:
            return src
    return default


def _validate(model: type[BaseModel], data: dict, sources: dict, default_source: str):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            field = ".".join(str(x) for x in err["loc"])
            msg = err["msg"]
            blamed = (err.get("ctx") or {}).get("error")
            if isinstance(blamed, _FieldError):  # a cross-section check names its own field
                field = ".".join(x for x in (field, blamed.field) if x)
                msg = str(blamed)
            src = _source_of(field, sources, default_source)
            if err["type"] == "extra_forbidden":
                msg = "unknown key (a typo?); allowed keys are the fields of this section"
            lines.append(f"{src}: field '{field}': {msg}")
        raise ParamsError("\n".join(lines)) from None


def parse_override(text: str) -> tuple[str, Any]:
    """``"rl.k=4"`` -> ``("rl.k", 4)``; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in text:
        raise ParamsError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_params(*paths: str | Path, **overrides: Any) -> Params:
    """Layer YAML files (later wins), apply dotted overrides (``rl__k=4`` or ``**{"rl.k": 4}``),
    validate. Raises :class:`ParamsError` naming the file and the field."""
    data: dict = {}
    sources: dict = {}
    for path in paths:
        raw = _read_yaml(path)
        if "notebook" in raw:
            raise ParamsError(f"{path}: this is a notebook params file (notebook: {raw['notebook']}); "
                              "use load_notebook_params or name the kit params it points to")
        _merge(data, raw, str(path), sources)
    overrides = {k.replace("__", "."): v for k, v in overrides.items()}
    task = overrides.get("task.name", (data.get("task") or {}).get("name", TaskParams().name))
    per_task = data.get("task_overrides") or {}
    if isinstance(per_task, dict) and isinstance(per_task.get(task), dict):
        origin = _source_of("task_overrides", sources, "<task_overrides>")
        for key, value in per_task[task].items():
            if key.split(".")[0] in ("task_overrides", "task"):
                raise ParamsError(f"{origin}: field 'task_overrides.{task}.{key}': a per-task override cannot "
                                  "change the task or other per-task overrides")
            _set_dotted(data, key, value, f"{origin} (task_overrides.{task})", sources)
    for key, value in overrides.items():
        _set_dotted(data, key, value, f"override {key}", sources)
    default = str(paths[-1]) if paths else "<defaults>"
    return _validate(Params, data, sources, default)


def load_notebook_params(path: str | Path, **overrides: Any) -> NotebookParams:
    """Validate a notebook params file, and the kit params files and overrides it names."""
    raw = _read_yaml(path)
    raw.update(overrides)
    return _notebook_params(raw, str(path), Path(path).parent)


def validate_notebook(**values: Any) -> NotebookParams:
    """Validate the values of a notebook's ``parameters`` cell (what papermill injected)."""
    return _notebook_params(values, f"notebook {values.get('notebook')} parameters", Path("params"))


def _notebook_params(raw: dict, path: str, base: Path) -> NotebookParams:
    name = raw.get("notebook")
    if name not in NOTEBOOK_PARAMS:
        raise ParamsError(f"{path}: field 'notebook': expected one of {', '.join(NOTEBOOK_PARAMS)}, got {name!r}")
    nb = _validate(NOTEBOOK_PARAMS[name], raw, {}, str(path))
    files = [_resolve_params_path(f, base) for f in nb.params_files]
    for f in files:
        if not Path(f).is_file():
            raise ParamsError(f"{path}: field 'params_files': {f} not found")
    try:
        load_params(*files, **nb.overrides)
    except ParamsError as e:
        raise ParamsError(f"{path} (through params_files/overrides):\n{e}") from None
    for field, extra in getattr(nb, "kit_override_sets", lambda: [])():  # per-variant kit overrides
        try:
            load_params(*files, **{**nb.overrides, **extra})
        except ParamsError as e:
            raise ParamsError(f"{path}: field '{field}':\n{e}") from None
    return nb


def _resolve_params_path(f: str, base: Path) -> str:
    """Paths in a notebook params file are relative to the repo root (the working directory);
    fall back to the params file's folder."""
    if Path(f).is_file() or Path(f).is_absolute():
        return f
    alt = base / Path(f).name
    return str(alt) if alt.is_file() else f


def kit_params_for(nb: NotebookParams, **overrides: Any) -> Params:
    """The kit params a notebook builds on, with its ``set`` and the given overrides applied."""
    return load_params(*nb.params_files, **{**nb.overrides, **overrides})


def load_any(path: str | Path, *more: str | Path, **overrides: Any):
    """Validate whatever the files are: notebook params (one file) or layered kit params."""
    raw = _read_yaml(path)
    if "notebook" in raw:
        if more:
            raise ParamsError(f"{path}: a notebook params file is validated on its own")
        return load_notebook_params(path, **overrides)
    return load_params(path, *more, **overrides)


def params_hash(obj: Any, length: int = 12) -> str:
    """Stable short hash of JSON-able data (sorted keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
