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

namespace p35 {

class Ackd {
 public:
  Ackd(const Config& cfg, Segment& seg);
  int run();
  // Ack everything ackable now; returns how many IDs were acked. Throws RedisError.
  uint64_t ack_committed();

 private:
  uint64_t ack_batch(StreamId last);
  int drop_segment(const std::string& said);
  void wait_for_marker();

  const Config& cfg_;
  Segment& seg_;
  StageHandle stage_;
  Connection conn_;
  OutageTracker outage_;
  Backoff backoff_;
  CommandArgs args_;
  std::vector<StreamId> batch_;
  std::string marker_key_;
  std::string sha_;
  std::optional<StreamId> behind_;  // set when the ack script found the marker behind this
  bool marker_missing_logged_ = false;
};

}  // namespace p35
