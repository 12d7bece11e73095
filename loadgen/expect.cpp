// Aggregation and the sorted, tab-separated file of expected bucket contents.
#include "expect.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "rules.hpp"

namespace p35::loadgen {

namespace {
constexpr int64_t kMinuteMs = 60000;
constexpr size_t kMinuteBytes = sizeof(int64_t);

int64_t minute_of(int64_t ms) {
  return ms >= 0 ? ms / kMinuteMs : -((-ms + kMinuteMs - 1) / kMinuteMs);
}
}  // namespace

void Expectation::add(const Intent& intent, int64_t id_ms) {
  const int64_t minute = minute_of(intent.time_from_id ? id_ms : intent.event_ms);
  count('B', minute, {"decision:", intent.label});
  count('B', minute, {"reason:", intent.reason});
  if (!intent.symbol.empty())
    count('B', minute, {"symbol_reason:", intent.symbol, ":", intent.reason});
  if (intent.unknown) count('U', minute, {intent.member});
  ++entries_;
}

void Expectation::count(char kind, int64_t minute, std::initializer_list<std::string_view> parts) {
  key_.clear();
  key_.push_back(kind);
  char raw[kMinuteBytes];
  std::memcpy(raw, &minute, kMinuteBytes);
  key_.append(raw, kMinuteBytes);
  for (std::string_view part : parts) key_.append(part);
  auto it = counts_.find(std::string_view(key_));
  if (it == counts_.end()) {
    counts_.emplace(key_, 1);
  } else {
    ++it->second;
  }
}

std::vector<std::string> Expectation::lines() const {
  std::vector<std::string> out;
  out.reserve(counts_.size() + 1);
  for (const auto& [key, n] : counts_) {
    int64_t minute = 0;
    std::memcpy(&minute, key.data() + 1, kMinuteBytes);
    const std::string_view field = std::string_view(key).substr(1 + kMinuteBytes);
    out.push_back(fmt::format("{}\t{}\t{}\t{}", key[0], minute_key(minute), field, n));
  }
  std::sort(out.begin(), out.end());
  out.push_back(fmt::format("N\t{}", entries_));
  return out;
}

void Expectation::write(const std::string& path) const {
  std::unique_ptr<FILE, int (*)(FILE*)> file(std::fopen(path.c_str(), "wb"), &std::fclose);
  if (!file)
    throw std::runtime_error(fmt::format("Failed to open {}: {}", path, std::strerror(errno)));
  for (const std::string& line : lines()) {
    std::fwrite(line.data(), 1, line.size(), file.get());
    std::fputc('\n', file.get());
  }
  if (std::fflush(file.get()) != 0 || std::ferror(file.get())) {
    throw std::runtime_error(fmt::format("Failed to write {}: {}", path, std::strerror(errno)));
  }
}

}  // namespace p35::loadgen
