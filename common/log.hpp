// Logging set-up shared by the programs: spdlog to stderr, level from LOG_LEVEL, no colour or
// timestamps when stderr is not a terminal (journald adds its own).
#pragma once

#include <string_view>

namespace p35 {

// Accepts the first version's names (DEBUG, INFO, WARNING, ERROR, CRITICAL) and spdlog's
// (trace, debug, info, warn, warning, err, error, critical, off), any case. Throws ConfigError.
void setup_logging(std::string_view program, std::string_view level);

// True when the level name is accepted by setup_logging.
bool valid_log_level(std::string_view level);

// True when stderr is the journald stream systemd gave us (JOURNAL_STREAM matches it): a line
// starting "<N>" then gets syslog priority N.
bool stderr_is_journal();

}  // namespace p35
