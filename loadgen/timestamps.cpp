// Timestamp rendering for the generator; civil time comes from gmtime_r, not from the project's
// parser, so the two sides of a test do not share a bug.
#include "timestamps.hpp"

#include <fmt/format.h>

#include <ctime>
#include <iterator>

namespace p35::loadgen {

namespace {

// "YYYY-MM-DDTHH:MM:SS" of the wall time that `local_ms` stands for.
void append_civil(int64_t local_ms, std::string& out) {
  const auto seconds = static_cast<time_t>(local_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  fmt::format_to(std::back_inserter(out), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

void append_offset(int offset_min, std::string& out) {
  const char sign = offset_min < 0 ? '-' : '+';
  const int magnitude = offset_min < 0 ? -offset_min : offset_min;
  fmt::format_to(std::back_inserter(out), "{}{:02}:{:02}", sign, magnitude / 60, magnitude % 60);
}

void render_iso(TimestampFormat format, int64_t event_ms, int sub_ms, int offset_min,
                std::string& out) {
  const bool with_offset =
      format == TimestampFormat::IsoOffset || format == TimestampFormat::IsoOffsetFraction;
  const int64_t local_ms = event_ms + (with_offset ? int64_t{offset_min} * 60000 : 0);
  append_civil(local_ms, out);
  const auto it = std::back_inserter(out);
  const int64_t ms = local_ms % 1000;
  if (format == TimestampFormat::IsoZFraction || format == TimestampFormat::IsoNoOffsetFraction) {
    fmt::format_to(it, ".{:03}", ms);
  } else if (format == TimestampFormat::IsoOffsetFraction) {
    fmt::format_to(it, ".{:03}{:03}", ms, sub_ms);
  }
  if (with_offset) {
    append_offset(offset_min, out);
  } else if (format == TimestampFormat::IsoZ || format == TimestampFormat::IsoZFraction) {
    out.push_back('Z');
  }
}

}  // namespace

void render_timestamp(TimestampFormat format, int64_t event_ms, int sub_ms, int offset_min,
                      std::string& out) {
  out.clear();
  const auto it = std::back_inserter(out);
  const int64_t s = event_ms / 1000;
  const int64_t ms = event_ms % 1000;
  switch (format) {
    case TimestampFormat::EpochSeconds:
      fmt::format_to(it, "{}", s);
      return;
    case TimestampFormat::EpochMilliseconds:
      fmt::format_to(it, "{}", event_ms);
      return;
    case TimestampFormat::FloatSeconds1:
      fmt::format_to(it, "{}.{}", s, ms / 100);
      return;
    case TimestampFormat::FloatSeconds3:
      fmt::format_to(it, "{}.{:03}", s, ms);
      return;
    case TimestampFormat::FloatSeconds6:
      fmt::format_to(it, "{}.{:03}{:03}", s, ms, sub_ms);
      return;
    default:
      render_iso(format, event_ms, sub_ms, offset_min, out);
      return;
  }
}

}  // namespace p35::loadgen
