// Tests of what the programs tell an operator and systemd at start: --version of all five
// binaries, --check-config, exit code 78 (EX_CONFIG, the units' RestartPreventExitStatus=) for a
// bad setting, a login Redis refuses and a segment another user owns, and READY=1 with
// STATUS=waiting-redis while Redis is down (a NOTIFY_SOCKET of the test's own).
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config.hpp"
#include "daemon.hpp"
#include "pipeline_harness.hpp"
#include "process.hpp"
#include "redis_fixture.hpp"
#include "shm.hpp"
#include "shm_test_util.hpp"
#include "version.hpp"

namespace {

using Catch::Matchers::Contains;
using p35::ChildProcess;
using p35::ExitStatus;
using p35::SpawnOptions;
using p35::test::env_or;

struct Ran {
  ExitStatus status;
  std::string output;  // stdout and stderr
};

// Runs a program to its end (at most 20 s) with `env` added to the environment.
Ran run(const std::vector<std::string>& argv, std::map<std::string, std::string> env = {}) {
  char tmpl[] = "/tmp/p35-cli-out.XXXXXX";
  const int fd = ::mkstemp(tmpl);
  REQUIRE(fd >= 0);
  ::close(fd);
  SpawnOptions so;
  so.env = std::move(env);
  so.log_path = tmpl;
  ChildProcess p(argv, so);
  const auto st = p.wait_exit(20000);
  std::ifstream in(tmpl);
  std::stringstream text;
  text << in.rdbuf();
  ::unlink(tmpl);
  INFO(argv[0] << " printed: " << text.str());
  REQUIRE(st.has_value());
  return {*st, text.str()};
}

const std::vector<std::pair<std::string, std::string>>& stages() {
  static const std::vector<std::pair<std::string, std::string>> list{
      {"p35-ingest", env_or("P35_INGEST_BIN", "p35-ingest")},
      {"p35-rollup", env_or("P35_ROLLUP_BIN", "p35-rollup")},
      {"p35-ackd", env_or("P35_ACKD_BIN", "p35-ackd")}};
  return list;
}

}  // namespace

TEST_CASE("--version: every program prints its name and the build's version, exit 0", "[cli]") {
  auto programs = stages();
  programs.emplace_back("p35-shm", env_or("P35_SHM_BIN", "p35-shm"));
  programs.emplace_back("p35-loadgen", env_or("P35_LOADGEN_BIN", "p35-loadgen"));
  for (const auto& [name, bin] : programs) {
    INFO(name);
    const Ran r = run({bin, "--version"});
    CHECK(r.status.exited_with(0));
    CHECK(r.output == name + " " + P35_VERSION + "\n");
  }
  CHECK(std::string(P35_VERSION).rfind("0.", 0) == 0);  // git's or the project's, never empty
}

TEST_CASE("--check-config: the effective settings, secrets as set/unset; 0 or 78", "[cli]") {
  const p35::test::ShmGuard guard;
  const std::string secret = "pw-" + std::to_string(::getpid()) + "-not-to-be-printed";
  for (const auto& [name, bin] : stages()) {
    INFO(name);
    const Ran ok = run({bin, "--check-config", "--redis-port=6380"},
                       {{"REDIS_PASSWORD", secret}, {"P35_SHM_NAME", guard.name()},
                        {"REDIS_SOCKET", "/nonexistent/redis.sock"}});
    CHECK(ok.status.exited_with(0));
    CHECK_THAT(ok.output, Contains("the configuration is valid") && Contains("REDIS_PORT=6380\n") &&
                              Contains("REDIS_PASSWORD=set\n") && Contains("P35_SHM_NAME=" + guard.name()) &&
                              Contains("REDIS_USERNAME=\n"));
    CHECK(ok.output.find(secret) == std::string::npos);
    CHECK(::access(guard.path().c_str(), F_OK) != 0);  // checked, nothing created

    const Ran unset = run({bin, "--check-config"}, {{"P35_SHM_NAME", guard.name()}});
    CHECK_THAT(unset.output, Contains("REDIS_PASSWORD=unset\n"));

    const Ran bad = run({bin, "--check-config"}, {{"REDIS_PORT", "0"}, {"REDIS_PASSWORD", secret}});
    CHECK(bad.status.exited_with(p35::kExitConfig));
    CHECK_THAT(bad.output, Contains("invalid REDIS_PORT"));
    CHECK(bad.output.find(secret) == std::string::npos);
  }
}

TEST_CASE("a configuration error at start exits 78 with the reason", "[cli]") {
  for (const auto& [name, bin] : stages()) {
    INFO(name);
    const Ran r = run({bin, "--batch-size=0"});
    CHECK(r.status.exited_with(p35::kExitConfig));
    CHECK_THAT(r.output, Contains(name + ": Failed to read the configuration: ") &&
                             Contains("P35_BATCH_SIZE"));
  }
}

TEST_CASE("Redis refusing the login (AUTH) exits 78, not a restart loop", "[cli]") {
  p35::RedisServerOptions ro;
  ro.requirepass = "right-" + std::to_string(::getpid());
  p35::RedisServer redis(ro);
  const p35::test::ShmGuard guard;
  for (const auto& [name, bin] : stages()) {
    INFO(name);
    const Ran r = run({bin}, {{"REDIS_SOCKET", redis.socket_path()}, {"REDIS_PASSWORD", "wrong"},
                              {"P35_SHM_NAME", guard.name()}, {"P35_CONSUMER", "cli-auth"}});
    CHECK(r.status.exited_with(p35::kExitConfig));
    CHECK_THAT(r.output, Contains("Failed to log in to Redis"));
  }
}

TEST_CASE("a segment another user owns: the stage names the owner and exits 78", "[cli]") {
  const p35::test::ShmGuard guard;
  // The segment as a stage started by hand as root leaves it (0600, owned by us, root in CI).
  p35::Config cfg;
  cfg.shm_name = guard.name();
  cfg.consumer = "cli-owner";
  { const auto seg = p35::Segment::open_or_create(p35::SegmentSpec::from_config(cfg)); }
  REQUIRE(::access(guard.path().c_str(), F_OK) == 0);
  if (::geteuid() != 0) {
    // Not root: the other direction, a segment of another user, needs chown (root) to set up.
    FAIL("run this test as root (it starts a stage as uid 65534 with setpriv)");
  }
  // The unit's user (here nobody, 65534) meets root's 0600 segment: open() fails with EACCES.
  const Ran r = run({"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                     env_or("P35_ACKD_BIN", "p35-ackd")},
                    {{"P35_SHM_NAME", guard.name()}, {"P35_CONSUMER", "cli-owner"},
                     {"REDIS_SOCKET", "/nonexistent/redis.sock"}});
  CHECK(r.status.exited_with(p35::kExitConfig));
  CHECK_THAT(r.output, Contains("is owned by uid 0 (root)") && Contains("runs as uid 65534") &&
                           Contains("rm " + guard.path()));
}

namespace {

// A datagram socket standing in for systemd's NOTIFY_SOCKET: what a stage sends with sd_notify.
class NotifySocket {
 public:
  NotifySocket() {
    char tmpl[] = "/tmp/p35-notify.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/notify";
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  ~NotifySocket() {
    ::close(fd_);
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;
  const std::string& path() const { return path_; }
  // The next message containing `text` within `ms`; "" when none came.
  std::string wait_for(const std::string& text, int ms) {
    const int64_t until = p35::now_mono_ms() + ms;
    for (int64_t left = ms; left > 0; left = until - p35::now_mono_ms()) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0 && std::string(buf, static_cast<size_t>(n)).find(text) != std::string::npos)
        return std::string(buf, static_cast<size_t>(n));
    }
    return "";
  }

 private:
  std::string dir_, path_;
  int fd_ = -1;
};

}  // namespace

TEST_CASE("READY=1 with STATUS=waiting-redis while Redis is down, then connected", "[cli]") {
  p35::RedisServer redis;
  redis.stop();  // down at start: its socket is gone
  const p35::test::ShmGuard guard;
  for (const auto& [name, bin] : stages()) {
    INFO(name);
    NotifySocket notify;
    SpawnOptions so;
    so.env = {{"NOTIFY_SOCKET", notify.path()}, {"REDIS_SOCKET", redis.socket_path()},
              {"P35_SHM_NAME", guard.name()}, {"P35_CONSUMER", "cli-ready"}};
    ChildProcess stage({bin}, so);
    const std::string ready = notify.wait_for("READY=1", 10000);
    CHECK_THAT(ready, Contains("STATUS=waiting-redis"));
    redis.start();
    CHECK_FALSE(notify.wait_for("STATUS=connected to Redis", 15000).empty());
    REQUIRE(stage.send_signal(SIGTERM));
    const auto st = stage.wait_exit(15000);
    REQUIRE(st.has_value());
    CHECK(st->exited_with(0));
    redis.stop();
  }
}
