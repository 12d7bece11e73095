// p35-ackd: acknowledges stream entries once rollup has committed their counts.
#include <spdlog/spdlog.h>

#include "ackd.hpp"
#include "config.hpp"
#include "daemon.hpp"
#include "version.hpp"

namespace {
int run(const p35::Config& cfg) {
  spdlog::info("Starting p35-ackd {}: {}", P35_VERSION, p35::describe(cfg));
  auto seg = p35::open_stage_segment(cfg);
  p35::Ackd ackd(cfg, seg);
  return ackd.run();
}
}  // namespace

int main(int argc, char** argv) {
  const p35::ProgramInfo info{
      "p35-ackd",
      "Acknowledges (XACK), in batches, the stream entries whose counts p35-rollup has committed "
      "to Redis, reading their IDs from the shared-memory ID log; re-acking after a restart is "
      "harmless."};
  return p35::run_main(argc, argv, info, run);
}
