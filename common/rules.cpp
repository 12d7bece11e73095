// DESIGN §2 normalisation: turns the raw fields of one stream entry into the decision, reason,
// symbol and minute that get counted, reusing the caller's buffers so steady state does not allocate.
#include <simdjson.h>

#include <array>
#include <utility>

#include "rules.hpp"

#include "fields.hpp"

namespace p35 {
namespace {

// The fields the rules read, each the last occurrence in the entry (DESIGN §2: last one wins).
struct EntryFields {
  std::optional<std::string_view> decision, executed, error, details, reason, symbol, timestamp;
};

EntryFields pick_fields(std::span<const Field> fields) {
  EntryFields f;
  for (const Field& field : fields) {
    const std::string_view n = field.name;
    if (n == "decision") f.decision = field.value;
    else if (n == "executed") f.executed = field.value;
    else if (n == "error") f.error = field.value;
    else if (n == "details") f.details = field.value;
    else if (n == "reason") f.reason = field.value;
    else if (n == "symbol") f.symbol = field.value;
    else if (n == "timestamp") f.timestamp = field.value;
  }
  return f;
}

// Per-thread simdjson state. The DOM parser validates the whole document (the first version's
// json.loads rejected any flaw, so must we) and enforces simdjson's depth limit, which turns
// nesting bombs into an error; it keeps its buffers between entries. The On Demand parser is
// only used to recover a number's text as written, which the DOM does not keep.
struct DetailsParser {
  simdjson::dom::parser dom;
  simdjson::ondemand::parser ondemand;
  std::string padded;  // the details bytes followed by SIMDJSON_PADDING zeros
};

DetailsParser& details_parser() {
  thread_local DetailsParser parser;
  return parser;
}

std::string_view trim_json_whitespace(std::string_view s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

// The raw token of the last top-level `error` member of the already validated document in
// `p.padded`, so that `1.50` stays `1.50` and `1e400` is not rounded to anything.
std::string_view raw_error_token(DetailsParser& p, size_t json_bytes) {
  simdjson::ondemand::document doc;
  simdjson::ondemand::object object;
  if (p.ondemand.iterate(p.padded.data(), json_bytes, p.padded.size()).get(doc) ||
      doc.get_object().get(object)) {
    return {};
  }
  std::string_view token;
  for (auto member : object) {
    simdjson::ondemand::field field;
    std::string_view key;
    if (std::move(member).get(field) || field.unescaped_key().get(key)) return {};
    if (key == "error") token = field.value().raw_json_token();
  }
  return trim_json_whitespace(token);
}

// The last top-level `error` member of a parsed details object, if it has one.
std::optional<simdjson::dom::element> last_error_member(simdjson::dom::element root) {
  simdjson::dom::object object;
  if (root.get_object().get(object)) return std::nullopt;
  std::optional<simdjson::dom::element> error;
  for (const simdjson::dom::key_value_pair member : object) {
    if (member.key == "error") error = member.value;
  }
  return error;
}

// details' `error` as a reason candidate: a string unescaped, a number or boolean as its JSON
// text; empty for anything else. The view lives until this thread parses details again.
std::string_view details_error(std::string_view details) {
  const size_t start = details.find_first_not_of(" \t\r\n");
  if (start == std::string_view::npos || details[start] != '{') return {};  // cannot be an object
  DetailsParser& p = details_parser();
  p.padded.assign(details);
  p.padded.append(simdjson::SIMDJSON_PADDING, '\0');
  simdjson::dom::element root;
  if (p.dom.parse(p.padded.data(), details.size(), false).get(root)) return {};
  const std::optional<simdjson::dom::element> error = last_error_member(root);
  if (!error) return {};
  switch (error->type()) {
    case simdjson::dom::element_type::STRING: return error->get_string().value_unsafe();
    case simdjson::dom::element_type::BOOL: return error->get_bool().value_unsafe() ? "true" : "false";
    case simdjson::dom::element_type::INT64:
    case simdjson::dom::element_type::UINT64:
    case simdjson::dom::element_type::DOUBLE: return raw_error_token(p, details.size());
    default: return {};  // null, object, array
  }
}

// Candidates in order: field `error`, details' `error`, field `reason`; the first non-empty one
// after cleaning wins. details is parsed only when `error` gave nothing.
void choose_reason(const EntryFields& f, std::string& reason) {
  reason.clear();
  if (f.error) clean_value_into(*f.error, kReasonMaxBytes, reason);
  if (reason.empty() && f.details) clean_value_into(details_error(*f.details), kReasonMaxBytes, reason);
  if (reason.empty() && f.reason) clean_value_into(*f.reason, kReasonMaxBytes, reason);
  if (reason.empty()) reason.assign("none");
}

void upper_ascii(std::string& s) {
  for (char& c : s) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
}

bool equals_ignoring_ascii_case(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    const char c = (a[i] >= 'A' && a[i] <= 'Z') ? static_cast<char>(a[i] - 'A' + 'a') : a[i];
    if (c != lower[i]) return false;
  }
  return true;
}

struct Synonym {
  std::string_view name;
  Decision decision;
};
constexpr std::array<Synonym, 10> kSynonyms{{
    {"EXECUTE", Decision::Execute}, {"EXECUTED", Decision::Execute}, {"EXEC", Decision::Execute},
    {"SKIP", Decision::Skip},       {"SKIPPED", Decision::Skip},     {"BLOCKED", Decision::Blocked},
    {"BLOCK", Decision::Blocked},   {"ERROR", Decision::Error},      {"FAILED", Decision::Error},
    {"FAIL", Decision::Error},
}};

std::optional<Decision> decision_synonym(std::string_view upper) {
  for (const Synonym& s : kSynonyms) {
    if (s.name == upper) return s.decision;
  }
  return std::nullopt;
}

// `executed` as a decision; nullopt when it is none of true/1/yes/false/0/no (any case).
std::optional<Decision> executed_decision(std::string_view cleaned, std::string_view reason) {
  for (std::string_view yes : {"true", "1", "yes"}) {
    if (equals_ignoring_ascii_case(cleaned, yes)) return Decision::Execute;
  }
  for (std::string_view no : {"false", "0", "no"}) {
    if (equals_ignoring_ascii_case(cleaned, no)) return reason == "none" ? Decision::Skip : Decision::Blocked;
  }
  return std::nullopt;
}

// Needs the final reason: a plan not executed is a SKIP without one and BLOCKED with one.
void choose_decision(const EntryFields& f, const std::string& reason, Normalized& out) {
  out.decision = Decision::Unknown;
  out.unknown_from_decision_field = false;
  out.unknown_value.clear();  // also the scratch buffer for the cleaned value
  std::optional<Decision> known;
  if (f.decision) {
    clean_value_into(*f.decision, kShortMaxBytes, out.unknown_value);
    upper_ascii(out.unknown_value);
    known = decision_synonym(out.unknown_value);
    out.unknown_from_decision_field = !known;
  } else if (f.executed) {
    clean_value_into(*f.executed, kShortMaxBytes, out.unknown_value);
    known = executed_decision(out.unknown_value, reason);
  }
  if (known) {
    out.decision = *known;
    out.unknown_value.clear();
  }
}

}  // namespace

std::string_view decision_name(Decision d) {
  const auto i = static_cast<size_t>(d);
  return kDecisionNames[i < kDecisionNames.size() ? i : static_cast<size_t>(Decision::Unknown)];
}

std::string Normalized::decision_label() const {
  return fields::decision_label(decision, unknown_from_decision_field, unknown_value).str();
}

std::string Normalized::unknown_member() const {
  return fields::unknown_member(unknown_from_decision_field, unknown_value).str();
}

void normalize(std::span<const Field> fields, int64_t id_ms, Normalized& out) {
  const EntryFields f = pick_fields(fields);
  choose_reason(f, out.reason);
  choose_decision(f, out.reason, out);
  out.symbol.clear();
  if (f.symbol) clean_value_into(*f.symbol, kShortMaxBytes, out.symbol);
  const std::optional<int64_t> timestamp_ms =
      f.timestamp ? parse_timestamp_ms(*f.timestamp) : std::nullopt;
  out.event_ms = choose_event_ms(timestamp_ms, id_ms);
  out.minute = minute_of_ms(out.event_ms);
}

}  // namespace p35
