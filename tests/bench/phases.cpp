// The benchmark's phases, each against the private redis-server with the real stage binaries.
#include "phases.hpp"

#include <hiredis/hiredis.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "keys.hpp"
#include "shm.hpp"

namespace p35::bench {

namespace {

constexpr const char* kStream = "quantum:stream:apply.result";
constexpr const char* kGroup = "p35_decision_intel";
constexpr int kReadyTimeoutMs = 20000;

test::PipelineOptions pipeline_options(const BenchContext& ctx, const std::string& prefix) {
  test::PipelineOptions o;
  o.consumer = "bench";
  o.key_prefix = prefix;
  o.log_dir = ctx.work_dir;
  o.env["P35_BATCH_SIZE"] = std::to_string(ctx.opt.batch);
  // Each probe is a distinct unknown decision; the default 64 per minute would send most of a
  // minute's 200 probes to __overflow__, where they could not be told apart.
  o.env["P35_UNKNOWN_PER_MINUTE"] = "512";
  o.env["LOG_LEVEL"] = "INFO";
  for (const auto& [k, v] : ctx.opt.stage_env) o.env[k] = v;
  return o;
}

std::string segment_path(const test::Pipeline& p) { return "/dev/shm/" + p.shm_name(); }

// The three stages' pids as they wrote them into the segment, once all three are there.
std::array<pid_t, kStageCount> wait_stage_pids(const test::Pipeline& p, bool running) {
  std::array<pid_t, kStageCount> pids{};
  const bool ok = wait_until(
      [&] {
        try {
          const Segment seg = Segment::open_readonly(p.shm_name());
          for (size_t i = 0; i < kStageCount; ++i) {
            const auto& b = seg.stage(static_cast<shm::StageId>(i));
            pids[i] = static_cast<pid_t>(b.pid.load());
            const bool up = b.state.load() == static_cast<uint32_t>(shm::StageState::Running);
            if (pids[i] <= 0 || ::kill(pids[i], 0) != 0 || (running && !up)) return false;
          }
          return true;
        } catch (const ShmError&) {
          return false;
        }
      },
      kReadyTimeoutMs, 1);
  if (!ok) throw std::runtime_error("the stages did not start:\n" + p.logs_tail());
  return pids;
}

Segment wait_segment(const test::Pipeline& p) {
  for (int i = 0; i < kReadyTimeoutMs; ++i) {
    try {
      return Segment::open_readonly(p.shm_name());
    } catch (const ShmError&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  throw std::runtime_error("no segment " + p.shm_name() + ":\n" + p.logs_tail());
}

std::vector<pid_t> with_redis(const std::array<pid_t, kStageCount>& stages, pid_t redis) {
  std::vector<pid_t> v(stages.begin(), stages.end());
  v.push_back(redis);
  return v;
}

std::vector<std::string> check_exact(BenchContext& ctx, const test::PipelineOptions& po,
                                     const test::Expectation& e) {
  if (!test::wait_drained(ctx.redis, po, 60000))
    return {"not drained within 60 s (pending entries, lag, or marker behind the stream)"};
  Connection c = ctx.redis.connect();
  auto diffs = test::compare_buckets(c, e, po.key_prefix);
  const Reply processed = c.command({"HGET", keys::status(po.key_prefix), "processed_total"});
  if (!processed.is_nil() && processed.integer() != e.total)
    diffs.push_back("processed_total " + std::string(processed.str()) + " != entries written " +
                    std::to_string(e.total));
  return diffs;
}

ChildProcess spawn_loadgen(BenchContext& ctx, std::vector<std::string> args) {
  // --force: the benchmark's own Redis; the live phases write while the stages consume.
  std::vector<std::string> argv{test::env_or("P35_LOADGEN_BIN", "p35-loadgen"), "--redis-socket",
                                ctx.redis.socket_path(), "--quiet", "--force"};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions so;
  so.log_path = ctx.work_dir + "/loadgen.log";
  return ChildProcess(argv, so);
}

void run_loadgen_to_end(BenchContext& ctx, const std::vector<std::string>& args) {
  ChildProcess lg = spawn_loadgen(ctx, args);
  const auto st = lg.wait_exit(600000);
  if (!st || !st->exited_with(0))
    throw std::runtime_error("p35-loadgen failed:\n" + file_tail(ctx.work_dir + "/loadgen.log"));
}

CommandCalls command_calls(BenchContext& ctx) {
  CommandCalls calls;
  const Reply r = ctx.redis.connect().command({"INFO", "commandstats"});
  std::istringstream in{std::string(r.str())};
  // cmdstat_xreadgroup:calls=12,usec=345,usec_per_call=...
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("cmdstat_", 0) != 0) continue;
    const auto colon = line.find(':');
    const auto c = line.find("calls=");
    const auto u = line.find(",usec=");
    if (colon == std::string::npos || c == std::string::npos || u == std::string::npos) continue;
    calls[line.substr(8, colon - 8)] = {std::stoull(line.substr(c + 6)), std::stoull(line.substr(u + 6))};
  }
  return calls;
}

CommandCalls minus(const CommandCalls& after, const CommandCalls& before) {
  CommandCalls d;
  for (const auto& [k, v] : after) {
    const auto it = before.find(k);
    const CommandStat b = it == before.end() ? CommandStat{} : it->second;
    if (v.calls > b.calls) d[k] = {v.calls - b.calls, v.usec - b.usec};
  }
  return d;
}

void append_probe_log(const std::string& path, double rate, const ProbeResult& r) {
  std::ofstream out(path, std::ios::app);
  if (out.tellp() == 0) out << "rate,probe,id,sent_unix_ms,counted_ms,bucket_ms,snapshot_ms,acked_ms\n";
  for (const auto& p : r.probes) {
    out << rate << ',' << p.index << ',' << p.id.str() << ',' << p.sent_wall_ms;
    for (int64_t at : p.at_ns) out << ',' << (at < 0 ? -1.0 : static_cast<double>(at - p.sent_ns) / 1e6);
    out << '\n';
  }
}

std::string fmt_rate(double r) {
  char b[32];
  std::snprintf(b, sizeof b, "%.6g", r);
  return b;
}

}  // namespace

std::string write_backlog(BenchContext& ctx, test::Expectation& expect) {
  const std::string path = ctx.work_dir + "/backlog-expect.tsv";
  run_loadgen_to_end(ctx, {"--count", std::to_string(ctx.opt.backlog), "--seed",
                           std::to_string(ctx.opt.seed), "--expect", path});
  expect = test::read_expectation(path);
  Connection c = ctx.redis.connect();
  const Reply r = c.command({"XREVRANGE", kStream, "+", "-", "COUNT", "1"});
  return std::string(reply_str(r.element(0)->element[0]));
}

RawRun run_raw(BenchContext& ctx, int iteration) {
  RawRun out;
  RawLimitOptions o;
  o.unix_socket = ctx.redis.socket_path();
  o.stream = kStream;
  o.batch = ctx.opt.batch;
  for (int in_flight : {1, 4}) {
    o.in_flight = in_flight;
    o.group = "bench_raw_" + std::to_string(iteration) + "_" + std::to_string(in_flight);
    const CommandCalls before = command_calls(ctx);
    CpuWindow cpu({ctx.redis.pid(), ::getpid()});
    const MachineCpu machine;
    const RawLimitResult r = run_raw_limit(o);
    const auto pct = cpu.percent();
    if (in_flight == 1) {
      out.one = r, out.redis_cpu_one = pct[0], out.client_cpu_one = pct[1];
    } else {
      out.four = r, out.redis_cpu_four = pct[0], out.client_cpu_four = pct[1];
      out.machine_cpu_four = machine.busy_percent();
      out.calls_four = minus(command_calls(ctx), before);
    }
  }
  return out;
}

DrainRun run_drain(BenchContext& ctx, int iteration, const test::Expectation& expect,
                   const std::string& last_id) {
  const StreamId last = *StreamId::parse(last_id);
  const auto po = pipeline_options(ctx, "bench:drain" + std::to_string(iteration) + ":");
  DrainRun out;
  out.messages = static_cast<uint64_t>(expect.total);
  {
    test::Pipeline p(ctx.redis, po);
    const CommandCalls before = command_calls(ctx);
    CpuWindow redis_cpu({ctx.redis.pid()});
    const MachineCpu machine;
    const int64_t t0 = mono_ns();
    p.start_all();
    const Segment seg = wait_segment(p);
    const auto since = [&] { return static_cast<double>(mono_ns() - t0) / 1e9; };
    // Bounded reads (a stage killed mid-publish leaves its lock odd): unknown counts as not yet.
    const auto reached = [&](const shm::SeqId& id) { return try_read_id(id).value_or(StreamId{}) >= last; };
    while (out.acked_s == 0) {
      if (out.counted_s == 0 && reached(seg.ingest().counted_pub)) out.counted_s = since();
      if (out.committed_s == 0 && reached(seg.rollup().committed)) out.committed_s = since();
      if (reached(seg.ackd().acked)) out.acked_s = since();
      if (since() > 600) throw std::runtime_error("drain did not finish in 600 s:\n" + p.logs_tail());
      std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    const double wall_ns = out.acked_s * 1e9;
    const auto pids = wait_stage_pids(p, false);
    for (size_t i = 0; i < kStageCount; ++i)  // fresh processes: all their CPU time is the drain's
      out.stage_cpu[i] = 100.0 * static_cast<double>(cpu_ns(pids[i])) / wall_ns;
    out.redis_cpu = redis_cpu.percent()[0];
    out.machine_cpu = machine.busy_percent();
    out.calls = minus(command_calls(ctx), before);
    out.diffs = check_exact(ctx, po, expect);
    out.exact = out.diffs.empty();
  }
  Connection c = ctx.redis.connect();
  c.command({"XGROUP", "DESTROY", kStream, kGroup});  // the next run drains the backlog again
  return out;
}

namespace {

// The probes are part of the rate: at 2 msg/s for 60 s, half of the 120 entries are probes.
int probe_count(const BenchOptions& opt, double rate) {
  const double total = rate * opt.steady_s;
  return static_cast<int>(std::min<double>(opt.probes, std::max(1.0, total / 2)));
}

void sample_memory(const std::array<pid_t, kStageCount>& pids, const std::string& segment,
                   std::array<MemorySample, kStageCount>& into, bool peak) {
  for (size_t i = 0; i < kStageCount; ++i) {
    const MemorySample m = memory_of(pids[i], segment);
    if (!peak || m.private_kb > into[i].private_kb) into[i] = m;
  }
}

// What the steady state measures while the load generator writes: CPU of the stages, Redis and
// the generator, the whole machine, and Redis's command counts; closed once, when writing ends
// (not after the wait for the last probes).
class SteadyWindow {
 public:
  SteadyWindow(BenchContext& ctx, std::vector<pid_t> watched)
      : ctx_(ctx), calls_before_(command_calls(ctx)), start_ns_(mono_ns()), cpu_(std::move(watched)) {}
  bool closed() const { return end_ns_ != 0; }
  // While the generator lives: its CPU share (it leaves /proc when it exits).
  void sample_loadgen(SteadyRun& out) const { out.loadgen_cpu = cpu_.percent()[kStageCount + 1]; }
  void close(SteadyRun& out) {
    end_ns_ = mono_ns();
    const auto pct = cpu_.percent();
    for (size_t i = 0; i < kStageCount; ++i) out.cpu[i] = pct[i];
    out.redis_cpu = pct[kStageCount];
    out.machine_cpu = machine_.busy_percent();
    out.calls = minus(command_calls(ctx_), calls_before_);
    out.window_s = static_cast<double>(end_ns_ - start_ns_) / 1e9;
  }

 private:
  BenchContext& ctx_;
  CommandCalls calls_before_;
  MachineCpu machine_;
  int64_t start_ns_;
  int64_t end_ns_ = 0;
  CpuWindow cpu_;
};

}  // namespace

SteadyRun run_steady(BenchContext& ctx, double rate) {
  SteadyRun out;
  out.rate = rate;
  ctx.redis.connect().command({"FLUSHALL"});
  const auto po = pipeline_options(ctx, "bench:steady:");
  test::Pipeline p(ctx.redis, po);
  p.start_all();
  const auto pids = wait_stage_pids(p, true);
  std::this_thread::sleep_for(std::chrono::seconds(1));  // first status and snapshot writes
  const int probes = probe_count(ctx.opt, rate);
  LatencyProbe probe(ctx.redis.options(), {kStream, po.key_prefix, p.shm_name(), probes, ctx.opt.steady_s});
  const std::string expect_path = ctx.work_dir + "/steady-expect.tsv";
  ChildProcess lg = spawn_loadgen(ctx, {"--rate", fmt_rate(rate - probes / ctx.opt.steady_s),
                                        "--duration-s", fmt_rate(ctx.opt.steady_s), "--seed", "7",
                                        "--expect", expect_path});
  auto watched = with_redis(pids, ctx.redis.pid());
  watched.push_back(lg.pid());
  SteadyWindow window(ctx, watched);
  int64_t next_memory_ns = 0;
  out.probes = probe.run([&] {
    if (!window.closed() && lg.alive()) window.sample_loadgen(out);
    else if (!window.closed()) window.close(out);
    if (mono_ns() < next_memory_ns) return;
    sample_memory(pids, segment_path(p), out.mem_peak, true);
    next_memory_ns = mono_ns() + 5'000'000'000;
  });
  const auto st = lg.wait_exit(120000);
  if (!st || !st->exited_with(0))
    throw std::runtime_error("p35-loadgen (live) failed:\n" + file_tail(ctx.work_dir + "/loadgen.log"));
  if (!window.closed()) window.close(out);
  sample_memory(pids, segment_path(p), out.mem_end, false);
  sample_memory(pids, segment_path(p), out.mem_peak, true);
  out.segment_kb = file_resident_kb(segment_path(p));
  out.segment_size_kb = file_size_kb(segment_path(p));
  out.ingest_waits = Segment::open_readonly(p.shm_name()).stage(shm::StageId::Ingest).waits.load();
  if (!ctx.opt.probe_log.empty()) append_probe_log(ctx.opt.probe_log, rate, out.probes);
  test::Expectation e = test::read_expectation(expect_path);
  probe.add_to(e, out.probes);
  out.written = static_cast<uint64_t>(e.total);
  out.achieved = static_cast<double>(e.total) / out.window_s;
  out.diffs = check_exact(ctx, po, e);
  out.exact = out.diffs.empty();
  return out;
}

IdleRun run_idle(BenchContext& ctx) {
  IdleRun out;
  ctx.redis.connect().command({"FLUSHALL"});
  const auto po = pipeline_options(ctx, "bench:idle:");
  test::Pipeline p(ctx.redis, po);
  p.start_all();
  const auto pids = wait_stage_pids(p, true);
  // Idle after a catch-up, as in production: a small backlog, drained, then nothing.
  run_loadgen_to_end(ctx, {"--count", "10000", "--seed", "3"});
  if (!test::wait_drained(ctx.redis, po, 60000))
    throw std::runtime_error("idle warm-up backlog not drained:\n" + p.logs_tail());
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const CommandCalls calls_before = command_calls(ctx);
  CpuWindow cpu(with_redis(pids, ctx.redis.pid()));
  const int64_t t0 = mono_ns();
  std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<int64_t>(ctx.opt.idle_s * 1000)));
  const auto pct = cpu.percent();
  out.seconds = static_cast<double>(mono_ns() - t0) / 1e9;
  out.calls = minus(command_calls(ctx), calls_before);
  for (size_t i = 0; i < kStageCount; ++i) {
    out.cpu[i] = pct[i];
    out.mem[i] = memory_of(pids[i], segment_path(p));
  }
  out.redis_cpu = pct[kStageCount];
  return out;
}

}  // namespace p35::bench
