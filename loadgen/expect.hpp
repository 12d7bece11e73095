// The expected bucket contents of a run (--expect): per minute, the count of every bucket field and
// of every unknown-decision member, aggregated from the generator's intents.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "generator.hpp"

namespace p35::loadgen {

class Expectation {
 public:
  // Counts one written entry; id_ms is its stream ID's time (the minute when it has no usable
  // timestamp).
  void add(const Intent& intent, int64_t id_ms);
  uint64_t entries() const { return entries_; }

  // The file's lines, sorted, without newlines: "B\t<YYYYMMDDHHMM>\t<field>\t<count>",
  // "U\t<YYYYMMDDHHMM>\t<member>\t<count>", then "N\t<entries>" last.
  std::vector<std::string> lines() const;
  // Writes lines() to path, one per line. Throws std::runtime_error when it cannot.
  void write(const std::string& path) const;

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  // Key: kind ('B' or 'U'), the minute as 8 raw bytes, then the parts of the field or member.
  void count(char kind, int64_t minute, std::initializer_list<std::string_view> parts);

  std::unordered_map<std::string, uint64_t, Hash, std::equal_to<>> counts_;
  std::string key_;  // reused: a lookup of a known key allocates nothing
  uint64_t entries_ = 0;
};

}  // namespace p35::loadgen
