#pragma once
// The validated configuration as plain values. `config` is the only module
// that sees YAML; everything downstream (policy, the gateway) reads these
// types. Defaults here are the contract's defaults.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "egressd/core/identity.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/core/protocol.hpp"

namespace egressd::config {

using Duration = std::chrono::milliseconds;

// Where a value came from, for messages that point at the YAML.
struct SourcePos {
  std::string file;
  int line = 0;  // 1-based; 0 = unknown
  int col = 0;   // 1-based
};

enum class ListenerMode : std::uint8_t { redirect, tproxy, explicit_proxy };

struct ProxyProtocolSpec {
  std::vector<Cidr> trusted;  // peers allowed to send a PROXY header
};

struct ListenerSpec {
  std::string name;  // unique, [a-z0-9_-]+
  Endpoint address;
  ListenerMode mode = ListenerMode::redirect;
  std::optional<ProxyProtocolSpec> proxy_protocol;
  std::optional<std::string> forward;  // "host:port" of the central gateway (node agent)
  SourcePos pos;
};

struct AdminSpec {
  Endpoint address{IpAddress::from_v4({0, 0, 0, 0}), 9901};
};

enum class OnFull : std::uint8_t { block, drop };

struct AccessLogSpec {
  std::string path = "-";  // "-" = stdout
  OnFull on_full = OnFull::block;
};

struct UpstreamSpec {
  std::uint32_t mark = 0;  // SO_MARK; 0 = none
};

struct TimeoutsSpec {
  Duration sniff{5'000};
  Duration connect{5'000};
  Duration idle{300'000};
  Duration drain_delay{5'000};
  Duration drain{25'000};
};

struct LimitsSpec {
  std::uint32_t max_connections = 0;             // 0 = derived from RLIMIT_NOFILE
  std::uint32_t max_connections_per_source = 0;  // 0 = no cap
};

struct DnsSpec {
  std::vector<Endpoint> servers;  // empty = /etc/resolv.conf; port defaults to 53
  Duration timeout{2'000};
  Duration verify_window{300'000};
};

enum class EchMode : std::uint8_t { outer, deny };

struct TlsSpec {
  bool require_sni = true;
  EchMode ech = EchMode::outer;
};

// kubernetes: pod identity for `from` selectors.
struct KubernetesSpec {
  std::string kubeconfig;  // "" = in-cluster (service account, KUBERNETES_SERVICE_HOST/PORT)
  Duration sync_timeout{30'000};
  SourcePos pos;
};

// A Kubernetes LabelSelector (matchLabels + matchExpressions; all must hold;
// an empty selector selects everything).
struct LabelRequirement {
  enum class Operator : std::uint8_t { in, not_in, exists, does_not_exist };
  std::string key;
  Operator op = Operator::exists;
  std::vector<std::string> values;  // In/NotIn: non-empty, sorted, unique
};
struct LabelSelector {
  // matchLabels as `In` requirements with one value, then matchExpressions;
  // sorted by key so equal selectors compare equal.
  std::vector<LabelRequirement> requirements;
};

// A `from` entry that selects pods, with NetworkPolicy peer semantics:
// `namespace: X` is a namespaceSelector on kubernetes.io/metadata.name = X;
// a podSelector alone selects in every namespace; both must hold when both
// are given.
struct IdentitySelector {
  std::optional<LabelSelector> namespace_selector;
  std::optional<LabelSelector> pod_selector;
  SourcePos pos;
};

enum class Action : std::uint8_t { allow, deny };
enum class PolicyMode : std::uint8_t { enforce, audit };
enum class Integrity : std::uint8_t { verify, resolve, trust };

struct PortRange {
  std::uint16_t first = 1;
  std::uint16_t last = 65535;
  friend bool operator==(const PortRange&, const PortRange&) = default;
};

// One `to` entry: exactly one of host and cidr is set.
struct ToSpec {
  // Canonical pattern: "example.com", "*.example.com" or "**.example.com";
  // lowercase ASCII (Unicode already converted to punycode), no trailing dot.
  std::optional<std::string> host;
  std::optional<Cidr> cidr;
  std::vector<PortRange> ports;               // empty = any port
  Integrity destination = Integrity::verify;  // meaningful with `host` only
  SourcePos pos;
};

struct RuleSpec {
  std::string name;
  Action action = Action::allow;
  // `from`: source CIDRs and identity selectors (OR); both empty = any source.
  std::vector<Cidr> from;
  std::vector<IdentitySelector> from_identities;
  std::vector<ToSpec> to;  // at least one
  std::optional<PolicyMode> mode;
  // The `mode` override applies through this day (UTC) and ends after it.
  std::optional<std::chrono::sys_days> until;
  SourcePos pos;
};

enum class Expect : std::uint8_t { allow, deny, audit_deny };

struct TestCase {
  IpAddress src;
  Endpoint dst;
  std::optional<std::string> host;  // as written (the policy canonicalises it)
  std::optional<Proto> proto;
  std::optional<std::string> listener;
  Expect expect = Expect::deny;
  std::optional<std::string> rule;
  // The source pod, for identity selectors (absent: a pod-less IP).
  std::optional<std::string> namespace_name;
  Labels labels;            // sorted
  Labels namespace_labels;  // sorted
  SourcePos pos;
};

struct PolicySpec {
  PolicyMode mode = PolicyMode::enforce;
  Action default_action = Action::deny;
  bool revoke_on_reload = false;
  std::vector<RuleSpec> rules;
  std::vector<TestCase> tests;
};

struct ConfigSpec {
  std::string file;  // the path it was loaded from
  std::vector<ListenerSpec> listeners;
  AdminSpec admin;
  AccessLogSpec access_log;
  unsigned workers = 0;  // 0 = one per usable CPU
  UpstreamSpec upstream;
  TimeoutsSpec timeouts;
  LimitsSpec limits;
  DnsSpec dns;
  TlsSpec tls;
  std::optional<KubernetesSpec> kubernetes;
  PolicySpec policy;
};

}  // namespace egressd::config
