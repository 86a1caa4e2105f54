#!/usr/bin/env bash
# Run every notebook (or the ones named) with one parameter profile, via papermill, and collect
# the executed notebooks, their HTML copies, tables, figures and an index page under
# outputs/<profile>/.
#
#   ./run_all.sh                              # profile "embedded", all notebooks/NN_*.ipynb in order
#   ./run_all.sh --profile smoke              # the tiny profile the tests use
#   ./run_all.sh --profile paper 01 03        # notebooks by number ...
#   ./run_all.sh 02_returns                   # ... or by name
#
# Notebook NN_name reads params/<profile>/name.yaml (e.g. 01_main_results ->
# params/<profile>/main_results.yaml). Every params file is validated (python -m kdlib validate)
# before any notebook runs; a bad file stops everything with exit code 2. A failing notebook stops
# the run at once; the partially executed copy stays in outputs/<profile>/ for inspection.
# Each notebook's wall time is appended to outputs/<profile>/run_all.log.
#
# Developer switch: KDLIB_SKIP_VALIDATE=1 skips the validation step (for throwaway notebooks
# whose params files `kdlib validate` does not know). Not for normal use.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "run_all.sh: error: $1" >&2; exit "${2:-1}"; }  # die MESSAGE [EXIT_CODE]

profile=embedded
requested=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || die "--profile needs a value (embedded, smoke or paper)" 2; profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" 2 ;;
    *) requested+=("$1"); shift ;;
  esac
done
[ -d "params/$profile" ] || die "no profile '$profile': params/$profile/ does not exist (profiles: $(ls params | tr '\n' ' '))" 2

# Which notebooks: all NN_*.ipynb in order, or the ones named (01, 01_main_results, notebooks/01_main_results.ipynb).
notebooks=()
if [ ${#requested[@]} -eq 0 ]; then
  for nb in notebooks/[0-9][0-9]_*.ipynb; do
    [ -e "$nb" ] && notebooks+=("$(basename "$nb" .ipynb)")
  done
  [ ${#notebooks[@]} -gt 0 ] || die "no notebooks found under notebooks/ (expected NN_name.ipynb)"
else
  for arg in "${requested[@]}"; do
    name=$(basename "$arg" .ipynb)
    if [ -f "notebooks/$name.ipynb" ]; then
      notebooks+=("$name")
      continue
    fi
    matches=()
    for nb in notebooks/"$name"_*.ipynb; do [ -e "$nb" ] && matches+=("$(basename "$nb" .ipynb)"); done
    if [ ${#matches[@]} -eq 1 ]; then
      notebooks+=("${matches[0]}")
    elif [ ${#matches[@]} -gt 1 ]; then
      die "'$arg' matches several notebooks: ${matches[*]}" 2
    else
      die "no notebook '$arg'; available: $(cd notebooks 2>/dev/null && ls [0-9][0-9]_*.ipynb 2>/dev/null | sed 's/\.ipynb$//' | tr '\n' ' ')" 2
    fi
  done
fi

t_start=$(date +%s)
scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH"
export KDLIB_PROGRESS=1 MPLBACKEND=Agg PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
t_setup=$(( $(date +%s) - t_start ))
if [ "$profile" != "paper" ]; then
  export HF_HUB_OFFLINE=1  # embedded and smoke never touch the hub; paper downloads models and data
fi

# Validate every params file before any compute.
params_of() { echo "params/$profile/${1#[0-9][0-9]_}.yaml"; }
for nb in "${notebooks[@]}"; do
  pf=$(params_of "$nb")
  [ -f "$pf" ] || die "notebook $nb needs the params file $pf, which does not exist" 2
  if [ "${KDLIB_SKIP_VALIDATE:-0}" = "1" ]; then
    echo "[run_all] KDLIB_SKIP_VALIDATE=1: not validating $pf" >&2
  elif ! python -m kdlib validate -f "$pf" > /dev/null; then
    die "invalid params file $pf (see the message above); nothing was run" 2
  fi
done

out="outputs/$profile"
mkdir -p "$out"
log="$out/run_all.log"
t_all=$(date +%s)
echo "[run_all] profile $profile: ${notebooks[*]} -> $out/ (set-up took ${t_setup}s)" | tee -a "$log"

for nb in "${notebooks[@]}"; do
  pf=$(params_of "$nb")
  out_nb="$out/$nb.ipynb"
  echo "[run_all] $nb  (params $pf)" | tee -a "$log"
  t0=$(date +%s)
  # Train every run the notebook reads, in parallel single-thread worker processes (KDLIB_WORKERS,
  # default: the CPUs), printing which runs are training, their step and an ETA (also to the log).
  # The notebook then only reads the run cache (it would train what is missing itself).
  if ! python -m kdlib prepare -f "$pf" --log "$log" --every "${KDLIB_STATUS_EVERY:-30}"; then
    secs=$(( $(date +%s) - t0 ))
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) profile=$profile notebook=$nb status=FAILED(training) seconds=$secs params=$pf" >> "$log"
    echo "run_all.sh: training the runs of $nb FAILED after ${secs}s (finished runs are kept; re-running resumes)." >&2
    exit 1
  fi
  t_train=$(( $(date +%s) - t0 ))
  # The kernel gets the inline backend (no window either, like Agg) so that figures are embedded
  # in the executed notebook and its HTML copy; under plain Agg they would be missing there.
  if ! MPLBACKEND=module://matplotlib_inline.backend_inline \
      python -m papermill "notebooks/$nb.ipynb" "$out_nb" -p params_file "$pf" -p output_dir "$out" \
      --cwd notebooks -k python3 --log-level WARNING; then
    secs=$(( $(date +%s) - t0 ))
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) profile=$profile notebook=$nb status=FAILED seconds=$secs params=$pf" >> "$log"
    echo >&2
    echo "run_all.sh: notebook $nb FAILED after ${secs}s." >&2
    # Name the failing cell from the partially executed notebook (papermill marks it).
    python - "$out_nb" >&2 <<'EOF' || true
import json, sys
try:
    nb = json.load(open(sys.argv[1], encoding="utf-8"))
except (OSError, ValueError):
    sys.exit(0)
code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
for i, cell in enumerate(code, 1):
    errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    if errors or cell.get("metadata", {}).get("papermill", {}).get("exception"):
        src = "".join(cell.get("source", "")).strip().splitlines()
        print(f"  failing cell: In [{cell.get('execution_count')}] (code cell {i} of {len(code)}), which starts:")
        for line in src[:5]:
            print(f"    {line}")
        for e in errors[:1]:
            print(f"  error: {e.get('ename')}: {e.get('evalue')}")
        break
EOF
    echo "  partially executed notebook: $out_nb" >&2
    exit 1
  fi
  if ! python -m jupyter nbconvert --to html "$out_nb" --output-dir "$out" --log-level WARN; then
    echo "run_all.sh: warning: could not convert $out_nb to HTML (the notebook itself ran fine)" >&2
  fi
  secs=$(( $(date +%s) - t0 ))
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) profile=$profile notebook=$nb status=ok seconds=$secs training_seconds=$t_train params=$pf" >> "$log"
  echo "[run_all] $nb done in ${secs}s (${t_train}s training)" | tee -a "$log"
done

index=$(python -m kdlib.report index "$out")
echo "[run_all] all done in $(( $(date +%s) - t_all ))s (+${t_setup}s set-up); open $index" | tee -a "$log"
