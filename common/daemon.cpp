// Stop signals, sd_notify, stage heartbeats and once-per-outage logging for the stage loops.
#include "daemon.hpp"

#include "config.hpp"
#include "futex.hpp"
#include "log.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <thread>

namespace p35 {

namespace {
std::atomic<bool> g_stop{false};
std::atomic<std::atomic<uint32_t>*> g_stop_bell{nullptr};
std::atomic<int> g_stop_socket{-1};
static_assert(std::atomic<bool>::is_always_lock_free);
static_assert(std::atomic<std::atomic<uint32_t>*>::is_always_lock_free);
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int) {
  const int saved_errno = errno;
  g_stop.store(true, std::memory_order_relaxed);
  if (auto* bell = g_stop_bell.load(std::memory_order_relaxed)) bell_ring(*bell);
  if (const int fd = g_stop_socket.load(std::memory_order_relaxed); fd >= 0) ::shutdown(fd, SHUT_RDWR);
  errno = saved_errno;
}
}  // namespace

int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t now_mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t now_boot_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

void install_stop_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: a blocking futex wait returns EINTR and sees the flag
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

void set_stop_bell(std::atomic<uint32_t>* bell) { g_stop_bell.store(bell, std::memory_order_relaxed); }
void set_stop_socket(int fd) { g_stop_socket.store(fd, std::memory_order_relaxed); }

bool stop_requested() { return g_stop.load(std::memory_order_relaxed); }
void request_stop() { g_stop.store(true, std::memory_order_relaxed); }

void notify_ready() { sd_notify(0, "READY=1"); }
void notify_ready_waiting_redis() { sd_notify(0, "READY=1\nSTATUS=waiting-redis"); }
void notify_stopping() { sd_notify(0, "STOPPING=1"); }
void notify_status(const std::string& text) { sd_notify(0, ("STATUS=" + text).c_str()); }
void notify_watchdog() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0) sd_notify(0, "WATCHDOG=1");
}

int watchdog_bounded_ms(int ms) {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0) return ms;
  return static_cast<int>(std::clamp<uint64_t>(usec / 3000, 1, static_cast<uint64_t>(std::max(ms, 1))));
}

void StatusLine::update(shm::StageId id) {
  const int64_t now = now_mono_ms();
  if (now - last_ms_ < 1000) return;
  auto& b = seg_.stage(id);
  // Bounded reads: another stage that died inside publish_id() leaves its lock odd until it
  // restarts; a status line must not wait for that.
  const auto id_text = [](const shm::SeqId& src) {
    const std::optional<StreamId> v = try_read_id(src);
    return v ? v->str() : std::string("unknown");
  };
  const std::string counted = id_text(seg_.ingest().counted_pub);
  const std::string committed = id_text(seg_.rollup().committed);
  const uint64_t unacked = seg_.ingest().id_log_head.load() - seg_.ackd().id_log_tail.load();
  uint64_t count = 0;
  std::string text;
  switch (id) {
    case shm::StageId::Ingest:
      count = b.counted.load(std::memory_order_relaxed);
      text = fmt::format("counted up to {}", counted);
      break;
    case shm::StageId::Rollup:
      count = b.committed.load(std::memory_order_relaxed);
      text = fmt::format("committed up to {}, counted up to {}", committed, counted);
      break;
    case shm::StageId::Ackd:
      count = b.acked.load(std::memory_order_relaxed);
      text = fmt::format("acked up to {}", id_text(seg_.ackd().acked));
      break;
  }
  const double secs = last_ms_ == 0 ? 0.0 : static_cast<double>(now - last_ms_) / 1000.0;
  const double rate = secs > 0 ? static_cast<double>(count - last_count_) / secs : 0.0;
  notify_status(fmt::format("{}; {:.0f}/s; {} IDs awaiting ack; state {}", text, rate, unacked,
                            state_name(b.state.load(std::memory_order_relaxed))));
  last_ms_ = now;
  last_count_ = count;
}

StageHandle::StageHandle(Segment& seg, shm::StageId id) : seg_(seg), block_(seg.stage(id)) {
  // Single writer per stage: a second p35-<stage> on the same segment would corrupt it.
  if (!seg.try_lock_byte(static_cast<uint32_t>(id)))
    throw ShmError(fmt::format("Another p35-{} (pid {}) already runs on segment {}; refusing to "
                               "start a second one", stage_name(id), block_.pid.load(),
                               shm_path(seg.name())));
  block_.pid.store(static_cast<uint64_t>(getpid()), std::memory_order_relaxed);
  block_.start_unix_ms.store(now_unix_ms(), std::memory_order_relaxed);
  block_.starts.fetch_add(1, std::memory_order_relaxed);
  block_.outage_since_boot_ms.store(0, std::memory_order_relaxed);
  set_state(shm::StageState::Starting);
  heartbeat();
}

StageHandle::~StageHandle() { set_state(shm::StageState::Stopped); }

void StageHandle::set_state(shm::StageState s) {
  block_.state.store(static_cast<uint32_t>(s), std::memory_order_relaxed);
}

// Paced by the monotonic clock: with wall time, a step back of the clock stopped the heartbeat,
// systemd's WATCHDOG=1 and the link check for the length of the step.
bool StageHandle::heartbeat() {
  const int64_t now = now_mono_ms();
  if (last_beat_ms_ == 0 || now - last_beat_ms_ >= 100) {
    block_.heartbeat_boot_ms.store(now_boot_ms(), std::memory_order_relaxed);
    notify_watchdog();
    last_beat_ms_ = now;
  }
  if (last_link_check_ms_ == 0 || now - last_link_check_ms_ >= 1000) {
    last_link_check_ms_ = now;
    if (!seg_.still_linked()) return false;
  }
  return true;
}

void OutageTracker::failed(std::string_view doing, const std::exception& e) {
  if (block_ != nullptr) block_->redis_errors.fetch_add(1, std::memory_order_relaxed);
  if (since_ms_ != 0) {
    spdlog::debug("Still failing to {} ({}): {}", doing, what_, e.what());
    return;
  }
  since_ms_ = now_mono_ms();
  spdlog::warn("Failed to {} ({}): {}; retrying with backoff, counts are kept", doing, what_,
               e.what());
  if (block_ != nullptr) {
    block_->outages.fetch_add(1, std::memory_order_relaxed);
    block_->outage_since_boot_ms.store(now_boot_ms(), std::memory_order_relaxed);
  }
}

void OutageTracker::succeeded() {
  if (since_ms_ == 0) return;
  spdlog::info("Redis answers again ({}) after an outage of {} ms", what_,
               now_mono_ms() - since_ms_);
  since_ms_ = 0;
  if (block_ != nullptr) block_->outage_since_boot_ms.store(0, std::memory_order_relaxed);
}

void sleep_unless_stopped(int ms) {
  const int64_t until = now_mono_ms() + ms;
  while (!stop_requested()) {
    const int64_t left = until - now_mono_ms();
    if (left <= 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(left, 50)));
  }
}

Segment open_stage_segment(const Config& cfg) {
  bool created = false;
  auto seg = Segment::open_or_create(SegmentSpec::from_config(cfg), &created);
  spdlog::info("{} segment {} ({} bytes)", created ? "Created" : "Attached to",
               shm_path(cfg.shm_name), seg.size());
  // A warning for whoever started it by hand at a terminal (the tests and CI run as root too).
  if (created && ::geteuid() == 0 && ::isatty(STDERR_FILENO) == 1)
    spdlog::warn("Created {} as root: the units (User=quantum-p35) will refuse it; after this run "
                 "remove it (rm {}) or run stages by hand as that user (runuser -u quantum-p35 --)",
                 shm_path(cfg.shm_name), shm_path(cfg.shm_name));
  return seg;
}

bool connect_with_retry(Connection& conn, OutageTracker& outage, int max_backoff_ms,
                        StageHandle* stage) {
  Backoff backoff(max_backoff_ms);
  while (!stop_requested()) {
    try {
      const uint64_t moves_before = conn.primary_moves();
      conn.connect();
      if (stage != nullptr && conn.primary_moves() != moves_before)
        stage->block().primary_moves.fetch_add(conn.primary_moves() - moves_before,
                                               std::memory_order_relaxed);
      notify_status("connected to Redis at " + conn.options().endpoint());
      // The outage ends with the stage's first command that works, not here: a command refused
      // on every try (NOPERM: the ACL user lacks it) must stay one outage, logged once.
      return true;
    } catch (const RedisError& e) {
      if (e.kind() == RedisErrorKind::Auth) throw;
      outage.failed("connect to " + conn.options().endpoint(), e);
      notify_status("waiting-redis: " + std::string(e.what()));
    }
    if (stage != nullptr) stage->set_state(shm::StageState::WaitingRedis);
    // In slices within a third of WatchdogSec: the stage is READY already, so systemd's watchdog
    // runs while it waits for Redis.
    const int64_t until = now_mono_ms() + backoff.next_delay_ms();
    for (int64_t left = until - now_mono_ms(); left > 0 && !stop_requested();
         left = until - now_mono_ms()) {
      if (stage != nullptr) stage->heartbeat();
      sleep_unless_stopped(watchdog_bounded_ms(static_cast<int>(left)));
    }
  }
  return false;
}

namespace {

// The reason a stage will not start, before logging is set up: at error priority in the journal
// ("<3>"), so `journalctl -p err` and `systemctl status` show it.
int config_error(const ProgramInfo& info, const ConfigError& e) {
  std::fprintf(stderr, "%s%.*s: Failed to read the configuration: %s\n",
               stderr_is_journal() ? "<3>" : "", static_cast<int>(info.name.size()),
               info.name.data(), e.what());
  return kExitConfig;
}

// Runs the stage and turns what escapes it into one critical line and the exit code.
int run_body(const Config& cfg, int (*body)(const Config&)) {
  try {
    return body(cfg);
  } catch (const ShmOwnerError& e) {
    spdlog::critical("Failed to use the shared-memory segment: {}", e.what());
    return kExitConfig;
  } catch (const ShmError& e) {
    spdlog::critical("Failed to use the shared-memory segment: {}", e.what());
  } catch (const RedisError& e) {
    if (e.kind() == RedisErrorKind::Auth) {
      // A wrong password or user does not fix itself: no restart loop (RestartPreventExitStatus).
      spdlog::critical("Failed to log in to Redis: {}; fix REDIS_USERNAME and the password "
                       "(or the server's ACL user), then restart the unit", e.what());
      return kExitConfig;
    }
    spdlog::critical("Failed to talk to Redis: {}", e.what());
  } catch (const std::exception& e) {
    spdlog::critical("Stopping on an unexpected error: {}", e.what());
  }
  return EXIT_FAILURE;
}

}  // namespace

int run_main(int argc, char** argv, const ProgramInfo& info, int (*body)(const Config&)) {
  install_stop_signals();
  Config cfg;
  try {
    auto parsed = parse_config(argc, argv, info, process_environment());
    if (parsed.exit_now) {
      std::fputs(parsed.out_text.c_str(), stdout);
      return EXIT_SUCCESS;
    }
    cfg = std::move(parsed.config);
    setup_logging(info.name, cfg.log_level);
    if (!cfg.sentinels.empty())
      spdlog::info("REDIS_SENTINELS is set: REDIS_HOST, REDIS_PORT and REDIS_SOCKET are ignored; "
                   "the primary '{}' is asked from the sentinels", cfg.sentinel_master);
    if (parsed.check_config) {
      std::printf("# %.*s: the configuration is valid\n%s", static_cast<int>(info.name.size()),
                  info.name.data(), effective_settings(cfg).c_str());
      return EXIT_SUCCESS;
    }
  } catch (const ConfigError& e) {
    return config_error(info, e);
  }
  return run_body(cfg, body);
}

}  // namespace p35
