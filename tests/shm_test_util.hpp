// Helpers for the shared-memory tests: throwaway segments, forked children and slot readers.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "rules.hpp"
#include "shm.hpp"

namespace p35::test {

// "p35test-<pid>-<n>": unique per test process and call, so parallel test runs never collide.
inline std::string unique_shm_name() {
  static int next = 0;
  return "p35test-" + std::to_string(getpid()) + "-" + std::to_string(next++);
}

// Names in /dev/shm that a creator of `name` left behind ("<name>.init.<pid>").
inline std::vector<std::string> init_leftovers(const std::string& name) {
  std::vector<std::string> found;
  const std::string prefix = name + ".init.";
  if (DIR* d = ::opendir("/dev/shm")) {
    while (const dirent* e = ::readdir(d))
      if (std::string_view(e->d_name).substr(0, prefix.size()) == prefix)
        found.emplace_back(e->d_name);
    ::closedir(d);
  }
  return found;
}

// Removes /dev/shm/<name> (and any creator leftovers) when the test ends, however it ends.
class ShmGuard {
 public:
  explicit ShmGuard(std::string name = unique_shm_name()) : name_(std::move(name)) { remove(); }
  ~ShmGuard() { remove(); }
  ShmGuard(const ShmGuard&) = delete;
  ShmGuard& operator=(const ShmGuard&) = delete;
  const std::string& name() const { return name_; }
  std::string path() const { return shm_path(name_); }
  void remove() const {
    ::unlink(path().c_str());
    for (const auto& f : init_leftovers(name_)) ::unlink(("/dev/shm/" + f).c_str());
  }

 private:
  std::string name_;
};

// Small capacities so rings wrap quickly; the journal is kept small so should_flush() matters.
inline SegmentSpec small_spec(const std::string& name) {
  SegmentSpec s;
  s.name = name;
  s.stream = "test:stream";
  s.group = "test-group";
  s.consumer = "test-consumer";
  s.key_prefix = "test:p35:";
  s.symbol_breakdown = true;
  s.caps.ring_slots = 64;
  s.caps.late_slots = 2;
  s.caps.reason_cap = 16;
  s.caps.symbol_reason_cap = 64;
  s.caps.unknown_cap = 16;
  s.caps.string_cap = 64;
  s.caps.id_log_cap = 1024;
  s.caps.journal_cap = 4096;
  return s;
}

// A forked copy of this process running `body`; its return value is the exit code. The child
// never returns into Catch (it _exits) and dies with the test process. Destruction kills and
// reaps a child still running.
class ForkedChild {
 public:
  explicit ForkedChild(const std::function<int()>& body) {
    std::fflush(nullptr);  // nothing buffered is written twice
    const pid_t parent = getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw std::system_error(errno, std::generic_category(), "fork");
    if (pid_ != 0) return;
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) ::_exit(120);
    int code = 121;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", getpid(), e.what());
      code = 122;
    } catch (...) {
      code = 123;
    }
    std::fflush(stderr);
    ::_exit(code);
  }
  ~ForkedChild() {
    if (pid_ > 0 && !status_) kill_and_reap();
  }
  ForkedChild(const ForkedChild&) = delete;
  ForkedChild& operator=(const ForkedChild&) = delete;

  pid_t pid() const { return pid_; }
  bool running() { return !try_reap(false); }

  // The raw wait status once the child has ended within deadline_ms; nullopt if still running.
  std::optional<int> wait_exit(int deadline_ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
    while (!try_reap(false)) {
      if (std::chrono::steady_clock::now() >= until) return std::nullopt;
      ::usleep(1000);  // polling a child's exit: there is nothing to wait on with a deadline
    }
    return status_;
  }
  int kill_and_reap() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      try_reap(true);
    }
    return *status_;
  }

 private:
  bool try_reap(bool block) {
    if (status_) return true;
    int st = 0;
    const pid_t r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
    if (r == pid_) status_ = st;
    return status_.has_value();
  }
  pid_t pid_ = -1;
  std::optional<int> status_;
};

inline std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exit code " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return "signal " + std::to_string(WTERMSIG(st));
  return "status " + std::to_string(st);
}
inline bool exited_ok(const std::optional<int>& st) {
  return st && WIFEXITED(*st) && WEXITSTATUS(*st) == 0;
}

// Everything a slot counts, with string ids resolved: comparable with an expected model.
struct SlotCounts {
  uint64_t messages = 0;
  std::array<uint64_t, shm::kDecisionSlots> decisions{};
  std::map<std::string, uint64_t> reasons;
  std::map<std::pair<std::string, std::string>, uint64_t> symbol_reasons;
  std::map<std::pair<bool, std::string>, uint64_t> unknowns;  // (from decision field, member)
  uint64_t overflow_reason = 0, overflow_symbol_reason = 0, overflow_unknown = 0;

  friend bool operator==(const SlotCounts&, const SlotCounts&) = default;

  void count(const Normalized& m, bool symbol_breakdown) {
    ++messages;
    if (m.decision == Decision::Unknown)
      ++unknowns[{m.unknown_from_decision_field, m.unknown_value}];
    else
      ++decisions[static_cast<size_t>(m.decision)];
    ++reasons[m.reason];
    if (symbol_breakdown && !m.symbol.empty()) ++symbol_reasons[{m.symbol, m.reason}];
  }
};

inline std::ostream& operator<<(std::ostream& os, const SlotCounts& c) {
  os << "{messages " << c.messages << ", decisions";
  for (auto d : c.decisions) os << ' ' << d;
  os << ", reasons";
  for (const auto& [k, v] : c.reasons) os << " '" << k << "'=" << v;
  os << ", symbol_reasons";
  for (const auto& [k, v] : c.symbol_reasons) os << " '" << k.first << ":" << k.second << "'=" << v;
  os << ", unknowns";
  for (const auto& [k, v] : c.unknowns)
    os << ' ' << (k.first ? "field:" : "executed=") << k.second << '=' << v;
  return os << ", overflow " << c.overflow_reason << '/' << c.overflow_symbol_reason << '/'
            << c.overflow_unknown << '}';
}

// The slot's counts as the segment holds them (call where ingest is quiescent or is us).
inline SlotCounts read_slot(const Segment& seg, uint32_t i) {
  auto& s = seg.slot(i);
  const auto ld = [](const std::atomic<uint64_t>& w) { return w.load(std::memory_order_acquire); };
  const auto str = [&](uint64_t id1) {
    return std::string(seg.string_at(static_cast<uint32_t>(id1 - 1)));
  };
  SlotCounts c;
  c.messages = ld(s.messages);
  for (uint32_t d = 0; d < shm::kDecisionSlots; ++d) c.decisions[d] = ld(s.decisions[d]);
  for (uint32_t j = 0; j < seg.caps().reason_cap; ++j)
    if (const uint64_t k = ld(seg.reasons(s)[j].key))
      c.reasons[str(k)] += ld(seg.reasons(s)[j].count);
  for (uint32_t j = 0; j < seg.caps().symbol_reason_cap; ++j)
    if (const uint64_t k = ld(seg.symbol_reasons(s)[j].key))
      c.symbol_reasons[{str(k >> 32), str(k & 0xffffffffULL)}] +=
          ld(seg.symbol_reasons(s)[j].count);
  for (uint32_t j = 0; j < seg.caps().unknown_cap; ++j)
    if (const uint64_t k = ld(seg.unknowns(s)[j].key))
      c.unknowns[{(k >> 32) != 0, str(k & 0xffffffffULL)}] += ld(seg.unknowns(s)[j].count);
  c.overflow_reason = ld(s.overflow_reason);
  c.overflow_symbol_reason = ld(s.overflow_symbol_reason);
  c.overflow_unknown = ld(s.overflow_unknown);
  return c;
}

// The live slot holding `minute`, or -1.
inline int64_t find_minute(const Segment& seg, int64_t minute) {
  for (uint32_t i = 0; i < seg.slot_count(); ++i)
    if (seg.slot(i).minute.load(std::memory_order_acquire) == minute) return i;
  return -1;
}

// What rollup does once Redis confirmed a commit: every live slot is committed as it stands, so
// ingest may recycle the old ones.
inline void commit_all_slots(const Segment& seg) {
  for (uint32_t i = 0; i < seg.slot_count(); ++i) {
    auto& s = seg.slot(i);
    if (s.minute.load(std::memory_order_acquire) == shm::kEmptyMinute) continue;
    const uint64_t tag = (s.gen.load(std::memory_order_acquire) << 32) |
                         (s.version.load(std::memory_order_acquire) & 0xffffffffULL);
    seg.slot_meta()[i].committed_tag.store(tag, std::memory_order_release);
  }
}

// Fake ackd: everything ingest published is acked at once.
inline void ack_everything(const Segment& seg) {
  const uint64_t head = seg.ingest().id_log_head.load(std::memory_order_acquire);
  seg.ackd().id_log_tail.store(head, std::memory_order_release);
}

// --- files, time -------------------------------------------------------------------------

// Spins (yielding) until cond() or the deadline; for conditions another process makes true.
template <typename Cond>
inline bool poll_until(Cond cond, int deadline_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  while (!cond()) {
    if (std::chrono::steady_clock::now() >= until) return cond();
    sched_yield();
  }
  return true;
}

inline void busy_wait_us(int64_t us) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < until) {
  }
}

inline std::vector<char> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline void write_file(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline void patch_file(const std::string& path, off_t offset, const void* bytes, size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + path);
  const ssize_t written = ::pwrite(fd, bytes, n, offset);
  const int err = errno;
  ::close(fd);
  if (written != static_cast<ssize_t>(n))
    throw std::system_error(err, std::generic_category(), "pwrite " + path);
}

inline std::vector<char> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<char> v(n);
  for (auto& c : v) c = static_cast<char>(rng());
  return v;
}

// The inode of the file mapped at `base`, from /proc/self/maps (what this process really mapped,
// not what the path points to now).
inline uint64_t mapped_inode(const void* base) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (std::stoull(line.substr(0, line.find('-')), nullptr, 16) !=
        reinterpret_cast<uintptr_t>(base))
      continue;
    std::istringstream fields(line);
    std::string range, perms, offset, dev;
    uint64_t inode = 0;
    fields >> range >> perms >> offset >> dev >> inode;
    return inode;
  }
  return 0;
}

// --- crafted (hostile) headers, issue 8 --------------------------------------------------------

// The section offsets as compute_layout() gave them before it checked its arithmetic: every sum
// and product modulo 2^64. A hostile header declares these so that its offsets "match".
inline shm::SectionOffsets wrapping_layout(const shm::Capacities& c) {
  shm::SectionOffsets o{};
  const uint64_t slots = uint64_t{c.ring_slots} + c.late_slots;
  const uint64_t entries = uint64_t{c.reason_cap} + c.symbol_reason_cap + c.unknown_cap;
  const uint64_t chunks = (entries + shm::kChunkEntries - 1) / shm::kChunkEntries;
  o.slot_bytes = sizeof(shm::SlotHeader) + sizeof(shm::TableEntry) * entries +
                 (sizeof(uint64_t) * chunks + shm::kCacheLine - 1) / shm::kCacheLine * shm::kCacheLine;
  uint64_t at = sizeof(shm::SegmentHeader);
  const auto section = [&](uint64_t& field, uint64_t bytes) {
    field = at;
    at = (at + bytes + 4095) / 4096 * 4096;
  };
  section(o.stages, sizeof(shm::StageBlock) * shm::kStageCount);
  section(o.ingest, sizeof(shm::IngestControl));
  section(o.rollup, sizeof(shm::RollupControl));
  section(o.ackd, sizeof(shm::AckdControl));
  section(o.journal, sizeof(shm::JournalEntry) * c.journal_cap);
  section(o.id_log, sizeof(shm::IdLogEntry) * c.id_log_cap);
  section(o.strings, sizeof(shm::StringEntry) * c.string_cap);
  section(o.slots, o.slot_bytes * slots);
  section(o.shadows, o.slot_bytes * slots * 2);
  section(o.slot_meta, sizeof(shm::SlotMeta) * slots);
  section(o.pending_slots, sizeof(shm::PendingSlot) * slots);
  o.end = at;
  return o;
}

// A `size`-byte segment file, zero but for its header: magic, version, header size,
// segment_size = size, the fingerprint of `spec`, `caps` and `off`.
inline std::vector<char> crafted_segment(const SegmentSpec& spec, const shm::Capacities& caps,
                                         const shm::SectionOffsets& off, size_t size) {
  std::vector<char> bytes(size, 0);
  const auto put = [&](size_t at, const auto& v) { std::memcpy(bytes.data() + at, &v, sizeof v); };
  put(offsetof(shm::SegmentHeader, magic), shm::kMagic);
  put(offsetof(shm::SegmentHeader, layout_version), shm::kLayoutVersion);
  put(offsetof(shm::SegmentHeader, header_size), uint32_t{sizeof(shm::SegmentHeader)});
  put(offsetof(shm::SegmentHeader, segment_size), uint64_t{size});
  put(offsetof(shm::SegmentHeader, fingerprint), spec.fingerprint());
  put(offsetof(shm::SegmentHeader, caps), caps);
  put(offsetof(shm::SegmentHeader, off), off);
  return bytes;
}

// A hostile header (fuzz/crashes/inspect/ and its variations), and what its refusal must say.
struct CraftedHeader {
  std::string what;
  std::vector<char> file;
  std::vector<std::string> says;
};

// Headers that every open must refuse, before it touches anything past the header. Those with
// the capacities of `spec` carry its fingerprint too, so only the layout checks stand between
// them and open_or_create.
inline std::vector<CraftedHeader> crafted_headers(const SegmentSpec& spec) {
  std::vector<CraftedHeader> all;
  const auto add = [&](std::string what, const shm::Capacities& caps, const shm::SectionOffsets& off,
                       size_t size, std::vector<std::string> says) {
    all.push_back({std::move(what), crafted_segment(spec, caps, off, size), std::move(says)});
  };
  // fuzz crash layout-size-wraps-2to64: the wrapped layout ends at 8192, the file's size
  // (capacities recomputed for layout version 3, whose slots end in chunk versions).
  const shm::Capacities wraps{1U << 31, 1U << 31, 88784833, 0, 0, 3292808209U, 0, 0};
  add("layout-size-wraps-2to64", wraps, wrapping_layout(wraps), 8192,
      {"ring_slots=2147483648", "exceeds the limit 4096", "P35_RING_SLOTS", "rm "});
  // fuzz crash misaligned-slot-odd-capacities: tables of 1 give 368-byte slots.
  const shm::Capacities odd{2, 0, 1, 1, 1, 0, 0, 0};
  add("misaligned-slot-odd-capacities", odd, wrapping_layout(odd), wrapping_layout(odd).end,
      {"reasons_per_minute=1", "below the minimum 16"});
  // One capacity just past its limit (the rest legitimate), in an 8 KiB file.
  struct Past {
    const char* field;
    uint32_t shm::Capacities::*member;
    uint32_t limit;
  };
  for (const Past& p : {Past{"ring_slots", &shm::Capacities::ring_slots, 4096},
                        Past{"late_slots", &shm::Capacities::late_slots, 256},
                        Past{"reasons_per_minute", &shm::Capacities::reason_cap, 1U << 20},
                        Past{"symbol_reasons_per_minute", &shm::Capacities::symbol_reason_cap, 1U << 20},
                        Past{"unknown_per_minute", &shm::Capacities::unknown_cap, 1U << 16},
                        Past{"strings", &shm::Capacities::string_cap, 4194304},
                        Past{"id_log", &shm::Capacities::id_log_cap, 16777216},
                        Past{"journal", &shm::Capacities::journal_cap, 1U << 16}}) {
    for (const uint32_t v : {p.limit * 2, uint32_t{0xffffffff}}) {
      shm::Capacities caps = spec.caps;
      caps.*p.member = v;
      add(std::string(p.field) + " " + std::to_string(v), caps, wrapping_layout(caps), 8192,
          {std::string(p.field) + "=" + std::to_string(v),
           "exceeds the limit " + std::to_string(p.limit)});
    }
  }
  // Every capacity huge: the first one is named.
  const shm::Capacities huge{~0U, ~0U, ~0U, ~0U, ~0U, ~0U, ~0U, ~0U};
  add("all 2^32-1", huge, wrapping_layout(huge), 8192, {"ring_slots=4294967295", "limit 4096"});
  // Table capacities that are not powers of two, or below the creator's minimums, with a layout
  // that is otherwise consistent (file of the size it gives).
  const auto tables = [&](uint32_t r, uint32_t sr, uint32_t u, std::vector<std::string> says) {
    shm::Capacities caps = spec.caps;
    caps.reason_cap = r, caps.symbol_reason_cap = sr, caps.unknown_cap = u;
    add("tables " + std::to_string(r) + "/" + std::to_string(sr) + "/" + std::to_string(u), caps,
        wrapping_layout(caps), wrapping_layout(caps).end, std::move(says));
  };
  tables(24, 64, 16, {"reasons_per_minute=24", "not a power of two"});  // slots still 64-aligned
  tables(17, 64, 16, {"reasons_per_minute=17", "not a power of two"});  // slots misaligned
  tables(16, 48, 16, {"symbol_reasons_per_minute=48", "not a power of two"});
  tables(16, 64, 12, {"unknown_per_minute=12", "not a power of two"});
  tables(16, 64, 2, {"unknown_per_minute=2", "below the minimum 4"});
  tables(0, 64, 16, {"reasons_per_minute=0", "below the minimum 16"});
  {
    shm::Capacities caps = spec.caps;
    caps.ring_slots = 0;
    add("no ring slots", caps, wrapping_layout(caps), wrapping_layout(caps).end,
        {"ring_slots=0", "below the minimum 1"});
  }
  // Legitimate capacities, offsets that are not the layout they give.
  const shm::SectionOffsets good = wrapping_layout(spec.caps);
  const auto moved = [&](const char* what, uint64_t shm::SectionOffsets::*field, uint64_t value,
                         std::vector<std::string> says) {
    shm::SectionOffsets off = good;
    off.*field = value;
    add(what, spec.caps, off, good.end, std::move(says));
  };
  moved("slots past the end", &shm::SectionOffsets::slots, good.end - 4096,
        {"section slots at offset " + std::to_string(good.end - 4096), "does not lie between the header and the end"});
  moved("shadows at 2^64 - 4096", &shm::SectionOffsets::shadows, ~uint64_t{4095},
        {"section shadows", "does not lie between the header and the end"});
  moved("stages inside the header", &shm::SectionOffsets::stages, 0,
        {"section stages at offset 0", "does not lie between the header and the end"});
  moved("strings one page later", &shm::SectionOffsets::strings, good.strings + 4096,
        {"do not match its section offsets", "strings is at " + std::to_string(good.strings + 4096)});
  moved("slot_bytes + 64", &shm::SectionOffsets::slot_bytes, good.slot_bytes + 64,
        {"do not match its section offsets", "slot_bytes=" + std::to_string(good.slot_bytes + 64)});
  moved("end one page short", &shm::SectionOffsets::end, good.end - 4096,
        {"do not match its section offsets", "the header says " + std::to_string(good.end - 4096)});
  {
    std::vector<char> file = crafted_segment(spec, spec.caps, good, good.end);
    const uint32_t header_size = 4095;
    std::memcpy(file.data() + offsetof(shm::SegmentHeader, header_size), &header_size,
                sizeof header_size);
    all.push_back({"header_size 4095", std::move(file), {"header_size=4095"}});
  }
  return all;
}

}  // namespace p35::test
