// Tests of p35-shm, the read-only inspector, as a real binary: --json and --prometheus against a
// live pipeline (the exposition checked by promtool), stages killed under it, --env-file, and
// segments it must refuse (another layout version, bad magic, wrong size, a FIFO or a symlink in
// its place) with an explanation and a non-zero exit, promptly, never a crash.
#include <catch2/catch.hpp>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <simdjson.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "version.hpp"
#include "pipeline_harness.hpp"
#include "rules.hpp"
#include "shm_layout.hpp"
#include "shm_test_util.hpp"
#include "stream_id.hpp"

using namespace p35;
using namespace p35::test;

namespace {

const char* const kStageNames[3] = {"ingest", "rollup", "ackd"};  // the segment's stage order

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A private temp dir for p35-shm's output, removed with what it holds.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/p35-inspect-test.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    for (const auto& f : files_) ::unlink(f.c_str());
    ::rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) {
    files_.push_back(path_ + "/" + name);
    return files_.back();
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

struct ShmRun {
  ExitStatus status;
  std::string output;  // stdout and stderr together
};

// Runs the real p35-shm with args and returns how it ended and what it printed; throws when it
// has not ended within `deadline_ms` (the child is then killed).
ShmRun run_shm(const std::string& out_path, const std::vector<std::string>& args,
               SpawnOptions so = {}, int deadline_ms = 20000) {
  std::vector<std::string> argv{env_or("P35_SHM_BIN", "p35-shm")};
  argv.insert(argv.end(), args.begin(), args.end());
  ::unlink(out_path.c_str());
  so.log_path = out_path;
  ChildProcess p(argv, so);
  const auto st = p.wait_exit(deadline_ms);
  if (!st) throw std::runtime_error("p35-shm did not finish within " + std::to_string(deadline_ms) + " ms");
  return {*st, read_file(out_path)};
}

// Files in `dir` named like p35-shm --output's temporary files.
std::vector<std::string> leftover_temporaries(const std::string& dir) {
  std::vector<std::string> found;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) throw std::runtime_error("cannot list " + dir);
  while (const dirent* e = ::readdir(d))
    if (std::string(e->d_name).find(".tmp.") != std::string::npos) found.emplace_back(e->d_name);
  ::closedir(d);
  return found;
}

// A Prometheus label value as the exposition format escapes it.
std::string label_value(const std::string& v) {
  std::string out;
  for (const char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out;
}

// The samples of an exposition: "name{labels}" -> value text (comments skipped).
std::map<std::string, std::string> prom_samples(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    out[line.substr(0, space)] = line.substr(space + 1);
  }
  return out;
}

// The exit code of `promtool check metrics < file` (promtool reads the exposition from stdin);
// what it said goes to `log`.
int promtool_check_metrics(const std::string& file, const std::string& log) {
  SpawnOptions so;
  so.log_path = log;
  ChildProcess p({"/bin/sh", "-c", "exec \"$0\" check metrics < \"$1\"",
                  env_or("P35_PROMTOOL", "promtool"), file},
                 so);
  const auto st = p.wait_exit(30000);
  if (!st) throw std::runtime_error("promtool did not finish within 30 s");
  return st->signaled ? -1 : st->code;
}

// The parsed --json output (simdjson DOM; throws simdjson_error on invalid JSON).
struct Json {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  explicit Json(const std::string& text) : root(parser.parse(simdjson::padded_string(text))) {}
};

std::string str(simdjson::dom::element e) { return std::string(std::string_view(e)); }
int64_t num(simdjson::dom::element e) { return int64_t(e); }

simdjson::dom::element stage_json(const Json& j, const std::string& name) {
  for (simdjson::dom::element s : j.root["stages"].get_array())
    if (str(s["name"]) == name) return s;
  throw std::runtime_error("no stage " + name + " in p35-shm --json");
}

std::string last_stream_id(RedisServer& redis, const std::string& stream) {
  Connection c = redis.connect();
  const Reply info = c.command({"XINFO", "STREAM", stream});
  for (size_t i = 0; i + 1 < info.size(); i += 2)
    if (reply_str(info.element(i)) == "last-generated-id") return std::string(reply_str(info.element(i + 1)));
  return "";
}

std::string proc_comm(int64_t pid) {
  std::string comm = read_file("/proc/" + std::to_string(pid) + "/comm");
  if (!comm.empty() && comm.back() == '\n') comm.pop_back();
  return comm;
}

int64_t wall_minute() {
  return std::chrono::duration_cast<std::chrono::minutes>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Reason counts of the expectation over the minutes (now - window, now], as p35-shm --window does.
// Loads `count` entries with an expectation file, starts the target's order and waits for the
// drain; the stages are then idle and every count is committed and acked.
Expectation load_and_drain(RedisServer& redis, Pipeline& pipe, TempDir& tmp, int count) {
  const std::string expect = tmp.file("expect.tsv");
  const auto st = run_loadgen(redis, {"--count", std::to_string(count), "--seed", "35", "--expect",
                                      expect, "--quiet"}, tmp.file("loadgen.log"));
  REQUIRE(st.exited_with(0));
  pipe.start_all();
  INFO(pipe.logs_tail());
  REQUIRE(wait_drained(redis, pipe.options(), 60000));
  return read_expectation(expect);
}

// Polls p35-shm --json until every stage is alive and running (ingest reports "running" once it
// has read its pending list), and returns the last output.
std::string json_when_running(const std::string& out, const std::string& shm_name) {
  std::string text;
  const bool ok = wait_until(
      [&] {
        text = run_shm(out, {"--json", "--shm-name", shm_name}).output;
        Json j(text);
        for (const char* name : kStageNames) {
          auto s = stage_json(j, name);
          if (!bool(s["alive"]) || str(s["state"]) != "running") return false;
        }
        // Called after a drain: Redis has the XACKs, but ackd publishes its watermark and frees
        // the ID log only once it read the reply; wait for that too, not just the first sample.
        return num(j.root["id_log"]["unacked"]) == 0 &&
               str(j.root["watermarks"]["acked"]) == str(j.root["watermarks"]["counted"]);
      },
      30000, 100);
  INFO(text);
  REQUIRE(ok);
  return text;
}

// A real, empty segment (created as the stages create it) whose header is then patched.
void patch_u32(const std::string& path, size_t offset, uint32_t value) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, &value, sizeof value, static_cast<off_t>(offset)) == sizeof value);
  ::close(fd);
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// p35-shm refused the segment: it ended by exit(1), not by a signal, said `why`, and with --json
// printed a valid {"error": ...} object saying the same.
// Each run must end within `deadline_ms`.
void require_refusal(TempDir& tmp, const std::string& shm_name, const std::string& why,
                     int deadline_ms = 20000) {
  const auto text = run_shm(tmp.file("refuse.txt"), {"--shm-name", shm_name}, {}, deadline_ms);
  INFO("p35-shm printed: " << text.output);
  CHECK_FALSE(text.status.signaled);
  CHECK(text.status.exited_with(1));
  CHECK_THAT(text.output, Catch::Contains(why));
  const auto json = run_shm(tmp.file("refuse.json"), {"--json", "--shm-name", shm_name}, {}, deadline_ms);
  INFO("p35-shm --json printed: " << json.output);
  CHECK(json.status.exited_with(1));
  Json j(json.output);
  CHECK_THAT(str(j.root["error"]), Catch::Contains(why));
  const auto prom =
      run_shm(tmp.file("refuse.prom"), {"--prometheus", "--shm-name", shm_name}, {}, deadline_ms);
  INFO("p35-shm --prometheus printed: " << prom.output);
  CHECK(prom.status.exited_with(1));
  // An exporter still has a sample to alert on.
  CHECK_THAT(prom.output, Catch::Contains("p35_up{segment=\"" + label_value(shm_name) + "\"} 0"));
}

// Decision counts of the expectation over the minutes (now - window, now].
std::map<std::string, long long> expected_decisions(const Expectation& e, int64_t now_minute, int window) {
  std::map<std::string, long long> out;
  const std::string first = minute_key(now_minute - window + 1), last = minute_key(now_minute);
  for (const auto& [key, fields] : e.buckets) {
    if (key < first || key > last) continue;
    for (const auto& [field, count] : fields) {
      if (field.rfind("decision:UNKNOWN", 0) == 0) out["UNKNOWN"] += count;
      else if (field.rfind("decision:", 0) == 0) out[field.substr(9)] += count;
    }
  }
  return out;
}

// `p35-shm --prometheus --window 60` of a drained pipeline of 3000 entries, against its --json
// (`j`) and the generator's expectation; `minutes` are the wall minutes before and after the run.
void check_prometheus(const std::string& text, const std::string& shm_name, const Json& j,
                      const Expectation& e, std::pair<int64_t, int64_t> minutes) {
  const auto samples = prom_samples(text);
  const std::string seg = "segment=\"" + shm_name + "\"";
  const auto value = [&](const std::string& series) {
    const auto it = samples.find(series);
    return it == samples.end() ? std::string("(absent)") : it->second;
  };
  CHECK(value("p35_build_info{version=\"" P35_VERSION "\"}") == "1");
  CHECK(value("p35_up{" + seg + "}") == "1");
  for (const char* name : kStageNames) {
    const std::string stage = seg + ",stage=\"" + name + "\"";
    CHECK(value("p35_stage_up{" + stage + "}") == "1");
    CHECK(value("p35_stage_state{" + stage + ",state=\"running\"}") == "1");
    CHECK(value("p35_stage_state{" + stage + ",state=\"waiting-redis\"}") == "0");
    CHECK(value("p35_stage_starts_total{" + stage + "}") == "1");
    CHECK(samples.count("p35_stage_heartbeat_timestamp_seconds{" + stage + "}") == 1);
    CHECK(samples.count("p35_stage_redis_outage_start_timestamp_seconds{" + stage + "}") == 0);
  }
  CHECK(value("p35_messages_processed_total{" + seg + "}") == "3000");
  CHECK(value("p35_ingest_read_entries_total{" + seg + "}") == "3000");
  CHECK(value("p35_ackd_acked_entries_total{" + seg + "}") == "3000");
  CHECK(value("p35_rollup_commits_total{" + seg + "}") == std::to_string(num(j.root["commits"])));
  CHECK(value("p35_id_log_unacked{" + seg + "}") == "0");
  CHECK(value("p35_watermark_lag_seconds{" + seg + ",watermark=\"committed\"}") == "0.000");
  CHECK(value("p35_watermark_lag_seconds{" + seg + ",watermark=\"acked\"}") == "0.000");
  const auto counted = StreamId::parse(str(j.root["watermarks"]["counted"]));
  REQUIRE(counted);
  CHECK(value("p35_watermark_timestamp_seconds{" + seg + ",watermark=\"counted\"}") ==
        fmt::format("{:.3f}", static_cast<double>(counted->ms) / 1000.0));
  for (const char* d : {"EXECUTE", "SKIP", "BLOCKED", "ERROR", "UNKNOWN"}) {
    INFO("decision " << d);
    const std::string got = value("p35_window_decisions{" + seg + ",window=\"60m\",decision=\"" + d + "\"}");
    CHECK((got == std::to_string(expected_decisions(e, minutes.first, 60)[d]) ||
           got == std::to_string(expected_decisions(e, minutes.second, 60)[d])));
  }
  CHECK_THAT(text, Catch::Contains("p35_window_reason_decisions{" + seg + ",window=\"60m\",reason=\""));
  // The conventions: counters end in _total, no -1 sentinel, HELP and TYPE for every family.
  std::istringstream in(text);
  size_t types = 0, helps = 0;
  for (std::string line; std::getline(in, line);) {
    INFO(line);
    CHECK_FALSE(line.ends_with(" -1"));
    if (line.starts_with("# TYPE ")) ++types;
    if (line.starts_with("# HELP ")) ++helps;
    if (line.starts_with("# TYPE ") && line.ends_with(" counter"))
      CHECK(line.substr(0, line.size() - 8).ends_with("_total"));
  }
  CHECK(types == helps);
  CHECK(types >= 30);
}

}  // namespace

TEST_CASE("p35-shm --json describes a live pipeline: stages, watermarks, minutes, top reasons",
          "[inspect][pipeline]") {
  RedisServer redis;
  PipelineOptions opt;
  opt.env["P35_RING_SLOTS"] = "96";  // not the default: the capacities shown come from the segment
  Pipeline pipe(redis, opt);
  TempDir tmp;
  const Expectation e = load_and_drain(redis, pipe, tmp, 3000);
  const std::string out = tmp.file("shm.json");
  Json j(json_when_running(out, pipe.shm_name()));

  auto seg = j.root["segment"];
  CHECK(str(seg["name"]) == pipe.shm_name());
  CHECK(num(seg["layout_version"]) == shm::kLayoutVersion);
  struct stat st {};
  REQUIRE(::stat(shm_path(pipe.shm_name()).c_str(), &st) == 0);
  CHECK(num(seg["size"]) == st.st_size);
  CHECK_THAT(str(seg["for"]), Catch::Contains("consumer=" + opt.consumer));
  CHECK(num(j.root["capacities"]["ring_slots"]) == 96);

  SECTION("each stage: its real pid, alive, running, a fresh heartbeat, started once") {
    for (const char* name : kStageNames) {
      INFO(name);
      auto s = stage_json(j, name);
      CHECK(proc_comm(num(s["pid"])) == std::string("p35-") + name);
      CHECK(bool(s["alive"]));
      CHECK(str(s["state"]) == "running");
      CHECK(num(s["heartbeat_age_ms"]) >= 0);
      // Idle, ingest and ackd beat once per 5 s wait (XREADGROUP BLOCK, the bell's timeout);
      // systemd's watchdog allows 30 s.
      CHECK(num(s["heartbeat_age_ms"]) < 30000);
      CHECK(num(s["starts"]) == 1);
    }
    CHECK(num(stage_json(j, "ingest")["counted"]) == 3000);
    CHECK(num(stage_json(j, "ackd")["acked"]) == 3000);
  }

  SECTION("watermarks at the stream's last ID, nothing unacked or in flight, totals exact") {
    const std::string last = last_stream_id(redis, pipe.options().stream);
    CHECK(str(j.root["watermarks"]["counted"]) == last);
    CHECK(str(j.root["watermarks"]["committed"]) == last);
    CHECK(str(j.root["watermarks"]["acked"]) == last);
    CHECK(num(j.root["id_log"]["unacked"]) == 0);
    CHECK_FALSE(bool(j.root["journal_pending"]));
    CHECK_FALSE(bool(j.root["commit_pending"]));
    CHECK(num(j.root["totals"]["processed"]) == 3000);
  }

  SECTION("every minute's decisions equal the generator's, and each minute is committed") {
    std::map<std::string, simdjson::dom::element> minutes;
    for (simdjson::dom::element m : j.root["minutes"].get_array()) minutes[str(m["minute"])] = m;
    CHECK(minutes.size() == e.buckets.size());
    long long total = 0;
    for (const auto& [key, fields] : e.buckets) {
      INFO("minute " << key);
      REQUIRE(minutes.count(key) == 1);
      auto m = minutes[key];
      long long unknown = 0, all = 0;
      for (const auto& [field, count] : fields) {
        if (field.rfind("decision:UNKNOWN", 0) == 0) unknown += count;
        if (field.rfind("decision:", 0) == 0) all += count;
      }
      const auto field_or_0 = [&](const char* f) { return fields.count(f) ? fields.at(f) : 0; };
      CHECK(num(m["EXECUTE"]) == field_or_0("decision:EXECUTE"));
      CHECK(num(m["SKIP"]) == field_or_0("decision:SKIP"));
      CHECK(num(m["BLOCKED"]) == field_or_0("decision:BLOCKED"));
      CHECK(num(m["ERROR"]) == field_or_0("decision:ERROR"));
      CHECK(num(m["UNKNOWN"]) == unknown);
      CHECK(num(m["messages"]) == all);
      CHECK(bool(m["committed"]));
      total += all;
    }
    CHECK(total == 3000);
  }

  SECTION("--window 60: the top reasons and their counts are the hour's most frequent") {
    const int64_t minute_before = wall_minute();
    const std::string text = run_shm(out, {"--json", "--window", "60", "--shm-name", pipe.shm_name()}).output;
    INFO(text);
    Json w(text);
    const int64_t minute_end = wall_minute();
    auto top = w.root["top_reasons"].get_array();
    std::vector<std::pair<std::string, long long>> kept;
    long long previous = -1;
    for (simdjson::dom::element r : top) {
      kept.emplace_back(str(r["reason"]), num(r["count"]));
      INFO("reason " << kept.back().first << " count " << kept.back().second);
      if (previous >= 0) CHECK(kept.back().second <= previous);
      previous = kept.back().second;
    }
    // The 10 largest of the hour, counts exact and none larger left out. The minute may have
    // turned while p35-shm ran: either window edge is right.
    const auto all = window_reasons(e, minute_before, 60);
    REQUIRE(all.size() > 10);
    const auto wrong_before = top_violations(kept, all, 10);
    const auto wrong_end = top_violations(kept, window_reasons(e, minute_end, 60), 10);
    std::string why;
    for (const auto& line : wrong_before) why += line + "\n";
    INFO(why);
    CHECK((wrong_before.empty() || wrong_end.empty()));
  }

  SECTION("the text rendering shows the layout") {
    const auto text = run_shm(tmp.file("shm.txt"), {"--shm-name", pipe.shm_name()});
    CHECK(text.status.exited_with(0));
    CHECK_THAT(text.output, Catch::Contains("layout v" + std::to_string(shm::kLayoutVersion)));
  }

  SECTION("--prometheus: the pipeline's real counts in conventional families; promtool accepts it") {
    const int64_t minute_before = wall_minute();
    const std::string prom_file = tmp.file("shm.prom");
    const auto prom = run_shm(prom_file, {"--prometheus", "--window", "60", "--shm-name", pipe.shm_name()});
    const int64_t minute_end = wall_minute();
    INFO(prom.output);
    REQUIRE(prom.status.exited_with(0));
    check_prometheus(prom.output, pipe.shm_name(), j, e, {minute_before, minute_end});
    const std::string log = tmp.file("promtool.log");
    CHECK(promtool_check_metrics(prom_file, log) == 0);
    INFO("promtool: " << read_file(log));
    // The control: the same check fails on what this exporter printed before (a counter without
    // _total, milliseconds), so a passing check means something.
    const std::string old_file = tmp.file("old.prom");
    std::ofstream(old_file) << "# HELP p35_totals Counters.\n# TYPE p35_totals counter\n"
                               "p35_totals{kind=\"processed\"} 3000\n"
                               "# HELP p35_stage_heartbeat_age_ms Age.\n"
                               "# TYPE p35_stage_heartbeat_age_ms gauge\n"
                               "p35_stage_heartbeat_age_ms{stage=\"ingest\"} -1\n";
    CHECK(promtool_check_metrics(old_file, log) != 0);
  }
}

TEST_CASE("p35-shm shows killed stages as dead and still reads the segment they left",
          "[inspect][pipeline]") {
  RedisServer redis;
  Pipeline pipe(redis);
  TempDir tmp;
  load_and_drain(redis, pipe, tmp, 500);
  const std::string out = tmp.file("shm.json");
  std::map<std::string, int64_t> pid;
  {
    Json j(json_when_running(out, pipe.shm_name()));
    for (const char* name : kStageNames) pid[name] = num(stage_json(j, name)["pid"]);
  }

  pipe.kill(Stage::Ingest, SIGKILL);  // killed and reaped: the pid is gone
  {
    const auto run = run_shm(out, {"--json", "--shm-name", pipe.shm_name()});
    INFO(run.output);
    CHECK(run.status.exited_with(0));
    Json j(run.output);
    auto ingest = stage_json(j, "ingest");
    CHECK(num(ingest["pid"]) == pid["ingest"]);
    CHECK_FALSE(bool(ingest["alive"]));
    CHECK(str(ingest["state"]) == "dead");
    for (const char* name : {"rollup", "ackd"}) {
      INFO(name);
      CHECK(bool(stage_json(j, name)["alive"]));
      CHECK(str(stage_json(j, name)["state"]) == "running");
    }
  }

  pipe.kill(Stage::Rollup, SIGKILL);
  pipe.kill(Stage::Ackd, SIGKILL);
  const auto run = run_shm(out, {"--json", "--shm-name", pipe.shm_name()});
  INFO(run.output);
  CHECK(run.status.exited_with(0));
  Json j(run.output);
  for (const char* name : kStageNames) {
    INFO(name);
    auto s = stage_json(j, name);
    CHECK(num(s["pid"]) == pid[name]);
    CHECK_FALSE(bool(s["alive"]));
    CHECK(str(s["state"]) == "dead");
  }
  // What the dead stages left is still there to read.
  const std::string last = last_stream_id(redis, pipe.options().stream);
  CHECK(str(j.root["watermarks"]["acked"]) == last);
  CHECK(num(j.root["totals"]["processed"]) == 500);

  const auto text = run_shm(tmp.file("shm.txt"), {"--shm-name", pipe.shm_name()});
  CHECK(text.status.exited_with(0));
  CHECK_THAT(text.output, Catch::Contains("dead"));
  const auto prom = run_shm(tmp.file("shm.prom"), {"--prometheus", "--shm-name", pipe.shm_name()});
  CHECK(prom.status.exited_with(0));
  const std::string ingest = "segment=\"" + pipe.shm_name() + "\",stage=\"ingest\"";
  CHECK_THAT(prom.output, Catch::Contains("p35_stage_up{" + ingest + "} 0"));
  CHECK_THAT(prom.output, !Catch::Contains("p35_stage_state{" + ingest));  // a dead stage has none
  CHECK_THAT(prom.output, Catch::Contains("p35_up{segment=\"" + pipe.shm_name() + "\"} 1"));
}

TEST_CASE("p35-shm refuses a segment of another layout version, says why and how to fix it",
          "[inspect][shm]") {
  ShmGuard guard;
  TempDir tmp;
  { auto seg = Segment::open_or_create(small_spec(guard.name())); }  // as the stages make it
  const auto fine = run_shm(tmp.file("fine.json"), {"--json", "--shm-name", guard.name()});
  INFO(fine.output);
  REQUIRE(fine.status.exited_with(0));  // the control: only the version differs below
  Json j(fine.output);
  CHECK(str(stage_json(j, "ingest")["state"]) == "dead");  // never attached

  const uint32_t other = shm::kLayoutVersion + 1;
  patch_u32(guard.path(), offsetof(shm::SegmentHeader, layout_version), other);
  require_refusal(tmp, guard.name(),
                  "has layout version " + std::to_string(other) + ", this build uses version " +
                      std::to_string(shm::kLayoutVersion));
  require_refusal(tmp, guard.name(), "rm " + guard.path());
}

TEST_CASE("p35-shm explains every other segment it cannot read and never crashes",
          "[inspect][shm]") {
  ShmGuard guard;
  TempDir tmp;

  SECTION("no segment") { require_refusal(tmp, guard.name(), "Failed to open " + guard.path()); }
  SECTION("an empty file") {
    write_bytes(guard.path(), {});
    require_refusal(tmp, guard.name(), "too small");
  }
  SECTION("a file that is not a segment") {
    std::vector<uint8_t> junk(8192);
    for (size_t i = 0; i < junk.size(); ++i) junk[i] = static_cast<uint8_t>(i * 131 + 7);
    write_bytes(guard.path(), junk);
    require_refusal(tmp, guard.name(), "not a P3.5 segment");
  }
  SECTION("a segment cut short") {
    { auto seg = Segment::open_or_create(small_spec(guard.name())); }
    REQUIRE(::truncate(guard.path().c_str(), 1 << 16) == 0);
    require_refusal(tmp, guard.name(), "bytes but the file is 65536 bytes");
  }
  SECTION("capacities that do not match the section offsets") {
    { auto seg = Segment::open_or_create(small_spec(guard.name())); }
    patch_u32(guard.path(), offsetof(shm::SegmentHeader, caps) + offsetof(shm::Capacities, ring_slots),
              65);
    require_refusal(tmp, guard.name(), "do not match its section offsets");
  }
  SECTION("capacities beyond the configuration's limits") {
    { auto seg = Segment::open_or_create(small_spec(guard.name())); }
    patch_u32(guard.path(), offsetof(shm::SegmentHeader, caps) + offsetof(shm::Capacities, ring_slots),
              1u << 30);
    require_refusal(tmp, guard.name(), "ring_slots=1073741824 exceeds the limit 4096");
  }
  SECTION("crafted headers: wrapping layouts, huge or non-power-of-two capacities, offsets "
          "outside the file (issue 8; the real p35-shm died of SIGBUS on the first)") {
    for (const auto& c : crafted_headers(small_spec(guard.name()))) {
      INFO("crafted header: " << c.what);
      write_file(guard.path(), c.file);
      REQUIRE(::chmod(guard.path().c_str(), 0600) == 0);
      for (const std::string& why : c.says) require_refusal(tmp, guard.name(), why);
    }
  }
  SECTION("a FIFO in the segment's place: refused at once (opening it would wait for a writer)") {
    REQUIRE(::mkfifo(guard.path().c_str(), 0600) == 0);
    require_refusal(tmp, guard.name(), "it is not a regular file (a FIFO)", 5000);
  }
  SECTION("a symlink in the segment's place is not followed, even to a real segment") {
    ShmGuard target;
    { auto seg = Segment::open_or_create(small_spec(target.name())); }
    REQUIRE(::symlink(target.path().c_str(), guard.path().c_str()) == 0);
    require_refusal(tmp, guard.name(), "it is a symbolic link, which is never followed");
  }
  SECTION("a name with JSON metacharacters still gives valid --json") {
    require_refusal(tmp, "no\"such\\segment", "Failed to open");
  }
}

TEST_CASE("p35-shm finds the segment by P35_SHM_NAME in --env-file, as the stages do",
          "[inspect][shm][config]") {
  ShmGuard guard;
  TempDir tmp;
  { auto seg = Segment::open_or_create(small_spec(guard.name())); }
  const std::string env_file = tmp.file("p35.env");
  std::ofstream(env_file) << "# as /etc/quantum/p35-decision-intelligence.env\nREDIS_HOST=127.0.0.1\n"
                          << "export P35_SHM_NAME=\"" << guard.name() << "\"\n";
  SpawnOptions no_env;
  no_env.unset_env = {"P35_SHM_NAME"};

  const auto run = run_shm(tmp.file("env.json"), {"--json", "--env-file", env_file}, no_env);
  INFO(run.output);
  CHECK(run.status.exited_with(0));
  CHECK(str(Json(run.output).root["segment"]["name"]) == guard.name());

  // The stages' precedence: the environment over the file, the flag over both.
  SpawnOptions other_env;
  other_env.env["P35_SHM_NAME"] = "p35test-no-such-segment";
  const auto env_wins = run_shm(tmp.file("env2.json"), {"--json", "--env-file", env_file}, other_env);
  CHECK_THAT(env_wins.output, Catch::Contains("/dev/shm/p35test-no-such-segment"));
  const auto flag_wins = run_shm(tmp.file("env3.json"),
                                 {"--json", "--env-file", env_file, "--shm-name", guard.name()}, other_env);
  CHECK(flag_wins.status.exited_with(0));

  std::ofstream(env_file, std::ios::trunc) << "P35_SHM_NAME\n";
  const auto bad = run_shm(tmp.file("bad.txt"), {"--env-file", env_file}, no_env);
  INFO(bad.output);
  CHECK(bad.status.exited_with(2));
  CHECK_THAT(bad.output, Catch::Contains(env_file + ":1: malformed line"));
}

TEST_CASE("p35-shm --output replaces a textfile atomically, with p35_up 0 when the segment is gone",
          "[inspect][shm]") {
  ShmGuard guard;
  TempDir tmp;
  { auto seg = Segment::open_or_create(small_spec(guard.name())); }
  const std::string prom = tmp.file("quantum-p35.prom");
  std::ofstream(prom) << std::string(100000, 'x');  // an older, longer file to replace whole
  struct stat before {};
  REQUIRE(::stat(prom.c_str(), &before) == 0);
  const auto written = run_shm(tmp.file("out.log"), {"--prometheus", "--shm-name", guard.name(), "--output", prom});
  INFO(written.output);
  CHECK(written.status.exited_with(0));
  CHECK(written.output.empty());  // nothing on stdout or stderr
  const std::string text = read_file(prom);
  CHECK_THAT(text, Catch::StartsWith("# HELP p35_build_info"));
  CHECK_THAT(text, Catch::Contains("p35_up{segment=\"" + guard.name() + "\"} 1\n"));
  CHECK(text.find("xxxxxxxx") == std::string::npos);
  struct stat after {};
  REQUIRE(::stat(prom.c_str(), &after) == 0);
  CHECK(after.st_ino != before.st_ino);  // renamed into place, not rewritten in place
  CHECK((after.st_mode & 0777) == 0644);  // node_exporter reads it as another user
  CHECK(leftover_temporaries(prom.substr(0, prom.rfind('/'))).empty());

  guard.remove();
  const auto down = run_shm(tmp.file("out.log"), {"--prometheus", "--shm-name", guard.name(), "--output", prom});
  CHECK(down.status.exited_with(1));
  CHECK_THAT(down.output, Catch::Contains("Failed to open " + guard.path()));
  CHECK_THAT(read_file(prom), Catch::Contains("p35_up{segment=\"" + guard.name() + "\"} 0\n"));

  const auto unwritable = run_shm(tmp.file("out.log"),
                                  {"--prometheus", "--shm-name", guard.name(), "--output", "/proc/p35/x.prom"});
  CHECK(unwritable.status.exited_with(3));
  CHECK_THAT(unwritable.output, Catch::Contains("Failed to create /proc/p35/.x.prom.tmp."));
}
