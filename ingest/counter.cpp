// Ingest's counting engine: private overlay, journal, seqlock publication, string reclamation.
#include "counter.hpp"

#include <algorithm>
#include <cstring>

#include "futex.hpp"

namespace p35 {

using shm::JournalEntry;
using shm::JournalOp;
using shm::SlotHeader;
using shm::TableEntry;

namespace {

constexpr uint64_t kOpShift = 56;
constexpr uint64_t kOffsetMask = (uint64_t{1} << kOpShift) - 1;
// A minute whose slot may be recycled must be this far behind the current minute (ingest's, never
// behind the entry's ID time: ingest.cpp): the 60-minute window plus a margin.
constexpr int64_t kRecycleAgeMinutes = 62;
constexpr size_t kMaxOpsPerEntry = 24;
// Reads of rollup's `committed` after each batch: a live rollup holds its lock odd for a few
// stores, a dead one until it restarts, and each batch must not wait long for that.
constexpr int kCommittedReads = 4;

uint64_t mix(uint64_t k) {  // splitmix64 finaliser: spreads ids over the table
  k ^= k >> 30;
  k *= 0xbf58476d1ce4e5b9ULL;
  k ^= k >> 27;
  k *= 0x94d049bb133111ebULL;
  return k ^ (k >> 31);
}

uint32_t fnv32(std::string_view s) {
  uint32_t h = 2166136261U;
  for (unsigned char c : s) h = (h ^ c) * 16777619U;
  return h;
}

std::atomic<uint64_t>& word(Segment& seg, uint64_t off) {
  return seg.at<std::atomic<uint64_t>>(off);
}

void clear_slot(Segment& seg, uint32_t slot) {
  auto& s = seg.slot(slot);
  auto* w = reinterpret_cast<std::atomic<uint64_t>*>(&s);
  const uint64_t words = seg.off().slot_bytes / sizeof(uint64_t);
  for (uint64_t i = 0; i < words; ++i) w[i].store(0, std::memory_order_relaxed);
}

}  // namespace

// --- StringTable -------------------------------------------------------------------------

void StringTable::rebuild(bool symbol_tables) {
  const uint32_t cap = seg_.caps().string_cap;
  refs_.assign(cap, 0);
  index_.clear();
  const auto refer = [&](uint64_t id1) {
    if (id1 != 0 && id1 <= cap) ++refs_[id1 - 1];
  };
  for (uint32_t i = 0; i < seg_.slot_count(); ++i) {
    auto& s = seg_.slot(i);
    if (s.minute.load(std::memory_order_relaxed) == shm::kEmptyMinute) continue;
    for (uint32_t j = 0; j < seg_.caps().reason_cap; ++j)
      refer(seg_.reasons(s)[j].key.load(std::memory_order_relaxed));
    for (uint32_t j = 0; j < seg_.caps().symbol_reason_cap && symbol_tables; ++j) {
      const uint64_t k = seg_.symbol_reasons(s)[j].key.load(std::memory_order_relaxed);
      if (k == 0) continue;
      refer(k >> 32);
      refer(k & 0xffffffffULL);
    }
    for (uint32_t j = 0; j < seg_.caps().unknown_cap; ++j)
      refer(seg_.unknowns(s)[j].key.load(std::memory_order_relaxed) & 0xffffffffULL);
  }
  free_.clear();
  for (uint32_t id = cap; id-- > 0;) {
    if (refs_[id] == 0)
      free_.push_back(id);
    else
      index_.emplace(std::string(seg_.string_at(id)), id);
  }
  fresh_.clear();
  freed_.clear();
}

bool StringTable::intern(std::string_view s, uint32_t& id) {
  if (auto it = index_.find(s); it != index_.end()) {
    id = it->second;
    return true;
  }
  if (free_.empty() || s.size() > shm::kStringMaxBytes) return false;
  id = free_.back();
  free_.pop_back();
  auto& e = seg_.strings()[id];
  // Nobody refers to this entry yet: the bytes become visible with the batch that refers to them.
  std::memcpy(e.bytes, s.data(), s.size());
  e.hash = fnv32(s);
  e.length.store(static_cast<uint32_t>(s.size()), std::memory_order_release);
  index_.emplace(std::string(s), id);
  fresh_.push_back(id);
  return true;
}

void StringTable::unref(uint32_t id) {
  if (refs_[id] > 0 && --refs_[id] == 0) freed_.push_back(id);
}

void StringTable::end_batch() {
  for (uint32_t id : fresh_)
    if (refs_[id] == 0) freed_.push_back(id);
  std::sort(freed_.begin(), freed_.end());
  freed_.erase(std::unique(freed_.begin(), freed_.end()), freed_.end());
  for (uint32_t id : freed_) {
    if (refs_[id] != 0) continue;  // referenced again later in the batch
    auto it = index_.find(seg_.string_at(id));
    if (it != index_.end() && it->second == id) index_.erase(it);
    free_.push_back(id);
  }
  fresh_.clear();
  freed_.clear();
}

// --- journal -----------------------------------------------------------------------------

void apply_journal(Segment& seg) {
  auto& ic = seg.ingest();
  const uint64_t n = ic.journal_count.load(std::memory_order_acquire);
  if (n == 0) return;
  uint64_t seq = ic.seqlock.load(std::memory_order_relaxed);
  if ((seq & 1) == 0) {
    ic.seqlock.store(++seq, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // odd before any payload store
  }
  const JournalEntry* j = seg.journal();
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t op = j[i].op_offset >> kOpShift;
    const uint64_t target = j[i].op_offset & kOffsetMask;
    if (op == static_cast<uint64_t>(JournalOp::ClearSlot))
      clear_slot(seg, static_cast<uint32_t>(target));
    else
      word(seg, target).store(j[i].value, std::memory_order_release);
  }
  const StreamId id = load_id(ic.journal_id);
  store_id(ic.counted_id, id);
  ic.seqlock.store(seq + 1, std::memory_order_release);  // even: the batch is whole
  publish_id(ic.counted_pub, id);
  ic.journal_count.store(0, std::memory_order_release);  // the journal is spent
  bell_ring(ic.rollup_bell);
  // ackd has work only after rollup's next commit, which rings it; except when the whole batch was
  // already committed (a re-read pending list), which no commit will follow. Bounded: rollup
  // killed inside publish_id() leaves `committed` odd until its restart, which rings ackd itself;
  // until then the batch counts as not committed.
  const std::optional<StreamId> committed = try_read_id(seg.rollup().committed, kCommittedReads);
  if (committed && id <= *committed) bell_ring(ic.ackd_bell);
}

// --- Counter -----------------------------------------------------------------------------

Counter::Counter(Segment& seg, bool symbol_breakdown)
    : seg_(seg), symbol_breakdown_(symbol_breakdown), strings_(seg),
      touched_(seg.slot_count(), 0) {
  slots_begin_ = seg.off().slots;
  slot_bytes_ = seg.off().slot_bytes;
  slots_end_ = slots_begin_ + slot_bytes_ * seg.slot_count();
  tables_end_ = sizeof(SlotHeader) + sizeof(TableEntry) * (uint64_t{seg.caps().reason_cap} +
                                                          seg.caps().symbol_reason_cap +
                                                          seg.caps().unknown_cap);
  chunk_words_ = (seg.chunk_count() + 63) / 64;
  dirty_bits_.assign(uint64_t{chunk_words_} * seg.slot_count(), 0);
}

void Counter::note_chunk(uint64_t o) {
  if (o < slots_begin_ || o >= slots_end_) return;
  const uint64_t rel = o - slots_begin_;
  const uint64_t within = rel % slot_bytes_;
  if (within < sizeof(SlotHeader) || within >= tables_end_) return;
  const auto slot = static_cast<uint32_t>(rel / slot_bytes_);
  const auto chunk =
      static_cast<uint32_t>((within - sizeof(SlotHeader)) / (sizeof(TableEntry) * shm::kChunkEntries));
  uint64_t& w = dirty_bits_[uint64_t{slot} * chunk_words_ + chunk / 64];
  const uint64_t bit = uint64_t{1} << (chunk % 64);
  if ((w & bit) != 0) return;
  w |= bit;
  dirty_chunks_.emplace_back(slot, chunk);
}

// Every chunk written in this batch is stamped with its slot's version after the batch (bumped
// once by touch()), in the same journal: a reader that sees the counts sees the stamps.
void Counter::stage_chunk_versions() {
  for (const auto& [slot, chunk] : dirty_chunks_) {
    auto& s = seg_.slot(slot);
    set(off(seg_.chunk_versions(s)[chunk]), read(off(s.version)));
    dirty_bits_[uint64_t{slot} * chunk_words_ + chunk / 64] = 0;
  }
  dirty_chunks_.clear();
}

void Counter::recover() {
  auto& ic = seg_.ingest();
  apply_journal(seg_);
  uint64_t seq = ic.seqlock.load(std::memory_order_relaxed);
  if ((seq & 1) != 0) ic.seqlock.store(seq + 1, std::memory_order_release);  // no journal: whole
  staged_counted_ = load_id(ic.counted_id);
  publish_id(ic.counted_pub, staged_counted_);
  staged_head_ = ic.id_log_head.load(std::memory_order_acquire);
  strings_.rebuild(true);
}

bool Counter::initialised_from_marker() const {
  return seg_.ingest().initialised_from_marker.load(std::memory_order_acquire) != 0;
}

void Counter::initialise_from_marker(StreamId marker) {
  if (marker > staged_counted_) staged_counted_ = marker;
  set(off(seg_.ingest().init_marker.ms), marker.ms);
  set(off(seg_.ingest().init_marker.seq), marker.seq);
  set(off(seg_.ingest().initialised_from_marker), 1);
  flush();
}

uint64_t Counter::read(uint64_t o) const {
  if (auto it = index_.find(o); it != index_.end()) return ops_[it->second].value;
  if (!clears_.empty()) {
    const uint64_t base = seg_.off().slots;
    const uint64_t bytes = seg_.off().slot_bytes;
    for (uint32_t s : clears_)
      if (o >= base + s * bytes && o < base + (s + 1) * bytes) return 0;
  }
  return seg_.at<std::atomic<uint64_t>>(o).load(std::memory_order_relaxed);
}

void Counter::set(uint64_t o, uint64_t value) {
  auto [it, inserted] = index_.try_emplace(o, static_cast<uint32_t>(ops_.size()));
  if (inserted) {
    ops_.push_back({(static_cast<uint64_t>(JournalOp::Set) << kOpShift) | o, value});
    note_chunk(o);
  } else
    ops_[it->second].value = value;
}

bool Counter::should_flush() const {
  // Each entry adds at most kMaxOpsPerEntry writes and as many chunk stamps.
  return ops_.size() + dirty_chunks_.size() + clears_.size() + kMaxOpsPerEntry * 4 >=
         seg_.caps().journal_cap;
}

// A slot may take a new minute when it is empty, or when rollup committed exactly what it holds
// and its minute is older than every window, and this batch has not touched it.
bool Counter::slot_free(uint32_t slot, int64_t now_minute) const {
  auto& s = seg_.slot(slot);
  const auto minute = static_cast<int64_t>(read(off(s.minute)));
  if (minute == shm::kEmptyMinute) return true;
  if (touched_[slot] != 0 || minute > now_minute - kRecycleAgeMinutes) return false;
  const uint64_t tag = (read(off(s.gen)) << 32) | (read(off(s.version)) & 0xffffffffULL);
  return seg_.slot_meta()[slot].committed_tag.load(std::memory_order_acquire) == tag;
}

void Counter::unref_slot(uint32_t slot) {
  auto& s = seg_.slot(slot);
  const auto unref1 = [&](uint64_t id1) {
    if (id1 != 0) strings_.unref(static_cast<uint32_t>(id1 - 1));
  };
  for (uint32_t j = 0; j < seg_.caps().reason_cap; ++j) unref1(read(off(seg_.reasons(s)[j].key)));
  for (uint32_t j = 0; j < seg_.caps().symbol_reason_cap; ++j) {
    const uint64_t k = read(off(seg_.symbol_reasons(s)[j].key));
    if (k == 0) continue;
    unref1(k >> 32);
    unref1(k & 0xffffffffULL);
  }
  for (uint32_t j = 0; j < seg_.caps().unknown_cap; ++j)
    unref1(read(off(seg_.unknowns(s)[j].key)) & 0xffffffffULL);
}

void Counter::recycle(uint32_t slot, int64_t minute) {
  auto& s = seg_.slot(slot);
  const uint64_t gen = read(off(s.gen));
  if (static_cast<int64_t>(read(off(s.minute))) != shm::kEmptyMinute) unref_slot(slot);
  // Every staged write into this slot would be wiped by the clear; there are none (untouched).
  clears_.push_back(slot);
  set(off(s.minute), static_cast<uint64_t>(minute));
  set(off(s.gen), gen + 1);
}

bool Counter::find_slot(int64_t minute, int64_t now_minute, uint32_t& slot) {
  const uint32_t ring = seg_.caps().ring_slots;
  const auto rm = static_cast<uint32_t>(((minute % ring) + ring) % ring);
  const auto held = static_cast<int64_t>(read(off(seg_.slot(rm).minute)));
  if (held == minute) return slot = rm, true;
  if (held == shm::kEmptyMinute || held < minute) {
    if (!slot_free(rm, now_minute)) return wait_reason_ = "ring slot not yet committed", false;
    recycle(rm, minute);
    return slot = rm, true;
  }
  // Older than what the ring holds for it: the late lane.
  int32_t free_late = -1;
  for (uint32_t i = ring; i < seg_.slot_count(); ++i) {
    if (static_cast<int64_t>(read(off(seg_.slot(i).minute))) == minute) return slot = i, true;
    if (free_late < 0 && slot_free(i, now_minute)) free_late = static_cast<int32_t>(i);
  }
  if (free_late < 0) return wait_reason_ = "late lane full", false;
  recycle(static_cast<uint32_t>(free_late), minute);
  slot = static_cast<uint32_t>(free_late);
  return true;
}

void Counter::touch(uint32_t slot) {
  if (touched_[slot] != 0) return;
  touched_[slot] = 1;
  touched_list_.push_back(slot);
  add_to(off(seg_.slot(slot).version), 1);
}

Counter::Bump Counter::bump(uint64_t table_off, uint32_t cap, uint64_t used_off, uint64_t key) {
  uint32_t i = static_cast<uint32_t>(mix(key)) & (cap - 1);
  for (uint32_t probe = 0; probe < cap; ++probe, i = (i + 1) & (cap - 1)) {
    const uint64_t e = table_off + uint64_t{i} * sizeof(TableEntry);
    const uint64_t k = read(e);
    if (k == key) {
      add_to(e + 8, 1);
      return Bump::Existing;
    }
    if (k != 0) continue;
    const uint64_t used = read(used_off);
    if (used + 1 > uint64_t{cap} * 7 / 8) return Bump::Full;  // short probes: the rest overflows
    set(e, key);
    set(e + 8, 1);
    set(used_off, used + 1);
    return Bump::Inserted;
  }
  return Bump::Full;
}

void Counter::count(uint32_t slot, const Normalized& m) {
  auto& s = seg_.slot(slot);
  auto& ic = seg_.ingest();
  touch(slot);
  add_to(off(s.messages), 1);
  add_to(off(ic.totals[shm::kProcessed]), 1);
  if (slot >= seg_.caps().ring_slots) add_to(off(ic.totals[shm::kLate]), 1);
  if (m.decision != Decision::Unknown) add_to(off(s.decisions[static_cast<uint32_t>(m.decision)]), 1);
  else count_unknown(s, m);
  // The reason, and the (symbol, reason) pair.
  uint32_t rid = 0;
  const bool reason_counted = count_reason(s, m, rid) != Bump::Full;
  if (!symbol_breakdown_ || m.symbol.empty()) return;
  if (reason_counted) count_symbol_reason(s, m, rid);
  else overflow(s.overflow_symbol_reason, shm::kOverflowSymbolReason);  // no pair without its reason
}

void Counter::overflow(const std::atomic<uint64_t>& field, shm::Total total) {
  add_to(off(field), 1);
  add_to(off(seg_.ingest().totals[total]), 1);
}

bool Counter::intern(std::string_view v, uint32_t& id) {
  if (strings_.intern(v, id)) return true;
  add_to(off(seg_.ingest().totals[shm::kOverflowString]), 1);
  return false;
}

void Counter::count_unknown(shm::SlotHeader& s, const Normalized& m) {
  uint32_t mid = 0;
  const uint64_t flag = uint64_t{m.unknown_from_decision_field ? 1U : 0U} << 32;
  Bump b = Bump::Full;
  if (intern(m.unknown_value, mid))
    b = bump(off(seg_.unknowns(s)[0]), seg_.caps().unknown_cap, off(s.unknown_used),
             flag | (mid + 1ULL));
  if (b == Bump::Inserted) strings_.ref(mid);  // a table entry holds one reference per string
  if (b == Bump::Full) overflow(s.overflow_unknown, shm::kOverflowUnknown);
}

Counter::Bump Counter::count_reason(shm::SlotHeader& s, const Normalized& m, uint32_t& rid) {
  Bump rb = Bump::Full;
  if (intern(m.reason, rid))
    rb = bump(off(seg_.reasons(s)[0]), seg_.caps().reason_cap, off(s.reason_used), rid + 1ULL);
  if (rb == Bump::Inserted) strings_.ref(rid);
  if (rb == Bump::Full) overflow(s.overflow_reason, shm::kOverflowReason);
  return rb;
}

void Counter::count_symbol_reason(shm::SlotHeader& s, const Normalized& m, uint32_t rid) {
  uint32_t sid = 0;
  Bump sb = Bump::Full;
  if (intern(m.symbol, sid))
    sb = bump(off(seg_.symbol_reasons(s)[0]), seg_.caps().symbol_reason_cap,
              off(s.symbol_reason_used), ((sid + 1ULL) << 32) | (rid + 1ULL));
  if (sb == Bump::Inserted) {
    strings_.ref(sid);
    strings_.ref(rid);
  }
  if (sb == Bump::Full) overflow(s.overflow_symbol_reason, shm::kOverflowSymbolReason);
}

void Counter::append_id(StreamId id) {
  auto& e = seg_.id_log()[staged_head_ % seg_.caps().id_log_cap];
  // Beyond the published head: invisible to ackd until the batch is applied.
  e.ms.store(id.ms, std::memory_order_relaxed);
  e.seq.store(id.seq, std::memory_order_relaxed);
  ++staged_head_;
  set(off(seg_.ingest().id_log_head), staged_head_);
}

Counter::Result Counter::add(StreamId id, const Normalized* msg, int64_t now_minute) {
  const uint64_t tail = seg_.ackd().id_log_tail.load(std::memory_order_acquire);
  if (staged_head_ - tail >= seg_.caps().id_log_cap) {
    wait_reason_ = "ID log full";
    return Result::NeedSpace;
  }
  if (id <= staged_counted_) {  // already counted before a restart: only ack it (DESIGN §5.1)
    append_id(id);
    return Result::Done;
  }
  if (msg == nullptr) {
    add_to(off(seg_.ingest().totals[shm::kTrimmed]), 1);
  } else {
    uint32_t slot = 0;
    if (!find_slot(msg->minute, now_minute, slot)) return Result::NeedSpace;
    count(slot, *msg);
  }
  append_id(id);
  staged_counted_ = id;
  return Result::Done;
}

void Counter::flush() {
  if (empty()) return;
  stage_chunk_versions();
  auto& ic = seg_.ingest();
  JournalEntry* j = seg_.journal();
  uint64_t n = 0;
  for (uint32_t s : clears_)
    j[n++] = {(static_cast<uint64_t>(JournalOp::ClearSlot) << kOpShift) | s, 0};
  for (const auto& op : ops_) j[n++] = op;
  store_id(ic.journal_id, staged_counted_);
  ic.journal_count.store(n, std::memory_order_release);  // published: a restart applies it
  apply_journal(seg_);
  ops_.clear();
  index_.clear();
  clears_.clear();
  for (uint32_t s : touched_list_) touched_[s] = 0;
  touched_list_.clear();
  strings_.end_batch();
}

}  // namespace p35
