// Entry generation: choose the intended outcome, then render fields in one of the three producer
// shapes (top-level decision; executed + details JSON; action-only close results), with hostile
// variants for --edge-cases.
#include "generator.hpp"

#include <fmt/format.h>

#include <array>
#include <iterator>
#include <stdexcept>

#include "hostile.hpp"

namespace p35::loadgen {

namespace {

void upper_ascii(std::string& s) {
  for (char& c : s) c = (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) {
      return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
    };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Whether the rules would read `executed` as a boolean: only used to check our garbage tables.
bool is_boolean_word(std::string_view v) {
  for (std::string_view w : {"true", "1", "yes", "false", "0", "no"}) {
    if (equals_ignoring_case(v, w)) return true;
  }
  return false;
}

}  // namespace

void Intent::clear() {
  label.clear();
  unknown = false;
  member.clear();
  reason.clear();
  symbol.clear();
  time_from_id = true;
  event_ms = 0;
}

Generator::Generator(const GeneratorOptions& options) : rng_(options.seed), options_(options) {}

void Generator::next(uint64_t index, int64_t base_ms, Entry& out) {
  index_ = index;
  base_ms_ = base_ms;
  intent_ = &out.intent;
  reset();
  out.intent.clear();
  out.hostile = options_.edge_cases && chance(rng_, options_.edge_fraction);
  if (out.hostile) pick_aspects();
  // Drawn only when asked for, so that runs without a flood keep their entries.
  flood_reason_ = options_.distinct_reasons > 0 && chance(rng_, options_.distinct_reasons);
  plan_id_.value.clear();
  fmt::format_to(std::back_inserter(plan_id_.value), "plan-{:016x}", rng_());
  plan_id_.present = true;
  plan_symbol();
  const double shape = unit_interval(rng_);
  if (shape < 0.55) {
    plan_decision_shape();
  } else if (shape < 0.90) {
    plan_executed_shape();
  } else {
    plan_close_shape();
  }
  plan_timestamp();
  if (has(kDuplicates)) add_duplicates();
  if (has(kNoise)) add_noise();
  emit(out);
}

void Generator::reset() {
  for (RawField* f : {&plan_id_, &symbol_, &action_, &decision_, &executed_, &would_execute_,
                      &steps_results_, &error_, &details_, &reason_, &timestamp_}) {
    f->value.clear();
    f->present = false;
  }
  decoys_.clear();
  extras_.clear();
  details_error_.clear();
  details_wanted_ = false;
  details_override_ = false;
  aspects_ = 0;
}

void Generator::pick_aspects() {
  while (aspects_ == 0) {
    for (unsigned bit = kSymbol; bit <= kNoise; bit <<= 1) {
      if (chance(rng_, 0.3)) aspects_ |= bit;
    }
  }
}

void Generator::plan_symbol() {
  if (options_.symbols > 0) {
    synthetic_symbol_.clear();
    fmt::format_to(std::back_inserter(synthetic_symbol_), "F{:06}USDT",
                   below(rng_, options_.symbols));
    plain_symbol_ = synthetic_symbol_;
  } else {
    plain_symbol_ = catalog::symbols().pick(rng_);
  }
  if (!has(kSymbol)) {
    symbol_.set(plain_symbol_);
    intent_->symbol.assign(plain_symbol_);
    return;
  }
  switch (below(rng_, 6)) {
    case 0:
      return;  // no symbol field: no symbol breakdown
    case 1:
      extras_.add("SYMBOL").add(plain_symbol_);
      return;  // field names are case-sensitive
    default:
      garbled_.clear();
      hostile::symbol_variant(rng_, plain_symbol_, garbled_);
      symbol_.set(garbled_.raw());
      garbled_.cleaned(kShortLimitBytes, intent_->symbol);
      return;
  }
}

// Shape (a): a top-level `decision` with `error` or `reason`.
void Generator::plan_decision_shape() {
  const double u = unit_interval(rng_);
  std::string_view canonical = "ERROR";
  std::span<const std::string_view> spellings = catalog::error_spellings();
  std::string_view plain;
  if (u < 0.30) {
    canonical = "EXECUTE";
    spellings = catalog::execute_spellings();
    plain = catalog::execute_reasons().pick(rng_);
  } else if (u < 0.60) {
    canonical = "SKIP";
    spellings = catalog::skip_spellings();
    plain = chance(rng_, 0.1) ? "none" : catalog::skip_reasons().pick(rng_);
  } else if (u < 0.88) {
    canonical = "BLOCKED";
    spellings = catalog::blocked_spellings();
    plain = catalog::blocked_reasons().pick(rng_);
  } else if (chance(rng_, 0.7)) {
    catalog::free_text_error(rng_, index_, scratch_);
    plain = scratch_;
  } else {
    plain = catalog::error_codes().pick(rng_);
  }
  choose_reason_text(plain);
  if (has(kDecision)) {
    plan_hostile_decision(canonical, spellings);
  } else {
    decision_.set(chance(rng_, 0.75) ? spellings[0] : pick(rng_, spellings));
    intent_->label.assign(canonical);
  }
  plan_reason(pick_carrier(false));
  build_details(canonical);
}

void Generator::plan_hostile_decision(std::string_view canonical,
                                      std::span<const std::string_view> spellings) {
  garbled_.clear();
  switch (below(rng_, 9)) {
    case 0:
    case 1:
      hostile::padded(rng_, pick(rng_, spellings), garbled_);
      break;
    case 2:
      hostile::cut_in_spaces(rng_, pick(rng_, spellings), kShortLimitBytes, garbled_);
      break;
    case 3:  // "Decision" is not `decision`; with no `executed` either, the rules say UNKNOWN
      extras_.add("Decision").add(pick(rng_, spellings));
      set_plain_unknown();
      return;
    default:
      hostile::unknown_decision(rng_, garbled_);
      decision_.set(garbled_.raw());
      set_unknown_from_decision();
      return;
  }
  decision_.set(garbled_.raw());
  intent_->label.assign(canonical);
}

void Generator::set_unknown_from_decision() {
  garbled_.cleaned(kShortLimitBytes, intent_->member);
  upper_ascii(intent_->member);
  if (!catalog::canonical_decision(intent_->member).empty()) {
    throw std::logic_error("p35-loadgen: an 'unknown' decision is a synonym: " + intent_->member);
  }
  intent_->label.assign("UNKNOWN:").append(intent_->member);
  intent_->unknown = true;
}

// Shape (b): `executed`, `would_execute`, `steps_results` and a `details` JSON object.
void Generator::plan_executed_shape() {
  const bool executed_true = chance(rng_, 0.4);
  std::string_view plain;
  if (executed_true) {
    plain = catalog::execute_reasons().pick(rng_);
  } else if (chance(rng_, 0.35)) {
    plain = "none";
  } else if (chance(rng_, 0.08)) {
    catalog::free_text_error(rng_, index_, scratch_);
    plain = scratch_;
  } else {
    plain = (chance(rng_, 0.5) ? catalog::skip_reasons() : catalog::blocked_reasons()).pick(rng_);
  }
  choose_reason_text(plain);
  details_wanted_ = true;
  plan_reason(pick_carrier(true));
  // SKIP or BLOCKED follows from the reason the rules will see, which is now decided.
  const std::string_view outcome = executed_true               ? "EXECUTE"
                                   : intent_->reason == "none" ? "SKIP"
                                                               : "BLOCKED";
  if (has(kDecision)) {
    plan_hostile_executed(executed_true);
  } else {
    const auto spellings =
        executed_true ? catalog::executed_true_spellings() : catalog::executed_false_spellings();
    executed_.set(chance(rng_, 0.85) ? spellings[0] : pick(rng_, spellings));
  }
  if (intent_->label.empty()) intent_->label.assign(outcome);
  const bool agrees = chance(rng_, 0.9);
  would_execute_.set(executed_true == agrees ? "True" : "False");
  plan_steps_results(executed_true);
  build_details(outcome);
}

void Generator::plan_hostile_executed(bool executed_true) {
  const auto spellings =
      executed_true ? catalog::executed_true_spellings() : catalog::executed_false_spellings();
  garbled_.clear();
  switch (below(rng_, 8)) {
    case 0:
    case 1:
      hostile::padded(rng_, pick(rng_, spellings), garbled_);
      break;
    case 2:
      hostile::cut_in_spaces(rng_, pick(rng_, spellings), kShortLimitBytes, garbled_);
      break;
    case 3:  // no `executed` at all
      set_plain_unknown();
      return;
    case 4:  // "Executed" is not `executed`
      extras_.add("Executed").add(spellings[0]);
      set_plain_unknown();
      return;
    default:
      hostile::executed_garbage(rng_, garbled_);
      executed_.set(garbled_.raw());
      set_unknown_from_executed();
      return;
  }
  executed_.set(garbled_.raw());  // the label follows from executed_true, set by the caller
}

// No `decision` and no usable `executed` field at all.
void Generator::set_plain_unknown() {
  intent_->label.assign("UNKNOWN");
  intent_->unknown = true;
  intent_->member.assign("executed=");
}

void Generator::set_unknown_from_executed() {
  garbled_.cleaned(kShortLimitBytes, scratch_);
  if (is_boolean_word(scratch_)) {
    throw std::logic_error("p35-loadgen: an 'unknown' executed value is a boolean: " + scratch_);
  }
  intent_->label.assign("UNKNOWN");
  intent_->unknown = true;
  intent_->member.assign("executed=").append(scratch_);
}

// Shape (c): a close result with `action` only; the first version counted it as plain UNKNOWN.
void Generator::plan_close_shape() {
  action_.set("close");
  set_plain_unknown();
  if (!flood_reason_) {
    intent_->reason.assign("none");
    return;
  }
  // A flood reason needs a carrier; a close result has no details object to put it in.
  choose_reason_text("none");
  plan_reason(chance(rng_, 0.5) ? Carrier::Error : Carrier::Reason);
}

void Generator::plan_steps_results(bool executed_true) {
  std::string& s = steps_results_.value;
  s.clear();
  if (executed_true) {
    fmt::format_to(std::back_inserter(s),
                   R"([{{"step":"risk_check","ok":true}},{{"step":"place_order","ok":true,)"
                   R"("order_id":{}}}])",
                   7700000000ULL + index_);
  } else {
    s.append(R"([{"step":"risk_check","ok":false,"reason":)");
    hostile::append_json_string(intent_->reason, false, s);
    s.append("}]");
  }
  steps_results_.present = true;
}

void Generator::choose_reason_text(std::string_view plain) {
  if (flood_reason_) {  // whatever the shape chose, this entry's reason never repeats
    catalog::free_text_error(rng_, index_, flood_text_);
    plain = flood_text_;
  }
  reason_raw_.clear();
  if (!has(kReasonText)) {
    reason_raw_.text(plain);
  } else if (plain == "none") {
    hostile::padded(rng_, plain, reason_raw_);
  } else {
    hostile::reason_variant(rng_, plain, reason_raw_);
  }
  reason_raw_.cleaned(kReasonLimitBytes, intent_->reason);
  if (intent_->reason.empty()) throw std::logic_error("p35-loadgen: a reason cleaned to nothing");
}

Generator::Carrier Generator::pick_carrier(bool prefer_details) {
  if (intent_->reason == "none") {
    if (chance(rng_, 0.6)) return Carrier::Nothing;
    return chance(rng_, 0.5) ? Carrier::Error : Carrier::Reason;
  }
  // Ill-formed UTF-8 makes the whole details document invalid JSON.
  const bool details_ok = !reason_raw_.has_invalid_utf8();
  const double u = unit_interval(rng_);
  if (prefer_details) {
    if (u < 0.7 && details_ok) return Carrier::Details;
    return u < 0.85 ? Carrier::Error : Carrier::Reason;
  }
  if (u < 0.45) return Carrier::Error;
  if (u < 0.9 || !details_ok) return Carrier::Reason;
  return Carrier::Details;
}

// The reason candidates in order: `error`, details.error, `reason`; the first non-empty wins.
void Generator::plan_reason(Carrier carrier) {
  switch (carrier) {
    case Carrier::Error:
      error_.set(reason_raw_.raw());
      // What follows the winner is ignored, whatever it says.
      details_error_.assign(R"("order_failed_in_details")");
      if (chance(rng_, 0.2)) reason_.set("ignored_reason_field");
      return;
    case Carrier::Details:
      fill_blank_or_absent(error_);
      plan_details_error_member();
      if (chance(rng_, 0.3)) reason_.set("ignored_reason_field");
      return;
    case Carrier::Reason:
      fill_blank_or_absent(error_);
      fill_details_without_reason();
      reason_.set(reason_raw_.raw());
      return;
    case Carrier::Nothing:
      fill_blank_or_absent(error_);
      fill_details_without_reason();
      fill_blank_or_absent(reason_);
      return;
  }
}

// A candidate that must not win: absent, or on hostile entries sometimes present but blank.
void Generator::fill_blank_or_absent(RawField& field) {
  if (aspects_ == 0 || !chance(rng_, 0.4)) return;
  garbled_.clear();
  hostile::blank(rng_, garbled_);
  field.set(garbled_.raw());
}

void Generator::fill_details_without_reason() {
  if (has(kDetails)) {
    hostile::non_yielding_details(rng_, details_.value);
    details_.present = true;
    details_override_ = true;
    return;
  }
  // A normal producer's details: `"error": null` or no error member at all.
  if (chance(rng_, 0.5)) details_error_.assign("null");
}

void Generator::plan_details_error_member() {
  details_wanted_ = true;
  details_error_.clear();
  if (!has(kDetails)) {
    hostile::append_json_string(reason_raw_.raw(), false, details_error_);
    return;
  }
  static constexpr std::array<std::string_view, 7> kScalars{"-2010", "429",  "0",    "-1",
                                                            "1.5",   "true", "false"};
  switch (below(rng_, 4)) {
    case 0:  // a number or boolean counts as its JSON text
      details_error_.assign(pick<std::string_view>(rng_, kScalars));
      intent_->reason.assign(details_error_);
      return;
    case 1:
      hostile::append_json_string(reason_raw_.raw(), true, details_error_);
      return;
    case 2:  // JSON whitespace around the member's value
      details_error_.assign(" \n\t ");
      hostile::append_json_string(reason_raw_.raw(), false, details_error_);
      details_error_.append("\r\n ");
      return;
    default:
      hostile::append_json_string(reason_raw_.raw(), false, details_error_);
      return;
  }
}

void Generator::build_details(std::string_view decision_inside) {
  if (details_override_ || !details_wanted_) return;
  std::string& s = details_.value;
  s.clear();
  const bool error_first = chance(rng_, 0.5);
  const auto add_error = [&] {
    if (!details_error_.empty()) s.append(R"("error":)").append(details_error_).append(",");
  };
  s.append("{");
  if (error_first) add_error();
  fmt::format_to(std::back_inserter(s), R"("decision":"{}","symbol":"{}","plan_id":"{}",)",
                 decision_inside, plain_symbol_, plan_id_.value);
  if (has(kDetails)) {  // legal nesting, deeper than anything real, next to the member we want
    s.append(R"("trace":)").append(40, '[').append(40, ']').append(",");
  }
  if (!error_first) add_error();
  s.append(R"("qty":0.01})");
  details_.present = true;
}

}  // namespace p35::loadgen
