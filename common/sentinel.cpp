// Asking Redis Sentinel for the primary (sentinel.hpp): one short-lived connection per sentinel
// asked, its own credentials, never the data password.
#include "sentinel.hpp"

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <charconv>

namespace p35 {

namespace {

std::string address_text(const std::string& host, int port) {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

// One sentinel's answer: the primary's address, or throws RedisError (a refused connection, a
// timeout, a refused AUTH, or an unknown master name as a Reply error).
PrimaryAddress ask_one(const RedisOptions& options, const SentinelAddress& sentinel) {
  RedisOptions so;
  so.host = sentinel.host;
  so.port = sentinel.port;
  so.username = options.sentinel_username;
  so.password = options.sentinel_password;
  so.connect_timeout_ms = options.connect_timeout_ms;
  so.command_timeout_ms = options.connect_timeout_ms;  // a sentinel answers at once or is gone
  Connection conn(so);
  conn.connect();
  const Reply r =
      conn.command({"SENTINEL", "get-master-addr-by-name", options.sentinel_master});
  const std::string_view host = reply_str(r.element(0));
  const std::string_view port_text = reply_str(r.element(1));
  int port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (r.size() != 2 || host.empty() || ec != std::errc() ||
      end != port_text.data() + port_text.size() || port < 1 || port > 65535) {
    throw RedisError(RedisErrorKind::Reply,
                     fmt::format("it does not know a primary named '{}'", options.sentinel_master));
  }
  return PrimaryAddress{std::string(host), port, address_text(sentinel.host, sentinel.port)};
}

}  // namespace

PrimaryAddress ask_sentinels(const RedisOptions& options) {
  std::string answers;
  bool all_auth = true;
  for (const SentinelAddress& s : options.sentinels) {
    try {
      return ask_one(options, s);
    } catch (const RedisError& e) {
      all_auth = all_auth && e.kind() == RedisErrorKind::Auth;
      answers += fmt::format("{}sentinel {}: {}", answers.empty() ? "" : "; ",
                             address_text(s.host, s.port), e.what());
    }
  }
  throw RedisError(all_auth && !options.sentinels.empty() ? RedisErrorKind::Auth
                                                          : RedisErrorKind::Io,
                   fmt::format("Failed to ask the sentinels for the primary '{}': {}",
                               options.sentinel_master, answers));
}

bool role_is_master(const Reply& reply, std::string& role) {
  role = std::string(reply_str(reply.element(0)));
  return role == "master";
}

}  // namespace p35
