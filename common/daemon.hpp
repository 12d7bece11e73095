// What every stage's main loop shares: stop signals, systemd notification, the stage block
// heartbeat, and Redis outage tracking that logs once per outage.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "redis.hpp"
#include "shm.hpp"

namespace p35 {

struct Config;

// Three clocks, each for what it can answer. Wall time (CLOCK_REALTIME) steps when the host's time
// is set: it is only for timestamps a person reads (status, logs). Anything paced or timed within
// one process (heartbeat pacing, watchdog, link check, intervals, backoff, lingers) uses the
// monotonic clock. An age that one process stamps and another reads (the stage blocks' heartbeat
// and outage start) uses CLOCK_BOOTTIME: monotonic too, and the same for every process on the host.
int64_t now_unix_ms();
int64_t now_mono_ms();
int64_t now_boot_ms();

// SIGTERM/SIGINT set a flag and wake the stage at once (see below); SIGPIPE is ignored.
void install_stop_signals();
// What the stop signal wakes, so that a stage sleeping long while idle still stops at once: a bell
// the stage waits on (rung from the handler: an atomic add and FUTEX_WAKE are async-signal-safe)
// and a socket blocked in a long read (shut down from the handler; hiredis retries a read that
// fails with EINTR, so the signal alone would not end an XREADGROUP BLOCK). nullptr / -1: none.
void set_stop_bell(std::atomic<uint32_t>* bell);
void set_stop_socket(int fd);

// Registers a stop bell for a stage's run(); forgets it and any stop socket on every way out, so
// that a late signal never touches an unmapped segment or a closed socket.
class StopWakeups {
 public:
  explicit StopWakeups(std::atomic<uint32_t>* bell) { set_stop_bell(bell); }
  ~StopWakeups() {
    set_stop_bell(nullptr);
    set_stop_socket(-1);
  }
  StopWakeups(const StopWakeups&) = delete;
  StopWakeups& operator=(const StopWakeups&) = delete;
};
bool stop_requested();
void request_stop();  // for tests and fatal paths

// sd_notify wrappers; harmless no-ops when not run by systemd.
void notify_ready();
// READY=1 with STATUS=waiting-redis: a stage is ready once its segment is attached, so a target
// whose Redis is down at boot is active at once (not "activating" until TimeoutStartSec); the
// status says waiting-redis until connect_with_retry() reaches Redis.
void notify_ready_waiting_redis();
void notify_stopping();
void notify_status(const std::string& text);
void notify_watchdog();  // only sends when systemd asked for a watchdog
// `ms`, or a third of systemd's WatchdogSec when that is shorter: the bound of a stage's idle wait
// (ingest's XREADGROUP BLOCK, ackd's bell), so that an idle stage still sends WATCHDOG=1 in time.
int watchdog_bounded_ms(int ms);

// STATUS= for `systemctl status`, at most once a second: the stage's rate and lag from its block.
class StatusLine {
 public:
  explicit StatusLine(Segment& seg) : seg_(seg) {}
  void update(shm::StageId id);

 private:
  Segment& seg_;
  int64_t last_ms_ = 0;
  uint64_t last_count_ = 0;
};

// This process's stage block: pid, start, heartbeat, state. Also checks, on each heartbeat, that
// the segment file is still the one mapped (a deleted or replaced segment must not be used alone).
class StageHandle {
 public:
  StageHandle(Segment& seg, shm::StageId id);
  ~StageHandle();
  shm::StageBlock& block() { return block_; }
  void set_state(shm::StageState s);
  // Heartbeat at most every 100 ms; returns false if the segment was unlinked or replaced.
  bool heartbeat();

 private:
  Segment& seg_;
  shm::StageBlock& block_;
  int64_t last_beat_ms_ = 0;
  int64_t last_link_check_ms_ = 0;
};

// Tracks one Redis outage at a time so that it is logged once when it starts and once when it
// ends (with its length), not once per retry; mirrors it into the stage block for status.
class OutageTracker {
 public:
  OutageTracker(std::string what, shm::StageBlock* block) : what_(std::move(what)), block_(block) {}
  void failed(std::string_view doing, const std::exception& e);
  void succeeded();
  bool in_outage() const { return since_ms_ != 0; }

 private:
  std::string what_;
  shm::StageBlock* block_;
  int64_t since_ms_ = 0;
};

// Opens or creates the stage's segment and logs which; warns when root creates it from a terminal
// (the units run as quantum-p35 and refuse a segment of another owner).
Segment open_stage_segment(const Config& cfg);

// Connect (with AUTH/SELECT) until it works or stop is requested; sleeps with capped backoff
// between attempts. Returns false if stop was requested first. An Auth error is rethrown: a wrong
// password does not fix itself (NoPerm is retried: the ACL is fixed on the server, live). The
// caller ends the outage (outage.succeeded()) once a command of its own worked.
bool connect_with_retry(Connection& conn, OutageTracker& outage, int max_backoff_ms,
                        StageHandle* stage = nullptr);

// Sleep up to ms, waking early when stop is requested.
void sleep_unless_stopped(int ms);

}  // namespace p35

namespace p35 {

struct Config;
struct ProgramInfo;

// Exit code of a configuration error (sysexits.h EX_CONFIG): a bad setting, a refused Redis login
// (AUTH), a segment of another user. The units' RestartPreventExitStatus=78: no restart loop.
inline constexpr int kExitConfig = 78;

// The shape of every program's main(): parse options (printing --help/--version; --check-config
// prints the settings), set up logging, run `body`, and turn configuration, segment and other
// errors into one clear line and an exit code (0 success, 1 runtime failure, kExitConfig).
int run_main(int argc, char** argv, const ProgramInfo& info, int (*body)(const Config&));

}  // namespace p35
