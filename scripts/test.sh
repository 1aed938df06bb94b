#!/usr/bin/env bash
# Set up (first run only), install Chromium for the browser tests, lint, and run every test.
# Extra arguments go to pytest, e.g. -k explore or -m "not browser".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then APT=(apt-get); elif sudo -n true 2>/dev/null; then APT=(sudo apt-get);
  else APT=(); fi
  if [ ${#APT[@]} -gt 0 ]; then
    echo "test: installing Debian's chromium for the browser tests"
    "${APT[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq chromium fonts-noto-color-emoji >/dev/null
  else
    echo "test: /usr/bin/chromium is missing and apt needs root: browser tests will be skipped" >&2
  fi
fi

.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
exec .venv/bin/python -m pytest "$@"
