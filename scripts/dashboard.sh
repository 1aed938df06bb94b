#!/usr/bin/env bash
# Set up (first run only) and open the dashboard on the bundled default: MNIST test set, CNN.
# Extra arguments go to `streamlit run`, e.g. --server.port 8600 or --server.headless true.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m dashboard "$@"
