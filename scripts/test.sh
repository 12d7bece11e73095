#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine and runs every test (as root; a user with sudo is escalated):
# installs the packages, builds with meson and runs `meson test`, the README's demo, every fuzz
# target for a few seconds, and the Debian package's units under a real systemd; with
# P35_SANITIZE=1 also the suite under ASan + UBSan. Any failure fails the script. Ends with
# `tests: N passed, M failed, K skipped` (each skip printed with its reason).
set -euo pipefail

# Root is needed (packages; the systemd test). A user with sudo gets it here, once, keeping the
# P35_* and sanitizer settings of the environment; root, or a machine without sudo, runs as is.
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
  keep=()
  while IFS= read -r v; do keep+=("$v"); done < <(env | grep -E '^(P35_[A-Z0-9_]*|UBSAN_OPTIONS|ASAN_OPTIONS)=' || true)
  exec sudo -- env "${keep[@]}" bash "${BASH_SOURCE[0]}" "$@"
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Each part's heading carries the time since the start, so a slow part shows in CI's log.
phase() { printf '== [%2d:%02d] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }
build="${P35_BUILD_DIR:-$here/build}"

# shellcheck source=scripts/deps.sh
source "$here/scripts/deps.sh"
p35_install_packages

phase "meson build ($build)"
# Line tables only (-g1: file:line in backtraces and gdb's function breakpoints, which the tests
# use) instead of full debug info: compiles in about half the time here. A build directory of
# your own keeps whatever you configured; this applies when test.sh creates one. Without the
# benchmark (p35-bench: scripts/bench.sh builds and runs it), which no test runs.
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$here" -Ddebug=false -Dcpp_args=-g1 -Dbench=false
else
  meson setup --reconfigure "$build" "$here" >/dev/null
fi
ninja -C "$build"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0 passed=0 failed=0 skipped=0
# One `meson test` run over build directory $1; its counts add to the closing line.
run_suite() {
  local dir="$1" rc=0
  shift
  meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" | tee "$log" || rc=$?
  passed=$((passed + $(awk '/^Ok:/ {n += $2} END {print n + 0}' "$log")))
  failed=$((failed + $(awk '/^(Fail|Timeout|Unexpected Pass):/ {n += $NF} END {print n + 0}' "$log")))
  skipped=$((skipped + $(awk '/^Skipped:/ {n += $2} END {print n + 0}' "$log")))
  # Cases a test skipped (tests/skip.hpp: P35_SKIP prints one "P35-SKIP: <case>: <reason>" line).
  local skips
  skips="$(grep -h '^P35-SKIP: ' "$dir/meson-logs/testlog.txt" 2>/dev/null | sort -u || true)"
  if [ -n "$skips" ]; then
    printf '%s\n' "$skips" | sed 's/^P35-SKIP: /SKIP (one case): /'
    skipped=$((skipped + $(printf '%s\n' "$skips" | wc -l)))
  fi
  [ "$rc" -eq 0 ] || status="$rc"
}

# The other builds (the fuzz targets, the Debian package, ASan + UBSan when asked for) run in the
# background at the lowest CPU priority while the first suite runs: its tests wait on Redis, on
# timeouts and on each other part of the time, and nice 19 takes only what they leave (CFS weight
# 15 against 1024). Each build writes its own log, printed if it fails.
#
# The sanitizer pass (the suite again with every program built with ASan + UBSan) is opt-in,
# P35_SANITIZE=1: its build alone takes about 10 minutes on 2 cores, which CI's 25-minute budget
# does not hold next to everything else. CI counts it as skipped, with that reason.
sanitize="${P35_SANITIZE:-0}"
asan="${P35_ASAN_BUILD_DIR:-$here/build-asan}"
if [ "$sanitize" = "1" ]; then
  # -O1 as ASan's documentation suggests: it also compiles much faster than -O2. GCC 12 warns
  # falsely about std::regex internals once they are instrumented: not our code.
  # Line tables only (-g1), as above: ASan's reports still say file and line.
  [ -f "$asan/build.ninja" ] || meson setup "$asan" "$here" -Db_sanitize=address,undefined \
    -Dbench=false -Doptimization=1 -Ddebug=false \
    -Dcpp_args="-fno-sanitize-recover=all -Wno-maybe-uninitialized -g1" >/dev/null
  meson configure "$asan" -Dbench=false -Doptimization=1 >/dev/null
  # Only what the sanitizer pass runs: the five programs and the test binaries outside the suite
  # 'no-asan' (meson test --no-rebuild below), not the left-out tests.
  mapfile -t asan_targets < <(meson introspect --tests "$asan" | python3 -c '
import json, os, sys
root = os.path.realpath(sys.argv[1]) + "/"
for t in json.load(sys.stdin):
    exe = os.path.realpath(t["cmd"][0])
    if not any(s.endswith(":no-asan") for s in t["suite"]) and exe.startswith(root):
        print(exe[len(root):])' "$asan")
  asan_targets+=(ingest/p35-ingest rollup/p35-rollup ackd/p35-ackd inspect/p35-shm loadgen/p35-loadgen)
  nice -n 19 ninja -C "$asan" "${asan_targets[@]}" >"$build/background-asan.log" 2>&1 &
  asan_build_pid=$!
fi
# The libFuzzer targets (clang, ASan + UBSan: the parsing code under the sanitizers in every run).
nice -n 19 bash "$here/scripts/fuzz.sh" --build-only >"$build/background-fuzz.log" 2>&1 &
fuzz_build_pid=$!
# The package for the systemd test: unoptimised (package.sh --noopt; the test checks packaging,
# units and behaviour, not code generation), half the compile time of the release build.
(nice -n 19 bash "$here/scripts/package.sh" --noopt --out "$build/deb" >"$build/deb.dir") \
  2>"$build/background-deb.log" &
deb_build_pid=$!
# Waits for background build $1 (named $2, logged in $3); on failure prints the log's end.
background_done() {
  if wait "$1"; then return 0; fi
  echo "FAILED: the background build of $2; the end of $3:"
  tail -n 40 "$3"
  return 1
}

phase "meson test (unit, integration and chaos tests; each starts its own redis-server)"
run_suite "$build" "$@"

# The README's first command, on this clone (CI: a fresh one): the demo must drain, count each
# entry once and say so ("demo OK"). The README's second command is this script.
if [ $# -eq 0 ]; then
  phase "the README's demo command (bash scripts/demo.sh 4)"
  if P35_BUILD_DIR="$build" bash "$here/scripts/demo.sh" 4 >"$build/demo.log" 2>&1 &&
     grep -q '^== demo OK' "$build/demo.log"; then
    grep '^== \(backlog\|demo OK\)' "$build/demo.log"
    passed=$((passed + 1))
  else
    echo "FAILED: scripts/demo.sh; its output:"
    tail -n 40 "$build/demo.log"
    failed=$((failed + 1)) status=1
  fi
fi

# The same suite again with every program built with AddressSanitizer and UndefinedBehaviorSanitizer
# (P35_SANITIZE=1). Instrumented code runs 2-5x slower: the chaos test sends 50,000 messages
# instead of 200,000, and the tests listed below are left out.
if [ "$sanitize" = "1" ]; then
  phase "waiting for the ASan + UBSan build ($asan)"
  if background_done "$asan_build_pid" "ASan + UBSan" "$build/background-asan.log"; then
    phase "meson test under ASan + UBSan ($asan)"
    # Left out here, each counted as skipped (tests/meson.build: suite 'no-asan'); all of them ran
    # in the normal build above:
    no_asan=(
      "test_clock: libfaketime is LD_PRELOADed into the stages, and ASan's runtime must come first"
      "test_sentinel: five redis-servers and three failovers (45-95 s)"
      "test_owner: two instances and a paused holder (~50 s)"
      "test_flood: CPU-bound under ASan (35 s for 200,000 entries); its parsing and interning are fuzzed below (normalize, clean)"
      "test_takeover: waits out claim idle times (~60 s under ASan)"
      "test_forget: Redis restarted from dumps three times per seed (~90 s under ASan)"
    )
    if [ $# -eq 0 ]; then
      for why in "${no_asan[@]}"; do echo "SKIP under ASan: $why"; done
      skipped=$((skipped + ${#no_asan[@]}))
    fi
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" P35_CHAOS_MESSAGES="${P35_CHAOS_MESSAGES:-50000}" \
      run_suite "$asan" --timeout-multiplier 3 --no-suite no-asan --no-rebuild "$@"
  else
    failed=$((failed + 1)) status=1
  fi
else
  echo "SKIP: the suite under ASan + UBSan (P35_SANITIZE=1 runs it: its build takes ~10 min on 2 cores, beyond CI's 25-minute budget next to the rest)"
  skipped=$((skipped + 1))
fi

# Every libFuzzer target over its seed corpus and the inputs that once crashed one (scripts/fuzz.sh).
phase "waiting for the fuzz build ($here/build-fuzz)"
if background_done "$fuzz_build_pid" "the fuzz targets" "$build/background-fuzz.log"; then
  phase "fuzzing (scripts/fuzz.sh, 6 s per target)"
  if bash "$here/scripts/fuzz.sh" 6; then passed=$((passed + 1)); else failed=$((failed + 1)) status=1; fi
else
  failed=$((failed + 1)) status=1
fi

# The units under a real systemd 252 booted in a throwaway container (systemd-nspawn; 30-60 s),
# with the package built above.
phase "waiting for the package build ($build/deb)"
if background_done "$deb_build_pid" "the Debian package" "$build/background-deb.log"; then
  deb="$(ls -t "$(cat "$build/deb.dir")"/p35-decision-intelligence_*.deb | head -n 1)"
  phase "the systemd units (scripts/systemd_test.sh, package $(basename "$deb"))"
  if P35_BUILD_DIR="$build" P35_DEB="$deb" bash "$here/scripts/systemd_test.sh"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)) status=1
  fi
else
  failed=$((failed + 1)) status=1
fi

phase "done"
echo "tests: ${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$status" -eq 0 ] || exit "$status"
