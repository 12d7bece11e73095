// Spawning, signalling and reaping test child processes (fork/execve), and polling with a deadline.
#include "process.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>
#include <utility>

extern char** environ;

namespace p35 {

namespace {

bool is_executable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

// A program name without '/' is looked up in PATH, like execvp, but in the parent so that a
// missing binary is an exception here rather than an exit code later.
std::string resolve_program(const std::string& program) {
  if (program.find('/') != std::string::npos) {
    if (is_executable_file(program)) return program;
    throw std::system_error(ENOENT, std::generic_category(),
                            "Failed to start " + program + ": not an executable file");
  }
  const char* path_env = std::getenv("PATH");
  std::stringstream dirs(path_env != nullptr ? path_env : "/usr/local/bin:/usr/bin:/bin");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + program;
    if (is_executable_file(candidate)) return candidate;
  }
  throw std::system_error(ENOENT, std::generic_category(),
                          "Failed to start " + program + ": not found in PATH");
}

std::vector<std::string> child_environment(const SpawnOptions& options) {
  std::set<std::string> drop(options.unset_env.begin(), options.unset_env.end());
  for (const auto& [name, value] : options.env) drop.insert(name);
  std::vector<std::string> out;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string entry(*e);
    if (drop.count(entry.substr(0, entry.find('='))) == 0) out.push_back(entry);
  }
  const std::set<std::string> unset(options.unset_env.begin(), options.unset_env.end());
  for (const auto& [name, value] : options.env) {
    if (unset.count(name) == 0) out.push_back(name + "=" + value);
  }
  return out;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// An fd closed on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Runs in the forked child: only async-signal-safe calls until execve.
[[noreturn]] void exec_child(const char* path, char* const* argv, char* const* envp, int stdin_fd,
                             int log_fd, int error_pipe, pid_t parent_pid, bool die_with_parent) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) sigaction(sig, &dfl, nullptr);  // SIGPIPE above all
  if (die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent_pid) _exit(127);  // the parent died before prctl took effect
  }
  dup2(stdin_fd, STDIN_FILENO);
  if (log_fd >= 0) {
    dup2(log_fd, STDOUT_FILENO);
    dup2(log_fd, STDERR_FILENO);
  }
  execve(path, argv, envp);
  const int err = errno;
  ssize_t ignored = write(error_pipe, &err, sizeof err);
  (void)ignored;
  _exit(127);
}

}  // namespace

std::string ExitStatus::describe() const {
  if (!signaled) return "exit code " + std::to_string(code);
  return "signal " + std::to_string(signal) + " (" + strsignal(signal) + ")";
}

ChildProcess::ChildProcess(std::vector<std::string> argv, SpawnOptions options)
    : argv_(std::move(argv)) {
  if (argv_.empty()) throw std::invalid_argument("ChildProcess: empty argv");
  const std::string path = resolve_program(argv_[0]);
  std::vector<std::string> args = argv_;
  std::vector<std::string> env = child_environment(options);
  std::vector<char*> c_args = c_strings(args);
  std::vector<char*> c_env = c_strings(env);

  Fd log, devnull, pipe_read, pipe_write;
  if (!options.log_path.empty()) {
    log.fd = ::open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log.fd < 0) {
      throw std::system_error(errno, std::generic_category(), "Failed to open " + options.log_path);
    }
  }
  devnull.fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int fds[2];
  if (devnull.fd < 0 || ::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "Failed to prepare to spawn " + path);
  }
  pipe_read.fd = fds[0];
  pipe_write.fd = fds[1];

  const pid_t parent = ::getpid();
  pid_ = ::fork();
  if (pid_ < 0) throw std::system_error(errno, std::generic_category(), "Failed to fork " + path);
  if (pid_ == 0) {
    exec_child(path.c_str(), c_args.data(), c_env.data(), devnull.fd, log.fd, pipe_write.fd, parent,
               options.die_with_parent);
  }
  ::close(pipe_write.fd);
  pipe_write.fd = -1;
  int exec_errno = 0;
  ssize_t n;
  do {
    n = ::read(pipe_read.fd, &exec_errno, sizeof exec_errno);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof exec_errno)) {  // execve failed; the child _exit()s
    try_reap(true);
    throw std::system_error(exec_errno, std::generic_category(), "Failed to execute " + path);
  }
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !status_) kill_and_reap();
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : argv_(std::move(other.argv_)),
      pid_(std::exchange(other.pid_, -1)),
      status_(std::move(other.status_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !status_) kill_and_reap();
    argv_ = std::move(other.argv_);
    pid_ = std::exchange(other.pid_, -1);
    status_ = std::move(other.status_);
  }
  return *this;
}

bool ChildProcess::try_reap(bool block) {
  if (status_) return true;
  if (pid_ <= 0) return false;
  int st = 0;
  pid_t r;
  do {
    r = ::waitpid(pid_, &st, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  ExitStatus s;
  if (r < 0) {  // ECHILD: someone else reaped it; report what we can
    s.code = -1;
  } else if (WIFSIGNALED(st)) {
    s.signaled = true;
    s.signal = WTERMSIG(st);
  } else {
    s.code = WEXITSTATUS(st);
  }
  status_ = s;
  return true;
}

bool ChildProcess::alive() {
  return pid_ > 0 && !try_reap(false);
}

bool ChildProcess::send_signal(int sig) {
  if (pid_ <= 0 || status_) return false;
  return ::kill(pid_, sig) == 0;
}

std::optional<ExitStatus> ChildProcess::wait_exit(int deadline_ms) {
  wait_until([this] { return try_reap(false); }, deadline_ms, 2);
  return status_;
}

ExitStatus ChildProcess::kill_and_reap() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);
    try_reap(true);
  }
  return status_.value_or(ExitStatus{});
}

bool wait_until(std::function<bool()> cond, int timeout_ms, int poll_ms) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::max(poll_ms, 1)));
  }
  return cond();
}

std::string file_tail(const std::string& path, int max_lines) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  constexpr std::streamoff kMaxBytes = 64 * 1024;
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(std::max<std::streamoff>(0, size - kMaxBytes));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (int lines = 0; pos > 0; --pos) {
    if (text[pos - 1] == '\n' && ++lines == max_lines) break;
  }
  return text.substr(pos);
}

}  // namespace p35
