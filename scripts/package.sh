#!/usr/bin/env bash
# Builds the Debian package p35-decision-intelligence_<version>_<arch>.deb with debhelper (debian/)
# from the tracked files of this tree, and prints the directory holding it. Writes only inside
# the output directory (default: build-deb/ in the repository). The version is the tree's
# (scripts/version.sh: 0.1.0+g<commit>[.dirty]), written into the copy's debian/changelog and
# used by the binaries' --version.
#
# Usage: scripts/package.sh [--out DIR] [--check] [--noopt]
#   --out DIR  where the build tree and the .deb go (created; default <repo>/build-deb)
#   --check    build and run the tests too (default: DEB_BUILD_OPTIONS=nocheck, as the tests run
#              elsewhere: scripts/test.sh)
#   --noopt    compile without optimisation (DEB_BUILD_OPTIONS=noopt): a package for testing the
#              packaging (scripts/systemd_test.sh), built in about half the time; not for hosts
# Needs debhelper and dpkg-dev (scripts/deps.sh installs them). ccache is used when installed; the
# build tree's path stays the same between runs so that its cache hits.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$here/build-deb"
check=0
noopt=0
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --out=*) out="${1#*=}"; shift ;;
    --check) check=1; shift ;;
    --noopt) noopt=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "package.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for tool in dpkg-buildpackage dh; do
  command -v "$tool" >/dev/null ||
    { echo "package.sh: $tool is missing (packages dpkg-dev and debhelper: scripts/deps.sh)" >&2; exit 1; }
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"

version="$("$here/scripts/version.sh" "$here" "$(sed -n "s/^ *version : '\([^']*\)'.*/\1/p" "$here/meson.build")")" ||
  version="$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)"
name=p35-decision-intelligence
arch="$(dpkg-architecture -qDEB_HOST_ARCH)"
# Always the same path (not one per version): it is in the compiler's arguments
# (-ffile-prefix-map), so a new commit still hits ccache for every unchanged file.
src="$out/src/$name"

# A clean copy of the tracked files (their working-tree content); dpkg-buildpackage puts the
# .deb next to it, in $out/src, from where it is moved to $out.
rm -rf "$out/src"
mkdir -p "$src"
(cd "$here" && git ls-files -z --cached --others --exclude-standard -- . ':!:build*' |
  tar --null -T - --ignore-failed-read -cf - 2>/dev/null) | tar -C "$src" -xf -
printf '%s\n' "$version" >"$src/.version"
sed -i "1s/^$name ([^)]*)/$name ($version)/" "$src/debian/changelog"

options="parallel=${P35_PACKAGE_JOBS:-2}"
[ "$check" -eq 1 ] || options="$options nocheck"
[ "$noopt" -eq 0 ] || options="$options noopt"
# --noopt also keeps line tables only (-g1 after dpkg-buildflags' -g): a quicker test build.
[ "$noopt" -eq 0 ] || export DEB_CXXFLAGS_APPEND="${DEB_CXXFLAGS_APPEND:+$DEB_CXXFLAGS_APPEND }-g1"
profiles=""
[ "$check" -eq 1 ] || profiles="-Pnocheck"
if command -v ccache >/dev/null; then
  # debhelper (compat 13) gives the build a HOME of its own inside the copy, which would hold a
  # cache of its own that the next run's copy deletes: name the user's cache explicitly.
  CCACHE_DIR="${CCACHE_DIR:-$(ccache -k cache_dir)}"
  export CCACHE_DIR CC="ccache gcc" CXX="ccache g++"
  export CCACHE_BASEDIR="$src"
fi
started=$SECONDS
(cd "$src" && DEB_BUILD_OPTIONS="$options" dpkg-buildpackage -b -uc -us $profiles) >"$out/build.log" 2>&1 ||
  { tail -n 40 "$out/build.log" >&2; echo "package.sh: dpkg-buildpackage failed (log: $out/build.log)" >&2; exit 1; }
deb="${name}_${version}_${arch}.deb"
mv -f "$out/src/$deb" "$out/$deb"
rm -f "$out/src/"*.buildinfo "$out/src/"*.changes "$out/src/"*.ddeb "$out/src/"*-dbgsym_*.deb
echo "package.sh: built $out/$deb in $((SECONDS - started)) s" >&2
echo "$out"
