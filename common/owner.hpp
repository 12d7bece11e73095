// One consumer name, one running instance (DESIGN §5): the ownership key <prefix>owner:<consumer>
// holds the instance token of the segment (with host, pid, stage and since, for people), expires
// after P35_OWNER_TTL_MS and is renewed by each of the holder's stages every third of that, on a
// timer of its own (not on traffic). A second instance with the same name waits until the key is
// gone. The token is also the fencing token of the commit script and of the fenced XREADGROUP, so
// a holder that paused past the TTL and resumes can neither read nor commit under the name.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "config.hpp"
#include "daemon.hpp"
#include "redis.hpp"
#include "shm.hpp"

namespace p35 {

// The error prefix of every refusal by a fencing check (commit script, fenced read).
inline constexpr std::string_view kFencedError = "P35FENCED";

class Ownership {
 public:
  Ownership(const Config& cfg, Segment& seg, StageHandle& stage, std::string_view stage_label);
  // Renews (or takes, when the key is gone) the name; true while this instance holds it. Logs
  // when the name is taken, lost or seen held by another instance (once per holder).
  bool renew(Connection& conn);
  // renew() when a third of the TTL has passed since the last renewal, else held().
  bool renew_if_due(Connection& conn);
  // Until this instance holds the name: state WaitingName with the holder's description in the
  // stage block, renewal attempts twice a second at most, heartbeats. False: stopping, or the
  // segment was removed under us. Redis errors are thrown to the caller's outage handling.
  bool wait_until_held(Connection& conn);
  // A fencing check in Redis refused us (`message` is its error text): the name is someone else's.
  void fenced(std::string_view message);
  bool held() const { return held_; }
  const std::string& token() const { return token_; }
  const std::string& key() const { return key_; }
  int64_t next_renewal_ms() const { return next_ms_; }
  int renew_interval_ms() const { return cfg_.owner_ttl_ms / 3; }
  // "host H pid P (p35-stage) since T" of the last holder seen ("" when none).
  const std::string& holder() const { return holder_; }

 private:
  void note_holder(std::string_view value);

  const Config& cfg_;
  StageHandle& stage_;
  std::string key_;
  std::string token_;
  std::string me_;  // our value after the token
  std::string holder_;
  std::string logged_holder_;
  bool held_ = false;
  bool logged_held_ = false;
  int64_t next_ms_ = 0;
};

// Gives the name up when a stage drops its instance's segment (Redis lost data, a marker
// conflict): the restarted stages are a new instance with a new token and must not wait a TTL for
// the name their predecessor held (the fencing refuses anything the old one still sends). Deletes
// the key only while it holds `token`; best effort (an error is logged at debug: the key expires).
void release_name(Connection& conn, const Config& cfg, const std::string& token);

// "host H pid P (p35-stage) since T" from an ownership key's value.
std::string describe_owner(std::string_view value);

}  // namespace p35
