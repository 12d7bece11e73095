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
meson test -C "$build" --print-errorlogs --num-processes 2 "$@"
