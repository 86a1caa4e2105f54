"""Settings of each training family: divergence KD, REINFORCE (RL), clipped policy optimisation (PPO), seed 004's constrained KD, seed 003's reward distillation.
"""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, StrictBool, StrictInt, field_validator, model_validator

from kdlib.config.base import (
    EVAL_SETS,
    OptimParams,
    _check_ks,
    _FieldError,
    _nonneg,
    _pos,
    _Strict,
)


class DivergenceParams(OptimParams):
    """SeqKD / KL / JS / TVD (Wen et al. 2023): token-level divergences on fixed prefixes.

    ``estimator`` (JS and TVD only):
      * ``wen`` (default): Wen et al.'s step-wise decomposition; every micro-batch scores the
        teacher-prefix half (the cached teacher outputs) AND the student-prefix half (the
        student's samples): JS = beta KL(p||m) on teacher prefixes + (1-beta) KL(q||m) on student
        prefixes; TVD = 1/2 TVD on each (kdlib.maths.losses.wen_js_divergence / wen_tvd);
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
    # gkd_jsd (GKD, Agarwal et al. 2024; TRL GKDTrainer): generalised JSD(gkd_beta) (0: forward KL, 1: reverse KL,
    # kdlib.maths.onpolicy.generalized_jsd) on the student's samples (at `temperature`) with probability gkd_lambda
    # per micro-batch, else on the fixed outputs (the teacher's, as KL's). Defaults: TRL's GKDConfig.
    gkd_beta: float = 0.5
    gkd_lambda: float = 0.5
    # distillm (DistiLLM, Ko et al. 2024, Algorithm 1; jongwooko/distillm): alpha-skew KL (skl) or skew reverse KL
    # (srkl) on fresh student outputs, a replay buffer of earlier ones (distillm_capacity outputs), or the fixed
    # outputs; the share of student outputs starts at distillm_init and grows by 0.1 whenever the student's dev
    # cross-entropy has risen by distillm_loss_eps since the last increase. Defaults: the authors' scripts.
    distillm_loss: Literal["skl", "srkl"] = "skl"
    distillm_alpha: float = 0.1
    distillm_init: float = 0.0
    distillm_loss_eps: float = 0.1
    distillm_capacity: StrictInt = 1000

    @field_validator("gkd_beta", "gkd_lambda", "distillm_init")
    @classmethod
    def _closed_unit(cls, v):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"must be in [0, 1], got {v}")
        return v

    @field_validator("distillm_alpha")
    @classmethod
    def _skew(cls, v):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must be in [0, 1), got {v}")
        return v

    @field_validator("distillm_loss_eps")
    @classmethod
    def _eps(cls, v):
        return _nonneg(v)

    @field_validator("distillm_capacity")
    @classmethod
    def _capacity(cls, v):
        if v < 1:
            raise ValueError(f"must be an integer >= 1, got {v}")
        return v

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
    seed001_brim_extras.md Sec. 8.2): the learning signal of kdlib.maths.losses.authors_code_pg_loss
    (clip of rho * G^, rho the detached student probability, mean over tokens), the ``clamp``
    tail, and a baseline that is one batch scalar (kdlib.maths.returns.authors_code_baseline).
    ``tail``: ``algorithm1`` (Algorithm 1), ``block`` (Eq. (7)/(20)), ``clamp`` (authors' code).
    ``temperature`` != 1 or ``top_k`` > 0 samples from another distribution than the policy whose
    log-probabilities the gradient uses (off-policy REINFORCE): refused unless
    ``allow_off_policy`` is true.
    """

    k: Union[StrictInt, Literal["auto"]] = 2  # KETCHUP's K; LLMR and its baselines use K = 1
    # k: auto (a kit extension): per sequence, the largest K of auto_k_grid whose exact optimistic
    # bias per token stays within auto_k_tol nats (kdlib.maths.returns.adaptive_k).
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
    # actions; see kdlib.maths.returns.truncated_kstep_returns). The embedded students rarely hit the limit.
    truncated: Literal["drop", "keep", "bootstrap"] = "drop"
    pg_normalize: Literal["batch", "tokens"] = "batch"
    # The state value LLMR's rewards and KETCHUP's K-step return bootstrap with: max (the papers': max_a q) or soft
    # (logsumexp_a q; then LLMR's reward-to-go is the present logit plus the teacher's future log-probabilities,
    # kdlib.maths.returns.teacher_q). A kit extension; `ketchup` with `soft` is its own Table 1 row.
    value: Literal["max", "soft"] = "max"
    # `opd` (on-policy reverse KL): A_t = sum_{i>=t} opd_gamma^(i-t) (log pi_T(y_i) - log pi_S(y_i)), discounted by
    # distance; 0 is per-token (tinker-cookbook's and Qwen3's default), 1 the reward-to-go.
    opd_gamma: float = 0.0
    # `minillm_pg` (MiniLLM, Gu et al. 2024; microsoft/LMOps): rollouts drawn from alpha p_T + (1 - alpha) pi (teacher-
    # mixed sampling, importance-weighted; 0: the student's own samples), the length-normalised future log ratio as the
    # return (whitened over the batch with minillm_whiten, as LMOps) plus the single-step term, the token mean of
    # KL(pi || p_T) over the vocabulary. Defaults: the paper's alpha = 0.2, LMOps's whitening.
    minillm_mix: float = 0.2
    minillm_whiten: StrictBool = True

    @field_validator("minillm_mix")
    @classmethod
    def _mix(cls, v):
        if not 0.0 <= v < 1.0:
            raise ValueError(f"must lie in [0, 1), got {v}")
        return v

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v):
        if v == "auto":
            return v
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"K must be an integer >= 1 or 'auto', got {v!r}")
        return v

    @field_validator("opd_gamma")
    @classmethod
    def _gamma(cls, v):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"must lie in [0, 1], got {v}")
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
    vf_lr: Optional[float] = None  # the critic's own learning rate (None: the policy's `lr`) [kit default]
    critic_warmup: StrictInt = 0  # value-only epochs on the first rollout batch before any policy update [kit default]
    temperature: float = 1.0  # rollouts at temperature 1 are on-policy samples of pi_old
    k: StrictInt = 2
    tail: Literal["algorithm1", "block", "clamp"] = "algorithm1"
    normalize: Literal["raw", "mean", "log_softmax"] = "mean"
    reward_clip: float = 100.0
    truncated: Literal["drop", "keep", "bootstrap"] = "drop"

    @field_validator("vf_lr")
    @classmethod
    def _vf_lr(cls, v):
        return v if v is None else _pos(v)

    @field_validator("critic_warmup")
    @classmethod
    def _warmup(cls, v):
        return _nonneg(v)

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
    """Seed 003's pipeline (kdlib.chains.reward_distill; spec seeds003_004 Part A). Defaults are the
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
