// Logging set-up shared by the programs: the spdlog default logger on stderr, with a format that
// suits a terminal, journald or a plain pipe, and an error handler so logging never kills a daemon.
#include "log.hpp"

#include <fmt/format.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

#include "config.hpp"

namespace p35 {
namespace {

struct LevelName {
  std::string_view name;  // lower case
  spdlog::level::level_enum level;
};

// The first version's names (Python logging) and spdlog's, compared in lower case.
constexpr LevelName kLevels[] = {
    {"trace", spdlog::level::trace},  {"debug", spdlog::level::debug},
    {"info", spdlog::level::info},    {"warn", spdlog::level::warn},
    {"warning", spdlog::level::warn}, {"err", spdlog::level::err},
    {"error", spdlog::level::err},    {"critical", spdlog::level::critical},
    {"off", spdlog::level::off},
};

bool equal_ignoring_case(std::string_view a, std::string_view lower) {
  if (a.size() != lower.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

std::optional<spdlog::level::level_enum> find_level(std::string_view name) {
  for (const LevelName& l : kLevels) {
    if (equal_ignoring_case(name, l.name)) return l.level;
  }
  return std::nullopt;
}

// "%*" → the "<N>" syslog priority prefix journald turns into the entry's priority, so that
// `journalctl -p warning` works.
class SyslogPriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const std::string_view prefix = priority_prefix(msg.level);
    dest.append(prefix.data(), prefix.data() + prefix.size());
  }

  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriorityFlag>();
  }

 private:
  static std::string_view priority_prefix(spdlog::level::level_enum level) {
    switch (level) {
      case spdlog::level::critical:
        return "<2>";
      case spdlog::level::err:
        return "<3>";
      case spdlog::level::warn:
        return "<4>";
      case spdlog::level::info:
        return "<6>";
      default:
        return "<7>";
    }
  }
};

std::unique_ptr<spdlog::formatter> make_formatter() {
  // UTC, like the minute buckets, so a log line and a bucket key compare at a glance.
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (::isatty(STDERR_FILENO) == 1) {
    formatter->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ [%l] %v");
  } else if (stderr_is_journal()) {
    formatter->add_flag<SyslogPriorityFlag>('*').set_pattern("%*[%l] %v");  // journald adds time
  } else {
    formatter->set_pattern("[%l] %v");
  }
  return formatter;
}

// A failing log write (stderr closed, disk full behind a redirect) must not end the daemon; say
// so a few times where possible, then stay quiet.
void on_logging_error(const std::string& message) noexcept {
  static std::atomic<int> reported{0};
  if (reported.fetch_add(1, std::memory_order_relaxed) >= 10) return;  // own counter only
  const std::string line = "logging failed: " + message + "\n";
  const ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  static_cast<void>(ignored);
}

}  // namespace

// systemd sets JOURNAL_STREAM to "<device>:<inode>" of the stream it connected to stderr; only a
// match means stderr still goes to journald (not, say, a shell redirect in the unit's child).
bool stderr_is_journal() {
  const char* stream = std::getenv("JOURNAL_STREAM");
  struct stat st {};
  if (stream == nullptr || ::fstat(STDERR_FILENO, &st) != 0) return false;
  return fmt::format("{}:{}", st.st_dev, st.st_ino) == stream;
}

bool valid_log_level(std::string_view level) {
  return find_level(level).has_value();
}

void setup_logging(std::string_view program, std::string_view level) {
  const std::optional<spdlog::level::level_enum> parsed = find_level(level);
  if (!parsed)
    throw ConfigError(
        fmt::format("invalid LOG_LEVEL \"{}\": must be one of DEBUG INFO WARNING "
                    "ERROR CRITICAL (or trace, warn, err, off), any case",
                    level.substr(0, 100)));
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();  // no colour codes
  auto logger = std::make_shared<spdlog::logger>(std::string(program), std::move(sink));
  logger->set_formatter(make_formatter());
  logger->set_level(*parsed);
  logger->flush_on(spdlog::level::warn);
  logger->set_error_handler(on_logging_error);
  spdlog::set_error_handler(on_logging_error);
  spdlog::set_default_logger(std::move(logger));
}

}  // namespace p35
