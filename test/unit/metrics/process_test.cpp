#include "egressd/metrics/process.hpp"

#include <unistd.h>

#include <string>

#include <gtest/gtest.h>

namespace egressd::metrics {
namespace {

// A real line from proc(5) layout: fields 14/15 utime/stime, 22 starttime,
// 23 vsize, 24 rss.
constexpr std::string_view kStat =
    "1234 (egressd) S 1 1234 1234 0 -1 4194560 500 0 0 0 "
    "150 50 0 0 20 0 3 0 98765 123456789 4321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 "
    "0 0 0 0 0\n";

TEST(ProcStat, ParsesFields) {
  const auto s = parse_proc_stat(kStat);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->utime_ticks, 150U);
  EXPECT_EQ(s->stime_ticks, 50U);
  EXPECT_EQ(s->starttime_ticks, 98765U);
  EXPECT_EQ(s->vsize_bytes, 123456789U);
  EXPECT_EQ(s->rss_pages, 4321U);
}

TEST(ProcStat, CommWithSpacesAndParens) {
  std::string text(kStat);
  text.replace(text.find("(egressd)"), 9, "(a) b (c) ))");
  const auto s = parse_proc_stat(text);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->utime_ticks, 150U);
  EXPECT_EQ(s->rss_pages, 4321U);
}

TEST(ProcStat, RefusesMalformed) {
  const std::string cases[] = {
      "",
      "1234 egressd S 1",                                        // no parentheses
      "1234 (egressd) S 1 2 3",                                  // truncated
      std::string(kStat.substr(0, 60)),                          // cut before rss
      "1234 (x) S 1 1 1 0 -1 0 0 0 0 0 1x 0 0 0 0 0 0 0 1 1 1",  // non-numeric utime
      "1234 (x) S 1 1 1 0 -1 0 0 0 0 0 -5 0 0 0 0 0 0 0 1 1 1",  // negative utime
      "1234 (x) S 1 1 1 0 -1 0 0 0 0 0 1 0 0 0 0 0 0 0 1 1 99999999999999999999999",  // overflow
      ")))))",
  };
  for (const auto& c : cases) EXPECT_FALSE(parse_proc_stat(c)) << c;
}

TEST(ProcStat, BootTime) {
  EXPECT_EQ(parse_boot_time("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n"), 1700000000U);
  EXPECT_EQ(parse_boot_time("btime 42"), 42U);
  EXPECT_FALSE(parse_boot_time("cpu 1\n"));
  EXPECT_FALSE(parse_boot_time("btime x\n"));
  EXPECT_FALSE(parse_boot_time("xbtime 5\n"));
}

TEST(ProcessStats, ReadsThisProcess) {
  const auto s = read_process_stats();
  ASSERT_TRUE(s);
  EXPECT_GT(s->resident_bytes, 0U);
  EXPECT_GE(s->virtual_bytes, s->resident_bytes);
  EXPECT_GE(s->open_fds, 3U);  // stdin, stdout, stderr at least
  EXPECT_GE(s->max_fds, s->open_fds);
  EXPECT_GT(s->start_time_seconds, 1.5e9);
  EXPECT_GE(s->cpu_seconds, 0.0);
  // Opening a descriptor shows up in the count.
  const int fd = ::dup(0);
  ASSERT_GE(fd, 0);
  const auto after = read_process_stats();
  ::close(fd);
  ASSERT_TRUE(after);
  EXPECT_EQ(after->open_fds, s->open_fds + 1);
}

TEST(ProcessStats, RenderText) {
  ProcessStats s;
  s.cpu_seconds = 1.5;
  s.resident_bytes = 4096;
  s.virtual_bytes = 8192;
  s.open_fds = 10;
  s.max_fds = 20000;
  s.start_time_seconds = 1700000000.25;
  std::string out;
  render_process(out, s);
  EXPECT_EQ(out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n"
            "# HELP process_max_fds Maximum number of open file descriptors.\n"
            "# TYPE process_max_fds gauge\nprocess_max_fds 20000\n"
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\nprocess_open_fds 10\n"
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes 4096\n"
            "# HELP process_start_time_seconds Start time of the process since unix epoch in "
            "seconds.\n"
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1700000000.25\n"
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
            "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes 8192\n");
}

}  // namespace
}  // namespace egressd::metrics
