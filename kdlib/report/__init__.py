"""Tables, figures, provenance and the index page (floor 5: reads saved results; imports ``kdlib.maths`` and
``kdlib.config`` constants only).

Everything here takes *saved results* (pandas DataFrames read from run folders or result files) and returns a
DataFrame or a matplotlib Figure; nothing trains, loads a model or reads a run.

- ``labels``: method, task and metric names, display labels and order.
- ``papers``: the papers' own tables, labelled as such.
- ``tables``: Table 1 of the kit (mean ± 95% CI over seeds, paired tests, verdicts).
- ``io``: ``write_table``, ``save_figure``, ``write_provenance`` (atomic writes).
- ``plots``: every figure as a function of saved results.
- ``index``: the index page; ``python -m kdlib.report index OUT_DIR`` rebuilds it (``run_all.sh`` calls it last).
- ``reward_distill``, ``constrained_kd``: the rival systems' tables and figures (seeds 003 and 004).

The names below are re-exported so that notebooks can write ``report.main_table(...)``.
"""

import sys

import matplotlib


def _in_ipython() -> bool:
    ipython = sys.modules.get("IPython")  # only look: importing IPython here would be slow
    try:
        return ipython is not None and ipython.get_ipython() is not None
    except Exception:  # noqa: BLE001 - any trouble means "not a live IPython session"
        return False


if not _in_ipython():
    # Scripts and tests: never open a window. Inside Jupyter/IPython the session's backend (inline)
    # is kept, or figures would silently stop appearing in the notebook.
    matplotlib.use("Agg")

from kdlib.report.index import (  # noqa: E402,F401
    headlines,
    write_index,
)
from kdlib.report.io import (  # noqa: E402,F401
    latex_escape,
    save_figure,
    write_provenance,
    write_table,
)
from kdlib.report.labels import (  # noqa: E402,F401
    METHOD_ORDER,
    METRIC_LABELS,
    NOT_STUDENTS,
    TASK_LABELS,
    TASK_METRICS,
    method_label,
    sort_methods,
    task_kind,
    task_label,
)
from kdlib.report.papers import (  # noqa: E402,F401
    PAPER_TABLE1,
    PAPER_TABLE1_CAPTION,
    paper_table1,
    paper_table7,
    paper_table8,
)
from kdlib.report.plots import (  # noqa: E402,F401
    PPO_PANELS,
    RL_PANELS,
    plot_exerror,
    plot_gradient_variance,
    plot_learning_curves,
    plot_method_bars,
    plot_regimes,
    plot_returns,
    plot_rl_curves,
    plot_variance_bias,
    plot_watch,
    plot_regimes,
)
from kdlib.report.tables import (  # noqa: E402,F401
    ALPHA,
    best_method_lines,
    ketchup_verdicts,
    main_table,
    power_table,
    significance_marker,
    start_markers,
)
