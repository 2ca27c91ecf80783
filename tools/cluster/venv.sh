#!/usr/bin/env bash
# Prints the path of a virtual environment for the cluster suite (test-optional/cluster): a real
# Ray head and the job alignd ships (trainers/trl: TRL, PEFT, transformers, torch), from
# tools/cluster/requirements-lock.txt, built on first use and cached (tools/venv.sh).
set -euo pipefail
here=$(dirname "$0")
exec "$here/../venv.sh" cluster "$here/requirements-lock.txt" 'import ray, trl, peft, torch, transformers'
