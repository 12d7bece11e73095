// Parsing of Redis stream entry IDs.
#include "stream_id.hpp"

#include <charconv>

namespace p35 {

namespace {
bool parse_u64(std::string_view text, uint64_t& out) {
  if (text.empty()) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}
}  // namespace

std::optional<StreamId> StreamId::parse(std::string_view text) {
  StreamId id;
  const auto dash = text.find('-');
  if (dash == std::string_view::npos) {
    if (!parse_u64(text, id.ms)) return std::nullopt;
    return id;
  }
  if (!parse_u64(text.substr(0, dash), id.ms) || !parse_u64(text.substr(dash + 1), id.seq))
    return std::nullopt;
  return id;
}

}  // namespace p35
