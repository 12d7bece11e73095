// A stage killed between publish_id()'s stores (issue 14), injected exactly rather than by luck:
// the test leaves a SeqId as a writer dead there leaves it (lock odd, `ms` new, `seq` old, `next`
// whole), with the real stage binaries and a real redis-server. Readers in the other stages must
// get on within a bound while the writer is dead, the restarted writer must republish exactly the
// value it was publishing, and everything must drain with exact counts afterwards.
#include <catch2/catch.hpp>

#include <chrono>
#include <fstream>
#include <optional>

#include "config.hpp"
#include "keys.hpp"
#include "pipeline_harness.hpp"
#include "daemon.hpp"
#include "shm.hpp"
#include "stream_id.hpp"

using namespace p35;
using namespace p35::test;

namespace {

constexpr int kDrainMs = 20000;  // a few thousand entries drain in 1-2 s on this machine

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "\n";
  return out;
}

// Adds `count` entries with p35-loadgen; returns its expectation (every bucket field).
Expectation generate(RedisServer& redis, int count, int seed) {
  const std::string expect = redis.dir() + "/expect-" + std::to_string(seed) + ".tsv";
  const std::string log = redis.dir() + "/loadgen.log";
  const auto st = run_loadgen(redis, {"--count", std::to_string(count), "--seed",
                                      std::to_string(seed), "--expect", expect, "--quiet"}, log);
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

// The segment the stages use, mapped read-write as a stage maps it (the test plays the dead
// writer). Waits until a stage has created it.
Segment open_writable(const Pipeline& p) {
  const PipelineOptions& o = p.options();
  Environment env(o.env.begin(), o.env.end());
  env["P35_SHM_NAME"] = o.shm_name;
  env["P35_CONSUMER"] = o.consumer;
  env["P35_KEY_PREFIX"] = o.key_prefix;
  env["P35_STREAM"] = o.stream;
  const char* argv[] = {"test_publish", nullptr};
  const ProgramInfo info{"test_publish", "issue 14 tests"};
  const Config cfg = parse_config(1, argv, info, env).config;
  REQUIRE(wait_until([&] {
    try {
      (void)Segment::open_readonly(o.shm_name);
      return true;
    } catch (const ShmError&) {
      return false;
    }
  }, 30000, 20));
  return Segment::open_or_create(SegmentSpec::from_config(cfg));
}

StreamId last_id(Connection& c, const std::string& stream) {
  const Reply info = c.command({"XINFO", "STREAM", stream});
  for (size_t i = 0; i + 1 < info.size(); i += 2)
    if (reply_str(info.element(i)) == "last-generated-id")
      return StreamId::parse(reply_str(info.element(i + 1))).value_or(StreamId{});
  return {};
}

// The writer that published `before` and then was killed inside publish_id(id, value), after the
// lock turned odd and `ms` was stored, before `seq` (publish_id's order: next, odd lock, ms, seq,
// even lock). `before` is an older ID with a higher seq, so the torn words {value.ms, before.seq}
// read as an ID newer than either: the dangerous direction (acks or commits that did not happen).
void die_mid_publish(shm::SeqId& id, StreamId value) {
  const StreamId before{value.ms - 1, value.seq + 5};
  publish_id(id, before);
  id.next.ms.store(value.ms);
  id.next.seq.store(value.seq);
  id.lock.fetch_add(1);  // odd
  id.ms.store(value.ms);
  // killed here
  REQUIRE((id.lock.load() & 1) == 1);
  REQUIRE(StreamId{id.ms.load(), id.seq.load()} == StreamId{value.ms, value.seq + 5});
}

// The stage's log lines that contain `needle`.
std::vector<std::string> log_lines(const Pipeline& p, Stage s, const std::string& needle) {
  std::ifstream in(p.log_path(s));
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);)
    if (line.find(needle) != std::string::npos) out.push_back(line);
  return out;
}

// p35-shm --json on the pipeline's segment; fails the test if it does not answer within 5 s.
std::string inspect_json(const Pipeline& p, const std::string& dir) {
  const std::string out = dir + "/p35-shm.json";
  ::unlink(out.c_str());
  SpawnOptions so;
  so.log_path = out;
  ChildProcess shm({env_or("P35_SHM_BIN", "p35-shm"), "--shm-name", p.shm_name(), "--json"}, so);
  const auto st = shm.wait_exit(5000);
  REQUIRE(st);
  std::ifstream in(out);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The stage is alive and not stuck: its heartbeat moves on within a deadline (an idle ackd or
// ingest beats once per 5 s wait). A deadline, not an age bound: on a loaded machine a beat can
// come late, but a stage spinning or blocked outside its loop never beats again.
bool beats_again(const Segment& seg, shm::StageId id) {
  const int64_t before = seg.stage(id).heartbeat_boot_ms.load();
  return wait_until([&] { return seg.stage(id).heartbeat_boot_ms.load() != before; }, 20000, 20);
}

void require_exact(RedisServer& redis, Pipeline& p, const Expectation& e) {
  INFO(p.logs_tail());
  REQUIRE(wait_drained(redis, p.options(), kDrainMs));
  Connection c = redis.connect();
  const auto diffs = compare_buckets(c, e, p.options().key_prefix);
  INFO(join(diffs));
  CHECK(diffs.empty());
}

PipelineOptions small_log_options() {
  PipelineOptions po;
  // A small ID log fills quickly while ackd cannot ack, which holds ingest back.
  po.env = {{"P35_ID_LOG", "1024"}, {"P35_BATCH_SIZE", "200"}, {"P35_RECONNECT_MAX_MS", "1000"}};
  return po;
}

}  // namespace

TEST_CASE("ackd killed inside publish_id(acked): the restarted ackd republishes it and acks again, "
          "the ID log drains, ingest goes on",
          "[publish]") {
  RedisServer redis;
  Pipeline p(redis, small_log_options());
  Connection c = redis.connect();
  p.start_all();
  Expectation want = generate(redis, 2000, 1401);
  require_exact(redis, p, want);
  Segment seg = open_writable(p);
  const StreamId acked = last_id(c, p.options().stream);
  REQUIRE(try_read_id(seg.ackd().acked) == acked);

  p.kill(Stage::Ackd);
  die_mid_publish(seg.ackd().acked, acked);
  // More than the ID log holds: ingest stops once it is full, until ackd acks again.
  add(want, generate(redis, 3000, 1402));
  REQUIRE(wait_until([&] {
    return seg.ingest().id_log_head.load() - seg.ackd().id_log_tail.load() == 1024;
  }, kDrainMs));
  CHECK(inspect_json(p, redis.dir()).find("\"acked\":\"publishing\"") != std::string::npos);

  p.start(Stage::Ackd);
  require_exact(redis, p, want);  // before the fix: ackd spins in read_id(acked) after one XACK
  const auto repaired = log_lines(p, Stage::Ackd, "Repaired the acked watermark");
  INFO(file_tail(p.log_path(Stage::Ackd)));
  REQUIRE(repaired.size() == 1);
  CHECK(repaired[0].find(": " + acked.str()) != std::string::npos);  // exactly, not the torn words
  REQUIRE(wait_until([&] { return try_read_id(seg.ackd().acked) == last_id(c, p.options().stream); },
                     kDrainMs));
  CHECK(seg.ingest().id_log_head.load() == seg.ackd().id_log_tail.load());
  CHECK(beats_again(seg, shm::StageId::Ackd));
  CHECK(p.alive(Stage::Ackd));
}

TEST_CASE("ingest killed inside publish_id(counted_pub): readers show it as publishing, the "
          "restarted ingest republishes counted_id",
          "[publish]") {
  RedisServer redis;
  Pipeline p(redis, small_log_options());
  Connection c = redis.connect();
  p.start_all();
  Expectation want = generate(redis, 2000, 1411);
  require_exact(redis, p, want);
  Segment seg = open_writable(p);
  const StreamId counted = last_id(c, p.options().stream);
  REQUIRE(try_read_id(seg.ingest().counted_pub) == counted);

  p.kill(Stage::Ingest);
  die_mid_publish(seg.ingest().counted_pub, counted);
  // Nobody takes the torn words for an ID: p35-shm answers at once and says "publishing".
  const std::string json = inspect_json(p, redis.dir());
  INFO(json);
  CHECK(json.find("\"counted\":\"publishing\"") != std::string::npos);
  CHECK(json.find(StreamId{counted.ms, counted.seq + 5}.str()) == std::string::npos);
  CHECK(p.alive(Stage::Rollup));
  CHECK(p.alive(Stage::Ackd));

  p.start(Stage::Ingest);
  REQUIRE(wait_until([&] { return try_read_id(seg.ingest().counted_pub).has_value(); }, 10000));
  CHECK(try_read_id(seg.ingest().counted_pub) == counted);  // counted_id, not the torn words
  add(want, generate(redis, 2000, 1412));
  require_exact(redis, p, want);
  CHECK(try_read_id(seg.ingest().counted_pub) == last_id(c, p.options().stream));
  CHECK(beats_again(seg, shm::StageId::Ingest));
}

TEST_CASE("rollup killed inside publish_id(committed): ingest and ackd go on while it is dead, "
          "the restarted rollup republishes the commit's marker and commits again",
          "[publish]") {
  RedisServer redis;
  Pipeline p(redis, small_log_options());
  Connection c = redis.connect();
  p.start_all();
  Expectation want = generate(redis, 2000, 1421);
  require_exact(redis, p, want);
  Segment seg = open_writable(p);
  auto& rc = seg.rollup();
  const StreamId committed = last_id(c, p.options().stream);
  REQUIRE(try_read_id(rc.committed) == committed);

  p.kill(Stage::Rollup);
  // The state of a rollup killed inside apply_pending()'s publish_id(): Redis took the commit
  // (marker == pending_next), the shadow sides are flipped, commit_count and pending_state are not
  // updated yet.
  REQUIRE(rc.pending_state.load() == 0);
  REQUIRE(load_id(rc.pending_next) == committed);
  const uint64_t commits = rc.commit_count.load();
  rc.commit_count.store(commits - 1);
  rc.pending_state.store(1);
  die_mid_publish(rc.committed, committed);

  // Ingest reads `committed` after every batch: it must keep counting (bounded read), and ackd
  // must ack nothing beyond the last commit it could read.
  const uint64_t tail = seg.ackd().id_log_tail.load();
  add(want, generate(redis, 800, 1422));
  const StreamId last = last_id(c, p.options().stream);
  INFO(p.logs_tail());
  CHECK(wait_until([&] { return try_read_id(seg.ingest().counted_pub) == last; }, 10000));
  CHECK(beats_again(seg, shm::StageId::Ingest));
  CHECK(seg.ackd().id_log_tail.load() == tail);
  const std::string json = inspect_json(p, redis.dir());
  CHECK(json.find("\"committed\":\"publishing\"") != std::string::npos);
  CHECK(p.alive(Stage::Ingest));
  CHECK(p.alive(Stage::Ackd));
  CHECK(beats_again(seg, shm::StageId::Ackd));

  p.start(Stage::Rollup);
  require_exact(redis, p, want);
  const auto repaired = log_lines(p, Stage::Rollup, "Repaired the committed watermark");
  INFO(file_tail(p.log_path(Stage::Rollup)));
  REQUIRE(repaired.size() == 1);
  CHECK(repaired[0].find(": " + committed.str()) != std::string::npos);
  CHECK(log_lines(p, Stage::Rollup, "The commit in flight before the restart reached Redis").size() == 1);
  CHECK(try_read_id(rc.committed) == last);
  CHECK(rc.commit_count.load() > commits);
  CHECK(rc.pending_state.load() == 0);
  REQUIRE(wait_until([&] { return try_read_id(seg.ackd().acked) == last; }, kDrainMs));
}

// The one case where the marker in Redis is not the next of the commit rollup died publishing:
// Redis lost that commit (restarted without persistence). The old repair let start() discard the
// pending commit with `committed` still odd, then spin on it for ever; the segment's shadows
// already stand for the lost commit, so this is a conflict, reported at once.
TEST_CASE("rollup killed inside publish_id(committed) and Redis lost that commit: the restarted "
          "rollup reports the conflict instead of spinning",
          "[publish]") {
  RedisServer redis;
  Pipeline p(redis, small_log_options());
  Connection c = redis.connect();
  p.start_all();
  const Expectation want = generate(redis, 2000, 1431);
  require_exact(redis, p, want);
  Segment seg = open_writable(p);
  auto& rc = seg.rollup();
  const StreamId committed = last_id(c, p.options().stream);
  REQUIRE(try_read_id(rc.committed) == committed);

  p.kill(Stage::Rollup);
  REQUIRE(load_id(rc.pending_next) == committed);
  const StreamId prev = load_id(rc.pending_prev);
  REQUIRE(prev < committed);
  rc.commit_count.store(rc.commit_count.load() - 1);
  rc.pending_state.store(1);
  die_mid_publish(rc.committed, committed);
  c.command({"SET", keys::marker(p.options().key_prefix, p.options().consumer), prev.str()});

  p.start(Stage::Rollup);
  INFO(file_tail(p.log_path(Stage::Rollup)));
  REQUIRE(wait_until([&] { return !p.alive(Stage::Rollup); }, 10000));
  CHECK(p.stop(Stage::Rollup).exited_with(1));
  CHECK(log_lines(p, Stage::Rollup, "Repaired the committed watermark").size() == 1);
  // "... committed up to <committed> but the marker in Redis is <prev>"
  const auto conflict = log_lines(p, Stage::Rollup, "conflict");
  REQUIRE(conflict.size() == 1);
  CHECK(conflict[0].find(committed.str()) != std::string::npos);
  CHECK(conflict[0].find(prev.str()) != std::string::npos);
}

// Rollup killed inside apply_pending() before it published the new committed ID: some shadow
// sides (here all, and the totals) already stand for the commit, `committed` is still its prev.
// If Redis then loses that commit, the marker equals the pending commit's prev, which alone reads
// as "the commit never happened": discarding it would leave the flipped slots claiming counts
// Redis does not hold, and they would never be committed again. It is a conflict.
TEST_CASE("rollup killed inside apply_pending before its publish, and Redis lost that commit: the "
          "restarted rollup reports the conflict instead of discarding a half-applied commit",
          "[publish]") {
  RedisServer redis;
  Pipeline p(redis, small_log_options());
  Connection c = redis.connect();
  p.start_all();
  const Expectation want = generate(redis, 2000, 1432);
  require_exact(redis, p, want);
  Segment seg = open_writable(p);
  auto& rc = seg.rollup();
  const StreamId committed = last_id(c, p.options().stream);
  REQUIRE(try_read_id(rc.committed) == committed);

  p.kill(Stage::Rollup);
  REQUIRE(load_id(rc.pending_next) == committed);
  const StreamId prev = load_id(rc.pending_prev);
  REQUIRE(prev < committed);
  // The last commit's sides are flipped (apply_pending ran to its end); put back what its publish
  // and the end of apply_pending changed, as if rollup died just before publish_id().
  REQUIRE(rc.totals_side.load() == rc.pending_totals_side.load());
  rc.commit_count.store(rc.commit_count.load() - 1);
  publish_id(rc.committed, prev);
  rc.pending_state.store(1);
  c.command({"SET", keys::marker(p.options().key_prefix, p.options().consumer), prev.str()});

  p.start(Stage::Rollup);
  INFO(file_tail(p.log_path(Stage::Rollup)));
  REQUIRE(wait_until([&] { return !p.alive(Stage::Rollup); }, 10000));
  CHECK(p.stop(Stage::Rollup).exited_with(1));
  const auto conflict = log_lines(p, Stage::Rollup, "partly applied");
  REQUIRE(conflict.size() == 1);
  CHECK(conflict[0].find(committed.str()) != std::string::npos);
  CHECK(conflict[0].find(prev.str()) != std::string::npos);
}
