#!/usr/bin/env bash
# Summed test time (call + setup + teardown of every test, from --durations=0) of two commits, measured
# alternately on the same machine: base, new, base, new, ... so that load from other work falls on both.
#
#   bench/suite_time.sh                                  # merge base with main vs HEAD, whole suite, 1 round
#   ROUNDS=2 bench/suite_time.sh tests/test_tracking.py tests/test_suite_rules.py   # some files, 2 rounds
#
# Environment: BASE (a commit, default: merge-base HEAD main), NEW (default HEAD), ROUNDS (1),
# WORKERS (-n, 2), PY (python with the dev extras, default: python on PATH), OUT (/tmp/suite_time),
# LIMIT (seconds per pytest run, 2400), ORDER (the order within a round, "base new"; "new base" checks
# that a load trend during the runs does not favour the second), SAME_FILES (1: with no selection given,
# run only the test files both commits have - the only ones whose ids can be common). Each commit is exported with git archive
# (committed files only) and run with PYTHONPATH on it; logs, loadavg samples, the summed table and the
# table of the test ids both commits ran (common.txt, per round) land in OUT.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE=${BASE:-$(git -C "$ROOT" merge-base HEAD main)}
NEW=${NEW:-HEAD}
ROUNDS=${ROUNDS:-1}
WORKERS=${WORKERS:-2}
PY=${PY:-python}
OUT=${OUT:-/tmp/suite_time}
LIMIT=${LIMIT:-2400}
ORDER=${ORDER:-base new}
SELECTION=("$@")
SAME_FILES=${SAME_FILES:-0}

mkdir -p "$OUT"
for label in base new; do
    rev=$([ $label = base ] && echo "$BASE" || echo "$NEW")
    rm -rf "${OUT:?}/$label-tree" && mkdir -p "$OUT/$label-tree"
    git -C "$ROOT" archive "$rev" | tar -x -C "$OUT/$label-tree"
    echo "$label: $(git -C "$ROOT" rev-parse --short "$rev")"
done | tee "$OUT/commits.txt"
if [ ${#SELECTION[@]} -eq 0 ] && [ "$SAME_FILES" = 1 ]; then
    # only the test files both trees have: a test in a file of one tree only is never a common id, and
    # running those files costs a whole suite's time for nothing
    mapfile -t SELECTION < <(cd "$OUT/base-tree" && find tests -name 'test_*.py' ! -name test_ray.py |
        while read -r f; do [ -e "$OUT/new-tree/$f" ] && echo "$f"; done | sort)
    echo "same files: ${#SELECTION[@]}" | tee -a "$OUT/commits.txt"
fi
[ ${#SELECTION[@]} -eq 0 ] && SELECTION=(tests --ignore=tests/test_ray.py)
{
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x $(nproc)," \
        "flags: $(grep -o 'avx512_bf16\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    "$PY" - <<'EOF'
import importlib.metadata as m

names = ("pytest", "pytest-xdist", "torch", "transformers", "llama_cpp_python", "openvino-genai", "mlflow", "mlflow-skinny")
found = {}
for name in names:
    try:
        found[name] = m.version(name)
    except m.PackageNotFoundError:
        found[name] = "absent"
print(" ".join(f"{k} {v}" for k, v in found.items()))
EOF
} | tee "$OUT/machine.txt"

export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True CI=true OMP_NUM_THREADS=1
logs=()
for round in $(seq 1 "$ROUNDS"); do
    for label in $ORDER; do
        name="r$round-$label"
        (while :; do echo "$(date +%s) $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 30; done) >"$OUT/$name.load" &
        sampler=$!
        start=$(date +%s)
        (cd "$OUT/$label-tree" && PYTHONPATH=$PWD timeout "$LIMIT" "$PY" -m pytest --durations=0 -n "$WORKERS" \
            -p no:randomly -p no:cacheprovider -q "${SELECTION[@]}") >"$OUT/$name.log" 2>&1 || true
        kill "$sampler"
        load=$(awk '{s += $2; n++} END {if (n) printf "%.1f", s / n}' "$OUT/$name.load")
        echo "$name: wall $(($(date +%s) - start)) s, mean 1-min load $load" | tee -a "$OUT/runs.txt"
        logs+=("$OUT/$name.log")
    done
done
"$PY" "$ROOT/bench/sum_durations.py" --files 0 "${logs[@]}" | tee "$OUT/summed.txt"
for round in $(seq 1 "$ROUNDS"); do  # the tests both commits have, base against new, per round
    "$PY" "$ROOT/bench/sum_durations.py" --common --files 0 "$OUT/r$round-base.log" "$OUT/r$round-new.log"
done | tee "$OUT/common.txt"
