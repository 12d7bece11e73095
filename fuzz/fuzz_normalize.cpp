// libFuzzer target: every DESIGN §2 rule on one whole entry (p35::normalize), with the entry's
// fields, values, details JSON, timestamp and ID time all chosen by the fuzzer.
//
// Input format (FuzzedDataProvider strings: a backslash followed by any other byte ends a string,
// a doubled backslash is one): the entry-ID time in decimal, then name, value, name, value, ...
// Seeds are readable text files: "1767225600123\\\n" "decision\\\nEXECUTE\\\n" ...
#include <fuzzer/FuzzedDataProvider.h>
#include <simdjson.h>

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "reference_clean.hpp"
#include "rules.hpp"

namespace {

using p35::fuzz::check;
using Wide = __int128;

constexpr int64_t kRealisticIdMs = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
constexpr size_t kMaxFields = 64;
constexpr size_t kMaxNameBytes = 256;
constexpr size_t kMaxValueBytes = 16384;

struct Entry {
  int64_t id_ms = kRealisticIdMs;
  std::vector<std::string> storage;  // name, value, name, value, ...
  std::vector<p35::Field> fields;

  // The last value of a field name, as the rules must see it.
  std::optional<std::string_view> last(std::string_view name) const {
    std::optional<std::string_view> v;
    for (const p35::Field& f : fields)
      if (f.name == name) v = f.value;
    return v;
  }
};

Entry decode(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Entry e;
  const std::string id_text = in.ConsumeRandomLengthString(24);
  int64_t id = 0;
  const auto [end, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
  if (ec == std::errc() && end == id_text.data() + id_text.size()) e.id_ms = id;
  while (in.remaining_bytes() > 0 && e.storage.size() < 2 * kMaxFields) {
    e.storage.push_back(in.ConsumeRandomLengthString(kMaxNameBytes));
    e.storage.push_back(in.ConsumeRandomLengthString(kMaxValueBytes));
  }
  for (size_t i = 0; i < e.storage.size(); i += 2)
    e.fields.push_back({e.storage[i], e.storage[i + 1]});
  return e;
}

void check_shape(const p35::Normalized& n) {
  check(!n.reason.empty(), "reason is never empty");
  p35::fuzz::check_cleaned(n.reason, p35::kReasonMaxBytes, "reason");
  p35::fuzz::check_cleaned(n.symbol, p35::kShortMaxBytes, "symbol");
  p35::fuzz::check_cleaned(n.unknown_value, p35::kShortMaxBytes, "unknown value");
  if (n.decision != p35::Decision::Unknown) {
    check(n.unknown_value.empty() && !n.unknown_from_decision_field,
          "known decision has no unknown value");
    return;
  }
  const std::string member = n.unknown_member();
  check(member.size() <= p35::kShortMaxBytes + 9, "unknown member at most 73 bytes", member);
  if (!n.unknown_from_decision_field)
    check(member == "executed=" + n.unknown_value, "executed= member", member);
  const std::string label = n.decision_label();
  check(label == (n.unknown_from_decision_field ? "UNKNOWN:" + n.unknown_value : "UNKNOWN"),
        "label", label);
}

void check_time(const Entry& e, const p35::Normalized& n) {
  const Wide offset = Wide{n.event_ms} - e.id_ms;
  check(offset >= -Wide{p35::kMaxPastMs} && offset <= p35::kMaxFutureMs,
        "event time outside the window");
  const std::optional<std::string_view> ts = e.last("timestamp");
  const std::optional<int64_t> parsed = ts ? p35::parse_timestamp_ms(*ts) : std::nullopt;
  check(n.event_ms == e.id_ms || (parsed && n.event_ms == *parsed),
        "event time is neither ID nor timestamp");
  if (n.event_ms == e.id_ms && parsed && *parsed != e.id_ms) {
    const Wide ts_offset = Wide{*parsed} - e.id_ms;
    check(ts_offset < -Wide{p35::kMaxPastMs} || ts_offset > p35::kMaxFutureMs,
          "in-window timestamp ignored");
  }
  check(Wide{n.minute} * 60'000 <= n.event_ms && n.event_ms < (Wide{n.minute} + 1) * 60'000,
        "minute floor");
}

std::string upper_ascii(std::string s) {
  for (char& c : s)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return s;
}

// The decision, straight from the contract's wording.
void check_decision(const Entry& e, const p35::Normalized& n) {
  using p35::Decision;
  if (const auto decision = e.last("decision")) {
    const std::string v = upper_ascii(p35::fuzz::reference_clean(*decision, p35::kShortMaxBytes));
    Decision want = Decision::Unknown;
    if (v == "EXECUTE" || v == "EXECUTED" || v == "EXEC") want = Decision::Execute;
    if (v == "SKIP" || v == "SKIPPED") want = Decision::Skip;
    if (v == "BLOCKED" || v == "BLOCK") want = Decision::Blocked;
    if (v == "ERROR" || v == "FAILED" || v == "FAIL") want = Decision::Error;
    check(n.decision == want, "decision field", v);
    if (want == Decision::Unknown)
      check(n.unknown_from_decision_field && n.unknown_value == v, "UNKNOWN:<v>", v);
    return;
  }
  check(!n.unknown_from_decision_field, "no decision field, yet UNKNOWN:<v>");
  const auto executed = e.last("executed");
  const std::string v = executed ? p35::fuzz::reference_clean(*executed, p35::kShortMaxBytes) : "";
  const std::string upper = upper_ascii(v);
  Decision want = Decision::Unknown;
  if (upper == "TRUE" || upper == "1" || upper == "YES") want = Decision::Execute;
  if (upper == "FALSE" || upper == "0" || upper == "NO")
    want = n.reason == "none" ? Decision::Skip : Decision::Blocked;
  check(n.decision == want, "executed field", v);
  if (want == Decision::Unknown) check(n.unknown_value == v, "executed=<v>", v);
}

// The reason and symbol where the contract pins them without parsing details JSON.
void check_reason_and_symbol(const Entry& e, const p35::Normalized& n) {
  const auto error = e.last("error");
  const std::string from_error =
      error ? p35::fuzz::reference_clean(*error, p35::kReasonMaxBytes) : "";
  if (!from_error.empty()) check(n.reason == from_error, "error field wins", n.reason);
  if (from_error.empty() && !e.last("details")) {
    const auto reason = e.last("reason");
    const std::string from_reason =
        reason ? p35::fuzz::reference_clean(*reason, p35::kReasonMaxBytes) : "";
    check(n.reason == (from_reason.empty() ? "none" : from_reason), "reason field or none",
          n.reason);
  }
  const auto symbol = e.last("symbol");
  check(n.symbol == (symbol ? p35::fuzz::reference_clean(*symbol, p35::kShortMaxBytes) : ""),
        "symbol", n.symbol);
}

// The reason a number in details' `error` gives: its JSON text, so it reads back as the same value.
void check_number_reason(simdjson::dom::element number, const std::string& reason) {
  check(reason != "none", "details error number ignored");
  if (reason.size() >= p35::kReasonMaxBytes) return;  // a cut number text reads back as another
  const char* end = reason.data() + reason.size();
  if (number.is_int64()) {
    int64_t v = 0;
    check(std::from_chars(reason.data(), end, v).ptr == end && v == number.get_int64().value(),
          "int text", reason);
  } else if (number.is_uint64()) {
    uint64_t v = 0;
    check(std::from_chars(reason.data(), end, v).ptr == end && v == number.get_uint64().value(),
          "uint text", reason);
  } else {
    check(std::strtod(reason.c_str(), nullptr) == number.get_double().value(), "number text",
          reason);
  }
}

// The details candidate (when no `error` field gives a reason), judged with simdjson's DOM only;
// the rules also use its On Demand parser to recover a number's text as written.
void check_details_reason(const Entry& e, const p35::Normalized& n) {
  const auto error = e.last("error");
  const auto details = e.last("details");
  if (!details || (error && !p35::fuzz::reference_clean(*error, p35::kReasonMaxBytes).empty()))
    return;
  static simdjson::dom::parser parser;
  simdjson::dom::object object;
  if (parser.parse(details->data(), details->size()).get_object().get(object)) return;
  std::optional<simdjson::dom::element> member;
  for (const simdjson::dom::key_value_pair kv : object)
    if (kv.key == "error") member = kv.value;
  std::string want;
  if (member && member->is_string())
    want = p35::fuzz::reference_clean(member->get_string().value(), p35::kReasonMaxBytes);
  if (member && member->is_bool()) want = member->get_bool().value() ? "true" : "false";
  if (member && member->is_number()) return check_number_reason(*member, n.reason);
  if (!want.empty()) return check(n.reason == want, "details error string or boolean", n.reason);
  const auto reason = e.last("reason");
  const std::string from_reason =
      reason ? p35::fuzz::reference_clean(*reason, p35::kReasonMaxBytes) : "";
  check(n.reason == (from_reason.empty() ? "none" : from_reason),
        "details gave nothing: reason or none", n.reason);
}

bool same(const p35::Normalized& a, const p35::Normalized& b) {
  return a.decision == b.decision &&
         a.unknown_from_decision_field == b.unknown_from_decision_field &&
         a.unknown_value == b.unknown_value && a.reason == b.reason && a.symbol == b.symbol &&
         a.event_ms == b.event_ms && a.minute == b.minute;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Entry e = decode(data, size);
  p35::Normalized fresh;
  p35::normalize(e.fields, e.id_ms, fresh);
  check_shape(fresh);
  check_time(e, fresh);
  check_decision(e, fresh);
  check_reason_and_symbol(e, fresh);
  check_details_reason(e, fresh);
  // Same input, same output, also into a buffer that still holds the previous input's result
  // (ingest reuses one Normalized for a whole batch).
  static p35::Normalized reused;
  p35::normalize(e.fields, e.id_ms, reused);
  check(same(fresh, reused), "normalize is not deterministic / leaks state between entries");
  return 0;
}
