// p35-bench: one command that measures the pipeline on this machine against a private
// redis-server (raw limit, drain, steady state, idle) and prints the report as Markdown.
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "phases.hpp"
#include "report.hpp"

namespace {

using p35::bench::BenchOptions;

constexpr const char* kUsage = R"(Usage: p35-bench [OPTION]...
Measures P3.5 on this machine against a private redis-server and prints Markdown tables:
  1. raw limit: a bare hiredis XREADGROUP + XACK loop, 1 and 4 requests in flight
  2. drain of a backlog by the three stages (alternating with 1; min/median/max)
  3. steady state at live rates: CPU and private RSS per stage, latency from XADD
  4. idle: CPU per stage with no traffic

  --quick            shorter phases (200,000-entry backlog, 10 s per rate and idle, 40 probes)
  --iterations N     raw and drain runs (default 3)
  --backlog N        backlog entries (default 1000000)
  --steady-s S       seconds per live rate (default 60)
  --idle-s S         idle seconds (default 60)
  --rates R,R,...    live rates in msg/s (default 2,1000,50000)
  --probes N         latency probes per rate (default 200)
  --out FILE         also write the report to FILE
  --probe-log FILE   append one CSV line per latency probe to FILE
  --skip-drain, --skip-steady, --skip-idle
  --stage-env K=V    extra setting for the three stages (e.g. P35_COMMIT_LINGER_MS=5); repeatable
  --keep             keep the work dir (stage logs, expect files)
  --help
)";

std::vector<double> parse_rates(const std::string& s) {
  std::vector<double> v;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) v.push_back(std::stod(item));
  return v;
}

BenchOptions parse(int argc, char** argv, bool& keep) {
  BenchOptions o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(EXIT_SUCCESS);
    } else if (a == "--quick") {
      o.quick = true, o.backlog = 200000, o.steady_s = 10, o.idle_s = 10, o.probes = 40;
    } else if (a == "--iterations") {
      o.iterations = std::stoi(value());
    } else if (a == "--backlog") {
      o.backlog = std::stoull(value());
    } else if (a == "--steady-s") {
      o.steady_s = std::stod(value());
    } else if (a == "--idle-s") {
      o.idle_s = std::stod(value());
    } else if (a == "--rates") {
      o.rates = parse_rates(value());
    } else if (a == "--probes") {
      o.probes = std::stoi(value());
    } else if (a == "--out") {
      o.out_path = value();
    } else if (a == "--probe-log") {
      o.probe_log = value();
    } else if (a == "--skip-drain") {
      o.skip_drain = true;
    } else if (a == "--skip-steady") {
      o.skip_steady = true;
    } else if (a == "--skip-idle") {
      o.skip_idle = true;
    } else if (a == "--stage-env") {
      const std::string kv = value();
      const auto eq = kv.find('=');
      if (eq == std::string::npos) throw std::invalid_argument("--stage-env needs NAME=VALUE");
      o.stage_env[kv.substr(0, eq)] = kv.substr(eq + 1);
    } else if (a == "--keep") {
      keep = true;
    } else {
      throw std::invalid_argument("unknown option " + a + " (see --help)");
    }
  }
  if (o.iterations < 1 || o.backlog < 1000 || o.steady_s < 1 || o.idle_s < 1 || o.probes < 1)
    throw std::invalid_argument("--iterations, --backlog, --steady-s, --idle-s and --probes must be positive (backlog >= 1000)");
  return o;
}

// The harness finds the binaries through these variables; default to this build's.
void default_binaries() {
  setenv("P35_INGEST_BIN", P35_BENCH_INGEST, 0);
  setenv("P35_ROLLUP_BIN", P35_BENCH_ROLLUP, 0);
  setenv("P35_ACKD_BIN", P35_BENCH_ACKD, 0);
  setenv("P35_LOADGEN_BIN", P35_BENCH_LOADGEN, 0);
  setenv("P35_REDIS_SERVER", P35_BENCH_REDIS_SERVER, 0);
}

std::string first_line_with(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) {
      const auto colon = line.find(':');
      auto v = colon == std::string::npos ? line : line.substr(colon + 1);
      v.erase(0, v.find_first_not_of(" \t"));
      return v;
    }
  return "?";
}

std::string machine_line(p35::RedisServer& redis) {
  utsname u{};
  ::uname(&u);
  std::string loadavg;
  std::getline(std::ifstream("/proc/loadavg"), loadavg);
  std::string redis_version = "?";
  const p35::Reply info = redis.connect().command({"INFO", "server"});
  std::istringstream in{std::string(info.str())};
  for (std::string line; std::getline(in, line);)
    if (line.rfind("redis_version:", 0) == 0) redis_version = line.substr(14, line.find('\r') - 14);
  return "Machine: " + first_line_with("/proc/cpuinfo", "model name") + ", " +
         std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " cores, " +
         first_line_with("/proc/meminfo", "MemTotal") + ", Linux " + u.release + "; redis-server " +
         redis_version + " on a unix socket; load average at start " +
         loadavg.substr(0, loadavg.find(' ', loadavg.find(' ', loadavg.find(' ') + 1) + 1)) + ".";
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  char b[64];
  std::strftime(b, sizeof b, "%Y-%m-%d %H:%M UTC", std::gmtime(&t));
  return b;
}

void say(const std::string& s) {
  std::fprintf(stderr, "p35-bench: %s\n", s.c_str());
}

p35::bench::BenchResults run(p35::bench::BenchContext& ctx) {
  using namespace p35::bench;
  const auto& opt = ctx.opt;
  BenchResults r;
  r.started_utc = utc_now();
  r.machine = machine_line(ctx.redis);
  p35::test::Expectation expect;
  say("writing a backlog of " + std::to_string(opt.backlog) + " entries");
  const std::string last_id = write_backlog(ctx, expect);
  for (int i = 1; i <= opt.iterations; ++i) {
    say("run " + std::to_string(i) + ": raw limit (1 and 4 in flight)");
    r.raw.push_back(run_raw(ctx, i));
    say("  raw: " + std::to_string(static_cast<long>(r.raw.back().one.msg_per_s())) + " msg/s with 1 in flight, " +
        std::to_string(static_cast<long>(r.raw.back().four.msg_per_s())) + " with 4");
    if (opt.skip_drain) continue;
    say("run " + std::to_string(i) + ": drain by the three stages");
    r.drain.push_back(run_drain(ctx, i, expect, last_id));
    say("  drained in " + std::to_string(r.drain.back().acked_s) + " s: " +
        std::to_string(static_cast<long>(r.drain.back().msg_per_s())) + " msg/s" +
        (r.drain.back().exact ? ", exact" : ", NOT EXACT"));
  }
  if (!opt.skip_steady)
    for (double rate : opt.rates) {
      say("steady state at " + std::to_string(rate) + " msg/s for " + std::to_string(opt.steady_s) + " s");
      r.steady.push_back(run_steady(ctx, rate));
      const auto& s = r.steady.back();
      say("  CPU ingest/rollup/ackd " + std::to_string(s.cpu[0]) + " / " + std::to_string(s.cpu[1]) + " / " +
          std::to_string(s.cpu[2]) + " %" + (s.exact ? ", exact" : ", NOT EXACT"));
    }
  if (!opt.skip_idle) {
    say("idle for " + std::to_string(opt.idle_s) + " s");
    r.idle.push_back(run_idle(ctx));
  }
  std::string loadavg;
  std::getline(std::ifstream("/proc/loadavg"), loadavg);
  r.machine += " Load average at the end " + loadavg.substr(0, loadavg.find(' ', loadavg.find(' ', loadavg.find(' ') + 1) + 1)) +
               " (other processes on this 2-core machine share the CPUs with the run).";
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  bool keep = false;
  std::string work_dir;
  try {
    const BenchOptions opt = parse(argc, argv, keep);
    default_binaries();
    std::string pattern = "/tmp/p35-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("cannot create a work dir in /tmp");
    work_dir = pattern;
    p35::RedisServer redis;
    p35::bench::BenchContext ctx{redis, opt, work_dir};
    const auto results = run(ctx);
    const std::string report = p35::bench::render_report(opt, results);
    std::fputs(report.c_str(), stdout);
    if (!opt.out_path.empty()) std::ofstream(opt.out_path) << report;
    if (!keep) std::filesystem::remove_all(work_dir);
    return EXIT_SUCCESS;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "p35-bench: %s\n", e.what());
    if (!work_dir.empty()) std::fprintf(stderr, "p35-bench: logs kept in %s\n", work_dir.c_str());
    return EXIT_FAILURE;
  }
}
