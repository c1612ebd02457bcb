#!/usr/bin/env bash
# The GPU check: one command, at most 8 minutes, on a machine with CUDA torch but no internet.
#
#   bash scripts/gpu_check.sh [OUTDIR]            # OUTDIR default: $OUT, else ./gpu_check_out
#   bash scripts/gpu_check.sh --dry-run           # list what it would run; runs nothing (any machine)
#   bash scripts/gpu_check.sh --device cpu DIR    # try the driver without a GPU (stages that need one fail)
#
# 1. installs the wheels carried in .whl/ (scripts/gpu_wheels.sh made them) into a temporary
#    folder: pip install --no-index --no-deps --target, then PYTHONPATH;
# 2. runs scripts/gpu_check.py under one global `timeout`: the stages (tests marked cuda, training
#    and decoding throughput, the quick main job, torchrun/NCCL), each with its own budget.
# Writes OUTDIR/gpu_check.json (ONE JSON line: stage -> status, seconds, figures) and
# OUTDIR/gpu_check.log. Exit 0 when every stage passed.
#
# Environment: PYTHON (default python3), GPU_CHECK_TOTAL_S (overall seconds, default 470),
# GPU_WHEELS_DIR (default .whl), GPU_CHECK_SITE (install folder, default a temp folder),
# GPU_CHECK_STAGES (comma-separated subset of the stages, e.g. to rerun one: main_job,torchrun).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
DEVICE=cuda
OUTDIR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --device) DEVICE=${2:?--device needs cuda or cpu}; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) OUTDIR=$1 ;;
  esac
  shift
done
OUTDIR=${OUTDIR:-${OUT:-gpu_check_out}}
PY=${PYTHON:-python3}
WHL=${GPU_WHEELS_DIR:-.whl}
TOTAL=${GPU_CHECK_TOTAL_S:-470}
SITE=${GPU_CHECK_SITE:-${TMPDIR:-/tmp}/gpu_check_site}
DATA="$WHL/moses_sample.smi.gz"
shopt -s nullglob
WHEELS=("$WHL"/*.whl)
INSTALL=("$PY" -m pip install --disable-pip-version-check -q --no-index --no-deps --target "$SITE")

if [ "$DRY" = 1 ]; then
  echo "[gpu_check] dry run: nothing is installed or run"
  echo "stage install (budget 45 s): ${#WHEELS[@]} wheels from $WHL into $SITE"
  echo "    ${INSTALL[*]} $WHL/*.whl"
  echo "    export PYTHONPATH=$PWD:$SITE"
  echo "global limit: timeout $TOTAL s for everything (GPU_CHECK_TOTAL_S)"
  exec "$PY" scripts/gpu_check.py --dry-run --data "$DATA" --device "$DEVICE" --budget $((TOTAL - 20)) \
    --out "$OUTDIR" ${GPU_CHECK_STAGES:+--stages "$GPU_CHECK_STAGES"}
fi

START=$SECONDS
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
if [ "${#WHEELS[@]}" -gt 0 ]; then
  echo "[gpu_check] installing ${#WHEELS[@]} wheels into $SITE" | tee -a "$LOG"
  rm -rf "$SITE"
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    # no pip: a wheel is a zip archive laid out as installed files, so unpacking it installs it
    echo "[gpu_check] no pip for $PY: unpacking the wheels instead" | tee -a "$LOG"
    INSTALL=(sh -c 'for w in "$@"; do "$0" -m zipfile -e "$w" "'"$SITE"'" || exit 1; done' "$PY")
  fi
  if ! timeout 45 "${INSTALL[@]}" "${WHEELS[@]}" >>"$LOG" 2>&1; then
    echo "error: installing the wheels of $WHL failed (see $LOG)" | tee -a "$LOG" >&2
    printf '{"check": "gpu_check", "pass": false, "stages": {"install": {"status": "fail"}}}\n' \
      > "$OUTDIR/gpu_check.json"
    exit 1
  fi
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "[gpu_check] no wheels in $WHL: using the packages already installed" | tee -a "$LOG"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "[gpu_check] install took $((SECONDS - START)) s" | tee -a "$LOG"

LEFT=$((TOTAL - (SECONDS - START)))
# the driver stops starting stages 15 s before the global timeout, which is the safety net
STAGES=()
if [ -n "${GPU_CHECK_STAGES:-}" ]; then STAGES=(--stages "$GPU_CHECK_STAGES"); fi
timeout -k 5 "$LEFT" "$PY" scripts/gpu_check.py --out "$OUTDIR" --data "$DATA" --device "$DEVICE" \
  --budget $((LEFT - 15)) --python "$PY" ${STAGES[@]+"${STAGES[@]}"}
RC=$?
if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
  echo "error: the global limit of $TOTAL s was reached; $OUTDIR/gpu_check.json holds the finished stages" >&2
fi
echo "[gpu_check] done in $((SECONDS - START)) s, exit $RC; results: $OUTDIR/gpu_check.json" | tee -a "$LOG"
exit "$RC"
