// The top n of counts by name (top_n.hpp): one ranking rule for rollup and p35-shm.
#include "top_n.hpp"

#include <algorithm>

namespace p35 {

void TopN::offer(std::string_view name, uint64_t count) {
  if (count == 0 || n_ == 0) return;
  const Ranked r{name, count};
  if (best_.size() < n_) {
    best_.push_back(r);
    std::push_heap(best_.begin(), best_.end(), better);
  } else if (better(r, best_.front())) {
    std::pop_heap(best_.begin(), best_.end(), better);
    best_.back() = r;
    std::push_heap(best_.begin(), best_.end(), better);
  }
}

std::vector<std::pair<std::string, uint64_t>> TopN::take() {
  std::sort(best_.begin(), best_.end(), better);
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(best_.size());
  for (const auto& [name, c] : best_) out.emplace_back(std::string(name), c);
  best_.clear();
  return out;
}

std::vector<std::pair<std::string, uint64_t>> top_n(const std::map<std::string, uint64_t>& m,
                                                    size_t n) {
  TopN top(n);
  for (const auto& [name, c] : m) top.offer(name, c);
  return top.take();
}

}  // namespace p35
