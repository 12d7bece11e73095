#!/bin/sh
# Prints the version of the source tree for meson's vcs_tag (common/version.hpp.in): a release tag
# (v1.2.3 -> 1.2.3) when HEAD is one, else <project version>+g<commit>[.dirty]; in a copy made by
# scripts/package.sh, the .version it wrote; fails otherwise, and vcs_tag then falls back to the
# project version (a tarball).
# Usage: version.sh SOURCE_DIR PROJECT_VERSION
set -eu
src="$1"
base="$2"
if [ -f "$src/.version" ]; then cat "$src/.version"; exit 0; fi
git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1 || exit 1
# Only a tree whose top is SOURCE_DIR: a copy inside another repository is not that repository.
[ "$(cd "$(git -C "$src" rev-parse --show-toplevel)" && pwd -P)" = "$(cd "$src" && pwd -P)" ] || exit 1
if tag="$(git -C "$src" describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null)"; then
  version="${tag#v}"
else
  version="$base+g$(git -C "$src" rev-parse --short=7 HEAD)"
fi
# Untracked files do not count: build directories live in the tree.
if ! git -C "$src" diff --quiet HEAD -- 2>/dev/null; then version="$version.dirty"; fi
echo "$version"
