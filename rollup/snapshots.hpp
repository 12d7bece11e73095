// Window snapshots (1m/5m/15m/1h decision counts, top-50 reasons, unknown decisions of 5m) from
// rollup's committed shadow, each key replaced atomically in one MULTI/EXEC; and the status hash.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config.hpp"
#include "redis.hpp"
#include "shm.hpp"

namespace p35 {

struct WindowCounts {
  std::map<std::string, uint64_t> decisions;  // "EXECUTE", ..., "UNKNOWN:x", "UNKNOWN"
  std::map<std::string, uint64_t> reasons;
  std::map<std::string, uint64_t> unknown_members;  // filled for every window, written for 5m
};

// Sum the committed shadow over the W most recent minutes up to now_minute, for each window.
std::vector<WindowCounts> compute_windows(const Segment& seg, int64_t now_minute);

// The top n of a count map: count descending, ties to the smaller name in byte order.
std::vector<std::pair<std::string, uint64_t>> top_n(const std::map<std::string, uint64_t>& m,
                                                    size_t n);

class SnapshotWriter {
 public:
  SnapshotWriter(const Config& cfg, Segment& seg) : cfg_(cfg), seg_(seg) {}
  // Rewrites every snapshot key when the committed counts or the minute changed (or every 10
  // minutes to refresh TTLs). Returns true if it wrote.
  bool write(Connection& conn, bool force);

 private:
  const Config& cfg_;
  Segment& seg_;
  uint64_t last_commit_count_ = UINT64_MAX;
  int64_t last_minute_ = 0;
  int64_t last_write_ms_ = 0;
};

class StatusWriter {
 public:
  StatusWriter(const Config& cfg, Segment& seg) : cfg_(cfg), seg_(seg) {}
  void write(Connection& conn);

 private:
  const Config& cfg_;
  Segment& seg_;
  uint64_t last_counted_ = 0;
  uint64_t last_acked_ = 0;
  int64_t last_ms_ = 0;
};

}  // namespace p35
