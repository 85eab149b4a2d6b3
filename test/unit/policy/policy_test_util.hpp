#pragma once
// Builders for policy specs and flows in the policy unit tests: specs are
// built in C++ directly (the YAML loader is the config module's business).

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "egressd/config/spec.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/policy/policy.hpp"

namespace egressd::policy::testing {

using config::Action;
using config::Integrity;
using config::PolicyMode;
using config::PortRange;

inline IpAddress ip(std::string_view s) {
  return IpAddress::parse(s).value();
}
inline Cidr cidr(std::string_view s) {
  return Cidr::parse(s).value();
}

inline config::ToSpec host(std::string pattern, std::vector<PortRange> ports = {},
                           Integrity integrity = Integrity::trust) {
  config::ToSpec t;
  t.host = std::move(pattern);
  t.ports = std::move(ports);
  t.destination = integrity;
  return t;
}

inline config::ToSpec net(std::string_view block, std::vector<PortRange> ports = {}) {
  config::ToSpec t;
  t.cidr = cidr(block);
  t.ports = std::move(ports);
  return t;
}

inline PortRange port(std::uint16_t p) {
  return {p, p};
}
inline PortRange ports(std::uint16_t a, std::uint16_t b) {
  return {a, b};
}

inline config::RuleSpec rule(std::string name, Action action, std::vector<config::ToSpec> to,
                             std::vector<std::string_view> from = {}) {
  config::RuleSpec r;
  r.name = std::move(name);
  r.action = action;
  r.to = std::move(to);
  for (auto f : from) r.from.push_back(cidr(f));
  return r;
}
inline config::RuleSpec allow(std::string name, std::vector<config::ToSpec> to,
                              std::vector<std::string_view> from = {}) {
  return rule(std::move(name), Action::allow, std::move(to), std::move(from));
}
inline config::RuleSpec deny(std::string name, std::vector<config::ToSpec> to,
                             std::vector<std::string_view> from = {}) {
  return rule(std::move(name), Action::deny, std::move(to), std::move(from));
}

inline config::PolicySpec spec(std::vector<config::RuleSpec> rules,
                               Action default_action = Action::deny,
                               PolicyMode mode = PolicyMode::enforce) {
  config::PolicySpec s;
  s.rules = std::move(rules);
  s.default_action = default_action;
  s.mode = mode;
  return s;
}

inline std::chrono::sys_days day(int y, unsigned m, unsigned d) {
  return std::chrono::sys_days{std::chrono::year{y} / std::chrono::month{m} / std::chrono::day{d}};
}
inline const std::chrono::sys_days kToday = day(2026, 11, 26);

// A flow, with strings kept alive by the struct itself.
struct Flow {
  std::string src = "192.0.2.10";
  std::string dst = "93.184.216.34";
  std::uint16_t port = 443;
  std::optional<std::string> name = std::nullopt;
  bool transparent = true;
  bool tls_without_sni = false;
  bool ech = false;

  [[nodiscard]] FlowFacts facts() const {
    FlowFacts f;
    f.listener = "transparent";
    f.transparent = transparent;
    f.src = ip(src);
    f.dst = ip(dst);
    f.port = port;
    f.proto = name ? Proto::tls : Proto::tcp;
    if (name) f.name = std::string_view(*name);
    f.tls_without_sni = tls_without_sni;
    f.ech = ech;
    f.today = kToday;
    return f;
  }
};

// DNS answers from a table; counts find() calls. An absent name is unknown.
class TableAnswers final : public NameAnswers {
 public:
  TableAnswers& ok(std::string name, std::vector<std::string_view> addresses) {
    Stored s;
    s.status = NameAnswer::Status::ok;
    for (auto a : addresses) s.addresses.push_back(ip(a));
    table_[std::move(name)] = std::move(s);
    return *this;
  }
  TableAnswers& failed(std::string name, std::string error) {
    Stored s;
    s.status = NameAnswer::Status::failed;
    s.error = std::move(error);
    table_[std::move(name)] = std::move(s);
    return *this;
  }
  [[nodiscard]] std::optional<NameAnswer> find(std::string_view name) const override {
    ++calls;
    auto it = table_.find(std::string(name));
    if (it == table_.end()) return std::nullopt;
    NameAnswer a;
    a.status = it->second.status;
    a.addresses = it->second.addresses;
    a.error = it->second.error;
    return a;
  }
  mutable int calls = 0;

 private:
  struct Stored {
    NameAnswer::Status status = NameAnswer::Status::failed;
    std::vector<IpAddress> addresses;
    std::string error;
  };
  std::map<std::string, Stored, std::less<>> table_;
};

}  // namespace egressd::policy::testing
