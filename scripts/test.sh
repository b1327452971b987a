#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs everything (dev extras), then lints and tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all,dev
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
.venv/bin/ruff format --check modelfactory tests run.py examples scripts bench
.venv/bin/ruff check modelfactory tests run.py examples scripts bench
.venv/bin/mypy modelfactory
env OPENAI_API_KEY=placeholder AZURE_OPENAI_API_KEY=placeholder AZURE_OPENAI_ENDPOINT=https://example.openai.azure.com AZURE_OPENAI_MODEL=gpt-4o OPENAI_API_VERSION=2024-10-21 HF_TOKEN=placeholder ANTHROPIC_API_KEY=placeholder .venv/bin/modelfactory check
.venv/bin/python -m pytest -q "$@"
