#!/usr/bin/env bash
# Create the project's .venv on first use and reuse it afterwards; re-install when pyproject.toml
# changes. torch is installed first and pinned (2.13.0): an unpinned torch pulls gigabytes of
# CUDA packages on a CPU machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
stamp=.venv/.kdlib-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
# Notebooks are committed without outputs or volatile metadata: a git filter (nbstripout) strips them on
# `git add` and in `git status`/`git diff`, so opening and running a notebook in JupyterLab leaves the tree clean.
# The filter's settings live in this clone's .git/config; .gitattributes names the filter. Idempotent.
git_filter() {
  git rev-parse --is-inside-work-tree > /dev/null 2>&1 || return 0

  git config filter.nbstripout.clean "'$PWD/.venv/bin/python' -m nbstripout --keep-id --extra-keys metadata.language_info"
  git config filter.nbstripout.smudge cat
  git config diff.ipynb.textconv "'$PWD/.venv/bin/python' -m nbstripout -t --keep-id --extra-keys metadata.language_info"
}
if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  git_filter
  exit 0
fi
echo "[setup] installing the kit into .venv (first use only, about two minutes)" >&2
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
echo "$want" > "$stamp"
git_filter
echo "[setup] done: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')" >&2
