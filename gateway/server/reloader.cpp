#include "reloader.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <utility>

namespace egressd::server {

Reloader::Reloader(std::function<void(std::uint64_t)> prepare)
    : prepare_(std::move(prepare)), thread_([this] { run(); }) {}

Reloader::~Reloader() {
  stop();
}

std::uint64_t Reloader::request() {
  std::uint64_t seq = 0;
  {
    // Under the lock, so the reloader cannot check for work between the
    // increment and the notification and then sleep through it.
    std::lock_guard lock(mu_);
    seq = requested_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }
  cv_.notify_one();
  return seq;
}

void Reloader::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void Reloader::run() {
  // Preparing a reload (parse, validate, compile: tens of seconds for a
  // million rules) yields the CPU to the workers relaying traffic. Nice
  // 10, not 19: a busy gateway still finishes a reload in a few times its
  // idle duration. Lowering one's own priority needs no privilege.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 10);
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock,
             [this] { return stopping_ || requested_.load(std::memory_order_acquire) > started_; });
    if (stopping_) return;
    // Every request up to here is served by this one run, for the newest.
    started_ = requested_.load(std::memory_order_acquire);
    const std::uint64_t seq = started_;
    lock.unlock();
    prepare_(seq);
    lock.lock();
  }
}

}  // namespace egressd::server
