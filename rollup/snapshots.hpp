// Window snapshots (1m/5m/15m/1h decision counts, top-50 reasons, unknown decisions of 5m), each
// key replaced atomically in one MULTI/EXEC, computed from the Redis buckets (the global truth of
// every host, DESIGN §7) by the host holding the lease; and the status hashes.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "commit_script.hpp"
#include "config.hpp"
#include "redis.hpp"
#include "shm.hpp"
#include "top_n.hpp"

namespace p35 {

struct WindowCounts {
  std::map<std::string, uint64_t> decisions;  // "EXECUTE", ..., "UNKNOWN:x", "UNKNOWN"
  std::vector<std::pair<std::string, uint64_t>> top_reasons;  // top_n(reasons, kTopReasons)
  std::map<std::string, uint64_t> unknown_members;  // filled for every window, written for 5m
};

// Counts by name, compact (an hour of minutes with full reason tables is ~60,000 names): the names
// in one buffer, (offset, length, count) sorted by name. Names are never removed.
class NameCounts {
 public:
  void add(std::string_view name, int64_t delta);  // counts wrap like the bucket's HINCRBY deltas
  size_t size() const { return items_.size(); }
  std::string_view name(size_t i) const { return {names_.data() + items_[i].off, items_[i].len}; }
  uint64_t count(size_t i) const { return items_[i].count; }

 private:
  struct Item {
    uint32_t off;
    uint32_t len;
    uint64_t count;
  };
  std::string names_;
  std::vector<Item> items_;
};

// The top n of the sums of several NameCounts, by a merge of their sorted names (no map of the
// union is built): top_n's order (count descending, ties to the smaller name), zero sums left out.
std::vector<std::pair<std::string, uint64_t>> top_n_of_sums(const std::vector<const NameCounts*>& lists,
                                                            size_t n);

// The counts of one minute as the snapshots need them (symbol breakdown left out).
struct MinuteCounts {
  std::map<std::string, uint64_t> decisions, unknown_members;
  NameCounts reasons;
};

// Sum per-minute counts over the W most recent minutes up to now_minute, for each window: decisions
// and unknown members as one running sum from the newest minute back, read off as each window is
// complete (the windows nest); reasons by top_n_of_sums over the window's minutes.
std::vector<WindowCounts> windows_from(const std::map<int64_t, MinuteCounts>& minutes,
                                       int64_t now_minute);

// The snapshot lease (DESIGN §7): one host computes the global snapshots. A key with an expiry
// (kMs), renewed by its holder every kRenewMs on a schedule of its own (not the snapshot
// interval), taken by another host once it expired. Its value, the consumer name and this
// instance's token, is the fencing token of the snapshot replace: a holder that paused past its
// lease and resumed finds the replace refused instead of overwriting the newer holder's snapshots.
class Lease {
 public:
  static constexpr int kMs = 3000;            // a dead holder's lease lapses within this
  static constexpr int kRenewMs = kMs / 3;    // renewal period, whatever the snapshot interval
  Lease(const Config& cfg, const std::string& instance_token);
  bool hold(Connection& conn);  // acquire or renew; true while we hold it
  // The same in two halves, to pipeline the renewal with other commands.
  void append_hold(Connection& conn);
  bool take_reply(Connection& conn, const Reply& reply);
  void release(Connection& conn);
  // The snapshot replace was refused: the lease is someone else's (`message`: Redis's words).
  void lost(std::string_view message);
  bool held() const { return held_; }
  const std::string& key() const { return key_; }
  const std::string& value() const { return value_; }

 private:
  const Config& cfg_;
  std::string key_;
  std::string value_;
  bool held_ = false;
};

// What a snapshot write reads first: Redis's clock and the minute versions. The window's "now" is
// Redis TIME, not this host's clock: every lease holder then places the hour alike, and a step of
// a host's clock does not move the window (DESIGN §7).
struct SnapshotInputs {
  Reply time;
  Reply versions;
};

// Redis TIME's reply in milliseconds since the epoch; throws on anything else.
int64_t redis_time_ms(Connection& conn, const Reply& time);

class SnapshotWriter {
 public:
  SnapshotWriter(const Config& cfg, Segment& seg) : cfg_(cfg), seg_(seg) {}
  // Reads the buckets of the last hour that changed since the last call (their versions are
  // bumped by every commit) and rewrites every snapshot key when a bucket or the minute changed
  // (or every 10 minutes to refresh TTLs). Returns true if it wrote.
  // `inputs`: the replies to append_inputs() when the caller pipelined them, else nullptr.
  // The replace runs only while `lease` is still ours in Redis (checked in the same script); a
  // refusal tells the lease it was lost and returns false.
  bool write(Connection& conn, Lease& lease, bool force, const SnapshotInputs* inputs = nullptr);
  void append_inputs(Connection& conn);  // TIME and the minute versions
  SnapshotInputs read_inputs(Connection& conn);
  // After each successful commit of this host: apply its deltas to the cached minutes.
  void note_commit(const std::vector<MinuteDelta>& minutes);

 private:
  void refresh_minutes(Connection& conn, int64_t now_minute, const Reply& versions, bool& changed);
  std::vector<std::pair<int64_t, int64_t>> stale_minutes(const Reply& versions, CommandArgs& prune) const;
  void read_minute(Connection& conn, int64_t minute, int64_t version);
  bool replace_keys(Connection& conn, Lease& lease, const std::vector<WindowCounts>& windows);

  const Config& cfg_;
  Segment& seg_;
  std::map<int64_t, MinuteCounts> minutes_;
  std::map<int64_t, int64_t> versions_;  // per cached minute: the version its counts stand for
  bool dirty_ = false;                    // note_commit changed a cached minute
  std::map<std::string, int64_t, std::less<>> hour_;  // minute key -> minute, the last hour
  std::string prune_before_;
  int64_t hour_minute_ = -1;
  int64_t last_minute_ = 0;
  int64_t last_write_ms_ = 0;
};

class StatusWriter {
 public:
  StatusWriter(const Config& cfg, Segment& seg) : cfg_(cfg), seg_(seg) {}
  // This host's figures to status:<consumer>; with `global`, also the group-wide hash.
  // `groups`: the reply to append_groups() when the caller pipelined it, else nullptr.
  void write(Connection& conn, bool global, const Reply* groups = nullptr);
  void append_groups(Connection& conn);
  // Redis's maxmemory-policy ("" when unknown) and whether it can evict our keys.
  void set_eviction_policy(std::string policy, bool risk) {
    eviction_policy_ = policy.empty() ? "unknown" : std::move(policy);
    eviction_risk_ = risk;
  }

 private:
  void add_group_fields(CommandArgs& a, Connection& conn, const Reply& groups) const;
  void remove_foreign_fields(Connection& conn, const CommandArgs& ours);
  // Returns the counted and acked figures it wrote: the next write's rates start from them.
  std::pair<uint64_t, uint64_t> add_service_fields(CommandArgs& a, int64_t now_ms,
                                                   int64_t now_mono) const;

  const Config& cfg_;
  Segment& seg_;
  std::string eviction_policy_ = "unknown";
  bool eviction_risk_ = false;
  uint64_t last_counted_ = 0;
  uint64_t last_acked_ = 0;
  int64_t last_ms_ = 0;
  bool foreign_checked_ = false;  // remove_foreign_fields() ran in this process
};

}  // namespace p35
