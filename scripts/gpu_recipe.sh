#!/usr/bin/env bash
# The `gpu` preset on a GPU machine (issue #12 item 9): its epoch time and a reconstruction figure
# from a training run cut to a fixed minute budget. Run after scripts/gpu_wheels.sh (the wheels
# and the 250,000-molecule MOSES sample travel in .whl/), e.g. through the device tool:
#
#   bash scripts/gpu_recipe.sh OUTDIR [TRAIN_SECONDS] [N_TRAIN]      # defaults: 240 s, 100,000
#   DEVICE=cpu GPU_RECIPE_INSTALL=0 PYTHON=.venv/bin/python \
#     RECIPE_FLAGS='--enc-hidden 32 --dec-hidden 32 --enc-layers 1 --dec-layers 1' bash scripts/gpu_recipe.sh OUTDIR 10 2000
#                                                   # try it on the CPU (tiny; the wheels are cp312)
#
# 1. installs the wheels into a temporary folder (as scripts/gpu_check.sh does);
# 2. benchmarks/gpu_speed.py train: steps/s of the gpu preset (bf16 on CUDA) and the projected
#    time of a 250,000-molecule epoch;
# 3. train.py --preset gpu on N_TRAIN molecules of the sample with --max-steps set to what the
#    measured rate does in TRAIN_SECONDS (so the linear schedule decays to zero inside the
#    budget, as it would at the preset's full length), then the usual evaluation: GMM samples,
#    RDKit validity, greedy and beam-5 reconstruction of 1,000 held-out molecules.
# Writes OUTDIR/gpu_recipe_speed.json, OUTDIR/metrics.json, OUTDIR/metrics.jsonl, OUTDIR/train.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:?usage: gpu_recipe.sh OUTDIR [TRAIN_SECONDS] [N_TRAIN]}
TRAIN_S=${2:-240}
N_TRAIN=${3:-100000}
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python3}
WHL=${GPU_WHEELS_DIR:-.whl}
SITE=${TMPDIR:-/tmp}/gpu_recipe_site
WORK=${TMPDIR:-/tmp}/gpu_recipe_work
DATA="$WHL/moses_sample.smi.gz"
mkdir -p "$OUTDIR" "$WORK"
shopt -s nullglob
WHEELS=("$WHL"/*.whl)
if [ "${#WHEELS[@]}" -gt 0 ] && [ "${GPU_RECIPE_INSTALL:-1}" = 1 ]; then
  rm -rf "$SITE"
  "$PY" -m pip install --disable-pip-version-check -q --no-index --no-deps --target "$SITE" "${WHEELS[@]}" || exit 1
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ ! -f "$DATA" ]; then echo "error: $DATA is missing: run scripts/gpu_wheels.sh first" >&2; exit 2; fi
PREC=()
if [ "$DEVICE" = cuda ]; then PREC=(--precision bf16); fi
COMMON=(--domain molecules --model grammar_rae --preset gpu --dataset "$DATA" --data-dir "$WORK/data"
        --device "$DEVICE" "${PREC[@]}")
# RECIPE_FLAGS: more train.py flags (e.g. smaller nets for a CPU try of the script itself)
read -r -a EXTRA <<< "${RECIPE_FLAGS:-}"
COMMON+=("${EXTRA[@]}")

echo "[gpu_recipe] speed of the gpu preset"
"$PY" benchmarks/gpu_speed.py train "${COMMON[@]}" -q --n-train 20000 --n-test 100 --steps 300 --warmup 20 \
  --max-seconds 30 --epoch-size 250000 | tee "$OUTDIR/gpu_recipe_speed.log" || exit 1
tail -n 1 "$OUTDIR/gpu_recipe_speed.log" > "$OUTDIR/gpu_recipe_speed.json"
STEPS=$("$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(max(10, int(d['steps_per_s'] * float(sys.argv[2]))))" \
  "$OUTDIR/gpu_recipe_speed.json" "$TRAIN_S") || exit 1
echo "[gpu_recipe] training $STEPS steps (~$TRAIN_S s at the measured rate) on $N_TRAIN molecules"
"$PY" train.py "${COMMON[@]}" --n-train "$N_TRAIN" --n-test 1000 --n-samples 1000 --max-steps "$STEPS" \
  --max-minutes $(( TRAIN_S / 30 + 2 )) --runs-dir "$WORK/runs" --run-name gpu_recipe --overwrite
RC=$?
for f in metrics.json metrics.jsonl train.log; do cp "$WORK/runs/gpu_recipe/$f" "$OUTDIR/" 2>/dev/null; done
echo "[gpu_recipe] done, exit $RC"
exit "$RC"
