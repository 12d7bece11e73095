// Message normalisation rules of DESIGN §2: the raw fields of one stream entry in, one counted
// decision (decision, reason, symbol, minute, unknown-decision member) out. Pure functions.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace p35 {

// One field of a stream entry, exactly as Redis returned its bytes.
struct Field {
  std::string_view name;
  std::string_view value;
};

// The decisions counted per minute. When this grows, update: the slot's decision counters in
// shm_layout.hpp (kDecisionSlots, a layout version bump) and kDecisionNames.
enum class Decision : uint8_t { Execute = 0, Skip = 1, Blocked = 2, Error = 3, Unknown = 4 };
inline constexpr size_t kKnownDecisionCount = 4;  // EXECUTE..ERROR, always present in snapshots
// The one table of decision names, in Decision order: the bucket fields (common/fields.hpp), the
// snapshots' decision:counts:<W> and p35-shm name decisions by it.
inline constexpr std::array<std::string_view, 5> kDecisionNames{"EXECUTE", "SKIP", "BLOCKED",
                                                                "ERROR", "UNKNOWN"};
std::string_view decision_name(Decision d);  // kDecisionNames[d]; UNKNOWN for any other value

inline constexpr size_t kReasonMaxBytes = 200;
inline constexpr size_t kShortMaxBytes = 64;  // decisions, symbols, `executed`
inline constexpr int64_t kMaxPastMs = 48LL * 3600 * 1000;
inline constexpr int64_t kMaxFutureMs = 5LL * 60 * 1000;

// The outcome of the rules for one entry. Reused across entries to avoid allocation.
struct Normalized {
  Decision decision = Decision::Unknown;
  // Decision::Unknown only. true: a `decision` field existed and its cleaned, upper-cased value
  // was not a synonym; the bucket field is "decision:UNKNOWN:<unknown_value>" and the 5m member is
  // unknown_value. false: no `decision` field and `executed` missing or unrecognised; the bucket
  // field is "decision:UNKNOWN" and the member is "executed=<unknown_value>" (empty if missing).
  bool unknown_from_decision_field = false;
  std::string unknown_value;
  std::string reason;  // cleaned, never empty ("none" when no candidate)
  std::string symbol;  // cleaned, empty means no symbol breakdown
  int64_t event_ms = 0;
  int64_t minute = 0;  // floor(event_ms / 60000): minutes since the epoch, UTC

  // "EXECUTE", ..., "UNKNOWN:<value>" or "UNKNOWN": what follows "decision:" in a bucket
  // (fields::decision_label).
  std::string decision_label() const;
  // The member of quantum:p35:unknown_decision:top:5m (only meaningful for Decision::Unknown;
  // fields::unknown_member).
  std::string unknown_member() const;
};

// DESIGN §2 cleaning: invalid UTF-8 -> U+FFFD per maximal subsequence, ASCII controls -> space,
// trim spaces, cut to whole characters within max_bytes, trim spaces the cut left at the end.
std::string clean_value(std::string_view raw, size_t max_bytes);
void clean_value_into(std::string_view raw, size_t max_bytes, std::string& out);

// `timestamp` field: epoch seconds (int or float), epoch milliseconds (>= 1e11) or ISO-8601
// (optional fraction and offset; no offset means UTC). nullopt when unparsable.
std::optional<int64_t> parse_timestamp_ms(std::string_view raw);

// The timestamp if it lies within [id_ms - 48 h, id_ms + 5 min], else id_ms.
int64_t choose_event_ms(std::optional<int64_t> timestamp_ms, int64_t id_ms);

// floor(event_ms / 60000): the UTC minute an event time falls in, also before 1970.
int64_t minute_of_ms(int64_t event_ms);

// Apply every rule of DESIGN §2 to one entry; the last of duplicate field names wins.
void normalize(std::span<const Field> fields, int64_t id_ms, Normalized& out);

// Minutes since the epoch -> "YYYYMMDDHHMM" (UTC).
std::string minute_key(int64_t minute);

}  // namespace p35
