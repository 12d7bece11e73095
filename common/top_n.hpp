// Ranking counts by name: the top n, count descending, ties to the smaller name in byte order.
// The one rule of the reason:top:<W> snapshots (rollup) and of p35-shm's top reasons (inspect).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace p35 {

// The top n of a count map; zero counts are left out.
std::vector<std::pair<std::string, uint64_t>> top_n(const std::map<std::string, uint64_t>& m,
                                                    size_t n);

}  // namespace p35
