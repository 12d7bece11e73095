// Tests of the shared-memory layer (DESIGN §4, §5): race-free creation, refusal of foreign
// segments, the seqlock and the journal across processes and crashes, the ID log and the string
// table under tiny capacities, and the layout itself.
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "config.hpp"
#include "counter.hpp"
#include "futex.hpp"
#include "shm_test_util.hpp"
#include "skip.hpp"

namespace {

using Catch::Matchers::Contains;
using p35::Counter;
using p35::Decision;
using p35::Normalized;
using p35::Segment;
using p35::SegmentSpec;
using p35::ShmError;
using p35::StreamId;
using p35::test::ForkedChild;
using p35::test::ShmGuard;
using p35::test::SlotCounts;
using p35::test::small_spec;
namespace shm = p35::shm;

constexpr uint64_t kIdMs = 1770000000000ULL;  // 2026-02-02, the entry-ID time of most tests
constexpr int64_t kBaseMinute = 29500000;     // 2026-02-01T20:00Z, minutes since the epoch
constexpr uint64_t kOpShift = 56;             // JournalEntry::op_offset = op << 56 | target

StreamId id_of(uint64_t k) {
  return {kIdMs, k};
}

Normalized message(int64_t minute, Decision d, std::string reason, std::string symbol = "") {
  Normalized m;
  m.decision = d;
  m.reason = std::move(reason);
  m.symbol = std::move(symbol);
  m.minute = minute;
  m.event_ms = minute * 60000;
  return m;
}

// Message number k of the crash tests: three minutes, every decision (unknowns of both kinds),
// seven reasons, three symbols and some messages without one. A pure function of k, so the
// expected counts for IDs 1..n can be recomputed after any crash.
Normalized crash_message(uint64_t k) {
  const auto minute = kBaseMinute + static_cast<int64_t>((k / 97) % 3);
  const auto d = static_cast<Decision>(k % 5);
  Normalized m = message(minute, d, "reason-" + std::to_string(k % 7),
                         k % 4 == 3 ? "" : "SYM" + std::to_string(k % 3));
  if (d == Decision::Unknown) {
    m.unknown_from_decision_field = (k / 5) % 2 == 0;
    m.unknown_value = "u" + std::to_string((k / 10) % 3);
  }
  return m;
}

// Expected counts per minute of crash_message(1..k).
struct Model {
  uint64_t k = 0;
  std::map<int64_t, SlotCounts> minutes;
  void extend_to(uint64_t upto) {
    for (; k < upto;) {
      const Normalized m = crash_message(++k);
      minutes[m.minute].count(m, true);
    }
  }
};

std::string refusal(const SegmentSpec& spec) {
  try {
    Segment::open_or_create(spec);
  } catch (const ShmError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string refusal_readonly(const std::string& name) {
  try {
    Segment::open_readonly(name);
  } catch (const ShmError& e) {
    return e.what();
  }
  return "(no error)";
}

// --- (1) creation race -----------------------------------------------------------------------

struct RaceReport {
  int32_t pid = 0;
  int32_t ok = 0;
  int32_t created = 0;
  uint32_t creator_pid = 0;
  uint64_t inode = 0;
  int64_t created_unix_ms = 0;
  uint64_t segment_size = 0;
  uint64_t fingerprint = 0;
  char error[256] = {};
};
static_assert(sizeof(RaceReport) <= PIPE_BUF);  // one write() per report stays whole

int race_child(const SegmentSpec& spec, int ready_fd, int start_fd, int result_fd) {
  char c = 'r';
  if (::write(ready_fd, &c, 1) != 1) return 2;
  if (::read(start_fd, &c, 1) != 0) return 3;  // EOF is the start signal: the parent closed it
  RaceReport r;
  r.pid = getpid();
  try {
    bool created = false;
    const Segment seg = Segment::open_or_create(spec, &created);
    const auto& h = seg.header();
    r.ok = 1;
    r.created = created ? 1 : 0;
    r.inode = p35::test::mapped_inode(seg.base());
    r.creator_pid = h.creator_pid;
    r.created_unix_ms = h.created_unix_ms;
    r.segment_size = h.segment_size;
    r.fingerprint = h.fingerprint;
  } catch (const std::exception& e) {
    std::snprintf(r.error, sizeof r.error, "%s", e.what());
  }
  return ::write(result_fd, &r, sizeof r) == static_cast<ssize_t>(sizeof r) ? 0 : 4;
}

// Forks `n` children that all call open_or_create at the same instant; returns their reports.
std::vector<RaceReport> race(const SegmentSpec& spec, int n) {
  int ready[2], start[2], result[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(start) == 0);
  REQUIRE(::pipe(result) == 0);
  std::vector<std::unique_ptr<ForkedChild>> kids;
  for (int i = 0; i < n; ++i)
    kids.push_back(std::make_unique<ForkedChild>([&] {
      ::close(ready[0]);
      ::close(start[1]);
      ::close(result[0]);
      return race_child(spec, ready[1], start[0], result[1]);
    }));
  ::close(ready[1]);
  ::close(start[0]);
  ::close(result[1]);
  int waiting = 0;
  for (char c = 0; waiting < n && ::read(ready[0], &c, 1) == 1;) ++waiting;
  REQUIRE(waiting == n);
  ::close(start[1]);  // go: every child's read() returns EOF now
  std::vector<RaceReport> reports;
  pollfd pfd{result[0], POLLIN, 0};
  while (static_cast<int>(reports.size()) < n && ::poll(&pfd, 1, 20000) == 1) {
    RaceReport r;
    if (::read(result[0], &r, sizeof r) != static_cast<ssize_t>(sizeof r)) break;
    reports.push_back(r);
  }
  ::close(ready[0]);
  ::close(result[0]);
  for (auto& k : kids) {
    const auto st = k->wait_exit(20000);
    CHECK(p35::test::exited_ok(st));
  }
  return reports;
}

TEST_CASE("32 processes opening a missing segment at once: one creates it, all map the same file",
          "[shm]") {
  constexpr int kRounds = 20;
  constexpr int kChildren = 32;
  for (int round = 0; round < kRounds; ++round) {
    const ShmGuard guard;
    const SegmentSpec spec = small_spec(guard.name());
    const auto reports = race(spec, kChildren);
    REQUIRE(reports.size() == kChildren);
    INFO("round " << round);
    int creators = 0;
    const RaceReport* creator = nullptr;
    for (const auto& r : reports) {
      INFO("pid " << r.pid << ": " << r.error);
      REQUIRE(r.ok == 1);
      if (r.created != 0) {
        ++creators;
        creator = &r;
      }
    }
    REQUIRE(creators == 1);
    struct stat st {};
    REQUIRE(::stat(guard.path().c_str(), &st) == 0);
    for (const auto& r : reports) {
      CHECK(r.inode == st.st_ino);
      CHECK(r.creator_pid == static_cast<uint32_t>(creator->pid));
      CHECK(r.created_unix_ms == creator->created_unix_ms);
      CHECK(r.segment_size == static_cast<uint64_t>(st.st_size));
      CHECK(r.fingerprint == spec.fingerprint());
    }
    CHECK(p35::test::init_leftovers(guard.name()).empty());
  }
}

// A creator killed between creating "<name>.init.<pid>" and unlinking it leaves that file behind.
// A later process with the same pid (pid reuse; containers restart stages as the same small pid)
// must still be able to create the segment: a file with its own pid can only be stale.
TEST_CASE("a stale <name>.init.<pid> from a killed creator with our pid does not block creation",
          "[shm]") {
  const ShmGuard guard;
  const std::string stale = guard.path() + ".init." + std::to_string(getpid());
  p35::test::write_file(stale, p35::test::random_bytes(4096, 1));
  bool created = false;
  std::string error;
  try {
    const Segment seg = Segment::open_or_create(small_spec(guard.name()), &created);
  } catch (const ShmError& e) {
    error = e.what();
  }
  INFO("open_or_create: " << error);
  CHECK(error.empty());
  CHECK(created);
  CHECK(p35::test::init_leftovers(guard.name()).empty());
}

TEST_CASE("a segment larger than /dev/shm is refused at creation, with its size, leaving no file",
          "[shm]") {
  struct statvfs fs {};
  REQUIRE(::statvfs("/dev/shm", &fs) == 0);
  // On a tmpfs without a size limit the allocation would take the machine's memory: not here.
  if (fs.f_blocks == 0) P35_SKIP("/dev/shm has no size limit here: nothing to refuse");
  const ShmGuard guard;
  SegmentSpec spec = small_spec(guard.name());
  spec.caps.ring_slots = 4096;
  spec.caps.symbol_reason_cap = 1048576;  // 16 MiB a slot, three copies of 4,096 slots and more
  const uint64_t bytes = p35::compute_layout(spec.caps).end;
  REQUIRE(bytes > uint64_t{fs.f_blocks} * fs.f_frsize);
  std::string error;
  try {
    const Segment seg = Segment::open_or_create(spec);
  } catch (const ShmError& e) {
    error = e.what();
  }
  CHECK_THAT(error, Contains("Failed to allocate " + std::to_string(bytes) + " bytes"));
  CHECK_THAT(error, Contains("/dev/shm"));
  CHECK(::access(guard.path().c_str(), F_OK) != 0);
  CHECK(p35::test::init_leftovers(guard.name()).empty());
}

TEST_CASE("a foreign sparse file in the segment's place is refused before any page is mapped in",
          "[shm]") {
  const ShmGuard guard;
  // 1 GiB that is almost all hole: mapping it page by page would allocate all of it.
  p35::test::write_file(guard.path(), p35::test::random_bytes(4096, 7));
  REQUIRE(::truncate(guard.path().c_str(), off_t{1} << 30) == 0);
  REQUIRE(::chmod(guard.path().c_str(), 0600) == 0);  // passes the owner and mode check: mapped
  std::string error;
  try {
    const Segment seg = Segment::open_or_create(small_spec(guard.name()));
  } catch (const ShmError& e) {
    error = e.what();
  }
  CHECK_FALSE(error.empty());
  struct stat st {};
  REQUIRE(::stat(guard.path().c_str(), &st) == 0);
  CHECK(st.st_size == off_t{1} << 30);
  CHECK(st.st_blocks * 512 <= 64 * 1024);  // still the 4 KiB written (and nothing else)
}

// --- (2) refusals ----------------------------------------------------------------------------

TEST_CASE("a segment of another version, size, owner or capacity is refused, untouched, with a fix",
          "[shm]") {
  const ShmGuard guard;
  const SegmentSpec spec = small_spec(guard.name());
  const std::string rm = "rm " + guard.path();
  const uint64_t size = Segment::open_or_create(spec).header().segment_size;
  // Every refusal must leave the file exactly as it was (never reinitialise or "repair" it).
  const auto refused_untouched = [&](const SegmentSpec& s) {
    const auto before = p35::test::file_bytes(guard.path());
    const std::string why = refusal(s);
    CHECK(p35::test::file_bytes(guard.path()) == before);
    return why;
  };

  SECTION("another layout version") {
    const uint32_t other = shm::kLayoutVersion + 1;
    p35::test::patch_file(guard.path(), offsetof(shm::SegmentHeader, layout_version), &other,
                          sizeof other);
    CHECK_THAT(refused_untouched(spec),
               Contains("layout version " + std::to_string(other)) &&
                   Contains("uses version " + std::to_string(shm::kLayoutVersion)) && Contains(rm));
    CHECK_THAT(refusal_readonly(guard.name()), Contains("layout version"));
  }
  SECTION("another size") {
    REQUIRE(::truncate(guard.path().c_str(), static_cast<off_t>(size + 4096)) == 0);
    CHECK_THAT(refused_untouched(spec), Contains(std::to_string(size) + " bytes") &&
                                            Contains(std::to_string(size + 4096) + " bytes") &&
                                            Contains(rm));
    CHECK_THAT(refusal_readonly(guard.name()), Contains(std::to_string(size + 4096)));
  }
  SECTION("another consumer (fingerprint)") {
    SegmentSpec other = spec;
    other.consumer = "other-consumer";
    CHECK_THAT(refused_untouched(other), Contains("consumer=test-consumer") &&
                                             Contains("consumer=other-consumer") &&
                                             Contains("P35_SHM_NAME") && Contains(rm));
  }
  SECTION("another key prefix (fingerprint)") {
    SegmentSpec other = spec;
    other.key_prefix = "tenant2:p35:";
    CHECK_THAT(refused_untouched(other), Contains("prefix=tenant2:p35:") && Contains(rm));
  }
  SECTION("other capacities") {
    SegmentSpec other = spec;
    other.caps.ring_slots = 128;
    CHECK_THAT(refused_untouched(other),
               Contains("ring_slots=64") && Contains("128") && Contains(rm));
    other = spec;
    other.caps.string_cap = 128;
    CHECK_THAT(refused_untouched(other), Contains("strings=64") && Contains("128") && Contains(rm));
    other = spec;
    other.caps.id_log_cap = 2048;
    CHECK_THAT(refused_untouched(other),
               Contains("id_log=1024") && Contains("2048") && Contains(rm));
  }
  SECTION("not a segment at all (bad magic)") {
    p35::test::write_file(guard.path(), p35::test::random_bytes(size, 7));
    CHECK_THAT(refused_untouched(spec), Contains("bad magic") && Contains(rm));
  }
  SECTION("a half-made segment whose magic was never stored") {
    const uint64_t zero = 0;
    p35::test::patch_file(guard.path(), 0, &zero, sizeof zero);
    CHECK_THAT(refused_untouched(spec), Contains("bad magic") && Contains(rm));
  }
  SECTION("a file too small for a header, or empty") {
    p35::test::write_file(guard.path(), p35::test::random_bytes(100, 8));
    CHECK_THAT(refused_untouched(spec), Contains("too small") && Contains(rm));
    p35::test::write_file(guard.path(), {});
    CHECK_THAT(refused_untouched(spec), Contains("too small") && Contains(rm));
  }
}

TEST_CASE("open_readonly throws ShmError on missing, empty, short or garbage files, never crashes",
          "[shm]") {
  const ShmGuard guard;
  CHECK_THAT(refusal_readonly(guard.name()), Contains("Failed to open"));
  for (size_t n : {size_t{0}, size_t{1}, size_t{100}, size_t{4095}, size_t{4096}, size_t{65536}}) {
    for (uint32_t seed = 0; seed < 5; ++seed) {
      p35::test::write_file(guard.path(), p35::test::random_bytes(n, seed));
      CHECK_THROWS_AS(Segment::open_readonly(guard.name()), ShmError);
    }
  }
  // Garbage that passes magic, version and size: its header size, capacities and offsets are
  // refused (crafted_headers() below names each check).
  const auto craft = [&](uint32_t seed) {
    auto bytes = p35::test::random_bytes(1 << 20, seed);
    const uint64_t magic = shm::kMagic, size = bytes.size();
    const uint32_t version = shm::kLayoutVersion;
    std::memcpy(bytes.data() + offsetof(shm::SegmentHeader, magic), &magic, sizeof magic);
    std::memcpy(bytes.data() + offsetof(shm::SegmentHeader, layout_version), &version,
                sizeof version);
    std::memcpy(bytes.data() + offsetof(shm::SegmentHeader, segment_size), &size, sizeof size);
    return bytes;
  };
  for (uint32_t seed = 0; seed < 20; ++seed) {
    p35::test::write_file(guard.path(), craft(seed));
    CHECK_THAT(refusal_readonly(guard.name()), Contains("the header is corrupt or not from this build"));
  }
  // And a real segment opens read-only.
  ::unlink(guard.path().c_str());
  const uint64_t size = Segment::open_or_create(small_spec(guard.name())).size();
  const Segment ro = Segment::open_readonly(guard.name());
  CHECK(ro.size() == size);
  CHECK(ro.caps().ring_slots == 64);
}

// Issue 8 (fuzz/crashes/inspect/layout-size-wraps-2to64, misaligned-slot-odd-capacities): a
// header whose capacities wrap the layout arithmetic, exceed the configuration's limits, are not
// powers of two, or whose offsets leave the file, is refused before anything past the header is
// touched, by the read-only and the read-write open alike, with the field, value and limit.
TEST_CASE("crafted headers (wrapping, huge, non-power-of-two capacities, offsets outside the "
          "file) are refused by every open with field, value and limit, never a crash",
          "[shm]") {
  const ShmGuard guard;
  const SegmentSpec spec = small_spec(guard.name());
  // The crafted files are faithful: the same header with the creator's layout opens both ways.
  const auto good = p35::compute_layout(spec.caps);
  p35::test::write_file(guard.path(),
                        p35::test::crafted_segment(spec, spec.caps, good, good.end));
  REQUIRE(::chmod(guard.path().c_str(), 0600) == 0);  // as the stages create it
  CHECK_NOTHROW(Segment::open_readonly(guard.name()));
  CHECK_NOTHROW(Segment::open_or_create(spec));
  // The fuzz crash: before the fix its layout wrapped past 2^64 to end at its 8 KiB file size
  // (capacities recomputed for layout version 3, whose slots end in chunk versions).
  const shm::Capacities wraps{1U << 31, 1U << 31, 88784833, 0, 0, 3292808209U, 0, 0};
  CHECK(p35::test::wrapping_layout(wraps).end == 8192);
  CHECK_THROWS_WITH(p35::compute_layout(wraps), Contains("larger than 2^64 bytes"));

  const auto crafted = p35::test::crafted_headers(spec);
  REQUIRE(crafted.size() > 20);
  for (const auto& c : crafted) {
    INFO("crafted header: " << c.what);
    p35::test::write_file(guard.path(), c.file);
    REQUIRE(::chmod(guard.path().c_str(), 0600) == 0);
    const std::string ro = refusal_readonly(guard.name());
    const std::string rw = refusal(spec);
    INFO("open_readonly: " << ro << "\nopen_or_create: " << rw);
    for (const std::string& s : c.says) {
      CHECK_THAT(ro, Contains(s));
      CHECK_THAT(rw, Contains(s));
    }
    CHECK_THAT(ro, Contains(guard.path()) && Contains("rm " + guard.path()));
    CHECK(p35::test::file_bytes(guard.path()) == c.file);  // refused, never "repaired"
  }
}

// The segment's capacity limits are exactly the configuration's: every value the configuration
// accepts (non-powers of two included: tables are rounded up, the rest need not be powers of
// two) makes a segment that opens, and one past the limit is refused by the configuration.
TEST_CASE("capacity limits of the segment are the configuration's; odd configured values work",
          "[shm]") {
  const p35::ProgramInfo info{"p35-test", "Capacity limits."};
  const auto parse = [&](const p35::Environment& env) {
    const char* argv[] = {"p35-test", nullptr};
    return p35::parse_config(1, argv, info, env).config;
  };
  struct Limit {
    const char* variable;
    long long min, max;
  };
  const Limit limits[] = {{"P35_RING_SLOTS", 64, 4096},
                          {"P35_LATE_SLOTS", 1, 256},
                          {"P35_REASONS_PER_MINUTE", 16, 1048576},
                          {"P35_SYMBOL_REASONS_PER_MINUTE", 16, 1048576},
                          {"P35_UNKNOWN_PER_MINUTE", 4, 65536},
                          {"P35_STRINGS", 64, 4194304},
                          {"P35_ID_LOG", 1024, 16777216}};
  p35::Environment all_max, all_min;
  for (const Limit& l : limits) {
    INFO(l.variable);
    for (const long long v : {l.min, l.max, (l.min + l.max) / 2 + 1}) {
      const auto caps = SegmentSpec::from_config(parse({{l.variable, std::to_string(v)}})).caps;
      CHECK_NOTHROW(p35::check_capacities(caps, "config"));
      CHECK_NOTHROW(p35::compute_layout(caps));
    }
    CHECK_THROWS_AS(parse({{l.variable, std::to_string(l.max + 1)}}), p35::ConfigError);
    all_max[l.variable] = std::to_string(l.max);
    all_min[l.variable] = std::to_string(l.min);
  }
  for (const auto* env : {&all_max, &all_min}) {
    const auto caps = SegmentSpec::from_config(parse(*env)).caps;
    CHECK_NOTHROW(p35::check_capacities(caps, "config"));
    CHECK(p35::compute_layout(caps).slot_bytes % shm::kCacheLine == 0);
  }
  // A configuration of odd values creates a segment that every open accepts.
  const ShmGuard guard;
  SegmentSpec spec = SegmentSpec::from_config(parse({{"P35_RING_SLOTS", "97"},
                                                     {"P35_LATE_SLOTS", "3"},
                                                     {"P35_REASONS_PER_MINUTE", "100"},
                                                     {"P35_SYMBOL_REASONS_PER_MINUTE", "17"},
                                                     {"P35_UNKNOWN_PER_MINUTE", "5"},
                                                     {"P35_STRINGS", "1000"},
                                                     {"P35_ID_LOG", "1500"}}));
  spec.name = guard.name();
  CHECK(spec.caps.reason_cap == 128);
  CHECK(spec.caps.symbol_reason_cap == 32);
  CHECK(spec.caps.unknown_cap == 8);
  bool created = false;
  { const Segment seg = Segment::open_or_create(spec, &created); }
  CHECK(created);
  CHECK_NOTHROW(Segment::open_or_create(spec));
  const Segment ro = Segment::open_readonly(guard.name());
  CHECK(ro.caps().ring_slots == 97);
  CHECK(ro.caps().id_log_cap == 1500);
  // And capacities beyond the limits are never created (readers would refuse them).
  SegmentSpec too_big = small_spec(guard.name() + "-big");
  too_big.caps.string_cap = 4194305;
  CHECK_THROWS_WITH(Segment::open_or_create(too_big),
                    Contains("strings=4194305") && Contains("exceeds the limit 4194304"));
  CHECK(::access(p35::shm_path(too_big.name).c_str(), F_OK) != 0);
}

// --- (3) seqlock across two processes --------------------------------------------------------

// One consistent copy of what the parent checks, or nothing when the seqlock moved.
struct SeqlockRead {
  uint64_t counted_ms, counted_seq, messages, execute, processed, head, reason_sum, symbol_sum;
};

std::optional<SeqlockRead> read_under_seqlock(const Segment& seg, uint32_t slot) {
  auto& ic = seg.ingest();
  auto& s = seg.slot(slot);
  const auto rl = [](const std::atomic<uint64_t>& w) { return w.load(std::memory_order_relaxed); };
  const uint64_t s1 = ic.seqlock.load(std::memory_order_acquire);  // counts after this are whole
  if ((s1 & 1) != 0) return std::nullopt;
  SeqlockRead r{rl(ic.counted_id.ms),
                rl(ic.counted_id.seq),
                rl(s.messages),
                rl(s.decisions[0]),
                rl(ic.totals[shm::kProcessed]),
                rl(ic.id_log_head),
                0,
                0};
  for (uint32_t j = 0; j < seg.caps().reason_cap; ++j) r.reason_sum += rl(seg.reasons(s)[j].count);
  for (uint32_t j = 0; j < seg.caps().symbol_reason_cap; ++j)
    r.symbol_sum += rl(seg.symbol_reasons(s)[j].count);
  std::atomic_thread_fence(std::memory_order_acquire);  // the copies before the re-check
  if (ic.seqlock.load(std::memory_order_relaxed) != s1) return std::nullopt;
  return r;
}

TEST_CASE("a reader in another process only ever sees counts for exactly the IDs up to counted_id",
          "[shm]") {
  constexpr int kBatches = 20000;
  constexpr int kRunMs = 1000;  // and at least this long, so the two processes overlap
  const ShmGuard guard;
  const SegmentSpec spec = small_spec(guard.name());
  const Segment seg = Segment::open_or_create(spec);
  const auto slot = static_cast<uint32_t>(kBaseMinute % spec.caps.ring_slots);

  ForkedChild ingest([&] {
    Segment own = Segment::open_or_create(spec);
    Counter c(own, true);
    c.recover();
    std::mt19937 rng(3);
    const Normalized m = message(kBaseMinute, Decision::Execute, "steady", "BTCUSDT");
    uint64_t k = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kRunMs);
    for (int b = 0; b < kBatches || std::chrono::steady_clock::now() < until; ++b) {
      for (auto n = static_cast<uint32_t>(1 + rng() % 32); n > 0; --n)
        if (c.add(id_of(++k), &m, kBaseMinute) != Counter::Result::Done) return 10;
      c.flush();
      p35::test::ack_everything(own);
      if (b % 4 == 0) sched_yield();  // on a shared core, let the reader in between batches too
    }
    return 0;
  });

  uint64_t consistent = 0, moved = 0, distinct = 0, bad = 0, last = 0;
  std::string first_bad;
  for (uint64_t i = 0;; ++i) {
    if ((i & 1023) == 0 && !ingest.running()) break;
    const auto r = read_under_seqlock(seg, slot);
    if (!r) {
      ++moved;
      continue;
    }
    ++consistent;
    const uint64_t n = r->counted_seq;
    const bool ok = r->messages == n && r->execute == n && r->processed == n && r->head == n &&
                    r->reason_sum == n && r->symbol_sum == n && (n == 0 || r->counted_ms == kIdMs);
    if (!ok && bad++ == 0)
      first_bad = "counted " + std::to_string(n) + " messages " + std::to_string(r->messages) +
                  " execute " + std::to_string(r->execute) + " reasons " +
                  std::to_string(r->reason_sum) + " head " + std::to_string(r->head);
    if (n != last) ++distinct, last = n;
  }
  const auto st = ingest.wait_exit(60000);
  REQUIRE(p35::test::exited_ok(st));
  INFO("consistent reads " << consistent << ", seqlock moved " << moved << ", distinct counted_id "
                           << distinct << "; first bad read: " << first_bad);
  CHECK(bad == 0);
  CHECK(consistent > 1000);
  CHECK(distinct > 100);  // the reads really overlapped the writer
  const auto final_read = read_under_seqlock(seg, slot);
  REQUIRE(final_read);
  CHECK(final_read->messages == final_read->counted_seq);
  CHECK(final_read->counted_seq > static_cast<uint64_t>(kBatches));
}

// --- (4) crashes in the middle of a batch ----------------------------------------------------

using Image = std::vector<uint8_t>;
Image image_of(const Segment& seg) {
  return {seg.base(), seg.base() + seg.size()};
}
void restore(const Segment& seg, const Image& im) {
  std::memcpy(seg.base(), im.data(), im.size());
}

// What a crash leaves: how far apply_journal() (or flush() before it) got.
struct CrashPoint {
  bool published = true;        // journal_count stored
  uint64_t applied = 0;         // journal entries applied
  bool seqlock_odd = true;      // apply began
  bool counted_stored = false;  // counted_id stored
};

// Rebuild the segment as a process killed at `p` would have left it, from the images before and
// after a real flush (the journal region of `post` holds the entries flush() wrote).
void stage_crash(const Segment& seg, const Image& pre, const Image& post, uint64_t n,
                 CrashPoint p) {
  restore(seg, pre);
  const auto& off = seg.off();
  std::memcpy(seg.base() + off.journal, post.data() + off.journal, n * sizeof(shm::JournalEntry));
  auto& ic = seg.ingest();
  const auto at = [&](const auto& field) { return seg.offset_of(&field); };
  std::memcpy(seg.base() + at(ic.journal_id), post.data() + at(ic.journal_id),
              sizeof(shm::IdWords));
  if (!p.published) return;
  ic.journal_count.store(n, std::memory_order_release);
  if (p.seqlock_odd) ic.seqlock.fetch_add(1, std::memory_order_relaxed);
  for (uint64_t i = 0; i < p.applied; ++i) {
    const auto& e = seg.journal()[i];
    const uint64_t target = e.op_offset & ((uint64_t{1} << kOpShift) - 1);
    if ((e.op_offset >> kOpShift) == static_cast<uint64_t>(shm::JournalOp::ClearSlot))
      std::memset(static_cast<void*>(&seg.slot(static_cast<uint32_t>(target))), 0, off.slot_bytes);
    else
      seg.at<std::atomic<uint64_t>>(target).store(e.value, std::memory_order_relaxed);
  }
  if (p.counted_stored)
    std::memcpy(seg.base() + at(ic.counted_id), post.data() + at(ic.counted_id),
                sizeof(shm::IdWords));
}

// The counting state of the segment equals that of `want`, and nothing is left half-done.
void check_recovered(const Segment& seg, const Image& want) {
  const auto& off = seg.off();
  const auto& ic = seg.ingest();
  const auto same = [&](uint64_t from, uint64_t bytes) {
    return std::memcmp(seg.base() + from, want.data() + from, bytes) == 0;
  };
  const auto at = [&](const auto& field) { return seg.offset_of(&field); };
  CHECK(same(off.slots, uint64_t{seg.slot_count()} * off.slot_bytes));
  CHECK(same(at(ic.counted_id), sizeof ic.counted_id));
  CHECK(same(at(ic.id_log_head), sizeof ic.id_log_head));
  CHECK(same(at(ic.totals), sizeof ic.totals));
  CHECK(same(off.strings, uint64_t{seg.caps().string_cap} * sizeof(shm::StringEntry)));
  CHECK(ic.journal_count.load() == 0);
  CHECK((ic.seqlock.load() & 1) == 0);
  CHECK(ic.counted_pub.ms.load() == ic.counted_id.ms.load());
  CHECK(ic.counted_pub.seq.load() == ic.counted_id.seq.load());
}

// Number of journal entries flush() wrote into a zeroed journal (no entry is all zero).
uint64_t journal_length(const Segment& seg) {
  uint64_t n = 0;
  while (n < seg.caps().journal_cap && seg.journal()[n].op_offset != 0) ++n;
  return n;
}

// Stages a batch with `stage`, flushes it, then replays a crash at every step of its journal
// and checks that the restarted ingest has the whole batch (or none, if unpublished), and can
// go on counting.
template <typename Stage>
void crash_at_every_step(Segment& seg, Stage stage) {
  Image pre, post;
  uint64_t n = 0;
  {
    Counter c(seg, true);
    c.recover();
    stage(c);
    std::memset(seg.journal(), 0, seg.caps().journal_cap * sizeof(shm::JournalEntry));
    pre = image_of(seg);
    c.flush();
    post = image_of(seg);
    n = journal_length(seg);
  }
  REQUIRE(n > 0);
  std::vector<CrashPoint> points{{false, 0, false, false}, {true, 0, false, false}};
  for (uint64_t a = 0; a <= n; ++a) points.push_back({true, a, true, false});
  points.push_back({true, n, true, true});   // counted_id stored, seqlock still odd
  points.push_back({true, n, false, true});  // seqlock even again, journal not yet cleared
  for (const auto& p : points) {
    INFO("journal of " << n << " entries; crash with published=" << p.published << " applied="
                       << p.applied << " odd=" << p.seqlock_odd << " counted=" << p.counted_stored);
    stage_crash(seg, pre, post, n, p);
    Counter restarted(seg, true);
    restarted.recover();
    check_recovered(seg, p.published ? post : pre);
    // The restarted ingest goes on from counted_id: one more message counts once.
    const StreamId next{restarted.counted_id().ms, restarted.counted_id().seq + 1};
    const Normalized m = message(kBaseMinute, Decision::Skip, "after-restart");
    const auto messages = [&] {
      const auto slot = p35::test::find_minute(seg, kBaseMinute);
      return slot < 0 ? 0 : p35::test::read_slot(seg, static_cast<uint32_t>(slot)).messages;
    };
    const uint64_t before = messages();
    REQUIRE(restarted.add(next, &m, kBaseMinute + 3) == Counter::Result::Done);
    restarted.flush();
    CHECK(messages() == before + 1);
    CHECK(seg.ingest().counted_id.seq.load() == next.seq);
  }
  restore(seg, post);  // the batch happened; the next one starts from here
}

TEST_CASE("a batch killed at any step of its journal is replayed whole, or absent if unpublished",
          "[shm]") {
  const ShmGuard guard;
  SegmentSpec spec = small_spec(guard.name());
  Segment seg = Segment::open_or_create(spec);
  uint64_t k = 0;
  Model model;

  SECTION("a batch over three minutes with every kind of table entry") {
    crash_at_every_step(seg, [&](Counter& c) {
      for (int i = 0; i < 400; ++i) {
        const Normalized m = crash_message(++k);
        REQUIRE(c.add(id_of(k), &m, kBaseMinute + 3) == Counter::Result::Done);
      }
    });
    model.extend_to(k);
    for (const auto& [minute, want] : model.minutes) {
      const auto slot = p35::test::find_minute(seg, minute);
      REQUIRE(slot >= 0);
      CHECK(p35::test::read_slot(seg, static_cast<uint32_t>(slot)) == want);
    }
  }
  SECTION("a batch that recycles a slot, frees and interns strings, and uses the late lane") {
    {
      Counter c(seg, true);
      c.recover();
      for (int i = 0; i < 12; ++i) {
        const Normalized m =
            message(kBaseMinute + 10, Decision::Blocked, "old-" + std::to_string(i));
        REQUIRE(c.add(id_of(++k), &m, kBaseMinute + 10) == Counter::Result::Done);
      }
      c.flush();
    }
    p35::test::commit_all_slots(seg);  // rollup committed minute +10: its slot may be recycled
    crash_at_every_step(seg, [&](Counter& c) {
      for (int i = 0; i < 12; ++i) {
        const Normalized m = message(kBaseMinute + 74, Decision::Error, "new-" + std::to_string(i));
        REQUIRE(c.add(id_of(++k), &m, kBaseMinute + 74) == Counter::Result::Done);
        const Normalized late = message(kBaseMinute + 10, Decision::Skip, "late", "ETHUSDT");
        REQUIRE(c.add(id_of(++k), &late, kBaseMinute + 74) == Counter::Result::Done);
      }
    });
    const auto ring_slot = p35::test::find_minute(seg, kBaseMinute + 74);
    const auto late_slot = p35::test::find_minute(seg, kBaseMinute + 10);
    REQUIRE(ring_slot == (kBaseMinute + 74) % 64);
    REQUIRE(late_slot >= 64);
    const auto recycled = p35::test::read_slot(seg, static_cast<uint32_t>(ring_slot));
    CHECK(recycled.reasons.size() == 12);
    CHECK(recycled.decisions[static_cast<size_t>(Decision::Error)] == 12);
    CHECK(p35::test::read_slot(seg, static_cast<uint32_t>(late_slot)).reasons.at("late") == 12);
  }
  SECTION("a batch whose ID log entries wrap around the end of the log") {
    {
      Counter c(seg, true);
      c.recover();
      for (int i = 0; i < 900; ++i) {
        const Normalized m = crash_message(++k);
        REQUIRE(c.add(id_of(k), &m, kBaseMinute + 3) == Counter::Result::Done);
      }
      c.flush();
      p35::test::ack_everything(seg);
    }
    crash_at_every_step(seg, [&](Counter& c) {
      for (int i = 0; i < 300; ++i) {
        const Normalized m = crash_message(++k);
        REQUIRE(c.add(id_of(k), &m, kBaseMinute + 3) == Counter::Result::Done);
      }
    });
    CHECK(seg.ingest().id_log_head.load() == 1200);
  }
}

// A writer killed between publish_id()'s first and last store leaves the lock odd; whoever
// publishes next must leave it even again, or every reader fails to read it for ever.
TEST_CASE("publish_id after a writer died inside publish_id leaves a readable (even) SeqId",
          "[shm]") {
  shm::SeqId id{};
  p35::publish_id(id, {5, 1});
  REQUIRE((id.lock.load() & 1) == 0);
  CHECK(p35::try_read_id(id) == StreamId{5, 1});
  id.lock.fetch_add(1);  // killed after `lock = v + 1`, before `lock = v + 2`
  id.ms.store(6);
  CHECK_FALSE(p35::try_read_id(id, 3));  // bounded: unknown, not a spin
  p35::publish_id(id, {7, 2});  // the restarted writer republishes
  INFO("lock " << id.lock.load() << " (odd: nobody can read it)");
  CHECK((id.lock.load() & 1) == 0);
  CHECK(p35::try_read_id(id) == StreamId{7, 2});
}

TEST_CASE("ingest restarted after dying inside publish_id(counted_pub) republishes it readable",
          "[shm]") {
  const ShmGuard guard;
  Segment seg = Segment::open_or_create(small_spec(guard.name()));
  {
    Counter c(seg, true);
    c.recover();
    const Normalized m = crash_message(1);
    REQUIRE(c.add(id_of(1), &m, kBaseMinute) == Counter::Result::Done);
    c.flush();
  }
  auto& pub = seg.ingest().counted_pub;
  pub.lock.fetch_add(1);  // killed inside publish_id at the end of apply_journal
  Counter restarted(seg, true);
  restarted.recover();
  INFO("counted_pub.lock " << pub.lock.load() << " (odd: nobody reads it until ingest restarts)");
  CHECK((pub.lock.load() & 1) == 0);
  CHECK(pub.seq.load() == 1);
}

// The ingest child of the SIGKILL test: counts crash_message(k) from where the segment says it
// stopped, in random batches, for ever.
int ingest_until_killed(const SegmentSpec& spec, uint32_t seed) {
  Segment seg = Segment::open_or_create(spec);
  Counter c(seg, true);
  c.recover();
  std::mt19937 rng(seed);
  uint64_t k = c.counted_id().seq;
  for (;;) {
    for (auto n = static_cast<uint32_t>(1 + rng() % 400); n > 0; --n) {
      const Normalized m = crash_message(++k);
      if (c.add(id_of(k), &m, kBaseMinute + 3) != Counter::Result::Done) return 10;
      if (c.should_flush()) c.flush();
    }
    c.flush();
    p35::test::ack_everything(seg);
  }
}

// After a restart: whole batches only, exactly crash_message(1..counted_id).
void check_against_model(const Segment& seg, Model& model, uint64_t duplicates) {
  const auto& ic = seg.ingest();
  const uint64_t counted = ic.counted_id.seq.load();
  REQUIRE(counted >= model.k);  // counted_id never goes back
  model.extend_to(counted);
  CHECK(ic.journal_count.load() == 0);
  CHECK((ic.seqlock.load() & 1) == 0);
  CHECK(ic.totals[shm::kProcessed].load() == counted);
  CHECK(ic.id_log_head.load() == counted + duplicates);
  for (const auto& [minute, want] : model.minutes) {
    const auto slot = p35::test::find_minute(seg, minute);
    REQUIRE(slot >= 0);
    CHECK(p35::test::read_slot(seg, static_cast<uint32_t>(slot)) == want);
  }
}

TEST_CASE("ingest SIGKILLed at random moments hundreds of times counts every message exactly once",
          "[shm][chaos]") {
  constexpr int kKills = 300;
  const ShmGuard guard;
  const SegmentSpec spec = small_spec(guard.name());
  Segment seg = Segment::open_or_create(spec);
  auto& ic = seg.ingest();
  Model model;
  uint64_t duplicates = 0;
  int odd_pub = 0, published_journal = 0, mid_apply = 0;
  std::mt19937 rng(35);
  for (int kill = 0; kill < kKills; ++kill) {
    INFO("kill " << kill);
    const uint64_t before = ic.counted_id.seq.load();
    ForkedChild ingest([&] { return ingest_until_killed(spec, static_cast<uint32_t>(kill)); });
    // Let it publish at least one batch of its own, then kill it at a random moment.
    REQUIRE(p35::test::poll_until(
        [&] { return ic.counted_id.seq.load() > before || !ingest.running(); }, 20000));
    p35::test::busy_wait_us(static_cast<int64_t>(rng() % 3000));
    const int st = ingest.kill_and_reap();
    INFO("ingest ended with " << p35::test::describe_status(st));
    REQUIRE((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL));
    // The restarted ingest: recover, check, count on (with the PEL re-read of a few old IDs).
    if (ic.journal_count.load() != 0) ++published_journal;
    if ((ic.seqlock.load() & 1) != 0) ++mid_apply;
    Counter c(seg, true);
    c.recover();
    if ((ic.counted_pub.lock.load() & 1) != 0) ++odd_pub;
    check_against_model(seg, model, duplicates);
    uint64_t k = c.counted_id().seq;
    for (uint64_t old = k > 5 ? k - 5 : 1; old <= k; ++old, ++duplicates)
      REQUIRE(c.add(id_of(old), nullptr, kBaseMinute + 3) == Counter::Result::Done);
    for (int i = 0; i < 20; ++i) {
      const Normalized m = crash_message(++k);
      REQUIRE(c.add(id_of(k), &m, kBaseMinute + 3) == Counter::Result::Done);
    }
    c.flush();
    p35::test::ack_everything(seg);
    check_against_model(seg, model, duplicates);
  }
  INFO("restarts that found a published journal: " << published_journal
                                                   << ", a batch half applied: " << mid_apply
                                                   << ", counted_pub odd: " << odd_pub);
  CHECK(odd_pub == 0);
  CHECK(model.k > static_cast<uint64_t>(kKills) * 20);
}

// --- (5) ID log ------------------------------------------------------------------------------

StreamId log_id(uint64_t k) {
  return {kIdMs + k / 3, k % 3};
}

TEST_CASE(
    "the ID log wraps hundreds of times between ingest and ackd processes in order, "
    "waiting when full",
    "[shm]") {
  constexpr uint64_t kIds = 300000;
  const ShmGuard guard;
  const SegmentSpec spec = small_spec(guard.name());
  const uint64_t cap = spec.caps.id_log_cap;
  Segment seg = Segment::open_or_create(spec);
  auto& ic = seg.ingest();

  ForkedChild ingest([&] {
    Segment own = Segment::open_or_create(spec);
    auto& bell = own.ingest().ingest_bell;
    Counter c(own, true);
    c.recover();
    std::mt19937 rng(5);
    const Normalized m = message(kBaseMinute, Decision::Execute, "ok");
    uint64_t waits = 0;
    for (uint64_t k = 1; k <= kIds;) {
      for (auto n = static_cast<uint32_t>(1 + rng() % 3000);
           n > 0 && k <= kIds;) {                                    // batches larger than the log
        const uint32_t seen = bell.load(std::memory_order_acquire);  // before testing for space
        if (c.add(log_id(k), k % 7 == 0 ? nullptr : &m, kBaseMinute) == Counter::Result::Done) {
          ++k, --n;
          continue;
        }
        if (std::string_view(c.last_wait_reason()) != "ID log full") return 11;
        ++waits;
        c.flush();  // publish what is staged so ackd can ack it and free space
        p35::bell_ring(own.ingest().ackd_bell);  // as a commit would: the fake ackd waits on it
        p35::bell_wait(bell, seen, 100);
      }
      c.flush();
      p35::bell_ring(own.ingest().ackd_bell);
    }
    own.stage(shm::StageId::Ingest).waits.store(waits, std::memory_order_release);
    return 0;
  });

  // The fake ackd: consumes [tail, head) in random chunks, checks order, frees the space.
  std::mt19937 rng(9);
  uint64_t tail = 0, next = 1, wrong = 0, overrun = 0;
  std::string first_wrong;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (next <= kIds && std::chrono::steady_clock::now() < deadline) {
    const uint32_t seen = ic.ackd_bell.load(std::memory_order_acquire);
    const uint64_t head =
        ic.id_log_head.load(std::memory_order_acquire);  // entries below are whole
    if (head - tail > cap) ++overrun;
    if (head == tail) {
      p35::bell_wait(ic.ackd_bell, seen, 100);
      continue;
    }
    const uint64_t upto = std::min(head, tail + 1 + rng() % 700);
    for (; tail < upto; ++tail, ++next) {
      const auto& e = seg.id_log()[tail % cap];
      const StreamId got{e.ms.load(std::memory_order_relaxed),
                         e.seq.load(std::memory_order_relaxed)};
      if (got != log_id(next) && wrong++ == 0)
        first_wrong =
            "entry " + std::to_string(tail) + ": got " + got.str() + " want " + log_id(next).str();
    }
    seg.ackd().id_log_tail.store(tail, std::memory_order_release);  // entries below are free
    p35::bell_ring(ic.ingest_bell);
  }
  const auto st = ingest.wait_exit(30000);
  INFO("ingest: " << (st ? p35::test::describe_status(*st) : "still running"));
  REQUIRE(p35::test::exited_ok(st));
  INFO("first out-of-order entry: " << first_wrong);
  CHECK(next == kIds + 1);
  CHECK(wrong == 0);
  CHECK(overrun == 0);
  CHECK(ic.id_log_head.load() == kIds);
  CHECK(kIds / cap >= 250);  // wraps
  CHECK(seg.stage(shm::StageId::Ingest).waits.load() > 0);
  CHECK(ic.totals[shm::kProcessed].load() + ic.totals[shm::kTrimmed].load() == kIds);
  CHECK(ic.totals[shm::kTrimmed].load() == kIds / 7);
}

// --- (6) string table ------------------------------------------------------------------------

SegmentSpec string_spec(const std::string& name) {
  SegmentSpec s = small_spec(name);
  s.caps.ring_slots = 8;
  s.caps.late_slots = 1;
  s.caps.reason_cap = 16;
  s.caps.symbol_reason_cap = 16;
  s.caps.unknown_cap = 4;
  s.caps.string_cap = 64;
  return s;
}

TEST_CASE("strings of recycled minutes are reclaimed: 7,000 distinct reasons through 64 entries",
          "[shm]") {
  constexpr int kMinutes = 1000;
  constexpr int kReasons = 7;  // 8 live minutes x 7 + 4 symbols = 60, +4 new in a batch = 64
  const ShmGuard guard;
  Segment seg = Segment::open_or_create(string_spec(guard.name()));
  auto& ic = seg.ingest();
  Counter c(seg, true);
  c.recover();
  uint64_t k = 0, string_overflow_minutes = 0, wrong_minutes = 0;
  bool waited_for_commit = false;
  std::string first_wrong;
  for (int i = 0; i < kMinutes; ++i) {
    const int64_t minute = kBaseMinute + i;
    const int64_t now = minute + 100;  // every older minute is past every window
    if (i == 500) {
      // Rollup has not committed the minute this slot holds: ingest must wait, not recycle.
      auto& meta = seg.slot_meta()[static_cast<uint32_t>(minute % 8)];
      const uint64_t tag = meta.committed_tag.load();
      meta.committed_tag.store(tag - 1);
      const Normalized m = message(minute, Decision::Blocked, "m" + std::to_string(i) + "-r0");
      waited_for_commit = c.add(id_of(k + 1), &m, now) == Counter::Result::NeedSpace &&
                          std::string_view(c.last_wait_reason()) == "ring slot not yet committed";
      meta.committed_tag.store(tag);
    }
    SlotCounts want;
    for (int j = 0; j < kReasons; ++j) {
      for (int r = 0; r <= j; ++r) {
        const Normalized m =
            message(minute, Decision::Blocked, "m" + std::to_string(i) + "-r" + std::to_string(j),
                    "SYM" + std::to_string(i % 4));
        REQUIRE(c.add(id_of(++k), &m, now) == Counter::Result::Done);
        want.count(m, true);
      }
      if (j == 3) c.flush();  // two batches per minute
    }
    c.flush();
    p35::test::commit_all_slots(seg);
    p35::test::ack_everything(seg);
    if (ic.totals[shm::kOverflowString].load() != 0 && string_overflow_minutes++ == 0)
      first_wrong = "string overflow first in minute " + std::to_string(i);
    const auto slot = p35::test::find_minute(seg, minute);
    const SlotCounts got =
        slot < 0 ? SlotCounts{} : p35::test::read_slot(seg, static_cast<uint32_t>(slot));
    if (!(got == want) && wrong_minutes++ == 0) {
      std::ostringstream os;
      os << "minute " << i << ": got " << got << " want " << want;
      first_wrong += "; " + os.str();
    }
  }
  INFO(first_wrong);
  CHECK(string_overflow_minutes == 0);
  CHECK(wrong_minutes == 0);
  CHECK(waited_for_commit);
  CHECK(ic.totals[shm::kOverflowReason].load() == 0);
  CHECK(ic.totals[shm::kOverflowSymbolReason].load() == 0);
  CHECK(ic.totals[shm::kProcessed].load() == k);
  // A restarted ingest rebuilds the same index from the slots and goes on without overflow.
  Counter restarted(seg, true);
  restarted.recover();
  const Normalized m = message(kBaseMinute + kMinutes, Decision::Skip, "after-restart", "SYM0");
  REQUIRE(restarted.add(id_of(++k), &m, kBaseMinute + kMinutes + 100) == Counter::Result::Done);
  restarted.flush();
  CHECK(ic.totals[shm::kOverflowString].load() == 0);
}

TEST_CASE("more distinct reasons in one minute than strings go to __overflow__, decisions exact",
          "[shm]") {
  const ShmGuard guard;
  SegmentSpec spec = string_spec(guard.name());
  spec.caps.reason_cap = 128;  // room in the table: the string table is what runs out
  Segment seg = Segment::open_or_create(spec);
  auto& ic = seg.ingest();
  Counter c(seg, true);
  c.recover();
  uint64_t k = 0;
  for (int batch = 0; batch < 4; ++batch) {
    for (int i = 0; i < 25; ++i) {
      const Normalized m = message(kBaseMinute, k % 2 == 0 ? Decision::Skip : Decision::Execute,
                                   "burst-" + std::to_string(batch * 25 + i));
      REQUIRE(c.add(id_of(++k), &m, kBaseMinute) == Counter::Result::Done);
    }
    c.flush();
  }
  const auto slot = static_cast<uint32_t>(p35::test::find_minute(seg, kBaseMinute));
  const SlotCounts got = p35::test::read_slot(seg, slot);
  CHECK(got.messages == 100);
  CHECK(got.decisions[static_cast<size_t>(Decision::Skip)] == 50);
  CHECK(got.decisions[static_cast<size_t>(Decision::Execute)] == 50);
  CHECK(got.reasons.size() == 64);
  CHECK(got.overflow_reason == 36);
  CHECK(ic.totals[shm::kOverflowString].load() == 36);
  uint64_t counted_reasons = got.overflow_reason;
  for (const auto& [reason, n] : got.reasons) counted_reasons += n;
  CHECK(counted_reasons == 100);

  // Once rollup committed that minute and it left every window, its strings come back: the
  // batch that recycles the slot frees them, and the batches after it reuse them.
  p35::test::commit_all_slots(seg);
  // (A string the recycled minute holds can be reused at once; fresh ones wait for its batch.)
  const Normalized first = message(kBaseMinute + 8, Decision::Error, "burst-0");
  REQUIRE(c.add(id_of(++k), &first, kBaseMinute + 100) == Counter::Result::Done);
  c.flush();
  for (int i = 0; i < 60; ++i) {
    const Normalized m = message(kBaseMinute + 8, Decision::Error, "later-" + std::to_string(i));
    REQUIRE(c.add(id_of(++k), &m, kBaseMinute + 100) == Counter::Result::Done);
  }
  c.flush();
  const SlotCounts later = p35::test::read_slot(seg, slot);
  CHECK(later.reasons.size() == 61);
  CHECK(later.reasons.at("burst-0") == 1);
  CHECK(later.messages == 61);
  CHECK(later.overflow_reason == 0);
  CHECK(ic.totals[shm::kOverflowString].load() == 36);
}

// --- (7) layout ------------------------------------------------------------------------------

TEST_CASE("section offsets are page-aligned, in order, non-overlapping and end at the file size",
          "[shm]") {
  std::vector<shm::Capacities> all{small_spec("x").caps, string_spec("x").caps,
                                   SegmentSpec::from_config(p35::Config{}).caps};
  p35::Config big;
  big.ring_slots = 4096;
  big.late_slots = 256;
  big.reasons_per_minute = 100;  // rounded up to a power of two
  big.symbol_reasons_per_minute = 16;
  big.unknown_per_minute = 5;
  big.strings = 1000;
  big.id_log = 1024;
  all.push_back(SegmentSpec::from_config(big).caps);
  for (const auto& caps : all) {
    const auto o = p35::compute_layout(caps);
    const uint64_t slots = uint64_t{caps.ring_slots} + caps.late_slots;
    INFO("ring " << caps.ring_slots << " reasons " << caps.reason_cap << " strings "
                 << caps.string_cap);
    const uint64_t entries = uint64_t{caps.reason_cap} + caps.symbol_reason_cap + caps.unknown_cap;
    const uint64_t chunks = (entries + shm::kChunkEntries - 1) / shm::kChunkEntries;
    CHECK(o.slot_bytes == sizeof(shm::SlotHeader) + sizeof(shm::TableEntry) * entries +
                              (8 * chunks + shm::kCacheLine - 1) / shm::kCacheLine * shm::kCacheLine);
    CHECK(o.slot_bytes % shm::kCacheLine == 0);  // every SlotHeader keeps its alignas(64)
    const std::vector<std::pair<uint64_t, uint64_t>> sections{
        {0, sizeof(shm::SegmentHeader)},
        {o.stages, sizeof(shm::StageBlock) * shm::kStageCount},
        {o.ingest, sizeof(shm::IngestControl)},
        {o.rollup, sizeof(shm::RollupControl)},
        {o.ackd, sizeof(shm::AckdControl)},
        {o.journal, sizeof(shm::JournalEntry) * caps.journal_cap},
        {o.id_log, sizeof(shm::IdLogEntry) * caps.id_log_cap},
        {o.strings, sizeof(shm::StringEntry) * caps.string_cap},
        {o.slots, o.slot_bytes * slots},
        {o.shadows, o.slot_bytes * slots * 2},
        {o.slot_meta, sizeof(shm::SlotMeta) * slots},
        {o.pending_slots, sizeof(shm::PendingSlot) * slots},
    };
    for (size_t i = 0; i < sections.size(); ++i) {
      INFO("section " << i);
      CHECK(sections[i].first % 4096 == 0);
      const uint64_t end = sections[i].first + sections[i].second;
      CHECK(end <= (i + 1 < sections.size() ? sections[i + 1].first : o.end));
      if (i + 1 < sections.size()) CHECK(sections[i + 1].first - end < 4096);  // no waste
    }
    CHECK(o.end % 4096 == 0);
    CHECK(o.end - (sections.back().first + sections.back().second) < 4096);
  }
  // A created segment: file size == header size == layout end, header offsets == layout.
  const ShmGuard guard;
  const SegmentSpec spec = small_spec(guard.name());
  const Segment seg = Segment::open_or_create(spec);
  struct stat st {};
  REQUIRE(::stat(guard.path().c_str(), &st) == 0);
  const auto o = p35::compute_layout(spec.caps);
  CHECK(static_cast<uint64_t>(st.st_size) == o.end);
  CHECK(seg.header().segment_size == o.end);
  CHECK(seg.size() == o.end);
  CHECK(std::memcmp(&seg.off(), &o, sizeof o) == 0);
  CHECK(seg.header().header_size == sizeof(shm::SegmentHeader));
  const auto last = seg.slot_count() - 1;
  CHECK(seg.offset_of(&seg.slot(last)) + o.slot_bytes <= o.shadows);
  CHECK(seg.offset_of(&seg.shadow(1, last)) + o.slot_bytes <= o.slot_meta);
  // Tables, then the chunk versions (padded to 64 bytes) end the slot.
  CHECK(reinterpret_cast<void*>(seg.unknowns(seg.slot(0)) + spec.caps.unknown_cap) ==
        static_cast<void*>(seg.chunk_versions(seg.slot(0))));
  CHECK(seg.chunk_count() == (spec.caps.reason_cap + spec.caps.symbol_reason_cap +
                              spec.caps.unknown_cap + shm::kChunkEntries - 1) / shm::kChunkEntries);
  CHECK(seg.offset_of(seg.chunk_versions(seg.slot(0)) + (seg.chunk_count() + 7) / 8 * 8) ==
        seg.offset_of(&seg.slot(0)) + o.slot_bytes);
  for (uint32_t i = 0; i < seg.slot_count(); ++i) {
    CHECK(seg.slot(i).minute.load() == shm::kEmptyMinute);
    CHECK(seg.shadow(0, i).minute.load() == shm::kEmptyMinute);
    CHECK(seg.shadow(1, i).minute.load() == shm::kEmptyMinute);
  }
}

}  // namespace

TEST_CASE("the default segment is 44,224,512 bytes, as docs/design.md says: a number, not recomputed",
          "[shm][layout]") {
  // Pinned by hand from the documented defaults: a change of any block's size, of a default
  // capacity or of the section arithmetic shows here, and docs/design.md and the slice's
  // MemoryMax (docs/operations.md) are then revisited with it.
  const SegmentSpec spec = SegmentSpec::from_config(p35::Config{});
  CHECK(spec.caps.ring_slots == 128);
  CHECK(spec.caps.late_slots == 8);
  CHECK(spec.caps.reason_cap == 1024);
  CHECK(spec.caps.symbol_reason_cap == 4096);
  CHECK(spec.caps.unknown_cap == 64);
  CHECK(spec.caps.string_cap == 32768);
  CHECK(spec.caps.id_log_cap == 65536);
  CHECK(spec.caps.journal_cap == 65536);
  const auto o = p35::compute_layout(spec.caps);
  CHECK(o.slot_bytes == 83904);
  CHECK(o.end == 44224512);
}
