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
# Counted, committed and acked: processed_total equals the stream's length and nothing is pending.
drained() {
  [ "$("${R[@]}" xpending quantum:stream:apply.result p35_decision_intel | head -1)" = "0" ] &&
    [ "$("${R[@]}" hget quantum:p35:status processed_total)" = "$("${R[@]}" xlen quantum:stream:apply.result)" ]
}
wait_drained() {  # what, deadline in seconds
  local deadline=$((SECONDS + $2))
  until drained; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo FAILED: $1 not drained after $2 s; the stages' logs:" >&2
      tail -n 5 "$work"/*.log >&2
      exit 1
    fi
    sleep 0.1
  done
}
start_us=${EPOCHREALTIME/./}
wait_drained "the backlog" 60
printf '== backlog counted, committed and acked in %d ms\n' $(((${EPOCHREALTIME/./} - start_us) / 1000))

echo "== live traffic: 200 msg/s for $seconds s"
# --force: the demo's own stream, which the stages now consume.
"$build/loadgen/p35-loadgen" --rate 200 --duration-s "$seconds" --seed 8 --quiet --force &
lg=$!
pids+=($lg)
sleep "$((seconds / 2))"
echo
echo "== p35-shm (read-only view of the segment, mid-run)"
"$build/inspect/p35-shm" --shm-name "$shm" | head -40
wait "$lg" || { echo "demo FAILED: p35-loadgen failed" >&2; exit 1; }
wait_drained "the live traffic" 30

echo
echo "== the operator queries"
q() { echo "\$ redis-cli $*"; "${R[@]}" "$@"; echo; }
q HGETALL quantum:p35:decision:counts:5m
q ZREVRANGE quantum:p35:reason:top:5m 0 10 WITHSCORES
q ZREVRANGE quantum:p35:unknown_decision:top:5m 0 5 WITHSCORES
q HMGET quantum:p35:status processed_total trimmed_total pending_estimate last_id ingest_rate consumer_name
q XPENDING quantum:stream:apply.result p35_decision_intel
echo "== stopping (SIGTERM: ingest, rollup, ackd) and cleaning up"
total="$("${R[@]}" xlen quantum:stream:apply.result)"
# The decisions of every bucket add up to the stream: each entry counted once.
counted=0
while IFS= read -r key; do
  while IFS= read -r field && IFS= read -r value; do
    case "$field" in decision:*) counted=$((counted + value)) ;; esac
  done < <("${R[@]}" hgetall "$key")
done < <("${R[@]}" --scan --pattern 'quantum:p35:bucket:*')
if [ "$counted" -ne "$total" ]; then
  echo "demo FAILED: the buckets count $counted decisions, the stream holds $total entries" >&2
  exit 1
fi
echo "== demo OK: $total entries in the stream, $counted decisions in the buckets, none pending"
