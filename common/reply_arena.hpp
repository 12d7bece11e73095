// A bump allocator for hiredis reply trees: a connection that reads large replies (ingest's
// XREADGROUP of 1,000 entries, about 14 elements each) builds them through hiredis's
// redisReplyObjectFunctions in a few reused chunks instead of one malloc and free per element.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

struct redisContext;

namespace p35 {

// The trees are ordinary redisReply structs, so every reader of a Reply works unchanged; they are
// never passed to freeReplyObject. Reply objects built here count as live until released; when
// none is, the chunks are reused from the start. hiredis builds one reply per redisGetReply call
// and starts the next only on the next call, so a Reply released before the next read lets the
// arena restart at its first chunk; one kept across reads only makes the arena grow for a while.
class ReplyArena {
 public:
  ReplyArena() = default;
  ReplyArena(const ReplyArena&) = delete;
  ReplyArena& operator=(const ReplyArena&) = delete;

  // Builds this context's replies here from now on (and keeps its read buffer allocated between
  // replies: hiredis otherwise frees and reallocates it after every large reply).
  void install(redisContext* ctx);

  void acquire() { ++live_; }
  void release();
  // Unreferenced objects of a context that was freed mid-reply: start over when nothing is live.
  void forget_partial();

  void* allocate(size_t bytes);
  size_t chunks() const { return chunks_.size(); }
  size_t reserved_bytes() const;

 private:
  struct Chunk {
    std::unique_ptr<std::byte[]> mem;
    size_t size;
  };
  void reset();

  std::vector<Chunk> chunks_;
  size_t current_ = 0;  // the chunk being filled
  size_t used_ = 0;     // bytes used in it
  size_t live_ = 0;     // Reply objects not yet released
};

}  // namespace p35
