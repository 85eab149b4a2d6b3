#include "egressd/log/access_log.hpp"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include "egressd/log/record.hpp"

namespace egressd::log {
namespace {

using namespace std::chrono_literals;

Endpoint ep(std::string_view text) {
  return *Endpoint::parse(text);
}

std::chrono::system_clock::time_point at(std::string_view when_ms_utc) {
  // "2026-11-26T05:00:00.123" -> time_point (test helper, trusted input).
  std::istringstream in{std::string(when_ms_utc)};
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, ms = 0;
  char c = 0;
  in >> y >> c >> mo >> c >> d >> c >> h >> c >> mi >> c >> s >> c >> ms;
  using namespace std::chrono;
  return sys_days{year{y} / mo / d} + hours{h} + minutes{mi} + seconds{s} + milliseconds{ms};
}

FlowRecord full_record() {
  FlowRecord r;
  r.event = Event::flow;
  r.time = at("2026-11-26T05:00:00.123");
  r.listener = "transparent";
  r.src = ep("10.0.1.5:43122");
  r.dst = ep("140.82.112.3:443");
  r.proto = Proto::tls;
  r.add_host("github.com");
  r.alpn = std::vector<std::string>{"h2", "http/1.1"};
  r.ech = false;
  r.decision = Decision::allow;
  r.rule = "github";
  r.integrity = config::Integrity::verify;
  r.reason = "host github.com matched";
  r.upstream = ep("140.82.112.3:443");
  r.bytes_up = 1234;
  r.bytes_down = 56789;
  r.duration = 123ms;
  r.close = CloseReason::eof;
  return r;
}

std::string line_of(const FlowRecord& r) {
  std::string out;
  append_record_line(out, r);
  return out;
}

TEST(RecordLine, FullRecordMatchesContractExample) {
  EXPECT_EQ(line_of(full_record()),
            R"({"time":"2026-11-26T05:00:00.123Z","event":"flow","listener":"transparent",)"
            R"("src":"10.0.1.5:43122","dst":"140.82.112.3:443","proto":"tls",)"
            R"("host":"github.com","alpn":["h2","http/1.1"],"ech":false,)"
            R"("decision":"allow","rule":"github","integrity":"verify",)"
            R"("reason":"host github.com matched","upstream":"140.82.112.3:443",)"
            R"("bytes_up":1234,"bytes_down":56789,"duration_ms":123,"close":"eof"})"
            "\n");
}

TEST(RecordLine, SourcePodFieldsAfterSrc) {
  FlowRecord r = full_record();
  auto pod = std::make_shared<PodIdentity>();
  pod->namespace_name = "payments";
  pod->pod = "api-7d9f8-x2kqp";
  pod->service_account = "api\"sa";  // escaped like any string
  r.source_pod = pod;
  const std::string line = line_of(r);
  EXPECT_NE(line.find(R"("src":"10.0.1.5:43122","namespace":"payments","pod":"api-7d9f8-x2kqp",)"
                      R"("service_account":"api\"sa","dst":)"),
            std::string::npos)
      << line;
  // A pod without a service account: the field is omitted.
  pod->service_account.clear();
  EXPECT_EQ(line_of(r).find("service_account"), std::string::npos);
}

TEST(RecordLine, MinimalAndEventSpecificRecords) {
  struct Case {
    const char* name;
    FlowRecord record;
    std::string line;
  };
  FlowRecord sniff_timeout;
  sniff_timeout.time = at("2026-01-02T03:04:05.006");
  sniff_timeout.listener = "t";
  sniff_timeout.src = ep("10.0.0.1:1000");
  sniff_timeout.dst = ep("1.2.3.4:443");
  sniff_timeout.decision = Decision::deny;
  sniff_timeout.rule = "builtin:sniff_timeout";
  sniff_timeout.reason = "no bytes before the sniff timeout";
  sniff_timeout.duration = 5000ms;
  sniff_timeout.close = CloseReason::sniff_timeout;

  FlowRecord untrusted;
  untrusted.time = at("2026-01-02T03:04:05.000");
  untrusted.listener = "from-nodes";
  untrusted.src = ep("[2001:db8::1]:5000");
  untrusted.rule = "builtin:untrusted-peer";
  untrusted.reason = "peer outside proxy_protocol.trusted";
  untrusted.close = CloseReason::denied;

  FlowRecord open = full_record();
  open.event = Event::open;

  FlowRecord forward;
  forward.time = at("2026-11-26T05:00:00.999");
  forward.listener = "node-agent";
  forward.src = ep("10.0.1.5:1");
  forward.dst = ep("[2001:db8::2]:443");
  forward.decision = Decision::forward;
  forward.rule = "forward";
  forward.reason = "node agent";
  forward.upstream = ep("10.96.0.10:15008");
  forward.bytes_up = 1;
  forward.close = CloseReason::reset;

  FlowRecord keepalive;
  keepalive.time = at("2026-11-26T05:00:00.000");
  keepalive.listener = "proxy";
  keepalive.src = ep("10.0.0.2:2");
  keepalive.dst = ep("1.1.1.1:80");
  keepalive.proto = Proto::http;
  keepalive.add_host("a.example");
  keepalive.add_host("b.example");
  keepalive.add_host("a.example");
  keepalive.rule = "default";
  keepalive.reason = "r";
  keepalive.close = CloseReason::denied;

  const Case cases[] = {
      {"deny before decision", sniff_timeout,
       R"({"time":"2026-01-02T03:04:05.006Z","event":"flow","listener":"t","src":"10.0.0.1:1000",)"
       R"("dst":"1.2.3.4:443","proto":"tcp","decision":"deny","rule":"builtin:sniff_timeout",)"
       R"("reason":"no bytes before the sniff timeout","bytes_up":0,"bytes_down":0,)"
       R"("duration_ms":5000,"close":"sniff_timeout"})"
       "\n"},
      {"untrusted peer, no dst, IPv6 src", untrusted,
       R"({"time":"2026-01-02T03:04:05.000Z","event":"flow","listener":"from-nodes",)"
       R"("src":"[2001:db8::1]:5000","proto":"tcp","decision":"deny",)"
       R"("rule":"builtin:untrusted-peer","reason":"peer outside proxy_protocol.trusted",)"
       R"("bytes_up":0,"bytes_down":0,"duration_ms":0,"close":"denied"})"
       "\n"},
      {"open omits bytes, duration, close", open,
       R"({"time":"2026-11-26T05:00:00.123Z","event":"open","listener":"transparent",)"
       R"("src":"10.0.1.5:43122","dst":"140.82.112.3:443","proto":"tls",)"
       R"("host":"github.com","alpn":["h2","http/1.1"],"ech":false,)"
       R"("decision":"allow","rule":"github","integrity":"verify",)"
       R"("reason":"host github.com matched","upstream":"140.82.112.3:443"})"
       "\n"},
      {"node agent forward", forward,
       R"({"time":"2026-11-26T05:00:00.999Z","event":"flow","listener":"node-agent",)"
       R"("src":"10.0.1.5:1","dst":"[2001:db8::2]:443","proto":"tcp","decision":"forward",)"
       R"("rule":"forward","reason":"node agent","upstream":"10.96.0.10:15008",)"
       R"("bytes_up":1,"bytes_down":0,"duration_ms":0,"close":"reset"})"
       "\n"},
      {"keep-alive with two names", keepalive,
       R"({"time":"2026-11-26T05:00:00.000Z","event":"flow","listener":"proxy",)"
       R"("src":"10.0.0.2:2","dst":"1.1.1.1:80","proto":"http","host":"a.example",)"
       R"("hosts":["a.example","b.example"],"decision":"deny","rule":"default","reason":"r",)"
       R"("bytes_up":0,"bytes_down":0,"duration_ms":0,"close":"denied"})"
       "\n"},
  };
  for (const auto& c : cases) EXPECT_EQ(line_of(c.record), c.line) << c.name;
}

TEST(RecordLine, HostsKeepsAtMost32DistinctInOrder) {
  FlowRecord r;
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 40; ++i) r.add_host("h" + std::to_string(i));
  }
  ASSERT_EQ(r.hosts.size(), kMaxHosts);
  EXPECT_EQ(*r.host, "h0");
  for (std::size_t i = 0; i < kMaxHosts; ++i) EXPECT_EQ(r.hosts[i], "h" + std::to_string(i));
}

TEST(RecordLine, Timestamps) {
  struct Case {
    std::chrono::system_clock::time_point t;
    std::string text;
  };
  using namespace std::chrono;
  const Case cases[] = {
      {system_clock::time_point{}, "1970-01-01T00:00:00.000Z"},
      {at("2024-02-29T23:59:59.999"), "2024-02-29T23:59:59.999Z"},
      {at("2026-11-26T05:00:00.123") + 999us, "2026-11-26T05:00:00.123Z"},  // truncated
      {system_clock::time_point{} - 1s, "1970-01-01T00:00:00.000Z"},        // clamped
  };
  for (const auto& c : cases) {
    std::string out;
    append_timestamp(out, c.t);
    EXPECT_EQ(out, c.text);
  }
}

TEST(RecordLine, HostileNamesGiveValidJson) {
  const std::string hostile[] = {
      R"(evil"com)",
      R"(back\slash)",
      std::string("nul\0byte", 8),
      "ctl\x01\x1f\x7f",
      "bad\xff\xfeutf8",
      "\xed\xa0\x80surrogate",
      "line\nbreak",
      "\"}{\"injected\":1,\"x\":\"",
  };
  for (const auto& h : hostile) {
    FlowRecord r = full_record();
    r.host.reset();
    r.add_host(h);
    r.add_host(h + "2");
    r.alpn = std::vector<std::string>{h};
    r.reason = "host " + h + " matched";
    r.rule = h;
    r.listener = h;
    const std::string line = line_of(r);
    ASSERT_EQ(line.back(), '\n');
    EXPECT_EQ(line.find('\n'), line.size() - 1) << "one line only";
    boost::system::error_code ec;
    const auto v = boost::json::parse(line, ec);
    ASSERT_FALSE(ec) << line;
    ASSERT_TRUE(v.is_object());
    const auto& o = v.as_object();
    EXPECT_EQ(o.size(), 19U);
    EXPECT_TRUE(o.contains("hosts"));
    if (h.find_first_of("\x80\xff\xfe\xed") == std::string::npos) {
      EXPECT_EQ(o.at("host").as_string(), h);  // valid UTF-8 survives byte for byte
    }
  }
}

// ---- AccessLog ----------------------------------------------------------

struct Pipe {
  int r = -1;
  int w = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
    r = fds[0];
    w = fds[1];
    ::fcntl(w, F_SETPIPE_SZ, 4096);  // smallest pipe: stalls after a few records
  }
  ~Pipe() {
    if (r >= 0) ::close(r);
  }
  // Reads until EOF (the writer end is closed by AccessLog::stop()).
  std::string read_all() const {
    std::string out;
    char buf[65536];
    for (;;) {
      const ssize_t n = ::read(r, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return out;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
};

std::size_t count_lines(const std::string& s) {
  return static_cast<std::size_t>(std::count(s.begin(), s.end(), '\n'));
}

FlowRecord numbered(int i) {
  FlowRecord r = full_record();
  r.bytes_up = static_cast<std::uint64_t>(i);
  return r;
}

AccessLog::Options options(std::size_t capacity, std::size_t low_water = 0,
                           std::function<void()> on_resume = {}) {
  AccessLog::Options o;
  o.capacity = capacity;
  o.low_water = low_water;
  o.on_resume = std::move(on_resume);
  return o;
}

template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 10s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return pred();
}

TEST(AccessLog, DropModeCountsDropsUnderStalledWriter) {
  Pipe pipe;
  auto log = AccessLog::attach(pipe.w, config::OnFull::drop, options(16));
  constexpr int kRecords = 5000;
  int accepted = 0;
  for (int i = 0; i < kRecords; ++i) accepted += log->submit(numbered(i)) ? 1 : 0;
  EXPECT_FALSE(log->accepting_paused()) << "drop mode never pauses accepting";
  EXPECT_GT(log->dropped_total(), 0U);
  EXPECT_EQ(static_cast<std::uint64_t>(kRecords - accepted), log->dropped_total());
  // Nobody has read yet: the writer can't have written more than the pipe holds.
  EXPECT_LE(accepted, 200);

  std::string out;
  std::thread reader([&] { out = pipe.read_all(); });
  log->stop();
  reader.join();
  EXPECT_EQ(count_lines(out), static_cast<std::size_t>(accepted));
  EXPECT_EQ(log->written_total(), static_cast<std::uint64_t>(accepted));
}

TEST(AccessLog, BlockModePausesAndResumesWithoutLoss) {
  Pipe pipe;
  std::atomic<int> resumes{0};
  auto log = AccessLog::attach(pipe.w, config::OnFull::block, options(16, 4, [&] { ++resumes; }));
  constexpr int kRecords = 300;
  for (int i = 0; i < kRecords; ++i) ASSERT_TRUE(log->submit(numbered(i)));
  EXPECT_TRUE(log->accepting_paused());
  EXPECT_EQ(log->dropped_total(), 0U);
  EXPECT_GT(log->backlog(), 16U) << "records past the soft bound are kept";

  std::string out;
  std::thread reader([&] { out = pipe.read_all(); });
  // on_resume runs just after the flag clears, on the writer thread.
  EXPECT_TRUE(eventually([&] { return resumes.load() >= 1; }));
  EXPECT_FALSE(log->accepting_paused());
  log->stop();
  reader.join();
  ASSERT_EQ(count_lines(out), static_cast<std::size_t>(kRecords));
  // Order is kept: the records' bytes_up count up from 0.
  std::istringstream lines(out);
  std::string line;
  for (int i = 0; std::getline(lines, line); ++i) {
    const auto v = boost::json::parse(line);
    ASSERT_EQ(v.at("bytes_up").as_int64(), i);
  }
}

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "egressd-log-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

TEST(AccessLog, ReopenAfterRenameWritesToNewFile) {
  TempDir dir;
  const auto file = dir.path / "access.log";
  auto opened = AccessLog::open({.path = file.string(), .on_full = config::OnFull::block});
  ASSERT_TRUE(opened.has_value());
  auto& log = *opened;
  for (int i = 0; i < 3; ++i) log->submit(numbered(i));
  log->flush();
  std::filesystem::rename(file, dir.path / "access.log.1");
  log->submit(numbered(3));  // before the signal: still the old file
  log->flush();
  log->reopen();
  log->flush();
  EXPECT_TRUE(std::filesystem::exists(file)) << "reopen creates the file at its path";
  for (int i = 4; i < 6; ++i) log->submit(numbered(i));
  log->stop();
  EXPECT_EQ(count_lines(slurp(dir.path / "access.log.1")), 4U);
  EXPECT_EQ(count_lines(slurp(file)), 2U);
  EXPECT_EQ(log->write_errors_total(), 0U);
}

TEST(AccessLog, OpenFailsWithErrorForBadPath) {
  auto opened = AccessLog::open({.path = "/nonexistent-dir/x/access.log"});
  ASSERT_FALSE(opened.has_value());
  EXPECT_EQ(opened.error(), boost::system::errc::no_such_file_or_directory);
}

TEST(AccessLog, FailedWritesAreDroppedAndCountedInDropMode) {
  // /dev/full fails every write with ENOSPC: the disk-full case.
  const int fd = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  if (fd < 0) GTEST_SKIP() << "/dev/full not available";
  auto log = AccessLog::attach(fd, config::OnFull::drop, {});
  for (int i = 0; i < 10; ++i) log->submit(numbered(i));
  log->flush();
  EXPECT_EQ(log->dropped_total(), 10U);
  EXPECT_GE(log->write_errors_total(), 1U);
  EXPECT_EQ(log->written_total(), 0U);
  log->stop();
}

TEST(AccessLog, FailedWritesAreRetriedInBlockModeUntilStop) {
  const int fd = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  if (fd < 0) GTEST_SKIP() << "/dev/full not available";
  auto log = AccessLog::attach(fd, config::OnFull::block, options(4));
  for (int i = 0; i < 10; ++i) log->submit(numbered(i));
  // Kept, not dropped, while the writes fail; the backlog pauses accepting.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (log->write_errors_total() < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_GE(log->write_errors_total(), 2U) << "retried";
  EXPECT_EQ(log->dropped_total(), 0U);
  EXPECT_EQ(log->backlog(), 10U);
  EXPECT_TRUE(log->accepting_paused());
  // Only a stop gives up, and counts what it loses.
  log->stop();
  EXPECT_EQ(log->dropped_total(), 10U);
  EXPECT_EQ(log->written_total(), 0U);
}

TEST(AccessLog, ReopenWhileBlockedOnAFullDiskMovesToTheNewFile) {
  // The log's path is a symlink to /dev/full (a full disk); the operator
  // points it at a volume with room and sends SIGUSR1 (reopen). The
  // records kept while the writes failed go to the new file at once, not
  // after a write to the old one succeeds (it never would).
  if (::access("/dev/full", W_OK) != 0) GTEST_SKIP() << "/dev/full not available";
  TempDir dir;
  const auto link = dir.path / "access.log";
  std::filesystem::create_symlink("/dev/full", link);
  auto opened = AccessLog::open({.path = link.string(), .on_full = config::OnFull::block});
  ASSERT_TRUE(opened.has_value());
  auto& log = *opened;
  for (int i = 0; i < 10; ++i) log->submit(numbered(i));
  ASSERT_TRUE(eventually([&] { return log->write_errors_total() >= 2; })) << "retrying";
  EXPECT_EQ(log->written_total(), 0U);

  std::filesystem::remove(link);
  const auto roomy = dir.path / "roomy.log";
  { std::ofstream touch(roomy); }
  std::filesystem::create_symlink(roomy, link);
  log->reopen();
  EXPECT_TRUE(eventually([&] { return log->written_total() == 10U; }, 3s))
      << "written to the new file after the reopen";
  for (int i = 10; i < 12; ++i) log->submit(numbered(i));
  log->stop();
  EXPECT_EQ(log->dropped_total(), 0U);
  const std::string out = slurp(roomy);
  ASSERT_EQ(count_lines(out), 12U);
  std::istringstream lines(out);
  std::string line;
  for (int i = 0; std::getline(lines, line); ++i) {
    ASSERT_EQ(boost::json::parse(line).at("bytes_up").as_int64(), i) << "whole records, in order";
  }
}

// RLIMIT_FSIZE makes a write cross a size limit part-way, like a disk that
// fills in the middle of a chunk.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of the signal
    ::getrlimit(RLIMIT_FSIZE, &old_);
    rlimit now = old_;
    now.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &now);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old_);
    std::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit old_{};
  void (*old_handler_)(int) = nullptr;
};

TEST(AccessLog, AWriteCutMidRecordLeavesOnlyWholeLines) {
  for (const auto on_full : {config::OnFull::drop, config::OnFull::block}) {
    TempDir dir;
    const auto file = dir.path / "cut.log";
    auto opened = AccessLog::open({.path = file.string(), .on_full = on_full}, options(1000));
    ASSERT_TRUE(opened.has_value());
    auto& log = *opened;
    {
      const FileSizeLimit limit(1000);  // a few records, the last one cut
      for (int i = 0; i < 20; ++i) log->submit(numbered(i));
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
      while (log->write_errors_total() == 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
      ASSERT_GE(log->write_errors_total(), 1U);
      if (on_full == config::OnFull::drop) log->flush();
    }
    // Room again: block mode writes what it kept; drop mode goes on.
    log->submit(numbered(99));
    log->flush();
    log->stop();
    const std::string out = slurp(file);
    std::istringstream lines(out);
    std::string line;
    std::size_t n = 0;
    while (std::getline(lines, line)) {
      boost::system::error_code ec;
      (void)boost::json::parse(line, ec);
      EXPECT_FALSE(ec) << "a torn line: " << line;
      ++n;
    }
    EXPECT_FALSE(out.empty());
    EXPECT_EQ(out.back(), '\n');
    EXPECT_EQ(n, log->written_total());
    EXPECT_EQ(log->written_total() + log->dropped_total(), 21U);
    if (on_full == config::OnFull::block) {
      EXPECT_EQ(log->dropped_total(), 0U) << "block loses nothing once there is room";
    } else {
      EXPECT_GT(log->dropped_total(), 0U);
    }
  }
}

TEST(AccessLog, ManyThreadsNothingLostOnStop) {
  TempDir dir;
  const auto file = dir.path / "mt.log";
  auto opened =
      AccessLog::open({.path = file.string(), .on_full = config::OnFull::block}, options(64));
  ASSERT_TRUE(opened.has_value());
  auto& log = *opened;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        FlowRecord r = numbered(t * kPerThread + i);
        r.listener = "w" + std::to_string(t);
        log->submit(std::move(r));
        if (i % 500 == 0) (void)log->accepting_paused();
      }
    });
  }
  std::thread reopener([&] {
    for (int i = 0; i < 5; ++i) log->reopen();  // same path: appends to the same file
  });
  for (auto& t : threads) t.join();
  reopener.join();
  log->stop();
  EXPECT_FALSE(log->submit(numbered(0))) << "after stop";
  const std::string out = slurp(file);
  ASSERT_EQ(count_lines(out), static_cast<std::size_t>(kThreads * kPerThread));
  EXPECT_EQ(log->written_total(), static_cast<std::uint64_t>(kThreads * kPerThread));
  std::vector<int> seen(kThreads * kPerThread, 0);
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    const auto v = boost::json::parse(line);
    ++seen[static_cast<std::size_t>(v.at("bytes_up").as_int64())];
  }
  for (int s : seen) ASSERT_EQ(s, 1);
}

}  // namespace
}  // namespace egressd::log
