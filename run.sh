#!/usr/bin/env bash
# Run a command inside the project's virtual environment, creating or refreshing it first.
#   ./run.sh python train.py --domain molecules --model grammar_rae
#   ./run.sh pytest
set -euo pipefail
cd "$(dirname "$0")"
VENV=${DISCRETE_RAE_VENV:-.venv}
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.setup-stamp" 2>/dev/null)" != "$want" ]; then
  bash scripts/setup.sh "$VENV"
  echo "$want" > "$VENV/.setup-stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH" VIRTUAL_ENV="$PWD/$VENV"
exec "$@"
