#!/usr/bin/env bash
# Installs (or with --uninstall removes) P3.5 on a systemd host: the Debian package built by
# scripts/package.sh (--deb), or from source: binaries, units, the quantum-p35 system user and the
# env file template; idempotent, and an existing env file is never touched. Either way the first
# version's unit (quantum-p35-decision-intelligence.service) is stopped, disabled and masked.
#
# Usage: scripts/install.sh [--deb FILE] [--prefix DIR] [--build-dir DIR] [--keep-old] [--dry-run]
#                           [--uninstall]
#   --deb FILE       install this p35-decision-intelligence_<version>_<arch>.deb (apt-get pulls the
#                    runtime libraries it depends on); --prefix and --build-dir do not apply
#   --prefix DIR     where bin/ and share/doc/ go (default /usr/local); the units' ExecStart= follow
#   --build-dir DIR  the meson build directory (default: build/ next to scripts/, or $P35_BUILD_DIR)
#   --keep-old       leave the first version's unit as it is (quantum-p35.target still conflicts
#                    with it: starting one stops the other)
#   --dry-run        print what would be done, change nothing
#   --uninstall      stop and disable the target, remove what install put in place (the package:
#                    dpkg --remove); keeps the env file, the user and every Redis key (buckets,
#                    snapshots, marker, stream, group) and the first version's unit as it is
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${P35_BUILD_DIR:-$here/build}"
prefix=/usr/local
dry_run=0
uninstall=0
keep_old=0
deb=""
package=p35-decision-intelligence
old_unit=quantum-p35-decision-intelligence.service
unit_dir=/etc/systemd/system
conf_dir=/etc/quantum
env_file="$conf_dir/p35-decision-intelligence.env"
sysusers_conf=/etc/sysusers.d/quantum-p35.conf
user=quantum-p35
stages=(ingest rollup ackd)
units=(quantum-p35.slice quantum-p35.target quantum-p35-ackd.service quantum-p35-rollup.service
       quantum-p35-ingest.service quantum-p35-metrics.service quantum-p35-metrics.timer)
doc_name=p35-decision-intelligence

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --build-dir) build="${2:?--build-dir needs a directory}"; shift 2 ;;
    --build-dir=*) build="${1#*=}"; shift ;;
    --deb) deb="${2:?--deb needs a .deb file}"; shift 2 ;;
    --deb=*) deb="${1#*=}"; shift ;;
    --keep-old) keep_old=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$prefix" in /*) ;; *) echo "install.sh: --prefix must be an absolute path" >&2; exit 2 ;; esac
prefix="${prefix%/}"
bindir="$prefix/bin"
docdir="$prefix/share/doc/$doc_name"

# Every change goes through run(), so --dry-run shows exactly what a real run would do.
run() {
  if [ "$dry_run" -eq 1 ]; then
    printf 'would run:'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}
say() { printf '%s\n' "$*"; }
systemd_running() { [ -d /run/systemd/system ]; }

# ---- install -----------------------------------------------------------------------------------

binary_path() { echo "$build/$1/p35-$1"; }  # a stage's binary in the build tree

build_binaries() {
  local need=0 b
  for b in "${stages[@]}"; do [ -x "$(binary_path "$b")" ] || need=1; done
  [ -x "$build/inspect/p35-shm" ] || need=1
  if [ "$need" -eq 0 ] && [ ! -w "$build" ]; then
    say "binaries: using $build (read-only, not rebuilt)"
    return
  fi
  if [ "$need" -eq 0 ] && [ -f "$build/build.ninja" ]; then
    run ninja -C "$build"   # a no-op when up to date; rebuilds what changed
    return
  fi
  say "binaries: building in $build"
  # shellcheck source=scripts/deps.sh
  source "$here/scripts/deps.sh"
  # The libraries and the compiler; not the test packages: the tests are not built here.
  run p35_install_packages "${P35_RUNTIME_PACKAGES[@]}" "${P35_BUILD_PACKAGES[@]}"
  [ -f "$build/build.ninja" ] || run meson setup -Dtests=false -Dbench=false "$build" "$here"
  run ninja -C "$build"
}

# install(1) a file only when its content or mode differs, and say which.
put_file() {  # mode source destination
  local mode="$1" src="$2" dst="$3"
  if [ -f "$dst" ] && cmp -s "$src" "$dst" && [ "$(stat -c %a "$dst")" = "${mode#0}" ]; then
    say "unchanged  $dst"
    return
  fi
  say "installing $dst"
  run install -D -m "$mode" "$src" "$dst"
}

install_binaries() {
  local b
  for b in "${stages[@]}"; do put_file 0755 "$(binary_path "$b")" "$bindir/p35-$b"; done
  put_file 0755 "$build/inspect/p35-shm" "$bindir/p35-shm"
  put_file 0644 "$here/README.md" "$docdir/README.md"
  local d
  for d in keys operations design performance testing; do
    put_file 0644 "$here/docs/$d.md" "$docdir/docs/$d.md"
  done
  # The alerting rules, for a Prometheus server to load (docs/operations.md, Prometheus).
  put_file 0644 "$here/prometheus/p35-alerts.rules.yml" "$prefix/share/$doc_name/p35-alerts.rules.yml"
}

# The units name /usr/local; another --prefix is substituted into a temporary copy first.
install_units() {
  local tmp u
  tmp="$(mktemp -d)"
  for u in "${units[@]}"; do
    sed -e "s#/usr/local/bin/#$bindir/#g" -e "s#/usr/local/share/doc/#$prefix/share/doc/#g" \
      "$here/systemd/$u" >"$tmp/$u"
    put_file 0644 "$tmp/$u" "$unit_dir/$u"
  done
  rm -rf "$tmp"
}

# One static system user for all stages (never DynamicUser=: see docs/operations.md, Units).
create_user() {
  if getent passwd "$user" >/dev/null; then
    say "unchanged  user $user"
  else
    say "creating   user $user"
  fi
  local line="u $user - \"P3.5 Decision Intelligence\" /nonexistent /usr/sbin/nologin"
  if command -v systemd-sysusers >/dev/null; then
    local tmp
    tmp="$(mktemp)"
    printf '# The system user of the P3.5 stages (scripts/install.sh).\n%s\n' "$line" >"$tmp"
    put_file 0644 "$tmp" "$sysusers_conf"
    rm -f "$tmp"
    getent passwd "$user" >/dev/null || run systemd-sysusers "$sysusers_conf"
  elif ! getent passwd "$user" >/dev/null; then
    run useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "P3.5 Decision Intelligence" "$user"
  fi
}

install_env_file() {
  put_file 0644 "$here/systemd/p35-decision-intelligence.env.example" "$env_file.example"
  # The Redis ACL user's rule (docs/operations.md, Least privilege); for the Redis server, not read by us.
  put_file 0644 "$here/systemd/p35-redis.acl" "$conf_dir/p35-redis.acl"
  if [ -e "$env_file" ]; then
    say "kept       $env_file (existing settings are never overwritten)"
    return
  fi
  say "creating   $env_file from the template (0600 root: it may hold REDIS_PASSWORD)"
  run install -D -m 0600 "$here/systemd/p35-decision-intelligence.env.example" "$env_file"
}

enable_units() {
  if ! systemd_running; then
    say "systemd is not running here: units installed but not enabled (run 'systemctl daemon-reload"
    say "  && systemctl enable quantum-p35.target' once it is)"
    return
  fi
  run systemctl daemon-reload
  # The target's [Install] Also= enables the three services with it.
  run systemctl enable quantum-p35.target
  say "enabled    quantum-p35.target (start: systemctl start quantum-p35.target;"
  say "           after an upgrade: systemctl restart quantum-p35.target)"
}

# The first version's unit counts the same stream into the same keys: stopped, disabled and masked
# (the target's Conflicts= alone would let whichever starts last win). `systemctl mask` needs the
# name free in /etc/systemd/system, so a unit file there is moved next to the env file first.
retire_old_unit() {
  systemd_running || return 0
  local load file=/etc/systemd/system/$old_unit
  load="$(systemctl show -p LoadState --value "$old_unit" 2>/dev/null || true)"
  case "$load" in ""|not-found|masked) return 0 ;; esac
  if [ "$keep_old" -eq 1 ]; then
    say "kept       $old_unit (--keep-old; quantum-p35.target conflicts with it)"
    return
  fi
  run systemctl disable --now "$old_unit"
  if [ -f "$file" ] && [ ! -L "$file" ]; then
    say "moving     $file to $conf_dir/$old_unit.retired (for a rollback)"
    run install -D -m 0644 "$file" "$conf_dir/$old_unit.retired"
    run rm -f "$file"
  fi
  run systemctl mask "$old_unit"
  say "masked     $old_unit (rollback: README \"Taking over from the first version\")"
}

# The package does what the source installation does (user, env file from the template, units
# enabled, nothing started); apt-get resolves its runtime libraries.
install_package() {
  local path
  path="$(realpath "$deb")"
  [ -f "$path" ] || { echo "install.sh: no such package file: $deb" >&2; exit 2; }
  say "installing package $path"
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$path"
}

do_install() {
  if [ -n "$deb" ]; then
    install_package
    retire_old_unit
    say "installed  P3.5 from $deb (check a running deployment with scripts/proof.sh)"
    return
  fi
  build_binaries
  install_binaries
  install_units
  create_user
  install_env_file
  retire_old_unit
  enable_units
  say "installed  P3.5 in $prefix (check a running deployment with scripts/proof.sh)"
}

# ---- uninstall ---------------------------------------------------------------------------------

# The segment name the stages use, from the env file (default quantum-p35).
segment_name() {
  local name=""
  [ -r "$env_file" ] && name="$(sed -n 's/^[[:space:]]*P35_SHM_NAME=//p' "$env_file" | tail -1)"
  name="${name%\"}"; name="${name#\"}"; name="${name%\'}"; name="${name#\'}"
  echo "${name:-quantum-p35}"
}

# The segment is only a cache of what Redis already has or will be re-read from the pending list;
# it is removed once no process maps it, so that it does not hold its memory forever.
remove_segment() {
  local shm
  shm="/dev/shm/$(segment_name)"
  [ -e "$shm" ] || return 0
  if grep -qsF " $shm" /proc/[0-9]*/maps; then
    say "kept       $shm (a process still maps it)"
    return
  fi
  say "removing   $shm"
  run rm -f "$shm"
}

remove_path() {
  if [ -e "$1" ]; then say "removing   $1"; run rm -f "$1"; fi
}

do_uninstall() {
  local u b
  if dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    # prerm stops the target's units, postrm removes the segment; conffiles and the env file stay.
    run dpkg --remove "$package"
    say "uninstalled package $package (kept: env file, user $user, every Redis key)"
    return
  fi
  if systemd_running && [ -e "$unit_dir/quantum-p35.target" ]; then
    # Stopping the target stops ingest, rollup, ackd in that order: everything committed is acked.
    # The target itself stops first, so the stages are named too: systemctl then waits for them.
    run systemctl disable --now quantum-p35.target
    run systemctl stop quantum-p35-ingest.service quantum-p35-rollup.service quantum-p35-ackd.service
  fi
  for u in "${units[@]}"; do remove_path "$unit_dir/$u"; done
  if systemd_running; then run systemctl daemon-reload; fi
  for b in "${stages[@]}" shm; do remove_path "$bindir/p35-$b"; done
  remove_path "$docdir/README.md"
  local d
  for d in keys operations design performance testing; do remove_path "$docdir/docs/$d.md"; done
  remove_path "$prefix/share/$doc_name/p35-alerts.rules.yml"
  if [ -d "$docdir" ]; then run rmdir --ignore-fail-on-non-empty "$docdir"; fi
  remove_path "$sysusers_conf"
  remove_path "$env_file.example"
  remove_segment
  say "kept       $env_file, user $user, and every Redis key (buckets, snapshots, status, marker,"
  say "           stream and consumer group): remove them by hand if they are no longer wanted"
  say "uninstalled P3.5 from $prefix"
}

if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or with --dry-run to see what it would do)" >&2
  exit 1
fi
if [ "$uninstall" -eq 1 ]; then do_uninstall; else do_install; fi
if [ "$dry_run" -eq 1 ]; then say "(dry run: nothing was changed)"; fi
