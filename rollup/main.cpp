// p35-rollup: commits the minute ring to the Redis buckets exactly once and publishes snapshots.
#include <spdlog/spdlog.h>

#include "config.hpp"
#include "daemon.hpp"
#include "rollup.hpp"
#include "version.hpp"

namespace {
int run(const p35::Config& cfg) {
  spdlog::info("Starting p35-rollup {}: {}", P35_VERSION, p35::describe(cfg));
  auto seg = p35::open_stage_segment(cfg);
  p35::Rollup rollup(cfg, seg);
  return rollup.run();
}
}  // namespace

int main(int argc, char** argv) {
  const p35::ProgramInfo info{
      "p35-rollup",
      "Commits the counts that p35-ingest put in the shared-memory minute ring to the Redis "
      "minute buckets, exactly once, with a compare-and-set on the consumer's commit marker; "
      "refreshes the 1m/5m/15m/1h snapshots, the top-50 reasons and the status hash."};
  return p35::run_main(argc, argv, info, run);
}
