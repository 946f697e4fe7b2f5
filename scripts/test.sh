#!/usr/bin/env bash
# The README's test command: install what is missing, run the gate, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --with-postgres

.venv/bin/ruff format --check postburner_py migrations tests bench scripts
.venv/bin/ruff check postburner_py migrations tests bench scripts
.venv/bin/mypy postburner_py
# Two processes (pytest-xdist): each starts its own PostgreSQL and Beanstalkd.
.venv/bin/python -m pytest -n 2 "$@"
