#include "egressd/relay/relay.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

namespace egressd::relay {
namespace asio = boost::asio;
using asio::awaitable;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr auto kNoThrow = asio::as_tuple(asio::use_awaitable);

enum class DirectionEnd : std::uint8_t { eof, reset, aborted };

// Ends both directions at once (a reset on one side, or a stop): pending
// waits complete with operation_aborted.
void cancel_both(Socket& a, Socket& b) {
  boost::system::error_code ignored;
  a.cancel(ignored);
  b.cancel(ignored);
}

void half_close(Socket& to) {
  boost::system::error_code ignored;
  to.shutdown(Socket::shutdown_send, ignored);
}

// One burst through a pipe: splice socket -> pipe -> socket until the
// source has nothing more to read now. Returns nullopt to go on waiting.
awaitable<std::optional<DirectionEnd>> splice_burst(Socket& from, Socket& to, PipePool& pool,
                                                    PipePool::Pipe pipe, std::uint64_t& count,
                                                    RelayControl& control) {
  const int from_fd = from.native_handle();
  const int to_fd = to.native_handle();
  for (;;) {
    const ssize_t n = ::splice(from_fd, nullptr, pipe.write_fd, nullptr, 1U << 20,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n == 0) {
      pool.release(pipe);
      half_close(to);
      co_return DirectionEnd::eof;
    }
    if (n < 0) {
      if (errno == EAGAIN) {
        pool.release(pipe);
        co_return std::nullopt;
      }
      if (errno == EINTR) continue;
      pool.destroy(pipe);
      co_return DirectionEnd::reset;
    }
    count += static_cast<std::uint64_t>(n);
    control.last_activity = std::chrono::steady_clock::now();
    auto pending = static_cast<std::size_t>(n);
    while (pending > 0) {
      const ssize_t m = ::splice(pipe.read_fd, nullptr, to_fd, nullptr, pending,
                                 SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (m > 0) {
        pending -= static_cast<std::size_t>(m);
        continue;
      }
      if (m < 0 && errno == EINTR) continue;
      if (m < 0 && errno == EAGAIN) {
        // Backpressure: the receiver is slow; hold this one pipe, no more.
        auto [ec] = co_await to.async_wait(Socket::wait_write, kNoThrow);
        if (!ec) continue;
        pool.destroy(pipe);
        co_return ec == asio::error::operation_aborted ? DirectionEnd::aborted
                                                       : DirectionEnd::reset;
      }
      pool.destroy(pipe);
      co_return DirectionEnd::reset;
    }
  }
}

// One burst through a pooled buffer.
awaitable<std::optional<DirectionEnd>> copy_burst(Socket& from, Socket& to, BufferPool& pool,
                                                  std::uint64_t& count, RelayControl& control) {
  // Synchronous reads below need the user-visible non-blocking mode; set
  // it once, only for flows that take this path (an ioctl each).
  boost::system::error_code nb;
  if (!from.non_blocking()) from.non_blocking(true, nb);
  auto buffer = pool.acquire();
  const std::size_t size = pool.buffer_size();
  std::optional<DirectionEnd> end;
  for (;;) {
    boost::system::error_code ec;
    const std::size_t n = from.read_some(asio::buffer(buffer.get(), size), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) break;
    if (ec == asio::error::eof) {
      half_close(to);
      end = DirectionEnd::eof;
      break;
    }
    if (ec) {
      end = DirectionEnd::reset;
      break;
    }
    count += n;
    control.last_activity = std::chrono::steady_clock::now();
    auto [wec, written] = co_await asio::async_write(to, asio::buffer(buffer.get(), n), kNoThrow);
    if (wec) {
      end = wec == asio::error::operation_aborted ? DirectionEnd::aborted : DirectionEnd::reset;
      break;
    }
    if (n < size) break;  // drained for now; wait instead of a read that says EAGAIN
  }
  pool.release(std::move(buffer));
  co_return end;
}

awaitable<DirectionEnd> pump(Socket& from, Socket& to, std::uint64_t& count,
                             const RelayOptions& options, RelayControl& control) {
  for (;;) {
    // Idle flows wait here holding neither buffer nor pipe.
    auto [ec] = co_await from.async_wait(Socket::wait_read, kNoThrow);
    if (ec) {
      co_return ec == asio::error::operation_aborted ? DirectionEnd::aborted : DirectionEnd::reset;
    }
    std::optional<DirectionEnd> end;
    std::optional<PipePool::Pipe> pipe;
    if (options.pipes != nullptr) pipe = options.pipes->acquire();
    if (pipe) {
      end = co_await splice_burst(from, to, *options.pipes, *pipe, count, control);
    } else {
      end = co_await copy_burst(from, to, *options.buffers, count, control);
    }
    if (end) {
      if (*end == DirectionEnd::reset) cancel_both(from, to);
      co_return *end;
    }
  }
}

}  // namespace

PipePool::PipePool(std::size_t max_pipes, std::size_t pipe_size)
    : max_pipes_(max_pipes), pipe_size_(pipe_size) {}

PipePool::~PipePool() {
  for (auto& p : free_) {
    ::close(p.read_fd);
    ::close(p.write_fd);
  }
}

std::optional<PipePool::Pipe> PipePool::acquire() {
  if (!free_.empty()) {
    Pipe p = free_.back();
    free_.pop_back();
    ++in_use_;
    return p;
  }
  if (in_use_ >= max_pipes_) return std::nullopt;
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return std::nullopt;
  // A larger pipe moves a bulk transfer in fewer, larger splices. Without
  // the privilege to go past /proc/sys/fs/pipe-max-size this may fail: the
  // default 64 KiB pipe still works, only slower.
  (void)::fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(pipe_size_));
  ++in_use_;
  return Pipe{fds[0], fds[1]};
}

void PipePool::release(Pipe p) {
  --in_use_;
  free_.push_back(p);
}

void PipePool::destroy(Pipe p) {
  --in_use_;
  ::close(p.read_fd);
  ::close(p.write_fd);
}

BufferPool::BufferPool(std::size_t buffer_size, std::size_t keep)
    : buffer_size_(buffer_size), keep_(keep) {}

std::unique_ptr<std::byte[]> BufferPool::acquire() {
  if (free_.empty()) return std::make_unique_for_overwrite<std::byte[]>(buffer_size_);
  auto b = std::move(free_.back());
  free_.pop_back();
  return b;
}

void BufferPool::release(std::unique_ptr<std::byte[]> b) {
  if (free_.size() < keep_) free_.push_back(std::move(b));
}

awaitable<EndReason> relay(Socket& client, Socket& upstream, const RelayOptions& options,
                           RelayControl& control) {
  // splice() needs O_NONBLOCK on both sockets: Asio sets it on a socket
  // before its first asynchronous wait, and every splice follows one.
  control.last_activity = std::chrono::steady_clock::now();
  const auto [up, down] = co_await (pump(client, upstream, control.bytes_up, options, control) &&
                                    pump(upstream, client, control.bytes_down, options, control));
  if (control.stop_reason) co_return *control.stop_reason;
  if (up == DirectionEnd::eof && down == DirectionEnd::eof) co_return EndReason::eof;
  // A reset on one side: pass it on as a reset (RST), not a clean FIN.
  const ::linger hard{1, 0};
  ::setsockopt(client.native_handle(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  ::setsockopt(upstream.native_handle(), SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
  co_return EndReason::reset;
}

bool stop_if_idle(Socket& client, Socket& upstream, RelayControl& control,
                  std::chrono::milliseconds idle, std::chrono::steady_clock::time_point now) {
  if (control.stop_reason || now - control.last_activity < idle) return false;
  control.stop_reason = EndReason::idle_timeout;
  cancel_both(client, upstream);
  return true;
}

}  // namespace egressd::relay
