// The compiled policy and the decision.
//
// Layout: every `to` entry becomes an Entry with an id in file order, so
// "first in the file" is "smallest id". Matchers map what a flow shows to
// entry ids — exact names, `*.x` bases and `**.x` bases in three hash tables
// (name_table.hpp), destination blocks in one trie per family
// (cidr_trie.hpp) — and decide() filters the candidates by ports and `from`,
// sorts the few that survive and applies rules 5-7 over that short list.
// Nothing in decide() scans rules; cost grows with the name's labels and the
// depth of the prefixes around the destination, not with the policy.

#include "egressd/policy/policy.hpp"

#include <algorithm>
#include <array>
#include <utility>

#include "cidr_trie.hpp"
#include "egressd/core/hostname.hpp"
#include "egressd/policy/address_class.hpp"
#include "identity_matcher.hpp"
#include "name_table.hpp"
#include "port_ranges.hpp"
#include "source_port_index.hpp"

namespace egressd::policy {

using config::Action;
using config::Integrity;
using config::PolicyMode;
using config::PortRange;
using detail::kAnyPort;
using detail::merge_ranges;
using detail::ranges_contain;

std::string_view to_string(Decision d) noexcept {
  switch (d) {
    case Decision::allow:
      return "allow";
    case Decision::deny:
      return "deny";
    case Decision::audit_deny:
      return "audit_deny";
  }
  return "deny";
}

std::optional<NameAnswer> AssumeIntegrity::find(std::string_view) const {
  NameAnswer a;
  a.status = NameAnswer::Status::assumed;
  return a;
}

namespace {

constexpr std::string_view kRuleDefault = "default";
constexpr std::string_view kRuleInvalidName = "builtin:invalid-name";
constexpr std::string_view kRuleIntegrity = "builtin:integrity";
constexpr std::string_view kRuleGuard = "builtin:guard";
constexpr std::string_view kRuleNoSni = "builtin:no-sni";
constexpr std::string_view kRuleEch = "builtin:ech";

enum class EntryKind : std::uint8_t { exact, single_star, double_star, cidr };

// One `to` entry. Entry ids are assigned in file order (rule, then `to`
// position), so sorting matched ids sorts them first-in-file first.
struct Entry {
  std::uint32_t rule = 0;
  std::uint32_t pattern = 0;  // host: offset of the full pattern in patterns; cidr: index in cidrs
  std::uint32_t ports = 0;    // first range in port_pool
  std::uint16_t port_count = 0;  // 0 = any port
  std::uint16_t pattern_length = 0;
  EntryKind kind = EntryKind::exact;
  Integrity integrity = Integrity::verify;
  // Copies of the rule's action and whether it has `from`, so that most
  // candidates are judged without touching the rule (one cache miss less).
  Action action = Action::allow;
  bool has_from = false;
};

struct Rule {
  std::string name;
  Action action = Action::allow;
  std::optional<PolicyMode> mode;
  std::optional<std::chrono::sys_days> until;
  bool has_from = false;
  // `from`, IPv4 then IPv6, each sorted by base with nested blocks removed:
  // disjoint, so one binary search finds the only candidate.
  std::uint32_t from = 0;
  std::uint32_t from_v4 = 0;
  std::uint32_t from_v6 = 0;
  // `from` identity selectors: ids in rule_selectors, ascending.
  std::uint32_t selectors = 0;
  std::uint32_t selector_count = 0;
};

// Who a flow comes from, as `from` sees it: the source address and the
// identity selectors its pod satisfies (computed once per decision).
struct Source {
  const IpAddress& ip;
  const detail::SelectorIds& selectors;
};

// A fixed inline buffer that spills to the heap only for flows matching an
// unusual number of entries, so the common path does not allocate.
class MatchList {
 public:
  void push_back(std::uint32_t v) {
    if (!spilled_ && size_ < inline_.size()) {
      inline_[size_++] = v;
      return;
    }
    if (!spilled_) {
      heap_.assign(inline_.begin(), inline_.begin() + static_cast<std::ptrdiff_t>(size_));
      spilled_ = true;
    }
    heap_.push_back(v);
    ++size_;
  }
  std::uint32_t* begin() noexcept { return spilled_ ? heap_.data() : inline_.data(); }
  std::uint32_t* end() noexcept { return begin() + size_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  std::uint32_t operator[](std::size_t i) const noexcept {
    return spilled_ ? heap_[i] : inline_[i];
  }

 private:
  std::array<std::uint32_t, 32> inline_;  // written before read; not cleared (hot path)
  std::vector<std::uint32_t> heap_;
  std::size_t size_ = 0;
  bool spilled_ = false;
};

// Sorted by base, blocks nested in an earlier one removed.
std::vector<Cidr> disjoint_blocks(std::vector<Cidr> blocks) {
  std::sort(blocks.begin(), blocks.end(), [](const Cidr& a, const Cidr& b) {
    return a.base != b.base ? a.base < b.base : a.prefix_len < b.prefix_len;
  });
  std::vector<Cidr> out;
  for (const Cidr& c : blocks) {
    if (!out.empty() && out.back().contains(c)) continue;
    out.push_back(c);
  }
  return out;
}

// A name from the traffic, canonical, in a stack buffer (no allocation for
// DNS names; IP literals take the shared, allocating path).
struct FlowName {
  std::array<char, kMaxNameLength + 1> buffer;  // written before read; not cleared (hot path)
  std::size_t length = 0;
  std::string owned;  // used for IP literals
  bool is_ip = false;
  [[nodiscard]] std::string_view text() const noexcept {
    return is_ip ? std::string_view(owned) : std::string_view(buffer.data(), length);
  }
};

// Same acceptance as canonicalize_name (core/hostname.hpp): IP literals in
// every spelling by parse_ip_literal (allocation-free; only a literal's text
// allocates), anything else as a DNS name without allocating.
NameProblem canonicalize_flow_name(std::string_view raw, FlowName& out) {
  const IpLiteral literal = parse_ip_literal(raw);
  if (literal.kind == LiteralKind::invalid) return NameProblem::bad_ip_literal;
  if (literal.kind == LiteralKind::ip) {
    out.is_ip = true;
    out.owned = literal.address.to_string();
    return NameProblem::none;
  }
  const NameProblem problem = check_dns_name(raw);
  if (problem != NameProblem::none) return problem;
  if (raw.back() == '.') raw.remove_suffix(1);
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const char c = raw[i];
    out.buffer[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  out.length = raw.size();
  return NameProblem::none;
}

// Address text for reasons. IPv4 by hand: inet_ntop goes through printf,
// which would be the single most expensive step of an allow.
void append_address(std::string& out, const IpAddress& a) {
  if (!a.is_v4()) {
    out += a.to_string();
    return;
  }
  const auto b = a.bytes();
  for (std::size_t i = 0; i < 4; ++i) {
    if (i > 0) out += '.';
    const unsigned v = b[i];
    if (v >= 100) out += static_cast<char>('0' + v / 100);
    if (v >= 10) out += static_cast<char>('0' + v / 10 % 10);
    out += static_cast<char>('0' + v % 10);
  }
}

std::string address_text(const IpAddress& a) {
  std::string out;
  append_address(out, a);
  return out;
}

void append_cidr(std::string& out, const Cidr& c) {
  append_address(out, c.base);
  out += '/';
  out += std::to_string(c.prefix_len);
}

enum class Check : std::uint8_t { pass, fail, unknown };

struct IntegrityResult {
  Check check = Check::unknown;
  std::optional<IpAddress> connect_to;
  std::string failure;  // reason when failed
};

// Why the guard refused an address: the class (a metric label) and a
// sentence for the log.
struct GuardDenial {
  std::string_view cls;
  std::string reason;
};

std::string_view guard_label(const AddressClassification& c) noexcept {
  if (c.cloud_metadata) return "cloud_metadata";
  switch (c.cls) {
    case AddressClass::global:
      return "global";
    case AddressClass::unspecified:
      return "unspecified";
    case AddressClass::loopback:
      return "loopback";
    case AddressClass::multicast:
      return "multicast";
    case AddressClass::broadcast:
      return "broadcast";
    case AddressClass::link_local:
      return "link_local";
    case AddressClass::private_use:
      return "private";
    case AddressClass::ipv4_embedded:
      return "ipv4_embedded";
  }
  return "global";
}

}  // namespace

struct CompiledPolicy::Impl {
  PolicyMode mode = PolicyMode::enforce;
  Action default_action = Action::deny;
  config::TlsSpec tls;
  std::vector<IpAddress> own_addresses;  // sorted

  std::vector<Rule> rules;
  std::vector<Entry> entries;
  std::vector<PortRange> port_pool;
  std::vector<Cidr> cidrs;
  struct Block {
    detail::Bits128 base;  // host bits zero
    unsigned length = 0;
  };
  std::vector<Block> from_pool;
  std::string patterns;  // every host pattern, as written ("**.x.com")

  detail::NameTable exact;
  detail::NameTable single_star;  // key: the base, "x.com" for "*.x.com"
  detail::NameTable double_star;  // key: the base, "x.com" for "**.x.com"
  detail::CidrTrie dst_v4;
  detail::CidrTrie dst_v6;

  detail::IdentityMatcher identities;
  std::vector<std::uint32_t> rule_selectors;  // Rule::selectors points here

  // Rule 11: may a host entry apply to this source and port?
  detail::SourcePortIndex host_sources;
  // May an allow cidr entry apply (explicit mode: is the name worth a lookup)?
  detail::SourcePortIndex allow_cidr_sources;

  PolicyStats stats;

  // --- helpers used by decide() ---

  [[nodiscard]] bool from_ok(const Rule& r, const Source& src) const noexcept {
    if (!r.has_from) return true;
    for (std::uint32_t k = 0; k < r.selector_count; ++k) {
      if (src.selectors.contains(rule_selectors[r.selectors + k])) return true;
    }
    return cidr_from_ok(r, src.ip);
  }

  [[nodiscard]] bool cidr_from_ok(const Rule& r, const IpAddress& src) const noexcept {
    if (r.from_v4 + r.from_v6 == 0) return false;
    const std::uint32_t off = src.is_v4() ? r.from : r.from + r.from_v4;
    const std::uint32_t count = src.is_v4() ? r.from_v4 : r.from_v6;
    const auto first = from_pool.begin() + off;
    const auto last = first + count;
    const detail::Bits128 a = detail::to_bits(src);
    auto it = std::upper_bound(first, last, a,
                               [](const detail::Bits128& x, const Block& b) { return x < b.base; });
    if (it == first) return false;
    --it;
    return detail::CidrTrie::prefix_matches(a, it->base, it->length);
  }

  [[nodiscard]] bool port_ok(const Entry& e, std::uint16_t port) const noexcept {
    if (e.port_count == 0) return true;
    return ranges_contain({port_pool.data() + e.ports, e.port_count}, port);
  }

  [[nodiscard]] bool enforcing(const Rule& r, std::chrono::sys_days today) const noexcept {
    PolicyMode m = mode;
    if (r.mode && (!r.until || today <= *r.until)) m = *r.mode;
    return m == PolicyMode::enforce;
  }

  [[nodiscard]] const detail::CidrTrie& dst_trie(const IpAddress& a) const noexcept {
    return a.is_v4() ? dst_v4 : dst_v6;
  }

  [[nodiscard]] std::string_view pattern_of(const Entry& e) const noexcept {
    return std::string_view(patterns).substr(e.pattern, e.pattern_length);
  }

  // "host a.x.com matched *.x.com" / "10.0.0.5 is in 10.0.0.0/8".
  [[nodiscard]] std::string describe_match(std::uint32_t id, std::string_view name,
                                           const IpAddress& dst) const {
    const Entry& e = entries[id];
    std::string out;
    if (e.kind == EntryKind::cidr) {
      append_address(out, dst);
      out += " is in ";
      append_cidr(out, cidrs[e.pattern]);
    } else {
      out = "host ";
      out += name;
      out += " matched ";
      out += pattern_of(e);
    }
    return out;
  }

  // The identity selectors the flow's source pod satisfies: the flow's own
  // match when it brings one (once per flow), else computed into `scratch`.
  const SelectorSet& selectors_of(const FlowFacts& f, SelectorSet& scratch) const {
    if (f.selectors != nullptr) return *f.selectors;
    if (!identities.empty()) identities.match(f.identity, scratch);
    return scratch;
  }

  // Calls fn(entry id) for every host entry whose pattern matches the
  // canonical DNS name `name` (ports and `from` not checked).
  template <class Fn>
  void visit_host_entries(std::string_view name, Fn&& fn) const {
    for (const std::uint32_t id : exact.find(name)) fn(id);
    const std::size_t dot = name.find('.');
    if (dot == std::string_view::npos) return;
    if (!single_star.empty()) {
      for (const std::uint32_t id : single_star.find(name.substr(dot + 1))) fn(id);
    }
    if (!double_star.empty()) {
      // `**.x` matches every name with x as a proper suffix: one lookup per
      // label boundary.
      for (std::size_t at = dot; at != std::string_view::npos; at = name.find('.', at + 1)) {
        for (const std::uint32_t id : double_star.find(name.substr(at + 1))) fn(id);
      }
    }
  }

  // Rule 7 lifting: an allow cidr entry inside `range` that contains the
  // address and whose ports and `from` admit the flow.
  [[nodiscard]] bool lifted(const IpAddress& address, const Cidr& range, const Source& src,
                            std::uint16_t port) const {
    return dst_trie(address).visit(detail::to_bits(address),
                                   [&](unsigned length, std::span<const std::uint32_t> ids) {
                                     if (length < range.prefix_len) return false;
                                     for (const std::uint32_t id : ids) {
                                       const Entry& e = entries[id];
                                       if (e.action == Action::allow && port_ok(e, port) &&
                                           (!e.has_from || from_ok(rules[e.rule], src))) {
                                         return true;
                                       }
                                     }
                                     return false;
                                   });
  }

  // Rule 7, the address-only classes (own host, unspecified, loopback,
  // multicast, broadcast, link-local): judged on every flow before the
  // rules, whatever its name. nullopt when `address` passes them.
  [[nodiscard]] std::optional<GuardDenial> address_guard(const IpAddress& address,
                                                         const Source& src,
                                                         std::uint16_t port) const {
    // The class first: loopback is also an address of this host, and the
    // metric says more as "loopback".
    const AddressClassification c = classify(address);
    if (always_denied(c.cls)) {
      return GuardDenial{guard_label(c),
                         address_text(address) + " is " + std::string(to_string(c.cls))};
    }
    if (!own_addresses.empty() &&
        std::binary_search(own_addresses.begin(), own_addresses.end(), address)) {
      return GuardDenial{"own_host", address_text(address) + " is an address of this gateway"};
    }
    if (c.cls != AddressClass::link_local || lifted(address, c.range, src, port)) {
      return std::nullopt;
    }
    return GuardDenial{guard_label(c), unlifted_reason(address, c)};
  }

  // Rule 7, the classes that only guard flows matched by a host entry
  // (private ranges, IPv4 embedded in IPv6). nullopt when `address` passes.
  [[nodiscard]] std::optional<GuardDenial> host_guard(const IpAddress& address, const Source& src,
                                                      std::uint16_t port) const {
    const AddressClassification c = classify(address);
    if (c.cls != AddressClass::private_use && c.cls != AddressClass::ipv4_embedded) {
      return std::nullopt;
    }
    if (lifted(address, c.range, src, port)) return std::nullopt;
    return GuardDenial{guard_label(c), unlifted_reason(address, c)};
  }

  // Rule 7 as a whole, for the address the gateway is about to connect to.
  [[nodiscard]] std::optional<GuardDenial> guard(const IpAddress& address, const Source& src,
                                                 std::uint16_t port, bool by_host) const {
    if (auto g = address_guard(address, src, port)) return g;
    if (by_host) return host_guard(address, src, port);
    return std::nullopt;
  }

  static std::string unlifted_reason(const IpAddress& address, const AddressClassification& c) {
    std::string out = address_text(address);
    out += " is ";
    out += to_string(c.cls);
    if (c.cloud_metadata) out += " (cloud metadata)";
    if (c.cls != AddressClass::link_local) out += " and was reached by host name";
    out += "; no allow cidr entry inside ";
    append_cidr(out, c.range);
    out += " covers it";
    return out;
  }

  // Destination integrity of an allow host entry (rule 3). `answer` is the
  // one lookup for the flow's name, fetched by the caller.
  [[nodiscard]] IntegrityResult integrity(const Entry& e, const FlowFacts& f, const Source& src,
                                          std::string_view name,
                                          const std::optional<NameAnswer>& answer) const {
    IntegrityResult r;
    if (!f.transparent || e.integrity == Integrity::trust) {
      r.check = Check::pass;
      r.connect_to = f.dst;
      return r;
    }
    if (!answer) return r;  // unknown
    switch (answer->status) {
      case NameAnswer::Status::assumed:
        r.check = Check::pass;
        if (e.integrity == Integrity::verify) r.connect_to = f.dst;
        return r;
      case NameAnswer::Status::failed:
        r.check = Check::fail;
        r.failure = "DNS lookup for " + std::string(name) + " failed";
        if (!answer->error.empty()) {
          r.failure += ": ";
          // The error text comes from the resolver, not the wire; keep it
          // printable anyway since it lands in the log.
          for (const char c : answer->error) r.failure += (c >= 0x20 && c < 0x7f) ? c : '?';
        }
        return r;
      case NameAnswer::Status::ok:
        break;
    }
    if (e.integrity == Integrity::verify) {
      const auto& a = answer->addresses;
      if (std::find(a.begin(), a.end(), f.dst) != a.end()) {
        r.check = Check::pass;
        r.connect_to = f.dst;
      } else {
        r.check = Check::fail;
        r.failure = std::string(name) + " does not resolve to " + address_text(f.dst) + " (verify)";
      }
      return r;
    }
    // resolve
    if (answer->addresses.empty()) {
      r.check = Check::fail;
      r.failure = std::string(name) + " has no addresses (resolve)";
      return r;
    }
    r.check = Check::pass;
    r.connect_to = answer->addresses.front();
    for (const IpAddress& a : answer->addresses) {
      if (!guard(a, src, f.port, /*by_host=*/true)) {
        r.connect_to = a;
        break;
      }
    }
    return r;
  }
};

namespace {

Verdict deny_verdict(std::string_view rule, std::string reason) {
  Verdict v;
  v.decision = Decision::deny;
  v.rule = rule;
  v.reason = std::move(reason);
  return v;
}

Verdict guard_verdict(GuardDenial denial, bool matched_by_host) {
  Verdict v = deny_verdict(kRuleGuard, std::move(denial.reason));
  v.guard_class = denial.cls;
  v.matched_by_host = matched_by_host;
  return v;
}

Outcome final_outcome(Verdict v) {
  Outcome o;
  o.verdict = std::move(v);
  return o;
}

}  // namespace

CompiledPolicy::CompiledPolicy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CompiledPolicy::~CompiledPolicy() = default;

std::shared_ptr<const CompiledPolicy> CompiledPolicy::compile(
    const config::PolicySpec& spec, const config::TlsSpec& tls,
    std::vector<IpAddress> own_addresses) {
  auto p = std::make_unique<Impl>();
  p->mode = spec.mode;
  p->default_action = spec.default_action;
  p->tls = tls;
  std::sort(own_addresses.begin(), own_addresses.end());
  own_addresses.erase(std::unique(own_addresses.begin(), own_addresses.end()), own_addresses.end());
  p->own_addresses = std::move(own_addresses);

  std::vector<detail::NameTable::Item> exact_items;
  std::vector<detail::NameTable::Item> single_items;
  std::vector<detail::NameTable::Item> double_items;
  std::vector<detail::CidrTrie::Item> v4_items;
  std::vector<detail::CidrTrie::Item> v6_items;

  p->rules.reserve(spec.rules.size());
  std::size_t total_entries = 0;
  std::size_t pattern_bytes = 0;
  for (const auto& rs : spec.rules) {
    total_entries += rs.to.size();
    for (const auto& t : rs.to) pattern_bytes += t.host ? t.host->size() : 0;
  }
  p->entries.reserve(total_entries);
  p->patterns.reserve(pattern_bytes);

  for (std::size_t ri = 0; ri < spec.rules.size(); ++ri) {
    const config::RuleSpec& rs = spec.rules[ri];
    Rule r;
    r.name = rs.name;
    r.action = rs.action;
    r.mode = rs.mode;
    r.until = rs.until;
    std::vector<std::uint32_t> selector_ids;
    for (const config::IdentitySelector& sel : rs.from_identities) {
      selector_ids.push_back(p->identities.add(sel));
    }
    std::sort(selector_ids.begin(), selector_ids.end());
    selector_ids.erase(std::unique(selector_ids.begin(), selector_ids.end()), selector_ids.end());
    r.selectors = static_cast<std::uint32_t>(p->rule_selectors.size());
    r.selector_count = static_cast<std::uint32_t>(selector_ids.size());
    p->rule_selectors.insert(p->rule_selectors.end(), selector_ids.begin(), selector_ids.end());
    r.has_from = !rs.from.empty() || !selector_ids.empty();
    if (!rs.from.empty()) {
      std::vector<Cidr> v4;
      std::vector<Cidr> v6;
      for (const Cidr& c : rs.from) (c.base.is_v4() ? v4 : v6).push_back(c);
      v4 = disjoint_blocks(std::move(v4));
      v6 = disjoint_blocks(std::move(v6));
      r.from = static_cast<std::uint32_t>(p->from_pool.size());
      r.from_v4 = static_cast<std::uint32_t>(v4.size());
      r.from_v6 = static_cast<std::uint32_t>(v6.size());
      for (const auto* list : {&v4, &v6}) {
        for (const Cidr& c : *list) p->from_pool.push_back({detail::to_bits(c.base), c.prefix_len});
      }
    }

    bool rule_has_host = false;
    std::vector<PortRange> rule_host_ports;  // union over host entries
    bool rule_has_allow_cidr = false;
    std::vector<PortRange> rule_cidr_ports;  // union over cidr entries of an allow rule
    for (const config::ToSpec& t : rs.to) {
      Entry e;
      e.rule = static_cast<std::uint32_t>(ri);
      e.integrity = t.destination;
      e.action = r.action;
      e.has_from = r.has_from;
      const auto id = static_cast<std::uint32_t>(p->entries.size());
      if (!t.ports.empty()) {
        const auto merged = merge_ranges(t.ports);
        e.ports = static_cast<std::uint32_t>(p->port_pool.size());
        e.port_count = static_cast<std::uint16_t>(std::min<std::size_t>(merged.size(), 0xFFFF));
        p->port_pool.insert(p->port_pool.end(), merged.begin(), merged.begin() + e.port_count);
      }
      if (t.host) {
        // Patterns are canonical (config validated them): a name is at most
        // 253 bytes, "**." plus one at most 256. Longer text could match no
        // valid name anyway; cutting it keeps the 16-bit length honest.
        const std::string_view host = std::string_view(*t.host).substr(0, kMaxNameLength + 3);
        e.pattern = static_cast<std::uint32_t>(p->patterns.size());
        e.pattern_length = static_cast<std::uint16_t>(host.size());
        p->patterns.append(host);
        detail::NameTable::Item item{e.pattern, e.pattern_length, id};
        if (host.starts_with("**.")) {
          e.kind = EntryKind::double_star;
          item.key_offset += 3;
          item.key_length -= 3;
          double_items.push_back(item);
        } else if (host.starts_with("*.")) {
          e.kind = EntryKind::single_star;
          item.key_offset += 2;
          item.key_length -= 2;
          single_items.push_back(item);
        } else {
          e.kind = EntryKind::exact;
          exact_items.push_back(item);
        }
        ++(e.kind == EntryKind::exact ? p->stats.exact_hosts : p->stats.wildcard_hosts);
        rule_has_host = true;
        if (t.ports.empty()) {
          rule_host_ports.push_back(kAnyPort);
        } else {
          rule_host_ports.insert(rule_host_ports.end(), t.ports.begin(), t.ports.end());
        }
      } else if (t.cidr) {
        if (r.action == Action::allow) {
          rule_has_allow_cidr = true;
          if (t.ports.empty()) {
            rule_cidr_ports.push_back(kAnyPort);
          } else {
            rule_cidr_ports.insert(rule_cidr_ports.end(), t.ports.begin(), t.ports.end());
          }
        }
        e.kind = EntryKind::cidr;
        e.pattern = static_cast<std::uint32_t>(p->cidrs.size());
        p->cidrs.push_back(*t.cidr);
        detail::CidrTrie::Item item{detail::to_bits(t.cidr->base), t.cidr->prefix_len, id};
        (t.cidr->base.is_v4() ? v4_items : v6_items).push_back(item);
        ++p->stats.cidrs;
      } else {
        continue;  // neither: config rejects it; it can match nothing
      }
      p->entries.push_back(e);
    }

    if (rule_has_host) {
      p->host_sources.add(rs.from, selector_ids, std::move(rule_host_ports));
    }
    if (rule_has_allow_cidr) {
      p->allow_cidr_sources.add(rs.from, selector_ids, std::move(rule_cidr_ports));
    }
    p->rules.push_back(std::move(r));
  }
  p->identities.build();
  p->host_sources.build(p->identities.size());
  p->allow_cidr_sources.build(p->identities.size());

  p->exact.build(p->patterns, std::move(exact_items));
  p->single_star.build(p->patterns, std::move(single_items));
  p->double_star.build(p->patterns, std::move(double_items));
  p->dst_v4.build(std::move(v4_items), 32);
  p->dst_v6.build(std::move(v6_items), 128);

  p->stats.rules = p->rules.size();
  std::size_t bytes =
      sizeof(Impl) + p->rules.capacity() * sizeof(Rule) + p->entries.capacity() * sizeof(Entry) +
      p->port_pool.capacity() * sizeof(PortRange) + p->cidrs.capacity() * sizeof(Cidr) +
      p->from_pool.capacity() * sizeof(Impl::Block) + p->patterns.capacity() +
      p->exact.memory_bytes() + p->single_star.memory_bytes() + p->double_star.memory_bytes() +
      p->dst_v4.memory_bytes() + p->dst_v6.memory_bytes() + p->host_sources.memory_bytes() +
      p->allow_cidr_sources.memory_bytes() + p->identities.memory_bytes() +
      p->rule_selectors.capacity() * sizeof(std::uint32_t);
  for (const Rule& r : p->rules) {
    if (r.name.capacity() > 15) bytes += r.name.capacity() + 1;  // beyond SSO
  }
  p->stats.memory_bytes = bytes;
  return std::shared_ptr<const CompiledPolicy>(new CompiledPolicy(std::move(p)));
}

PolicyStats CompiledPolicy::stats() const noexcept {
  return impl_->stats;
}

SelectorSet CompiledPolicy::match_identity(const PodIdentity* identity) const {
  SelectorSet out;
  if (!impl_->identities.empty()) impl_->identities.match(identity, out);
  return out;
}

bool CompiledPolicy::name_can_matter(std::string_view /*listener*/, const IpAddress& src,
                                     std::uint16_t port,
                                     const PodIdentity* identity) const noexcept {
  const Impl& p = *impl_;
  detail::SelectorIds selectors;
  if (identity != nullptr && !p.identities.empty()) p.identities.match(identity, selectors);
  return p.host_sources.contains(src, selectors, port);
}

std::optional<Verdict> CompiledPolicy::decide_by_name(const FlowFacts& f) const {
  const Impl& p = *impl_;
  if (!f.name) return std::nullopt;
  FlowName name;
  if (const NameProblem problem = canonicalize_flow_name(*f.name, name);
      problem != NameProblem::none) {
    return deny_verdict(kRuleInvalidName,
                        "the name in the traffic is invalid: " + std::string(describe(problem)));
  }
  if (name.is_ip) return std::nullopt;  // nothing to resolve
  const std::string_view name_text = name.text();
  SelectorSet computed;
  const SelectorSet& selectors = p.selectors_of(f, computed);
  const Source source{f.src, selectors};

  // The first-in-file host entry that applies decides whether the address
  // can matter: an enforcing deny denies whatever the address; an allow, or
  // an audit deny (its outcome depends on what else would pass), needs it.
  std::uint32_t first = 0xFFFFFFFFU;
  bool needs_address = false;
  p.visit_host_entries(name_text, [&](std::uint32_t id) {
    const Entry& e = p.entries[id];
    if (!p.port_ok(e, f.port) || (e.has_from && !p.from_ok(p.rules[e.rule], source))) return;
    if (e.action == Action::deny && p.enforcing(p.rules[e.rule], f.today)) {
      first = std::min(first, id);
    } else {
      needs_address = true;
    }
  });
  if (first != 0xFFFFFFFFU) {
    return deny_verdict(p.rules[p.entries[first].rule].name,
                        p.describe_match(first, name_text, f.dst));
  }
  // Nothing names it: only an allow cidr entry, the default or audit can
  // let it through, and each of those needs the address.
  if (needs_address || p.default_action == Action::allow || p.mode == PolicyMode::audit ||
      p.allow_cidr_sources.contains(f.src, selectors, f.port)) {
    return std::nullopt;
  }
  return deny_verdict(kRuleDefault, "no rule matched; default deny");
}

Outcome CompiledPolicy::decide(const FlowFacts& f, const NameAnswers& answers) const {
  const Impl& p = *impl_;

  // Rule 2: a name that is neither a DNS name nor an IP literal. The reason
  // names the problem only: the raw bytes are untrusted.
  FlowName name;
  bool has_dns_name = false;
  if (f.name) {
    const NameProblem problem = canonicalize_flow_name(*f.name, name);
    if (problem != NameProblem::none) {
      return final_outcome(deny_verdict(kRuleInvalidName, "the name in the traffic is invalid: " +
                                                              std::string(describe(problem))));
    }
    has_dns_name = !name.is_ip;  // an IP literal matches no host pattern
  }
  const std::string_view name_text = name.text();

  SelectorSet computed;
  const SelectorSet& selectors = p.selectors_of(f, computed);
  const Source source{f.src, selectors};

  // Rule 7, address-only classes: named before everything but rule 2, so
  // a flow to the metadata address or to the gateway itself is
  // builtin:guard whether or not a rule matches it and whatever its name.

  if (auto g = p.address_guard(f.dst, source, f.port)) {
    return final_outcome(guard_verdict(std::move(*g), false));
  }

  // Rule 10.
  if (f.ech && p.tls.ech == config::EchMode::deny) {
    return final_outcome(
        deny_verdict(kRuleEch, "the TLS ClientHello offers ECH and tls.ech is deny"));
  }

  // Rules 3-4: every entry whose host or cidr, ports and rule `from` match.
  // The name's slot and the destination's trie entry are independent
  // memory reads: start both before waiting on either.
  const detail::Bits128 dst_bits = detail::to_bits(f.dst);
  const detail::CidrTrie& dst_trie = p.dst_trie(f.dst);
  dst_trie.prefetch(dst_bits);
  if (has_dns_name) p.exact.prefetch(name_text);
  MatchList matches;
  const auto accept = [&](std::uint32_t id) {
    const Entry& e = p.entries[id];
    if (p.port_ok(e, f.port) && (!e.has_from || p.from_ok(p.rules[e.rule], source))) {
      matches.push_back(id);
    }
  };
  if (has_dns_name) p.visit_host_entries(name_text, accept);
  dst_trie.visit(dst_bits, [&](unsigned, std::span<const std::uint32_t> ids) {
    for (const std::uint32_t id : ids) accept(id);
    return false;
  });
  std::sort(matches.begin(), matches.end());

  // Rule 9: a hello without SNI passes on only through an allow cidr entry.
  if (!f.name && f.tls_without_sni && p.tls.require_sni) {
    bool allowed_by_cidr = false;
    for (std::size_t i = 0; i < matches.size() && !allowed_by_cidr; ++i) {
      const Entry& e = p.entries[matches[i]];
      allowed_by_cidr = e.kind == EntryKind::cidr && e.action == Action::allow;
    }
    if (!allowed_by_cidr) {
      return final_outcome(
          deny_verdict(kRuleNoSni, "TLS ClientHello without SNI; no allow cidr entry matches " +
                                       Endpoint{f.dst, f.port}.to_string()));
    }
  }

  // Rule 7, private ranges: judged as soon as a host entry (allow or deny)
  // matched, before that entry's integrity check and before deny rules. A
  // transparent `resolve` entry connects to an address of its own choosing,
  // not to dst: its answer is guarded once it is known (below).
  for (std::size_t i = 0; i < matches.size(); ++i) {
    const Entry& e = p.entries[matches[i]];
    if (e.kind == EntryKind::cidr) continue;
    if (f.transparent && e.action == Action::allow && e.integrity == Integrity::resolve) continue;
    if (auto g = p.host_guard(f.dst, source, f.port)) {
      return final_outcome(guard_verdict(std::move(*g), true));
    }
    break;
  }

  // Rules 5-6, deny side: the first-in-file enforcing deny decides at once;
  // the first-in-file audit deny is remembered.
  constexpr std::uint32_t kNone = 0xFFFFFFFFU;
  std::uint32_t audit_deny = kNone;
  for (std::size_t i = 0; i < matches.size(); ++i) {
    const std::uint32_t id = matches[i];
    if (p.entries[id].action != Action::deny) continue;
    const Rule& r = p.rules[p.entries[id].rule];
    if (p.enforcing(r, f.today)) {
      return final_outcome(deny_verdict(r.name, p.describe_match(id, name_text, f.dst)));
    }
    if (audit_deny == kNone) audit_deny = id;
  }

  // Allow side, first in file first. The flow's one name is looked up at
  // most once, and only when the walk reaches an entry that needs it: every
  // earlier rule has failed, so the answer decides the outcome or the name.
  std::optional<NameAnswer> answer;
  bool answer_fetched = false;
  std::uint32_t decided = kNone;
  std::optional<IpAddress> connect_to;
  bool any_allow_host = false;
  std::string first_failure;
  for (std::size_t i = 0; i < matches.size() && decided == kNone;) {
    const std::uint32_t rule_index = p.entries[matches[i]].rule;
    std::size_t j = i;
    while (j < matches.size() && p.entries[matches[j]].rule == rule_index) ++j;
    if (p.entries[matches[i]].action == Action::allow) {
      for (std::size_t k = i; k < j; ++k) {
        if (p.entries[matches[k]].kind == EntryKind::cidr) {
          decided = matches[k];
          connect_to = f.dst;
          break;
        }
      }
      for (std::size_t k = i; k < j && decided == kNone; ++k) {
        const Entry& e = p.entries[matches[k]];
        any_allow_host = true;
        const bool needs_answer = f.transparent && e.integrity != Integrity::trust;
        if (needs_answer && !answer_fetched) {
          answer = answers.find(name_text);
          answer_fetched = true;
          if (!answer) {
            Outcome o;
            o.needs_lookup = true;
            o.lookup_name = std::string(name_text);
            return o;
          }
        }
        IntegrityResult r = p.integrity(e, f, source, name_text, answer);
        if (r.check == Check::pass) {
          decided = matches[k];
          connect_to = r.connect_to;
        } else if (first_failure.empty()) {
          first_failure = std::move(r.failure);
        }
      }
    }
    i = j;
  }

  // The verdict before audit and the guard.
  Verdict v;
  bool passes = false;
  if (decided != kNone) {
    const Entry& e = p.entries[decided];
    passes = true;
    v.rule = p.rules[e.rule].name;
    v.reason = p.describe_match(decided, name_text, f.dst);
    if (e.kind != EntryKind::cidr) {
      v.integrity = e.integrity;
      v.matched_by_host = true;
      if (f.transparent && e.integrity == Integrity::resolve && connect_to) {
        v.reason += "; connecting to " + address_text(*connect_to) + " (resolve)";
      }
    }
    v.connect_to = connect_to;
  } else if (any_allow_host) {
    v.rule = kRuleIntegrity;
    v.reason = std::move(first_failure);
    v.matched_by_host = true;
  } else {
    passes = p.default_action == Action::allow;
    v.rule = kRuleDefault;
    v.reason = passes ? "no rule matched; default allow" : "no rule matched; default deny";
  }
  // A flow that passes without a deciding allow (default, or audit after a
  // failed integrity check) goes where the client sent it.
  if (decided == kNone) v.connect_to = f.dst;

  // Rule 6: an audit deny rule outranks whatever would have let the flow
  // pass, and under policy.mode audit also a deny by default or integrity.
  if (audit_deny != kNone && (passes || p.mode == PolicyMode::audit)) {
    const Rule& r = p.rules[p.entries[audit_deny].rule];
    v.rule = r.name;
    v.reason = "audit: " + p.describe_match(audit_deny, name_text, f.dst) + "; would deny";
    if (!passes) v.integrity.reset();
    v.decision = Decision::audit_deny;
  } else if (!passes && p.mode == PolicyMode::audit) {
    v.reason = "audit: " + v.reason + "; would deny";
    v.decision = Decision::audit_deny;
  } else {
    v.decision = passes ? Decision::allow : Decision::deny;
  }

  if (v.decision == Decision::deny) {
    v.connect_to.reset();
    v.integrity.reset();
    return final_outcome(std::move(v));
  }

  // Rule 7, in every mode. A `resolve` pass under AssumeIntegrity has no
  // address to check: nothing was resolved.
  if (v.connect_to) {
    if (auto g = p.guard(*v.connect_to, source, f.port, v.matched_by_host)) {
      return final_outcome(guard_verdict(std::move(*g), v.matched_by_host));
    }
  }
  return final_outcome(std::move(v));
}

// --- explain: why, with near misses -----------------------------------------
//
// The slow path behind `egressd explain`. Nothing here runs for a live flow:
// explain() takes decide()'s verdict as it is, then walks every rule once,
// judging each condition of rules 3-4 (destination, port, `from`) on its
// own so it can say which one failed. Linear in the rules; allocates freely.

namespace {

constexpr std::string_view kWhyWrongPort = "wrong_port";
constexpr std::string_view kWhySourceNotInFrom = "source_not_in_from";
constexpr std::string_view kWhyOverridden = "overridden";
constexpr std::string_view kWhyPreempted = "preempted";
constexpr std::string_view kWhyShadowed = "shadowed";
constexpr std::string_view kWhyAuditOnly = "audit_only";
constexpr std::string_view kNoteIntegrity = "integrity_assumed";
constexpr std::string_view kNoteModeActive = "mode_override_active";
constexpr std::string_view kNoteModeExpired = "mode_override_expired";

std::string_view mode_text(PolicyMode m) noexcept {
  return m == PolicyMode::audit ? "audit" : "enforce";
}

std::string date_text(std::chrono::sys_days day) {
  const std::chrono::year_month_day ymd{day};
  const auto two = [](unsigned v) { return std::string(v < 10 ? "0" : "") + std::to_string(v); };
  return std::to_string(static_cast<int>(ymd.year())) + '-' +
         two(static_cast<unsigned>(ymd.month())) + '-' + two(static_cast<unsigned>(ymd.day()));
}

void append_ports(std::string& out, std::span<const PortRange> ranges) {
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    if (i > 0) out += ", ";
    out += std::to_string(ranges[i].first);
    if (ranges[i].last != ranges[i].first) {
      out += '-';
      out += std::to_string(ranges[i].last);
    }
  }
}

// The inverse of detail::to_bits, for printing a rule's `from` blocks.
IpAddress address_of(const detail::Bits128& bits, bool v4) {
  if (v4) return IpAddress::from_v4_uint(static_cast<std::uint32_t>(bits.hi >> 32U));
  std::array<std::uint8_t, 16> b{};
  for (std::size_t i = 0; i < 8; ++i) {
    b[i] = static_cast<std::uint8_t>(bits.hi >> (56 - 8 * i));
    b[i + 8] = static_cast<std::uint8_t>(bits.lo >> (56 - 8 * i));
  }
  return IpAddress::from_v6(b);
}

// The guard classes nothing can lift (rule 7, first bullet).
bool guard_is_absolute(std::string_view cls) noexcept {
  return cls == "own_host" || cls == "loopback" || cls == "unspecified" || cls == "multicast" ||
         cls == "broadcast";
}

}  // namespace

Explanation CompiledPolicy::explain(const FlowFacts& f) const {
  const Impl& p = *impl_;
  Explanation x;
  x.verdict = decide(f, AssumeIntegrity{}).verdict;
  const Verdict& v = x.verdict;

  // Rule 3's destination test for every entry, through the matchers decide()
  // uses, so "the destination matched" means exactly what it means there.
  std::vector<bool> destination(p.entries.size(), false);
  FlowName name;
  std::string_view name_text;
  if (f.name && canonicalize_flow_name(*f.name, name) == NameProblem::none && !name.is_ip) {
    name_text = name.text();
    p.visit_host_entries(name_text, [&](std::uint32_t id) { destination[id] = true; });
  }
  p.dst_trie(f.dst).visit(detail::to_bits(f.dst),
                          [&](unsigned, std::span<const std::uint32_t> ids) {
                            for (const std::uint32_t id : ids) destination[id] = true;
                            return false;
                          });

  SelectorSet computed;
  const SelectorSet& selectors = p.selectors_of(f, computed);
  const Source source{f.src, selectors};

  // The rule the verdict names, if it names one.
  const bool by_builtin = v.rule.starts_with("builtin:");
  constexpr std::uint32_t kNone = 0xFFFFFFFFU;
  std::uint32_t decider = kNone;
  if (!by_builtin && v.rule != kRuleDefault) {
    for (std::size_t i = 0; i < p.rules.size(); ++i) {
      if (p.rules[i].name == v.rule) decider = static_cast<std::uint32_t>(i);
    }
  }
  const Rule* decider_rule = decider != kNone ? &p.rules[decider] : nullptr;

  // Why `r`'s `from` does not hold: the `source` code and a clause.
  const auto source_miss = [&](const Rule& r) -> std::pair<std::string_view, std::string> {
    std::string cidrs;
    const std::uint32_t count = f.src.is_v4() ? r.from_v4 : r.from_v6;
    const std::uint32_t off = f.src.is_v4() ? r.from : r.from + r.from_v4;
    for (std::uint32_t k = 0; k < count && k < 4; ++k) {
      const Impl::Block& b = p.from_pool[off + k];
      if (k > 0) cidrs += ", ";
      append_cidr(cidrs, Cidr::make(address_of(b.base, f.src.is_v4()),
                                    static_cast<std::uint8_t>(b.length)));
    }
    if (count > 4) cidrs += " and " + std::to_string(count - 4) + " more";
    std::string outside = address_text(f.src);
    outside += count > 0 ? " is outside " + cidrs : " matches none of its cidrs";
    if (r.selector_count == 0) return {"cidr", outside};
    std::string ids;
    if (f.identity == nullptr) {
      ids = "the source is a pod-less IP, which no identity selector matches";
      return {"no_pod", r.from_v4 + r.from_v6 > 0 ? ids + "; " + outside : ids};
    }
    bool labels = false;
    for (std::uint32_t k = 0; k < r.selector_count; ++k) {
      const auto parts = p.identities.match_parts(p.rule_selectors[r.selectors + k], *f.identity);
      labels = labels || (parts.namespace_ok && !parts.pod_ok);
    }
    const std::string& ns = f.identity->namespace_name;
    ids = labels ? "a selector accepts namespace " + ns + " but not the pod's labels"
                 : "namespace " + ns + " is selected by none of its identity selectors";
    return {labels ? "labels" : "namespace",
            r.from_v4 + r.from_v6 > 0 ? ids + "; " + outside : ids};
  };

  // The mode override of a deny rule that matched: in force, or ended.
  const auto mode_note = [&](const Rule& r) {
    if (r.action != Action::deny || !r.mode || !r.until || *r.mode == p.mode) return;
    ExplainNote n;
    n.rule = r.name;
    if (f.today <= *r.until) {
      n.why = kNoteModeActive;
      n.reason = r.name + " is in " + std::string(mode_text(*r.mode)) + " mode through " +
                 date_text(*r.until) + "; after that day it follows policy.mode (" +
                 std::string(mode_text(p.mode)) + ")";
    } else {
      n.why = kNoteModeExpired;
      n.reason = "the mode: " + std::string(mode_text(*r.mode)) + " override of " + r.name +
                 " ended after " + date_text(*r.until) + "; it follows policy.mode (" +
                 std::string(mode_text(p.mode)) + ") now";
    }
    x.notes.push_back(std::move(n));
  };

  std::uint32_t first_allow = kNone;  // the first allow rule that matched
  for (std::size_t i = 0; i < p.entries.size();) {
    const std::uint32_t ri = p.entries[i].rule;
    std::size_t end = i;
    while (end < p.entries.size() && p.entries[end].rule == ri) ++end;
    const Rule& r = p.rules[ri];
    const bool from_ok = p.from_ok(r, source);
    std::uint32_t matched = kNone;
    std::uint32_t wrong_port = kNone;
    std::uint32_t wrong_source = kNone;
    for (std::size_t k = i; k < end && matched == kNone; ++k) {
      if (!destination[k]) continue;
      const auto id = static_cast<std::uint32_t>(k);
      const bool port_ok = p.port_ok(p.entries[k], f.port);
      if (port_ok && from_ok) {
        matched = id;
      } else if (!port_ok && from_ok && wrong_port == kNone) {
        wrong_port = id;
      } else if (port_ok && !from_ok && wrong_source == kNone) {
        wrong_source = id;
      }
    }
    i = end;
    if (matched != kNone) {
      mode_note(r);
      if (r.action == Action::allow && first_allow == kNone) first_allow = ri;
    }
    if (ri == decider) continue;

    NearMiss m;
    m.rule = r.name;
    m.action = r.action;
    if (matched != kNone) {
      m.reason = p.describe_match(matched, name_text, f.dst) + ", but ";
      if (by_builtin) {
        m.why = kWhyPreempted;
        m.by = v.rule;
        m.reason += std::string(v.rule) + " decided first";
        if (v.rule == kRuleGuard) {
          m.reason += guard_is_absolute(v.guard_class)
                          ? " (" + std::string(v.guard_class) + ": no rule can lift it)"
                          : " (" + std::string(v.guard_class) +
                                ": only an allow cidr entry inside the guarded range lifts it)";
        }
      } else if (r.action == Action::allow) {
        const bool by_deny = decider_rule != nullptr && decider_rule->action == Action::deny;
        m.why = by_deny || decider_rule == nullptr ? kWhyOverridden : kWhyShadowed;
        m.by = v.rule;
        if (!by_deny && decider_rule != nullptr) {
          m.reason += std::string(v.rule) + ", earlier in the file, is named";
        } else if (decider_rule == nullptr) {
          m.reason += "the verdict is " + std::string(v.rule);  // not reached: it would allow
        } else if (v.decision == Decision::audit_deny) {
          m.reason += "deny rule " + std::string(v.rule) +
                      " matched too (audit): the flow passes, recorded as audit_deny";
        } else {
          m.reason += "deny rule " + std::string(v.rule) +
                      " matched too, and a matching deny rule outranks every allow";
        }
      } else if (!p.enforcing(r, f.today) &&
                 !(v.decision == Decision::audit_deny && decider_rule != nullptr &&
                   decider_rule->action == Action::deny)) {
        m.why = kWhyAuditOnly;
        m.reason += "the rule is in audit mode, so it does not deny";
      } else {
        m.why = kWhyShadowed;
        m.by = v.rule;
        m.reason += std::string(v.rule) + ", earlier in the file, is named";
      }
    } else if (wrong_port != kNone) {
      const Entry& e = p.entries[wrong_port];
      m.why = kWhyWrongPort;
      m.reason = p.describe_match(wrong_port, name_text, f.dst) + ", but port " +
                 std::to_string(f.port) + " is not in its ports (";
      append_ports(m.reason, {p.port_pool.data() + e.ports, e.port_count});
      m.reason += ')';
    } else if (wrong_source != kNone) {
      auto [code, clause] = source_miss(r);
      m.why = kWhySourceNotInFrom;
      m.source = code;
      m.reason = p.describe_match(wrong_source, name_text, f.dst) +
                 ", but the source is not in its from: " + clause;
    } else {
      continue;  // the destination, or two conditions, failed: not a near miss
    }
    x.near_misses.push_back(std::move(m));
  }

  // Destination integrity the verdict took on trust (contract: explain
  // needs no network). Only a transparent listener checks it.
  if (v.integrity && f.transparent && *v.integrity != Integrity::trust &&
      v.decision != Decision::deny) {
    ExplainNote n;
    n.why = kNoteIntegrity;
    n.rule = first_allow != kNone ? std::string_view(p.rules[first_allow].name) : v.rule;
    if (*v.integrity == Integrity::verify) {
      n.reason = "a live flow passes this entry only if " + std::string(name_text) +
                 " resolves to " + address_text(f.dst) +
                 " (verify; else builtin:integrity denies it unless another allow rule passes);"
                 " explain resolves nothing and assumes it does";
    } else {
      n.reason = "a live flow connects to an address " + std::string(name_text) +
                 " resolves to (resolve), not to " + address_text(f.dst) +
                 ", and the guard checks that address; explain resolves nothing";
    }
    x.notes.insert(x.notes.begin(), std::move(n));
  }
  return x;
}

}  // namespace egressd::policy
