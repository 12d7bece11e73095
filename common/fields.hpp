// The field names of the hashes P3.5 writes (docs/keys.md): the minute bucket's families
// (decision:, reason:, symbol_reason:, each with its __overflow__ field), the members of the
// unknown:<minute> hash, and the status hash's totals. Names are built from pieces (Name), so the
// committer appends them to one buffer without a std::string per field.
#pragma once

#include <array>
#include <cstddef>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "rules.hpp"
#include "shm_layout.hpp"

namespace p35::fields {

// What every family names the counts that did not fit a minute's table.
inline constexpr std::string_view kOverflow = "__overflow__";
inline constexpr std::string_view kDecision = "decision:";           // + a decision label
inline constexpr std::string_view kReason = "reason:";               // + the reason
inline constexpr std::string_view kSymbolReason = "symbol_reason:";  // + symbol ":" reason
inline constexpr std::string_view kExecuted = "executed=";           // + the `executed` value

// A field name as up to four pieces; they view text that must outlive the Name.
class Name {
 public:
  Name(std::initializer_list<std::string_view> parts) {
    for (const std::string_view p : parts) parts_[n_++] = p;  // at most four: see the builders
  }
  std::span<const std::string_view> parts() const { return {parts_.data(), n_}; }
  std::string str() const {
    std::string s;
    for (const std::string_view p : parts()) s += p;
    return s;
  }

 private:
  std::array<std::string_view, 4> parts_{};
  size_t n_ = 0;
};

// What follows "decision:" in a bucket, and a field of decision:counts:<W>: EXECUTE ... ERROR;
// UNKNOWN:<value> for a `decision` field holding `value`, not a synonym; UNKNOWN without one (no
// `decision` field and no recognisable `executed`).
inline Name decision_label(Decision d, bool from_decision_field = false, std::string_view value = {}) {
  if (d == Decision::Unknown && from_decision_field) return {decision_name(d), ":", value};
  return {decision_name(d)};
}
inline Name decision(Decision d, bool from_decision_field = false, std::string_view value = {}) {
  if (d == Decision::Unknown && from_decision_field) return {kDecision, decision_name(d), ":", value};
  return {kDecision, decision_name(d)};
}
inline Name reason(std::string_view r) { return {kReason, r}; }
inline Name symbol_reason(std::string_view symbol, std::string_view r) {
  return {kSymbolReason, symbol, ":", r};
}
// The member of unknown:<minute> (and of unknown_decision:top:5m) for an unknown decision:
// the value of the `decision` field, or "executed=<value>" without one.
inline Name unknown_member(bool from_decision_field, std::string_view value) {
  if (from_decision_field) return {value};
  return {kExecuted, value};
}

// The overflow fields of the families.
inline Name reason_overflow() { return reason(kOverflow); }
inline Name symbol_reason_overflow() { return symbol_reason(kOverflow, kOverflow); }
inline Name unknown_decision_overflow() { return decision(Decision::Unknown, true, kOverflow); }
inline Name unknown_member_overflow() { return unknown_member(true, kOverflow); }

// One counted entry's bucket decision field and unknown member (rules.hpp's Normalized).
inline Name decision_of(const Normalized& n) {
  return decision(n.decision, n.unknown_from_decision_field, n.unknown_value);
}
inline Name unknown_member_of(const Normalized& n) {
  return unknown_member(n.unknown_from_decision_field, n.unknown_value);
}

// The totals in shm::Total order, as p35-shm shows them; the status hash names them "<name>_total".
inline constexpr std::array<std::string_view, shm::kTotalCount> kTotalNames{
    "processed", "trimmed", "overflow_reason", "overflow_symbol_reason", "overflow_unknown",
    "overflow_string", "late"};
inline Name total(shm::Total t) { return {kTotalNames[t], "_total"}; }

}  // namespace p35::fields
