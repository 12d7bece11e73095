#!/usr/bin/env bash
# Measures P3.5 on this machine (issue 6): sets up and builds like scripts/test.sh, then runs
# p35-bench against a private redis-server and prints the Markdown report (raw XREADGROUP/XACK
# limit, drain of a 1,000,000-entry backlog, steady state at 2, 1,000 and 50,000 msg/s with CPU,
# private RSS and latency percentiles, idle cost, exactness). Not part of scripts/test.sh.
#
#   sudo bash scripts/bench.sh                      # the full run (about 6 minutes)
#   sudo bash scripts/bench.sh --quick              # shorter phases (about 3 minutes)
#   sudo bash scripts/bench.sh --out /tmp/bench.md  # also write the report to a file
#   bash scripts/bench.sh --help                    # every option of p35-bench
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${P35_BUILD_DIR:-$here/build}"

# shellcheck source=scripts/deps.sh
source "$here/scripts/deps.sh"
p35_install_packages

if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$here" >/dev/null
else
  meson setup --reconfigure "$build" "$here" >/dev/null
fi
# A build directory made by scripts/test.sh leaves the benchmark out (-Dbench=false): put it back.
meson configure "$build" -Dbench=true >/dev/null
# Optimised code is what gets measured (debugoptimized: -O2 -g, the project's default).
ninja -C "$build" >&2

echo "== p35-bench $* (progress on stderr, the report on stdout)" >&2
exec "$build/tests/bench/p35-bench" "$@"
