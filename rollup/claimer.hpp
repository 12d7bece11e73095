// Taking over other consumers' pending entries (DESIGN §5.5) without moving them: entries pending
// on another consumer for longer than P35_CLAIM_IDLE_MS are read with XPENDING/XRANGE, those above
// the owner's marker are counted and committed with a compare-and-set on the OWNER's marker, then
// all of them are acked. A consumer without a marker is the first version (it counted before
// acking): its entries are acked without counting, unless it is registered in <prefix>consumers
// (then its marker was lost and its entries are left alone). Idle consumers with nothing pending are removed.
#pragma once

#include <cstdint>
#include <map>
#include <set>
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
  struct Counted {
    uint64_t counted = 0, trimmed = 0;
  };
  // A claim's commit: hash key -> field -> delta, in key and field order.
  using ClaimHashes = std::map<std::string, std::map<std::string, long long>>;
  std::vector<Pending> idle_prefix(Connection& conn, const std::string& owner);
  void claim_owner(Connection& conn, const std::string& owner, ClaimStats& stats);
  Counted count_entries(Connection& conn, StreamId prev, const std::vector<StreamId>& ids,
                        ClaimHashes& hashes);
  bool commit_counted(Connection& conn, const std::string& owner, StreamId prev, StreamId next,
                      const std::vector<StreamId>& ids, ClaimStats& stats);
  bool claim_refused(const RedisError& e, const std::string& owner, size_t pending, ClaimStats& stats);
  // The ack script's result: IDs acked, or (legacy_owner set) -1/-2 when nothing was acked.
  long long ack(Connection& conn, const std::vector<StreamId>& ids, const char* status_field,
                const std::string& legacy_owner = "");
  void report_lost_marker(const std::string& owner, size_t pending);
  void remove_idle_consumer(Connection& conn, const std::string& name, ClaimStats& stats);

  const Config& cfg_;
  std::string sha_;
  Normalized norm_;
  std::set<std::string> lost_marker_logged_;  // owners whose lost marker was logged
};

}  // namespace p35
