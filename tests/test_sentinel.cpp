// Redis Sentinel (issue 17): the real stages and p35-loadgen against a primary, one replica and
// three sentinels on loopback, through a forced failover under load, the primary SIGKILLed while
// its replica lags, and the old primary back as a replica. After each: every entry of the stream
// the new primary holds counted exactly once, nothing pending, one move logged per stage.
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <signal.h>

#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "keys.hpp"
#include "pipeline_harness.hpp"
#include "redis_fixture.hpp"
#include "rules.hpp"
#include "stream_id.hpp"

namespace p35::test {
namespace {

using Clock = std::chrono::steady_clock;

long long ms_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
}

// The expected buckets of every entry `conn`'s stream holds, by the rules of common/rules.hpp, in
// the layout compare_buckets() checks (read in pages of 10,000 entries).
Expectation expectation_from_stream(Connection& conn, const std::string& stream) {
  Expectation e;
  Normalized n;
  std::string start = "-";
  while (true) {
    const Reply r = conn.command({"XRANGE", stream, start, "+", "COUNT", "10000"});
    if (r.size() == 0) break;
    for (size_t i = 0; i < r.size(); ++i) {
      const redisReply* entry = r.element(i);
      const std::string_view id_text = reply_str(entry->element[0]);
      const StreamId id = StreamId::parse(id_text).value();
      const redisReply* fv = entry->element[1];
      std::vector<Field> fields;
      for (size_t k = 0; k + 1 < fv->elements; k += 2)
        fields.push_back({reply_str(fv->element[k]), reply_str(fv->element[k + 1])});
      normalize(fields, static_cast<int64_t>(id.ms), n);
      const std::string minute = minute_key(n.minute);
      auto& bucket = e.buckets[minute];
      ++bucket["decision:" + n.decision_label()];
      ++bucket["reason:" + n.reason];
      if (!n.symbol.empty()) ++bucket["symbol_reason:" + n.symbol + ":" + n.reason];
      if (n.decision == Decision::Unknown) ++e.unknowns[minute][n.unknown_member()];
      ++e.total;
      start = "(" + std::string(id_text);
    }
  }
  return e;
}

std::set<std::string> stream_ids(Connection& conn, const std::string& stream) {
  std::set<std::string> ids;
  std::string start = "-";
  while (true) {
    const Reply r = conn.command({"XRANGE", stream, start, "+", "COUNT", "10000"});
    if (r.size() == 0) break;
    for (size_t i = 0; i < r.size(); ++i) {
      const std::string id(reply_str(r.element(i)->element[0]));
      ids.insert(id);
      start = "(" + id;
    }
  }
  return ids;
}

// Entries the group has delivered and acked: up to last-delivered-id, not in the pending list.
std::vector<std::string> acked_ids(Connection& conn, const PipelineOptions& opt) {
  std::string last_delivered;
  const Reply groups = conn.command({"XINFO", "GROUPS", opt.stream});
  for (size_t g = 0; g < groups.size(); ++g) {
    const redisReply* e = groups.element(g);
    for (size_t k = 0; k + 1 < e->elements; k += 2)
      if (reply_str(e->element[k]) == "last-delivered-id")
        last_delivered = std::string(reply_str(e->element[k + 1]));
  }
  std::set<std::string> pending;
  const Reply p = conn.command({"XPENDING", opt.stream, "p35_decision_intel", "-", "+", "1000000"});
  for (size_t i = 0; i < p.size(); ++i) pending.insert(std::string(reply_str(p.element(i)->element[0])));
  std::vector<std::string> acked;
  for (const std::string& id : stream_ids(conn, opt.stream)) {
    if (StreamId::parse(id).value() > StreamId::parse(last_delivered).value()) break;
    if (pending.count(id) == 0) acked.push_back(id);
  }
  return acked;
}

// Everything drained on `server`: nothing pending, the group delivered up to the stream's last
// ID, and the marker there. (Not drained() of the harness: a promoted replica reports the group's
// lag as nil in Redis 7.0, its entries-read counter is not replicated.)
bool drained_on(RedisServer& server, const PipelineOptions& opt) {
  try {
    Connection c = server.connect();
    std::string last, delivered;
    long long pending = -1;
    const Reply info = c.command({"XINFO", "STREAM", opt.stream});
    for (size_t i = 0; i + 1 < info.size(); i += 2)
      if (reply_str(info.element(i)) == "last-generated-id")
        last = std::string(reply_str(info.element(i + 1)));
    const Reply groups = c.command({"XINFO", "GROUPS", opt.stream});
    for (size_t g = 0; g < groups.size(); ++g) {
      const redisReply* e = groups.element(g);
      for (size_t k = 0; k + 1 < e->elements; k += 2) {
        const auto name = reply_str(e->element[k]);
        if (name == "pending") pending = e->element[k + 1]->integer;
        if (name == "last-delivered-id") delivered = std::string(reply_str(e->element[k + 1]));
      }
    }
    const Reply marker = c.command({"GET", keys::marker(opt.key_prefix, opt.consumer)});
    return pending == 0 && delivered == last && marker.str() == last;
  } catch (const RedisError&) {
    return false;
  }
}

std::string role_of(RedisServer& server) {
  try {
    Connection c = server.connect();
    return std::string(reply_str(c.command({"ROLE"}).element(0)));
  } catch (const RedisError&) {
    return "down";
  }
}

// A primary (A), its replica (B), three sentinels; the stages as an ACL user created on both
// nodes (ACLs are not replicated), resolving the primary through the sentinels.
struct Topology {
  std::unique_ptr<RedisServer> a, b;
  std::vector<std::unique_ptr<SentinelServer>> sentinels;
  std::string sentinel_list;

  Topology() {
    // No 5 s pause before a full sync (Redis 7.0's default diskless delay): a node that comes
    // back, or an old primary turned replica, would hold WAIT that long.
    RedisServerOptions primary;
    primary.tcp = true;
    primary.extra_args = {"--repl-diskless-sync-delay", "0"};
    a = std::make_unique<RedisServer>(primary);
    RedisServerOptions replica;
    replica.tcp = true;
    replica.extra_args = {"--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1",
                          std::to_string(a->port())};
    b = std::make_unique<RedisServer>(replica);
    for (int i = 0; i < 3; ++i) {
      sentinels.push_back(std::make_unique<SentinelServer>(a->dir(), a->port()));
      sentinel_list += (i ? "," : "") + sentinels.back()->address();
    }
  }
  RedisServer& by_port(int port) { return port == a->port() ? *a : *b; }
  // Every sentinel names `server` as the primary, knows the other two sentinels (and a replica,
  // with need_replica), and the server says it is the primary.
  bool settled_on(RedisServer& server, bool need_replica = true) {
    for (auto& s : sentinels) {
      try {
        Connection c = s->connect();
        const Reply addr = c.command({"SENTINEL", "get-master-addr-by-name", "mymaster"});
        if (reply_str(addr.element(1)) != std::to_string(server.port())) return false;
        if (c.command({"SENTINEL", "sentinels", "mymaster"}).size() != 2) return false;
        if (need_replica && c.command({"SENTINEL", "replicas", "mymaster"}).size() == 0)
          return false;
      } catch (const RedisError&) {
        return false;
      }
    }
    return role_of(server) == "master";
  }
  // A good replica for a forced failover: it says it is connected to `primary`, and every
  // sentinel lists it without a down flag.
  bool replica_ready(RedisServer& replica) {
    try {
      Connection c = replica.connect();
      const Reply role = c.command({"ROLE"});
      if (reply_str(role.element(0)) != "slave" || reply_str(role.element(3)) != "connected")
        return false;
      for (auto& s : sentinels) {
        Connection sc = s->connect();
        const Reply reps = sc.command({"SENTINEL", "replicas", "mymaster"});
        bool good = false;
        for (size_t i = 0; i < reps.size(); ++i) {
          const redisReply* r = reps.element(i);
          std::string port, flags;
          for (size_t k = 0; k + 1 < r->elements; k += 2) {
            if (reply_str(r->element[k]) == "port") port = reply_str(r->element[k + 1]);
            if (reply_str(r->element[k]) == "flags") flags = reply_str(r->element[k + 1]);
          }
          if (port == std::to_string(replica.port()) && flags == "slave") good = true;
        }
        if (!good) return false;
      }
      return true;
    } catch (const RedisError&) {
      return false;
    }
  }
};

StreamId marker_on(RedisServer& server, const PipelineOptions& opt) {
  Connection c = server.connect();
  return StreamId::parse(c.command({"GET", keys::marker(opt.key_prefix, opt.consumer)}).str())
      .value_or(StreamId{});
}

// Milliseconds from t0 to the first commit on `server` as primary: its marker passes every value
// the old primary's marker had (`old_max` before the failure, and what the old primary still
// answers); what the new primary replicated from the old one never does.
// Stages that exit meanwhile (a segment dropped because the new primary lacks its reads) are
// restarted at once, as systemd's Restart=on-failure does (after RestartSec=500ms there).
long long first_commit_ms(RedisServer& server, RedisServer& old_primary, StreamId old_max,
                          Pipeline& p, Clock::time_point t0, int& restarts) {
  const PipelineOptions& opt = p.options();
  const bool ok = wait_until(
      [&] {
        restarts += p.restart_exited();
        try {
          if (old_primary.running()) old_max = std::max(old_max, marker_on(old_primary, opt));
        } catch (const RedisError&) {
          // the old primary is gone: old_max is what it had
        }
        try {
          if (role_of(server) != "master") return false;
          return marker_on(server, opt) > old_max;
        } catch (const RedisError&) {
          return false;
        }
      },
      30000, 5);
  return ok ? ms_since(t0) : -1;
}

std::unique_ptr<ChildProcess> live_loadgen(const Topology& t, const std::string& dir, int seconds,
                                           int seed) {
  SpawnOptions so;
  so.log_path = dir + "/loadgen-live.log";
  return std::make_unique<ChildProcess>(
      std::vector<std::string>{env_or("P35_LOADGEN_BIN", "p35-loadgen"), "--redis-sentinels",
                               t.sentinel_list, "--rate", "2000", "--duration-s",
                               std::to_string(seconds), "--seed", std::to_string(seed), "--force"},
      so);
}

// Where each stage's log ends now: a case reads only what its stages logged after this.
std::array<std::streamoff, 3> log_ends(Pipeline& p) {
  std::array<std::streamoff, 3> ends{};
  for (Stage s : kStages) {
    std::ifstream in(p.log_path(s), std::ios::ate);
    ends[static_cast<size_t>(s)] = in ? static_cast<std::streamoff>(in.tellg()) : 0;
  }
  return ends;
}

std::vector<std::string> lines_after(const std::string& path, std::streamoff from) {
  std::ifstream in(path);
  in.seekg(from);
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// How a stage followed the move to `addr` in the lines it logged since the case began: one
// "Primary moved from ... to addr", or, when it restarted (a stage drops a segment whose reads the
// new primary lacks, and systemd restarts all three), a fresh start that found addr.
bool followed_move(const std::vector<std::string>& lines, const std::string& addr) {
  bool started = false, found_after_start = false;
  int moved = 0;
  for (const std::string& l : lines) {
    if (l.find("Starting p35-") != std::string::npos) started = true;
    if (l.find("Primary moved from") != std::string::npos && l.find("to " + addr) != std::string::npos)
      ++moved;
    if (started && l.find("Primary 'mymaster' is " + addr) != std::string::npos)
      found_after_start = true;
  }
  return moved == 1 || (moved == 0 && found_after_start);
}

// After a move to `primary`: the live load done, everything drained (stages that exit are
// restarted, as systemd's Restart=on-failure does), the buckets exactly what the stream there
// holds, and each stage followed the move once (a log line, or a restart that found it).
void require_exact_after_move(RedisServer& primary, Pipeline& p, ChildProcess& load,
                              const std::array<std::streamoff, 3>& since, int& restarts) {
  const auto st = load.wait_exit(60000);
  REQUIRE(st);
  CHECK(st->exited_with(0));
  INFO(file_tail(p.options().log_dir + "/loadgen-live.log", 10));
  int restarted = 0;
  const bool drained_ok = wait_until(
      [&] {
        restarted += p.restart_exited();
        return drained_on(primary, p.options());
      },
      60000, 50);
  restarts += restarted;
  INFO(p.logs_tail());
  INFO(restarted << " stage restart(s) in this case");
  REQUIRE(drained_ok);
  Connection c = primary.connect();
  const Expectation e = expectation_from_stream(c, p.options().stream);
  const auto diffs = compare_buckets(c, e, p.options().key_prefix);
  long long counted = 0;  // decision fields of every bucket: one per counted entry
  const Reply ks = c.command({"KEYS", p.options().key_prefix + "bucket:*"});
  for (size_t i = 0; i < ks.size(); ++i)
    for (const auto& [f, v] : hgetall(c, std::string(reply_str(ks.element(i)))))
      if (f.rfind("decision:", 0) == 0) counted += std::stoll(v);
  INFO("the buckets count " << counted << " entries, the stream holds " << e.total);
  std::string shown;
  for (size_t i = 0; i < diffs.size() && i < 20; ++i) shown += diffs[i] + "\n";
  INFO(fmt::format("{} entries on the new primary, {} differences:\n{}", e.total, diffs.size(), shown));
  CHECK(diffs.empty());
  const std::string addr = "127.0.0.1:" + std::to_string(primary.port());
  for (Stage s : kStages) {
    INFO(stage_label(s) << " moving to " << addr);
    CHECK(followed_move(lines_after(p.log_path(s), since[static_cast<size_t>(s)]), addr));
    CHECK(p.alive(s));
  }
  // The status hash counts the moves of the stages' current segment: checked while no stage has
  // restarted on a fresh one in this test.
  if (restarts > 0) return;
  for (const char* field : {"ingest_primary_moves", "rollup_primary_moves", "ackd_primary_moves"}) {
    INFO(field);
    CHECK(wait_until(
        [&] {
          Connection sc = primary.connect();
          const auto h = hgetall(sc, keys::status(p.options().key_prefix));
          const auto it = h.find(field);
          return it != h.end() && it->second != "0";
        },
        5000, 50));
  }
}

TEST_CASE("Sentinel: failover under load, a lagging replica promoted, the old primary back",
          "[sentinel][redis][pipeline]") {
  const auto test_start = Clock::now();
  Topology t;
  REQUIRE(wait_until([&] { return t.settled_on(*t.a) && t.replica_ready(*t.b); }, 20000, 100));
  PipelineOptions opt;
  opt.env["REDIS_SENTINELS"] = t.sentinel_list;
  opt.env["P35_WAIT_REPLICAS"] = env_or("P35_TEST_WAIT_REPLICAS", "1");
  opt.env["P35_WAIT_TIMEOUT_MS"] = "500";
  opt.env["P35_RECONNECT_MAX_MS"] = "500";
  opt.env["P35_CONNECT_TIMEOUT_MS"] = "500";
  Pipeline p(*t.a, roomy_tables(opt));
  // ACL users are not replicated: the same user on the replica.
  {
    CommandArgs setuser;
    for (const auto& a : acl_setuser_args(p.acl_user(), p.password(), opt.stream, opt.key_prefix))
      setuser.add(a);
    Connection admin = t.b->connect();
    admin.command(setuser);
    admin.command({"ACL", "SAVE"});
  }
  const std::string dir = p.options().log_dir;

  // 1. SENTINEL FAILOVER while a backlog drains and 2,000 msg/s arrive live. The primary takes
  // writes only while a replica follows it (README: min-replicas-to-write), so that the demoted
  // one refuses writes (NOREPLICAS) instead of taking them for the seconds until the sentinels
  // turn it into a replica, which would drop them: the clients move at once.
  t.a->connect().command({"CONFIG", "SET", "min-replicas-to-write", "1"});
  t.a->connect().command({"CONFIG", "SET", "min-replicas-max-lag", "2"});
  REQUIRE(run_loadgen(*t.a, {"--count", "60000", "--seed", "7"}).exited_with(0));
  p.start_all();
  auto load = live_loadgen(t, dir, 6, 11);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  REQUIRE(wait_until([&] { return t.replica_ready(*t.b); }, 10000, 50));
  int restarts = 0;
  auto since = log_ends(p);
  auto t0 = Clock::now();
  t.sentinels[0]->connect().command({"SENTINEL", "FAILOVER", "mymaster"});
  const long long case1_ms = first_commit_ms(*t.b, *t.a, StreamId{}, p, t0, restarts);
  WARN("case 1 (SENTINEL FAILOVER): first commit on the new primary after " << case1_ms << " ms");
  REQUIRE(wait_until([&] { return t.settled_on(*t.b); }, 20000, 50));
  require_exact_after_move(*t.b, p, *load, since, restarts);

  // A, now the replica, is promoted with no replica of its own in case 2: it must take writes.
  t.a->connect().command({"CONFIG", "SET", "min-replicas-to-write", "0"});

  // 2. The primary (now B) SIGKILLed while its replica (A) lags: A frozen 2 s while B takes
  // writes, then B killed and A thawed; the sentinels promote A without what it missed.
  REQUIRE(wait_until([&] { return t.replica_ready(*t.a); }, 20000, 50));
  load = live_loadgen(t, dir, 8, 12);
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  t.a->pause_process();
  std::this_thread::sleep_for(std::chrono::milliseconds(2000));
  std::vector<std::string> acked_before;
  {
    Connection c = t.b->connect();
    acked_before = acked_ids(c, opt);
  }
  const StreamId old_marker = marker_on(*t.b, opt);
  since = log_ends(p);
  t0 = Clock::now();
  t.b->kill();
  t.a->resume_process();
  REQUIRE(wait_until([&] { return t.settled_on(*t.a, false); }, 30000, 20));
  WARN("case 2 (primary killed, replica lagging): the sentinels promoted the replica after "
       << ms_since(t0) << " ms");
  {
    Connection c = t.a->connect();
    const std::set<std::string> held = stream_ids(c, opt.stream);
    size_t missing = 0;
    for (const std::string& id : acked_before) missing += held.count(id) == 0 ? 1 : 0;
    INFO(acked_before.size() << " entries were acked on the old primary before it was killed");
    CHECK(missing == 0);  // P35_WAIT_REPLICAS=1: no acked entry is lost with the old primary
  }
  // 3. The old primary back at once (it comes with --replicaof A, as a restarted node with stale
  // data is told by the sentinels): with P35_WAIT_REPLICAS=1 the new primary has no replica to
  // confirm commits until then, so the first commit there waits for it.
  t.b->start();
  const long long case2_ms = first_commit_ms(*t.a, *t.b, old_marker, p, t0, restarts);
  WARN("case 2: first commit on the new primary after " << case2_ms << " ms (old primary back as "
       "its replica meanwhile)");
  require_exact_after_move(*t.a, p, *load, since, restarts);
  REQUIRE(wait_until([&] { return t.replica_ready(*t.b); }, 30000, 50));
  CHECK(role_of(*t.b) == "slave");
  // ... and serves as the primary again after a forced failover back to it (A, demoted, refuses
  // writes as in case 1).
  t.a->connect().command({"CONFIG", "SET", "min-replicas-to-write", "1"});
  load = live_loadgen(t, dir, 3, 13);
  since = log_ends(p);
  t0 = Clock::now();
  REQUIRE(wait_until(
      [&] {
        try {
          t.sentinels[1]->connect().command({"SENTINEL", "FAILOVER", "mymaster"});
          return true;
        } catch (const RedisError&) {
          return false;  // INPROG or NOGOODSLAVE while the sentinels catch up: try again
        }
      },
      20000, 200));
  const long long case3_ms = first_commit_ms(*t.b, *t.a, StreamId{}, p, t0, restarts);
  WARN("case 3 (failover back to the old primary): first commit after " << case3_ms << " ms");
  REQUIRE(wait_until([&] { return t.settled_on(*t.b); }, 20000, 50));
  require_exact_after_move(*t.b, p, *load, since, restarts);
  WARN(restarts << " stage restart(s) on a fresh segment over the three cases");

  // proof.sh follows the sentinels as the stages do: it asks them for the primary (B again) and
  // checks the deployment there (--no-systemd: the stages run under this test). Redis' default
  // user: proof.sh reads more than the stages' ACL rule allows (an operator's check).
  const std::string env_file = dir + "/proof.env";
  {
    std::ofstream f(env_file);
    f << "REDIS_SENTINELS=" << t.sentinel_list << "\nREDIS_SENTINEL_MASTER=mymaster\n"
      << "P35_STREAM=" << opt.stream << "\nP35_CONSUMER=" << opt.consumer << "\n"
      << "P35_SHM_NAME=" << p.shm_name() << "\nP35_KEY_PREFIX=" << opt.key_prefix << "\n";
  }
  SpawnOptions so;
  so.log_path = dir + "/proof.log";
  so.unset_env = {"REDIS_SENTINELS", "REDIS_HOST", "REDIS_PORT", "REDIS_SOCKET", "REDIS_USERNAME",
                  "REDIS_PASSWORD", "REDIS_PASSWORD_FILE"};
  ChildProcess proof({"bash", env_or("P35_SOURCE_DIR", ".") + "/scripts/proof.sh", "--env-file",
                      env_file, "--no-systemd", "--shm-bin", env_or("P35_SHM_BIN", "p35-shm")},
                     so);
  const auto proof_exit = proof.wait_exit(60000);
  const std::string proof_out = file_tail(so.log_path, 200);
  INFO("proof.sh printed:\n" << proof_out);
  REQUIRE(proof_exit);
  CHECK(proof_exit->exited_with(0));
  CHECK(proof_out.find("names 127.0.0.1:" + std::to_string(t.b->port()) + " as primary") !=
        std::string::npos);
  CHECK(proof_out.find("the server the sentinels name says it is the primary") != std::string::npos);
  CHECK(proof_out.find("PROOF OK") != std::string::npos);
  for (const char* shown : {"names 127.0.0.1:", "PROOF OK"}) {
    const size_t at = proof_out.find(shown);
    if (at != std::string::npos)
      WARN("proof.sh after the failovers: ..." << proof_out.substr(at, proof_out.find('\n', at) - at));
  }
  WARN("test took " << ms_since(test_start) << " ms");
}

}  // namespace
}  // namespace p35::test
