// The write loops of p35-loadgen: a sliding window of pipelined XADDs whose replies give each
// entry's ID (and so the minute of entries without a usable timestamp).
#include "loadgen.hpp"

#include <fmt/format.h>
#include <hiredis/hiredis.h>

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <thread>
#include <utility>

#include "stream_id.hpp"

namespace p35::loadgen {

namespace {
using SteadyClock = std::chrono::steady_clock;

// With '*' IDs the timestamps are chosen against our clock; Redis's ID must then be close to it,
// or the window test [ID - 48 h, ID + 5 min] would not give what we intended.
constexpr int64_t kMaxIdSkewMs = 60000;

double seconds_since(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

// One XINFO GROUPS entry (a flat name/value array): "'<name>' (N consumers)" when it has any.
std::string group_with_consumers(const redisReply* group) {
  std::string name;
  long long consumers = 0;
  for (size_t i = 0; group != nullptr && i + 1 < group->elements; i += 2) {
    const std::string_view key = reply_str(group->element[i]);
    const redisReply* value = group->element[i + 1];
    if (key == "name") name = reply_str(value);
    if (key == "consumers" && value->type == REDIS_REPLY_INTEGER) consumers = value->integer;
  }
  return consumers > 0 ? fmt::format("'{}' ({} consumer{})", name, consumers, consumers == 1 ? "" : "s")
                       : std::string();
}

// Refuses a stream whose consumer groups have consumers: p35-ingest (or the first version) would
// count the generated entries as real trade decisions.
void refuse_consumed_stream(Connection& conn, const std::string& stream) {
  Reply groups;
  try {
    groups = conn.command({"XINFO", "GROUPS", stream});
  } catch (const RedisError& e) {
    if (e.is("ERR no such key"))
      return;  // no stream yet: nobody reads it
    throw;
  }
  std::string found;
  for (size_t i = 0; i < groups.size(); ++i)
    if (auto g = group_with_consumers(groups.element(i)); !g.empty())
      found += (found.empty() ? "" : ", ") + g;
  if (found.empty()) return;
  throw RefusedStream(fmt::format(
      "Refusing to write to {}: its consumer group {} would take the generated entries as real "
      "decisions; use a test stream (--stream), or --force to write anyway",
      stream, found));
}
}  // namespace

int64_t wall_clock_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

Loadgen::Loadgen(LoadgenOptions options, const std::atomic<bool>& stop)
    : options_(std::move(options)),
      stop_(stop),
      conn_(options_.redis),
      generator_(options_.generator),
      window_(options_.pipeline) {
  if (options_.pipeline == 0) throw std::invalid_argument("pipeline must be at least 1");
}

namespace {
// Error replies a failover produces: the old primary demoted (READONLY) or left without its
// replica (NOREPLICAS, with min-replicas-to-write), a blocked client released, a server still
// loading its data.
bool is_failover_reply(std::string_view text) {
  for (const std::string_view code : {"READONLY", "NOREPLICAS", "UNBLOCKED", "LOADING", "MASTERDOWN"})
    if (error_code_is(text, code)) return true;
  return false;
}
}  // namespace

template <typename F>
void Loadgen::riding_failovers(F&& step) {
  while (true) {
    try {
      step();
      return;
    } catch (const RedisError& e) {
      if (options_.redis.sentinels.empty() ||
          (!e.connection_lost() && !is_failover_reply(e.server_message())))
        throw;
      reconnect_after(e);
    }
  }
}

void Loadgen::reconnect_after(const std::exception& e) {
  result_.unconfirmed += in_flight_;
  ++result_.reconnects;
  fmt::print(stderr, "p35-loadgen: {}; reconnecting to the primary ({} entries unconfirmed)\n",
             e.what(), in_flight_);
  in_flight_ = 0;
  conn_.disconnect();
  const auto give_up = SteadyClock::now() + std::chrono::seconds(60);
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(reconnect_backoff_.next_delay_ms()));
    try {
      conn_.connect();
      return;
    } catch (const RedisError& again) {
      if (stop_.load(std::memory_order_relaxed) || SteadyClock::now() > give_up) throw;
    }
  }
}

RunResult Loadgen::run() {
  conn_.connect();
  if (!options_.force) refuse_consumed_stream(conn_, options_.stream);
  const auto start = SteadyClock::now();
  if (options_.rate_per_s > 0) {
    run_live();
  } else {
    run_backlog();
  }
  riding_failovers([&] {
    while (in_flight_ > 0) receive();
  });
  result_.seconds = seconds_since(start);
  result_.stopped = stop_.load(std::memory_order_relaxed);
  if (!options_.expect_path.empty()) expectation_.write(options_.expect_path);
  return result_;
}

void Loadgen::run_backlog() {
  // Keep the window full: hiredis sends what we appended as soon as it runs out of replies to
  // parse, so Redis works on the next entries while we generate more.
  while (sent_ < options_.count && !stop_.load(std::memory_order_relaxed)) {
    riding_failovers([&] {
      if (in_flight_ == window_.size()) receive();
      send();
    });
  }
}

void Loadgen::run_live() {
  const auto start = SteadyClock::now();
  const std::chrono::duration<double> interval(1.0 / options_.rate_per_s);
  while (sent_ < options_.count && !stop_.load(std::memory_order_relaxed)) {
    const double elapsed_s = seconds_since(start);
    const auto due = std::min<uint64_t>(options_.count,
                                        static_cast<uint64_t>(elapsed_s * options_.rate_per_s) + 1);
    riding_failovers([&] {
      while (sent_ < due) {
        if (in_flight_ == window_.size()) receive();
        send();
      }
      // Every entry due so far is confirmed before sleeping: live means low latency.
      while (in_flight_ > 0) receive();
    });
    if (sent_ < options_.count) {
      const auto next = start + std::chrono::duration_cast<SteadyClock::duration>(
                                    interval * static_cast<double>(sent_));
      std::this_thread::sleep_until(next);
    }
  }
}

int64_t Loadgen::next_explicit_id_ms() {
  const double step_ms =
      options_.rate_per_s > 0 ? 1000.0 / options_.rate_per_s : options_.id_step_ms;
  return options_.start_ms + static_cast<int64_t>(std::floor(static_cast<double>(sent_) * step_ms));
}

void Loadgen::build_xadd(int64_t id_ms) {
  xadd_.clear();
  xadd_.add("XADD").add(options_.stream);
  if (options_.maxlen > 0)
    xadd_.add("MAXLEN").add("~").add(static_cast<long long>(options_.maxlen));
  if (options_.explicit_ids) {
    // Strictly increasing: the same millisecond as the previous entry takes the next sequence.
    last_id_seq_ = id_ms == last_id_ms_ ? last_id_seq_ + 1 : 0;
    last_id_ms_ = id_ms;
    char id[48];
    const auto end = fmt::format_to_n(id, sizeof id, "{}-{}", id_ms, last_id_seq_).out;
    xadd_.add(std::string_view(id, static_cast<size_t>(end - id)));
  } else {
    xadd_.add("*");
  }
  for (size_t i = 0; i < entry_.fields.size(); ++i) xadd_.add(entry_.fields.at(i));
}

void Loadgen::send() {
  const int64_t base_ms = options_.explicit_ids ? next_explicit_id_ms() : wall_clock_ms();
  generator_.next(sent_, base_ms, entry_);
  build_xadd(base_ms);
  conn_.append(xadd_);
  InFlight& slot = window_[sent_ % window_.size()];
  // Swapping keeps both strings' capacity: no allocation per entry once warmed up.
  std::swap(slot.intent, entry_.intent);
  slot.base_ms = base_ms;
  slot.hostile = entry_.hostile;
  ++sent_;
  ++in_flight_;
}

void Loadgen::receive() {
  const uint64_t index = sent_ - in_flight_;
  const InFlight& slot = window_[index % window_.size()];
  const Reply reply = conn_.read_reply();
  --in_flight_;
  if (reply.is_error() && is_failover_reply(reply.str()))
    throw RedisError(RedisErrorKind::Reply,
                     fmt::format("Failed to XADD entry #{}: {}", index, reply.str()),
                     std::string(reply.str()));
  if (reply.is_error()) {
    const char* hint =
        options_.explicit_ids ? " (--explicit-ids: use a later --start-ms or a fresh stream)" : "";
    throw std::runtime_error(fmt::format("Failed to XADD entry #{} to {}: {}{}", index,
                                         options_.stream, reply.str(), hint));
  }
  ++result_.written;
  reconnect_backoff_.reset();
  if (slot.hostile) ++result_.hostile;
  if (options_.expect_path.empty()) return;
  const auto id = StreamId::parse(reply.str());
  if (!id)
    throw std::runtime_error(fmt::format("Failed to parse the XADD reply '{}'", reply.str()));
  const auto id_ms = static_cast<int64_t>(id->ms);
  if (!options_.explicit_ids && std::llabs(id_ms - slot.base_ms) > kMaxIdSkewMs) {
    throw std::runtime_error(fmt::format(
        "Failed to keep expectations: Redis gave entry #{} the ID {}, {} ms from our clock (the "
        "stream's last ID is probably in the future); use --explicit-ids or a fresh stream",
        index, reply.str(), id_ms - slot.base_ms));
  }
  expectation_.add(slot.intent, id_ms);
}

}  // namespace p35::loadgen
