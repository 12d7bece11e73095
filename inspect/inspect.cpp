// p35-shm's read-only pass over a segment and its three renderings (text, JSON, Prometheus).
#include "inspect.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <fmt/format.h>
#include <map>

#include "fields.hpp"
#include "rules.hpp"
#include "top_n.hpp"

namespace p35::inspect {

namespace {

uint64_t ld(const std::atomic<uint64_t>& w) { return w.load(std::memory_order_relaxed); }

// Decisions of one slot (live or shadow) as MinuteView counts them: UNKNOWN sums its table.
void add_decisions(const Segment& seg, shm::SlotHeader& s, uint64_t (&out)[kDecisionNames.size()]) {
  for (uint32_t d = 0; d < kKnownDecisionCount; ++d) out[d] += ld(s.decisions[d]);
  uint64_t& unknown = out[static_cast<size_t>(Decision::Unknown)];
  for (uint32_t j = 0; j < seg.caps().unknown_cap; ++j) unknown += ld(seg.unknowns(s)[j].count);
  unknown += ld(s.overflow_unknown);
}

// A JSON string body. Segment strings are only as trustworthy as the segment (a hostile or
// corrupt file can hold any bytes), so ill-formed UTF-8 becomes U+FFFD: the output always parses.
std::string json_escape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t n = utf8_char_bytes(s, i);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c < 0x20) out += fmt::format("\\u{:04x}", c);
    else if (n == 0) out += "\\ufffd";
    else out.append(s.substr(i, n));
    i += n == 0 ? 1 : n;
  }
  return out;
}

std::string iso_time(int64_t unix_ms) {
  const time_t t = static_cast<time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A slot's minute as its bucket key; minute_key() is total: a minute no ring could hold (a
// corrupt slot, outside the years 0000-9999 a key can spell) is its signed number, "-N" or "+N".
std::string minute_text(int64_t minute) { return minute_key(minute); }

// The chart's label: HHMM of the bucket key, or the whole text of an implausible minute.
std::string minute_hhmm(int64_t minute) {
  const std::string text = minute_text(minute);
  const bool key = text.size() == 12 && text[0] != '-' && text[0] != '+';
  return key ? text.substr(8) : text;
}

// A watermark as its ID, or "publishing" when its writer died between publish_id()'s stores (the
// lock stays odd until the writer restarts): the inspector is needed most exactly then, so it
// waits a few milliseconds at most (try_read_id) and never shows torn words as an ID.
std::string watermark_text(const std::optional<StreamId>& id) {
  return id ? id->str() : std::string("publishing");
}

// now - then; -1 when a corrupt time makes the difference unrepresentable (signed overflow).
int64_t age_ms(int64_t now_ms, int64_t then_ms) {
  int64_t age = 0;
  return __builtin_sub_overflow(now_ms, then_ms, &age) ? -1 : age;
}

StageView stage_view(const Segment& seg, shm::StageId id, int64_t now_ms, int64_t now_boot_ms) {
  auto& b = seg.stage(id);
  StageView v;
  v.name = stage_name(id);
  v.pid = ld(b.pid);
  // EPERM: the pid exists but belongs to another user (p35-shm run as someone else): alive.
  // A pid beyond pid_t would wrap to -1 or 0, which kill() reads as "every process" or "our group".
  v.alive = v.pid > 0 && v.pid <= uint64_t{INT32_MAX} &&
            (::kill(static_cast<pid_t>(v.pid), 0) == 0 || errno == EPERM);
  const int64_t heartbeat_ms = b.heartbeat_boot_ms.load();
  v.heartbeat_age_ms = heartbeat_ms == 0 ? -1 : age_ms(now_boot_ms, heartbeat_ms);
  // Prometheus wants timestamps: the boot-clock reading placed on the wall clock of this moment.
  v.heartbeat_unix_ms = heartbeat_ms == 0 ? 0 : now_ms - v.heartbeat_age_ms;
  v.start_unix_ms = b.start_unix_ms.load();
  v.state_code = b.state.load();
  v.state = v.alive ? state_name(v.state_code) : "dead";
  v.starts = b.starts.load();
  v.read = ld(b.read);
  v.counted = ld(b.counted);
  v.committed = ld(b.committed);
  v.acked = ld(b.acked);
  v.waits = ld(b.waits);
  v.redis_errors = ld(b.redis_errors);
  v.outages = ld(b.outages);
  v.skipped = ld(b.skipped);
  v.conflicts = ld(b.conflicts);
  v.batches = ld(b.batches);
  const int64_t since = b.outage_since_boot_ms.load();
  v.outage_ms = since == 0 ? 0 : age_ms(now_boot_ms, since);
  v.outage_since_unix_ms = since == 0 ? 0 : now_ms - v.outage_ms;
  if (v.alive && b.state.load() == static_cast<uint32_t>(shm::StageState::WaitingName))
    v.name_holder = load_text(b.holder_text, std::size(b.holder_text));
  return v;
}

MinuteView minute_view(const Segment& seg, uint32_t i) {
  auto& s = seg.slot(i);
  MinuteView m;
  m.minute = s.minute.load();
  m.late = i >= seg.caps().ring_slots;
  m.messages = ld(s.messages);
  add_decisions(seg, s, m.decisions);
  m.reasons_used = ld(s.reason_used);
  m.symbol_reasons_used = ld(s.symbol_reason_used);
  m.unknown_used = ld(s.unknown_used);
  m.overflow = ld(s.overflow_reason) + ld(s.overflow_symbol_reason) + ld(s.overflow_unknown);
  const uint64_t tag = (ld(s.gen) << 32) | (ld(s.version) & 0xffffffffULL);
  m.committed = seg.slot_meta()[i].committed_tag.load() == tag;
  return m;
}

// Reasons and decisions of the minutes (now - window, now] from rollup's committed shadow (what
// Redis holds).
void take_window(const Segment& seg, int window_minutes, int64_t now_ms, Snapshot& s) {
  std::map<std::string, uint64_t> reasons;
  for (uint32_t i = 0; i < seg.slot_count(); ++i) {
    // Only rollup writes the side, always 0 or 1; any other value (a corrupt file) would
    // address a shadow outside the mapping.
    const uint64_t side = seg.slot_meta()[i].side.load();
    if (side > 1) continue;
    auto& sh = seg.shadow(static_cast<uint32_t>(side), i);
    const int64_t minute = sh.minute.load();
    if (minute == shm::kEmptyMinute || minute <= now_ms / 60000 - window_minutes) continue;
    add_decisions(seg, sh, s.window_decisions);
    for (uint32_t j = 0; j < seg.caps().reason_cap; ++j) {
      const auto& e = seg.reasons(sh)[j];
      if (const uint64_t k = ld(e.key); k != 0)
        reasons[std::string(seg.string_at(static_cast<uint32_t>(k - 1)))] += ld(e.count);
    }
  }
  s.window_minutes = window_minutes;
  s.top_reasons = top_n(reasons, 10);
}

}  // namespace

size_t utf8_char_bytes(std::string_view s, size_t i) {
  const auto at = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = at(0);
  size_t n = 0;
  if (c < 0x80) n = 1;
  else if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3;
  else if (c >= 0xF0 && c <= 0xF4) n = 4;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((at(k) & 0xC0) != 0x80) return 0;
  if ((c == 0xE0 && at(1) < 0xA0) || (c == 0xED && at(1) > 0x9F) || (c == 0xF0 && at(1) < 0x90) ||
      (c == 0xF4 && at(1) > 0x8F))
    return 0;  // overlong, surrogate or above U+10FFFF
  return n;
}

Snapshot take(const Segment& seg, int window_minutes, int64_t now_ms, int64_t now_boot_ms) {
  Snapshot s;
  const auto& h = seg.header();
  s.name = seg.name();
  s.layout_version = h.layout_version;
  s.size = h.segment_size;
  s.fingerprint = h.fingerprint;
  s.fingerprint_text = std::string(h.fingerprint_text, strnlen(h.fingerprint_text, sizeof h.fingerprint_text));
  s.created_unix_ms = h.created_unix_ms;
  s.caps = h.caps;
  for (uint32_t i = 0; i < shm::kStageCount; ++i)
    s.stages.push_back(stage_view(seg, static_cast<shm::StageId>(i), now_ms, now_boot_ms));
  s.counted = try_read_id(seg.ingest().counted_pub);
  s.committed = try_read_id(seg.rollup().committed);
  s.acked = try_read_id(seg.ackd().acked);
  s.id_log_head = seg.ingest().id_log_head.load();
  s.id_log_tail = seg.ackd().id_log_tail.load();
  for (uint32_t t = 0; t < shm::kTotalCount; ++t) s.totals[t] = ld(seg.ingest().totals[t]);
  s.journal_pending = seg.ingest().journal_count.load() != 0;
  s.commit_pending = seg.rollup().pending_state.load() != 0;
  s.commits = seg.rollup().commit_count.load();
  s.last_commit_unix_ms = seg.rollup().last_commit_unix_ms.load();
  for (uint32_t i = 0; i < seg.slot_count(); ++i) {
    if (seg.slot(i).minute.load() == shm::kEmptyMinute) continue;
    auto m = minute_view(seg, i);
    (m.late ? s.late_used : s.ring_used) += 1;
    s.minutes.push_back(m);
  }
  std::sort(s.minutes.begin(), s.minutes.end(),
            [](const auto& a, const auto& b) { return a.minute < b.minute; });
  take_window(seg, window_minutes, now_ms, s);
  // Strings in use: those referenced by a live slot (approximated by non-empty lengths).
  for (uint32_t i = 0; i < seg.caps().string_cap; ++i)
    if (seg.strings()[i].length.load(std::memory_order_relaxed) != 0) ++s.strings_used;
  return s;
}

std::string render_text(const Snapshot& s, int window_minutes) {
  std::string o;
  o += fmt::format("segment   /dev/shm/{}  layout v{}  {:.1f} MiB  created {}\n", s.name,
                   s.layout_version, static_cast<double>(s.size) / 1048576.0, iso_time(s.created_unix_ms));
  o += fmt::format("for       {}  (fingerprint {:016x})\n", s.fingerprint_text, s.fingerprint);
  o += "stages    name    pid      alive  state          heartbeat  starts  waits  redis-errors\n";
  for (const auto& st : s.stages)
    o += fmt::format("          {:<7} {:<8} {:<6} {:<14} {:>7} ms {:>6} {:>6} {:>13}\n", st.name,
                     st.pid, st.alive ? "yes" : "NO", st.state, st.heartbeat_age_ms, st.starts,
                     st.waits, st.redis_errors);
  for (const auto& st : s.stages)
    if (!st.name_holder.empty())
      o += fmt::format("          {} waits: the consumer name is held by {}\n", st.name, st.name_holder);
  o += fmt::format("watermark counted {}  committed {}  acked {}\n", watermark_text(s.counted),
                   watermark_text(s.committed), watermark_text(s.acked));
  o += fmt::format("id log    {} unacked of {}   journal {}   commit {}   commits {}\n",
                   s.id_log_head - s.id_log_tail, s.caps.id_log_cap,
                   s.journal_pending ? "PENDING" : "clear", s.commit_pending ? "IN FLIGHT" : "clear",
                   s.commits);
  o += fmt::format("ring      {}/{} slots  late lane {}/{}  strings ~{}/{}\n", s.ring_used,
                   s.caps.ring_slots, s.late_used, s.caps.late_slots, s.strings_used, s.caps.string_cap);
  o += "totals   ";
  for (uint32_t t = 0; t < shm::kTotalCount; ++t) o += fmt::format(" {}={}", fields::kTotalNames[t], s.totals[t]);
  o += "\n\nper-minute decisions (last 60 minutes in the ring; # = EXECUTE, . = other)\n";
  uint64_t peak = 1;
  for (const auto& m : s.minutes) peak = std::max(peak, m.messages);
  const size_t from = s.minutes.size() > 60 ? s.minutes.size() - 60 : 0;
  for (size_t i = from; i < s.minutes.size(); ++i) {
    const auto& m = s.minutes[i];
    // Clamped, in floating point: v * 50 can overflow, and a corrupt slot can claim more
    // EXECUTEs than messages; either would ask std::string for an absurd length.
    const auto width = [&](uint64_t v) {
      const double share = static_cast<double>(std::min(v, peak)) / static_cast<double>(peak);
      return static_cast<size_t>(50.0 * share);
    };
    o += fmt::format("  {} {:>7} {}{}{}\n", minute_hhmm(m.minute), m.messages,
                     std::string(width(m.decisions[0]), '#'),
                     std::string(width(m.messages) - std::min(width(m.messages), width(m.decisions[0])), '.'),
                     m.late ? " (late)" : m.committed ? "" : " (uncommitted)");
  }
  o += fmt::format("\ntop reasons, last {} min (committed)\n", window_minutes);
  for (const auto& [r, c] : s.top_reasons) o += fmt::format("  {:>9}  {}\n", c, r);
  return o;
}

std::string render_json(const Snapshot& s) {
  std::string o = "{";
  o += fmt::format("\"segment\":{{\"name\":\"{}\",\"layout_version\":{},\"size\":{},"
                   "\"fingerprint\":\"{:016x}\",\"for\":\"{}\",\"created_unix_ms\":{}}},",
                   json_escape(s.name), s.layout_version, s.size, s.fingerprint,
                   json_escape(s.fingerprint_text), s.created_unix_ms);
  o += fmt::format("\"capacities\":{{\"ring_slots\":{},\"late_slots\":{},\"reasons_per_minute\":{},"
                   "\"symbol_reasons_per_minute\":{},\"unknown_per_minute\":{},\"strings\":{},"
                   "\"id_log\":{}}},",
                   s.caps.ring_slots, s.caps.late_slots, s.caps.reason_cap, s.caps.symbol_reason_cap,
                   s.caps.unknown_cap, s.caps.string_cap, s.caps.id_log_cap);
  o += "\"stages\":[";
  for (size_t i = 0; i < s.stages.size(); ++i) {
    const auto& st = s.stages[i];
    o += fmt::format("{}{{\"name\":\"{}\",\"pid\":{},\"alive\":{},\"state\":\"{}\","
                     "\"heartbeat_age_ms\":{},\"starts\":{},\"read\":{},\"counted\":{},"
                     "\"commits\":{},\"acked\":{},\"waits\":{},\"redis_errors\":{},\"outages\":{},"
                     "\"outage_ms\":{},\"skipped\":{},\"conflicts\":{},\"name_held_by\":\"{}\"}}",
                     i ? "," : "", st.name, st.pid, st.alive, st.state, st.heartbeat_age_ms,
                     st.starts, st.read, st.counted, st.committed, st.acked, st.waits,
                     st.redis_errors, st.outages, st.outage_ms, st.skipped, st.conflicts,
                     json_escape(st.name_holder));
  }
  o += "],";
  o += fmt::format("\"watermarks\":{{\"counted\":\"{}\",\"committed\":\"{}\",\"acked\":\"{}\"}},",
                   watermark_text(s.counted), watermark_text(s.committed),
                   watermark_text(s.acked));
  o += fmt::format("\"id_log\":{{\"head\":{},\"tail\":{},\"unacked\":{}}},", s.id_log_head,
                   s.id_log_tail, s.id_log_head - s.id_log_tail);
  o += fmt::format("\"journal_pending\":{},\"commit_pending\":{},\"commits\":{},", s.journal_pending,
                   s.commit_pending, s.commits);
  o += fmt::format("\"ring\":{{\"used\":{},\"late_used\":{},\"strings_used\":{}}},", s.ring_used,
                   s.late_used, s.strings_used);
  o += "\"totals\":{";
  for (uint32_t t = 0; t < shm::kTotalCount; ++t)
    o += fmt::format("{}\"{}\":{}", t ? "," : "", fields::kTotalNames[t], s.totals[t]);
  o += "},\"minutes\":[";
  for (size_t i = 0; i < s.minutes.size(); ++i) {
    const auto& m = s.minutes[i];
    o += fmt::format("{}{{\"minute\":\"{}\",\"late\":{},\"committed\":{},\"messages\":{},",
                     i ? "," : "", minute_text(m.minute), m.late, m.committed, m.messages);
    for (size_t d = 0; d < kDecisionNames.size(); ++d)
      o += fmt::format("\"{}\":{},", kDecisionNames[d], m.decisions[d]);
    o += fmt::format("\"reasons_used\":{},\"symbol_reasons_used\":{},\"overflow\":{}}}",
                     m.reasons_used, m.symbol_reasons_used, m.overflow);
  }
  o += "],\"top_reasons\":[";
  for (size_t i = 0; i < s.top_reasons.size(); ++i)
    o += fmt::format("{}{{\"reason\":\"{}\",\"count\":{}}}", i ? "," : "",
                     json_escape(s.top_reasons[i].first), s.top_reasons[i].second);
  o += "]}\n";
  return o;
}

std::string render_json_error(std::string_view message) {
  return "{\"error\":\"" + json_escape(message) + "\"}\n";
}

}  // namespace p35::inspect
