// Rollup's exactly-once commit (DESIGN §5.2): a consistent copy of ingest's counts into the spare
// shadow side, the pending-commit record, the Lua compare-and-set on the marker, and the flip of
// the shadow sides once Redis confirmed it; plus recovery of a pending commit after a crash.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "commit_script.hpp"
#include "config.hpp"
#include "redis.hpp"
#include "shm.hpp"

namespace p35 {

struct CommitPlan {
  StreamId prev;
  StreamId next;
  std::vector<uint32_t> slots;  // dirty slots, copied into the spare side
  // Their headers, written to the spare side once the copy is whole and consistent.
  std::vector<std::array<uint64_t, sizeof(shm::SlotHeader) / 8>> headers;
  uint32_t totals_side = 0;     // the side holding the new committed totals
  uint64_t fields = 0;          // HINCRBYs in the script
  std::vector<MinuteDelta> minutes;  // per dirty slot (a minute's version is bumped once each)
  CommandArgs args;             // EVALSHA <sha> <numkeys> keys... argv...
};

class Committer {
 public:
  // Refused: Redis refused the whole commit (a field HINCRBY cannot add to); retry with backoff.
  // Fenced: the ownership key does not hold our instance token (another instance has the name).
  // AwaitingReplicas: the commit reached the primary but not yet P35_WAIT_REPLICAS replicas; it is
  // not published to the segment (so ackd acks none of its entries) until a later commit() call
  // sees enough replicas hold it.
  enum class Outcome { Committed, NothingNew, Conflict, Refused, Fenced, AwaitingReplicas };
  // MarkerMissing: our registered marker is gone and the segment cannot restore it: wait.
  enum class Resolution { NoPending, Applied, Discarded, Conflict, NotReady, MarkerMissing };

  Committer(const Config& cfg, Segment& seg);

  // Marker set-up after (re)connecting: creates it (SET NX 0-0), loads the script, resolves a
  // pending commit, and adopts the marker for a fresh segment. Returns the marker's value.
  Resolution start(Connection& conn, StreamId& marker);
  // One commit of everything ingest counted since the last one. Throws RedisError when the outcome
  // is unknown (connection lost): call start() again after reconnecting to resolve it.
  Outcome commit(Connection& conn, uint64_t* retries = nullptr);
  // At start, before anything reads `committed`: republishes it if a predecessor died inside
  // publish_id() (returns the value then). start() calls it too.
  std::optional<StreamId> repair();
  StreamId committed() const { return own_id(seg_.rollup().committed); }
  const std::string& conflict_text() const { return conflict_; }
  bool awaiting_replicas() const { return awaiting_replicas_; }
  // The deltas of the last commit that returned Committed (for the snapshot writer's cache).
  const std::vector<MinuteDelta>& last_commit() const { return plan_.minutes; }

 private:
  Resolution resolve_pending(Connection& conn, StreamId marker);  // start()'s pending commit
  Resolution check_committed(StreamId marker, Resolution res);     // start()'s last check
  bool read_consistent(CommitPlan& plan, uint64_t* retries);
  void copy_changed(CommitPlan& plan, uint32_t tside);  // one try of read_consistent()
  void publish_headers(const CommitPlan& plan);
  void build_args(CommitPlan& plan);
  void copy_slot(shm::SlotHeader& live, shm::SlotHeader& dst, uint64_t* header);
  void add_slot_fields(uint32_t slot, FieldList& bucket, FieldList& unknown);
  void publish_pending(const CommitPlan& plan);
  void apply_pending();
  void discard_pending();
  bool apply_begun() const;
  Reply run_script(Connection& conn, const CommandArgs& args);
  void report_refused(const std::string& said, StreamId next);
  Outcome refused(const RedisError& e, StreamId next);  // commit()'s error reply
  Outcome accepted(Connection& conn, StreamId next);     // commit()'s success
  bool replicas_hold_commit(Connection& conn);

  // WAIT (P35_WAIT_REPLICAS) has not yet confirmed the commit the pending record describes.
  bool awaiting_replicas_ = false;
  int64_t awaiting_since_ms_ = 0;
  bool wait_logged_ = false;  // the shortfall of the awaited commit was logged

  const Config& cfg_;
  Segment& seg_;
  std::string marker_key_;
  std::string owner_key_;  // the consumer name's ownership key, checked by the commit script
  std::string token_;      // our instance token (the segment's)
  std::string status_key_;
  std::string sha_;
  FieldList totals_;    // the status totals of the commit being built (reused)
  FieldList versions_;  // its minute versions (reused)
  std::vector<CommitHash> hashes_;
  std::string conflict_;
  std::string refused_;  // the last refusal logged (P35BADFIELD ...), until a commit succeeds
  bool marker_missing_logged_ = false;
  CommitPlan plan_;
};

}  // namespace p35
