// The ingest stage: reads the stream with XREADGROUP (its pending list first after any restart or
// reconnect), applies the message rules and counts each batch into the segment.
#pragma once

#include <string>
#include <vector>

#include "config.hpp"
#include "counter.hpp"
#include "daemon.hpp"
#include "redis.hpp"
#include "rules.hpp"
#include "shm.hpp"

namespace p35 {

class Ingest {
 public:
  Ingest(const Config& cfg, Segment& seg);
  int run();

 private:
  void prepare_redis();       // group, marker, first-start watermark
  size_t read_once();         // one XREADGROUP and its batch; returns the entries read
  Reply read_new();           // the reply to the read ahead, or to a blocking read sent now
  void process(const redisReply* entries);
  bool add_waiting(StreamId id, const Normalized* msg);  // false: stop requested while waiting
  void report_vanished_group();  // the group had to be re-created: log it, count it

  const Config& cfg_;
  Segment& seg_;
  StageHandle stage_;
  Counter counter_;
  Connection conn_;
  OutageTracker outage_;
  Backoff backoff_;
  std::string marker_key_;
  bool reading_pending_ = true;  // re-reading our own pending list from `cursor_`
  StreamId cursor_;
  // A non-blocking XREADGROUP sent before the last full batch was counted, so that Redis prepares
  // the next batch while we count this one (a backlog); its reply is read next.
  bool read_ahead_ = false;
  CommandArgs read_new_blocking_;
  CommandArgs read_new_at_once_;
  std::vector<Field> fields_;
  Normalized norm_;
  StatusLine status_line_;
};

}  // namespace p35
