// Raw values with a known cleaned image: the generator's own model of DESIGN §2 cleaning, built
// by construction (each piece says what it becomes) rather than by decoding arbitrary bytes.
#include "garble.hpp"

#include <array>
#include <stdexcept>

namespace p35::loadgen {

namespace {
// Each snippet is complete on its own when followed by ASCII or the end of the value: a truncated
// sequence is one maximal subpart (one U+FFFD); a byte that can start nothing is one U+FFFD each.
constexpr std::array kSnippets{
    InvalidSnippet{"\xFF", 1},              // never valid
    InvalidSnippet{"\xFE\xFF", 2},          // two bytes that are never valid
    InvalidSnippet{"\x80", 1},              // lone continuation byte
    InvalidSnippet{"\x80\xBF\x80", 3},      // three lone continuation bytes
    InvalidSnippet{"\xC3", 1},              // truncated 2-byte sequence
    InvalidSnippet{"\xE2\x82", 1},          // truncated 3-byte sequence (half a euro sign)
    InvalidSnippet{"\xF0\x9F\x98", 1},      // truncated 4-byte sequence (most of an emoji)
    InvalidSnippet{"\xC0\x80", 2},          // overlong NUL: C0 starts nothing
    InvalidSnippet{"\xE0\x80\x80", 3},      // overlong: E0 needs A0..BF next
    InvalidSnippet{"\xED\xA0\x80", 3},      // UTF-16 surrogate D800 encoded in UTF-8
    InvalidSnippet{"\xF4\x90\x80\x80", 4},  // above U+10FFFF
    InvalidSnippet{"\xF5\x80", 2},          // F5 starts nothing
};

bool is_continuation(unsigned char byte) {
  return (byte & 0xC0) == 0x80;
}
}  // namespace

std::span<const InvalidSnippet> invalid_snippets() {
  return kSnippets;
}

std::string_view cut_whole_chars(std::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t n = max_bytes;
  // The byte at n starts the first character that does not fit; back up to a character start.
  while (n > 0 && is_continuation(static_cast<unsigned char>(text[n]))) --n;
  return text.substr(0, n);
}

std::string_view trim_spaces(std::string_view text) {
  const size_t first = text.find_first_not_of(' ');
  if (first == std::string_view::npos) return {};
  return trim_trailing_spaces(text.substr(first));
}

std::string_view trim_trailing_spaces(std::string_view text) {
  const size_t last = text.find_last_not_of(' ');
  return last == std::string_view::npos ? std::string_view{} : text.substr(0, last + 1);
}

void Garbled::clear() {
  raw_.clear();
  image_.clear();
  has_invalid_ = false;
  last_was_invalid_ = false;
}

Garbled& Garbled::text(std::string_view utf8) {
  for (char c : utf8) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7F) throw std::logic_error("Garbled::text given a control byte");
  }
  raw_.append(utf8);
  image_.append(utf8);
  if (!utf8.empty()) last_was_invalid_ = false;
  return *this;
}

Garbled& Garbled::control(char c) {
  raw_.push_back(c);
  image_.push_back(' ');
  last_was_invalid_ = false;
  return *this;
}

Garbled& Garbled::invalid(const InvalidSnippet& snippet) {
  if (last_was_invalid_) text("_");
  raw_.append(snippet.bytes);
  for (int i = 0; i < snippet.replacements; ++i) image_.append(kReplacementChar);
  has_invalid_ = true;
  last_was_invalid_ = true;
  return *this;
}

void Garbled::cleaned(size_t max_bytes, std::string& out) const {
  const std::string_view cut = cut_whole_chars(trim_spaces(image_), max_bytes);
  out.assign(trim_trailing_spaces(cut));
}

}  // namespace p35::loadgen
