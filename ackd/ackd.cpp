// The ackd stage loop: wait on its bell, XACK what rollup committed, publish the tail.
#include "ackd.hpp"

#include <spdlog/spdlog.h>

#include "futex.hpp"
#include "keys.hpp"
#include "marker.hpp"
#include "owner.hpp"

namespace p35 {

namespace {
constexpr int kIdleWaitMs = 5000;
}  // namespace

Ackd::Ackd(const Config& cfg, Segment& seg)
    : cfg_(cfg), seg_(seg), stage_(seg, shm::StageId::Ackd),
      conn_(RedisOptions::from_config(cfg, "p35-ackd:" + cfg.consumer)),
      outage_("ackd", &stage_.block()), backoff_(cfg.reconnect_max_ms),
      marker_key_(keys::marker(cfg.key_prefix, cfg.consumer)) {}

// One batch through the ack script: acked only if Redis's marker covers the batch's highest ID.
uint64_t Ackd::ack_batch(StreamId last) {
  if (sha_.empty()) sha_ = std::string(conn_.command({"SCRIPT", "LOAD", kAckdScript}).str());
  args_.clear();
  args_.add("EVALSHA").add(sha_).add(2LL).add(cfg_.stream).add(marker_key_).add(cfg_.group).add(last.str());
  for (const StreamId id : batch_) args_.add(id.str());
  try {
    return static_cast<uint64_t>(conn_.command(args_).integer());
  } catch (const RedisError& e) {
    if (!e.is("NOSCRIPT")) throw;
  }
  sha_.clear();  // Redis restarted or SCRIPT FLUSH: load it again, same batch
  return ack_batch(last);
}

uint64_t Ackd::ack_committed() {
  auto& ac = seg_.ackd();
  const uint64_t cap = seg_.caps().id_log_cap;
  // Bounded: rollup dead inside publish_id() leaves the lock odd until it restarts and
  // republishes (its bell then wakes us); until then there is nothing we may ack.
  const std::optional<StreamId> committed_now = try_read_id(seg_.rollup().committed);
  if (!committed_now) return 0;
  const StreamId committed = *committed_now;
  const uint64_t head = seg_.ingest().id_log_head.load(std::memory_order_acquire);
  uint64_t tail = ac.id_log_tail.load(std::memory_order_relaxed);
  uint64_t total = 0;
  while (tail < head) {
    batch_.clear();
    uint64_t end = tail;
    StreamId last;
    // IDs are acked in log order and only up to the first one not yet committed: the log's tail
    // must never pass an ID that still needs its commit.
    while (end < head && end - tail < static_cast<uint64_t>(cfg_.ack_batch)) {
      const auto& e = seg_.id_log()[end % cap];
      const StreamId id{e.ms.load(std::memory_order_relaxed), e.seq.load(std::memory_order_relaxed)};
      if (id > committed) break;
      batch_.push_back(id);
      if (id > last) last = id;
      ++end;
    }
    if (end == tail) break;
    try {
      ack_batch(last);
    } catch (const RedisError& e) {
      if (e.is("P35BEHIND")) behind_ = committed;
      throw;
    }
    total += end - tail;
    tail = end;
    ac.id_log_tail.store(tail, std::memory_order_release);  // ingest may reuse these entries
    if (last > own_id(ac.acked)) publish_id(ac.acked, last);
    bell_ring_if_waiting(seg_.ingest().ingest_bell, seg_.stage(shm::StageId::Ingest).state,
                         static_cast<uint32_t>(shm::StageState::Backpressure));
  }
  stage_.block().acked.fetch_add(total, std::memory_order_relaxed);
  return total;
}

// The ack script found Redis's marker behind what this segment committed: Redis came back with
// less than it had. The same drop as ingest's (DESIGN §5): every stage restarts on a fresh segment.
int Ackd::drop_segment(const std::string& said) {
  // "P35BEHIND marker is <id>, batch reaches <id>"
  const size_t at = said.find("marker is ");
  const size_t comma = said.find(',', at);
  const std::string text = at == std::string::npos ? "" : said.substr(at + 10, comma - at - 10);
  drop_segment_behind_marker(seg_, marker_key_, "ackd", StreamId::parse(text).value_or(StreamId{}),
                             *behind_);
  release_name(conn_, cfg_, seg_.instance_token());
  return EXIT_FAILURE;
}

// Our marker is gone from Redis: nothing may be acked (README "When Redis fails"). Ingest and
// rollup restore it from the segment, or wait for the operator; ackd just waits for it.
void Ackd::wait_for_marker() {
  if (!marker_missing_logged_)
    spdlog::error("Failed to ack on {}: the commit marker {} is missing; acking nothing until "
                  "ingest or rollup restores it from the segment or an operator sets it",
                  cfg_.stream, marker_key_);
  marker_missing_logged_ = true;
  stage_.set_state(shm::StageState::WaitingRedis);
  sleep_unless_stopped(watchdog_bounded_ms(backoff_.next_delay_ms()));
}

int Ackd::run() {
  // Before anything reads `acked`: a predecessor killed inside publish_id() left it odd (issue 14).
  if (const auto repaired = repair_id(seg_.ackd().acked))
    spdlog::warn("Repaired the acked watermark left half-published by the previous p35-ackd: {}",
                 repaired->str());
  StatusLine status_line(seg_);
  const StopWakeups wakeups(&seg_.ingest().ackd_bell);
  const int idle_wait_ms = watchdog_bounded_ms(kIdleWaitMs);
  const int linger_ms = watchdog_bounded_ms(cfg_.ack_linger_ms);
  notify_ready_waiting_redis();  // the segment is attached: ready, whether or not Redis answers yet
  while (true) {
    if (!stage_.heartbeat()) {
      spdlog::error("Segment {} was removed or replaced under us; exiting", shm_path(seg_.name()));
      return EXIT_FAILURE;
    }
    if (!conn_.connected()) {
      if (!connect_with_retry(conn_, outage_, cfg_.reconnect_max_ms, &stage_)) break;
      stage_.set_state(shm::StageState::Running);
    }
    auto& bell = seg_.ingest().ackd_bell;
    const uint32_t seen = bell.load(std::memory_order_acquire);
    const auto& commits = seg_.rollup().commit_count;
    const uint64_t commits_before = commits.load(std::memory_order_acquire);
    uint64_t acked = 0;
    try {
      acked = ack_committed();
      if (marker_missing_logged_) {
        spdlog::info("Commit marker {} is back; acking again", marker_key_);
        marker_missing_logged_ = false;
        stage_.set_state(shm::StageState::Running);
      }
      status_line.update(shm::StageId::Ackd);
      outage_.succeeded();
      backoff_.reset();
    } catch (const RedisError& e) {
      if (e.kind() == RedisErrorKind::Auth) throw;
      if (behind_) return drop_segment(e.server_message());
      if (e.is("P35NOMARKER")) {
        wait_for_marker();
        continue;
      }
      outage_.failed("ack on " + cfg_.stream, e);
      conn_.disconnect();
      sleep_unless_stopped(backoff_.next_delay_ms());
      continue;
    }
    if (stop_requested()) break;
    // Rung by rollup after a commit (and by the stop signal). While traffic flows we ask for the
    // second commit after the ones just acked, so each XACK round (a wake-up of ackd and of Redis)
    // carries two commits; the linger bounds how long the first one's IDs wait for it. Idle, the
    // next commit rings us and the timeout only keeps the heartbeat and the segment check going
    // (both waits within a third of WatchdogSec).
    const bool flowing = acked > 0 && cfg_.ack_linger_ms > 0;
    const uint64_t want = commits_before + (flowing ? 2 : 1);
    seg_.ackd().bell_at_commit.store(want, std::memory_order_relaxed);
    // Pairs with the fence in rollup's apply_pending(): either it sees `want`, or we see its commit.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (commits.load(std::memory_order_relaxed) >= want) continue;
    bell_wait(bell, seen, flowing ? linger_ms : idle_wait_ms);
  }
  // SIGTERM: ack everything committed before leaving (rollup stops after ingest, ackd last).
  stage_.set_state(shm::StageState::Draining);
  notify_stopping();
  if (conn_.connected()) {
    try {
      ack_committed();
    } catch (const std::exception& e) {
      spdlog::warn("Failed to ack the last committed IDs: {}", e.what());
    }
  }
  spdlog::info("Stopped: acked up to {}", own_id(seg_.ackd().acked).str());
  return EXIT_SUCCESS;
}

}  // namespace p35
