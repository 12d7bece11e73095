// The ingest stage loop: XREADGROUP, pending-list recovery, rules, counting, backpressure.
#include "ingest.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include "futex.hpp"
#include "keys.hpp"

namespace p35 {

namespace {
constexpr int kWaitSliceMs = 200;

int64_t wall_minute() { return now_unix_ms() / 60000; }
}  // namespace

Ingest::Ingest(const Config& cfg, Segment& seg)
    : cfg_(cfg), seg_(seg), stage_(seg, shm::StageId::Ingest),
      counter_(seg, cfg.symbol_breakdown),
      conn_(RedisOptions::from_config(cfg, "p35-ingest:" + cfg.consumer)),
      outage_("ingest", &stage_.block()), backoff_(cfg.reconnect_max_ms),
      marker_key_(keys::marker(cfg.key_prefix, cfg.consumer)), status_line_(seg) {
  // A batch reply is about 14,000 elements: built in a reused arena, not one malloc each.
  conn_.use_reply_arena();
  const std::string count = std::to_string(cfg_.batch_size);
  read_new_at_once_ = {"XREADGROUP", "GROUP", cfg_.group, cfg_.consumer, "COUNT", count,
                       "STREAMS", cfg_.stream, ">"};
  read_new_blocking_ = {"XREADGROUP", "GROUP", cfg_.group, cfg_.consumer, "COUNT", count,
                        "BLOCK", std::to_string(watchdog_bounded_ms(cfg_.block_ms)), "STREAMS",
                        cfg_.stream, ">"};
}

void Ingest::prepare_redis() {
  bool created = false;
  try {
    conn_.command({"XGROUP", "CREATE", cfg_.stream, cfg_.group, "0", "MKSTREAM"});
    created = true;
  } catch (const RedisError& e) {
    if (e.kind() != RedisErrorKind::Reply || e.server_message().rfind("BUSYGROUP", 0) != 0) throw;
  }
  // Our marker must exist before our first read (DESIGN §5.5): a consumer without one is taken
  // for the first version, whose pending entries others ack without counting.
  conn_.command({"SET", marker_key_, "0-0", "NX"});
  if (!counter_.initialised_from_marker()) {
    const Reply r = conn_.command({"GET", marker_key_});
    const auto marker = StreamId::parse(r.str()).value_or(StreamId{});
    counter_.initialise_from_marker(marker);
    spdlog::info("New segment: entries up to {} are already in the buckets, pending ones above "
                 "it will be counted", marker.str());
  }
  // A group we had to create although we counted entries before belonged to a stream or group
  // that was deleted (while we ran or were stopped).
  if (created && !counter_.counted_id().is_zero()) report_vanished_group();
  else if (created) spdlog::info("Created consumer group {} on {}", cfg_.group, cfg_.stream);
  // Whatever the last XREADGROUP delivered before a crash or a lost reply (a read ahead included)
  // is in our pending list.
  reading_pending_ = true;
  read_ahead_ = false;
  cursor_ = {};
}

int Ingest::run() {
  const StopWakeups wakeups(nullptr);  // the socket is registered on each connect
  counter_.recover();
  spdlog::info("Segment {}: counted up to {}", seg_.name(), counter_.counted_id().str());
  notify_ready_waiting_redis();  // the segment is ours: ready, whether or not Redis answers yet
  // hiredis's read timeout must outlive XREADGROUP BLOCK, or every quiet period looks like a failure.
  while (!stop_requested()) {
    if (!stage_.heartbeat()) {
      spdlog::error("Segment {} was removed or replaced under us; exiting so that all stages "
                    "restart on the live one", shm_path(seg_.name()));
      return EXIT_FAILURE;
    }
    try {
      if (!conn_.connected()) {
        if (!connect_with_retry(conn_, outage_, cfg_.reconnect_max_ms, &stage_)) break;
        set_stop_socket(conn_.fd());  // SIGTERM ends a long XREADGROUP BLOCK at once
        prepare_redis();
        stage_.set_state(shm::StageState::Running);
      }
      const size_t n = read_once();
      status_line_.update(shm::StageId::Ingest);
      outage_.succeeded();
      backoff_.reset();
      // Group commit, read side: after a short batch, let the trickle gather for a moment, so that
      // at low rates each stage wakes once per linger and not once per message. A full batch (a
      // backlog) is read again at once; the first entry after a quiet spell is read at once too.
      if (n > 0 && n < static_cast<size_t>(cfg_.batch_size) && !reading_pending_)
        sleep_unless_stopped(cfg_.read_linger_ms);
    } catch (const RedisError& e) {
      if (stop_requested()) break;  // the stop signal shut our socket down: not an outage
      if (e.kind() == RedisErrorKind::Auth) throw;
      const std::string_view said = e.server_message();
      if (said.rfind("NOGROUP", 0) == 0 || said.rfind("UNBLOCKED", 0) == 0) {
        // The group or the stream was deleted (UNBLOCKED: under a blocked XREADGROUP). Redis
        // answers, so no outage: prepare_redis() on the new connection re-creates and reports it.
        spdlog::debug("XREADGROUP on {}: {}", cfg_.stream, said);
      } else {
        outage_.failed("read " + cfg_.stream, e);
      }
      // Any failure (also LOADING, BUSY, READONLY...) starts over from a fresh connection: the
      // group and marker are checked again and the pending list is re-read, so entries delivered
      // in a reply we never saw are counted.
      set_stop_socket(-1);
      conn_.disconnect();
      stage_.set_state(shm::StageState::WaitingRedis);
      sleep_unless_stopped(backoff_.next_delay_ms());
    }
  }
  set_stop_socket(-1);
  stage_.set_state(shm::StageState::Draining);
  notify_stopping();
  counter_.flush();
  spdlog::info("Stopped: counted up to {}", counter_.counted_id().str());
  return EXIT_SUCCESS;
}

// The stream or our group was deleted (DEL, XGROUP DESTROY) and prepare_redis() has just
// re-created the group at 0 (with MKSTREAM), as DESIGN §2 creates it: a re-created stream is read
// from its start, and after XGROUP DESTROY whatever the stream still holds is delivered again.
// Never a silent recount: IDs at or below counted_id are taken as already counted and only acked
// (ingest_skipped), later ones are counted. Entries deleted before we read them are gone with the
// stream; that was the operator's doing, and this line and ingest_group_recreated in status say
// it happened. With several hosts in one group, the re-created group may hand us entries another
// host counted (README, "When Redis fails"). Ingest's `conflicts` word is otherwise unused: it
// carries this count, so the segment layout stays as it is.
void Ingest::report_vanished_group() {
  stage_.block().conflicts.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("Consumer group {} on {} vanished (the stream or the group was deleted); "
                "re-created it at 0: entries up to {} are taken as already counted and only acked, "
                "later ones are counted, entries deleted before we read them are lost",
                cfg_.group, cfg_.stream, counter_.counted_id().str());
}

Reply Ingest::read_new() {
  if (!read_ahead_) conn_.append(read_new_blocking_);
  read_ahead_ = false;
  Reply r = conn_.read_reply();
  if (r.is_error()) {
    RedisError e = error_from_reply("run XREADGROUP on " + conn_.options().endpoint(), r.str(),
                                    conn_.options().username);
    if (e.connection_lost()) conn_.disconnect();
    throw e;
  }
  return r;
}

size_t Ingest::read_once() {
  Reply r;
  if (reading_pending_) {
    const std::string count = std::to_string(cfg_.batch_size);
    const std::string from = cursor_.str();
    r = conn_.command({"XREADGROUP", "GROUP", cfg_.group, cfg_.consumer, "COUNT", count, "STREAMS",
                       cfg_.stream, from});
  } else {
    r = read_new();
  }
  if (r.is_nil() || r.size() == 0) {
    reading_pending_ = false;
    return 0;
  }
  const redisReply* stream = r.element(0);
  const redisReply* entries = stream->element[1];
  if (entries->elements == 0) {
    if (reading_pending_) spdlog::info("Pending list re-read; reading new entries");
    reading_pending_ = false;
    return 0;
  }
  // A full batch of new entries: a backlog. Ask for the next batch now (without BLOCK: if the
  // backlog ends here, the reply is empty at once) so that Redis works while we count.
  if (!reading_pending_ && entries->elements >= static_cast<size_t>(cfg_.batch_size)) {
    conn_.append(read_new_at_once_);
    conn_.flush();
    read_ahead_ = true;
  }
  process(entries);
  return entries->elements;
}

bool Ingest::add_waiting(StreamId id, const Normalized* msg) {
  if (counter_.add(id, msg, wall_minute()) == Counter::Result::Done) return true;
  // No room: publish what we have so rollup/ackd can free space, then sleep on our bell.
  counter_.flush();
  auto& block = stage_.block();
  block.waits.fetch_add(1, std::memory_order_relaxed);
  stage_.set_state(shm::StageState::Backpressure);
  // Commits and acks ring our bell only while they see Backpressure (bell_ring_if_waiting).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  int64_t logged_ms = 0;
  for (;;) {
    auto& bell = seg_.ingest().ingest_bell;
    const uint32_t seen = bell.load(std::memory_order_acquire);
    if (counter_.add(id, msg, wall_minute()) == Counter::Result::Done) break;
    if (stop_requested() || !stage_.heartbeat()) return false;
    if (now_mono_ms() - logged_ms > 60000) {
      spdlog::warn("Waiting for space: {} (entry {})", counter_.last_wait_reason(), id.str());
      logged_ms = now_mono_ms();
    }
    bell_wait(bell, seen, kWaitSliceMs);
  }
  stage_.set_state(shm::StageState::Running);
  return true;
}

void Ingest::process(const redisReply* entries) {
  auto& block = stage_.block();
  StreamId last;
  uint64_t counted = 0, skipped = 0;
  for (size_t i = 0; i < entries->elements; ++i) {
    const redisReply* e = entries->element[i];
    const auto id = StreamId::parse(reply_str(e->element[0]));
    if (!id) {
      spdlog::error("Skipping an entry with an unparsable ID '{}'", reply_str(e->element[0]));
      continue;
    }
    const redisReply* fv = e->elements > 1 ? e->element[1] : nullptr;
    const bool trimmed = fv == nullptr || reply_is_nil(fv);
    const Normalized* msg = nullptr;
    if (!trimmed) {
      fields_.clear();
      for (size_t k = 0; k + 1 < fv->elements; k += 2)
        fields_.push_back({reply_str(fv->element[k]), reply_str(fv->element[k + 1])});
      normalize(fields_, static_cast<int64_t>(id->ms), norm_);
      msg = &norm_;
    }
    if (*id <= counter_.counted_id()) ++skipped; else ++counted;
    if (!add_waiting(*id, msg)) break;  // stopping: the rest stays pending, re-read next start
    last = *id;
    if (counter_.should_flush()) counter_.flush();
  }
  counter_.flush();
  if (reading_pending_ && !last.is_zero()) cursor_ = last;
  block.read.fetch_add(entries->elements, std::memory_order_relaxed);
  block.counted.fetch_add(counted, std::memory_order_relaxed);
  block.skipped.fetch_add(skipped, std::memory_order_relaxed);
  block.batches.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace p35
