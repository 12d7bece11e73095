#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan) in their own build directory and
# runs each one over its seed corpus for a while; exits non-zero if any target crashes.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   run (default 10 s each, every target)
#   scripts/fuzz.sh --make-seeds                       regenerate fuzz/corpus/ from p35-loadgen
#   scripts/fuzz.sh --build-only                       build the targets, run nothing
#
# Targets: normalize, timestamp, clean, inspect. New inputs the fuzzer finds go to
# $build/fuzz-work/<target>/ (the checked-in corpus is only read); a crashing input is written
# to $build/fuzz-artifacts/<target>/ and its path printed.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${P35_FUZZ_BUILD_DIR:-$here/build-fuzz}"
all_targets=(normalize timestamp clean inspect)
# Largest input per target: a whole entry with details JSON; a timestamp; a value with its limit;
# a small segment file (fuzz/segment_image.hpp keeps the patched ones well below this).
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"  # UBSan reports say where
declare -A max_len=([normalize]=16384 [timestamp]=256 [clean]=1024 [inspect]=131072)

setup() {
  # shellcheck source=scripts/deps.sh
  source "$here/scripts/deps.sh"
  p35_install_packages || exit 1
  if [ ! -f "$build/build.ninja" ]; then
    # Line tables only (-g1): reports keep file and line; full debug info doubles the compile time.
    CXX=clang++ meson setup "$build" "$here" -Dfuzz=true -Db_sanitize=address,undefined \
      -Db_lundef=false -Ddebug=false -Dcpp_args="-fno-sanitize-recover=all -g1" >/dev/null || exit 1
  fi
  local ninja_targets=("$@")  # only what this run needs: the whole project takes minutes more
  for t in "${all_targets[@]}"; do ninja_targets+=("fuzz/fuzz_$t"); done
  # One build at a time: two runs of this script (targets in parallel) share the build directory.
  exec 9>"$build/.fuzz-build.lock"
  flock 9
  ninja -C "$build" "${ninja_targets[@]}" >/dev/null || { ninja -C "$build" "${ninja_targets[@]}"; exit 1; }
  flock -u 9
}

# "#123 DONE cov: 456 ft: 789 corp: ..." -> "123 456 789"
final_stats() {
  grep -E '^#[0-9]+' "$1" | tail -n 1 | sed -E 's/^#([0-9]+).* cov: ([0-9]+) ft: ([0-9]+).*/\1 \2 \3/'
}

# Runs one target; prints its line of the summary; returns non-zero on a crash, leak or timeout.
run_target() {
  local t="$1" seconds="$2"
  local work="$build/fuzz-work/$t" artifacts="$build/fuzz-artifacts/$t" log="$build/fuzz-logs/$t.log"
  mkdir -p "$work" "$artifacts" "$(dirname "$log")"
  "$build/fuzz/fuzz_$t" -max_total_time="$seconds" -max_len="${max_len[$t]}" -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$work" "$here/fuzz/corpus/$t" >"$log" 2>&1 &
  local pid=$!
  wait "$pid"
  local rc=$?
  rm -f "/dev/shm/p35fuzz-inspect-$pid"  # the inspect target's file, left behind by a crash
  local stats crash
  stats="$(final_stats "$log")"
  crash="$(grep -oE "(crash|leak|timeout|oom|slow-unit)-[0-9a-f]+" "$log" | tail -n 1)"
  printf '%-10s %12s execs  cov %6s  ft %6s  %s\n' "$t" \
    "$(cut -d' ' -f1 <<<"$stats")" "$(cut -d' ' -f2 <<<"$stats")" "$(cut -d' ' -f3 <<<"$stats")" \
    "$([ "$rc" -eq 0 ] && echo "no crash" || echo "CRASH ($artifacts/${crash:-?}; log $log)")"
  return "$rc"
}

# A private redis-server on a unix socket in a temp dir, stopped (by its pid) when the script exits.
make_seeds() {
  tmp="$(mktemp -d /tmp/p35-fuzz-seeds.XXXXXX)"
  redis-server --port 0 --unixsocket "$tmp/redis.sock" --save '' --appendonly no \
    --dir "$tmp" >"$tmp/redis.log" 2>&1 &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
  for _ in $(seq 100); do
    redis-cli -s "$tmp/redis.sock" ping >/dev/null 2>&1 && break
    sleep 0.1  # nothing to wait on for a socket to appear
  done
  # IDs 250 ms apart from a fixed time: the same corpus every time; 30 % hostile entries.
  "$build/loadgen/p35-loadgen" --redis-socket "$tmp/redis.sock" --count 240 --edge-cases \
    --edge-fraction 0.3 --explicit-ids --start-ms 1767225000000 --id-step-ms 250 --seed 35 \
    --quiet || exit 1
  # regress-* are inputs that once crashed a target (fuzz/crashes/): kept, replayed by every run.
  [ -d "$here/fuzz/corpus" ] && find "$here/fuzz/corpus" -type f ! -name 'regress-*' -delete
  "$build/fuzz/fuzz_make_seeds" "$tmp/redis.sock" quantum:stream:apply.result "$here/fuzz/corpus"
}

if [ "${1:-}" = "--make-seeds" ]; then
  setup fuzz/fuzz_make_seeds loadgen/p35-loadgen
  make_seeds
  exit $?
fi

setup
[ "${1:-}" = "--build-only" ] && exit 0
seconds="${1:-10}"
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
echo "== fuzzing ${targets[*]} for ${seconds} s each (logs in $build/fuzz-logs/)"
failed=0
for t in "${targets[@]}"; do
  run_target "$t" "$seconds" || failed=1
done
exit "$failed"
