// Renders an event time in each `timestamp` format real producers use (DESIGN §2): epoch seconds
// (int or float), epoch milliseconds, ISO-8601 with Z, offset, fraction or none of them.
#pragma once

#include <cstdint>
#include <string>

namespace p35::loadgen {

// When this grows, update kTimestampFormatCount.
enum class TimestampFormat {
  EpochSeconds,         // 1717171717
  EpochMilliseconds,    // 1717171717123
  FloatSeconds1,        // 1717171717.1
  FloatSeconds3,        // 1717171717.123
  FloatSeconds6,        // 1717171717.123456
  IsoZ,                 // 2024-05-31T16:08:37Z
  IsoZFraction,         // 2024-05-31T16:08:37.123Z
  IsoOffset,            // 2024-05-31T21:38:37+05:30
  IsoOffsetFraction,    // 2024-05-31T11:08:37.123456-05:00
  IsoNoOffset,          // 2024-05-31T16:08:37 (UTC by the rules)
  IsoNoOffsetFraction,  // 2024-05-31T16:08:37.123
};
inline constexpr int kTimestampFormatCount = 11;

// Writes event_ms in `format` into out. `sub_ms` (0..999) fills the digits below the millisecond
// of FloatSeconds6 and IsoOffsetFraction; `offset_min` is the UTC offset of the Iso*Offset* forms.
void render_timestamp(TimestampFormat format, int64_t event_ms, int sub_ms, int offset_min,
                      std::string& out);

}  // namespace p35::loadgen
