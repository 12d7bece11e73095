// The parts of a generated entry that do not decide its outcome's decision or reason: the
// event time (`timestamp` in every format, in and out of range), duplicate fields, noise, and the
// final field list.
#include <fmt/format.h>

#include <array>
#include <string>

#include "generator.hpp"
#include "hostile.hpp"
#include "timestamps.hpp"

namespace p35::loadgen {

namespace {

constexpr int64_t kSecondMs = 1000;
constexpr int64_t kMinuteMs = 60 * kSecondMs;
constexpr int64_t kHourMs = 60 * kMinuteMs;

// An event time safely inside its minute, so that any rounding of a float or fraction in the
// parser cannot move it to the next or previous minute.
int64_t away_from_minute_edges(int64_t ms) {
  const int64_t within = ms % kMinuteMs;
  if (within < kSecondMs) return ms + kSecondMs;
  if (within > kMinuteMs - kSecondMs - 1) return ms - kSecondMs;
  return ms;
}

constexpr std::array<int, 8> kOffsetsMin{-300, -180, 0, 60, 120, 330, 345, 540};

}  // namespace

// Producers stamp a plan when they decide it: mostly seconds before the entry is written, now and
// then up to half an hour before (a plan retried or queued behind others).
int64_t Generator::in_range_event_ms() {
  const int64_t delay_ms = chance(rng_, 0.8) ? between(rng_, 2 * kSecondMs, 15 * kSecondMs)
                                             : between(rng_, 15 * kSecondMs, 30 * kMinuteMs);
  return away_from_minute_edges(base_ms_ - delay_ms);
}

void Generator::plan_timestamp() {
  const int sub_ms = static_cast<int>(below(rng_, 1000));
  const int offset_min = pick<int>(rng_, kOffsetsMin);
  if (has(kTimestamp)) {
    plan_hostile_timestamp(sub_ms, offset_min);
    return;
  }
  if (chance(rng_, 0.15)) return;  // no timestamp: the ID's time
  static constexpr std::array kUsual{
      TimestampFormat::EpochSeconds,  TimestampFormat::EpochSeconds,
      TimestampFormat::FloatSeconds3, TimestampFormat::IsoZ,
      TimestampFormat::IsoZFraction,  TimestampFormat::EpochMilliseconds};
  const int64_t event_ms = in_range_event_ms();
  render_timestamp(pick<TimestampFormat>(rng_, kUsual), event_ms, sub_ms, offset_min,
                   timestamp_.value);
  timestamp_.present = true;
  intent_->time_from_id = false;
  intent_->event_ms = event_ms;
}

void Generator::plan_hostile_timestamp(int sub_ms, int offset_min) {
  const auto format = static_cast<TimestampFormat>(below(rng_, kTimestampFormatCount));
  std::string& out = timestamp_.value;
  timestamp_.present = true;
  const double u = unit_interval(rng_);
  if (u < 0.4) {  // in range, in any format
    const int64_t event_ms = in_range_event_ms();
    render_timestamp(format, event_ms, sub_ms, offset_min, out);
    intent_->time_from_id = false;
    intent_->event_ms = event_ms;
  } else if (u < 0.65) {  // 3 days old or 10+ minutes ahead: outside [-48 h, +5 min]
    const int64_t event_ms = chance(rng_, 0.5)
                                 ? base_ms_ - 72 * kHourMs - between(rng_, 0, 6 * kHourMs)
                                 : base_ms_ + 10 * kMinuteMs + between(rng_, 0, 50 * kMinuteMs);
    render_timestamp(format, event_ms, sub_ms, offset_min, out);
  } else if (u < 0.9) {
    hostile::unparsable_timestamp(rng_, base_ms_ - 10 * kMinuteMs, out);
  } else {  // parsable numbers far outside the window
    static constexpr std::array<std::string_view, 3> kFar{"12", "-1717171717",
                                                          "99999999999999999999"};
    out.assign(pick<std::string_view>(rng_, kFar));
  }
}

void Generator::add_duplicates() {
  std::array<RawField*, 7> present{};
  size_t n = 0;
  for (RawField* f :
       {&symbol_, &decision_, &executed_, &error_, &details_, &reason_, &timestamp_}) {
    if (f->present) present[n++] = f;
  }
  const uint64_t decoys = n == 0 ? 0 : 1 + below(rng_, 2);
  for (uint64_t i = 0; i < decoys; ++i) {
    const RawField& f = *present[below(rng_, n)];
    decoys_.add(f.name);
    if (&f == &timestamp_) {
      scratch_.clear();
      render_timestamp(TimestampFormat::EpochSeconds, base_ms_ - 2 * kHourMs, 0, 0, scratch_);
      decoys_.add(scratch_);
    } else if (&f == &details_) {
      decoys_.add(R"({"error":"decoy_in_details"})");
    } else if (&f == &decision_) {
      decoys_.add(chance(rng_, 0.5) ? "EXECUTE" : "MAYBE");
    } else if (&f == &executed_) {
      decoys_.add(chance(rng_, 0.5) ? "True" : "perhaps");
    } else {
      decoys_.add(fmt::format("decoy_{}", f.name));
    }
  }
}

void Generator::add_noise() {
  const uint64_t kinds = 1 + below(rng_, 2);
  for (uint64_t i = 0; i < kinds; ++i) {
    switch (below(rng_, 6)) {
      case 0:
        plan_id_.value.insert(5, std::string_view("\0\xFF\xFE-", 4));
        break;
      case 1:
        steps_results_.value.assign("[");
        while (steps_results_.value.size() < 8192) {
          steps_results_.value.append(R"({"step":"retry","ok":false,"log":"connection reset"},)");
        }
        steps_results_.value.append("{}]");
        steps_results_.present = true;
        break;
      case 2:
        extras_.add(std::string_view("\xFF\xFEjunk\0", 7))
            .add(std::string_view("\0\x01\x02\xFF", 4));
        break;
      case 3:
        extras_.add("").add("a field with an empty name");
        break;
      case 4:
        extras_.add("Error").add("should_not_count").add("Reason").add("should_not_count");
        extras_.add("Timestamp")
            .add("0")
            .add("DECISION")
            .add("EXECUTE")
            .add("Symbol")
            .add("XXXUSDT");
        break;
      default:
        extras_.add("blob").add(std::string(16384, 'z'));
        break;
    }
  }
}

void Generator::emit(Entry& out) const {
  CommandArgs& f = out.fields;
  f.clear();
  for (size_t i = 0; i < decoys_.size(); ++i) f.add(decoys_.at(i));
  for (const RawField* field :
       {&plan_id_, &symbol_, &action_, &decision_, &executed_, &would_execute_, &steps_results_,
        &error_, &details_, &reason_, &timestamp_}) {
    if (field->present) f.add(field->name).add(field->value);
  }
  for (size_t i = 0; i < extras_.size(); ++i) f.add(extras_.at(i));
}

}  // namespace p35::loadgen
