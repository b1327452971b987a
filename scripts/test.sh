#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs everything (dev extras), lints, then tests twice:
#   1. the whole suite in random order (pytest-randomly);
#   2. again in another random order, with two CPU-bound processes beside it, as on a busy CI machine:
#      no test may depend on the order or on the machine being idle.
# Seeds are printed; MF_TEST_SEED=N repeats a run. Arguments are pytest options for both passes.
# scripts/test_each_file.sh runs each file alone (slower: a fresh process and its imports per file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all,dev
bash scripts/ci_system_deps.sh   # Debian chromium, for the report.html rendering test
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
# Every extra is installed above, so a missing one is a broken install: it fails instead of skipping.
export CI="${CI:-true}"
.venv/bin/ruff format --check modelfactory tests run.py examples scripts bench
.venv/bin/ruff check modelfactory tests run.py examples scripts bench
.venv/bin/mypy modelfactory
env OPENAI_API_KEY=placeholder AZURE_OPENAI_API_KEY=placeholder AZURE_OPENAI_ENDPOINT=https://example.openai.azure.com AZURE_OPENAI_MODEL=gpt-4o OPENAI_API_VERSION=2024-10-21 HF_TOKEN=placeholder ANTHROPIC_API_KEY=placeholder .venv/bin/modelfactory check

seed="${MF_TEST_SEED:-$((RANDOM * 32768 + RANDOM))}"
# Three pytest-xdist workers on two cores: most tests wait on a subprocess, a server or a model load, so
# three keep both cores busy (a pass took 500 s alone, 286 s with -n 3, on a 2-core AVX512 box).
# MF_TEST_WORKERS=0 runs in one process; --dist worksteal keeps a worker that drew the slow tests from
# holding up the end. Each pass lists its 15 slowest tests.
workers=(-n "${MF_TEST_WORKERS:-3}" --dist worksteal --durations=15)
# One torch/OpenMP thread per worker: torch's default (one per core) in three workers put six spinning
# threads on two cores; the torch-heavy files ran 22% faster with one (138 s -> 108 s, -n 3, measured here).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
echo "== pass 1/2: the whole suite in random order, seed $seed (MF_TEST_SEED=$seed repeats it)" >&2
# tests/test_ray.py runs once, by ci_ray.sh, on a real local Ray cluster it starts and stops.
.venv/bin/python -m pytest -q -p no:cacheprovider --randomly-seed="$seed" --ignore=tests/test_ray.py "${workers[@]}" "$@"

echo "== pass 2/2: the whole suite beside two CPU-bound processes, seed $((seed + 1))" >&2
hogs=()
stop_hogs() {
  for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${hogs[@]}"; do wait "$pid" 2>/dev/null || true; done
  hogs=()
}
trap stop_hogs EXIT
for _ in 1 2; do
  # busy until killed, or until this script is gone (its parent changes): never left spinning
  .venv/bin/python -c 'import os
parent = os.getppid()
while os.getppid() == parent:
    pass' &
  hogs+=("$!")
done
.venv/bin/python -m pytest -q -p no:cacheprovider --randomly-seed="$((seed + 1))" --ignore=tests/test_ray.py "${workers[@]}" "$@"
stop_hogs

echo "== the Ray tests on a real local Ray cluster" >&2
bash scripts/ci_ray.sh
