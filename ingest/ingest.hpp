// The ingest stage: reads the stream with XREADGROUP (its pending list first after any restart or
// reconnect), applies the message rules and counts each batch into the segment.
#pragma once

#include <string>
#include <vector>

#include "config.hpp"
#include "counter.hpp"
#include "owner.hpp"
#include "daemon.hpp"
#include "redis.hpp"
#include "rules.hpp"
#include "shm.hpp"
#include "stage_loop.hpp"

namespace p35 {

class Ingest final : private StageWork {
 public:
  Ingest(const Config& cfg, Segment& seg);
  int run();

 private:
  // The stage loop's hooks (stage_loop.hpp).
  Attach attach() override;  // the consumer name, then prepare_redis()
  Step step() override;      // renew the name, read_once()
  Failure failure(const RedisError& e) override;
  void wait() override;      // the read linger after a short batch
  void drain() override;     // publish what was counted

  // What a (re)connect found: ready to read, our marker lost (wait for it), or the segment dropped
  // because Redis came back with less than it had (exit: every stage restarts on a fresh one).
  enum class Prepared { Ready, MarkerMissing, SegmentDropped };
  Prepared prepare_redis();   // group, marker, first-start watermark
  bool create_group();        // true: created now (it did not exist)
  // Adopts the marker on a new segment; true when this segment must be dropped (logged) because
  // Redis holds less than it counted.
  bool segment_behind_redis(StreamId marker, bool created);
  std::optional<StreamId> known_committed() const;
  bool counted_still_pending();
  size_t read_once();         // one XREADGROUP and its batch; returns the entries read
  // The reply to the read ahead or to a fenced read sent now; nil after waiting (XREAD BLOCK)
  // for entries after the stream's last ID when there was nothing new.
  Reply read_new();
  void wait_for_new(std::string_view last_id);
  void process(const redisReply* entries);
  bool add_waiting(StreamId id, const Normalized* msg);  // false: stop requested while waiting
  void report_vanished_group();  // the group had to be re-created: log it, count it

  const Config& cfg_;
  Segment& seg_;
  StageHandle stage_;
  Counter counter_;
  Connection conn_;
  StageLoop loop_;
  std::string marker_key_;
  bool reading_pending_ = true;  // re-reading our own pending list from `cursor_`
  StreamId cursor_;
  // A non-blocking XREADGROUP sent before the last full batch was counted, so that Redis prepares
  // the next batch while we count this one (a backlog); its reply is read next.
  bool read_ahead_ = false;
  // XREADGROUP `>` inside a script that first checks the ownership key holds our instance token:
  // an instance that lost the name (paused past P35_OWNER_TTL_MS) cannot put entries into the
  // name's pending list after the new holder re-read it (they would be stranded there).
  CommandArgs fenced_read_;
  std::vector<Field> fields_;
  Normalized norm_;
  bool marker_missing_logged_ = false;
  size_t last_read_ = 0;  // entries the last step read
  Ownership owner_;
};

}  // namespace p35
