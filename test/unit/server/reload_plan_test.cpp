#include "reload_plan.hpp"

#include <gtest/gtest.h>

namespace egressd::server {
namespace {

using config::ListenerMode;
using config::ListenerSpec;

Endpoint ep(std::uint8_t last, std::uint16_t port) {
  return Endpoint{IpAddress::from_v4({10, 0, 0, last}), port};
}

Cidr cidr(std::uint8_t last) {
  return Cidr{IpAddress::from_v4({10, 0, 0, last}), 32};
}

ListenerSpec listener(std::string name, std::uint16_t port,
                      ListenerMode mode = ListenerMode::redirect) {
  ListenerSpec l;
  l.name = std::move(name);
  l.address = ep(1, port);
  l.mode = mode;
  return l;
}

std::vector<std::string> names(const std::vector<ListenerSpec>& ls) {
  std::vector<std::string> out;
  for (const auto& l : ls) out.push_back(l.name);
  return out;
}

using Names = std::vector<std::string>;

TEST(SameListener, EveryFieldAFlowOrAcceptorReadsCounts) {
  const ListenerSpec base = listener("a", 15001);
  EXPECT_TRUE(same_listener(base, base));

  ListenerSpec moved = base;
  moved.pos.line = 42;  // where it was written does not matter
  EXPECT_TRUE(same_listener(base, moved));

  ListenerSpec other = base;
  other.name = "b";
  EXPECT_FALSE(same_listener(base, other));
  other = base;
  other.address = ep(1, 15002);
  EXPECT_FALSE(same_listener(base, other));
  other = base;
  other.address = ep(2, 15001);
  EXPECT_FALSE(same_listener(base, other));
  other = base;
  other.mode = ListenerMode::tproxy;
  EXPECT_FALSE(same_listener(base, other));
  other = base;
  other.forward = "10.0.0.9:15001";
  EXPECT_FALSE(same_listener(base, other));

  ListenerSpec proxied = base;
  proxied.proxy_protocol = config::ProxyProtocolSpec{{cidr(5)}};
  EXPECT_FALSE(same_listener(base, proxied));
  ListenerSpec trusted = proxied;
  EXPECT_TRUE(same_listener(proxied, trusted));
  trusted.proxy_protocol->trusted.push_back(cidr(6));
  EXPECT_FALSE(same_listener(proxied, trusted)) << "only `trusted` changed";
}

TEST(DiffListeners, NothingChanged) {
  const std::vector<ListenerSpec> ls = {listener("a", 1), listener("b", 2)};
  const ListenerDiff d = diff_listeners(ls, ls);
  EXPECT_TRUE(d.empty());
  EXPECT_EQ(d.unchanged, (Names{"a", "b"}));
  EXPECT_TRUE(d.changed.empty());
}

TEST(DiffListeners, AddedRemovedChangedUnchanged) {
  const std::vector<ListenerSpec> running = {listener("keep", 1), listener("drop", 2),
                                             listener("move", 3), listener("mode", 4)};
  const std::vector<ListenerSpec> next = {listener("new", 5),
                                          listener("mode", 4, ListenerMode::explicit_proxy),
                                          listener("move", 6), listener("keep", 1)};
  const ListenerDiff d = diff_listeners(running, next);
  EXPECT_FALSE(d.empty());
  EXPECT_EQ(d.unchanged, (Names{"keep"}));
  EXPECT_EQ(d.removed, (Names{"drop", "move", "mode"}));
  EXPECT_EQ(d.changed, (Names{"move", "mode"}));
  EXPECT_EQ(names(d.added), (Names{"new", "mode", "move"}));
  EXPECT_EQ(d.added[2].address, ep(1, 6)) << "the new spec, not the old one";
  EXPECT_EQ(d.added[1].mode, ListenerMode::explicit_proxy);
}

TEST(DiffListeners, RenameIsARemovePlusAnAddOnTheSameAddress) {
  const ListenerDiff d = diff_listeners({listener("old", 1)}, {listener("new", 1)});
  EXPECT_EQ(d.removed, (Names{"old"}));
  EXPECT_EQ(names(d.added), (Names{"new"}));
  EXPECT_TRUE(d.changed.empty());
  EXPECT_TRUE(d.unchanged.empty());
}

TEST(DiffListeners, FromAndToNone) {
  const std::vector<ListenerSpec> ls = {listener("a", 1)};
  EXPECT_EQ(names(diff_listeners({}, ls).added), (Names{"a"}));
  EXPECT_EQ(diff_listeners(ls, {}).removed, (Names{"a"}));
}

TEST(RestartOnly, NothingWhenOnlyReloadableSettingsChange) {
  config::ConfigSpec a;
  config::ConfigSpec b = a;
  b.listeners = {listener("x", 1)};
  b.timeouts.idle = std::chrono::seconds(1);
  b.upstream.mark = 7;
  b.tls.require_sni = false;
  b.policy.revoke_on_reload = true;
  EXPECT_TRUE(restart_only_changes(a, b).empty());
}

TEST(RestartOnly, NamesEachSettingWithBothValues) {
  config::ConfigSpec a;
  a.workers = 2;
  config::ConfigSpec b = a;
  b.workers = 3;
  b.admin.address = Endpoint{IpAddress::from_v4({127, 0, 0, 1}), 9902};
  b.access_log.path = "/var/log/egressd.log";
  b.access_log.on_full = config::OnFull::drop;
  b.limits.max_connections = 100;
  b.limits.max_connections_per_source = 5;
  b.dns.servers = {ep(53, 53)};
  b.dns.timeout = std::chrono::seconds(3);
  b.dns.verify_window = std::chrono::seconds(60);
  b.kubernetes = config::KubernetesSpec{};
  EXPECT_EQ(
      restart_only_changes(a, b),
      (Names{"workers (2 -> 3)", "admin.address (0.0.0.0:9901 -> 127.0.0.1:9902)",
             "access_log.path (- -> /var/log/egressd.log)", "access_log.on_full (block -> drop)",
             "limits.max_connections (from the fd limit -> 100)",
             "limits.max_connections_per_source (no cap -> 5)",
             "dns.servers (/etc/resolv.conf -> [10.0.0.53:53])", "dns.timeout (2000 ms -> 3000 ms)",
             "dns.verify_window (300000 ms -> 60000 ms)", "kubernetes (absent -> present)"}));

  config::ConfigSpec auto_workers = a;
  auto_workers.workers = 0;
  EXPECT_EQ(restart_only_changes(a, auto_workers), (Names{"workers (2 -> one per CPU)"}));

  config::ConfigSpec k1 = a;
  k1.kubernetes = config::KubernetesSpec{};
  config::ConfigSpec k2 = k1;
  k2.kubernetes->kubeconfig = "/etc/kube";
  k2.kubernetes->sync_timeout = std::chrono::seconds(5);
  EXPECT_EQ(restart_only_changes(k1, k2), (Names{"kubernetes.kubeconfig (in-cluster -> /etc/kube)",
                                                 "kubernetes.sync_timeout (30000 ms -> 5000 ms)"}));
}

TEST(RestartOnly, InForceKeepsTheRunningValuesAndTakesTheRest) {
  config::ConfigSpec running;
  running.workers = 2;
  config::ConfigSpec next;
  next.workers = 4;
  next.limits.max_connections = 9;
  next.listeners = {listener("x", 1)};
  next.timeouts.drain = std::chrono::seconds(1);
  const config::ConfigSpec now = in_force_after_reload(running, next);
  EXPECT_EQ(now.workers, 2U);
  EXPECT_EQ(now.limits.max_connections, 0U);
  EXPECT_EQ(now.timeouts.drain, std::chrono::seconds(1));
  EXPECT_EQ(names(now.listeners), (Names{"x"}));
  EXPECT_TRUE(restart_only_changes(running, now).empty());
}

}  // namespace
}  // namespace egressd::server
