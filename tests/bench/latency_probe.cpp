// Latency probes: send markers on a schedule, watch the shm watermarks and the Redis keys.
#include "latency_probe.hpp"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <map>
#include <stdexcept>

#include "keys.hpp"
#include "proc_stats.hpp"
#include "rules.hpp"

namespace p35::bench {

namespace {

constexpr int64_t kMinuteMs = 60000;
// No probe is sent this close to the end of a minute: its 1m snapshot window would close before
// the ~1 s snapshot period could show it, which measures the clock, not the pipeline.
constexpr int64_t kQuietBeforeMinuteEndMs = 2500;
// After its minute ends, the previous 1m snapshot stays readable until rollup replaces it
// (within about one snapshot period); a probe not seen by then is a miss.
constexpr int64_t kSnapshotGraceMs = 1500;

void sleep_us(int us) {
  timespec ts{0, static_cast<long>(us) * 1000};
  ::clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, nullptr);
}

// The polling thread runs at nice -10 while it measures (root only; otherwise unchanged), so that
// on a busy 2-core machine its 1 kHz wake-ups are not delayed behind the processes it watches;
// it sleeps most of the time, so it takes little from them. Children started later (by the same
// thread) get the old value back: the guard restores it.
class NiceGuard {
 public:
  NiceGuard() : tid_(static_cast<id_t>(::syscall(SYS_gettid))) {
    errno = 0;
    old_ = ::getpriority(PRIO_PROCESS, tid_);
    raised_ = errno == 0 && ::setpriority(PRIO_PROCESS, tid_, -10) == 0;
  }
  ~NiceGuard() {
    if (raised_) ::setpriority(PRIO_PROCESS, tid_, old_);
  }
  NiceGuard(const NiceGuard&) = delete;
  NiceGuard& operator=(const NiceGuard&) = delete;

 private:
  id_t tid_;
  int old_ = 0;
  bool raised_ = false;
};

std::string bucket_field(int index) { return "decision:UNKNOWN:" + LatencyProbe::decision_of(index); }
std::string snapshot_field(int index) { return "UNKNOWN:" + LatencyProbe::decision_of(index); }

}  // namespace

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto n = static_cast<double>(sorted.size());
  const auto rank = static_cast<size_t>(std::ceil(q / 100.0 * n));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

LatencyProbe::LatencyProbe(const RedisOptions& redis, ProbeOptions options)
    : conn_(redis), opt_(std::move(options)), seg_(Segment::open_readonly(opt_.segment)) {
  conn_.connect();
}

// Send times spread evenly over the run, skipping the last seconds of every minute.
std::vector<int64_t> LatencyProbe::schedule_ns(int64_t start_ns, int64_t start_wall_ms) const {
  const auto run_ms = static_cast<int64_t>(opt_.run_s * 1000);
  const auto quiet = [](int64_t wall) { return kMinuteMs - wall % kMinuteMs <= kQuietBeforeMinuteEndMs; };
  int64_t usable_ms = 0;
  for (int64_t t = 0; t < run_ms; t += 10) usable_ms += quiet(start_wall_ms + t) ? 0 : 10;
  const double step_ms = 0.98 * static_cast<double>(usable_ms) / std::max(opt_.probes, 1);
  std::vector<int64_t> out;
  double offset_ms = step_ms / 2;
  while (static_cast<int>(out.size()) < opt_.probes) {
    auto wall = start_wall_ms + static_cast<int64_t>(offset_ms);
    if (quiet(wall)) {  // jump just past the minute boundary
      offset_ms += static_cast<double>(kMinuteMs - wall % kMinuteMs + 20);
      continue;
    }
    out.push_back(start_ns + static_cast<int64_t>(offset_ms * 1e6));
    offset_ms += step_ms;
  }
  return out;
}

void LatencyProbe::send(ProbeRecord& p) {
  const std::string decision = decision_of(p.index);
  const std::string plan = "probe-" + std::to_string(p.index);
  p.sent_wall_ms = wall_ms();
  p.sent_ns = mono_ns();
  const Reply r = conn_.command(
      {"XADD", opt_.stream, "*", "plan_id", plan, "decision", decision, "reason", kReason});
  const auto id = StreamId::parse(r.str());
  if (!id) throw std::runtime_error("probe XADD returned no ID");
  p.id = *id;
  p.minute = static_cast<int64_t>(id->ms) / kMinuteMs;
}

bool LatencyProbe::done(const ProbeRecord& p) const {
  if (p.id.is_zero()) return false;
  for (size_t m = 0; m < kMomentCount; ++m)
    if (p.at_ns[m] < 0 && !(m == kSnapshot && p.snapshot_missed)) return false;
  return true;
}

void LatencyProbe::poll_shm(std::vector<ProbeRecord>& ps, int64_t now_ns) {
  // Bounded reads (a stage killed mid-publish leaves its lock odd): unknown counts as not yet.
  const StreamId counted = try_read_id(seg_.ingest().counted_pub).value_or(StreamId{});
  const StreamId acked = try_read_id(seg_.ackd().acked).value_or(StreamId{});
  for (auto& p : ps) {
    if (p.id.is_zero()) continue;
    if (p.at_ns[kCounted] < 0 && p.id <= counted) p.at_ns[kCounted] = now_ns;
    if (p.at_ns[kAcked] < 0 && p.id <= acked) p.at_ns[kAcked] = now_ns;
  }
}

// One round trip: HMGET of the outstanding probes' fields in their buckets and in the 1m
// snapshot. Only probes already counted can be committed, so the others cost nothing.
void LatencyProbe::poll_redis(std::vector<ProbeRecord>& ps, int64_t now_ns) {
  std::map<int64_t, std::vector<ProbeRecord*>> bucket_wait;
  std::vector<ProbeRecord*> snap_wait;
  const int64_t wall = wall_ms();
  for (auto& p : ps) {
    if (p.at_ns[kCounted] < 0) continue;
    if (p.at_ns[kBucket] < 0) bucket_wait[p.minute].push_back(&p);
    if (p.at_ns[kSnapshot] >= 0 || p.snapshot_missed) continue;
    if (wall >= (p.minute + 1) * kMinuteMs + kSnapshotGraceMs) {
      p.snapshot_missed = true;
      continue;
    }
    snap_wait.push_back(&p);
  }
  if (bucket_wait.empty() && snap_wait.empty()) return;
  for (const auto& [minute, list] : bucket_wait) {
    CommandArgs a{"HMGET", keys::bucket(opt_.key_prefix, minute)};
    for (const auto* p : list) a.add(bucket_field(p->index));
    conn_.append(a);
  }
  if (!snap_wait.empty()) {
    CommandArgs a{"HMGET", keys::decision_counts(opt_.key_prefix, "1m")};
    for (const auto* p : snap_wait) a.add(snapshot_field(p->index));
    conn_.append(a);
  }
  const auto mark = [&](const std::vector<ProbeRecord*>& list, Moment m) {
    const Reply r = conn_.read_reply();
    for (size_t i = 0; i < list.size() && i < r.size(); ++i)
      if (!reply_is_nil(r.element(i))) list[i]->at_ns[m] = now_ns;
  };
  for (const auto& [minute, list] : bucket_wait) mark(list, kBucket);
  if (!snap_wait.empty()) mark(snap_wait, kSnapshot);
}

ProbeResult LatencyProbe::run(const std::function<void()>& tick) {
  const NiceGuard nice;
  ProbeResult result;
  auto& ps = result.probes;
  const int64_t start_ns = mono_ns();
  const auto schedule = schedule_ns(start_ns, wall_ms());
  const int64_t run_end_ns = start_ns + static_cast<int64_t>(opt_.run_s * 1e9);
  const int64_t deadline_ns = run_end_ns + static_cast<int64_t>(opt_.straggler_s * 1e9);
  int64_t next_tick_ns = start_ns;
  for (;;) {
    int64_t now = mono_ns();
    if (ps.size() < schedule.size() && now >= schedule[ps.size()]) {
      ps.push_back({});
      ps.back().index = static_cast<int>(ps.size());
      send(ps.back());
      now = mono_ns();
    }
    poll_shm(ps, now);
    poll_redis(ps, now);
    ++result.polls;
    if (now >= next_tick_ns) {
      tick();
      next_tick_ns = now + 100'000'000;
    }
    const bool all_sent = ps.size() == schedule.size();
    const bool all_done = std::all_of(ps.begin(), ps.end(), [&](const auto& p) { return done(p); });
    if ((all_sent && now >= run_end_ns && all_done) || now >= deadline_ns) break;
    sleep_us(opt_.poll_sleep_us);
  }
  result.polls_per_s =
      static_cast<double>(result.polls) / (static_cast<double>(mono_ns() - start_ns) / 1e9);
  return result;
}

void LatencyProbe::add_to(test::Expectation& e, const ProbeResult& r) const {
  for (const auto& p : r.probes) {
    if (p.id.is_zero()) continue;
    const std::string minute = minute_key(p.minute);
    e.buckets[minute][bucket_field(p.index)] += 1;
    e.buckets[minute][std::string("reason:") + kReason] += 1;
    e.unknowns[minute][decision_of(p.index)] += 1;
    e.total += 1;
  }
}

}  // namespace p35::bench
