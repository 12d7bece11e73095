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
      loop_(seg, stage_, conn_, cfg.reconnect_max_ms,
            {shm::StageId::Ackd, "ackd", &seg.ingest().ackd_bell, false, ""}),
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
  // Bounded: rollup dead inside publish_id() leaves the lock odd until it restarts and
  // republishes (its bell then wakes us); until then there is nothing we may ack.
  const std::optional<StreamId> committed_now = try_read_id(seg_.rollup().committed);
  if (!committed_now) return 0;
  const StreamId committed = *committed_now;
  const uint64_t head = seg_.ingest().id_log_head.load(std::memory_order_acquire);
  uint64_t tail = ac.id_log_tail.load(std::memory_order_relaxed);
  uint64_t total = 0;
  while (tail < head) {
    StreamId last;
    const uint64_t end = gather_batch(tail, head, committed, last);
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

// IDs are acked in log order and only up to the first one not yet committed: the log's tail
// must never pass an ID that still needs its commit.
uint64_t Ackd::gather_batch(uint64_t tail, uint64_t head, StreamId committed, StreamId& last) {
  const uint64_t cap = seg_.caps().id_log_cap;
  batch_.clear();
  uint64_t end = tail;
  while (end < head && end - tail < static_cast<uint64_t>(cfg_.ack_batch)) {
    const auto& e = seg_.id_log()[end % cap];
    const StreamId id{e.ms.load(std::memory_order_relaxed), e.seq.load(std::memory_order_relaxed)};
    if (id > committed) break;
    batch_.push_back(id);
    if (id > last) last = id;
    ++end;
  }
  return end;
}

// The ack script found Redis's marker behind what this segment committed: Redis came back with
// less than it had. The same drop as ingest's (DESIGN §5): every stage restarts on a fresh segment.
void Ackd::drop_segment(const std::string& said) {
  // "P35BEHIND marker is <id>, batch reaches <id>"
  const size_t at = said.find("marker is ");
  const size_t comma = said.find(',', at);
  const std::string text = at == std::string::npos ? "" : said.substr(at + 10, comma - at - 10);
  drop_segment_behind_marker(seg_, marker_key_, "ackd", StreamId::parse(text).value_or(StreamId{}),
                             *behind_);
  release_name(conn_, cfg_, seg_.instance_token());
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
  sleep_unless_stopped(watchdog_bounded_ms(loop_.backoff().next_delay_ms()));
}

int Ackd::run() {
  // Before anything reads `acked`: a predecessor killed inside publish_id() left it odd (issue 14).
  if (const auto repaired = repair_id(seg_.ackd().acked))
    spdlog::warn("Repaired the acked watermark left half-published by the previous p35-ackd: {}",
                 repaired->str());
  idle_wait_ms_ = watchdog_bounded_ms(kIdleWaitMs);
  linger_ms_ = watchdog_bounded_ms(cfg_.ack_linger_ms);
  return loop_.run(*this);
}

StageWork::Step Ackd::step() {
  bell_seen_ = seg_.ingest().ackd_bell.load(std::memory_order_acquire);
  commits_before_ = seg_.rollup().commit_count.load(std::memory_order_acquire);
  acked_ = ack_committed();
  if (marker_missing_logged_) {
    spdlog::info("Commit marker {} is back; acking again", marker_key_);
    marker_missing_logged_ = false;
    stage_.set_state(shm::StageState::Running);
  }
  return Step::Done;
}

StageWork::Failure Ackd::failure(const RedisError& e) {
  if (behind_) {
    drop_segment(e.server_message());
    return {Failure::Kind::Exit, {}};
  }
  if (e.is("P35NOMARKER")) {
    wait_for_marker();
    return {Failure::Kind::Handled, {}};
  }
  return {Failure::Kind::Outage, "ack on " + cfg_.stream};
}

// Rung by rollup after a commit (and by the stop signal). While traffic flows we ask for the
// second commit after the ones just acked, so each XACK round (a wake-up of ackd and of Redis)
// carries two commits; the linger bounds how long the first one's IDs wait for it. Idle, the
// next commit rings us and the timeout only keeps the heartbeat and the segment check going.
void Ackd::wait() {
  const bool flowing = acked_ > 0 && cfg_.ack_linger_ms > 0;
  const uint64_t want = commits_before_ + (flowing ? 2 : 1);
  seg_.ackd().bell_at_commit.store(want, std::memory_order_relaxed);
  // Pairs with the fence in rollup's apply_pending(): either it sees `want`, or we see its commit.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (seg_.rollup().commit_count.load(std::memory_order_relaxed) >= want) return;
  bell_wait(seg_.ingest().ackd_bell, bell_seen_, flowing ? linger_ms_ : idle_wait_ms_);
}

// SIGTERM: ack everything committed before leaving (rollup stops after ingest, ackd last).
void Ackd::drain() {
  if (conn_.connected()) {
    try {
      ack_committed();
    } catch (const std::exception& e) {
      spdlog::warn("Failed to ack the last committed IDs: {}", e.what());
    }
  }
  spdlog::info("Stopped: acked up to {}", own_id(seg_.ackd().acked).str());
}

}  // namespace p35
