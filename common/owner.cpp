// The consumer name's ownership key: take, renew, wait, describe (see owner.hpp).
#include "owner.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>

#include "keys.hpp"

namespace p35 {

namespace {

// KEYS[1]: the ownership key. ARGV[1]: our token, ARGV[2]: the rest of our value, ARGV[3]: TTL ms.
// Returns {1, value}: renewed; {2, value}: taken (the key was gone); {0, value}: someone else's.
// allow-oom: a Redis at maxmemory must not take the name from its holder (one small key).
const char* const kOwnerScript = R"LUA(#!lua flags=allow-oom
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.match(cur, '^%S+') == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {1, cur}
  end
  return {0, cur}
end
local v = ARGV[1] .. ' ' .. ARGV[2]
redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
return {2, v}
)LUA";

// KEYS[1]: the ownership key. ARGV[1]: our token. Deletes the key only while it holds our token.
const char* const kReleaseScript = R"LUA(#!lua flags=allow-oom
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^%S+') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)LUA";

std::string utc_text(int64_t unix_ms) {
  const time_t t = static_cast<time_t>(unix_ms / 1000);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

}  // namespace

std::string describe_owner(std::string_view value) {
  // "<token> <host> <pid> <stage> <since>"
  std::vector<std::string_view> part;
  while (!value.empty() && part.size() < 5) {
    const size_t sp = value.find(' ');
    part.push_back(value.substr(0, sp));
    value = sp == std::string_view::npos ? std::string_view{} : value.substr(sp + 1);
  }
  if (part.size() < 5) return fmt::format("an unknown instance ({})", fmt::join(part, " "));
  return fmt::format("host {} pid {} ({}) since {}, instance {}", part[1], part[2], part[3],
                     part[4], part[0].substr(0, 8));
}

Ownership::Ownership(const Config& cfg, Segment& seg, StageHandle& stage, std::string_view stage_label)
    : cfg_(cfg), stage_(stage), key_(keys::owner(cfg.key_prefix, cfg.consumer)),
      token_(seg.instance_token()),
      me_(fmt::format("{} {} {} {}", host_name(), getpid(), stage_label, utc_text(now_unix_ms()))) {}

bool Ownership::renew(Connection& conn) {
  const Reply r = conn.command({"EVAL", kOwnerScript, "1", key_, token_, me_,
                                std::to_string(cfg_.owner_ttl_ms)});
  next_ms_ = now_mono_ms() + renew_interval_ms();
  const long long how = r.element(0)->integer;
  const std::string_view value = reply_str(r.element(1));
  const bool was = held_;
  held_ = how != 0;
  if (held_) {
    if (!logged_held_)
      spdlog::info("Consumer name {} is held by this instance ({}; key {}, expiry {} ms, renewed "
                   "every {} ms)", cfg_.consumer, describe_owner(value), key_, cfg_.owner_ttl_ms,
                   renew_interval_ms());
    logged_held_ = true;
    logged_holder_.clear();
    holder_.clear();
    return true;
  }
  if (was)
    spdlog::error("Lost consumer name {} to another instance ({}): this one stops reading and "
                  "committing and waits", cfg_.consumer, describe_owner(value));
  note_holder(value);
  return false;
}

bool Ownership::renew_if_due(Connection& conn) {
  if (now_mono_ms() < next_ms_) return held_;
  return renew(conn);
}

void Ownership::note_holder(std::string_view value) {
  logged_held_ = false;
  holder_ = describe_owner(value);
  store_text(stage_.block().holder_text, std::size(stage_.block().holder_text), holder_);
  if (logged_holder_ == value) return;
  logged_holder_ = std::string(value);
  spdlog::warn("Consumer name {} is held by another instance: {}. Waiting: this instance reads, "
               "counts, commits and acks nothing until that one is gone for {} ms (P35_OWNER_TTL_MS); "
               "give each host its own P35_CONSUMER unless this is a replacement",
               cfg_.consumer, holder_, cfg_.owner_ttl_ms);
}

void Ownership::fenced(std::string_view message) {
  held_ = false;
  next_ms_ = 0;  // ask Redis who holds it at the next look
  spdlog::error("Fenced: Redis refused this instance's use of consumer name {} ({}): another "
                "instance holds it", cfg_.consumer, message);
}

bool Ownership::wait_until_held(Connection& conn) {
  const int poll_ms = std::min(500, renew_interval_ms());
  while (!renew(conn)) {
    stage_.set_state(shm::StageState::WaitingName);
    notify_status(fmt::format("waiting for consumer name {}: held by {}", cfg_.consumer, holder_));
    const int64_t until = now_mono_ms() + poll_ms;
    while (now_mono_ms() < until) {
      if (stop_requested() || !stage_.heartbeat()) return false;
      sleep_unless_stopped(static_cast<int>(std::min<int64_t>(100, until - now_mono_ms())));
    }
    if (stop_requested()) return false;
  }
  store_text(stage_.block().holder_text, std::size(stage_.block().holder_text), "");
  return true;
}

void release_name(Connection& conn, const Config& cfg, const std::string& token) {
  try {
    if (conn.connected())
      conn.command({"EVAL", kReleaseScript, "1", keys::owner(cfg.key_prefix, cfg.consumer), token});
  } catch (const RedisError& e) {
    spdlog::debug("Failed to release the consumer name {}: {}", cfg.consumer, e.what());
  }
}

}  // namespace p35
