// Chaos: SIGKILLs of random stages at random moments (and a few reboots that delete the segment)
// while 200,000 messages flow; afterwards every bucket field must be exact and nothing pending.
#include <catch2/catch.hpp>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "pipeline_harness.hpp"
#include "shm.hpp"

using namespace p35;
using namespace p35::test;

namespace {

int env_int(const char* name, int fallback) {
  return std::stoi(env_or(name, std::to_string(fallback)));
}

}  // namespace

TEST_CASE("Random SIGKILLs of every stage while 200,000 messages flow lose and double-count nothing",
          "[chaos][redis]") {
  const int messages = env_int("P35_CHAOS_MESSAGES", 200000);
  const int min_kills = env_int("P35_CHAOS_KILLS", 120);
  const int rate = env_int("P35_CHAOS_RATE", 5000);
  RedisServer redis;
  PipelineOptions po;
  po.env["P35_BATCH_SIZE"] = "256";
  po.env["P35_ID_LOG"] = "4096";  // small: backpressure from ackd happens too
  Pipeline p(redis, roomy_tables(po));
  p.start_all();

  const std::string expect = redis.dir() + "/chaos-expect.tsv";
  SpawnOptions so;
  so.log_path = redis.dir() + "/loadgen.log";
  ChildProcess loadgen({env_or("P35_LOADGEN_BIN", "p35-loadgen"), "--redis-socket", redis.socket_path(),
                        "--count", std::to_string(messages), "--rate", std::to_string(rate),
                        "--edge-cases", "--seed", "2026", "--expect", expect, "--quiet", "--force"},
                       so);

  std::mt19937_64 rng(20261125);
  std::uniform_int_distribution<int> pick(0, 2), gap_ms(5, 120), down_ms(0, 60), dice(0, 99);
  int kills = 0, reboots = 0;
  const auto t0 = std::chrono::steady_clock::now();
  // Keep killing until the producer is done and we reached the minimum number of kills.
  while (loadgen.alive() || kills < min_kills) {
    std::this_thread::sleep_for(std::chrono::milliseconds(gap_ms(rng)));  // a random moment
    if (dice(rng) < 3) {  // a reboot: everything dies and the segment is gone
      for (Stage s : kStages) p.kill(s);
      p.remove_segment();
      ++reboots;
      kills += 3;
    } else {
      const Stage s = kStages[static_cast<size_t>(pick(rng))];
      p.kill(s);
      ++kills;
      std::this_thread::sleep_for(std::chrono::milliseconds(down_ms(rng)));
    }
    p.start_all();
  }
  const auto st = loadgen.wait_exit(60000);
  REQUIRE(st);
  INFO(file_tail(redis.dir() + "/loadgen.log"));
  REQUIRE(st->exited_with(0));
  const auto t_produced = std::chrono::steady_clock::now();

  INFO(p.logs_tail());
  REQUIRE(wait_drained(redis, p.options(), 180000));
  const auto t_drained = std::chrono::steady_clock::now();
  const Expectation e = read_expectation(expect);
  Connection c = redis.connect();
  const auto diffs = compare_buckets(c, e, "quantum:p35:");
  const auto ms = [](auto a, auto b) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
  };
  std::printf("chaos: messages=%lld kills=%d (reboots=%d) mismatches=%zu run=%lld ms "
              "drain-after-last-message=%lld ms\n",
              e.total, kills, reboots, diffs.size(), static_cast<long long>(ms(t0, t_produced)),
              static_cast<long long>(ms(t_produced, t_drained)));
  for (size_t i = 0; i < diffs.size() && i < 20; ++i) std::printf("  %s\n", diffs[i].c_str());
  CHECK(e.total == messages);
  CHECK(kills >= min_kills);
  CHECK(diffs.empty());
  // Everything is committed: every slot's committed shadow must equal the live slot word for word
  // (counts, keys, chunk versions), although commits copied only the chunks they saw change and
  // were killed mid-copy again and again.
  const Segment seg = Segment::open_readonly(p.shm_name());
  size_t slots_checked = 0, words_differing = 0;
  const uint64_t words = seg.off().slot_bytes / 8;
  for (uint32_t i = 0; i < seg.slot_count(); ++i) {
    auto& live = seg.slot(i);
    if (live.minute.load() == shm::kEmptyMinute) continue;
    const auto side = static_cast<uint32_t>(seg.slot_meta()[i].side.load());
    const auto* a = reinterpret_cast<const std::atomic<uint64_t>*>(&live);
    const auto* b = reinterpret_cast<const std::atomic<uint64_t>*>(&seg.shadow(side, i));
    for (uint64_t w = 0; w < words; ++w) words_differing += a[w].load() != b[w].load();
    ++slots_checked;
  }
  std::printf("chaos: %zu slots, committed shadow == live in all but %zu words\n", slots_checked,
              words_differing);
  CHECK(slots_checked > 0);
  CHECK(words_differing == 0);
  // The status hash is rewritten every second; it must come to show the empty pending list.
  CHECK(wait_until([&] { return hgetall(c, "quantum:p35:status")["pending_estimate"] == "0"; }, 30000));
}
