// The byte layout of the shared-memory segment (DESIGN §4): every struct the three stages and
// p35-shm share, with the asserts that keep the picture below honest.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace p35::shm {

// Bump when any struct below or the meaning of a field changes; a segment of another version is
// refused (never reinterpreted).
inline constexpr uint32_t kLayoutVersion = 5;
inline constexpr uint64_t kMagic = 0x3533505F5350414DULL;  // "MAPS_P35" little-endian
inline constexpr size_t kCacheLine = 64;
inline constexpr int64_t kEmptyMinute = INT64_MIN;  // slot minute of a never-used slot

/*
 * Segment (all offsets in bytes, each section 4096-aligned; sizes depend on the capacities in the
 * header, which are fixed when the segment is created):
 *
 *   0        +--------------------------------------------------------------+
 *            | SegmentHeader (4096)  magic | version | sizes | fingerprint  |
 *            |                       capacities | section offsets          |
 *   4096     +--------------------------------------------------------------+
 *            | StageBlock[3] (3 x 512)  ingest, rollup, ackd                 |
 *            +--------------------------------------------------------------+
 *            | IngestControl   seqlock | counted_id | journal header |       |
 *            |                 totals | id-log head | bells               |
 *            +--------------------------------------------------------------+
 *            | RollupControl   committed_id | pending commit | totals shadow |
 *            +--------------------------------------------------------------+
 *            | AckdControl     ack tail | bell_at_commit | acked_id          |
 *            +--------------------------------------------------------------+
 *            | JournalEntry[journal_cap]        ingest's batch journal        |
 *            | IdLogEntry[id_log_cap]           stream IDs awaiting XACK      |
 *            | StringEntry[string_cap]          interned reasons/symbols      |
 *            | Slot[ring + late]                live counts (ingest writes)   |
 *            | Slot[2][ring + late]             committed shadow (rollup)     |
 *            | SlotMeta[ring + late]            shadow side + committed tag   |
 *            | PendingSlot[ring + late]         rollup's pending commit list  |
 *            +--------------------------------------------------------------+
 *
 * A Slot is a SlotHeader followed by three open-addressing tables of TableEntry, then the chunk
 * versions of those tables (padded to 64 bytes):
 *   reasons[reason_cap] | symbol_reasons[symbol_reason_cap] | unknowns[unknown_cap] |
 *   chunk_version[ceil(entries / kChunkEntries)]
 * chunk_version[c] is the slot `version` of the last batch that wrote table entries
 * [c * kChunkEntries, (c + 1) * kChunkEntries) (counted across the three tables), so rollup copies
 * and compares only the chunks written since its shadow's version, not the whole slot.
 *
 * Single writers: ingest writes IngestControl, the journal, the ID log, strings and slots;
 * rollup writes RollupControl, shadows, SlotMeta and PendingSlot; ackd writes AckdControl.
 * Each stage writes only its own StageBlock. No locks: seqlock, release/acquire, futex bells.
 */

// A stream ID as two words. Written by one stage; readers that need both words consistent read
// them under the owner's seqlock (SeqId below).
struct IdWords {
  std::atomic<uint64_t> ms;
  std::atomic<uint64_t> seq;
};

// A stream ID published by one writer and read by others without tearing: lock is odd while the
// writer changes the two words (a two-word seqlock). `next` holds the value being published and is
// stored before the lock turns odd: a writer killed between its stores leaves ms and seq torn but
// `next` whole, and its restart republishes exactly that value (repair_id in shm.hpp).
struct alignas(kCacheLine) SeqId {
  std::atomic<uint64_t> lock;
  std::atomic<uint64_t> ms;
  std::atomic<uint64_t> seq;
  IdWords next;
};

struct Capacities {
  uint32_t ring_slots;
  uint32_t late_slots;
  uint32_t reason_cap;         // power of two
  uint32_t symbol_reason_cap;  // power of two
  uint32_t unknown_cap;        // power of two
  uint32_t string_cap;
  uint32_t id_log_cap;
  uint32_t journal_cap;
};

struct SectionOffsets {
  uint64_t stages;
  uint64_t ingest;
  uint64_t rollup;
  uint64_t ackd;
  uint64_t journal;
  uint64_t id_log;
  uint64_t strings;
  uint64_t slots;
  uint64_t shadows;
  uint64_t slot_meta;
  uint64_t pending_slots;
  uint64_t slot_bytes;  // size of one Slot
  uint64_t end;         // == segment size
};

struct SegmentHeader {
  std::atomic<uint64_t> magic;  // stored last, with release, by the creator
  uint32_t layout_version;
  uint32_t header_size;
  uint64_t segment_size;
  uint64_t fingerprint;        // FNV-1a of stream, group, consumer, key prefix
  int64_t created_unix_ms;
  uint32_t creator_pid;
  uint32_t symbol_breakdown;   // informational: the setting at creation
  Capacities caps;
  SectionOffsets off;
  char fingerprint_text[512];  // "stream|group|consumer|prefix", NUL-terminated, for messages
  // Random at creation (getrandom): the instance token of the three stages on this segment, the
  // fencing token of the consumer name's ownership key and of the snapshot lease (DESIGN §5). A
  // clone of a VM or container gets a segment of its own (/dev/shm is not cloned live), so the
  // token is per instance even where host names, pids and creation times repeat.
  uint64_t instance_token[2];
  uint8_t reserved[4096 - 8 - 4 - 4 - 8 - 8 - 8 - 4 - 4 - sizeof(Capacities) -
                   sizeof(SectionOffsets) - 512 - 16];
};

enum class StageId : uint32_t { Ingest = 0, Rollup = 1, Ackd = 2 };
inline constexpr uint32_t kStageCount = 3;  // when this grows, update StageId and stage_name()

// What a stage is doing, for the inspector. When this grows, update state_name() in shm.cpp.
enum class StageState : uint32_t {
  Stopped = 0, Starting = 1, Running = 2, WaitingRedis = 3, Backpressure = 4, Draining = 5,
  WaitingName = 6,  // another instance holds the consumer name; holder_text says which
};

// Per-stage block: written only by its stage, read by everyone (inspector, status).
struct alignas(kCacheLine) StageBlock {
  std::atomic<uint64_t> pid;
  std::atomic<int64_t> start_unix_ms;
  // CLOCK_BOOTTIME, not wall time: the age other processes compute must not jump with a step of
  // the host's clock (a live stage looking dead, or a dead one alive). Since layout version 5.
  std::atomic<int64_t> heartbeat_boot_ms;
  std::atomic<uint32_t> state;     // StageState
  std::atomic<uint32_t> starts;    // how many times a process attached as this stage
  std::atomic<uint64_t> read;      // entries read from Redis (ingest)
  std::atomic<uint64_t> counted;   // messages counted (ingest)
  std::atomic<uint64_t> committed; // commits done (rollup)
  std::atomic<uint64_t> acked;     // IDs acked (ackd)
  std::atomic<uint64_t> waits;     // backpressure waits (ingest), seqlock retries (rollup)
  std::atomic<uint64_t> redis_errors;
  std::atomic<uint64_t> outages;
  std::atomic<int64_t> outage_since_boot_ms;  // CLOCK_BOOTTIME; 0 when Redis answers
  std::atomic<uint64_t> batches;
  std::atomic<uint64_t> skipped;   // already-counted IDs skipped after a restart (ingest)
  std::atomic<uint64_t> conflicts; // marker CAS failures (rollup); group re-created (ingest)
  // While WaitingName: who holds the consumer name ("host <h> pid <p> since <time>"), NUL-padded
  // text in words so that the inspector reads it without a torn word (a torn text is cosmetic).
  std::atomic<uint64_t> holder_text[16];
  // Times the Sentinel-resolved primary changed under this stage.
  std::atomic<uint64_t> primary_moves;
  // 512 bytes in all: 14 words, 2 half-words, holder_text (16 words), primary_moves.
  uint8_t reserved[512 - 14 * 8 - 2 * 4 - 16 * 8 - 8];
};

// Totals that go to Redis through the commit (exactly once) or only to status.
// When this grows, update rollup's committed-totals handling and the inspector.
enum Total : uint32_t {
  kProcessed = 0,       // messages counted into buckets -> status processed_total
  kTrimmed,             // PEL entries whose message was trimmed away -> trimmed_total
  kOverflowReason,      // counts that went to reason:__overflow__
  kOverflowSymbolReason,
  kOverflowUnknown,
  kOverflowString,      // strings that did not fit the string table
  kLate,                // messages counted into the late lane
  kTotalCount,
};
inline constexpr uint32_t kTotalSlots = 16;

// Journal of one ingest batch: absolute new values, applied again after a crash (DESIGN §5).
enum class JournalOp : uint64_t { Set = 0, ClearSlot = 1 };
struct JournalEntry {
  uint64_t op_offset;  // op << 56 | byte offset into the segment (Set) or slot index (ClearSlot)
  uint64_t value;      // the new absolute value (Set); unused, 0 (ClearSlot: the slot's new
                       // minute comes with the Set entries that follow it)
};

struct alignas(kCacheLine) IngestControl {
  // Odd while a batch is applied. Readers copy counts between two equal even reads.
  alignas(kCacheLine) std::atomic<uint64_t> seqlock;
  // Everything below until `journal_count` changes only inside the seqlock (via the journal).
  alignas(kCacheLine) IdWords counted_id;  // counts in slots stand for exactly IDs <= this
  std::atomic<uint64_t> id_log_head;       // entries [tail, head) of the ID log are live
  std::atomic<uint64_t> totals[kTotalSlots];
  std::atomic<uint64_t> initialised_from_marker;  // 1 once counted_id was set from Redis
  IdWords init_marker;  // the marker ingest started this segment from; rollup adopts exactly it
  // The journal: entries are written, then journal_id, then journal_count with release.
  alignas(kCacheLine) std::atomic<uint64_t> journal_count;  // 0: no published journal
  IdWords journal_id;
  // Bells: a 32-bit counter bumped (then FUTEX_WAKE) to wake the stage that waits on it.
  alignas(kCacheLine) std::atomic<uint32_t> rollup_bell;  // ingest published a batch
  alignas(kCacheLine) std::atomic<uint32_t> ackd_bell;    // head moved or commit done
  alignas(kCacheLine) std::atomic<uint32_t> ingest_bell;  // space freed (commit or ack)
  alignas(kCacheLine) SeqId counted_pub;  // counted_id again, tear-free for other stages
};

struct alignas(kCacheLine) RollupControl {
  alignas(kCacheLine) SeqId committed;  // the marker this segment's counts were committed under
  // Pending commit record (DESIGN §5.2): written, then pending_state=1 with release; cleared after.
  alignas(kCacheLine) std::atomic<uint64_t> pending_state;
  IdWords pending_prev;
  IdWords pending_next;
  std::atomic<uint64_t> pending_slot_count;       // entries in the PendingSlot array
  std::atomic<uint64_t> pending_totals_side;      // totals side to activate
  std::atomic<uint64_t> totals_side;              // which committed_totals[] is current
  std::atomic<uint64_t> committed_totals[2][kTotalSlots];
  std::atomic<uint64_t> commit_count;             // commits applied (inspector)
  std::atomic<int64_t> last_commit_unix_ms;
  std::atomic<uint64_t> reset_epoch;              // bumped when a conflict forced a reset
};

struct alignas(kCacheLine) AckdControl {
  alignas(kCacheLine) std::atomic<uint64_t> id_log_tail;  // entries below are acked
  // Rollup rings ackd's bell after a commit only once commit_count reaches this (or while ingest
  // waits for space): ackd asks for its second commit while traffic flows (P35_ACK_LINGER_MS).
  // 0: after every commit.
  std::atomic<uint64_t> bell_at_commit;
  SeqId acked;                                          // highest acked ID, for lags
};

struct IdLogEntry {
  std::atomic<uint64_t> ms;
  std::atomic<uint64_t> seq;
};

inline constexpr size_t kStringMaxBytes = 232;  // >= 200-byte reasons, "executed=" + 64
struct StringEntry {
  std::atomic<uint32_t> length;
  uint32_t hash;
  char bytes[kStringMaxBytes];
};

// Table entries per chunk of a slot's chunk_version array (1 KiB of TableEntry).
inline constexpr uint32_t kChunkEntries = 64;

// key 0: empty. Reason key: id + 1. Symbol-reason: (symbol id + 1) << 32 | (reason id + 1).
// Unknown: from_decision_field << 32 | (member id + 1).
struct TableEntry {
  std::atomic<uint64_t> key;
  std::atomic<uint64_t> count;
};

inline constexpr uint32_t kDecisionSlots = 4;  // EXECUTE, SKIP, BLOCKED, ERROR (rules.hpp)
struct alignas(kCacheLine) SlotHeader {
  std::atomic<int64_t> minute;     // minutes since epoch, kEmptyMinute when unused
  std::atomic<uint64_t> gen;       // bumped each time the slot is recycled
  std::atomic<uint64_t> version;   // bumped by each batch that changes the slot
  std::atomic<uint64_t> messages;
  std::atomic<uint64_t> decisions[kDecisionSlots];
  std::atomic<uint64_t> reason_used;
  std::atomic<uint64_t> symbol_reason_used;
  std::atomic<uint64_t> unknown_used;
  std::atomic<uint64_t> overflow_reason;
  std::atomic<uint64_t> overflow_symbol_reason;
  std::atomic<uint64_t> overflow_unknown;
  uint8_t reserved[256 - 8 * 14];
};

// Rollup's per-slot bookkeeping: which shadow side is committed, and the (gen, version) of the
// slot it reflects, which ingest reads to know a slot is fully committed.
struct alignas(16) SlotMeta {
  std::atomic<uint64_t> side;            // 0 or 1: Slot[side][i] is the committed shadow
  std::atomic<uint64_t> committed_tag;   // gen << 32 | (version & 0xffffffff), 0: nothing
};

struct PendingSlot {
  std::atomic<uint32_t> slot;
  std::atomic<uint32_t> side;  // the side to activate if the commit happened
};

// --- the asserts that keep the picture honest --------------------------------------------
// Every field of every block at its offset. Two programs built apart (stages of one version,
// p35-shm of another build) read the same bytes only by agreeing on these numbers: a field that
// moves must fail the build here and bump kLayoutVersion, never change meaning silently.

// SegmentHeader: magic, version and size first, so any version's inspector can refuse another.
static_assert(sizeof(SegmentHeader) == 4096);  // one page: section 0
static_assert(offsetof(SegmentHeader, magic) == 0);
static_assert(offsetof(SegmentHeader, layout_version) == 8);
static_assert(offsetof(SegmentHeader, header_size) == 12);
static_assert(offsetof(SegmentHeader, segment_size) == 16);
static_assert(offsetof(SegmentHeader, fingerprint) == 24);
static_assert(offsetof(SegmentHeader, created_unix_ms) == 32);
static_assert(offsetof(SegmentHeader, creator_pid) == 40);
static_assert(offsetof(SegmentHeader, symbol_breakdown) == 44);
static_assert(offsetof(SegmentHeader, caps) == 48);
static_assert(sizeof(Capacities) == 32);  // eight u32
static_assert(offsetof(SegmentHeader, off) == 80);
static_assert(sizeof(SectionOffsets) == 104);  // thirteen u64
static_assert(offsetof(SegmentHeader, fingerprint_text) == 184);
static_assert(offsetof(SegmentHeader, instance_token) == 696);
static_assert(offsetof(SegmentHeader, reserved) == 712);

// StageBlock: one per stage, 512 bytes each; the inspector and status read every field.
static_assert(sizeof(StageBlock) == 512);
static_assert(offsetof(StageBlock, pid) == 0);
static_assert(offsetof(StageBlock, start_unix_ms) == 8);
static_assert(offsetof(StageBlock, heartbeat_boot_ms) == 16);
static_assert(offsetof(StageBlock, state) == 24);
static_assert(offsetof(StageBlock, starts) == 28);
static_assert(offsetof(StageBlock, read) == 32);
static_assert(offsetof(StageBlock, counted) == 40);
static_assert(offsetof(StageBlock, committed) == 48);
static_assert(offsetof(StageBlock, acked) == 56);
static_assert(offsetof(StageBlock, waits) == 64);
static_assert(offsetof(StageBlock, redis_errors) == 72);
static_assert(offsetof(StageBlock, outages) == 80);
static_assert(offsetof(StageBlock, outage_since_boot_ms) == 88);
static_assert(offsetof(StageBlock, batches) == 96);
static_assert(offsetof(StageBlock, skipped) == 104);
static_assert(offsetof(StageBlock, conflicts) == 112);
static_assert(offsetof(StageBlock, holder_text) == 120);
static_assert(offsetof(StageBlock, primary_moves) == 248);
static_assert(offsetof(StageBlock, reserved) == 256);  // the reserve is counted, not padded
static_assert(offsetof(StageBlock, reserved) + sizeof(StageBlock::reserved) == sizeof(StageBlock));

// IngestControl: the seqlock, the journal header and each bell on a line of its own, so a stage
// spinning on one does not slow the writer of another (false sharing).
static_assert(sizeof(IngestControl) == 576);
static_assert(offsetof(IngestControl, seqlock) == 0);
static_assert(offsetof(IngestControl, counted_id) == 64);
static_assert(offsetof(IngestControl, id_log_head) == 80);
static_assert(offsetof(IngestControl, totals) == 88);
static_assert(offsetof(IngestControl, initialised_from_marker) == 216);
static_assert(offsetof(IngestControl, init_marker) == 224);
static_assert(offsetof(IngestControl, journal_count) == 256);
static_assert(offsetof(IngestControl, journal_id) == 264);
static_assert(offsetof(IngestControl, rollup_bell) == 320);
static_assert(offsetof(IngestControl, ackd_bell) == 384);
static_assert(offsetof(IngestControl, ingest_bell) == 448);
static_assert(offsetof(IngestControl, counted_pub) == 512);

// RollupControl: the committed marker on its own line; the pending commit record after it.
static_assert(sizeof(RollupControl) == 448);
static_assert(offsetof(RollupControl, committed) == 0);
static_assert(offsetof(RollupControl, pending_state) == 64);
static_assert(offsetof(RollupControl, pending_prev) == 72);
static_assert(offsetof(RollupControl, pending_next) == 88);
static_assert(offsetof(RollupControl, pending_slot_count) == 104);
static_assert(offsetof(RollupControl, pending_totals_side) == 112);
static_assert(offsetof(RollupControl, totals_side) == 120);
static_assert(offsetof(RollupControl, committed_totals) == 128);
static_assert(offsetof(RollupControl, commit_count) == 384);
static_assert(offsetof(RollupControl, last_commit_unix_ms) == 392);
static_assert(offsetof(RollupControl, reset_epoch) == 400);

// AckdControl: the ack tail, then the acked ID on a line of its own (read by every lag).
static_assert(sizeof(AckdControl) == 2 * kCacheLine);
static_assert(offsetof(AckdControl, id_log_tail) == 0);
static_assert(offsetof(AckdControl, bell_at_commit) == 8);
static_assert(offsetof(AckdControl, acked) == 64);

// SeqId: lock, the two words, and `next` (the value being published, for repair after a kill).
static_assert(sizeof(SeqId) == kCacheLine);
static_assert(offsetof(SeqId, lock) == 0);
static_assert(offsetof(SeqId, ms) == 8);
static_assert(offsetof(SeqId, seq) == 16);
static_assert(offsetof(SeqId, next) == 24);

// Slots: the header a cache-line multiple, then the tables of 16-byte entries.
static_assert(sizeof(SlotHeader) == 256);
static_assert(offsetof(SlotHeader, minute) == 0);
static_assert(offsetof(SlotHeader, gen) == 8);
static_assert(offsetof(SlotHeader, version) == 16);
static_assert(offsetof(SlotHeader, messages) == 24);
static_assert(offsetof(SlotHeader, decisions) == 32);
static_assert(offsetof(SlotHeader, reason_used) == 64);
static_assert(offsetof(SlotHeader, symbol_reason_used) == 72);
static_assert(offsetof(SlotHeader, unknown_used) == 80);
static_assert(offsetof(SlotHeader, overflow_reason) == 88);
static_assert(offsetof(SlotHeader, overflow_symbol_reason) == 96);
static_assert(offsetof(SlotHeader, overflow_unknown) == 104);
static_assert(offsetof(SlotHeader, reserved) == 112);
static_assert(sizeof(TableEntry) == 16 && offsetof(TableEntry, count) == 8);
static_assert(sizeof(JournalEntry) == 16 && offsetof(JournalEntry, value) == 8);
static_assert(sizeof(IdLogEntry) == 16 && offsetof(IdLogEntry, seq) == 8);
static_assert(sizeof(IdWords) == 16 && offsetof(IdWords, seq) == 8);
static_assert(sizeof(StringEntry) == 240);  // 8 + kStringMaxBytes
static_assert(offsetof(StringEntry, hash) == 4 && offsetof(StringEntry, bytes) == 8);
static_assert(sizeof(SlotMeta) == 16 && offsetof(SlotMeta, committed_tag) == 8);
static_assert(sizeof(PendingSlot) == 8 && offsetof(PendingSlot, side) == 4);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
// Atomics in shared memory must be plain words: same size as the value, no hidden lock.
static_assert(sizeof(std::atomic<uint64_t>) == 8 && sizeof(std::atomic<uint32_t>) == 4);
static_assert(std::is_standard_layout_v<SegmentHeader> && std::is_standard_layout_v<SlotHeader>);
static_assert(std::is_standard_layout_v<IngestControl> && std::is_standard_layout_v<RollupControl>);
static_assert(std::is_standard_layout_v<StageBlock> && std::is_standard_layout_v<TableEntry>);

}  // namespace p35::shm
