// p35-shm --prometheus: the snapshot in the Prometheus text exposition format, named by the
// Prometheus conventions (counters end in _total, times are seconds or Unix timestamps in
// seconds, one family per quantity, no sentinel values: a sample without a value is left out).
#include <optional>
#include <fmt/format.h>

#include "version.hpp"
#include "inspect.hpp"

namespace p35::inspect {

namespace {

// Stage states in shm::StageState order (state_name() in shm.cpp spells them the same).
constexpr const char* kStateNames[] = {"stopped",       "starting",     "running",
                                       "waiting-redis", "backpressure", "draining"};
// Overflow totals (shm::Total kOverflowReason..kOverflowString) by the table that overflowed.
constexpr const char* kOverflowTables[] = {"reason", "symbol_reason", "unknown", "string"};
// Reasons below this share of the window's decisions are not exported: a flood of never-repeating
// exchange errors would otherwise make a new series per scrape.
constexpr double kMinReasonShare = 0.01;

// A label value: backslash, quote and newline escaped; ill-formed UTF-8 (a hostile or corrupt
// segment can hold any bytes) becomes U+FFFD, as the format requires UTF-8.
std::string label_escape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_char_bytes(s, i);
    if (s[i] == '\\')
      out += "\\\\";
    else if (s[i] == '"')
      out += "\\\"";
    else if (s[i] == '\n')
      out += "\\n";
    else if (n == 0)
      out += "\xEF\xBF\xBD";
    else
      out.append(s.substr(i, n));
    i += n == 0 ? 1 : n;
  }
  return out;
}

// Unix milliseconds (or a difference of them) as seconds, exact to the millisecond.
std::string seconds(int64_t ms) {
  return fmt::format("{:.3f}", static_cast<double>(ms) / 1000.0);
}

// Accumulates one family at a time: HELP and TYPE, then its samples, each with the segment label.
class Exposition {
 public:
  explicit Exposition(std::string_view segment)
      : segment_(fmt::format("segment=\"{}\"", label_escape(segment))) {}
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  // `labels`: further labels, already escaped, as `a="x",b="y"` (may be empty).
  void sample(std::string_view name, std::string_view labels, std::string_view value) {
    out_ +=
        fmt::format("{}{{{}{}{}}} {}\n", name, segment_, labels.empty() ? "" : ",", labels, value);
  }
  void sample(std::string_view name, std::string_view labels, uint64_t value) {
    sample(name, labels, std::string_view(std::to_string(value)));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string segment_;
  std::string out_;
};

std::string stage_label(const StageView& st) {
  return fmt::format("stage=\"{}\"", st.name);
}

void build_info(std::string& out) {
  out +=
      "# HELP p35_build_info The p35-shm build that wrote these metrics; always 1.\n"
      "# TYPE p35_build_info gauge\n";
  out += fmt::format("p35_build_info{{version=\"{}\"}} 1\n", label_escape(P35_VERSION));
}

void up(Exposition& e, int value) {
  e.family("p35_up", "gauge", "Whether p35-shm could read the segment (1) or not (0).");
  e.sample("p35_up", "", std::string_view(value ? "1" : "0"));
}

void stage_liveness(Exposition& e, const Snapshot& s) {
  e.family("p35_stage_up", "gauge", "Whether the process recorded for the stage is alive.");
  for (const auto& st : s.stages) e.sample("p35_stage_up", stage_label(st), st.alive ? 1 : 0);
  e.family(
      "p35_stage_state", "gauge",
      "The state a live stage reports, one sample per state (1: current); none for a dead stage.");
  for (const auto& st : s.stages) {
    if (!st.alive) continue;
    for (uint32_t k = 0; k < std::size(kStateNames); ++k)
      e.sample("p35_stage_state", fmt::format("{},state=\"{}\"", stage_label(st), kStateNames[k]),
               st.state_code == k ? 1 : 0);
  }
  e.family("p35_stage_starts_total", "counter",
           "Processes that attached to the segment as the stage.");
  for (const auto& st : s.stages) e.sample("p35_stage_starts_total", stage_label(st), st.starts);
}

// A timestamp family whose samples are left out where the stage never set the time.
void stage_times(Exposition& e, const Snapshot& s, std::string_view name, std::string_view help,
                 int64_t StageView::*field) {
  e.family(name, "gauge", help);
  for (const auto& st : s.stages)
    if (st.*field != 0) e.sample(name, stage_label(st), seconds(st.*field));
}

void stage_counter(Exposition& e, const Snapshot& s, std::string_view name, std::string_view help,
                   uint64_t StageView::*field) {
  e.family(name, "counter", help);
  for (const auto& st : s.stages) e.sample(name, stage_label(st), st.*field);
}

void stages(Exposition& e, const Snapshot& s) {
  stage_liveness(e, s);
  stage_times(e, s, "p35_stage_start_timestamp_seconds",
              "When the stage's process attached (Unix time).", &StageView::start_unix_ms);
  stage_times(e, s, "p35_stage_heartbeat_timestamp_seconds",
              "The stage's last heartbeat (Unix time); idle stages beat at least every 5 s.",
              &StageView::heartbeat_unix_ms);
  stage_times(e, s, "p35_stage_redis_outage_start_timestamp_seconds",
              "Start of the stage's current Redis outage (Unix time); absent while Redis answers.",
              &StageView::outage_since_unix_ms);
  stage_counter(e, s, "p35_stage_redis_errors_total", "Failed Redis calls, retries included.",
                &StageView::redis_errors);
  stage_counter(e, s, "p35_stage_redis_outages_total", "Redis outages the stage waited out.",
                &StageView::outages);
  stage_counter(e, s, "p35_stage_waits_total",
                "Backpressure waits (ingest) or seqlock retries (rollup).", &StageView::waits);
}

// Counters that only one stage keeps, named after it (stages are in shm::StageId order).
void stage_specific(Exposition& e, const Snapshot& s) {
  const auto one = [&](std::string_view name, std::string_view help, uint64_t v) {
    e.family(name, "counter", help);
    e.sample(name, "", v);
  };
  const StageView& ingest = s.stages.at(0);
  one("p35_ingest_read_entries_total", "Stream entries ingest read from Redis.", ingest.read);
  one("p35_ingest_skipped_entries_total",
      "Entries ingest skipped as already counted (re-read after a restart).", ingest.skipped);
  one("p35_ingest_group_recreations_total", "Times ingest re-created a vanished consumer group.",
      ingest.conflicts);
  one("p35_rollup_marker_conflicts_total",
      "Commits refused because the marker in Redis was not the expected one.",
      s.stages.at(1).conflicts);
  one("p35_ackd_acked_entries_total", "Stream IDs ackd acknowledged (XACK).", s.stages.at(2).acked);
  one("p35_rollup_commits_total", "Commits rollup applied to Redis.", s.commits);
  e.family("p35_rollup_last_commit_timestamp_seconds", "gauge",
           "When rollup last committed (Unix time).");
  if (s.last_commit_unix_ms != 0)
    e.sample("p35_rollup_last_commit_timestamp_seconds", "", seconds(s.last_commit_unix_ms));
}

void totals(Exposition& e, const Snapshot& s) {
  e.family("p35_messages_processed_total", "counter", "Messages counted into minute buckets.");
  e.sample("p35_messages_processed_total", "", s.totals[shm::kProcessed]);
  e.family("p35_messages_trimmed_total", "counter",
           "Pending entries whose message was trimmed from the stream before it was read.");
  e.sample("p35_messages_trimmed_total", "", s.totals[shm::kTrimmed]);
  e.family("p35_messages_late_total", "counter", "Messages counted into the late lane.");
  e.sample("p35_messages_late_total", "", s.totals[shm::kLate]);
  e.family(
      "p35_overflow_total", "counter",
      "Counts that went to a full table's __overflow__ entry; string: strings the string table "
      "could not hold.");
  for (uint32_t k = 0; k < std::size(kOverflowTables); ++k)
    e.sample("p35_overflow_total", fmt::format("table=\"{}\"", kOverflowTables[k]),
             s.totals[shm::kOverflowReason + k]);
}

void watermarks(Exposition& e, const Snapshot& s) {
  // A watermark whose writer is mid-publish (or died there) has no value: its sample is left out.
  const std::pair<const char*, std::optional<StreamId>> marks[] = {
      {"counted", s.counted}, {"committed", s.committed}, {"acked", s.acked}};
  const auto known = [](const std::optional<StreamId>& id) { return id && !id->is_zero(); };
  e.family("p35_watermark_timestamp_seconds", "gauge",
           "Time part of the highest stream ID counted, committed to Redis, acked; absent at 0-0 "
           "and while its stage is publishing it.");
  for (const auto& [name, id] : marks)
    if (known(id))
      e.sample("p35_watermark_timestamp_seconds", fmt::format("watermark=\"{}\"", name),
               seconds(static_cast<int64_t>(id->ms)));
  e.family("p35_watermark_lag_seconds", "gauge",
           "How far the committed or acked watermark trails the counted one, in stream-ID time.");
  for (size_t k = 1; k < 3; ++k) {
    const std::optional<StreamId>& id = marks[k].second;
    if (!known(id) || !known(s.counted)) continue;
    e.sample("p35_watermark_lag_seconds", fmt::format("watermark=\"{}\"", marks[k].first),
             seconds(static_cast<int64_t>(s.counted->ms - id->ms)));
  }
}

void occupancy(Exposition& e, const Snapshot& s) {
  e.family("p35_id_log_unacked", "gauge", "Stream IDs counted but not yet acked (pending XACK).");
  e.sample("p35_id_log_unacked", "", s.id_log_head - s.id_log_tail);
  e.family("p35_id_log_capacity", "gauge", "IDs the ID log holds; ingest waits when it is full.");
  e.sample("p35_id_log_capacity", "", s.caps.id_log_cap);
  e.family("p35_journal_pending", "gauge", "Whether an ingest batch journal awaits replay (1).");
  e.sample("p35_journal_pending", "", s.journal_pending ? 1 : 0);
  e.family("p35_commit_pending", "gauge", "Whether a rollup commit is in flight (1).");
  e.sample("p35_commit_pending", "", s.commit_pending ? 1 : 0);
  e.family("p35_ring_slots_used", "gauge", "Minute slots in use.");
  e.sample("p35_ring_slots_used", "lane=\"ring\"", s.ring_used);
  e.sample("p35_ring_slots_used", "lane=\"late\"", s.late_used);
  e.family("p35_ring_slots", "gauge", "Minute slots the segment has.");
  e.sample("p35_ring_slots", "lane=\"ring\"", s.caps.ring_slots);
  e.sample("p35_ring_slots", "lane=\"late\"", s.caps.late_slots);
  e.family("p35_strings_used", "gauge", "Interned strings in use (approximate).");
  e.sample("p35_strings_used", "", s.strings_used);
  e.family("p35_strings_capacity", "gauge", "Strings the string table holds.");
  e.sample("p35_strings_capacity", "", s.caps.string_cap);
}

// Decisions and reasons of the last --window minutes (committed: what Redis holds). Gauges, not
// counters: minutes leave the window and the ring.
void window(Exposition& e, const Snapshot& s) {
  const std::string w = fmt::format("window=\"{}m\"", s.window_minutes);
  e.family("p35_window_decisions", "gauge",
           "Decisions in the last <window> UTC minutes (by the entry's timestamp), committed.");
  uint64_t all = 0;
  for (uint32_t d = 0; d < 5; ++d) {
    e.sample("p35_window_decisions", fmt::format("{},decision=\"{}\"", w, kDecisionNames[d]),
             s.window_decisions[d]);
    all += s.window_decisions[d];
  }
  e.family("p35_window_reason_decisions", "gauge",
           "Decisions with the reason in the last <window> UTC minutes, committed; the top 10 "
           "reasons holding at least 1 % of the window's decisions.");
  for (const auto& [reason, count] : s.top_reasons)
    if (static_cast<double>(count) >= kMinReasonShare * static_cast<double>(all))
      e.sample("p35_window_reason_decisions",
               fmt::format("{},reason=\"{}\"", w, label_escape(reason)), count);
}

}  // namespace

std::string render_prometheus(const Snapshot& s) {
  std::string out;
  build_info(out);
  Exposition e(s.name);
  up(e, 1);
  e.family("p35_segment_created_timestamp_seconds", "gauge",
           "When the segment was created (Unix time).");
  e.sample("p35_segment_created_timestamp_seconds", "", seconds(s.created_unix_ms));
  stages(e, s);
  stage_specific(e, s);
  totals(e, s);
  watermarks(e, s);
  occupancy(e, s);
  window(e, s);
  return out + e.take();
}

std::string render_prometheus_down(std::string_view segment_name) {
  std::string out;
  build_info(out);
  Exposition e(segment_name);
  up(e, 0);
  return out + e.take();
}

}  // namespace p35::inspect
