#!/usr/bin/env bash
# Regenerate test/fixtures/parity/ with transformers + peft + torch (CPU) from PyPI.
# Usage: tools/parity/run.sh   (from anywhere; creates .cache/parity-venv on first use)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.cache/parity-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -r tools/parity/requirements.txt
fi
rm -rf test/fixtures/parity .cache/parity
mkdir -p test/fixtures/parity .cache/parity
PYTHONHASHSEED=0 "$VENV/bin/python" tools/parity/make_fixtures.py base
PYTHONHASHSEED=0 "$VENV/bin/python" tools/parity/make_fixtures.py tokenizers
npm run build --silent
node tools/parity/write-alignd.mjs
PYTHONHASHSEED=0 "$VENV/bin/python" tools/parity/make_fixtures.py check
PYTHONHASHSEED=0 "$VENV/bin/python" tools/parity/make_fixtures.py semantics
du -sh test/fixtures/parity
