#pragma once
// The reload thread: config reloads are prepared (read, validated, own
// tests run, policy compiled) here, one at a time, never on a worker or on
// the control thread that answers /healthz and signals. A 1M-rule policy
// compiles for seconds; meanwhile the gateway keeps relaying and answering.
//
// Newest wins: requests made while one is being prepared are merged into
// one more run, for the newest of them. The run that was under way
// finishes (a compile cannot be interrupted) and sees superseded() true;
// its caller discards it instead of applying it, so the newest file is what
// ends up serving and an older one never serves in between. No request is
// lost: after the last request, one run always starts.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace egressd::server {

class Reloader {
 public:
  // `prepare(seq)` runs on the reloader's own thread, for the newest
  // request `seq`. It must not throw.
  explicit Reloader(std::function<void(std::uint64_t seq)> prepare);
  Reloader(const Reloader&) = delete;
  Reloader& operator=(const Reloader&) = delete;
  ~Reloader();

  // Any thread: asks for a reload; returns this request's number (1, 2,
  // ...). Returns at once.
  std::uint64_t request();

  // Any thread: a request newer than `seq` has been made.
  [[nodiscard]] bool superseded(std::uint64_t seq) const noexcept {
    return requested_.load(std::memory_order_acquire) > seq;
  }

  // Waits for a prepare under way to return; none starts after. Idempotent.
  void stop();

 private:
  void run();

  std::function<void(std::uint64_t)> prepare_;
  std::atomic<std::uint64_t> requested_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t started_ = 0;  // the newest request a run started for; guarded by mu_
  bool stopping_ = false;      // guarded by mu_
  std::thread thread_;         // last: starts once the rest is ready
};

}  // namespace egressd::server
