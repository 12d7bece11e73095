// Configuration of every P3.5 program: one option table drives the flags, the environment lookup
// and --help, so the three cannot drift apart.
#include "config.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cxxopts.hpp>
#include <optional>
#include <system_error>
#include <utility>

#include "log.hpp"
#include "version.hpp"

namespace p35 {
namespace {

enum class Kind { integer, boolean, text };

// What a text value must look like; text_problem() says why a value fails its rule. A new rule
// also needs a placeholder in placeholder().
enum class TextRule {
  any,
  host,
  socket_path,
  path,
  user,
  name,
  optional_name,
  shm_name,
  log_level,
  host_port_list  // checked item by item in finish() (parse_host_port_list), to name the bad one
};

struct Option {
  std::string_view group = {};  // heading in --help
  std::string_view variable = {};
  std::string_view help = {};  // one line, no final period
  Kind kind = Kind::text;
  int Config::*int_field = nullptr;
  int min_value = 0;
  int max_value = 0;
  bool Config::*bool_field = nullptr;
  std::string Config::*text_field = nullptr;
  TextRule rule = TextRule::any;
  std::string_view default_note = {};  // printed instead of the field's default when set
  bool secret = false;                 // value never printed, in help, errors or describe()
};

constexpr Option integer(std::string_view group, std::string_view variable, int Config::*field,
                         int min_value, int max_value, std::string_view help) {
  return {.group = group,
          .variable = variable,
          .help = help,
          .kind = Kind::integer,
          .int_field = field,
          .min_value = min_value,
          .max_value = max_value};
}

constexpr Option boolean(std::string_view group, std::string_view variable, bool Config::*field,
                         std::string_view help) {
  return {.group = group,
          .variable = variable,
          .help = help,
          .kind = Kind::boolean,
          .bool_field = field};
}

constexpr Option text(std::string_view group, std::string_view variable, std::string Config::*field,
                      TextRule rule, std::string_view help) {
  return {.group = group,
          .variable = variable,
          .help = help,
          .kind = Kind::text,
          .text_field = field,
          .rule = rule};
}

constexpr Option with_note(Option o, std::string_view default_note) {
  o.default_note = default_note;
  return o;
}

constexpr Option as_secret(Option o) {
  o.secret = true;
  return o;
}

constexpr std::string_view kRedis = "Redis connection";
constexpr std::string_view kSentinel = "Redis Sentinel and replicas";
constexpr std::string_view kLogging = "Logging and counting";
constexpr std::string_view kNames = "Stream and names";
constexpr std::string_view kTiming = "Batching, intervals and TTLs";
constexpr std::string_view kCapacity =
    "Shared-memory capacities (fixed when the segment is created)";

// The one table. Order is the --help order.
constexpr Option kOptions[] = {
    text(kRedis, "REDIS_HOST", &Config::redis_host, TextRule::host,
         "Redis host name or address; ignored when REDIS_SOCKET is set"),
    integer(kRedis, "REDIS_PORT", &Config::redis_port, 1, 65535, "Redis TCP port"),
    integer(kRedis, "REDIS_DB", &Config::redis_db, 0, 1023, "Redis database number"),
    text(kRedis, "REDIS_SOCKET", &Config::redis_socket, TextRule::socket_path,
         "Unix socket of Redis; wins over REDIS_HOST and REDIS_PORT"),
    text(kRedis, "REDIS_USERNAME", &Config::redis_username, TextRule::user,
         "ACL user name (not set: the default user)"),
    as_secret(text(kRedis, "REDIS_PASSWORD", &Config::redis_password, TextRule::any,
                   "Redis password; as a flag it shows in ps, so prefer REDIS_PASSWORD_FILE")),
    text(kRedis, "REDIS_PASSWORD_FILE", &Config::redis_password_file, TextRule::path,
         "File whose first line is the Redis password"),
    integer(kRedis, "P35_CONNECT_TIMEOUT_MS", &Config::connect_timeout_ms, 1, 600000,
            "Timeout of one connection attempt, milliseconds"),
    integer(kRedis, "P35_COMMAND_TIMEOUT_MS", &Config::command_timeout_ms, 1, 600000,
            "Timeout of one Redis command, milliseconds; must exceed P35_BLOCK_MS"),
    integer(kRedis, "P35_RECONNECT_MAX_MS", &Config::reconnect_max_ms, 50, 600000,
            "Cap of the reconnect backoff (which starts at 50 ms), milliseconds"),

    text(kSentinel, "REDIS_SENTINELS", &Config::redis_sentinels, TextRule::host_port_list,
         "Comma-separated host:port list of Redis Sentinels; when set, the primary is asked "
         "from them and REDIS_HOST, REDIS_PORT and REDIS_SOCKET are ignored"),
    text(kSentinel, "REDIS_SENTINEL_MASTER", &Config::sentinel_master, TextRule::name,
         "Name of the primary the sentinels monitor"),
    text(kSentinel, "REDIS_SENTINEL_USERNAME", &Config::sentinel_username, TextRule::user,
         "ACL user of the sentinels themselves (not set: their default user)"),
    as_secret(text(kSentinel, "REDIS_SENTINEL_PASSWORD", &Config::sentinel_password, TextRule::any,
                   "Password of the sentinels themselves; prefer REDIS_SENTINEL_PASSWORD_FILE")),
    text(kSentinel, "REDIS_SENTINEL_PASSWORD_FILE", &Config::sentinel_password_file,
         TextRule::path, "File whose first line is the sentinels' password"),
    integer(kSentinel, "P35_WAIT_REPLICAS", &Config::wait_replicas, 0, 64,
            "Replicas that must hold each commit (Redis WAIT) before its entries are acked "
            "(0: do not wait)"),
    integer(kSentinel, "P35_WAIT_TIMEOUT_MS", &Config::wait_timeout_ms, 1, 600000,
            "Timeout of one WAIT, milliseconds; rollup waits again until the replicas have "
            "the commit"),

    text(kLogging, "LOG_LEVEL", &Config::log_level, TextRule::log_level,
         "DEBUG, INFO, WARNING, ERROR or CRITICAL (or trace, warn, err, off), any case"),
    boolean(kLogging, "ENABLE_SYMBOL_BREAKDOWN", &Config::symbol_breakdown,
            "Count symbol_reason:<SYMBOL>:<R> fields in the minute buckets"),

    text(kNames, "P35_STREAM", &Config::stream, TextRule::name, "Stream of apply results"),
    text(kNames, "P35_GROUP", &Config::group, TextRule::name, "Consumer group"),
    with_note(text(kNames, "P35_CONSUMER", &Config::consumer, TextRule::optional_name,
                   "Consumer name; keep it stable so pending entries are never stranded"),
              "the host name"),
    text(kNames, "P35_SHM_NAME", &Config::shm_name, TextRule::shm_name,
         "Shared-memory segment under /dev/shm, [A-Za-z0-9._-]{1,200}, not starting with '.'"),
    text(kNames, "P35_KEY_PREFIX", &Config::key_prefix, TextRule::name,
         "Prefix of every key written, so tests and tenants can share one Redis"),

    integer(kTiming, "P35_BATCH_SIZE", &Config::batch_size, 1, 100000,
            "Entries per XREADGROUP (COUNT)"),
    integer(kTiming, "P35_BLOCK_MS", &Config::block_ms, 1, 60000,
            "XREADGROUP BLOCK time, milliseconds (also how often an idle ingest wakes up)"),
    integer(kTiming, "P35_READ_LINGER_MS", &Config::read_linger_ms, 0, 1000,
            "After a batch smaller than P35_BATCH_SIZE, how long ingest waits before reading "
            "again so that a trickle arrives in fewer, larger batches, milliseconds (0: at once)"),
    integer(kTiming, "P35_ACK_BATCH", &Config::ack_batch, 1, 100000, "IDs per XACK"),
    integer(kTiming, "P35_ACK_LINGER_MS", &Config::ack_linger_ms, 0, 1000,
            "While traffic flows, ackd acks after every second commit, and at the latest this "
            "long after its previous XACK round, milliseconds (0: after every commit); the IDs it "
            "holds back are committed already, only their XACK waits"),
    integer(kTiming, "P35_COMMIT_LINGER_MS", &Config::commit_linger_ms, 0, 10000,
            "After a commit of only full batches (a backlog being drained), how long rollup "
            "waits before the next commit so that it carries several batches, milliseconds "
            "(0: commit at once; live traffic is always committed at once)"),
    integer(kTiming, "P35_SNAPSHOT_INTERVAL_MS", &Config::snapshot_interval_ms, 100, 3600000,
            "Period of the window snapshots, milliseconds"),
    integer(kTiming, "P35_STATUS_INTERVAL_MS", &Config::status_interval_ms, 100, 3600000,
            "Period of the status hash updates, milliseconds"),
    integer(kTiming, "P35_CLAIM_IDLE_MS", &Config::claim_idle_ms, 1000, 86400000,
            "Idle time before other consumers' pending entries are taken over, milliseconds"),
    integer(kTiming, "P35_OWNER_TTL_MS", &Config::owner_ttl_ms, 2000, 600000,
            "Expiry of the consumer name's ownership key, milliseconds: one instance holds a name "
            "at a time and renews it every third of this; a second instance with the same name "
            "waits and takes over this long after the holder is gone"),
    integer(kTiming, "P35_BUCKET_TTL_S", &Config::bucket_ttl_s, 60, 31536000,
            "TTL of the minute buckets, seconds"),
    integer(kTiming, "P35_SNAPSHOT_TTL_S", &Config::snapshot_ttl_s, 60, 31536000,
            "TTL of the window snapshots, seconds"),

    integer(kCapacity, "P35_RING_SLOTS", &Config::ring_slots, 64, 4096,
            "Minute ring slots, one per UTC minute"),
    integer(kCapacity, "P35_LATE_SLOTS", &Config::late_slots, 1, 256,
            "Extra slots for minutes older than the ring"),
    integer(kCapacity, "P35_REASONS_PER_MINUTE", &Config::reasons_per_minute, 16, 1048576,
            "Distinct reasons per minute slot"),
    integer(kCapacity, "P35_SYMBOL_REASONS_PER_MINUTE", &Config::symbol_reasons_per_minute, 16,
            1048576, "Distinct (symbol, reason) pairs per minute slot"),
    integer(kCapacity, "P35_UNKNOWN_PER_MINUTE", &Config::unknown_per_minute, 4, 65536,
            "Distinct unknown decisions per minute slot"),
    integer(kCapacity, "P35_STRINGS", &Config::strings, 64, 4194304,
            "Interned reason and symbol strings"),
    integer(kCapacity, "P35_ID_LOG", &Config::id_log, 1024, 16777216,
            "Stream IDs awaiting their XACK"),
};

// --- values ----------------------------------------------------------------------------------

bool is_space_or_control(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u <= 0x20 || u == 0x7F;
}

bool is_control(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7F;
}

bool any_of(std::string_view s, bool (*pred)(char)) {
  for (char c : s) {
    if (pred(c)) return true;
  }
  return false;
}

bool is_shm_name(std::string_view s) {
  if (s.empty() || s.size() > 200 || s.front() == '.') return false;
  for (char c : s) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Why `value` breaks `rule`, or nothing when it does not.
std::optional<std::string_view> text_problem(TextRule rule, std::string_view value) {
  const bool named = !value.empty() && !any_of(value, is_space_or_control);
  switch (rule) {
    case TextRule::any:
      return std::nullopt;
    case TextRule::host:
    case TextRule::user:
      if (any_of(value, is_space_or_control))
        return "must not contain spaces or control characters";
      return std::nullopt;
    case TextRule::socket_path:  // sun_path holds 108 bytes including the terminating NUL
      if (value.size() > 107 || any_of(value, is_control))
        return "must be a path of at most 107 bytes without control characters";
      return std::nullopt;
    case TextRule::path:
      if (any_of(value, is_control)) return "must not contain control characters";
      return std::nullopt;
    case TextRule::name:
      if (!named) return "must be non-empty, without spaces or control characters";
      return std::nullopt;
    case TextRule::optional_name:
      if (!value.empty() && !named)
        return "must be empty (the host name) or a name without spaces or control characters";
      return std::nullopt;
    case TextRule::shm_name:
      if (!is_shm_name(value))
        return "must be 1..200 characters from A-Z a-z 0-9 . _ - and not start with '.'";
      return std::nullopt;
    case TextRule::host_port_list:
      return std::nullopt;
    case TextRule::log_level:
      if (!valid_log_level(value))
        return "must be one of DEBUG INFO WARNING ERROR CRITICAL (or trace, warn, err, off), any "
               "case";
      return std::nullopt;
  }
  return std::nullopt;
}

// Strict: the whole text is one decimal integer (optional '-'), no spaces, '+' or overflow.
std::optional<int> parse_int(std::string_view s) {
  int value = 0;
  const char* last = s.data() + s.size();
  const auto [ptr, ec] = std::from_chars(s.data(), last, value);
  if (s.empty() || ec != std::errc{} || ptr != last) return std::nullopt;
  return value;
}

std::string ascii_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::optional<bool> parse_bool(std::string_view s) {
  const std::string lower = ascii_lower(s);
  if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return true;
  if (lower == "false" || lower == "0" || lower == "no" || lower == "off") return false;
  return std::nullopt;
}

// A value as an error message shows it: quoted, escaped, cut, so a binary or huge value stays
// one readable line.
std::string quoted(std::string_view value) {
  constexpr std::size_t kMaxShownBytes = 100;
  std::string out = "\"";
  for (std::size_t i = 0; i < value.size() && i < kMaxShownBytes; ++i) {
    const char c = value[i];
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (is_control(c)) {
      out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
    } else {
      out += c;
    }
  }
  if (value.size() > kMaxShownBytes) out += "...";
  return out + "\"";
}

std::string kebab(std::string_view variable) {
  if (variable.starts_with("P35_")) variable.remove_prefix(4);
  std::string out = ascii_lower(variable);
  for (char& c : out) {
    if (c == '_') c = '-';
  }
  return out;
}

// --- applying one setting ---------------------------------------------------------------------

// One value for a variable and where it came from, for error messages.
struct Setting {
  std::string value;
  std::string origin;  // "env file /etc/...", or empty for the environment and flags
  bool from_flag = false;
};

using Settings = std::map<std::string_view, Setting, std::less<>>;

[[noreturn]] void throw_bad_value(const Option& o, const Setting& s, std::string_view reason) {
  const std::string who = s.from_flag
                              ? fmt::format("{} ({})", flag_for_variable(o.variable), o.variable)
                              : std::string(o.variable);
  const std::string shown = o.secret ? std::string() : " " + quoted(s.value);
  const std::string where = s.origin.empty() ? std::string() : " (set in " + s.origin + ")";
  throw ConfigError(fmt::format("invalid {}{}: {}{}", who, shown, reason, where));
}

void apply(const Option& o, const Setting& s, Config& cfg) {
  switch (o.kind) {
    case Kind::integer: {
      const std::optional<int> v = parse_int(s.value);
      if (!v || *v < o.min_value || *v > o.max_value)
        throw_bad_value(o, s, fmt::format("must be an integer {}..{}", o.min_value, o.max_value));
      cfg.*o.int_field = *v;
      return;
    }
    case Kind::boolean: {
      const std::optional<bool> v = parse_bool(s.value);
      if (!v) throw_bad_value(o, s, "must be true/false, 1/0, yes/no or on/off (any case)");
      cfg.*o.bool_field = *v;
      return;
    }
    case Kind::text:
      if (const auto problem = text_problem(o.rule, s.value)) throw_bad_value(o, s, *problem);
      cfg.*o.text_field = s.value;
      return;
  }
}

void layer_environment(Settings& settings, const Environment& env, const std::string& origin) {
  for (const Option& o : kOptions) {
    if (const auto it = env.find(o.variable); it != env.end())
      settings[o.variable] = Setting{it->second, origin, false};
  }
}

void layer_flags(Settings& settings, const cxxopts::ParseResult& flags) {
  for (const Option& o : kOptions) {
    const std::string name = kebab(o.variable);
    if (flags.count(name) != 0)
      settings[o.variable] = Setting{flags[name].as<std::string>(), std::string(), true};
  }
}

// --- files -------------------------------------------------------------------------------------

std::string errno_text(int error) {
  return std::error_code(error, std::generic_category()).message();
}

// Reads a whole small file with plain POSIX calls, so a directory or a permission problem gets
// the kernel's own words. `what` names the file's role in the message.
std::string read_small_file(const std::string& path, std::string_view what) {
  constexpr std::size_t kMaxBytes = 1 << 20;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw ConfigError(fmt::format("cannot read {} {}: {}", what, quoted(path), errno_text(errno)));
  std::string content;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || content.size() > kMaxBytes) {
      const int error = n < 0 ? errno : EFBIG;
      ::close(fd);
      throw ConfigError(
          fmt::format("cannot read {} {}: {}", what, quoted(path), errno_text(error)));
    }
    if (n == 0) break;
    content.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return content;
}

std::string_view trim(std::string_view s) {
  constexpr std::string_view kBlank = " \t\r";
  const auto first = s.find_first_not_of(kBlank);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kBlank) - first + 1);
}

bool valid_key(std::string_view key) {
  if (key.empty() || (key.front() >= '0' && key.front() <= '9')) return false;
  for (char c : key) {
    const bool ok =
        (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

// Adds one env-file line to `env`; false when the line is malformed.
bool parse_env_line(std::string_view line, Environment& env) {
  line = trim(line);
  if (line.empty() || line.front() == '#') return true;
  if (line.starts_with("export") && line.size() > 6 && (line[6] == ' ' || line[6] == '\t'))
    line = trim(line.substr(6));
  const auto eq = line.find('=');
  if (eq == std::string_view::npos) return false;
  const std::string_view key = trim(line.substr(0, eq));
  std::string_view value = trim(line.substr(eq + 1));
  if (!valid_key(key)) return false;
  if (!value.empty() && (value.front() == '"' || value.front() == '\'')) {
    if (value.size() < 2 || value.back() != value.front()) return false;  // unterminated quote
    value = value.substr(1, value.size() - 2);
  }
  env.insert_or_assign(std::string(key), std::string(value));
  return true;
}

std::string read_password_file(const std::string& path, std::string_view variable) {
  const std::string content = read_small_file(path, variable);
  std::string_view line = std::string_view(content).substr(0, content.find('\n'));
  if (line.ends_with('\r')) line.remove_suffix(1);
  if (line.empty())
    throw ConfigError(
        fmt::format("invalid {} {}: its first line is empty, "
                    "it must hold the password",
                    variable, quoted(path)));
  return std::string(line);
}

// --- cross-field checks and derived values -----------------------------------------------------

std::string host_name() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0)
    throw ConfigError(fmt::format("P35_CONSUMER is not set and the host name cannot be read: {}",
                                  errno_text(errno)));
  const std::string name(buf);
  if (text_problem(TextRule::name, name))
    throw ConfigError(
        fmt::format("P35_CONSUMER is not set and the host name {} is no valid "
                    "consumer name; set P35_CONSUMER",
                    quoted(name)));
  return name;
}

void check_timeouts(const Config& cfg) {
  if (cfg.command_timeout_ms <= cfg.block_ms)
    throw ConfigError(fmt::format(
        "invalid P35_COMMAND_TIMEOUT_MS \"{}\": must be greater than P35_BLOCK_MS ({}), because "
        "hiredis's read timeout must outlive XREADGROUP BLOCK or every quiet period looks like a "
        "failure",
        cfg.command_timeout_ms, cfg.block_ms));
}

// The sentinel list parsed, the sentinels' password read from its file: kept apart from the data
// password, and as secret.
void finish_sentinels(Config& cfg, std::vector<std::string>& secrets) {
  cfg.sentinels = parse_host_port_list(cfg.redis_sentinels, "REDIS_SENTINELS");
  if (!cfg.sentinel_password.empty() && !cfg.sentinel_password_file.empty())
    throw ConfigError(
        "REDIS_SENTINEL_PASSWORD and REDIS_SENTINEL_PASSWORD_FILE are both set: use only one of "
        "them");
  if (!cfg.sentinel_password_file.empty()) {
    cfg.sentinel_password =
        read_password_file(cfg.sentinel_password_file, "REDIS_SENTINEL_PASSWORD_FILE");
    secrets.push_back(cfg.sentinel_password);
  }
}

// Checks that span fields, reads the password file and fills the consumer. `secrets` learns the
// password read from the file so that no later message can show it.
void finish(Config& cfg, std::vector<std::string>& secrets) {
  check_timeouts(cfg);
  if (cfg.redis_host.empty() && cfg.redis_socket.empty())
    throw ConfigError(
        "invalid REDIS_HOST \"\": must name the Redis server when REDIS_SOCKET is not set");
  if (!cfg.redis_password.empty() && !cfg.redis_password_file.empty())
    throw ConfigError("REDIS_PASSWORD and REDIS_PASSWORD_FILE are both set: use only one of them");
  if (!cfg.redis_password_file.empty()) {
    cfg.redis_password = read_password_file(cfg.redis_password_file, "REDIS_PASSWORD_FILE");
    secrets.push_back(cfg.redis_password);
  }
  finish_sentinels(cfg, secrets);
  if (cfg.consumer.empty()) cfg.consumer = host_name();
}

// --- command line and help ---------------------------------------------------------------------

cxxopts::Options make_cxxopts(const ProgramInfo& info) {
  cxxopts::Options options(std::string(info.name), std::string(info.description));
  auto add = options.add_options();
  add("h,help", "print this help and exit");
  add("version", "print the version and exit");
  add("check-config", "validate the settings, print them (no secrets) and exit");
  add("env-file", "read settings from FILE", cxxopts::value<std::string>());
  for (const Option& o : kOptions) {
    auto value = cxxopts::value<std::string>();
    if (o.kind == Kind::boolean) value->implicit_value("true");  // bare --enable-symbol-breakdown
    add(kebab(o.variable), std::string(o.help), value);
  }
  return options;
}

std::string default_text(const Option& o) {
  if (o.secret) return std::string();
  if (!o.default_note.empty()) return std::string(o.default_note);
  const Config defaults;
  switch (o.kind) {
    case Kind::integer:
      return std::to_string(defaults.*o.int_field);
    case Kind::boolean:
      return defaults.*o.bool_field ? "true" : "false";
    case Kind::text:
      return (defaults.*o.text_field).empty() ? "not set" : defaults.*o.text_field;
  }
  return std::string();
}

std::string_view placeholder(const Option& o) {
  if (o.kind == Kind::integer) return "N";
  if (o.kind == Kind::boolean) return "BOOL";
  switch (o.rule) {
    case TextRule::any:
      return "SECRET";
    case TextRule::host:
      return "HOST";
    case TextRule::user:
      return "USER";
    case TextRule::socket_path:
    case TextRule::path:
      return "PATH";
    case TextRule::log_level:
      return "LEVEL";
    case TextRule::host_port_list:
      return "HOST:PORT,...";
    case TextRule::name:
    case TextRule::optional_name:
    case TextRule::shm_name:
      return "NAME";
  }
  return "VALUE";
}

void append_help_row(std::string& out, std::string_view left, std::string_view right,
                     std::string_view help) {
  out += fmt::format("  {:<38} {}\n", left, right);
  if (!help.empty()) out += fmt::format("      {}\n", help);
}

void append_option_help(std::string& out, const Option& o) {
  const std::string left = fmt::format("{}={}", flag_for_variable(o.variable), placeholder(o));
  const std::string right = o.secret ? fmt::format("{} (secret: never printed)", o.variable)
                                     : fmt::format("{} (default: {})", o.variable, default_text(o));
  const std::string range =
      o.kind == Kind::integer ? fmt::format(", {}..{}", o.min_value, o.max_value) : std::string();
  append_help_row(out, left, right, fmt::format("{}{}.", o.help, range));
}

std::string help_text(const ProgramInfo& info) {
  std::string out = fmt::format("Usage: {} [OPTION]...\n{}\n\n", info.name, info.description);
  out +=
      "Each option can also be set by the environment variable named next to it, or in the file\n"
      "given by --env-file (KEY=VALUE lines, as in /etc/quantum/p35-decision-intelligence.env).\n"
      "Precedence: defaults < --env-file < environment < flags. Write values as --name=VALUE;\n"
      "booleans take true/false, 1/0, yes/no or on/off.\n\nGeneral:\n";
  append_help_row(out, "-h, --help", "print this help and exit", "");
  append_help_row(out, "--version", "print the version and exit", "");
  append_help_row(out, "--check-config", "validate the settings, print them (no secrets), exit",
                  "Exit code 0 when valid, 78 (EX_CONFIG) with the reason on stderr when not.");
  append_help_row(out, "--env-file=FILE", "read settings from FILE (no variable)", "");
  std::string_view group;
  for (const Option& o : kOptions) {
    if (o.group != group) {
      group = o.group;
      out += fmt::format("\n{}:\n", group);
    }
    append_option_help(out, o);
  }
  return out;
}

// --- secrets -----------------------------------------------------------------------------------

// Every value a secret may have, from the environment and the command line, gathered before
// anything can fail so that scrub() can take them out of any message.
std::vector<std::string> known_secrets(int argc, const char* const* argv, const Environment& env) {
  std::vector<std::string> secrets;
  for (const Option& o : kOptions) {
    if (!o.secret) continue;
    if (const auto it = env.find(o.variable); it != env.end()) secrets.push_back(it->second);
    const std::string flag = flag_for_variable(o.variable);
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i];
      if (arg == flag && i + 1 < argc) secrets.emplace_back(argv[i + 1]);
      if (arg.starts_with(flag + "=")) secrets.emplace_back(arg.substr(flag.size() + 1));
    }
  }
  return secrets;
}

void add_file_secrets(const Environment& file_env, std::vector<std::string>& secrets) {
  for (const Option& o : kOptions) {
    if (!o.secret) continue;
    if (const auto it = file_env.find(o.variable); it != file_env.end())
      secrets.push_back(it->second);
  }
}

// Safety net under the rule that messages never quote a secret.
std::string scrub(std::string message, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    if (secret.empty()) continue;
    for (auto pos = message.find(secret); pos != std::string::npos;
         pos = message.find(secret, pos + 3))
      message.replace(pos, secret.size(), "***");
  }
  return message;
}

// --- parsing -----------------------------------------------------------------------------------

std::optional<ParseResult> help_or_version(const cxxopts::ParseResult& flags,
                                           const ProgramInfo& info) {
  ParseResult result;
  result.exit_now = true;
  if (flags.count("help") != 0) {
    result.out_text = help_text(info);
    return result;
  }
  if (flags.count("version") != 0) {
    result.out_text = fmt::format("{} {}\n", info.name, P35_VERSION);
    return result;
  }
  return std::nullopt;
}

void reject_positional(const std::vector<std::string>& unmatched) {
  if (unmatched.empty()) return;
  throw ConfigError(
      fmt::format("unexpected argument {} on the command line: options are written "
                  "--name=VALUE (see --help)",
                  quoted(unmatched.front())));
}

// systemd's LoadCredential=redis-password:<file> puts the password in a file that only this
// service can read, $CREDENTIALS_DIRECTORY/redis-password; it is used when no password is set
// otherwise.
// The sentinels' password likewise from $CREDENTIALS_DIRECTORY/redis-sentinel-password.
void use_systemd_credential(std::string& password, std::string& password_file,
                            std::string_view credential, const Environment& env) {
  if (!password.empty() || !password_file.empty()) return;
  const auto dir = env.find(kCredentialsDirectory);
  if (dir == env.end() || dir->second.empty()) return;
  const std::string path = dir->second + "/" + std::string(credential);
  if (::access(path.c_str(), F_OK) == 0) password_file = path;
}

ParseResult parse_checked(int argc, const char* const* argv, const ProgramInfo& info,
                          const Environment& env, std::vector<std::string>& secrets) {
  cxxopts::Options options = make_cxxopts(info);
  const cxxopts::ParseResult flags = options.parse(argc, argv);
  if (auto early = help_or_version(flags, info)) return std::move(*early);
  reject_positional(flags.unmatched());

  ParseResult result;
  Settings settings;
  if (flags.count("env-file") != 0) {
    result.config.env_file = flags["env-file"].as<std::string>();
    const Environment file_env = read_env_file(result.config.env_file);
    add_file_secrets(file_env, secrets);
    layer_environment(settings, file_env, "env file " + result.config.env_file);
  }
  layer_environment(settings, env, std::string());
  layer_flags(settings, flags);
  for (const Option& o : kOptions) {
    if (const auto it = settings.find(o.variable); it != settings.end())
      apply(o, it->second, result.config);
  }
  Config& c = result.config;
  use_systemd_credential(c.redis_password, c.redis_password_file, kRedisPasswordCredential, env);
  use_systemd_credential(c.sentinel_password, c.sentinel_password_file,
                         kSentinelPasswordCredential, env);
  finish(result.config, secrets);
  result.check_config = flags.count("check-config") != 0;
  return result;
}

}  // namespace

std::string flag_for_variable(std::string_view variable) {
  return "--" + kebab(variable);
}

std::vector<HostPort> parse_host_port_list(std::string_view text, std::string_view variable) {
  std::vector<HostPort> out;
  if (text.empty()) return out;
  for (size_t start = 0;;) {
    const size_t comma = text.find(',', start);
    const std::string_view item = trim(text.substr(start, comma - start));
    const auto bad = [&](std::string_view why) {
      return ConfigError(fmt::format("invalid {} item {}: {} (the list is comma-separated "
                                     "host:port, e.g. 10.0.0.1:26379,[::1]:26379)",
                                     variable, quoted(item), why));
    };
    const size_t colon = item.rfind(':');
    if (item.empty() || colon == std::string_view::npos || colon == 0)
      throw bad("must be host:port");
    std::string_view host = item.substr(0, colon);
    if (host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    const std::optional<int> port = parse_int(item.substr(colon + 1));
    if (!port || *port < 1 || *port > 65535) throw bad("the port must be an integer 1..65535");
    if (host.empty() || any_of(host, is_space_or_control))
      throw bad("the host must be non-empty, without spaces or control characters");
    out.push_back(HostPort{std::string(host), *port});
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

Environment process_environment() {
  Environment env;
  for (const Option& o : kOptions) {
    const std::string name(o.variable);
    if (const char* value = std::getenv(name.c_str())) env.emplace(name, value);
  }
  if (const char* dir = std::getenv(std::string(kCredentialsDirectory).c_str()))
    env.emplace(kCredentialsDirectory, dir);
  return env;
}

Environment read_env_file(const std::string& path) {
  const std::string content = read_small_file(path, "env file");
  std::string_view rest = content;
  if (rest.starts_with("\xEF\xBB\xBF")) rest.remove_prefix(3);  // a UTF-8 BOM from some editors
  Environment env;
  for (int line_no = 1; !rest.empty(); ++line_no) {
    const auto end = rest.find('\n');
    const std::string_view line = rest.substr(0, end);
    rest = end == std::string_view::npos ? std::string_view() : rest.substr(end + 1);
    // The line itself is not quoted: it may hold a password.
    if (!parse_env_line(line, env))
      throw ConfigError(
          fmt::format("{}:{}: malformed line: expected KEY=VALUE, export KEY=VALUE, "
                      "a # comment or a blank line",
                      path, line_no));
  }
  return env;
}

ParseResult parse_config(int argc, const char* const* argv, const ProgramInfo& info,
                         const Environment& env) {
  std::vector<std::string> secrets = known_secrets(argc, argv, env);
  try {
    return parse_checked(argc, argv, info, env, secrets);
  } catch (const ConfigError& e) {
    throw ConfigError(scrub(e.what(), secrets));
  } catch (const cxxopts::exceptions::exception& e) {
    throw ConfigError(
        scrub(fmt::format("invalid command line: {} (see --help)", e.what()), secrets));
  }
}

std::string describe(const Config& cfg) {
  std::string target;
  if (!cfg.sentinels.empty()) {
    target = fmt::format("sentinel:{}@{}", cfg.sentinel_master, cfg.redis_sentinels);
  } else if (!cfg.redis_socket.empty()) {
    target = "unix:" + cfg.redis_socket;
  } else if (cfg.redis_host.find(':') != std::string::npos) {
    target = fmt::format("[{}]:{}", cfg.redis_host, cfg.redis_port);  // IPv6 literal
  } else {
    target = fmt::format("{}:{}", cfg.redis_host, cfg.redis_port);
  }
  const bool has_password = !cfg.redis_password.empty() || !cfg.redis_password_file.empty();
  std::string line = fmt::format("redis={} db={} user={} password={}", target, cfg.redis_db,
                                 cfg.redis_username.empty() ? "default" : cfg.redis_username,
                                 has_password ? "***" : "none");
  if (!cfg.redis_password_file.empty()) line += " password_file=" + cfg.redis_password_file;
  if (!cfg.sentinels.empty()) {
    const bool sentinel_password =
        !cfg.sentinel_password.empty() || !cfg.sentinel_password_file.empty();
    line += fmt::format(" sentinel_user={} sentinel_password={} wait_replicas={}",
                        cfg.sentinel_username.empty() ? "default" : cfg.sentinel_username,
                        sentinel_password ? "***" : "none", cfg.wait_replicas);
  } else if (cfg.wait_replicas > 0) {
    line += fmt::format(" wait_replicas={}", cfg.wait_replicas);
  }
  line += fmt::format(" stream={} group={} consumer={} shm={} key_prefix={} symbol_breakdown={}",
                      cfg.stream, cfg.group, cfg.consumer, cfg.shm_name, cfg.key_prefix,
                      cfg.symbol_breakdown ? "on" : "off");
  return line;
}

std::string effective_settings(const Config& cfg) {
  std::string out;
  if (!cfg.env_file.empty()) out += fmt::format("# env file: {}\n", cfg.env_file);
  for (const Option& o : kOptions) {
    std::string value;
    if (o.secret) {
      value = (cfg.*o.text_field).empty() ? "unset" : "set";  // also when read from a file
    } else if (o.kind == Kind::integer) {
      value = std::to_string(cfg.*o.int_field);
    } else if (o.kind == Kind::boolean) {
      value = cfg.*o.bool_field ? "true" : "false";
    } else {
      value = cfg.*o.text_field;
    }
    out += fmt::format("{}={}\n", o.variable, value);
  }
  return out;
}

std::vector<OptionDoc> option_docs() {
  std::vector<OptionDoc> docs;
  for (const Option& o : kOptions)
    docs.push_back(OptionDoc{o.variable, flag_for_variable(o.variable), default_text(o), o.secret});
  return docs;
}

}  // namespace p35
