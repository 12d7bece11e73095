#!/usr/bin/env bash
# The local demo: installs what it needs, builds, starts a private redis-server, writes a backlog
# and then live traffic with p35-loadgen, runs the three stages, and shows the inspector and the
# operator queries. Stops everything it started on exit. Usage: scripts/demo.sh [seconds]
set -euo pipefail

# Root is needed to install missing packages. A user with sudo gets it here, once, keeping the
# P35_* and sanitizer settings of the environment; root, or a machine without sudo, runs as is.
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  keep=()
  while IFS= read -r v; do keep+=("$v"); done < <(env | grep -E '^(P35_[A-Z0-9_]*|UBSAN_OPTIONS|ASAN_OPTIONS)=' || true)
  exec sudo -- env "${keep[@]}" bash "${BASH_SOURCE[0]}" "$@"
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${P35_BUILD_DIR:-$here/build}"
seconds="${1:-20}"

# shellcheck source=scripts/deps.sh
source "$here/scripts/deps.sh"
p35_install_packages
if [ ! -f "$build/build.ninja" ]; then meson setup "$build" "$here" >/dev/null; fi
ninja -C "$build" >/dev/null

work="$(mktemp -d /tmp/p35-demo.XXXXXX)"
shm="p35-demo-$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli -s "$work/redis.sock" shutdown nosave >/dev/null 2>&1 || true
  rm -f "/dev/shm/$shm"
  rm -rf "$work"
}
trap cleanup EXIT

echo "== private redis-server on $work/redis.sock"
redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 700 --save "" \
  --dir "$work" --logfile "$work/redis.log" --daemonize no &
pids+=($!)
for _ in $(seq 100); do redis-cli -s "$work/redis.sock" ping >/dev/null 2>&1 && break; sleep 0.05; done

export REDIS_SOCKET="$work/redis.sock" P35_SHM_NAME="$shm" P35_CONSUMER="demo-$(hostname)" LOG_LEVEL=INFO
R=(redis-cli -s "$work/redis.sock")

echo "== a backlog of 50,000 entries, as after a consumer was down (p35-loadgen)"
"$build/loadgen/p35-loadgen" --count 50000 --seed 7 --edge-cases --edge-fraction 0.02

echo "== starting p35-ackd, p35-rollup, p35-ingest (the target's order); logs in $work/*.log"
for stage in ackd rollup ingest; do
  "$build/$stage/p35-$stage" >"$work/$stage.log" 2>&1 &
  pids+=($!)
done
start=$(date +%s.%N)
until [ "$("${R[@]}" xpending quantum:stream:apply.result p35_decision_intel | head -1)" = "0" ] &&
      [ "$("${R[@]}" hget quantum:p35:status processed_total)" = "50000" ]; do sleep 0.1; done
printf '== backlog counted, committed and acked in %.2f s\n' "$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo 0)"

echo "== live traffic: 200 msg/s for $seconds s"
# --force: the demo's own stream, which the stages now consume.
"$build/loadgen/p35-loadgen" --rate 200 --duration-s "$seconds" --seed 8 --quiet --force &
lg=$!
pids+=($lg)
sleep "$((seconds / 2))"
echo
echo "== p35-shm (read-only view of the segment, mid-run)"
"$build/inspect/p35-shm" --shm-name "$shm" | head -40
wait "$lg" || true
sleep 2

echo
echo "== the operator queries"
q() { echo "\$ redis-cli $*"; "${R[@]}" "$@"; echo; }
q HGETALL quantum:p35:decision:counts:5m
q ZREVRANGE quantum:p35:reason:top:5m 0 10 WITHSCORES
q ZREVRANGE quantum:p35:unknown_decision:top:5m 0 5 WITHSCORES
q HMGET quantum:p35:status processed_total trimmed_total pending_estimate last_id ingest_rate consumer_name
q XPENDING quantum:stream:apply.result p35_decision_intel
echo "== stopping (SIGTERM: ingest, rollup, ackd) and cleaning up"
