// What the real trading system's producers write, as weighted tables: symbols, reason codes per
// decision, decision spellings, `executed` spellings, and the never-repeating exchange errors.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace p35::loadgen {

// The one random engine of the generator: same seed, same entries.
using Rng = std::mt19937_64;

// Our own draws instead of <random>'s distributions, whose output differs between standard
// libraries: an expect file must not depend on the toolchain.
double unit_interval(Rng& rng);  // [0, 1)
bool chance(Rng& rng, double probability);
uint64_t below(Rng& rng, uint64_t bound);              // [0, bound), bound > 0
int64_t between(Rng& rng, int64_t low, int64_t high);  // [low, high]

template <typename T>
const T& pick(Rng& rng, std::span<const T> items) {
  return items[below(rng, items.size())];
}

struct Weighted {
  std::string_view value;
  double weight;
};

class WeightedTable {
 public:
  WeightedTable(std::initializer_list<Weighted> items);
  std::string_view pick(Rng& rng) const;
  std::span<const std::string_view> values() const { return values_; }

 private:
  std::vector<std::string_view> values_;
  std::vector<double> cumulative_;
};

namespace catalog {
const WeightedTable& symbols();          // about 40 USDT pairs, a few much busier than the rest
const WeightedTable& skip_reasons();     // why a plan was skipped
const WeightedTable& blocked_reasons();  // why risk management blocked it
const WeightedTable& error_codes();      // the repeating part of execution errors
const WeightedTable& execute_reasons();  // what an executed plan may carry ("none" mostly)

// Spellings producers use for each decision (the canonical one first) and for `executed`.
std::span<const std::string_view> execute_spellings();
std::span<const std::string_view> skip_spellings();
std::span<const std::string_view> blocked_spellings();
std::span<const std::string_view> error_spellings();
std::span<const std::string_view> executed_true_spellings();
std::span<const std::string_view> executed_false_spellings();
// Decisions the rules do not know, in plain ASCII (they are upper-cased by the rules).
std::span<const std::string_view> unknown_decisions();
// `executed` values that are neither true nor false.
std::span<const std::string_view> executed_garbage();
// Valid UTF-8 words with 2-, 3- and 4-byte characters.
std::span<const std::string_view> multibyte_words();

// The canonical decision of a spelling after upper-casing, or empty when it is not a synonym;
// only used to check that the unknown tables really are unknown.
std::string_view canonical_decision(std::string_view upper);

// A free-text exchange error that never repeats: the entry index is part of its order ID.
void free_text_error(Rng& rng, uint64_t entry_index, std::string& out);
}  // namespace catalog

}  // namespace p35::loadgen
