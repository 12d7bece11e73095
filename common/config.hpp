// Configuration of every P3.5 program (DESIGN §6): defaults, the first version's env file,
// environment variables and command-line flags (flags win), validated with errors naming the variable.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace p35 {

// A bad value or a bad command line. what() names the variable (or flag) and the bad value, but
// never the value of a secret.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// One "host:port" item of REDIS_SENTINELS ("[::1]:26379" for an IPv6 literal).
struct HostPort {
  std::string host;
  int port = 0;
  bool operator==(const HostPort&) const = default;
};

// Parses a comma-separated "host:port" list (REDIS_SENTINELS). Throws ConfigError naming the bad
// item; `variable` names the setting in the message.
std::vector<HostPort> parse_host_port_list(std::string_view text, std::string_view variable);

struct Config {
  // Redis connection. REDIS_SOCKET wins over host and port when set; REDIS_SENTINELS wins over
  // all three (the primary is asked from the sentinels).
  std::string redis_host = "127.0.0.1";      // REDIS_HOST
  int redis_port = 6379;                     // REDIS_PORT, 1..65535
  int redis_db = 0;                          // REDIS_DB, 0..15 (validated 0..1023)
  std::string redis_socket;                  // REDIS_SOCKET
  std::string redis_username;                // REDIS_USERNAME
  std::string redis_password;                // REDIS_PASSWORD (secret; or REDIS_PASSWORD_FILE)
  std::string redis_password_file;           // REDIS_PASSWORD_FILE: first line is the password
  int connect_timeout_ms = 2000;             // P35_CONNECT_TIMEOUT_MS, 1..600000
  int command_timeout_ms = 10000;            // P35_COMMAND_TIMEOUT_MS; must exceed block_ms
  int reconnect_max_ms = 5000;               // P35_RECONNECT_MAX_MS, backoff cap

  // Redis Sentinel: the primary is resolved through these sentinels when the list is set.
  std::string redis_sentinels;               // REDIS_SENTINELS: "host:port,host:port"
  std::vector<HostPort> sentinels;           // parsed from redis_sentinels
  std::string sentinel_master = "mymaster";  // REDIS_SENTINEL_MASTER
  std::string sentinel_username;             // REDIS_SENTINEL_USERNAME
  std::string sentinel_password;             // REDIS_SENTINEL_PASSWORD (secret; or _FILE)
  std::string sentinel_password_file;        // REDIS_SENTINEL_PASSWORD_FILE: first line
  int wait_replicas = 0;                     // P35_WAIT_REPLICAS, 0..64: WAIT after each commit
  int wait_timeout_ms = 1000;                // P35_WAIT_TIMEOUT_MS, 1..600000: one WAIT's timeout

  std::string log_level = "INFO";            // LOG_LEVEL: DEBUG INFO WARNING ERROR CRITICAL,
                                             // and spdlog's trace debug info warn err critical off
  bool symbol_breakdown = true;              // ENABLE_SYMBOL_BREAKDOWN: true/false/1/0/yes/no/on/off

  // Stream, group, consumer and names.
  std::string stream = "quantum:stream:apply.result";  // P35_STREAM
  std::string group = "p35_decision_intel";            // P35_GROUP
  std::string consumer;                      // P35_CONSUMER, default: the host name
  std::string shm_name = "quantum-p35";      // P35_SHM_NAME: [A-Za-z0-9._-]{1,200}, no '/'
  std::string key_prefix = "quantum:p35:";   // P35_KEY_PREFIX, non-empty

  // Batching and intervals.
  int batch_size = 1000;                     // P35_BATCH_SIZE, 1..100000 (XREADGROUP COUNT)
  int block_ms = 5000;                       // P35_BLOCK_MS, 1..60000 (XREADGROUP BLOCK)
  int read_linger_ms = 40;                   // P35_READ_LINGER_MS, 0..1000
  int ack_batch = 1000;                      // P35_ACK_BATCH, 1..100000 (IDs per XACK)
  int ack_linger_ms = 100;                   // P35_ACK_LINGER_MS, 0..1000
  int commit_linger_ms = 20;                 // P35_COMMIT_LINGER_MS, 0..10000
  int snapshot_interval_ms = 1000;           // P35_SNAPSHOT_INTERVAL_MS, 100..3600000
  int status_interval_ms = 1000;             // P35_STATUS_INTERVAL_MS, 100..3600000
  int claim_idle_ms = 300000;                // P35_CLAIM_IDLE_MS, 1000..86400000
  int owner_ttl_ms = 10000;                  // P35_OWNER_TTL_MS, 2000..600000 (renewed every third)
  int bucket_ttl_s = 172800;                 // P35_BUCKET_TTL_S, 60..31536000
  int snapshot_ttl_s = 86400;                // P35_SNAPSHOT_TTL_S, 60..31536000

  // Shared-memory capacities, fixed when the segment is created.
  int ring_slots = 128;                      // P35_RING_SLOTS, 64..4096 (one per UTC minute)
  int late_slots = 8;                        // P35_LATE_SLOTS, 1..256
  int reasons_per_minute = 1024;             // P35_REASONS_PER_MINUTE, 16..1048576
  int symbol_reasons_per_minute = 4096;      // P35_SYMBOL_REASONS_PER_MINUTE, 16..1048576
  int unknown_per_minute = 64;               // P35_UNKNOWN_PER_MINUTE, 4..65536
  int strings = 32768;                       // P35_STRINGS, 64..4194304 (interned strings)
  int id_log = 65536;                        // P35_ID_LOG, 1024..16777216 (IDs awaiting ack)

  std::string env_file;                      // --env-file (no variable)
};

// What a program is, for --help and --version.
struct ProgramInfo {
  std::string_view name;         // "p35-ingest"
  std::string_view description;  // one paragraph for --help
};

struct ParseResult {
  bool exit_now = false;  // --help or --version was printed to `out_text`
  bool check_config = false;  // --check-config: validate, print effective_settings(), exit
  std::string out_text;
  Config config;
};

using Environment = std::map<std::string, std::string, std::less<>>;

// Set by systemd for a unit with LoadCredential=; the password is read from
// $CREDENTIALS_DIRECTORY/redis-password when neither REDIS_PASSWORD nor REDIS_PASSWORD_FILE is set.
inline constexpr std::string_view kCredentialsDirectory = "CREDENTIALS_DIRECTORY";
inline constexpr std::string_view kRedisPasswordCredential = "redis-password";
// The same for the sentinels' password: $CREDENTIALS_DIRECTORY/redis-sentinel-password.
inline constexpr std::string_view kSentinelPasswordCredential = "redis-sentinel-password";

// The process environment as a map (only the variables configuration may read, and
// CREDENTIALS_DIRECTORY).
Environment process_environment();

// Reads "KEY=VALUE" lines (optional `export `, # comments, blank lines, single or double quotes
// around the value) as the first version's /etc/quantum/p35-decision-intelligence.env.
// Throws ConfigError naming the file and line on a malformed line or an unreadable file.
Environment read_env_file(const std::string& path);

// defaults < env file (--env-file) < environment < flags. Validates everything, reads
// REDIS_PASSWORD_FILE when set (else $CREDENTIALS_DIRECTORY/redis-password when present), fills
// the consumer from the host name when empty.
// Throws ConfigError with a message naming the variable and the bad value.
ParseResult parse_config(int argc, const char* const* argv, const ProgramInfo& info,
                         const Environment& env);

// One line describing the connection target and names, with the password masked; for start-up logs.
std::string describe(const Config& cfg);

// Every setting as VARIABLE=value lines (--check-config), the password only as "set" or "unset".
std::string effective_settings(const Config& cfg);

// One row of the option table as --help shows it (for tests and documentation generators; the
// same table drives the flags and the environment lookup).
struct OptionDoc {
  std::string_view variable;  // "REDIS_PORT"
  std::string flag;           // "--redis-port"
  std::string default_text;   // what --help prints after "default: "; empty for a secret
  bool secret = false;        // value and default are never printed
};
std::vector<OptionDoc> option_docs();

// The flag of a variable: P35_ dropped, lower case, '_' → '-' ("P35_SHM_NAME" → "--shm-name").
std::string flag_for_variable(std::string_view variable);

}  // namespace p35
