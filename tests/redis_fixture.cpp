// Starting, stopping and talking to the private redis-server of one test.
#include "redis_fixture.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

namespace p35 {

namespace {

std::string make_temp_dir() {
  std::string pattern = "/tmp/p35-redis-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "Failed to create a temp dir in /tmp");
  }
  return pattern;
}

std::string redis_server_program() {
  const char* env = std::getenv("P35_REDIS_SERVER");
  return env != nullptr && *env != '\0' ? env : "redis-server";
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error("Failed to write " + path);
}

}  // namespace

int pick_free_loopback_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "Failed to create a socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  const bool ok = ::bind(fd, sa, sizeof addr) == 0 && ::getsockname(fd, sa, &len) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) throw std::system_error(err, std::generic_category(), "Failed to bind 127.0.0.1:0");
  return ntohs(addr.sin_port);
}

RedisServer::RedisServer(RedisServerOptions options)
    : options_(std::move(options)), program_(redis_server_program()), dir_(make_temp_dir()) {
  socket_path_ = dir_ + "/redis.sock";
  std::string acl = options_.acl_file_text;
  if (acl.empty()) {
    const std::string pass = options_.requirepass.empty() ? "nopass" : ">" + options_.requirepass;
    acl = "user default on " + pass + " ~* &* +@all\n";
  }
  write_file(dir_ + "/users.acl", acl);
  // Another process may take the port between our probe and redis-server's bind: try again.
  for (int attempt = 1;; ++attempt) {
    if (options_.tcp) port_ = pick_free_loopback_port();
    try {
      start();
      return;
    } catch (const std::runtime_error&) {
      const bool port_taken = log_tail().find("Address already in use") != std::string::npos;
      if (!options_.tcp || !port_taken || attempt == 3) {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
        throw;
      }
    }
  }
}

RedisServer::~RedisServer() {
  try {
    stop();
  } catch (...) {
    // A destructor must not throw; ChildProcess's own destructor still SIGKILLs and reaps.
  }
  process_.reset();
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

std::vector<std::string> RedisServer::command_line() const {
  // One option and its value per line.
  // clang-format off
  std::vector<std::string> args = {
      program_,
      "--save", "",
      "--appendonly", options_.appendonly ? "yes" : "no",
      "--dir", dir_,
      "--unixsocket", socket_path_,
      "--unixsocketperm", "700",
      "--port", std::to_string(port_),
      "--bind", "127.0.0.1",
      "--daemonize", "no",
      "--logfile", "",  // stdout, which is redis.log
      "--enable-debug-command", "local",  // DEBUG SLEEP / RELOAD for tests
  };
  // clang-format on
  if (options_.appendonly) args.insert(args.end(), {"--appendfsync", "always"});
  // requirepass is the default user's password in the ACL file: with --aclfile, the file's
  // default user replaces whatever --requirepass said.
  args.insert(args.end(), {"--aclfile", dir_ + "/users.acl"});
  args.insert(args.end(), options_.extra_args.begin(), options_.extra_args.end());
  return args;
}

std::string RedisServer::log_tail(int max_lines) const {
  return file_tail(log_path(), max_lines);
}

bool RedisServer::running() {
  return process_ && process_->alive();
}

pid_t RedisServer::pid() const {
  return process_ ? process_->pid() : -1;
}

void RedisServer::start() {
  if (running()) return;
  SpawnOptions spawn;
  spawn.log_path = log_path();
  try {
    process_ = std::make_unique<ChildProcess>(command_line(), spawn);
  } catch (const std::system_error& e) {
    throw std::runtime_error(std::string(e.what()) +
                             " (set P35_REDIS_SERVER or install redis-server)");
  }
  wait_ready();
}

// Up means any answer other than LOADING: NOAUTH from a password-protected server counts.
bool RedisServer::answers_ping() const {
  RedisOptions probe;
  probe.unix_socket = socket_path_;
  probe.connect_timeout_ms = 500;
  probe.command_timeout_ms = 1000;
  Connection c(probe);
  try {
    c.connect();
    c.command({"PING"});
    return true;
  } catch (const RedisError& e) {
    if (e.kind() == RedisErrorKind::Auth) return true;
    return e.kind() == RedisErrorKind::Reply && e.server_message().rfind("LOADING", 0) != 0;
  }
}

void RedisServer::wait_ready() {
  bool exited = false;
  const bool ready = wait_until(
      [&] {
        exited = !process_->alive();
        return exited || answers_ping();
      },
      options_.start_timeout_ms, 20);
  if (exited) fail_start("it exited with " + process_->exit_status()->describe());
  if (!ready) {
    fail_start("it did not answer PING within " + std::to_string(options_.start_timeout_ms) +
               " ms");
  }
}

void RedisServer::fail_start(const std::string& why) {
  if (process_) process_->kill_and_reap();
  process_.reset();
  throw std::runtime_error("Failed to start " + program_ + " in " + dir_ + ": " + why + "\n--- " +
                           log_path() + " (tail) ---\n" + log_tail());
}

void RedisServer::stop() {
  if (!process_) return;
  if (process_->alive()) {
    process_->send_signal(SIGTERM);
    process_->send_signal(SIGCONT);  // a paused server handles SIGTERM only once it runs
    if (!process_->wait_exit(10000)) process_->kill_and_reap();
  }
  process_.reset();
}

void RedisServer::kill() {
  if (process_) process_->kill_and_reap();
  process_.reset();
}

void RedisServer::restart() {
  stop();
  start();
}

void RedisServer::pause_process() {
  if (!process_ || !process_->send_signal(SIGSTOP)) {
    throw std::runtime_error("Failed to pause redis-server: it is not running");
  }
}

void RedisServer::resume_process() {
  if (!process_ || !process_->send_signal(SIGCONT)) {
    throw std::runtime_error("Failed to resume redis-server: it is not running");
  }
}

RedisOptions RedisServer::options(Transport transport) const {
  RedisOptions o;
  if (transport == Transport::Unix) {
    o.unix_socket = socket_path_;
  } else {
    if (port_ == 0)
      throw std::logic_error("RedisServer has no TCP port: set RedisServerOptions::tcp");
    o.host = "127.0.0.1";
    o.port = port_;
  }
  o.password = options_.requirepass;
  o.connect_timeout_ms = 2000;
  o.command_timeout_ms = 5000;
  return o;
}

Connection RedisServer::connect(Transport transport) const {
  return connect(options(transport));
}

Connection RedisServer::connect(const RedisOptions& options) const {
  Connection c(options);
  c.connect();
  return c;
}

// ---- SentinelServer -----------------------------------------------------------------------------

SentinelServer::SentinelServer(const std::string& dir, int primary_port, const std::string& master) {
  port_ = pick_free_loopback_port();
  const std::string conf = dir + "/sentinel-" + std::to_string(port_) + ".conf";
  log_path_ = dir + "/sentinel-" + std::to_string(port_) + ".log";
  const std::string m = master;
  write_file(conf, "port " + std::to_string(port_) + "\nbind 127.0.0.1\ndir " + dir +
                       "\nsentinel monitor " + m + " 127.0.0.1 " + std::to_string(primary_port) +
                       " 2\nsentinel down-after-milliseconds " + m +
                       " 1000\nsentinel failover-timeout " + m + " 5000\n");
  SpawnOptions spawn;
  spawn.log_path = log_path_;
  process_ = std::make_unique<ChildProcess>(
      std::vector<std::string>{redis_server_program(), conf, "--sentinel"}, spawn);
  const bool up = wait_until(
      [&] {
        try {
          connect().command({"PING"});
          return true;
        } catch (const RedisError&) {
          return false;
        }
      },
      10000, 20);
  if (!up) throw std::runtime_error("Failed to start a sentinel:\n" + file_tail(log_path_));
}

Connection SentinelServer::connect() const {
  RedisOptions o;
  o.host = "127.0.0.1";
  o.port = port_;
  o.connect_timeout_ms = 1000;
  o.command_timeout_ms = 2000;
  Connection c(o);
  c.connect();
  return c;
}

}  // namespace p35
