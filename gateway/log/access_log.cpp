#include "egressd/log/access_log.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace egressd::log {
namespace {

// Records are formatted into chunks of about this size, each one write(2):
// large enough to amortise the syscall, small enough that the backlog (and
// with it a block-mode pause) shrinks steadily during a big batch.
constexpr std::size_t kChunkBytes = 256 * 1024;
constexpr std::size_t kGatherRecords = 256;
constexpr auto kGatherTime = std::chrono::milliseconds(5);

constexpr int kFileMode = 0640;

int open_for_append(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, kFileMode);
}

// stderr without stdio: this runs on the writer thread next to spdlog.
void say(const std::string& line) {
  std::size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + off, line.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<std::size_t>(n);
  }
}

}  // namespace

boost::system::result<std::unique_ptr<AccessLog>> AccessLog::open(const config::AccessLogSpec& spec,
                                                                  Options options) {
  if (spec.path == "-") {
    return std::unique_ptr<AccessLog>(
        new AccessLog(STDOUT_FILENO, false, std::string(), spec.on_full, std::move(options)));
  }
  const int fd = open_for_append(spec.path);
  if (fd < 0) return boost::system::error_code(errno, boost::system::system_category());
  return std::unique_ptr<AccessLog>(
      new AccessLog(fd, true, spec.path, spec.on_full, std::move(options)));
}

std::unique_ptr<AccessLog> AccessLog::attach(int fd, config::OnFull on_full, Options options) {
  return std::unique_ptr<AccessLog>(
      new AccessLog(fd, true, std::string(), on_full, std::move(options)));
}

AccessLog::AccessLog(int fd, bool owns_fd, std::string path, config::OnFull on_full,
                     Options options)
    : path_(std::move(path)),
      on_full_(on_full),
      capacity_(options.capacity > 0 ? options.capacity : 1),
      low_water_(options.low_water > 0 && options.low_water < capacity_ ? options.low_water
                                                                        : capacity_ / 2),
      on_resume_(std::move(options.on_resume)),
      fd_(fd),
      owns_fd_(owns_fd) {
  queue_.reserve(std::min<std::size_t>(capacity_, 4096));
  writer_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
  stop();
}

bool AccessLog::submit(FlowRecord&& record) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      dropped_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    if (queue_.size() + in_flight_ >= capacity_) {
      if (on_full_ == config::OnFull::drop) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
      paused_.store(true, std::memory_order_release);
    }
    wake = queue_.empty();
    queue_.push_back(std::move(record));
    ++enqueued_seq_;
  }
  // The writer only sleeps on an empty queue, so one notify per refill is
  // enough and a busy log costs no futex calls.
  if (wake) wake_writer_.notify_one();
  return true;
}

void AccessLog::reopen() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || path_.empty()) return;
    reopen_requested_ = true;
  }
  wake_writer_.notify_one();
}

void AccessLog::flush() {
  std::unique_lock lock(mu_);
  const std::uint64_t target = enqueued_seq_;
  progress_.wait(lock, [&] { return done_seq_ >= target && !reopen_requested_; });
}

void AccessLog::stop() {
  std::lock_guard stop_lock(stop_mu_);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_writer_.notify_one();
  if (writer_.joinable()) writer_.join();
  if (owns_fd_ && fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

std::size_t AccessLog::backlog() const {
  std::lock_guard lock(mu_);
  return queue_.size() + in_flight_;
}

void AccessLog::run() {
  std::vector<FlowRecord> batch;
  std::string buf;
  buf.reserve(kChunkBytes + 4096);
  std::unique_lock lock(mu_);
  for (;;) {
    wake_writer_.wait(lock, [&] { return !queue_.empty() || reopen_requested_ || stopping_; });
    // Gather for a moment before writing: a steady trickle of records then
    // costs one wake-up and one write(2) per few milliseconds, not one per
    // record (submit() notifies only when it finds the queue empty).
    if (!stopping_ && !reopen_requested_ && queue_.size() < kGatherRecords) {
      wake_writer_.wait_for(lock, kGatherTime, [&] { return stopping_ || reopen_requested_; });
    }
    if (reopen_requested_) serve_reopen(lock);
    if (queue_.empty()) {
      if (stopping_) break;
      continue;
    }
    batch.swap(queue_);
    in_flight_ = batch.size();
    lock.unlock();

    std::size_t i = 0;
    while (i < batch.size()) {
      buf.clear();
      const std::size_t first = i;
      while (i < batch.size() && buf.size() < kChunkBytes) append_record_line(buf, batch[i++]);
      const std::size_t n = i - first;
      const std::size_t ok = write_chunk(buf);
      written_.fetch_add(ok, std::memory_order_relaxed);
      dropped_.fetch_add(n - ok, std::memory_order_relaxed);
      bool resumed = false;
      {
        std::lock_guard progress_lock(mu_);
        in_flight_ -= n;
        done_seq_ += n;
        if (paused_.load(std::memory_order_relaxed) && queue_.size() + in_flight_ <= low_water_) {
          paused_.store(false, std::memory_order_release);
          resumed = true;
        }
      }
      progress_.notify_all();
      if (resumed && on_resume_) on_resume_();
    }
    batch.clear();
    // A burst under block mode can grow the batch far past capacity; don't
    // keep that memory for the life of the process.
    if (batch.capacity() > 2 * capacity_) std::vector<FlowRecord>().swap(batch);
    lock.lock();
  }
}

std::size_t AccessLog::write_chunk(std::string_view buf) {
  std::size_t written = 0;
  auto backoff = std::chrono::milliseconds(50);
  for (;;) {
    const std::size_t done = write_lines(buf);
    written += static_cast<std::size_t>(std::count(buf.begin(), buf.begin() + done, '\n'));
    buf.remove_prefix(done);
    if (buf.empty() || on_full_ == config::OnFull::drop) return written;
    // block: keep the records and try again; the queue fills meanwhile and
    // accepting pauses. Only a stop gives up (and counts what is lost). A
    // reopen (SIGUSR1: the log moved to a volume with room) is done at once
    // and the rest of the chunk goes to the new file; the cut record was
    // already taken off the old one.
    std::unique_lock lock(mu_);
    wake_writer_.wait_for(lock, backoff, [&] { return stopping_ || reopen_requested_; });
    if (stopping_) return written;
    if (reopen_requested_) {
      serve_reopen(lock);
      backoff = std::chrono::milliseconds(50);
      continue;
    }
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
}

std::size_t AccessLog::write_lines(std::string_view buf) {
  std::size_t off = 0;
  while (off < buf.size()) {
    const ssize_t n = ::write(fd_, buf.data() + off, buf.size() - off);
    if (n >= 0) {
      off += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // stdout may have been handed to us non-blocking: wait, don't spin.
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, -1);
      continue;
    }
    report_write_failure(errno);
    // A record cut in the middle must not run into the next one written:
    // take its head off the file again (a regular file; a pipe cannot
    // fail this way).
    const std::size_t whole = buf.substr(0, off).rfind('\n') + 1;  // 0 when none
    if (const std::size_t torn = off - whole; torn > 0) {
      struct stat st {};
      if (::fstat(fd_, &st) == 0 && S_ISREG(st.st_mode) &&
          static_cast<std::size_t>(st.st_size) >= torn) {
        (void)::ftruncate(fd_, st.st_size - static_cast<off_t>(torn));
      }
    }
    return whole;
  }
  if (failing_) {
    failing_ = false;
    say("egressd: access log: writing again\n");
  }
  return off;
}

void AccessLog::serve_reopen(std::unique_lock<std::mutex>& lock) {
  lock.unlock();
  do_reopen();
  lock.lock();
  reopen_requested_ = false;
  progress_.notify_all();  // flush() waits for the reopen too
}

void AccessLog::do_reopen() {
  const int fd = open_for_append(path_);
  if (fd < 0) {
    // Not a write burst: every failed reopen is worth a line of its own.
    const int err = errno;
    write_errors_.fetch_add(1, std::memory_order_relaxed);
    say("egressd: access log " + path_ +
        ": reopen failed, still writing to the old file: " + std::strerror(err) + "\n");
    return;
  }
  if (owns_fd_ && fd_ >= 0) ::close(fd_);
  fd_ = fd;
  owns_fd_ = true;
}

void AccessLog::report_write_failure(int err) {
  write_errors_.fetch_add(1, std::memory_order_relaxed);
  if (failing_) return;
  failing_ = true;
  std::string line = "egressd: access log";
  if (!path_.empty()) line += " " + path_;
  line += ": write failed: ";
  line += std::strerror(err);
  line += on_full_ == config::OnFull::drop
              ? "; records are dropped and counted until writes succeed again\n"
              : "; records are kept and the write retried (on_full: block)\n";
  say(line);
}

}  // namespace egressd::log
