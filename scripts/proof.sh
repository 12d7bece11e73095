#!/usr/bin/env bash
# Checks a running P3.5 deployment (Redis, consumer group, units, status, windows, pending list,
# segment) and prints the operator queries with their live answers; exits 1 if any check fails.
#
# Usage: scripts/proof.sh [--env-file FILE] [--shm-bin PATH] [--no-systemd] [--max-pending N]
#                         [--max-status-age-s N] [--max-heartbeat-age-ms N]
#   --env-file FILE           settings (default /etc/quantum/p35-decision-intelligence.env); the
#                             environment overrides the file, as for the stages
#   --shm-bin PATH            p35-shm (default: $P35_SHM_BIN, PATH, /usr/local/bin, build/inspect)
#   --no-systemd              skip the unit checks (stages run by hand or by another supervisor)
#   --max-pending N           most entries pending in the group that still pass (default 5000)
#   --max-status-age-s N      oldest quantum:p35:status updated_ts that still passes (default 10)
#   --max-heartbeat-age-ms N  oldest stage heartbeat in the segment that still passes (default 5000)
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_file=/etc/quantum/p35-decision-intelligence.env
shm_bin="${P35_SHM_BIN:-}"
use_systemd=1
max_pending=5000
max_status_age_s=10
max_heartbeat_age_ms=5000

usage() { sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --env-file) env_file="${2:?}"; shift 2 ;;
    --shm-bin) shm_bin="${2:?}"; shift 2 ;;
    --no-systemd) use_systemd=0; shift ;;
    --max-pending) max_pending="${2:?}"; shift 2 ;;
    --max-status-age-s) max_status_age_s="${2:?}"; shift 2 ;;
    --max-heartbeat-age-ms) max_heartbeat_age_ms="${2:?}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "proof.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

failures=()
ok() { printf 'ok    %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures+=("$*"); }
info() { printf 'info  %s\n' "$*"; }

# ---- settings: the env file, then the environment (as the stages see them) ----------------------

declare -A setting=(
  [REDIS_HOST]=127.0.0.1 [REDIS_PORT]=6379 [REDIS_DB]=0 [REDIS_SOCKET]="" [REDIS_USERNAME]=""
  [REDIS_PASSWORD]="" [REDIS_PASSWORD_FILE]="" [P35_STREAM]=quantum:stream:apply.result
  [P35_GROUP]=p35_decision_intel [P35_CONSUMER]="" [P35_SHM_NAME]=quantum-p35
  [P35_KEY_PREFIX]=quantum:p35: [REDIS_SENTINELS]="" [REDIS_SENTINEL_MASTER]=mymaster
  [REDIS_SENTINEL_USERNAME]="" [REDIS_SENTINEL_PASSWORD]="" [REDIS_SENTINEL_PASSWORD_FILE]=""
)

read_env_file() {
  local line key value
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line#"${line%%[![:space:]]*}"}"
    case "$line" in ''|'#'*) continue ;; esac
    line="${line#export }"
    key="${line%%=*}"
    value="${line#*=}"
    case "$value" in \"*\") value="${value:1:-1}" ;; \'*\') value="${value:1:-1}" ;; esac
    [ -n "${setting[$key]+x}" ] && setting[$key]="$value"
  done <"$1"
}

if [ -r "$env_file" ]; then
  read_env_file "$env_file"
  info "settings from $env_file"
else
  info "no readable $env_file: defaults and the environment only"
fi
for key in "${!setting[@]}"; do
  if [ -n "${!key+x}" ]; then setting[$key]="${!key}"; fi
done
[ -n "${setting[P35_CONSUMER]}" ] || setting[P35_CONSUMER]="$(uname -n)"
if [ -z "${setting[REDIS_PASSWORD]}" ] && [ -n "${setting[REDIS_PASSWORD_FILE]}" ]; then
  setting[REDIS_PASSWORD]="$(head -n1 "${setting[REDIS_PASSWORD_FILE]}" 2>/dev/null)"
fi

stream="${setting[P35_STREAM]}"
group="${setting[P35_GROUP]}"
consumer="${setting[P35_CONSUMER]}"
prefix="${setting[P35_KEY_PREFIX]}"
shm_name="${setting[P35_SHM_NAME]}"

if [ -z "${setting[REDIS_SENTINEL_PASSWORD]}" ] && [ -n "${setting[REDIS_SENTINEL_PASSWORD_FILE]}" ]; then
  setting[REDIS_SENTINEL_PASSWORD]="$(head -n1 "${setting[REDIS_SENTINEL_PASSWORD_FILE]}" 2>/dev/null)"
fi

# With REDIS_SENTINELS, as the stages do: ask each sentinel in turn for the primary, then confirm
# it with ROLE. The sentinels' password goes through REDISCLI_AUTH of that one command only.
resolve_primary() {
  local item host port addr s_user=() master="${setting[REDIS_SENTINEL_MASTER]}"
  [ -n "${setting[REDIS_SENTINEL_USERNAME]}" ] && s_user=(--user "${setting[REDIS_SENTINEL_USERNAME]}")
  IFS=',' read -ra items <<<"${setting[REDIS_SENTINELS]}"
  for item in "${items[@]}"; do
    item="${item// /}"
    host="${item%:*}" port="${item##*:}"
    host="${host#[}" host="${host%]}"
    addr="$(REDISCLI_AUTH="${setting[REDIS_SENTINEL_PASSWORD]}" redis-cli --no-auth-warning \
      -h "$host" -p "$port" "${s_user[@]}" SENTINEL get-master-addr-by-name "$master" 2>/dev/null)"
    if [ "$(printf '%s\n' "$addr" | wc -l)" -eq 2 ] && [ -n "$(printf '%s' "$addr" | sed -n 2p)" ]; then
      setting[REDIS_HOST]="$(printf '%s\n' "$addr" | sed -n 1p)"
      setting[REDIS_PORT]="$(printf '%s\n' "$addr" | sed -n 2p)"
      setting[REDIS_SOCKET]=""
      info "sentinel $item names ${setting[REDIS_HOST]}:${setting[REDIS_PORT]} as primary '$master'"
      return 0
    fi
  done
  return 1
}
if [ -n "${setting[REDIS_SENTINELS]}" ]; then
  if ! resolve_primary; then
    fail "no sentinel of REDIS_SENTINELS=${setting[REDIS_SENTINELS]} names primary '${setting[REDIS_SENTINEL_MASTER]}'"
    echo "PROOF FAILED: the primary is unknown; nothing else can be checked"
    exit 1
  fi
fi

# redis-cli with the stages' connection; the password goes through REDISCLI_AUTH, never argv.
conn=(-n "${setting[REDIS_DB]}")
if [ -n "${setting[REDIS_SOCKET]}" ]; then
  conn=(-s "${setting[REDIS_SOCKET]}" "${conn[@]}")
else
  conn=(-h "${setting[REDIS_HOST]}" -p "${setting[REDIS_PORT]}" "${conn[@]}")
fi
[ -n "${setting[REDIS_USERNAME]}" ] && conn+=(--user "${setting[REDIS_USERNAME]}")
[ -n "${setting[REDIS_PASSWORD]}" ] && export REDISCLI_AUTH="${setting[REDIS_PASSWORD]}"
R() { redis-cli --no-auth-warning "${conn[@]}" "$@"; }

# ---- checks ------------------------------------------------------------------------------------

echo "== checks (stream $stream, group $group, consumer $consumer, segment /dev/shm/$shm_name)"

pong="$(R PING 2>&1)"
if [ "$pong" != "PONG" ]; then
  fail "Redis does not answer at ${conn[*]}: $pong"
  echo "PROOF FAILED: Redis is unreachable; nothing else can be checked"
  exit 1
fi
ok "Redis answers (${conn[*]})"
if [ -n "${setting[REDIS_SENTINELS]}" ]; then
  role="$(R ROLE 2>&1 | head -n1)"
  if [ "$role" = "master" ]; then
    ok "the server the sentinels name says it is the primary (ROLE master)"
  else
    fail "the server the sentinels name says ROLE '$role', not master (a failover under way?)"
  fi
fi

# One field of our group from XINFO GROUPS (raw output: name, value, name, value, ... per group).
# Plain bash: proof.sh needs nothing beyond coreutils, grep, sed and redis-cli.
group_field() {
  local lines i ours=0
  mapfile -t lines < <(R XINFO GROUPS "$stream" 2>/dev/null)
  for ((i = 0; i + 1 < ${#lines[@]}; i += 2)); do
    [ "${lines[i]}" = name ] && { [ "${lines[i + 1]}" = "$group" ] && ours=1 || ours=0; }
    if [ "$ours" -eq 1 ] && [ "${lines[i]}" = "$1" ]; then echo "${lines[i + 1]}"; return; fi
  done
}
if [ -n "$(group_field name)" ]; then
  ok "consumer group $group exists on $stream"
else
  fail "consumer group $group does not exist on $stream (no stage has started against this Redis?)"
fi

if [ "$use_systemd" -eq 1 ] && [ -d /run/systemd/system ]; then
  for unit in quantum-p35.target quantum-p35-ackd.service quantum-p35-rollup.service \
              quantum-p35-ingest.service; do
    state="$(systemctl is-active "$unit" 2>/dev/null)"
    if [ "$state" = "active" ]; then
      restarts="$(systemctl show -p NRestarts --value "$unit" 2>/dev/null)"
      ok "$unit active${restarts:+ (automatic restarts: $restarts)}"
    else
      fail "$unit is ${state:-unknown} (journalctl -u $unit -n 50)"
    fi
  done
elif [ "$use_systemd" -eq 1 ]; then
  info "systemd is not running here: unit checks skipped"
fi

# The single-value answers come back from one redis-cli (one reply per line, in order): a busy
# machine pays for each process started, not for each command.
quote() {  # each argument as a double-quoted redis-cli token
  local arg out=""
  for arg in "$@"; do arg="${arg//\\/\\\\}"; arg="${arg//\"/\\\"}"; out+="\"$arg\" "; done
  printf '%s\n' "$out"
}
windows=(1m 5m 15m 1h)
mapfile -t answer < <({
  quote HGET "${prefix}status" updated_ts
  quote GET "${prefix}commit:$consumer"
  for w in "${windows[@]}"; do
    quote HLEN "${prefix}decision:counts:$w"
    quote TTL "${prefix}decision:counts:$w"
    quote EXISTS "${prefix}reason:top:$w"
  done
} | R)

updated="${answer[0]}"
now="$(date +%s)"
if [ -z "$updated" ]; then
  fail "${prefix}status has no updated_ts: p35-rollup has never written status"
elif [ $((now - updated)) -gt "$max_status_age_s" ]; then
  fail "${prefix}status is $((now - updated)) s old (more than $max_status_age_s s): is p35-rollup running?"
else
  ok "${prefix}status fresh ($((now - updated)) s old)"
fi

for i in "${!windows[@]}"; do
  w="${windows[i]}"
  fields="${answer[2 + 3 * i]}"
  ttl="${answer[3 + 3 * i]}"
  if [ "${fields:-0}" -ge 4 ] && [ "${ttl:--2}" -gt 0 ]; then
    ok "${prefix}decision:counts:$w present ($fields decisions, TTL $ttl s)"
  else
    fail "${prefix}decision:counts:$w missing or incomplete ($fields fields, TTL $ttl)"
  fi
  if [ "${answer[4 + 3 * i]}" != "1" ]; then
    info "${prefix}reason:top:$w absent (no messages in the last $w)"
  fi
done

marker="${answer[1]}"
if [ -n "$marker" ]; then
  ok "commit marker ${prefix}commit:$consumer = $marker"
else
  fail "no commit marker ${prefix}commit:$consumer (wrong P35_CONSUMER, or ingest never started)"
fi

pending="$(R XPENDING "$stream" "$group" 2>/dev/null | head -n1)"
lag="$(group_field lag)"
if [ -z "$pending" ]; then
  fail "XPENDING $stream $group gave no answer"
elif [ "$pending" -le "$max_pending" ]; then
  ok "XPENDING $pending (at most $max_pending), not yet delivered: ${lag:-?}"
else
  fail "XPENDING $pending entries pending (more than $max_pending): is p35-ackd or p35-rollup stuck?"
fi

if [ -z "$shm_bin" ]; then
  for candidate in "$(command -v p35-shm)" /usr/local/bin/p35-shm "$here/build/inspect/p35-shm"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then shm_bin="$candidate"; break; fi
  done
fi
if [ -z "$shm_bin" ]; then
  fail "p35-shm not found (--shm-bin PATH)"
elif ! json="$("$shm_bin" --shm-name "$shm_name" --json 2>&1)"; then
  fail "segment /dev/shm/$shm_name: $json"
else
  version="$(grep -o '"layout_version":[0-9]*' <<<"$json" | cut -d: -f2)"
  unacked="$(grep -o '"unacked":[0-9]*' <<<"$json" | cut -d: -f2)"
  ok "segment /dev/shm/$shm_name readable (layout v$version, $unacked IDs awaiting XACK)"
  for stage in ingest rollup ackd; do
    # p35-shm --json prints one line with each stage as {"name":..,"pid":..,"alive":..,"state":..,
    # "heartbeat_age_ms":..}; grep is enough and needs nothing that CI may lack.
    entry="$(grep -o "\"name\":\"$stage\",\"pid\":[0-9]*,\"alive\":[a-z]*,\"state\":\"[^\"]*\",\"heartbeat_age_ms\":-\{0,1\}[0-9]*" <<<"$json")"
    pid="$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' <<<"$entry")"
    alive="$(sed -n 's/.*"alive":\([a-z]*\).*/\1/p' <<<"$entry")"
    state="$(sed -n 's/.*"state":"\([^"]*\)".*/\1/p' <<<"$entry")"
    age="$(sed -n 's/.*"heartbeat_age_ms":\(-\{0,1\}[0-9]*\).*/\1/p' <<<"$entry")"
    if [ "$alive" != "true" ]; then
      fail "segment: $stage (pid ${pid:-?}) is not alive (state ${state:-?})"
    elif [ "$state" != "running" ] && [ "$state" != "backpressure" ]; then
      fail "segment: $stage (pid $pid) is $state"
    elif [ "${age:-999999}" -gt "$max_heartbeat_age_ms" ] || [ "${age:--1}" -lt 0 ]; then
      fail "segment: $stage (pid $pid) heartbeat is $age ms old (more than $max_heartbeat_age_ms)"
    else
      ok "segment: $stage pid $pid $state, heartbeat $age ms ago"
    fi
  done
fi

# ---- the operator queries, with their live answers ---------------------------------------------

show() {
  printf '\n$ redis-cli %s\n' "$*"
  R --no-raw "$@"
}
echo
echo "== the operator queries (redis-cli ${conn[*]} ...)"
show ZREVRANGE "${prefix}reason:top:5m" 0 10 WITHSCORES
show HGETALL "${prefix}decision:counts:5m"
show HGETALL "${prefix}decision:counts:1h"
show ZREVRANGE "${prefix}unknown_decision:top:5m" 0 10 WITHSCORES
show HMGET "${prefix}status" processed_total trimmed_total pending_estimate group_lag last_id \
  last_ts ingest_rate ack_rate consumer_name version
show XPENDING "$stream" "$group"
show GET "${prefix}commit:$consumer"
if [ -n "$shm_bin" ]; then
  printf '\n$ %s --shm-name %s   (first lines)\n' "$shm_bin" "$shm_name"
  "$shm_bin" --shm-name "$shm_name" 2>&1 | head -n 9
fi

echo
if [ ${#failures[@]} -gt 0 ]; then
  echo "PROOF FAILED: ${#failures[@]} check(s) failed; first: ${failures[0]}"
  exit 1
fi
echo "PROOF OK: Redis, group, units, status, windows, pending list and segment all healthy"
