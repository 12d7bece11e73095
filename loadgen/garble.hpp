// Raw field values built piece by piece together with the text DESIGN §2 cleaning must turn them
// into, so the load generator knows each entry's intended outcome without running the rules.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

namespace p35::loadgen {

// Ill-formed UTF-8 and how many U+FFFD the Unicode "maximal subpart" practice makes of it.
struct InvalidSnippet {
  std::string_view bytes;
  int replacements;
};
std::span<const InvalidSnippet> invalid_snippets();

// The limits of DESIGN §2, restated here so that the oracle does not borrow the rules' constants.
inline constexpr size_t kReasonLimitBytes = 200;
inline constexpr size_t kShortLimitBytes = 64;  // decisions, symbols, `executed`

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

// The longest prefix of valid UTF-8 `text` made of whole characters and at most max_bytes long.
std::string_view cut_whole_chars(std::string_view text, size_t max_bytes);

// Strip ASCII spaces (only 0x20: control characters were already turned into spaces).
std::string_view trim_spaces(std::string_view text);
std::string_view trim_trailing_spaces(std::string_view text);

// One raw value and its cleaned image. The image is what §2 cleaning makes of the raw bytes before
// trimming and cutting; cleaned() then trims, cuts and trims again the way §2 says.
class Garbled {
 public:
  void clear();
  // Valid UTF-8 without ASCII control characters: kept as it is.
  Garbled& text(std::string_view utf8);
  // An ASCII control character (0x00-0x1F, 0x7F): becomes one space.
  Garbled& control(char c);
  // Ill-formed bytes: become snippet.replacements x U+FFFD.
  Garbled& invalid(const InvalidSnippet& snippet);

  const std::string& raw() const { return raw_; }
  const std::string& image() const { return image_; }
  bool has_invalid_utf8() const { return has_invalid_; }
  // The cleaned value for a field whose limit is max_bytes (200 for reasons, 64 for the others).
  void cleaned(size_t max_bytes, std::string& out) const;

 private:
  std::string raw_;
  std::string image_;
  bool has_invalid_ = false;
  // A snippet right after another could merge with it into a different (even valid) sequence.
  bool last_was_invalid_ = false;
};

}  // namespace p35::loadgen
