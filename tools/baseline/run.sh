#!/usr/bin/env bash
# The PyTorch + PEFT baseline of bench:sizes: makes .cache/venv-baseline from the pinned
# requirements (PyPI) on first use. npm run bench:sizes runs tools/baseline/sizes.py itself once
# the venv exists; this script only installs it (and passes any arguments to sizes.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.cache/venv-baseline
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch, transformers, peft' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -r tools/baseline/requirements.txt
fi
if [ $# -gt 0 ]; then exec "$VENV/bin/python" tools/baseline/sizes.py "$@"; fi
