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

echo "== meson test (unit, integration and chaos tests; each starts its own redis-server)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
meson test -C "$build" --print-errorlogs --num-processes 2 "$@" | tee "$log" || status=$?
passed=$(awk '/^Ok:/ {print $2}' "$log")
failed=$(awk '/^(Fail|Timeout|Unexpected Pass):/ {n += $NF} END {print n + 0}' "$log")
echo "meson test: ${passed:-0} passed, ${failed:-0} failed"
[ "$status" -eq 0 ] || exit "$status"
