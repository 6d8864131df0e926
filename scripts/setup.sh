#!/usr/bin/env bash
# Idempotent setup of a local virtual environment (.venv) for the CPU default and the tests.
# torch is installed first and pinned to the CPU wheel; an unpinned torch pulls a multi-GB CUDA build.
# Re-running is cheap: nothing is reinstalled unless pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.less-setup-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q "torch==2.13.0"
  "$VENV/bin/pip" install -q -e ".[dev,peers-runtime]"
  # selection=ekfac: kronfluence without its declared torchvision (never imported; see pyproject.toml)
  # benchmarks/peers.py: bergson without torchvision/torchaudio/bitsandbytes (the same; see pyproject.toml)
  "$VENV/bin/pip" install -q --no-deps "kronfluence==1.0.1" "bergson==2.5.1"
  rm -f "$VENV"/.less-setup-*
  touch "$stamp"
fi
