// Opening, creating and validating the shared-memory segment, and typed access to its sections.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "shm_layout.hpp"
#include "stream_id.hpp"

namespace p35 {

struct Config;

// The segment cannot be used: what() says what differs and how to fix it.
class ShmError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The segment belongs to another user (or others may write it): no restart can fix that, so the
// stages exit with EX_CONFIG (daemon.hpp) and systemd does not restart them.
class ShmOwnerError : public ShmError {
 public:
  using ShmError::ShmError;
};

// What a segment is for and how big its parts are; derived from the configuration.
struct SegmentSpec {
  std::string name;  // under /dev/shm
  std::string stream, group, consumer, key_prefix;
  shm::Capacities caps{};
  bool symbol_breakdown = true;

  static SegmentSpec from_config(const Config& cfg);
  uint64_t fingerprint() const;
  std::string fingerprint_text() const;
};

// Offsets of every section for the given capacities (pure; used by creator and validators).
// Checked arithmetic: throws ShmError if the layout does not fit in 64 bits.
shm::SectionOffsets compute_layout(const shm::Capacities& caps);

// Throws ShmError ("<whose>: <field>=<value> exceeds the limit <max> (<setting>)", below the
// minimum, or not a power of two) for capacities this build cannot lay out or index safely: the
// configuration's limits; table capacities powers of two. Every open checks a header with it.
void check_capacities(const shm::Capacities& caps, std::string_view whose);

std::string shm_path(std::string_view name);  // "/dev/shm/<name>"

class Segment {
 public:
  // Opens the segment or creates it, race-free against other processes doing the same: the
  // creator initialises a private file and links it into place, so nobody sees it half-made.
  // Throws ShmError if an existing segment has another version, size, capacities or fingerprint.
  static Segment open_or_create(const SegmentSpec& spec, bool* created = nullptr);
  // Read-only mapping of whatever segment is there (for p35-shm); validates magic, version and
  // the layout (capacity limits, every section inside the file), not the fingerprint.
  static Segment open_readonly(std::string_view name);

  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  const std::string& name() const { return name_; }
  // The header's random instance token as 32 hex digits (the ownership and lease fencing token).
  std::string instance_token() const;
  size_t size() const { return size_; }
  uint8_t* base() const { return base_; }
  // False when the file at /dev/shm/<name> is gone or is another file than the one mapped.
  bool still_linked() const;
  // Takes an exclusive open-file-description lock on byte `index` of the file, held until this
  // process exits (the kernel drops it even on SIGKILL). False if another process holds it.
  bool try_lock_byte(uint32_t index) const;

  shm::SegmentHeader& header() const { return *reinterpret_cast<shm::SegmentHeader*>(base_); }
  const shm::Capacities& caps() const { return header().caps; }
  const shm::SectionOffsets& off() const { return header().off; }
  uint32_t slot_count() const { return caps().ring_slots + caps().late_slots; }

  shm::StageBlock& stage(shm::StageId id) const;
  shm::IngestControl& ingest() const { return at<shm::IngestControl>(off().ingest); }
  shm::RollupControl& rollup() const { return at<shm::RollupControl>(off().rollup); }
  shm::AckdControl& ackd() const { return at<shm::AckdControl>(off().ackd); }
  shm::JournalEntry* journal() const { return &at<shm::JournalEntry>(off().journal); }
  shm::IdLogEntry* id_log() const { return &at<shm::IdLogEntry>(off().id_log); }
  shm::StringEntry* strings() const { return &at<shm::StringEntry>(off().strings); }
  shm::SlotMeta* slot_meta() const { return &at<shm::SlotMeta>(off().slot_meta); }
  shm::PendingSlot* pending_slots() const { return &at<shm::PendingSlot>(off().pending_slots); }

  // Live slot i (ring slots first, then the late lane).
  shm::SlotHeader& slot(uint32_t i) const { return slot_at(off().slots, i); }
  // Rollup's committed shadow of slot i, side 0 or 1.
  shm::SlotHeader& shadow(uint32_t side, uint32_t i) const {
    return slot_at(off().shadows + uint64_t{side} * slot_count() * off().slot_bytes, i);
  }
  // The three tables of a slot (live or shadow).
  shm::TableEntry* reasons(shm::SlotHeader& s) const;
  shm::TableEntry* symbol_reasons(shm::SlotHeader& s) const;
  shm::TableEntry* unknowns(shm::SlotHeader& s) const;
  // The slot's chunk versions (shm_layout.hpp), chunk_count() of them after the tables.
  std::atomic<uint64_t>* chunk_versions(shm::SlotHeader& s) const;
  uint32_t chunk_count() const;
  // Table entry j (counted across the three tables) is in chunk j / kChunkEntries.
  shm::TableEntry* table_entries(shm::SlotHeader& s) const { return reasons(s); }

  // The bytes of interned string `id` (valid while a live slot refers to it).
  std::string_view string_at(uint32_t id) const;

  uint64_t offset_of(const void* p) const {
    return static_cast<uint64_t>(static_cast<const uint8_t*>(p) - base_);
  }
  template <typename T>
  T& at(uint64_t offset) const {
    return *reinterpret_cast<T*>(base_ + offset);
  }

 private:
  Segment(std::string name, int fd, uint8_t* base, size_t size, bool writable);
  shm::SlotHeader& slot_at(uint64_t section, uint32_t i) const {
    return at<shm::SlotHeader>(section + uint64_t{i} * off().slot_bytes);
  }
  std::string name_;
  int fd_ = -1;
  uint8_t* base_ = nullptr;
  size_t size_ = 0;
  bool writable_ = false;
  uint64_t inode_ = 0;
  uint64_t device_ = 0;
};

// Reading and publishing stream IDs through a SeqId (two-word seqlock, single writer). Every read
// by another process is bounded: a writer killed between its stores leaves the lock odd until it
// restarts, and nothing may wait for that.
void publish_id(shm::SeqId& dst, StreamId id);
// The writer, once at start (after taking its stage lock, before anything of its own reads dst):
// if a predecessor died inside publish_id(), republish the value it was publishing (whole in
// dst.next, however ms and seq were left) and return it; nullopt when the lock was even.
std::optional<StreamId> repair_id(shm::SeqId& dst);
// nullopt after `attempts` odd or torn reads 50 us apart, i.e. when the writer died between its
// stores and has not restarted yet (or is stopped there): the caller does the safe thing.
std::optional<StreamId> try_read_id(const shm::SeqId& src, int attempts = 100);
// The writer reading its own value (nobody else stores it; only after repair_id at start).
StreamId own_id(const shm::SeqId& src);
StreamId load_id(const shm::IdWords& src);   // only where the writer is quiescent or is us
void store_id(shm::IdWords& dst, StreamId id);

const char* stage_name(shm::StageId id);
const char* state_name(uint32_t state);
// Short text in `n` shared words (NUL-terminated, cut to n * 8 - 1 bytes), for one writer and
// lock-free readers (StageBlock::holder_text).
void store_text(std::atomic<uint64_t>* words, size_t n, std::string_view text);
std::string load_text(const std::atomic<uint64_t>* words, size_t n);

}  // namespace p35
