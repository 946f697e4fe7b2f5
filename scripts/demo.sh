#!/usr/bin/env bash
# The README's main-job command: install what is missing, then run the live demo on the
# embedded default (SQLite in ./demo, a local beanstalkd it starts itself).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/postburner dev "$@"
