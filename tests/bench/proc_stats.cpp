// Reading /proc/<pid>/task/*/schedstat and /proc/<pid>/smaps for the benchmark.
#include "proc_stats.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

namespace p35::bench {

int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

uint64_t cpu_ns(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return 0;
  uint64_t total = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream in(dir + "/" + e->d_name + "/schedstat");
    uint64_t run_ns = 0;
    if (in >> run_ns) total += run_ns;
  }
  ::closedir(d);
  return total;
}

CpuWindow::CpuWindow(std::vector<pid_t> pids) : pids_(std::move(pids)) { restart(); }

void CpuWindow::restart() {
  start_ns_.clear();
  for (pid_t p : pids_) start_ns_.push_back(cpu_ns(p));
  start_mono_ns_ = mono_ns();
}

std::vector<double> CpuWindow::percent() const {
  const double wall = static_cast<double>(mono_ns() - start_mono_ns_);
  std::vector<double> out;
  for (size_t i = 0; i < pids_.size(); ++i) {
    const uint64_t now = cpu_ns(pids_[i]);
    const double used = now >= start_ns_[i] ? static_cast<double>(now - start_ns_[i]) : 0.0;
    out.push_back(wall > 0 ? 100.0 * used / wall : 0.0);
  }
  return out;
}

void MachineCpu::read(uint64_t& busy, uint64_t& total) {
  std::ifstream in("/proc/stat");
  std::string cpu;
  uint64_t v[8] = {};  // user nice system idle iowait irq softirq steal
  in >> cpu;
  for (auto& x : v) in >> x;
  total = 0;
  for (auto x : v) total += x;
  busy = total - v[3] - v[4];
}

void MachineCpu::restart() { read(busy_, total_); }

double MachineCpu::busy_percent() const {
  uint64_t busy = 0, total = 0;
  read(busy, total);
  if (total <= total_) return 0;
  const double cores = static_cast<double>(::sysconf(_SC_NPROCESSORS_ONLN));
  return 100.0 * cores * static_cast<double>(busy - busy_) / static_cast<double>(total - total_);
}

namespace {

// "Name:   1234 kB" -> 1234 when the line starts with `name`.
bool field_kb(const std::string& line, const char* name, uint64_t& kb) {
  const std::string prefix = std::string(name) + ":";
  if (line.rfind(prefix, 0) != 0) return false;
  std::istringstream in(line.substr(prefix.size()));
  return static_cast<bool>(in >> kb);
}

// A mapping's header line ("start-end perms offset dev inode [path]") rather than a field line
// ("Name: value"), whose first token ends with ':'.
bool is_mapping_header(const std::string& line) {
  const auto space = line.find(' ');
  return space != std::string::npos && space > 0 && line[space - 1] != ':' &&
         line.find('-') < space;
}

}  // namespace

MemorySample memory_of(pid_t pid, const std::string& segment_path) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/smaps");
  MemorySample m;
  std::string line;
  bool in_segment = false;
  while (std::getline(in, line)) {
    if (is_mapping_header(line)) {
      in_segment = line.find(segment_path) != std::string::npos;
      continue;
    }
    uint64_t kb = 0;
    if (in_segment) {
      if (field_kb(line, "Rss", kb)) m.segment_kb += kb;
    } else if (field_kb(line, "Private_Clean", kb) || field_kb(line, "Private_Dirty", kb)) {
      m.private_kb += kb;
    }
  }
  return m;
}

uint64_t file_resident_kb(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_blocks) * 512 / 1024;
}

uint64_t file_size_kb(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<uint64_t>(st.st_size) / 1024;
}

}  // namespace p35::bench
