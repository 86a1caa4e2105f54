"""The kit params of one training/evaluation chain (``kit.yaml`` and its overrides): evaluation, judge, and :class:`Params`.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, StrictInt, field_validator, model_validator

from kdlib.config.base import (
    CMDP_METHODS,
    CMDP_STAGES,
    DIVERGENCE_METHODS,
    MATH_TASKS,
    METHODS,
    PPO_METHODS,
    RD_STAGES,
    RD_TASKS,
    RL_METHODS,
    ModelParams,
    OptimParams,
    TaskParams,
    TeacherParams,
    _check_tasks,
    _FieldError,
    _nonneg,
    _pos,
    _Strict,
)
from kdlib.config.families import (
    ConstrainedKDParams,
    DivergenceParams,
    PPOParams,
    RewardDistillParams,
    RLParams,
)


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
