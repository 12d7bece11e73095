// The commit marker when Redis forgets: registry, missing markers, eviction policy, ack script.
#include "marker.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <sstream>

#include "daemon.hpp"
#include "keys.hpp"

namespace p35 {

namespace {

// KEYS[1]: the marker, KEYS[2]: the registry hash. ARGV[1]: the consumer, ARGV[2]: now (unix s).
// "No marker" means "the first version" only for a name that never registered (claimer.cpp), so
// the marker and the registration are made in one step. SET before HSET: a refusal of HSET leaves
// a marker that the next start registers, never a registration without a marker.
const char* const kRegisterScript = R"LUA(#!lua
local m = redis.call('GET', KEYS[1])
local reg = redis.call('HGET', KEYS[2], ARGV[1])
if m then
  if not reg then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
  return {'present', m}
end
if reg then return {'missing', reg} end
redis.call('SET', KEYS[1], '0-0')
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {'created', '0-0'}
)LUA";

void set_status(Connection& conn, const Config& cfg, std::initializer_list<std::string_view> fv) {
  CommandArgs a{"HSET", keys::host_status(cfg.key_prefix, cfg.consumer)};
  for (const std::string_view s : fv) a.add(s);
  conn.command(a);
}

}  // namespace

// KEYS[1]: the stream, KEYS[2]: our marker. ARGV[1]: the group, ARGV[2]: the highest ID of the
// batch, ARGV[3..]: the IDs. Nothing is acked unless Redis holds the commit that counted it: the
// segment may be ahead of a Redis that came back from an older dump. IDs are compared as digit
// strings (length, then bytes): a Lua number would lose the precision of a large sequence part.
// allow-oom: it only reads and acks (XACK frees memory), as a plain XACK runs when Redis is full.
const char* const kAckdScript = R"LUA(#!lua flags=allow-oom
local function cmp(x, y)
  if #x ~= #y then return #x < #y and -1 or 1 end
  if x == y then return 0 end
  return x < y and -1 or 1
end
local function id_le(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then return false end
  local c = cmp(ams, bms)
  if c == 0 then c = cmp(aseq, bseq) end
  return c <= 0
end
if redis.acl_check_cmd and not redis.acl_check_cmd('XACK', KEYS[1], ARGV[1], '0-1') then
  return redis.error_reply("NOPERM this user has no permissions to run the 'xack' command")
end
local m = redis.call('GET', KEYS[2])
if not m then return redis.error_reply('P35NOMARKER ' .. KEYS[2] .. ' is missing') end
if not id_le(ARGV[2], m) then
  return redis.error_reply('P35BEHIND marker is ' .. m .. ', batch reaches ' .. ARGV[2])
end
local n, i = 0, 3
while i <= #ARGV do
  local j = math.min(i + 3999, #ARGV)  -- unpack() is bounded by Lua's C stack
  n = n + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, j))
  i = j + 1
end
return n
)LUA";

MarkerState ensure_marker(Connection& conn, const Config& cfg) {
  const std::string now = std::to_string(now_unix_ms() / 1000);
  const Reply r = conn.command({"EVAL", kRegisterScript, "2", keys::marker(cfg.key_prefix, cfg.consumer),
                                keys::consumers(cfg.key_prefix), cfg.consumer, now});
  MarkerState st;
  const std::string_view kind = reply_str(r.element(0)), value = reply_str(r.element(1));
  if (kind == "missing") {
    st.kind = MarkerState::Kind::Missing;
    st.registered_at = std::string(value);
    return st;
  }
  st.kind = kind == "created" ? MarkerState::Kind::Created : MarkerState::Kind::Present;
  st.value = StreamId::parse(value).value_or(StreamId{});
  return st;
}

std::optional<StreamId> segment_committed(Segment& seg) {
  auto& rc = seg.rollup();
  if (rc.pending_state.load(std::memory_order_acquire) != 0) return std::nullopt;
  if (rc.commit_count.load(std::memory_order_acquire) > 0) return try_read_id(rc.committed);
  auto& ic = seg.ingest();
  if (ic.initialised_from_marker.load(std::memory_order_acquire) != 0) return load_id(ic.init_marker);
  return std::nullopt;
}

bool handle_missing_marker(Connection& conn, const Config& cfg, Segment& seg,
                           const MarkerState& st, const char* stage, bool log) {
  const std::string key = keys::marker(cfg.key_prefix, cfg.consumer);
  if (const std::optional<StreamId> committed = segment_committed(seg)) {
    const Reply r = conn.command({"SET", key, committed->str(), "NX"});
    if (r.is_nil()) {  // another stage restored it first, or the operator set it
      note_marker_ok(conn, cfg);
      return true;
    }
    spdlog::error("Commit marker {} was missing although consumer {} registered at {} (Redis lost "
                  "it: DEL, FLUSHDB or eviction); {} restored it from this segment's committed ID {}",
                  key, cfg.consumer, st.registered_at, stage, committed->str());
    set_status(conn, cfg, {"marker_state", "restored", "marker_restored",
                           committed->str() + " " + std::to_string(now_unix_ms() / 1000)});
    return true;
  }
  const auto& rc = seg.rollup();
  const std::string why = rc.pending_state.load() != 0
      ? "a commit " + load_id(rc.pending_prev).str() + " -> " + load_id(rc.pending_next).str() +
            " was in flight and only the lost marker could tell whether it happened"
      : std::string("no segment says what was committed");
  if (log)
    spdlog::error("Commit marker {} is missing although consumer {} registered at {} (Redis lost it: "
                "DEL, FLUSHDB or eviction) and {}: the counts of our pending entries are unknown. "
                "{} counts and acks nothing until an operator sets the marker (redis-cli SET {} "
                "<the last stream ID whose counts are in the buckets>, README \"When Redis fails\"); "
                "checking again every few seconds", key, cfg.consumer, st.registered_at, why, stage, key);
  set_status(conn, cfg, {"marker_state", "missing"});
  return false;
}

void note_marker_ok(Connection& conn, const Config& cfg) {
  set_status(conn, cfg, {"marker_state", "ok"});
}

void drop_segment_behind_marker(Segment& seg, const std::string& marker_key, const char* stage,
                                StreamId marker, StreamId committed) {
  spdlog::error("Redis came back with less than it had: the commit marker {} is {} but this segment "
                "committed up to {} (a restart from an older dump, a lost AOF tail or a failover "
                "to a lagging replica). {} drops the segment before anything is acked: removing {} "
                "so that all stages restart on a fresh segment and re-read the pending list against "
                "the marker", marker_key, marker.str(), committed.str(),
                stage, shm_path(seg.name()));
  if (seg.still_linked()) ::unlink(shm_path(seg.name()).c_str());
}

void drop_segment_reads_lost(Segment& seg, const char* stage, StreamId counted, StreamId marker) {
  spdlog::error("Redis came back with less than it had: entry {}, the newest this segment counted "
                "(above the commit marker {}), is no longer pending on this consumer (a restart "
                "from an older dump, a lost AOF tail or a failover to a lagging replica lost the "
                "reads). {} drops the segment before its counts are committed: removing {} so that "
                "all stages restart on a fresh segment and re-read the pending list against the "
                "marker", counted.str(), marker.str(), stage, shm_path(seg.name()));
  if (seg.still_linked()) ::unlink(shm_path(seg.name()).c_str());
}

std::string read_eviction_policy(Connection& conn) {
  Reply r;
  try {
    r = conn.command({"INFO", "memory"});
  } catch (const RedisError& e) {
    if (e.connection_lost()) throw;
    return "";  // NOPERM (an ACL without +info) or a proxy that refuses INFO: nothing to check
  }
  std::istringstream in{std::string(r.str())};
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("maxmemory_policy:", 0) != 0) continue;
    std::string v = line.substr(17);
    while (!v.empty() && (v.back() == '\r' || v.back() == ' ')) v.pop_back();
    return v;
  }
  return "";
}

bool policy_can_evict(const std::string& policy) {
  return policy.rfind("allkeys-", 0) == 0 || policy.rfind("volatile-", 0) == 0;
}

std::optional<StreamId> checked_marker(Connection& conn, const Config& cfg, Segment& seg,
                                       const char* stage, bool& logged) {
  MarkerState st = ensure_marker(conn, cfg);
  if (st.kind == MarkerState::Kind::Missing) {
    if (!handle_missing_marker(conn, cfg, seg, st, stage, !logged)) {
      logged = true;
      return std::nullopt;
    }
    st = ensure_marker(conn, cfg);  // restored from the segment (by this stage or the other one)
  } else {
    note_marker_ok(conn, cfg);
  }
  logged = false;
  return st.value;
}

}  // namespace p35
