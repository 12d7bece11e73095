// The rollup stage loop: resolve a pending commit, group-commit, snapshots, status, shutdown.
#include "rollup.hpp"

#include <spdlog/spdlog.h>

#include <malloc.h>
#include <unistd.h>

#include <algorithm>

#include "futex.hpp"
#include "keys.hpp"
#include "marker.hpp"

namespace p35 {

namespace {
constexpr int kMarkerRecheckMs = 3000;  // a lost marker: how often to look for the operator's fix
}  // namespace

Rollup::Rollup(const Config& cfg, Segment& seg)
    : cfg_(cfg), seg_(seg), stage_(seg, shm::StageId::Rollup),
      conn_(RedisOptions::from_config(cfg, "p35-rollup:" + cfg.consumer)),
      outage_("rollup", &stage_.block()), backoff_(cfg.reconnect_max_ms), committer_(cfg, seg),
      snapshots_(cfg, seg), status_(cfg, seg), claimer_(cfg), lease_(cfg, seg.instance_token()),
      owner_(cfg, seg, stage_, "p35-rollup") {}

int Rollup::abandon_segment(const std::string& why) {
  stage_.block().conflicts.fetch_add(1, std::memory_order_relaxed);
  spdlog::critical("Commit marker conflict: {}. Another host took over our entries (or Redis lost "
                   "data). Dropping the uncommitted counts: removing {} so that all stages restart "
                   "on a fresh segment and re-read the pending list against the marker",
                   why, shm_path(seg_.name()));
  if (seg_.still_linked()) ::unlink(shm_path(seg_.name()).c_str());
  release_name(conn_, cfg_, owner_.token());
  return EXIT_FAILURE;
}

int Rollup::abandon_fenced(const std::string& why) {
  stage_.block().conflicts.fetch_add(1, std::memory_order_relaxed);
  spdlog::critical("Fenced: consumer name {} is held by another instance ({}). This instance's "
                   "uncommitted counts are dropped (the holder re-reads the pending list and "
                   "counts them): removing {}; the restarted stages wait for the name",
                   cfg_.consumer, why, shm_path(seg_.name()));
  if (seg_.still_linked()) ::unlink(shm_path(seg_.name()).c_str());
  return EXIT_FAILURE;
}

void Rollup::claim_if_due() {
  const int64_t now = now_mono_ms();
  if (now < next_claim_ms_) return;
  // Often enough that a dead owner's entries wait little longer than the threshold itself.
  next_claim_ms_ = now + std::clamp(cfg_.claim_idle_ms / 4, 1000, 30000);
  const ClaimStats st = claimer_.run_once(conn_);
  if (st.counted + st.trimmed + st.acked_only + st.legacy_acked > 0)
    spdlog::info("Take-over round: {} counted, {} trimmed, {} already counted, {} legacy acked, "
                 "{} lost races", st.counted, st.trimmed, st.acked_only, st.legacy_acked, st.conflicts);
}

// A policy that can evict our keys loses counts (allkeys-*: the markers, whose loss is then
// detected but not undone; volatile-*: the 48 h buckets). Read where the ACL allows INFO; said once
// per value in the log and always in status (redis_maxmemory_policy, redis_eviction_risk).
void Rollup::check_eviction_policy() {
  const std::string policy = read_eviction_policy(conn_);
  status_.set_eviction_policy(policy, policy_can_evict(policy));
  if (policy == eviction_policy_seen_) return;
  eviction_policy_seen_ = policy;
  if (policy.empty())
    spdlog::info("Could not read Redis's maxmemory-policy (INFO memory refused); not checked");
  else if (policy_can_evict(policy))
    spdlog::warn("Redis's maxmemory-policy is {}: under memory pressure it can evict {} and so lose "
                 "counts; use noeviction (README \"When Redis fails\")", policy,
                 policy.rfind("allkeys-", 0) == 0 ? "the commit markers and the buckets"
                                                  : "the buckets (they have a TTL)");
}

bool Rollup::ensure_connected() {
  while (!started_) {
    if (!conn_.connected() && !connect_with_retry(conn_, outage_, cfg_.reconnect_max_ms, &stage_))
      return false;
    try {
      // One instance per consumer name: a second one waits here, before it commits anything.
      if (!owner_.wait_until_held(conn_)) {
        segment_gone_ = !stop_requested();
        return false;
      }
      StreamId marker;
      switch (committer_.start(conn_, marker)) {
        case Committer::Resolution::Applied:
          spdlog::info("The commit in flight before the restart reached Redis (marker {})", marker.str());
          break;
        case Committer::Resolution::Discarded:
          spdlog::info("The commit in flight before the restart did not reach Redis; committing again");
          break;
        case Committer::Resolution::Conflict:
          conflict_at_start_ = true;
          return false;
        case Committer::Resolution::NoPending: break;
        case Committer::Resolution::MarkerMissing:  // logged; the operator sets the marker
          stage_.set_state(shm::StageState::WaitingRedis);
          sleep_unless_stopped(watchdog_bounded_ms(kMarkerRecheckMs));
          stage_.heartbeat();
          if (stop_requested()) return false;
          continue;
        case Committer::Resolution::NotReady:  // fresh segment: ingest has not started it yet
          sleep_unless_stopped(50);
          stage_.heartbeat();
          if (stop_requested()) return false;
          continue;
      }
      check_eviction_policy();
      started_ = true;
      spdlog::info("Committing under marker {} = {}", keys::marker(cfg_.key_prefix, cfg_.consumer),
                   marker.str());
      stage_.set_state(shm::StageState::Running);
    } catch (const RedisError& e) {
      if (e.kind() == RedisErrorKind::Auth) throw;
      outage_.failed("resolve the commit marker", e);
      conn_.disconnect();  // LOADING, BUSY...: start over on a fresh connection
      sleep_unless_stopped(backoff_.next_delay_ms());
      if (stop_requested()) return false;
    }
  }
  return true;
}

bool Rollup::step() {
  if (!owner_.renew_if_due(conn_)) {  // renewed on its own schedule, traffic or not
    fenced_ = true;
    return false;
  }
  uint64_t retries = 0;
  const auto outcome = committer_.commit(conn_, &retries);
  stage_.block().waits.fetch_add(retries, std::memory_order_relaxed);
  if (outcome == Committer::Outcome::Fenced) owner_.fenced(committer_.conflict_text());
  fenced_ = outcome == Committer::Outcome::Fenced;
  if (outcome == Committer::Outcome::Conflict || fenced_) return false;
  refused_ = outcome == Committer::Outcome::Refused;
  if (outcome == Committer::Outcome::Committed) {
    stage_.block().committed.fetch_add(1, std::memory_order_relaxed);
    snapshots_.note_commit(committer_.last_commit());
    // Group commit under a backlog: when ingest read only full batches since the last commit,
    // linger so that the next commit carries several batches. Redis then runs one HINCRBY per
    // field of several batches instead of one per field of each, while at live rates (batches
    // smaller than P35_BATCH_SIZE) every batch is still committed as soon as it is counted.
    auto& ib = seg_.stage(shm::StageId::Ingest);
    const uint64_t read = ib.read.load(std::memory_order_relaxed);
    const uint64_t batches = ib.batches.load(std::memory_order_relaxed);
    const uint64_t nb = batches - ingest_batches_at_commit_;
    const bool backlog = nb > 0 && read - ingest_read_at_commit_ >= nb * static_cast<uint64_t>(cfg_.batch_size);
    ingest_read_at_commit_ = read;
    ingest_batches_at_commit_ = batches;
    linger_ = backlog && cfg_.commit_linger_ms > 0;  // after the tick, once success is noted
  }
  claim_if_due();
  const int64_t now = now_mono_ms();
  const bool snapshot_due = now >= next_snapshot_ms_, status_due = now >= next_status_ms_;
  // The lease is renewed every third of its expiry whatever the snapshot interval, so that an
  // interval longer than the lease does not let it lapse every period.
  const bool lease_due = snapshot_due || now >= next_lease_ms_;
  if (!lease_due && !status_due) return true;
  // One round trip for what every tick asks (lease renewal, Redis TIME and the minute versions,
  // group figures), so that an idle rollup wakes Redis and itself as little as it can; then the
  // writes.
  const bool inputs_too = snapshot_due && lease_.held();
  if (lease_due) lease_.append_hold(conn_);
  if (inputs_too) snapshots_.append_inputs(conn_);
  if (status_due) status_.append_groups(conn_);
  Reply lease_reply, groups;
  SnapshotInputs inputs;
  if (lease_due) lease_reply = conn_.read_reply();
  if (inputs_too) inputs = snapshots_.read_inputs(conn_);
  if (status_due) groups = conn_.read_reply();
  if (lease_due) {
    lease_.take_reply(conn_, lease_reply);
    next_lease_ms_ = now + Lease::kRenewMs;
  }
  if (snapshot_due) {
    // A lease just taken has no inputs read yet: write() reads them itself.
    if (lease_.held() && snapshots_.write(conn_, lease_, false, inputs_too ? &inputs : nullptr) &&
        now - last_trim_ms_ >= kTrimIntervalMs) {
      // The rebuild allocates and frees many small nodes (bucket replies, window maps); hand the
      // freed pages back now and then, or glibc keeps them and private RSS stays at its
      // high-water mark (not after every rebuild: the next one would fault the pages in again).
      malloc_trim(0);
      last_trim_ms_ = now;
    }
    next_snapshot_ms_ = now + cfg_.snapshot_interval_ms;
  }
  if (status_due) {
    status_.write(conn_, lease_.held(), &groups);
    next_status_ms_ = now + cfg_.status_interval_ms;
    status_line_.update(shm::StageId::Rollup);
  }
  return true;
}

int Rollup::run() {
  // Before Redis answers: ingest and ackd read `committed` meanwhile (issue 14).
  if (const auto repaired = committer_.repair())
    spdlog::warn("Repaired the committed watermark left half-published by the previous "
                 "p35-rollup: {}", repaired->str());
  const StopWakeups wakeups(&seg_.ingest().rollup_bell);
  // Ready once the segment is attached, before Redis answers and before the wait for ingest on a
  // fresh segment below (ensure_connected): systemd starts ingest only once rollup is ready.
  notify_ready_waiting_redis();
  while (!stop_requested()) {
    if (!stage_.heartbeat()) {
      spdlog::error("Segment {} was removed or replaced under us; exiting", shm_path(seg_.name()));
      return EXIT_FAILURE;
    }
    if (!ensure_connected()) {
      if (conflict_at_start_) return abandon_segment(committer_.conflict_text());
      if (segment_gone_) {
        spdlog::error("Segment {} was removed or replaced under us; exiting", shm_path(seg_.name()));
        return EXIT_FAILURE;
      }
      break;
    }
    auto& bell = seg_.ingest().rollup_bell;
    const uint32_t seen = bell.load(std::memory_order_acquire);
    try {
      if (!step())
        return fenced_ ? abandon_fenced(owner_.holder().empty() ? committer_.conflict_text()
                                                                : owner_.holder())
                       : abandon_segment(committer_.conflict_text());
      outage_.succeeded();
      if (refused_) {  // logged by the committer; counts kept, nothing acked
        sleep_unless_stopped(watchdog_bounded_ms(backoff_.next_delay_ms()));
        continue;
      }
      backoff_.reset();
      if (linger_) {
        linger_ = false;
        sleep_unless_stopped(cfg_.commit_linger_ms);
      }
    } catch (const RedisError& e) {
      if (e.kind() == RedisErrorKind::Auth) throw;
      outage_.failed("commit to Redis", e);
      stage_.set_state(shm::StageState::WaitingRedis);
      conn_.disconnect();  // a fresh connection, then the pending commit is resolved first
      started_ = false;  // resolve the pending commit against the marker before anything else
      sleep_unless_stopped(backoff_.next_delay_ms());
      continue;
    }
    // Awaiting replicas (P35_WAIT_REPLICAS): the WAIT itself was the pause; ask again at once.
    if (bell.load(std::memory_order_acquire) == seen && !committer_.awaiting_replicas()) {
      const int64_t until = std::min({next_snapshot_ms_, next_status_ms_, next_lease_ms_,
                                      owner_.next_renewal_ms()}) - now_mono_ms();
      bell_wait(bell, seen, static_cast<int>(std::clamp<int64_t>(until, 1, 1000)));
    }
  }
  finish();
  return EXIT_SUCCESS;
}

void Rollup::finish() {
  stage_.set_state(shm::StageState::Draining);
  notify_stopping();
  if (!started_ || !conn_.connected()) {
    spdlog::info("Stopped without a final commit (Redis unavailable); ingest's counts stay in the "
                 "segment for the next start");
    return;
  }
  try {
    if (committer_.commit(conn_) == Committer::Outcome::Fenced) {
      spdlog::warn("Stopped without a final commit: consumer name {} is held by another instance",
                   cfg_.consumer);
      return;
    }
    if (lease_.hold(conn_)) snapshots_.write(conn_, lease_, true);
    status_.write(conn_, lease_.held());
    lease_.release(conn_);  // another host may take over the snapshots at once
    spdlog::info("Stopped: committed up to {}, final snapshots written", committer_.committed().str());
  } catch (const std::exception& e) {
    spdlog::warn("Failed to write the final commit and snapshots: {}", e.what());
  }
}

}  // namespace p35
