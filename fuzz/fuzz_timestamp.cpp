// libFuzzer target: the `timestamp` parser (parse_timestamp_ms) on any bytes, and what the rules
// do with its result: the event-time window, the minute and the minute's bucket key.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "rules.hpp"

namespace {

using p35::fuzz::check;
using Wide = __int128;

constexpr int64_t kMsPerMinute = 60'000;
constexpr int64_t kRealisticIdMs = 1'767'225'600'000;  // 2026-01-01T00:00:00Z

std::string ms_text(int64_t ms) {
  return std::to_string(ms);
}

// choose_event_ms keeps the timestamp exactly when it lies in [id - 48 h, id + 5 min].
void check_window(int64_t ts_ms, int64_t id_ms) {
  const int64_t chosen = p35::choose_event_ms(ts_ms, id_ms);
  const Wide offset = Wide{ts_ms} - id_ms;
  const bool inside = offset >= -Wide{p35::kMaxPastMs} && offset <= p35::kMaxFutureMs;
  check(chosen == (inside ? ts_ms : id_ms), "choose_event_ms window", ms_text(id_ms));
}

// The ID times that matter for one timestamp: far away, realistic, and both edges of the window.
void check_windows(int64_t ts_ms) {
  check_window(ts_ms, kRealisticIdMs);
  check_window(ts_ms, INT64_MIN);
  check_window(ts_ms, INT64_MAX);
  for (const int64_t delta : {int64_t{0}, p35::kMaxPastMs, p35::kMaxPastMs + 1, -p35::kMaxFutureMs,
                              -p35::kMaxFutureMs - 1}) {
    int64_t id_ms = 0;
    if (!__builtin_add_overflow(ts_ms, delta, &id_ms)) check_window(ts_ms, id_ms);
  }
  check(p35::choose_event_ms(std::nullopt, kRealisticIdMs) == kRealisticIdMs,
        "no timestamp: ID time");
}

// The minute is the floor, also before 1970; its bucket key names that minute and, for years a
// key can spell, parses back to the same minute as ISO-8601.
void check_minute(int64_t ms) {
  const int64_t minute = p35::minute_of_ms(ms);
  check(Wide{minute} * kMsPerMinute <= ms && ms < (Wide{minute} + 1) * kMsPerMinute,
        "minute_of_ms floor", ms_text(ms));
  const std::string key = p35::minute_key(minute);
  constexpr int64_t kYear0Ms = -62'167'219'200'000;      // 0000-01-01T00:00Z
  constexpr int64_t kYear10000Ms = 253'402'300'800'000;  // 10000-01-01T00:00Z
  if (ms < kYear0Ms || ms >= kYear10000Ms) {  // no YYYYMMDDHHMM: the minute, with its sign
    check(key == (minute < 0 ? "" : "+") + std::to_string(minute),
          "minute_key outside the years 0000-9999 is the signed minute", key);
    return;
  }
  check(key.size() == 12, "minute_key is YYYYMMDDHHMM", key);
  const std::string iso = key.substr(0, 4) + "-" + key.substr(4, 2) + "-" + key.substr(6, 2) + "T" +
                          key.substr(8, 2) + ":" + key.substr(10, 2) + "Z";
  const std::optional<int64_t> back = p35::parse_timestamp_ms(iso);
  check(back && *back == minute * kMsPerMinute, "minute_key does not parse back to its minute",
        iso);
}

// Plain digits are epoch seconds below 1e11 and epoch milliseconds from 1e11 on (DESIGN §2).
void check_plain_digits(std::string_view s, std::optional<int64_t> parsed) {
  if (s.empty() || s.size() > 18 || s.find_first_not_of("0123456789") != std::string_view::npos)
    return;
  int64_t v = 0;
  for (const char c : s) v = v * 10 + (c - '0');
  const int64_t expect = v >= 100'000'000'000 ? v : v * 1000;
  check(parsed && *parsed == expect, "digits: epoch seconds or milliseconds", s);
}

std::string_view trim_blanks(std::string_view s) {
  const size_t first = s.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(" \t\r\n") - first + 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view raw(reinterpret_cast<const char*>(data), size);
  const std::optional<int64_t> parsed = p35::parse_timestamp_ms(raw);
  check(p35::parse_timestamp_ms(raw) == parsed, "parse_timestamp_ms is not deterministic");
  const std::string padded = " \t" + std::string(raw) + "\r\n ";
  check(p35::parse_timestamp_ms(padded) == parsed, "surrounding blanks change the result");
  check_plain_digits(trim_blanks(raw), parsed);
  if (!parsed) return 0;
  check_windows(*parsed);
  check_minute(*parsed);
  return 0;
}
