// The tables of realistic producer values and the deterministic draws the generator makes from
// them.
#include "catalog.hpp"

#include <fmt/format.h>

#include <array>
#include <stdexcept>

namespace p35::loadgen {

double unit_interval(Rng& rng) {
  // The top 53 bits fill a double's mantissa exactly.
  return static_cast<double>(rng() >> 11) * 0x1.0p-53;
}

bool chance(Rng& rng, double probability) {
  return unit_interval(rng) < probability;
}

uint64_t below(Rng& rng, uint64_t bound) {
  return rng() % bound;
}

int64_t between(Rng& rng, int64_t low, int64_t high) {
  return low + static_cast<int64_t>(below(rng, static_cast<uint64_t>(high - low) + 1));
}

WeightedTable::WeightedTable(std::initializer_list<Weighted> items) {
  double total = 0;
  for (const auto& item : items) {
    total += item.weight;
    values_.push_back(item.value);
    cumulative_.push_back(total);
  }
  if (values_.empty() || total <= 0) throw std::logic_error("WeightedTable needs positive weights");
  for (double& c : cumulative_) c /= total;
}

std::string_view WeightedTable::pick(Rng& rng) const {
  const double u = unit_interval(rng);
  for (size_t i = 0; i < cumulative_.size(); ++i) {
    if (u < cumulative_[i]) return values_[i];
  }
  return values_.back();  // rounding left u at or above the last cumulative weight
}

namespace catalog {

const WeightedTable& symbols() {
  // Roughly Zipf: BTC and ETH carry a large share, the tail is thin.
  static const WeightedTable table{
      {"BTCUSDT", 20},   {"ETHUSDT", 14},   {"SOLUSDT", 8},    {"BNBUSDT", 6},    {"XRPUSDT", 5},
      {"DOGEUSDT", 4},   {"ADAUSDT", 3},    {"AVAXUSDT", 3},   {"LINKUSDT", 3},   {"DOTUSDT", 2},
      {"MATICUSDT", 2},  {"LTCUSDT", 2},    {"TRXUSDT", 2},    {"ATOMUSDT", 2},   {"UNIUSDT", 2},
      {"ETCUSDT", 1.5},  {"XLMUSDT", 1.5},  {"NEARUSDT", 1.5}, {"APTUSDT", 1.5},  {"ARBUSDT", 1.5},
      {"OPUSDT", 1},     {"FILUSDT", 1},    {"ICPUSDT", 1},    {"INJUSDT", 1},    {"SUIUSDT", 1},
      {"SEIUSDT", 1},    {"TIAUSDT", 1},    {"RNDRUSDT", 1},   {"AAVEUSDT", 1},   {"MKRUSDT", 1},
      {"LDOUSDT", 0.5},  {"STXUSDT", 0.5},  {"IMXUSDT", 0.5},  {"HBARUSDT", 0.5}, {"VETUSDT", 0.5},
      {"ALGOUSDT", 0.5}, {"SANDUSDT", 0.5}, {"MANAUSDT", 0.5}, {"AXSUSDT", 0.5},  {"FTMUSDT", 0.5},
  };
  return table;
}

const WeightedTable& skip_reasons() {
  static const WeightedTable table{
      {"cooldown_active", 30}, {"position_exists", 25}, {"spread_too_wide", 20},
      {"min_notional", 9},     {"duplicate_plan", 8},   {"low_confidence", 8},
  };
  return table;
}

const WeightedTable& blocked_reasons() {
  static const WeightedTable table{
      {"risk_limit", 40},          {"min_notional", 20},      {"max_positions_reached", 10},
      {"insufficient_balance", 8}, {"kill_switch_active", 6}, {"leverage_cap", 6},
      {"volatility_halt", 5},      {"spread_too_wide", 5},
  };
  return table;
}

const WeightedTable& error_codes() {
  static const WeightedTable table{
      {"exchange_unavailable", 4}, {"timeout", 4},     {"rate_limited", 3},
      {"order_rejected", 3},       {"stale_price", 2},
  };
  return table;
}

const WeightedTable& execute_reasons() {
  static const WeightedTable table{{"none", 90}, {"partial_fill", 7}, {"filled_at_worse_price", 3}};
  return table;
}

namespace {
constexpr std::array<std::string_view, 7> kExecute{"EXECUTE",  "executed", "Execute", "EXEC",
                                                   "EXECUTED", "exec",     "Executed"};
constexpr std::array<std::string_view, 5> kSkip{"SKIP", "skipped", "Skipped", "SKIPPED", "skip"};
constexpr std::array<std::string_view, 5> kBlocked{"BLOCKED", "block", "Blocked", "BLOCK",
                                                   "blocked"};
constexpr std::array<std::string_view, 6> kError{"ERROR", "FAILED", "error",
                                                 "fail",  "Failed", "FAIL"};
constexpr std::array<std::string_view, 7> kTrue{"True", "true", "TRUE", "1", "yes", "Yes", "YES"};
constexpr std::array<std::string_view, 7> kFalse{"False", "false", "FALSE", "0", "no", "No", "NO"};
constexpr std::array<std::string_view, 14> kUnknown{
    "MAYBE", "maybe", "Maybe", "HOLD", "partial_fill", "pending",    "EXECUTE_LATER", "SKIPPING",
    "N/A",   "null",  "None",  "?",    "retry",        "EXECUTE NOW"};
constexpr std::array<std::string_view, 9> kGarbage{"perhaps", "Perhaps",    "2",  "truee", "t",
                                                   "nope",    "True False", "-1", "ja"};
constexpr std::array<std::string_view, 6> kMultibyte{"é", "exécuté", "€", "日本語", "😀", "Ωmega"};
}  // namespace

std::span<const std::string_view> execute_spellings() {
  return kExecute;
}
std::span<const std::string_view> skip_spellings() {
  return kSkip;
}
std::span<const std::string_view> blocked_spellings() {
  return kBlocked;
}
std::span<const std::string_view> error_spellings() {
  return kError;
}
std::span<const std::string_view> executed_true_spellings() {
  return kTrue;
}
std::span<const std::string_view> executed_false_spellings() {
  return kFalse;
}
std::span<const std::string_view> unknown_decisions() {
  return kUnknown;
}
std::span<const std::string_view> executed_garbage() {
  return kGarbage;
}
std::span<const std::string_view> multibyte_words() {
  return kMultibyte;
}

std::string_view canonical_decision(std::string_view upper) {
  if (upper == "EXECUTE" || upper == "EXECUTED" || upper == "EXEC") return "EXECUTE";
  if (upper == "SKIP" || upper == "SKIPPED") return "SKIP";
  if (upper == "BLOCKED" || upper == "BLOCK") return "BLOCKED";
  if (upper == "ERROR" || upper == "FAILED" || upper == "FAIL") return "ERROR";
  return {};
}

void free_text_error(Rng& rng, uint64_t entry_index, std::string& out) {
  // Disjoint ranges per entry index make every order ID unique.
  const uint64_t order_id = 8800000000ULL + entry_index * 1009 + below(rng, 1009);
  out.clear();
  auto it = std::back_inserter(out);
  switch (below(rng, 7)) {
    case 0:
      fmt::format_to(it, "Order rejected by exchange: insufficient margin (orderId={})", order_id);
      break;
    case 1:
      fmt::format_to(it,
                     "Binance API error -2010: Account has insufficient balance for requested "
                     "action. (clientOrderId=p35-{:x})",
                     order_id);
      break;
    case 2:
      fmt::format_to(it, "Exchange timeout after {}ms placing LIMIT order (orderId={})",
                     between(rng, 3000, 15000), order_id);
      break;
    case 3:
      fmt::format_to(it, "ReduceOnly Order is rejected. (orderId={})", order_id);
      break;
    case 4:
      fmt::format_to(it, "HTTP 502 Bad Gateway from fapi.binance.com (requestId={:x})",
                     order_id * 7919);
      break;
    case 5:
      fmt::format_to(it, "Order would immediately trigger. (stopPrice={}.{:02}, orderId={})",
                     between(rng, 10, 70000), below(rng, 100), order_id);
      break;
    default:
      fmt::format_to(it, "Margin is insufficient. Required {}.{:04} USDT (orderId={})",
                     between(rng, 5, 5000), below(rng, 10000), order_id);
      break;
  }
}

}  // namespace catalog
}  // namespace p35::loadgen
