#include "reloader.hpp"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace egressd::server {
namespace {

using namespace std::chrono_literals;

// A prepare that records its runs and, while `hold` is set, blocks (a
// compile that takes a while).
struct Recorder {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::uint64_t> runs;
  std::vector<bool> superseded_at_end;
  bool hold = false;
  bool running = false;

  bool wait_runs(std::size_t n) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 10s, [&] { return runs.size() >= n && !running; });
  }
  bool wait_running() {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, 10s, [&] { return running; });
  }
  void release() {
    {
      std::lock_guard lock(mu);
      hold = false;
    }
    cv.notify_all();
  }
};

TEST(Reloader, OneRequestOneRun) {
  Recorder r;
  Reloader reloader([&](std::uint64_t seq) {
    std::lock_guard lock(r.mu);
    r.runs.push_back(seq);
    r.cv.notify_all();
  });
  EXPECT_EQ(reloader.request(), 1U);
  ASSERT_TRUE(r.wait_runs(1));
  EXPECT_EQ(r.runs, (std::vector<std::uint64_t>{1}));
  EXPECT_FALSE(reloader.superseded(1));
  EXPECT_EQ(reloader.request(), 2U);
  ASSERT_TRUE(r.wait_runs(2));
  EXPECT_EQ(r.runs, (std::vector<std::uint64_t>{1, 2}));
}

// Requests made while one is prepared merge into one more run, for the
// newest; the run under way finishes and sees itself superseded.
TEST(Reloader, NewestWinsWhileOneIsPrepared) {
  Recorder r;
  r.hold = true;
  Reloader* self = nullptr;
  Reloader reloader([&](std::uint64_t seq) {
    std::unique_lock lock(r.mu);
    r.running = true;
    r.cv.notify_all();
    r.cv.wait(lock, [&] { return !r.hold; });
    r.runs.push_back(seq);
    r.superseded_at_end.push_back(self->superseded(seq));
    r.running = false;
    r.cv.notify_all();
  });
  self = &reloader;
  reloader.request();
  ASSERT_TRUE(r.wait_running());
  reloader.request();
  reloader.request();
  EXPECT_EQ(reloader.request(), 4U);
  EXPECT_TRUE(reloader.superseded(1));
  r.release();
  ASSERT_TRUE(r.wait_runs(2));
  std::this_thread::sleep_for(50ms);  // no third run comes
  std::lock_guard lock(r.mu);
  EXPECT_EQ(r.runs, (std::vector<std::uint64_t>{1, 4}));
  EXPECT_EQ(r.superseded_at_end, (std::vector<bool>{true, false}));
}

TEST(Reloader, StopWaitsForTheRunUnderWayAndStartsNoOther) {
  Recorder r;
  r.hold = true;
  Reloader reloader([&](std::uint64_t seq) {
    std::unique_lock lock(r.mu);
    r.running = true;
    r.cv.notify_all();
    r.cv.wait(lock, [&] { return !r.hold; });
    r.runs.push_back(seq);
    r.running = false;
  });
  reloader.request();
  ASSERT_TRUE(r.wait_running());
  reloader.request();
  std::thread releaser([&] {
    std::this_thread::sleep_for(50ms);
    r.release();
  });
  reloader.stop();
  releaser.join();
  reloader.stop();  // idempotent
  EXPECT_EQ(r.runs, (std::vector<std::uint64_t>{1}));
}

}  // namespace
}  // namespace egressd::server
