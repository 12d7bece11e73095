// One consumer name, one running instance (the ownership key and its fencing, DESIGN §5), and the
// snapshot lease as a fencing token (DESIGN §7): two pipelines with one consumer name, a holder
// paused past the ownership TTL, a lease holder frozen past its lease, a snapshot interval longer
// than the lease. Real redis-server, real stages, exact counts against p35-loadgen's expectation.
#include <catch2/catch.hpp>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "keys.hpp"
#include "pipeline_harness.hpp"

using namespace p35;
using namespace p35::test;

namespace {

const std::string kStream = "quantum:stream:apply.result";
const std::string kGroup = "p35_decision_intel";
const std::string kPrefix = "quantum:p35:";
const std::string kName = "cloned-host";

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < 30; ++i) out += v[i] + "\n";
  return out;
}

long long pending_of(Connection& c, const std::string& consumer) {
  try {
    return static_cast<long long>(
        c.command({"XPENDING", kStream, kGroup, "-", "+", "100000", consumer}).size());
  } catch (const RedisError& e) {
    if (e.server_message().rfind("NOGROUP", 0) == 0) return 0;
    throw;
  }
}

bool log_has(const Pipeline& p, Stage s, const std::string& text) {
  return file_tail(p.log_path(s), 100000).find(text) != std::string::npos;
}

size_t log_count(const Pipeline& p, Stage s, const std::string& text) {
  const std::string log = file_tail(p.log_path(s), 100000);
  size_t n = 0;
  for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

PipelineOptions same_name(std::map<std::string, std::string> extra = {}) {
  PipelineOptions po;
  po.consumer = kName;
  po.env = {{"P35_OWNER_TTL_MS", "2000"}, {"P35_BATCH_SIZE", "100"}, {"P35_STRINGS", "65536"},
            {"P35_REASONS_PER_MINUTE", "16384"}, {"P35_SYMBOL_REASONS_PER_MINUTE", "16384"}};
  for (auto& [k, v] : extra) po.env[k] = v;
  return po;
}

ChildProcess live_traffic(RedisServer& redis, const std::string& count, const std::string& rate,
                          const std::string& seed, const std::string& expect) {
  SpawnOptions so;
  so.log_path = redis.dir() + "/loadgen.log";
  return ChildProcess({env_or("P35_LOADGEN_BIN", "p35-loadgen"), "--redis-socket",
                       redis.socket_path(), "--count", count, "--rate", rate, "--seed", seed,
                       "--expect", expect, "--quiet", "--force"},
                      so);
}

void merge(Expectation& into, const Expectation& more) {
  for (const auto& [m, f] : more.buckets)
    for (const auto& [k, n] : f) into.buckets[m][k] += n;
  for (const auto& [m, f] : more.unknowns)
    for (const auto& [k, n] : f) into.unknowns[m][k] += n;
  into.total += more.total;
}

// Every entry counted exactly once, nothing pending, the marker at the stream's last ID.
void check_exact(RedisServer& redis, Connection& c, const Pipeline& holder, const Expectation& e,
                 const char* what) {
  const bool drained = wait_drained(redis, holder.options(), 60000);
  std::vector<std::string> diffs;
  wait_until([&] { diffs = compare_buckets(c, e, kPrefix); return diffs.empty(); }, 20000, 100);
  std::printf("%s: messages=%lld pending=%lld mismatches=%zu\n", what, e.total,
              pending_of(c, kName), diffs.size());
  INFO(join(diffs) << holder.logs_tail());
  CHECK(drained);
  CHECK(pending_of(c, kName) == 0);
  CHECK(diffs.empty());
}

}  // namespace

TEST_CASE("Two instances with one consumer name: the second waits, then takes over exactly",
          "[owner][redis]") {
  RedisServer redis;
  Connection c = redis.connect();
  Pipeline a(redis, same_name());
  a.start_all();
  REQUIRE(wait_until([&] { return log_has(a, Stage::Ingest, "is held by this instance"); }, 20000, 20));
  const std::string expect = redis.dir() + "/owner-expect.tsv";
  ChildProcess loadgen = live_traffic(redis, "24000", "3000", "141", expect);
  Pipeline b(redis, same_name());
  b.start_all();
  // B says who holds the name, in its logs and in its stage blocks, and does nothing meanwhile.
  REQUIRE(wait_until([&] {
    return log_has(b, Stage::Ingest, "is held by another instance") &&
           log_has(b, Stage::Rollup, "is held by another instance");
  }, 20000, 20));
  const std::string b_log = file_tail(b.log_path(Stage::Ingest), 100000);
  bool names_a = false;  // the stage of A that took the name first wrote its pid into the key
  for (Stage s : kStages)
    names_a = names_a || b_log.find("pid " + std::to_string(a.pid(s)) + " (p35-") != std::string::npos;
  CHECK(names_a);
  {  // p35-shm on B's segment: the stages wait for the name, and say for whom
    SpawnOptions so;
    so.log_path = redis.dir() + "/shm.txt";
    ChildProcess shm({env_or("P35_SHM_BIN", "p35-shm"), "--shm-name", b.shm_name()}, so);
    REQUIRE(shm.wait_exit(20000));
    const std::string out = file_tail(so.log_path, 1000);
    INFO(out);
    CHECK(out.find("waiting-name") != std::string::npos);
    CHECK(out.find("ingest waits: the consumer name is held by host") != std::string::npos);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(3000));  // traffic flows through A only
  CHECK_FALSE(log_has(b, Stage::Ingest, "New segment: entries up to"));
  CHECK_FALSE(log_has(b, Stage::Rollup, "Committing under marker"));
  // A dies for good; B takes the name once A's key expired and counts what A left.
  for (Stage s : kStages) a.kill(s);
  REQUIRE(wait_until([&] { return log_has(b, Stage::Ingest, "is held by this instance"); }, 20000, 20));
  REQUIRE(loadgen.wait_exit(60000));
  check_exact(redis, c, b, read_expectation(expect), "one name, second instance takes over");
}

TEST_CASE("A holder paused past the ownership TTL is fenced on resume; nothing is stranded",
          "[owner][redis]") {
  RedisServer redis;
  Connection c = redis.connect();
  // A long BLOCK: an unfenced XREADGROUP BLOCK sent by A before its pause would still wait in
  // Redis when B has taken over, and be served the next entries (stranding them in the pending
  // list of the name, which B has already re-read).
  const std::map<std::string, std::string> slow_block{{"P35_BLOCK_MS", "15000"},
                                                      {"P35_COMMAND_TIMEOUT_MS", "20000"}};
  Pipeline a(redis, same_name(slow_block));
  a.start_all();
  REQUIRE(wait_until([&] { return log_has(a, Stage::Ingest, "is held by this instance"); }, 20000, 20));
  Pipeline b(redis, same_name(slow_block));
  b.start_all();
  const std::string expect1 = redis.dir() + "/pause1.tsv", expect2 = redis.dir() + "/pause2.tsv";
  {
    ChildProcess first = live_traffic(redis, "6000", "3000", "142", expect1);
    REQUIRE(first.wait_exit(60000));
  }
  REQUIRE(wait_drained(redis, a.options(), 30000));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // A's ingest waits for entries
  for (Stage s : kStages) a.kill(s, SIGSTOP);
  REQUIRE(wait_until([&] { return log_has(b, Stage::Ingest, "Pending list re-read"); }, 20000, 20));
  ChildProcess second = live_traffic(redis, "9000", "3000", "143", expect2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));  // entries flow while A is paused
  for (Stage s : kStages) a.kill(s, SIGCONT);
  // A finds itself fenced: its rollup drops the segment, its stages exit.
  const bool fenced = wait_until([&] { return log_has(a, Stage::Rollup, "Fenced: consumer name"); }, 20000, 20);
  INFO(a.logs_tail());
  CHECK(fenced);
  REQUIRE(second.wait_exit(60000));
  // Restarted (systemd would), A waits as a second instance.
  for (Stage s : kStages) a.kill(s);
  a.start_all();
  CHECK(wait_until([&] { return log_has(a, Stage::Ingest, "is held by another instance"); }, 20000, 20));
  Expectation e = read_expectation(expect1);
  merge(e, read_expectation(expect2));
  check_exact(redis, c, b, e, "paused holder fenced");
}

TEST_CASE("A snapshot interval longer than the lease keeps the lease held", "[owner][lease][redis]") {
  RedisServer redis;
  Connection c = redis.connect();
  PipelineOptions px, py;
  px.consumer = "host-x";
  py.consumer = "host-y";
  px.env = py.env = {{"P35_SNAPSHOT_INTERVAL_MS", "5000"}};
  Pipeline x(redis, px), y(redis, py);
  x.start_all();
  REQUIRE(wait_until([&] { return !c.command({"GET", kPrefix + "lease"}).is_nil(); }, 20000, 20));
  y.start_all();
  const std::string first(c.command({"GET", kPrefix + "lease"}).str());
  // Three periods: the lease never lapses and never changes hands.
  int missing = 0, changed = 0;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(15000);
  while (std::chrono::steady_clock::now() < until) {
    const Reply l = c.command({"GET", kPrefix + "lease"});
    if (l.is_nil()) ++missing;
    else if (l.str() != first) ++changed;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const size_t took = log_count(x, Stage::Rollup, "Took the snapshot lease") +
                      log_count(y, Stage::Rollup, "Took the snapshot lease");
  const size_t lost = log_count(x, Stage::Rollup, "Lost the snapshot lease") +
                      log_count(y, Stage::Rollup, "Lost the snapshot lease");
  std::printf("lease with a 5 s snapshot interval: missing %d, changed %d samples of 150; took %zu, "
              "lost %zu\n", missing, changed, took, lost);
  INFO(x.logs_tail() << y.logs_tail());
  CHECK(missing == 0);
  CHECK(changed == 0);
  CHECK(took == 1);
  CHECK(lost == 0);
}

TEST_CASE("A lease holder frozen between its renewal and its replace cannot overwrite newer "
          "snapshots", "[owner][lease][redis]") {
  // Not a skip: scripts/deps.sh installs gdb, and without the freeze this case proves nothing.
  INFO("gdb (Debian package gdb; scripts/deps.sh installs it) at /usr/bin/gdb");
  REQUIRE(access("/usr/bin/gdb", X_OK) == 0);
  RedisServer redis;
  Connection c = redis.connect();
  PipelineOptions px, py;
  px.consumer = "host-x";
  py.consumer = "host-y";
  Pipeline x(redis, px);
  x.start_all();
  REQUIRE(wait_until([&] {
    const Reply l = c.command({"GET", kPrefix + "lease"});
    return !l.is_nil() && std::string(l.str()).rfind("host-x ", 0) == 0;
  }, 20000, 20));
  // X's first snapshots are written (so that its next replace is one of the traffic below).
  REQUIRE(wait_until([&] { return c.command({"EXISTS", kPrefix + "decision:counts:1m"}).integer() == 1; },
                     20000, 20));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // gdb attaches to X's rollup (stopping it while it loads symbols: X may lose and retake the
  // lease meanwhile, alone) and holds it at its next snapshot replace, exactly where the race is:
  // lease renewed, windows computed, replace next; 8 s there (the lease lapses after 3 s).
  SpawnOptions gdb_opt;
  gdb_opt.log_path = redis.dir() + "/gdb.log";
  ChildProcess gdb({"/usr/bin/gdb", "-q", "-batch", "-p", std::to_string(x.pid(Stage::Rollup)),
                    "-ex", "break p35::SnapshotWriter::replace_keys", "-ex", "continue",
                    "-ex", "delete", "-ex", "shell sleep 10", "-ex", "detach"},
                   gdb_opt);
  INFO(file_tail(redis.dir() + "/gdb.log"));
  REQUIRE(wait_until([&] {
    return file_tail(redis.dir() + "/gdb.log").find("Breakpoint 1 at") != std::string::npos;
  }, 60000, 20));
  REQUIRE(wait_until([&] {
    const Reply l = c.command({"GET", kPrefix + "lease"});
    return !l.is_nil() && std::string(l.str()).rfind("host-x ", 0) == 0;
  }, 20000, 20));
  // X's ingest pauses: the traffic is Y's to count, and X's next replace comes from re-reading
  // the buckets Y's commits changed; X then has nothing of its own to commit after the freeze, so
  // nothing legitimately rewrites the snapshots once the traffic is over.
  x.kill(Stage::Ingest, SIGSTOP);
  Pipeline y(redis, py);
  y.start_all();
  const std::string expect = redis.dir() + "/lease-expect.tsv";
  ChildProcess loadgen = live_traffic(redis, "6000", "3000", "144", expect);
  REQUIRE(wait_until([&] {
    const Reply l = c.command({"GET", kPrefix + "lease"});
    return !l.is_nil() && std::string(l.str()).rfind("host-y ", 0) == 0;
  }, 20000, 20));
  REQUIRE(loadgen.wait_exit(60000));
  // Y writes its snapshots of the traffic that flowed while X was frozen; they then stay as they
  // are (no new traffic).
  REQUIRE(wait_until([&] { return pending_of(c, "host-y") == 0; }, 30000, 50));
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  INFO(file_tail(redis.dir() + "/gdb.log"));
  REQUIRE(gdb.alive());  // X is still frozen: what follows is its replace after the freeze
  const auto y_wrote = hgetall(c, kPrefix + "decision:counts:1h");
  REQUIRE(gdb.wait_exit(30000));
  const bool refused = wait_until([&] {
    return log_has(x, Stage::Rollup, "Failed to replace the snapshots: P35LEASE");
  }, 10000, 20);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto after = hgetall(c, kPrefix + "decision:counts:1h");
  long long sum_y = 0, sum_after = 0;
  for (const auto& [k, v] : y_wrote) sum_y += std::stoll(v);
  for (const auto& [k, v] : after) sum_after += std::stoll(v);
  std::printf("frozen lease holder: refused=%d, 1h decisions %lld (new holder) -> %lld (after the "
              "old holder resumed)\n", refused ? 1 : 0, sum_y, sum_after);
  INFO(file_tail(redis.dir() + "/gdb.log") << x.logs_tail());
  CHECK(refused);
  CHECK(after == y_wrote);
  CHECK(sum_y > 0);
  x.kill(Stage::Ingest, SIGCONT);
}
