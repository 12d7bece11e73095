// p35-shm's model of a segment: one read-only pass over the mapping into plain values, rendered
// as text (with a per-minute chart), JSON or Prometheus exposition format.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "rules.hpp"
#include "shm.hpp"

namespace p35::inspect {

struct StageView {
  std::string name;
  uint64_t pid = 0;
  bool alive = false;
  int64_t heartbeat_age_ms = 0;
  std::string state;
  uint32_t starts = 0;
  uint64_t read = 0, counted = 0, committed = 0, acked = 0, waits = 0, redis_errors = 0,
           outages = 0, skipped = 0, conflicts = 0, batches = 0;
  int64_t outage_ms = 0;
  // The stage's own clock readings (Unix ms), 0 when never set: Prometheus wants timestamps.
  int64_t start_unix_ms = 0, heartbeat_unix_ms = 0, outage_since_unix_ms = 0;
  uint32_t state_code = 0;  // shm::StageState as stored
  std::string name_holder;  // state waiting-name: who holds the consumer name
};

struct MinuteView {
  int64_t minute = 0;
  bool late = false;
  uint64_t messages = 0;
  uint64_t decisions[kDecisionNames.size()] = {};  // in kDecisionNames (Decision) order
  uint64_t reasons_used = 0, symbol_reasons_used = 0, unknown_used = 0;
  uint64_t overflow = 0;
  bool committed = false;
};

struct Snapshot {
  std::string name;
  uint32_t layout_version = 0;
  uint64_t size = 0;
  uint64_t fingerprint = 0;
  std::string fingerprint_text;
  int64_t created_unix_ms = 0;
  shm::Capacities caps{};
  std::vector<StageView> stages;
  // nullopt: the writer died between publish_id()'s stores (shown as "publishing").
  std::optional<StreamId> counted, committed, acked;
  uint64_t id_log_head = 0, id_log_tail = 0;
  uint64_t totals[shm::kTotalCount] = {};
  bool journal_pending = false, commit_pending = false;
  uint64_t commits = 0;
  int64_t last_commit_unix_ms = 0;
  std::vector<MinuteView> minutes;  // live slots in use, oldest first
  std::vector<std::pair<std::string, uint64_t>> top_reasons;  // over the chosen window
  int window_minutes = 0;
  uint64_t window_decisions[kDecisionNames.size()] = {};  // committed, in the window; as MinuteView
  uint32_t ring_used = 0, late_used = 0;
  uint64_t strings_used = 0;
};

// Reads everything once; never writes, never waits on a writer for long. now_unix_ms places the
// window; now_boot_ms (CLOCK_BOOTTIME, the stages' clock for heartbeats and outages) gives ages.
Snapshot take(const Segment& seg, int window_minutes, int64_t now_unix_ms, int64_t now_boot_ms);

std::string render_text(const Snapshot& s, int window_minutes);
std::string render_json(const Snapshot& s);
// {"error":"<message>"} with the message escaped, for a segment p35-shm cannot read.
std::string render_json_error(std::string_view message);

// The Prometheus text exposition (inspect/prometheus.cpp): p35_up 1 and the segment's families.
std::string render_prometheus(const Snapshot& s);
// What an exporter prints when the segment cannot be read: build info and p35_up 0.
std::string render_prometheus_down(std::string_view segment_name);

// Bytes of the well-formed UTF-8 character at s[i] (RFC 3629), 0 if there is none.
size_t utf8_char_bytes(std::string_view s, size_t i);

}  // namespace p35::inspect
