#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (as root) and runs every test: installs the packages, builds
# with meson, and runs `meson test`; any failure fails the script.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${P35_BUILD_DIR:-$here/build}"

# shellcheck source=scripts/deps.sh
source "$here/scripts/deps.sh"
p35_install_packages

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$here"
else
  meson setup --reconfigure "$build" "$here" >/dev/null
fi
ninja -C "$build"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0 passed=0 failed=0
# One `meson test` run over build directory $1; its counts add to the closing line.
run_suite() {
  local dir="$1" rc=0
  shift
  meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" | tee "$log" || rc=$?
  passed=$((passed + $(awk '/^Ok:/ {n += $2} END {print n + 0}' "$log")))
  failed=$((failed + $(awk '/^(Fail|Timeout|Unexpected Pass):/ {n += $NF} END {print n + 0}' "$log")))
  [ "$rc" -eq 0 ] || status="$rc"
}

echo "== meson test (unit, integration and chaos tests; each starts its own redis-server)"
run_suite "$build" "$@"

# With P35_SANITIZE=1: the same suite, chaos test included, with every program built with ASan
# and UBSan, then every libFuzzer target for a few seconds. Off by default: the instrumented
# builds alone take longer than CI's 20-minute budget for this script on 2 cores.
if [ "${P35_SANITIZE:-0}" = "1" ]; then
  # GCC 12 warns falsely about std::regex internals once they are instrumented: not our code.
  asan="${P35_ASAN_BUILD_DIR:-$here/build-asan}"
  [ -f "$asan/build.ninja" ] || meson setup "$asan" "$here" -Db_sanitize=address,undefined \
    -Dcpp_args="-fno-sanitize-recover=all -Wno-maybe-uninitialized" >/dev/null
  ninja -C "$asan"
  echo "== meson test under ASan + UBSan ($asan)"
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" run_suite "$asan" --timeout-multiplier 3 "$@"

  # Every libFuzzer target for a few seconds over its seed corpus (scripts/fuzz.sh; clang build).
  echo "== fuzzing (scripts/fuzz.sh)"
  if bash "$here/scripts/fuzz.sh" 8; then passed=$((passed + 1)); else failed=$((failed + 1)) status=1; fi

fi

# The units under a real systemd 252 booted in a throwaway container (systemd-nspawn; 30-60 s).
echo "== the systemd units (scripts/systemd_test.sh)"
if P35_BUILD_DIR="$build" bash "$here/scripts/systemd_test.sh"; then passed=$((passed + 1)); else failed=$((failed + 1)) status=1; fi

echo "tests: ${passed} passed, ${failed} failed"
[ "$status" -eq 0 ] || exit "$status"
