// Behaviour of the hiredis Connection against private redis-servers: transports, binary safety,
// pipelining, typed errors, AUTH/ACL, SELECT, timeouts, restarts; plus Backoff and the test
// helpers.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>
#include <chrono>
#include <csignal>
#include <random>
#include <string>
#include <system_error>
#include <thread>

#include "config.hpp"
#include "process.hpp"
#include "redis.hpp"
#include "redis_fixture.hpp"

using p35::Backoff;
using p35::CommandArgs;
using p35::Connection;
using p35::RedisError;
using p35::RedisErrorKind;
using p35::RedisOptions;
using p35::RedisServer;
using p35::RedisServerOptions;

namespace {

using Clock = std::chrono::steady_clock;

long long elapsed_ms(Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since).count();
}

// Runs f, which must throw RedisError, and returns the error.
template <typename F>
RedisError catch_redis_error(F&& f) {
  try {
    f();
  } catch (const RedisError& e) {
    return e;
  }
  FAIL("expected a RedisError");
  throw std::logic_error("unreachable");
}

// Reconnects with capped backoff until connect() succeeds or deadline_ms passes.
bool reconnect_with_backoff(Connection& c, int deadline_ms) {
  Backoff backoff(200, 10);
  const auto start = Clock::now();
  while (elapsed_ms(start) < deadline_ms) {
    try {
      c.connect();
      return true;
    } catch (const RedisError& e) {
      REQUIRE(e.connection_lost());
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff.next_delay_ms()));
    }
  }
  return false;
}

}  // namespace

TEST_CASE("connects over a unix socket and answers PING", "[redis]") {
  RedisServer server;
  Connection c = server.connect();
  REQUIRE(c.connected());
  const auto reply = c.command({"PING"});
  REQUIRE(reply.is_string());
  CHECK(reply.str() == "PONG");
  CHECK(c.options().endpoint() == "unix:" + server.socket_path());
}

TEST_CASE("connects over TCP on 127.0.0.1", "[redis]") {
  RedisServerOptions opts;
  opts.tcp = true;
  RedisServer server(opts);
  REQUIRE(server.port() > 0);
  Connection c = server.connect(RedisServer::Transport::Tcp);
  CHECK(c.command({"PING"}).str() == "PONG");
  CHECK(c.options().endpoint() == "127.0.0.1:" + std::to_string(server.port()));
}

TEST_CASE("SET, GET, INCR and DEL round trip with typed replies", "[redis]") {
  RedisServer server;
  Connection c = server.connect();
  CHECK(c.command({"SET", "t:key", "value"}).str() == "OK");
  CHECK(c.command({"GET", "t:key"}).str() == "value");
  CHECK(c.command({"GET", "t:missing"}).is_nil());
  CHECK(c.command({"INCR", "t:n"}).integer() == 1);
  CHECK(c.command({"GET", "t:n"}).integer() == 1);  // integer() reads a decimal string too
  const auto del = c.command({"DEL", "t:key", "t:n"});
  REQUIRE(del.is_integer());
  CHECK(del.integer() == 2);
  c.command({"RPUSH", "t:list", "a", "b"});
  const auto list = c.command({"LRANGE", "t:list", "0", "-1"});
  REQUIRE(list.is_array());
  REQUIRE(list.size() == 2);
  CHECK(p35::reply_str(list.element(1)) == "b");
  CHECK(list.element(2) == nullptr);
  CHECK_THROWS_AS(list.integer(), RedisError);
}

TEST_CASE("arguments are binary-safe: embedded NUL and a 1 MB value", "[redis]") {
  RedisServer server;
  Connection c = server.connect();
  const std::string key("t:\0key\r\n", 8);
  std::string big(1 << 20, '\0');
  std::mt19937 rng(42);
  for (char& ch : big) ch = static_cast<char>(rng() & 0xff);
  c.command(CommandArgs{"SET"}.add(key).add(big));
  CHECK(c.command(CommandArgs{"STRLEN"}.add(key)).integer() == (1 << 20));
  const auto reply = c.command(CommandArgs{"GET"}.add(key));
  REQUIRE(reply.str().size() == big.size());
  CHECK(reply.str() == big);
  CHECK(c.command({"GET", std::string_view("t:\0key", 6)}).is_nil());  // NUL is not a terminator
}

namespace {

// Two reply trees are equal: same types, integers, strings (byte for byte) and shapes.
bool same_tree(const redisReply* a, const redisReply* b) {
  if (a == nullptr || b == nullptr) return a == b;
  if (a->type != b->type || a->integer != b->integer || a->elements != b->elements) return false;
  if (p35::reply_str(a) != p35::reply_str(b)) return false;
  for (size_t i = 0; i < a->elements; ++i)
    if (!same_tree(a->element[i], b->element[i])) return false;
  return true;
}

}  // namespace

TEST_CASE("replies built in the reply arena equal hiredis's own, kept ones included", "[redis]") {
  RedisServer server;
  Connection plain = server.connect();
  Connection arena = server.connect();
  arena.use_reply_arena();
  std::mt19937 rng(7);
  std::string big(1 << 20, '\0');  // larger than an arena chunk: gets a chunk of its own
  for (char& ch : big) ch = static_cast<char>(rng() & 0xff);
  for (int i = 0; i < 3000; ++i) {
    CommandArgs xadd{"XADD", "t:s", "*", "n", std::to_string(i)};
    if (i % 7 == 0) xadd.add("empty").add("");
    if (i == 1500) xadd.add("big").add(big);
    plain.command(xadd);
  }
  plain.command({"XGROUP", "CREATE", "t:s", "g", "0"});
  plain.command({"XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "STREAMS", "t:s", ">"});
  plain.command({"XDEL", "t:s", plain.command({"XRANGE", "t:s", "-", "+", "COUNT", "1"})
                                    .element(0)->element[0]->str});  // a nil entry in the PEL read
  const std::vector<CommandArgs> commands = {
      {"XRANGE", "t:s", "-", "+"},
      {"XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "STREAMS", "t:s", "0"},
      {"XINFO", "GROUPS", "t:s"},
      {"GET", "t:missing"},
      {"XLEN", "t:s"},
      {"PING"},
  };
  std::vector<p35::Reply> kept;  // every arena reply stays alive while later ones are read
  for (int round = 0; round < 3; ++round) {
    for (const auto& cmd : commands) {
      const p35::Reply want = plain.command(cmd);
      p35::Reply got = arena.command(cmd);
      REQUIRE(same_tree(got.get(), want.get()));
      kept.push_back(std::move(got));
    }
    // Pipelined, with an error reply among them (returned by read_reply, not thrown).
    arena.append({"XRANGE", "t:s", "-", "+", "COUNT", "100"});
    arena.append({"INCR", "t:s"});
    arena.append({"XLEN", "t:s"});
    const p35::Reply a1 = arena.read_reply(), a2 = arena.read_reply(), a3 = arena.read_reply();
    CHECK(a1.size() == 100);
    CHECK(a2.is_error());
    CHECK(a2.str().rfind("WRONGTYPE", 0) == 0);
    CHECK(a3.integer() == 2999);
    if (round == 1) {  // a reconnect keeps the arena
      arena.disconnect();
      arena.connect();
    }
  }
  // The first replies are still intact after every later read and the reconnect.
  const p35::Reply again = plain.command(commands[0]);
  CHECK(same_tree(kept.front().get(), again.get()));
  const p35::Reply pel = plain.command(commands[1]);
  CHECK(same_tree(kept[1].get(), pel.get()));
  CHECK(p35::reply_is_nil(pel.element(0)->element[1]->element[0]->element[1]));
  kept.clear();  // all released: the arena starts over, and is right again
  for (const auto& cmd : commands) {
    const p35::Reply want = plain.command(cmd);
    const p35::Reply got = arena.command(cmd);
    CHECK(same_tree(got.get(), want.get()));
  }
}

TEST_CASE("CommandArgs keeps arguments and integers in one buffer", "[redis]") {
  CommandArgs args{"HINCRBY", "h"};
  args.add("field").add(-42LL).add(std::string_view("a\0b", 3));
  REQUIRE(args.size() == 5);
  CHECK(args.at(0) == "HINCRBY");
  CHECK(args.at(3) == "-42");
  CHECK(args.at(4) == std::string_view("a\0b", 3));
  std::vector<const char*> ptrs;
  std::vector<size_t> lens;
  args.argv(ptrs, lens);
  REQUIRE(ptrs.size() == 5);
  CHECK(lens[4] == 3);
  CHECK(std::string_view(ptrs[2], lens[2]) == "field");
  args.clear();
  CHECK(args.size() == 0);
}

TEST_CASE("pipelined replies come back in order, an error reply in the middle included",
          "[redis]") {
  RedisServer server;
  Connection c = server.connect();
  c.append({"SET", "t:a", "1"});
  c.append({"INCR", "t:not-a-number-after-this"});
  c.append({"SET", "t:s", "text"});
  c.append({"INCR", "t:s"});  // ERR value is not an integer
  c.append({"GET", "t:a"});
  CHECK(c.read_reply().str() == "OK");
  CHECK(c.read_reply().integer() == 1);
  CHECK(c.read_reply().str() == "OK");
  const auto error = c.read_reply();
  REQUIRE(error.is_error());
  CHECK(error.str().rfind("ERR", 0) == 0);
  CHECK(c.read_reply().str() == "1");
  REQUIRE(c.connected());
  for (int i = 0; i < 1000; ++i) c.append({"INCR", "t:counter"});
  for (int i = 1; i <= 1000; ++i) REQUIRE(c.read_reply().integer() == i);
}

TEST_CASE("an error reply throws kind Reply with the server's text; the connection stays usable",
          "[redis]") {
  RedisServer server;
  Connection c = server.connect();
  c.command({"SET", "t:s", "text"});
  auto e = catch_redis_error([&] { c.command({"HINCRBY", "t:s", "f", "1"}); });
  CHECK(e.kind() == RedisErrorKind::Reply);
  CHECK_FALSE(e.connection_lost());
  CHECK(e.server_message().rfind("WRONGTYPE", 0) == 0);
  CHECK(std::string(e.what()).find("Failed to run HINCRBY on unix:") == 0);
  e = catch_redis_error([&] { c.command({"EVALSHA", std::string(40, 'a'), "0"}); });
  CHECK(e.kind() == RedisErrorKind::Reply);
  CHECK(e.server_message().rfind("NOSCRIPT", 0) == 0);
  REQUIRE(c.connected());
  CHECK(c.command({"PING"}).str() == "PONG");
}

TEST_CASE("AUTH with requirepass: right password works, wrong one is Auth without the password",
          "[redis]") {
  const std::string password = "s3cret-Passw0rd";
  RedisServerOptions opts;
  opts.requirepass = password;
  RedisServer server(opts);
  Connection good = server.connect();
  CHECK(good.command({"PING"}).str() == "PONG");

  RedisOptions wrong = server.options();
  wrong.password = "wr0ng-Passw0rd";
  Connection bad(wrong);
  const auto e = catch_redis_error([&] { bad.connect(); });
  CHECK(e.kind() == RedisErrorKind::Auth);
  CHECK_FALSE(bad.connected());
  const std::string what = e.what();
  CHECK(what.find("Failed to authenticate to unix:" + server.socket_path() + ": WRONGPASS") == 0);
  CHECK(what.find(wrong.password) == std::string::npos);
  CHECK(what.find(password) == std::string::npos);
  CHECK(e.server_message().rfind("WRONGPASS", 0) == 0);
}

TEST_CASE("no password on a protected server: Auth from the handshake or the first command",
          "[redis]") {
  RedisServerOptions opts;
  opts.requirepass = "pw-123456";
  RedisServer server(opts);
  RedisOptions none = server.options();
  none.password.clear();
  none.db = 2;  // SELECT answers NOAUTH
  Connection c(none);
  auto e = catch_redis_error([&] { c.connect(); });
  CHECK(e.kind() == RedisErrorKind::Auth);
  CHECK(e.server_message().rfind("NOAUTH", 0) == 0);

  none.db = 0;  // no handshake command at all: the first command answers NOAUTH
  Connection plain(none);
  plain.connect();
  e = catch_redis_error([&] { plain.command({"GET", "t:x"}); });
  CHECK(e.kind() == RedisErrorKind::Auth);
  CHECK(e.connection_lost());
  CHECK_FALSE(plain.connected());
}

TEST_CASE("ACL user with username and password: right works, wrong fails naming the user",
          "[redis]") {
  RedisServer server;
  Connection admin = server.connect();
  admin.command({"ACL", "SETUSER", "alice", "on", ">alice-pw-1", "~t:*", "+@all"});

  RedisOptions alice = server.options();
  alice.username = "alice";
  alice.password = "alice-pw-1";
  Connection c(alice);
  c.connect();
  CHECK(c.command({"ACL", "WHOAMI"}).str() == "alice");
  CHECK(c.command({"SET", "t:k", "v"}).str() == "OK");
  const auto denied = catch_redis_error([&] { c.command({"SET", "other:k", "v"}); });
  CHECK(denied.kind() == RedisErrorKind::NoPerm);
  CHECK(denied.server_message().rfind("NOPERM", 0) == 0);
  CHECK(std::string(denied.what()).find("ACL user 'alice' lacks a permission") != std::string::npos);
  CHECK_FALSE(denied.connection_lost());
  CHECK(c.command({"GET", "t:k"}).str() == "v");  // still connected

  alice.password = "not-alice-pw";
  Connection bad(alice);
  const auto e = catch_redis_error([&] { bad.connect(); });
  CHECK(e.kind() == RedisErrorKind::Auth);
  const std::string what = e.what();
  CHECK(what.find("as user 'alice': WRONGPASS") != std::string::npos);
  CHECK(what.find("not-alice-pw") == std::string::npos);
}

TEST_CASE("SELECT: with db 3 keys land in db 3", "[redis]") {
  RedisServer server;
  RedisOptions db3 = server.options();
  db3.db = 3;
  Connection c = server.connect(db3);
  CHECK(c.options().endpoint() == "unix:" + server.socket_path() + " db=3");
  c.command({"SET", "t:in-db3", "x"});
  Connection db0 = server.connect();
  CHECK(db0.command({"EXISTS", "t:in-db3"}).integer() == 0);
  db0.command({"SELECT", "3"});
  CHECK(db0.command({"GET", "t:in-db3"}).str() == "x");
  CHECK(c.command({"CLIENT", "INFO"}).str().find(" db=3 ") != std::string_view::npos);
}

TEST_CASE("CLIENT SETNAME names the connection", "[redis]") {
  RedisServer server;
  RedisOptions named = server.options();
  named.client_name = "p35-test";
  Connection c = server.connect(named);
  CHECK(c.command({"CLIENT", "GETNAME"}).str() == "p35-test");
}

TEST_CASE("a paused server makes a command time out: Timeout kind, disconnected", "[redis]") {
  RedisServer server;
  RedisOptions quick = server.options();
  quick.command_timeout_ms = 300;
  Connection c = server.connect(quick);
  server.pause_process();
  const auto start = Clock::now();
  const auto e = catch_redis_error([&] { c.command({"PING"}); });
  const long long took_ms = elapsed_ms(start);
  server.resume_process();
  CHECK(e.kind() == RedisErrorKind::Timeout);
  CHECK(e.connection_lost());
  CHECK(std::string(e.what()).find("timed out after 300 ms") != std::string::npos);
  CHECK_FALSE(c.connected());
  // The 300 ms applied, not the default: a deadline below the default timeout, not a bound on
  // how fast a loaded machine wakes the caller.
  CHECK(took_ms >= 250);
  CHECK(took_ms < RedisOptions{}.command_timeout_ms);
  c.connect();
  CHECK(c.command({"PING"}).str() == "PONG");
}

TEST_CASE("DEBUG SLEEP longer than the command timeout is a Timeout", "[redis]") {
  RedisServer server;
  Connection c = server.connect();
  c.set_command_timeout_ms(300);
  CHECK(c.options().command_timeout_ms == 300);
  const auto e = catch_redis_error([&] { c.command({"DEBUG", "SLEEP", "2"}); });
  CHECK(e.kind() == RedisErrorKind::Timeout);
  CHECK(std::string(e.what()).find("Failed to run DEBUG SLEEP on") == 0);
  CHECK_FALSE(c.connected());
}

TEST_CASE("connecting to a stopped server fails with Io naming the endpoint", "[redis]") {
  RedisServerOptions opts;
  opts.tcp = true;
  RedisServer server(opts);
  server.stop();
  for (auto transport : {RedisServer::Transport::Unix, RedisServer::Transport::Tcp}) {
    Connection c(server.options(transport));
    const auto e = catch_redis_error([&] { c.connect(); });
    CHECK(e.kind() == RedisErrorKind::Io);
    CHECK(e.connection_lost());
    CHECK(std::string(e.what()).find("Failed to connect to " + c.options().endpoint() + ": ") == 0);
  }
}

TEST_CASE("commands on a Connection that is not connected throw Closed", "[redis]") {
  Connection c(RedisOptions{});
  REQUIRE_FALSE(c.connected());
  auto e = catch_redis_error([&] { c.command({"PING"}); });
  CHECK(e.kind() == RedisErrorKind::Closed);
  CHECK(std::string(e.what()) == "Failed to run PING on 127.0.0.1:6379: not connected");
  CHECK(catch_redis_error([&] { c.append({"PING"}); }).kind() == RedisErrorKind::Closed);
  CHECK(catch_redis_error([&] { c.read_reply(); }).kind() == RedisErrorKind::Closed);
}

TEST_CASE(
    "a server restart is survived: connection lost, then reconnect with backoff; AOF keeps data",
    "[redis]") {
  RedisServerOptions opts;
  opts.tcp = true;
  opts.appendonly = true;
  RedisServer server(opts);
  for (auto transport : {RedisServer::Transport::Unix, RedisServer::Transport::Tcp}) {
    Connection c = server.connect(transport);
    c.command({"SET", "t:survives", "yes"});
    server.restart();
    const auto e = catch_redis_error([&] { c.command({"GET", "t:survives"}); });
    CHECK(e.connection_lost());
    CHECK((e.kind() == RedisErrorKind::Closed || e.kind() == RedisErrorKind::Io));
    CHECK_FALSE(c.connected());
    REQUIRE(reconnect_with_backoff(c, 10000));
    CHECK(c.command({"GET", "t:survives"}).str() == "yes");
  }
}

TEST_CASE("a SIGKILLed server with appendfsync always keeps acknowledged writes", "[redis]") {
  RedisServerOptions opts;
  opts.appendonly = true;
  RedisServer server(opts);
  Connection c = server.connect();
  for (int i = 0; i < 100; ++i) c.command({"INCR", "t:acked"});
  server.kill();
  CHECK_FALSE(server.running());
  const auto e = catch_redis_error([&] { c.command({"GET", "t:acked"}); });
  CHECK(e.connection_lost());
  server.start();
  REQUIRE(reconnect_with_backoff(c, 10000));
  CHECK(c.command({"GET", "t:acked"}).integer() == 100);
}

TEST_CASE("Backoff grows by doubling with ±20 % jitter, caps at max_ms and resets", "[redis]") {
  Backoff b(1000, 100);
  const int bases[] = {100, 200, 400, 800, 1000, 1000, 1000};
  for (int base : bases) {
    const int d = b.next_delay_ms();
    CHECK(d >= base * 8 / 10);
    CHECK(d <= std::min(base * 12 / 10, 1000));
  }
  CHECK(b.attempts() == 7);
  for (int i = 0; i < 100; ++i) CHECK(b.next_delay_ms() <= 1000);
  b.reset();
  CHECK(b.attempts() == 0);
  CHECK(b.next_delay_ms() <= 120);
}

TEST_CASE("RedisOptions::from_config copies the connection fields", "[redis]") {
  p35::Config cfg;
  cfg.redis_host = "10.0.0.5";
  cfg.redis_port = 6380;
  cfg.redis_socket = "/run/redis/redis.sock";
  cfg.redis_username = "p35";
  cfg.redis_password = "pw";
  cfg.redis_db = 4;
  cfg.connect_timeout_ms = 111;
  cfg.command_timeout_ms = 2222;
  const auto o = RedisOptions::from_config(cfg, "p35-ingest");
  CHECK(o.host == "10.0.0.5");
  CHECK(o.port == 6380);
  CHECK(o.unix_socket == "/run/redis/redis.sock");
  CHECK(o.username == "p35");
  CHECK(o.password == "pw");
  CHECK(o.db == 4);
  CHECK(o.connect_timeout_ms == 111);
  CHECK(o.command_timeout_ms == 2222);
  CHECK(o.client_name == "p35-ingest");
  CHECK(o.endpoint() == "unix:/run/redis/redis.sock db=4");
  RedisOptions tcp = o;
  tcp.unix_socket.clear();
  tcp.db = 0;
  CHECK(tcp.endpoint() == "10.0.0.5:6380");
}

TEST_CASE("ChildProcess reports exit codes, signals and extra environment", "[redis][process]") {
  p35::ChildProcess exits({"/bin/sh", "-c", "exit 3"});
  auto status = exits.wait_exit(5000);
  REQUIRE(status);
  CHECK(status->exited_with(3));

  p35::SpawnOptions spawn;
  spawn.env["P35_TEST_VAR"] = "hello";
  p35::ChildProcess env({"sh", "-c", "test \"$P35_TEST_VAR\" = hello"}, spawn);
  status = env.wait_exit(5000);
  REQUIRE(status);
  CHECK(status->exited_with(0));

  p35::ChildProcess sleeper({"sleep", "30"});
  CHECK(sleeper.alive());
  CHECK_FALSE(sleeper.wait_exit(50));
  REQUIRE(sleeper.send_signal(SIGTERM));
  status = sleeper.wait_exit(5000);
  REQUIRE(status);
  CHECK(status->killed_by(SIGTERM));
  CHECK_FALSE(sleeper.alive());

  CHECK_THROWS_AS(p35::ChildProcess({"/nonexistent/p35-no-such-program"}), std::system_error);
  CHECK_THROWS_AS(p35::ChildProcess({"p35-no-such-program-in-path"}), std::system_error);
  CHECK(p35::wait_until([] { return true; }, 0));
  CHECK_FALSE(p35::wait_until([] { return false; }, 30, 5));
}

TEST_CASE("a missing redis-server binary is a failure, not a skip", "[redis]") {
  const char* old = std::getenv("P35_REDIS_SERVER");
  const std::string saved = old != nullptr ? old : "";
  setenv("P35_REDIS_SERVER", "/nonexistent/redis-server", 1);
  CHECK_THROWS_WITH(RedisServer(), Catch::Contains("/nonexistent/redis-server"));
  if (old != nullptr) {
    setenv("P35_REDIS_SERVER", saved.c_str(), 1);
  } else {
    unsetenv("P35_REDIS_SERVER");
  }
}
