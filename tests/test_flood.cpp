// Bad input at volume (issue 8), through the three real stages against a private redis-server:
// (1) a cardinality flood of 1,000,000 entries with never-repeating reasons over 100,000 symbols
// (the excess goes to __overflow__ in the buckets and in status, decisions stay exact, the segment
// keeps its size; the pace is printed), and (2) entries with 1 MB values, 1,000 fields, binary values,
// JSON bombs and timestamps at every edge amid ordinary traffic, counted by the rules without a
// stall.
#include <catch2/catch.hpp>
#include <hiredis/hiredis.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>

#include "config.hpp"
#include "keys.hpp"
#include "pipeline_harness.hpp"
#include "rules.hpp"
#include "shm.hpp"
#include "stream_id.hpp"

using namespace p35;
using namespace p35::test;

namespace {

const std::string kStream = "quantum:stream:apply.result";
const std::string kPrefix = "quantum:p35:";
using SteadyClock = std::chrono::steady_clock;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double seconds_since(SteadyClock::time_point t0) {
  return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

std::string join(const std::vector<std::string>& v, size_t max = 30) {
  std::string out;
  for (size_t i = 0; i < v.size() && i < max; ++i) out += v[i] + "\n";
  if (v.size() > max) out += "... " + std::to_string(v.size() - max) + " more\n";
  return out;
}

// Entries of the flood (and of the normal run it is compared with). P35_FLOOD_COUNT overrides it
// for a quick local run; CI runs the full 1,000,000.
long long flood_count() {
  const long long n = std::atoll(env_or("P35_FLOOD_COUNT", "1000000").c_str());
  return n > 0 ? n : 1000000;
}

void run_loadgen_ok(RedisServer& redis, const std::vector<std::string>& args) {
  const std::string log = redis.dir() + "/loadgen.log";
  const auto st = run_loadgen(redis, args, log);
  INFO(file_tail(log));
  REQUIRE(st.exited_with(0));
}

struct DrainResult {
  bool drained = false;
  double seconds = 0;  // from starting the stages to everything counted, committed and acked
  off_t size_first = -1, size_min = -1, size_max = -1;  // the segment file, sampled all along
};

// CPU seconds (user + system) of every child reaped so far.
double children_cpu_s() {
  struct rusage ru {};
  ::getrusage(RUSAGE_CHILDREN, &ru);
  const auto s = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

// SIGTERM to ingest, rollup, ackd (systemd's stop order), each must exit 0; returns the CPU
// seconds the three used since `cpu_before` (children_cpu_s() before they started).
double stop_stages(Pipeline& p, double cpu_before) {
  for (Stage s : {Stage::Ingest, Stage::Rollup, Stage::Ackd}) {
    INFO(stage_label(s));
    CHECK(p.stop(s).exited_with(0));
  }
  return children_cpu_s() - cpu_before;
}

// Starts the three stages on the backlog already in the stream and waits until it is drained,
// stat()ing the segment at every poll.
DrainResult drain_backlog(RedisServer& redis, Pipeline& p, int timeout_ms) {
  DrainResult r;
  const std::string path = "/dev/shm/" + p.shm_name();
  const auto t0 = SteadyClock::now();
  p.start_all();
  r.drained = wait_until(
      [&] {
        struct stat st {};
        if (::stat(path.c_str(), &st) == 0) {
          if (r.size_first < 0) r.size_first = r.size_min = r.size_max = st.st_size;
          r.size_min = std::min(r.size_min, st.st_size);
          r.size_max = std::max(r.size_max, st.st_size);
        }
        try {
          Connection c = redis.connect();
          return drained(c, p.options());
        } catch (const std::exception&) {
          return false;
        }
      },
      timeout_ms, 20);
  r.seconds = seconds_since(t0);
  return r;
}

// Sums over every bucket of one family of fields; a bucket whose reasons do not add up to its
// decisions (or, with every entry carrying a symbol, whose symbol-reasons do not) is listed.
struct BucketSums {
  size_t buckets = 0;
  long long decisions = 0, reasons = 0, symbol_reasons = 0;
  long long reason_overflow = 0, symbol_reason_overflow = 0, unknown_overflow = 0;
  long long reason_fields = 0;  // distinct reasons that got a field of their own
  std::vector<std::string> unbalanced;
};

BucketSums bucket_sums(Connection& c, bool every_entry_has_a_symbol) {
  BucketSums s;
  const std::string ov(keys::kOverflow);
  const Reply ks = c.command({"KEYS", kPrefix + "bucket:*"});
  for (size_t i = 0; i < ks.size(); ++i) {
    const std::string key(reply_str(ks.element(i)));
    long long d = 0, r = 0, sr = 0;
    for (const auto& [f, v] : hgetall(c, key)) {
      const long long n = std::stoll(v);
      if (f.rfind("decision:", 0) == 0) d += n;
      if (f.rfind("reason:", 0) == 0) r += n, ++s.reason_fields;
      if (f.rfind("symbol_reason:", 0) == 0) sr += n;
      if (f == "reason:" + ov) s.reason_overflow += n, --s.reason_fields;
      if (f == "symbol_reason:" + ov + ":" + ov) s.symbol_reason_overflow += n;
      if (f == "decision:UNKNOWN:" + ov) s.unknown_overflow += n;
    }
    ++s.buckets;
    s.decisions += d;
    s.reasons += r;
    s.symbol_reasons += sr;
    if (r != d || (every_entry_has_a_symbol && sr != d))
      s.unbalanced.push_back(key + ": decisions " + std::to_string(d) + ", reasons " +
                             std::to_string(r) + ", symbol-reasons " + std::to_string(sr));
  }
  return s;
}

long long status_total(const std::map<std::string, std::string>& status, const std::string& f) {
  const auto it = status.find(f);
  return it == status.end() ? 0 : std::stoll(it->second);
}

long long pending_count(Connection& c) {
  const Reply r = c.command({"XPENDING", kStream, "p35_decision_intel"});
  return r.size() > 0 ? r.element(0)->integer : -1;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// (1) Cardinality flood

TEST_CASE("A flood of never-repeating reasons and 100,000 symbols goes to __overflow__, "
          "decisions stay exact, the segment keeps its size",
          "[flood][redis]") {
  const long long n = flood_count();
  // Both runs spread their IDs evenly over the same 20 minutes that ended a minute ago, so that
  // each minute gets n/20 entries (50,000 at 1M) and the string table, which holds the strings of
  // every live minute, fills up after a few minutes of the flood.
  constexpr int64_t kSpanMs = 20 * 60000;
  const int64_t start_ms = now_ms() - kSpanMs - 60000;
  const std::string step = std::to_string(static_cast<double>(kSpanMs) / static_cast<double>(n));
  const std::vector<std::string> ids{"--explicit-ids", "--start-ms", std::to_string(start_ms),
                                     "--id-step-ms", step, "--quiet"};
  PipelineOptions po;
  po.env = {{"ENABLE_SYMBOL_BREAKDOWN", "true"}};  // the symbol tables are flooded too
  const off_t want_size =
      static_cast<off_t>(compute_layout(SegmentSpec::from_config(Config{}).caps).end);

  // Normal cardinality first: the loadgen's realistic mix, same size, same minutes.
  double normal_rate = 0, normal_write_s = 0, normal_cpu = 0;
  {
    RedisServer redis;
    std::vector<std::string> args{"--count", std::to_string(n), "--seed", "81"};
    args.insert(args.end(), ids.begin(), ids.end());
    const auto t0 = SteadyClock::now();
    run_loadgen_ok(redis, args);
    normal_write_s = seconds_since(t0);
    Pipeline p(redis, po);
    const double cpu0 = children_cpu_s();
    const DrainResult d = drain_backlog(redis, p, 300000);
    INFO(p.logs_tail());
    REQUIRE(d.drained);
    normal_rate = static_cast<double>(n) / d.seconds;
    normal_cpu = stop_stages(p, cpu0);
    Connection c = redis.connect();
    CHECK(status_total(hgetall(c, kPrefix + "status"), "processed_total") == n);
    const BucketSums s = bucket_sums(c, true);
    INFO(join(s.unbalanced));
    CHECK(s.unbalanced.empty());
    CHECK(s.decisions == n);
    CHECK(d.size_first == want_size);
    CHECK(d.size_max == want_size);
  }

  // The flood: 80 % of the entries carry a never-repeating exchange error (reason table), every
  // entry one of 100,000 symbols; the other 20 % keep the realistic reasons, so their
  // (symbol, reason) pairs fill the pair table on their own, and the symbols fill the string table.
  RedisServer redis;
  const std::string expect_path = redis.dir() + "/flood-expect.tsv";
  std::vector<std::string> args{"--count", std::to_string(n), "--seed", "82",
                                "--distinct-reasons", "0.8", "--symbols", "100000",
                                "--expect", expect_path};
  args.insert(args.end(), ids.begin(), ids.end());
  auto t0 = SteadyClock::now();
  run_loadgen_ok(redis, args);
  const double flood_write_s = seconds_since(t0);

  Pipeline p(redis, po);
  const double cpu0 = children_cpu_s();
  const DrainResult d = drain_backlog(redis, p, 300000);
  INFO(p.logs_tail());
  REQUIRE(d.drained);
  const double flood_rate = static_cast<double>(n) / d.seconds;
  for (Stage s : kStages) CHECK(p.alive(s));
  const double flood_cpu = stop_stages(p, cpu0);

  // The segment is the size the default capacities make, from creation to the end of the drain.
  CHECK(d.size_first == want_size);
  CHECK(d.size_min == want_size);
  CHECK(d.size_max == want_size);

  Connection c = redis.connect();
  CHECK(pending_count(c) == 0);

  // Exact against the generator's oracle: decisions strictly, each reason, symbol-reason and
  // unknown field at most its expected count with the family's __overflow__ holding the rest.
  t0 = SteadyClock::now();
  const Expectation e = read_expectation(expect_path);
  REQUIRE(e.total == n);
  std::set<std::string> symbols;
  long long distinct_reasons = 0;
  for (const auto& [minute, fields] : e.buckets)
    for (const auto& [f, count] : fields) {
      if (f.rfind("reason:", 0) == 0) ++distinct_reasons;
      if (f.rfind("symbol_reason:", 0) == 0) symbols.insert(f.substr(14, f.find(':', 14) - 14));
    }
  const auto diffs = compare_buckets(c, e, kPrefix, Overflow::Expected);
  const double compare_s = seconds_since(t0);
  INFO(join(diffs));
  CHECK(diffs.empty());

  // Every bucket adds up: its reasons (overflow included) to its decisions, and so do its
  // symbol-reasons (every flood entry has a symbol).
  const BucketSums s = bucket_sums(c, true);
  INFO(join(s.unbalanced));
  CHECK(s.unbalanced.empty());
  CHECK(s.decisions == n);
  CHECK(s.reasons == n);
  CHECK(s.symbol_reasons == n);

  // The overflow is in status, exactly what the buckets hold under __overflow__.
  const auto status = hgetall(c, kPrefix + "status");
  const long long ov_reason = status_total(status, "overflow_reason_total");
  const long long ov_pair = status_total(status, "overflow_symbol_reason_total");
  const long long ov_unknown = status_total(status, "overflow_unknown_total");
  const long long ov_string = status_total(status, "overflow_string_total");
  CHECK(status_total(status, "processed_total") == n);
  CHECK(ov_reason == s.reason_overflow);
  CHECK(ov_pair == s.symbol_reason_overflow);
  CHECK(ov_unknown == s.unknown_overflow);
  CHECK(ov_reason > 0);
  // Pairs overflowed on their own too (a pair whose reason overflowed overflows with it).
  CHECK(ov_pair > ov_reason);
  if (n >= 1000000) {
    CHECK(symbols.size() > 99000);
    CHECK(distinct_reasons > 790000);
    CHECK(ov_string > 0);  // 20 minutes of flood outgrow the 32,768 strings of the live minutes
  }

  // The pace is a benchmark figure, printed, not asserted: on this shared 2-core machine other
  // load moves it (1M entries: CPU 7.0 s against 6.7 s at a load average of 12; up to 2x with
  // P35_FLOOD_COUNT=200000). scripts/bench.sh holds the speed goal.
  std::printf("flood: normal %.0f msg/s, flood %.0f msg/s (%lld entries each; drain %.2f s and "
              "%.2f s; CPU of the three stages %.1f s and %.1f s, ratio %.2f; loadgen wrote them "
              "in %.1f s and %.1f s)\n",
              normal_rate, flood_rate, n, static_cast<double>(n) / normal_rate, d.seconds,
              normal_cpu, flood_cpu, normal_cpu > 0 ? flood_cpu / normal_cpu : 0.0, normal_write_s,
              flood_write_s);
  std::printf("flood: %lld distinct reasons, %zu symbols, %zu buckets; %lld reasons kept a field; "
              "overflow_reason_total=%lld overflow_symbol_reason_total=%lld "
              "overflow_unknown_total=%lld overflow_string_total=%lld; segment %lld bytes "
              "(%.1f MiB) throughout; oracle compare %.1f s\n",
              distinct_reasons, symbols.size(), s.buckets, s.reason_fields, ov_reason, ov_pair,
              ov_unknown, ov_string, static_cast<long long>(d.size_max),
              static_cast<double>(d.size_max) / 1048576.0, compare_s);
  std::fflush(stdout);
}

// ---------------------------------------------------------------------------------------------
// (2) Hostile entries amid ordinary traffic

namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;

struct Hostile {
  std::string what;
  Fields fields;
  int64_t id_ms = 0;
  // Independent of normalize(), where the outcome is obvious from the contract.
  std::optional<std::string> want_label, want_reason, want_symbol;
  std::optional<int64_t> want_minute;
};

std::string repeat(std::string_view s, size_t times) {
  std::string out;
  out.reserve(s.size() * times);
  for (size_t i = 0; i < times; ++i) out.append(s);
  return out;
}

std::string binary_bytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed;
  for (char& ch : out) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    ch = static_cast<char>(x >> 56);
  }
  return out;
}

std::string iso_utc(int64_t ms) {
  const time_t t = static_cast<time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  struct tm tm {};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(((ms % 1000) + 1000) % 1000));
  return buf;
}

constexpr size_t kMiB = 1 << 20;

// Big values: every field at 1 MB, in the places the rules read and the ones they ignore.
void add_megabyte_entries(std::vector<Hostile>& out, int64_t& id_ms) {
  const auto add = [&](std::string what, Fields f) {
    out.push_back({std::move(what), std::move(f), id_ms++, {}, {}, {}, {}});
    return &out.back();
  };
  add("1 MB error", {{"decision", "ERROR"}, {"symbol", "BTCUSDT"}, {"error", std::string(kMiB, 'x')}})
      ->want_reason = std::string(200, 'x');
  add("1 MB binary reason", {{"decision", "BLOCKED"}, {"reason", binary_bytes(kMiB, 1)}})
      ->want_label = "BLOCKED";
  add("1 MB symbol", {{"decision", "SKIP"}, {"reason", "cooldown_active"}, {"symbol", std::string(kMiB, 'S')}})
      ->want_symbol = std::string(64, 'S');
  add("EXECUTE then 1 MB of spaces", {{"decision", "EXECUTE" + std::string(kMiB, ' ')}})
      ->want_label = "EXECUTE";
  add("1 MB of 2-byte characters as decision", {{"decision", repeat("é", kMiB / 2)}})
      ->want_label = "UNKNOWN:" + repeat("é", 32);
  add("1 MB details with error last",
      {{"executed", "False"}, {"details", R"({"pad":")" + std::string(kMiB, 'p') + R"(","error":"big_details"})"}})
      ->want_reason = "big_details";
  std::string numbers = "{\"n\":[";
  while (numbers.size() < kMiB) numbers += "12345.678,";
  numbers += "0],\"error\":-2010}";
  add("1 MB array of numbers in details", {{"executed", "false"}, {"details", numbers}})
      ->want_reason = "-2010";
  Hostile* digits = add("1 MB of digits as timestamp", {{"decision", "SKIP"}, {"timestamp", std::string(kMiB, '7')}});
  digits->want_minute = minute_of_ms(digits->id_ms);
  add("1 MB executed, plan_id and steps_results",
      {{"executed", std::string(kMiB, 'T')}, {"plan_id", std::string(kMiB, 'q')},
       {"steps_results", "[" + std::string(kMiB, '[')}});
  add("1 MB field name", {{std::string(kMiB, 'n'), "v"}, {"decision", "SKIP"}})->want_label = "SKIP";
  add("1 MB of NULs as reason", {{"decision", "SKIP"}, {"error", std::string(kMiB, '\0')},
                                 {"reason", "nul_fallback"}})
      ->want_reason = "nul_fallback";
}

// Many fields: 1,000 ignored ones, 1,000 duplicates of the fields the rules read (the last wins).
void add_many_field_entries(std::vector<Hostile>& out, int64_t& id_ms) {
  Fields noise;
  for (int i = 0; i < 1000; ++i) noise.push_back({"f" + std::to_string(i), "value " + std::to_string(i)});
  Fields a = noise;
  a.push_back({"decision", "SKIP"});
  a.push_back({"reason", "after_1000_fields"});
  out.push_back({"1,000 ignored fields", a, id_ms++, "SKIP", "after_1000_fields", {}, {}});
  Fields b;
  for (int i = 0; i < 1000; ++i) b.push_back({"reason", "dup-" + std::to_string(i)});
  b.push_back({"decision", "BLOCKED"});
  out.push_back({"1,000 reason fields", b, id_ms++, "BLOCKED", "dup-999", {}, {}});
  Fields c;
  for (int i = 0; i < 999; ++i) c.push_back({"decision", i % 2 == 0 ? "EXECUTE" : "MAYBE"});
  c.push_back({"decision", "error"});
  out.push_back({"1,000 decision fields", c, id_ms++, "ERROR", "none", {}, {}});
  Fields d;
  for (int i = 0; i < 999; ++i) d.push_back({"error", "e" + std::to_string(i)});
  d.push_back({"error", " \t "});  // the last `error` is blank: the next candidate wins
  d.push_back({"reason", "blank_error_last"});
  out.push_back({"1,000 error fields, the last blank", d, id_ms++, {}, "blank_error_last", {}, {}});
  Fields e;
  for (int i = 0; i < 1000; ++i) e.push_back({"k" + std::to_string(i), std::string(1024, 'k')});
  e.push_back({"executed", "yes"});
  out.push_back({"1,000 fields of 1 KB", e, id_ms++, "EXECUTE", "none", {}, {}});
}

// Binary values: NUL and other controls, ill-formed UTF-8 of every kind, binary field names.
void add_binary_entries(std::vector<Hostile>& out, int64_t& id_ms) {
  using namespace std::string_literals;
  const auto add = [&](std::string what, Fields f, std::optional<std::string> label,
                       std::optional<std::string> reason, std::optional<std::string> symbol = {}) {
    out.push_back({std::move(what), std::move(f), id_ms++, std::move(label), std::move(reason),
                   std::move(symbol), {}});
  };
  add("NUL inside the decision", {{"decision", "EXEC\0UTE"s}}, "UNKNOWN:EXEC UTE", "none");
  add("NULs around the decision", {{"decision", "\0\0execute\0"s}}, "EXECUTE", "none");
  add("controls around the symbol", {{"decision", "SKIP"}, {"symbol", "\x01\x7f" "ETHUSDT\0"s}},
      "SKIP", "none", "ETHUSDT");
  add("ill-formed UTF-8 reason", {{"decision", "BLOCKED"}, {"error", "bad \xff\xfe bytes \xc0\x80 end"}},
      "BLOCKED", "bad \xEF\xBF\xBD\xEF\xBF\xBD bytes \xEF\xBF\xBD\xEF\xBF\xBD end");
  add("encoded surrogate and truncated sequence",
      {{"decision", "ERROR"}, {"error", "\xed\xa0\x80 x \xe2\x82"}}, "ERROR", {});
  add("ill-formed UTF-8 decision", {{"decision", "\xff" "MAYBE"}}, "UNKNOWN:\xEF\xBF\xBDMAYBE", "none");
  add("ill-formed UTF-8 executed", {{"executed", "\x80"}}, "UNKNOWN", "none");
  add("binary field names", {{"dec\0ision"s, "SKIP"}, {"\xff\xfe", "x"}, {"executed", "0"}}, "SKIP", "none");
  add("only NULs everywhere",
      {{"decision", "\0\0"s}, {"error", "\0"s}, {"reason", "\0\0\0"s}, {"symbol", "\0"s}},
      "UNKNOWN:", "none", "");
  add("64 KB of random bytes in every field",
      {{"decision", binary_bytes(65536, 2)}, {"executed", binary_bytes(65536, 3)},
       {"error", binary_bytes(65536, 4)}, {"details", binary_bytes(65536, 5)},
       {"reason", binary_bytes(65536, 6)}, {"symbol", binary_bytes(65536, 7)},
       {"timestamp", binary_bytes(65536, 8)}},
      {}, {});
  add("an empty entry name and value", {{"", ""}, {"executed", "no"}}, "SKIP", "none");
}

// JSON bombs in `details`: nesting far beyond the parser's depth limit, and legal nesting.
void add_json_bomb_entries(std::vector<Hostile>& out, int64_t& id_ms) {
  const auto add = [&](std::string what, std::string details, std::optional<std::string> reason) {
    out.push_back({std::move(what),
                   {{"executed", "False"}, {"details", std::move(details)}, {"reason", "fallback"}},
                   id_ms++, {}, std::move(reason), {}, {}});
  };
  add("100,000 nested arrays", std::string(100000, '['), "fallback");
  add("100,000 nested arrays, closed", std::string(100000, '[') + std::string(100000, ']'), "fallback");
  add("error beside 2,000 nested objects",
      R"({"error":"deep","x":)" + repeat(R"({"a":)", 2000) + "1" + std::string(2000, '}') + "}",
      "fallback");
  add("error beside 100 nested objects",
      R"({"x":)" + repeat(R"({"a":)", 100) + "1" + std::string(100, '}') + R"(,"error":"shallow"})",
      "shallow");
  add("error as 5,000 nested arrays", R"({"error":)" + std::string(5000, '[') + std::string(5000, ']') + "}",
      "fallback");
  add("500 KB of unclosed objects", repeat(R"({"a":)", 100000), "fallback");
  add("a 100,000-member object", [] {
    std::string s = "{";
    for (int i = 0; i < 100000; ++i) s += "\"m" + std::to_string(i) + "\":" + std::to_string(i) + ",";
    return s + "\"error\":\"after_100k_members\"}";
  }(), "after_100k_members");
  add("error repeated 10,000 times, the last wins", [] {
    std::string s = "{";
    for (int i = 0; i < 10000; ++i) s += "\"error\":\"e" + std::to_string(i) + "\",";
    return s + "\"error\":\"last_error\"}";
  }(), "last_error");
}

// Timestamps at and beyond both window edges (±1 ms), in every format, huge, negative, garbage.
void add_timestamp_entries(std::vector<Hostile>& out, int64_t& id_ms) {
  const auto add = [&](std::string what, std::string ts, std::optional<int64_t> event_ms) {
    const int64_t id = id_ms++;
    Hostile h{std::move(what), {{"decision", "SKIP"}, {"reason", "ts_edge"}, {"timestamp", std::move(ts)}},
              id, "SKIP", "ts_edge", {}, {}};
    if (event_ms) h.want_minute = minute_of_ms(*event_ms);
    out.push_back(std::move(h));
  };
  const auto at = [&](int64_t delta) { return id_ms + delta; };  // the next entry's ID + delta
  // The next entry's ID is id_ms at the time `at` is evaluated (arguments before the call).
  int64_t t = at(-kMaxPastMs);
  add("ms, oldest inside", std::to_string(t), t);
  t = at(-kMaxPastMs - 1);
  add("ms, 1 ms too old", std::to_string(t), at(0));
  t = at(kMaxFutureMs);
  add("ms, newest inside", std::to_string(t), t);
  t = at(kMaxFutureMs + 1);
  add("ms, 1 ms too new", std::to_string(t), at(0));
  t = at(-kMaxPastMs);
  add("ISO, oldest inside", iso_utc(t), t);
  t = at(-kMaxPastMs - 1);
  add("ISO, 1 ms too old", iso_utc(t), at(0));
  t = at(kMaxFutureMs);
  add("ISO, newest inside", iso_utc(t), t);
  t = at(kMaxFutureMs + 1);
  add("ISO, 1 ms too new", iso_utc(t), at(0));
  // Integer seconds: the next ID a whole second, so that the edge is a whole second too.
  const auto whole_second = [&] { id_ms = (id_ms / 1000 + 1) * 1000; };
  whole_second();
  t = at(-kMaxPastMs);
  add("s, oldest inside", std::to_string(t / 1000), t);
  whole_second();
  t = at(-kMaxPastMs - 1000);
  add("s, 1 s too old", std::to_string(t / 1000), at(0));
  whole_second();
  t = at(kMaxFutureMs);
  add("s, newest inside", std::to_string(t / 1000), t);
  whole_second();
  t = at(kMaxFutureMs + 1000);
  add("s, 1 s too new", std::to_string(t / 1000), at(0));
  // Fractional seconds to the millisecond.
  const auto fractional = [](int64_t ms) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(ms / 1000),
                  static_cast<long long>(ms % 1000));
    return std::string(buf);
  };
  t = at(-kMaxPastMs);  // the next ID is a whole second + 1 ms: so is t
  add("s.mmm, oldest inside", fractional(t), t);
  t = at(-kMaxPastMs - 1);
  add("s.mmm, 1 ms too old", fractional(t), at(0));
  t = at(kMaxFutureMs);
  add("s.mmm, newest inside", fractional(t), t);
  t = at(kMaxFutureMs + 1);
  add("s.mmm, 1 ms too new", fractional(t), at(0));
  for (const char* s : {"99999999999999999999999999", "-99999999999999999999", "-1", "0", "-0",
                        "9223372036854775807", "-9223372036854775808", "18446744073709551616",
                        "1e400", "-1e400", "NaN", "nan", "inf", "-inf", "Infinity", "", " ",
                        "garbage", "0x1A2B3C", "1.2.3", "+", "-", ".", "1e", "12:00",
                        "9999-12-31T23:59:59.999Z", "0000-01-01T00:00:00Z",
                        "-2026-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
                        "2026-01-01T24:00:01Z", "2026-01-01T00:00:00+99:99", "2026-01-01T00:00:00Q",
                        "2026-01-01T00:00:00.Z", "2026-01-01", "T", "１７９０００００００"})
    add(std::string("garbage or far away: '") + s + "'", s, {});
  add("NULs as timestamp", std::string(8, '\0'), {});
  add("digits with a NUL", std::string("1790000000\0" "000", 14), {});
}

Expectation expectation_of(const std::vector<Hostile>& hs, std::vector<std::string>& mismatches) {
  Expectation e;
  Normalized n;
  std::vector<Field> fields;
  for (const Hostile& h : hs) {
    fields.clear();
    for (const auto& [name, value] : h.fields) fields.push_back({name, value});
    normalize(fields, h.id_ms, n);
    const auto mismatch = [&](const char* what, const std::string& want, const std::string& got) {
      if (want != got) mismatches.push_back(h.what + ": " + what + " want '" + want + "' got '" + got + "'");
    };
    if (h.want_label) mismatch("decision", *h.want_label, n.decision_label());
    if (h.want_reason) mismatch("reason", *h.want_reason, n.reason);
    if (h.want_symbol) mismatch("symbol", *h.want_symbol, n.symbol);
    if (h.want_minute) mismatch("minute", minute_key(*h.want_minute), minute_key(n.minute));
    const std::string minute = minute_key(n.minute);
    auto& b = e.buckets[minute];
    ++b["decision:" + n.decision_label()];
    ++b["reason:" + n.reason];
    if (!n.symbol.empty()) ++b["symbol_reason:" + n.symbol + ":" + n.reason];
    if (n.decision == Decision::Unknown) ++e.unknowns[minute][n.unknown_member()];
    ++e.total;
  }
  return e;
}

void merge(Expectation& into, const Expectation& from) {
  for (const auto& [m, fields] : from.buckets)
    for (const auto& [f, n] : fields) into.buckets[m][f] += n;
  for (const auto& [m, members] : from.unknowns)
    for (const auto& [f, n] : members) into.unknowns[m][f] += n;
  into.total += from.total;
}

// XADDs the entries with their explicit IDs, pipelined.
void write_hostile(Connection& c, const std::vector<Hostile>& hs) {
  for (const Hostile& h : hs) {
    CommandArgs a;
    a.add("XADD").add(kStream).add(std::to_string(h.id_ms) + "-0");
    for (const auto& [name, value] : h.fields) a.add(name).add(value);
    c.append(a);
  }
  for (const Hostile& h : hs) {
    const Reply r = c.read_reply();
    INFO(h.what);
    REQUIRE_FALSE(r.is_error());
  }
}

}  // namespace

TEST_CASE("1 MB values, 1,000 fields, binary values, JSON bombs and timestamps at every edge are "
          "counted by the rules amid ordinary traffic, without a stall",
          "[flood][redis]") {
  RedisServer redis;
  // Room for every distinct value: every field must be exact, nothing may hide in __overflow__.
  PipelineOptions po;
  po.env = {{"ENABLE_SYMBOL_BREAKDOWN", "true"}, {"P35_REASONS_PER_MINUTE", "16384"},
            {"P35_SYMBOL_REASONS_PER_MINUTE", "16384"}, {"P35_UNKNOWN_PER_MINUTE", "4096"},
            {"P35_STRINGS", "65536"}};
  Pipeline p(redis, po);
  p.start_all();

  // Ordinary traffic (p35-loadgen, its own oracle) in chunks, each group of hostile entries
  // between two chunks: loadgen IDs 20 per millisecond, hostile ones 1 per millisecond. The first
  // ID is a whole second, 10 minutes ago, so that minutes differ at both window edges.
  int64_t next_ms = (now_ms() - 600000) / 1000 * 1000;
  constexpr long long kChunk = 5000;
  int chunk_no = 0;
  Expectation want;
  const auto chunk = [&] {
    const std::string path = redis.dir() + "/chunk-" + std::to_string(chunk_no) + ".tsv";
    run_loadgen_ok(redis, {"--count", std::to_string(kChunk), "--seed", std::to_string(90 + chunk_no),
                           "--explicit-ids", "--start-ms", std::to_string(next_ms), "--id-step-ms",
                           "0.05", "--expect", path, "--quiet"});
    merge(want, read_expectation(path));
    next_ms += kChunk / 20 + 1;
    ++chunk_no;
  };
  std::vector<std::string> oracle_mismatches;
  Connection c = redis.connect();
  c.set_command_timeout_ms(60000);
  std::vector<std::vector<Hostile>> groups(4);
  size_t hostile_total = 0;
  auto last_write = SteadyClock::now();
  for (size_t g = 0; g < groups.size(); ++g) {
    chunk();
    switch (g) {
      case 0: add_megabyte_entries(groups[g], next_ms); break;
      case 1: add_many_field_entries(groups[g], next_ms), add_binary_entries(groups[g], next_ms); break;
      case 2: add_json_bomb_entries(groups[g], next_ms); break;
      default: add_timestamp_entries(groups[g], next_ms); break;
    }
    write_hostile(c, groups[g]);
    merge(want, expectation_of(groups[g], oracle_mismatches));
    hostile_total += groups[g].size();
  }
  chunk();
  last_write = SteadyClock::now();
  INFO(join(oracle_mismatches));
  CHECK(oracle_mismatches.empty());  // the library's rules agree with what the contract says
  REQUIRE(want.total == static_cast<long long>(kChunk) * 5 + static_cast<long long>(hostile_total));

  // No stall: everything counted, committed and acked within a deadline of the last write.
  {
    INFO(p.logs_tail());
    REQUIRE(wait_drained(redis, p.options(), 30000));
  }
  const double drain_s = seconds_since(last_write);
  for (Stage s : kStages) CHECK(p.alive(s));
  CHECK(pending_count(c) == 0);
  const auto diffs = compare_buckets(c, want, kPrefix);
  INFO(join(diffs));
  CHECK(diffs.empty());
  const auto status = hgetall(c, kPrefix + "status");
  CHECK(status_total(status, "processed_total") == want.total);
  CHECK(status_total(status, "overflow_reason_total") == 0);
  CHECK(status_total(status, "overflow_string_total") == 0);
  std::printf("flood: %zu hostile entries amid %lld ordinary ones, drained %.2f s after the last "
              "write, %zu buckets exact\n",
              hostile_total, kChunk * 5, drain_s, want.buckets.size());
  std::fflush(stdout);
}
