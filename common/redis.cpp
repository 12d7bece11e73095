// The synchronous hiredis connection declared in redis.hpp: handshake, typed errors, replies,
// backoff.
#include "redis.hpp"

#include "reply_arena.hpp"

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <mutex>
#include <random>

#include <spdlog/spdlog.h>

#include "config.hpp"
#include "sentinel.hpp"

namespace p35 {

bool error_code_is(std::string_view server_text, std::string_view code) {
  return server_text.starts_with(code) &&
         (server_text.size() == code.size() || server_text[code.size()] == ' ');
}

namespace {

timeval to_timeval(int timeout_ms) {
  timeval tv{};
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = static_cast<suseconds_t>(timeout_ms % 1000) * 1000;
  return tv;
}

// Error replies that say "who you are is not allowed": reconnecting (and AUTHing again) is the
// remedy, or the operator must fix the credentials.
bool is_auth_error(std::string_view server_text) {
  return error_code_is(server_text, "NOAUTH") || error_code_is(server_text, "WRONGPASS");
}

// Error replies that say "you are known but may not do this": the ACL user lacks a command or a
// key pattern. Inside a script Redis 7 reports it as an ERR ("The user executing the script
// can't run this command or subcommand", "... can't access at least one of the keys ...").
bool is_noperm_error(std::string_view server_text) {
  return error_code_is(server_text, "NOPERM") ||
         server_text.find("The user executing the script can't") != std::string_view::npos;
}

bool is_timeout_errno(int e) {
  return e == EAGAIN || e == EWOULDBLOCK || e == ETIMEDOUT;
}

// hiredis records an I/O error as strerror(errno); the text still tells a timeout when errno has
// been overwritten since.
bool is_timeout_text(std::string_view errstr) {
  return errstr == std::strerror(EAGAIN) || errstr == std::strerror(ETIMEDOUT);
}

RedisErrorKind kind_of(int hiredis_err, int saved_errno, std::string_view errstr) {
  switch (hiredis_err) {
    case REDIS_ERR_IO:
      if (is_timeout_errno(saved_errno) || is_timeout_text(errstr)) return RedisErrorKind::Timeout;
      return RedisErrorKind::Io;
    case REDIS_ERR_EOF:
      return RedisErrorKind::Closed;
    case REDIS_ERR_PROTOCOL:
      return RedisErrorKind::Protocol;
#ifdef REDIS_ERR_TIMEOUT
    case REDIS_ERR_TIMEOUT:
      return RedisErrorKind::Timeout;
#endif
    default:
      return RedisErrorKind::Io;
  }
}

// The one mapping of a hiredis context error to a RedisError. `doing` names the action and the
// endpoint ("run GET on unix:/x", "connect to 127.0.0.1:6379"); it never holds command arguments.
RedisError context_error(const redisContext* ctx, int saved_errno, std::string_view doing,
                         int timeout_ms) {
  if (ctx == nullptr) {
    return RedisError(RedisErrorKind::Io,
                      fmt::format("Failed to {}: cannot allocate a hiredis context", doing));
  }
  const RedisErrorKind kind = kind_of(ctx->err, saved_errno, ctx->errstr);
  std::string why = ctx->errstr[0] != '\0' ? std::string(ctx->errstr) : "unknown hiredis error";
  if (kind == RedisErrorKind::Timeout) {
    why = fmt::format("timed out after {} ms ({})", timeout_ms, why);
  }
  return RedisError(kind, fmt::format("Failed to {}: {}", doing, why));
}

// "GET", or "CLIENT SETNAME" for container commands; never further arguments (AUTH's password,
// CONFIG SET's value). Unprintable bytes become '?' so a garbage command cannot garble a log line.
std::string command_name(const CommandArgs& args) {
  static constexpr std::string_view kContainers[] = {"ACL",    "CLIENT", "CLUSTER",  "COMMAND",
                                                     "CONFIG", "DEBUG",  "FUNCTION", "MEMORY",
                                                     "OBJECT", "SCRIPT", "XGROUP",   "XINFO"};
  auto printable = [](std::string_view s) {
    std::string out(s.substr(0, 32));
    for (char& c : out) {
      if (c < 0x21 || c > 0x7e) c = '?';
    }
    return out;
  };
  if (args.size() == 0) return "(empty command)";
  std::string name = printable(args.at(0));
  std::string upper = name;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 32) : c; });
  const bool container =
      std::find(std::begin(kContainers), std::end(kContainers), upper) != std::end(kContainers);
  if (container && args.size() > 1) name += " " + printable(args.at(1));
  return name;
}

// hiredis writes with write(2); a peer that went away would raise SIGPIPE and kill the process.
void ignore_default_sigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old {};
    if (sigaction(SIGPIPE, nullptr, &old) == 0 && old.sa_handler == SIG_DFL) {
      struct sigaction ign {};
      ign.sa_handler = SIG_IGN;
      sigemptyset(&ign.sa_mask);
      sigaction(SIGPIPE, &ign, nullptr);
    }
  });
}

}  // namespace

RedisError error_from_reply(std::string_view doing, std::string_view server_text,
                            std::string_view username) {
  std::string message = fmt::format("Failed to {}: {}", doing, server_text);
  if (is_auth_error(server_text))
    return RedisError(RedisErrorKind::Auth, message, std::string(server_text));
  if (!is_noperm_error(server_text))
    return RedisError(RedisErrorKind::Reply, message, std::string(server_text));
  const std::string_view user = username.empty() ? "default" : username;
  message += fmt::format(
      ". The Redis ACL user '{}' lacks a permission P3.5 needs: grant it (the rule is in "
      "p35-redis.acl, docs/operations.md \"Least privilege\"); ACL LOG on the Redis server names what was "
      "refused",
      user);
  return RedisError(RedisErrorKind::NoPerm, message, std::string(server_text));
}

// ---- RedisOptions -------------------------------------------------------------------------------

RedisOptions RedisOptions::from_config(const Config& cfg, std::string client_name) {
  RedisOptions o;
  o.host = cfg.redis_host;
  o.port = cfg.redis_port;
  o.unix_socket = cfg.redis_socket;
  o.username = cfg.redis_username;
  o.password = cfg.redis_password;
  o.db = cfg.redis_db;
  o.connect_timeout_ms = cfg.connect_timeout_ms;
  o.command_timeout_ms = cfg.command_timeout_ms;
  o.client_name = std::move(client_name);
  for (const HostPort& s : cfg.sentinels) o.sentinels.push_back(SentinelAddress{s.host, s.port});
  o.sentinel_master = cfg.sentinel_master;
  o.sentinel_username = cfg.sentinel_username;
  o.sentinel_password = cfg.sentinel_password;
  return o;
}

std::string RedisOptions::endpoint() const {
  std::string out = unix_socket.empty() ? fmt::format("{}:{}", host, port) : "unix:" + unix_socket;
  if (db != 0) out += fmt::format(" db={}", db);
  return out;
}

// ---- Reply --------------------------------------------------------------------------------------

Reply::Reply(redisReply* r, std::shared_ptr<ReplyArena> arena) : r_(r, Free{std::move(arena)}) {
  if (r_ && r_.get_deleter().arena) r_.get_deleter().arena->acquire();
}

void Reply::Free::operator()(redisReply* r) const {
  if (arena) arena->release();
  else freeReplyObject(r);
}

bool reply_is_nil(const redisReply* r) {
  return r == nullptr || r->type == REDIS_REPLY_NIL;
}

std::string_view reply_str(const redisReply* r) {
  if (r == nullptr || r->str == nullptr) return {};
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
      return {r->str, r->len};
    default:
      return {};
  }
}

bool Reply::is_nil() const {
  return reply_is_nil(r_.get());
}
bool Reply::is_error() const {
  return r_ && r_->type == REDIS_REPLY_ERROR;
}
bool Reply::is_error(std::string_view code) const {
  return is_error() && error_code_is(str(), code);
}
bool Reply::is_array() const {
  return r_ && r_->type == REDIS_REPLY_ARRAY;
}
bool Reply::is_string() const {
  return r_ && (r_->type == REDIS_REPLY_STRING || r_->type == REDIS_REPLY_STATUS);
}
bool Reply::is_integer() const {
  return r_ && r_->type == REDIS_REPLY_INTEGER;
}
std::string_view Reply::str() const {
  return reply_str(r_.get());
}
size_t Reply::size() const {
  return is_array() ? r_->elements : 0;
}

long long Reply::integer() const {
  if (is_integer()) return r_->integer;
  if (is_string()) {
    const std::string_view s = str();
    long long value = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
    if (ec == std::errc() && end == s.data() + s.size()) return value;
  }
  throw RedisError(RedisErrorKind::Protocol,
                   fmt::format("Failed to read an integer reply: got type {}", r_ ? r_->type : 0));
}

const redisReply* Reply::element(size_t i) const {
  return i < size() ? r_->element[i] : nullptr;
}

// ---- CommandArgs --------------------------------------------------------------------------------

CommandArgs::CommandArgs(std::initializer_list<std::string_view> args) {
  size_t total = 0;
  for (auto a : args) total += a.size();
  buffer_.reserve(total);
  offsets_.reserve(args.size());
  for (auto a : args) add(a);
}

CommandArgs& CommandArgs::add(std::string_view arg) {
  offsets_.emplace_back(buffer_.size(), arg.size());
  buffer_.append(arg);
  return *this;
}

CommandArgs& CommandArgs::add(long long value) {
  char digits[24];
  auto [end, ec] = std::to_chars(std::begin(digits), std::end(digits), value);
  (void)ec;  // 24 bytes always hold a long long
  return add(std::string_view(digits, static_cast<size_t>(end - digits)));
}

void CommandArgs::clear() {
  buffer_.clear();
  offsets_.clear();
}

std::string_view CommandArgs::at(size_t i) const {
  const auto [offset, length] = offsets_.at(i);
  return std::string_view(buffer_).substr(offset, length);
}

void CommandArgs::argv(std::vector<const char*>& ptrs, std::vector<size_t>& lens) const {
  ptrs.clear();
  lens.clear();
  ptrs.reserve(offsets_.size());
  lens.reserve(offsets_.size());
  for (const auto& [offset, length] : offsets_) {
    ptrs.push_back(buffer_.data() + offset);
    lens.push_back(length);
  }
}

// ---- Connection ---------------------------------------------------------------------------------

void Connection::FreeContext::operator()(redisContext* c) const {
  redisFree(c);
}

Connection::Connection(RedisOptions options) : options_(std::move(options)) {}
Connection::~Connection() = default;
Connection::Connection(Connection&&) noexcept = default;
Connection& Connection::operator=(Connection&&) noexcept = default;

int Connection::fd() const { return ctx_ ? ctx_->fd : -1; }

void Connection::disconnect() {
  ctx_.reset();
  if (arena_) arena_->forget_partial();
}

void Connection::use_reply_arena() {
  if (!arena_) arena_ = std::make_shared<ReplyArena>();
  if (ctx_) arena_->install(ctx_.get());
}

Reply Connection::wrap(void* raw) const {
  return Reply(static_cast<redisReply*>(raw), arena_);
}

void Connection::connect() {
  ignore_default_sigpipe();
  disconnect();
  if (!options_.sentinels.empty()) resolve_primary();
  const timeval tv = to_timeval(options_.connect_timeout_ms);
  std::unique_ptr<redisContext, FreeContext> ctx(
      options_.unix_socket.empty()
          ? redisConnectWithTimeout(options_.host.c_str(), options_.port, tv)
          : redisConnectUnixWithTimeout(options_.unix_socket.c_str(), tv));
  const int saved_errno = errno;
  if (ctx == nullptr || ctx->err != 0) {
    throw context_error(ctx.get(), saved_errno, "connect to " + options_.endpoint(),
                        options_.connect_timeout_ms);
  }
  ctx_ = std::move(ctx);
  if (arena_) arena_->install(ctx_.get());
  try {
    set_socket_timeout_ms(options_.command_timeout_ms);
    handshake();
    if (!options_.sentinels.empty()) confirm_primary();
  } catch (...) {
    disconnect();
    throw;
  }
}

// The address the sentinels name now replaces host and port (the primary may have moved).
void Connection::resolve_primary() {
  PrimaryAddress primary = ask_sentinels(options_);
  options_.unix_socket.clear();
  options_.host = std::move(primary.host);
  options_.port = primary.port;
  told_by_ = std::move(primary.told_by);
}

// A sentinel may still name the old primary (it has not noticed the failure yet) or name the new
// one before it finished its promotion: only a server that says "master" is used. One log line
// per move of the primary, not per reconnect.
void Connection::confirm_primary() {
  const std::string doing = fmt::format("confirm the primary {} (told by sentinel {})",
                                        options_.endpoint(), told_by_);
  Reply r = handshake_command(CommandArgs{"ROLE"}, doing);
  if (r.is_error()) throw error_from_reply("run ROLE to " + doing, r.str(), options_.username);
  std::string role;
  if (!role_is_master(r, role)) {
    throw RedisError(RedisErrorKind::Io,
                     fmt::format("Failed to {}: it is a {}, not the primary (a failover is under "
                                 "way or the sentinels have not noticed one yet)",
                                 doing, role.empty() ? "server of unknown role" : role));
  }
  const std::string address = options_.endpoint();
  if (primary_.empty()) {
    spdlog::info("Primary '{}' is {} (told by sentinel {})", options_.sentinel_master, address,
                 told_by_);
  } else if (primary_ != address) {
    spdlog::warn("Primary moved from {} to {} (told by sentinel {})", primary_, address, told_by_);
    ++primary_moves_;
  }
  primary_ = address;
}

// AUTH, SELECT, CLIENT SETNAME. Connection errors throw from handshake_command; error replies
// are judged by each step.
void Connection::handshake() {
  if (!options_.password.empty() || !options_.username.empty()) authenticate();
  if (options_.db != 0) select_db();
  if (!options_.client_name.empty()) set_client_name();
}

void Connection::authenticate() {
  CommandArgs auth{"AUTH"};
  if (!options_.username.empty()) auth.add(options_.username);
  auth.add(options_.password);
  const std::string doing =
      options_.username.empty()
          ? fmt::format("authenticate to {}", options_.endpoint())
          : fmt::format("authenticate to {} as user '{}'", options_.endpoint(), options_.username);
  Reply r = handshake_command(auth, doing);
  if (r.is_error()) {
    throw RedisError(RedisErrorKind::Auth, fmt::format("Failed to {}: {}", doing, r.str()),
                     std::string(r.str()));
  }
}

void Connection::select_db() {
  const std::string doing = fmt::format("select db {} on {}", options_.db, options_.endpoint());
  Reply r = handshake_command(CommandArgs{"SELECT"}.add(options_.db), doing);
  if (r.is_error()) throw error_from_reply(doing, r.str(), options_.username);
}

// A name is only a label: a refusal matters only when it says we are not authenticated (an ACL
// user without CLIENT SETNAME still works, unnamed in CLIENT LIST).
void Connection::set_client_name() {
  const std::string doing = fmt::format("set the client name on {}", options_.endpoint());
  Reply r = handshake_command(CommandArgs{"CLIENT", "SETNAME", options_.client_name}, doing);
  if (r.is_error() && is_auth_error(r.str())) {
    throw RedisError(RedisErrorKind::Auth, fmt::format("Failed to {}: {}", doing, r.str()),
                     std::string(r.str()));
  }
}

Reply Connection::handshake_command(const CommandArgs& args, std::string_view doing) {
  args.argv(argv_, argvlen_);
  void* raw =
      redisCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv_.data(), argvlen_.data());
  if (raw == nullptr) fail(doing, errno);
  return wrap(raw);
}

void Connection::set_socket_timeout_ms(int timeout_ms) {
  if (redisSetTimeout(ctx_.get(), to_timeval(timeout_ms)) != REDIS_OK) {
    fail("set the command timeout on " + options_.endpoint(), errno);
  }
}

void Connection::set_command_timeout_ms(int timeout_ms) {
  options_.command_timeout_ms = timeout_ms;  // kept for the next connect()
  if (ctx_) set_socket_timeout_ms(timeout_ms);
}

void Connection::fail(std::string_view doing, int saved_errno) {
  RedisError error = context_error(ctx_.get(), saved_errno, doing, options_.command_timeout_ms);
  disconnect();
  throw error;
}

Reply Connection::command(const CommandArgs& args) {
  const std::string name = command_name(args);
  if (!ctx_) {
    throw RedisError(RedisErrorKind::Closed, fmt::format("Failed to run {} on {}: not connected",
                                                         name, options_.endpoint()));
  }
  args.argv(argv_, argvlen_);
  void* raw =
      redisCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv_.data(), argvlen_.data());
  if (raw == nullptr) fail(fmt::format("run {} on {}", name, options_.endpoint()), errno);
  Reply r = wrap(raw);
  if (!r.is_error()) return r;
  RedisError error =
      error_from_reply(fmt::format("run {} on {}", name, options_.endpoint()), r.str(),
                       options_.username);
  if (error.connection_lost()) disconnect();
  throw error;
}

Reply Connection::command(std::initializer_list<std::string_view> args) {
  return command(CommandArgs(args));
}

void Connection::append(const CommandArgs& args) {
  if (!ctx_) {
    throw RedisError(RedisErrorKind::Closed, fmt::format("Failed to queue {} on {}: not connected",
                                                         command_name(args), options_.endpoint()));
  }
  args.argv(argv_, argvlen_);
  if (redisAppendCommandArgv(ctx_.get(), static_cast<int>(args.size()), argv_.data(),
                             argvlen_.data()) != REDIS_OK) {
    fail(fmt::format("queue {} on {}", command_name(args), options_.endpoint()), errno);
  }
}

void Connection::append(std::initializer_list<std::string_view> args) {
  append(CommandArgs(args));
}

Reply Connection::read_reply() {
  if (!ctx_) {
    throw RedisError(
        RedisErrorKind::Closed,
        fmt::format("Failed to read a reply on {}: not connected", options_.endpoint()));
  }
  void* raw = nullptr;
  if (redisGetReply(ctx_.get(), &raw) != REDIS_OK || raw == nullptr) {
    fail("read a reply on " + options_.endpoint(), errno);
  }
  return wrap(raw);
}

void Connection::flush() {
  if (!ctx_) {
    throw RedisError(RedisErrorKind::Closed,
                     fmt::format("Failed to send on {}: not connected", options_.endpoint()));
  }
  int done = 0;
  while (done == 0) {
    if (redisBufferWrite(ctx_.get(), &done) != REDIS_OK)
      fail("send queued commands on " + options_.endpoint(), errno);
  }
}

// ---- Backoff ------------------------------------------------------------------------------------

int Backoff::next_delay_ms() {
  thread_local std::minstd_rand rng{std::random_device{}()};
  const long long initial_ms = std::max(initial_ms_, 1);
  const long long max_ms = std::max<long long>(max_ms_, initial_ms);
  const int shift = std::min(attempt_, 30);  // 2^30 * initial_ms is past any sane cap
  const long long base_ms = std::min(initial_ms << shift, max_ms);
  ++attempt_;
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  const auto delay_ms = static_cast<long long>(static_cast<double>(base_ms) * jitter(rng));
  return static_cast<int>(std::clamp(delay_ms, 1LL, max_ms));
}

}  // namespace p35
