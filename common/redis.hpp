// A synchronous Redis connection on hiredis: TCP or unix socket, AUTH, SELECT, timeouts, typed
// errors mapped in one place, RAII for contexts and replies, pipelining, capped backoff.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct redisContext;
struct redisReply;

namespace p35 {

class ReplyArena;

struct Config;

// Whether an error reply's text begins with `code` as whole words: Redis's error code is the
// reply's first word ("NOSCRIPT", "BUSYGROUP", our scripts' "P35CONFLICT"); a few errors are told
// apart only by more words ("ERR no such key").
bool error_code_is(std::string_view server_text, std::string_view code);

enum class RedisErrorKind {
  Io,        // connect refused, reset, broken pipe
  Timeout,   // connect or command timeout
  Closed,    // the server closed the connection
  Protocol,  // unparsable reply
  Auth,      // AUTH refused (wrong password, unknown user, NOAUTH)
  NoPerm,    // the ACL user may not run this command or touch this key (NOPERM, or the same
             // refusal inside a script); the connection stays usable, the message says the fix
  Reply,     // the server answered an error reply (message holds it: "NOSCRIPT ...", "OOM ...")
};
// When this enum grows: update connection_lost(), error_from_reply(), connect_with_retry() and the
// stage loop's error policy (StageLoop::recover in stage_loop.cpp, each stage's failure()).

// what(): "<what we were doing>: <what hiredis or Redis said>". Never contains the password.
class RedisError : public std::runtime_error {
 public:
  RedisError(RedisErrorKind kind, const std::string& message, std::string server_message = {})
      : std::runtime_error(message), kind_(kind), server_message_(std::move(server_message)) {}
  RedisErrorKind kind() const { return kind_; }
  // For Reply/Auth/NoPerm: the server's error text as it came ("NOSCRIPT No matching script...").
  const std::string& server_message() const { return server_message_; }
  // The server answered an error reply whose code is `code` (see error_code_is): is("NOSCRIPT").
  // False for errors without a reply (I/O, timeout, closed).
  bool is(std::string_view code) const { return error_code_is(server_message_, code); }
  // The connection is unusable after this error and must be reconnected.
  bool connection_lost() const {
    return kind_ != RedisErrorKind::Reply && kind_ != RedisErrorKind::NoPerm;
  }

 private:
  RedisErrorKind kind_;
  std::string server_message_;
};

struct SentinelAddress {
  std::string host;
  int port = 0;
};

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string unix_socket;  // wins over host/port when non-empty
  std::string username;     // AUTH <username> <password> when set, else AUTH <password>
  std::string password;     // never logged
  int db = 0;
  int connect_timeout_ms = 2000;
  int command_timeout_ms = 10000;
  std::string client_name;  // CLIENT SETNAME when non-empty
  // Redis Sentinel (sentinel.hpp): when non-empty, every connect() asks them for the primary of
  // `sentinel_master` and confirms it with ROLE; host, port and unix_socket are then overwritten.
  std::vector<SentinelAddress> sentinels;
  std::string sentinel_master = "mymaster";
  std::string sentinel_username;
  std::string sentinel_password;  // never logged

  static RedisOptions from_config(const Config& cfg, std::string client_name);
  // "unix:/path" or "host:port", plus " db=N" when db != 0; for logs and error messages.
  std::string endpoint() const;
};

// Owns one redisReply tree (RAII). Views into it stay valid while the Reply lives.
class Reply {
 public:
  Reply() = default;
  explicit Reply(redisReply* r) : r_(r) {}
  // A tree built in `arena` (see reply_arena.hpp): released to it instead of freeReplyObject.
  Reply(redisReply* r, std::shared_ptr<ReplyArena> arena);
  Reply(Reply&&) noexcept = default;
  Reply& operator=(Reply&&) noexcept = default;

  const redisReply* get() const { return r_.get(); }
  bool is_nil() const;
  bool is_error() const;
  bool is_error(std::string_view code) const;  // an error reply with this code (error_code_is)
  bool is_array() const;
  bool is_string() const;  // bulk or status string
  bool is_integer() const;
  std::string_view str() const;  // bulk, status or error text; empty for other types
  // An integer reply, or a string reply holding a decimal integer; else throws RedisError
  // (Protocol kind, the connection itself is fine).
  long long integer() const;
  size_t size() const;                        // array length; 0 for other types
  const redisReply* element(size_t i) const;  // nullptr when out of range or not an array

 private:
  struct Free {
    std::shared_ptr<ReplyArena> arena;
    void operator()(redisReply* r) const;
  };
  std::unique_ptr<redisReply, Free> r_;
};

// The typed error for an error reply the server sent while we were `doing` something ("run XACK
// on unix:/x"): Auth for NOAUTH and WRONGPASS, NoPerm for NOPERM or an ACL refusal inside a
// script (the message then names the user and says how to fix it), else Reply. `username` is the
// ACL user we authenticated as (empty: the default user).
RedisError error_from_reply(std::string_view doing, std::string_view server_text,
                            std::string_view username = {});

// Helpers to read elements of a reply tree without copying. A nullptr counts as nil / empty.
bool reply_is_nil(const redisReply* r);
std::string_view reply_str(const redisReply* r);

// Arguments of one command in one buffer, so a command of many thousand args costs two allocations.
class CommandArgs {
 public:
  CommandArgs() = default;
  CommandArgs(std::initializer_list<std::string_view> args);
  CommandArgs& add(std::string_view arg);
  CommandArgs& add(long long value);
  void clear();
  size_t size() const { return offsets_.size(); }
  std::string_view at(size_t i) const;
  // Pointers for redisCommandArgv / redisAppendCommandArgv, valid until the next add().
  void argv(std::vector<const char*>& ptrs, std::vector<size_t>& lens) const;

 private:
  std::string buffer_;
  std::vector<std::pair<size_t, size_t>> offsets_;  // (offset, length) into buffer_
};

class Connection {
 public:
  explicit Connection(RedisOptions options);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  Connection(Connection&&) noexcept;
  Connection& operator=(Connection&&) noexcept;

  // Connects, AUTHs, SELECTs, sets the client name. With sentinels (RedisOptions::sentinels) it
  // first resolves the primary through them and afterwards confirms it with ROLE: a replica (a
  // failover in progress, or a sentinel that has not noticed yet) throws Io, so the caller's
  // backoff resolves again. A primary other than the last one confirmed is logged once
  // ("Primary moved from A to B (told by sentinel S)") and counted in primary_moves(). Throws RedisError (Auth for a refused AUTH or
  // a NOAUTH answer during the handshake); after any throw connected() is false. The first call
  // in a process also ignores SIGPIPE if it was at its default: hiredis writes with write(2), and
  // a server that went away must be a typed error, not the death of the daemon.
  void connect();
  void disconnect();
  bool connected() const { return ctx_ != nullptr; }
  int fd() const;  // the socket, -1 when not connected
  const RedisOptions& options() const { return options_; }
  // How often connect() found the primary at another address than the previous time (Sentinel).
  uint64_t primary_moves() const { return primary_moves_; }

  // One command, one round trip. Throws RedisError: Reply kind for a top-level error reply (the
  // connection stays usable), any other kind after disconnecting. Not connected: throws Closed.
  // NOAUTH and WRONGPASS error replies throw Auth (and disconnect: a reconnect AUTHs again);
  // NOPERM throws NoPerm (see error_from_reply).
  Reply command(const CommandArgs& args);
  Reply command(std::initializer_list<std::string_view> args);

  // Pipelining: append several commands, then read their replies in order. A top-level error
  // reply is returned (not thrown) by read_reply so that callers can match it to its command.
  void append(const CommandArgs& args);
  void append(std::initializer_list<std::string_view> args);
  Reply read_reply();
  // Send what append() queued without waiting for a reply (read_reply() also sends it first).
  void flush();

  // Build this connection's replies in a reusable arena (reply_arena.hpp), now and after every
  // reconnect: for a connection that reads large replies again and again (ingest).
  void use_reply_arena();

  // Change the socket read/write timeout (e.g. longer than a blocking XREADGROUP). Also kept in
  // options() for the next connect(). 0 means no timeout.
  void set_command_timeout_ms(int timeout_ms);

 private:
  struct FreeContext {
    void operator()(redisContext* c) const;
  };
  void handshake();
  void resolve_primary();
  void confirm_primary();
  void authenticate();
  void select_db();
  void set_client_name();
  Reply handshake_command(const CommandArgs& args, std::string_view doing);
  void set_socket_timeout_ms(int timeout_ms);
  // The one place where a hiredis context error becomes a RedisError; disconnects first.
  [[noreturn]] void fail(std::string_view doing, int saved_errno);
  Reply wrap(void* raw) const;
  RedisOptions options_;
  std::shared_ptr<ReplyArena> arena_;
  std::unique_ptr<redisContext, FreeContext> ctx_;
  std::vector<const char*> argv_;
  std::vector<size_t> argvlen_;
  std::string primary_;   // "host:port" of the last confirmed primary (Sentinel), for move logs
  std::string told_by_;   // the sentinel that named the primary of the connect() in progress
  uint64_t primary_moves_ = 0;
};

// Capped exponential backoff with jitter: 50 ms, 100 ms, ... up to max_ms, each delay ±20 % (never
// above max_ms), so that three stages reconnecting after one Redis restart do not move in step.
class Backoff {
 public:
  explicit Backoff(int max_ms, int initial_ms = 50) : max_ms_(max_ms), initial_ms_(initial_ms) {}
  int next_delay_ms();
  void reset() { attempt_ = 0; }
  int attempts() const { return attempt_; }

 private:
  int max_ms_;
  int initial_ms_;
  int attempt_ = 0;
};

}  // namespace p35
