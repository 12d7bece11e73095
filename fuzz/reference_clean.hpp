// A second, deliberately naive implementation of DESIGN §2 cleaning, written from the contract's
// wording step by step (repair all, blank controls, trim, cut, trim) rather than in clean.cpp's
// single pass, so the fuzz targets can compare the two on any input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace p35::fuzz {

namespace detail {

// Bytes a lead byte announces (1..4), or 0 for a byte that cannot start a sequence.
inline size_t announced_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 0;
}

// Whether bytes p[0..len) (a lead and len-1 continuation bytes) can still become a well-formed
// character: the code points their completions reach form the interval [lo, hi], which must meet
// the valid code points of that length outside the surrogates.
inline bool viable_prefix(const unsigned char* p, size_t len, size_t total) {
  static constexpr uint32_t kLeadMask[5] = {0, 0x7F, 0x1F, 0x0F, 0x07};
  static constexpr uint32_t kMinForLength[5] = {0, 0, 0x80, 0x800, 0x10000};
  uint32_t lo = p[0] & kLeadMask[total];
  for (size_t k = 1; k < len; ++k) {
    if ((p[k] & 0xC0) != 0x80) return false;
    lo = (lo << 6) | (p[k] & 0x3Fu);
  }
  uint32_t hi = lo;
  for (size_t k = len; k < total; ++k) {
    lo = lo << 6;
    hi = (hi << 6) | 0x3F;
  }
  const uint32_t min = kMinForLength[total];
  const uint32_t max = 0x10FFFF;
  if (hi < min || lo > max) return false;
  const uint32_t from = lo < min ? min : lo;
  const uint32_t to = hi > max ? max : hi;
  return !(from >= 0xD800 && to <= 0xDFFF);  // not only surrogates
}

}  // namespace detail

// Unicode "maximal subpart" repair: each maximal prefix of a would-be character that cannot be
// completed becomes one U+FFFD.
inline std::string reference_repair(std::string_view raw) {
  std::string out;
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  size_t i = 0;
  while (i < raw.size()) {
    const size_t total = detail::announced_length(p[i]);
    size_t viable = 0;  // longest viable prefix that fits in the input
    for (size_t len = 1; total != 0 && len <= total && i + len <= raw.size(); ++len) {
      if (!detail::viable_prefix(p + i, len, total)) break;
      viable = len;
    }
    if (total != 0 && viable == total) {
      out.append(raw.substr(i, total));
      i += total;
    } else {
      out.append("\xEF\xBF\xBD");
      i += viable == 0 ? 1 : viable;
    }
  }
  return out;
}

inline std::string reference_clean(std::string_view raw, size_t max_bytes) {
  std::string s = reference_repair(raw);
  for (char& c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) c = ' ';
  }
  const size_t first = s.find_first_not_of(' ');
  s = first == std::string::npos ? std::string()
                                 : s.substr(first, s.find_last_not_of(' ') - first + 1);
  size_t cut = 0;  // longest prefix of whole characters within the limit
  while (cut < s.size()) {
    const size_t n = detail::announced_length(static_cast<unsigned char>(s[cut]));
    if (cut + n > max_bytes) break;
    cut += n;
  }
  s.resize(cut);
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

}  // namespace p35::fuzz
