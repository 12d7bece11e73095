// Table-driven tests of the DESIGN §2 normalisation rules: cleaning, decision, reason, symbol,
// event time and minute keys.
#include <catch2/catch.hpp>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "rules.hpp"

using p35::Decision;
using p35::Field;
using p35::Normalized;

namespace {

constexpr int64_t kIdMs = 1795615200000;  // 2026-11-25T14:00:00Z, the entry-ID time in most cases
const std::string kFffd = "\xEF\xBF\xBD";

Normalized run(const std::vector<Field>& fields, int64_t id_ms = kIdMs) {
  Normalized out;
  p35::normalize(fields, id_ms, out);
  return out;
}

// A byte string from numbers, for invalid UTF-8 and embedded NULs.
std::string bytes(std::initializer_list<int> values) {
  std::string s;
  for (int v : values) s.push_back(static_cast<char>(v));
  return s;
}

std::string repeat(const std::string& unit, size_t times) {
  std::string s;
  for (size_t i = 0; i < times; ++i) s += unit;
  return s;
}

// A strict UTF-8 validator written independently of clean.cpp (code point arithmetic).
bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + len > s.size()) return false;
    uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
    for (size_t k = 1; k < len; ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      if ((c & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3Fu);
    }
    const uint32_t min_cp = len == 1 ? 0 : len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

bool has_ascii_control(const std::string& s) {
  for (char c : s) {
    const auto b = static_cast<unsigned char>(c);
    if (b < 0x20 || b == 0x7F) return true;
  }
  return false;
}

struct CleanCase {
  std::string raw;
  std::string expected;
};

struct DecisionCase {
  std::string value;
  Decision decision;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// decision

TEST_CASE("decision synonyms and their case variants map to the four decisions", "[rules]") {
  const std::vector<DecisionCase> cases = {
      {"EXECUTE", Decision::Execute},  {"execute", Decision::Execute}, {"Executed", Decision::Execute},
      {"EXECUTED", Decision::Execute}, {"exec", Decision::Execute},    {"ExEc", Decision::Execute},
      {"SKIP", Decision::Skip},        {"skip", Decision::Skip},       {"Skipped", Decision::Skip},
      {"SKIPPED", Decision::Skip},     {"BLOCKED", Decision::Blocked}, {"blocked", Decision::Blocked},
      {"Block", Decision::Blocked},    {"BLOCK", Decision::Blocked},   {"ERROR", Decision::Error},
      {"error", Decision::Error},      {"Failed", Decision::Error},    {"FAILED", Decision::Error},
      {"fail", Decision::Error},       {"FAIL", Decision::Error},      {" skip ", Decision::Skip},
      {"\texecuted\n", Decision::Execute},
  };
  for (const DecisionCase& c : cases) {
    INFO("decision=\"" << c.value << "\"");
    const Normalized n = run({{"decision", c.value}});
    CHECK(n.decision == c.decision);
    CHECK(n.decision_label() == p35::decision_name(c.decision));
    CHECK(n.unknown_value.empty());
  }
}

TEST_CASE("decision field with any other value is UNKNOWN:<cleaned upper-cased value>", "[rules]") {
  const std::vector<CleanCase> cases = {
      {"maybe", "MAYBE"},
      {" partial fill ", "PARTIAL FILL"},
      {"executing", "EXECUTING"},
      {"EXEC UTE", "EXEC UTE"},
      {"ex\tec", "EX EC"},
      {"exécuté", "EXéCUTé"},  // ASCII letters only are upper-cased
      {"\xFF", kFffd},
      {std::string(100, 'x'), std::string(64, 'X')},
  };
  for (const CleanCase& c : cases) {
    INFO("decision=\"" << c.raw << "\"");
    const Normalized n = run({{"decision", c.raw}, {"executed", "true"}});
    CHECK(n.decision == Decision::Unknown);
    CHECK(n.unknown_from_decision_field);
    CHECK(n.unknown_value == c.expected);
    CHECK(n.decision_label() == "UNKNOWN:" + c.expected);
    CHECK(n.unknown_member() == c.expected);
  }
}

TEST_CASE("empty decision field is UNKNOWN: and beats executed", "[rules]") {
  for (const std::string& value : std::vector<std::string>{"", "   ", "\t\r\n", std::string("\0", 1)}) {
    INFO("decision=\"" << value << "\"");
    const Normalized n = run({{"executed", "True"}, {"decision", value}});
    CHECK(n.decision == Decision::Unknown);
    CHECK(n.unknown_from_decision_field);
    CHECK(n.unknown_value.empty());
    CHECK(n.decision_label() == "UNKNOWN:");
    CHECK(n.unknown_member().empty());
  }
}

TEST_CASE("missing decision and executed is plain UNKNOWN with member executed=", "[rules]") {
  const Normalized n = run({{"symbol", "BTCUSDT"}, {"reason", "whatever"}});
  CHECK(n.decision == Decision::Unknown);
  CHECK_FALSE(n.unknown_from_decision_field);
  CHECK(n.unknown_value.empty());
  CHECK(n.decision_label() == "UNKNOWN");
  CHECK(n.unknown_member() == "executed=");
}

TEST_CASE("executed forms combined with reason none or a reason", "[rules]") {
  struct Case {
    std::string executed;
    Decision without_reason;
    Decision with_reason;
  };
  const std::vector<Case> cases = {
      {"True", Decision::Execute, Decision::Execute},   {"true", Decision::Execute, Decision::Execute},
      {"TRUE", Decision::Execute, Decision::Execute},   {"1", Decision::Execute, Decision::Execute},
      {"yes", Decision::Execute, Decision::Execute},    {"YES", Decision::Execute, Decision::Execute},
      {" Yes\n", Decision::Execute, Decision::Execute}, {"False", Decision::Skip, Decision::Blocked},
      {"false", Decision::Skip, Decision::Blocked},     {"FALSE", Decision::Skip, Decision::Blocked},
      {"0", Decision::Skip, Decision::Blocked},         {"no", Decision::Skip, Decision::Blocked},
      {"NO", Decision::Skip, Decision::Blocked},        {"\tNo ", Decision::Skip, Decision::Blocked},
  };
  for (const Case& c : cases) {
    INFO("executed=\"" << c.executed << "\"");
    const Normalized bare = run({{"executed", c.executed}});
    CHECK(bare.reason == "none");
    CHECK(bare.decision == c.without_reason);
    const Normalized reasoned = run({{"executed", c.executed}, {"reason", "risk limit"}});
    CHECK(reasoned.reason == "risk limit");
    CHECK(reasoned.decision == c.with_reason);
    const Normalized via_details = run({{"executed", c.executed}, {"details", R"({"error":"halted"})"}});
    CHECK(via_details.decision == c.with_reason);
  }
}

TEST_CASE("executed false with a reason that is literally none counts as SKIP", "[rules]") {
  CHECK(run({{"executed", "False"}, {"reason", "none"}}).decision == Decision::Skip);
  CHECK(run({{"executed", "False"}, {"reason", " none "}}).decision == Decision::Skip);
  CHECK(run({{"executed", "False"}, {"reason", "None"}}).decision == Decision::Blocked);
}

TEST_CASE("unrecognised, empty or missing executed is UNKNOWN with member executed=<value>", "[rules]") {
  const std::vector<CleanCase> cases = {
      {"garbage", "garbage"}, {"", ""},     {"   ", ""},         {"2", "2"},
      {"truee", "truee"},     {"y", "y"},   {" Maybe\t", "Maybe"}, {"1.0", "1.0"},
      {"\xC0", kFffd},        {std::string(80, 'q'), std::string(64, 'q')},
  };
  for (const bool with_reason : {false, true}) {
    for (const CleanCase& c : cases) {
      INFO("executed=\"" << c.raw << "\" with_reason=" << with_reason);
      std::vector<Field> fields = {{"executed", c.raw}};
      if (with_reason) fields.push_back({"reason", "r"});
      const Normalized n = run(fields);
      CHECK(n.decision == Decision::Unknown);
      CHECK_FALSE(n.unknown_from_decision_field);
      CHECK(n.unknown_value == c.expected);
      CHECK(n.decision_label() == "UNKNOWN");
      CHECK(n.unknown_member() == "executed=" + c.expected);
    }
  }
}

TEST_CASE("decision_name names every decision", "[rules]") {
  CHECK(std::string(p35::decision_name(Decision::Execute)) == "EXECUTE");
  CHECK(std::string(p35::decision_name(Decision::Skip)) == "SKIP");
  CHECK(std::string(p35::decision_name(Decision::Blocked)) == "BLOCKED");
  CHECK(std::string(p35::decision_name(Decision::Error)) == "ERROR");
  CHECK(std::string(p35::decision_name(Decision::Unknown)) == "UNKNOWN");
}

// ---------------------------------------------------------------------------------------------
// reason and details

TEST_CASE("details error strings are unescaped, then cleaned", "[rules]") {
  const std::vector<CleanCase> cases = {
      {R"({"error":"caf\u00e9"})", "café"},
      {R"({"error":"line1\nline2"})", "line1 line2"},
      {R"({"error":"  tab\there\r\n"})", "tab here"},
      {R"({"error":"q\"uote \\ slash\/"})", R"(q"uote \ slash/)"},
      {R"({"error":"nul\u0000in\u007fside"})", "nul in side"},
      {R"({"error":"\ud83d\ude00 smile"})", "\xF0\x9F\x98\x80 smile"},
      {R"({"error":"plain"})", "plain"},
      {R"(  { "other" : [1, {"error": 2}], "error" : "spaced" }  )", "spaced"},
      {R"({"\u0065rror":"escaped key"})", "escaped key"},
      {R"({"msg":"\"error\":1","error":"after"})", "after"},
      {"{\"error\":\"" + std::string(300, 'e') + "\"}", std::string(200, 'e')},
  };
  for (const CleanCase& c : cases) {
    INFO("details=" << c.raw);
    CHECK(run({{"details", c.raw}, {"reason", "fallback"}}).reason == c.expected);
  }
}

TEST_CASE("details error numbers and booleans keep their JSON text as written", "[rules]") {
  const std::vector<CleanCase> cases = {
      {R"({"error":1.50})", "1.50"},
      {R"({"error":-3})", "-3"},
      {R"({"error":0})", "0"},
      {R"({"error":1e5})", "1e5"},
      {R"({"error":-2.5E-3})", "-2.5E-3"},
      {R"({"error":1.0E+2})", "1.0E+2"},
      {R"({"error":18446744073709551615})", "18446744073709551615"},
      {R"({"error":  42   , "x": 1})", "42"},
      {"{\"error\":\n7.25\n}", "7.25"},
      {R"({"error":true})", "true"},
      {R"({"error":false})", "false"},
      {R"({"error" : true , "b":null})", "true"},
  };
  for (const CleanCase& c : cases) {
    INFO("details=" << c.raw);
    CHECK(run({{"details", c.raw}, {"reason", "fallback"}}).reason == c.expected);
  }
}

TEST_CASE("details without a usable top-level error give no candidate", "[rules]") {
  const std::vector<std::string> cases = {
      R"({"error":null})", R"({"error":{}})", R"({"error":{"error":"inner"}})",
      R"({"error":[]})", R"({"error":["a"]})", R"({"error":""})", R"({"error":"   "})",
      R"({"error":"\n\t"})",
      // not JSON, or not quite
      "", "   ", "not json", R"({"error":"x")", R"({"error":"x",})", R"({'error':'x'})",
      R"({"error":"x"} trailing)", R"({"error":01})", R"({"error":1.})", R"({"error":tru})",
      R"({"error":NaN})", R"({"error":"bad \x escape"})", "{\"error\":\"\xFF\"}",
      "{\"error\":\"raw\x01control\"}",
      // simdjson 3.0.1 rejects numbers it cannot hold (integers beyond uint64, doubles beyond
      // ~1.8e308), anywhere in the document, and lone surrogates: unparsable for us too.
      R"({"error":12345678901234567890123})", R"({"error":1e400})",
      R"({"error":"x","order_id":123456789012345678901234})", R"({"error":"\ud800"})",
      // not an object
      R"("error")", R"(["error"])", "42", "null", "true",
      // no top-level error member
      "{}", R"({"message":"x"})", R"({"data":{"error":"deep"}})", R"({"Error":"case"})",
  };
  for (const std::string& details : cases) {
    INFO("details=" << details);
    CHECK(run({{"details", details}, {"reason", "fallback"}}).reason == "fallback");
    CHECK(run({{"details", details}}).reason == "none");
  }
}

TEST_CASE("details nesting bombs are unparsable, not a crash", "[rules]") {
  constexpr size_t kDepth = 100000;
  const std::vector<std::string> bombs = {
      repeat("[", kDepth) + repeat("]", kDepth),
      repeat("[", kDepth),
      "{\"error\":" + repeat("[", kDepth) + repeat("]", kDepth) + "}",
      repeat("{\"a\":", kDepth) + "1" + repeat("}", kDepth),
      "{\"x\":" + repeat("{\"a\":", kDepth) + "1" + repeat("}", kDepth) + ",\"error\":\"bomb\"}",
  };
  for (const std::string& details : bombs) {
    CHECK(run({{"details", details}, {"reason", "fallback"}}).reason == "fallback");
  }
  // A big but sane document still parses after the bombs, on the same thread-local parser.
  const std::string big = "{\"pad\":\"" + std::string(1 << 20, 'p') + "\",\"error\":2.50}";
  CHECK(run({{"details", big}}).reason == "2.50");
  CHECK(run({{"details", R"({"error":"small again"})"}}).reason == "small again");
}

TEST_CASE("details duplicate error members: the last one wins", "[rules]") {
  const std::vector<CleanCase> cases = {
      {R"({"error":"a","error":"b"})", "b"},
      {R"({"error":"a","error":null})", "fallback"},
      {R"({"error":null,"error":"b"})", "b"},
      {R"({"error":1,"error":2.50})", "2.50"},
      {R"({"error":"x","error":7})", "7"},
      {R"({"error":7,"error":"x"})", "x"},
      {R"({"error":"a","\u0065rror":-0.0})", "-0.0"},
  };
  for (const CleanCase& c : cases) {
    INFO("details=" << c.raw);
    CHECK(run({{"details", c.raw}, {"reason", "fallback"}}).reason == c.expected);
  }
}

TEST_CASE("reason candidates in order: error field, details error, reason field, none", "[rules]") {
  struct Case {
    std::vector<Field> fields;
    std::string expected;
  };
  const std::string controls_only = bytes({1, 2, 0x7F});  // Field only views its bytes
  const std::vector<Case> cases = {
      {{{"error", "E"}, {"details", R"({"error":"D"})"}, {"reason", "R"}}, "E"},
      {{{"reason", "R"}, {"details", R"({"error":"D"})"}, {"error", "E"}}, "E"},  // field order is irrelevant
      {{{"details", R"({"error":"D"})"}, {"reason", "R"}}, "D"},
      {{{"error", ""}, {"details", R"({"error":"D"})"}, {"reason", "R"}}, "D"},
      {{{"error", " \t "}, {"details", R"({"error":"D"})"}, {"reason", "R"}}, "D"},
      {{{"error", controls_only}, {"details", R"({"error":"D"})"}}, "D"},
      {{{"error", ""}, {"details", R"({"error":null})"}, {"reason", "R"}}, "R"},
      {{{"error", ""}, {"details", R"({"error":" "})"}, {"reason", " R "}}, "R"},
      {{{"details", "garbage"}, {"reason", "R"}}, "R"},
      {{{"reason", "R"}}, "R"},
      {{{"error", ""}, {"details", ""}, {"reason", ""}}, "none"},
      {{{"error", " "}, {"details", "{}"}, {"reason", "\n"}}, "none"},
      {{}, "none"},
      {{{"error", "\xFF"}}, kFffd},  // a replacement character is not empty
  };
  for (const Case& c : cases) {
    INFO("expected=" << c.expected);
    CHECK(run(c.fields).reason == c.expected);
  }
}

TEST_CASE("symbol is cleaned to 64 bytes and empty when missing", "[rules]") {
  CHECK(run({{"symbol", "BTCUSDT"}}).symbol == "BTCUSDT");
  CHECK(run({{"symbol", " eth\tusdt\n"}}).symbol == "eth usdt");
  CHECK(run({{"symbol", std::string(70, 'S')}}).symbol == std::string(64, 'S'));
  CHECK(run({{"symbol", "\xC0"}}).symbol == kFffd);
  CHECK(run({{"symbol", "   "}}).symbol.empty());
  CHECK(run({{"decision", "SKIP"}}).symbol.empty());
}

// ---------------------------------------------------------------------------------------------
// cleaning

TEST_CASE("invalid UTF-8 becomes one U+FFFD per maximal subpart", "[rules]") {
  const std::string r = kFffd;
  const std::vector<CleanCase> cases = {
      {bytes({0xE0, 0x80}), r + r},                // E0 needs A0..BF next
      {bytes({0xED, 0xA0, 0x80}), r + r + r},      // surrogate D800
      {bytes({0xF4, 0x90}), r + r},                // above U+10FFFF
      {bytes({0xF4, 0x90, 0x80, 0x80}), r + r + r + r},
      {bytes({0xF0, 0x80, 0x80, 0x80}), r + r + r + r},  // overlong
      {bytes({0xC0}), r},
      {bytes({0xC1}), r},
      {bytes({0xC0, 0xAF}), r + r},
      {bytes({0xF5}), r},
      {bytes({0xFE}), r},
      {bytes({0xFF}), r},
      {bytes({0xFF, 0xFE}), r + r},
      {bytes({0x80}), r},
      {bytes({0x80, 0xBF}), r + r},
      {bytes({0xE2, 0x82}), r},                    // truncated valid prefix at the end
      {bytes({0xF0, 0x9F, 0x98}), r},
      {bytes({0xC3}), r},
      {bytes({0xE2, 0x82, 'A'}), r + "A"},
      {bytes({0xC3, '('}), r + "("},
      {bytes({'a', 0xE2, 0x82, 0xAC, 'b'}), "a\xE2\x82\xAC" "b"},  // valid euro sign stays
      {bytes({0xED, 0x9F, 0xBF}), "\xED\x9F\xBF"},                // U+D7FF is valid
      {bytes({0xF4, 0x8F, 0xBF, 0xBF}), "\xF4\x8F\xBF\xBF"},      // U+10FFFF is valid
      {bytes({0xEF, 0xBF, 0xBD}), r},                             // U+FFFD itself stays
      // The example of Unicode §3.9 (Table 3-8): a F1 80 80 E1 80 C2 b 80 c 80 BF d
      {bytes({'a', 0xF1, 0x80, 0x80, 0xE1, 0x80, 0xC2, 'b', 0x80, 'c', 0x80, 0xBF, 'd'}),
       "a" + r + r + r + "b" + r + "c" + r + r + "d"},
  };
  for (const CleanCase& c : cases) {
    INFO("case with " << c.raw.size() << " bytes, expected " << c.expected.size() << " bytes");
    CHECK(p35::clean_value(c.raw, p35::kReasonMaxBytes) == c.expected);
  }
}

TEST_CASE("ASCII control characters become spaces", "[rules]") {
  const std::vector<CleanCase> cases = {
      {std::string("a\0b", 3), "a b"},
      {std::string("a\0\0b", 4), "a  b"},
      {bytes({'a', 0x7F, 'b'}), "a b"},
      {bytes({'a', 0x01, 0x1F, 0x7F, 'b'}), "a   b"},
      {"a\tb\nc\rd", "a b c d"},
      {std::string("\0x\0", 3), "x"},
      {"\x1b[31mred", "[31mred"},
      {"\xC2\x80\xC2\x9F", "\xC2\x80\xC2\x9F"},  // C1 controls are not ASCII: kept
  };
  for (const CleanCase& c : cases) {
    INFO("expected=\"" << c.expected << "\"");
    CHECK(p35::clean_value(c.raw, p35::kReasonMaxBytes) == c.expected);
  }
}

TEST_CASE("only spaces are trimmed, after controls became spaces", "[rules]") {
  const std::vector<CleanCase> cases = {
      {"  x  ", "x"},
      {"\t x y \n", "x y"},
      {"x   y", "x   y"},
      {"   ", ""},
      {"", ""},
      {"\xC2\xA0x\xC2\xA0", "\xC2\xA0x\xC2\xA0"},  // no-break space is not trimmed
      {"\xE3\x80\x80x", "\xE3\x80\x80x"},          // nor the ideographic space
  };
  for (const CleanCase& c : cases) {
    INFO("raw=\"" << c.raw << "\"");
    CHECK(p35::clean_value(c.raw, p35::kReasonMaxBytes) == c.expected);
  }
}

TEST_CASE("cuts at 200 and 64 bytes keep whole 2-, 3- and 4-byte characters", "[rules]") {
  const std::vector<std::string> chars = {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
  for (const size_t limit : {p35::kReasonMaxBytes, p35::kShortMaxBytes}) {
    for (const std::string& ch : chars) {
      // `room` bytes are left for the character after the ASCII prefix: it fits only if room >= width.
      for (size_t room = 0; room <= ch.size(); ++room) {
        const std::string prefix(limit - room, 'a');
        const std::string raw = prefix + ch + "zz";
        const std::string expected = room >= ch.size() ? prefix + ch : prefix;
        INFO("limit=" << limit << " width=" << ch.size() << " room=" << room);
        const std::string cleaned = p35::clean_value(raw, limit);
        CHECK(cleaned == expected);
        CHECK(cleaned.size() <= limit);
      }
    }
  }
  // The same through normalize: reason at 200, symbol, decision and executed at 64.
  const std::string euro = "\xE2\x82\xAC";
  const Normalized n = run({{"reason", std::string(199, 'r') + euro},
                            {"symbol", std::string(62, 's') + euro},
                            {"decision", std::string(63, 'd') + euro}});
  CHECK(n.reason == std::string(199, 'r'));
  CHECK(n.symbol == std::string(62, 's'));
  CHECK(n.unknown_value == std::string(63, 'D'));
  CHECK(run({{"executed", std::string(61, 'x') + euro}}).unknown_value == std::string(61, 'x') + euro);
}

TEST_CASE("spaces the cut leaves at the end are trimmed", "[rules]") {
  CHECK(p35::clean_value(std::string(60, 'a') + "    " + "bbbbbbbb", 64) == std::string(60, 'a'));
  CHECK(p35::clean_value(std::string(62, 'a') + "\t\t" + "xyz", 64) == std::string(62, 'a'));
  CHECK(p35::clean_value(std::string(63, 'a') + " " + "\xC3\xA9", 64) == std::string(63, 'a'));
  CHECK(p35::clean_value(std::string(198, 'a') + "  " + "b", 200) == std::string(198, 'a'));
  CHECK(p35::clean_value(std::string(300, ' ') + "x", 64) == "x");  // leading spaces do not count
  CHECK(run({{"reason", std::string(195, 'r') + "     " + "tail"}}).reason == std::string(195, 'r'));
}

TEST_CASE("a U+FFFD straddling the limit is cut whole", "[rules]") {
  for (const size_t limit : {p35::kReasonMaxBytes, p35::kShortMaxBytes}) {
    INFO("limit=" << limit);
    CHECK(p35::clean_value(std::string(limit - 2, 'a') + "\xFF", limit) == std::string(limit - 2, 'a'));
    CHECK(p35::clean_value(std::string(limit - 1, 'a') + "\xE2\x82", limit) == std::string(limit - 1, 'a'));
    CHECK(p35::clean_value(std::string(limit - 3, 'a') + "\xFF", limit) == std::string(limit - 3, 'a') + kFffd);
    CHECK(p35::clean_value(std::string(limit - 3, 'a') + "\xFF\xFF", limit) ==
          std::string(limit - 3, 'a') + kFffd);
  }
}

TEST_CASE("clean_value output is valid, bounded, trimmed and idempotent for random bytes", "[rules]") {
  std::mt19937 rng(20261125);
  // Biased towards bytes that make UTF-8 interesting: leads, continuations, controls, spaces.
  const std::vector<int> palette = {0x00, 0x09, 0x0A, 0x1F, 0x20, 0x20, 0x41, 0x7A, 0x7F, 0x80, 0x8F,
                                    0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1, 0xED,
                                    0xEF, 0xF0, 0xF1, 0xF4, 0xF5, 0xFF};
  std::uniform_int_distribution<size_t> pick(0, palette.size() - 1);
  std::uniform_int_distribution<int> any_byte(0, 255);
  std::uniform_int_distribution<size_t> length(0, 300);
  const std::vector<size_t> limits = {0, 1, 2, 3, 4, 5, p35::kShortMaxBytes, p35::kReasonMaxBytes};
  std::uniform_int_distribution<size_t> pick_limit(0, limits.size() - 1);
  std::string out;
  for (int i = 0; i < 5000; ++i) {
    std::string raw(length(rng), '\0');
    for (char& c : raw) c = static_cast<char>(i % 2 == 0 ? palette[pick(rng)] : any_byte(rng));
    const size_t limit = limits[pick_limit(rng)];
    p35::clean_value_into(raw, limit, out);
    INFO("iteration=" << i << " limit=" << limit);
    REQUIRE(is_valid_utf8(out));
    REQUIRE(out.size() <= limit);
    REQUIRE_FALSE(has_ascii_control(out));
    if (!out.empty()) {
      REQUIRE(out.front() != ' ');
      REQUIRE(out.back() != ' ');
    }
    REQUIRE(p35::clean_value(out, limit) == out);
  }
}

// ---------------------------------------------------------------------------------------------
// event time

TEST_CASE("every timestamp form parses to epoch milliseconds", "[rules]") {
  struct Case {
    std::string raw;
    int64_t ms;
  };
  constexpr int64_t t = 1795615200000;  // 2026-11-25T14:00:00Z
  const std::vector<Case> cases = {
      {"1795615200", t},
      {"1795615200.5", t + 500},
      {"1795615200.123456", t + 123},
      {"1795615200.", t},
      {"1795615200.0009", t},  // below a millisecond: floor
      {" 1795615200 ", t},
      {"\t1795615200.25\n", t + 250},
      {"1795615200000", t},
      {"1795615200123", t + 123},
      {"1795615200123.9", t + 123},
      {"100000000000", 100000000000},    // exactly 1e11: milliseconds
      {"99999999999", 99999999999000},   // just below: seconds
      {"99999999999.5", 99999999999500},
      {"0", 0},
      {".5", 500},
      {"+5", 5000},
      {"-1.5", -1500},
      {"-1.0005", -1001},  // floor, not truncation towards zero
      {"2026-11-25T14:00:00", t},
      {"2026-11-25T14:00:00Z", t},
      {"2026-11-25t14:00:00z", t},
      {"2026-11-25 14:00:00", t},
      {"2026-11-25T14:00:00.123456", t + 123},
      {"2026-11-25T14:00:00.5Z", t + 500},
      {"2026-11-25T14:00:00,25", t + 250},
      {"2026-11-25T16:00:00+02:00", t},
      {"2026-11-25T16:00:00+02", t},
      {"2026-11-25T16:30:00+0230", t},
      {"2026-11-25T08:30:00-0530", t},
      {"2026-11-25T08:30:00.750-05:30", t + 750},
      {"2026-11-26T00:00:00+10:00", t},
      {"  2026-11-25T14:00:00Z  ", t},
      {"2026-11-25T14:00", t},
      {"2026-11-25", t - 14 * 3600 * 1000LL},
      {"2024-02-29T23:59:00Z", 1709251140000},
      {"1970-01-01T00:00:00Z", 0},
      {"1969-12-31T23:59:59.999Z", -1},
  };
  for (const Case& c : cases) {
    INFO("timestamp=\"" << c.raw << "\"");
    const std::optional<int64_t> ms = p35::parse_timestamp_ms(c.raw);
    REQUIRE(ms.has_value());
    CHECK(*ms == c.ms);
  }
}

TEST_CASE("unparsable timestamps give nullopt", "[rules]") {
  const std::vector<std::string> cases = {
      "", "   ", "abc", "nan", "NaN", "inf", "-inf", "Infinity", "1e9", "1.7e12", "0x10", "12abc",
      "1.2.3", "1 2", ".", "-", "+", "--1", "1_000", "10000000000000000000000",
      std::string("17956\0" "15200", 11),
      "2026-13-01T00:00:00", "2026-00-10T00:00:00", "2026-02-29T00:00:00", "2026-11-31T00:00:00",
      "2026-11-00T00:00:00", "2026-11-25T24:00:00", "2026-11-25T14:60:00", "2026-11-25T14:00:60",
      "2026-11-25T14:00:00+2", "2026-11-25T14:00:00+25:00", "2026-11-25T14:00:00+02:60",
      "2026-11-25T14:00:00 Z", "2026-11-25X14:00:00", "2026-11-25T", "2026-11-25T14",
      "2026-11-25T14:00:00.", "2026-11-25T14:00:00.Z", "2026-11-25T14:00:00Zjunk",
      "2026/11/25", "26-11-25", "2026-1-5", "2026-11-25Z",
  };
  for (const std::string& raw : cases) {
    INFO("timestamp=\"" << raw << "\"");
    CHECK_FALSE(p35::parse_timestamp_ms(raw).has_value());
  }
}

TEST_CASE("timestamp is used only within [id - 48 h, id + 5 min]", "[rules]") {
  struct Case {
    int64_t offset_ms;
    bool used;
  };
  const std::vector<Case> cases = {
      {0, true},
      {-p35::kMaxPastMs, true},
      {-p35::kMaxPastMs - 1, false},
      {p35::kMaxFutureMs, true},
      {p35::kMaxFutureMs + 1, false},
      {-1, true},
      {1, true},
  };
  for (const Case& c : cases) {
    const int64_t ts = kIdMs + c.offset_ms;
    const int64_t expected = c.used ? ts : kIdMs;
    INFO("offset_ms=" << c.offset_ms);
    CHECK(p35::choose_event_ms(ts, kIdMs) == expected);
    CHECK(run({{"timestamp", std::to_string(ts)}}).event_ms == expected);
  }
  // Extremes must not overflow.
  CHECK(p35::choose_event_ms(INT64_MIN, INT64_MAX) == INT64_MAX);
  CHECK(p35::choose_event_ms(INT64_MAX, INT64_MIN) == INT64_MIN);
  CHECK(p35::choose_event_ms(INT64_MAX, INT64_MAX) == INT64_MAX);
}

TEST_CASE("event time falls back to the entry ID time", "[rules]") {
  CHECK(p35::choose_event_ms(std::nullopt, kIdMs) == kIdMs);
  CHECK(run({}).event_ms == kIdMs);
  CHECK(run({{"timestamp", ""}}).event_ms == kIdMs);
  CHECK(run({{"timestamp", "garbage"}}).event_ms == kIdMs);
  CHECK(run({{"timestamp", "2026-11-22T13:59:59Z"}}).event_ms == kIdMs);  // older than 48 h
  CHECK(run({{"timestamp", "2026-11-25T14:06:00Z"}}).event_ms == kIdMs);  // 6 min ahead
  CHECK(run({{"timestamp", "2026-11-25T13:00:00Z"}}).event_ms == kIdMs - 3600 * 1000);
  CHECK(run({{"timestamp", "1795615140"}}).minute == kIdMs / 60000 - 1);
}

TEST_CASE("minute is the floor of event time over 60000 ms, also before 1970", "[rules]") {
  struct Case {
    int64_t ms;
    int64_t minute;
  };
  const std::vector<Case> cases = {
      {0, 0}, {59999, 0}, {60000, 1}, {119999, 1}, {-1, -1}, {-59999, -1}, {-60000, -1},
      {-60001, -2}, {kIdMs, kIdMs / 60000}, {kIdMs + 59999, kIdMs / 60000},
  };
  for (const Case& c : cases) {
    INFO("ms=" << c.ms);
    CHECK(p35::minute_of_ms(c.ms) == c.minute);
    const Normalized n = run({}, c.ms);
    CHECK(n.event_ms == c.ms);
    CHECK(n.minute == c.minute);
  }
}

TEST_CASE("minute_key formats UTC minutes as YYYYMMDDHHMM", "[rules]") {
  struct Case {
    int64_t minute;
    std::string key;
  };
  const std::vector<Case> cases = {
      {0, "197001010000"},
      {-1, "196912312359"},
      {1709251140 / 60 - 1440, "202402282359"},
      {1709251140 / 60 - 1439, "202402290000"},  // leap day starts
      {1709251140 / 60, "202402292359"},
      {1709251140 / 60 + 1, "202403010000"},
      {1767225540 / 60, "202512312359"},  // year end
      {1767225540 / 60 + 1, "202601010000"},
      {kIdMs / 60000, "202611251400"},
      {253402300799 / 60, "999912312359"},
  };
  for (const Case& c : cases) {
    INFO("minute=" << c.minute);
    CHECK(p35::minute_key(c.minute) == c.key);
  }
}

// Issue 8 (fuzz/crashes/inspect/minute-key-overflow): minute_key is total. A minute outside the
// years 0000-9999 has no YYYYMMDDHHMM (near INT64_MIN/MAX the day arithmetic overflowed, UBSan):
// it is its number with a sign, never 12 plain digits, so never the key of another minute.
TEST_CASE("minute_key is defined for every int64: minutes outside 0000-9999 are signed numbers",
          "[rules]") {
  constexpr int64_t kYear0 = -62'167'219'200 / 60;      // 0000-01-01T00:00Z
  constexpr int64_t kYear10000 = 253'402'300'800 / 60;  // 10000-01-01T00:00Z
  struct Case {
    int64_t minute;
    std::string key;
  };
  const std::vector<Case> cases = {
      {kYear0, "000001010000"},
      {kYear10000 - 1, "999912312359"},
      {kYear0 - 1, std::to_string(kYear0 - 1)},
      {kYear10000, "+" + std::to_string(kYear10000)},
      {INT64_MIN, "-9223372036854775808"},
      {INT64_MIN + 1, "-9223372036854775807"},
      {INT64_MIN + 1439, "-9223372036854774369"},  // the fuzz crash: within a day of INT64_MIN
      {INT64_MAX, "+9223372036854775807"},
      {INT64_MAX - 1440, "+9223372036854774367"},
      {202601010000, "+202601010000"},  // 12 digits, but not 2026-01-01T00:00's key
  };
  for (const Case& c : cases) {
    INFO("minute=" << c.minute);
    CHECK(p35::minute_key(c.minute) == c.key);
  }
  CHECK(p35::minute_key(1767225600 / 60) == "202601010000");
  // Every minute of the extremes of what minute_of_ms gives, and around both year edges.
  for (const int64_t base : {p35::minute_of_ms(INT64_MIN), p35::minute_of_ms(INT64_MAX) - 3000,
                             kYear0 - 3000, kYear10000 - 3000, INT64_MIN, INT64_MAX - 6000}) {
    for (int64_t k = 0; k < 6000; ++k) {
      const int64_t minute = base + k;
      const std::string key = p35::minute_key(minute);
      INFO("minute=" << minute << " key=" << key);
      if (minute >= kYear0 && minute < kYear10000) {
        REQUIRE(key.size() == 12);
        REQUIRE(key.find_first_not_of("0123456789") == std::string::npos);
      } else {
        REQUIRE(key == (minute < 0 ? "" : "+") + std::to_string(minute));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// entries as a whole

TEST_CASE("duplicate field names: the last one wins", "[rules]") {
  CHECK(run({{"decision", "SKIP"}, {"decision", "execute"}}).decision == Decision::Execute);
  CHECK(run({{"decision", "execute"}, {"decision", ""}}).decision_label() == "UNKNOWN:");
  CHECK(run({{"executed", "true"}, {"executed", "false"}}).decision == Decision::Skip);
  CHECK(run({{"error", "first"}, {"error", "second"}}).reason == "second");
  CHECK(run({{"error", "first"}, {"error", ""}, {"reason", "R"}}).reason == "R");
  CHECK(run({{"reason", "first"}, {"reason", "second"}}).reason == "second");
  CHECK(run({{"details", R"({"error":"first"})"}, {"details", R"({"error":"second"})"}}).reason == "second");
  CHECK(run({{"symbol", "BTCUSDT"}, {"symbol", "ETHUSDT"}}).symbol == "ETHUSDT");
  CHECK(run({{"timestamp", "1795615100"}, {"timestamp", "1795615200"}}).event_ms == 1795615200000);
  CHECK(run({{"timestamp", "1795615100"}, {"timestamp", "junk"}}).event_ms == kIdMs);
}

TEST_CASE("normalize reuses the output's string buffers", "[rules]") {
  // Field only views its bytes, so the values live in named strings.
  const std::string decision1(40, 'q'), reason1(150, 'r'), symbol1(30, 's');
  const std::string decision2(39, 'w'), error2(120, 'e'), symbol2(29, 't');
  const std::vector<Field> first = {{"decision", decision1}, {"reason", reason1}, {"symbol", symbol1}};
  const std::vector<Field> second = {{"decision", decision2}, {"error", error2}, {"symbol", symbol2}};
  Normalized out;
  p35::normalize(first, kIdMs, out);
  const char* reason_data = out.reason.data();
  const char* symbol_data = out.symbol.data();
  const char* unknown_data = out.unknown_value.data();
  p35::normalize(second, kIdMs, out);
  CHECK(out.reason == std::string(120, 'e'));
  CHECK(out.reason.data() == reason_data);
  CHECK(out.symbol.data() == symbol_data);
  CHECK(out.unknown_value.data() == unknown_data);
  // A full entry leaves nothing of the previous one behind.
  p35::normalize(std::vector<Field>{{"executed", "yes"}}, kIdMs, out);
  CHECK(out.decision == Decision::Execute);
  CHECK(out.reason == "none");
  CHECK(out.symbol.empty());
  CHECK(out.unknown_value.empty());
  CHECK_FALSE(out.unknown_from_decision_field);
}

TEST_CASE("a realistic producer entry", "[rules]") {
  const Normalized n = run({
      {"plan_id", "p-123"},
      {"symbol", "BTCUSDT"},
      {"executed", "False"},
      {"would_execute", "True"},
      {"steps_results", R"([{"step":"risk","ok":false}])"},
      {"error", ""},
      {"details", R"({"error":"kill switch active","limits":{"max":3}})"},
      {"timestamp", "2026-11-25T13:59:30.250+00:00"},
  });
  CHECK(n.decision == Decision::Blocked);
  CHECK(n.reason == "kill switch active");
  CHECK(n.symbol == "BTCUSDT");
  CHECK(n.event_ms == kIdMs - 29750);
  CHECK(n.minute == kIdMs / 60000 - 1);
  CHECK(p35::minute_key(n.minute) == "202611251359");
  CHECK(n.decision_label() == "BLOCKED");
}
