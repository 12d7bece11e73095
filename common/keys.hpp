// The Redis key names of DESIGN §3, all under the configured prefix (default "quantum:p35:").
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "fields.hpp"
#include "rules.hpp"

namespace p35::keys {

inline std::string bucket(std::string_view prefix, int64_t minute) {
  return std::string(prefix) + "bucket:" + minute_key(minute);
}
// Per-minute unknown-decision members (DESIGN §7), written in the same commit as the buckets.
inline std::string unknown_minute(std::string_view prefix, int64_t minute) {
  return std::string(prefix) + "unknown:" + minute_key(minute);
}
inline std::string marker(std::string_view prefix, std::string_view consumer) {
  return std::string(prefix) + "commit:" + std::string(consumer);
}
// Our consumers, name -> when it registered (unix s), written with the marker's creation: a
// consumer without a marker is the first version's only if it never registered here.
inline std::string consumers(std::string_view prefix) { return std::string(prefix) + "consumers"; }
// The consumer name's ownership key: "<instance token> <host> <pid> <stage> <since>", with a PX
// expiry, renewed by the holding instance's stages (common/owner.hpp).
inline std::string owner(std::string_view prefix, std::string_view consumer) {
  return std::string(prefix) + "owner:" + std::string(consumer);
}
// The service's status hash (the first version's), and one host's: status:<consumer>.
inline std::string status(std::string_view prefix) { return std::string(prefix) + "status"; }
inline std::string host_status(std::string_view prefix, std::string_view consumer) {
  return status(prefix) + ":" + std::string(consumer);
}
// Minute key -> a version bumped by every commit that touched that minute's bucket: the snapshot
// writer re-reads exactly the buckets that changed.
inline std::string bucket_versions(std::string_view prefix) { return std::string(prefix) + "bucketver"; }
// Who writes the snapshots: "<consumer> <instance token>", with an expiry (rollup/snapshots.hpp).
inline std::string lease(std::string_view prefix) { return std::string(prefix) + "lease"; }
inline std::string decision_counts(std::string_view prefix, std::string_view window) {
  return std::string(prefix) + "decision:counts:" + std::string(window);
}
inline std::string reason_top(std::string_view prefix, std::string_view window) {
  return std::string(prefix) + "reason:top:" + std::string(window);
}
inline std::string unknown_top_5m(std::string_view prefix) {
  return std::string(prefix) + "unknown_decision:top:5m";
}

struct Window {
  const char* name;
  int minutes;
};
inline constexpr std::array<Window, 4> kWindows{{{"1m", 1}, {"5m", 5}, {"15m", 15}, {"1h", 60}}};
inline constexpr size_t kTopReasons = 50;
using fields::kOverflow;  // a field name (fields.hpp), named here too for the tests

}  // namespace p35::keys
