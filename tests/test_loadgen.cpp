// Tests of p35-loadgen's safety as a real binary: it refuses (exit 2, nothing written) a stream
// whose consumer groups have consumers, since the default stream is the live trading stream, and
// writes there only with --force.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "pipeline_harness.hpp"

using namespace p35;
using namespace p35::test;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct LoadgenRun {
  ExitStatus status;
  std::string output;  // stdout and stderr together
};

// The real p35-loadgen, without the harness's --force, writing `count` entries to `stream`.
LoadgenRun loadgen(RedisServer& redis, const std::string& stream, const std::string& count,
                   const std::vector<std::string>& extra = {}) {
  const std::string log = redis.dir() + "/loadgen-" + std::to_string(::getpid()) + ".log";
  std::ofstream(log, std::ios::trunc).close();
  std::vector<std::string> argv{env_or("P35_LOADGEN_BIN", "p35-loadgen"),
                                "--redis-socket",
                                redis.socket_path(),
                                "--stream",
                                stream,
                                "--count",
                                count,
                                "--quiet"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  SpawnOptions so;
  so.log_path = log;
  ChildProcess p(argv, so);
  const auto st = p.wait_exit(60000);
  if (!st) throw std::runtime_error("p35-loadgen did not finish within 60 s");
  return {*st, read_file(log)};
}

long long xlen(RedisServer& redis, const std::string& stream) {
  Connection c = redis.connect();
  return c.command({"XLEN", stream}).integer();
}

}  // namespace

TEST_CASE("p35-loadgen refuses a stream the stages consume unless --force", "[loadgen][pipeline]") {
  RedisServer redis;
  PipelineOptions opt;
  opt.stream = "p35test:stream:consumed";
  Pipeline pipe(redis, opt);
  // Before any consumer exists the stream is written to without --force.
  const auto first = loadgen(redis, opt.stream, "200");
  INFO(first.output);
  REQUIRE(first.status.exited_with(0));
  pipe.start_all();
  INFO(pipe.logs_tail());
  REQUIRE(wait_drained(redis, opt, 30000));  // ingest registered its consumer and read them all
  REQUIRE(xlen(redis, opt.stream) == 200);

  const auto refused = loadgen(redis, opt.stream, "300");
  INFO("p35-loadgen printed: " << refused.output);
  CHECK(refused.status.exited_with(2));
  CHECK_THAT(refused.output, Catch::Contains("Refusing to write to " + opt.stream));
  CHECK_THAT(refused.output, Catch::Contains("'p35_decision_intel' (1 consumer)"));
  CHECK_THAT(refused.output, Catch::Contains("--force"));
  CHECK(xlen(redis, opt.stream) == 200);  // nothing written

  const auto forced = loadgen(redis, opt.stream, "300", {"--force"});
  INFO("p35-loadgen --force printed: " << forced.output);
  CHECK(forced.status.exited_with(0));
  CHECK(xlen(redis, opt.stream) == 500);
  CHECK(wait_drained(redis, opt, 30000));  // and the stages count them as usual
}

TEST_CASE("p35-loadgen writes to a missing stream or one whose group has no consumers",
          "[loadgen][redis]") {
  RedisServer redis;
  const auto fresh = loadgen(redis, "p35test:stream:new", "50");
  INFO(fresh.output);
  CHECK(fresh.status.exited_with(0));
  CHECK(xlen(redis, "p35test:stream:new") == 50);

  Connection c = redis.connect();
  c.command({"XGROUP", "CREATE", "p35test:stream:grouped", "idle-group", "$", "MKSTREAM"});
  const auto grouped = loadgen(redis, "p35test:stream:grouped", "50");
  INFO(grouped.output);
  CHECK(grouped.status.exited_with(0));
  CHECK(xlen(redis, "p35test:stream:grouped") == 50);
}
