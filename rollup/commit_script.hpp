// The commit script (compare-and-set on a consumer's marker, fenced by its ownership key, then
// every HINCRBY and EXPIRE, all or nothing) and the one builder of its arguments, used by rollup's
// own commits (committer.hpp) and by the take-over of another consumer's entries (claimer.hpp).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "fields.hpp"
#include "redis.hpp"
#include "stream_id.hpp"

namespace p35 {

// The commit script's text; SCRIPT LOAD it and call it with build_commit_args()'s arguments.
extern const char* const kCommitScript;

// Hash fields with deltas, their names built piece by piece into one reused buffer: a commit
// emits a field per changed count, and a std::string (with its malloc) per field is avoidable work
// on rollup's hot path.
class FieldList {
 public:
  // Appends a field (fields.hpp builds the names); a zero delta adds nothing.
  void add(const fields::Name& name, int64_t delta);
  void clear() {
    text_.clear();
    items_.clear();
  }
  bool empty() const { return items_.empty(); }
  size_t size() const { return items_.size(); }
  // Calls f(name, delta) for each field in order; the views last until the next add() or clear().
  template <typename F>
  void for_each(F&& f) const {
    for (const Item& it : items_) f(std::string_view(text_).substr(it.off, it.len), it.delta);
  }

 private:
  struct Item {
    uint32_t off;
    uint32_t len;
    int64_t delta;
  };
  std::string text_;
  std::vector<Item> items_;
};

// What one commit adds to one minute: bucket fields and unknown-decision members with deltas.
struct MinuteDelta {
  int64_t minute = 0;
  FieldList bucket;
  FieldList unknown;
};

// Whose marker the commit moves, from where to where, and who may move it.
struct CommitTarget {
  std::string_view sha;         // of kCommitScript
  std::string_view marker_key;  // keys::marker of `consumer`
  std::string_view owner_key;   // keys::owner of `consumer`: the fencing check
  std::string_view stream, group, consumer;
  // The instance token the ownership key must hold; empty for a claim of another consumer's
  // entries (then nobody may hold the name).
  std::string_view token;
  StreamId prev, next;  // the marker expected, the marker set
};

// One hash the commit increments, with the expiry it sets (0: none).
struct CommitHash {
  std::string key;
  long long ttl_s = 0;
  const FieldList* fields = nullptr;
};

// Fills `args` with EVALSHA and the script's keys and arguments for `hashes` in their order
// (those without fields left out); returns the number of fields the commit increments.
uint64_t build_commit_args(CommandArgs& args, const CommitTarget& target,
                           std::span<const CommitHash> hashes);

}  // namespace p35
