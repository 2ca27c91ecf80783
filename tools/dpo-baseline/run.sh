#!/usr/bin/env bash
# bench:align and its PyTorch baseline in one go: makes .cache/venv-baseline from the pinned
# requirements (PyPI) on first use — the venv bench:sizes' baseline uses, plus TRL — then runs
# bench:align with 2 threads, which runs tools/dpo-baseline/dpo.py on the batches it exported and
# prints the ratio lines. Arguments go to bench:align. Run it under the heavy lock on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.cache/venv-baseline
if ! "$VENV/bin/python" -c 'import torch, transformers, peft, trl' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -r tools/dpo-baseline/requirements.txt
fi
exec npm run bench:align -- --threads 2 "$@"
