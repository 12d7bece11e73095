// p35-loadgen: writes realistic (and, with --edge-cases, hostile) trade-decision entries to the
// stream for tests, benchmarks and the demo, and the bucket contents they must produce.
#include <fmt/format.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cxxopts.hpp>
#include <exception>
#include <optional>
#include <string>
#include <type_traits>

#include "config.hpp"
#include "loadgen.hpp"
#include "version.hpp"

namespace {

std::atomic<bool> g_stop{false};

void on_signal(int) {
  g_stop.store(true, std::memory_order_relaxed);
}

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

cxxopts::Options make_options() {
  cxxopts::Options o("p35-loadgen",
                     "Writes trade-decision entries shaped like the real producers' to the stream "
                     "(deterministic from --seed) and, with --expect, the bucket contents the P3.5 "
                     "rules must produce from them.\nBacklog: --count N. Live: --rate R "
                     "--duration-s S (or --rate R --count N).\n");
  // clang-format off
  o.add_options()
      ("count", "Entries to write", cxxopts::value<uint64_t>())
      ("rate", "Live mode: entries per second, paced evenly", cxxopts::value<double>())
      ("duration-s", "Live mode: seconds to run (entries = rate x duration)",
       cxxopts::value<double>())
      ("pipeline", "XADDs in flight", cxxopts::value<size_t>()->default_value("256"))
      ("seed", "Random seed (same seed, same entries)",
       cxxopts::value<uint64_t>()->default_value("1"))
      ("edge-cases", "Mix in hostile entries (invalid UTF-8, control characters, huge values, "
                     "bad JSON, odd timestamps, duplicate fields)")
      ("edge-fraction", "Share of hostile entries with --edge-cases",
       cxxopts::value<double>()->default_value("0.1"))
      ("distinct-reasons", "Flood: share of entries (0..1) whose reason is a never-repeating "
                           "exchange error; 1 makes every reason distinct",
       cxxopts::value<double>()->default_value("0"))
      ("symbols", "Flood: draw symbols uniformly from N synthetic ones (F000000USDT...) instead "
                  "of the realistic 40; 0: the realistic 40",
       cxxopts::value<uint32_t>()->default_value("0"))
      ("explicit-ids", "Choose IDs <ms>-<seq>, strictly increasing from --start-ms, instead of '*'")
      ("start-ms", "First explicit ID's time (default: now)", cxxopts::value<int64_t>())
      ("id-step-ms", "Backlog with --explicit-ids: ID time advance per entry (live: 1000/rate)",
       cxxopts::value<double>()->default_value("1"))
      ("stream", "Stream key (env P35_STREAM; default quantum:stream:apply.result)",
       cxxopts::value<std::string>())
      ("maxlen", "XADD MAXLEN ~ N; 0: no trimming", cxxopts::value<uint64_t>()->default_value("0"))
      ("redis-socket", "Unix socket; wins over host and port (env REDIS_SOCKET)",
       cxxopts::value<std::string>())
      ("redis-host", "Host (env REDIS_HOST; default 127.0.0.1)", cxxopts::value<std::string>())
      ("redis-port", "Port (env REDIS_PORT; default 6379)", cxxopts::value<int>())
      ("redis-username", "ACL user (env REDIS_USERNAME)", cxxopts::value<std::string>())
      ("redis-password", "Password (env REDIS_PASSWORD)", cxxopts::value<std::string>())
      ("redis-sentinels", "host:port,... of Redis Sentinels: the primary is asked from them, "
                          "host, port and socket are ignored, and a failover is ridden out by "
                          "reconnecting (env REDIS_SENTINELS)", cxxopts::value<std::string>())
      ("redis-sentinel-master", "Primary's name at the sentinels (env REDIS_SENTINEL_MASTER; "
                                "default mymaster)", cxxopts::value<std::string>())
      ("redis-sentinel-username", "Sentinels' ACL user (env REDIS_SENTINEL_USERNAME)",
       cxxopts::value<std::string>())
      ("redis-sentinel-password", "Sentinels' password (env REDIS_SENTINEL_PASSWORD)",
       cxxopts::value<std::string>())
      ("expect", "Write the expected bucket contents to FILE", cxxopts::value<std::string>())
      ("force", "Write even to a stream whose consumer groups have consumers (refused by "
                "default: they would count the entries as real decisions)")
      ("quiet", "Print nothing but errors")
      ("version", "Print the version and exit")
      ("help", "Show this help");
  // clang-format on
  return o;
}

// A flag if given, else the environment variable, else the fallback.
template <typename T>
T flag_or_env(const cxxopts::ParseResult& r, const char* flag, const char* variable, T fallback) {
  if (r.count(flag)) return r[flag].as<T>();
  const auto v = env(variable);
  if (!v) return fallback;
  if constexpr (std::is_same_v<T, int>) {
    int value = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), value);
    if (ec != std::errc() || end != v->data() + v->size()) {
      throw std::invalid_argument(fmt::format("{} is not a number: '{}'", variable, *v));
    }
    return value;
  } else {
    return *v;
  }
}

p35::RedisOptions redis_options(const cxxopts::ParseResult& r) {
  p35::RedisOptions redis;
  redis.unix_socket = flag_or_env<std::string>(r, "redis-socket", "REDIS_SOCKET", "");
  redis.host = flag_or_env<std::string>(r, "redis-host", "REDIS_HOST", "127.0.0.1");
  redis.port = flag_or_env<int>(r, "redis-port", "REDIS_PORT", 6379);
  redis.username = flag_or_env<std::string>(r, "redis-username", "REDIS_USERNAME", "");
  redis.password = flag_or_env<std::string>(r, "redis-password", "REDIS_PASSWORD", "");
  redis.client_name = "p35-loadgen";
  const std::string sentinels = flag_or_env<std::string>(r, "redis-sentinels", "REDIS_SENTINELS", "");
  for (const auto& s : p35::parse_host_port_list(sentinels, "--redis-sentinels"))
    redis.sentinels.push_back(p35::SentinelAddress{s.host, s.port});
  redis.sentinel_master =
      flag_or_env<std::string>(r, "redis-sentinel-master", "REDIS_SENTINEL_MASTER", "mymaster");
  redis.sentinel_username =
      flag_or_env<std::string>(r, "redis-sentinel-username", "REDIS_SENTINEL_USERNAME", "");
  redis.sentinel_password =
      flag_or_env<std::string>(r, "redis-sentinel-password", "REDIS_SENTINEL_PASSWORD", "");
  redis.command_timeout_ms = 60000;
  if (redis.port < 1 || redis.port > 65535) {
    throw std::invalid_argument(fmt::format("--redis-port must be 1..65535, not {}", redis.port));
  }
  return redis;
}

void require(bool ok, const char* message) {
  if (!ok) throw std::invalid_argument(message);
}

p35::loadgen::LoadgenOptions to_options(const cxxopts::ParseResult& r) {
  p35::loadgen::LoadgenOptions o;
  const bool live = r.count("rate") > 0;
  require(r.count("count") || (live && r.count("duration-s")),
          "give --count N (backlog), or --rate R with --duration-s S or --count N (live)");
  require(!r.count("duration-s") || live, "--duration-s needs --rate");
  if (live) {
    o.rate_per_s = r["rate"].as<double>();
    require(o.rate_per_s > 0 && std::isfinite(o.rate_per_s), "--rate must be positive");
  }
  if (r.count("count")) {
    o.count = r["count"].as<uint64_t>();
  } else {
    const double duration_s = r["duration-s"].as<double>();
    require(duration_s > 0 && std::isfinite(duration_s), "--duration-s must be positive");
    o.count = static_cast<uint64_t>(std::llround(o.rate_per_s * duration_s));
  }
  o.pipeline = r["pipeline"].as<size_t>();
  require(o.pipeline >= 1 && o.pipeline <= 100000, "--pipeline must be 1..100000");
  o.generator.seed = r["seed"].as<uint64_t>();
  o.generator.edge_cases = r.count("edge-cases") > 0;
  o.generator.edge_fraction = r["edge-fraction"].as<double>();
  require(o.generator.edge_fraction >= 0 && o.generator.edge_fraction <= 1,
          "--edge-fraction must be 0..1");
  o.generator.distinct_reasons = r["distinct-reasons"].as<double>();
  require(o.generator.distinct_reasons >= 0 && o.generator.distinct_reasons <= 1,
          "--distinct-reasons must be 0..1");
  o.generator.symbols = r["symbols"].as<uint32_t>();
  require(o.generator.symbols <= 1000000, "--symbols must be 0..1000000");
  o.explicit_ids = r.count("explicit-ids") > 0;
  o.start_ms = r.count("start-ms") ? r["start-ms"].as<int64_t>() : p35::loadgen::wall_clock_ms();
  require(o.start_ms > 0, "--start-ms must be positive");
  o.id_step_ms = r["id-step-ms"].as<double>();
  require(o.id_step_ms >= 0 && std::isfinite(o.id_step_ms), "--id-step-ms must be 0 or more");
  o.stream = flag_or_env<std::string>(r, "stream", "P35_STREAM", o.stream);
  require(!o.stream.empty(), "--stream must not be empty");
  o.maxlen = r["maxlen"].as<uint64_t>();
  o.redis = redis_options(r);
  if (r.count("expect")) o.expect_path = r["expect"].as<std::string>();
  o.force = r.count("force") > 0;
  return o;
}

void report(const p35::loadgen::LoadgenOptions& o, const p35::loadgen::RunResult& result) {
  const double rate = result.seconds > 0 ? static_cast<double>(result.written) / result.seconds : 0;
  fmt::print("p35-loadgen: wrote {} entries ({} hostile) to {} in {:.3f} s: {:.0f} msg/s{}\n",
             result.written, result.hostile, o.stream, result.seconds, rate,
             result.stopped ? " (stopped by a signal)" : "");
  if (result.reconnects > 0)
    fmt::print("p35-loadgen: reconnected {} time(s) to the primary; {} entries were in flight "
               "then and are unconfirmed (left out of --expect; they may be in the stream)\n",
               result.reconnects, result.unconfirmed);
  if (!o.expect_path.empty()) fmt::print("p35-loadgen: expected buckets in {}\n", o.expect_path);
}

}  // namespace

int main(int argc, char** argv) {
  auto cli = make_options();
  p35::loadgen::LoadgenOptions options;
  bool quiet = false;
  try {
    const auto parsed = cli.parse(argc, argv);
    if (parsed.count("help")) {
      fmt::print("{}", cli.help());
      return EXIT_SUCCESS;
    }
    if (parsed.count("version")) {
      fmt::print("p35-loadgen {}\n", P35_VERSION);
      return EXIT_SUCCESS;
    }
    options = to_options(parsed);
    quiet = parsed.count("quiet") > 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "p35-loadgen: {}\nTry --help.\n", e.what());
    return EXIT_FAILURE;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  try {
    p35::loadgen::Loadgen loadgen(options, g_stop);
    const auto result = loadgen.run();
    if (!quiet) report(options, result);
    return EXIT_SUCCESS;
  } catch (const p35::loadgen::RefusedStream& e) {
    fmt::print(stderr, "p35-loadgen: {}\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "p35-loadgen: {}\n", e.what());
    return EXIT_FAILURE;
  }
}
