// The benchmark's phases: raw limit, backlog drain, steady state under live load, idle.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "latency_probe.hpp"
#include "pipeline_harness.hpp"
#include "proc_stats.hpp"
#include "raw_limit.hpp"
#include "redis_fixture.hpp"

namespace p35::bench {

struct BenchOptions {
  bool quick = false;
  int iterations = 3;              // raw limit and drain, alternately
  uint64_t backlog = 1'000'000;    // entries of the loadgen mix
  double steady_s = 60;            // each live rate
  double idle_s = 60;
  std::vector<double> rates{2, 1000, 50000};
  int probes = 200;                // per rate (fewer when the rate itself is lower)
  int batch = 1000;                // XREADGROUP COUNT of ingest and of the raw loop
  uint64_t seed = 1;
  std::string out_path;            // the report is also written here
  std::string probe_log;           // one CSV line per probe (all rates), for looking at outliers
  bool skip_drain = false, skip_steady = false, skip_idle = false;
  std::map<std::string, std::string> stage_env;  // --stage-env K=V: settings to try on the stages
};

// What the bench knows about the machine and the programs it runs.
struct BenchContext {
  RedisServer& redis;
  const BenchOptions& opt;
  std::string work_dir;            // expect files and stage logs
};

inline constexpr size_t kStageCount = 3;  // ingest, rollup, ackd (the order of test::kStages)

// Commands Redis executed during a window (INFO commandstats), by lower-case name.
struct CommandStat {
  uint64_t calls = 0;
  uint64_t usec = 0;  // Redis's own time executing them
};
using CommandCalls = std::map<std::string, CommandStat>;

struct RawRun {
  RawLimitResult one, four;        // 1 and 4 XREADGROUPs in flight
  double redis_cpu_one = 0, redis_cpu_four = 0;
  double client_cpu_one = 0, client_cpu_four = 0;  // the bare loop itself
  double machine_cpu_four = 0;     // every process on the machine, 4 in flight
  CommandCalls calls_four;
};

struct DrainRun {
  uint64_t messages = 0;
  double counted_s = 0, committed_s = 0, acked_s = 0;  // from the stages' start
  std::array<double, kStageCount> stage_cpu{};          // % of a core over the drain
  double redis_cpu = 0;
  double machine_cpu = 0;          // every process on the machine
  CommandCalls calls;
  bool exact = false;
  std::vector<std::string> diffs;
  double msg_per_s() const { return acked_s > 0 ? static_cast<double>(messages) / acked_s : 0; }
};

struct SteadyRun {
  double rate = 0;                 // asked for (loadgen plus probes)
  double achieved = 0;             // entries written / seconds the writing took
  uint64_t written = 0;
  std::array<double, kStageCount> cpu{};
  double redis_cpu = 0;
  double machine_cpu = 0, loadgen_cpu = 0;
  std::array<MemorySample, kStageCount> mem_end{}, mem_peak{};
  uint64_t segment_kb = 0, segment_size_kb = 0;
  CommandCalls calls;              // during the writing window
  double window_s = 0;
  uint64_t ingest_waits = 0;       // backpressure: ingest waited for a slot, the ID log or strings
  ProbeResult probes;
  bool exact = false;
  std::vector<std::string> diffs;
};

struct IdleRun {
  double seconds = 0;
  std::array<double, kStageCount> cpu{};
  double redis_cpu = 0;
  std::array<MemorySample, kStageCount> mem{};
  CommandCalls calls;
};

// Writes the backlog once (it is re-read by every raw and drain run); returns its last ID.
std::string write_backlog(BenchContext& ctx, test::Expectation& expect);
RawRun run_raw(BenchContext& ctx, int iteration);
DrainRun run_drain(BenchContext& ctx, int iteration, const test::Expectation& expect,
                   const std::string& last_id);
SteadyRun run_steady(BenchContext& ctx, double rate);
IdleRun run_idle(BenchContext& ctx);

}  // namespace p35::bench
