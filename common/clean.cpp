// DESIGN §2 value cleaning: repair invalid UTF-8, blank ASCII controls, trim spaces and cut to a
// byte limit on a character boundary, in one pass that stops reading once the limit is reached.
#include "rules.hpp"

namespace p35 {
namespace {

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// What starts at one position of the input: a well-formed character, or the maximal subpart of
// an ill-formed sequence that becomes a single U+FFFD (Unicode §3.9, "U+FFFD substitution of
// maximal subparts", the practice of WHATWG and ICU). Either way `bytes` is how much it consumes.
struct Scanned {
  size_t bytes;
  bool valid;
};

// The continuation bytes a lead byte needs and the range its first continuation byte must lie in
// (Unicode Table 3-7: the narrowed ranges exclude overlongs, surrogates and values > U+10FFFF).
struct LeadRule {
  size_t continuations;  // 0: the byte can never start a character
  unsigned char first_min;
  unsigned char first_max;
};

constexpr LeadRule lead_rule(unsigned char lead) {
  if (lead >= 0xC2 && lead <= 0xDF) return {1, 0x80, 0xBF};
  if (lead == 0xE0) return {2, 0xA0, 0xBF};
  if (lead == 0xED) return {2, 0x80, 0x9F};
  if (lead >= 0xE1 && lead <= 0xEF) return {2, 0x80, 0xBF};
  if (lead == 0xF0) return {3, 0x90, 0xBF};
  if (lead >= 0xF1 && lead <= 0xF3) return {3, 0x80, 0xBF};
  if (lead == 0xF4) return {3, 0x80, 0x8F};
  return {0, 0, 0};  // 0x80..0xC1 and 0xF5..0xFF
}

// Scans the non-ASCII sequence at p[0] (available bytes: avail >= 1).
Scanned scan_sequence(const unsigned char* p, size_t avail) {
  const LeadRule rule = lead_rule(p[0]);
  if (rule.continuations == 0) return {1, false};
  unsigned char min = rule.first_min;
  unsigned char max = rule.first_max;
  for (size_t i = 1; i <= rule.continuations; ++i) {
    // The subpart ends before the first byte that cannot continue it; that byte is scanned anew.
    if (i >= avail || p[i] < min || p[i] > max) return {i, false};
    min = 0x80;
    max = 0xBF;
  }
  return {rule.continuations + 1, true};
}

constexpr bool is_ascii_control(unsigned char c) { return c < 0x20 || c == 0x7F; }

}  // namespace

void clean_value_into(std::string_view raw, size_t max_bytes, std::string& out) {
  out.clear();
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
  const size_t size = raw.size();
  size_t pos = 0;
  while (pos < size) {
    const unsigned char c = bytes[pos];
    if (c < 0x80) {
      const char ascii = is_ascii_control(c) ? ' ' : static_cast<char>(c);
      // Leading spaces are never written, so they cannot use up the limit.
      if (!(ascii == ' ' && out.empty())) {
        if (out.size() + 1 > max_bytes) break;
        out.push_back(ascii);
      }
      ++pos;
      continue;
    }
    const Scanned seq = scan_sequence(bytes + pos, size - pos);
    const std::string_view text = seq.valid ? raw.substr(pos, seq.bytes) : kReplacementChar;
    // Longest prefix of whole characters: the first one that does not fit ends the value.
    if (out.size() + text.size() > max_bytes) break;
    out.append(text);
    pos += seq.bytes;
  }
  // Trailing spaces of the input and spaces the cut left at the end go alike: trimming before
  // the cut and again after it gives the same result as trimming once after it.
  while (!out.empty() && out.back() == ' ') out.pop_back();
}

std::string clean_value(std::string_view raw, size_t max_bytes) {
  std::string out;
  clean_value_into(raw, max_bytes, out);
  return out;
}

}  // namespace p35
