// `egressd learn` (docs/learn.md): denied flows in access logs -> the fewest
// allow rules that would let them through, grouped by domain suffix and
// source range, verified against the policy before they are printed.

#include "egressd/cli/learn.hpp"

#include <algorithm>
#include <array>
#include <set>
#include <tuple>
#include <utility>

#include <boost/json.hpp>

#include "egressd/config/loader.hpp"
#include "egressd/core/hostname.hpp"
#include "egressd/policy/address_class.hpp"

namespace egressd::cli {
namespace {

// Suffixes below which every label belongs to a different owner: a wildcard
// directly under one would allow strangers. Not the Public Suffix List, only
// the common cases; any single label (a TLD) counts too.
constexpr std::array<std::string_view, 64> kPublicSuffixes = {
    // two-level country suffixes
    "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "net.uk", "ltd.uk", "plc.uk", "com.au", "net.au",
    "org.au", "edu.au", "gov.au", "co.nz", "net.nz", "org.nz", "co.jp", "ne.jp", "or.jp", "ac.jp",
    "go.jp", "co.kr", "or.kr", "co.in", "net.in", "org.in", "com.br", "net.br", "org.br", "com.cn",
    "net.cn", "org.cn", "gov.cn", "com.mx", "com.ar", "com.tr", "co.za", "com.sg", "com.hk",
    "com.tw", "co.il", "com.my", "co.id", "com.ph", "com.vn", "com.ua", "co.th",
    // multi-tenant hosting: each label below is someone else's site
    "github.io", "githubusercontent.com", "gitlab.io", "herokuapp.com", "appspot.com",
    "cloudfront.net", "azurewebsites.net", "blob.core.windows.net", "blogspot.com", "netlify.app",
    "vercel.app", "pages.dev", "workers.dev", "web.app", "firebaseapp.com", "s3.amazonaws.com",
    "ngrok.io"};

// Sentences for the "not covered" comments, per kind of denial.
std::string builtin_reason(std::string_view rule) {
  if (rule == "builtin:guard")
    return "the built-in guard (gateway host, loopback, metadata, private ranges)";
  if (rule == "builtin:invalid-name") return "an invalid name in the traffic";
  if (rule == "builtin:malformed") return "a malformed request";
  if (rule == "builtin:sniff_timeout") return "a client that sent nothing in time";
  if (rule == "builtin:limit") return "a connection limit";
  if (rule == "builtin:untrusted-peer") return "an untrusted PROXY-protocol peer";
  if (rule == "builtin:sni-mismatch") return "an SNI that differs from the CONNECT target";
  if (rule == "builtin:ech") return "tls.ech: deny";
  return "a built-in check";
}

// Untrusted text shown in a comment: bounded, and quoted so it cannot end
// the comment line.
std::string shown(std::string_view untrusted) {
  constexpr std::size_t kMaxShown = 80;
  if (untrusted.size() > kMaxShown) {
    return yaml_quote(std::string(untrusted.substr(0, kMaxShown)) + "...");
  }
  return yaml_quote(untrusted);
}

// Distinct "not covered" reasons kept apart; more (a hostile log inventing
// rule names) are pooled so memory and output stay bounded.
constexpr std::size_t kMaxReasons = 32;

const boost::json::string* string_field(const boost::json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr ? v->if_string() : nullptr;
}

std::string_view sv(const boost::json::string& s) {
  return {s.data(), s.size()};
}

std::size_t label_count(std::string_view name) {
  return name.empty() ? 0 : static_cast<std::size_t>(std::count(name.begin(), name.end(), '.')) + 1;
}

// The parent domain: "a.b.c" -> "b.c"; "c" -> "".
std::string_view parent_of(std::string_view name) {
  const auto dot = name.find('.');
  return dot == std::string_view::npos ? std::string_view() : name.substr(dot + 1);
}

bool is_below(std::string_view name, std::string_view base) {
  return name.size() > base.size() + 1 && name.ends_with(base) &&
         name[name.size() - base.size() - 1] == '.';
}

// A block of sources or destinations: /24 for IPv4, /64 for IPv6.
Cidr block_of(const IpAddress& ip) {
  return Cidr::make(ip, ip.is_v4() ? 24 : 64);
}

// Smallest CIDR holding every address of a non-empty sorted set of one family.
Cidr covering(const IpAddress& lowest, const IpAddress& highest) {
  unsigned len = 0;
  while (len < lowest.bit_width() && lowest.bit(len) == highest.bit(len)) ++len;
  return Cidr::make(lowest, static_cast<std::uint8_t>(len));
}

// `from` for a set of sources: per /24 (/64) block the smallest covering
// CIDR; empty (= any source) when the sources span too many blocks.
std::vector<Cidr> from_for(const std::set<IpAddress>& sources, std::size_t max_blocks) {
  std::map<Cidr, std::pair<IpAddress, IpAddress>> blocks;  // block -> lowest, highest
  for (const IpAddress& ip : sources) {
    auto [it, inserted] = blocks.try_emplace(block_of(ip), ip, ip);
    if (!inserted) it->second.second = ip;  // the set is sorted
  }
  std::vector<Cidr> out;
  if (blocks.size() > max_blocks) return out;
  for (const auto& [block, range] : blocks) out.push_back(covering(range.first, range.second));
  return out;
}

std::vector<config::PortRange> port_ranges(const std::set<std::uint16_t>& ports) {
  std::vector<config::PortRange> out;
  for (std::uint16_t p : ports) {
    if (!out.empty() && out.back().last + 1 == p) {
      out.back().last = p;
    } else {
      out.push_back({p, p});
    }
  }
  // A run of two reads better as two ports than as a range.
  std::vector<config::PortRange> split;
  for (const auto& r : out) {
    if (r.last == r.first + 1) {
      split.push_back({r.first, r.first});
      split.push_back({r.last, r.last});
    } else {
      split.push_back(r);
    }
  }
  return split;
}

std::string plural(std::size_t n, std::string_view one, std::string_view many) {
  return std::to_string(n) + " " + std::string(n == 1 ? one : many);
}

// One suggested `to` entry being assembled.
struct Entry {
  std::string host;  // pattern, or empty for cidr
  Cidr cidr;
  std::set<std::uint16_t> ports;
  std::set<IpAddress> sources;
  // Namespaces of the sources; by_namespace while every source had one.
  std::set<std::string> namespaces;
  bool by_namespace = true;
  std::set<std::string> names;  // distinct names behind a host pattern
  bool resolve = false;
  Learner::Seen seen;
};

// A record's `time` as the gateway writes it (contract "Access log"):
// anything else, from a hand-edited or hostile log, is not shown.
bool is_record_time(std::string_view t) {
  constexpr std::string_view kShape = "dddd-dd-ddTdd:dd:dd.dddZ";
  if (t.size() != kShape.size()) return false;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const bool digit = t[i] >= '0' && t[i] <= '9';
    if (kShape[i] == 'd' ? !digit : t[i] != kShape[i]) return false;
  }
  return true;
}

// "first seen T1, last T2" to the second, or "seen T" when both are one.
std::string seen_comment(const Learner::Seen& seen) {
  if (seen.first.empty()) return {};
  const auto second = [](const std::string& t) { return t.substr(0, 19) + "Z"; };
  if (second(seen.first) == second(seen.last)) return ", seen " + second(seen.first);
  return ", first seen " + second(seen.first) + ", last " + second(seen.last);
}

// A wildcard under `base` stays within one owner: base is at or below a
// registrable domain, and no listed public suffix lies below it (so never
// `**.amazonaws.com`, which holds s3.amazonaws.com and its buckets).
bool wildcard_base_allowed(std::string_view base) {
  if (registrable_domain(base).empty()) return false;
  return std::none_of(kPublicSuffixes.begin(), kPublicSuffixes.end(),
                      [&](std::string_view s) { return is_below(s, base); });
}

// Chooses a pattern for each name: `*.base` / `**.base` where at least
// `min_names` names not yet covered sit below a base that is at or below a
// registrable domain, deepest bases first; a wider wildcard absorbs the
// narrower ones below it. Other names stay exact.
std::map<std::string, std::string> choose_patterns(const std::set<std::string>& names,
                                                   std::size_t min_names) {
  std::map<std::string, std::vector<std::string>> below;  // base -> names under it
  for (const auto& n : names) {
    for (std::string_view p = parent_of(n); !p.empty(); p = parent_of(p)) {
      below[std::string(p)].push_back(n);
    }
  }
  std::vector<std::string> bases;
  for (const auto& [base, list] : below) {
    if (wildcard_base_allowed(base)) bases.push_back(base);
  }
  std::stable_sort(bases.begin(), bases.end(), [](const std::string& a, const std::string& b) {
    return label_count(a) > label_count(b);
  });

  std::map<std::string, std::string> owner;  // name -> chosen base
  for (const auto& base : bases) {
    std::size_t uncovered = 0;
    for (const auto& n : below[base]) uncovered += owner.contains(n) ? 0U : 1U;
    if (uncovered < min_names) continue;
    for (const auto& n : below[base]) owner[n] = base;  // absorbs narrower bases
  }

  std::map<std::string, std::string> pattern;  // name -> pattern
  std::map<std::string, bool> one_level;       // base -> every name one label below
  for (const auto& [n, base] : owner) {
    const bool direct = parent_of(n) == base;
    auto [it, inserted] = one_level.try_emplace(base, direct);
    if (!inserted) it->second = it->second && direct;
  }
  for (const auto& n : names) {
    const auto it = owner.find(n);
    if (it == owner.end()) {
      pattern[n] = n;
    } else {
      pattern[n] = (one_level[it->second] ? "*." : "**.") + it->second;
    }
  }
  return pattern;
}

std::string rule_name_for(std::string_view site) {
  std::string name = "learned-";
  for (char c : site) name += c == '.' ? '-' : c;
  return name;
}

// Unique among the config's rules and the ones already generated, within
// the 128-byte limit on rule names.
std::string unique_name(std::string base, std::set<std::string>& taken) {
  constexpr std::size_t kMaxRuleName = 128;
  constexpr std::size_t kRoomForSuffix = 8;
  if (base.size() > kMaxRuleName) base.resize(kMaxRuleName);
  if (taken.insert(base).second) return base;
  if (base.size() > kMaxRuleName - kRoomForSuffix) base.resize(kMaxRuleName - kRoomForSuffix);
  for (std::size_t i = 2;; ++i) {
    std::string candidate = base + "-" + std::to_string(i);
    if (taken.insert(candidate).second) return candidate;
  }
}

void append_ports(std::string& out, const std::vector<config::PortRange>& ports) {
  out += "[";
  for (std::size_t i = 0; i < ports.size(); ++i) {
    if (i > 0) out += ", ";
    // Ports are numbers this code formats; a range must be a string.
    if (ports[i].first == ports[i].last) {
      out += std::to_string(ports[i].first);
    } else {
      out += yaml_quote(std::to_string(ports[i].first) + "-" + std::to_string(ports[i].last));
    }
  }
  out += "]";
}

bool is_fixable_rule(std::string_view rule) {
  return rule == "default" || rule == "builtin:integrity" || rule == "builtin:no-sni";
}

}  // namespace

std::string yaml_quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "\"";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c >= 0x20 && c < 0x7f) {
      out += ch;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  out += '"';
  return out;
}

std::string registrable_domain(std::string_view name) {
  if (name.empty()) return {};
  std::size_t suffix_labels = 1;  // any TLD
  for (std::string_view s : kPublicSuffixes) {
    if (name == s || is_below(name, s)) suffix_labels = std::max(suffix_labels, label_count(s));
  }
  const std::size_t labels = label_count(name);
  if (labels <= suffix_labels) return {};
  // Keep the last suffix_labels + 1 labels.
  std::size_t pos = name.size();
  for (std::size_t i = 0; i <= suffix_labels; ++i) {
    const auto dot = name.rfind('.', pos - 1);
    if (dot == std::string_view::npos) return std::string(name);
    pos = dot;
  }
  return std::string(name.substr(pos + 1));
}

void Learner::Seen::add(std::size_t n, std::string_view first_time, std::string_view last_time) {
  flows += n;
  if (!first_time.empty() && (first.empty() || first_time < first)) first = first_time;
  if (!last_time.empty() && (last.empty() || last_time > last)) last = last_time;
}

Learner::Learner(const config::ConfigSpec& cfg,
                 std::shared_ptr<const policy::CompiledPolicy> policy, LearnOptions options)
    : cfg_(cfg), policy_(std::move(policy)), options_(options) {}

void Learner::not_covered(const std::string& why, std::size_t n) {
  auto it = not_covered_.find(why);
  if (it == not_covered_.end() && not_covered_.size() >= kMaxReasons) {
    it = not_covered_.try_emplace("denied for other reasons (too many kinds to list)").first;
  } else if (it == not_covered_.end()) {
    it = not_covered_.try_emplace(why).first;
  }
  it->second += n;
}

void Learner::add_line(std::string_view line) {
  // A whole-line blank is not a record, and not worth a complaint.
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;
  boost::system::error_code ec;
  const boost::json::value v = boost::json::parse(line, ec);
  const boost::json::object* o = ec ? nullptr : v.if_object();
  const boost::json::string* event = o != nullptr ? string_field(*o, "event") : nullptr;
  const boost::json::string* decision = o != nullptr ? string_field(*o, "decision") : nullptr;
  if (event == nullptr || decision == nullptr) {
    ++malformed_;
    return;
  }
  ++records_;
  // `open` records repeat a passing flow; `request` records are denied
  // requests on h2c connections that stay open, denials like any other.
  if (*event != "flow" && *event != "request") return;
  if (*decision != "deny" && *decision != "audit_deny") return;
  const boost::json::string* rule_field = string_field(*o, "rule");
  if (rule_field == nullptr) {
    --records_;
    ++malformed_;
    return;
  }
  const std::string_view rule = sv(*rule_field);
  const bool audit = *decision == "audit_deny";

  if (!is_fixable_rule(rule)) {
    ++denied_;
    if (audit) {
      not_covered("passed only because deny rule " + shown(rule) +
                  " is in audit mode; an allow rule cannot override a deny rule");
    } else if (rule.starts_with("builtin:")) {
      not_covered("denied by " + shown(rule) + ": " + builtin_reason(rule));
    } else {
      not_covered("denied by deny rule " + shown(rule) +
                  "; an allow rule cannot override a deny rule");
    }
    return;
  }

  const boost::json::string* src_text = string_field(*o, "src");
  const boost::json::string* dst_text = string_field(*o, "dst");
  const auto src = src_text != nullptr ? Endpoint::parse(sv(*src_text)) : std::nullopt;
  const auto dst = dst_text != nullptr ? Endpoint::parse(sv(*dst_text)) : std::nullopt;
  if (!src || !dst) {
    // A fixable denial without addresses cannot become a rule.
    --records_;
    ++malformed_;
    return;
  }
  ++denied_;
  Observation obs;
  obs.src = src->ip;
  obs.dst = dst->ip;
  obs.port = dst->port;
  if (const auto* p = string_field(*o, "proto"))
    obs.proto = parse_proto(sv(*p)).value_or(Proto::tcp);
  obs.integrity_failed = rule == "builtin:integrity";
  if (const auto* ns = string_field(*o, "namespace");
      ns != nullptr && cfg_.kubernetes && !config::namespace_name_problem(sv(*ns))) {
    obs.namespace_name = std::string(sv(*ns));
  }
  std::string_view listener;
  if (const auto* l = string_field(*o, "listener")) listener = sv(*l);
  std::string_view time;
  if (const auto* t = string_field(*o, "time"); t != nullptr && is_record_time(sv(*t))) {
    time = sv(*t);
  }

  // A keep-alive connection that carried several names lists them all in
  // `hosts`; its decision is the last one taken, so each name is a candidate.
  std::vector<std::string_view> names;
  if (const auto* hosts = o->if_contains("hosts"); hosts != nullptr && hosts->is_array()) {
    for (const auto& h : hosts->get_array()) {
      if (const auto* s = h.if_string()) names.push_back(sv(*s));
    }
  }
  if (names.empty()) {
    if (const auto* h = string_field(*o, "host")) names.push_back(sv(*h));
  }
  if (names.empty()) {
    add_observation(obs, listener, time);
    return;
  }
  for (std::string_view raw : names) {
    Observation named = obs;
    const CanonicalNameResult c = canonicalize_name(raw);
    if (!c.name) {
      not_covered("carried a name that is not a valid DNS name");
      continue;
    }
    // An IP literal as the name is judged by address, like no name at all;
    // a name the config's own syntax would refuse cannot become a rule.
    if (!c.name->ip) {
      if (!config::canonicalize_host_pattern(c.name->text).pattern) {
        not_covered("carried a name the config cannot express");
        continue;
      }
      named.name = c.name->text;
    }
    add_observation(std::move(named), listener, time);
  }
}

policy::FlowFacts Learner::facts_of(const Observation& obs, PodIdentity& pod) const {
  policy::FlowFacts facts;
  if (!obs.namespace_name.empty()) {
    pod.namespace_name = obs.namespace_name;
    pod.namespace_labels = {{std::string(kNamespaceNameLabel), obs.namespace_name}};
    facts.identity = &pod;
  }
  facts.transparent = obs.transparent;
  facts.src = obs.src;
  facts.dst = obs.dst;
  facts.port = obs.port;
  facts.proto = obs.proto;
  if (!obs.name.empty()) facts.name = obs.name;
  facts.tls_without_sni = obs.proto == Proto::tls && obs.name.empty();
  facts.today = options_.today;
  return facts;
}

void Learner::add_observation(Observation obs, std::string_view listener, std::string_view time) {
  const policy::AddressClassification cls = policy::classify(obs.dst);
  if (!obs.name.empty() && !obs.integrity_failed && cls.cls != policy::AddressClass::global) {
    // The guard denies host matches to these addresses whatever the rules.
    not_covered("went by name to a " + std::string(policy::to_string(cls.cls)) +
                " address, which the guard denies to host entries");
    return;
  }
  if (obs.name.empty() &&
      (policy::always_denied(cls.cls) || cls.cls == policy::AddressClass::link_local)) {
    not_covered("went to a " + std::string(policy::to_string(cls.cls)) +
                " address: not suggested, the guard protects it");
    return;
  }
  for (const auto& l : cfg_.listeners) {
    if (l.name == listener) obs.transparent = l.mode != config::ListenerMode::explicit_proxy;
  }

  // Judged again by the current config: the log may predate a fix.
  PodIdentity pod;
  policy::FlowFacts facts = facts_of(obs, pod);
  facts.listener = listener;
  const policy::AssumeIntegrity assume;
  const policy::Verdict v = policy_->decide(facts, assume).verdict;
  if (v.decision == policy::Decision::allow) {
    // Without DNS an integrity failure cannot be judged again: keep it.
    if (!obs.integrity_failed) {
      not_covered("already allowed by the current config");
      return;
    }
  } else if (!is_fixable_rule(v.rule)) {
    not_covered("now " + std::string(policy::to_string(v.decision)) + " by " + shown(v.rule) +
                ", which an allow rule cannot change");
    return;
  }
  observations_[std::move(obs)].add(1, time, time);
}

LearnResult Learner::suggest() const {
  LearnResult result;
  result.records = records_;
  result.denied = denied_;
  result.malformed_lines = malformed_;

  // Names -> patterns.
  std::set<std::string> names;
  for (const auto& [obs, n] : observations_) {
    if (!obs.name.empty()) names.insert(obs.name);
  }
  const auto pattern = choose_patterns(names, options_.min_names_for_wildcard);

  // Destination addresses -> /32 or the block when enough share one.
  std::map<Cidr, std::set<IpAddress>> dst_blocks;
  for (const auto& [obs, n] : observations_) {
    if (obs.name.empty()) dst_blocks[block_of(obs.dst)].insert(obs.dst);
  }
  auto dst_cidr = [&](const IpAddress& ip) {
    const Cidr block = block_of(ip);
    if (dst_blocks[block].size() >= options_.min_addresses_for_block) return block;
    return Cidr::make(ip, static_cast<std::uint8_t>(ip.bit_width()));
  };

  // Entries, keyed by pattern (hosts) or cidr (addresses).
  std::map<std::string, Entry> host_entries;
  std::map<Cidr, Entry> cidr_entries;
  for (const auto& [obs, seen] : observations_) {
    Entry* e = nullptr;
    if (!obs.name.empty()) {
      const std::string& p = pattern.at(obs.name);
      e = &host_entries[p];
      e->host = p;
      e->names.insert(obs.name);
      e->resolve = e->resolve || obs.integrity_failed;
    } else {
      const Cidr c = dst_cidr(obs.dst);
      e = &cidr_entries[c];
      e->cidr = c;
    }
    e->ports.insert(obs.port);
    e->sources.insert(obs.src);
    if (obs.namespace_name.empty()) {
      e->by_namespace = false;
    } else {
      e->namespaces.insert(obs.namespace_name);
    }
    e->seen.add(seen.flows, seen.first, seen.last);
  }

  // Rules: one per (site, from), the site being the registrable domain
  // for names and "addresses" for cidr entries.
  // Sources that are pods (records with `namespace`, a kubernetes section)
  // are grouped by namespace instead of by address block: pod IPs change
  // with every rollout, namespaces do not.
  struct Group {
    std::vector<Cidr> from;
    std::vector<std::string> namespaces;
    std::vector<const Entry*> entries;
    std::size_t flows = 0;
  };
  std::map<std::tuple<std::string, std::vector<std::string>, std::vector<Cidr>>, Group> groups;
  auto add_to_group = [&](std::string site, const Entry& e) {
    std::vector<Cidr> from;
    std::vector<std::string> namespaces;
    if (e.by_namespace && !e.namespaces.empty()) {
      if (e.namespaces.size() <= options_.max_source_blocks) {
        namespaces.assign(e.namespaces.begin(), e.namespaces.end());
      }
    } else {
      from = from_for(e.sources, options_.max_source_blocks);
    }
    Group& g = groups[{std::move(site), namespaces, from}];
    g.from = std::move(from);
    g.namespaces = std::move(namespaces);
    g.entries.push_back(&e);
    g.flows += e.seen.flows;
  };
  for (const auto& [p, e] : host_entries) {
    std::string_view base = p;
    if (base.starts_with("**.")) {
      base.remove_prefix(3);
    } else if (base.starts_with("*.")) {
      base.remove_prefix(2);
    }
    std::string site = registrable_domain(base);
    add_to_group(site.empty() ? std::string(base) : std::move(site), e);
  }
  // "~" sorts after every DNS name, so address rules come last.
  for (const auto& [c, e] : cidr_entries) add_to_group("~addresses", e);

  std::set<std::string> taken;
  for (const auto& r : cfg_.policy.rules) taken.insert(r.name);
  std::vector<std::pair<const Group*, std::string>> order;
  for (const auto& [key, g] : groups) {
    const std::string& first = std::get<0>(key);
    std::string site = first == "~addresses" ? "addresses" : first;
    if (g.namespaces.size() == 1) site = g.namespaces.front() + "-" + site;
    order.emplace_back(&g, unique_name(rule_name_for(site), taken));
  }

  // RuleSpecs and their YAML.
  std::string body;
  for (const auto& [g, name] : order) {
    config::RuleSpec rule;
    rule.name = name;
    rule.from = g->from;
    for (const std::string& ns : g->namespaces) {
      config::IdentitySelector sel;
      config::LabelSelector by_name;
      by_name.requirements.push_back(
          {std::string(kNamespaceNameLabel), config::LabelRequirement::Operator::in, {ns}});
      sel.namespace_selector = std::move(by_name);
      rule.from_identities.push_back(std::move(sel));
    }
    body += "    - name: " + yaml_quote(name) + "  # " + plural(g->flows, "flow", "flows") + "\n";
    if (!g->namespaces.empty()) {
      body += "      from: [";
      for (std::size_t i = 0; i < g->namespaces.size(); ++i) {
        if (i > 0) body += ", ";
        body += "{namespace: " + yaml_quote(g->namespaces[i]) + "}";
      }
      body += "]\n";
    }
    if (!g->from.empty()) {
      body += "      from: [";
      for (std::size_t i = 0; i < g->from.size(); ++i) {
        if (i > 0) body += ", ";
        body += yaml_quote(g->from[i].to_string());
      }
      body += "]\n";
    }
    body += "      to:\n";
    for (const Entry* e : g->entries) {
      config::ToSpec to;
      to.ports = port_ranges(e->ports);
      if (!e->host.empty()) {
        to.host = e->host;
        to.destination = e->resolve ? config::Integrity::resolve : config::Integrity::verify;
        body += "        - host: " + yaml_quote(e->host) + "  # ";
        if (e->host.starts_with("*")) body += plural(e->names.size(), "name", "names") + ", ";
      } else {
        to.cidr = e->cidr;
        body += "        - cidr: " + yaml_quote(e->cidr.to_string()) + "  # ";
      }
      body += plural(e->seen.flows, "flow", "flows") + seen_comment(e->seen) + "\n";
      body += "          ports: ";
      append_ports(body, to.ports);
      body += "\n";
      if (e->resolve) {
        // Denied for integrity: the name did not resolve to the client's
        // address; `resolve` connects to what the gateway resolves itself.
        body += "          destination: \"resolve\"\n";
      }
      rule.to.push_back(std::move(to));
    }
    result.rules.push_back(std::move(rule));
  }

  // Verify: the config's rules plus the suggestions must let every kept
  // flow pass; what still fails is reported, not hidden.
  std::map<std::string, std::size_t> still_denied;
  if (!result.rules.empty()) {
    config::PolicySpec spec = cfg_.policy;
    spec.rules.insert(spec.rules.end(), result.rules.begin(), result.rules.end());
    const auto merged = policy::CompiledPolicy::compile(spec, cfg_.tls);
    const policy::AssumeIntegrity assume;
    for (const auto& [obs, seen] : observations_) {
      PodIdentity pod;
      const policy::Verdict v = merged->decide(facts_of(obs, pod), assume).verdict;
      if (v.decision == policy::Decision::allow) {
        result.covered += seen.flows;
      } else {
        still_denied["would still be " + std::string(policy::to_string(v.decision)) + " by " +
                     shown(v.rule) + " with these rules"] += seen.flows;
      }
    }
  }

  std::string& out = result.yaml;
  out += "# egressd learn: " + plural(denied_, "denied flow", "denied flows") + " in " +
         plural(records_, "record", "records") + "; " + std::to_string(result.covered) +
         " allowed by " + plural(result.rules.size(), "rule", "rules") + " below.\n";
  std::map<std::string, std::size_t> uncovered = not_covered_;
  for (const auto& [why, n] : still_denied) uncovered[why] += n;
  if (!uncovered.empty()) {
    out += "# Not covered:\n";
    for (const auto& [why, n] : uncovered) {
      out += "#   " + plural(n, "flow", "flows") + " " + why + "\n";
    }
  }
  if (result.rules.empty()) {
    out += "# Nothing to suggest.\n";
  } else {
    out += "# Paste under policy.rules:\n";
    out += body;
  }
  return result;
}

}  // namespace egressd::cli
