#pragma once
// What a reload changes, worked out from the running config and the new
// one before anything is applied. Pure functions over config values: no
// sockets, no threads (unit-tested in test/unit/server).

#include <string>
#include <vector>

#include "egressd/config/spec.hpp"

namespace egressd::server {

// True when `a` and `b` describe the same listener for an acceptor and the
// flows it starts: name, address, mode, proxy_protocol (present or not, and
// its trusted list in order) and forward. Where they were written (`pos`)
// does not matter.
[[nodiscard]] bool same_listener(const config::ListenerSpec& a, const config::ListenerSpec& b);

// The listener changes of a reload, matched by name. A listener whose spec
// changed in any way same_listener() sees is in both `removed` and `added`
// (and named in `changed`): its old acceptors close, new ones open.
struct ListenerDiff {
  std::vector<std::string> removed;         // old names to stop, in old order
  std::vector<config::ListenerSpec> added;  // new specs to start, in new order
  std::vector<std::string> changed;         // names both removed and added
  std::vector<std::string> unchanged;       // left alone, flows and acceptors
  [[nodiscard]] bool empty() const noexcept { return removed.empty() && added.empty(); }
};
[[nodiscard]] ListenerDiff diff_listeners(const std::vector<config::ListenerSpec>& running,
                                          const std::vector<config::ListenerSpec>& next);

// Settings a running gateway cannot take from a reload (they size threads,
// bind the admin address, open the access log, or configure the resolver,
// the connection limits or the kubernetes watcher at start-up). One phrase
// per setting that differs, naming it with both values:
// `workers (2 -> 3)`. Empty when a reload can apply everything.
[[nodiscard]] std::vector<std::string> restart_only_changes(const config::ConfigSpec& running,
                                                            const config::ConfigSpec& next);

// `next` with every restart-only setting taken from `running`: what is in
// force after a reload that warned about them.
[[nodiscard]] config::ConfigSpec in_force_after_reload(const config::ConfigSpec& running,
                                                       config::ConfigSpec next);

}  // namespace egressd::server
