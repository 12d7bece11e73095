// Taking over other consumers' idle pending entries against their owner's commit marker.
#include "claimer.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "committer.hpp"
#include "keys.hpp"
#include "snapshots.hpp"

namespace p35 {

namespace {

constexpr int kClaimBatch = 1000;
// A consumer with nothing pending is removed only after this long without activity, far beyond
// any restart, so a live consumer is never removed for a pause.
constexpr long long kRemoveIdleMs = 24LL * 3600 * 1000;

// XACK and the matching status counter in one step: XACK returns how many IDs were still
// pending, so two hosts acking the same IDs count each once. An ACL user without HINCRBY is
// refused before the XACK (Redis 7 has redis.acl_check_cmd), not between the two.
const char* const kAckScript = R"LUA(#!lua
if redis.acl_check_cmd and not redis.acl_check_cmd('HINCRBY', KEYS[2], ARGV[2], '1') then
  return redis.error_reply("NOPERM this user has no permissions to run the 'hincrby' command")
end
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))
if n > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], n) end
return n
)LUA";

// Remove a consumer only if it still has nothing pending (atomically: no entry can be delivered
// to it between the check and the removal, so none is lost).
const char* const kRemoveConsumerScript = R"LUA(#!lua
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p > 0 then return -1 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
)LUA";

struct ConsumerInfo {
  std::string name;
  long long pending = 0;
  long long idle_ms = 0;
};

std::vector<ConsumerInfo> consumers(Connection& conn, const Config& cfg) {
  std::vector<ConsumerInfo> out;
  Reply r;
  try {
    r = conn.command({"XINFO", "CONSUMERS", cfg.stream, cfg.group});
  } catch (const RedisError& e) {
    // No group or no stream (not yet, or deleted: ingest re-creates both): nobody to take over
    // from, and no outage either.
    if (e.kind() == RedisErrorKind::Reply && (e.server_message().rfind("NOGROUP", 0) == 0 ||
                                              e.server_message().rfind("ERR no such key", 0) == 0))
      return out;
    throw;
  }
  for (size_t i = 0; i < r.size(); ++i) {
    const redisReply* e = r.element(i);
    ConsumerInfo c;
    for (size_t k = 0; k + 1 < e->elements; k += 2) {
      const auto f = reply_str(e->element[k]);
      const redisReply* v = e->element[k + 1];
      if (f == "name") c.name = std::string(reply_str(v));
      else if (f == "pending" && v->type == REDIS_REPLY_INTEGER) c.pending = v->integer;
      else if (f == "idle" && v->type == REDIS_REPLY_INTEGER) c.idle_ms = v->integer;
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace

ClaimStats Claimer::run_once(Connection& conn) {
  ClaimStats stats;
  if (sha_.empty()) sha_ = std::string(conn.command({"SCRIPT", "LOAD", kCommitScript}).str());
  for (const auto& c : consumers(conn, cfg_)) {
    if (c.name == cfg_.consumer) continue;
    if (c.pending > 0 && c.idle_ms >= cfg_.claim_idle_ms) claim_owner(conn, c.name, stats);
    else if (c.pending == 0 && c.idle_ms >= std::max<long long>(kRemoveIdleMs, cfg_.claim_idle_ms))
      remove_idle_consumer(conn, c.name, stats);
  }
  return stats;
}

// The owner's pending entries in ID order, up to the first one not idle for long enough: the
// owner's marker may only move over entries none of which it could still be working on.
std::vector<Claimer::Pending> Claimer::idle_prefix(Connection& conn, const std::string& owner) {
  std::vector<Pending> out;
  const Reply r = conn.command({"XPENDING", cfg_.stream, cfg_.group, "-", "+",
                                std::to_string(kClaimBatch), owner});
  for (size_t i = 0; i < r.size(); ++i) {
    const redisReply* e = r.element(i);
    const auto id = StreamId::parse(reply_str(e->element[0]));
    const long long idle = e->element[2]->integer;
    if (!id || idle < cfg_.claim_idle_ms) break;
    out.push_back({*id, idle});
  }
  return out;
}

void Claimer::claim_owner(Connection& conn, const std::string& owner, ClaimStats& stats) {
  const std::string marker_key = keys::marker(cfg_.key_prefix, owner);
  for (;;) {
    const auto pending = idle_prefix(conn, owner);
    if (pending.empty()) return;
    std::vector<StreamId> ids;
    for (const auto& p : pending) ids.push_back(p.id);
    const Reply m = conn.command({"GET", marker_key});
    if (m.is_nil()) {  // the first version: it counted before acking
      const uint64_t n = ack(conn, ids, "legacy_acked_total");
      stats.legacy_acked += n;
      spdlog::info("Acked {} entries pending on {} (no marker: the first version, which counted "
                   "them before acking) without counting", n, owner);
    } else {
      const StreamId marker = StreamId::parse(m.str()).value_or(StreamId{});
      if (ids.back() > marker &&
          !commit_counted(conn, owner, marker, ids.back(), ids, stats))
        return;  // the owner's marker moved under us: leave it to the next round
      std::vector<StreamId> below;
      for (StreamId id : ids)
        if (id <= marker) below.push_back(id);
      stats.acked_only += ack(conn, below, "claim_acked_total");
      std::vector<StreamId> above;
      for (StreamId id : ids)
        if (id > marker) above.push_back(id);
      ack(conn, above, "claim_counted_acked_total");
      spdlog::info("Took over {} idle entries of {} (marker {} -> {}): {} counted, {} already "
                   "counted", ids.size(), owner, marker.str(), std::max(marker, ids.back()).str(),
                   above.size(), below.size());
    }
    if (pending.size() < static_cast<size_t>(kClaimBatch)) return;
  }
}

// Count the owner's entries above its marker and move the marker over them with the same
// compare-and-set commit rollup uses: two hosts claiming the same entries count them once.
bool Claimer::commit_counted(Connection& conn, const std::string& owner, StreamId prev,
                             StreamId next, const std::vector<StreamId>& ids, ClaimStats& stats) {
  using Fields = std::map<std::string, long long>;
  std::map<std::string, Fields> hashes;
  uint64_t counted = 0, trimmed = 0;
  for (StreamId id : ids) {
    if (id <= prev) continue;
    conn.append({"XRANGE", cfg_.stream, id.str(), id.str()});
  }
  for (StreamId id : ids) {
    if (id <= prev) continue;
    const Reply r = conn.read_reply();
    if (r.is_error()) throw error_from_reply("read claimed entries", r.str(), conn.options().username);
    if (r.size() == 0) {  // trimmed away (or deleted) since it was delivered
      ++trimmed;
      continue;
    }
    const redisReply* fv = r.element(0)->element[1];
    std::vector<Field> fields;
    for (size_t k = 0; k + 1 < fv->elements; k += 2)
      fields.push_back({reply_str(fv->element[k]), reply_str(fv->element[k + 1])});
    normalize(fields, static_cast<int64_t>(id.ms), norm_);
    auto& b = hashes[keys::bucket(cfg_.key_prefix, norm_.minute)];
    b["decision:" + norm_.decision_label()] += 1;
    b["reason:" + norm_.reason] += 1;
    if (cfg_.symbol_breakdown && !norm_.symbol.empty())
      b["symbol_reason:" + norm_.symbol + ":" + norm_.reason] += 1;
    if (norm_.decision == Decision::Unknown)
      hashes[keys::unknown_minute(cfg_.key_prefix, norm_.minute)][norm_.unknown_member()] += 1;
    ++counted;
  }
  for (const auto& [key, fields] : std::map<std::string, Fields>(hashes)) {
    const std::string bucket_prefix = cfg_.key_prefix + "bucket:";
    if (key.rfind(bucket_prefix, 0) == 0)
      hashes[bucket_versions_key(cfg_.key_prefix)][key.substr(bucket_prefix.size())] += 1;
  }
  auto& st = hashes[keys::status(cfg_.key_prefix)];
  if (counted > 0) st["processed_total"] += static_cast<long long>(counted);
  if (trimmed > 0) st["trimmed_total"] += static_cast<long long>(trimmed);
  st["claimed_total"] += static_cast<long long>(counted + trimmed);
  CommandArgs a{"EVALSHA", sha_};
  a.add(static_cast<long long>(hashes.size() + 1)).add(keys::marker(cfg_.key_prefix, owner));
  for (const auto& h : hashes) a.add(h.first);
  a.add(prev.str()).add(next.str());
  for (const auto& [key, fields] : hashes) {
    const bool keep = key == keys::status(cfg_.key_prefix) || key == bucket_versions_key(cfg_.key_prefix);
    a.add(keep ? 0LL : static_cast<long long>(cfg_.bucket_ttl_s));
    a.add(static_cast<long long>(fields.size()));
    for (const auto& [f, n] : fields) a.add(f).add(n);
  }
  try {
    conn.command(a);
  } catch (const RedisError& e) {
    if (e.kind() == RedisErrorKind::Reply && e.server_message().rfind("P35CONFLICT", 0) == 0) {
      ++stats.conflicts;
      spdlog::info("Claim of {}'s entries lost the race ({}); nothing counted", owner, e.server_message());
      return false;
    }
    if (e.kind() == RedisErrorKind::Reply && e.server_message().rfind("NOSCRIPT", 0) == 0) sha_.clear();
    throw;
  }
  stats.counted += counted;
  stats.trimmed += trimmed;
  return true;
}

uint64_t Claimer::ack(Connection& conn, const std::vector<StreamId>& ids, const char* status_field) {
  if (ids.empty()) return 0;
  if (cfg_.wait_replicas > 0) {
    // As for our own commits (P35_WAIT_REPLICAS): no ack before the replicas hold the commit
    // (this connection's writes). Short: the entries stay pending, counted under the owner's
    // marker; a later round finds them counted and acks them after its own WAIT.
    const Reply w = conn.command(CommandArgs{"WAIT"}
                                     .add(cfg_.wait_replicas)
                                     .add(static_cast<long long>(cfg_.wait_timeout_ms)));
    if (w.integer() < cfg_.wait_replicas) {
      spdlog::warn("Failed to ack {} claimed entries: {} of the {} replicas P35_WAIT_REPLICAS asks "
                   "for hold their commit; a later take-over round acks them",
                   ids.size(), w.integer(), cfg_.wait_replicas);
      return 0;
    }
  }
  CommandArgs a{"EVAL", kAckScript, "2", cfg_.stream, keys::status(cfg_.key_prefix), cfg_.group,
                status_field};
  for (StreamId id : ids) a.add(id.str());
  return static_cast<uint64_t>(conn.command(a).integer());
}

void Claimer::remove_idle_consumer(Connection& conn, const std::string& name, ClaimStats& stats) {
  const Reply r = conn.command({"EVAL", kRemoveConsumerScript, "1", cfg_.stream, cfg_.group, name});
  if (r.integer() < 0) return;
  ++stats.consumers_removed;
  spdlog::info("Removed consumer {} from group {}: nothing pending and idle for over {} h", name,
               cfg_.group, kRemoveIdleMs / 3600000);
}

}  // namespace p35
