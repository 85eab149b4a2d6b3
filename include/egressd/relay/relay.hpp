#pragma once
// Moves bytes both ways between a client and its upstream until both sides
// are done, with correct half-close, an idle timeout, live byte counts and
// end-to-end backpressure (never more than one buffer or pipe in flight per
// direction).
//
// Two paths:
//  - splice(2) through a pipe enlarged to 1 MiB (the kernel moves pages;
//    3.4x less CPU than copying, see docs/performance.md). Pipes come from
//    a per-worker bounded pool and are held only while a direction has
//    bytes in flight, so idle flows hold none.
//  - plain copy through a per-worker buffer pool, when splice is off or the
//    pipe pool is exhausted.
// Both directions are driven by completion handlers from one object in
// relay()'s frame: an idle flow holds that, one readiness wait per
// direction, and no buffer or pipe (each direction waits for readability
// before it takes either). A read shorter than the pipe or buffer ends a
// burst without a probing read that would only say EAGAIN.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace egressd::relay {

using Socket = boost::asio::ip::tcp::socket;

// Why the relay ended; maps to the access log's `close`.
enum class EndReason : std::uint8_t { eof, reset, idle_timeout, drained, revoked };

// Per-worker pools. Not thread-safe: one per worker thread.
class PipePool {
 public:
  struct Pipe {
    int read_fd = -1;
    int write_fd = -1;
  };
  // `max_pipes` bounds the fds spent on pipes (two each).
  explicit PipePool(std::size_t max_pipes, std::size_t pipe_size = 1U << 20);
  ~PipePool();
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // A pipe that is empty, or nullopt when the bound is reached or pipe()
  // fails (the caller falls back to copying).
  std::optional<Pipe> acquire();
  // Returns an empty pipe; a pipe that may hold bytes must be destroyed.
  void release(Pipe p);
  void destroy(Pipe p);
  [[nodiscard]] std::size_t in_use() const noexcept { return in_use_; }

 private:
  std::vector<Pipe> free_;
  std::size_t in_use_ = 0;
  std::size_t max_pipes_;
  std::size_t pipe_size_;
};

class BufferPool {
 public:
  explicit BufferPool(std::size_t buffer_size = 64U << 10, std::size_t keep = 64);
  std::unique_ptr<std::byte[]> acquire();
  void release(std::unique_ptr<std::byte[]> b);
  // Frees kept buffers beyond `keep` (after a burst, before a heap trim).
  void shrink(std::size_t keep) {
    if (free_.size() > keep) free_.resize(keep);
  }
  [[nodiscard]] std::size_t buffer_size() const noexcept { return buffer_size_; }

 private:
  std::vector<std::unique_ptr<std::byte[]>> free_;
  std::size_t buffer_size_;
  std::size_t keep_;
};

// Shared between a flow and whoever may stop it (drain, revoke): stop()
// records the reason and closes both sockets, which ends the relay.
struct RelayControl {
  std::uint64_t bytes_up = 0;    // client -> upstream, live
  std::uint64_t bytes_down = 0;  // upstream -> client, live
  std::chrono::steady_clock::time_point last_activity{};
  std::optional<EndReason> stop_reason;
};

struct RelayOptions {
  PipePool* pipes = nullptr;      // nullptr: copy only
  BufferPool* buffers = nullptr;  // required
};

// Relays until both directions have ended (EOF both ways), either side
// resets, or a stopper (stop_if_idle, drain, revoke) sets
// control.stop_reason and cancels or closes the sockets. Never throws for
// network errors.
boost::asio::awaitable<EndReason> relay(Socket& client, Socket& upstream,
                                        const RelayOptions& options, RelayControl& control);

// The idle timeout, checked by a periodic sweep over a worker's flows
// rather than one timer per flow (a timer and its wait would cost every
// idle flow memory and every burst a re-arm). When no byte has moved for
// `idle`, ends the relay with idle_timeout and returns true.
bool stop_if_idle(Socket& client, Socket& upstream, RelayControl& control,
                  std::chrono::milliseconds idle, std::chrono::steady_clock::time_point now);

}  // namespace egressd::relay
