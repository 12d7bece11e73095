// The benchmark's report: Markdown tables of every phase and of each figure against its target.
#pragma once

#include <string>
#include <vector>

#include "phases.hpp"

namespace p35::bench {

struct BenchResults {
  std::string machine;               // one line: CPU, cores, memory, kernel, redis, load
  std::string started_utc;
  std::vector<RawRun> raw;
  std::vector<DrainRun> drain;
  std::vector<SteadyRun> steady;
  std::vector<IdleRun> idle;         // zero or one
};

std::string render_report(const BenchOptions& opt, const BenchResults& r);

}  // namespace p35::bench
