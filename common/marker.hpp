// The commit marker's life in Redis when Redis forgets (DESIGN §5, README "When Redis fails"):
// the registry of our consumers created with the marker in one script, what a stage does when a
// registered consumer's marker is missing, the segment's own idea of what it committed, the
// eviction policy check, and dropping a segment that is ahead of what Redis holds.
#pragma once

#include <optional>
#include <string>

#include "config.hpp"
#include "redis.hpp"
#include "shm.hpp"
#include "stream_id.hpp"

namespace p35 {

// Creates the marker (0-0) and registers the consumer in <prefix>consumers in one step, unless
// the marker exists (then it only registers a consumer from before the registry) or the consumer
// is registered without a marker (then it creates nothing: the marker was lost).
struct MarkerState {
  enum class Kind { Present, Created, Missing };
  Kind kind = Kind::Present;
  StreamId value;              // Present, Created: the marker's value
  std::string registered_at;   // Missing: when the consumer registered (unix seconds)
};
MarkerState ensure_marker(Connection& conn, const Config& cfg);

// What this segment knows it committed: rollup's committed ID, or for a segment rollup has not
// adopted yet the marker ingest started it from. nullopt: a fresh segment, a pending commit
// whose outcome Redis no longer tells, or the ID unreadable (a writer died mid-publish).
std::optional<StreamId> segment_committed(Segment& seg);

// A registered consumer's marker is missing: restore it from the segment when it knows what it
// committed (SET NX: a marker set meanwhile wins), logging one error line naming the ID; else log
// one error line with the operator's fix (when `log`: once per episode, the caller retries). Either way status:<consumer> says so (marker_state).
// Returns true when the marker exists again (restored here or by someone else).
bool handle_missing_marker(Connection& conn, const Config& cfg, Segment& seg,
                           const MarkerState& st, const char* stage, bool log);
// status:<consumer> marker_state = ok (after a connect found the marker in place).
void note_marker_ok(Connection& conn, const Config& cfg);
// What a stage does with its marker after each (re)connect: ensure_marker(), note_marker_ok(), or
// handle_missing_marker() (its error logged once per episode: `logged` carries the episode
// between calls). nullopt: still missing; the stage works on nothing until it is back.
std::optional<StreamId> checked_marker(Connection& conn, const Config& cfg, Segment& seg,
                                       const char* stage, bool& logged);

// A marker behind what the segment committed: Redis came back with less than it had. Logs one
// error line naming both IDs and unlinks the segment so that every stage restarts on a fresh one
// and the pending list is re-read against the marker in Redis.
void drop_segment_behind_marker(Segment& seg, const std::string& marker_key, const char* stage,
                                StreamId marker, StreamId committed);
// The same when Redis lacks the delivery of the newest entry the segment counted above the marker
// (`counted` not pending on our consumer): the uncommitted counts stand for reads Redis lost.
void drop_segment_reads_lost(Segment& seg, const char* stage, StreamId counted, StreamId marker);

// maxmemory_policy from INFO memory ("" when the ACL refuses INFO or the field is missing).
std::string read_eviction_policy(Connection& conn);
// allkeys-* evicts the markers, volatile-* the 48 h buckets: either loses counts.
bool policy_can_evict(const std::string& policy);

// The ack script: XACK only when the highest ID of the batch is at or below our marker in Redis.
extern const char* const kAckdScript;

}  // namespace p35
