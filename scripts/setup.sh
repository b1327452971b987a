#!/usr/bin/env bash
# Creates .venv (once) and installs modelfactory with the given extras (default: transformers).
# torch is pinned here, for this project's machines, where torch==2.13.0 is a CPU wheel on disk;
# the package itself only asks for torch>=2.4. Re-running is quick: it skips an unchanged install.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-transformers}"
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.modelfactory-$(echo "$extras" | tr ',' '-')-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing modelfactory[$extras] into .venv (a few minutes on a fresh machine)" >&2
  .venv/bin/python -m pip install -q --progress-bar off "torch==2.13.0" -e ".[$extras]" 2>&1 \
    | grep -v -e "is neither a file nor a directory" -e "^\s*$" >&2 || true
  .venv/bin/python -c "import modelfactory" # fails loudly if the install did not happen
  touch "$stamp"
fi
