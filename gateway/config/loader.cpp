// The config schema (contract "Configuration (YAML)") checked over the
// event-built tree of yaml_tree.hpp. Every check reports and goes on, so one
// run lists every problem; the spec is handed out only when none is an error.

#include "egressd/config/loader.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <span>
#include <unordered_map>
#include <utility>

#include "egressd/core/hostname.hpp"
#include "yaml_tree.hpp"

namespace egressd::config {
namespace {

using detail::YamlNode;
using Kind = YamlNode::Kind;

// Length of the valid UTF-8 sequence at the start of `s`, or 0.
std::size_t utf8_sequence(std::string_view s) {
  const auto lead = static_cast<unsigned char>(s[0]);
  std::size_t len = 0;
  if (lead >= 0xc2 && lead <= 0xdf) {
    len = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    len = 3;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    len = 4;
  } else {
    return 0;
  }
  if (s.size() < len) return 0;
  for (std::size_t i = 1; i < len; ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xc0) != 0x80) return 0;
  }
  return len;
}

// A value from the file, quoted for a message: control bytes and invalid
// UTF-8 escaped (they would garble the one-line-per-problem output), long
// values cut short.
std::string quote(std::string_view text) {
  constexpr std::size_t kMaxShown = 80;
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  std::size_t i = 0;
  while (i < text.size() && i < kMaxShown) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte >= 0x20 && byte < 0x7f) {
      out += text[i++];
      continue;
    }
    if (byte >= 0x80) {
      if (const std::size_t len = utf8_sequence(text.substr(i)); len > 0) {
        out += text.substr(i, len);
        i += len;
        continue;
      }
    }
    out += "\\x";
    out += kHex[byte >> 4];
    out += kHex[byte & 0xf];
    ++i;
  }
  if (i < text.size()) out += "...";
  out += '\'';
  return out;
}

std::string_view describe_kind(const YamlNode& node) {
  switch (node.kind) {
    case Kind::null:
      return "an empty value";
    case Kind::scalar:
      return "a scalar";
    case Kind::sequence:
      return "a list";
    case Kind::mapping:
      return "a mapping";
    case Kind::alias:
      return "an alias";
  }
  return "a value";
}

std::string join(std::string_view where, std::string_view key) {
  if (where.empty()) return std::string(key);
  std::string out;
  out.reserve(where.size() + 1 + key.size());
  out += where;
  out += '.';
  out += key;
  return out;
}

std::string index(std::string_view where, std::size_t i) {
  return std::string(where) + "[" + std::to_string(i) + "]";
}

std::string at(const SourcePos& pos) {
  return std::to_string(pos.line) + ":" + std::to_string(pos.col);
}

bool is_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

template <typename E>
struct Choice {
  std::string_view name;
  E value;
};

// Reports problems into one list and turns typed reads of nodes into
// values; every read that fails has reported why.
class Checker {
 public:
  Checker(std::string_view file, std::vector<Diagnostic>& out, std::chrono::sys_days today)
      : file_(file), out_(out), today_(today) {}

  [[nodiscard]] SourcePos pos(const YamlNode& node) const {
    return SourcePos{std::string(file_), node.line, node.col};
  }
  [[nodiscard]] std::chrono::sys_days today() const { return today_; }
  [[nodiscard]] std::size_t error_count() const {
    return static_cast<std::size_t>(std::count_if(
        out_.begin(), out_.end(),
        [](const Diagnostic& d) { return d.severity == Diagnostic::Severity::error; }));
  }

  void error(const YamlNode& node, std::string message) {
    out_.push_back(Diagnostic{Diagnostic::Severity::error, pos(node), std::move(message)});
  }
  void warning(const YamlNode& node, std::string message) {
    out_.push_back(Diagnostic{Diagnostic::Severity::warning, pos(node), std::move(message)});
  }

  // An alias was reported where it was written; a second message about its
  // type would only repeat it.
  bool expect(const YamlNode& node, Kind kind, std::string_view where, std::string_view what) {
    if (node.kind == kind) return true;
    if (node.kind != Kind::alias)
      error(node, std::string(where) + ": expected " + std::string(what) + ", got " +
                      std::string(describe_kind(node)));
    return false;
  }

  const std::string* scalar(const YamlNode& node, std::string_view where, std::string_view what) {
    return expect(node, Kind::scalar, where, what) ? &node.value : nullptr;
  }

  const std::vector<YamlNode>* list(const YamlNode& node, std::string_view where) {
    return expect(node, Kind::sequence, where, "a list") ? &node.children : nullptr;
  }

  std::optional<bool> boolean(const YamlNode& node, std::string_view where) {
    const std::string* text = scalar(node, where, "true or false");
    if (text == nullptr) return std::nullopt;
    if (*text == "true" || *text == "True" || *text == "TRUE") return true;
    if (*text == "false" || *text == "False" || *text == "FALSE") return false;
    error(node, std::string(where) + ": expected true or false, got " + quote(*text));
    return std::nullopt;
  }

  // A decimal integer (or 0x hexadecimal, usual for fwmarks) in [min, max].
  std::optional<std::uint64_t> integer(const YamlNode& node, std::string_view where,
                                       std::uint64_t min, std::uint64_t max) {
    const std::string range = "an integer " + std::to_string(min) + "-" + std::to_string(max);
    const std::string* text = scalar(node, where, range);
    if (text == nullptr) return std::nullopt;
    std::string_view digits = *text;
    unsigned base = 10;
    if (digits.size() > 2 && digits[0] == '0' && (digits[1] == 'x' || digits[1] == 'X')) {
      digits.remove_prefix(2);
      base = 16;
    }
    std::uint64_t value = 0;
    bool ok = !digits.empty();
    for (char ch : digits) {
      unsigned d = 0;
      if (ch >= '0' && ch <= '9') {
        d = static_cast<unsigned>(ch - '0');
      } else if (base == 16 && ch >= 'a' && ch <= 'f') {
        d = static_cast<unsigned>(ch - 'a' + 10);
      } else if (base == 16 && ch >= 'A' && ch <= 'F') {
        d = static_cast<unsigned>(ch - 'A' + 10);
      } else {
        ok = false;
        break;
      }
      value = value * base + d;
      if (value > max) {
        ok = false;
        break;
      }
    }
    if (!ok || value < min) {
      error(node, std::string(where) + ": expected " + range + ", got " + quote(*text));
      return std::nullopt;
    }
    return value;
  }

  std::optional<Duration> duration(const YamlNode& node, std::string_view where, bool allow_zero) {
    const std::string* text = scalar(node, where, "a duration");
    if (text == nullptr) return std::nullopt;
    const auto value = parse_duration(*text);
    if (!value) {
      std::string message = std::string(where) + ": invalid duration " + quote(*text);
      const std::string_view t = *text;
      const auto unit_at =
          std::find_if(t.begin(), t.end(), [](char ch) { return ch < '0' || ch > '9'; });
      const std::string_view unit(unit_at, t.end());
      if (is_digits(t)) {
        message += ": add a unit (ms, s, m or h), as in " + std::string(t) + "s";
      } else if (unit_at != t.begin() &&
                 (unit == "ms" || unit == "s" || unit == "m" || unit == "h")) {
        message += ": longer than the maximum, 8760h";
      } else {
        message += " (expected an integer and a unit, as in 250ms, 5s, 10m or 1h)";
      }
      error(node, std::move(message));
      return std::nullopt;
    }
    if (!allow_zero && value->count() == 0) {
      error(node, std::string(where) + ": must be longer than 0");
      return std::nullopt;
    }
    return value;
  }

  template <typename E>
  std::optional<E> choice(const YamlNode& node, std::string_view where,
                          std::initializer_list<Choice<E>> choices) {
    std::string names;
    for (const auto& c : choices) {
      if (!names.empty()) names += ", ";
      names += c.name;
    }
    const std::string* text = scalar(node, where, "one of: " + names);
    if (text == nullptr) return std::nullopt;
    for (const auto& c : choices) {
      if (*text == c.name) return c.value;
    }
    error(node, std::string(where) + ": invalid value " + quote(*text) +
                    " (expected one of: " + names + ")");
    return std::nullopt;
  }

  std::optional<Cidr> cidr(const YamlNode& node, std::string_view where) {
    const std::string* text = scalar(node, where, "a CIDR block");
    if (text == nullptr) return std::nullopt;
    bool had_host_bits = false;
    auto block = Cidr::parse(*text, &had_host_bits);
    if (!block) {
      error(node, std::string(where) + ": invalid CIDR block " + quote(*text) +
                      " (expected an address and a prefix length, as in 10.0.0.0/8 or fd00::/8)");
      return std::nullopt;
    }
    if (had_host_bits)
      warning(node, std::string(where) + ": " + quote(*text) +
                        " has bits set beyond its prefix; it means " + block->to_string());
    return block;
  }

  std::optional<Endpoint> endpoint(const YamlNode& node, std::string_view where) {
    const std::string* text = scalar(node, where, "an address");
    if (text == nullptr) return std::nullopt;
    auto ep = Endpoint::parse(*text);
    if (!ep)
      error(node, std::string(where) + ": invalid address " + quote(*text) +
                      " (expected \"IPv4:port\" or \"[IPv6]:port\", port 1-65535)");
    return ep;
  }

  std::optional<std::chrono::sys_days> date(const YamlNode& node, std::string_view where) {
    const std::string* text = scalar(node, where, "a date");
    if (text == nullptr) return std::nullopt;
    auto day = parse_date(*text);
    if (!day)
      error(node, std::string(where) + ": invalid date " + quote(*text) +
                      " (expected a calendar day as YYYY-MM-DD)");
    return day;
  }

 private:
  std::string_view file_;
  std::vector<Diagnostic>& out_;
  std::chrono::sys_days today_;
};

// The keys of one mapping, each checked once: a key that is not a scalar,
// unknown, or repeated is an error. yaml-cpp's own node tree would keep one
// of two duplicates silently; the event tree shows both.
class Fields {
 public:
  static constexpr std::size_t kMaxKeys = 12;

  // `map` must be a mapping; `where` is "" at the top level.
  Fields(Checker& c, const YamlNode& map, std::string_view where,
         std::initializer_list<std::string_view> allowed)
      : c_(c), map_(map), where_(where) {
    // A programming error, not bad input: every caller passes a fixed list.
    if (allowed.size() > kMaxKeys) std::abort();
    for (std::string_view name : allowed) allowed_[count_++] = name;
    for (std::size_t i = 0; i + 1 < map.children.size(); i += 2) {
      const YamlNode& key = map.children[i];
      if (key.kind != Kind::scalar) {
        if (key.kind != Kind::alias)
          c.error(key, "keys must be plain strings, got " + std::string(describe_kind(key)) +
                           in_where());
        continue;
      }
      const std::size_t slot = find(key.value);
      if (slot == count_) {
        c.error(key, "unknown key " + quote(key.value) + in_where() +
                         " (expected one of: " + allowed_list() + ")");
        continue;
      }
      if (keys_[slot] != nullptr) {
        c.error(key, "duplicate key " + quote(key.value) + in_where() + " (first at " +
                         at(c.pos(*keys_[slot])) + ")");
        continue;
      }
      keys_[slot] = &key;
      values_[slot] = &map.children[i + 1];
    }
  }

  [[nodiscard]] const YamlNode* get(std::string_view name) const { return values_[find(name)]; }
  [[nodiscard]] const YamlNode* key(std::string_view name) const { return keys_[find(name)]; }

  // Reports a missing required key at the mapping itself.
  const YamlNode* require(std::string_view name, std::string_view hint = {}) {
    const YamlNode* value = get(name);
    if (value == nullptr) {
      std::string message = "missing required key " + quote(name) + in_where();
      if (!hint.empty()) message += std::string(" (") + std::string(hint) + ")";
      c_.error(map_, std::move(message));
    }
    return value;
  }

  [[nodiscard]] std::string path(std::string_view name) const { return join(where_, name); }

 private:
  [[nodiscard]] std::size_t find(std::string_view name) const {
    std::size_t i = 0;
    while (i < count_ && allowed_[i] != name) ++i;
    return i;
  }
  [[nodiscard]] std::string in_where() const {
    return where_.empty() ? std::string(" at the top level") : " in " + std::string(where_);
  }
  [[nodiscard]] std::string allowed_list() const {
    std::string out;
    for (std::size_t i = 0; i < count_; ++i) {
      if (i > 0) out += ", ";
      out += allowed_[i];
    }
    return out;
  }

  Checker& c_;
  const YamlNode& map_;
  std::string_view where_;
  std::array<std::string_view, kMaxKeys> allowed_{};
  std::size_t count_ = 0;
  // One slot past the last allowed key stays null: get() of a name that is
  // not allowed finds it.
  std::array<const YamlNode*, kMaxKeys + 1> keys_{};
  std::array<const YamlNode*, kMaxKeys + 1> values_{};
};

// First occurrences of names, for "duplicate ... (first at L:C)" in linear
// time over 100k rules. Keys point into the YAML tree, which outlives it.
class NameIndex {
 public:
  // Returns "LINE:COL" of the first occurrence when `name` was seen before.
  std::optional<std::string> add(std::string_view name, const YamlNode& node) {
    auto [it, inserted] = first_.try_emplace(name, node.line, node.col);
    if (inserted) return std::nullopt;
    return std::to_string(it->second.first) + ":" + std::to_string(it->second.second);
  }
  [[nodiscard]] bool contains(std::string_view name) const { return first_.contains(name); }

 private:
  std::unordered_map<std::string_view, std::pair<int, int>> first_;
};

bool valid_listener_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

// Rule names show up in logs, metrics labels and test expectations next to
// "default" and "builtin:...": keep them short, plain and unambiguous.
constexpr std::size_t kMaxRuleName = 128;
bool valid_rule_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxRuleName &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-' || c == '.';
         });
}

// "host:port" for `forward`: a DNS name or an IP literal (IPv6 in brackets),
// port 1-65535. Returns the canonical text (name lowercased, trailing dot
// removed), or nullopt.
std::optional<std::string> canonical_forward(std::string_view text) {
  if (auto ep = Endpoint::parse(text)) return ep->to_string();
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const std::string_view host = text.substr(0, colon);
  const std::string_view port = text.substr(colon + 1);
  if (!is_digits(port) || port.size() > 5 || port.front() == '0') return std::nullopt;
  unsigned port_value = 0;
  for (char ch : port) port_value = port_value * 10 + static_cast<unsigned>(ch - '0');
  if (port_value > 65535) return std::nullopt;
  if (host.find(':') != std::string_view::npos || host.find('[') != std::string_view::npos)
    return std::nullopt;
  if (check_dns_name(host) != NameProblem::none) return std::nullopt;
  std::string out(host);
  if (out.back() == '.') out.pop_back();
  ascii_lowercase(out);
  return out + ":" + std::string(port);
}

// "IP[:port]" for dns.servers; port 53 when omitted.
std::optional<Endpoint> parse_dns_server(std::string_view text) {
  if (auto ip = IpAddress::parse(text)) return Endpoint{*ip, 53};
  if (text.size() > 2 && text.front() == '[' && text.back() == ']') {
    auto ip = IpAddress::parse(text.substr(1, text.size() - 2));
    if (ip && ip->is_v6()) return Endpoint{*ip, 53};
    return std::nullopt;
  }
  return Endpoint::parse(text);
}

class ConfigParser {
 public:
  explicit ConfigParser(Checker& c) : c_(c) {}

  void parse(const YamlNode& root, ConfigSpec& spec) {
    Fields f(c_, root, "",
             {"listeners", "admin", "access_log", "workers", "upstream", "timeouts", "limits",
              "dns", "tls", "kubernetes", "policy"});
    if (const YamlNode* n = f.require("listeners", "at least one listener")) listeners(*n, spec);
    if (const YamlNode* n = f.get("admin")) admin(*n, spec);
    if (const YamlNode* n = f.get("access_log")) access_log(*n, spec.access_log);
    if (const YamlNode* n = f.get("workers")) {
      if (auto v = c_.integer(*n, "workers", 0, kMaxWorkers))
        spec.workers = static_cast<unsigned>(*v);
    }
    if (const YamlNode* n = f.get("upstream")) upstream(*n, spec.upstream);
    if (const YamlNode* n = f.get("timeouts")) timeouts(*n, spec.timeouts);
    if (const YamlNode* n = f.get("limits")) limits(*n, spec.limits);
    if (const YamlNode* n = f.get("dns")) dns(*n, spec.dns);
    if (const YamlNode* n = f.get("tls")) tls(*n, spec.tls);
    // Before the policy, whatever the key order: identity selectors need it.
    if (const YamlNode* n = f.get("kubernetes")) kubernetes(*n, spec);
    if (const YamlNode* n = f.get("policy")) policy(*n, spec.policy);
  }

  // One test case; `check_names` also checks `listener` and `rule` against
  // the config (not possible for a CASES file on its own).
  void test_case(const YamlNode& node, const std::string& where, TestCase& t, bool check_names) {
    t.pos = c_.pos(node);
    if (!c_.expect(node, Kind::mapping, where, "a mapping (a test case)")) return;
    Fields f(c_, node, where,
             {"src", "dst", "host", "proto", "listener", "expect", "rule", "namespace", "labels",
              "namespace_labels"});
    if (const YamlNode* n = f.require("src")) {
      if (const std::string* text = c_.scalar(*n, f.path("src"), "an IP address")) {
        if (auto ip = IpAddress::parse(*text)) {
          t.src = *ip;
        } else {
          c_.error(*n, f.path("src") + ": invalid IP address " + quote(*text));
        }
      }
    }
    if (const YamlNode* n = f.require("dst")) {
      if (auto ep = c_.endpoint(*n, f.path("dst"))) t.dst = *ep;
    }
    if (const YamlNode* n = f.get("host")) {
      // Kept as written: a case may test how an invalid name is denied.
      if (const std::string* text = c_.scalar(*n, f.path("host"), "a name")) t.host = *text;
    }
    if (const YamlNode* n = f.get("proto")) {
      t.proto = c_.choice<Proto>(*n, f.path("proto"),
                                 {{"tls", Proto::tls},
                                  {"http", Proto::http},
                                  {"h2c", Proto::h2c},
                                  {"tcp", Proto::tcp},
                                  {"connect", Proto::connect}});
    }
    if (const YamlNode* n = f.get("listener")) {
      if (const std::string* text = c_.scalar(*n, f.path("listener"), "a listener name")) {
        t.listener = *text;
        if (check_names && !listener_names_.contains(*text))
          c_.error(*n, f.path("listener") + ": no listener is named " + quote(*text));
      }
    }
    if (const YamlNode* n = f.require("expect", "allow, deny or audit_deny")) {
      if (auto e = c_.choice<Expect>(*n, f.path("expect"),
                                     {{"allow", Expect::allow},
                                      {"deny", Expect::deny},
                                      {"audit_deny", Expect::audit_deny}}))
        t.expect = *e;
    }
    if (const YamlNode* n = f.get("rule")) {
      if (const std::string* text = c_.scalar(*n, f.path("rule"), "a rule name")) {
        t.rule = *text;
        if (check_names && *text != "default" && !text->starts_with("builtin:") &&
            !rule_names_.contains(*text))
          c_.error(*n, f.path("rule") + ": no rule is named " + quote(*text) +
                           " (expected a rule name, default or builtin:...)");
      }
    }
    // The source pod (identity selectors): its namespace, its labels and
    // its namespace's labels. Without `namespace` the source is a pod-less IP.
    if (const YamlNode* n = f.get("namespace")) {
      if (const std::string* text = c_.scalar(*n, f.path("namespace"), "a namespace name")) {
        if (auto why = namespace_name_problem(*text)) {
          c_.error(*n, f.path("namespace") + ": invalid namespace " + quote(*text) + ": " + *why);
        } else {
          t.namespace_name = *text;
        }
      }
    }
    if (const YamlNode* n = f.get("labels")) t.labels = label_map(*n, f.path("labels"));
    if (const YamlNode* n = f.get("namespace_labels"))
      t.namespace_labels = label_map(*n, f.path("namespace_labels"));
    if (!t.namespace_name) {
      for (const char* key : {"labels", "namespace_labels"}) {
        if (const YamlNode* k = f.key(key))
          c_.error(*k, f.path(key) + ": a source pod's labels need its `namespace`");
      }
    } else {
      // A namespace always carries its own name as a label.
      t.namespace_labels.emplace_back(std::string(kNamespaceNameLabel), *t.namespace_name);
      normalize_labels(t.namespace_labels);
    }
  }

  // A mapping of Kubernetes labels (key: value), every key and value checked.
  Labels label_map(const YamlNode& node, const std::string& where) {
    Labels out;
    if (!c_.expect(node, Kind::mapping, where, "a mapping of labels (key: value)")) return out;
    for (std::size_t i = 0; i + 1 < node.children.size(); i += 2) {
      const YamlNode& key = node.children[i];
      const YamlNode& value = node.children[i + 1];
      const std::string* k = c_.scalar(key, where, "a label key");
      if (k == nullptr) continue;
      const std::string item = where + "." + *k;
      if (auto why = label_key_problem(*k)) {
        c_.error(key, where + ": invalid label key " + quote(*k) + ": " + *why);
        continue;
      }
      bool duplicate = false;
      for (const auto& kv : out) duplicate = duplicate || kv.first == *k;
      if (duplicate) {
        c_.error(key, where + ": duplicate label key " + quote(*k));
        continue;
      }
      std::string text;
      if (value.kind == Kind::null) {
        text = "";  // `key:` with nothing: the empty value
      } else if (const std::string* v = c_.scalar(value, item, "a label value")) {
        text = *v;
      } else {
        continue;
      }
      if (auto why = label_value_problem(text)) {
        c_.error(value, item + ": invalid label value " + quote(text) + ": " + *why);
        continue;
      }
      out.emplace_back(*k, std::move(text));
    }
    normalize_labels(out);
    return out;
  }

 private:
  static constexpr std::uint64_t kMaxWorkers = 1024;
  bool has_kubernetes_ = false;

  void listeners(const YamlNode& node, ConfigSpec& spec) {
    const auto* items = c_.list(node, "listeners");
    if (items == nullptr) return;
    if (items->empty()) {
      c_.error(node, "listeners: at least one listener is required");
      return;
    }
    spec.listeners.reserve(items->size());
    for (std::size_t i = 0; i < items->size(); ++i) {
      ListenerSpec l;
      listener((*items)[i], index("listeners", i), l);
      spec.listeners.push_back(std::move(l));
    }
  }

  void listener(const YamlNode& node, const std::string& where, ListenerSpec& l) {
    l.pos = c_.pos(node);
    if (!c_.expect(node, Kind::mapping, where, "a mapping (a listener)")) return;
    Fields f(c_, node, where, {"name", "address", "mode", "proxy_protocol", "forward"});
    if (const YamlNode* n = f.require("name")) {
      if (const std::string* text = c_.scalar(*n, f.path("name"), "a name")) {
        if (!valid_listener_name(*text)) {
          c_.error(*n, f.path("name") + ": invalid listener name " + quote(*text) +
                           " (use lowercase letters, digits, '_' and '-')");
        } else if (auto first = listener_names_.add(*text, *n)) {
          c_.error(*n, f.path("name") + ": duplicate listener name " + quote(*text) +
                           " (first at " + *first + ")");
        }
        l.name = *text;
      }
    }
    if (const YamlNode* n = f.require("address")) {
      if (auto ep = c_.endpoint(*n, f.path("address"))) {
        l.address = *ep;
        for (const auto& [other, pos] : listener_addresses_) {
          if (other == *ep) {
            c_.error(*n, f.path("address") + ": " + ep->to_string() +
                             " is already the address of another listener (at " + at(pos) + ")");
            break;
          }
        }
        listener_addresses_.emplace_back(*ep, c_.pos(*n));
      }
    }
    if (const YamlNode* n = f.get("mode")) {
      if (auto m = c_.choice<ListenerMode>(*n, f.path("mode"),
                                           {{"redirect", ListenerMode::redirect},
                                            {"tproxy", ListenerMode::tproxy},
                                            {"explicit", ListenerMode::explicit_proxy}}))
        l.mode = *m;
    }
    if (const YamlNode* n = f.get("proxy_protocol")) {
      const std::string pp_where = f.path("proxy_protocol");
      if (c_.expect(*n, Kind::mapping, pp_where, "a mapping with 'trusted'")) {
        Fields pf(c_, *n, pp_where, {"trusted"});
        ProxyProtocolSpec pp;
        if (const YamlNode* t = pf.require("trusted", "the peers allowed to send PROXY headers"))
          pp.trusted = cidr_list(*t, pf.path("trusted"));
        l.proxy_protocol = std::move(pp);
      }
    }
    if (const YamlNode* n = f.get("forward")) {
      if (const std::string* text = c_.scalar(*n, f.path("forward"), "\"host:port\"")) {
        if (auto target = canonical_forward(*text)) {
          l.forward = std::move(*target);
        } else {
          c_.error(*n, f.path("forward") + ": invalid target " + quote(*text) +
                           " (expected \"host:port\", port 1-65535)");
        }
      }
      if (l.mode != ListenerMode::redirect) {
        const YamlNode* key = f.key("forward");
        c_.error(*key, f.path("forward") + ": only a redirect listener can forward");
      }
      if (f.get("proxy_protocol") != nullptr) {
        const YamlNode* key = f.key("forward");
        c_.error(*key, f.path("forward") +
                           ": a node agent (forward) cannot also read PROXY headers "
                           "(proxy_protocol); use two listeners");
      }
    }
  }

  std::vector<Cidr> cidr_list(const YamlNode& node, const std::string& where) {
    std::vector<Cidr> out;
    const auto* items = c_.list(node, where);
    if (items == nullptr) return out;
    if (items->empty()) {
      c_.error(node, where + ": an empty list matches nothing; list at least one CIDR block");
      return out;
    }
    out.reserve(items->size());
    for (std::size_t i = 0; i < items->size(); ++i) {
      if (auto block = c_.cidr((*items)[i], index(where, i))) out.push_back(*block);
    }
    return out;
  }

  void admin(const YamlNode& node, ConfigSpec& spec) {
    if (!c_.expect(node, Kind::mapping, "admin", "a mapping")) return;
    Fields f(c_, node, "admin", {"address"});
    if (const YamlNode* n = f.get("address")) {
      if (auto ep = c_.endpoint(*n, "admin.address")) {
        spec.admin.address = *ep;
        for (const auto& [other, pos] : listener_addresses_) {
          if (other == *ep) {
            c_.error(*n, "admin.address: " + ep->to_string() +
                             " is already the address of a listener (at " + at(pos) + ")");
            break;
          }
        }
      }
    }
  }

  void access_log(const YamlNode& node, AccessLogSpec& spec) {
    if (!c_.expect(node, Kind::mapping, "access_log", "a mapping")) return;
    Fields f(c_, node, "access_log", {"path", "on_full"});
    if (const YamlNode* n = f.get("path")) {
      if (const std::string* text = c_.scalar(*n, "access_log.path", "a path or \"-\"")) {
        if (text->empty() || text->find('\0') != std::string::npos) {
          c_.error(*n, "access_log.path: expected a file path or \"-\" for stdout");
        } else {
          spec.path = *text;
        }
      }
    }
    if (const YamlNode* n = f.get("on_full")) {
      if (auto v = c_.choice<OnFull>(*n, "access_log.on_full",
                                     {{"block", OnFull::block}, {"drop", OnFull::drop}}))
        spec.on_full = *v;
    }
  }

  void upstream(const YamlNode& node, UpstreamSpec& spec) {
    if (!c_.expect(node, Kind::mapping, "upstream", "a mapping")) return;
    Fields f(c_, node, "upstream", {"mark"});
    if (const YamlNode* n = f.get("mark")) {
      if (auto v = c_.integer(*n, "upstream.mark", 0, UINT32_MAX))
        spec.mark = static_cast<std::uint32_t>(*v);
    }
  }

  void timeouts(const YamlNode& node, TimeoutsSpec& spec) {
    if (!c_.expect(node, Kind::mapping, "timeouts", "a mapping")) return;
    Fields f(c_, node, "timeouts", {"sniff", "connect", "idle", "drain_delay", "drain"});
    // A zero sniff/connect/idle timeout would close every flow at once;
    // zero drain phases are meaningful (stop at once).
    struct Item {
      std::string_view key;
      Duration* out;
      bool allow_zero;
    };
    for (const Item& item :
         {Item{"sniff", &spec.sniff, false}, Item{"connect", &spec.connect, false},
          Item{"idle", &spec.idle, false}, Item{"drain_delay", &spec.drain_delay, true},
          Item{"drain", &spec.drain, true}}) {
      if (const YamlNode* n = f.get(item.key)) {
        if (auto d = c_.duration(*n, f.path(item.key), item.allow_zero)) *item.out = *d;
      }
    }
  }

  void limits(const YamlNode& node, LimitsSpec& spec) {
    if (!c_.expect(node, Kind::mapping, "limits", "a mapping")) return;
    Fields f(c_, node, "limits", {"max_connections", "max_connections_per_source"});
    if (const YamlNode* n = f.get("max_connections")) {
      if (auto v = c_.integer(*n, "limits.max_connections", 0, UINT32_MAX))
        spec.max_connections = static_cast<std::uint32_t>(*v);
    }
    if (const YamlNode* n = f.get("max_connections_per_source")) {
      if (auto v = c_.integer(*n, "limits.max_connections_per_source", 0, UINT32_MAX))
        spec.max_connections_per_source = static_cast<std::uint32_t>(*v);
    }
  }

  void dns(const YamlNode& node, DnsSpec& spec) {
    if (!c_.expect(node, Kind::mapping, "dns", "a mapping")) return;
    Fields f(c_, node, "dns", {"servers", "timeout", "verify_window"});
    if (const YamlNode* n = f.get("servers")) {
      if (const auto* items = c_.list(*n, "dns.servers")) {
        for (std::size_t i = 0; i < items->size(); ++i) {
          const std::string where = index("dns.servers", i);
          const YamlNode& item = (*items)[i];
          const std::string* text = c_.scalar(item, where, "\"IP[:port]\"");
          if (text == nullptr) continue;
          if (auto ep = parse_dns_server(*text)) {
            spec.servers.push_back(*ep);
          } else {
            c_.error(item, where + ": invalid DNS server " + quote(*text) +
                               " (expected \"IP\", \"IPv4:port\" or \"[IPv6]:port\")");
          }
        }
      }
    }
    if (const YamlNode* n = f.get("timeout")) {
      if (auto d = c_.duration(*n, "dns.timeout", false)) spec.timeout = *d;
    }
    if (const YamlNode* n = f.get("verify_window")) {
      if (auto d = c_.duration(*n, "dns.verify_window", true)) spec.verify_window = *d;
    }
  }

  void kubernetes(const YamlNode& node, ConfigSpec& spec) {
    KubernetesSpec k;
    k.pos = c_.pos(node);
    spec.kubernetes = k;  // present even when empty (`kubernetes: {}`)
    if (node.kind == Kind::null) return;
    if (!c_.expect(node, Kind::mapping, "kubernetes", "a mapping")) return;
    Fields f(c_, node, "kubernetes", {"kubeconfig", "sync_timeout"});
    if (const YamlNode* n = f.get("kubeconfig")) {
      if (const std::string* text = c_.scalar(*n, "kubernetes.kubeconfig", "a path"))
        spec.kubernetes->kubeconfig = *text;
    }
    if (const YamlNode* n = f.get("sync_timeout")) {
      if (auto d = c_.duration(*n, "kubernetes.sync_timeout", false))
        spec.kubernetes->sync_timeout = *d;
    }
    has_kubernetes_ = true;
  }

  // `from`: CIDR blocks (scalars) and identity selectors (mappings), OR-ed.
  void from_list(const YamlNode& node, const std::string& where, RuleSpec& r) {
    const auto* items = c_.list(node, where);
    if (items == nullptr) return;
    if (items->empty()) {
      c_.error(node, where +
                         ": an empty list matches nothing; list CIDR blocks or identity "
                         "selectors, or leave `from` out for any source");
      return;
    }
    for (std::size_t i = 0; i < items->size(); ++i) {
      const YamlNode& item = (*items)[i];
      const std::string item_where = index(where, i);
      if (item.kind == Kind::mapping) {
        IdentitySelector sel;
        if (identity(item, item_where, sel)) r.from_identities.push_back(std::move(sel));
      } else if (auto block = c_.cidr(item, item_where)) {
        r.from.push_back(*block);
      }
    }
  }

  // One identity selector (a NetworkPolicy peer): namespace, or
  // namespaceSelector and/or podSelector.
  bool identity(const YamlNode& node, const std::string& where, IdentitySelector& sel) {
    sel.pos = c_.pos(node);
    Fields f(c_, node, where, {"namespace", "namespaceSelector", "podSelector"});
    const YamlNode* ns = f.get("namespace");
    const YamlNode* ns_sel = f.get("namespaceSelector");
    const YamlNode* pod_sel = f.get("podSelector");
    if (!has_kubernetes_) {
      c_.error(node, where +
                         ": identity selectors need a `kubernetes:` section (pod identity "
                         "comes from the Kubernetes API)");
    }
    if (ns == nullptr && ns_sel == nullptr && pod_sel == nullptr) {
      c_.error(node, where +
                         ": an identity selector needs namespace, namespaceSelector or "
                         "podSelector");
      return false;
    }
    if (ns != nullptr && ns_sel != nullptr) {
      c_.error(*f.key("namespaceSelector"),
               where + ": give either namespace or namespaceSelector, not both");
      return false;
    }
    if (ns != nullptr) {
      const std::string* text = c_.scalar(*ns, f.path("namespace"), "a namespace name");
      if (text == nullptr) return false;
      if (auto why = namespace_name_problem(*text)) {
        c_.error(*ns, f.path("namespace") + ": invalid namespace " + quote(*text) + ": " + *why);
        return false;
      }
      LabelSelector s;
      s.requirements.push_back(
          {std::string(kNamespaceNameLabel), LabelRequirement::Operator::in, {*text}});
      sel.namespace_selector = std::move(s);
    }
    if (ns_sel != nullptr) {
      sel.namespace_selector = label_selector(*ns_sel, f.path("namespaceSelector"));
      if (!sel.namespace_selector) return false;
    }
    if (pod_sel != nullptr) {
      sel.pod_selector = label_selector(*pod_sel, f.path("podSelector"));
      if (!sel.pod_selector) return false;
    }
    return true;
  }

  // A LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists,
  // DoesNotExist), every key and value checked; `{}` selects everything.
  std::optional<LabelSelector> label_selector(const YamlNode& node, const std::string& where) {
    if (node.kind == Kind::null) return LabelSelector{};
    if (!c_.expect(node, Kind::mapping, where, "a label selector (matchLabels, matchExpressions)"))
      return std::nullopt;
    Fields f(c_, node, where, {"matchLabels", "matchExpressions"});
    LabelSelector out;
    bool ok = true;
    if (const YamlNode* n = f.get("matchLabels")) {
      const std::size_t before = c_.error_count();
      for (auto& [k, v] : label_map(*n, f.path("matchLabels"))) {
        out.requirements.push_back({k, LabelRequirement::Operator::in, {v}});
      }
      ok = ok && c_.error_count() == before;
    }
    if (const YamlNode* n = f.get("matchExpressions")) {
      const std::string ex_where = f.path("matchExpressions");
      if (const auto* items = c_.list(*n, ex_where)) {
        for (std::size_t i = 0; i < items->size(); ++i) {
          if (auto req = label_requirement((*items)[i], index(ex_where, i))) {
            out.requirements.push_back(std::move(*req));
          } else {
            ok = false;
          }
        }
      } else {
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    std::stable_sort(out.requirements.begin(), out.requirements.end(),
                     [](const auto& a, const auto& b) { return a.key < b.key; });
    return out;
  }

  std::optional<LabelRequirement> label_requirement(const YamlNode& node,
                                                    const std::string& where) {
    if (!c_.expect(node, Kind::mapping, where, "a mapping (key, operator, values)"))
      return std::nullopt;
    Fields f(c_, node, where, {"key", "operator", "values"});
    LabelRequirement req;
    bool ok = true;
    if (const YamlNode* n = f.require("key")) {
      if (const std::string* text = c_.scalar(*n, f.path("key"), "a label key")) {
        if (auto why = label_key_problem(*text)) {
          c_.error(*n, f.path("key") + ": invalid label key " + quote(*text) + ": " + *why);
          ok = false;
        }
        req.key = *text;
      } else {
        ok = false;
      }
    } else {
      ok = false;
    }
    if (const YamlNode* n = f.require("operator", "In, NotIn, Exists or DoesNotExist")) {
      using Op = LabelRequirement::Operator;
      if (auto op = c_.choice<Op>(*n, f.path("operator"),
                                  {{"In", Op::in},
                                   {"NotIn", Op::not_in},
                                   {"Exists", Op::exists},
                                   {"DoesNotExist", Op::does_not_exist}})) {
        req.op = *op;
      } else {
        ok = false;
      }
    } else {
      ok = false;
    }
    const YamlNode* values = f.get("values");
    if (values != nullptr) {
      if (const auto* items = c_.list(*values, f.path("values"))) {
        for (std::size_t i = 0; i < items->size(); ++i) {
          const std::string vw = index(f.path("values"), i);
          if (const std::string* text = c_.scalar((*items)[i], vw, "a label value")) {
            if (auto why = label_value_problem(*text)) {
              c_.error((*items)[i], vw + ": invalid label value " + quote(*text) + ": " + *why);
              ok = false;
            }
            req.values.push_back(*text);
          } else {
            ok = false;
          }
        }
      } else {
        ok = false;
      }
    }
    if (!ok) return std::nullopt;
    const bool set_op =
        req.op == LabelRequirement::Operator::in || req.op == LabelRequirement::Operator::not_in;
    if (set_op && req.values.empty()) {
      c_.error(node, where + ": In and NotIn need a non-empty `values` list");
      return std::nullopt;
    }
    if (!set_op && values != nullptr) {
      c_.error(*f.key("values"), where + ": Exists and DoesNotExist take no `values`");
      return std::nullopt;
    }
    std::sort(req.values.begin(), req.values.end());
    req.values.erase(std::unique(req.values.begin(), req.values.end()), req.values.end());
    return req;
  }

  void tls(const YamlNode& node, TlsSpec& spec) {
    if (!c_.expect(node, Kind::mapping, "tls", "a mapping")) return;
    Fields f(c_, node, "tls", {"require_sni", "ech"});
    if (const YamlNode* n = f.get("require_sni")) {
      if (auto b = c_.boolean(*n, "tls.require_sni")) spec.require_sni = *b;
    }
    if (const YamlNode* n = f.get("ech")) {
      if (auto v = c_.choice<EchMode>(*n, "tls.ech",
                                      {{"outer", EchMode::outer}, {"deny", EchMode::deny}}))
        spec.ech = *v;
    }
  }

  void policy(const YamlNode& node, PolicySpec& spec) {
    if (!c_.expect(node, Kind::mapping, "policy", "a mapping")) return;
    Fields f(c_, node, "policy", {"mode", "default", "revoke_on_reload", "rules", "tests"});
    if (const YamlNode* n = f.get("mode")) {
      if (auto m = c_.choice<PolicyMode>(
              *n, "policy.mode", {{"enforce", PolicyMode::enforce}, {"audit", PolicyMode::audit}}))
        spec.mode = *m;
    }
    if (const YamlNode* n = f.get("default")) {
      if (auto a = c_.choice<Action>(*n, "policy.default",
                                     {{"deny", Action::deny}, {"allow", Action::allow}}))
        spec.default_action = *a;
    }
    if (const YamlNode* n = f.get("revoke_on_reload")) {
      if (auto b = c_.boolean(*n, "policy.revoke_on_reload")) spec.revoke_on_reload = *b;
    }
    if (const YamlNode* n = f.get("rules")) {
      if (const auto* items = c_.list(*n, "policy.rules")) {
        spec.rules.reserve(items->size());
        for (std::size_t i = 0; i < items->size(); ++i) {
          RuleSpec r;
          rule((*items)[i], index("policy.rules", i), r);
          spec.rules.push_back(std::move(r));
        }
      }
    }
    // After the rules, whatever the key order, so `rule:` can be checked.
    if (const YamlNode* n = f.get("tests")) {
      if (const auto* items = c_.list(*n, "policy.tests")) {
        spec.tests.reserve(items->size());
        for (std::size_t i = 0; i < items->size(); ++i) {
          TestCase t;
          test_case((*items)[i], index("policy.tests", i), t, true);
          spec.tests.push_back(std::move(t));
        }
      }
    }
  }

  void rule(const YamlNode& node, const std::string& where, RuleSpec& r) {
    r.pos = c_.pos(node);
    if (!c_.expect(node, Kind::mapping, where, "a mapping (a rule)")) return;
    Fields f(c_, node, where, {"name", "action", "from", "to", "mode", "until"});
    if (const YamlNode* n = f.require("name")) {
      if (const std::string* text = c_.scalar(*n, f.path("name"), "a name")) {
        if (!valid_rule_name(*text) || *text == "default") {
          c_.error(*n, f.path("name") + ": invalid rule name " + quote(*text) +
                           " (use 1-128 letters, digits, '_', '-' and '.'; 'default' is reserved)");
        } else if (auto first = rule_names_.add(*text, *n)) {
          c_.error(*n, f.path("name") + ": duplicate rule name " + quote(*text) + " (first at " +
                           *first + ")");
        }
        r.name = *text;
      }
    }
    if (const YamlNode* n = f.get("action")) {
      if (auto a = c_.choice<Action>(*n, f.path("action"),
                                     {{"allow", Action::allow}, {"deny", Action::deny}}))
        r.action = *a;
    }
    if (const YamlNode* n = f.get("from")) from_list(*n, f.path("from"), r);
    if (const YamlNode* n = f.require("to", "a list of host or cidr entries")) {
      const std::string to_where = f.path("to");
      if (const auto* items = c_.list(*n, to_where)) {
        if (items->empty()) c_.error(*n, to_where + ": a rule needs at least one entry");
        r.to.reserve(items->size());
        for (std::size_t i = 0; i < items->size(); ++i) {
          ToSpec t;
          to_entry((*items)[i], index(to_where, i), t);
          r.to.push_back(std::move(t));
        }
      }
    }
    if (const YamlNode* n = f.get("mode")) {
      r.mode = c_.choice<PolicyMode>(
          *n, f.path("mode"), {{"enforce", PolicyMode::enforce}, {"audit", PolicyMode::audit}});
    }
    if (const YamlNode* n = f.get("until")) {
      r.until = c_.date(*n, f.path("until"));
      if (r.until) {
        if (f.get("mode") == nullptr) {
          c_.warning(*n, f.path("until") +
                             ": has no effect without 'mode' (it ends the rule's "
                             "mode override)");
        } else if (*r.until < c_.today()) {
          c_.warning(*n, f.path("until") + ": " + quote(n->value) +
                             " has passed; the rule's mode override no longer applies");
        }
      }
    }
  }

  void to_entry(const YamlNode& node, const std::string& where, ToSpec& t) {
    t.pos = c_.pos(node);
    if (!c_.expect(node, Kind::mapping, where, "a mapping with host or cidr")) return;
    Fields f(c_, node, where, {"host", "cidr", "ports", "destination"});
    const YamlNode* host = f.get("host");
    const YamlNode* cidr = f.get("cidr");
    if (host != nullptr && cidr != nullptr) {
      c_.error(node, where + ": has both host and cidr; an entry has exactly one");
    } else if (host == nullptr && cidr == nullptr) {
      c_.error(node, where + ": needs a host or a cidr");
    }
    if (host != nullptr) {
      if (const std::string* text = c_.scalar(*host, f.path("host"), "a host name")) {
        HostPatternResult h = canonicalize_host_pattern(*text);
        if (h.pattern) {
          const std::string& p = *h.pattern;
          if (p.starts_with("*") && p.find('.', p.find('.') + 1) == std::string::npos)
            c_.warning(*host, f.path("host") + ": " + quote(*text) +
                                  " matches names directly under a top-level domain");
          t.host = std::move(h.pattern);
        } else {
          c_.error(*host, f.path("host") + ": invalid host " + quote(*text) + ": " + h.error);
        }
      }
    }
    if (cidr != nullptr) t.cidr = c_.cidr(*cidr, f.path("cidr"));
    if (const YamlNode* n = f.get("ports")) {
      ports(*n, f.path("ports"), t.ports);
    } else if (host != nullptr) {
      // Contract rule 11: only flows no host entry could match skip waiting
      // for client bytes.
      c_.warning(*host, where +
                            ": host entry without ports: every port waits for client bytes, so "
                            "server-first protocols (SMTP, MySQL, SSH) through cidr rules will "
                            "wait for timeouts.sniff; add ports");
    }
    if (const YamlNode* n = f.get("destination")) {
      if (host == nullptr) {
        c_.error(*f.key("destination"),
                 f.path("destination") +
                     ": only a host entry has a destination check; a cidr entry matches the "
                     "address itself");
      }
      if (auto d = c_.choice<Integrity>(*n, f.path("destination"),
                                        {{"verify", Integrity::verify},
                                         {"resolve", Integrity::resolve},
                                         {"trust", Integrity::trust}})) {
        t.destination = *d;
        if (*d == Integrity::trust && host != nullptr)
          c_.warning(*n, f.path("destination") +
                             ": trust uses the client's destination address unchecked; a client "
                             "can reach any address by sending an allowed name");
      }
    }
  }

  void ports(const YamlNode& node, const std::string& where, std::vector<PortRange>& out) {
    const auto* items = c_.list(node, where);
    if (items == nullptr) return;
    if (items->empty()) {
      c_.error(node, where + ": an empty list matches no port; omit ports to match any port");
      return;
    }
    out.reserve(items->size());
    for (std::size_t i = 0; i < items->size(); ++i) {
      const YamlNode& item = (*items)[i];
      const std::string item_where = index(where, i);
      const std::string* text = c_.scalar(item, item_where, "a port or a range \"a-b\"");
      if (text == nullptr) continue;
      auto port = [](std::string_view s) -> std::optional<std::uint16_t> {
        if (!is_digits(s) || s.size() > 5) return std::nullopt;
        unsigned v = 0;
        for (char ch : s) v = v * 10 + static_cast<unsigned>(ch - '0');
        if (v < 1 || v > 65535) return std::nullopt;
        return static_cast<std::uint16_t>(v);
      };
      const std::string_view s = *text;
      const auto dash = s.find('-');
      if (dash == std::string_view::npos) {
        if (auto p = port(s)) {
          out.push_back(PortRange{*p, *p});
        } else {
          c_.error(item, item_where + ": invalid port " + quote(s) +
                             " (expected 1-65535 or a range \"a-b\")");
        }
        continue;
      }
      const auto first = port(s.substr(0, dash));
      const auto last = port(s.substr(dash + 1));
      if (!first || !last) {
        c_.error(item, item_where + ": invalid port range " + quote(s) +
                           " (expected \"a-b\" with ports 1-65535)");
      } else if (*first > *last) {
        c_.error(item, item_where + ": invalid port range " + quote(s) +
                           " (the first port is greater than the last)");
      } else {
        out.push_back(PortRange{*first, *last});
      }
    }
  }

  Checker& c_;
  NameIndex listener_names_;
  NameIndex rule_names_;
  std::vector<std::pair<Endpoint, SourcePos>> listener_addresses_;
};

bool has_error(const std::vector<Diagnostic>& diagnostics) {
  return std::any_of(diagnostics.begin(), diagnostics.end(),
                     [](const Diagnostic& d) { return d.severity == Diagnostic::Severity::error; });
}

void sort_by_position(std::vector<Diagnostic>& diagnostics) {
  std::stable_sort(diagnostics.begin(), diagnostics.end(),
                   [](const Diagnostic& a, const Diagnostic& b) {
                     return std::pair(a.pos.line, a.pos.col) < std::pair(b.pos.line, b.pos.col);
                   });
}

Diagnostic file_error(std::string_view file, std::string message) {
  return Diagnostic{Diagnostic::Severity::error, SourcePos{std::string(file), 0, 0},
                    std::move(message)};
}

std::optional<Diagnostic> too_big(std::string_view text, std::string_view file) {
  if (text.size() <= kMaxConfigBytes) return std::nullopt;
  return file_error(file, "larger than " + std::to_string(kMaxConfigBytes >> 20) + " MiB (" +
                              std::to_string(text.size()) + " bytes)");
}

std::chrono::sys_days today_utc() {
  return std::chrono::floor<std::chrono::days>(std::chrono::system_clock::now());
}

// Reads a whole file, at most kMaxConfigBytes + 1 bytes (enough to tell
// that it is too big). Returns the error sentence on failure.
std::optional<std::string> read_file(const std::string& path, std::string& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open: ") + std::strerror(errno);
  std::array<char, 65536> buffer{};
  std::optional<std::string> error;
  while (out.size() <= kMaxConfigBytes) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      error = std::string("cannot read: ") + std::strerror(errno);
      break;
    }
    if (n == 0) break;
    out.append(buffer.data(), static_cast<std::size_t>(n));
  }
  ::close(fd);
  return error;
}

}  // namespace

std::string Diagnostic::to_string() const {
  std::string out = pos.file;
  if (pos.line > 0) {
    out += ':';
    out += std::to_string(pos.line);
    out += ':';
    out += std::to_string(pos.col);
  }
  out += ": ";
  if (severity == Severity::warning) out += "warning: ";
  out += message;
  return out;
}

bool TestCasesResult::ok() const noexcept {
  return !has_error(diagnostics);
}

LoadResult load_config_text(std::string_view yaml, std::string_view file) {
  return load_config_text(yaml, file, LoadOptions{});
}

LoadResult load_config_text(std::string_view yaml, std::string_view file,
                            const LoadOptions& options) {
  LoadResult result;
  if (auto d = too_big(yaml, file)) {
    result.diagnostics.push_back(std::move(*d));
    return result;
  }
  std::optional<YamlNode> root = detail::parse_yaml(yaml, file, result.diagnostics);
  Checker checker(file, result.diagnostics, options.today.value_or(today_utc()));
  if (!root || root->kind == Kind::null) {
    if (result.diagnostics.empty())
      result.diagnostics.push_back(
          file_error(file, "the configuration is empty (expected a mapping with 'listeners')"));
  } else if (root->kind != Kind::mapping) {
    checker.expect(*root, Kind::mapping, "the configuration", "a mapping of settings");
  } else {
    ConfigSpec spec;
    spec.file = std::string(file);
    ConfigParser(checker).parse(*root, spec);
    if (!has_error(result.diagnostics)) result.config = std::move(spec);
  }
  sort_by_position(result.diagnostics);
  return result;
}

LoadResult load_config_file(const std::string& path) {
  return load_config_file(path, LoadOptions{});
}

LoadResult load_config_file(const std::string& path, const LoadOptions& options) {
  std::string text;
  if (auto error = read_file(path, text)) {
    LoadResult result;
    result.diagnostics.push_back(file_error(path, std::move(*error)));
    return result;
  }
  return load_config_text(text, path, options);
}

TestCasesResult load_test_cases_text(std::string_view yaml, std::string_view file) {
  TestCasesResult result;
  if (auto d = too_big(yaml, file)) {
    result.diagnostics.push_back(std::move(*d));
    return result;
  }
  std::optional<YamlNode> root = detail::parse_yaml(yaml, file, result.diagnostics);
  Checker checker(file, result.diagnostics, today_utc());
  if (!root || root->kind == Kind::null) {
    if (result.diagnostics.empty())
      result.diagnostics.push_back(file_error(file, "empty (expected a list of test cases)"));
  } else if (checker.expect(*root, Kind::sequence, "the test cases file", "a list of test cases")) {
    ConfigParser parser(checker);
    result.cases.reserve(root->children.size());
    for (std::size_t i = 0; i < root->children.size(); ++i) {
      TestCase t;
      parser.test_case(root->children[i], index("", i), t, false);
      result.cases.push_back(std::move(t));
    }
  }
  sort_by_position(result.diagnostics);
  if (has_error(result.diagnostics)) result.cases.clear();
  return result;
}

TestCasesResult load_test_cases_file(const std::string& path) {
  std::string text;
  if (auto error = read_file(path, text)) {
    TestCasesResult result;
    result.diagnostics.push_back(file_error(path, std::move(*error)));
    return result;
  }
  return load_test_cases_text(text, path);
}

}  // namespace egressd::config
