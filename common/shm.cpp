// Creation (race-free, by link), validation and mapping of the shared-memory segment.
#include "shm.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fmt/format.h>

#include "config.hpp"

namespace p35 {

namespace {

constexpr uint32_t kJournalCap = 1U << 16;  // a batch that needs more is applied in parts
constexpr uint64_t kSectionAlign = 4096;

// What a header may declare (issue 8: a hostile header must never make a reader's arithmetic
// wrap or its accesses leave the mapping). The maxima are the configuration's (common/config.cpp;
// tests/test_shm.cpp checks that the largest configuration passes); table capacities are powers of
// two, as Counter::bump indexes them with `& (cap - 1)`, at least the configuration's minimums,
// which also keeps every Slot a multiple of 64 bytes (SlotHeader is alignas(64)). Counts that
// something divides by (minute % ring_slots, head % id_log_cap) are at least 1.
struct CapLimit {
  const char* field;    // as check_caps() names it
  const char* setting;  // where the value comes from
  uint32_t shm::Capacities::*member;
  uint32_t min, max;
  bool power_of_two;
};
constexpr CapLimit kCapLimits[] = {
    {"ring_slots", "P35_RING_SLOTS", &shm::Capacities::ring_slots, 1, 4096, false},
    {"late_slots", "P35_LATE_SLOTS", &shm::Capacities::late_slots, 0, 256, false},
    {"reasons_per_minute", "P35_REASONS_PER_MINUTE", &shm::Capacities::reason_cap, 16, 1U << 20,
     true},
    {"symbol_reasons_per_minute", "P35_SYMBOL_REASONS_PER_MINUTE",
     &shm::Capacities::symbol_reason_cap, 16, 1U << 20, true},
    {"unknown_per_minute", "P35_UNKNOWN_PER_MINUTE", &shm::Capacities::unknown_cap, 4, 1U << 16,
     true},
    {"strings", "P35_STRINGS", &shm::Capacities::string_cap, 0, 4194304, false},
    {"id_log", "P35_ID_LOG", &shm::Capacities::id_log_cap, 1, 16777216, false},
    {"journal", "fixed by the build", &shm::Capacities::journal_cap, 0, kJournalCap, false},
};

// The first capacity outside kCapLimits, as "<field>=<value> ..." text; empty if none.
std::string capacity_problem(const shm::Capacities& c) {
  for (const CapLimit& l : kCapLimits) {
    const uint32_t v = c.*l.member;
    if (v > l.max)
      return fmt::format("{}={} exceeds the limit {} ({})", l.field, v, l.max, l.setting);
    if (v < l.min)
      return fmt::format("{}={} is below the minimum {} ({})", l.field, v, l.min, l.setting);
    if (l.power_of_two && !std::has_single_bit(v))
      return fmt::format("{}={} is not a power of two (its table is indexed by hash & (capacity "
                         "- 1), and slots must stay 64-byte aligned; {})", l.field, v, l.setting);
  }
  return {};
}

uint32_t pow2(int v) { return std::bit_ceil(static_cast<uint32_t>(v)); }

std::string errno_text() { return std::strerror(errno); }

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string removal_hint(std::string_view name) {
  return fmt::format(
      "stop every P3.5 stage of this consumer, then remove it with `rm {}` and start them again "
      "(counts not yet committed are re-read from the pending list; nothing is lost)",
      shm_path(name));
}

std::string user_text(uid_t uid) {
  passwd pw{};
  passwd* found = nullptr;
  char buf[1024];
  if (::getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != nullptr)
    return fmt::format("uid {} ({})", uid, found->pw_name);
  return fmt::format("uid {}", uid);
}

// The stages trust what they read from the segment and commit it to Redis, so only their own
// user may be able to change it: a file owned by another user, or that others may read or write,
// is refused (p35-shm, which only reads, does not check).
void check_owner_and_mode(const struct stat& st, std::string_view name) {
  const std::string path = shm_path(name);
  const unsigned mode = st.st_mode & 07777;
  if (!S_ISREG(st.st_mode))
    throw ShmError(fmt::format("Segment {} is not a regular file; {}", path, removal_hint(name)));
  if (st.st_uid != ::geteuid())
    throw ShmOwnerError(fmt::format(
        "Segment {} is owned by {} (mode {:04o}), but this process runs as {}: the file's owner "
        "could change counts before they reach Redis, so it is refused. Fix: run every stage as "
        "the user that owns it, or {}",
        path, user_text(st.st_uid), mode, user_text(::geteuid()), removal_hint(name)));
  if ((mode & 077) != 0)
    throw ShmOwnerError(fmt::format(
        "Segment {} has mode {:04o} (owner {}): other users may read or change it, so it is "
        "refused; the stages create it 0600. Fix: `chmod 0600 {}`, or {}",
        path, mode, user_text(st.st_uid), path, removal_hint(name)));
}

// 128 random bits from the kernel (never a clock or pid: clones repeat those).
void fill_instance_token(shm::SegmentHeader& h) {
  size_t got = 0;
  auto* p = reinterpret_cast<uint8_t*>(h.instance_token);
  while (got < sizeof h.instance_token) {
    const ssize_t n = getrandom(p + got, sizeof h.instance_token - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw ShmError(fmt::format("Failed to draw the instance token: {}", std::strerror(errno)));
    got += static_cast<size_t>(n);
  }
}

// Fill a fresh, zeroed segment: header fields, empty slot minutes, then the magic with release.
void initialise(uint8_t* base, const SegmentSpec& spec, const shm::SectionOffsets& off) {
  auto& h = *reinterpret_cast<shm::SegmentHeader*>(base);
  h.layout_version = shm::kLayoutVersion;
  h.header_size = sizeof(shm::SegmentHeader);
  h.segment_size = off.end;
  h.fingerprint = spec.fingerprint();
  h.created_unix_ms = now_unix_ms();
  h.creator_pid = static_cast<uint32_t>(getpid());
  h.symbol_breakdown = spec.symbol_breakdown ? 1 : 0;
  h.caps = spec.caps;
  h.off = off;
  const auto text = spec.fingerprint_text();
  std::snprintf(h.fingerprint_text, sizeof h.fingerprint_text, "%s", text.c_str());
  fill_instance_token(h);
  const uint32_t slots = spec.caps.ring_slots + spec.caps.late_slots;
  for (uint32_t side = 0; side < 3; ++side) {  // live slots, then both shadow sides
    for (uint32_t i = 0; i < slots; ++i) {
      const uint64_t section = side == 0 ? off.slots : off.shadows + (side - 1) * slots * off.slot_bytes;
      auto* s = reinterpret_cast<shm::SlotHeader*>(base + section + i * off.slot_bytes);
      s->minute.store(shm::kEmptyMinute, std::memory_order_relaxed);
    }
  }
  // Publishes everything above to whoever maps the file after it is linked into place.
  h.magic.store(shm::kMagic, std::memory_order_release);
}

uint8_t* map_fd(int fd, size_t size, bool writable) {
  const int prot = writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p = mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
  return p == MAP_FAILED ? nullptr : static_cast<uint8_t*>(p);
}

// Remove "<name>.init.<pid>" files whose creator died before it could unlink them.
void remove_stale_init_files(std::string_view name) {
  DIR* d = ::opendir("/dev/shm");
  if (d == nullptr) return;
  const std::string prefix = std::string(name) + ".init.";
  while (const dirent* e = ::readdir(d)) {
    const std::string_view file(e->d_name);
    if (file.substr(0, prefix.size()) != prefix) continue;
    const std::string pid_text(file.substr(prefix.size()));
    char* end = nullptr;
    const long pid = std::strtol(pid_text.c_str(), &end, 10);
    if (end == pid_text.c_str() || *end != '\0' || pid <= 0) continue;
    if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
      ::unlink(shm_path(file).c_str());
  }
  ::closedir(d);
}

// Create and initialise "<name>.init.<pid>", then link it to "<name>". Returns false if another
// process linked its segment first.
bool try_create(const SegmentSpec& spec, const shm::SectionOffsets& off) {
  const std::string final_path = shm_path(spec.name);
  const std::string tmp_path = fmt::format("{}.init.{}", final_path, getpid());
  remove_stale_init_files(spec.name);
  // A file with our own pid can only be a leftover of a dead process that had our pid: reuse it.
  int fd = ::open(tmp_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) throw ShmError(fmt::format("Failed to create {}: {}", tmp_path, errno_text()));
  const auto cleanup = [&] { ::close(fd); ::unlink(tmp_path.c_str()); };
  if (::fchmod(fd, 0600) != 0) {
    const auto why = errno_text();
    cleanup();
    throw ShmError(fmt::format("Failed to set the mode of {} to 0600: {}", tmp_path, why));
  }
  // Sized and every page allocated now, not on first touch: a /dev/shm too small for the segment
  // is an error here, at start, instead of a SIGBUS in the middle of a batch once tmpfs runs out.
  if (const int err = ::posix_fallocate(fd, 0, static_cast<off_t>(off.end)); err != 0) {
    cleanup();
    throw ShmError(fmt::format("Failed to allocate {} bytes for {} in /dev/shm: {} (see `df -h "
                               "/dev/shm`; the P35_* capacities set the size)",
                               off.end, tmp_path, std::strerror(err)));
  }
  uint8_t* base = map_fd(fd, off.end, true);
  if (base == nullptr) {
    const auto why = errno_text();
    cleanup();
    throw ShmError(fmt::format("Failed to map {}: {}", tmp_path, why));
  }
  initialise(base, spec, off);
  ::munmap(base, off.end);
  const int rc = ::link(tmp_path.c_str(), final_path.c_str());
  const int link_errno = errno;
  cleanup();
  if (rc == 0) return true;
  if (link_errno == EEXIST) return false;
  throw ShmError(fmt::format("Failed to link {} to {}: {}", tmp_path, final_path,
                             std::strerror(link_errno)));
}

void check_caps(const shm::Capacities& have, const shm::Capacities& want, std::string_view name) {
  const auto diff = [&](const char* what, uint32_t a, uint32_t b) {
    if (a != b)
      throw ShmError(fmt::format("Segment {} was created with {}={} but the configuration asks "
                                 "for {}; {}", shm_path(name), what, a, b, removal_hint(name)));
  };
  diff("ring_slots", have.ring_slots, want.ring_slots);
  diff("late_slots", have.late_slots, want.late_slots);
  diff("reasons_per_minute", have.reason_cap, want.reason_cap);
  diff("symbol_reasons_per_minute", have.symbol_reason_cap, want.symbol_reason_cap);
  diff("unknown_per_minute", have.unknown_cap, want.unknown_cap);
  diff("strings", have.string_cap, want.string_cap);
  diff("id_log", have.id_log_cap, want.id_log_cap);
  diff("journal", have.journal_cap, want.journal_cap);
}

// Magic, version and size of a mapped header; shared by read-write and read-only opens.
void check_header(const shm::SegmentHeader& h, size_t file_size, std::string_view name) {
  if (h.magic.load(std::memory_order_acquire) != shm::kMagic)
    throw ShmError(fmt::format("{} is not a P3.5 segment (bad magic); {}", shm_path(name),
                               removal_hint(name)));
  if (h.layout_version != shm::kLayoutVersion)
    throw ShmError(fmt::format("Segment {} has layout version {}, this build uses version {}; {}",
                               shm_path(name), h.layout_version, shm::kLayoutVersion,
                               removal_hint(name)));
  if (h.segment_size != file_size)
    throw ShmError(fmt::format("Segment {} says it is {} bytes but the file is {} bytes; {}",
                               shm_path(name), h.segment_size, file_size, removal_hint(name)));
}

}  // namespace

std::string shm_path(std::string_view name) { return fmt::format("/dev/shm/{}", name); }

SegmentSpec SegmentSpec::from_config(const Config& cfg) {
  SegmentSpec s;
  s.name = cfg.shm_name;
  s.stream = cfg.stream;
  s.group = cfg.group;
  s.consumer = cfg.consumer;
  s.key_prefix = cfg.key_prefix;
  s.symbol_breakdown = cfg.symbol_breakdown;
  s.caps.ring_slots = static_cast<uint32_t>(cfg.ring_slots);
  s.caps.late_slots = static_cast<uint32_t>(cfg.late_slots);
  s.caps.reason_cap = pow2(cfg.reasons_per_minute);
  s.caps.symbol_reason_cap = pow2(cfg.symbol_reasons_per_minute);
  s.caps.unknown_cap = pow2(cfg.unknown_per_minute);
  s.caps.string_cap = static_cast<uint32_t>(cfg.strings);
  s.caps.id_log_cap = static_cast<uint32_t>(cfg.id_log);
  s.caps.journal_cap = kJournalCap;
  return s;
}

std::string SegmentSpec::fingerprint_text() const {
  return fmt::format("stream={} group={} consumer={} prefix={}", stream, group, consumer,
                     key_prefix);
}

uint64_t SegmentSpec::fingerprint() const {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a 64
  for (unsigned char c : fingerprint_text()) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

namespace {

// Checked uint64 arithmetic: a result that does not fit sets `overflow` (and is then meaningless).
struct Checked {
  bool overflow = false;
  uint64_t add(uint64_t a, uint64_t b) {
    uint64_t r = 0;
    overflow |= __builtin_add_overflow(a, b, &r);
    return r;
  }
  uint64_t mul(uint64_t a, uint64_t b) {
    uint64_t r = 0;
    overflow |= __builtin_mul_overflow(a, b, &r);
    return r;
  }
  uint64_t align_up(uint64_t v, uint64_t a) { return add(v, a - 1) / a * a; }
};

// The sections after the header, in layout order: name, field and size in bytes.
struct SectionSize {
  const char* name;
  uint64_t shm::SectionOffsets::*field;
  uint64_t bytes;
};
std::array<SectionSize, 11> section_sizes(const shm::Capacities& c, uint64_t slot_bytes,
                                          Checked& k) {
  using namespace shm;
  using O = SectionOffsets;
  const uint64_t slots = k.add(c.ring_slots, c.late_slots);
  const uint64_t slot_array = k.mul(slot_bytes, slots);
  return {{{"stages", &O::stages, sizeof(StageBlock) * kStageCount},
           {"ingest", &O::ingest, sizeof(IngestControl)},
           {"rollup", &O::rollup, sizeof(RollupControl)},
           {"ackd", &O::ackd, sizeof(AckdControl)},
           {"journal", &O::journal, k.mul(sizeof(JournalEntry), c.journal_cap)},
           {"id_log", &O::id_log, k.mul(sizeof(IdLogEntry), c.id_log_cap)},
           {"strings", &O::strings, k.mul(sizeof(StringEntry), c.string_cap)},
           {"slots", &O::slots, slot_array},
           {"shadows", &O::shadows, k.mul(slot_array, 2)},
           {"slot_meta", &O::slot_meta, k.mul(sizeof(SlotMeta), slots)},
           {"pending_slots", &O::pending_slots, k.mul(sizeof(PendingSlot), slots)}}};
}

}  // namespace

shm::SectionOffsets compute_layout(const shm::Capacities& c) {
  using namespace shm;
  Checked k;
  SectionOffsets o{};
  const uint64_t entries = k.add(k.add(c.reason_cap, c.symbol_reason_cap), c.unknown_cap);
  const uint64_t chunks = k.add(entries, kChunkEntries - 1) / kChunkEntries;
  o.slot_bytes = k.add(k.add(sizeof(SlotHeader), k.mul(sizeof(TableEntry), entries)),
                       k.align_up(k.mul(sizeof(uint64_t), chunks), kCacheLine));
  uint64_t at = sizeof(SegmentHeader);
  for (const SectionSize& s : section_sizes(c, o.slot_bytes, k)) {
    o.*s.field = at;
    at = k.align_up(k.add(at, s.bytes), kSectionAlign);
  }
  o.end = at;
  if (k.overflow)
    throw ShmError(fmt::format(
        "Capacities ring_slots={} late_slots={} reasons={} symbol_reasons={} unknowns={} "
        "strings={} id_log={} journal={} need a segment larger than 2^64 bytes",
        c.ring_slots, c.late_slots, c.reason_cap, c.symbol_reason_cap, c.unknown_cap,
        c.string_cap, c.id_log_cap, c.journal_cap));
  return o;
}

void check_capacities(const shm::Capacities& caps, std::string_view whose) {
  if (const std::string problem = capacity_problem(caps); !problem.empty())
    throw ShmError(fmt::format("{}: {}", whose, problem));
}

namespace {

// Everything beyond the header that a process relies on, judged from the header and the file size
// alone, before any byte past the header is touched: capacities within kCapLimits, every section
// inside the file, and the header's offsets exactly the layout its capacities give, ending at the
// file size. A header that fails is corrupt or hostile: refused, never "repaired".
void check_layout(const shm::SegmentHeader& h, size_t file_size, std::string_view name) {
  const auto refuse = [&](const std::string& what) {
    throw ShmError(fmt::format("Segment {}: {}; the header is corrupt or not from this build; {}",
                               shm_path(name), what, removal_hint(name)));
  };
  if (h.header_size != sizeof(shm::SegmentHeader))
    refuse(fmt::format("header_size={} but this build's header is {} bytes", h.header_size,
                       sizeof(shm::SegmentHeader)));
  if (const std::string problem = capacity_problem(h.caps); !problem.empty()) refuse(problem);
  const shm::SectionOffsets expect = compute_layout(h.caps);  // cannot overflow within the limits
  if (h.off.slot_bytes != expect.slot_bytes || h.off.slot_bytes % shm::kCacheLine != 0)
    refuse(fmt::format("header capacities do not match its section offsets: slot_bytes={}, the "
                       "capacities give {}", h.off.slot_bytes, expect.slot_bytes));
  Checked k;
  for (const SectionSize& s : section_sizes(h.caps, expect.slot_bytes, k)) {
    const uint64_t at = h.off.*s.field;
    Checked end_k;
    const uint64_t end = end_k.add(at, s.bytes);
    if (at < sizeof(shm::SegmentHeader) || end_k.overflow || end > file_size)
      refuse(fmt::format("section {} at offset {} with {} bytes does not lie between the header "
                         "and the end of the {}-byte file (header capacities do not match its "
                         "section offsets)",
                         s.name, at, s.bytes, file_size));
    if (at != expect.*s.field)
      refuse(fmt::format("header capacities do not match its section offsets: {} is at {}, the "
                         "capacities put it at {}", s.name, at, expect.*s.field));
  }
  if (h.off.end != expect.end || expect.end != file_size)
    refuse(fmt::format("header capacities do not match its section offsets: they lay out {} "
                       "bytes, the header says {} and the file is {} bytes",
                       expect.end, h.off.end, file_size));
}

}  // namespace

Segment::Segment(std::string name, int fd, uint8_t* base, size_t size, bool writable)
    : name_(std::move(name)), fd_(fd), base_(base), size_(size), writable_(writable) {
  struct stat st {};
  if (::fstat(fd_, &st) == 0) {
    inode_ = st.st_ino;
    device_ = st.st_dev;
  }
}

Segment::Segment(Segment&& o) noexcept
    : name_(std::move(o.name_)), fd_(o.fd_), base_(o.base_), size_(o.size_),
      writable_(o.writable_), inode_(o.inode_), device_(o.device_) {
  o.fd_ = -1;
  o.base_ = nullptr;
}

Segment& Segment::operator=(Segment&& o) noexcept {
  if (this != &o) {
    this->~Segment();
    new (this) Segment(std::move(o));
  }
  return *this;
}

Segment::~Segment() {
  if (base_ != nullptr) ::munmap(base_, size_);
  if (fd_ >= 0) ::close(fd_);
}

Segment Segment::open_or_create(const SegmentSpec& spec, bool* created) {
  check_capacities(spec.caps, "The configured capacities");  // never make what readers refuse
  const auto off = compute_layout(spec.caps);
  const std::string path = shm_path(spec.name);
  bool made = false;
  // O_NOFOLLOW: /dev/shm is world-writable; a symlink planted there is never followed.
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0 && errno == ENOENT) {
    made = try_create(spec, off);
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  }
  if (fd < 0) {
    const int err = errno;
    const auto why = errno_text();
    // Another user's 0600 segment (a stage once started by hand as root, say): say whose it is.
    struct stat other {};
    if (err == EACCES && ::lstat(path.c_str(), &other) == 0) check_owner_and_mode(other, spec.name);
    throw ShmError(fmt::format("Failed to open {}: {}", path, why));
  }
  if (created != nullptr) *created = made;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const auto why = errno_text();
    ::close(fd);
    throw ShmError(fmt::format("Failed to stat {}: {}", path, why));
  }
  try {
    check_owner_and_mode(st, spec.name);
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (st.st_size < static_cast<off_t>(sizeof(shm::SegmentHeader))) {
    ::close(fd);
    throw ShmError(fmt::format("Segment {} is too small to be a P3.5 segment; {}", path,
                               removal_hint(spec.name)));
  }
  const auto file_size = static_cast<size_t>(st.st_size);
  uint8_t* base = map_fd(fd, file_size, true);
  if (base == nullptr) {
    const auto why = errno_text();
    ::close(fd);
    throw ShmError(fmt::format("Failed to map {}: {}", path, why));
  }
  Segment seg(spec.name, fd, base, file_size, true);
  check_header(seg.header(), file_size, spec.name);
  check_layout(seg.header(), file_size, spec.name);
  if (seg.header().fingerprint != spec.fingerprint())
    throw ShmError(fmt::format("Segment {} belongs to '{}' but this process is configured for "
                               "'{}'; use another P35_SHM_NAME, or {}", path,
                               seg.header().fingerprint_text, spec.fingerprint_text(),
                               removal_hint(spec.name)));
  check_caps(seg.caps(), spec.caps, spec.name);
  if (seg.header().segment_size != off.end)
    throw ShmError(fmt::format("Segment {} is {} bytes, this build lays it out in {} bytes; {}",
                               path, seg.header().segment_size, off.end, removal_hint(spec.name)));
  // Ours, and allocated whole when it was created (try_create): map every page now, which keeps
  // page faults out of the counting and commit paths (only after the checks: a foreign sparse
  // file would be allocated by it). Only a speed-up; before Linux 5.14 pages map on first touch.
  (void)::madvise(base, file_size, MADV_POPULATE_WRITE);
  return seg;
}

namespace {

// O_NOFOLLOW: /dev/shm is world-writable, so a symlink there may point anywhere; O_NONBLOCK: a
// FIFO in the segment's place would otherwise block open() until a writer came (a hung
// inspector or exporter). Either is refused with the reason.
int open_readonly_fd(const std::string& path, std::string_view name) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0 && errno == ELOOP)
    throw ShmError(fmt::format("Failed to open {}: it is a symbolic link, which is never followed "
                               "(/dev/shm is world-writable); {}",
                               path, removal_hint(name)));
  if (fd < 0) throw ShmError(fmt::format("Failed to open {}: {}", path, errno_text()));
  struct stat st {};
  if (::fstat(fd, &st) == 0 && !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ShmError(fmt::format("Failed to open {}: it is not a regular file ({}), so not a P3.5 "
                               "segment; {}",
                               path, S_ISFIFO(st.st_mode) ? "a FIFO" : "a device, socket or directory",
                               removal_hint(name)));
  }
  return fd;
}

}  // namespace

Segment Segment::open_readonly(std::string_view name) {
  const std::string path = shm_path(name);
  int fd = open_readonly_fd(path, name);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < static_cast<off_t>(sizeof(shm::SegmentHeader))) {
    ::close(fd);
    throw ShmError(fmt::format("{} is too small ({} bytes) to be a P3.5 segment", path,
                               static_cast<long long>(st.st_size)));
  }
  const auto file_size = static_cast<size_t>(st.st_size);
  uint8_t* base = map_fd(fd, file_size, false);
  if (base == nullptr) {
    const auto why = errno_text();
    ::close(fd);
    throw ShmError(fmt::format("Failed to map {}: {}", path, why));
  }
  Segment seg(std::string(name), fd, base, file_size, false);
  check_header(seg.header(), file_size, name);
  // A header that passed the checks still has to describe a layout that fits the file.
  check_layout(seg.header(), file_size, name);
  return seg;
}

bool Segment::still_linked() const {
  struct stat st {};
  if (::stat(shm_path(name_).c_str(), &st) != 0) return false;
  return st.st_ino == inode_ && st.st_dev == device_;
}

bool Segment::try_lock_byte(uint32_t index) const {
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = static_cast<off_t>(index);
  fl.l_len = 1;
  return ::fcntl(fd_, F_OFD_SETLK, &fl) == 0;
}

shm::StageBlock& Segment::stage(shm::StageId id) const {
  return at<shm::StageBlock>(off().stages + sizeof(shm::StageBlock) * static_cast<uint32_t>(id));
}

shm::TableEntry* Segment::reasons(shm::SlotHeader& s) const {
  return reinterpret_cast<shm::TableEntry*>(reinterpret_cast<uint8_t*>(&s) + sizeof(shm::SlotHeader));
}
shm::TableEntry* Segment::symbol_reasons(shm::SlotHeader& s) const {
  return reasons(s) + caps().reason_cap;
}
shm::TableEntry* Segment::unknowns(shm::SlotHeader& s) const {
  return symbol_reasons(s) + caps().symbol_reason_cap;
}

uint32_t Segment::chunk_count() const {
  const uint64_t entries = uint64_t{caps().reason_cap} + caps().symbol_reason_cap + caps().unknown_cap;
  return static_cast<uint32_t>((entries + shm::kChunkEntries - 1) / shm::kChunkEntries);
}
std::atomic<uint64_t>* Segment::chunk_versions(shm::SlotHeader& s) const {
  return reinterpret_cast<std::atomic<uint64_t>*>(unknowns(s) + caps().unknown_cap);
}

std::string_view Segment::string_at(uint32_t id) const {
  if (id >= caps().string_cap) return {};
  const auto& e = strings()[id];
  const uint32_t len = e.length.load(std::memory_order_acquire);
  return {e.bytes, len > shm::kStringMaxBytes ? shm::kStringMaxBytes : len};
}

void publish_id(shm::SeqId& dst, StreamId id) {
  uint64_t v = dst.lock.load(std::memory_order_relaxed);
  // The value first: if we die below, our restart republishes it whole (repair_id).
  dst.next.ms.store(id.ms, std::memory_order_relaxed);
  dst.next.seq.store(id.seq, std::memory_order_relaxed);
  // Odd already: a predecessor died between its stores; stay odd until the words are whole.
  if ((v & 1) == 0) dst.lock.store(++v, std::memory_order_release);  // `next` before the odd lock
  std::atomic_thread_fence(std::memory_order_release);  // odd lock visible before the words
  dst.ms.store(id.ms, std::memory_order_relaxed);
  dst.seq.store(id.seq, std::memory_order_relaxed);
  dst.lock.store(v + 1, std::memory_order_release);  // even: publishes both words
}

std::optional<StreamId> repair_id(shm::SeqId& dst) {
  if ((dst.lock.load(std::memory_order_acquire) & 1) == 0) return std::nullopt;
  // Odd: our predecessor died inside publish_id(), after `next` was whole; ms and seq may be torn.
  const StreamId id = load_id(dst.next);
  publish_id(dst, id);
  return id;
}

std::optional<StreamId> try_read_id(const shm::SeqId& src, int attempts) {
  for (int attempt = 0; attempt < attempts; ++attempt) {
    if (attempt > 0) usleep(50);
    const uint64_t v1 = src.lock.load(std::memory_order_acquire);
    const StreamId id{src.ms.load(std::memory_order_relaxed), src.seq.load(std::memory_order_relaxed)};
    std::atomic_thread_fence(std::memory_order_acquire);  // the words before the re-check
    if ((v1 & 1) == 0 && src.lock.load(std::memory_order_relaxed) == v1) return id;
  }
  return std::nullopt;  // a writer died mid-publish (or is very slow): unknown for now
}

StreamId own_id(const shm::SeqId& src) {
  return {src.ms.load(std::memory_order_relaxed), src.seq.load(std::memory_order_relaxed)};
}

StreamId load_id(const shm::IdWords& src) {
  return {src.ms.load(std::memory_order_acquire), src.seq.load(std::memory_order_acquire)};
}

void store_id(shm::IdWords& dst, StreamId id) {
  dst.ms.store(id.ms, std::memory_order_release);
  dst.seq.store(id.seq, std::memory_order_release);
}

const char* stage_name(shm::StageId id) {
  switch (id) {
    case shm::StageId::Ingest: return "ingest";
    case shm::StageId::Rollup: return "rollup";
    case shm::StageId::Ackd: return "ackd";
  }
  return "?";
}

const char* state_name(uint32_t state) {
  switch (static_cast<shm::StageState>(state)) {
    case shm::StageState::Stopped: return "stopped";
    case shm::StageState::Starting: return "starting";
    case shm::StageState::Running: return "running";
    case shm::StageState::WaitingRedis: return "waiting-redis";
    case shm::StageState::Backpressure: return "backpressure";
    case shm::StageState::Draining: return "draining";
    case shm::StageState::WaitingName: return "waiting-name";
  }
  return "unknown";
}

std::string Segment::instance_token() const {
  return fmt::format("{:016x}{:016x}", header().instance_token[0], header().instance_token[1]);
}

void store_text(std::atomic<uint64_t>* words, size_t n, std::string_view text) {
  for (size_t w = 0; w < n; ++w) {
    uint64_t v = 0;
    for (size_t b = 0; b < 8; ++b) {
      const size_t i = w * 8 + b;
      if (i + 1 < n * 8 && i < text.size()) v |= uint64_t{static_cast<uint8_t>(text[i])} << (8 * b);
    }
    words[w].store(v, std::memory_order_relaxed);
  }
}

std::string load_text(const std::atomic<uint64_t>* words, size_t n) {
  std::string out;
  for (size_t w = 0; w < n; ++w) {
    const uint64_t v = words[w].load(std::memory_order_relaxed);
    for (size_t b = 0; b < 8; ++b) {
      const char c = static_cast<char>((v >> (8 * b)) & 0xff);
      if (c == '\0') return out;
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace p35
