#include "egressd/metrics/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>

#include "egressd/metrics/registry.hpp"

namespace egressd::metrics {
namespace {

std::optional<std::uint64_t> to_u64(std::string_view s) noexcept {
  std::uint64_t v = 0;
  if (s.empty()) return std::nullopt;
  const auto res = std::from_chars(s.data(), s.data() + s.size(), v);
  if (res.ec != std::errc() || res.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// Whole small /proc file; /proc files report size 0, so read until EOF.
std::optional<std::string> read_file(const char* path) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  std::array<char, 4096> buf;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    out.append(buf.data(), static_cast<std::size_t>(n));
    if (out.size() > (1U << 20)) break;  // no /proc file we read is this big
  }
  ::close(fd);
  return out;
}

std::uint64_t count_open_fds() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  std::uint64_t n = 0;
  const int own = ::dirfd(dir);
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    // The directory stream's own descriptor is an artefact of counting.
    if (const auto fd = to_u64(e->d_name); fd && static_cast<int>(*fd) == own) continue;
    ++n;
  }
  ::closedir(dir);
  return n;
}

void family(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
  out += name;
  out += ' ';
}

}  // namespace

std::optional<ProcStat> parse_proc_stat(std::string_view text) noexcept {
  // proc(5): "pid (comm) state ppid ...". comm is up to 16 bytes of anything,
  // ')' and spaces included, so fields are counted from the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string_view::npos) return std::nullopt;
  std::string_view rest = text.substr(close + 1);
  // Field 3 (state) is the first token after comm; we need up to field 24.
  constexpr std::size_t kFirst = 3;
  constexpr std::size_t kLast = 24;
  std::array<std::string_view, kLast - kFirst + 1> f{};
  std::size_t got = 0;
  while (got < f.size()) {
    const auto start = rest.find_first_not_of(" \n");
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    const auto end = rest.find_first_of(" \n");
    f[got++] = rest.substr(0, end);
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end);
  }
  if (got < f.size()) return std::nullopt;
  const auto field = [&](std::size_t n) { return to_u64(f[n - kFirst]); };
  const auto utime = field(14);
  const auto stime = field(15);
  const auto start = field(22);
  const auto vsize = field(23);
  const auto rss = field(24);
  if (!utime || !stime || !start || !vsize || !rss) return std::nullopt;
  return ProcStat{*utime, *stime, *start, *vsize, *rss};
}

std::optional<std::uint64_t> parse_boot_time(std::string_view text) noexcept {
  constexpr std::string_view kKey = "btime ";
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    if (line.starts_with(kKey)) return to_u64(line.substr(kKey.size()));
    pos = end + 1;
  }
  return std::nullopt;
}

std::optional<ProcessStats> read_process_stats() {
  const auto stat_text = read_file("/proc/self/stat");
  if (!stat_text) return std::nullopt;
  const auto stat = parse_proc_stat(*stat_text);
  if (!stat) return std::nullopt;
  const long tick = ::sysconf(_SC_CLK_TCK);
  const long page = ::sysconf(_SC_PAGESIZE);
  const double ticks_per_s = tick > 0 ? static_cast<double>(tick) : 100.0;

  ProcessStats s;
  s.cpu_seconds = static_cast<double>(stat->utime_ticks + stat->stime_ticks) / ticks_per_s;
  s.resident_bytes = stat->rss_pages * static_cast<std::uint64_t>(page > 0 ? page : 4096);
  s.virtual_bytes = stat->vsize_bytes;
  s.open_fds = count_open_fds();
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0) s.max_fds = lim.rlim_cur;
  if (const auto system_stat = read_file("/proc/stat")) {
    if (const auto boot = parse_boot_time(*system_stat)) {
      s.start_time_seconds =
          static_cast<double>(*boot) + static_cast<double>(stat->starttime_ticks) / ticks_per_s;
    }
  }
  return s;
}

void render_process(std::string& out, const ProcessStats& s) {
  family(out, "process_cpu_seconds_total", "counter",
         "Total user and system CPU time spent in seconds.");
  append_value(out, s.cpu_seconds);
  out += '\n';
  family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
  append_value(out, s.max_fds);
  out += '\n';
  family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
  append_value(out, s.open_fds);
  out += '\n';
  family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  append_value(out, s.resident_bytes);
  out += '\n';
  family(out, "process_start_time_seconds", "gauge",
         "Start time of the process since unix epoch in seconds.");
  append_value(out, s.start_time_seconds);
  out += '\n';
  family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  append_value(out, s.virtual_bytes);
  out += '\n';
}

}  // namespace egressd::metrics
