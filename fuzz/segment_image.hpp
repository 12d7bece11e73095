// Builds segment files for the inspector's fuzz target: a header-consistent image with small
// capacities, as the creator would lay it out, then overwritten word by word by the fuzzer, so
// mutations reach the slots, strings and shadows instead of dying at the header checks.
//
// "Patched" input format: 32 bytes of capacities (8 x uint32 LE, reduced to small values), then
// records of 12 bytes: uint32 word index (modulo the image's 8-byte words), uint64 value.
#pragma once

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <vector>

#include "shm.hpp"

namespace p35::fuzz {

inline constexpr size_t kCapsBytes = sizeof(shm::Capacities);
inline constexpr size_t kRecordBytes = 12;
inline constexpr int64_t kImageCreatedMs = 1'767'225'000'000;  // 2025-12-31T23:50Z

// Capacities the creator can make (tables: powers of two at least the configuration's minimums,
// 16, 16 and 4, so slots stay 64-byte aligned), small enough that one image stays below
// ~250 KiB. Seed makers must use capacities this leaves unchanged.
inline uint32_t table_cap(uint32_t v, uint32_t modulus, uint32_t min) {
  return std::max(min, std::bit_floor(v % modulus));
}
inline shm::Capacities reduce_caps(const shm::Capacities& c) {
  return {c.ring_slots % 16,
          c.late_slots % 4,
          table_cap(c.reason_cap, 64, 16),
          table_cap(c.symbol_reason_cap, 64, 16),
          table_cap(c.unknown_cap, 16, 4),
          c.string_cap % 128,
          c.id_log_cap % 1024,
          c.journal_cap % 64};
}

template <typename T>
void put(std::vector<uint8_t>& image, uint64_t offset, T value) {
  std::memcpy(image.data() + offset, &value, sizeof value);
}

// The image open_or_create's creator would make (zeroed, header filled, every slot empty).
inline std::vector<uint8_t> creator_image(const shm::Capacities& caps) {
  const shm::SectionOffsets off = compute_layout(caps);
  std::vector<uint8_t> image(off.end, 0);
  put(image, offsetof(shm::SegmentHeader, magic), shm::kMagic);
  put(image, offsetof(shm::SegmentHeader, layout_version), shm::kLayoutVersion);
  put(image, offsetof(shm::SegmentHeader, header_size), uint32_t{sizeof(shm::SegmentHeader)});
  put(image, offsetof(shm::SegmentHeader, segment_size), off.end);
  put(image, offsetof(shm::SegmentHeader, created_unix_ms), kImageCreatedMs);
  put(image, offsetof(shm::SegmentHeader, caps), caps);
  put(image, offsetof(shm::SegmentHeader, off), off);
  constexpr std::string_view kFor = "stream=fuzz group=fuzz consumer=fuzz prefix=fuzz:";
  std::memcpy(image.data() + offsetof(shm::SegmentHeader, fingerprint_text), kFor.data(),
              kFor.size());
  const uint64_t slots = uint64_t{caps.ring_slots} + caps.late_slots;
  for (uint64_t i = 0; i < 3 * slots; ++i) {  // live slots and both shadow sides are contiguous
    const uint64_t slot =
        i < slots ? off.slots + i * off.slot_bytes : off.shadows + (i - slots) * off.slot_bytes;
    put(image, slot + offsetof(shm::SlotHeader, minute), shm::kEmptyMinute);
  }
  return image;
}

// The segment file a patched input stands for.
inline std::vector<uint8_t> patched_image(const uint8_t* data, size_t size) {
  shm::Capacities raw{};
  std::memcpy(&raw, data, size < kCapsBytes ? size : kCapsBytes);
  std::vector<uint8_t> image = creator_image(reduce_caps(raw));
  const uint64_t words = image.size() / 8;
  for (size_t at = kCapsBytes; at + kRecordBytes <= size; at += kRecordBytes) {
    uint32_t word = 0;
    uint64_t value = 0;
    std::memcpy(&word, data + at, sizeof word);
    std::memcpy(&value, data + at + sizeof word, sizeof value);
    put(image, (word % words) * 8, value);
  }
  return image;
}

}  // namespace p35::fuzz
