// Tests of configuration (defaults, env file, environment, flags, validation, secrets, --help)
// and of the log-level names.
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "config.hpp"
#include "log.hpp"
#include "version.hpp"

namespace {

using Catch::Matchers::Contains;
using p35::Config;
using p35::ConfigError;
using p35::Environment;
using p35::ParseResult;

const p35::ProgramInfo kInfo{"p35-test", "Counts decisions for the test suite."};

ParseResult parse(const std::vector<std::string>& args, const Environment& env = {}) {
  std::vector<const char*> argv{"p35-test"};
  for (const std::string& a : args) argv.push_back(a.c_str());
  argv.push_back(nullptr);
  return p35::parse_config(static_cast<int>(argv.size() - 1), argv.data(), kInfo, env);
}

// The message of the ConfigError that parsing throws; fails the test when nothing is thrown.
std::string error_of(const std::vector<std::string>& args, const Environment& env = {}) {
  try {
    parse(args, env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  FAIL("no ConfigError was thrown");
  return {};
}

std::string env_error(const std::string& variable, const std::string& value) {
  return error_of({}, Environment{{variable, value}});
}

// A private directory for files a test writes, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "p35-config-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  std::string write(const std::string& name, const std::string& content) const {
    const std::filesystem::path file = path_ / name;
    std::ofstream(file, std::ios::binary) << content;
    return file.string();
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace

TEST_CASE("defaults match the documented values", "[config]") {
  const Config c = parse({}).config;
  CHECK(c.redis_host == "127.0.0.1");
  CHECK(c.redis_port == 6379);
  CHECK(c.redis_db == 0);
  CHECK(c.redis_socket.empty());
  CHECK(c.redis_password.empty());
  CHECK(c.log_level == "INFO");
  CHECK(c.symbol_breakdown);
  CHECK(c.stream == "quantum:stream:apply.result");
  CHECK(c.group == "p35_decision_intel");
  CHECK(c.shm_name == "quantum-p35");
  CHECK(c.key_prefix == "quantum:p35:");
  CHECK(c.batch_size == 1000);
  CHECK(c.block_ms == 5000);
  CHECK(c.read_linger_ms == 40);
  CHECK(c.commit_linger_ms == 20);
  CHECK(c.ack_linger_ms == 100);
  CHECK(c.command_timeout_ms == 10000);
  CHECK(c.ring_slots == 128);
  CHECK(c.id_log == 65536);
  CHECK(c.env_file.empty());
  CHECK_FALSE(parse({}).exit_now);
}

TEST_CASE("consumer defaults to the host name", "[config]") {
  char host[256] = {};
  REQUIRE(::gethostname(host, sizeof host - 1) == 0);
  CHECK(parse({}).config.consumer == host);
  CHECK(parse({}, {{"P35_CONSUMER", "worker-7"}}).config.consumer == "worker-7");
}

TEST_CASE("environment variables set their fields", "[config]") {
  const Config c = parse({}, {{"REDIS_HOST", "redis.internal"},
                              {"REDIS_PORT", "6380"},
                              {"REDIS_DB", "3"},
                              {"ENABLE_SYMBOL_BREAKDOWN", "false"},
                              {"P35_SHM_NAME", "tenant-a.p35"},
                              {"P35_KEY_PREFIX", "test:p35:"},
                              {"P35_RING_SLOTS", "256"},
                              {"LOG_LEVEL", "warning"}})
                       .config;
  CHECK(c.redis_host == "redis.internal");
  CHECK(c.redis_port == 6380);
  CHECK(c.redis_db == 3);
  CHECK_FALSE(c.symbol_breakdown);
  CHECK(c.shm_name == "tenant-a.p35");
  CHECK(c.key_prefix == "test:p35:");
  CHECK(c.ring_slots == 256);
  CHECK(c.log_level == "warning");
}

TEST_CASE("flag beats environment beats env file beats default", "[config]") {
  TempDir dir;
  const std::string file = dir.write("p35.env", "REDIS_PORT=1001\nREDIS_DB=1\nP35_BATCH_SIZE=11\n");
  const Environment env{{"REDIS_PORT", "2002"}, {"REDIS_DB", "2"}};
  const Config c = parse({"--env-file", file, "--redis-port=3003"}, env).config;
  CHECK(c.redis_port == 3003);  // flag
  CHECK(c.redis_db == 2);       // environment over file
  CHECK(c.batch_size == 11);    // file over default
  CHECK(c.ack_batch == 1000);   // default
  CHECK(c.env_file == file);
}

TEST_CASE("every variable has a kebab-case flag", "[config]") {
  CHECK(p35::flag_for_variable("REDIS_HOST") == "--redis-host");
  CHECK(p35::flag_for_variable("REDIS_PORT") == "--redis-port");
  CHECK(p35::flag_for_variable("P35_SHM_NAME") == "--shm-name");
  CHECK(p35::flag_for_variable("ENABLE_SYMBOL_BREAKDOWN") == "--enable-symbol-breakdown");
  CHECK(p35::flag_for_variable("LOG_LEVEL") == "--log-level");
  CHECK(p35::flag_for_variable("REDIS_PASSWORD_FILE") == "--redis-password-file");
  CHECK(parse({"--shm-name=other"}).config.shm_name == "other");
  CHECK(parse({"--redis-host", "h2"}).config.redis_host == "h2");
  CHECK_FALSE(parse({"--enable-symbol-breakdown=off"}).config.symbol_breakdown);
  CHECK(parse({"--enable-symbol-breakdown"}, {{"ENABLE_SYMBOL_BREAKDOWN", "0"}})
            .config.symbol_breakdown);
  std::vector<std::string> flags;
  for (const p35::OptionDoc& d : p35::option_docs()) {
    INFO(d.variable);
    CHECK(std::find(flags.begin(), flags.end(), d.flag) == flags.end());
    flags.push_back(d.flag);
    if (d.secret || d.variable == "P35_CONSUMER") continue;
    std::string value = d.default_text == "not set" ? "" : d.default_text;
    if (d.variable == "REDIS_HOST") value = "example";
    CHECK_NOTHROW(parse({d.flag + "=" + value}));  // the flag exists and takes its default
  }
}

TEST_CASE("env file: comments, export, quotes, blanks and CRLF", "[config]") {
  TempDir dir;
  const std::string file = dir.write("p35.env",
                                     "# P3.5 settings\n"
                                     "\n"
                                     "REDIS_HOST=redis.example\n"
                                     "export REDIS_PORT=6390\n"
                                     "  LOG_LEVEL = DEBUG  \n"
                                     "P35_STREAM=\"stream:with # hash\"\n"
                                     "P35_GROUP='single quoted'\n"
                                     "P35_KEY_PREFIX=t:\r\n"
                                     "EMPTY=\n"
                                     "   # indented comment\n");
  const Environment env = p35::read_env_file(file);
  CHECK(env.at("REDIS_HOST") == "redis.example");
  CHECK(env.at("REDIS_PORT") == "6390");
  CHECK(env.at("LOG_LEVEL") == "DEBUG");
  CHECK(env.at("P35_STREAM") == "stream:with # hash");
  CHECK(env.at("P35_GROUP") == "single quoted");
  CHECK(env.at("P35_KEY_PREFIX") == "t:");
  CHECK(env.at("EMPTY").empty());
  CHECK(env.size() == 7);
}

TEST_CASE("env file: unknown keys are kept by the reader and ignored by parsing", "[config]") {
  TempDir dir;
  const std::string file = dir.write("p35.env", "SOMETHING_ELSE=1\nREDIS_DB=5\n");
  CHECK(p35::read_env_file(file).at("SOMETHING_ELSE") == "1");
  CHECK(parse({"--env-file=" + file}).config.redis_db == 5);
}

TEST_CASE("env file: a malformed line names the file and line, not its content", "[config]") {
  TempDir dir;
  for (const std::string bad : {"just words s3cretXYZ", "=s3cretXYZ", "REDIS PASSWORD=s3cretXYZ",
                                "REDIS_PASSWORD=\"s3cretXYZ", "REDIS_PASSWORD='s3cretXYZ\""}) {
    INFO(bad);
    const std::string file = dir.write("bad.env", "# first\nREDIS_HOST=h\n" + bad + "\n");
    try {
      p35::read_env_file(file);
      FAIL("no ConfigError");
    } catch (const ConfigError& e) {
      CHECK_THAT(e.what(), Contains(file + ":3:"));
      CHECK_THAT(e.what(), !Contains("s3cretXYZ"));
    }
    CHECK_THAT(error_of({"--env-file=" + file}), Contains(file + ":3:"));
  }
}

TEST_CASE("env file: a missing file is an error naming it", "[config]") {
  TempDir dir;
  const std::string missing = dir.path("nope.env");
  CHECK_THROWS_WITH(p35::read_env_file(missing), Contains(missing));
  const std::string message = error_of({"--env-file", missing});
  CHECK_THAT(message, Contains(missing));
  CHECK_THAT(message, Contains("No such file"));
}

TEST_CASE("bad ports name the variable and the value", "[config]") {
  for (const std::string bad :
       {"0", "70000", "abc", " 1", "1 ", "+1", "1x", "-1", "", "99999999999999999999"}) {
    INFO(bad);
    CHECK(env_error("REDIS_PORT", bad) ==
          "invalid REDIS_PORT \"" + bad + "\": must be an integer 1..65535");
  }
}

TEST_CASE("a bad flag value names the flag and the variable", "[config]") {
  CHECK(error_of({"--redis-port=abc"}) ==
        "invalid --redis-port (REDIS_PORT) \"abc\": must be an integer 1..65535");
  CHECK_THAT(error_of({"--shm-name", "a/b"}), Contains("--shm-name (P35_SHM_NAME) \"a/b\""));
}

TEST_CASE("a bad value from the env file names the file", "[config]") {
  TempDir dir;
  const std::string file = dir.write("p35.env", "P35_BATCH_SIZE=0\n");
  const std::string message = error_of({"--env-file=" + file});
  CHECK_THAT(message, Contains("invalid P35_BATCH_SIZE \"0\": must be an integer 1..100000"));
  CHECK_THAT(message, Contains(file));
}

TEST_CASE("sizes out of range are rejected", "[config]") {
  CHECK_THAT(env_error("P35_RING_SLOTS", "63"),
             Contains("invalid P35_RING_SLOTS \"63\": must be an integer 64..4096"));
  CHECK_THAT(env_error("P35_BATCH_SIZE", "100001"), Contains("P35_BATCH_SIZE \"100001\""));
  CHECK_THAT(env_error("P35_STRINGS", "4194305"), Contains("P35_STRINGS \"4194305\""));
  CHECK_THAT(env_error("REDIS_DB", "1024"), Contains("REDIS_DB \"1024\""));
  CHECK(parse({}, {{"P35_RING_SLOTS", "4096"}}).config.ring_slots == 4096);
}

TEST_CASE("negative intervals are rejected", "[config]") {
  CHECK(env_error("P35_SNAPSHOT_INTERVAL_MS", "-5") ==
        "invalid P35_SNAPSHOT_INTERVAL_MS \"-5\": must be an integer 100..3600000");
  CHECK_THAT(env_error("P35_COMMIT_LINGER_MS", "-1"), Contains("P35_COMMIT_LINGER_MS \"-1\""));
  CHECK(parse({}, {{"P35_COMMIT_LINGER_MS", "0"}}).config.commit_linger_ms == 0);
  CHECK(env_error("P35_ACK_LINGER_MS", "1001") ==
        "invalid P35_ACK_LINGER_MS \"1001\": must be an integer 0..1000");
  CHECK(parse({}, {{"P35_ACK_LINGER_MS", "0"}}).config.ack_linger_ms == 0);
}

TEST_CASE("booleans accept true/false 1/0 yes/no on/off in any case", "[config]") {
  for (const std::string yes : {"true", "TRUE", "1", "yes", "Yes", "on", "ON"})
    CHECK(parse({}, {{"ENABLE_SYMBOL_BREAKDOWN", yes}}).config.symbol_breakdown);
  for (const std::string no : {"false", "False", "0", "no", "NO", "off", "Off"})
    CHECK_FALSE(parse({}, {{"ENABLE_SYMBOL_BREAKDOWN", no}}).config.symbol_breakdown);
  for (const std::string bad : {"maybe", "", "2", " true"}) {
    INFO(bad);
    CHECK_THAT(env_error("ENABLE_SYMBOL_BREAKDOWN", bad),
               Contains("invalid ENABLE_SYMBOL_BREAKDOWN \"" + bad + "\""));
  }
}

TEST_CASE("bad shared-memory names are rejected", "[config]") {
  const std::vector<std::string> bad_names{
      "a/b", "/quantum-p35", ".hidden", "", "has space", "semi;colon", std::string(201, 'x')};
  for (const std::string& bad : bad_names) {
    INFO(bad);
    CHECK_THAT(env_error("P35_SHM_NAME", bad), Contains("invalid P35_SHM_NAME \""));
  }
  CHECK_THAT(env_error("P35_SHM_NAME", "a/b"), Contains("\"a/b\""));
  CHECK(parse({}, {{"P35_SHM_NAME", std::string(200, 'x')}}).config.shm_name.size() == 200);
  CHECK(parse({}, {{"P35_SHM_NAME", "A.b_c-9"}}).config.shm_name == "A.b_c-9");
}

TEST_CASE("empty or spaced stream, group, consumer and key prefix are rejected", "[config]") {
  CHECK(env_error("P35_STREAM", "") ==
        "invalid P35_STREAM \"\": must be non-empty, without spaces or control characters");
  CHECK_THAT(env_error("P35_STREAM", "a b"), Contains("P35_STREAM \"a b\""));
  CHECK_THAT(env_error("P35_GROUP", "g\tx"), Contains("P35_GROUP \"g\\x09x\""));
  CHECK_THAT(env_error("P35_CONSUMER", "two words"), Contains("P35_CONSUMER \"two words\""));
  CHECK_THAT(env_error("P35_KEY_PREFIX", ""), Contains("P35_KEY_PREFIX \"\""));
  CHECK_THAT(env_error("P35_KEY_PREFIX", "x\ny"), Contains("P35_KEY_PREFIX \"x\\x0ay\""));
}

TEST_CASE("the password never appears in help, describe or error messages", "[config]") {
  const std::string secret = "s3cretXYZ";
  const Environment env{{"REDIS_PASSWORD", secret}, {"REDIS_PORT", "70000"}};
  const std::string message = error_of({}, env);
  CHECK_THAT(message, Contains("REDIS_PORT"));
  CHECK_THAT(message, !Contains(secret));
  CHECK_THAT(error_of({"--redis-password=" + secret, "--redis-port=x"}), !Contains(secret));
  CHECK_THAT(error_of({"--redis-password", secret, "--no-such-flag"}), !Contains(secret));
  CHECK_THAT(error_of({secret}, {{"REDIS_PASSWORD", secret}}), !Contains(secret));
  CHECK_THAT(error_of({"--help=" + secret}, {{"REDIS_PASSWORD", secret}}), !Contains(secret));
  CHECK_THAT(parse({"--help"}, env).out_text, !Contains(secret));

  const Config c = parse({}, {{"REDIS_PASSWORD", secret}}).config;
  CHECK(c.redis_password == secret);
  CHECK_THAT(p35::describe(c), !Contains(secret));
  CHECK_THAT(p35::describe(c), Contains("password=***"));
}

TEST_CASE("describe shows target and names, masks the password", "[config]") {
  Config c;
  c.consumer = "host-1";
  CHECK(p35::describe(c) ==
        "redis=127.0.0.1:6379 db=0 user=default password=none stream=quantum:stream:apply.result "
        "group=p35_decision_intel consumer=host-1 shm=quantum-p35 key_prefix=quantum:p35: "
        "symbol_breakdown=on");
  c.redis_socket = "/run/redis/redis.sock";
  c.redis_password = "pw";
  CHECK_THAT(p35::describe(c), Contains("redis=unix:/run/redis/redis.sock"));
  CHECK_THAT(p35::describe(c), Contains("password=***"));
  c.redis_socket.clear();
  c.redis_host = "::1";
  CHECK_THAT(p35::describe(c), Contains("redis=[::1]:6379"));
}

TEST_CASE("the password file's first line is the password", "[config]") {
  TempDir dir;
  const std::string lf = dir.write("pw", "s3cretXYZ\nsecond line\n");
  const std::string crlf = dir.write("pw-crlf", "s3cretXYZ\r\n");
  const std::string bare = dir.write("pw-bare", "s3cretXYZ");
  for (const std::string& file : {lf, crlf, bare}) {
    const Config c = parse({}, {{"REDIS_PASSWORD_FILE", file}}).config;
    CHECK(c.redis_password == "s3cretXYZ");
    CHECK(c.redis_password_file == file);
    CHECK_THAT(p35::describe(c), !Contains("s3cretXYZ"));
  }
  CHECK(parse({"--redis-password-file=" + lf}).config.redis_password == "s3cretXYZ");
}

TEST_CASE("password file errors name the variable and path, never the content", "[config]") {
  TempDir dir;
  const std::string missing = dir.path("missing");
  std::string message = env_error("REDIS_PASSWORD_FILE", missing);
  CHECK_THAT(message, Contains("REDIS_PASSWORD_FILE"));
  CHECK_THAT(message, Contains(missing));

  message = env_error("REDIS_PASSWORD_FILE", dir.path(""));  // a directory
  CHECK_THAT(message, Contains("REDIS_PASSWORD_FILE"));

  const std::string empty = dir.write("empty", "\ns3cretXYZ\n");
  message = env_error("REDIS_PASSWORD_FILE", empty);
  CHECK_THAT(message, Contains("REDIS_PASSWORD_FILE"));
  CHECK_THAT(message, Contains(empty));
  CHECK_THAT(message, !Contains("s3cretXYZ"));
}

TEST_CASE("password and password file together are an error", "[config]") {
  TempDir dir;
  const std::string file = dir.write("pw", "from-file\n");
  const std::string message =
      error_of({"--redis-password-file=" + file}, {{"REDIS_PASSWORD", "s3cretXYZ"}});
  CHECK_THAT(message, Contains("REDIS_PASSWORD and REDIS_PASSWORD_FILE"));
  CHECK_THAT(message, !Contains("s3cretXYZ"));
  // A higher layer can clear the other one.
  CHECK(parse({"--redis-password-file=" + file, "--redis-password="},
              {{"REDIS_PASSWORD", "s3cretXYZ"}})
            .config.redis_password == "from-file");
}

TEST_CASE("--help lists every variable with its flag and default", "[config]") {
  const ParseResult r = parse({"--help"}, {{"REDIS_PORT", "not even checked"}});
  REQUIRE(r.exit_now);
  const std::string& help = r.out_text;
  CHECK_THAT(help, Contains("Usage: p35-test"));
  CHECK_THAT(help, Contains(std::string(kInfo.description)));
  CHECK_THAT(help, Contains("--env-file"));
  CHECK_THAT(help, Contains("--version"));
  const std::vector<p35::OptionDoc> docs = p35::option_docs();
  CHECK(docs.size() >= 33);
  for (const p35::OptionDoc& d : docs) {
    INFO(d.variable);
    const auto at = help.find(d.flag + "=");
    REQUIRE(at != std::string::npos);
    const std::string line = help.substr(at, help.find('\n', at) - at);
    CHECK_THAT(line, Contains(std::string(d.variable)));
    if (d.secret) {
      CHECK(d.default_text.empty());
      CHECK_THAT(line, Contains("never printed"));
    } else {
      CHECK_THAT(line, Contains("(default: " + d.default_text + ")"));
    }
  }
  CHECK_THAT(help, Contains("(default: 6379)"));
  CHECK_THAT(help, Contains("(default: the host name)"));
  CHECK(parse({"-h"}).out_text == help);
}

TEST_CASE("--version prints the program and version", "[config]") {
  const ParseResult r = parse({"--version"});
  CHECK(r.exit_now);
  CHECK(r.out_text == std::string("p35-test ") + P35_VERSION + "\n");
}

TEST_CASE("command timeout must exceed the XREADGROUP block time", "[config]") {
  const std::string message = error_of({}, {{"P35_COMMAND_TIMEOUT_MS", "1000"}});
  CHECK_THAT(message, Contains("P35_COMMAND_TIMEOUT_MS"));
  CHECK_THAT(message, Contains("P35_BLOCK_MS"));
  CHECK_THAT(message, Contains("XREADGROUP BLOCK"));
  CHECK_THAT(error_of({"--block-ms=20000"}), Contains("P35_BLOCK_MS (20000)"));
  CHECK(parse({"--block-ms=20000", "--command-timeout-ms=25000"}).config.block_ms == 20000);
}

TEST_CASE("unknown flags and stray arguments are errors", "[config]") {
  CHECK_THAT(error_of({"--redis-prot=1"}), Contains("redis-prot"));
  CHECK_THAT(error_of({"--redis-port"}), Contains("redis-port"));
  CHECK_THAT(error_of({"--enable-symbol-breakdown", "false"}), Contains("\"false\""));
}

TEST_CASE("empty host needs a socket", "[config]") {
  CHECK_THAT(env_error("REDIS_HOST", ""), Contains("REDIS_HOST"));
  const Config c = parse({}, {{"REDIS_HOST", ""}, {"REDIS_SOCKET", "/run/redis.sock"}}).config;
  CHECK(c.redis_socket == "/run/redis.sock");
  CHECK_THAT(env_error("REDIS_SOCKET", "/" + std::string(107, 's')), Contains("REDIS_SOCKET"));
}

TEST_CASE("log level names are accepted and rejected", "[config]") {
  for (const char* good :
       {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "trace", "debug", "info", "warn",
        "warning", "err", "error", "critical", "off", "Warn", "TRACE", "Off"}) {
    INFO(good);
    CHECK(p35::valid_log_level(good));
    CHECK(parse({}, {{"LOG_LEVEL", good}}).config.log_level == good);
  }
  for (const char* bad : {"", "verbose", "FATAL", "warnings", " info", "5"}) {
    INFO(bad);
    CHECK_FALSE(p35::valid_log_level(bad));
    CHECK_THAT(env_error("LOG_LEVEL", bad),
               Contains("invalid LOG_LEVEL \"" + std::string(bad) + "\""));
  }
  CHECK_THAT(error_of({"--log-level=loud"}), Contains("--log-level (LOG_LEVEL) \"loud\""));
}

TEST_CASE("setup_logging installs the default logger or throws on a bad level", "[config]") {
  CHECK_THROWS_AS(p35::setup_logging("p35-test", "loud"), ConfigError);
  REQUIRE_NOTHROW(p35::setup_logging("p35-test", "WARNING"));
  CHECK(spdlog::default_logger()->name() == "p35-test");
  CHECK(spdlog::default_logger()->level() == spdlog::level::warn);
  REQUIRE_NOTHROW(p35::setup_logging("p35-test", "off"));
  CHECK(spdlog::default_logger()->level() == spdlog::level::off);
}

TEST_CASE("a logging failure does not throw", "[config]") {
  REQUIRE_NOTHROW(p35::setup_logging("p35-test", "info"));
  CHECK_NOTHROW(spdlog::info(fmt::runtime("{:d} is not a number"), "text"));
  REQUIRE_NOTHROW(p35::setup_logging("p35-test", "off"));
}

TEST_CASE("process_environment copies only the variables the table knows", "[config]") {
  REQUIRE(::setenv("P35_BATCH_SIZE", "77", 1) == 0);
  REQUIRE(::setenv("P35_NOT_AN_OPTION", "1", 1) == 0);
  const Environment env = p35::process_environment();
  CHECK(env.at("P35_BATCH_SIZE") == "77");
  CHECK(env.count("P35_NOT_AN_OPTION") == 0);
  CHECK(env.count("PATH") == 0);
  for (const auto& [name, value] : env) {
    const auto docs = p35::option_docs();
    CHECK(std::any_of(docs.begin(), docs.end(), [&](const auto& d) { return d.variable == name; }));
  }
  ::unsetenv("P35_BATCH_SIZE");
  ::unsetenv("P35_NOT_AN_OPTION");
}

// ---- Redis Sentinel (issue 17) -----------------------------------------------------------------

TEST_CASE("REDIS_SENTINELS is parsed into host:port items, by variable and by flag", "[config][sentinel]") {
  const Config c = parse({}, {{"REDIS_SENTINELS", "127.0.0.1:26379, sentinel-b.internal:26380,[::1]:5000"},
                              {"REDIS_HOST", "ignored.example"}})
                       .config;
  REQUIRE(c.sentinels.size() == 3);
  CHECK(c.sentinels[0] == p35::HostPort{"127.0.0.1", 26379});
  CHECK(c.sentinels[1] == p35::HostPort{"sentinel-b.internal", 26380});
  CHECK(c.sentinels[2] == p35::HostPort{"::1", 5000});
  CHECK(c.sentinel_master == "mymaster");
  CHECK(c.wait_replicas == 0);
  CHECK_THAT(p35::describe(c), Contains("redis=sentinel:mymaster@127.0.0.1:26379"));

  const Config f = parse({"--redis-sentinels=10.0.0.1:26379", "--redis-sentinel-master=p35-main",
                          "--redis-sentinel-username=watcher", "--wait-replicas=1",
                          "--wait-timeout-ms=250"})
                       .config;
  REQUIRE(f.sentinels.size() == 1);
  CHECK(f.sentinels[0] == p35::HostPort{"10.0.0.1", 26379});
  CHECK(f.sentinel_master == "p35-main");
  CHECK(f.sentinel_username == "watcher");
  CHECK(f.wait_replicas == 1);
  CHECK(f.wait_timeout_ms == 250);
  CHECK(parse({}).config.sentinels.empty());
}

TEST_CASE("a bad REDIS_SENTINELS item is a configuration error naming it", "[config][sentinel]") {
  for (const std::string bad : {"b", "b:", ":26379", "b:0", "b:65536", "b:x", "b c:1", ""}) {
    INFO(bad);
    const std::string message = env_error("REDIS_SENTINELS", "a:26379," + bad);
    CHECK_THAT(message, Contains("invalid REDIS_SENTINELS item \"" + bad + "\""));
  }
  CHECK_THAT(error_of({"--redis-sentinels=a:1,,b:2"}), Contains("item \"\""));
  CHECK_THAT(env_error("REDIS_SENTINEL_MASTER", ""), Contains("REDIS_SENTINEL_MASTER"));
  CHECK_THAT(env_error("P35_WAIT_REPLICAS", "-1"), Contains("P35_WAIT_REPLICAS"));
  CHECK_THAT(env_error("P35_WAIT_TIMEOUT_MS", "0"), Contains("P35_WAIT_TIMEOUT_MS"));
}

TEST_CASE("the sentinels' password is a secret of its own, from a variable, a file or systemd",
          "[config][sentinel]") {
  const std::string secret = "sentinelXYZ";
  const Environment env{{"REDIS_SENTINEL_PASSWORD", secret}, {"REDIS_SENTINELS", "h:1"}};
  const Config c = parse({}, env).config;
  CHECK(c.sentinel_password == secret);
  CHECK(c.redis_password.empty());  // kept apart from the data password
  CHECK_THAT(p35::describe(c), !Contains(secret));
  CHECK_THAT(p35::describe(c), Contains("sentinel_password=***"));
  CHECK_THAT(parse({"--help"}, env).out_text, !Contains(secret));
  CHECK_THAT(error_of({"--redis-port=x"}, env), !Contains(secret));
  CHECK_THAT(error_of({"--redis-sentinel-password=" + secret, "--redis-sentinels=h:0"}),
             !Contains(secret));

  TempDir dir;
  const std::string file = dir.write("sentinel-pw", secret + "\n");
  CHECK(parse({"--redis-sentinel-password-file=" + file}).config.sentinel_password == secret);
  const std::string both = error_of({"--redis-sentinel-password-file=" + file}, env);
  CHECK_THAT(both, Contains("REDIS_SENTINEL_PASSWORD and REDIS_SENTINEL_PASSWORD_FILE"));
  CHECK_THAT(both, !Contains(secret));
  const std::string empty = dir.write("empty", "\n" + secret + "\n");
  const std::string message = env_error("REDIS_SENTINEL_PASSWORD_FILE", empty);
  CHECK_THAT(message, Contains("REDIS_SENTINEL_PASSWORD_FILE"));
  CHECK_THAT(message, !Contains(secret));

  // systemd's LoadCredential=redis-sentinel-password:<file>
  dir.write("redis-sentinel-password", secret + "\n");
  const Config s = parse({}, {{"CREDENTIALS_DIRECTORY", dir.path("")}}).config;
  CHECK(s.sentinel_password == secret);
  CHECK(s.redis_password.empty());
}

TEST_CASE("--help lists the Sentinel settings", "[config][sentinel]") {
  const std::string help = parse({"--help"}).out_text;
  for (const char* text :
       {"--redis-sentinels=HOST:PORT,...", "REDIS_SENTINELS", "--redis-sentinel-master=NAME",
        "REDIS_SENTINEL_MASTER (default: mymaster)", "--redis-sentinel-username=USER",
        "REDIS_SENTINEL_PASSWORD (secret: never printed)", "--redis-sentinel-password-file=PATH",
        "--wait-replicas=N", "P35_WAIT_REPLICAS (default: 0)", "--wait-timeout-ms=N",
        "P35_WAIT_TIMEOUT_MS (default: 1000)"}) {
    INFO(text);
    CHECK_THAT(help, Contains(text));
  }
}
