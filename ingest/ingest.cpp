// The ingest stage loop: XREADGROUP, pending-list recovery, rules, counting, backpressure.
#include "ingest.hpp"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "futex.hpp"
#include "keys.hpp"
#include "marker.hpp"

namespace p35 {

namespace {
constexpr int kWaitSliceMs = 200;
constexpr int kMarkerRecheckMs = 3000;  // a lost marker: how often to look for the operator's fix

// KEYS[1]: stream, KEYS[2]: ownership key. ARGV: group, consumer, COUNT, our instance token.
// The entries read, or (nothing new) the stream's last ID to wait after with XREAD BLOCK.
// allow-oom: reading is not refused at maxmemory (XREADGROUP alone is not), only commits are.
const char* const kFencedReadScript = R"LUA(#!lua flags=allow-oom
local owner = redis.call('GET', KEYS[2])
if not owner or string.match(owner, '^%S+') ~= ARGV[4] then
  return redis.error_reply('P35FENCED consumer name ' .. ARGV[2] .. ' is held by ' ..
                           (owner or 'nobody (expired)'))
end
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if r then return r end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return '0-0' end
return last[1][1]
)LUA";

// "Now" for Counter::add's slot recycling: the wall clock, but never behind the entry's ID time.
// The ID was stamped by Redis's clock (the one rollup's window uses, Redis TIME), and the minute
// counted is the event time's, which normalize() keeps within [ID - 48 h, ID + 5 min]. So the
// entry's minute is never more than 5 minutes ahead of this "now", and its ring slot (which must
// hold a minute 62 behind "now" to be recycled) is always old enough with the default 128 slots:
// a step back of our clock (the producer's and Redis's being right) no longer holds ingest up
// until the wall clock catches up. A step forward lets committed slots be recycled earlier; with
// minutes bounded by ID time, a ring slot is only ever wanted by a minute 128 later, and the late
// lane holds only minutes over 120 behind the newest, so nothing the hour still needs is recycled
// (and recycling needs the slot committed: the buckets never lose a count either way). The wall
// clock stays in the maximum for explicit IDs that are not times and for small rings (64..66),
// where an event up to 5 minutes ahead waits for a minute to pass.
int64_t recycle_now_minute(StreamId id) {
  return std::max(now_unix_ms(), static_cast<int64_t>(id.ms)) / 60000;
}
}  // namespace

Ingest::Ingest(const Config& cfg, Segment& seg)
    : cfg_(cfg), seg_(seg), stage_(seg, shm::StageId::Ingest),
      counter_(seg, cfg.symbol_breakdown),
      conn_(RedisOptions::from_config(cfg, "p35-ingest:" + cfg.consumer)),
      loop_(seg, stage_, conn_, cfg.reconnect_max_ms,
            {shm::StageId::Ingest, "ingest", nullptr, true,
             " so that all stages restart on the live one"}),
      marker_key_(keys::marker(cfg.key_prefix, cfg.consumer)), owner_(cfg, seg, stage_, "p35-ingest") {
  // A batch reply is about 14,000 elements: built in a reused arena, not one malloc each.
  conn_.use_reply_arena();
  fenced_read_ = {"EVAL", kFencedReadScript, "2", cfg_.stream, owner_.key(), cfg_.group,
                  cfg_.consumer, std::to_string(cfg_.batch_size), owner_.token()};
}

Ingest::Prepared Ingest::prepare_redis() {
  const bool created = create_group();
  // Our marker must exist before our first read (DESIGN §5.5): a consumer without one is taken
  // for the first version, whose pending entries others ack without counting. It is created
  // together with our registration; a registered consumer without a marker lost it.
  const std::optional<StreamId> marker =
      checked_marker(conn_, cfg_, seg_, "ingest", marker_missing_logged_);
  if (!marker) return Prepared::MarkerMissing;
  if (segment_behind_redis(*marker, created)) {
    release_name(conn_, cfg_, owner_.token());
    return Prepared::SegmentDropped;
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
  return Prepared::Ready;
}

bool Ingest::create_group() {
  try {
    conn_.command({"XGROUP", "CREATE", cfg_.stream, cfg_.group, "0", "MKSTREAM"});
    return true;
  } catch (const RedisError& e) {
    if (!e.is("BUSYGROUP")) throw;
  }
  return false;
}

bool Ingest::segment_behind_redis(StreamId marker, bool created) {
  if (!counter_.initialised_from_marker()) {
    counter_.initialise_from_marker(marker);
    spdlog::info("New segment: entries up to {} are already in the buckets, pending ones above "
                 "it will be counted", marker.str());
  } else if (const auto committed = known_committed(); committed && marker < *committed) {
    // Before the pending list is read: its re-delivered IDs at or below counted_id would be taken
    // as counted, and acked, against counts Redis no longer holds.
    drop_segment_behind_marker(seg_, marker_key_, "ingest", marker, *committed);
    return true;
  }
  if (!created && counter_.counted_id() > marker && !counted_still_pending()) {
    // Counts above the marker whose newest read Redis no longer holds (a promoted replica that
    // missed it, an older dump): committing them would count entries Redis does not have, and
    // Redis holds a consistent prefix, so the newest read being there vouches for all the others.
    drop_segment_reads_lost(seg_, "ingest", counter_.counted_id(), marker);
    return true;
  }
  return false;
}

// Whether the newest entry this segment counted is still pending on our consumer in Redis.
bool Ingest::counted_still_pending() {
  const std::string id = counter_.counted_id().str();
  const Reply r = conn_.command({"XPENDING", cfg_.stream, cfg_.group, id, id, "1", cfg_.consumer});
  return r.size() > 0;
}

// What this segment says is in Redis: rollup's committed ID, and at least the marker ingest
// started the segment from (rollup adopts exactly that one). A pending commit leaves committed at
// its prev, so a marker equal to prev is not behind. nullopt: unreadable (a writer died
// mid-publish); the ack script still acks nothing past the marker.
std::optional<StreamId> Ingest::known_committed() const {
  std::optional<StreamId> c = try_read_id(seg_.rollup().committed);
  if (!c) return c;
  return std::max(*c, load_id(seg_.ingest().init_marker));
}

int Ingest::run() {
  counter_.recover();
  spdlog::info("Segment {}: counted up to {}", seg_.name(), counter_.counted_id().str());
  return loop_.run(*this);
}

StageWork::Attach Ingest::attach() {
  // One instance per consumer name: a second one waits here, before it reads anything.
  if (!owner_.wait_until_held(conn_)) {
    if (stop_requested()) return Attach::NotYet;
    loop_.segment_gone();
    return Attach::Exit;
  }
  switch (prepare_redis()) {
    case Prepared::Ready: return Attach::Ready;
    case Prepared::SegmentDropped: return Attach::Exit;
    case Prepared::MarkerMissing: break;
  }
  // Read nothing until the marker is back.
  loop_.disconnect();
  stage_.set_state(shm::StageState::WaitingRedis);
  sleep_unless_stopped(watchdog_bounded_ms(kMarkerRecheckMs));
  return Attach::NotYet;
}

StageWork::Step Ingest::step() {
  if (!owner_.renew_if_due(conn_)) {
    // Another instance holds the name: stop reading now; rollup drops this segment (its next
    // commit is fenced) and the pending list is the new holder's to read.
    loop_.disconnect();
    return Step::Again;
  }
  last_read_ = read_once();
  return Step::Done;
}

StageWork::Failure Ingest::failure(const RedisError& e) {
  const std::string_view said = e.server_message();
  if (e.is(kFencedError)) {
    owner_.fenced(said);  // the next connection waits for the name
    return {Failure::Kind::Quiet, {}};
  }
  if (e.is("NOGROUP") || e.is("UNBLOCKED")) {
    // The group or the stream was deleted (UNBLOCKED: under a blocked XREADGROUP). Redis
    // answers, so no outage: prepare_redis() on the new connection re-creates and reports it.
    spdlog::debug("XREADGROUP on {}: {}", cfg_.stream, said);
    return {Failure::Kind::Quiet, {}};
  }
  // Also LOADING, BUSY, READONLY...: the new connection re-reads the pending list, so entries
  // delivered in a reply we never saw are counted.
  return {Failure::Kind::Outage, "read " + cfg_.stream};
}

// Group commit, read side: after a short batch, let the trickle gather for a moment, so that at
// low rates each stage wakes once per linger and not once per message. A full batch (a backlog)
// is read again at once; the first entry after a quiet spell is read at once too.
void Ingest::wait() {
  if (last_read_ > 0 && last_read_ < static_cast<size_t>(cfg_.batch_size) && !reading_pending_)
    sleep_unless_stopped(cfg_.read_linger_ms);
}

void Ingest::drain() {
  counter_.flush();
  spdlog::info("Stopped: counted up to {}", counter_.counted_id().str());
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
  if (!read_ahead_) conn_.append(fenced_read_);
  read_ahead_ = false;
  Reply r = conn_.read_reply();
  if (r.is_error()) {
    RedisError e = error_from_reply("run XREADGROUP on " + conn_.options().endpoint(), r.str(),
                                    conn_.options().username);
    if (e.connection_lost()) conn_.disconnect();
    throw e;
  }
  if (!r.is_string()) return r;
  wait_for_new(r.str());
  return Reply{};
}

// Nothing new was delivered: block until the stream has an entry after `last_id` (XREAD delivers
// nothing to the group: the next fenced read does), at most P35_BLOCK_MS and never past the next
// renewal of the consumer name, so that renewal keeps its own schedule when the stream is quiet.
// hiredis's read timeout must outlive the BLOCK, or every quiet period looks like a failure.
void Ingest::wait_for_new(std::string_view last_id) {
  const int64_t to_renewal = owner_.next_renewal_ms() - now_mono_ms();
  const auto block = std::clamp<int64_t>(to_renewal, 1, watchdog_bounded_ms(cfg_.block_ms));
  const Reply w = conn_.command({"XREAD", "COUNT", "1", "BLOCK", std::to_string(block), "STREAMS",
                                 cfg_.stream, last_id});
  (void)w;
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
    conn_.append(fenced_read_);
    conn_.flush();
    read_ahead_ = true;
  }
  process(entries);
  return entries->elements;
}

bool Ingest::add_waiting(StreamId id, const Normalized* msg) {
  if (counter_.add(id, msg, recycle_now_minute(id)) == Counter::Result::Done) return true;
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
    if (counter_.add(id, msg, recycle_now_minute(id)) == Counter::Result::Done) break;
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
