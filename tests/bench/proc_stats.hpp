// CPU time and memory of a running process read from /proc, for the benchmark's per-stage figures.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace p35::bench {

// Nanoseconds the process has run on a CPU so far: the sum over its threads of the first field
// of /proc/<pid>/task/<tid>/schedstat (nanosecond resolution, unlike the 10 ms ticks of
// /proc/<pid>/stat). 0 when the process is gone.
uint64_t cpu_ns(pid_t pid);

// CPU use of several processes over a window, as a percentage of one core.
class CpuWindow {
 public:
  explicit CpuWindow(std::vector<pid_t> pids);
  // Percent of one core for each pid since construction (or the last restart()).
  std::vector<double> percent() const;
  void restart();

 private:
  std::vector<pid_t> pids_;
  std::vector<uint64_t> start_ns_;
  int64_t start_mono_ns_ = 0;
};

// Busy time of the whole machine (every process, /proc/stat) over a window, as a percentage of
// one core (200 % = both cores of this machine busy): with what the run's own processes used, it
// tells how much CPU other work on the machine took from the measurement.
class MachineCpu {
 public:
  MachineCpu() { restart(); }
  void restart();
  double busy_percent() const;

 private:
  static void read(uint64_t& busy, uint64_t& total);
  uint64_t busy_ = 0, total_ = 0;
};

struct MemorySample {
  uint64_t private_kb = 0;  // Private_Clean + Private_Dirty of every mapping but the segment
  uint64_t segment_kb = 0;  // Rss of the segment mapping in this process
};
// From /proc/<pid>/smaps; segment_path is "/dev/shm/<name>". Zeros when the process is gone.
MemorySample memory_of(pid_t pid, const std::string& segment_path);

// Pages of a tmpfs file that exist (st_blocks), i.e. the segment's real memory, in kB.
uint64_t file_resident_kb(const std::string& path);
uint64_t file_size_kb(const std::string& path);

int64_t mono_ns();
int64_t wall_ms();

}  // namespace p35::bench
