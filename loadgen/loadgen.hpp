// The p35-loadgen run: writes generated entries to the stream with pipelined XADDs, as a backlog
// (as fast as possible) or live (paced evenly), and collects the expected bucket contents.
#pragma once

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "expect.hpp"
#include "generator.hpp"
#include "redis.hpp"

namespace p35::loadgen {

struct LoadgenOptions {
  uint64_t count = 0;     // entries to write
  double rate_per_s = 0;  // 0: backlog mode, as fast as the pipeline allows
  size_t pipeline = 256;  // XADDs in flight
  GeneratorOptions generator;
  bool explicit_ids = false;  // "<ms>-<seq>" chosen here instead of '*'
  int64_t start_ms = 0;       // first explicit ID's time
  double id_step_ms = 1.0;    // backlog: explicit ID time advance per entry (live: 1000 / rate)
  std::string stream = "quantum:stream:apply.result";
  uint64_t maxlen = 0;  // XADD MAXLEN ~ maxlen; 0: no trimming
  RedisOptions redis;
  std::string expect_path;  // empty: no expectation kept
  bool force = false;       // write even where consumer groups have consumers (--force)
};

// The stream has consumers that would take generated entries as real decisions (the default
// stream is the live trading stream); p35-loadgen exits 2 unless --force.
class RefusedStream : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RunResult {
  uint64_t written = 0;  // entries Redis confirmed
  uint64_t hostile = 0;  // of which edge cases
  double seconds = 0;    // first XADD sent to last reply read
  bool stopped = false;  // a signal ended the run early
  uint64_t reconnects = 0;   // failovers ridden out (with sentinels only)
  uint64_t unconfirmed = 0;  // entries in flight at those moments: written or not, unknown
};

class Loadgen {
 public:
  // `stop` is polled between entries (set by a signal handler).
  Loadgen(LoadgenOptions options, const std::atomic<bool>& stop);
  // Connects, refuses a stream with consumers unless options.force (RefusedStream), writes,
  // writes the expect file. Throws RedisError or std::runtime_error.
  RunResult run();
  const Expectation& expectation() const { return expectation_; }

 private:
  struct InFlight {
    Intent intent;
    int64_t base_ms = 0;
    bool hostile = false;
  };
  void run_backlog();
  void run_live();
  void send();
  void receive();
  // With sentinels: runs `step`, and after a lost connection or a write refused by a replica
  // (a failover) reconnects to the primary the sentinels name; other errors are rethrown.
  template <typename F>
  void riding_failovers(F&& step);
  void reconnect_after(const std::exception& e);
  int64_t next_explicit_id_ms();
  void build_xadd(int64_t id_ms);

  LoadgenOptions options_;
  const std::atomic<bool>& stop_;
  Connection conn_;
  Generator generator_;
  Expectation expectation_;
  Entry entry_;
  CommandArgs xadd_;
  std::vector<InFlight> window_;  // ring of the entries whose replies are still to come
  uint64_t sent_ = 0;
  uint64_t in_flight_ = 0;
  int64_t last_id_ms_ = -1;
  uint64_t last_id_seq_ = 0;
  RunResult result_;
  // Between reconnects of one failover (a demoted primary that still says "master" refuses each
  // write): reset by the first reply that works.
  Backoff reconnect_backoff_{1000};
};

// Milliseconds since the epoch by the wall clock (the clock Redis uses for '*' IDs).
int64_t wall_clock_ms();

}  // namespace p35::loadgen
