#!/usr/bin/env bash
# The test command: sets up .venv on first use, then runs the whole suite (about 4-5 minutes on
# 2 cores). Extra arguments go to pytest, e.g. ./run_tests.sh -k returns
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
exec .venv/bin/python -m pytest -q "$@"
