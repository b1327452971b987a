#!/usr/bin/env bash
# Each test file on its own, in a fresh pytest process, in random order inside the file (seed printed):
# a file that passes only after another one ran (a fixture, an import, a cache it relies on) fails here.
# Arguments go to every pytest run. Expects what scripts/test.sh sets up (.venv, the env vars).
set -uo pipefail
cd "$(dirname "$0")/.."
seed="${MF_TEST_SEED:-$((RANDOM * 32768 + RANDOM))}"
echo "each test file alone, random order inside each: seed $seed (MF_TEST_SEED=$seed repeats it)" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
failed=()
for file in $(find tests -name 'test_*.py' | sort); do
  status=0
  .venv/bin/python -m pytest -q -p no:cacheprovider --randomly-seed="$seed" "$@" "$file" >"$log" 2>&1 || status=$?
  if ((status == 0 || status == 5)); then  # 5: options like -k left nothing to run in this file
    echo "  ok    $file: $(tail -n 1 "$log" | tr -d '=')" >&2
  else
    failed+=("$file")
    tail -n 60 "$log" >&2
    echo "  FAIL  $file: $(tail -n 1 "$log" | tr -d '=')" >&2
  fi
done
if ((${#failed[@]})); then
  echo "failed when run alone (seed $seed): ${failed[*]}" >&2
  exit 1
fi
