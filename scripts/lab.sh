#!/usr/bin/env bash
# Open JupyterLab from the kit's .venv at the repository root. Works as a normal user and as root (containers and
# many GPU machines run as root; JupyterLab refuses root without --allow-root). Extra arguments go to jupyter lab,
# e.g. scripts/lab.sh --port 8890 --no-browser. Notebooks under notebooks/ are saved without outputs
# (jupyter_server_config.py), so running one leaves `git status` clean; results go to outputs/.
#   KDLIB_PROFILE=smoke scripts/lab.sh    # notebooks read params/smoke/ instead of params/embedded/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/bootstrap.sh
args=()
if [ "$(id -u)" = "0" ]; then args+=(--allow-root); fi
exec .venv/bin/jupyter lab --config jupyter_server_config.py "${args[@]}" "$@"
