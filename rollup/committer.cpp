// Rollup's exactly-once commit: seqlock copy, pending record, Lua compare-and-set, side flip.
#include "committer.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <map>

#include "daemon.hpp"
#include "fields.hpp"
#include "futex.hpp"
#include "keys.hpp"
#include "marker.hpp"
#include "owner.hpp"
#include "rules.hpp"

namespace p35 {

namespace {

constexpr int kMaxSeqlockTries = 1000;
static_assert(shm::kDecisionSlots == kKnownDecisionCount, "a slot counts each known decision");

void copy_words(const std::atomic<uint64_t>* src, std::atomic<uint64_t>* dst, uint64_t words) {
  for (uint64_t i = 0; i < words; ++i)
    dst[i].store(src[i].load(std::memory_order_relaxed), std::memory_order_relaxed);
}

template <typename T>
std::atomic<uint64_t>* words_of(T* p) {
  return reinterpret_cast<std::atomic<uint64_t>*>(p);
}

constexpr uint64_t kHeaderWords = sizeof(shm::SlotHeader) / 8;
constexpr uint64_t kChunkWords = sizeof(shm::TableEntry) * shm::kChunkEntries / 8;

uint64_t tag_of(const shm::SlotHeader& s) {
  return (s.gen.load(std::memory_order_relaxed) << 32) |
         (s.version.load(std::memory_order_relaxed) & 0xffffffffULL);
}

uint64_t count(const std::atomic<uint64_t>& w) { return w.load(std::memory_order_relaxed); }

// The entries of one table of a slot's new shadow side whose counts differ from the committed
// side's: emit(key, delta) for each. Only chunks written after the committed side's version can
// differ (chunk_version, see shm_layout.hpp); another generation or minute (same == false) is
// compared against nothing.
struct TableDiff {
  const std::atomic<uint64_t>* chunk_versions;  // of the new side
  const shm::TableEntry* first;                 // the new side's first table entry (of all three)
  bool same;                                    // the committed side holds this slot's minute
  uint64_t base;                                // the committed side's version when `same`

  template <class Emit>
  void operator()(const shm::TableEntry* n, const shm::TableEntry* o, uint32_t cap, Emit&& emit) const {
    const auto at = static_cast<uint64_t>(n - first);  // first entry of this table, overall
    for (uint32_t j = 0; j < cap; ++j) {
      if (same && (j == 0 || (at + j) % shm::kChunkEntries == 0) &&
          count(chunk_versions[(at + j) / shm::kChunkEntries]) <= base) {
        // Skip to the end of this unchanged chunk.
        j = static_cast<uint32_t>(((at + j) / shm::kChunkEntries + 1) * shm::kChunkEntries - at) - 1;
        continue;
      }
      const uint64_t k = count(n[j].key);
      if (k == 0) continue;
      const uint64_t oc = same && count(o[j].key) == k ? count(o[j].count) : 0;
      const auto d = static_cast<int64_t>(count(n[j].count) - oc);
      if (d != 0) emit(k, d);
    }
  }
};

}  // namespace

Committer::Committer(const Config& cfg, Segment& seg)
    : cfg_(cfg), seg_(seg), marker_key_(keys::marker(cfg.key_prefix, cfg.consumer)),
      owner_key_(keys::owner(cfg.key_prefix, cfg.consumer)), token_(seg.instance_token()),
      status_key_(keys::status(cfg.key_prefix)) {}

Committer::Resolution Committer::start(Connection& conn, StreamId& marker) {
  awaiting_replicas_ = false;  // a new connection: the pending record is resolved again below
  const Reply sha = conn.command({"SCRIPT", "LOAD", kCommitScript});
  sha_ = std::string(sha.str());
  const std::optional<StreamId> found = checked_marker(conn, cfg_, seg_, "rollup", marker_missing_logged_);
  if (!found) return Resolution::MarkerMissing;
  marker = *found;
  repair();  // no-op when run() did it already
  const Resolution res = resolve_pending(conn, marker);
  if (res == Resolution::Conflict || awaiting_replicas_) return res;
  return check_committed(marker, res);
}

// The commit in flight when the previous rollup stopped, against the marker Redis holds now.
Committer::Resolution Committer::resolve_pending(Connection& conn, StreamId marker) {
  auto& rc = seg_.rollup();
  if (rc.pending_state.load(std::memory_order_acquire) == 0) return Resolution::NoPending;
  const StreamId prev = load_id(rc.pending_prev), next = load_id(rc.pending_next);
  if (marker == next && cfg_.wait_replicas > 0) {
    // It happened, but maybe no replica has it. WAIT counts only this connection's writes:
    // write the marker again with its own value, then let commit() wait for the replicas
    // before the commit is published (and acked).
    conn.command({"SET", marker_key_, marker.str(), "XX"});
    awaiting_replicas_ = true;
    awaiting_since_ms_ = now_mono_ms();
    wait_logged_ = false;
    return Resolution::Applied;
  }
  if (marker == next) {
    apply_pending();  // the commit happened before we lost track of it
    return Resolution::Applied;
  }
  if (marker == prev && apply_begun()) {
    // Redis took the commit (apply_pending runs only after the script returned), some slots
    // already stand for it, and now the marker says it never happened: Redis lost it.
    conflict_ = "pending commit " + prev.str() + " -> " + next.str() +
                " was confirmed by Redis and partly applied here, but the marker is back at " +
                marker.str() + " (Redis lost data)";
    return Resolution::Conflict;
  }
  if (marker == prev) {
    discard_pending();  // it never happened; the counts are committed again from scratch
    return Resolution::Discarded;
  }
  conflict_ = "pending commit " + prev.str() + " -> " + next.str() + " but the marker is " +
              marker.str();
  return Resolution::Conflict;
}

// What this segment committed must be the marker (`res` when it is).
Committer::Resolution Committer::check_committed(StreamId marker, Resolution res) {
  auto& rc = seg_.rollup();
  StreamId ours = committed();
  if (ours.is_zero() && rc.commit_count.load(std::memory_order_relaxed) == 0) {
    // Fresh segment: adopt exactly the marker ingest started from (its counts stand on it), never
    // a newer one read here: entries between the two would be counted by ingest and committed on
    // top of another host's claim of them.
    auto& ic = seg_.ingest();
    if (ic.initialised_from_marker.load(std::memory_order_acquire) == 0) return Resolution::NotReady;
    ours = load_id(ic.init_marker);
    publish_id(rc.committed, ours);
    bell_ring(ic.ackd_bell);
  }
  if (ours == marker) return res;
  conflict_ = "this segment committed up to " + ours.str() + " but the marker in Redis is " +
              marker.str();
  return Resolution::Conflict;
}

// A predecessor killed inside publish_id(committed) was publishing either a commit's next marker
// (apply_pending, after Redis took the commit, pending_state still 1) or, on a fresh segment, the
// marker ingest started from: SeqId::next holds that value whole, ms and seq may be torn.
// Republishing it is exact without Redis; start() then resolves the pending commit as usual (the
// marker equals its next unless Redis lost the commit, which start() reports as a conflict).
std::optional<StreamId> Committer::repair() {
  const std::optional<StreamId> repaired = repair_id(seg_.rollup().committed);
  if (repaired) bell_ring(seg_.ingest().ackd_bell);  // ackd could not read it until now
  return repaired;
}

bool Committer::read_consistent(CommitPlan& plan, uint64_t* retries) {
  auto& ic = seg_.ingest();
  auto& rc = seg_.rollup();
  const uint32_t tside = 1 - static_cast<uint32_t>(rc.totals_side.load(std::memory_order_relaxed));
  for (int attempt = 0; attempt < kMaxSeqlockTries; ++attempt) {
    const uint64_t s1 = ic.seqlock.load(std::memory_order_acquire);
    if ((s1 & 1) != 0) {  // a batch is being applied (or ingest died applying it and restarts)
      usleep(50);
      continue;
    }
    copy_changed(plan, tside);
    std::atomic_thread_fence(std::memory_order_acquire);  // the copies before the re-check
    if (ic.seqlock.load(std::memory_order_relaxed) == s1) {
      publish_headers(plan);
      plan.totals_side = tside;
      return true;
    }
    if (retries != nullptr) ++*retries;
  }
  return false;
}

// One try of read_consistent(): the totals into side `tside` and every slot changed since its
// last commit into its spare shadow (headers kept aside in the plan).
void Committer::copy_changed(CommitPlan& plan, uint32_t tside) {
  auto& ic = seg_.ingest();
  auto& rc = seg_.rollup();
  plan.slots.clear();
  plan.headers.clear();
  plan.next = load_id(ic.counted_id);
  for (uint32_t t = 0; t < shm::kTotalSlots; ++t)
    rc.committed_totals[tside][t].store(count(ic.totals[t]), std::memory_order_relaxed);
  const uint32_t n = seg_.slot_count();
  for (uint32_t i = 0; i < n; ++i) {
    auto& live = seg_.slot(i);
    if (live.minute.load(std::memory_order_relaxed) == shm::kEmptyMinute) continue;
    if (tag_of(live) == seg_.slot_meta()[i].committed_tag.load(std::memory_order_relaxed)) continue;
    const auto side = static_cast<uint32_t>(seg_.slot_meta()[i].side.load(std::memory_order_relaxed));
    copy_slot(live, seg_.shadow(1 - side, i), plan.headers.emplace_back().data());
    plan.slots.push_back(i);
  }
}

// The copies are whole: now their headers (with the version they stand for) may say so.
void Committer::publish_headers(const CommitPlan& plan) {
  for (size_t k = 0; k < plan.slots.size(); ++k) {
    const uint32_t i = plan.slots[k];
    const auto side = static_cast<uint32_t>(seg_.slot_meta()[i].side.load(std::memory_order_relaxed));
    std::atomic<uint64_t>* dst = words_of(&seg_.shadow(1 - side, i));
    for (uint64_t w = 0; w < kHeaderWords; ++w)
      dst[w].store(plan.headers[k][w], std::memory_order_relaxed);
  }
}

// Copies live slot `live` into the spare shadow `dst`, whose header still describes what it holds
// (it is written only after a whole, consistent copy: read_consistent): the same generation of the
// same minute at some older version V. Only the chunks written after V differ (chunk_version > V),
// so only they are copied; any other shadow gets the whole tables. The chunk versions are always
// copied whole (they are small and the diff reads them), the header goes to `header`.
void Committer::copy_slot(shm::SlotHeader& live, shm::SlotHeader& dst, uint64_t* header) {
  const std::atomic<uint64_t>* lh = words_of(&live);
  for (uint64_t w = 0; w < kHeaderWords; ++w) header[w] = lh[w].load(std::memory_order_relaxed);
  const uint32_t chunks = seg_.chunk_count();
  const std::atomic<uint64_t>* lcv = seg_.chunk_versions(live);
  std::atomic<uint64_t>* dcv = seg_.chunk_versions(dst);
  const uint64_t words = 2 * (uint64_t{seg_.caps().reason_cap} + seg_.caps().symbol_reason_cap +
                              seg_.caps().unknown_cap);
  const auto* from = words_of(seg_.table_entries(live));
  auto* to = words_of(seg_.table_entries(dst));
  // Torn reads of live here are caught by the seqlock re-check, which retries the whole copy.
  const bool same = dst.gen.load(std::memory_order_relaxed) == live.gen.load(std::memory_order_relaxed) &&
                    dst.minute.load(std::memory_order_relaxed) == live.minute.load(std::memory_order_relaxed);
  if (!same) {
    copy_words(from, to, words);
  } else {
    const uint64_t base = dst.version.load(std::memory_order_relaxed);
    for (uint32_t c = 0; c < chunks; ++c) {
      if (lcv[c].load(std::memory_order_relaxed) <= base) continue;
      const uint64_t first = uint64_t{c} * kChunkWords;
      copy_words(from + first, to + first, std::min(kChunkWords, words - first));
    }
  }
  copy_words(lcv, dcv, chunks);
}

void Committer::add_slot_fields(uint32_t i, FieldList& bucket, FieldList& unknown) {
  const auto side = static_cast<uint32_t>(seg_.slot_meta()[i].side.load(std::memory_order_relaxed));
  auto& nu = seg_.shadow(1 - side, i);
  auto& old = seg_.shadow(side, i);
  // The committed side counts only if it holds the same generation of the same minute.
  const bool same = old.gen.load() == nu.gen.load() && old.minute.load() == nu.minute.load();
  const auto delta = [&](const std::atomic<uint64_t>& n, const std::atomic<uint64_t>& o) {
    return static_cast<int64_t>(count(n) - (same ? count(o) : 0));
  };
  for (uint32_t d = 0; d < shm::kDecisionSlots; ++d)
    bucket.add(fields::decision(static_cast<Decision>(d)), delta(nu.decisions[d], old.decisions[d]));
  const TableDiff table{seg_.chunk_versions(nu), seg_.table_entries(nu), same,
                        same ? old.version.load() : 0};
  const auto str = [&](uint64_t id1) { return seg_.string_at(static_cast<uint32_t>(id1 - 1)); };
  table(seg_.reasons(nu), seg_.reasons(old), seg_.caps().reason_cap,
        [&](uint64_t k, int64_t d) { bucket.add(fields::reason(str(k)), d); });
  bucket.add(fields::reason_overflow(), delta(nu.overflow_reason, old.overflow_reason));
  table(seg_.symbol_reasons(nu), seg_.symbol_reasons(old), seg_.caps().symbol_reason_cap,
        [&](uint64_t k, int64_t d) { bucket.add(fields::symbol_reason(str(k >> 32), str(k & 0xffffffffULL)), d); });
  bucket.add(fields::symbol_reason_overflow(), delta(nu.overflow_symbol_reason, old.overflow_symbol_reason));
  table(seg_.unknowns(nu), seg_.unknowns(old), seg_.caps().unknown_cap, [&](uint64_t k, int64_t d) {
    const bool from_decision_field = (k >> 32) != 0;
    const std::string_view value = str(k & 0xffffffffULL);
    bucket.add(fields::decision(Decision::Unknown, from_decision_field, value), d);
    unknown.add(fields::unknown_member(from_decision_field, value), d);
  });
  const int64_t uo = delta(nu.overflow_unknown, old.overflow_unknown);
  bucket.add(fields::unknown_decision_overflow(), uo);
  unknown.add(fields::unknown_member_overflow(), uo);
}

void Committer::build_args(CommitPlan& plan) {
  plan.minutes.resize(plan.slots.size());
  size_t used = 0;
  for (uint32_t i : plan.slots) {
    MinuteDelta& md = plan.minutes[used++];
    md.minute = seg_.shadow(1 - static_cast<uint32_t>(seg_.slot_meta()[i].side.load()), i).minute.load();
    md.bucket.clear();
    md.unknown.clear();
    add_slot_fields(i, md.bucket, md.unknown);
  }
  FieldList& totals = totals_;  // reused: its buffers keep their capacity between commits
  totals.clear();
  auto& rc = seg_.rollup();
  const uint32_t cur = static_cast<uint32_t>(rc.totals_side.load());
  for (uint32_t t = 0; t < shm::kTotalCount; ++t)
    totals.add(fields::total(static_cast<shm::Total>(t)),
               static_cast<int64_t>(count(rc.committed_totals[plan.totals_side][t]) -
                                    count(rc.committed_totals[cur][t])));
  // Bump each touched minute's version in the same commit, so the snapshot writer (on whichever
  // host holds the lease) re-reads exactly the buckets that changed (and knows which it changed).
  versions_.clear();
  for (const auto& md : plan.minutes) versions_.add({minute_key(md.minute)}, 1);
  // Per minute its bucket and unknown hash, then the minute versions and the status totals.
  const auto ttl = static_cast<long long>(cfg_.bucket_ttl_s);
  hashes_.clear();
  for (const auto& md : plan.minutes) {  // no key string for a hash without fields
    if (!md.bucket.empty()) hashes_.push_back({keys::bucket(cfg_.key_prefix, md.minute), ttl, &md.bucket});
    if (!md.unknown.empty())
      hashes_.push_back({keys::unknown_minute(cfg_.key_prefix, md.minute), ttl, &md.unknown});
  }
  hashes_.push_back({keys::bucket_versions(cfg_.key_prefix), 0, &versions_});
  hashes_.push_back({status_key_, 0, &totals});
  plan.fields = build_commit_args(plan.args,
                                  {sha_, marker_key_, owner_key_, cfg_.stream, cfg_.group,
                                   cfg_.consumer, token_, plan.prev, plan.next},
                                  hashes_);
}

void Committer::publish_pending(const CommitPlan& plan) {
  auto& rc = seg_.rollup();
  store_id(rc.pending_prev, plan.prev);
  store_id(rc.pending_next, plan.next);
  for (size_t k = 0; k < plan.slots.size(); ++k) {
    const uint32_t i = plan.slots[k];
    const auto side = static_cast<uint32_t>(seg_.slot_meta()[i].side.load(std::memory_order_relaxed));
    seg_.pending_slots()[k].slot.store(i, std::memory_order_relaxed);
    seg_.pending_slots()[k].side.store(1 - side, std::memory_order_relaxed);
  }
  rc.pending_slot_count.store(plan.slots.size(), std::memory_order_relaxed);
  rc.pending_totals_side.store(plan.totals_side, std::memory_order_relaxed);
  rc.pending_state.store(1, std::memory_order_release);  // published: a restart resolves it
}

// Make the pending commit's shadow sides current. Absolute values: repeating it is harmless.
void Committer::apply_pending() {
  auto& rc = seg_.rollup();
  const uint64_t n = rc.pending_slot_count.load(std::memory_order_relaxed);
  for (uint64_t k = 0; k < n; ++k) {
    const uint32_t i = seg_.pending_slots()[k].slot.load(std::memory_order_relaxed);
    const uint32_t side = seg_.pending_slots()[k].side.load(std::memory_order_relaxed);
    auto& meta = seg_.slot_meta()[i];
    meta.side.store(side, std::memory_order_relaxed);
    // Ingest may recycle the slot once it sees this tag: publish it last, with release.
    meta.committed_tag.store(tag_of(seg_.shadow(side, i)), std::memory_order_release);
  }
  rc.totals_side.store(rc.pending_totals_side.load(std::memory_order_relaxed),
                       std::memory_order_release);
  publish_id(rc.committed, load_id(rc.pending_next));
  const uint64_t commits = rc.commit_count.fetch_add(1, std::memory_order_relaxed) + 1;
  rc.last_commit_unix_ms.store(now_unix_ms(), std::memory_order_relaxed);
  rc.pending_state.store(0, std::memory_order_release);
  // Ackd says from which commit on it wants its bell (AckdControl::bell_at_commit); ingest waiting
  // for ID-log space gets its acks at once. Pairs with the fence in Ackd::run(): either ackd sees
  // this commit before it sleeps, or we see the commit it asked for.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (commits >= seg_.ackd().bell_at_commit.load(std::memory_order_relaxed) ||
      seg_.stage(shm::StageId::Ingest).state.load(std::memory_order_relaxed) ==
          static_cast<uint32_t>(shm::StageState::Backpressure))
    bell_ring(seg_.ingest().ackd_bell);
  bell_ring_if_waiting(seg_.ingest().ingest_bell, seg_.stage(shm::StageId::Ingest).state,
                       static_cast<uint32_t>(shm::StageState::Backpressure));
}

// Whether apply_pending() of the pending commit had begun: publish_pending() records for each
// slot the side opposite its current one (and likewise for the totals), so a slot or the totals
// already on their recorded side were flipped by apply_pending().
bool Committer::apply_begun() const {
  auto& rc = seg_.rollup();
  if (rc.totals_side.load(std::memory_order_relaxed) ==
      rc.pending_totals_side.load(std::memory_order_relaxed))
    return true;
  const uint64_t n = rc.pending_slot_count.load(std::memory_order_relaxed);
  for (uint64_t k = 0; k < n; ++k) {
    const uint32_t i = seg_.pending_slots()[k].slot.load(std::memory_order_relaxed);
    const uint32_t side = seg_.pending_slots()[k].side.load(std::memory_order_relaxed);
    if (seg_.slot_meta()[i].side.load(std::memory_order_relaxed) == side) return true;
  }
  return false;
}

void Committer::discard_pending() {
  seg_.rollup().pending_state.store(0, std::memory_order_release);
}

Reply Committer::run_script(Connection& conn, const CommandArgs& args) {
  try {
    return conn.command(args);
  } catch (const RedisError& e) {
    if (!e.is("NOSCRIPT")) throw;
  }
  // Redis restarted or SCRIPT FLUSH: load again and send the very same commit.
  const Reply sha = conn.command({"SCRIPT", "LOAD", kCommitScript});
  if (sha.str() != sha_) throw RedisError(RedisErrorKind::Protocol, "script SHA changed on reload");
  return conn.command(args);
}

// One WAIT for the replicas; publishes the commit when enough hold it. A shortfall is logged once
// per commit (at warning) and its end once; meanwhile the rollup loop keeps calling.
bool Committer::replicas_hold_commit(Connection& conn) {
  const Reply r = conn.command(
      CommandArgs{"WAIT"}.add(cfg_.wait_replicas).add(static_cast<long long>(cfg_.wait_timeout_ms)));
  const long long got = r.integer();
  const int64_t waited_ms = now_mono_ms() - awaiting_since_ms_;
  if (got < cfg_.wait_replicas) {
    if (!wait_logged_)
      spdlog::warn("Commit up to {} is held by {} of the {} replicas P35_WAIT_REPLICAS asks for "
                   "after {} ms; its entries are not acked until they hold it, waiting",
                   load_id(seg_.rollup().pending_next).str(), got, cfg_.wait_replicas, waited_ms);
    wait_logged_ = true;
    return false;
  }
  if (wait_logged_)
    spdlog::info("Commit up to {} is held by {} replicas after {} ms; acking again",
                 load_id(seg_.rollup().pending_next).str(), got, waited_ms);
  awaiting_replicas_ = false;
  apply_pending();
  return true;
}

Committer::Outcome Committer::commit(Connection& conn, uint64_t* retries) {
  if (awaiting_replicas_)
    return replicas_hold_commit(conn) ? Outcome::Committed : Outcome::AwaitingReplicas;
  auto& plan = plan_;
  plan.prev = committed();
  if (!read_consistent(plan, retries)) return Outcome::NothingNew;  // ingest too busy: next round
  if (plan.next <= plan.prev && plan.slots.empty()) return Outcome::NothingNew;
  build_args(plan);
  publish_pending(plan);
  try {
    run_script(conn, plan.args);
  } catch (const RedisError& e) {
    if (e.kind() == RedisErrorKind::Reply) return refused(e, plan.next);
    throw;  // connection lost: outcome unknown until start() reads the marker again
  }
  return accepted(conn, plan.next);
}

// The commit script answered an error: it wrote nothing (see kCommitScript). Rethrows what the
// stage loop handles as an outage.
Committer::Outcome Committer::refused(const RedisError& e, StreamId next) {
  // P35UNHELD: Redis lacks the reads this commit counts (it came back older, or a lagging
  // replica was promoted): like a moved marker, the segment's uncommitted counts are dropped.
  if (e.is("P35CONFLICT") || e.is("P35UNHELD")) {
    conflict_ = e.server_message();
    discard_pending();
    return Outcome::Conflict;
  }
  if (e.is(kFencedError)) {  // another instance holds our name
    conflict_ = e.server_message();
    discard_pending();
    return Outcome::Fenced;
  }
  if (e.is("P35BADFIELD")) {
    discard_pending();
    report_refused(e.server_message(), next);
    return Outcome::Refused;
  }
  // P35NOMARKER: thrown on; start() after the reconnect restores the marker from the segment.
  // OOM, READONLY, WRONGTYPE...: the script wrote nothing (see kCommitScript); retry later.
  discard_pending();
  throw e;
}

// Redis took the commit: publish it, or first wait for the replicas (P35_WAIT_REPLICAS).
Committer::Outcome Committer::accepted(Connection& conn, StreamId next) {
  if (cfg_.wait_replicas > 0) {
    awaiting_replicas_ = true;
    awaiting_since_ms_ = now_mono_ms();
    wait_logged_ = false;
    return replicas_hold_commit(conn) ? Outcome::Committed : Outcome::AwaitingReplicas;
  }
  apply_pending();
  if (!refused_.empty()) {
    spdlog::info("Commit up to {} accepted again after the refusal ({})", next.str(), refused_);
    refused_.clear();
  }
  return Outcome::Committed;
}

// A field HINCRBY cannot add to refuses the whole commit: logged once per distinct refusal (the
// caller retries with backoff), with the operator's fix.
void Committer::report_refused(const std::string& said, StreamId next) {
  if (said == refused_) return;
  refused_ = said;
  spdlog::error("Failed to commit up to {}: {} (Redis refused the whole commit; counts are kept, "
                "nothing is acked, retrying with backoff). Fix: HDEL the field named (its count is "
                "lost unless you set it to the right integer), README \"When Redis fails\"",
                next.str(), said.substr(12));
}

}  // namespace p35
