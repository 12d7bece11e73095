// Redis stream entry IDs ("<ms>-<seq>") as a comparable value type shared by every stage.
#pragma once

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace p35 {

struct StreamId {
  uint64_t ms = 0;
  uint64_t seq = 0;

  friend constexpr auto operator<=>(const StreamId&, const StreamId&) = default;
  bool is_zero() const { return ms == 0 && seq == 0; }
  std::string str() const { return std::to_string(ms) + "-" + std::to_string(seq); }

  // Accepts "<ms>-<seq>" and "<ms>" (seq 0); rejects anything else.
  static std::optional<StreamId> parse(std::string_view text);
};

}  // namespace p35
