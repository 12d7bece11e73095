// The stage loop shared by ingest, rollup and ackd: one round is heartbeat, connect, attach, step,
// wait; a Redis failure anywhere in it goes through one error policy.
#include "stage_loop.hpp"

#include <spdlog/spdlog.h>

#include <cstdlib>

namespace p35 {

StageLoop::StageLoop(Segment& seg, StageHandle& stage, Connection& conn, int reconnect_max_ms,
                     Options options)
    : seg_(seg), stage_(stage), conn_(conn), reconnect_max_ms_(reconnect_max_ms),
      options_(std::move(options)), outage_(options_.name, &stage.block()),
      backoff_(reconnect_max_ms), status_line_(seg) {}

int StageLoop::run(StageWork& work) {
  const StopWakeups wakeups(options_.stop_bell);
  // The segment is ours: ready, whether or not Redis answers yet.
  notify_ready_waiting_redis();
  while (!stop_requested()) {
    const Round r = round(work);
    if (r == Round::Exit) return EXIT_FAILURE;
    if (r == Round::Stop) break;
  }
  if (options_.stop_socket) set_stop_socket(-1);
  stage_.set_state(shm::StageState::Draining);
  notify_stopping();
  work.drain();
  return EXIT_SUCCESS;
}

int StageLoop::segment_gone() const {
  spdlog::error("Segment {} was removed or replaced under us; exiting{}", shm_path(seg_.name()),
                options_.gone_note);
  return EXIT_FAILURE;
}

bool StageLoop::connect() {
  attached_ = false;
  if (!connect_with_retry(conn_, outage_, reconnect_max_ms_, &stage_)) return false;
  if (options_.stop_socket) set_stop_socket(conn_.fd());  // SIGTERM ends a long read at once
  return true;
}

StageLoop::Round StageLoop::round(StageWork& work) {
  if (!stage_.heartbeat()) {
    segment_gone();
    return Round::Exit;
  }
  try {
    if (!conn_.connected() && !connect()) return Round::Stop;
    if (!attached_) {
      const StageWork::Attach a = work.attach();
      if (a != StageWork::Attach::Ready) return a == StageWork::Attach::Exit ? Round::Exit : Round::Next;
      attached_ = true;
      stage_.set_state(shm::StageState::Running);
    }
    const StageWork::Step step = work.step();
    if (step == StageWork::Step::Exit) return Round::Exit;
    if (step == StageWork::Step::Again) return Round::Next;
    status_line_.update(options_.id);
    outage_.succeeded();  // Redis answered, whether it took the work or refused it
    if (step == StageWork::Step::Refused) {  // logged by the stage; the counts are kept
      sleep_unless_stopped(watchdog_bounded_ms(backoff_.next_delay_ms()));
      return Round::Next;
    }
    backoff_.reset();
  } catch (const RedisError& e) {
    return recover(work, e);
  }
  if (!stop_requested()) work.wait();
  return Round::Next;
}

// Any failure the stage does not handle (also LOADING, BUSY, READONLY...) starts over from a fresh
// connection after a backoff: with Sentinel, connect() asks for the primary again, and attach()
// re-checks what a stage must know about Redis before it works (the pending commit, the group,
// the marker), so nothing said in a reply we never saw is lost.
StageLoop::Round StageLoop::recover(StageWork& work, const RedisError& e) {
  if (options_.stop_socket && stop_requested()) return Round::Stop;  // our shut-down socket
  if (e.kind() == RedisErrorKind::Auth) throw;  // a wrong password does not fix itself
  const StageWork::Failure f = work.failure(e);
  switch (f.kind) {
    case StageWork::Failure::Kind::Exit: return Round::Exit;
    case StageWork::Failure::Kind::Handled: return Round::Next;
    case StageWork::Failure::Kind::Outage: outage_.failed(f.doing, e); break;
    case StageWork::Failure::Kind::Quiet: break;
  }
  disconnect();
  stage_.set_state(shm::StageState::WaitingRedis);
  sleep_unless_stopped(backoff_.next_delay_ms());
  return Round::Next;
}

void StageLoop::disconnect() {
  if (options_.stop_socket) set_stop_socket(-1);
  conn_.disconnect();
  attached_ = false;
}

}  // namespace p35
