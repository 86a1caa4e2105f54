"""LLM-as-judge pairwise evaluation (seed 000, Sec. 3.3 "LLM Evaluation", Table 2, App. D).

A method's outputs (the *candidate*) are compared with the KL-distillation baseline's outputs
(the *baseline*) on the same test inputs, for one criterion (overall quality, informativeness,
coherence) of one task (summarization, translation).

Protocol (the paper queries the judge four times per pair "by swapping the two candidates and
their IDs"): every pair is judged in the four presentations

    shown first in {candidate, baseline}  x  ID of the first-shown in {"A", "B"}

so that a judge with a pure position bias or a pure ID bias scores exactly 50%. Each answer is
parsed from its last ``Preferred: <ID>`` line (case, whitespace and markdown tolerant; anything
else is *invalid*). Then, over N pairs (4N queries):

- an example's score = share of its *valid* verdicts that prefer the candidate; an example
  with no valid verdict is left out of the win rate (its queries count in ``invalid_rate``);
- ``win_rate`` = mean example score (a fraction in [0, 1]) with a seeded percentile-bootstrap
  95% CI over examples (``ci_low``, ``ci_high``). With every answer valid this equals the share
  of the 4N queries won, which is what Table 2 reports (in %);
- ``tie_rate``: share of scored examples whose valid verdicts split evenly (score 0.5);
- ``invalid_rate``: share of the 4N queries that were unparseable or failed (after retries);
- ``consistency``: share of all examples whose four verdicts are valid and prefer the same
  *system* (content-consistent); a position- or ID-biased judge gets 0;
- ``first_position_rate``: share of valid verdicts that pick whichever text was shown first
  (0.5 = no position bias); ``id_a_rate``: share of valid verdicts that pick ID "A".

Answers are cached on disk (one JSON file per answer, written atomically) under a key that
hashes the judge identity (backend, model, decoding settings; never the URL or the API key),
the template text and the filled prompt inputs. Answers that failed (network errors, HTTP
errors after retries) are not cached, so a re-run retries them; a successful answer is cached
whether or not it parses. An interrupted evaluation therefore resumes, and a finished one
re-runs with zero backend calls.

Backends: ``OpenAIChatBackend`` (any OpenAI-compatible ``/chat/completions`` server, e.g.
``vllm serve Qwen/Qwen2.5-72B-Instruct`` as in the paper), ``TransformersChatBackend`` (a local
chat model) and ``SurrogateJudge`` (no LLM: a reference-based metric answering through the
same prompt/parse protocol; the offline default, clearly labelled ``surrogate:...``).

Modules: ``templates`` (prompt files, answer parsing), ``backends`` (OpenAI-compatible server, local model),
``surrogate`` (offline judge), ``pairwise`` (four presentations, cache, win rates, table), ``cli``.
"""

from kdlib.judge.backends import (  # noqa: F401
    JudgeBackend,
    JudgeQuery,
    OnResult,
    OpenAIChatBackend,
    TransformersChatBackend,
)
from kdlib.judge.cli import (  # noqa: F401
    build_parser,
    main,
    read_jsonl,
    run_cli,
)
from kdlib.judge.pairwise import (  # noqa: F401
    PRESENTATIONS,
    SUMMARY_KEYS,
    AnswerCache,
    JudgeConfig,
    bootstrap_ci,
    check_pairs,
    judge_pairs,
    judge_table,
    make_backend,
)
from kdlib.judge.surrogate import (  # noqa: F401
    SurrogateJudge,
    coherence_proxy,
    content_recall,
)
from kdlib.judge.templates import (  # noqa: F401
    CACHE_FORMAT,
    CRITERIA,
    DEFAULT_TEMPLATES_DIR,
    IDS,
    PLACEHOLDERS,
    TASKS,
    InputError,
    JudgeError,
    TemplateError,
    fill_template,
    load_template,
    parse_preferred,
    resolve_templates_dir,
    template_path,
)
