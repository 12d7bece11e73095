// hiredis reply objects built in a reusable bump arena (see reply_arena.hpp).
#include "reply_arena.hpp"

#include <hiredis/hiredis.h>

#include <cstring>
#include <new>

namespace p35 {

namespace {

constexpr size_t kChunkBytes = 256 * 1024;
// Chunks kept for reuse after a reset: enough for a 1,000-entry batch of the usual size; a reply
// of hostile size (1 MB fields) gets its own chunks, freed at the next reset.
constexpr size_t kKeptChunks = 8;
constexpr size_t kAlign = alignof(std::max_align_t);

ReplyArena& arena_of(const redisReadTask* task) {
  return *static_cast<ReplyArena*>(task->privdata);
}

redisReply* new_reply(const redisReadTask* task, int type) {
  void* mem = arena_of(task).allocate(sizeof(redisReply));
  auto* r = static_cast<redisReply*>(std::memset(mem, 0, sizeof(redisReply)));
  r->type = type;
  return r;
}

// hiredis leaves linking a child into its parent array to the object functions.
void* link(const redisReadTask* task, redisReply* r) {
  if (task->parent != nullptr) {
    auto* parent = static_cast<redisReply*>(task->parent->obj);
    parent->element[task->idx] = r;
  }
  return r;
}

void* create_string(const redisReadTask* task, char* str, size_t len) {
  redisReply* r = new_reply(task, task->type);
  auto* copy = static_cast<char*>(arena_of(task).allocate(len + 1));
  if (len > 0) std::memcpy(copy, str, len);
  copy[len] = '\0';
  r->str = copy;
  r->len = len;
  return link(task, r);
}

void* create_array(const redisReadTask* task, int elements) {
  redisReply* r = new_reply(task, REDIS_REPLY_ARRAY);
  if (elements > 0) {
    const size_t n = static_cast<size_t>(elements);
    void* mem = arena_of(task).allocate(n * sizeof(redisReply*));
    r->element = static_cast<redisReply**>(std::memset(mem, 0, n * sizeof(redisReply*)));
    r->elements = n;
  }
  return link(task, r);
}

void* create_integer(const redisReadTask* task, long long value) {
  redisReply* r = new_reply(task, REDIS_REPLY_INTEGER);
  r->integer = value;
  return link(task, r);
}

void* create_nil(const redisReadTask* task) {
  return link(task, new_reply(task, REDIS_REPLY_NIL));
}

void free_nothing(void*) {}  // the arena owns every object; hiredis calls this for partial replies

redisReplyObjectFunctions kArenaFunctions = {create_string, create_array, create_integer,
                                             create_nil, free_nothing};

}  // namespace

void ReplyArena::install(redisContext* ctx) {
  ctx->reader->fn = &kArenaFunctions;
  ctx->reader->privdata = this;
  ctx->reader->maxbuf = 0;
}

void ReplyArena::release() {
  if (live_ > 0 && --live_ == 0) reset();
}

void ReplyArena::forget_partial() {
  if (live_ == 0) reset();
}

void* ReplyArena::allocate(size_t bytes) {
  bytes = (bytes + kAlign - 1) & ~(kAlign - 1);
  while (current_ < chunks_.size()) {
    Chunk& c = chunks_[current_];
    if (c.size - used_ >= bytes) {
      void* p = c.mem.get() + used_;
      used_ += bytes;
      return p;
    }
    ++current_;
    used_ = 0;
  }
  const size_t size = bytes > kChunkBytes ? bytes : kChunkBytes;
  chunks_.push_back({std::unique_ptr<std::byte[]>(new std::byte[size]), size});
  current_ = chunks_.size() - 1;
  used_ = bytes;
  return chunks_.back().mem.get();
}

void ReplyArena::reset() {
  // Keep the first standard-size chunks; drop oversized ones and the excess.
  size_t kept = 0;
  std::erase_if(chunks_, [&kept](const Chunk& c) {
    return c.size != kChunkBytes || ++kept > kKeptChunks;
  });
  current_ = 0;
  used_ = 0;
}

size_t ReplyArena::reserved_bytes() const {
  size_t total = 0;
  for (const auto& c : chunks_) total += c.size;
  return total;
}

}  // namespace p35
