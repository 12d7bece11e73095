// Bells: 32-bit words in shared memory that one stage rings (increment + FUTEX_WAKE) and another
// sleeps on (FUTEX_WAIT), so stages wake each other without polling.
#pragma once

#include <atomic>
#include <cstdint>

namespace p35 {

// Increment the bell (release: what was published before is visible to the woken) and wake
// every process sleeping on it.
void bell_ring(std::atomic<uint32_t>& bell);

// The same, but the FUTEX_WAKE system call is made only when `state` (the waiter's stage state)
// equals `waiting`: for a bell its one waiter sleeps on only now and then (ingest's, in
// backpressure), which commits and acks ring on every round. The waiter must store `waiting`
// and then issue a seq_cst fence before it takes `seen`; both sides' fences make sure that either
// the ringer sees `waiting` or the waiter sees the new bell value (no lost wake-up).
void bell_ring_if_waiting(std::atomic<uint32_t>& bell, const std::atomic<uint32_t>& state,
                          uint32_t waiting);

// Sleep until the bell differs from `seen` or timeout_ms passes (also returns early on signals).
// Take `seen` with bell.load(acquire) BEFORE checking the condition you are waiting for.
void bell_wait(std::atomic<uint32_t>& bell, uint32_t seen, int timeout_ms);

}  // namespace p35
