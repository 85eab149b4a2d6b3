#pragma once
// The standard process_* metrics, read from /proc (Linux). Parsing is a pure
// function over the file's text so it can be tested on hostile input.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace egressd::metrics {

// The fields of /proc/<pid>/stat egressd reports (proc(5) numbering).
struct ProcStat {
  std::uint64_t utime_ticks = 0;      // (14)
  std::uint64_t stime_ticks = 0;      // (15)
  std::uint64_t starttime_ticks = 0;  // (22) since boot
  std::uint64_t vsize_bytes = 0;      // (23)
  std::uint64_t rss_pages = 0;        // (24)
};

// Accepts "pid (comm) state f4 f5 ..." where comm may hold spaces and
// parentheses (the last ')' ends it). Refuses text without the fields up to
// rss or with a non-numeric one among those used. Never throws.
std::optional<ProcStat> parse_proc_stat(std::string_view text) noexcept;

// The "btime N" line of /proc/stat: boot time in seconds since the epoch.
std::optional<std::uint64_t> parse_boot_time(std::string_view proc_stat_text) noexcept;

struct ProcessStats {
  double cpu_seconds = 0;  // user + system
  std::uint64_t resident_bytes = 0;
  std::uint64_t virtual_bytes = 0;
  std::uint64_t open_fds = 0;
  std::uint64_t max_fds = 0;  // soft RLIMIT_NOFILE
  double start_time_seconds = 0;
};

// Reads /proc/self/stat, /proc/stat, /proc/self/fd and RLIMIT_NOFILE.
// nullopt when /proc is not readable.
std::optional<ProcessStats> read_process_stats();

// Appends the six process_* families (HELP, TYPE, one sample each).
void render_process(std::string& out, const ProcessStats& stats);

}  // namespace egressd::metrics
