// DESIGN §2 event time: parsing the `timestamp` field, choosing between it and the entry-ID time,
// and naming UTC minutes as "YYYYMMDDHHMM" bucket keys, all without the wall clock or TZ.
#include <chrono>
#include <cstdio>

#include "rules.hpp"

namespace p35 {
namespace {

constexpr int64_t kMsPerSecond = 1000;
constexpr int64_t kMsPerMinute = 60 * kMsPerSecond;
constexpr int64_t kMsPerHour = 60 * kMsPerMinute;
constexpr int64_t kMsPerDay = 24 * kMsPerHour;
constexpr int64_t kMinutesPerDay = 24 * 60;
constexpr int64_t kEpochMsThreshold = 100'000'000'000;  // 1e11: below this a number is seconds
constexpr size_t kMaxIntegerDigits = 18;                // keeps every value inside int64_t

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }
constexpr bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

constexpr int64_t floor_div(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

std::string_view trim_blanks(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// A cursor over the text being parsed; every reader fails without moving when the text does not
// match, so the ISO grammar below reads as a sequence of optional parts.
struct Cursor {
  std::string_view s;
  size_t pos = 0;

  bool at_end() const { return pos == s.size(); }
  bool peek(char c) const { return pos < s.size() && s[pos] == c; }
  bool take(char c) {
    if (!peek(c)) return false;
    ++pos;
    return true;
  }
  bool take_any_of(std::string_view set, char& which) {
    if (pos >= s.size() || set.find(s[pos]) == std::string_view::npos) return false;
    which = s[pos++];
    return true;
  }
  // Exactly `count` digits as a number.
  bool take_digits(size_t count, int& value) {
    if (s.size() - pos < count) return false;
    int v = 0;
    for (size_t i = 0; i < count; ++i) {
      if (!is_digit(s[pos + i])) return false;
      v = v * 10 + (s[pos + i] - '0');
    }
    value = v;
    pos += count;
    return true;
  }
  // A fraction's digits after the separator: milliseconds, further digits truncated (floor).
  bool take_fraction_ms(int64_t& ms) {
    size_t digits = 0;
    int64_t value = 0;
    for (; pos < s.size() && is_digit(s[pos]); ++pos, ++digits) {
      if (digits < 3) value = value * 10 + (s[pos] - '0');
    }
    for (size_t d = digits; d < 3; ++d) value *= 10;
    ms = value;
    return digits > 0;
  }
};

// "123", "123.456", ".5", "-1.5": an unsigned decimal split exactly, no binary floating point.
struct Decimal {
  bool negative = false;
  int64_t integer = 0;
  int64_t first3_fraction = 0;  // the first three fraction digits, as thousandths
  bool finer_fraction = false;  // any non-zero fraction digit beyond those counted
};

std::optional<Decimal> parse_decimal(std::string_view s) {
  Decimal d;
  size_t pos = 0;
  if (pos < s.size() && (s[pos] == '-' || s[pos] == '+')) d.negative = s[pos++] == '-';
  size_t int_digits = 0;
  for (; pos < s.size() && is_digit(s[pos]); ++pos, ++int_digits) {
    if (int_digits == kMaxIntegerDigits) return std::nullopt;
    d.integer = d.integer * 10 + (s[pos] - '0');
  }
  size_t frac_digits = 0;
  if (pos < s.size() && s[pos] == '.') {
    for (++pos; pos < s.size() && is_digit(s[pos]); ++pos, ++frac_digits) {
      const int digit = s[pos] - '0';
      if (frac_digits < 3) d.first3_fraction = d.first3_fraction * 10 + digit;
      else if (digit != 0) d.finer_fraction = true;
    }
  }
  for (size_t i = frac_digits; i < 3; ++i) d.first3_fraction *= 10;
  if (pos != s.size() || int_digits + frac_digits == 0) return std::nullopt;
  return d;
}

// Epoch seconds, or epoch milliseconds when the magnitude is at least 1e11; floored to the ms.
std::optional<int64_t> parse_epoch_ms(std::string_view s) {
  const std::optional<Decimal> d = parse_decimal(s);
  if (!d) return std::nullopt;
  int64_t magnitude_ms = 0;
  bool below_ms = false;  // the exact value has a part smaller than a millisecond
  if (d->integer >= kEpochMsThreshold) {
    magnitude_ms = d->integer;
    below_ms = d->first3_fraction != 0 || d->finer_fraction;
  } else {
    magnitude_ms = d->integer * kMsPerSecond + d->first3_fraction;
    below_ms = d->finer_fraction;
  }
  if (!d->negative) return magnitude_ms;
  return -magnitude_ms - (below_ms ? 1 : 0);
}

// "YYYY-MM-DD" as days since the epoch, rejecting dates the calendar does not have.
std::optional<int64_t> take_date_days(Cursor& c) {
  int y = 0, m = 0, d = 0;
  if (!c.take_digits(4, y) || !c.take('-') || !c.take_digits(2, m) || !c.take('-') ||
      !c.take_digits(2, d)) {
    return std::nullopt;
  }
  const std::chrono::year_month_day ymd{std::chrono::year{y},
                                        std::chrono::month{static_cast<unsigned>(m)},
                                        std::chrono::day{static_cast<unsigned>(d)}};
  if (!ymd.ok()) return std::nullopt;
  return std::chrono::sys_days{ymd}.time_since_epoch().count();
}

// "HH:MM[:SS[.fff]]" as milliseconds into the day.
std::optional<int64_t> take_time_ms(Cursor& c) {
  int h = 0, m = 0, s = 0;
  int64_t fraction_ms = 0;
  if (!c.take_digits(2, h) || !c.take(':') || !c.take_digits(2, m)) return std::nullopt;
  if (c.take(':')) {
    if (!c.take_digits(2, s)) return std::nullopt;
    char sep = 0;
    if (c.take_any_of(".,", sep) && !c.take_fraction_ms(fraction_ms)) return std::nullopt;
  }
  if (h > 23 || m > 59 || s > 59) return std::nullopt;
  return h * kMsPerHour + m * kMsPerMinute + s * kMsPerSecond + fraction_ms;
}

// "Z", "+HH", "+HH:MM" or "+HHMM" (or '-'): the offset to subtract to get UTC; none means UTC.
std::optional<int64_t> take_offset_ms(Cursor& c) {
  if (c.take('Z') || c.take('z') || c.at_end()) return 0;
  char sign = 0;
  int h = 0, m = 0;
  if (!c.take_any_of("+-", sign) || !c.take_digits(2, h)) return std::nullopt;
  if (c.take(':')) {
    if (!c.take_digits(2, m)) return std::nullopt;
  } else if (!c.at_end() && !c.take_digits(2, m)) {
    return std::nullopt;
  }
  if (h > 23 || m > 59) return std::nullopt;
  const int64_t offset_ms = h * kMsPerHour + m * kMsPerMinute;
  return sign == '-' ? -offset_ms : offset_ms;
}

// ISO-8601: a date, optionally followed by 'T' (or a space) and a time with an optional offset.
std::optional<int64_t> parse_iso_ms(std::string_view s) {
  Cursor c{s};
  const std::optional<int64_t> days = take_date_days(c);
  if (!days) return std::nullopt;
  int64_t ms = *days * kMsPerDay;
  char sep = 0;
  if (c.take_any_of("Tt ", sep)) {
    const std::optional<int64_t> time_ms = take_time_ms(c);
    const std::optional<int64_t> offset_ms = time_ms ? take_offset_ms(c) : std::nullopt;
    if (!offset_ms) return std::nullopt;
    ms += *time_ms - *offset_ms;
  }
  if (!c.at_end()) return std::nullopt;
  return ms;
}

}  // namespace

std::optional<int64_t> parse_timestamp_ms(std::string_view raw) {
  const std::string_view s = trim_blanks(raw);
  // Dates have '-' at index 4 ("2026-"); numbers never do, a leading sign sits at index 0.
  if (s.size() > 4 && s[4] == '-') return parse_iso_ms(s);
  return parse_epoch_ms(s);
}

int64_t choose_event_ms(std::optional<int64_t> timestamp_ms, int64_t id_ms) {
  if (!timestamp_ms) return id_ms;
  int64_t offset_ms = 0;
  // A difference too large for int64_t is certainly out of the window.
  if (__builtin_sub_overflow(*timestamp_ms, id_ms, &offset_ms)) return id_ms;
  if (offset_ms < -kMaxPastMs || offset_ms > kMaxFutureMs) return id_ms;
  return *timestamp_ms;
}

int64_t minute_of_ms(int64_t event_ms) { return floor_div(event_ms, kMsPerMinute); }

std::string minute_key(int64_t minute) {
  // Total for every int64: a minute outside the years 0000-9999 has no YYYYMMDDHHMM (and near
  // INT64_MIN/MAX the day arithmetic below would overflow), so it is its number with a sign,
  // "-N" or "+N": never 12 plain digits, so never another minute's key (p35-shm shows the same).
  constexpr int64_t kYear0Minute = -62'167'219'200 / 60;      // 0000-01-01T00:00Z
  constexpr int64_t kYear10000Minute = 253'402'300'800 / 60;  // 10000-01-01T00:00Z
  if (minute < kYear0Minute) return std::to_string(minute);
  if (minute >= kYear10000Minute) return "+" + std::to_string(minute);
  const int64_t day = floor_div(minute, kMinutesPerDay);
  const int64_t minute_of_day = minute - day * kMinutesPerDay;
  const std::chrono::year_month_day ymd{std::chrono::sys_days{std::chrono::days{day}}};
  char buf[32];
  const int n = std::snprintf(buf, sizeof buf, "%04d%02u%02u%02d%02d", static_cast<int>(ymd.year()),
                              static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                              static_cast<int>(minute_of_day / 60), static_cast<int>(minute_of_day % 60));
  return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
}

}  // namespace p35
