// Window snapshots (from the Redis buckets, placed by Redis TIME) and the status hash.
#include "snapshots.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <set>

#include "rules.hpp"

#include "daemon.hpp"
#include "fields.hpp"
#include "keys.hpp"
#include "version.hpp"

namespace p35 {

namespace {

constexpr int64_t kRefreshMs = 10 * 60 * 1000;

uint64_t ld(const std::atomic<uint64_t>& w) { return w.load(std::memory_order_relaxed); }

}  // namespace

void NameCounts::add(std::string_view name, int64_t delta) {
  const auto less = [this](const Item& it, std::string_view n) {
    return std::string_view(names_.data() + it.off, it.len) < n;
  };
  auto it = std::lower_bound(items_.begin(), items_.end(), name, less);
  if (it == items_.end() || this->name(static_cast<size_t>(it - items_.begin())) != name) {
    it = items_.insert(it, Item{static_cast<uint32_t>(names_.size()), static_cast<uint32_t>(name.size()), 0});
    names_.append(name);
  }
  it->count = static_cast<uint64_t>(static_cast<int64_t>(it->count) + delta);
}

std::vector<std::pair<std::string, uint64_t>> top_n_of_sums(const std::vector<const NameCounts*>& lists,
                                                            size_t n) {
  TopN top(n);
  std::vector<size_t> pos(lists.size(), 0);
  // Min-heap of list indices by their current name.
  const auto name_at = [&](size_t l) { return lists[l]->name(pos[l]); };
  const auto later = [&](size_t a, size_t b) { return name_at(a) > name_at(b); };
  std::vector<size_t> heap;
  for (size_t l = 0; l < lists.size(); ++l)
    if (lists[l]->size() > 0) heap.push_back(l);
  std::make_heap(heap.begin(), heap.end(), later);
  while (!heap.empty()) {
    const std::string_view name = name_at(heap.front());
    uint64_t sum = 0;
    while (!heap.empty() && name_at(heap.front()) == name) {
      std::pop_heap(heap.begin(), heap.end(), later);
      const size_t l = heap.back();
      sum += lists[l]->count(pos[l]);
      if (++pos[l] < lists[l]->size()) std::push_heap(heap.begin(), heap.end(), later);
      else heap.pop_back();
    }
    top.offer(name, sum);
  }
  return top.take();
}

std::vector<WindowCounts> windows_from(const std::map<int64_t, MinuteCounts>& minutes,
                                       int64_t now_minute) {
  std::vector<WindowCounts> out(keys::kWindows.size());
  std::vector<size_t> order(keys::kWindows.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::sort(order.begin(), order.end(), [](size_t a, size_t b) {
    return keys::kWindows[a].minutes < keys::kWindows[b].minutes;
  });
  std::map<std::string, uint64_t> decisions, unknown_members;
  for (size_t d = 0; d < kKnownDecisionCount; ++d)
    decisions[std::string(kDecisionNames[d])] = 0;  // always present, 0 if none
  std::vector<const NameCounts*> reasons;  // the window's minutes so far
  auto it = minutes.rbegin();
  while (it != minutes.rend() && it->first > now_minute) ++it;
  for (const size_t k : order) {
    for (; it != minutes.rend() && it->first > now_minute - keys::kWindows[k].minutes; ++it) {
      const MinuteCounts& m = it->second;
      for (const auto& [n, c] : m.decisions) decisions[n] += c;
      for (const auto& [n, c] : m.unknown_members) unknown_members[n] += c;
      reasons.push_back(&m.reasons);
    }
    out[k].decisions = decisions;
    out[k].top_reasons = top_n_of_sums(reasons, keys::kTopReasons);
    out[k].unknown_members = unknown_members;
  }
  return out;
}

Lease::Lease(const Config& cfg, const std::string& instance_token)
    : cfg_(cfg), key_(keys::lease(cfg.key_prefix)), value_(cfg.consumer + " " + instance_token) {}

namespace {
const char* const kLeaseScript = R"LUA(#!lua
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
)LUA";
const char* const kReleaseScript = R"LUA(#!lua
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)LUA";
// The snapshot replace, fenced by the lease. KEYS[1]: the lease; KEYS[2..]: the snapshot keys.
// ARGV[1]: our lease value; then commands, each as its argument count and its arguments (DEL,
// HSET, ZADD, EXPIRE of KEYS[2..]). Nothing is written unless the lease holds our value. Like
// EXEC, a refused command does not stop the others; the first error is returned.
const char* const kReplaceScript = R"LUA(#!lua
local cur = redis.call('GET', KEYS[1])
if cur ~= ARGV[1] then
  return redis.error_reply('P35LEASE the snapshot lease is held by ' .. (cur or 'nobody (expired)'))
end
local i, first = 2, nil
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local r = redis.pcall(unpack(ARGV, i + 1, i + n))
  if type(r) == 'table' and r.err and not first then first = r.err end
  i = i + n + 1
end
if first then return redis.error_reply(first) end
return 1
)LUA";
}  // namespace

void Lease::append_hold(Connection& conn) {
  conn.append({"EVAL", kLeaseScript, "1", key_, value_, std::to_string(kMs)});
}

bool Lease::hold(Connection& conn) {
  append_hold(conn);
  return take_reply(conn, conn.read_reply());
}

bool Lease::take_reply(Connection& conn, const Reply& r) {
  if (r.is_error()) throw error_from_reply("renew the snapshot lease", r.str(), conn.options().username);
  const bool was = held_;
  held_ = r.integer() == 1;
  if (held_ && !was) spdlog::info("Took the snapshot lease {}: this host writes the snapshots", key_);
  if (!held_ && was) spdlog::info("Lost the snapshot lease {} to another host", key_);
  return held_;
}

void Lease::lost(std::string_view message) {
  held_ = false;
  spdlog::warn("Failed to replace the snapshots: {} (this host paused past its lease?); nothing "
               "written, the newer holder's snapshots stay", message);
}

void Lease::release(Connection& conn) {
  if (!held_) return;
  conn.command({"EVAL", kReleaseScript, "1", key_, value_});
  held_ = false;
}

namespace {

// Adds one bucket field ("decision:X", "reason:R"; symbol breakdown is not in the snapshots) or
// subtracts it (n < 0, never below zero) to a minute's counts.
void add_bucket_field(MinuteCounts& mc, std::string_view f, int64_t n) {
  if (f.starts_with(fields::kReason)) {
    f.remove_prefix(fields::kReason.size());
    mc.reasons.add(f, n);
    return;
  }
  if (!f.starts_with(fields::kDecision)) return;
  f.remove_prefix(fields::kDecision.size());
  auto it = mc.decisions.try_emplace(std::string(f), 0).first;
  it->second = static_cast<uint64_t>(static_cast<int64_t>(it->second) + n);
}

int64_t to_int(std::string_view s) {
  int64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);  // no copy per field; 0 when not a number
  return v;
}

}  // namespace

int64_t redis_time_ms(Connection& conn, const Reply& time) {
  if (time.is_error()) throw error_from_reply("read Redis's clock (TIME)", time.str(), conn.options().username);
  if (!time.is_array() || time.size() != 2)
    throw RedisError(RedisErrorKind::Protocol, "Failed to read Redis's clock: TIME did not answer two numbers");
  return to_int(reply_str(time.element(0))) * 1000 + to_int(reply_str(time.element(1))) / 1000;
}

void SnapshotWriter::append_inputs(Connection& conn) {
  conn.append({"TIME"});
  conn.append({"HGETALL", keys::bucket_versions(cfg_.key_prefix)});
}

SnapshotInputs SnapshotWriter::read_inputs(Connection& conn) {
  SnapshotInputs in;
  in.time = conn.read_reply();
  in.versions = conn.read_reply();
  return in;
}

void SnapshotWriter::note_commit(const std::vector<MinuteDelta>& minutes) {
  // Our own commit's deltas keep the cached minutes exact without reading them back: the cache
  // stays valid while a minute's version in Redis equals the version we read plus our own bumps.
  // Another host's commit bumps it too, so the next refresh sees a difference and re-reads.
  for (const auto& md : minutes) {
    const auto v = versions_.find(md.minute);
    if (v == versions_.end()) continue;  // not cached: the refresh reads it
    ++v->second;
    auto& mc = minutes_[md.minute];
    md.bucket.for_each([&](std::string_view f, int64_t d) { add_bucket_field(mc, f, d); });
    md.unknown.for_each([&](std::string_view m, int64_t d) {
      auto it = mc.unknown_members.try_emplace(std::string(m), 0).first;
      it->second = static_cast<uint64_t>(static_cast<int64_t>(it->second) + d);
    });
    dirty_ = true;
  }
}

void SnapshotWriter::refresh_minutes(Connection& conn, int64_t now_minute, const Reply& v,
                                     bool& changed) {
  if (hour_minute_ != now_minute) {  // the window's minute keys, formatted once a minute
    hour_.clear();
    for (int64_t k = now_minute - 59; k <= now_minute; ++k) hour_.emplace(minute_key(k), k);
    // Minute keys are fixed-width, so byte order is time order: older than a day is pruned.
    prune_before_ = minute_key(now_minute - 24 * 60);
    hour_minute_ = now_minute;
  }
  CommandArgs prune{"HDEL", keys::bucket_versions(cfg_.key_prefix)};
  const std::vector<std::pair<int64_t, int64_t>> stale = stale_minutes(v, prune);
  if (prune.size() > 2) conn.append(prune);
  for (const auto& [m, ver] : stale) {
    conn.append({"HGETALL", keys::bucket(cfg_.key_prefix, m)});
    conn.append({"HGETALL", keys::unknown_minute(cfg_.key_prefix, m)});
  }
  if (prune.size() > 2) {
    const Reply r = conn.read_reply();
    if (r.is_error()) throw error_from_reply("prune the minute versions", r.str(), conn.options().username);
  }
  for (const auto& [m, ver] : stale) {
    read_minute(conn, m, ver);
    changed = true;
  }
  // Minutes that left the hour are forgotten (and their versions with them).
  for (auto it = minutes_.begin(); it != minutes_.end() && it->first <= now_minute - 60;) {
    versions_.erase(it->first);
    it = minutes_.erase(it);
    changed = true;
  }
}

// The minutes of the hour whose version in Redis differs from the cached one (minute, version
// read); versions older than a day go to `prune`.
std::vector<std::pair<int64_t, int64_t>> SnapshotWriter::stale_minutes(const Reply& v,
                                                                       CommandArgs& prune) const {
  std::vector<std::pair<int64_t, int64_t>> stale;
  for (size_t i = 0; i + 1 < v.size(); i += 2) {
    const auto mk = reply_str(v.element(i));
    if (mk < prune_before_) prune.add(mk);
    const auto it = hour_.find(mk);
    if (it == hour_.end()) continue;
    const int64_t ver = to_int(reply_str(v.element(i + 1)));
    const auto known = versions_.find(it->second);
    if (known != versions_.end() && known->second == ver) continue;
    stale.emplace_back(it->second, ver);
  }
  return stale;
}

// The replies to a stale minute's two HGETALLs (bucket, unknown members) into the cache.
void SnapshotWriter::read_minute(Connection& conn, int64_t m, int64_t ver) {
  MinuteCounts mc;
  const Reply b = conn.read_reply();
  const Reply u = conn.read_reply();
  for (const Reply* r : {&b, &u})
    if (r->is_error()) throw error_from_reply("read a minute bucket", r->str(), conn.options().username);
  for (size_t i = 0; i + 1 < b.size(); i += 2)
    add_bucket_field(mc, reply_str(b.element(i)), to_int(reply_str(b.element(i + 1))));
  for (size_t i = 0; i + 1 < u.size(); i += 2)
    mc.unknown_members[std::string(reply_str(u.element(i)))] +=
        static_cast<uint64_t>(to_int(reply_str(u.element(i + 1))));
  // The version read before the bucket: if a commit slipped in between, the next refresh sees
  // a newer version and reads the minute again (the cache is never older than its version).
  versions_[m] = ver;
  minutes_[m] = std::move(mc);
}

bool SnapshotWriter::write(Connection& conn, Lease& lease, bool force, const SnapshotInputs* inputs) {
  SnapshotInputs fetched;
  if (inputs == nullptr) {
    append_inputs(conn);
    fetched = read_inputs(conn);
    inputs = &fetched;
  }
  const int64_t now_ms = redis_time_ms(conn, inputs->time);
  const int64_t minute = now_ms / 60000;
  // Redis's clock can be set too: a step of it rewrites the snapshots at once (minute changed) and
  // a step back must not postpone the TTL refresh (hence the absolute difference).
  bool changed = force || dirty_ || minute != last_minute_ ||
                 std::llabs(now_ms - last_write_ms_) >= kRefreshMs;
  const Reply& versions = inputs->versions;
  if (versions.is_error())
    throw error_from_reply("read the minute versions", versions.str(), conn.options().username);
  refresh_minutes(conn, minute, versions, changed);
  if (!changed) return false;  // nothing a reader could see has changed
  if (!replace_keys(conn, lease, windows_from(minutes_, minute))) return false;
  dirty_ = false;
  last_minute_ = minute;
  last_write_ms_ = now_ms;
  return true;
}

namespace {

// The replace script's arguments after the lease: the keys it replaces, and the commands that
// write them, flattened (each as its argument count, then its arguments).
struct Replacement {
  CommandArgs keys, cmds;
  void cmd(std::initializer_list<std::string_view> parts) {
    cmds.add(static_cast<long long>(parts.size()));
    for (const std::string_view s : parts) cmds.add(s);
  }
  void cmd(const CommandArgs& c) {
    cmds.add(static_cast<long long>(c.size()));
    for (size_t i = 0; i < c.size(); ++i) cmds.add(c.at(i));
  }
  // DEL, then (when there is something) ZADD and EXPIRE. Members: (name, count) pairs.
  template <typename Members>
  void zset(const std::string& key, const Members& members, const std::string& ttl) {
    keys.add(key);
    cmd({"DEL", key});
    if (members.empty()) return;
    CommandArgs z{"ZADD", key};
    for (const auto& [m, c] : members) z.add(static_cast<long long>(c)).add(m);
    cmd(z);
    cmd({"EXPIRE", key, ttl});
  }
};

}  // namespace

bool SnapshotWriter::replace_keys(Connection& conn, Lease& lease,
                                  const std::vector<WindowCounts>& windows) {
  const std::string ttl = std::to_string(cfg_.snapshot_ttl_s);
  const std::string& p = cfg_.key_prefix;
  Replacement rep;
  for (size_t k = 0; k < keys::kWindows.size(); ++k) {
    const auto& w = windows[k];
    const std::string dkey = keys::decision_counts(p, keys::kWindows[k].name);
    CommandArgs h{"HSET", dkey};
    for (const auto& [d, c] : w.decisions) h.add(d).add(static_cast<long long>(c));
    rep.keys.add(dkey);
    rep.cmd({"DEL", dkey});
    rep.cmd(h);
    rep.cmd({"EXPIRE", dkey, ttl});
    rep.zset(keys::reason_top(p, keys::kWindows[k].name), w.top_reasons, ttl);
    if (keys::kWindows[k].minutes == 5) rep.zset(keys::unknown_top_5m(p), w.unknown_members, ttl);
  }
  CommandArgs a{"EVAL", kReplaceScript};
  a.add(static_cast<long long>(rep.keys.size() + 1)).add(lease.key());
  for (size_t i = 0; i < rep.keys.size(); ++i) a.add(rep.keys.at(i));
  a.add(lease.value());
  for (size_t i = 0; i < rep.cmds.size(); ++i) a.add(rep.cmds.at(i));
  conn.append(a);
  const Reply r = conn.read_reply();
  if (r.is_error("P35LEASE")) {
    lease.lost(r.str());
    return false;
  }
  if (r.is_error()) throw error_from_reply("replace the snapshots", r.str(), conn.options().username);
  return true;
}

void StatusWriter::append_groups(Connection& conn) { conn.append({"XINFO", "GROUPS", cfg_.stream}); }

namespace {

// Bounded reads: a stage that died between publish_id()'s stores leaves its lock odd until it
// restarts, and an unbounded read would stall rollup (commits included) until then.
std::string id_text(const shm::SeqId& src) {
  const std::optional<StreamId> id = try_read_id(src);
  return id ? id->str() : std::string("unknown");
}

// <stage>_pid, _alive, _state, ...: one stage block's figures.
void add_stage_fields(CommandArgs& a, const char* name, shm::StageBlock& b, int64_t now_boot) {
  const auto pid = static_cast<pid_t>(ld(b.pid));
  const bool alive = pid > 0 && kill(pid, 0) == 0;
  a.add(std::string(name) + "_pid").add(static_cast<long long>(pid));
  a.add(std::string(name) + "_alive").add(alive ? "1" : "0");
  a.add(std::string(name) + "_state").add(state_name(b.state.load()));
  a.add(std::string(name) + "_heartbeat_age_ms").add(static_cast<long long>(now_boot - b.heartbeat_boot_ms.load()));
  a.add(std::string(name) + "_starts").add(static_cast<long long>(b.starts.load()));
  a.add(std::string(name) + "_redis_errors").add(static_cast<long long>(ld(b.redis_errors)));
  a.add(std::string(name) + "_outages").add(static_cast<long long>(ld(b.outages)));
  a.add(std::string(name) + "_primary_moves").add(static_cast<long long>(ld(b.primary_moves)));
}

}  // namespace

void StatusWriter::write(Connection& conn, bool global, const Reply* groups_reply) {
  const int64_t now_ms = now_unix_ms();     // the status timestamps a person reads
  const int64_t now_boot = now_boot_ms();   // heartbeat ages: the stages' CLOCK_BOOTTIME
  const int64_t now_mono = now_mono_ms();   // the rates' interval
  Reply fetched;
  if (groups_reply == nullptr) {
    append_groups(conn);
    fetched = conn.read_reply();
    groups_reply = &fetched;
  }
  CommandArgs a{"HSET", keys::host_status(cfg_.key_prefix, cfg_.consumer)};
  add_group_fields(a, conn, *groups_reply);
  const auto [counted, acked] = add_service_fields(a, now_ms, now_mono);
  add_stage_fields(a, "ingest", seg_.stage(shm::StageId::Ingest), now_boot);
  add_stage_fields(a, "rollup", seg_.stage(shm::StageId::Rollup), now_boot);
  add_stage_fields(a, "ackd", seg_.stage(shm::StageId::Ackd), now_boot);
  conn.append(a);
  if (global) {  // the lease holder's figures stand for the service in the first version's hash
    CommandArgs g{"HSET", keys::status(cfg_.key_prefix)};
    for (size_t i = 2; i < a.size(); ++i) g.add(a.at(i));
    conn.append(g);
  }
  std::string error;
  for (int i = 0; i < (global ? 2 : 1); ++i) {
    const Reply r = conn.read_reply();
    if (r.is_error() && error.empty()) error = std::string(r.str());
  }
  if (!error.empty()) throw error_from_reply("write the status hash", error, conn.options().username);
  if (global && !foreign_checked_) remove_foreign_fields(conn, a);
  last_counted_ = counted;
  last_acked_ = acked;
  last_ms_ = now_mono;
}

// The group-wide status hash has no TTL: fields that only the first version wrote would stay in
// it forever. Once per process, the lease holder removes every field that no P3.5 writer writes:
// not this writer's (`ours`), not a total the commit or the claimer adds to.
void StatusWriter::remove_foreign_fields(Connection& conn, const CommandArgs& ours) {
  foreign_checked_ = true;
  std::set<std::string, std::less<>> known;
  for (size_t i = 2; i < ours.size(); i += 2) known.emplace(ours.at(i));
  for (const std::string_view t : fields::kTotalNames) known.insert(std::string(t) + "_total");
  for (const char* f : {"claimed_total", "legacy_acked_total", "claim_acked_total",
                        "claim_counted_acked_total"})
    known.emplace(f);
  const std::string key = keys::status(cfg_.key_prefix);
  const Reply all = conn.command({"HGETALL", key});
  CommandArgs del{"HDEL", key};
  std::string names;
  for (size_t i = 0; i + 1 < all.size(); i += 2) {
    const std::string_view f = reply_str(all.element(i));
    if (known.find(f) != known.end()) continue;
    del.add(f);
    names += (names.empty() ? "" : ", ") + std::string(f);
  }
  if (del.size() == 2) return;
  conn.command(del);
  spdlog::info("Removed {} field(s) of {} that no P3.5 stage writes (left by the first version): {}",
               del.size() - 2, key, names);
}

// The group's figures: pending entries (all consumers) and lag (entries not yet delivered).
void StatusWriter::add_group_fields(CommandArgs& a, Connection& conn, const Reply& groups) const {
  long long pending = -1, lag = -1;
  // No stream (deleted, or before the first entry): the figures are unknown (-1).
  if (groups.is_error() && !groups.is_error("ERR no such key"))
    throw error_from_reply("read the group's figures", groups.str(), conn.options().username);
  for (size_t g = 0; g < groups.size(); ++g) {
    const redisReply* e = groups.element(g);
    bool ours = false;
    long long gp = -1, gl = -1;
    for (size_t k = 0; k + 1 < e->elements; k += 2) {
      const auto name = reply_str(e->element[k]);
      const redisReply* v = e->element[k + 1];
      if (name == "name") ours = reply_str(v) == cfg_.group;
      if (name == "pending" && v->type == REDIS_REPLY_INTEGER) gp = v->integer;
      if (name == "lag" && v->type == REDIS_REPLY_INTEGER) gl = v->integer;
    }
    if (ours) pending = gp, lag = gl;
  }
  a.add("pending_estimate").add(static_cast<long long>(pending));
  a.add("group_lag").add(static_cast<long long>(lag));
}

std::pair<uint64_t, uint64_t> StatusWriter::add_service_fields(CommandArgs& a, int64_t now_ms,
                                                              int64_t now_mono) const {
  auto& ing = seg_.stage(shm::StageId::Ingest);
  auto& rol = seg_.stage(shm::StageId::Rollup);
  auto& ack = seg_.stage(shm::StageId::Ackd);
  const uint64_t counted = ld(ing.counted), acked = ld(ack.acked);
  const double dt = last_ms_ == 0 ? 0.0 : static_cast<double>(now_mono - last_ms_) / 1000.0;
  const auto rate = [&](uint64_t now, uint64_t before) {
    return dt <= 0 ? std::string("0") : fmt::format("{:.1f}", static_cast<double>(now - before) / dt);
  };
  const std::string committed = id_text(seg_.rollup().committed);
  a.add("last_id").add(committed);
  a.add("last_ts").add(static_cast<long long>(seg_.rollup().last_commit_unix_ms.load() / 1000));
  a.add("consumer_name").add(cfg_.consumer);
  a.add("service_start_ts").add(static_cast<long long>(
      std::min({ing.start_unix_ms.load(), rol.start_unix_ms.load(), ack.start_unix_ms.load()}) / 1000));
  a.add("version").add(P35_VERSION);
  a.add("updated_ts").add(static_cast<long long>(now_ms / 1000));
  a.add("ingest_rate").add(rate(counted, last_counted_));
  a.add("ack_rate").add(rate(acked, last_acked_));
  a.add("ingest_counted").add(static_cast<long long>(counted));
  a.add("ingest_waits").add(static_cast<long long>(ld(ing.waits)));
  a.add("ingest_skipped").add(static_cast<long long>(ld(ing.skipped)));
  a.add("ingest_group_recreated").add(static_cast<long long>(ld(ing.conflicts)));
  a.add("rollup_commits").add(static_cast<long long>(seg_.rollup().commit_count.load()));
  a.add("rollup_conflicts").add(static_cast<long long>(ld(rol.conflicts)));
  a.add("ackd_acked").add(static_cast<long long>(acked));
  a.add("counted_id").add(id_text(seg_.ingest().counted_pub));
  a.add("committed_id").add(committed);
  a.add("acked_id").add(id_text(seg_.ackd().acked));
  a.add("redis_maxmemory_policy").add(eviction_policy_);
  a.add("redis_eviction_risk").add(eviction_risk_ ? "1" : "0");
  a.add("unacked_ids").add(static_cast<long long>(seg_.ingest().id_log_head.load() -
                                                  seg_.ackd().id_log_tail.load()));
  return {counted, acked};
}

}  // namespace p35
