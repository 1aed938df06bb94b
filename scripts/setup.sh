#!/usr/bin/env bash
# Create .venv (once) and install the pinned requirements and this project into it.
# Re-running is cheap: it reinstalls only when requirements.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.installed-$(cat requirements.txt pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing requirements (first run takes a few minutes: torch is large)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  "$VENV/bin/python" -m pip install -q --no-deps -e .
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
# Our own modules' bytecode, as pip writes it for installed packages: an editable install has
# none, and where PYTHONDONTWRITEBYTECODE is set every server start compiled them again
# (~0.15 s before a first page). Stale files are recompiled on import, never used.
"$VENV/bin/python" -m compileall -q saliency pretrained sandbox workspace dashboard benchmarks > /dev/null
