// Taking over other consumers' pending entries (DESIGN §5.5) without moving them: entries pending
// on another consumer for longer than P35_CLAIM_IDLE_MS are read with XPENDING/XRANGE, those above
// the owner's marker are counted and committed with a compare-and-set on the OWNER's marker, then
// all of them are acked. A consumer without a marker is the first version (it counted before
// acking): its entries are acked without counting. Idle consumers with nothing pending are removed.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "config.hpp"
#include "redis.hpp"
#include "rules.hpp"
#include "stream_id.hpp"

namespace p35 {

struct ClaimStats {
  uint64_t counted = 0;       // entries counted and committed under their owner's marker
  uint64_t trimmed = 0;       // claimed entries whose message was trimmed away
  uint64_t acked_only = 0;    // at or below the owner's marker: already counted
  uint64_t legacy_acked = 0;  // owner without a marker (the first version)
  uint64_t conflicts = 0;     // someone else moved the owner's marker first
  uint64_t consumers_removed = 0;
};

class Claimer {
 public:
  explicit Claimer(const Config& cfg) : cfg_(cfg) {}
  // One round over the group's other consumers. Throws RedisError.
  ClaimStats run_once(Connection& conn);

 private:
  struct Pending {
    StreamId id;
    long long idle_ms;
  };
  std::vector<Pending> idle_prefix(Connection& conn, const std::string& owner);
  void claim_owner(Connection& conn, const std::string& owner, ClaimStats& stats);
  bool commit_counted(Connection& conn, const std::string& owner, StreamId prev, StreamId next,
                      const std::vector<StreamId>& ids, ClaimStats& stats);
  uint64_t ack(Connection& conn, const std::vector<StreamId>& ids, const char* status_field);
  void remove_idle_consumer(Connection& conn, const std::string& name, ClaimStats& stats);

  const Config& cfg_;
  std::string sha_;
  Normalized norm_;
};

}  // namespace p35
