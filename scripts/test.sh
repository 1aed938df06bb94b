#!/usr/bin/env bash
# Set up (first run only), install Chromium for the browser tests, libseccomp for the upload
# sandbox and PostgreSQL for the live class's store tests, lint, and run every test. Extra arguments go to pytest, e.g. -k explore or
# -m "not browser".
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ "$(id -u)" = 0 ]; then APT=(apt-get); elif sudo -n true 2>/dev/null; then APT=(sudo apt-get);
else APT=(); fi
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium fonts-noto-color-emoji)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)  # live-class store
if [ "$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q libseccomp.so.2; then
  missing+=(libseccomp2)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ ${#APT[@]} -gt 0 ]; then
    echo "test: installing Debian's ${missing[*]} (browser tests, upload sandbox, Postgres)"
    "${APT[@]}" update -qq && DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test: ${missing[*]} missing and apt needs root: their tests will be skipped" >&2
  fi
fi

.venv/bin/python -m ruff check .
.venv/bin/python -m ruff format --check .
# Two workers (SALIENCY_TEST_WORKERS; 0 runs in this process): one alone kept 0.9 of 2 cores busy.
# worksteal: a worker that finishes early takes the other's waiting tests.
exec .venv/bin/python -m pytest -n "${SALIENCY_TEST_WORKERS:-2}" --dist worksteal "$@"
