#pragma once
// `egressd run`: start the data plane on a validated config and serve until
// SIGTERM/SIGINT has drained it.

#include <iosfwd>
#include <string>

namespace egressd::server {

struct RunOptions {
  std::string config_path;
  std::string log_level = "info";  // debug | info | warn | error
};

// Runs in the foreground. Returns the process exit code: 0 after a clean
// drain, 1 when the config is invalid or a listener cannot be bound (one
// clear sentence on `err`).
int run_gateway(const RunOptions& options, std::ostream& err);

// CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU
// quota (cpu.max), at least 1.
unsigned usable_cpus();

}  // namespace egressd::server
