// p35-shm --output: the atomic write (temporary file, fsync, rename) of textfile.hpp.
#include "textfile.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace p35::inspect {

namespace {

std::string temp_path_for(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  return fmt::format("{}/.{}.tmp.{}", dir, base, ::getpid());
}

// The whole of `text` to fd, then to the disk; false with errno set on failure.
bool write_all(int fd, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    text.remove_prefix(static_cast<size_t>(n));
  }
  return ::fchmod(fd, 0644) == 0 && ::fsync(fd) == 0;
}

}  // namespace

std::string write_atomically(const std::string& path, std::string_view text) {
  const std::string tmp = temp_path_for(path);
  ::unlink(tmp.c_str());  // a leftover of an earlier run with our pid
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return fmt::format("Failed to create {}: {}", tmp, std::strerror(errno));
  const bool written = write_all(fd, text);
  const int write_errno = errno;
  const bool closed = ::close(fd) == 0;
  if (!written || !closed) {
    ::unlink(tmp.c_str());
    return fmt::format("Failed to write {}: {}", tmp, std::strerror(written ? errno : write_errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int why = errno;
    ::unlink(tmp.c_str());
    return fmt::format("Failed to rename {} to {}: {}", tmp, path, std::strerror(why));
  }
  return {};
}

}  // namespace p35::inspect
