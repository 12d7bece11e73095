// Bells on Linux futexes (shared, not FUTEX_PRIVATE: the waiters are other processes).
#include "futex.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <ctime>

namespace p35 {

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));

void bell_ring(std::atomic<uint32_t>& bell) {
  bell.fetch_add(1, std::memory_order_release);
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&bell), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void bell_ring_if_waiting(std::atomic<uint32_t>& bell, const std::atomic<uint32_t>& state,
                          uint32_t waiting) {
  bell.fetch_add(1, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (state.load(std::memory_order_relaxed) != waiting) return;
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&bell), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
}

void bell_wait(std::atomic<uint32_t>& bell, uint32_t seen, int timeout_ms) {
  if (timeout_ms <= 0) return;
  timespec ts{timeout_ms / 1000, static_cast<long>(timeout_ms % 1000) * 1000000L};
  // Returns at once with EAGAIN if the bell already moved: no lost wake-up.
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&bell), FUTEX_WAIT, seen, &ts, nullptr, 0);
}

}  // namespace p35
