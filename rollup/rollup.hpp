// The rollup stage: commits ingest's counts to Redis exactly once (group commit: as soon as the
// previous commit returned and there is something new), then keeps the snapshots and status fresh.
#pragma once

#include "claimer.hpp"
#include "committer.hpp"
#include "config.hpp"
#include "daemon.hpp"
#include "owner.hpp"
#include "redis.hpp"
#include "shm.hpp"
#include "snapshots.hpp"

namespace p35 {

class Rollup {
 public:
  Rollup(const Config& cfg, Segment& seg);
  int run();

 private:
  bool ensure_connected();  // false: stopping
  bool step();              // one commit and whatever is due; false on a conflict
  void check_eviction_policy();
  void finish();            // SIGTERM: last commit and final snapshots
  void claim_if_due();      // take over other consumers' idle pending entries
  // Our marker was moved by someone else: drop this segment so that all three stages start again
  // on a fresh one and ingest re-reads the pending list against the marker (DESIGN §5.5).
  int abandon_segment(const std::string& why);
  // Another instance holds our consumer name (a commit was fenced, or a renewal found it taken):
  // what this segment counted is the holder's to count from the pending list. Drop the segment;
  // the restarted stages wait for the name.
  int abandon_fenced(const std::string& why);

  const Config& cfg_;
  Segment& seg_;
  StageHandle stage_;
  Connection conn_;
  OutageTracker outage_;
  Backoff backoff_;
  Committer committer_;
  SnapshotWriter snapshots_;
  StatusWriter status_;
  Claimer claimer_;
  Lease lease_;
  Ownership owner_;
  StatusLine status_line_{seg_};
  int64_t next_claim_ms_ = 0;
  bool started_ = false;
  bool conflict_at_start_ = false;
  bool fenced_ = false;        // step() failed because another instance holds the name
  bool segment_gone_ = false;  // the segment was removed while waiting for the name
  int64_t next_lease_ms_ = 0;
  int64_t next_snapshot_ms_ = 0;
  int64_t next_status_ms_ = 0;
  uint64_t ingest_read_at_commit_ = 0;     // ingest's entries-read counter at our last commit
  uint64_t ingest_batches_at_commit_ = 0;  // and its batch counter
  static constexpr int64_t kTrimIntervalMs = 10000;
  int64_t last_trim_ms_ = 0;
  bool refused_ = false;                   // Redis refused the last commit whole: back off
  std::string eviction_policy_seen_;       // the policy logged last (warned once per value)
  bool linger_ = false;                    // the last commit was of a backlog: wait before the next
};

}  // namespace p35
