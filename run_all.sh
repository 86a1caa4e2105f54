#!/usr/bin/env bash
# Run every notebook (or the ones named) with one parameter profile, via papermill, and collect
# the executed notebooks, their HTML copies, tables, figures and an index page under
# outputs/<profile>/.
#
#   ./run_all.sh                              # profile "embedded", all notebooks/NN_*.ipynb in order
#   ./run_all.sh --profile smoke              # the tiny profile the tests use
#   ./run_all.sh --profile paper 01 03        # notebooks by number ...
#   ./run_all.sh 02_returns                   # ... or by name
#   ./run_all.sh --profile paper --rehearse DIR   # the paper profile offline on a local hub mirror, small
#   ./run_all.sh --out DIR ...                # write the outputs to DIR instead of outputs/<profile>/
#
# --rehearse DIR: DIR is a hub mirror written by `.venv/bin/python scripts/make_hub_mirror.py DIR` (tiny random
# models and generated rows under the real hub ids). Every notebook runs the paper profile's code path offline
# (HF_HOME=DIR, HF_HUB_OFFLINE=1) with params/paper/<name>.yaml, its layer params/rehearsal/<name>.yaml and the kit
# layer params/rehearsal/kit.yaml (few updates, tiny batches, few evaluation examples), into
# outputs/paper-rehearsal/, which also gets rehearsal.json (hub ids, mirror revisions, one rendered prompt per
# notebook). The run cache lives in DIR/kdlib-cache.
#
# Notebook NN_name reads params/<profile>/name.yaml (e.g. 01_main_results ->
# params/<profile>/main_results.yaml). Every params file is validated (python -m kdlib validate)
# before any notebook runs, and so is every teacher/student pair they train (vocabulary and chat template, from the
# tokenizers); a bad file or pair stops everything with exit code 2. A failing notebook stops
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
rehearse=""
out=""
requested=()
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || die "--profile needs a value (embedded, smoke or paper)" 2; profile=$2; shift 2 ;;
    --profile=*) profile=${1#--profile=}; shift ;;
    --rehearse) [ $# -ge 2 ] || die "--rehearse needs the hub mirror's folder" 2; rehearse=$2; shift 2 ;;
    --rehearse=*) rehearse=${1#--rehearse=}; shift ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder" 2; out=$2; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" 2 ;;
    *) requested+=("$1"); shift ;;
  esac
done
[ -d "params/$profile" ] || die "no profile '$profile': params/$profile/ does not exist (profiles: $(ls params | tr '\n' ' '))" 2
if [ -n "$rehearse" ]; then
  [ "$profile" = "paper" ] || die "--rehearse rehearses the paper profile: add --profile paper" 2
  [ -f "$rehearse/mirror.json" ] || die "no hub mirror at $rehearse (write one: .venv/bin/python scripts/make_hub_mirror.py $rehearse)" 2
  rehearse=$(cd "$rehearse" && pwd)
fi
if [ -z "$out" ]; then
  out="outputs/$profile"
  [ -z "$rehearse" ] || out="outputs/paper-rehearsal"
fi

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
if [ -n "$rehearse" ]; then
  export HF_HOME="$rehearse" HF_HUB_OFFLINE=1  # the mirror, through the libraries' ordinary offline caches
elif [ "$profile" != "paper" ]; then
  export HF_HUB_OFFLINE=1  # embedded and smoke never touch the hub; paper downloads models and data
fi

params_of() {
  if [ -n "$rehearse" ]; then echo "$out/params/${1#[0-9][0-9]_}.yaml"; else echo "params/$profile/${1#[0-9][0-9]_}.yaml"; fi
}
if [ -n "$rehearse" ]; then  # the paper file + its rehearsal layer, written under $out/params/
  for nb in "${notebooks[@]}"; do
    [ -f "params/paper/${nb#[0-9][0-9]_}.yaml" ] || die "notebook $nb needs the params file params/paper/${nb#[0-9][0-9]_}.yaml, which does not exist" 2
    python scripts/rehearsal.py params "$nb" "$rehearse" "$out" > /dev/null
  done
fi

# Validate every params file before any compute.
for nb in "${notebooks[@]}"; do
  pf=$(params_of "$nb")
  [ -f "$pf" ] || die "notebook $nb needs the params file $pf, which does not exist" 2
  if [ "${KDLIB_SKIP_VALIDATE:-0}" = "1" ]; then
    echo "[run_all] KDLIB_SKIP_VALIDATE=1: not validating $pf" >&2
  elif ! python -m kdlib validate -f "$pf" > /dev/null; then
    die "invalid params file $pf (see the message above); nothing was run" 2
  fi
done

# Every teacher/student pair the notebooks train shares a vocabulary and a chat template (tokenizers only).
pair_args=()
for nb in "${notebooks[@]}"; do pair_args+=(-f "$(params_of "$nb")"); done
if [ "${KDLIB_SKIP_VALIDATE:-0}" != "1" ]; then
  python -m kdlib prepare --check "${pair_args[@]}" || die "a teacher/student pair does not share its tokenizer (see the message above); nothing was run" 2
fi

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
  rc=0
  python -m kdlib prepare -f "$pf" --log "$log" --every "${KDLIB_STATUS_EVERY:-30}" || rc=$?
  if [ "$rc" -ne 0 ]; then
    secs=$(( $(date +%s) - t0 ))
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) profile=$profile notebook=$nb status=FAILED(training) seconds=$secs params=$pf" >> "$log"
    echo "run_all.sh: training the runs of $nb FAILED after ${secs}s (finished runs are kept; re-running resumes)." >&2
    [ "$rc" -eq 2 ] && exit 2  # bad parameters (named above), found before that notebook's compute
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

if [ -n "$rehearse" ]; then  # hub ids, mirror revisions and one rendered prompt per notebook
  python scripts/rehearsal.py record "$rehearse" "$out" "${notebooks[@]}" | tee -a "$log"
fi
index=$(python -m kdlib.report index "$out")
echo "[run_all] all done in $(( $(date +%s) - t_all ))s (+${t_setup}s set-up); open $index" | tee -a "$log"
