// Bells: 32-bit words in shared memory that one stage rings (increment + FUTEX_WAKE) and another
// sleeps on (FUTEX_WAIT), so stages wake each other without polling.
#pragma once

#include <atomic>
#include <cstdint>

namespace p35 {

// Increment the bell (release: what was published before is visible to the woken) and wake
// every process sleeping on it.
void bell_ring(std::atomic<uint32_t>& bell);

// Sleep until the bell differs from `seen` or timeout_ms passes (also returns early on signals).
// Take `seen` with bell.load(acquire) BEFORE checking the condition you are waiting for.
void bell_wait(std::atomic<uint32_t>& bell, uint32_t seen, int timeout_ms);

}  // namespace p35
