// Relay CPU cost, splice vs plain copy, on loopback TCP sockets.
//
//   relay_bench [--gib N] [--reps R] [--relay-cpu C] [--load-cpu C]
//
// A source thread writes N GiB into one TCP connection, egressd's relay()
// (one io_context on one thread, as a worker runs it) moves them to a second
// TCP connection, and a sink thread reads them. The relay thread's own CPU
// time (CLOCK_THREAD_CPUTIME_ID: user + system, which on this kernel includes
// the softirq work its sends trigger, as the peers harness's schedstat does)
// is divided by the bytes moved. Each path runs R times, interleaved; the
// median is printed. Paths:
//   splice 1 MiB pipe : the default (PipePool with 1 MiB pipes)
//   splice 64 KiB pipe: pipes left at the kernel's default size
//   copy 64 KiB buffer: no pipe pool, the BufferPool fallback
// Pin the relay and the load to different CPUs (defaults 1 and 0), as the
// peers benchmark does.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "egressd/relay/relay.hpp"

namespace {

namespace asio = boost::asio;
using egressd::relay::BufferPool;
using egressd::relay::PipePool;
using egressd::relay::RelayControl;
using egressd::relay::RelayOptions;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "relay_bench: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

void pin(int cpu) {
  if (cpu < 0) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(static_cast<unsigned>(cpu), &set);
  if (pthread_setaffinity_np(pthread_self(), sizeof set, &set) != 0) {
    std::fprintf(stderr, "relay_bench: cannot pin to CPU %d, running unpinned\n", cpu);
  }
}

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// A connected loopback TCP pair: {connecting end, accepted end}.
struct Pair {
  int near = -1;
  int far = -1;
};

Pair tcp_pair() {
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&addr), len) != 0) die("bind");
  if (::listen(lfd, 1) != 0) die("listen");
  if (::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) die("getsockname");
  Pair p;
  p.near = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (p.near < 0) die("socket");
  if (::connect(p.near, reinterpret_cast<sockaddr*>(&addr), len) != 0) die("connect");
  p.far = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  if (p.far < 0) die("accept");
  ::close(lfd);
  return p;
}

// Writes `bytes`, half-closes, then waits for the peer's EOF.
void source(int fd, std::uint64_t bytes, int cpu) {
  pin(cpu);
  std::vector<char> buf(1U << 20, 'x');
  while (bytes > 0) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(bytes, buf.size()));
    const ssize_t n = ::write(fd, buf.data(), want);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("source write");
    bytes -= static_cast<std::uint64_t>(n);
  }
  ::shutdown(fd, SHUT_WR);
  char c = 0;
  while (::read(fd, &c, 1) > 0) {
  }
  ::close(fd);
}

// Reads to EOF, then closes; returns the byte count.
std::uint64_t sink(int fd, int cpu) {
  pin(cpu);
  std::vector<char> buf(1U << 20);
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("sink read");
    if (n == 0) break;
    total += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  return total;
}

struct Result {
  double gbit_s = 0;
  double relay_ms_per_gb = 0;
  std::uint64_t bytes = 0;
};

enum class Path : std::uint8_t { splice_1m, splice_64k, copy };

Result run_once(Path path, std::uint64_t bytes, int relay_cpu, int load_cpu) {
  const Pair in = tcp_pair();   // source -> relay (client side)
  const Pair out = tcp_pair();  // relay -> sink (upstream side)
  Result r;
  double cpu_s = 0;
  std::uint64_t got = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::thread relay_thread([&] {
    pin(relay_cpu);
    asio::io_context io(1);
    asio::ip::tcp::socket client(io, asio::ip::tcp::v4(), in.far);
    asio::ip::tcp::socket upstream(io, asio::ip::tcp::v4(), out.near);
    BufferPool buffers;
    PipePool pipes(16, path == Path::splice_64k ? std::size_t{64} << 10 : std::size_t{1} << 20);
    RelayOptions options;
    options.buffers = &buffers;
    options.pipes = path == Path::copy ? nullptr : &pipes;
    RelayControl control;
    const double c0 = thread_cpu_s();
    asio::co_spawn(io, egressd::relay::relay(client, upstream, options, control), asio::detached);
    io.run();
    cpu_s = thread_cpu_s() - c0;
  });
  std::thread sink_thread([&] { got = sink(out.far, load_cpu); });
  source(in.near, bytes, load_cpu);
  sink_thread.join();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  relay_thread.join();
  if (got != bytes) {
    std::fprintf(stderr, "relay_bench: sink got %llu of %llu bytes\n",
                 static_cast<unsigned long long>(got), static_cast<unsigned long long>(bytes));
    std::exit(1);
  }
  r.bytes = got;
  r.gbit_s = static_cast<double>(got) * 8 / wall / 1e9;
  r.relay_ms_per_gb = cpu_s * 1e3 / (static_cast<double>(got) / 1e9);
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int arg_int(int& i, int argc, char** argv) {
  if (i + 1 >= argc) {
    std::fprintf(stderr, "relay_bench: %s needs a value\n", argv[i]);
    std::exit(2);
  }
  return std::atoi(argv[++i]);
}

}  // namespace

int main(int argc, char** argv) {
  int gib = 4;
  int reps = 3;
  int relay_cpu = 1;
  int load_cpu = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--gib") {
      gib = arg_int(i, argc, argv);
    } else if (a == "--reps") {
      reps = arg_int(i, argc, argv);
    } else if (a == "--relay-cpu") {
      relay_cpu = arg_int(i, argc, argv);
    } else if (a == "--load-cpu") {
      load_cpu = arg_int(i, argc, argv);
    } else {
      std::fprintf(stderr,
                   "usage: relay_bench [--gib N] [--reps R] [--relay-cpu C] [--load-cpu C]\n");
      return 2;
    }
  }
  if (gib < 1 || reps < 1) {
    std::fprintf(stderr, "relay_bench: --gib and --reps must be >= 1\n");
    return 2;
  }
  const std::uint64_t bytes = static_cast<std::uint64_t>(gib) << 30;
  struct Named {
    Path path;
    const char* name;
    std::vector<double> gbit;
    std::vector<double> cost;
  };
  std::vector<Named> paths = {{Path::splice_1m, "splice, 1 MiB pipe", {}, {}},
                              {Path::splice_64k, "splice, 64 KiB pipe", {}, {}},
                              {Path::copy, "copy, 64 KiB buffer", {}, {}}};
  for (int rep = 0; rep < reps; ++rep) {
    for (auto& p : paths) {
      const Result r = run_once(p.path, bytes, relay_cpu, load_cpu);
      p.gbit.push_back(r.gbit_s);
      p.cost.push_back(r.relay_ms_per_gb);
      std::fprintf(stderr, "rep %d %-20s %6.2f Gbit/s %6.0f relay ms/GB\n", rep + 1, p.name,
                   r.gbit_s, r.relay_ms_per_gb);
    }
  }
  std::printf("| relay path | Gbit/s | relay CPU ms/GB | min..max ms/GB |\n|---|---|---|---|\n");
  for (const auto& p : paths) {
    std::printf("| %s | %.1f | %.0f | %.0f..%.0f |\n", p.name, median(p.gbit), median(p.cost),
                *std::min_element(p.cost.begin(), p.cost.end()),
                *std::max_element(p.cost.begin(), p.cost.end()));
  }
  std::printf("(%d GiB per run, median of %d, relay on CPU %d, source and sink on CPU %d)\n", gib,
              reps, relay_cpu, load_cpu);
  return 0;
}
