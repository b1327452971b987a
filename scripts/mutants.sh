#!/usr/bin/env bash
# Planted bugs the suite must catch (issue 28): each mutant is applied to a throwaway copy of this tree
# (tracked and untracked files as they are now; the tree itself is never modified), the tests meant to
# catch it run there, and they must FAIL. First the same tests run on the unmutated copy and must pass,
# so a failure below is the mutant's doing. Prints each mutant's failing tests; exits 1 if any survived.
#   bash scripts/mutants.sh            # every mutant
#   bash scripts/mutants.sh hf pricing # some of them, by name
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python="${PYTHON:-$root/.venv/bin/python}"
copy="$(mktemp -d "${TMPDIR:-/tmp}/mf-mutants.XXXXXX")"
trap 'rm -rf "$copy"' EXIT
# tracked and untracked (not ignored) files that exist now, as they are now
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -cf - | tar -xf - -C "$copy" || { echo "mutants: could not copy the tree" >&2; exit 1; }

export PYTHONPATH="$copy" HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True OMP_NUM_THREADS=1
unset CI
where="$(cd "$copy" && "$python" -c 'import modelfactory; print(modelfactory.__file__)')"
case "$where" in "$copy"/*) ;; *) echo "mutants: modelfactory imports from $where, not the copy" >&2; exit 1 ;; esac

# name | file | exact text (must occur once; <NL> is a line break) | its replacement | the tests that must
# catch it (pytest node ids, space-separated)
mutants=(
  "hf|modelfactory/backends/hf_inference.py|retryable = isinstance(exc, hub_errors.OverloadedError)|retryable = False|tests/backends/test_hf_inference.py::test_error_event_inside_a_stream"
  "anthropic|modelfactory/backends/_anthropic_batch.py|retryable = err.get(\"type\") in _TRANSIENT|retryable = True|tests/backends/test_anthropic_batch.py"
  "repair_tail|modelfactory/job/record.py|            f.seek(0, os.SEEK_END)<NL>            f.write(b\"\\n\")|            f.truncate(start)|tests/job/test_record_repair.py"
  "pricing|modelfactory/pricing.py|discount = min(max(1.0 - batch_in / inp, 0.0), 1.0)|discount = min(max(batch_in / inp, 0.0), 1.0)|tests/test_pricing.py::test_batch_rates_are_the_maps_batch_prices"
  "settings|modelfactory/settings.py|if parsed.scheme not in (\"http\", \"https\") or not parsed.hostname:|if parsed.scheme not in (\"http\", \"https\"):|tests/test_settings.py::test_an_endpoint_url_without_a_host_is_refused"
  "content_length|modelfactory/serve/routes.py|        if over:<NL>            raise too_large(limit)|        if over:<NL>            pass|tests/test_serve_declared_length.py"
)

selected=("$@")
chosen() {
  [ ${#selected[@]} -eq 0 ] && return 0
  for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}

run_tests() {  # the tests, quietly, in the copy; prints pytest's summary lines
  (cd "$copy" && "$python" -m pytest -q -p no:randomly -p no:cacheprovider -x -rf --no-header "$@" 2>&1) \
    | grep -E '^(FAILED|ERROR) |^[0-9]+ (passed|failed|error)' | tail -6
  return "${PIPESTATUS[0]}"
}

# Tests run on the unmutated copy first: they must pass there.
targets=()
for m in "${mutants[@]}"; do
  IFS='|' read -r name _ _ _ tests <<<"$m"
  chosen "$name" && read -ra t <<<"$tests" && targets+=("${t[@]}")
done
echo "== the target tests on the unmutated tree" >&2
if ! run_tests "${targets[@]}"; then
  echo "mutants: the target tests fail without any mutant: fix that first" >&2
  exit 1
fi

survivors=()
for m in "${mutants[@]}"; do
  IFS='|' read -r name file old new tests <<<"$m"
  chosen "$name" || continue
  cp "$root/$file" "$copy/$file"
  if ! MF_OLD="$old" MF_NEW="$new" "$python" - "$copy/$file" <<'EOF'; then
import os, sys
path, old, new = sys.argv[1], os.environ["MF_OLD"].replace("<NL>", "\n"), os.environ["MF_NEW"].replace("<NL>", "\n")
text = open(path, encoding="utf-8").read()
if text.count(old) != 1:
    sys.exit(f"mutants: expected the text once in {path}, found it {text.count(old)} times: {old!r}")
open(path, "w", encoding="utf-8").write(text.replace(old, new))
EOF
    survivors+=("$name (could not be applied)")
    continue
  fi
  echo "== mutant $name: $file" >&2
  read -ra t <<<"$tests"
  if run_tests "${t[@]}"; then
    echo "   SURVIVED: ${t[*]} passed with it" >&2
    survivors+=("$name")
  else
    echo "   killed" >&2
  fi
  cp "$root/$file" "$copy/$file"  # the next mutant starts from the real code
done

if [ ${#survivors[@]} -gt 0 ]; then
  echo "mutants: ${#survivors[@]} survived: ${survivors[*]}" >&2
  exit 1
fi
echo "mutants: every mutant was caught" >&2
