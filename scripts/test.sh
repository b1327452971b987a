#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs everything (dev extras), then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all,dev
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
.venv/bin/ruff format --check modelfactory tests run.py examples scripts bench
.venv/bin/ruff check modelfactory tests run.py examples scripts bench
.venv/bin/mypy modelfactory
.venv/bin/python -m pytest -q "$@"
