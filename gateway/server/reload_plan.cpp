#include "reload_plan.hpp"

#include <algorithm>
#include <string_view>

namespace egressd::server {
namespace {

const config::ListenerSpec* find_named(const std::vector<config::ListenerSpec>& ls,
                                       std::string_view name) {
  const auto it = std::find_if(ls.begin(), ls.end(),
                               [&](const config::ListenerSpec& l) { return l.name == name; });
  return it == ls.end() ? nullptr : &*it;
}

std::string ms(config::Duration d) {
  return std::to_string(d.count()) + " ms";
}

std::string workers_text(unsigned n) {
  return n == 0 ? std::string("one per CPU") : std::to_string(n);
}

std::string on_full_text(config::OnFull f) {
  return f == config::OnFull::block ? "block" : "drop";
}

std::string servers_text(const std::vector<Endpoint>& servers) {
  if (servers.empty()) return "/etc/resolv.conf";
  std::string out;
  for (const Endpoint& e : servers) {
    if (!out.empty()) out += ", ";
    out += e.to_string();
  }
  return "[" + out + "]";
}

std::string limit_text(std::uint32_t n, std::string_view zero) {
  return n == 0 ? std::string(zero) : std::to_string(n);
}

void note(std::vector<std::string>& out, std::string_view setting, const std::string& from,
          const std::string& to) {
  if (from == to) return;
  out.push_back(std::string(setting) + " (" + from + " -> " + to + ")");
}

}  // namespace

bool same_listener(const config::ListenerSpec& a, const config::ListenerSpec& b) {
  if (a.name != b.name || a.address != b.address || a.mode != b.mode || a.forward != b.forward) {
    return false;
  }
  if (a.proxy_protocol.has_value() != b.proxy_protocol.has_value()) return false;
  return !a.proxy_protocol || a.proxy_protocol->trusted == b.proxy_protocol->trusted;
}

ListenerDiff diff_listeners(const std::vector<config::ListenerSpec>& running,
                            const std::vector<config::ListenerSpec>& next) {
  ListenerDiff d;
  for (const config::ListenerSpec& old : running) {
    const config::ListenerSpec* now = find_named(next, old.name);
    if (now == nullptr) {
      d.removed.push_back(old.name);
    } else if (same_listener(old, *now)) {
      d.unchanged.push_back(old.name);
    } else {
      d.removed.push_back(old.name);
      d.changed.push_back(old.name);
    }
  }
  for (const config::ListenerSpec& l : next) {
    const config::ListenerSpec* before = find_named(running, l.name);
    if (before == nullptr || !same_listener(*before, l)) d.added.push_back(l);
  }
  return d;
}

std::vector<std::string> restart_only_changes(const config::ConfigSpec& running,
                                              const config::ConfigSpec& next) {
  std::vector<std::string> out;
  note(out, "workers", workers_text(running.workers), workers_text(next.workers));
  note(out, "admin.address", running.admin.address.to_string(), next.admin.address.to_string());
  note(out, "access_log.path", running.access_log.path, next.access_log.path);
  note(out, "access_log.on_full", on_full_text(running.access_log.on_full),
       on_full_text(next.access_log.on_full));
  note(out, "limits.max_connections",
       limit_text(running.limits.max_connections, "from the fd limit"),
       limit_text(next.limits.max_connections, "from the fd limit"));
  note(out, "limits.max_connections_per_source",
       limit_text(running.limits.max_connections_per_source, "no cap"),
       limit_text(next.limits.max_connections_per_source, "no cap"));
  note(out, "dns.servers", servers_text(running.dns.servers), servers_text(next.dns.servers));
  note(out, "dns.timeout", ms(running.dns.timeout), ms(next.dns.timeout));
  note(out, "dns.verify_window", ms(running.dns.verify_window), ms(next.dns.verify_window));
  const auto& rk = running.kubernetes;
  const auto& nk = next.kubernetes;
  if (rk.has_value() != nk.has_value()) {
    note(out, "kubernetes", rk ? "present" : "absent", nk ? "present" : "absent");
  } else if (rk && nk) {
    note(out, "kubernetes.kubeconfig", rk->kubeconfig.empty() ? "in-cluster" : rk->kubeconfig,
         nk->kubeconfig.empty() ? "in-cluster" : nk->kubeconfig);
    note(out, "kubernetes.sync_timeout", ms(rk->sync_timeout), ms(nk->sync_timeout));
  }
  return out;
}

config::ConfigSpec in_force_after_reload(const config::ConfigSpec& running,
                                         config::ConfigSpec next) {
  next.workers = running.workers;
  next.admin = running.admin;
  next.access_log = running.access_log;
  next.limits = running.limits;
  next.dns = running.dns;
  next.kubernetes = running.kubernetes;
  return next;
}

}  // namespace egressd::server
