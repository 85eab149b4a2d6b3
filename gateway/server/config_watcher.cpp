#include "config_watcher.hpp"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <functional>
#include <iterator>
#include <string_view>

#include <spdlog/spdlog.h>

namespace egressd::server {
namespace fs = std::filesystem;

// On the control thread, for every reload request and watcher burst: one
// allocation and one copy, so that a config of a million rules (100 MB)
// costs tens of milliseconds there, not seconds of signals and /healthz
// left waiting.
std::optional<std::string> read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string out;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) out.reserve(static_cast<std::size_t>(st.st_size));
  std::array<char, 1 << 16> chunk{};
  for (;;) {
    const ssize_t n = ::read(fd, chunk.data(), chunk.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      ::close(fd);
      return std::nullopt;
    }
    out.append(chunk.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

ConfigWatcher::Fingerprint ConfigWatcher::Fingerprint::of(std::string_view content) noexcept {
  return {content.size(), std::hash<std::string_view>{}(content)};
}

ConfigWatcher::ConfigWatcher(boost::asio::io_context& io, std::string path,
                             std::chrono::milliseconds quiet, std::function<void()> on_change)
    : io_(io),
      path_(std::move(path)),
      quiet_(quiet),
      on_change_(std::move(on_change)),
      timer_(io),
      buffer_(16 * (sizeof(inotify_event) + NAME_MAX + 1)) {}

ConfigWatcher::~ConfigWatcher() {
  stop();
}

std::optional<std::string> ConfigWatcher::start() {
  const int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return std::string("inotify_init1: ") + std::strerror(errno);
  inotify_ = std::make_unique<boost::asio::posix::stream_descriptor>(io_, fd);
  // No IN_MODIFY: an in-place write counts when its writer closes the file
  // (IN_CLOSE_WRITE), so a half-written file is never read, and files kept
  // open for appending in the same directory (access logs) wake nobody.
  constexpr std::uint32_t kMask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE |
                                  IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;
  // The directory as named (a ConfigMap mount swaps `..data` there), and the
  // one the symlink chain ends in when it is elsewhere.
  std::vector<std::string> dirs;
  std::error_code ec;
  const fs::path named = fs::absolute(path_, ec).parent_path();
  dirs.push_back(named.string());
  const fs::path resolved = fs::canonical(path_, ec);
  if (!ec && resolved.parent_path() != named) dirs.push_back(resolved.parent_path().string());
  names_.push_back(fs::path(path_).filename().string());
  if (!ec) names_.push_back(resolved.filename().string());
  for (const std::string& dir : dirs) {
    if (::inotify_add_watch(fd, dir.c_str(), kMask) < 0) {
      return "cannot watch " + dir + ": " + std::strerror(errno);
    }
  }
  if (auto content = read_file(path_)) loaded(*content);
  read_events();
  return std::nullopt;
}

void ConfigWatcher::stop() {
  stopped_ = true;
  timer_.cancel();
  if (inotify_) {
    boost::system::error_code ignored;
    inotify_->close(ignored);
  }
}

void ConfigWatcher::loaded(std::string_view content) {
  last_loaded_ = Fingerprint::of(content);
}

void ConfigWatcher::read_events() {
  if (stopped_ || !inotify_) return;
  inotify_->async_read_some(boost::asio::buffer(buffer_),
                            [this](const boost::system::error_code& ec, std::size_t n) {
                              if (ec || stopped_) return;
                              if (concerns_the_config(n)) burst();
                              read_events();
                            });
}

bool ConfigWatcher::concerns_the_config(std::size_t n) const {
  // Other files in the same directory (the access log, say) change all the
  // time; only events naming the config, `..data` or a watched directory
  // itself start a quiet period.
  bool relevant = false;
  for (std::size_t at = 0; at + sizeof(inotify_event) <= n;) {
    inotify_event event{};
    std::memcpy(&event, buffer_.data() + at, sizeof event);
    const std::size_t size = sizeof(inotify_event) + event.len;
    if (at + size > n) break;
    std::string_view name;
    if (event.len > 0) {
      name = std::string_view(buffer_.data() + at + sizeof(inotify_event), event.len);
      name = name.substr(0, name.find('\0'));
    }
    if (name.empty() || name == "..data" ||
        std::find(names_.begin(), names_.end(), name) != names_.end()) {
      relevant = true;
    }
    at += size;
  }
  return relevant;
}

void ConfigWatcher::burst() {
  timer_.expires_after(quiet_);
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) settle();
  });
}

void ConfigWatcher::settle() {
  const auto content = read_file(path_);
  if (!content) {
    // Mid-swap or removed: the next event settles it; the old config stays.
    return;
  }
  if (last_loaded_ && Fingerprint::of(*content) == *last_loaded_) return;
  spdlog::debug("config file {} changed", path_);  // the reload request says the rest
  on_change_();
}

}  // namespace egressd::server
