// Integration-test harness: runs the real p35-ingest, p35-rollup and p35-ackd binaries against a
// private redis-server, kills and restarts them, waits for a drain, and compares the buckets with
// an expectation file written by p35-loadgen.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "process.hpp"
#include "redis_fixture.hpp"

namespace p35::test {

enum class Stage { Ingest = 0, Rollup = 1, Ackd = 2 };
inline constexpr std::array<Stage, 3> kStages{Stage::Ingest, Stage::Rollup, Stage::Ackd};
const char* stage_label(Stage s);

std::string env_or(const char* name, const std::string& fallback);

struct PipelineOptions {
  std::string consumer = "p35test";
  std::string shm_name;   // default: unique per process and pipeline
  std::string key_prefix = "quantum:p35:";
  std::string stream = "quantum:stream:apply.result";
  std::map<std::string, std::string> env;  // extra variables (P35_BATCH_SIZE, ...)
  std::string log_dir;    // default: the redis server's dir
  // Run the stages as a Redis ACL user with exactly the rule of systemd/p35-redis.acl (key
  // patterns for this stream and prefix), via REDIS_USERNAME and REDIS_PASSWORD_FILE; false: the
  // default user.
  bool acl_user = true;
};

// `o` with per-minute tables and a string table that hold every distinct value of a
// p35-loadgen corpus of this suite's volumes. Its realistic mix gives about one entry in twenty a
// never-repeating reason (an exchange error with its order ID), so a minute of more than ~18,000
// entries outgrows the default reason table (896): a test of such volume that compares every field
// needs the room, or its counts would sit in __overflow__, which compare_buckets() refuses.
PipelineOptions roomy_tables(PipelineOptions o = {});

// The shipped ACL rule (systemd/p35-redis.acl, or $P35_ACL_FILE) as ACL SETUSER arguments for
// `user`: "reset", its rules with the key patterns of `stream` and `key_prefix`, and ">password".
std::vector<std::string> acl_setuser_args(const std::string& user, const std::string& password,
                                          const std::string& stream, const std::string& key_prefix);
// A glob pattern that matches `text` literally (for ACL key patterns).
std::string glob_escape(const std::string& text);

class Pipeline {
 public:
  Pipeline(RedisServer& redis, PipelineOptions options = {});
  ~Pipeline();  // SIGKILL every stage and remove the segment

  void start(Stage s);
  void start_all();  // ackd, rollup, ingest: the target's order
  bool alive(Stage s);
  void kill(Stage s, int sig = 9);
  // SIGTERM and wait; returns the exit status.
  ExitStatus stop(Stage s, int deadline_ms = 20000);
  // Start again every stage that was started and has exited since (systemd's Restart=on-failure:
  // a stage that dropped the segment exits, and so do the others on their next heartbeat).
  // Returns how many it started.
  int restart_exited();
  void remove_segment();
  const std::string& shm_name() const { return opt_.shm_name; }
  const PipelineOptions& options() const { return opt_; }
  // The stages' Redis ACL user, its password and the file the stages read it from (empty without
  // acl_user).
  const std::string& acl_user() const { return acl_user_; }
  const std::string& password() const { return password_; }
  const std::string& password_file() const { return password_file_; }
  pid_t pid(Stage s) const;  // -1 when not started
  std::string log_path(Stage s) const;
  std::string logs_tail() const;  // the tail of every stage's log, for failure messages

 private:
  void create_acl_user();
  RedisServer& redis_;
  PipelineOptions opt_;
  std::string acl_user_, password_, password_file_;
  std::array<std::unique_ptr<ChildProcess>, 3> procs_;
};

// The group has nothing pending and nothing undelivered, and the marker equals the stream's last
// ID: every entry counted, committed and acked.
bool drained(Connection& conn, const PipelineOptions& opt);
bool wait_drained(RedisServer& redis, const PipelineOptions& opt, int timeout_ms);

// Run p35-loadgen with the given arguments against the server; returns its exit status.
ExitStatus run_loadgen(RedisServer& redis, const std::vector<std::string>& args,
                       const std::string& log_path = "");

struct Expectation {
  std::map<std::string, std::map<std::string, long long>> buckets;   // minute -> field -> count
  std::map<std::string, std::map<std::string, long long>> unknowns;  // minute -> member -> count
  long long total = 0;
};
Expectation read_expectation(const std::string& path);
// The expectation for whatever the stream holds now (XRANGE all of it), by the project's own
// rules (normalize()) into the layout compare_buckets() checks: counts exact against what Redis
// holds, e.g. after it came back from an older dump.
Expectation expectation_from_stream(Connection& conn, const std::string& stream,
                                    bool symbol_breakdown = true);
// Whether counts may sit in the __overflow__ fields. Strict by default: a count that went to
// __overflow__ means a per-minute table (or the string table) was full, which a test that does
// not flood a table on purpose must not hide. A test that floods one says Overflow::Expected.
enum class Overflow { Forbidden, Expected };

// Every bucket and unknown hash compared field by field (missing, extra, different); each
// difference is one line of the result. Overflow::Forbidden: every field exact, no __overflow__
// field in any bucket or unknown hash, and the status hash's overflow_*_total counters absent or
// 0. Overflow::Expected: a reason, symbol-reason or unknown field that did not fit its per-minute
// table may be missing as long as the family's __overflow__ field holds exactly what is missing
// (decision counts stay strict).
std::vector<std::string> compare_buckets(Connection& conn, const Expectation& e,
                                         const std::string& key_prefix,
                                         Overflow overflow = Overflow::Forbidden);

// The reasons of the expectation's minutes in the window of `minutes` minutes that ends with
// `now_minute` (minutes since the epoch), summed: reason -> count.
std::map<std::string, long long> window_reasons(const Expectation& e, int64_t now_minute,
                                                int minutes);
// Checks that `kept` (a top list, as read) is the top `n` of `all` by the contract's rule
// (docs/keys.md "Top-50 and ties"): min(n, |all|) members, each with its count in `all`, and no
// reason left out that counts more than the smallest kept one, or as much with a name that sorts
// before a kept one of that count. Independent of the product's top_n(). One line per violation.
std::vector<std::string> top_violations(const std::vector<std::pair<std::string, long long>>& kept,
                                        const std::map<std::string, long long>& all, size_t n);

std::map<std::string, std::string> hgetall(Connection& conn, const std::string& key);

}  // namespace p35::test
