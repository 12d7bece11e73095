// A private, throwaway redis-server per test: temp dir, unix socket, optional loopback TCP port,
// started and stopped, restarted, paused and killed on demand, removed with its dir afterwards.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "process.hpp"
#include "redis.hpp"

namespace p35 {

struct RedisServerOptions {
  // Also listen on 127.0.0.1 on a port that was free a moment ago (found by binding 127.0.0.1:0).
  bool tcp = false;
  // AOF on with appendfsync always, so that restart() and kill() lose nothing acknowledged.
  bool appendonly = false;
  // The default user's password; options() and connect() then AUTH with it.
  std::string requirepass;
  // Written to <dir>/users.acl, always passed as --aclfile (so that users a test creates with
  // ACL SETUSER and ACL SAVE survive restart()). Empty: "user default on nopass ~* &* +@all", or
  // with requirepass its password instead of nopass. A non-empty text replaces requirepass.
  std::string acl_file_text;
  // Appended to the command line as they are, e.g. {"--maxmemory", "1mb"}.
  std::vector<std::string> extra_args;
  // How long start() waits for PING to answer.
  int start_timeout_ms = 10000;
};

class RedisServer {
 public:
  enum class Transport { Unix, Tcp };

  // Starts the server (see start()). The binary is $P35_REDIS_SERVER, else "redis-server" in PATH;
  // a missing binary or a server that does not answer PING in time throws std::runtime_error
  // (with the server's log tail): a failure, never a skip. The server dies with the thread that
  // (re)started it (SpawnOptions::die_with_parent): call start()/restart() from the test's thread.
  explicit RedisServer(RedisServerOptions options = {});
  ~RedisServer();  // stop() and remove the temp dir
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& socket_path() const { return socket_path_; }
  int port() const { return port_; }  // 0 when there is no TCP listener
  std::string log_path() const { return dir_ + "/redis.log"; }
  std::string log_tail(int max_lines = 40) const;
  bool running();
  pid_t pid() const;

  // Starts the server if it is not running and waits until PING answers.
  void start();
  // SIGTERM (and SIGCONT, in case it is paused), wait up to 10 s, then SIGKILL.
  void stop();
  // SIGKILL and reap: a crash. With appendonly everything acknowledged survives.
  void kill();
  // stop() then start() with the same dir, socket and port, so AOF data reloads.
  void restart();
  // SIGSTOP / SIGCONT: the server keeps its sockets but answers nothing (timeouts).
  void pause_process();
  void resume_process();

  // Options for a client of this server: unix socket (or 127.0.0.1:port), the requirepass
  // password, short timeouts (connect 2 s, command 5 s).
  RedisOptions options(Transport transport = Transport::Unix) const;
  // A connected Connection with options(transport), or with the given options.
  Connection connect(Transport transport = Transport::Unix) const;
  Connection connect(const RedisOptions& options) const;

 private:
  std::vector<std::string> command_line() const;
  void wait_ready();
  bool answers_ping() const;
  [[noreturn]] void fail_start(const std::string& why);

  RedisServerOptions options_;
  std::string program_;
  std::string dir_;
  std::string socket_path_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> process_;
};

// A loopback TCP port that was free when asked (bind 127.0.0.1:0, read it, close).
int pick_free_loopback_port();

// A Redis Sentinel (`redis-server <file> --sentinel`) on a free loopback port, monitoring the
// primary at 127.0.0.1:<primary_port> as `master` with quorum 2, down-after 1 s and failover
// timeout 5 s (TEST_NOTES.md). Its writable config file and log live in `dir`, which must outlive
// it. Started by the constructor (waits for PING), SIGKILLed by the destructor.
class SentinelServer {
 public:
  SentinelServer(const std::string& dir, int primary_port, const std::string& master = "mymaster");
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string log_path() const { return log_path_; }
  Connection connect() const;

 private:
  int port_ = 0;
  std::string log_path_;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace p35
