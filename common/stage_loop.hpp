// The loop every stage runs: heartbeat and segment link check, READY/STOPPING/STATUS, (re)connect,
// the Redis error policy (an outage logged once at each end, backoff, a fresh connection after a
// failure) and the stop signal, around the stage's own work (StageWork).
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "daemon.hpp"
#include "redis.hpp"
#include "shm.hpp"

namespace p35 {

// What a stage does inside the loop. Every hook but drain() may throw RedisError: the loop applies
// the error policy (failure() classifies it).
class StageWork {
 public:
  enum class Attach { Ready, NotYet, Exit };  // NotYet: call attach() again next round
  enum class Step {
    Done,     // worked: the outage (if any) ends, the backoff resets, then wait()
    Refused,  // Redis answered but refused the work: no wait(), a backoff sleep instead
    Again,    // nothing to account for: loop again at once (e.g. the connection was dropped)
    Exit,     // logged already: the process exits with EXIT_FAILURE, without drain()
  };
  struct Failure {
    enum class Kind {
      Outage,  // logged once per outage as "Failed to <doing> (<stage>)": reconnect after backoff
      Quiet,   // Redis answers (the stage logged it if needed): reconnect after backoff, no outage
      Handled, // the stage dealt with it and keeps the connection
      Exit,    // logged already: exit with EXIT_FAILURE
    };
    Kind kind;
    std::string doing;  // for Outage
  };

  // After each (re)connect, until it returns Ready: whatever must hold before step() may run.
  virtual Attach attach() = 0;
  virtual Step step() = 0;
  // A RedisError other than Auth (always fatal) escaped attach() or step().
  virtual Failure failure(const RedisError& e) = 0;
  // After a Done step, unless stopping: wait (bounded, within the watchdog) for more work.
  virtual void wait() = 0;
  // After the stop signal, with the stage state Draining: the last work before exit.
  virtual void drain() = 0;
  virtual ~StageWork() = default;
};

class StageLoop {
 public:
  struct Options {
    shm::StageId id;
    std::string name;  // "ingest": the outage log's "(ingest)"
    // Rung by the stop signal (the bell the stage waits on); nullptr: none.
    std::atomic<uint32_t>* stop_bell = nullptr;
    // Register the connection's socket with the stop signal (a stage blocked in a long read);
    // an error seen after the stop signal is then the shut-down socket, not an outage.
    bool stop_socket = false;
    std::string gone_note;  // appended to the "removed or replaced under us; exiting" line
  };

  StageLoop(Segment& seg, StageHandle& stage, Connection& conn, int reconnect_max_ms,
            Options options);
  // READY (waiting-redis), then rounds of heartbeat, connect, attach, step and wait until the stop
  // signal; then Draining, STOPPING and drain(). EXIT_SUCCESS, or EXIT_FAILURE when a hook said
  // Exit or the segment was removed. An Auth error is rethrown (run_main exits with kExitConfig).
  int run(StageWork& work);

  // Logs that the segment was removed or replaced under us; returns EXIT_FAILURE.
  int segment_gone() const;
  // Drops the connection (and its stop-signal registration); the next round reconnects and
  // attaches again.
  void disconnect();
  bool attached() const { return attached_; }
  Backoff& backoff() { return backoff_; }

 private:
  bool connect();  // false: stop requested first
  enum class Round { Next, Stop, Exit };
  Round round(StageWork& work);
  Round recover(StageWork& work, const RedisError& e);

  Segment& seg_;
  StageHandle& stage_;
  Connection& conn_;
  int reconnect_max_ms_;
  Options options_;
  OutageTracker outage_;
  Backoff backoff_;
  StatusLine status_line_;
  bool attached_ = false;
};

}  // namespace p35
