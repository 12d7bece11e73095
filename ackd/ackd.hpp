// The ackd stage: XACKs, in batches, the IDs of the ID log at or below the committed marker, and
// advances the log's tail so ingest can reuse the space.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config.hpp"
#include "daemon.hpp"
#include "redis.hpp"
#include "shm.hpp"
#include "stage_loop.hpp"

namespace p35 {

class Ackd final : private StageWork {
 public:
  Ackd(const Config& cfg, Segment& seg);
  int run();
  // Ack everything ackable now; returns how many IDs were acked. Throws RedisError.
  uint64_t ack_committed();

 private:
  // The stage loop's hooks (stage_loop.hpp).
  Attach attach() override { return Attach::Ready; }
  Step step() override;  // ack_committed(), and say when a lost marker is back
  Failure failure(const RedisError& e) override;
  void wait() override;  // for the next commit (rollup rings our bell), or the second one
  void drain() override;  // ack what was committed before the stop

  uint64_t ack_batch(StreamId last);
  // Fills batch_ from the ID log at [tail, head) up to the committed ID; returns its end.
  uint64_t gather_batch(uint64_t tail, uint64_t head, StreamId committed, StreamId& last);
  void drop_segment(const std::string& said);
  void wait_for_marker();

  const Config& cfg_;
  Segment& seg_;
  StageHandle stage_;
  Connection conn_;
  StageLoop loop_;
  CommandArgs args_;
  std::vector<StreamId> batch_;
  std::string marker_key_;
  std::string sha_;
  std::optional<StreamId> behind_;  // set when the ack script found the marker behind this
  bool marker_missing_logged_ = false;
  int idle_wait_ms_ = 0;  // both within a third of WatchdogSec
  int linger_ms_ = 0;
  // Read before each step, for the wait after it.
  uint32_t bell_seen_ = 0;
  uint64_t commits_before_ = 0;
  uint64_t acked_ = 0;  // by the last step
};

}  // namespace p35
