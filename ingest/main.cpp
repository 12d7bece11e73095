// p35-ingest: reads the decision stream and counts every entry into the shared-memory minute ring.
#include <cstdlib>

#include <spdlog/spdlog.h>

#include "config.hpp"
#include "daemon.hpp"
#include "ingest.hpp"
#include "version.hpp"

namespace {
int run(const p35::Config& cfg) {
  spdlog::info("Starting p35-ingest {}: {}", P35_VERSION, p35::describe(cfg));
  auto seg = p35::open_stage_segment(cfg);
  p35::Ingest ingest(cfg, seg);
  return ingest.run();
}
}  // namespace

int main(int argc, char** argv) {
  const p35::ProgramInfo info{
      "p35-ingest",
      "Reads the trade-decision stream with XREADGROUP (its own pending list first after a "
      "restart), normalises each entry by the P3.5 message rules and counts it into the "
      "shared-memory minute ring, batch by batch, exactly once. rollup commits the counts to "
      "Redis; ackd acknowledges the entries afterwards."};
  return p35::run_main(argc, argv, info, run);
}
