#!/usr/bin/env bash
# The Ray tests against a real local Ray cluster: 127.0.0.1 only, 2 CPUs, stopped at the end whatever
# happens (the cluster is one `ray start --block` process, stopped by its PID; never `ray stop`, which
# would stop every Ray cluster on the machine). Needs the `ray` extra (in `dev`).
#   bash scripts/ci_ray.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0   # keep 127.0.0.1: else Ray uses the node's IP, all interfaces

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
root=$PWD
port=$(free_port) client_port=$(free_port) agent_port=$(free_port)
temp_dir=$(mktemp -d /tmp/mfray-XXXXXX)   # short: Ray's socket paths must fit in 107 bytes
# A planted key only the cluster's workers get (tests/test_ray.py checks it reached them, and no file).
key="sk-planted-ray-ci-$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(8))')"
ray_pid=""
stop_cluster() {
  if [ -n "$ray_pid" ] && kill -0 "$ray_pid" 2>/dev/null; then
    kill "$ray_pid"
    for _ in $(seq 60); do kill -0 "$ray_pid" 2>/dev/null || break; sleep 1; done
    kill -9 "$ray_pid" 2>/dev/null || true
  fi
  rm -rf "$temp_dir"
}
trap stop_cluster EXIT INT TERM

(cd "$temp_dir" && exec env MF_RAY_TEST_KEY="$key" PYTHONPATH="$root" \
  "$root/.venv/bin/ray" start --head --block --node-ip-address=127.0.0.1 --port="$port" \
  --num-cpus=2 --object-store-memory=100000000 --include-dashboard=false --disable-usage-stats \
  --ray-client-server-port="$client_port" --dashboard-agent-listen-port="$agent_port" \
  --temp-dir="$temp_dir" >"$temp_dir/ray-start.log" 2>&1) &
ray_pid=$!
for _ in $(seq 180); do
  grep -q "Ray runtime started" "$temp_dir/ray-start.log" 2>/dev/null && break
  kill -0 "$ray_pid" 2>/dev/null || { cat "$temp_dir/ray-start.log"; exit 1; }
  sleep 1
done
grep -q "Ray runtime started" "$temp_dir/ray-start.log" || { echo "Ray did not start"; exit 1; }

MODELFACTORY_RAY_ADDRESS="127.0.0.1:$port" MODELFACTORY_RAY_TEST_KEY="$key" \
  MODELFACTORY_RAY_TEMP_DIR="$temp_dir" .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_ray.py "$@"
