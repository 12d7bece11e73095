// p35-shm: read-only inspector of the P3.5 shared-memory segment (text, --json, --prometheus,
// --watch); never takes a lock or writes a byte the stages use.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cxxopts.hpp>
#include <string>
#include <thread>

#include "daemon.hpp"
#include "inspect.hpp"
#include "shm.hpp"
#include "version.hpp"

namespace {

int run_once(const std::string& name, const std::string& format, int window_minutes) {
  try {
    const auto seg = p35::Segment::open_readonly(name);
    const auto snap = p35::inspect::take(seg, window_minutes, p35::now_unix_ms());
    std::string out = format == "json"         ? p35::inspect::render_json(snap)
                      : format == "prometheus" ? p35::inspect::render_prometheus(snap)
                                               : p35::inspect::render_text(snap, window_minutes);
    std::fwrite(out.data(), 1, out.size(), stdout);
    std::fflush(stdout);
    return EXIT_SUCCESS;
  } catch (const p35::ShmError& e) {
    if (format == "json")
      std::fputs(p35::inspect::render_json_error(e.what()).c_str(), stdout);
    else
      std::fprintf(stderr, "p35-shm: %s\n", e.what());
    return EXIT_FAILURE;
  }
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options opts("p35-shm",
                        "Shows the P3.5 shared-memory segment: header, stages (pid, alive, "
                        "heartbeat, state), watermarks and lags, ring occupancy, per-minute "
                        "decisions, top reasons, totals. Maps the segment read-only.");
  opts.add_options()
      ("shm-name", "segment name under /dev/shm (P35_SHM_NAME)",
       cxxopts::value<std::string>()->default_value(std::getenv("P35_SHM_NAME") ? std::getenv("P35_SHM_NAME") : "quantum-p35"))
      ("json", "print JSON instead of text")
      ("prometheus", "print the Prometheus text exposition format")
      ("window", "minutes of the top-reasons window", cxxopts::value<int>()->default_value("5"))
      ("watch", "print again every N milliseconds", cxxopts::value<int>()->implicit_value("1000"))
      ("version", "print the version")
      ("h,help", "print this help");
  try {
    const auto r = opts.parse(argc, argv);
    if (r.count("help") != 0) {
      std::puts(opts.help().c_str());
      return EXIT_SUCCESS;
    }
    if (r.count("version") != 0) {
      std::printf("p35-shm %s\n", P35_VERSION);
      return EXIT_SUCCESS;
    }
    const std::string format = r.count("json") ? "json" : r.count("prometheus") ? "prometheus" : "text";
    const std::string name = r["shm-name"].as<std::string>();
    const int window = r["window"].as<int>();
    if (window < 1 || window > 60) {
      std::fprintf(stderr, "p35-shm: --window must be 1..60 minutes\n");
      return 2;
    }
    if (r.count("watch") == 0) return run_once(name, format, window);
    const int every_ms = std::max(100, r["watch"].as<int>());
    p35::install_stop_signals();
    while (!p35::stop_requested()) {
      if (format == "text") std::fputs("\x1b[H\x1b[2J", stdout);
      run_once(name, format, window);
      p35::sleep_unless_stopped(every_ms);
    }
    return EXIT_SUCCESS;
  } catch (const cxxopts::exceptions::exception& e) {
    std::fprintf(stderr, "p35-shm: %s\n", e.what());
    return 2;
  }
}
