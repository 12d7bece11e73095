// A bare hiredis XREADGROUP + XACK loop with a few requests in flight, so that Redis itself, not
// the round trip, is the bottleneck: the ceiling any drain of the same backlog can reach.
#include "raw_limit.hpp"

#include <hiredis/hiredis.h>

#include <deque>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "proc_stats.hpp"

namespace p35::bench {

namespace {

struct FreeContext {
  void operator()(redisContext* c) const { redisFree(c); }
};
struct FreeReply {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using ContextPtr = std::unique_ptr<redisContext, FreeContext>;
using ReplyPtr = std::unique_ptr<redisReply, FreeReply>;

ReplyPtr get_reply(redisContext* c) {
  void* r = nullptr;
  if (redisGetReply(c, &r) != REDIS_OK || r == nullptr)
    throw std::runtime_error(std::string("raw limit: reading a reply failed: ") + c->errstr);
  ReplyPtr reply(static_cast<redisReply*>(r));
  if (reply->type == REDIS_REPLY_ERROR)
    throw std::runtime_error("raw limit: Redis answered " + std::string(reply->str, reply->len));
  return reply;
}

void append(redisContext* c, const std::vector<std::string_view>& args) {
  std::vector<const char*> argv;
  std::vector<size_t> lens;
  for (auto a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK)
    throw std::runtime_error(std::string("raw limit: appending a command failed: ") + c->errstr);
}

ReplyPtr command(redisContext* c, const std::vector<std::string_view>& args) {
  append(c, args);
  return get_reply(c);
}

// The entries array of an XREADGROUP reply, or nullptr when nothing was left to read.
const redisReply* entries_of(const redisReply* r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements == 0) return nullptr;
  const redisReply* stream = r->element[0];
  const redisReply* entries = stream->element[1];
  return entries->elements == 0 ? nullptr : entries;
}

}  // namespace

RawLimitResult run_raw_limit(const RawLimitOptions& o) {
  ContextPtr ctx(redisConnectUnix(o.unix_socket.c_str()));
  if (!ctx || ctx->err) throw std::runtime_error("raw limit: cannot connect to " + o.unix_socket);
  redisContext* c = ctx.get();
  redisReply* ignored = nullptr;
  // A group left by an interrupted run would start mid-stream.
  ignored = static_cast<redisReply*>(redisCommand(c, "XGROUP DESTROY %s %s", o.stream.c_str(), o.group.c_str()));
  if (ignored != nullptr) freeReplyObject(ignored);
  command(c, {"XGROUP", "CREATE", o.stream, o.group, "0"});

  const std::string count = std::to_string(o.batch);
  const std::vector<std::string_view> read{"XREADGROUP", "GROUP", o.group, o.consumer, "COUNT",
                                           count, "STREAMS", o.stream, ">"};
  enum class Kind { Read, Ack };
  std::deque<Kind> waiting;  // replies come back in the order the commands went out
  std::vector<std::string_view> ack;
  RawLimitResult result;
  bool stream_done = false;
  const int64_t start_ns = mono_ns();
  for (int i = 0; i < o.in_flight; ++i) {
    append(c, read);
    waiting.push_back(Kind::Read);
  }
  while (!waiting.empty()) {
    const ReplyPtr r = get_reply(c);  // flushes what was appended, then reads one reply
    const Kind kind = waiting.front();
    waiting.pop_front();
    if (kind == Kind::Ack) continue;
    const redisReply* entries = entries_of(r.get());
    if (entries == nullptr) {
      stream_done = true;
      continue;
    }
    ack.assign({"XACK", o.stream, o.group});
    for (size_t i = 0; i < entries->elements; ++i) {
      const redisReply* id = entries->element[i]->element[0];
      ack.emplace_back(id->str, id->len);
    }
    result.messages += entries->elements;
    append(c, ack);  // `ack` views into `r`, which lives until the command is in hiredis's buffer
    waiting.push_back(Kind::Ack);
    if (!stream_done) {
      append(c, read);
      waiting.push_back(Kind::Read);
    }
  }
  result.seconds = static_cast<double>(mono_ns() - start_ns) / 1e9;
  command(c, {"XGROUP", "DESTROY", o.stream, o.group});
  return result;
}

}  // namespace p35::bench
