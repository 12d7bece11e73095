// libFuzzer target: DESIGN §2 cleaning and cutting (clean_value) with every limit from 0 to 300,
// checked against the contract's promises and against a naive reference implementation.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "reference_clean.hpp"
#include "rules.hpp"

namespace {

using p35::fuzz::check;

constexpr size_t kMaxLimitBytes = 300;

// The cut is the longest one: unless nothing was cut, the next character of the uncut value
// (after the spaces the trim removed) did not fit.
void check_cut_is_longest(const std::string& out, const std::string& uncut, size_t limit) {
  check(uncut.compare(0, out.size(), out) == 0, "cut value is a prefix of the uncut one", out);
  if (uncut.size() == out.size()) return;
  size_t next = out.size();
  while (next < uncut.size() && uncut[next] == ' ') ++next;
  const size_t char_bytes =
      p35::fuzz::detail::announced_length(static_cast<unsigned char>(uncut[next]));
  check(next + char_bytes > limit, "cut shorter than the limit allows", out);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const size_t limit = (size_t{data[0]} | size_t{data[1]} << 8) % (kMaxLimitBytes + 1);
  const std::string_view raw(reinterpret_cast<const char*>(data + 2), size - 2);

  const std::string out = p35::clean_value(raw, limit);
  p35::fuzz::check_cleaned(out, limit, "clean_value");
  check(out == p35::fuzz::reference_clean(raw, limit), "clean_value differs from the reference",
        out);
  check(p35::clean_value(out, limit) == out, "clean_value is not idempotent", out);
  check_cut_is_longest(out, p35::clean_value(raw, SIZE_MAX), limit);

  // A value that is already clean and fits comes out unchanged.
  const bool already_clean = p35::fuzz::valid_utf8(raw) && !p35::fuzz::has_ascii_control(raw) &&
                             raw.size() <= limit &&
                             (raw.empty() || (raw.front() != ' ' && raw.back() != ' '));
  if (already_clean) check(out == raw, "a clean value was changed", out);

  // The buffer-reusing variant the ingest hot path uses gives the same result.
  std::string reused = "stale contents of a previous entry";
  p35::clean_value_into(raw, limit, reused);
  check(reused == out, "clean_value_into differs from clean_value", reused);
  return 0;
}
