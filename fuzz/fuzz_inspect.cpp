// libFuzzer target: p35-shm's reading of a segment file with arbitrary contents. Whatever the
// file holds, open_readonly + take + the three renderings must either throw ShmError or succeed,
// never crash, hang or read outside the mapping, and the JSON must parse.
//
// Input: one mode byte, then either the file itself (even mode byte: "raw", exercising the
// header checks) or a patched image (odd: see segment_image.hpp, exercising everything after).
#include <fcntl.h>
#include <simdjson.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "inspect.hpp"
#include "segment_image.hpp"

namespace {

constexpr int kWindowMinutes = 15;
constexpr int64_t kNowMs = p35::fuzz::kImageCreatedMs + 20 * 60'000;  // fixed: runs reproduce

const std::string& segment_name() {
  static const std::string name = "p35fuzz-inspect-" + std::to_string(::getpid());
  return name;
}

void remove_segment() {
  ::unlink(p35::shm_path(segment_name()).c_str());
}

void write_segment(const uint8_t* bytes, size_t size) {
  const int fd =
      ::open(p35::shm_path(segment_name()).c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  p35::fuzz::check(fd >= 0, "cannot create the segment file under /dev/shm");
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::write(fd, bytes + done, size - done);
    p35::fuzz::check(n > 0, "cannot write the segment file");
    done += static_cast<size_t>(n);
  }
  ::close(fd);
}

void inspect_once() {
  try {
    const p35::Segment seg = p35::Segment::open_readonly(segment_name());
    const p35::inspect::Snapshot snap = p35::inspect::take(seg, kWindowMinutes, kNowMs, kNowMs);
    (void)p35::inspect::render_text(snap, kWindowMinutes);
    (void)p35::inspect::render_prometheus(snap);
    const std::string json = p35::inspect::render_json(snap);
    static simdjson::dom::parser parser;
    simdjson::dom::element root;
    const auto error = parser.parse(json).get(root);
    p35::fuzz::check(!error, "render_json is not valid JSON", simdjson::error_message(error));
  } catch (const p35::ShmError&) {
    // The documented refusal of a segment that is not one (or not of this layout).
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  segment_name();  // constructed before the handler is registered, so destroyed after it runs
  std::atexit(remove_segment);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if ((data[0] & 1) == 0) {
    write_segment(data + 1, size - 1);
  } else {
    const std::vector<uint8_t> image = p35::fuzz::patched_image(data + 1, size - 1);
    write_segment(image.data(), image.size());
  }
  inspect_once();
  return 0;
}
