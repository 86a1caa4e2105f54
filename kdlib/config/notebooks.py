"""Notebook params: the flat values papermill injects into a notebook's ``parameters`` cell, one class per notebook.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, StrictInt, field_validator, model_validator

from kdlib.config.base import (
    CMDP_METHODS,
    DIVERGENCE_METHODS,
    EMBEDDED_TASKS,
    EVAL_SETS,
    MATH_TASKS,
    PPO_METHODS,
    RD_TASKS,
    RL_METHODS,
    _check_ks,
    _check_tasks,
    _FieldError,
    _nonneg,
    _pos,
    _Strict,
)


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


class _MethodGridParams(NotebookParams):
    """Notebook params naming Table 1's method rows: ``methods`` (divergence and REINFORCE methods)
    and KETCHUP's ``k_values`` (one row per K)."""

    methods: list[str] = Field(default_factory=lambda: ["seqkd", "kl", "js", "tvd", "llmr", "llmr_mean", "llmr_minvar"])
    k_values: list[StrictInt] = Field(default_factory=lambda: [2, 4, 8, 16])
    soft_k_values: list[StrictInt] = Field(default_factory=list)  # KETCHUP with the soft value (rl.value: soft), per K

    @field_validator("methods")
    @classmethod
    def _methods(cls, v):
        for m in v:
            if m not in DIVERGENCE_METHODS + RL_METHODS:
                raise ValueError(f"unknown method {m!r}; known: {', '.join(DIVERGENCE_METHODS + RL_METHODS)}")
        return v

    @field_validator("k_values", "soft_k_values")
    @classmethod
    def _ks(cls, v):
        return _check_ks(v) if v else v


class MainResultsParams(_MethodGridParams):
    notebook: Literal["01_main_results"] = "01_main_results"
    # More seeds for the rows whose comparison needs power (Table 1's KETCHUP-vs-LLMR tests): the runs of ``power_rows`` (method names;
    # ``ketchup`` = every KETCHUP row of ``k_values``) also train with ``power_seeds``, after ``seeds``.
    power_seeds: list[StrictInt] = Field(default_factory=list)
    power_rows: list[str] = Field(default_factory=lambda: ["llmr", "ketchup"])

    @model_validator(mode="after")
    def _power(self):
        both = set(self.power_seeds) & set(self.seeds)
        if both:
            raise ValueError(f"power_seeds repeats seeds of 'seeds': {sorted(both)}")
        if len(set(self.power_seeds)) != len(self.power_seeds):
            raise ValueError("power_seeds has a seed twice")
        rows = set(self.methods) | ({"ketchup"} if self.k_values else set())
        unknown = [m for m in self.power_rows if m not in rows]
        if unknown:
            raise ValueError(f"power_rows names {unknown}, not rows of this table ({', '.join(sorted(rows))})")
        return self

    def seeds_of(self, label: str) -> list[int]:
        """The seeds of one row (a run label of :func:`kdlib.studies.common.method_plan`)."""
        method = "ketchup" if label.startswith("ketchup_k") else label
        return list(self.seeds) + (list(self.power_seeds) if method in self.power_rows else [])


class ReturnsParams(NotebookParams):
    notebook: Literal["02_returns"] = "02_returns"
    methods: list[str] = Field(default_factory=lambda: ["llmr", "llmr_mean", "llmr_minvar"])
    k_values: list[StrictInt] = Field(default_factory=lambda: [2, 4, 8, 16])
    soft_k_values: list[StrictInt] = Field(default_factory=list)  # KETCHUP with the soft value, per K

    @field_validator("methods")
    @classmethod
    def _rl_methods(cls, v):
        for m in v:
            if m not in RL_METHODS:
                raise ValueError(f"Figure 1 shows REINFORCE-family methods only; {m!r} is not one of {', '.join(RL_METHODS)}")
        return v

    @field_validator("k_values", "soft_k_values")
    @classmethod
    def _ks(cls, v):
        return _check_ks(v) if v else v


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
    """Notebook 07 (seed 003, kdlib.chains.reward_distill): Tables 2-4 and Figs. 3-7.

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
   , for the students of Figure 2 (pre-distillation stopped after ``student_steps``)."""

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
    """Notebook 11: what nobody publishes about RL-KD: exposure bias (LLMR's ExError%)
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


class RegimesParams(NotebookParams):
    """Notebook 12: a map of when the K-step return helps. KETCHUP (K chosen on dev among ``k_values``) against LLMR
    on one task, across sequences per update (``batch_sizes``, at an equal number of sampled sequences
    ``sequences``: a small batch takes more updates) and task spread (``ambiguities``: ``task.ambiguity`` levels,
    each with its own teacher and pre-distilled student). Paired tests over ``seeds`` per regime."""

    notebook: Literal["12_regimes"] = "12_regimes"
    task: str = "mini-xsum"
    ambiguities: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0])
    batch_sizes: list[StrictInt] = Field(default_factory=lambda: [8, 64])
    sequences: StrictInt = 1920  # sampled sequences per run (64 x 30 updates: Table 1's budget)
    evals: StrictInt = 10  # dev evaluations per run (plus the start)
    k_values: list[StrictInt] = Field(default_factory=lambda: [4, 16])

    @field_validator("task")
    @classmethod
    def _task(cls, v):
        return _check_tasks([v])[0]

    @field_validator("ambiguities")
    @classmethod
    def _ambiguities(cls, v):
        if len(v) < 2 or len(set(v)) != len(v) or any(a < 0 for a in v):
            raise ValueError(f"at least two distinct ambiguity levels >= 0, got {v}")
        return sorted(v)

    @field_validator("batch_sizes")
    @classmethod
    def _batches(cls, v):
        if len(v) < 2 or len(set(v)) != len(v) or any(b < 1 for b in v):
            raise ValueError(f"at least two distinct batch sizes >= 1, got {v}")
        return sorted(v)

    @field_validator("k_values")
    @classmethod
    def _ks(cls, v):
        v = _check_ks(v)
        if any(k < 2 for k in v):
            raise ValueError(f"KETCHUP's K must be >= 2 (K = 1 is LLMR), got {v}")
        return v

    @model_validator(mode="after")
    def _divisible(self):
        for b in self.batch_sizes:
            if self.sequences % b or (self.sequences // b) < self.evals:
                raise _FieldError("sequences", f"{self.sequences} must be a multiple of every batch size and give at "
                                  f"least `evals` ({self.evals}) updates; batch size {b} does not")
        return self


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
    "12_regimes": RegimesParams,
}
