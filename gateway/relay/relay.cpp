#include "egressd/relay/relay.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <functional>
#include <memory>

#include <boost/asio/async_result.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace egressd::relay {
namespace asio = boost::asio;
using asio::awaitable;

namespace {

// A splice that moved less than this emptied the socket's receive queue
// (or nearly: a pipe can also fill up on slots of small segments). The
// burst ends there instead of probing with a splice that would return
// EAGAIN: the next wait re-arms the descriptor and reports bytes that are
// already queued, so nothing is left behind either way. Bulk transfers,
// whose splices fill the pipe, keep reading without a wait.
constexpr std::size_t kDrainedBelow = 64U << 10;

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

// Both directions of one flow, driven by completion handlers rather than
// coroutines: an idle flow keeps this object (in relay()'s frame) and one
// pending readiness wait per direction, nothing else — no coroutine frame
// per direction, no parallel group, no co_spawn.
class Pumps {
 public:
  using Done = std::function<void()>;

  Pumps(Socket& client, Socket& upstream, const RelayOptions& options, RelayControl& control)
      : options_(options),
        control_(control),
        up_(client, upstream, control.bytes_up),
        down_(upstream, client, control.bytes_down) {}

  // Runs both directions; `done` is called once both have ended.
  template <typename Handler>
  void start(Handler&& handler) {
    handler_ = std::forward<Handler>(handler);
    wait_readable(up_);
    wait_readable(down_);
  }

  [[nodiscard]] DirectionEnd up_end() const { return *up_.end; }
  [[nodiscard]] DirectionEnd down_end() const { return *down_.end; }

 private:
  struct Direction {
    Direction(Socket& source, Socket& sink, std::uint64_t& counter)
        : from(&source), to(&sink), count(&counter) {}
    Socket* from;
    Socket* to;
    std::uint64_t* count;
    std::optional<PipePool::Pipe> pipe;   // held only while bytes are in flight
    std::unique_ptr<std::byte[]> buffer;  // the copy path's, likewise
    std::size_t offset = 0;               // copy path: next byte of buffer to write
    std::size_t pending = 0;              // bytes read, not yet written
    bool short_read = false;              // the last read drained the socket
    std::optional<DirectionEnd> end;
  };

  // Waits for the source to be readable, or for the receiver to take more
  // (backpressure), then pumps again; a failed or stopped wait ends the
  // direction.
  void wait_readable(Direction& d) { wait(d, *d.from, Socket::wait_read); }
  void wait_writable(Direction& d) { wait(d, *d.to, Socket::wait_write); }

  void wait(Direction& d, Socket& socket, Socket::wait_type what) {
    socket.async_wait(what, [this, &d](const boost::system::error_code& ec) {
      if (ec) {
        finish(d,
               ec == asio::error::operation_aborted ? DirectionEnd::aborted : DirectionEnd::reset);
        return;
      }
      pump(d);
    });
  }

  // Moves what is readable now, then waits again (for the source to be
  // readable, or for the receiver when it pushes back).
  void pump(Direction& d) {
    for (;;) {
      if (d.pending > 0) {
        const Step step = flush(d);
        if (step == Step::wait) return wait_writable(d);
        if (step == Step::failed) return finish(d, DirectionEnd::reset);
        if (d.short_read) {
          release(d);
          return wait_readable(d);
        }
      }
      const Step step = fill(d);
      if (step == Step::wait) {
        release(d);
        return wait_readable(d);
      }
      if (step == Step::eof) {
        release(d);
        half_close(*d.to);
        return finish(d, DirectionEnd::eof);
      }
      if (step == Step::failed) return finish(d, DirectionEnd::reset);
    }
  }

  enum class Step : std::uint8_t { progress, wait, eof, failed };

  // One read from the source into the direction's pipe (splice) or buffer.
  Step fill(Direction& d) {
    if (!d.pipe && !d.buffer && options_.pipes != nullptr) d.pipe = options_.pipes->acquire();
    if (d.pipe) {
      const ssize_t n = ::splice(d.from->native_handle(), nullptr, d.pipe->write_fd, nullptr,
                                 1U << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) return moved(d, static_cast<std::size_t>(n), kDrainedBelow);
      if (n == 0) return Step::eof;
      if (errno == EAGAIN) return Step::wait;
      if (errno == EINTR) return Step::progress;
      return Step::failed;
    }
    // Plain read(2): the socket is O_NONBLOCK since Asio's first wait on it.
    if (!d.buffer) d.buffer = options_.buffers->acquire();
    const std::size_t size = options_.buffers->buffer_size();
    const ssize_t n = ::read(d.from->native_handle(), d.buffer.get(), size);
    if (n > 0) {
      d.offset = 0;
      return moved(d, static_cast<std::size_t>(n), size);
    }
    if (n == 0) return Step::eof;
    if (errno == EAGAIN) return Step::wait;
    if (errno == EINTR) return Step::progress;
    return Step::failed;
  }

  Step moved(Direction& d, std::size_t n, std::size_t drained_below) {
    *d.count += n;
    control_.last_activity = std::chrono::steady_clock::now();
    d.pending = n;
    // A read shorter than this emptied the socket: write, then wait
    // instead of a read that would say EAGAIN.
    d.short_read = n < drained_below;
    return Step::progress;
  }

  // Writes what is pending; `wait` when the receiver pushes back (the one
  // pipe or buffer is held, nothing more is read meanwhile).
  Step flush(Direction& d) {
    while (d.pending > 0) {
      const ssize_t m = d.pipe ? ::splice(d.pipe->read_fd, nullptr, d.to->native_handle(), nullptr,
                                          d.pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
                               : ::send(d.to->native_handle(), d.buffer.get() + d.offset, d.pending,
                                        MSG_NOSIGNAL);
      if (m > 0) {
        d.pending -= static_cast<std::size_t>(m);
        d.offset += static_cast<std::size_t>(m);
        continue;
      }
      if (m < 0 && errno == EINTR) continue;
      if (m < 0 && errno == EAGAIN) return Step::wait;
      return Step::failed;
    }
    return Step::progress;
  }

  // Gives the pipe or buffer back; an idle direction holds neither.
  void release(Direction& d) {
    if (d.pipe) {
      if (d.pending == 0) {
        options_.pipes->release(*d.pipe);
      } else {
        options_.pipes->destroy(*d.pipe);
      }
      d.pipe.reset();
    }
    if (d.buffer) {
      options_.buffers->release(std::move(d.buffer));
      d.buffer.reset();
    }
    d.pending = 0;
  }

  void finish(Direction& d, DirectionEnd end) {
    release(d);
    d.end = end;
    if (end == DirectionEnd::reset) cancel_both(*d.from, *d.to);
    if (up_.end && down_.end) {
      auto handler = std::move(handler_);
      handler();
    }
  }

  const RelayOptions& options_;
  RelayControl& control_;
  Direction up_;
  Direction down_;
  Done handler_;
};

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
  Pumps pumps(client, upstream, options, control);
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
      [&pumps](auto handler) {
        pumps.start(
            [h = std::make_shared<decltype(handler)>(std::move(handler))]() mutable { (*h)(); });
      },
      asio::use_awaitable);
  if (control.stop_reason) co_return *control.stop_reason;
  if (pumps.up_end() == DirectionEnd::eof && pumps.down_end() == DirectionEnd::eof) {
    co_return EndReason::eof;
  }
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
