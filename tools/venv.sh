#!/usr/bin/env bash
# Usage: tools/venv.sh NAME LOCK_FILE 'PYTHON CHECK'
# Prints the path of a virtual environment holding LOCK_FILE's pins, building it first when it
# does not exist. Cached outside the clone at ${ALIGND_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/alignd}/
# venv-NAME-<hash>, keyed by the lock file's hash, so a second CI run (or a second clone) reuses it
# and a lock change builds a new one. Installed with --no-deps: the lock is the whole resolution
# (see tools/vllm/README.md for why the vLLM one must be). PYTHON CHECK runs once after the install.
set -euo pipefail
name=$1
lock=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
check=$3
hash=$(sha256sum "$lock" | cut -c1-16)
root="${ALIGND_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/alignd}"
venv="$root/venv-$name-$hash"
if [ ! -f "$venv/.complete" ]; then
  mkdir -p "$root"
  # One builder at a time (two CI runs on one machine); the second waits and reuses.
  exec 9>"$root/venv-$name-$hash.lock"
  flock 9
  if [ ! -f "$venv/.complete" ]; then
    rm -rf "$venv"
    echo "building $venv (from $(basename "$(dirname "$lock")")/$(basename "$lock"); a few minutes the first time)" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$lock" >&2
    "$venv/bin/python" -c "$check" >&2
    touch "$venv/.complete"
  fi
fi
echo "$venv"
