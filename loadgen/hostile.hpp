// Builders of hostile raw values (DESIGN §2 edge cases) whose cleaned outcome the generator knows
// by construction: padding, control characters, ill-formed UTF-8, values longer than the limits,
// multi-byte characters and ill-formed bytes straddling the cut, JSON that must not yield a reason.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "catalog.hpp"
#include "garble.hpp"

namespace p35::loadgen::hostile {

// 1-4 characters from {space, TAB, LF, CR, NUL, 0x01, 0x1F, DEL}: all clean to spaces.
void junk(Rng& rng, Garbled& g);
// word with junk on one or both ends: cleans to word.
void padded(Rng& rng, std::string_view word, Garbled& g);
// word, then enough spaces that the cut at max_bytes falls inside them, then more text: the cut
// and the second trim leave exactly word.
void cut_in_spaces(Rng& rng, std::string_view word, size_t max_bytes, Garbled& g);
// Nothing but junk (or nothing at all): cleans to the empty string.
void blank(Rng& rng, Garbled& g);

// A value built on `base` (valid, clean ASCII or UTF-8) with one of the reason edge cases; its
// cleaned image is never empty. max_bytes is the field's limit (200 or 64).
void reason_variant(Rng& rng, std::string_view base, Garbled& g);
// Same for symbols; may clean to the empty string (blank symbols), which is part of the test.
void symbol_variant(Rng& rng, std::string_view base, Garbled& g);
// An unknown decision value (never a synonym after cleaning and upper-casing).
void unknown_decision(Rng& rng, Garbled& g);
// An `executed` value that is neither true/1/yes nor false/0/no after cleaning; may be blank.
void executed_garbage(Rng& rng, Garbled& g);

// A `details` value from which no reason may come: null, objects without a string/number/boolean
// `error`, arrays, scalars, invalid or truncated JSON, ill-formed UTF-8, nesting beyond parsers'
// depth limits, an `error` that cleans to nothing.
void non_yielding_details(Rng& rng, std::string& out);
// A `timestamp` no parser may accept; `plausible_ms` is embedded where a lenient parser could be
// fooled into taking it.
void unparsable_timestamp(Rng& rng, int64_t plausible_ms, std::string& out);

// JSON string literal of raw (valid UTF-8). ascii_only escapes every non-ASCII character as \uXXXX
// (surrogate pairs above U+FFFF).
void append_json_string(std::string_view raw, bool ascii_only, std::string& out);

}  // namespace p35::loadgen::hostile
