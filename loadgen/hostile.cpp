// Hostile raw values for --edge-cases. Every builder appends pieces to a Garbled, which records
// what cleaning must make of each piece; none of them decodes the bytes it produced.
#include "hostile.hpp"

#include <fmt/format.h>

#include <array>
#include <iterator>

namespace p35::loadgen::hostile {

namespace {

constexpr std::array<char, 8> kJunk{' ', '\t', '\n', '\r', '\0', '\x01', '\x1F', '\x7F'};
constexpr std::array<char, 6> kControls{'\t', '\n', '\r', '\0', '\x01', '\x7F'};
// Multi-byte characters of each length, to straddle a cut.
constexpr std::array<std::string_view, 4> kWide{"é", "€", "日", "😀"};
constexpr std::array<std::string_view, 10> kFillerWords{
    "order", "rejected", "by", "exchange", "margin", "check", "failed", "retry", "later", "venue"};

char pick_control(Rng& rng) {
  return kControls[below(rng, kControls.size())];
}

// Appends words (ASCII, single spaces, sometimes two) until the image reaches target_bytes.
void fill_words_to(Rng& rng, size_t target_bytes, Garbled& g) {
  while (g.image().size() < target_bytes) {
    const std::string_view word = kFillerWords[below(rng, kFillerWords.size())];
    const size_t room = target_bytes - g.image().size();
    g.text(word.substr(0, room));
    if (g.image().size() < target_bytes) g.text(chance(rng, 0.1) ? "  " : " ");
  }
}

// Exactly target_bytes of image: words, then single letters to land on the byte.
void fill_exactly_to(Rng& rng, size_t target_bytes, Garbled& g) {
  if (target_bytes > 8) fill_words_to(rng, target_bytes - 8, g);
  while (g.image().size() < target_bytes) g.text("x");
}

// base, then a multi-byte character that starts before max_bytes and ends after it, then a tail.
void wide_char_across(Rng& rng, std::string_view base, size_t max_bytes, Garbled& g) {
  const std::string_view wide = kWide[below(rng, kWide.size())];
  const size_t start = max_bytes - 1 - below(rng, wide.size() - 1);  // start < max < start + len
  g.text(base.substr(0, start)).text(" ");
  fill_exactly_to(rng, start, g);
  g.text(wide).text(" and the rest of the message");
}

void invalid_inside(Rng& rng, std::string_view base, Garbled& g) {
  const InvalidSnippet& snippet = pick(rng, invalid_snippets());
  const size_t at = below(rng, base.size() + 1);  // 0: before everything, size: at the end
  g.text(base.substr(0, at)).invalid(snippet).text(base.substr(at));
}

void controls_inside(Rng& rng, std::string_view base, Garbled& g) {
  junk(rng, g);
  for (size_t i = 0; i < base.size(); ++i) {
    const char c = base[i];
    if ((c == '_' || c == ' ') && chance(rng, 0.6)) {
      g.control(pick_control(rng));
    } else {
      g.text(base.substr(i, 1));
    }
  }
  junk(rng, g);
}

}  // namespace

void junk(Rng& rng, Garbled& g) {
  const uint64_t n = 1 + below(rng, 4);
  for (uint64_t i = 0; i < n; ++i) {
    const char c = kJunk[below(rng, kJunk.size())];
    if (c == ' ') {
      g.text(" ");
    } else {
      g.control(c);
    }
  }
}

void padded(Rng& rng, std::string_view word, Garbled& g) {
  const uint64_t ends = below(rng, 3);  // 0: left, 1: right, 2: both
  if (ends != 1) junk(rng, g);
  g.text(word);
  if (ends != 0) junk(rng, g);
}

void cut_in_spaces(Rng& rng, std::string_view word, size_t max_bytes, Garbled& g) {
  g.text(word);
  while (g.image().size() <= max_bytes) g.text(" ");
  g.text("garbage after the cut");
  (void)rng;
}

void blank(Rng& rng, Garbled& g) {
  if (chance(rng, 0.3)) return;  // the empty string
  junk(rng, g);
}

void reason_variant(Rng& rng, std::string_view base, Garbled& g) {
  switch (below(rng, 8)) {
    case 0:
      controls_inside(rng, base, g);
      return;
    case 1:  // ASCII, 300+ bytes
      g.text(base).text(": ");
      fill_words_to(rng, 300 + below(rng, 200), g);
      return;
    case 2:
      wide_char_across(rng, base, 200, g);
      return;
    case 3:
      invalid_inside(rng, base, g);
      return;
    case 4:  // ill-formed bytes at the cut: their U+FFFD may or may not fit
      g.text(base.substr(0, 150)).text(" ");
      fill_exactly_to(rng, 196 + below(rng, 4), g);
      g.invalid(pick(rng, invalid_snippets())).text(" tail");
      return;
    case 5:  // valid multi-byte words, a C1 control (not ASCII: kept) and a no-break space
      g.text(base)
          .text(" ")
          .text(pick(rng, catalog::multibyte_words()))
          .text(" \xC2\x85 x\xC2\xA0y");
      return;
    case 6:  // only multi-byte characters, far over the limit
      while (g.image().size() < 260) g.text(pick(rng, catalog::multibyte_words()));
      return;
    default:
      g.text(base).text(": code:429 \"quoted\" back\\slash {json}");
      return;
  }
}

void symbol_variant(Rng& rng, std::string_view base, Garbled& g) {
  switch (below(rng, 9)) {
    case 0:
      padded(rng, base, g);
      return;
    case 1: {
      std::string lower(base);
      for (char& c : lower) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
      g.text(lower);
      return;
    }
    case 2:
      g.text(base).text("-PERP-");
      fill_words_to(rng, 70 + below(rng, 80), g);
      return;
    case 3:
      wide_char_across(rng, base, 64, g);
      return;
    case 4:
      g.text(base.substr(0, 3)).control(pick_control(rng)).text(base.substr(3));
      return;
    case 5:
      invalid_inside(rng, base, g);
      return;
    case 6:
      blank(rng, g);
      return;
    case 7:
      cut_in_spaces(rng, base, 64, g);
      return;
    default:
      g.text(base.substr(0, 3)).text(":").text(base.substr(3));
      return;
  }
}

void unknown_decision(Rng& rng, Garbled& g) {
  switch (below(rng, 7)) {
    case 0:
      padded(rng, pick(rng, catalog::unknown_decisions()), g);
      return;
    case 1:
      blank(rng, g);
      return;
    case 2:
      g.text(chance(rng, 0.5) ? "EXECUTE" : "skip").control(pick_control(rng)).text("NOW");
      return;
    case 3:
      g.text("SK").invalid(pick(rng, invalid_snippets())).text("IP");
      return;
    case 4:
      while (g.image().size() < 80 + below(rng, 40)) g.text("decision_");
      return;
    case 5:
      g.text(pick(rng, catalog::multibyte_words())).text(" ").text("Exécuté");
      return;
    default:
      fill_exactly_to(rng, 61 + below(rng, 3), g);
      g.text("€").text("Y");
      return;
  }
}

void executed_garbage(Rng& rng, Garbled& g) {
  switch (below(rng, 6)) {
    case 0:
      padded(rng, pick(rng, catalog::executed_garbage()), g);
      return;
    case 1:
      blank(rng, g);
      return;
    case 2:
      g.text("tr").control(pick_control(rng)).text("ue");
      return;
    case 3:
      g.invalid(pick(rng, invalid_snippets())).text("true");
      return;
    case 4:
      while (g.image().size() < 80 + below(rng, 40)) g.text("maybe ");
      return;
    default:
      g.text("ja, ausgeführt");
      return;
  }
}

void non_yielding_details(Rng& rng, std::string& out) {
  static constexpr std::array<std::string_view, 19> kFixed{
      "null",
      "{}",
      "[]",
      "",
      "risk_limit",
      "\"risk_limit\"",
      "42",
      R"({"error":null})",
      R"({"error":{"code":-2010,"msg":"Margin is insufficient."}})",
      R"({"error":["risk_limit"]})",
      R"([{"error":"risk_limit"}])",
      R"({"error":"risk_limit")",
      R"({"error":"risk_limit"} trailing)",
      R"({"error":"risk_limit"}})",
      R"({'error':'risk_limit'})",
      R"({"error":"risk_limit",})",
      R"({"error":""})",
      R"({"error":"\t \u0000 \r\n"})",
      R"({"result":{"error":"risk_limit"}})"};
  out.clear();
  const uint64_t choice = below(rng, kFixed.size() + 2);
  if (choice < kFixed.size()) {
    out.assign(kFixed[choice]);
  } else if (choice == kFixed.size()) {
    out.assign("{\"error\":\"bad \xFF byte\"}");  // JSON text must be UTF-8: unparsable
  } else {
    const size_t depth = 3000;  // beyond simdjson's 1024 and most recursive parsers' stacks
    out.assign("{\"meta\":").append(depth, '[').append(depth, ']').append("}");
  }
}

void unparsable_timestamp(Rng& rng, int64_t plausible_ms, std::string& out) {
  const int64_t s = plausible_ms / 1000;
  auto it = std::back_inserter(out);
  out.clear();
  switch (below(rng, 12)) {
    case 0:
      return;  // empty
    case 1:
      out.assign("yesterday");
      return;
    case 2:
      out.assign(chance(rng, 0.5) ? "NaN" : "nan");
      return;
    case 3:
      out.assign(chance(rng, 0.5) ? "inf" : "-inf");
      return;
    case 4:
      fmt::format_to(it, "{}abc", s);
      return;
    case 5:
      fmt::format_to(it, "{} seconds", s);
      return;
    case 6:
      fmt::format_to(it, "{}ms", plausible_ms);
      return;
    case 7:
      fmt::format_to(it, "0x{:x}", s);
      return;
    case 8:
      out.assign("2024-13-01T00:00:00Z");
      return;
    case 9:
      out.assign("31/05/2024 16:08:37");
      return;
    case 10:
      out.assign(" ");
      return;
    default:
      out.assign(1, '\0');
      return;
  }
}

namespace {
// Decodes one code point of valid UTF-8 starting at i; advances i.
uint32_t decode_one(std::string_view s, size_t& i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  const size_t len = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  uint32_t cp = len == 1 ? lead : lead & (0x7Fu >> len);
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3Fu);
  i += len;
  return cp;
}

void append_u_escape(uint32_t unit, std::string& out) {
  fmt::format_to(std::back_inserter(out), "\\u{:04x}", unit);
}
}  // namespace

void append_json_string(std::string_view raw, bool ascii_only, std::string& out) {
  out.push_back('"');
  for (size_t i = 0; i < raw.size();) {
    const auto byte = static_cast<unsigned char>(raw[i]);
    if (byte == '"' || byte == '\\') {
      out.push_back('\\');
      out.push_back(raw[i++]);
    } else if (byte == '\t') {
      out.append("\\t");
      ++i;
    } else if (byte == '\n') {
      out.append("\\n");
      ++i;
    } else if (byte < 0x20) {
      append_u_escape(byte, out);
      ++i;
    } else if (byte < 0x80 || !ascii_only) {
      out.push_back(raw[i++]);
    } else {
      const uint32_t cp = decode_one(raw, i);
      if (cp < 0x10000) {
        append_u_escape(cp, out);
      } else {
        append_u_escape(0xD800 + ((cp - 0x10000) >> 10), out);
        append_u_escape(0xDC00 + ((cp - 0x10000) & 0x3FF), out);
      }
    }
  }
  out.push_back('"');
}

}  // namespace p35::loadgen::hostile
