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
#include "stage_loop.hpp"

namespace p35 {

class Rollup final : private StageWork {
 public:
  Rollup(const Config& cfg, Segment& seg);
  int run();

 private:
  // The stage loop's hooks (stage_loop.hpp).
  Attach attach() override;  // the consumer name, then the commit in flight before a restart
  Step step() override;      // one commit and whatever is due
  Failure failure(const RedisError& e) override;
  void wait() override;      // the commit linger, then the bell or the next due time
  void drain() override;     // SIGTERM: last commit and final snapshots

  Attach resolve_pending_commit();  // committer_.start(), logged
  Step fenced();                    // abandon_fenced() naming the holder
  void note_commit();               // counts it; lingers after a commit of full batches
  void check_eviction_policy();
  void claim_if_due();      // take over other consumers' idle pending entries
  // The lease, the snapshots and the status when due.
  void tick(int64_t now);
  void write_snapshots(int64_t now, const SnapshotInputs* inputs);
  // Our marker was moved by someone else: drop this segment so that all three stages start again
  // on a fresh one and ingest re-reads the pending list against the marker (DESIGN §5.5).
  void abandon_segment(const std::string& why);
  // Another instance holds our consumer name (a commit was fenced, or a renewal found it taken):
  // what this segment counted is the holder's to count from the pending list. Drop the segment;
  // the restarted stages wait for the name.
  void abandon_fenced(const std::string& why);

  const Config& cfg_;
  Segment& seg_;
  StageHandle stage_;
  Connection conn_;
  StageLoop loop_;
  Committer committer_;
  SnapshotWriter snapshots_;
  StatusWriter status_;
  Claimer claimer_;
  Lease lease_;
  Ownership owner_;
  int64_t next_claim_ms_ = 0;
  int64_t next_lease_ms_ = 0;
  int64_t next_snapshot_ms_ = 0;
  int64_t next_status_ms_ = 0;
  uint64_t ingest_read_at_commit_ = 0;     // ingest's entries-read counter at our last commit
  uint64_t ingest_batches_at_commit_ = 0;  // and its batch counter
  static constexpr int64_t kTrimIntervalMs = 10000;
  int64_t last_trim_ms_ = 0;
  std::string eviction_policy_seen_;       // the policy logged last (warned once per value)
  bool linger_ = false;                    // the last commit was of a backlog: wait before the next
  uint32_t bell_seen_ = 0;                 // our bell, read before the step, for the wait after it
};

}  // namespace p35
