#pragma once
// The access-log writer: many worker threads submit records, one writer
// thread formats and writes them with write(2) in large batches, so a slow
// disk or a slow stdout reader never runs on a worker's time.
//
// Back-pressure (config access_log.on_full), once `capacity` records wait:
// - drop: further records are dropped and counted (dropped_total()).
// - block: records are still queued (one already produced by an open flow is
//   never lost; the queue may exceed `capacity` by what the open flows
//   produce), and accepting_paused() turns true so listeners stop accepting
//   new flows. It turns false again, and Options::on_resume runs, once the
//   writer has brought the backlog down to `low_water`.
//
// A failed write (a full disk): in block mode the writer keeps the records
// and tries again (50 ms, doubling to 1 s) until the write succeeds or the
// log stops, so the queue fills and accepting pauses; in drop mode the
// chunk's unwritten records are dropped and counted one by one. Either way
// the file holds whole lines only: a record cut by the failure is cut off
// the file again before anything else is written.
//
// Threads: submit(), accepting_paused() and the counters are safe from any
// thread. reopen(), flush() and stop() from any thread but the writer's
// callbacks. Nothing here is async-signal-safe: call reopen() from a signal
// watcher (asio::signal_set), not from a raw signal handler.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/system/result.hpp>

#include "egressd/config/spec.hpp"
#include "egressd/log/record.hpp"

namespace egressd::log {

class AccessLog {
 public:
  struct Options {
    std::size_t capacity = 65'536;  // records waiting before on_full applies
    std::size_t low_water = 0;      // resume below this; 0 = capacity / 2
    // Runs on the writer thread when a block-mode pause ends; must not call
    // back into this AccessLog's flush()/stop(). Typically posts to the
    // listeners' executors so they resume accepting.
    std::function<void()> on_resume;
  };

  // Opens spec.path ("-" = stdout, else a file opened for appending and
  // created 0640 if missing) and starts the writer thread. Fails, without
  // starting anything, with the open(2) error when the file can't be opened.
  static boost::system::result<std::unique_ptr<AccessLog>> open(const config::AccessLogSpec& spec,
                                                                Options options);
  static boost::system::result<std::unique_ptr<AccessLog>> open(const config::AccessLogSpec& spec) {
    return open(spec, Options{});
  }

  // Writes to an already open descriptor, which this object then owns and
  // closes on stop(); reopen() does nothing. For tests (a pipe nobody reads
  // stalls the writer) and for callers that set the descriptor up themselves.
  static std::unique_ptr<AccessLog> attach(int fd, config::OnFull on_full, Options options);

  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;
  ~AccessLog();  // stop()

  // Queues a record; never blocks on I/O, only briefly on the queue's lock.
  // Returns false when the record was dropped (drop mode, queue full, or
  // after stop()).
  bool submit(FlowRecord&& record);

  // Block mode: true while the listeners should not accept new flows.
  [[nodiscard]] bool accepting_paused() const noexcept {
    return paused_.load(std::memory_order_acquire);
  }

  // Close and open the file again at its path, so that after logrotate
  // renames it the next records go to a new file. Takes effect on the
  // writer thread before it writes the records it takes next; a failure
  // keeps the old descriptor and is reported on stderr.
  void reopen();

  // Blocks until every record submitted before the call has been written
  // (or failed to be) and a pending reopen() has happened.
  void flush();

  // Writes everything queued, then stops the writer and closes the file.
  // Records submitted afterwards are dropped. Idempotent. Like flush(), it
  // waits for the writes: an output nobody reads (a stalled stdout pipe)
  // blocks it until someone does. write(2) to a pipe whose reader has gone
  // raises SIGPIPE: the process ignores SIGPIPE, as any server does.
  void stop();

  [[nodiscard]] std::uint64_t written_total() const noexcept {
    return written_.load(std::memory_order_relaxed);
  }
  // Records that were not written for any reason: refused while full (drop
  // mode) or lost to a failed write (e.g. disk full). This is
  // egressd_access_log_dropped_total.
  [[nodiscard]] std::uint64_t dropped_total() const noexcept {
    return dropped_.load(std::memory_order_relaxed);
  }
  // write(2)/open(2) failures; each burst of them is reported once on stderr.
  [[nodiscard]] std::uint64_t write_errors_total() const noexcept {
    return write_errors_.load(std::memory_order_relaxed);
  }
  // Records queued or being written right now.
  [[nodiscard]] std::size_t backlog() const;

 private:
  AccessLog(int fd, bool owns_fd, std::string path, config::OnFull on_full, Options options);

  void run();
  // Writes buf (whole lines). Returns how many of its leading bytes are in
  // the file as whole lines: all of them, or after a failure (reported)
  // those up to the last complete line, a torn tail being truncated away.
  std::size_t write_lines(std::string_view buf);
  // Writes one chunk of whole lines as on_full_ says (block: retry until
  // written or stopping); returns how many lines were written.
  std::size_t write_chunk(std::string_view buf);
  // Writer thread, mu_ held (released while the file is opened): answers a
  // pending reopen() request.
  void serve_reopen(std::unique_lock<std::mutex>& lock);
  void do_reopen();
  void report_write_failure(int err);

  const std::string path_;  // empty when not reopenable
  const config::OnFull on_full_;
  const std::size_t capacity_;
  const std::size_t low_water_;
  const std::function<void()> on_resume_;

  // Owned by the writer thread (and by stop() after the join).
  int fd_;
  bool owns_fd_;
  bool failing_ = false;  // inside a burst of failures: reported once

  mutable std::mutex mu_;
  std::condition_variable wake_writer_;  // records, reopen or stop
  std::condition_variable progress_;     // for flush()
  std::vector<FlowRecord> queue_;        // guarded by mu_
  std::size_t in_flight_ = 0;            // taken by the writer, not yet written
  std::uint64_t enqueued_seq_ = 0;       // records ever queued
  std::uint64_t done_seq_ = 0;           // records written or lost
  bool reopen_requested_ = false;
  bool stopping_ = false;

  std::atomic<bool> paused_{false};
  std::atomic<std::uint64_t> written_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> write_errors_{0};

  std::mutex stop_mu_;  // serialises stop() callers around the join
  std::thread writer_;
};

}  // namespace egressd::log
