#!/usr/bin/env bash
# The real-systemd test: builds the Debian package (scripts/package.sh, into <build>/deb), boots
# this host's own systemd as PID 1 of a throwaway container (systemd-nspawn on an overlay of the
# host's root with a tmpfs upper layer, so dpkg can write /usr and its database), installs the
# package there with dpkg -i, and checks the installed units against a private redis-server: the
# first version's unit conflicting and retired, Redis down at start (target active at once,
# STATUS waiting-redis), a configuration error (exit 78 at error priority, no restart), start
# order, independent kills and restarts, the watchdog, a draining stop, the segment surviving all
# of it, a replaced segment, exact counts, proof.sh and uninstall.
# Usage (root): scripts/systemd_test.sh   (needs the build (for p35-loadgen), and the packages
# systemd-container, debhelper, dpkg-dev; 60-120 s with the package build)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$(cd "${P35_BUILD_DIR:-$here/build}" && pwd)"
loadgen="$build/loadgen/p35-loadgen"
started_s=$SECONDS

tag="p35-systest-$$"
shm="$tag"                      # the segment lives in the container's own /dev/shm
consumer=systest
prefix=quantum:p35:
stream=quantum:stream:apply.result
group=p35_decision_intel
prefix_dir=/usr                 # where the package puts the binaries
env_file=/etc/quantum/p35-decision-intelligence.env
old_unit=quantum-p35-decision-intelligence.service  # the first version's unit (a stand-in here)
stages=(ackd rollup ingest)
work=""
root=""                         # the overlay the container boots: / below, a tmpfs above
cgroups=()
nspawn_pid=""
redis_pid=""
loadgen_pid=""
sd=""                           # the container's systemd, as a host PID

# ---- reporting -----------------------------------------------------------------------------------

ok() { printf 'ok    [+%2d s] %s\n' $((SECONDS - started_s)) "$*"; }

fail() {
  printf 'FAIL  %s\n' "$*"
  if [ -n "$nspawn_pid" ] && ! kill -0 "$nspawn_pid" 2>/dev/null; then
    echo "---- the container is gone; its console:"
    tail -n 30 "$work/console.log"
  elif [ -n "$sd" ] && kill -0 "$sd" 2>/dev/null; then
    echo "---- unit states"
    C systemctl --no-pager list-units 'quantum-p35*' || true
    echo "---- journal of the stages (last 60 lines)"
    C journalctl --no-pager -o short-monotonic -n 60 -u 'quantum-p35-*' || true
  fi
  [ -n "$work" ] && [ -f "$work/redis.log" ] && { echo "---- redis log"; tail -n 20 "$work/redis.log"; }
  exit 1
}

# ---- set-up and clean-up --------------------------------------------------------------------------

[ "$(id -u)" -eq 0 ] || fail "must run as root (systemd-nspawn)"
command -v systemd-nspawn >/dev/null || fail "systemd-nspawn is missing (package systemd-container)"
for b in ingest rollup ackd; do [ -x "$build/$b/p35-$b" ] || fail "missing $build/$b/p35-$b: build first"; done
[ -x "$loadgen" ] || fail "missing $loadgen: build first"

# P35_DEB=<file>: test that package instead of building one (a CI that built it already).
if [ -n "${P35_DEB:-}" ]; then
  deb="$(realpath "$P35_DEB")"
  [ -f "$deb" ] || fail "P35_DEB=$P35_DEB is not a file"
  ok "package given: $(basename "$deb")"
else
  # --noopt: this test checks the packaging, the units and their behaviour, not code generation.
  echo "== scripts/package.sh --noopt --out $build/deb"
  package_s=$SECONDS
  deb_dir="$(bash "$here/scripts/package.sh" --noopt --out "$build/deb" 2>"$build/deb-package.log")" ||
    { cat "$build/deb-package.log"; fail "scripts/package.sh failed"; }
  deb="$(ls -t "$deb_dir"/p35-decision-intelligence_*.deb | head -n 1)"
  ok "package built: $(basename "$deb") in $((SECONDS - package_s)) s"
fi

# The processes of our own cgroup are the container's; ending them by PID ends nothing else.
kill_cgroup_processes() {
  local cg p
  for cg in "${cgroups[@]}"; do
    while read -r p; do
      kill -KILL "$p" 2>/dev/null || true
    done < <(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null)
  done
}

cleanup() {
  set +e
  [ -n "$loadgen_pid" ] && kill "$loadgen_pid" 2>/dev/null
  if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
    # --force: a throwaway container need not stop its units one by one.
    [ -n "$sd" ] && timeout 5 nsenter -t "$sd" -a systemctl poweroff --force --no-block >/dev/null 2>&1
    for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn_pid" 2>/dev/null
    kill_cgroup_processes
  fi
  [ -n "$nspawn_pid" ] && wait "$nspawn_pid" 2>/dev/null
  local cg
  for cg in "${cgroups[@]}"; do
    for _ in 1 2 3 4 5; do
      find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
      [ -d "$cg" ] || break
      kill_cgroup_processes
      sleep 0.2
    done
  done
  rmdir "/run/systemd/nspawn/propagate/$tag" 2>/dev/null
  if [ -n "$root" ]; then
    umount "$root/merged" 2>/dev/null; umount "$root/layers" 2>/dev/null
    # Only once nothing is mounted there: never a recursive delete through a mount.
    if ! findmnt -rn -o TARGET | grep -q "^$root/"; then rm -rf "$root"; fi
  fi
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  [ -n "$work" ] && rm -rf "$work"
}
trap cleanup EXIT

work="$(mktemp -d /tmp/p35-systemd-test.XXXXXX)"
chmod 755 "$work"   # the stages (user quantum-p35) reach the redis socket through it

echo "== private redis-server on $work/redis.sock (bound into the container as /run/p35-test)"
redis-server --port 0 --unixsocket "$work/redis.sock" --unixsocketperm 777 --save "" \
  --appendonly no --dir "$work" --logfile "$work/redis.log" --daemonize no </dev/null &
redis_pid=$!
R() { redis-cli -s "$work/redis.sock" "$@"; }
for _ in $(seq 200); do [ "$(R PING 2>/dev/null)" = PONG ] && break; sleep 0.05; done
[ "$(R PING 2>/dev/null)" = PONG ] || fail "redis-server did not answer"

# ---- boot ----------------------------------------------------------------------------------------

# A cgroup of our own (in each hierarchy nspawn uses), so that clean-up is ours to do.
new_cgroup() {
  local root
  if [ -d /sys/fs/cgroup/unified ] || [ -d /sys/fs/cgroup/systemd ]; then
    for root in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
      [ -d "$root" ] && mkdir "$root/$tag" && cgroups+=("$root/$tag")
    done
  else
    mkdir "/sys/fs/cgroup/$tag" && cgroups+=("/sys/fs/cgroup/$tag")
  fi
}

# The host's root filesystem read-only below, a tmpfs above: the container may change anything.
make_root() {
  root="$(mktemp -d /tmp/p35-systemd-root.XXXXXX)"
  mkdir "$root/layers" "$root/merged"
  mount -t tmpfs -o size=1g,mode=0755 p35-systemd-test "$root/layers" || fail "could not mount a tmpfs"
  mkdir "$root/layers/upper" "$root/layers/work"
  mount -t overlay p35-systemd-test \
    -o "lowerdir=/,upperdir=$root/layers/upper,workdir=$root/layers/work" "$root/merged" ||
    fail "could not mount the overlay of / (overlayfs)"
}

boot_container() {
  make_root
  local binds=(--bind-ro="$here")
  case "$build/" in "$here"/*) ;; *) binds+=(--bind-ro="$build") ;; esac
  new_cgroup
  (
    for cg in "${cgroups[@]}"; do echo "$BASHPID" >"$cg/cgroup.procs"; done
    # --register=no --keep-unit: no machined or system bus here. firstboot wants a tty.
    # --system-call-filter=bpf: IPAddressDeny= and seccomp work inside. The overlay boots the
    # host's enabled services too: redis-server is masked (the stages use our private server), so
    # are the others the test has no use for, and the apt timers (they would take dpkg's lock);
    # --private-network keeps whatever else starts off the host's ports.
    local masked=() u
    for u in systemd-firstboot.service redis-server.service postgresql.service prometheus.service \
             apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer man-db.timer; do
      masked+=(--bind-ro=/dev/null:/etc/systemd/system/$u)
    done
    exec systemd-nspawn -D "$root/merged" -b -M "$tag" --register=no --keep-unit \
      --console=pipe --system-call-filter=bpf --private-network "${masked[@]}" \
      "${binds[@]}" --bind="$work:/run/p35-test"
  ) </dev/null >"$work/console.log" 2>&1 &
  nspawn_pid=$!
  local t=$SECONDS state=""
  while [ $((SECONDS - t)) -lt 30 ]; do
    kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/console.log"; fail "systemd-nspawn exited"; }
    if [ -z "$sd" ]; then
      sd="$(cat /proc/"$nspawn_pid"/task/*/children 2>/dev/null | awk '{print $1; exit}')"
      [ -n "$sd" ] && [ "$(cat "/proc/$sd/comm" 2>/dev/null)" = systemd ] || sd=""
    fi
    if [ -n "$sd" ]; then
      state="$(timeout 20 nsenter -t "$sd" -a systemctl is-system-running --wait 2>/dev/null || true)"
      case "$state" in running|degraded) break ;; esac
    fi
    sleep 0.1
  done
  case "$state" in running|degraded) ;; *) fail "the container's systemd did not boot (state '$state')" ;; esac
  ok "systemd $(C systemctl --version | awk 'NR==1{print $2}') booted as PID 1 of container $tag ($state) in $((SECONDS - t)) s"
}

C() { nsenter -t "$sd" -a "$@"; }  # run in the container
prop() { C systemctl show -p "$2" --value "quantum-p35-$1.service"; }
inode() { C stat -c %i "/dev/shm/$shm" 2>/dev/null || echo none; }

# Every stage's MainPID, NRestarts and ActiveState (and the target's ActiveState) from one
# systemctl call into now[<stage>.<property>]: the polls below stay cheap on a busy machine.
declare -A now pid nrestarts
read_units() {
  local names=(ackd rollup ingest target) i=0 line
  local out
  now=()
  out="$(C systemctl show -p MainPID -p NRestarts -p ActiveState quantum-p35-ackd.service \
         quantum-p35-rollup.service quantum-p35-ingest.service quantum-p35.target)" ||
    fail "systemctl show failed in the container"
  while IFS= read -r line; do
    if [ -z "$line" ]; then i=$((i + 1)); continue; fi
    now["${names[i]}.${line%%=*}"]="${line#*=}"
  done <<<"$out"
}
# pid[] and nrestarts[] become what the stages have now: the baseline of the next check.
remember_units() {
  local s
  read_units
  for s in "${stages[@]}"; do pid[$s]="${now[$s.MainPID]}"; nrestarts[$s]="${now[$s.NRestarts]}"; done
}

echo "== booting this host's systemd in a container"
boot_container

# ---- install -------------------------------------------------------------------------------------

cat >"$work/env" <<EOF
# Written by systemd_test.sh before the package was installed: postinst must keep it as it is.
REDIS_SOCKET=/run/p35-test/redis.sock
P35_SHM_NAME=$shm
P35_CONSUMER=$consumer
LOG_LEVEL=INFO
# Room for every distinct reason of the hostile entries, so the comparison can be exact.
P35_REASONS_PER_MINUTE=4096
P35_SYMBOL_REASONS_PER_MINUTE=8192
EOF
C install -D -m 0600 /run/p35-test/env "$env_file"

# The first version's unit, as the operator has it: a file in /etc/systemd/system, enabled, running.
printf '[Unit]\nDescription=stand-in for the first version\n[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n' >"$work/old.service"
C install -D -m 0644 /run/p35-test/old.service "/etc/systemd/system/$old_unit"
C systemctl daemon-reload
C systemctl enable --now "$old_unit" >/dev/null 2>&1 || fail "could not start the stand-in $old_unit"

cp "$deb" "$work/"
echo "== dpkg -i $(basename "$deb") (in the container)"
C dpkg -i "/run/p35-test/$(basename "$deb")" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "dpkg -i failed"; }
C cmp -s /run/p35-test/env "$env_file" || fail "the package changed the existing $env_file"
C getent passwd quantum-p35 >/dev/null || fail "the package did not create the user quantum-p35"
[ "$(C systemctl is-enabled quantum-p35.target)" = enabled ] || fail "quantum-p35.target not enabled"
for s in "${stages[@]}"; do
  [ "$(C systemctl is-enabled "quantum-p35-$s.service")" = enabled ] || fail "quantum-p35-$s.service not enabled"
  [ "$(prop "$s" ActiveState)" = inactive ] || fail "the installation started quantum-p35-$s.service"
done
for f in "$prefix_dir/bin/p35-"{ingest,rollup,ackd,shm} /lib/systemd/system/quantum-p35.target \
         /usr/share/doc/p35-decision-intelligence/README.md; do
  C test -e "$f" || fail "the package did not install $f"
done
grep -q "$old_unit is still enabled" "$work/install.log" || fail "postinst did not mention the enabled $old_unit"
version="$(C "$prefix_dir/bin/p35-ingest" --version)"
ok "dpkg -i: $version in $prefix_dir/bin, units in /lib/systemd/system, user quantum-p35, target and stages enabled and not started, existing env file kept, postinst named the old unit"

verify="$(C systemd-analyze verify /lib/systemd/system/quantum-p35.target \
  /lib/systemd/system/quantum-p35.slice /lib/systemd/system/quantum-p35-{ackd,rollup,ingest}.service 2>&1)"
[ -z "$verify" ] || { echo "$verify"; fail "systemd-analyze verify is not clean"; }
exposures=""
for s in "${stages[@]}"; do
  e="$(C systemd-analyze security --no-pager "quantum-p35-$s.service" 2>/dev/null |
       sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  [ -n "$e" ] || fail "no exposure level for quantum-p35-$s.service"
  awk -v e="$e" 'BEGIN { exit !(e <= 2.0) }' || fail "quantum-p35-$s.service exposure $e > 2.0"
  exposures+=" $s $e"
done
ok "systemd-analyze verify clean; systemd-analyze security exposure:$exposures"
# Limits are not enforced inside the container (its cgroup v1 hierarchies are read-only): check
# that systemd took them.
limits="$(C systemctl show -p MemoryMax -p CPUQuotaPerSecUSec -p TasksMax quantum-p35.slice | sort | xargs)"
[ "$limits" = "CPUQuotaPerSecUSec=200ms MemoryMax=268435456 TasksMax=64" ] ||
  fail "quantum-p35.slice limits are not the intended ones: $limits"
[ "$(prop ingest Slice)" = quantum-p35.slice ] || fail "the stages do not run in quantum-p35.slice"
ok "quantum-p35.slice: $limits"

# The watchdog is checked with a short WatchdogSec (a runtime drop-in of the test, not installed).
printf '[Service]\nWatchdogSec=3s\n' >"$work/watchdog.conf"
C install -D -m 0644 /run/p35-test/watchdog.conf /run/systemd/system/quantum-p35-ackd.service.d/test-watchdog.conf
C systemctl daemon-reload

# ---- start ---------------------------------------------------------------------------------------

# awk reads all its input, so the writer never dies of SIGPIPE (pipefail would count that).
first_line() { awk 'NR == 1'; }

# Every entry counted, committed and acked: nothing pending, nothing undelivered, marker at the end.
drained() {
  local last marker pending lag
  last="$(R XREVRANGE "$stream" + - COUNT 1 | first_line)"
  marker="$(R GET "${prefix}commit:$consumer")"
  pending="$(R XPENDING "$stream" "$group" | first_line)"
  lag="$(R XINFO GROUPS "$stream" | awk 'prev == "lag" { v = $0 } { prev = $0 } END { print v }')"
  [ -n "$last" ] && [ "$marker" = "$last" ] && [ "$pending" = 0 ] && [ "$lag" = 0 ]
}
wait_for() {  # seconds description command...
  local deadline=$((SECONDS + $1)) what="$2"
  shift 2
  until "$@"; do
    [ $SECONDS -lt "$deadline" ] || fail "timed out waiting for $what"
    sleep 0.1
  done
}

# True once the journal of stage $1 has a line containing $2. journald takes a stage's stdout through
# a stream socket and may file a line some time after the process wrote it (or after it exited): poll
# with wait_for, never read the journal once.
journal_says() {
  local journal
  journal="$(C journalctl --no-pager -o cat -u "quantum-p35-$1.service")" || return 1
  grep -q -F -- "$2" <<<"$journal"
}

# The buckets and unknown hashes in Redis against the sum of the expectation files, field by field.
expected_counts() {
  awk -F'\t' '$1 == "B" || $1 == "U" { n[$1 FS $2 FS $3] += $4 }
              END { for (k in n) print k FS n[k] }' "$@" | LC_ALL=C sort
}
# One EVAL instead of a redis-cli per key: "B|U <tab> minute <tab> field <tab> count" lines.
actual_counts() {
  R --raw EVAL "local out = {}
    for _, kind in ipairs({{'bucket:', 'B'}, {'unknown:', 'U'}}) do
      local pattern = ARGV[1] .. kind[1]
      for _, key in ipairs(redis.call('KEYS', pattern .. '*')) do
        local minute = string.sub(key, #pattern + 1)
        local h = redis.call('HGETALL', key)
        for i = 1, #h, 2 do out[#out + 1] = kind[2] .. '\t' .. minute .. '\t' .. h[i] .. '\t' .. h[i + 1] end
      end
    end
    return out" 0 "$prefix"
}
check_counts() {  # what expectation-files...
  local what="$1"
  shift
  expected_counts "$@" >"$work/expected.txt"
  actual_counts | LC_ALL=C sort >"$work/actual.txt"
  if ! diff "$work/expected.txt" "$work/actual.txt" >"$work/diff.txt"; then
    head -n 20 "$work/diff.txt"
    fail "$what: Redis differs from the expectation ($(grep -c '^[<>]' "$work/diff.txt") lines)"
  fi
  local entries processed
  entries="$(awk -F'\t' '$1 == "N" { n += $2 } END { print n }' "$@")"
  processed="$(R HGET "${prefix}status" processed_total)"
  [ "$processed" = "$entries" ] || fail "$what: status processed_total $processed, expected $entries"
  ok "$what: counts exact ($(wc -l <"$work/expected.txt") fields in $(cut -f2 "$work/expected.txt" | sort -u | wc -l) minutes, $entries entries, processed_total $processed)"
}

all_active() {
  local s
  read_units
  for s in "${stages[@]}" target; do [ "${now[$s.ActiveState]}" = active ] || return 1; done
}

# ---- the first version's unit, Redis down at start, a configuration error ----------------------

echo "== the first version's unit; the target with Redis down; a configuration error"
unit_state() { C systemctl show -p ActiveState --value "$1"; }
stages_stopped() {
  local s
  read_units
  for s in "${stages[@]}" target; do
    case "${now[$s.ActiveState]}" in inactive|failed) ;; *) return 1 ;; esac
  done
}
# Redis down: its socket moved away (the server keeps listening on it, so moving it back is Redis
# coming back). The start must not wait for Redis.
mv "$work/redis.sock" "$work/redis.sock.away"
t0=$SECONDS
timeout 30 nsenter -t "$sd" -a systemctl start quantum-p35.target || fail "systemctl start with Redis down failed or hung"
start_s=$((SECONDS - t0))
all_active || fail "not every stage is active after starting the target with Redis down"
[ "$(unit_state "$old_unit")" = inactive ] || fail "starting quantum-p35.target left $old_unit $(unit_state "$old_unit") (Conflicts=)"
for s in "${stages[@]}"; do
  text="$(prop "$s" StatusText)"
  case "$text" in waiting-redis*) ;; *) fail "$s STATUS is '$text' with Redis down, not waiting-redis" ;; esac
done
ok "Redis down: systemctl start quantum-p35.target returned in $start_s s, all three active with STATUS waiting-redis ('$(prop ingest StatusText)'); Conflicts= stopped $old_unit"
mv "$work/redis.sock.away" "$work/redis.sock"
redis_answered() { local s; for s in "${stages[@]}"; do case "$(prop "$s" StatusText)" in waiting-redis*) return 1 ;; esac; done; }
wait_for 20 "the stages to reach Redis once it is back" redis_answered
ok "Redis back: no stage says waiting-redis any more (ingest: '$(prop ingest StatusText)')"
C systemctl stop quantum-p35.target
wait_for 40 "the three stages to stop" stages_stopped

# install.sh --deb on top: the same package, then the first version's unit disabled and masked.
C bash "$here/scripts/install.sh" --deb "/run/p35-test/$(basename "$deb")" >"$work/install2.log" 2>&1 ||
  { cat "$work/install2.log"; fail "install.sh --deb failed"; }
[ "$(C systemctl is-enabled "$old_unit" 2>/dev/null || true)" = masked ] || fail "install.sh --deb did not mask $old_unit"
C test -f "/etc/quantum/$old_unit.retired" || fail "install.sh did not keep the old unit file for a rollback"
ok "install.sh --deb: $old_unit masked (its file kept as /etc/quantum/$old_unit.retired)"

# A configuration error: a bad flag through a runtime drop-in.
printf '[Service]\nExecStart=\nExecStart=%s/bin/p35-ingest --redis-port=0\n' "$prefix_dir" >"$work/bad.conf"
C install -D -m 0644 /run/p35-test/bad.conf /run/systemd/system/quantum-p35-ingest.service.d/test-bad.conf
C systemctl daemon-reload
C systemctl start quantum-p35-ingest.service 2>/dev/null && fail "ingest started with --redis-port=0"
ingest_failed() { [ "$(prop ingest ActiveState)" = failed ]; }
wait_for 10 "ingest to fail on the configuration error" ingest_failed
sleep 2   # RestartSec=500ms: a restart would have happened by now
[ "$(prop ingest ExecMainStatus)" = 78 ] || fail "ingest exited with $(prop ingest ExecMainStatus), not 78"
[ "$(prop ingest NRestarts)" = 0 ] || fail "systemd restarted ingest $(prop ingest NRestarts) times after a configuration error"
config_error_at_err() { C journalctl --no-pager -o cat -p err -u quantum-p35-ingest.service | grep -q "Failed to read the configuration: invalid --redis-port"; }
wait_for 10 "the configuration error at error priority in the journal" config_error_at_err
ok "configuration error: exit 78, failed with NRestarts 0, journal at priority err: '$(C journalctl --no-pager -o cat -p err -u quantum-p35-ingest.service | grep -m1 "Failed to read the configuration")'"
C rm /run/systemd/system/quantum-p35-ingest.service.d/test-bad.conf
C systemctl daemon-reload
C systemctl reset-failed quantum-p35-ingest.service

echo "== a backlog of 20,000 entries (2 % hostile), then systemctl start quantum-p35.target"
# --force: the stages created the group when Redis came back above (see the live traffic below).
"$loadgen" --redis-socket "$work/redis.sock" --count 20000 --seed 11 --edge-cases \
  --edge-fraction 0.02 --expect "$work/expect.backlog" --force --quiet
timeout 60 nsenter -t "$sd" -a systemctl start quantum-p35.target || fail "systemctl start quantum-p35.target failed"
all_active || fail "not every stage is active after starting the target"
read -r a r i <<<"$(for s in "${stages[@]}"; do prop "$s" ExecMainStartTimestampMonotonic; done | xargs)"
if [ "$a" -ge "$r" ] || [ "$r" -ge "$i" ]; then
  fail "start order is not ackd, rollup, ingest (exec at $a, $r, $i us)"
fi
remember_units
segment_inode="$(inode)"
[ "$segment_inode" != none ] || fail "no segment /dev/shm/$shm after the start"
ok "target started ackd (pid ${pid[ackd]}), rollup (pid ${pid[rollup]}), ingest (pid ${pid[ingest]}) in that order; segment inode $segment_inode"
wait_for 30 "the backlog to drain" drained
check_counts "backlog" "$work/expect.backlog"

# ---- kills and restarts under live traffic ---------------------------------------------------------

echo "== live traffic (2,000 msg/s for 10 s); SIGKILL each stage, hang one, restart one, stop and start the target"
# --force: the stages now consume this (private) stream, and p35-loadgen refuses such a stream without it.
"$loadgen" --redis-socket "$work/redis.sock" --rate 2000 --duration-s 10 --seed 12 --edge-cases \
  --edge-fraction 0.02 --expect "$work/expect.live" --force --quiet &
loadgen_pid=$!

# `stage` runs again under a new PID (now[] is fresh from read_units).
replaced() {  # stage
  read_units
  local p="${now[$1.MainPID]}"
  [ "$p" != 0 ] && [ "$p" != "${pid[$1]}" ] && [ "${now[$1.ActiveState]}" = active ]
}
# After `stage` came back: it was restarted `want` more times, every other stage kept its PID and
# restart count, the target stayed active, and the segment is the same file.
# ("manual" for a systemctl restart, which sets the stage's NRestarts back to 0).
check_only() {  # stage want-restarts|manual what
  local s
  if [ "$2" != manual ] && [ "${now[$1.NRestarts]}" != $((nrestarts[$1] + $2)) ]; then
    fail "$3: $1 NRestarts ${now[$1.NRestarts]}, expected $((nrestarts[$1] + $2))"
  fi
  for s in "${stages[@]}"; do
    [ "$s" = "$1" ] && continue
    [ "${now[$s.MainPID]}" = "${pid[$s]}" ] || fail "$3 touched $s (pid ${pid[$s]} -> ${now[$s.MainPID]})"
    [ "${now[$s.NRestarts]}" = "${nrestarts[$s]}" ] || fail "$3 restarted $s"
  done
  [ "${now[target.ActiveState]}" = active ] || fail "$3 left the target ${now[target.ActiveState]}"
  [ "$(inode)" = "$segment_inode" ] || fail "$3 replaced the segment (inode $segment_inode -> $(inode))"
}

for s in ingest rollup ackd; do
  C systemctl kill -s KILL "quantum-p35-$s.service"
  wait_for 15 "quantum-p35-$s.service to come back after SIGKILL" replaced "$s"
  check_only "$s" 1 "SIGKILL of $s"
  ok "SIGKILL of $s: restarted by systemd (pid ${pid[$s]} -> ${now[$s.MainPID]}, NRestarts ${now[$s.NRestarts]}); the other two kept their PIDs; target active; segment inode unchanged"
  remember_units
done

# A hung loop: SIGSTOP leaves ackd alive but silent; systemd's watchdog must restart it.
C systemctl kill -s SIGSTOP quantum-p35-ackd.service
wait_for 20 "the watchdog to restart a stopped ackd" replaced ackd
check_only ackd 1 "the watchdog restart of ackd"
wait_for 10 "a watchdog timeout in ackd's journal" journal_says ackd "Watchdog timeout"
ok "SIGSTOP of ackd (a hung loop): watchdog timeout after WatchdogSec=3s, restarted (pid ${pid[ackd]} -> ${now[ackd.MainPID]}); the others untouched"
remember_units
status_text="$(prop rollup StatusText)"
[ -n "$status_text" ] || fail "rollup sent no STATUS= to systemd"
ok "rollup's STATUS= reaches systemd: \"$status_text\""

timeout 60 nsenter -t "$sd" -a systemctl restart quantum-p35-rollup.service || fail "systemctl restart of rollup failed"
replaced rollup || fail "systemctl restart did not give rollup a new PID"
check_only rollup manual "systemctl restart of rollup"
ok "systemctl restart quantum-p35-rollup.service: new pid ${pid[rollup]} -> ${now[rollup.MainPID]}; ingest and ackd untouched"
remember_units

# ---- a draining stop -------------------------------------------------------------------------------

# "<ms> <seq>" of a stream ID, for comparisons.
id_above() {  # a b: a > b
  local a_ms="${1%-*}" a_seq="${1#*-}" b_ms="${2%-*}" b_seq="${2#*-}"
  [ "$a_ms" -gt "$b_ms" ] || { [ "$a_ms" -eq "$b_ms" ] && [ "$a_seq" -gt "$b_seq" ]; }
}
# The target stops first (it is ordered after its stages), so systemctl returns before the
# stages have drained: wait for them.
stop_target() {
  timeout 60 nsenter -t "$sd" -a systemctl stop quantum-p35.target || fail "systemctl stop quantum-p35.target failed"
  wait_for 40 "the three stages to stop" none_running
}
none_running() {
  local s
  read_units
  for s in "${stages[@]}"; do
    case "${now[$s.ActiveState]}" in inactive|failed) ;; *) return 1 ;; esac
  done
}
stop_target
for s in "${stages[@]}"; do
  state="${now[$s.ActiveState]}"
  [ "$state" = inactive ] || fail "$s is $state after the stop (a stage must exit 0 on SIGTERM)"
done
marker="$(R GET "${prefix}commit:$consumer")"
read -r pending lowest _ <<<"$(R XPENDING "$stream" "$group" | awk 'NR <= 2' | xargs)"
if [ "$pending" != 0 ]; then
  id_above "$lowest" "$marker" || fail "after the stop, $lowest is pending but committed (marker $marker)"
fi
# RemoveIPC= or DynamicUser= would delete the segment about a second after the stop: look for 2 s.
deadline=$((SECONDS + 2))
while [ $SECONDS -lt "$deadline" ]; do
  [ "$(inode)" = "$segment_inode" ] || fail "the segment was removed or replaced after the stop"
  sleep 0.2
done
ok "systemctl stop quantum-p35.target: all three inactive (exit 0), nothing committed left unacked (XPENDING $pending, lowest ${lowest:-none} above marker $marker), segment kept"

timeout 60 nsenter -t "$sd" -a systemctl start quantum-p35.target || fail "restarting the target failed"
all_active || fail "not every stage is active after the second start"
[ "$(inode)" = "$segment_inode" ] || fail "the second start did not reuse the segment"
remember_units
ok "systemctl start quantum-p35.target again: all three active on the same segment (inode $segment_inode)"

# ---- the replaced segment ----------------------------------------------------------------------------

wait "$loadgen_pid" || fail "p35-loadgen failed"
echo "== more live traffic (2,000 msg/s for 4 s); rm /dev/shm/$shm under the running stages"
"$loadgen" --redis-socket "$work/redis.sock" --rate 2000 --duration-s 4 --seed 13 --edge-cases \
  --edge-fraction 0.02 --expect "$work/expect.live2" --force --quiet &
loadgen_pid=$!
written="$(R XLEN "$stream")"
more_written() { [ "$(R XLEN "$stream")" -gt $((written + 1000)) ]; }
wait_for 5 "the second traffic run to reach Redis" more_written
C rm "/dev/shm/$shm"
all_restarted() {
  local s
  read_units
  for s in "${stages[@]}"; do
    [ "${now[$s.NRestarts]}" -gt "${nrestarts[$s]}" ] && [ "${now[$s.ActiveState]}" = active ] || return 1
  done
  [ "$(inode)" != none ]
}
wait_for 20 "every stage to restart on a fresh segment" all_restarted
for s in "${stages[@]}"; do
  wait_for 10 "$s to log that the segment was removed" journal_says "$s" "was removed or replaced under us"
done
new_inode="$(inode)"
[ "$new_inode" != "$segment_inode" ] || fail "the segment has its old inode after rm"
ok "rm /dev/shm/$shm under running stages: each logged it, exited and was restarted by systemd (NRestarts ackd ${now[ackd.NRestarts]}, rollup ${now[rollup.NRestarts]}, ingest ${now[ingest.NRestarts]}) on a fresh segment (inode $new_inode)"

wait "$loadgen_pid" || fail "p35-loadgen failed"
loadgen_pid=""
wait_for 30 "the live traffic to drain" drained
check_counts "after kills, restart, stop/start and the replaced segment" "$work/expect.backlog" \
  "$work/expect.live" "$work/expect.live2"

# Idle under the 3 s watchdog drop-in: ackd's idle wait is bounded by a third of WatchdogSec, so it
# keeps pinging with nothing to do. Nothing to poll for here: the check is that nothing happens.
remember_units
sleep 7
read_units
[ "${now[ackd.MainPID]}" = "${pid[ackd]}" ] && [ "${now[ackd.NRestarts]}" = "${nrestarts[ackd]}" ] ||
  fail "idle ackd was restarted under WatchdogSec=3s (pid ${pid[ackd]} -> ${now[ackd.MainPID]})"
ok "idle for 7 s under WatchdogSec=3s: ackd kept its pid ${pid[ackd]} (its idle wait is a third of WatchdogSec)"

# ---- proof.sh, p35-shm, a last stop and uninstall ----------------------------------------------------

C env P35_SHM_BIN="$prefix_dir/bin/p35-shm" bash "$here/scripts/proof.sh" >"$work/proof.log" 2>&1 ||
  { cat "$work/proof.log"; fail "proof.sh failed on a healthy deployment"; }
ok "proof.sh on the running deployment: $(tail -n1 "$work/proof.log")"

stop_target
if C env P35_SHM_BIN="$prefix_dir/bin/p35-shm" bash "$here/scripts/proof.sh" >"$work/proof2.log" 2>&1; then
  cat "$work/proof2.log"
  fail "proof.sh passed with every stage stopped"
fi
json="$(C "$prefix_dir/bin/p35-shm" --shm-name "$shm" --json)"
dead="$(grep -o '"alive":false,"state":"dead"' <<<"$json" | wc -l)"
[ "$dead" = 3 ] || fail "p35-shm --json after the stop does not show three dead stages: $json"
ok "stopped: proof.sh fails ($(grep -c '^FAIL' "$work/proof2.log") checks, e.g. '$(grep -m1 '^FAIL' "$work/proof2.log")'); p35-shm --json shows 3 dead stages"

keys_before="$(R DBSIZE)"
C bash "$here/scripts/install.sh" --uninstall >"$work/uninstall.log" 2>&1 ||
  { cat "$work/uninstall.log"; fail "install.sh --uninstall failed"; }
for f in /lib/systemd/system/quantum-p35.target "$prefix_dir/bin/p35-ingest" "/dev/shm/$shm"; do
  if C test -e "$f"; then fail "uninstall left $f"; fi
done
C test -e "$env_file" || fail "uninstall removed $env_file"
[ "$(R DBSIZE)" = "$keys_before" ] || fail "uninstall changed Redis ($keys_before keys -> $(R DBSIZE))"
ok "install.sh --uninstall (dpkg --remove): units, binaries and segment gone; env file and all $keys_before Redis keys kept"

echo "== real-systemd test passed in $((SECONDS - started_s)) s"
