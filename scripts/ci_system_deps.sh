#!/usr/bin/env bash
# System (non-Python) packages the test suite needs, for a fresh CI machine: Debian's headless Chromium,
# which renders report.html in tests/test_report.py. Idempotent: nothing to do once chromium is there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "ci_system_deps: installing chromium (apt) for the report rendering test (a minute or two)" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
