// Ingest's counting engine: stages the effects of a batch of entries privately, then publishes
// them to the segment through the journal and the seqlock (DESIGN §4, §5), so a crash at any
// instruction leaves either the whole batch or none of it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "rules.hpp"
#include "shm.hpp"
#include "stream_id.hpp"

namespace p35 {

// Interned strings: the bytes live in the segment, the index and reference counts in this
// process (they are derived from the slots and rebuilt after a restart). A string is freed when
// no live slot refers to it any more; its id is reused only after the batch that freed it is
// applied, so a reader never sees a referenced string change.
class StringTable {
 public:
  explicit StringTable(Segment& seg) : seg_(seg) {}
  void rebuild(bool symbol_tables);        // from the slots, after journal recovery
  bool intern(std::string_view s, uint32_t& id);  // false: table full
  void ref(uint32_t id) { ++refs_[id]; }
  void unref(uint32_t id);
  void end_batch();                        // call after the batch is applied
  size_t live() const { return index_.size(); }

 private:
  struct Hash {  // transparent: look up by string_view without building a std::string
    using is_transparent = void;
    size_t operator()(std::string_view v) const { return std::hash<std::string_view>{}(v); }
  };
  Segment& seg_;
  std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>> index_;
  std::vector<uint32_t> refs_;
  std::vector<uint32_t> free_;
  std::vector<uint32_t> fresh_;   // interned in this batch
  std::vector<uint32_t> freed_;   // dropped to zero references in this batch
};

// Applies a published journal (the whole batch, with absolute values) and publishes counted_id.
// Used after every batch and, by a restarting ingest, for a journal its predecessor published.
void apply_journal(Segment& seg);

class Counter {
 public:
  enum class Result { Done, NeedSpace };

  Counter(Segment& seg, bool symbol_breakdown);

  // Re-apply a published journal, repair the seqlock, rebuild the string index.
  void recover();
  StreamId counted_id() const { return staged_counted_; }
  bool initialised_from_marker() const;
  // Fresh segment: counts up to `marker` are in Redis already (DESIGN §5.4).
  void initialise_from_marker(StreamId marker);

  // One entry, staged. msg == nullptr: the entry was trimmed away (nil fields).
  // NeedSpace: nothing was staged; flush(), wait for rollup or ackd, try again.
  Result add(StreamId id, const Normalized* msg, int64_t now_minute);
  bool should_flush() const;  // the journal is nearly full
  bool empty() const { return ops_.empty() && clears_.empty(); }
  void flush();               // journal, apply, publish, wake rollup and ackd

  const char* last_wait_reason() const { return wait_reason_; }

 private:
  // Private overlay of the batch's writes: absolute values keyed by segment offset.
  uint64_t read(uint64_t off) const;
  void set(uint64_t off, uint64_t value);
  void add_to(uint64_t off, uint64_t delta) { set(off, read(off) + delta); }
  template <typename T>
  uint64_t off(const T& field) const { return seg_.offset_of(&field); }

  bool find_slot(int64_t minute, int64_t now_minute, uint32_t& slot);
  bool slot_free(uint32_t slot, int64_t now_minute) const;
  void recycle(uint32_t slot, int64_t minute);
  void touch(uint32_t slot);
  // Count +1 for `key` in an open-addressing table; Full: the caller counts it as overflow.
  enum class Bump { Full, Existing, Inserted };
  Bump bump(uint64_t table_off, uint32_t cap, uint64_t used_off, uint64_t key);
  void count(uint32_t slot, const Normalized& m);
  void count_unknown(shm::SlotHeader& s, const Normalized& m);
  // The reason; Full when it overflowed (its id `rid` is then not in the table).
  Bump count_reason(shm::SlotHeader& s, const Normalized& m, uint32_t& rid);
  void count_symbol_reason(shm::SlotHeader& s, const Normalized& m, uint32_t rid);
  bool intern(std::string_view v, uint32_t& id);  // false: the string table is full (counted)
  void overflow(const std::atomic<uint64_t>& field, shm::Total total);
  void unref_slot(uint32_t slot);
  void append_id(StreamId id);
  void note_chunk(uint64_t off);      // a staged write at `off`: mark its table chunk dirty
  void stage_chunk_versions();        // the batch's dirty chunks get their slot's new version

  Segment& seg_;
  bool symbol_breakdown_;
  StringTable strings_;
  std::unordered_map<uint64_t, uint32_t> index_;  // offset -> position in ops_
  std::vector<shm::JournalEntry> ops_;
  std::vector<uint32_t> clears_;                   // slots cleared in this batch
  std::vector<uint8_t> touched_;                   // per slot: version bumped in this batch
  std::vector<uint32_t> touched_list_;
  // Table chunks written in this batch (shm_layout.hpp, chunk_version): a bit per chunk per slot.
  uint64_t slots_begin_ = 0, slots_end_ = 0, slot_bytes_ = 0, tables_end_ = 0;
  uint32_t chunk_words_ = 0;                       // bitmap words per slot
  std::vector<uint64_t> dirty_bits_;
  std::vector<std::pair<uint32_t, uint32_t>> dirty_chunks_;  // (slot, chunk)
  StreamId staged_counted_;
  uint64_t staged_head_ = 0;
  const char* wait_reason_ = "";
};

}  // namespace p35
