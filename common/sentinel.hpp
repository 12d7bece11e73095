// Redis Sentinel for the stages and tools: which server is the primary now (asked from the
// sentinels in turn), and whether a server says it is one (ROLE).
#pragma once

#include <string>

#include "redis.hpp"

namespace p35 {

struct PrimaryAddress {
  std::string host;
  int port = 0;
  std::string told_by;  // "host:port" of the sentinel that named it
};

// SENTINEL get-master-addr-by-name <options.sentinel_master>, asking each of options.sentinels in
// turn (with options' connect and command timeouts and the sentinels' own credentials) until one
// names an address. Throws RedisError with every sentinel's answer when none does: Auth when each
// of them refused our credentials (that does not fix itself), else Io (the caller retries).
PrimaryAddress ask_sentinels(const RedisOptions& options);

// Whether the first element of a ROLE reply is "master"; `role` receives that element.
bool role_is_master(const Reply& reply, std::string& role);

}  // namespace p35
