// p35-shm: read-only inspector of the P3.5 shared-memory segment (text, --json, --prometheus,
// --watch); never takes a lock or writes a byte the stages use.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cxxopts.hpp>
#include <string>
#include <thread>

#include "config.hpp"
#include "daemon.hpp"
#include "inspect.hpp"
#include "shm.hpp"
#include "textfile.hpp"
#include "version.hpp"

namespace {

struct Rendered {
  std::string out;  // what to print or write (may be empty)
  int code = EXIT_SUCCESS;
};

// One snapshot in `format`; a segment that cannot be read gives exit code 1 and, for --json and
// --prometheus, an output that says so ({"error":...}, p35_up 0), the reason on stderr.
Rendered render_once(const std::string& name, const std::string& format, int window_minutes) {
  try {
    const auto seg = p35::Segment::open_readonly(name);
    const auto snap = p35::inspect::take(seg, window_minutes, p35::now_unix_ms(),
                                         p35::now_boot_ms());
    if (format == "json") return {p35::inspect::render_json(snap)};
    if (format == "prometheus") return {p35::inspect::render_prometheus(snap)};
    return {p35::inspect::render_text(snap, window_minutes)};
  } catch (const p35::ShmError& e) {
    if (format == "json") return {p35::inspect::render_json_error(e.what()), EXIT_FAILURE};
    std::fprintf(stderr, "p35-shm: %s\n", e.what());
    if (format == "prometheus") return {p35::inspect::render_prometheus_down(name), EXIT_FAILURE};
    return {"", EXIT_FAILURE};
  }
}

// Prints the snapshot, or with --output writes it atomically (exit code 3 if that fails).
int run_once(const std::string& name, const std::string& format, int window_minutes,
             const std::string& output_path) {
  const Rendered r = render_once(name, format, window_minutes);
  if (output_path.empty()) {
    std::fwrite(r.out.data(), 1, r.out.size(), stdout);
    std::fflush(stdout);
    return r.code;
  }
  if (r.out.empty()) return r.code;  // text of an unreadable segment: nothing to replace the file with
  if (const std::string error = p35::inspect::write_atomically(output_path, r.out); !error.empty()) {
    std::fprintf(stderr, "p35-shm: %s\n", error.c_str());
    return 3;
  }
  return r.code;
}

// The segment name as the stages find it: --shm-name, else P35_SHM_NAME from the environment,
// else from --env-file (the stages' precedence), else the default. Throws ConfigError for an
// unreadable or malformed env file.
std::string segment_name(const cxxopts::ParseResult& r) {
  if (r.count("shm-name") != 0) return r["shm-name"].as<std::string>();
  if (const char* v = std::getenv("P35_SHM_NAME")) return v;
  if (r.count("env-file") != 0) {
    const auto file = p35::read_env_file(r["env-file"].as<std::string>());
    if (const auto it = file.find("P35_SHM_NAME"); it != file.end()) return it->second;
  }
  return p35::Config{}.shm_name;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options opts("p35-shm",
                        "Shows the P3.5 shared-memory segment: header, stages (pid, alive, "
                        "heartbeat, state), watermarks and lags, ring occupancy, per-minute "
                        "decisions, top reasons, totals. Maps the segment read-only.");
  opts.add_options()
      ("shm-name", "segment name under /dev/shm (default: P35_SHM_NAME from the environment, "
                   "then from --env-file, then quantum-p35)", cxxopts::value<std::string>())
      ("env-file", "read P35_SHM_NAME from FILE (KEY=VALUE lines, as the stages' "
                   "/etc/quantum/p35-decision-intelligence.env)", cxxopts::value<std::string>())
      ("json", "print JSON instead of text")
      ("output", "write to FILE atomically (temporary file in its directory, then rename) "
                 "instead of stdout, as node_exporter's textfile collector needs", cxxopts::value<std::string>())
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
    const std::string name = segment_name(r);
    const int window = r["window"].as<int>();
    if (window < 1 || window > 60) {
      std::fprintf(stderr, "p35-shm: --window must be 1..60 minutes\n");
      return 2;
    }
    const std::string output = r.count("output") ? r["output"].as<std::string>() : "";
    if (r.count("watch") == 0) return run_once(name, format, window, output);
    const int every_ms = std::max(100, r["watch"].as<int>());
    p35::install_stop_signals();
    while (!p35::stop_requested()) {
      if (format == "text" && output.empty()) std::fputs("\x1b[H\x1b[2J", stdout);
      run_once(name, format, window, output);
      p35::sleep_unless_stopped(every_ms);
    }
    return EXIT_SUCCESS;
  } catch (const cxxopts::exceptions::exception& e) {
    std::fprintf(stderr, "p35-shm: %s\n", e.what());
    return 2;
  } catch (const p35::ConfigError& e) {
    std::fprintf(stderr, "p35-shm: %s\n", e.what());
    return 2;
  }
}
