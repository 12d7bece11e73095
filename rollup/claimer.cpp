// Taking over other consumers' idle pending entries against their owner's commit marker.
#include "claimer.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "commit_script.hpp"
#include "fields.hpp"
#include "keys.hpp"
#include "owner.hpp"

namespace p35 {

namespace {

constexpr int kClaimBatch = 1000;
// A consumer with nothing pending is removed only after this long without activity, far beyond
// any restart, so a live consumer is never removed for a pause.
constexpr long long kRemoveIdleMs = 24LL * 3600 * 1000;

// XACK and the matching status counter in one step: XACK returns how many IDs were still
// pending, so two hosts acking the same IDs count each once. All or nothing: an ACL user without
// HINCRBY, or a status field HINCRBY cannot add to, is refused before the XACK, not between the
// two. KEYS: stream, status, the owner's marker, the registry; ARGV: group, status field, owner
// ('' for entries judged by the owner's marker), IDs. With an owner, this is the first version's
// path and it acks only while the owner still has no marker and never registered (-1: a marker
// appeared, -2: registered, so its marker was lost: nothing acked).
const char* const kAckScript = R"LUA(#!lua
if redis.acl_check_cmd and not redis.acl_check_cmd('HINCRBY', KEYS[2], ARGV[2], '1') then
  return redis.error_reply("NOPERM this user has no permissions to run the 'hincrby' command")
end
local v = redis.call('HGET', KEYS[2], ARGV[2])
if v and not ((v == '0' or string.match(v, '^-?[1-9]%d*$')) and #v <= 18) then
  return redis.error_reply('P35BADFIELD ' .. KEYS[2] .. ' field ' .. ARGV[2] .. ' holds "' .. v ..
                           '", not an integer HINCRBY can add to: nothing acked')
end
if ARGV[3] ~= '' then
  if redis.call('GET', KEYS[3]) then return -1 end
  if redis.call('HGET', KEYS[4], ARGV[3]) then return -2 end
end
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 4))
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
    if (e.is("NOGROUP") || e.is("ERR no such key"))
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
    if (m.is_nil()) {  // the first version, if it never registered: it counted before acking
      const long long n = ack(conn, ids, "legacy_acked_total", owner);
      if (n == -2) return report_lost_marker(owner, ids.size());
      if (n < 0) return;  // its marker appeared meanwhile: judged by it next round
      lost_marker_logged_.erase(owner);
      stats.legacy_acked += static_cast<uint64_t>(n);
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
      stats.acked_only += static_cast<uint64_t>(ack(conn, below, "claim_acked_total"));
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

// Reads the owner's entries above `prev` and counts them into `hashes` as rollup counts its own:
// the minute buckets and unknown hashes, the minute versions and the status totals.
Claimer::Counted Claimer::count_entries(Connection& conn, StreamId prev,
                                        const std::vector<StreamId>& ids, ClaimHashes& hashes) {
  const std::string& p = cfg_.key_prefix;
  Counted c;
  std::set<int64_t> minutes;
  for (StreamId id : ids)
    if (id > prev) conn.append({"XRANGE", cfg_.stream, id.str(), id.str()});
  for (StreamId id : ids) {
    if (id <= prev) continue;
    const Reply r = conn.read_reply();
    if (r.is_error()) throw error_from_reply("read claimed entries", r.str(), conn.options().username);
    if (r.size() == 0) {  // trimmed away (or deleted) since it was delivered
      ++c.trimmed;
      continue;
    }
    const redisReply* fv = r.element(0)->element[1];
    std::vector<Field> entry;
    for (size_t k = 0; k + 1 < fv->elements; k += 2)
      entry.push_back({reply_str(fv->element[k]), reply_str(fv->element[k + 1])});
    normalize(entry, static_cast<int64_t>(id.ms), norm_);
    auto& b = hashes[keys::bucket(p, norm_.minute)];
    b[fields::decision_of(norm_).str()] += 1;
    b[fields::reason(norm_.reason).str()] += 1;
    if (cfg_.symbol_breakdown && !norm_.symbol.empty())
      b[fields::symbol_reason(norm_.symbol, norm_.reason).str()] += 1;
    if (norm_.decision == Decision::Unknown)
      hashes[keys::unknown_minute(p, norm_.minute)][fields::unknown_member_of(norm_).str()] += 1;
    minutes.insert(norm_.minute);
    ++c.counted;
  }
  for (const int64_t m : minutes) hashes[keys::bucket_versions(p)][minute_key(m)] += 1;
  auto& st = hashes[keys::status(p)];
  if (c.counted > 0) st[fields::total(shm::kProcessed).str()] += static_cast<long long>(c.counted);
  if (c.trimmed > 0) st[fields::total(shm::kTrimmed).str()] += static_cast<long long>(c.trimmed);
  st["claimed_total"] += static_cast<long long>(c.counted + c.trimmed);
  return c;
}

// Count the owner's entries above its marker and move the marker over them with the same
// compare-and-set commit rollup uses: two hosts claiming the same entries count them once.
bool Claimer::commit_counted(Connection& conn, const std::string& owner, StreamId prev,
                             StreamId next, const std::vector<StreamId>& ids, ClaimStats& stats) {
  const std::string& p = cfg_.key_prefix;
  ClaimHashes hashes;
  const Counted c = count_entries(conn, prev, ids, hashes);
  std::vector<FieldList> lists(hashes.size());
  std::vector<CommitHash> commit;
  for (const auto& [key, counts] : hashes) {
    FieldList& list = lists[commit.size()];
    for (const auto& [f, n] : counts) list.add({f}, n);
    const bool keep = key == keys::status(p) || key == keys::bucket_versions(p);
    commit.push_back({key, keep ? 0LL : static_cast<long long>(cfg_.bucket_ttl_s), &list});
  }
  // The owner's ownership key with an empty token: the claim commits only while nobody holds the
  // name (a live owner, even one whose entries sit idle, keeps them; a dead one's key expired).
  const std::string marker_key = keys::marker(p, owner), owner_key = keys::owner(p, owner);
  CommandArgs a;
  build_commit_args(a, {sha_, marker_key, owner_key, cfg_.stream, cfg_.group, owner, "", prev, next},
                    commit);
  try {
    conn.command(a);
  } catch (const RedisError& e) {
    if (claim_refused(e, owner, ids.size(), stats)) return false;
    throw;
  }
  stats.counted += c.counted;
  stats.trimmed += c.trimmed;
  return true;
}

// Whether the commit script refused the claim for a reason that ends this owner's turn (logged,
// nothing counted); anything else goes to the caller's outage handling.
bool Claimer::claim_refused(const RedisError& e, const std::string& owner, size_t pending,
                            ClaimStats& stats) {
  const std::string& said = e.server_message();
  if (e.is("P35CONFLICT") || e.is("P35UNHELD")) {
    ++stats.conflicts;
    spdlog::info("Claim of {}'s entries lost the race ({}); nothing counted", owner, said);
    return true;
  }
  // Refused whole (the commit script checks before it writes): nothing counted, nothing acked,
  // and the rest of the round (our own commits) goes on; the next round tries again.
  if (e.is("P35NOMARKER")) {
    report_lost_marker(owner, pending);
    return true;
  }
  if (e.is("P35BADFIELD")) {
    spdlog::error("Failed to count {}'s idle entries: {} (nothing counted or acked; retried next "
                  "round; fix: HDEL the field named, README \"When Redis fails\")", owner,
                  said.substr(12));
    return true;
  }
  if (e.is(kFencedError)) {
    spdlog::debug("Not claiming {}'s idle entries: a running instance holds that name ({})",
                  owner, said);
    return true;
  }
  if (e.is("NOSCRIPT")) sha_.clear();
  return false;
}

long long Claimer::ack(Connection& conn, const std::vector<StreamId>& ids, const char* status_field,
                       const std::string& legacy_owner) {
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
  CommandArgs a{"EVAL", kAckScript, "4", cfg_.stream, keys::status(cfg_.key_prefix),
                keys::marker(cfg_.key_prefix, legacy_owner), keys::consumers(cfg_.key_prefix),
                cfg_.group, status_field, legacy_owner};
  for (StreamId id : ids) a.add(id.str());
  return conn.command(a).integer();
}

// A consumer of ours (registered) without a marker: Redis lost the marker (DEL, FLUSHDB of part
// of the data, eviction). Its entries may be counted or not; only its own stages (from their
// segment) or an operator can say, so they are left pending. Logged once per owner and episode.
void Claimer::report_lost_marker(const std::string& owner, size_t pending) {
  if (!lost_marker_logged_.insert(owner).second) return;
  spdlog::error("Consumer {} registered in {} but its commit marker {} is missing (Redis lost it): "
                "its {} idle pending entries are neither counted nor acked until its stages "
                "restore the marker or an operator sets it (README \"When Redis fails\")", owner,
                keys::consumers(cfg_.key_prefix), keys::marker(cfg_.key_prefix, owner), pending);
}

void Claimer::remove_idle_consumer(Connection& conn, const std::string& name, ClaimStats& stats) {
  const Reply r = conn.command({"EVAL", kRemoveConsumerScript, "1", cfg_.stream, cfg_.group, name});
  if (r.integer() < 0) return;
  ++stats.consumers_removed;
  spdlog::info("Removed consumer {} from group {}: nothing pending and idle for over {} h", name,
               cfg_.group, kRemoveIdleMs / 3600000);
}

}  // namespace p35
