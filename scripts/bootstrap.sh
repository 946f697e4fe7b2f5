#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks: the beanstalkd and PostgreSQL server
# packages (the tests start their own instances) and the project's virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

need_packages=()
command -v beanstalkd >/dev/null 2>&1 || need_packages+=(beanstalkd)
if [ "${1:-}" = "--with-postgres" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_packages+=(postgresql)
fi
if [ "${#need_packages[@]}" -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing ${need_packages[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need_packages[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.postburner-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
