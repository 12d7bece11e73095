// The entry generator of p35-loadgen: for each entry it first decides the outcome it intends
// (decision label, reason, symbol, event time, unknown member) and then renders raw stream fields
// that DESIGN §2 turns into exactly that outcome.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "catalog.hpp"
#include "garble.hpp"
#include "redis.hpp"

namespace p35::loadgen {

// What the rules must make of one entry: the generator's oracle for --expect.
struct Intent {
  std::string label;         // what follows "decision:": "EXECUTE", ..., "UNKNOWN:<v>", "UNKNOWN"
  bool unknown = false;      // label starts with UNKNOWN: `member` is counted per minute
  std::string member;        // "<v>" for UNKNOWN:<v>, "executed=<value>" for plain UNKNOWN
  std::string reason;        // cleaned, never empty ("none")
  std::string symbol;        // cleaned; empty means no symbol_reason field
  bool time_from_id = true;  // no usable timestamp: the minute comes from the entry ID
  int64_t event_ms = 0;      // the timestamp's time when !time_from_id

  void clear();
};

// One generated entry: the intent and the raw fields as name, value, name, value, ...
struct Entry {
  Intent intent;
  CommandArgs fields;
  bool hostile = false;
};

struct GeneratorOptions {
  uint64_t seed = 1;
  bool edge_cases = false;
  double edge_fraction = 0.10;  // share of hostile entries with edge_cases
  // Flood (bad input at volume): share of entries whose reason is a never-repeating exchange
  // error (0: the realistic mix), and symbols drawn uniformly from this many synthetic ones
  // (0: the realistic 40).
  double distinct_reasons = 0;
  uint32_t symbols = 0;
};

class Generator {
 public:
  explicit Generator(const GeneratorOptions& options);

  // Entry number `index` (0, 1, ...). base_ms is the entry ID's time when the caller chooses IDs,
  // else the wall clock now: timestamps are chosen relative to it. Same seed and same sequence of
  // calls give the same entries (timestamps shift with base_ms, nothing else does).
  void next(uint64_t index, int64_t base_ms, Entry& out);

 private:
  // A field the shapes may fill; emitted in a fixed order when present.
  struct RawField {
    explicit RawField(std::string_view field_name) : name(field_name) {}
    std::string_view name;
    std::string value;
    bool present = false;
    void set(std::string_view v) {
      value.assign(v);
      present = true;
    }
  };
  // Which parts of a hostile entry get an edge case (a bit set).
  enum Aspect : unsigned {
    kSymbol = 1,
    kDecision = 2,
    kReasonText = 4,
    kDetails = 8,
    kTimestamp = 16,
    kDuplicates = 32,
    kNoise = 64,
  };
  enum class Carrier { Error, Details, Reason, Nothing };

  bool has(Aspect a) const { return (aspects_ & a) != 0; }
  void reset();
  void pick_aspects();
  void plan_symbol();
  void plan_decision_shape();
  void plan_executed_shape();
  void plan_close_shape();
  void plan_hostile_decision(std::string_view canonical,
                             std::span<const std::string_view> spellings);
  void plan_hostile_executed(bool executed_true);
  void set_unknown_from_decision();
  void set_unknown_from_executed();
  void set_plain_unknown();
  void choose_reason_text(std::string_view plain);
  void plan_reason(Carrier carrier);
  Carrier pick_carrier(bool prefer_details);
  void plan_details_error_member();
  void fill_blank_or_absent(RawField& field);
  void fill_details_without_reason();
  void build_details(std::string_view decision_inside);
  int64_t in_range_event_ms();
  void plan_timestamp();
  void plan_hostile_timestamp(int sub_ms, int offset_min);
  void plan_steps_results(bool executed_true);
  void add_duplicates();
  void add_noise();
  void emit(Entry& out) const;

  Rng rng_;
  GeneratorOptions options_;
  uint64_t index_ = 0;
  int64_t base_ms_ = 0;
  unsigned aspects_ = 0;
  Intent* intent_ = nullptr;
  std::string_view plain_symbol_;
  bool flood_reason_ = false;      // this entry's reason never repeats (distinct_reasons)
  std::string flood_text_;         // that reason
  std::string synthetic_symbol_;   // this entry's symbol with `symbols` set

  RawField plan_id_{"plan_id"}, symbol_{"symbol"}, action_{"action"}, decision_{"decision"},
      executed_{"executed"}, would_execute_{"would_execute"}, steps_results_{"steps_results"},
      error_{"error"}, details_{"details"}, reason_{"reason"}, timestamp_{"timestamp"};
  CommandArgs decoys_;  // name, value pairs emitted before the real fields (last one wins)
  CommandArgs extras_;  // name, value pairs emitted after them (fields the rules ignore)

  Garbled garbled_;                // scratch for the value being built
  Garbled reason_raw_;             // the raw text that carries the intended reason
  std::string details_error_;      // JSON text of details.error; empty: no such member
  bool details_wanted_ = false;    // build a details object around details_error_
  bool details_override_ = false;  // details_ already holds a complete hostile value
  std::string scratch_;
};

}  // namespace p35::loadgen
