#!/usr/bin/env bash
# Regenerate test/fixtures/stats/bounds.json with SciPy (venv under .cache/, git-ignored).
# npm test never runs this: it reads the committed output.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.cache/stats-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r tools/stats-fixtures/requirements.txt
"$venv/bin/python" tools/stats-fixtures/make_fixtures.py > test/fixtures/stats/bounds.json
