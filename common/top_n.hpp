// Ranking counts by name: the top n, count descending, ties to the smaller name in byte order.
// The one rule of the reason:top:<W> snapshots (rollup) and of p35-shm's top reasons (inspect).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace p35 {

// The ranking rule: the larger count first; equal counts, the smaller name (byte order) first.
inline bool ranks_before(std::string_view a_name, uint64_t a, std::string_view b_name, uint64_t b) {
  return a != b ? a > b : a_name < b_name;
}

// The best n of the (name, count) pairs offered one at a time, by ranks_before; zero counts are
// left out. The offered names must outlive the TopN (it keeps views until take()).
class TopN {
 public:
  explicit TopN(size_t n) : n_(n) {}
  void offer(std::string_view name, uint64_t count);
  std::vector<std::pair<std::string, uint64_t>> take();  // best first

 private:
  using Ranked = std::pair<std::string_view, uint64_t>;
  static bool better(const Ranked& a, const Ranked& b) {
    return ranks_before(a.first, a.second, b.first, b.second);
  }
  size_t n_;
  std::vector<Ranked> best_;  // a heap whose front is the worst of the best n so far
};

// The top n of a count map; zero counts are left out.
std::vector<std::pair<std::string, uint64_t>> top_n(const std::map<std::string, uint64_t>& m,
                                                    size_t n);

}  // namespace p35
