#!/usr/bin/env bash
# Prepare what travels to a GPU machine that has Python 3.12, CUDA torch, torchvision,
# scikit-learn, botorch and pytest, but no internet and none of the packages below.
#
#   bash scripts/gpu_wheels.sh                 # download the wheels + write the data file, then measure
#   bash scripts/gpu_wheels.sh --measure-only  # only measure what would travel (no download)
#   bash scripts/gpu_wheels.sh --dir DIR       # another folder (default .whl; it must be git-ignored)
#
# Wheels: CPython 3.12 manylinux x86_64 builds (pure-python wheels where there is no binary),
# no dependencies resolved (the list below is the complete set the GPU machine lacks for
# `import discrete_rae`, the main job and the `cuda` tests). Data: a seeded random sample of
# GPU_DATA_N (default 250,000) MOSES training SMILES, gzipped (scripts/gpu_data.py).
#
# What travels = the repository's files that git does not ignore + the folder. The script
# prints that total and exits 1 when it exceeds GPU_CARRY_LIMIT_MIB (default 60; the device
# transfer allows 64 MiB in all).
#
# Environment: PYTHON (default: the project's .venv python if present, else python3),
# GPU_CARRY_LIMIT_MIB, GPU_DATA_N, GPU_WHEELS_EXTRA (more NAME==VERSION specs, e.g. matplotlib
# and its dependencies for the images domain's pictures: about 16 MB more).
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=.whl
MEASURE_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --measure-only) MEASURE_ONLY=1 ;;
    --dir) DIR=${2:?--dir needs a folder}; shift ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

LIMIT_MIB=${GPU_CARRY_LIMIT_MIB:-60}
if ! [[ "$LIMIT_MIB" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
  echo "error: GPU_CARRY_LIMIT_MIB=$LIMIT_MIB is not a number of MiB" >&2
  exit 2
fi
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# The packages the GPU machine lacks: rdkit (needs numpy and Pillow, which come with
# torch/torchvision), nltk and what it imports (regex, click, tqdm; joblib comes with
# scikit-learn), selfies (the SELFIES codec), pytest-timeout (pyproject sets a pytest timeout).
# Each is pinned to the version installed beside $PYTHON (the one the tests ran with), else to
# the version given here.
DEFAULT_PINS="rdkit==2026.9.1 regex==2026.11.15 nltk==3.10.4 click==8.5.1 tqdm==4.70.1 selfies==2.2.0
  pytest-timeout==2.4.0"
DATA_FILE="$DIR/moses_sample.smi.gz"

if [ "$MEASURE_ONLY" = 0 ]; then
  if [ -d .git ] || git rev-parse --git-dir >/dev/null 2>&1; then
    if ! git check-ignore -q "$DIR/x.whl"; then
      echo "error: $DIR is not a git-ignored folder inside the repository (only such a folder can be carried);" \
           "add it to .gitignore before downloading into it" >&2
      exit 2
    fi
  fi
  # shellcheck disable=SC2086
  SPECS=$("$PYTHON" - $DEFAULT_PINS <<'EOF'
import sys
from importlib import metadata

specs = []
for spec in sys.argv[1:]:
    name, _, pin = spec.partition("==")
    try:
        pin = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
    specs.append(f"{name}=={pin}")
print(" ".join(specs))
EOF
  )
  SPECS="$SPECS ${GPU_WHEELS_EXTRA:-}"
  mkdir -p "$DIR"
  PIP=("$PYTHON" -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all:
       --python-version 3.12 --implementation cp -d "$DIR"
       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
       --platform any)  # binary wheels: cp312 manylinux x86_64; pure-python ones: py3-none-any
  for spec in $SPECS; do
    echo "[gpu_wheels] $spec"
    "${PIP[@]}" "$spec"
  done
  # a wheel of another version left from an earlier run would be installed beside the new one
  # shellcheck disable=SC2086
  "$PYTHON" - "$DIR" $SPECS <<'EOF'
import re
import sys
from pathlib import Path

def norm(name):
    return re.sub(r"[-_.]+", "_", name).lower()

wanted = {(norm(n), v) for n, _, v in (s.partition("==") for s in sys.argv[2:])}
for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version = whl.name.split("-")[:2]
    if (norm(name), version) not in wanted:
        print(f"[gpu_wheels] removing {whl.name}: not in the current list")
        whl.unlink()
EOF
  if [ ! -s "$DATA_FILE" ] || [ -n "${GPU_DATA_N:-}" ]; then
    echo "[gpu_wheels] data: ${GPU_DATA_N:-250000} random MOSES training SMILES -> $DATA_FILE"
    "$PYTHON" scripts/gpu_data.py "$DATA_FILE" --n "${GPU_DATA_N:-250000}" --seed 0
  fi
fi

if [ ! -d "$DIR" ]; then
  echo "error: $DIR does not exist (run without --measure-only to create it)" >&2
  exit 2
fi

# Sizes in bytes: the files git does not ignore (tracked or not; they travel with the working
# tree) and the carried folder.
sum_sizes() { xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {printf "%d", s}'; }
if git rev-parse --git-dir >/dev/null 2>&1; then
  REPO_BYTES=$(git ls-files -z --cached --others --exclude-standard | sum_sizes)
else
  REPO_BYTES=$(find . -path "./$DIR" -prune -o -path ./.git -prune -o -type f -print0 | sum_sizes)
fi
DIR_BYTES=$(find "$DIR" -type f -print0 | sum_sizes)
N_WHEELS=$(find "$DIR" -maxdepth 1 -type f -name '*.whl' | wc -l)
TOTAL=$((REPO_BYTES + DIR_BYTES))

echo "[gpu_wheels] contents of $DIR:"
find "$DIR" -maxdepth 1 -type f -printf '  %10s  %f\n' | sort -k2
mib() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1048576}'; }
echo "[gpu_wheels] repository $(mib "$REPO_BYTES") MiB + $DIR $(mib "$DIR_BYTES") MiB ($N_WHEELS wheels)" \
     "= $(mib "$TOTAL") MiB to carry (limit $LIMIT_MIB MiB)"
if awk -v t="$TOTAL" -v l="$LIMIT_MIB" 'BEGIN {exit !(t > l * 1048576)}'; then
  echo "error: $(mib "$TOTAL") MiB would travel, over the limit of $LIMIT_MIB MiB (GPU_CARRY_LIMIT_MIB);" \
       "drop GPU_WHEELS_EXTRA packages or lower GPU_DATA_N" >&2
  exit 1
fi
echo "[gpu_wheels] ok: carry '$DIR' with the device call (run: bash scripts/gpu_check.sh)"
