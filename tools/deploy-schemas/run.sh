#!/usr/bin/env bash
# Regenerate test/fixtures/schemas/ from the pinned PyPI packages (venv under .cache/, git-ignored).
# npm test never runs this: it reads the committed output.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.cache/deploy-schemas-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q -r tools/deploy-schemas/requirements.txt
"$venv/bin/python" tools/deploy-schemas/extract.py test/fixtures/schemas
