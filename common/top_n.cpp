// The top n of a count map (top_n.hpp).
#include "top_n.hpp"

#include <algorithm>

namespace p35 {

std::vector<std::pair<std::string, uint64_t>> top_n(const std::map<std::string, uint64_t>& m,
                                                    size_t n) {
  // Rank pointers to the map's entries, copy only the names that make the cut.
  using Entry = const std::pair<const std::string, uint64_t>*;
  std::vector<Entry> v;
  v.reserve(m.size());
  for (const auto& e : m)
    if (e.second != 0) v.push_back(&e);
  const auto better = [](Entry a, Entry b) {
    return a->second != b->second ? a->second > b->second : a->first < b->first;
  };
  if (v.size() > n) {
    std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), v.end(), better);
    v.resize(n);
  } else {
    std::sort(v.begin(), v.end(), better);
  }
  std::vector<std::pair<std::string, uint64_t>> out;
  out.reserve(v.size());
  for (Entry e : v) out.emplace_back(e->first, e->second);
  return out;
}

}  // namespace p35
