// Randomized cross-check: the compiled matchers (hash tables, tries, port
// ranges, source lists) against a naive reference that scans every rule and
// entry linearly, on random rule sets and flows drawn from small vocabularies
// so that names, blocks and ports collide often. Fixed seed: reproducible.

#include <random>

#include <gtest/gtest.h>

#include "egressd/core/hostname.hpp"
#include "egressd/policy/address_class.hpp"
#include "egressd/policy/policy.hpp"
#include "unit/policy/policy_test_util.hpp"

namespace egressd::policy::testing {
namespace {

bool host_matches(std::string_view pattern, std::string_view name) {
  const auto below = [&](std::string_view base) {
    return name.size() > base.size() + 1 && name.ends_with(base) &&
           name[name.size() - base.size() - 1] == '.';
  };
  if (pattern.starts_with("**.")) return below(pattern.substr(3));
  if (pattern.starts_with("*.")) {
    const auto base = pattern.substr(2);
    return below(base) &&
           name.substr(0, name.size() - base.size() - 1).find('.') == std::string_view::npos;
  }
  return pattern == name;
}

struct Reference {
  const config::PolicySpec& spec;
  const config::TlsSpec& tls;
  const std::vector<IpAddress>& own;

  struct Result {
    bool needs_lookup = false;
    std::string lookup_name;
    Decision decision = Decision::deny;
    std::string rule;
    std::optional<IpAddress> connect_to;
    std::optional<Integrity> integrity;
  };

  static bool from_ok(const config::RuleSpec& r, const IpAddress& src) {
    if (r.from.empty()) return true;
    return std::any_of(r.from.begin(), r.from.end(),
                       [&](const Cidr& c) { return c.contains(src); });
  }
  static bool port_ok(const config::ToSpec& t, std::uint16_t port) {
    if (t.ports.empty()) return true;
    return std::any_of(t.ports.begin(), t.ports.end(),
                       [&](const PortRange& r) { return r.first <= port && port <= r.last; });
  }
  bool enforcing(const config::RuleSpec& r, std::chrono::sys_days today) const {
    PolicyMode m = spec.mode;
    if (r.mode && (!r.until || today <= *r.until)) m = *r.mode;
    return m == PolicyMode::enforce;
  }
  bool guard_ok(const IpAddress& a, const IpAddress& src, std::uint16_t port, bool by_host) const {
    return address_guard_ok(a, src, port) && (!by_host || host_guard_ok(a, src, port));
  }
  // The classes judged on every flow before the rules.
  bool address_guard_ok(const IpAddress& a, const IpAddress& src, std::uint16_t port) const {
    if (std::find(own.begin(), own.end(), a) != own.end()) return false;
    const auto c = classify(a);
    if (always_denied(c.cls)) return false;
    return c.cls != AddressClass::link_local || lifted(a, c.range, src, port);
  }
  // The classes judged once a host entry matched.
  bool host_guard_ok(const IpAddress& a, const IpAddress& src, std::uint16_t port) const {
    const auto c = classify(a);
    if (c.cls != AddressClass::private_use && c.cls != AddressClass::ipv4_embedded) return true;
    return lifted(a, c.range, src, port);
  }
  bool lifted(const IpAddress& a, const Cidr& range, const IpAddress& src,
              std::uint16_t port) const {
    const auto c_prefix = range.prefix_len;
    for (const auto& r : spec.rules) {
      if (r.action != Action::allow || !from_ok(r, src)) continue;
      for (const auto& t : r.to) {
        if (t.cidr && t.cidr->prefix_len >= c_prefix && t.cidr->contains(a) && port_ok(t, port)) {
          return true;
        }
      }
    }
    return false;
  }

  Result decide(const FlowFacts& f, const NameAnswers& answers) const {
    Result out;
    std::string name;
    bool has_dns = false;
    if (f.name) {
      auto c = canonicalize_name(*f.name);
      if (!c.name) {
        out.rule = "builtin:invalid-name";
        return out;
      }
      name = c.name->text;
      has_dns = !c.name->ip;
    }
    if (!address_guard_ok(f.dst, f.src, f.port)) {
      out.rule = "builtin:guard";
      return out;
    }
    if (f.ech && tls.ech == config::EchMode::deny) {
      out.rule = "builtin:ech";
      return out;
    }
    struct M {
      std::size_t rule;
      std::size_t entry;
    };
    std::vector<M> m;
    for (std::size_t ri = 0; ri < spec.rules.size(); ++ri) {
      const auto& r = spec.rules[ri];
      if (!from_ok(r, f.src)) continue;
      for (std::size_t ti = 0; ti < r.to.size(); ++ti) {
        const auto& t = r.to[ti];
        if (!port_ok(t, f.port)) continue;
        if ((t.host && has_dns && host_matches(*t.host, name)) ||
            (t.cidr && t.cidr->contains(f.dst))) {
          m.push_back({ri, ti});
        }
      }
    }
    if (!f.name && f.tls_without_sni && tls.require_sni &&
        std::none_of(m.begin(), m.end(), [&](const M& x) {
          return spec.rules[x.rule].action == Action::allow && spec.rules[x.rule].to[x.entry].cidr;
        })) {
      out.rule = "builtin:no-sni";
      return out;
    }
    for (const M& x : m) {
      const auto& r = spec.rules[x.rule];
      const auto& t = r.to[x.entry];
      if (!t.host) continue;
      if (f.transparent && r.action == Action::allow && t.destination == Integrity::resolve) {
        continue;
      }
      if (!host_guard_ok(f.dst, f.src, f.port)) {
        out.rule = "builtin:guard";
        return out;
      }
      break;
    }
    std::optional<std::size_t> audit;
    for (const M& x : m) {
      const auto& r = spec.rules[x.rule];
      if (r.action != Action::deny) continue;
      if (enforcing(r, f.today)) {
        out.rule = r.name;
        return out;
      }
      if (!audit) audit = x.rule;
    }
    std::optional<std::size_t> decided_rule;
    const config::ToSpec* decided = nullptr;
    std::optional<IpAddress> connect_to;
    bool any_host = false;
    std::optional<std::optional<NameAnswer>> answer;
    for (std::size_t ri = 0; ri < spec.rules.size() && !decided; ++ri) {
      const auto& r = spec.rules[ri];
      if (r.action != Action::allow) continue;
      for (const M& x : m) {
        if (x.rule == ri && r.to[x.entry].cidr) {
          decided = &r.to[x.entry];
          connect_to = f.dst;
          break;
        }
      }
      for (const M& x : m) {
        if (decided) break;
        if (x.rule != ri) continue;
        const auto& t = r.to[x.entry];
        any_host = true;
        if (!f.transparent || t.destination == Integrity::trust) {
          decided = &t;
          connect_to = f.dst;
          break;
        }
        if (!answer) answer = answers.find(name);
        if (!*answer) {
          out.needs_lookup = true;
          out.lookup_name = name;
          return out;
        }
        const NameAnswer& a = **answer;
        if (a.status == NameAnswer::Status::assumed) {
          decided = &t;
          if (t.destination == Integrity::verify) connect_to = f.dst;
        } else if (a.status == NameAnswer::Status::ok) {
          if (t.destination == Integrity::verify) {
            if (std::find(a.addresses.begin(), a.addresses.end(), f.dst) != a.addresses.end()) {
              decided = &t;
              connect_to = f.dst;
            }
          } else if (!a.addresses.empty()) {
            decided = &t;
            connect_to = a.addresses.front();
            for (const auto& addr : a.addresses) {
              if (guard_ok(addr, f.src, f.port, true)) {
                connect_to = addr;
                break;
              }
            }
          }
        }
      }
      if (decided) decided_rule = ri;
    }
    bool passes = false;
    bool by_host = false;
    if (decided) {
      passes = true;
      out.rule = spec.rules[*decided_rule].name;
      if (decided->host) {
        out.integrity = decided->destination;
        by_host = true;
      }
      out.connect_to = connect_to;
    } else {
      out.connect_to = f.dst;
      if (any_host) {
        out.rule = "builtin:integrity";
        by_host = true;
      } else {
        out.rule = "default";
        passes = spec.default_action == Action::allow;
      }
    }
    if (audit && (passes || spec.mode == PolicyMode::audit)) {
      out.rule = spec.rules[*audit].name;
      if (!passes) out.integrity.reset();
      out.decision = Decision::audit_deny;
    } else if (!passes && spec.mode == PolicyMode::audit) {
      out.decision = Decision::audit_deny;
    } else {
      out.decision = passes ? Decision::allow : Decision::deny;
    }
    if (out.decision == Decision::deny) {
      out.connect_to.reset();
      out.integrity.reset();
      return out;
    }
    if (out.connect_to && !guard_ok(*out.connect_to, f.src, f.port, by_host)) {
      out = Result{};
      out.rule = "builtin:guard";
    }
    return out;
  }
};

// Answers drawn at random per name; a name can be unknown.
class RandomAnswers final : public NameAnswers {
 public:
  std::map<std::string, std::optional<std::pair<NameAnswer::Status, std::vector<IpAddress>>>> table;
  [[nodiscard]] std::optional<NameAnswer> find(std::string_view name) const override {
    auto it = table.find(std::string(name));
    if (it == table.end() || !it->second) return std::nullopt;
    NameAnswer a;
    a.status = it->second->first;
    a.addresses = it->second->second;
    a.error = "SERVFAIL";
    return a;
  }
};

class Gen {
 public:
  explicit Gen(std::uint32_t seed) : rng_(seed) {}

  std::size_t pick(std::size_t n) {
    return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
  }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }

  std::string name(std::size_t max_labels = 4) {
    static const char* kLabels[] = {"a", "b", "c", "xy", "www"};
    static const char* kTlds[] = {"test", "com"};
    std::string out;
    const std::size_t n = 1 + pick(max_labels);
    for (std::size_t i = 0; i < n; ++i) {
      out += kLabels[pick(std::size(kLabels))];
      out += '.';
    }
    out += kTlds[pick(std::size(kTlds))];
    return out;
  }
  std::string pattern() {
    const std::size_t k = pick(3);
    return std::string(k == 0 ? "" : k == 1 ? "*." : "**.") + name(2);
  }
  IpAddress address() {
    if (chance(0.7)) {
      static const std::uint8_t kA[] = {10, 93, 169, 127, 192, 0};
      static const std::uint8_t kB[] = {0, 1, 254, 168};
      static const std::uint8_t kC[] = {0, 1, 169};
      static const std::uint8_t kD[] = {0, 1, 254, 255};
      return IpAddress::from_v4({kA[pick(6)], kB[pick(4)], kC[pick(3)], kD[pick(4)]});
    }
    static const char* kV6[] = {"2001:db8::", "fd00::", "fe80::", "2002::", "::", "2606:4700::"};
    std::array<std::uint8_t, 16> b{};
    const IpAddress base = ip(kV6[pick(std::size(kV6))]);
    std::copy(base.bytes().begin(), base.bytes().end(), b.begin());
    b[15] = static_cast<std::uint8_t>(pick(3));
    b[7] = static_cast<std::uint8_t>(pick(2));
    return IpAddress::from_v6(b);
  }
  Cidr block() {
    const IpAddress a = address();
    static const std::uint8_t kV4[] = {0, 7, 8, 11, 12, 15, 16, 24, 30, 32};
    static const std::uint8_t kV6[] = {0, 6, 7, 9, 10, 15, 16, 32, 64, 120, 128};
    return Cidr::make(a, a.is_v4() ? kV4[pick(std::size(kV4))] : kV6[pick(std::size(kV6))]);
  }
  std::vector<PortRange> port_list() {
    std::vector<PortRange> out;
    const std::size_t n = pick(4) == 0 ? 1 + pick(2) : 0;
    for (std::size_t i = 0; i < n; ++i) {
      const auto a = static_cast<std::uint16_t>(1 + pick(6));
      out.push_back({a, static_cast<std::uint16_t>(a + pick(3))});
    }
    return out;
  }
  IpAddress source() {
    static const char* kSrc[] = {"10.0.0.1", "10.0.1.1", "192.168.1.1", "fd00::1", "fd00::2:1"};
    return ip(kSrc[pick(std::size(kSrc))]);
  }

  config::PolicySpec policy() {
    config::PolicySpec s;
    s.mode = chance(0.2) ? PolicyMode::audit : PolicyMode::enforce;
    s.default_action = chance(0.3) ? Action::allow : Action::deny;
    const std::size_t rules = 1 + pick(25);
    for (std::size_t i = 0; i < rules; ++i) {
      config::RuleSpec r;
      r.name = "r" + std::to_string(i);
      r.action = chance(0.3) ? Action::deny : Action::allow;
      if (r.action == Action::deny && chance(0.4)) {
        r.mode = chance(0.7) ? PolicyMode::audit : PolicyMode::enforce;
        const std::size_t u = pick(4);
        if (u > 0) r.until = kToday + std::chrono::days(static_cast<int>(u) - 2);
      }
      if (chance(0.3)) {
        static const char* kFrom[] = {"10.0.0.0/8", "10.0.1.0/24",   "192.168.0.0/16",
                                      "fd00::/16",  "fd00::2:0/112", "10.0.0.1/32"};
        const std::size_t n = 1 + pick(3);
        for (std::size_t k = 0; k < n; ++k) r.from.push_back(cidr(kFrom[pick(std::size(kFrom))]));
      }
      const std::size_t entries = 1 + pick(3);
      for (std::size_t k = 0; k < entries; ++k) {
        config::ToSpec t;
        if (chance(0.6)) {
          t.host = pattern();
          t.destination = static_cast<Integrity>(pick(3));
        } else {
          t.cidr = block();
        }
        t.ports = port_list();
        r.to.push_back(std::move(t));
      }
      s.rules.push_back(std::move(r));
    }
    return s;
  }

  std::string flow_name() {
    const std::size_t k = pick(20);
    if (k == 0) return address().to_string();
    if (k == 1) return "a..b";
    std::string n = name();
    if (k == 2) n += '.';
    if (k == 3) {
      for (char& c : n) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    }
    return n;
  }

  void answer_for(RandomAnswers& answers, const std::string& name, const IpAddress& dst,
                  bool allow_unknown) {
    const std::size_t k = pick(allow_unknown ? 4 : 3);
    if (k == 3) {
      answers.table[name] = std::nullopt;
      return;
    }
    if (k == 2) {
      answers.table[name] = std::pair{NameAnswer::Status::failed, std::vector<IpAddress>{}};
      return;
    }
    std::vector<IpAddress> addrs;
    const std::size_t n = pick(4);
    for (std::size_t i = 0; i < n; ++i) addrs.push_back(address());
    if (chance(0.5)) addrs.insert(addrs.begin() + static_cast<std::ptrdiff_t>(pick(n + 1)), dst);
    answers.table[name] = std::pair{NameAnswer::Status::ok, std::move(addrs)};
  }

 private:
  std::mt19937 rng_;
};

void expect_same(const Reference::Result& want, const Outcome& got, const std::string& where) {
  ASSERT_EQ(got.needs_lookup, want.needs_lookup) << where;
  if (want.needs_lookup) {
    EXPECT_EQ(got.lookup_name, want.lookup_name) << where;
    return;
  }
  EXPECT_EQ(to_string(got.verdict.decision), to_string(want.decision))
      << where << " rule " << got.verdict.rule << " / " << want.rule << ": " << got.verdict.reason;
  EXPECT_EQ(got.verdict.rule, want.rule) << where << ": " << got.verdict.reason;
  EXPECT_EQ(got.verdict.connect_to, want.connect_to) << where;
  EXPECT_EQ(got.verdict.integrity, want.integrity) << where;
}

std::string describe(const config::PolicySpec& s, const FlowFacts& f) {
  std::string out = "policy mode=" + std::to_string(static_cast<int>(s.mode)) +
                    " default=" + std::to_string(static_cast<int>(s.default_action)) + "\n";
  for (const auto& r : s.rules) {
    out += "  " + r.name + (r.action == Action::deny ? " deny" : " allow");
    if (r.mode) out += r.mode == PolicyMode::audit ? " audit" : " enforce";
    for (const auto& c : r.from) out += " from " + c.to_string();
    for (const auto& t : r.to) {
      out += " [" + (t.host ? *t.host + "/" + std::to_string(static_cast<int>(t.destination))
                            : t.cidr->to_string());
      for (const auto& p : t.ports)
        out += " " + std::to_string(p.first) + "-" + std::to_string(p.last);
      out += "]";
    }
    out += "\n";
  }
  out += "flow src=" + f.src.to_string() + " dst=" + f.dst.to_string() + ":" +
         std::to_string(f.port) + " name=" + std::string(f.name.value_or("<none>")) +
         " transparent=" + std::to_string(f.transparent);
  return out;
}

TEST(PolicyCrossCheck, CompiledMatchesNaiveReference) {
  Gen gen(20261126);
  std::size_t decisions = 0;
  std::size_t lookups = 0;
  for (int policy_round = 0; policy_round < 400; ++policy_round) {
    const config::PolicySpec s = gen.policy();
    config::TlsSpec tls;
    tls.require_sni = gen.chance(0.5);
    tls.ech = gen.chance(0.3) ? config::EchMode::deny : config::EchMode::outer;
    const std::vector<IpAddress> own = {ip("93.1.0.1"), ip("fd00::1")};
    const auto compiled = CompiledPolicy::compile(s, tls, own);
    const Reference ref{s, tls, own};
    for (int q = 0; q < 60; ++q) {
      std::string name_storage;
      FlowFacts f;
      f.src = gen.source();
      f.dst = gen.address();
      f.port = static_cast<std::uint16_t>(1 + gen.pick(8));
      f.transparent = gen.chance(0.85);
      f.today = kToday;
      f.ech = gen.chance(0.1);
      if (gen.chance(0.85)) {
        name_storage = gen.flow_name();
        f.name = name_storage;
      } else {
        f.tls_without_sni = gen.chance(0.5);
      }
      const std::string where = describe(s, f);
      if (gen.chance(0.15)) {
        const AssumeIntegrity assume;
        expect_same(ref.decide(f, assume), compiled->decide(f, assume), where);
        ++decisions;
        continue;
      }
      RandomAnswers answers;
      const auto canonical = f.name ? canonicalize_name(*f.name).name : std::nullopt;
      if (canonical) gen.answer_for(answers, canonical->text, f.dst, true);
      const auto want = ref.decide(f, answers);
      const auto got = compiled->decide(f, answers);
      expect_same(want, got, where);
      ++decisions;
      if (want.needs_lookup && got.needs_lookup) {
        ++lookups;
        // Phase two: the answer is now known; it must not ask again.
        gen.answer_for(answers, got.lookup_name, f.dst, false);
        const auto want2 = ref.decide(f, answers);
        const auto got2 = compiled->decide(f, answers);
        ASSERT_FALSE(got2.needs_lookup) << where;
        expect_same(want2, got2, where);
        ++decisions;
      }
      if (::testing::Test::HasFailure()) return;
    }
    // Rule 11 against a linear scan.
    for (int q = 0; q < 20; ++q) {
      const IpAddress src = gen.source();
      const auto port = static_cast<std::uint16_t>(1 + gen.pick(10));
      bool want = false;
      for (const auto& r : s.rules) {
        if (!Reference::from_ok(r, src)) continue;
        for (const auto& t : r.to) want = want || (t.host && Reference::port_ok(t, port));
      }
      ASSERT_EQ(compiled->name_can_matter("l", src, port), want)
          << describe(s, FlowFacts{}) << " src " << src.to_string() << " port " << port;
    }
  }
  EXPECT_GT(decisions, 20000U);
  // The guard's address-only classes decide many random flows before any
  // lookup (they come first), so fewer flows reach phase two than decide.
  EXPECT_GT(lookups, 50U);
}

// Large blocks sets, so the tries get their jump tables (and the jump
// table's `up` chains and resume points are exercised): thousands of
// prefixes of every length, IPv4 and IPv6, some sharing a long common
// prefix (a deep root), as destinations and as `from` sources.
TEST(PolicyCrossCheck, LargeCidrSetsMatchNaiveReference) {
  std::mt19937 rng(7);
  const auto pick = [&](std::uint32_t n) {
    return std::uniform_int_distribution<std::uint32_t>(0, n - 1)(rng);
  };
  const auto v4 = [&] {
    // Clustered: a few /8s, so prefixes nest often.
    static const std::uint32_t kTops[] = {10, 11, 93, 203};
    return IpAddress::from_v4_uint((kTops[pick(4)] << 24) | (pick(1U << 24) & 0xFF0F0FFFU));
  };
  const auto v6 = [&] {
    std::array<std::uint8_t, 16> b{0x20, 0x01, 0x0d, 0xb8};
    b[4] = static_cast<std::uint8_t>(pick(4));
    b[5] = static_cast<std::uint8_t>(pick(256));
    b[6] = static_cast<std::uint8_t>(pick(256));
    b[15] = static_cast<std::uint8_t>(pick(4));
    return IpAddress::from_v6(b);
  };
  for (int round = 0; round < 3; ++round) {
    config::PolicySpec s;
    s.default_action = round == 1 ? Action::allow : Action::deny;
    for (int i = 0; i < 3000; ++i) {
      config::RuleSpec r;
      r.name = "r" + std::to_string(i);
      r.action = pick(10) == 0 ? Action::deny : Action::allow;
      config::ToSpec t;
      const bool is_v4 = pick(3) != 0;
      const auto len = static_cast<std::uint8_t>(is_v4 ? (pick(8) == 0 ? pick(9) : 8 + pick(25))
                                                       : (pick(8) == 0 ? pick(33) : 32 + pick(97)));
      t.cidr = Cidr::make(is_v4 ? v4() : v6(), len);
      if (pick(4) == 0) t.ports = {{1, 3}};
      r.to.push_back(std::move(t));
      if (pick(5) == 0) {
        r.from.push_back(
            Cidr::make(pick(2) == 0 ? v4() : v6(), static_cast<std::uint8_t>(8 + pick(17))));
      }
      if (pick(6) == 0) r.to.push_back(host("h" + std::to_string(pick(50)) + ".test", {{2, 2}}));
      s.rules.push_back(std::move(r));
    }
    const config::TlsSpec tls;
    const std::vector<IpAddress> own;
    const auto compiled = CompiledPolicy::compile(s, tls, own);
    const Reference ref{s, tls, own};
    const AssumeIntegrity assume;
    for (int q = 0; q < 1500; ++q) {
      FlowFacts f;
      f.src = pick(2) == 0 ? v4() : v6();
      f.dst = pick(3) != 0 ? v4() : v6();
      f.port = static_cast<std::uint16_t>(1 + pick(4));
      f.today = kToday;
      std::string name = "h" + std::to_string(pick(60)) + ".test";
      if (pick(2) == 0) f.name = name;
      const auto want = ref.decide(f, assume);
      const auto got = compiled->decide(f, assume);
      expect_same(want, got,
                  "src " + f.src.to_string() + " dst " + f.dst.to_string() + ":" +
                      std::to_string(f.port) + " name " + std::string(f.name.value_or("-")));
      bool can_matter = false;
      for (const auto& r : s.rules) {
        if (!Reference::from_ok(r, f.src)) continue;
        for (const auto& t : r.to)
          can_matter = can_matter || (t.host && Reference::port_ok(t, f.port));
      }
      ASSERT_EQ(compiled->name_can_matter("l", f.src, f.port), can_matter) << f.src.to_string();
      if (::testing::Test::HasFailure()) return;
    }
  }
}

}  // namespace
}  // namespace egressd::policy::testing
