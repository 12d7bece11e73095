// Shared helpers of the fuzz targets: a failed property aborts with a message (libFuzzer then
// saves the input), and an independent strict UTF-8 validator to judge the rules' output by.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace p35::fuzz {

// Abort, not assert: the check must hold in every build type, and abort() is what libFuzzer
// reports as a crash with the input that caused it.
[[noreturn]] inline void fail(const char* what, std::string_view detail) {
  std::fprintf(stderr, "PROPERTY VIOLATED: %s [%.*s]\n", what, static_cast<int>(detail.size()),
               detail.data());
  std::abort();
}

inline void check(bool ok, const char* what, std::string_view detail = {}) {
  if (!ok) fail(what, detail);
}

// Strict UTF-8 (RFC 3629): decodes each sequence and rejects overlongs, surrogates and code
// points above U+10FFFF by value, not by the lead-byte ranges clean.cpp uses, so the two
// implementations do not share a mistake.
inline bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    size_t extra = 0;
    uint32_t cp = 0;
    if (lead < 0x80) {
      ++i;
      continue;
    }
    if ((lead & 0xE0) == 0xC0) {
      extra = 1;
      cp = lead & 0x1Fu;
    } else if ((lead & 0xF0) == 0xE0) {
      extra = 2;
      cp = lead & 0x0Fu;
    } else if ((lead & 0xF8) == 0xF0) {
      extra = 3;
      cp = lead & 0x07u;
    } else
      return false;
    if (i + extra >= s.size()) return false;  // truncated at the end
    for (size_t k = 1; k <= extra; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3Fu);
    }
    static constexpr uint32_t kMinForLength[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

inline bool has_ascii_control(std::string_view s) {
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7F) return true;
  }
  return false;
}

// What DESIGN §2 promises of every cleaned value: valid UTF-8, within its byte limit, no ASCII
// controls, no leading or trailing space.
inline void check_cleaned(std::string_view v, size_t max_bytes, const char* what) {
  check(valid_utf8(v), what, "not valid UTF-8");
  check(v.size() <= max_bytes, what, "longer than its limit");
  check(!has_ascii_control(v), what, "contains an ASCII control character");
  check(v.empty() || (v.front() != ' ' && v.back() != ' '), what, "leading or trailing space");
}

}  // namespace p35::fuzz
