// Wall-clock steps under traffic (issue 14, part 6): the three real stages run under libfaketime,
// whose offset the test changes while they run (back 70 minutes, then forward 2 hours; the
// monotonic clocks untouched, as with a real step), while Redis and p35-loadgen keep the real
// clock. Counts must stay exact, ingest must keep counting, no stage may miss a systemd watchdog
// ping or restart, heartbeat ages must stay true, and the snapshots' window must follow Redis TIME.
#include <catch2/catch.hpp>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "daemon.hpp"
#include "keys.hpp"
#include "pipeline_harness.hpp"
#include "stream_id.hpp"

using namespace p35;
using namespace p35::test;

namespace {

const std::string kPrefix = "quantum:p35:";
const std::string kMarker = kPrefix + "commit:p35test";
constexpr const char* kFaketimeLib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
constexpr int kWatchdogUsec = 3000000;  // what the stages are told (WatchdogSec=3)

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::trunc);
  out << text << "\n";
}

Expectation generate(RedisServer& redis, const std::vector<std::string>& args, const std::string& expect) {
  std::vector<std::string> a = args;
  a.insert(a.end(), {"--expect", expect, "--quiet"});
  const std::string log = redis.dir() + "/loadgen-prefill.log";
  const auto st = run_loadgen(redis, a, log);
  INFO(file_tail(log));
  REQUIRE(st.exited_with(0));
  return read_expectation(expect);
}

void add(Expectation& into, const Expectation& e) {
  for (const auto& [m, f] : e.buckets)
    for (const auto& [k, n] : f) into.buckets[m][k] += n;
  for (const auto& [m, f] : e.unknowns)
    for (const auto& [k, n] : f) into.unknowns[m][k] += n;
  into.total += e.total;
}

int64_t redis_time_ms(Connection& c) {
  const Reply r = c.command({"TIME"});
  return std::stoll(std::string(reply_str(r.element(0)))) * 1000 +
         std::stoll(std::string(reply_str(r.element(1)))) / 1000;
}

// The stages' systemd notifications (NOTIFY_SOCKET), as systemd's watchdog sees them: the longest
// gap between two WATCHDOG=1 of each sender pid.
class WatchdogListener {
 public:
  explicit WatchdogListener(const std::string& path) : path_(path) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof a.sun_path);
    std::copy(path.begin(), path.end(), a.sun_path);
    ::unlink(path.c_str());
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const int on = 1;
    REQUIRE(::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) == 0);
    timeval tv{0, 100000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    thread_ = std::thread([this] { loop(); });
  }
  ~WatchdogListener() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  // The longest gap between pings of `pid` so far, counting the time since its last ping.
  int64_t max_gap_ms(pid_t pid) {
    std::lock_guard lock(mu_);
    const auto it = seen_.find(pid);
    if (it == seen_.end()) return -1;
    return std::max(it->second.max_gap_ms, now_mono_ms() - it->second.last_ms);
  }

 private:
  struct Seen {
    int64_t last_ms = 0;
    int64_t max_gap_ms = 0;
  };
  void loop() {
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    while (!stop_) {
      iovec iov{buf, sizeof buf - 1};
      msghdr m{};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      m.msg_control = control;
      m.msg_controllen = sizeof control;
      const ssize_t n = ::recvmsg(fd_, &m, 0);
      if (n <= 0) continue;
      const cmsghdr* c = CMSG_FIRSTHDR(&m);
      if (c == nullptr || c->cmsg_type != SCM_CREDENTIALS) continue;
      ucred cred{};
      std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
      if (std::string_view(buf, static_cast<size_t>(n)).find("WATCHDOG=1") == std::string_view::npos)
        continue;
      std::lock_guard lock(mu_);
      const int64_t now = now_mono_ms();
      auto [it, fresh] = seen_.try_emplace(cred.pid);
      if (!fresh) it->second.max_gap_ms = std::max(it->second.max_gap_ms, now - it->second.last_ms);
      it->second.last_ms = now;
    }
  }
  std::string path_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::map<pid_t, Seen> seen_;
};

// The 1h snapshot equals the sum of the decision fields of the buckets of the hour that ends at
// Redis's current minute (the window placed by Redis TIME, not by any host's clock).
std::string window_mismatch(Connection& c) {
  const int64_t minute = redis_time_ms(c) / 60000;
  std::map<std::string, long long> want;
  for (int64_t m = minute - 59; m <= minute; ++m)
    for (const auto& [f, v] : hgetall(c, keys::bucket(kPrefix, m)))
      if (f.rfind("decision:", 0) == 0) want[f.substr(9)] += std::stoll(v);
  std::map<std::string, long long> got;
  for (const auto& [f, v] : hgetall(c, keys::decision_counts(kPrefix, "1h")))
    if (std::stoll(v) != 0) got[f] = std::stoll(v);
  std::erase_if(want, [](const auto& kv) { return kv.second == 0; });
  if (got == want) return "";
  long long g = 0, w = 0;
  for (const auto& [k, v] : got) g += v;
  for (const auto& [k, v] : want) w += v;
  return "decision:counts:1h holds " + std::to_string(g) + " decisions, the buckets of the hour "
         "that Redis TIME ends " + std::to_string(w);
}

bool wait_window_right(RedisServer& redis, std::string& why) {
  return wait_until(
      [&] {
        Connection c = redis.connect();
        why = window_mismatch(c);
        return why.empty();
      },
      6000, 100);
}

// The stages' own wall clock, as rollup writes it into status (updated_ts), minus the real one.
bool wait_stage_offset(RedisServer& redis, int64_t offset_s, int64_t& seen_s) {
  return wait_until(
      [&] {
        Connection c = redis.connect();
        const auto st = hgetall(c, keys::status(kPrefix) + ":p35test");
        if (st.count("updated_ts") == 0) return false;
        seen_s = std::stoll(st.at("updated_ts")) - now_unix_ms() / 1000;
        return std::llabs(seen_s - offset_s) <= 5;
      },
      5000, 50);
}

// The marker and the stream's newest ID; behind: the marker trails it.
struct Progress {
  std::string marker;
  bool behind = false;
};
std::optional<StreamId> stream_last(Connection& c) {
  const Reply info = c.command({"XINFO", "STREAM", "quantum:stream:apply.result"});
  for (size_t i = 0; i + 1 < info.size(); i += 2)
    if (reply_str(info.element(i)) == "last-generated-id") return StreamId::parse(reply_str(info.element(i + 1)));
  return std::nullopt;
}

Progress progress(Connection& c) {
  const auto last = stream_last(c);
  const Reply m = c.command({"GET", kMarker});
  Progress p;
  p.marker = m.is_nil() ? "" : std::string(m.str());
  const auto marker = StreamId::parse(p.marker);
  p.behind = last && (!marker || *marker < *last);
  return p;
}

// The longest time the marker trailed the stream without moving: how long ingest (or the stages
// after it) stood still while entries waited.
class StallMeter {
 public:
  void sample(Connection& c) {
    const Progress p = progress(c);
    const int64_t now = now_mono_ms();
    if (p.marker != marker_ || !p.behind) {
      marker_ = p.marker;
      since_ms_ = now;
    }
    longest_ms_ = std::max(longest_ms_, now - since_ms_);
  }
  int64_t longest_ms() const { return longest_ms_; }

 private:
  std::string marker_;
  int64_t since_ms_ = now_mono_ms();
  int64_t longest_ms_ = 0;
};

// The stream's last ID at one moment of live traffic and how long the marker took to reach it:
// ingest keeps counting after a step when every checkpoint is reached within a deadline (a stage
// waiting on the stepped wall clock would stand still for the step, 70 min or 2 h).
class Checkpoint {
 public:
  static constexpr int64_t kDeadlineMs = 10000;
  Checkpoint(std::string what, Connection& c)
      : what_(std::move(what)), target_(stream_last(c).value_or(StreamId{})) {}
  // Polled along the way; true once the marker is at or past the target.
  bool reached(Connection& c) {
    if (reached_ms_ < 0) {
      const auto m = StreamId::parse(progress(c).marker);
      if (m && !(*m < target_)) reached_ms_ = now_mono_ms() - taken_ms_;
    }
    return reached_ms_ >= 0;
  }
  // Polls until reached or the deadline after the checkpoint was taken.
  bool reached_in_time(Connection& c) {
    wait_until([&] { return reached(c); }, static_cast<int>(std::max<int64_t>(
                   0, taken_ms_ + kDeadlineMs - now_mono_ms())), 20);
    return reached_ms_ >= 0 && reached_ms_ <= kDeadlineMs;
  }
  std::string describe() const {
    return what_ + ": the marker reached " + target_.str() + " after " +
           (reached_ms_ < 0 ? std::string("(never)") : std::to_string(reached_ms_) + " ms");
  }

 private:
  std::string what_;
  StreamId target_;
  int64_t taken_ms_ = now_mono_ms();
  int64_t reached_ms_ = -1;
};

// The heartbeat ages rollup's status hash shows, as sampled: the least and the greatest.
class AgeRange {
 public:
  void sample(Connection& c) {
    const auto st = hgetall(c, keys::status(kPrefix) + ":p35test");
    for (Stage s : kStages) {
      const auto it = st.find(std::string(stage_label(s)) + "_heartbeat_age_ms");
      if (it == st.end()) continue;
      const long long age = std::stoll(it->second);
      least_ = std::min(least_, age);
      most_ = std::max(most_, age);
    }
  }
  long long least() const { return least_; }
  long long most() const { return most_; }

 private:
  long long least_ = LLONG_MAX, most_ = LLONG_MIN;
};

}  // namespace

TEST_CASE("wall-clock steps back 70 min and forward 2 h under traffic: exact, live, watched",
          "[clock][pipeline][redis]") {
  // Not a skip: scripts/deps.sh installs it, and without it this test would prove nothing.
  INFO("libfaketime (Debian package faketime; scripts/deps.sh installs it) at " << kFaketimeLib);
  REQUIRE(access(kFaketimeLib, R_OK) == 0);
  RedisServer redis;
  const std::string step_file = redis.dir() + "/faketime";
  write_file(step_file, "+0");
  WatchdogListener watchdog(redis.dir() + "/notify.sock");
  PipelineOptions po;
  po.env["LD_PRELOAD"] = kFaketimeLib;
  po.env["FAKETIME_TIMESTAMP_FILE"] = step_file;
  po.env["FAKETIME_CACHE_DURATION"] = "1";      // the step is seen within a second
  po.env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1";  // a real step leaves CLOCK_MONOTONIC/BOOTTIME alone
  const std::string asan = env_or("ASAN_OPTIONS", "");
  po.env["ASAN_OPTIONS"] = (asan.empty() ? "" : asan + ":") + "verify_asan_link_order=0";
  po.env["NOTIFY_SOCKET"] = redis.dir() + "/notify.sock";
  po.env["WATCHDOG_USEC"] = std::to_string(kWatchdogUsec);
  po.env["P35_SNAPSHOT_INTERVAL_MS"] = "200";
  po.env["P35_STATUS_INTERVAL_MS"] = "200";
  Pipeline p(redis, roomy_tables(po));

  // A backlog whose entry IDs (and event times) span the ring: 2 h 50 min ago to 40 min ago, so
  // that every minute of live traffic must recycle a ring slot of the backlog.
  const int64_t real_ms = now_unix_ms();
  Expectation want = generate(redis, {"--count", "30000", "--explicit-ids", "--start-ms",
                                      std::to_string(real_ms - 170 * 60000), "--id-step-ms", "260",
                                      "--seed", "61"},
                              redis.dir() + "/expect-backlog.tsv");
  p.start_all();
  std::map<Stage, pid_t> pids;
  for (Stage s : kStages) pids[s] = p.pid(s);
  Connection c = redis.connect();
  REQUIRE(wait_until([&] { return c.command({"EXISTS", kMarker}).integer() == 1; }, 10000, 20));
  // Step back while ingest works through the backlog.
  write_file(step_file, "-70m");
  int64_t offset_s = 0;
  if (!wait_drained(redis, p.options(), 20000)) FAIL("backlog not drained\n" << p.logs_tail());
  CHECK(wait_stage_offset(redis, -70 * 60, offset_s));  // libfaketime took effect on the stages
  INFO("stages' clock offset " << offset_s << " s");
  std::string why;
  CHECK(wait_window_right(redis, why));
  INFO("after the step back: " << why);

  // Live traffic at 3,000/s on the real clock (IDs '*'); forward 2 h in the middle of it.
  const std::string live_expect = redis.dir() + "/expect-live.tsv";
  SpawnOptions so;
  so.log_path = redis.dir() + "/loadgen-live.log";
  ChildProcess live({env_or("P35_LOADGEN_BIN", "p35-loadgen"), "--redis-socket", redis.socket_path(),
                     "--rate", "3000", "--duration-s", "14", "--seed", "62", "--expect", live_expect,
                     "--quiet", "--force"},
                    so);
  StallMeter after_back, after_forward;
  AgeRange ages;  // heartbeat ages in status while the clock is stepped: live stages look live
  std::vector<Checkpoint> checkpoints;
  bool stepped_forward = false;
  const int64_t live_start = now_mono_ms();
  while (live.alive()) {
    const int64_t live_ms = now_mono_ms() - live_start;
    if (!stepped_forward && live_ms >= 7000) {
      write_file(step_file, "+120m");
      stepped_forward = true;
    }
    if ((checkpoints.empty() && live_ms >= 3000) || (checkpoints.size() == 1 && live_ms >= 10000))
      checkpoints.emplace_back(checkpoints.empty() ? "3 s into live traffic, 70 min back"
                                                   : "3 s after the step forward", c);
    for (auto& cp : checkpoints) cp.reached(c);
    (stepped_forward ? after_forward : after_back).sample(c);
    ages.sample(c);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  REQUIRE(live.exit_status()->exited_with(0));
  // Ingest keeps counting: each checkpoint's entries committed within a deadline. How long the
  // marker stood still is a figure: on this shared machine other load moves it.
  REQUIRE(checkpoints.size() == 2);
  for (auto& cp : checkpoints) {
    const bool in_time = cp.reached_in_time(c);
    INFO(cp.describe());
    CHECK(in_time);
  }
  std::printf("clock: marker stood still behind the stream for at most %lld ms after the step "
              "back, %lld ms after the step forward; %s; %s; heartbeat ages in status %lld..%lld ms\n",
              static_cast<long long>(after_back.longest_ms()),
              static_cast<long long>(after_forward.longest_ms()), checkpoints[0].describe().c_str(),
              checkpoints[1].describe().c_str(), ages.least(), ages.most());
  // Heartbeat ages true across the steps: never negative, never the step (70 min, 2 h); the
  // ceiling leaves a loaded machine's late beats alone.
  INFO("heartbeat ages in status under live traffic: " << ages.least() << ".." << ages.most() << " ms");
  CHECK(ages.least() >= 0);
  CHECK(ages.most() < 60000);
  CHECK(wait_stage_offset(redis, 120 * 60, offset_s));
  if (!wait_drained(redis, p.options(), 20000)) FAIL("live traffic not drained\n" << p.logs_tail());
  add(want, read_expectation(live_expect));

  const auto diffs = compare_buckets(c, want, kPrefix);
  INFO(diffs.size() << " differences, first: " << (diffs.empty() ? "" : diffs[0]));
  CHECK(diffs.empty());
  CHECK(wait_window_right(redis, why));
  INFO("after the step forward: " << why);
  const auto st = hgetall(c, keys::status(kPrefix) + ":p35test");
  for (Stage s : kStages) {
    const std::string name = stage_label(s);
    INFO(name);
    CHECK(p.alive(s));
    CHECK(p.pid(s) == pids[s]);
    CHECK(st.at(name + "_starts") == "1");
    // A fresh age shows up within a deadline (a stepped clock would show the step for good).
    long long age = -1;
    const bool fresh = wait_until([&] {
      age = std::stoll(hgetall(c, keys::status(kPrefix) + ":p35test").at(name + "_heartbeat_age_ms"));
      return age >= 0 && age < 2000;
    }, 10000, 50);
    INFO("heartbeat age in status " << age << " ms");
    CHECK(fresh);
    // No ping missed by as much as WatchdogSec: systemd would have killed the stage.
    const int64_t gap = watchdog.max_gap_ms(pids[s]);
    INFO("longest watchdog gap " << gap << " ms");
    CHECK((gap >= 0 && gap < kWatchdogUsec / 1000));
  }
}
