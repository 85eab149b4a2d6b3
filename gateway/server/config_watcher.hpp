#pragma once
// Watches the config file for the three ways it changes in practice, with
// inotify on its directory (and on the directory its symlink resolves to,
// when that differs):
//  - a Kubernetes ConfigMap update: the mounted file is a symlink through
//    `..data`, which is swapped atomically to a new timestamped directory
//    (IN_CREATE / IN_MOVED_TO of `..data` in the mount directory);
//  - an editor or tool that writes a temporary file and renames it over
//    (IN_MOVED_TO of the file's name);
//  - an in-place write (IN_CLOSE_WRITE / IN_MODIFY of the file).
// An event naming the file, its symlink target or `..data` starts (or
// restarts) a quiet period (other files there, such as an access log, do
// not);
// when it ends, the file is read and, if its bytes differ from the last
// bytes loaded (by size and a 64-bit hash: a 100 MB config is not kept
// twice in memory), `on_change` runs — once per burst, on the io_context's
// thread. Nothing here parses or applies a config: the gateway's reload
// path does, the same as for SIGHUP.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

namespace egressd::server {

class ConfigWatcher {
 public:
  ConfigWatcher(boost::asio::io_context& io, std::string path, std::chrono::milliseconds quiet,
                std::function<void()> on_change);
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;
  ~ConfigWatcher();

  // Starts watching; one sentence on failure (no inotify, no directory).
  std::optional<std::string> start();
  void stop();

  // The bytes a reload just read (SIGHUP or this watcher's own): a later
  // burst of events that leaves the file as it is then changes nothing.
  void loaded(std::string_view content);

 private:
  struct Fingerprint {
    std::size_t size = 0;
    std::size_t hash = 0;
    static Fingerprint of(std::string_view content) noexcept;
    bool operator==(const Fingerprint&) const = default;
  };

  void read_events();
  // True when the `n` bytes of events in buffer_ name the config file, its
  // symlink target, `..data`, or a watched directory itself.
  [[nodiscard]] bool concerns_the_config(std::size_t n) const;
  void burst();
  void settle();

  boost::asio::io_context& io_;
  std::string path_;
  std::chrono::milliseconds quiet_;
  std::function<void()> on_change_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> inotify_;
  boost::asio::steady_timer timer_;
  std::vector<char> buffer_;
  std::vector<std::string> names_;          // file names in the watched directories that matter
  std::optional<Fingerprint> last_loaded_;  // of the bytes last loaded
  bool stopped_ = false;
};

// The whole file, or nullopt when it cannot be read.
std::optional<std::string> read_file(const std::string& path);

}  // namespace egressd::server
