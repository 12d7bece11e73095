// In-process tests of rollup's Committer (DESIGN §5.2) against a private redis-server: ingest's
// Counter fills a segment in this process and the Committer commits it. A commit that died
// between the Redis apply and the segment publish is found applied by the next start() and
// published exactly once; one that died before Redis saw it is discarded and committed again,
// once. The buckets are compared strictly with an expectation built entry by entry.
#include <catch2/catch.hpp>

#include <chrono>
#include <vector>

#include "committer.hpp"
#include "counter.hpp"
#include "keys.hpp"
#include "marker.hpp"
#include "pipeline_harness.hpp"
#include "rules.hpp"
#include "shm_test_util.hpp"

using namespace p35;
using namespace p35::test;

namespace {

std::string join(const std::vector<std::string>& v, size_t max = 30) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < max; ++i) out += v[i] + "\n";
  if (v.size() > max) out += "... " + std::to_string(v.size() - max) + " more\n";
  return out;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// A stream that does not exist: the commit script then has no delivery to check (docs/keys.md),
// so the committer can be driven without a group.
Config test_config(const std::string& shm_name) {
  Config cfg;
  cfg.shm_name = shm_name;
  cfg.consumer = "committer-test";
  cfg.stream = "committer:test:stream";
  cfg.key_prefix = "committer:p35:";
  return cfg;
}

// Ingest's side in this process: counts entries into the segment and keeps the expectation.
class Feeder {
 public:
  Feeder(Segment& seg, const Config& cfg) : counter_(seg, cfg.symbol_breakdown), next_ms_(now_ms()) {
    counter_.recover();
  }
  Counter& counter() { return counter_; }
  // `n` entries of a few decisions, reasons and symbols (one unknown decision in seven), in one
  // batch; returns the last ID.
  StreamId count(int n, Expectation& e) {
    Normalized m;
    std::vector<Field> fields;
    static const char* const kDecisions[] = {"EXECUTE", "SKIP", "BLOCKED", "ERROR", "MAYBE", "skip", "FAIL"};
    for (int k = 0; k < n; ++k, ++seq_) {
      const StreamId id{static_cast<uint64_t>(next_ms_), seq_};
      const std::string reason = "reason-" + std::to_string(seq_ % 13);
      const std::string symbol = "SYM" + std::to_string(seq_ % 5);
      fields = {{"decision", kDecisions[seq_ % 7]}, {"reason", reason}, {"symbol", symbol}};
      normalize(fields, next_ms_, m);
      REQUIRE(counter_.add(id, &m, minute_of_ms(next_ms_)) == Counter::Result::Done);
      const std::string minute = minute_key(m.minute);
      e.buckets[minute]["decision:" + m.decision_label()] += 1;
      e.buckets[minute]["reason:" + m.reason] += 1;
      e.buckets[minute]["symbol_reason:" + m.symbol + ":" + m.reason] += 1;
      if (m.decision == Decision::Unknown) e.unknowns[minute][m.unknown_member()] += 1;
      ++e.total;
      last_ = id;
    }
    counter_.flush();
    return last_;
  }

 private:
  Counter counter_;
  int64_t next_ms_;
  uint64_t seq_ = 0;
  StreamId last_;
};

// What apply_pending() changes in the segment, saved before a commit and put back after it: the
// state of a rollup that died after Redis took the commit and before it published it.
struct PublishState {
  std::vector<uint64_t> sides, tags;
  uint64_t totals_side = 0, commit_count = 0;
  StreamId committed;

  static PublishState save(Segment& seg) {
    PublishState s;
    for (uint32_t i = 0; i < seg.slot_count(); ++i) {
      s.sides.push_back(seg.slot_meta()[i].side.load());
      s.tags.push_back(seg.slot_meta()[i].committed_tag.load());
    }
    s.totals_side = seg.rollup().totals_side.load();
    s.commit_count = seg.rollup().commit_count.load();
    s.committed = own_id(seg.rollup().committed);
    return s;
  }
  // Unpublishes the commit that followed save(); its pending record (written before the script
  // ran) stays, marked pending as it was when the script returned.
  void restore(Segment& seg) const {
    for (uint32_t i = 0; i < seg.slot_count(); ++i) {
      seg.slot_meta()[i].side.store(sides[i]);
      seg.slot_meta()[i].committed_tag.store(tags[i]);
    }
    seg.rollup().totals_side.store(totals_side);
    seg.rollup().commit_count.store(commit_count);
    publish_id(seg.rollup().committed, committed);
    seg.rollup().pending_state.store(1);
  }
};

struct Fixture {
  RedisServer redis;
  ShmGuard guard;
  Config cfg = test_config(guard.name());
  Segment seg = Segment::open_or_create(SegmentSpec::from_config(cfg));
  Connection conn = redis.connect();
  Feeder feeder{seg, cfg};
  Expectation want;

  // The marker made (0-0) and adopted as ingest and rollup do on a fresh segment, and the
  // consumer name held by this segment's instance token (the script's fencing check).
  void set_up(Committer& committer) {
    const MarkerState st = ensure_marker(conn, cfg);
    feeder.counter().initialise_from_marker(st.value);
    conn.command({"SET", keys::owner(cfg.key_prefix, cfg.consumer),
                  seg.instance_token() + " test 1 rollup 0"});
    StreamId marker;
    REQUIRE(committer.start(conn, marker) == Committer::Resolution::NoPending);
    REQUIRE(marker.is_zero());
  }
  std::string marker() {
    return std::string(conn.command({"GET", keys::marker(cfg.key_prefix, cfg.consumer)}).str());
  }
  std::vector<std::string> diffs() { return compare_buckets(conn, want, cfg.key_prefix); }
};

}  // namespace

TEST_CASE("Committer: a commit that died between the Redis apply and the segment publish is "
          "published by the next start(), exactly once",
          "[committer][redis]") {
  Fixture f;
  Committer first(f.cfg, f.seg);
  f.set_up(first);
  const StreamId a = f.feeder.count(400, f.want);
  REQUIRE(first.commit(f.conn) == Committer::Outcome::Committed);
  REQUIRE(first.committed() == a);
  {
    INFO(join(f.diffs()));
    REQUIRE(f.diffs().empty());
  }

  // The second commit reaches Redis, then its rollup dies before apply_pending().
  const StreamId b = f.feeder.count(300, f.want);
  const PublishState before = PublishState::save(f.seg);
  REQUIRE(first.commit(f.conn) == Committer::Outcome::Committed);
  before.restore(f.seg);
  REQUIRE(f.marker() == b.str());
  REQUIRE(own_id(f.seg.rollup().committed) == a);

  // The restarted rollup: start() finds the marker at the pending commit's next ID and publishes.
  Committer restarted(f.cfg, f.seg);
  StreamId marker;
  CHECK(restarted.start(f.conn, marker) == Committer::Resolution::Applied);
  CHECK(marker == b);
  CHECK(restarted.committed() == b);
  CHECK(f.seg.rollup().pending_state.load() == 0);
  CHECK(f.seg.rollup().commit_count.load() == before.commit_count + 1);
  // Once: nothing is sent again, a second start() finds nothing pending, the counts are single.
  CHECK(restarted.commit(f.conn) == Committer::Outcome::NothingNew);
  CHECK(restarted.start(f.conn, marker) == Committer::Resolution::NoPending);
  CHECK(f.seg.rollup().commit_count.load() == before.commit_count + 1);
  CHECK(f.marker() == b.str());
  const auto diffs = f.diffs();
  INFO(join(diffs));
  CHECK(diffs.empty());
  CHECK(f.want.total == 700);
}

TEST_CASE("Committer: a commit that died before Redis saw it is discarded by the next start() and "
          "committed again, once",
          "[committer][redis]") {
  Fixture f;
  Committer first(f.cfg, f.seg);
  f.set_up(first);
  const StreamId a = f.feeder.count(250, f.want);
  REQUIRE(first.commit(f.conn) == Committer::Outcome::Committed);

  // The pending record is published, then the connection is gone before the script is sent:
  // Redis never ran it, and the committer cannot tell (it throws, the record stays pending).
  const StreamId b = f.feeder.count(350, f.want);
  Connection lost = f.redis.connect();
  lost.disconnect();
  CHECK_THROWS_AS(first.commit(lost), RedisError);
  REQUIRE(f.seg.rollup().pending_state.load() == 1);
  REQUIRE(f.marker() == a.str());

  Committer restarted(f.cfg, f.seg);
  StreamId marker;
  CHECK(restarted.start(f.conn, marker) == Committer::Resolution::Discarded);
  CHECK(marker == a);
  CHECK(restarted.committed() == a);
  REQUIRE(restarted.commit(f.conn) == Committer::Outcome::Committed);
  CHECK(restarted.committed() == b);
  CHECK(f.marker() == b.str());
  CHECK(restarted.commit(f.conn) == Committer::Outcome::NothingNew);
  const auto diffs = f.diffs();
  INFO(join(diffs));
  CHECK(diffs.empty());
}
