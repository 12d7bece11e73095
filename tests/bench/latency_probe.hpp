// Latency probes: marker entries XADDed at known times, then watched at >= 1 kHz until they are
// counted in shm, visible in their minute bucket, visible in the 1m snapshot, and acked.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pipeline_harness.hpp"
#include "redis.hpp"
#include "shm.hpp"
#include "stream_id.hpp"

namespace p35::bench {

// The four moments measured from the XADD; when this grows, update kMomentNames.
enum Moment : size_t { kCounted = 0, kBucket = 1, kSnapshot = 2, kAcked = 3, kMomentCount = 4 };
inline constexpr std::array<const char*, kMomentCount> kMomentNames{
    "counted in shm", "visible in bucket", "visible in 1m snapshot", "acked"};

struct ProbeRecord {
  int index = 0;
  StreamId id;
  int64_t minute = 0;                     // the entry ID's minute: no timestamp field
  int64_t sent_ns = 0;                    // monotonic, just before the XADD went out
  int64_t sent_wall_ms = 0;               // for the per-probe log
  std::array<int64_t, kMomentCount> at_ns{-1, -1, -1, -1};  // monotonic; -1: not seen
  bool snapshot_missed = false;           // its minute left the 1m window before it was seen
};

struct ProbeOptions {
  std::string stream;
  std::string key_prefix;
  std::string segment;      // shm name
  int probes = 200;         // spread evenly over the run
  double run_s = 60;        // probes are sent during this time
  double straggler_s = 15;  // then at most this long for the last ones to be seen
  int poll_sleep_us = 200;  // between polls (each poll also takes a Redis round trip or none)
};

struct ProbeResult {
  std::vector<ProbeRecord> probes;
  double polls_per_s = 0;
  uint64_t polls = 0;
};

// Runs in the calling thread; `tick` is called about every second (e.g. to sample memory).
class LatencyProbe {
 public:
  LatencyProbe(const RedisOptions& redis, ProbeOptions options);
  ProbeResult run(const std::function<void()>& tick);
  // The buckets and unknown members the probes add, to merge into loadgen's expectation.
  void add_to(test::Expectation& e, const ProbeResult& r) const;

  static std::string decision_of(int index) { return "PROBE-" + std::to_string(index); }
  static constexpr const char* kReason = "latency_probe";

 private:
  std::vector<int64_t> schedule_ns(int64_t start_ns, int64_t start_wall_ms) const;
  void send(ProbeRecord& p);
  void poll_shm(std::vector<ProbeRecord>& ps, int64_t now_ns);
  void poll_redis(std::vector<ProbeRecord>& ps, int64_t now_ns);
  bool done(const ProbeRecord& p) const;

  Connection conn_;
  ProbeOptions opt_;
  Segment seg_;
};

// Nearest-rank percentile (q in [0, 100]) of a sorted vector; 0 when empty.
double percentile(const std::vector<double>& sorted, double q);

}  // namespace p35::bench
