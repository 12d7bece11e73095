// Child processes for integration tests: spawn with argv and extra environment, signal, wait, and
// never leak one (SIGKILL and reap on destruction, and the child dies with the test process).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace p35 {

// How a reaped child ended: exit(code) or killed by a signal.
struct ExitStatus {
  bool signaled = false;
  int code = 0;    // exit code when !signaled
  int signal = 0;  // terminating signal when signaled

  bool exited_with(int exit_code) const { return !signaled && code == exit_code; }
  bool killed_by(int sig) const { return signaled && signal == sig; }
  std::string describe() const;  // "exit code 1" or "signal 9 (Killed)"
};

struct SpawnOptions {
  // Added to (and overriding) the parent's environment.
  std::map<std::string, std::string> env;
  // Removed from the child's environment (after `env` is applied, so a name in both is removed).
  std::vector<std::string> unset_env;
  // stdout and stderr are appended to this file; empty: inherit the test's own.
  std::string log_path;
  // PR_SET_PDEATHSIG=SIGKILL, so a crashed test leaves no child behind. Linux ties it to the
  // spawning *thread*: spawn from a thread that outlives the child, or turn this off.
  bool die_with_parent = true;
};

class ChildProcess {
 public:
  // argv[0] is the program: a path, or a name searched in PATH. Throws std::system_error with the
  // program's name when it cannot be found or executed (a missing binary fails the test).
  // The child gets default signal dispositions (SIGPIPE too), an empty signal mask, stdin from
  // /dev/null, and by default dies with the spawning thread (SpawnOptions::die_with_parent).
  ChildProcess(std::vector<std::string> argv, SpawnOptions options = {});
  ~ChildProcess();  // SIGKILL (if still running) and reap
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::vector<std::string>& argv() const { return argv_; }
  // False once the child has exited (it is then reaped and its status kept).
  bool alive();
  // kill(2); false when the child is already reaped or kill fails.
  bool send_signal(int sig);
  // Waits up to deadline_ms for the child to exit; nullopt if it is still running then.
  std::optional<ExitStatus> wait_exit(int deadline_ms);
  // The status once reaped.
  const std::optional<ExitStatus>& exit_status() const { return status_; }
  // SIGKILL and reap; returns the status.
  ExitStatus kill_and_reap();

 private:
  bool try_reap(bool block);
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  std::optional<ExitStatus> status_;
};

// Polls cond every poll_ms until it returns true (→ true) or timeout_ms have passed (→ false;
// cond is tried once more at the deadline).
bool wait_until(std::function<bool()> cond, int timeout_ms, int poll_ms = 10);

// The last max_lines lines of a text file (for failure messages); "" when unreadable.
std::string file_tail(const std::string& path, int max_lines = 40);

}  // namespace p35
