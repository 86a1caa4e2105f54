"""Typed, validated parameters (floor 2: imports nothing else of the kit).

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

Split by what it configures: ``base`` (constants and the settings every chain shares), ``families`` (one
class per training family), ``kit`` (:class:`Params`), ``notebooks`` (one class per notebook), ``loading``.
"""

from kdlib.config.base import (  # noqa: F401
    CMDP_METHODS,
    CMDP_STAGES,
    DEFAULT_AMBIGUITY,
    DIVERGENCE_METHODS,
    EMBEDDED_TASKS,
    EVAL_SETS,
    HUB_TASKS,
    MATH_TASKS,
    METHODS,
    PPO_METHODS,
    RD_STAGES,
    RD_TASKS,
    RL_METHODS,
    TASK_LENGTHS,
    TASKS,
    ModelParams,
    OptimParams,
    ParamsError,
    PosInt,
    TaskParams,
    TeacherParams,
    looks_local,
)
from kdlib.config.families import (  # noqa: F401
    ConstrainedKDParams,
    DivergenceParams,
    PPOParams,
    RewardDistillParams,
    RLParams,
)
from kdlib.config.kit import (  # noqa: F401
    EvalParams,
    JudgeParams,
    Params,
)
from kdlib.config.loading import (  # noqa: F401
    kit_params_for,
    load_any,
    load_notebook_params,
    load_params,
    notebook_params,
    params_hash,
    parse_override,
    validate_notebook,
)
from kdlib.config.notebooks import (  # noqa: F401
    ConstrainedKDStudyParams,
    DecoderOnlyParams,
    DiagnosticsParams,
    GradientVarianceParams,
    LLMEvalParams,
    MainResultsParams,
    ModelSizeParams,
    NotebookParams,
    PPOStudyParams,
    RegimesParams,
    ReturnsParams,
    RewardDistillStudyParams,
    VarianceBiasParams,
    RegimesParams,
)
from kdlib.config.paths import project_root, use_project_root  # noqa: F401,E402
