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
      loop_(seg, stage_, conn_, cfg.reconnect_max_ms,
            {shm::StageId::Rollup, "rollup", &seg.ingest().rollup_bell, false, ""}),
      committer_(cfg, seg),
      snapshots_(cfg, seg), status_(cfg, seg), claimer_(cfg), lease_(cfg, seg.instance_token()),
      owner_(cfg, seg, stage_, "p35-rollup") {}

void Rollup::abandon_segment(const std::string& why) {
  stage_.block().conflicts.fetch_add(1, std::memory_order_relaxed);
  spdlog::critical("Commit marker conflict: {}. Another host took over our entries (or Redis lost "
                   "data). Dropping the uncommitted counts: removing {} so that all stages restart "
                   "on a fresh segment and re-read the pending list against the marker",
                   why, shm_path(seg_.name()));
  if (seg_.still_linked()) ::unlink(shm_path(seg_.name()).c_str());
  release_name(conn_, cfg_, owner_.token());
}

void Rollup::abandon_fenced(const std::string& why) {
  stage_.block().conflicts.fetch_add(1, std::memory_order_relaxed);
  spdlog::critical("Fenced: consumer name {} is held by another instance ({}). This instance's "
                   "uncommitted counts are dropped (the holder re-reads the pending list and "
                   "counts them): removing {}; the restarted stages wait for the name",
                   cfg_.consumer, why, shm_path(seg_.name()));
  if (seg_.still_linked()) ::unlink(shm_path(seg_.name()).c_str());
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

int Rollup::run() {
  // Before Redis answers: ingest and ackd read `committed` meanwhile (issue 14).
  if (const auto repaired = committer_.repair())
    spdlog::warn("Repaired the committed watermark left half-published by the previous "
                 "p35-rollup: {}", repaired->str());
  // Ready (in the loop) once the segment is attached, before Redis answers and before the wait for
  // ingest on a fresh segment (attach()): systemd starts ingest only once rollup is ready.
  return loop_.run(*this);
}

StageWork::Attach Rollup::attach() {
  // One instance per consumer name: a second one waits here, before it commits anything.
  if (!owner_.wait_until_held(conn_)) {
    if (stop_requested()) return Attach::NotYet;
    loop_.segment_gone();
    return Attach::Exit;
  }
  return resolve_pending_commit();
}

StageWork::Attach Rollup::resolve_pending_commit() {
  StreamId marker;
  switch (committer_.start(conn_, marker)) {
    case Committer::Resolution::Applied:
      spdlog::info("The commit in flight before the restart reached Redis (marker {})", marker.str());
      break;
    case Committer::Resolution::Discarded:
      spdlog::info("The commit in flight before the restart did not reach Redis; committing again");
      break;
    case Committer::Resolution::Conflict:
      abandon_segment(committer_.conflict_text());
      return Attach::Exit;
    case Committer::Resolution::NoPending: break;
    case Committer::Resolution::MarkerMissing:  // logged; the operator sets the marker
      stage_.set_state(shm::StageState::WaitingRedis);
      sleep_unless_stopped(watchdog_bounded_ms(kMarkerRecheckMs));
      return Attach::NotYet;
    case Committer::Resolution::NotReady:  // fresh segment: ingest has not started it yet
      sleep_unless_stopped(50);
      return Attach::NotYet;
  }
  check_eviction_policy();
  spdlog::info("Committing under marker {} = {}", keys::marker(cfg_.key_prefix, cfg_.consumer),
               marker.str());
  return Attach::Ready;
}

StageWork::Step Rollup::step() {
  bell_seen_ = seg_.ingest().rollup_bell.load(std::memory_order_acquire);
  if (!owner_.renew_if_due(conn_)) return fenced();  // renewed on its own schedule, traffic or not
  uint64_t retries = 0;
  const auto outcome = committer_.commit(conn_, &retries);
  stage_.block().waits.fetch_add(retries, std::memory_order_relaxed);
  switch (outcome) {
    case Committer::Outcome::Fenced:
      owner_.fenced(committer_.conflict_text());
      return fenced();
    case Committer::Outcome::Conflict:
      abandon_segment(committer_.conflict_text());
      return Step::Exit;
    case Committer::Outcome::Committed: note_commit(); break;
    default: break;
  }
  claim_if_due();
  tick(now_mono_ms());
  // Refused whole: logged by the committer; counts kept, nothing acked, back off.
  return outcome == Committer::Outcome::Refused ? Step::Refused : Step::Done;
}

StageWork::Step Rollup::fenced() {
  abandon_fenced(owner_.holder().empty() ? committer_.conflict_text() : owner_.holder());
  return Step::Exit;
}

// A fresh connection, then the pending commit is resolved against the marker before anything else.
StageWork::Failure Rollup::failure(const RedisError&) {
  return {Failure::Kind::Outage, loop_.attached() ? "commit to Redis" : "resolve the commit marker"};
}

void Rollup::note_commit() {
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
  linger_ = backlog && cfg_.commit_linger_ms > 0;  // in wait(), once success is noted
}

// One round trip for what every tick asks (lease renewal, Redis TIME and the minute versions,
// group figures), so that an idle rollup wakes Redis and itself as little as it can; then the
// writes.
void Rollup::tick(int64_t now) {
  const bool snapshot_due = now >= next_snapshot_ms_, status_due = now >= next_status_ms_;
  // The lease is renewed every third of its expiry whatever the snapshot interval, so that an
  // interval longer than the lease does not let it lapse every period.
  const bool lease_due = snapshot_due || now >= next_lease_ms_;
  if (!lease_due && !status_due) return;
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
  // A lease just taken has no inputs read yet: write() reads them itself.
  if (snapshot_due) write_snapshots(now, inputs_too ? &inputs : nullptr);
  if (status_due) {
    status_.write(conn_, lease_.held(), &groups);
    next_status_ms_ = now + cfg_.status_interval_ms;
  }
}

void Rollup::write_snapshots(int64_t now, const SnapshotInputs* inputs) {
  if (lease_.held() && snapshots_.write(conn_, lease_, false, inputs) &&
      now - last_trim_ms_ >= kTrimIntervalMs) {
    // The rebuild allocates and frees many small nodes (bucket replies, window maps); hand the
    // freed pages back now and then, or glibc keeps them and private RSS stays at its
    // high-water mark (not after every rebuild: the next one would fault the pages in again).
    malloc_trim(0);
    last_trim_ms_ = now;
  }
  next_snapshot_ms_ = now + cfg_.snapshot_interval_ms;
}

void Rollup::wait() {
  if (linger_) {
    linger_ = false;
    sleep_unless_stopped(cfg_.commit_linger_ms);
  }
  auto& bell = seg_.ingest().rollup_bell;
  // Awaiting replicas (P35_WAIT_REPLICAS): the WAIT itself was the pause; ask again at once.
  if (bell.load(std::memory_order_acquire) == bell_seen_ && !committer_.awaiting_replicas()) {
    const int64_t until = std::min({next_snapshot_ms_, next_status_ms_, next_lease_ms_,
                                    owner_.next_renewal_ms()}) - now_mono_ms();
    bell_wait(bell, bell_seen_, static_cast<int>(std::clamp<int64_t>(until, 1, 1000)));
  }
}

void Rollup::drain() {
  if (!loop_.attached() || !conn_.connected()) {
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
