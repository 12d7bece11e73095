// Integration tests of the three real stages against a private redis-server: exact buckets for a
// varied corpus, snapshots, top-50 ties, trimmed entries, status, SIGTERM, Redis restart, SCRIPT
// FLUSH and a reboot (segment deleted).
#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "keys.hpp"
#include "pipeline_harness.hpp"
#include "rules.hpp"
#include "snapshots.hpp"
#include "stream_id.hpp"

using namespace p35;
using namespace p35::test;

TEST_CASE("The top reasons of a window from per-minute lists equal those of the summed map",
          "[snapshots]") {
  std::mt19937 rng(11);
  for (int round = 0; round < 200; ++round) {
    const size_t minutes = 1 + rng() % 60, names = 1 + rng() % 300, n = rng() % 70;
    std::vector<NameCounts> lists(minutes);
    std::map<std::string, uint64_t> sum;
    for (auto& l : lists)
      for (size_t k = rng() % (names + 1); k > 0; --k) {
        const std::string name = "r" + std::to_string(rng() % names);  // repeats across minutes
        const int64_t c = static_cast<int64_t>(rng() % 4);               // ties and zeros
        l.add(name, c);
        sum[name] += static_cast<uint64_t>(c);
      }
    std::vector<const NameCounts*> ptrs;
    for (const auto& l : lists) ptrs.push_back(&l);
    INFO("round " << round << " n " << n);
    REQUIRE(top_n_of_sums(ptrs, n) == top_n(sum, n));
  }
}

namespace {

const std::string kStream = "quantum:stream:apply.result";
const std::string kPrefix = "quantum:p35:";

int64_t wall_minute() {
  return std::chrono::duration_cast<std::chrono::minutes>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string join(const std::vector<std::string>& v, size_t max = 30) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < max; ++i) out += v[i] + "\n";
  if (v.size() > max) out += "... " + std::to_string(v.size() - max) + " more\n";
  return out;
}

std::string tmp_file(const RedisServer& r, const std::string& name) { return r.dir() + "/" + name; }

Expectation generate(RedisServer& redis, const std::vector<std::string>& args) {
  const std::string expect = tmp_file(redis, "expect-" + std::to_string(std::rand()) + ".tsv");
  std::vector<std::string> a = args;
  a.push_back("--expect");
  a.push_back(expect);
  a.push_back("--quiet");
  const auto st = run_loadgen(redis, a, tmp_file(redis, "loadgen.log"));
  INFO(file_tail(tmp_file(redis, "loadgen.log")));
  REQUIRE(st.exited_with(0));
  return read_expectation(expect);
}

void require_exact(RedisServer& redis, Pipeline& p, const Expectation& e, int timeout_ms = 120000) {
  INFO(p.logs_tail());
  REQUIRE(wait_drained(redis, p.options(), timeout_ms));
  Connection c = redis.connect();
  const auto diffs = compare_buckets(c, e, kPrefix);
  INFO(join(diffs));
  CHECK(diffs.empty());
}

// Decision counts of window W computed from the expectation, for the given current minute.
std::map<std::string, long long> expected_decisions(const Expectation& e, int64_t now, int minutes) {
  std::map<std::string, long long> m{{"EXECUTE", 0}, {"SKIP", 0}, {"BLOCKED", 0}, {"ERROR", 0}};
  for (const auto& [minute, fields] : e.buckets) {
    bool in = false;
    for (int64_t k = now - minutes + 1; k <= now; ++k) in = in || minute_key(k) == minute;
    if (!in) continue;
    for (const auto& [f, n] : fields)
      if (f.rfind("decision:", 0) == 0) m[f.substr(9)] += n;
  }
  return m;
}

// A top ZSET as read, highest score first.
std::vector<std::pair<std::string, long long>> read_top(Connection& c, const std::string& key) {
  const Reply z = c.command({"ZREVRANGE", key, "0", "-1", "WITHSCORES"});
  std::vector<std::pair<std::string, long long>> out;
  for (size_t i = 0; i + 1 < z.size(); i += 2)
    out.emplace_back(std::string(reply_str(z.element(i))), std::stoll(std::string(reply_str(z.element(i + 1)))));
  return out;
}

std::map<std::string, std::string> as_strings(const std::map<std::string, long long>& m) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : m) out[k] = std::to_string(v);
  return out;
}

}  // namespace

TEST_CASE("A varied corpus is counted exactly once into every bucket field, with TTLs",
          "[pipeline][redis]") {
  RedisServer redis;
  const auto e = generate(redis, {"--count", "8000", "--edge-cases", "--seed", "11"});
  REQUIRE(e.total == 8000);
  // Tables large enough for every distinct value of the corpus: every field must be exact.
  Pipeline p(redis, roomy_tables());
  p.start_all();
  require_exact(redis, p, e);

  Connection c = redis.connect();
  for (const auto& [minute, fields] : e.buckets) {
    const Reply ttl = c.command({"TTL", kPrefix + "bucket:" + minute});
    CHECK(ttl.integer() > 172800 - 120);
    CHECK(ttl.integer() <= 172800);
  }
  const auto status = hgetall(c, kPrefix + "status");
  CHECK(status.at("processed_total") == "8000");
  CHECK(status.count("trimmed_total") == 0);
  CHECK(status.at("consumer_name") == "p35test");
  for (const char* f : {"pending_estimate", "last_id", "last_ts", "service_start_ts", "version",
                        "ingest_rate", "ingest_state", "rollup_state", "ackd_state"})
    CHECK(status.count(f) == 1);

  // Snapshots: every window's decision counts equal the expectation for the current minute.
  for (const auto& w : keys::kWindows) {
    const bool ok = wait_until([&] {
      const auto want = as_strings(expected_decisions(e, wall_minute(), w.minutes));
      return hgetall(c, kPrefix + "decision:counts:" + w.name) == want;
    }, 5000, 50);
    INFO("window " << w.name);
    CHECK(ok);
    CHECK(c.command({"TTL", kPrefix + "decision:counts:" + w.name}).integer() > 86000);
  }
  // The 1h top-50 is the 50 largest reasons of the last hour: none larger left out (the window
  // ends at the current minute, so poll across a minute's turn).
  std::vector<std::string> top_wrong;
  const bool top_ok = wait_until([&] {
    const auto all = window_reasons(e, wall_minute(), 60);
    top_wrong = top_violations(read_top(c, kPrefix + "reason:top:1h"), all, 50);
    return all.size() > 50 && top_wrong.empty();
  }, 5000, 50);
  INFO(join(top_wrong));
  CHECK(top_ok);
  // The unknown-decision ZSET of 5m holds exactly the members of the last 5 minutes.
  const bool unknown_ok = wait_until([&] {
    std::map<std::string, std::string> want;
    const int64_t now = wall_minute();
    for (const auto& [minute, members] : e.unknowns)
      for (int64_t k = now - 4; k <= now; ++k)
        if (minute_key(k) == minute)
          for (const auto& [m, n] : members)
            want[m] = std::to_string(std::stoll(want.count(m) ? want[m] : "0") + n);
    const Reply z = c.command({"ZRANGE", kPrefix + "unknown_decision:top:5m", "0", "-1", "WITHSCORES"});
    std::map<std::string, std::string> got;
    for (size_t i = 0; i + 1 < z.size(); i += 2)
      got[std::string(reply_str(z.element(i)))] = std::string(reply_str(z.element(i + 1)));
    return !want.empty() && got == want;
  }, 5000, 50);
  CHECK(unknown_ok);
}

TEST_CASE("Top-50 keeps the smaller name when the 50th place is tied", "[pipeline][redis]") {
  RedisServer redis;
  Connection c = redis.connect();
  // 49 reasons with counts 100..52, then three tied at 10: only "tie-a" makes the cut.
  for (int r = 0; r < 49; ++r)
    for (int n = 0; n < 100 - r; ++n)
      c.append({"XADD", kStream, "*", "decision", "BLOCKED", "reason", "r" + std::to_string(100 + r)});
  for (const char* t : {"tie-c", "tie-a", "tie-b"})
    for (int n = 0; n < 10; ++n) c.append({"XADD", kStream, "*", "decision", "SKIP", "reason", t});
  const size_t total = [] { size_t s = 0; for (int r = 0; r < 49; ++r) s += size_t(100 - r); return s + 30; }();
  for (size_t i = 0; i < total; ++i) REQUIRE_FALSE(c.read_reply().is_error());
  Pipeline p(redis);
  p.start_all();
  INFO(p.logs_tail());
  REQUIRE(wait_drained(redis, p.options(), 60000));
  const bool ok = wait_until([&] {
    return c.command({"ZCARD", kPrefix + "reason:top:5m"}).integer() == 50;
  }, 5000, 50);
  REQUIRE(ok);
  std::map<std::string, long long> all{{"tie-a", 10}, {"tie-b", 10}, {"tie-c", 10}};
  for (int r = 0; r < 49; ++r) all["r" + std::to_string(100 + r)] = 100 - r;
  const auto wrong = top_violations(read_top(c, kPrefix + "reason:top:5m"), all, 50);
  INFO(join(wrong));
  CHECK(wrong.empty());
  CHECK(c.command({"ZSCORE", kPrefix + "reason:top:5m", "tie-a"}).str() == "10");
  CHECK(c.command({"ZSCORE", kPrefix + "reason:top:5m", "tie-b"}).is_nil());
  CHECK(c.command({"ZSCORE", kPrefix + "reason:top:5m", "tie-c"}).is_nil());
  CHECK(c.command({"ZSCORE", kPrefix + "reason:top:5m", "r100"}).str() == "100");
}

TEST_CASE("Status fields that only the first version wrote are removed once, ours and the totals kept",
          "[pipeline][redis]") {
  RedisServer redis;
  Connection c = redis.connect();
  // The first version's hash: a field it alone wrote, and ones we write (values to be replaced),
  // and a total we add to (kept as it is: the count goes on from it).
  c.command({"HSET", kPrefix + "status", "python_pid", "4242", "last_error", "boom", "last_id",
             "1-0", "consumer_name", "old-host", "processed_total", "1000"});
  for (int i = 0; i < 20; ++i)
    c.command({"XADD", kStream, "*", "decision", "EXECUTE", "reason", "none"});
  Pipeline p(redis);
  p.start_all();
  INFO(p.logs_tail());
  REQUIRE(wait_drained(redis, p.options(), 30000));
  const bool cleaned = wait_until([&] {
    const auto s = hgetall(c, kPrefix + "status");
    return s.count("version") == 1 && s.count("python_pid") == 0 && s.count("last_error") == 0;
  }, 10000, 50);
  const auto s = hgetall(c, kPrefix + "status");
  CHECK(cleaned);
  CHECK(s.at("consumer_name") == "p35test");
  CHECK(s.at("processed_total") == "1020");
  CHECK(file_tail(p.log_path(Stage::Rollup), 200).find("Removed 2 field(s) of " + kPrefix +
                                                       "status") != std::string::npos);
}

TEST_CASE("Pending entries whose message was trimmed are acked and counted as trimmed_total",
          "[pipeline][redis]") {
  RedisServer redis;
  Connection c = redis.connect();
  c.command({"XGROUP", "CREATE", kStream, "p35_decision_intel", "0", "MKSTREAM"});
  std::vector<std::string> ids;
  for (int i = 0; i < 10; ++i)
    ids.emplace_back(c.command({"XADD", kStream, "*", "decision", "EXECUTE", "reason", "x"}).str());
  // Our consumer read them (as before a crash), then the producer's MAXLEN trimmed 7 of them.
  c.command({"SET", kPrefix + "commit:p35test", "0-0"});
  c.command({"XREADGROUP", "GROUP", "p35_decision_intel", "p35test", "COUNT", "100", "STREAMS", kStream, ">"});
  for (int i = 0; i < 7; ++i) c.command({"XDEL", kStream, ids[static_cast<size_t>(i)]});
  Pipeline p(redis);
  p.start_all();
  INFO(p.logs_tail());
  REQUIRE(wait_drained(redis, p.options(), 30000));
  const bool ok = wait_until([&] {
    const auto s = hgetall(c, kPrefix + "status");
    return s.count("trimmed_total") && s.at("trimmed_total") == "7" && s.at("processed_total") == "3";
  }, 5000, 50);
  CHECK(ok);
  const auto b = hgetall(c, kPrefix + "bucket:" + minute_key(wall_minute()));
  const auto b1 = hgetall(c, kPrefix + "bucket:" + minute_key(wall_minute() - 1));
  const std::string n = b.count("decision:EXECUTE") ? b.at("decision:EXECUTE") : b1.at("decision:EXECUTE");
  CHECK(n == "3");
}

TEST_CASE("While traffic flows ackd holds a commit's acks for the next one, at most P35_ACK_LINGER_MS",
          "[pipeline][redis]") {
  RedisServer redis;
  Connection c = redis.connect();
  PipelineOptions o;
  o.env["P35_ACK_LINGER_MS"] = "1000";
  Pipeline p(redis, o);
  p.start_all();
  INFO(p.logs_tail());
  const auto pending = [&] {
    return c.command({"XPENDING", kStream, "p35_decision_intel"}).element(0)->integer;
  };
  const auto marker = [&] { return std::string(c.command({"GET", kPrefix + "commit:p35test"}).str()); };
  // The first entry after a quiet spell: its commit rings ackd at once.
  REQUIRE(wait_until([&] { return marker() == "0-0"; }, 30000));  // group and marker made
  c.command({"XADD", kStream, "*", "decision", "SKIP", "reason", "first"});
  REQUIRE(wait_drained(redis, p.options(), 30000));
  // ackd just acked: it now waits for the second commit, or 1 s. A lone second commit is held
  // until the linger ends, well before ackd's 5 s idle wake-up. Rounds back to back, each sent
  // as soon as ackd acked the one before: a loaded machine can delay a round's commit past the
  // linger (ackd then acks it at once, as the first after a quiet spell) or our view of its
  // release, so one round of five must show both; a linger that never holds, or one that ends
  // only at the idle wake-up, fails every round.
  std::string rounds;
  bool proved = false;
  for (int round = 1; round <= 5 && !proved; ++round) {
    const auto sent = std::chrono::steady_clock::now();
    const std::string id(c.command({"XADD", kStream, "*", "decision", "SKIP", "reason", "next"}).str());
    REQUIRE(wait_until([&] { return marker() == id; }, 30000, 5));
    const bool held = pending() == 1;
    REQUIRE(wait_until([&] { return pending() == 0; }, 30000, 5));
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::steady_clock::now() - sent).count();
    rounds += "round " + std::to_string(round) + ": " + (held ? "held" : "not held") +
              " after its commit, acked " + std::to_string(ms) + " ms after the XADD\n";
    proved = held && ms < 4000;
  }
  std::printf("ack linger 1000 ms:\n%s", rounds.c_str());
  INFO(rounds);
  CHECK(proved);
  CHECK(drained(c, p.options()));
}

TEST_CASE("SIGTERM stops each stage with exit 0 and leaves nothing committed unacked",
          "[pipeline][redis]") {
  RedisServer redis;
  const auto e = generate(redis, {"--count", "20000", "--seed", "5"});
  Pipeline p(redis, roomy_tables());
  p.start_all();
  // Stop in the target's stop order while work is in flight: ingest, rollup, ackd.
  REQUIRE(wait_until([&] {
    Connection c = redis.connect();
    return !c.command({"GET", kPrefix + "commit:p35test"}).is_nil() &&
           c.command({"GET", kPrefix + "commit:p35test"}).str() != "0-0";
  }, 20000));
  for (Stage s : {Stage::Ingest, Stage::Rollup, Stage::Ackd}) {
    const auto st = p.stop(s);
    INFO(stage_label(s) << ": " << st.describe() << "\n" << p.logs_tail());
    CHECK(st.exited_with(0));
  }
  Connection c = redis.connect();
  const std::string marker(c.command({"GET", kPrefix + "commit:p35test"}).str());
  // Everything at or below the marker is acked: the pending list holds only IDs above it.
  const Reply pend = c.command({"XPENDING", kStream, "p35_decision_intel", "-", "+", "1"});
  if (pend.size() > 0) {
    const auto first = StreamId::parse(reply_str(pend.element(0)->element[0]));
    CHECK(*first > *StreamId::parse(marker));
  }
  // And a restart finishes the job exactly.
  p.start_all();
  require_exact(redis, p, e);
}

TEST_CASE("A Redis restart (AOF) and a SCRIPT FLUSH mid-run keep the counts exact",
          "[pipeline][redis]") {
  RedisServerOptions ro;
  ro.appendonly = true;
  RedisServer redis(ro);
  const auto e = generate(redis, {"--count", "150000", "--seed", "7"});
  PipelineOptions po = roomy_tables();
  po.env["P35_BATCH_SIZE"] = "500";
  Pipeline p(redis, po);
  p.start_all();
  const auto committed_some = [&](long long at_least) {
    return wait_until([&] {
      try {
        Connection c = redis.connect();
        const auto s = hgetall(c, kPrefix + "status");
        return s.count("processed_total") && std::stoll(s.at("processed_total")) >= at_least;
      } catch (const std::exception&) {
        return false;
      }
    }, 60000, 5);
  };
  REQUIRE(committed_some(20000));
  redis.restart();
  REQUIRE(committed_some(60000));
  {
    Connection c = redis.connect();
    c.command({"SCRIPT", "FLUSH"});
  }
  REQUIRE(committed_some(90000));
  redis.kill();  // a crash: appendfsync always keeps every acknowledged write
  redis.start();
  require_exact(redis, p, e, 180000);
}

TEST_CASE("A reboot (all stages killed, segment deleted) re-reads the pending list exactly",
          "[pipeline][redis]") {
  RedisServer redis;
  const auto e = generate(redis, {"--count", "60000", "--seed", "9"});
  PipelineOptions po = roomy_tables();
  po.env["P35_BATCH_SIZE"] = "300";
  Pipeline p(redis, po);
  for (int round = 0; round < 5; ++round) {
    p.start_all();
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + 100 * round));  // let work start
    for (Stage s : kStages) p.kill(s);
    p.remove_segment();
  }
  p.start_all();
  require_exact(redis, p, e);
}

TEST_CASE("Stages started in reverse order and at the same instant count exactly",
          "[pipeline][redis]") {
  RedisServer redis;
  const auto e = generate(redis, {"--count", "30000", "--seed", "21"});
  Pipeline p(redis, roomy_tables());
  p.start(Stage::Ingest);
  p.start(Stage::Rollup);
  p.start(Stage::Ackd);
  require_exact(redis, p, e);
  // Again on a fresh segment, all three spawned back to back.
  for (Stage s : kStages) p.kill(s);
  p.remove_segment();
  const auto e2 = generate(redis, {"--count", "30000", "--seed", "22"});
  Expectation both = e;
  for (const auto& [m, f] : e2.buckets)
    for (const auto& [k, n] : f) both.buckets[m][k] += n;
  for (const auto& [m, f] : e2.unknowns)
    for (const auto& [k, n] : f) both.unknowns[m][k] += n;
  p.start_all();
  require_exact(redis, p, both);
}

TEST_CASE("CLIENT PAUSE of all writes mid-run is waited out and the counts stay exact",
          "[pipeline][redis]") {
  RedisServer redis;
  const auto e = generate(redis, {"--count", "100000", "--seed", "31"});
  PipelineOptions po = roomy_tables();
  po.env["P35_BATCH_SIZE"] = "500";
  po.env["P35_COMMAND_TIMEOUT_MS"] = "2000";  // shorter than the pause: timeouts happen too
  po.env["P35_BLOCK_MS"] = "1000";            // the timeout must exceed the XREADGROUP block
  Pipeline p(redis, po);
  p.start_all();
  Connection c = redis.connect();
  REQUIRE(wait_until([&] { return hgetall(c, kPrefix + "status").count("processed_total") == 1; }, 30000));
  c.command({"CLIENT", "PAUSE", "3000", "WRITE"});
  require_exact(redis, p, e);
  // One outage is logged once when it starts and once when it ends, not per retry.
  const std::string log = file_tail(p.log_path(Stage::Rollup), 200);
  size_t warnings = 0;
  for (size_t at = 0; (at = log.find("[warning] Failed to", at)) != std::string::npos; ++at) ++warnings;
  CHECK(warnings <= 2);
}

TEST_CASE("Minutes older than every window are committed, and empty windows read zero",
          "[pipeline][redis]") {
  RedisServer redis;
  // Entries from five hours ago (explicit IDs) spread over 200 minutes: more minutes than the
  // 128-slot ring holds, so slots are recycled once committed, all outside the 1 h window.
  const auto start_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch()).count() - 5 * 3600 * 1000;
  const auto e = generate(redis, {"--count", "12000", "--seed", "41", "--explicit-ids", "--start-ms",
                                  std::to_string(start_ms), "--id-step-ms", "1000"});
  REQUIRE(e.buckets.size() >= 190);
  Pipeline p(redis);
  p.start_all();
  require_exact(redis, p, e);
  Connection c = redis.connect();
  const std::map<std::string, std::string> zeros{{"EXECUTE", "0"}, {"SKIP", "0"}, {"BLOCKED", "0"}, {"ERROR", "0"}};
  for (const auto& w : keys::kWindows) {
    INFO("window " << w.name);
    CHECK(wait_until([&] { return hgetall(c, kPrefix + "decision:counts:" + w.name) == zeros; }, 30000));
    CHECK(c.command({"EXISTS", kPrefix + "reason:top:" + std::string(w.name)}).integer() == 0);
  }
  CHECK(c.command({"EXISTS", kPrefix + "unknown_decision:top:5m"}).integer() == 0);
}
