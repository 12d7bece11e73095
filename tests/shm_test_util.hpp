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
#include <cstdio>
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

}  // namespace p35::test
