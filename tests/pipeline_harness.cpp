// Integration-test harness: the three real stages, drains, loadgen runs and bucket comparison.
#include "pipeline_harness.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

#include "keys.hpp"
#include "rules.hpp"
#include "shm_test_util.hpp"
#include "stream_id.hpp"

namespace p35::test {

namespace {
std::atomic<int> g_pipelines{0};

const char* bin_var(Stage s) {
  switch (s) {
    case Stage::Ingest: return "P35_INGEST_BIN";
    case Stage::Rollup: return "P35_ROLLUP_BIN";
    case Stage::Ackd: return "P35_ACKD_BIN";
  }
  return "";
}
}  // namespace

const char* stage_label(Stage s) {
  switch (s) {
    case Stage::Ingest: return "ingest";
    case Stage::Rollup: return "rollup";
    case Stage::Ackd: return "ackd";
  }
  return "?";
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::string(v) : fallback;
}

Pipeline::Pipeline(RedisServer& redis, PipelineOptions options)
    : redis_(redis), opt_(std::move(options)) {
  if (opt_.shm_name.empty())
    opt_.shm_name = "p35test-" + std::to_string(getpid()) + "-" + std::to_string(g_pipelines++);
  if (opt_.log_dir.empty()) opt_.log_dir = redis_.dir();
  remove_segment();
  if (opt_.acl_user) create_acl_user();
}

PipelineOptions roomy_tables(PipelineOptions o) {
  o.env["P35_REASONS_PER_MINUTE"] = "32768";
  o.env["P35_SYMBOL_REASONS_PER_MINUTE"] = "32768";
  o.env["P35_UNKNOWN_PER_MINUTE"] = "4096";
  o.env["P35_STRINGS"] = "131072";
  return o;
}

std::string glob_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::vector<std::string> acl_setuser_args(const std::string& user, const std::string& password,
                                          const std::string& stream,
                                          const std::string& key_prefix) {
  const std::string path = env_or("P35_ACL_FILE", P35_SOURCE_ACL_FILE);
  std::ifstream in(path);
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  if (words.size() < 3 || words[0] != "user")
    throw std::runtime_error("cannot read the ACL rule (user <name> <rules...>) from " + path);
  std::vector<std::string> args{"ACL", "SETUSER", user, "reset"};
  for (size_t i = 2; i < words.size(); ++i) {
    if (words[i] == "~quantum:stream:apply.result") args.push_back("~" + glob_escape(stream));
    else if (words[i] == "~quantum:p35:*") args.push_back("~" + glob_escape(key_prefix) + "*");
    else args.push_back(words[i]);
  }
  args.push_back(">" + password);
  return args;
}

// A user per pipeline (several share one server in the take-over tests), saved to the server's
// ACL file so that it survives restart(); the password reaches the stages only through a file.
void Pipeline::create_acl_user() {
  acl_user_ = opt_.shm_name;
  std::random_device rd;
  password_ = fmt::format("pw-{:08x}{:08x}{:08x}", rd(), rd(), rd());
  password_file_ = opt_.log_dir + "/" + opt_.shm_name + ".redis-password";
  {
    const int fd = ::open(password_file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw std::runtime_error("cannot create " + password_file_);
    const std::string line = password_ + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(fd);
    if (!ok) throw std::runtime_error("cannot write " + password_file_);
  }
  const auto args = acl_setuser_args(acl_user_, password_, opt_.stream, opt_.key_prefix);
  CommandArgs setuser;
  for (const auto& a : args) setuser.add(a);
  Connection admin = redis_.connect();
  admin.command(setuser);
  admin.command({"ACL", "SAVE"});
}

pid_t Pipeline::pid(Stage s) const {
  const auto& p = procs_[static_cast<size_t>(s)];
  return p ? p->pid() : -1;
}

Pipeline::~Pipeline() {
  for (auto& p : procs_)
    if (p) p->kill_and_reap();
  remove_segment();
  // A stage killed while it created the segment leaves "<name>.init.<pid>", allocated in full;
  // the stages remove those only when they create a segment of the same name again.
  for (const auto& f : init_leftovers(opt_.shm_name)) ::unlink(("/dev/shm/" + f).c_str());
}

void Pipeline::remove_segment() { ::unlink(("/dev/shm/" + opt_.shm_name).c_str()); }

std::string Pipeline::log_path(Stage s) const {
  return opt_.log_dir + "/" + opt_.shm_name + "-" + stage_label(s) + ".log";
}

void Pipeline::start(Stage s) {
  auto& p = procs_[static_cast<size_t>(s)];
  if (p && p->alive()) return;
  SpawnOptions so;
  so.env = opt_.env;
  so.env["REDIS_SOCKET"] = redis_.socket_path();
  so.env["P35_SHM_NAME"] = opt_.shm_name;
  so.env["P35_CONSUMER"] = opt_.consumer;
  so.env["P35_KEY_PREFIX"] = opt_.key_prefix;
  so.env["P35_STREAM"] = opt_.stream;
  if (!acl_user_.empty()) {
    so.env["REDIS_USERNAME"] = acl_user_;
    so.env["REDIS_PASSWORD_FILE"] = password_file_;
    so.unset_env.push_back("REDIS_PASSWORD");
  }
  if (so.env.count("LOG_LEVEL") == 0) so.env["LOG_LEVEL"] = "INFO";
  so.log_path = log_path(s);
  p = std::make_unique<ChildProcess>(std::vector<std::string>{env_or(bin_var(s), "")}, so);
}

void Pipeline::start_all() {
  start(Stage::Ackd);
  start(Stage::Rollup);
  start(Stage::Ingest);
}

int Pipeline::restart_exited() {
  int started = 0;
  for (Stage s : {Stage::Ackd, Stage::Rollup, Stage::Ingest}) {
    auto& p = procs_[static_cast<size_t>(s)];
    if (!p || p->alive()) continue;
    start(s);
    ++started;
  }
  return started;
}

bool Pipeline::alive(Stage s) {
  auto& p = procs_[static_cast<size_t>(s)];
  return p && p->alive();
}

void Pipeline::kill(Stage s, int sig) {
  auto& p = procs_[static_cast<size_t>(s)];
  if (!p) return;
  if (sig == 9) {
    p->kill_and_reap();
  } else {
    p->send_signal(sig);
  }
}

ExitStatus Pipeline::stop(Stage s, int deadline_ms) {
  auto& p = procs_[static_cast<size_t>(s)];
  if (!p) throw std::logic_error(std::string("stage not started: ") + stage_label(s));
  if (p->alive()) p->send_signal(SIGTERM);
  auto st = p->wait_exit(deadline_ms);
  if (!st) return p->kill_and_reap();
  return *st;
}

std::string Pipeline::logs_tail() const {
  std::string out;
  for (Stage s : kStages)
    out += std::string("--- ") + stage_label(s) + " ---\n" + file_tail(log_path(s), 25);
  return out;
}

std::map<std::string, std::string> hgetall(Connection& conn, const std::string& key) {
  std::map<std::string, std::string> m;
  const Reply r = conn.command({"HGETALL", key});
  for (size_t i = 0; i + 1 < r.size(); i += 2)
    m[std::string(reply_str(r.element(i)))] = std::string(reply_str(r.element(i + 1)));
  return m;
}

bool drained(Connection& conn, const PipelineOptions& opt) {
  const Reply info = conn.command({"XINFO", "STREAM", opt.stream});
  std::string last;
  for (size_t i = 0; i + 1 < info.size(); i += 2)
    if (reply_str(info.element(i)) == "last-generated-id") last = std::string(reply_str(info.element(i + 1)));
  const Reply groups = conn.command({"XINFO", "GROUPS", opt.stream});
  long long pending = -1, lag = -1;
  for (size_t g = 0; g < groups.size(); ++g) {
    const redisReply* e = groups.element(g);
    for (size_t k = 0; k + 1 < e->elements; k += 2) {
      const auto name = reply_str(e->element[k]);
      if (name == "pending") pending = e->element[k + 1]->integer;
      if (name == "lag" && e->element[k + 1]->type == REDIS_REPLY_INTEGER) lag = e->element[k + 1]->integer;
    }
  }
  const Reply marker = conn.command({"GET", keys::marker(opt.key_prefix, opt.consumer)});
  return pending == 0 && lag == 0 && !marker.is_nil() && marker.str() == last;
}

bool wait_drained(RedisServer& redis, const PipelineOptions& opt, int timeout_ms) {
  return wait_until(
      [&] {
        try {
          Connection c = redis.connect();
          return drained(c, opt);
        } catch (const std::exception&) {
          return false;
        }
      },
      timeout_ms, 50);
}

ExitStatus run_loadgen(RedisServer& redis, const std::vector<std::string>& args,
                       const std::string& log_path) {
  // --force: the test's own Redis, whose stream may already have the stages' consumers.
  std::vector<std::string> argv{env_or("P35_LOADGEN_BIN", "p35-loadgen"), "--redis-socket",
                                redis.socket_path(), "--force"};
  argv.insert(argv.end(), args.begin(), args.end());
  SpawnOptions so;
  so.log_path = log_path;
  ChildProcess p(argv, so);
  auto st = p.wait_exit(600000);
  if (!st) throw std::runtime_error("p35-loadgen did not finish within 600 s");
  return *st;
}

Expectation read_expectation(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read expectation file " + path);
  Expectation e;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> parts;
    size_t start = 0;
    for (size_t tab; (tab = line.find('\t', start)) != std::string::npos; start = tab + 1)
      parts.push_back(line.substr(start, tab - start));
    parts.push_back(line.substr(start));
    if (parts[0] == "N" && parts.size() == 2) e.total = std::stoll(parts[1]);
    else if (parts[0] == "B" && parts.size() == 4) e.buckets[parts[1]][parts[2]] += std::stoll(parts[3]);
    else if (parts[0] == "U" && parts.size() == 4) e.unknowns[parts[1]][parts[2]] += std::stoll(parts[3]);
    else throw std::runtime_error("bad expectation line: " + line);
  }
  return e;
}

Expectation expectation_from_stream(Connection& conn, const std::string& stream,
                                    bool symbol_breakdown) {
  Expectation e;
  std::string from = "-";
  std::vector<Field> fields;
  Normalized n;
  for (;;) {
    const Reply r = conn.command({"XRANGE", stream, from, "+", "COUNT", "10000"});
    if (r.size() == 0) return e;
    for (size_t i = 0; i < r.size(); ++i) {
      const redisReply* entry = r.element(i);
      const auto id = StreamId::parse(reply_str(entry->element[0]));
      const redisReply* fv = entry->element[1];
      fields.clear();
      for (size_t k = 0; k + 1 < fv->elements; k += 2)
        fields.push_back({reply_str(fv->element[k]), reply_str(fv->element[k + 1])});
      normalize(fields, static_cast<int64_t>(id->ms), n);
      auto& b = e.buckets[minute_key(n.minute)];
      b["decision:" + n.decision_label()] += 1;
      b["reason:" + n.reason] += 1;
      if (symbol_breakdown && !n.symbol.empty()) b["symbol_reason:" + n.symbol + ":" + n.reason] += 1;
      if (n.decision == Decision::Unknown) e.unknowns[minute_key(n.minute)][n.unknown_member()] += 1;
      ++e.total;
      from = "(" + id->str();
    }
  }
}

namespace {

// Fields that share one fixed-capacity table in a minute slot; whatever did not fit went to the
// family's overflow field (DESIGN §4), so the family is exact as a whole.
struct Family {
  std::string prefix;
  std::string overflow;
};

const Family* family_of(const std::vector<Family>& fams, const std::string& field) {
  for (const auto& f : fams)
    if (field.rfind(f.prefix, 0) == 0) return &f;
  return nullptr;
}

// Fields outside any family must match exactly. Within a family, a field the table could not
// hold is counted in the overflow field instead: each field has at most its expected count, and
// the overflow field holds exactly the sum of what is missing.
void compare_hash(Connection& conn, const std::string& key,
                  const std::map<std::string, long long>& want, const std::vector<Family>& fams,
                  std::vector<std::string>& diffs) {
  const auto got = hgetall(conn, key);
  const auto value = [&](const std::string& f) {
    auto it = got.find(f);
    return it == got.end() ? 0LL : std::stoll(it->second);
  };
  std::map<std::string, long long> deficit;
  for (const auto& f : fams) deficit[f.overflow] = 0;
  for (const auto& [f, n] : want) {
    const long long g = value(f);
    const Family* fam = family_of(fams, f);
    if (g == n) continue;
    if (fam != nullptr && g < n && f != fam->overflow) {
      deficit[fam->overflow] += n - g;
      continue;
    }
    diffs.push_back(key + " " + f + ": want " + std::to_string(n) + " got " + std::to_string(g));
  }
  for (const auto& [f, v] : got) {
    if (want.count(f) != 0) continue;
    const Family* fam = family_of(fams, f);
    if (fam != nullptr && f == fam->overflow) continue;
    if (v == "0") continue;
    const bool overflow = f.find(keys::kOverflow) != std::string::npos;
    diffs.push_back(key + " unexpected " + f + " = " + v +
                    (overflow ? " (a table was full: counts went to __overflow__ without cause)" : ""));
  }
  for (const auto& [ov, missing] : deficit) {
    const long long want_ov = (want.count(ov) ? want.at(ov) : 0) + missing;
    if (value(ov) != want_ov)
      diffs.push_back(key + " " + ov + ": holds " + std::to_string(value(ov)) + " but " +
                      std::to_string(want_ov) + " counts did not fit their fields");
  }
}

// The status counters of what went to __overflow__ (docs/keys.md, the status hash): absent or 0
// when nothing did.
void check_no_overflow_totals(Connection& conn, const std::string& prefix,
                              std::vector<std::string>& diffs) {
  const std::string key = keys::status(prefix);
  const auto status = hgetall(conn, key);
  for (const char* f : {"overflow_reason_total", "overflow_symbol_reason_total",
                        "overflow_unknown_total", "overflow_string_total"}) {
    const auto it = status.find(f);
    if (it != status.end() && it->second != "0")
      diffs.push_back(key + " " + f + " = " + it->second +
                      ": counts went to __overflow__ without cause (a table was full; a test that "
                      "floods one on purpose passes Overflow::Expected)");
  }
}

}  // namespace

std::vector<std::string> compare_buckets(Connection& conn, const Expectation& e,
                                         const std::string& prefix, Overflow overflow) {
  std::vector<std::string> diffs;
  std::vector<Family> bucket_families, unknown_families;
  if (overflow == Overflow::Expected) {
    bucket_families = {{"reason:", "reason:__overflow__"},
                       {"symbol_reason:", "symbol_reason:__overflow__:__overflow__"},
                       {"decision:UNKNOWN", "decision:UNKNOWN:__overflow__"}};
    unknown_families = {{"", "__overflow__"}};
  } else {
    check_no_overflow_totals(conn, prefix, diffs);
  }
  for (const auto& [minute, fields] : e.buckets)
    compare_hash(conn, prefix + "bucket:" + minute, fields, bucket_families, diffs);
  for (const auto& [minute, members] : e.unknowns)
    compare_hash(conn, prefix + "unknown:" + minute, members, unknown_families, diffs);
  // Buckets the expectation does not know of would be counts from nowhere.
  const Reply ks = conn.command({"KEYS", prefix + "bucket:*"});
  for (size_t i = 0; i < ks.size(); ++i) {
    const std::string k(reply_str(ks.element(i)));
    if (e.buckets.count(k.substr(prefix.size() + 7)) == 0) diffs.push_back("unexpected bucket " + k);
  }
  return diffs;
}

std::map<std::string, long long> window_reasons(const Expectation& e, int64_t now_minute,
                                                int minutes) {
  std::map<std::string, long long> out;
  const std::string first = minute_key(now_minute - minutes + 1), last = minute_key(now_minute);
  for (const auto& [key, fields] : e.buckets) {
    if (key < first || key > last) continue;  // YYYYMMDDHHMM: byte order is time order
    for (const auto& [field, count] : fields)
      if (field.rfind("reason:", 0) == 0) out[field.substr(7)] += count;
  }
  return out;
}

std::vector<std::string> top_violations(const std::vector<std::pair<std::string, long long>>& kept,
                                        const std::map<std::string, long long>& all, size_t n) {
  std::vector<std::string> v;
  const size_t want_size = std::min(n, all.size());
  if (kept.size() != want_size)
    v.push_back(fmt::format("holds {} reasons, want {} (the {} largest of {})", kept.size(),
                            want_size, n, all.size()));
  std::map<std::string, long long> in;
  // The cut: the kept reason that ranks last (smallest count; of those, the largest name).
  std::pair<std::string, long long> cut;
  for (const auto& [reason, count] : kept) {
    in[reason] = count;
    const auto it = all.find(reason);
    const long long want = it == all.end() ? 0 : it->second;
    if (count != want) v.push_back(fmt::format("kept '{}' with {}, the window counts {}", reason, count, want));
    if (in.size() == 1 || count < cut.second || (count == cut.second && reason > cut.first))
      cut = {reason, count};
  }
  for (const auto& [reason, count] : all) {
    if (in.count(reason) != 0 || kept.empty()) continue;
    if (count > cut.second || (count == cut.second && reason < cut.first))
      v.push_back(fmt::format("left out '{}' ({}), which ranks above the smallest kept '{}' ({})",
                              reason, count, cut.first, cut.second));
  }
  return v;
}

}  // namespace p35::test
