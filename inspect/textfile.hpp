// Writing p35-shm's output to a file atomically, for node_exporter's textfile collector.
#pragma once

#include <string>
#include <string_view>

namespace p35::inspect {

// Writes `text` to `path` so that a reader sees the old file or the new one, never a part: a
// temporary file in the same directory (".<name>.tmp.<pid>", which the textfile collector skips:
// it reads only *.prom), fsync, mode 0644 (node_exporter runs as another user), rename over
// `path`. Returns an empty string, or "Failed to <verb> <file>: <why>" (the temporary removed).
std::string write_atomically(const std::string& path, std::string_view text);

}  // namespace p35::inspect
