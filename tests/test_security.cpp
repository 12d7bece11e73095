// Least privilege: the stages as a Redis ACL user with the shipped rule, what they do when a
// permission is taken away, a password from a file that shows nowhere, and a segment that only
// the service user may own and change.
#include <catch2/catch.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "config.hpp"
#include "keys.hpp"
#include "pipeline_harness.hpp"
#include "shm.hpp"
#include "shm_test_util.hpp"
#include "skip.hpp"

using namespace p35;
using namespace p35::test;
using Catch::Matchers::Contains;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string join(const std::vector<std::string>& v, size_t max = 20) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < max; ++i) out += v[i] + "\n";
  return out;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

// The whole line of `text` that contains `what` (empty when none does).
std::string line_with(const std::string& text, const std::string& what) {
  const auto at = text.find(what);
  if (at == std::string::npos) return {};
  const auto begin = text.rfind('\n', at);
  const auto start = begin == std::string::npos ? 0 : begin + 1;
  return text.substr(start, text.find('\n', at) - start);
}

Expectation generate(RedisServer& redis, const std::string& count, const std::string& seed) {
  const std::string expect = redis.dir() + "/expect-" + seed + ".tsv";
  const auto st = run_loadgen(redis, {"--count", count, "--seed", seed, "--expect", expect, "--quiet"},
                              redis.dir() + "/loadgen.log");
  INFO(file_tail(redis.dir() + "/loadgen.log"));
  REQUIRE(st.exited_with(0));
  return read_expectation(expect);
}

void require_exact(RedisServer& redis, Pipeline& p, const Expectation& e) {
  INFO(p.logs_tail());
  REQUIRE(wait_drained(redis, p.options(), 120000));
  Connection c = redis.connect();
  const auto diffs = compare_buckets(c, e, p.options().key_prefix);
  INFO(join(diffs));
  CHECK(diffs.empty());
}

// Runs a program to its end and returns what it printed (stdout and stderr).
std::string output_of(const std::vector<std::string>& argv, const SpawnOptions& base = {}) {
  SpawnOptions so = base;
  char tmpl[] = "/tmp/p35-security-out.XXXXXX";
  const int fd = ::mkstemp(tmpl);
  REQUIRE(fd >= 0);
  ::close(fd);
  so.log_path = tmpl;
  ChildProcess p(argv, so);
  const auto st = p.wait_exit(20000);
  const std::string out = read_file(tmpl);
  ::unlink(tmpl);
  INFO(argv[0] << ": " << out);
  REQUIRE(st.has_value());
  return out;
}

std::string stage_bin(Stage s) {
  switch (s) {
    case Stage::Ingest: return env_or("P35_INGEST_BIN", "p35-ingest");
    case Stage::Rollup: return env_or("P35_ROLLUP_BIN", "p35-rollup");
    case Stage::Ackd: return env_or("P35_ACKD_BIN", "p35-ackd");
  }
  return "";
}

// The names of the Redis clients logged in as `user` (CLIENT LIST).
std::vector<std::string> clients_of(RedisServer& redis, const std::string& user) {
  Connection c = redis.connect();
  const std::string list(c.command({"CLIENT", "LIST"}).str());
  std::vector<std::string> names;
  std::istringstream lines(list);
  for (std::string line; std::getline(lines, line);) {
    if (line.find(" user=" + user + " ") == std::string::npos) continue;
    const auto at = line.find(" name=");
    names.push_back(line.substr(at + 6, line.find(' ', at + 6) - at - 6));
  }
  return names;
}

}  // namespace

// ---- the ACL user -----------------------------------------------------------------------------

TEST_CASE("the stages run as the ACL user of systemd/p35-redis.acl, which holds no more than that",
          "[security][redis][pipeline]") {
  RedisServer redis;
  Pipeline p(redis, roomy_tables());
  REQUIRE_FALSE(p.acl_user().empty());
  const auto e = generate(redis, "3000", "41");
  p.start_all();
  require_exact(redis, p, e);

  const auto names = clients_of(redis, p.acl_user());
  INFO(join(names));
  for (const char* stage : {"p35-ingest:", "p35-rollup:", "p35-ackd:"})
    CHECK(std::count_if(names.begin(), names.end(),
                        [&](const std::string& n) { return n.rfind(stage, 0) == 0; }) == 1);

  // The user itself: its rule names the stream and the prefix, nothing else, and no command
  // outside the list (a sample of what it must not do).
  RedisOptions as_user = redis.options();
  as_user.username = p.acl_user();
  as_user.password = p.password();
  Connection c = redis.connect(as_user);
  for (auto cmd : std::vector<CommandArgs>{{"KEYS", "*"},
                                           {"FLUSHALL"},
                                           {"CONFIG", "GET", "dir"},
                                           {"XADD", "quantum:stream:apply.result", "*", "a", "b"},
                                           {"GET", "other:key"},
                                           {"ACL", "LIST"}}) {
    INFO(cmd.at(0));
    try {
      c.command(cmd);
      FAIL("the ACL user may run " << cmd.at(0));
    } catch (const RedisError& err) {
      CHECK(err.kind() == RedisErrorKind::NoPerm);
    }
  }
}

TEST_CASE("a permission taken away: the stage logs it once with the fix, retries, and recovers",
          "[security][redis][pipeline]") {
  struct Case {
    const char* revoke;       // ACL SETUSER rule that takes the permission away
    const char* grant;        // ... and the one that gives it back
    Stage stage;              // the stage that needs it
    const char* names;        // what its log line must name
  };
  const Case c = GENERATE(Case{"-xack", "+xack", Stage::Ackd, "'xack'"},
                          Case{"-hincrby", "+hincrby", Stage::Rollup, "'hincrby'"},
                          Case{"-xreadgroup", "+xreadgroup", Stage::Ingest, "'xreadgroup'"});
  INFO("revoked " << c.revoke);
  RedisServer redis;
  PipelineOptions po;
  po.env["P35_RECONNECT_MAX_MS"] = "200";  // retry often: the log must still say it once
  Pipeline p(redis, roomy_tables(po));
  Connection admin = redis.connect();
  admin.command({"ACL", "SETUSER", p.acl_user(), c.revoke});
  const auto e = generate(redis, "2000", "43");
  p.start_all();

  const std::string log = p.log_path(c.stage);
  const std::string needle = "lacks a permission P3.5 needs";
  INFO(p.logs_tail());
  REQUIRE(wait_until([&] { return read_file(log).find(needle) != std::string::npos; }, 30000, 20));
  // Refused on every retry for a while (200 ms backoff): still one outage, one line.
  const Segment seg = Segment::open_readonly(p.shm_name());
  const auto& block = seg.stage(static_cast<shm::StageId>(static_cast<int>(c.stage)));
  REQUIRE(wait_until([&] { return block.redis_errors.load() >= 5; }, 30000, 20));
  CHECK(p.alive(c.stage));
  std::string text = read_file(log);
  CHECK(count_of(text, needle) == 1);
  const std::string line = line_with(text, needle);
  INFO(line);
  CHECK_THAT(line, Contains("NOPERM") && Contains(c.names) && Contains(p.acl_user()) &&
                       Contains("p35-redis.acl") && Contains("retrying"));
  // Nothing half-done while refused: the commit marker did not move past what was applied.
  if (c.stage == Stage::Rollup) {
    CHECK(admin.command({"GET", keys::marker(po.key_prefix, po.consumer)}).str() == "0-0");
    CHECK(admin.command({"KEYS", po.key_prefix + "bucket:*"}).size() == 0);
  }

  admin.command({"ACL", "SETUSER", p.acl_user(), c.grant});
  require_exact(redis, p, e);
  // The stage logs the outage's end after the command that worked; poll for the line.
  CHECK(wait_until([&] {
    text = read_file(log);
    return text.find("Redis answers again", text.find(needle)) != std::string::npos;
  }, 10000, 20));
  for (Stage s : kStages) CHECK(p.alive(s));
}

TEST_CASE("a key pattern taken away is refused naming the key access, and fixed live",
          "[security][redis][pipeline]") {
  RedisServer redis;
  Pipeline p(redis, roomy_tables());
  Connection admin = redis.connect();
  // Only the stream: no quantum:p35:* key (ingest's marker SET NX is the first refusal).
  admin.command({"ACL", "SETUSER", p.acl_user(), "resetkeys", "~quantum:stream:apply.result"});
  const auto e = generate(redis, "1000", "47");
  p.start_all();
  INFO(p.logs_tail());
  REQUIRE(wait_until([&] {
    return read_file(p.log_path(Stage::Ingest)).find("no permissions to access one of the keys") !=
           std::string::npos;
  }, 30000, 20));
  CHECK(p.alive(Stage::Ingest));
  admin.command({"ACL", "SETUSER", p.acl_user(), "~quantum:p35:*"});
  require_exact(redis, p, e);
}

// ---- the password -----------------------------------------------------------------------------

TEST_CASE("the password from REDIS_PASSWORD_FILE shows in no log, --help, ps, status or p35-shm",
          "[security][redis][pipeline]") {
  RedisServer redis;
  PipelineOptions po;
  po.env["LOG_LEVEL"] = "DEBUG";  // the most the stages ever say
  Pipeline p(redis, roomy_tables(po));
  const std::string& pw = p.password();
  REQUIRE(pw.size() >= 16);
  struct stat st {};
  REQUIRE(::stat(p.password_file().c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  const auto e = generate(redis, "2000", "53");
  p.start_all();
  require_exact(redis, p, e);
  // rollup writes status every second: wait for one with every stage in it.
  Connection c = redis.connect();
  const std::string status_key = keys::status(po.key_prefix);
  REQUIRE(wait_until([&] { return hgetall(c, status_key + ":" + po.consumer).size() > 10; }, 30000));

  std::vector<std::pair<std::string, std::string>> places;  // (where, text)
  for (Stage s : kStages) {
    const std::string proc = "/proc/" + std::to_string(p.pid(s));
    places.emplace_back(std::string(stage_label(s)) + " log", read_file(p.log_path(s)));
    places.emplace_back(std::string(stage_label(s)) + " cmdline", read_file(proc + "/cmdline"));
    places.emplace_back(std::string(stage_label(s)) + " environ", read_file(proc + "/environ"));
    CHECK_THAT(places.back().second, Contains("REDIS_PASSWORD_FILE=" + p.password_file()));
    SpawnOptions so;
    so.env = {{"REDIS_USERNAME", p.acl_user()}, {"REDIS_PASSWORD_FILE", p.password_file()}};
    places.emplace_back(std::string(stage_label(s)) + " --help",
                        output_of({stage_bin(s), "--help"}, so));
    CHECK_THAT(places.back().second, Contains("REDIS_PASSWORD_FILE"));
  }
  for (const std::string& key : {status_key, status_key + ":" + po.consumer}) {
    std::string all;
    for (const auto& [f, v] : hgetall(c, key)) all += f + "=" + v + "\n";
    CHECK_THAT(all, Contains("processed_total") || Contains("ingest"));
    places.emplace_back(key, all);
  }
  const std::string shm_bin = env_or("P35_SHM_BIN", "p35-shm");
  for (const char* mode : {"", "--json", "--prometheus"}) {
    std::vector<std::string> argv{shm_bin, "--shm-name", p.shm_name()};
    if (*mode != '\0') argv.push_back(mode);
    places.emplace_back(std::string("p35-shm ") + mode, output_of(argv));
    CHECK_THAT(places.back().second, Contains("ingest"));
  }
  for (const auto& [where, text] : places) {
    INFO(where);
    CHECK_FALSE(text.empty());
    CHECK(text.find(pw) == std::string::npos);
  }

  SECTION("a wrong password in the file: the stage stops naming the user, never the password") {
    const std::string bad_file = redis.dir() + "/wrong-password";
    const std::string bad = "wrong-" + pw.substr(3);
    std::ofstream(bad_file) << bad << "\n";
    ::chmod(bad_file.c_str(), 0600);
    SpawnOptions so;
    so.env = {{"REDIS_SOCKET", redis.socket_path()},     {"REDIS_USERNAME", p.acl_user()},
              {"REDIS_PASSWORD_FILE", bad_file},          {"P35_SHM_NAME", p.shm_name() + "-x"},
              {"P35_CONSUMER", "wrongpw"},                {"LOG_LEVEL", "DEBUG"}};
    const std::string out = output_of({stage_bin(Stage::Ackd)}, so);
    ::unlink(shm_path(p.shm_name() + "-x").c_str());
    CHECK_THAT(out, Contains("WRONGPASS") && Contains("'" + p.acl_user() + "'"));
    CHECK(out.find(bad) == std::string::npos);
    CHECK(out.find(pw) == std::string::npos);
  }
}

TEST_CASE("systemd's LoadCredential: $CREDENTIALS_DIRECTORY/redis-password is the password",
          "[security][config]") {
  const ProgramInfo info{"p35-test", "Counts decisions for the test suite."};
  char tmpl[] = "/tmp/p35-cred.XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl, file = dir + "/redis-password";
  const auto parse = [&](const Environment& env) {
    const char* argv[] = {"p35-test"};
    return parse_config(1, argv, info, env).config;
  };
  CHECK(parse({{"CREDENTIALS_DIRECTORY", dir}}).redis_password.empty());  // no credential: none
  std::ofstream(file) << "cred-pw-1\n";
  CHECK(parse({{"CREDENTIALS_DIRECTORY", dir}}).redis_password == "cred-pw-1");
  CHECK(parse({{"CREDENTIALS_DIRECTORY", dir}}).redis_password_file == file);
  // An explicit setting wins over the credential.
  CHECK(parse({{"CREDENTIALS_DIRECTORY", dir}, {"REDIS_PASSWORD", "env-pw"}}).redis_password ==
        "env-pw");
  ::unlink(file.c_str());
  ::rmdir(dir.c_str());
}

// ---- the segment ------------------------------------------------------------------------------

TEST_CASE("the segment is created 0600 and owned by the stage's user", "[security][shm]") {
  const ShmGuard guard;
  { const Segment seg = Segment::open_or_create(small_spec(guard.name())); }
  struct stat st {};
  REQUIRE(::stat(guard.path().c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  CHECK(st.st_uid == ::geteuid());
}

TEST_CASE("a segment owned by another user or open to others is refused, p35-shm still reads it",
          "[security][shm]") {
  const ShmGuard guard;
  const SegmentSpec spec = small_spec(guard.name());
  { const Segment seg = Segment::open_or_create(spec); }
  const std::string path = guard.path();
  const auto refusal = [&] {
    try {
      Segment::open_or_create(spec);
    } catch (const ShmError& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const auto inspector_reads = [&] {
    CHECK_NOTHROW(Segment::open_readonly(guard.name()));
    const std::string out = output_of({env_or("P35_SHM_BIN", "p35-shm"), "--shm-name", guard.name(), "--json"});
    CHECK_THAT(out, Contains("\"layout_version\""));
  };

  SECTION("owned by nobody (65534)") {
    if (::geteuid() != 0) P35_SKIP("not root: cannot chown the segment to another user");
    REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
    const std::string why = refusal();
    CHECK_THAT(why, Contains(path) && Contains("owned by uid 65534") && Contains("mode 0600") &&
                        Contains("runs as uid " + std::to_string(::geteuid())) &&
                        Contains("rm " + path));
    inspector_reads();

    // The real stage says the same in its log and exits 1 before it talks to Redis.
    SpawnOptions so;
    so.env = {{"P35_SHM_NAME", guard.name()}, {"REDIS_SOCKET", "/nonexistent/redis.sock"},
              {"P35_CONSUMER", "seccheck"}};
    const std::string out = output_of({stage_bin(Stage::Ackd)}, so);
    CHECK_THAT(out, Contains("owned by uid 65534") && Contains(path));
  }
  for (const mode_t mode : {0666, 0644, 0640, 0604}) {
    DYNAMIC_SECTION("mode 0" << std::oct << mode) {
      REQUIRE(::chmod(path.c_str(), mode) == 0);
      std::ostringstream m;
      m << "mode 0" << std::oct << mode;
      const std::string why = refusal();
      CHECK_THAT(why, Contains(path) && Contains(m.str()) && Contains("chmod 0600 " + path));
      inspector_reads();
      REQUIRE(::chmod(path.c_str(), 0600) == 0);
      CHECK_NOTHROW(Segment::open_or_create(spec));  // fixed as the message says
    }
  }
  SECTION("a symlink in its place is not followed") {
    const std::string target = path + ".target";
    REQUIRE(::rename(path.c_str(), target.c_str()) == 0);
    REQUIRE(::symlink(target.c_str(), path.c_str()) == 0);
    CHECK_THAT(refusal(), Contains(path));
    ::unlink(path.c_str());
    ::unlink(target.c_str());
  }
}
