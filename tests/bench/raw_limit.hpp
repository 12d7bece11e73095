// The physical limit of draining a backlog: a bare hiredis loop that only XREADGROUPs and XACKs.
#pragma once

#include <cstdint>
#include <string>

namespace p35::bench {

struct RawLimitOptions {
  std::string unix_socket;
  std::string stream;
  std::string group;       // created at 0 before the run, destroyed after it
  std::string consumer = "raw";
  int batch = 1000;        // XREADGROUP COUNT, as the pipeline's P35_BATCH_SIZE
  int in_flight = 1;       // XREADGROUPs sent before their replies are read
};

struct RawLimitResult {
  uint64_t messages = 0;   // entries read and acked
  double seconds = 0;      // first request sent to last reply read
  double msg_per_s() const { return seconds > 0 ? static_cast<double>(messages) / seconds : 0; }
};

// Reads the whole stream through a fresh group with `in_flight` XREADGROUPs outstanding, and
// acks every batch as soon as it arrives (the XACK goes out with the next XREADGROUP). No field
// is looked at: only the entry IDs, which XACK needs. Throws std::runtime_error on any error.
RawLimitResult run_raw_limit(const RawLimitOptions& options);

}  // namespace p35::bench
