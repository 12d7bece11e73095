#!/usr/bin/env bash
# The Debian 12 packages P3.5 runs, builds, tests and demos with, installed only when missing.
# Sourced by the other scripts: p35_install_packages installs every list (building and testing);
# `p35_install_packages "${P35_RUNTIME_PACKAGES[@]}"` only what the installed binaries need.

# What the binaries link (the .deb's ${shlibs:Depends} names them itself).
P35_RUNTIME_PACKAGES=(libhiredis0.14 libspdlog1.10 libfmt9 libsimdjson14 libsystemd0)
P35_BUILD_PACKAGES=(
  g++ meson ninja-build pkg-config
  libhiredis-dev libspdlog-dev libfmt-dev libcxxopts-dev libsimdjson-dev libsystemd-dev
  debhelper dpkg-dev  # scripts/package.sh: the Debian package (dpkg-buildpackage, dh with meson)
)
P35_TEST_PACKAGES=(
  catch2
  redis-server redis-tools
  systemd-container  # scripts/systemd_test.sh: systemd-nspawn boots the host's systemd as a container
  clang libclang-rt-14-dev llvm  # fuzz/: clang++, libclang_rt.fuzzer (-fsanitize=fuzzer), llvm-symbolizer
  prometheus  # promtool: check metrics (test_inspect), check rules and test rules (tests/meson.build)
  gdb  # tests/test_owner: holds a lease holder at its snapshot replace (the pause race, exactly)
  faketime  # tests/test_clock: libfaketime steps the stages' wall clock (CLOCK_REALTIME only)
)
P35_PACKAGES=("${P35_RUNTIME_PACKAGES[@]}" "${P35_BUILD_PACKAGES[@]}" "${P35_TEST_PACKAGES[@]}")

# The named packages, or every list.
p35_install_packages() {
  local missing=() p
  [ $# -gt 0 ] || set -- "${P35_PACKAGES[@]}"
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "Missing packages: ${missing[*]}; run as root (or install them) first." >&2
    return 1
  fi
  echo "== installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged redis-server as a service where it can; the tests never use it.
}
