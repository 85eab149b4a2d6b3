// The loader over whole documents: the contract's example, fixtures with
// every kind of mistake (exact FILE:LINE:COL messages), and table-driven
// snippets for each check.

#include "egressd/config/loader.hpp"

#include <chrono>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace egressd::config {
namespace {

using std::chrono::milliseconds;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

const std::string kTestdata = std::string(EGRESSD_TESTDATA_DIR) + "/config/";

// A fixed "today", so the contract example's `until: 2026-12-31` never
// turns into a "has passed" warning as the calendar moves on.
LoadOptions fixed_today() {
  LoadOptions options;
  options.today = std::chrono::sys_days{std::chrono::year{2026} / 11 / 26};
  return options;
}

std::vector<std::string> render(const std::vector<Diagnostic>& diagnostics) {
  std::vector<std::string> out;
  out.reserve(diagnostics.size());
  for (const auto& d : diagnostics) out.push_back(d.to_string());
  return out;
}

LoadResult load_fixture(const std::string& name) {
  return load_config_file(kTestdata + name, fixed_today());
}

std::string fixture_path(const std::string& name) {
  return kTestdata + name;
}

Cidr cidr(std::string_view text) {
  return *Cidr::parse(text);
}
Endpoint endpoint(std::string_view text) {
  return *Endpoint::parse(text);
}

TEST(ContractExample, LoadsWithOnlyTheRule11Warnings) {
  const LoadResult r = load_fixture("contract_example.yaml");
  const std::string f = fixture_path("contract_example.yaml");
  const std::string rule11 =
      ": host entry without ports: every port waits for client bytes, so server-first protocols "
      "(SMTP, MySQL, SSH) through cidr rules will wait for timeouts.sniff; add ports";
  EXPECT_THAT(render(r.diagnostics),
              ElementsAre(f + ":60:17: warning: policy.rules[0].to[0]" + rule11,
                          f + ":63:17: warning: policy.rules[0].to[2]" + rule11));
  ASSERT_TRUE(r.ok());
  const ConfigSpec& c = *r.config;
  EXPECT_EQ(c.file, f);

  ASSERT_EQ(c.listeners.size(), 3U);
  EXPECT_EQ(c.listeners[0].name, "transparent");
  EXPECT_EQ(c.listeners[0].address, endpoint("0.0.0.0:15001"));
  EXPECT_EQ(c.listeners[0].mode, ListenerMode::redirect);
  EXPECT_EQ(c.listeners[0].pos.line, 2);
  EXPECT_EQ(c.listeners[0].pos.col, 5);
  EXPECT_EQ(c.listeners[1].name, "proxy");
  EXPECT_EQ(c.listeners[1].mode, ListenerMode::explicit_proxy);
  EXPECT_FALSE(c.listeners[1].proxy_protocol.has_value());
  EXPECT_EQ(c.listeners[2].name, "from-nodes");
  ASSERT_TRUE(c.listeners[2].proxy_protocol.has_value());
  EXPECT_EQ(c.listeners[2].proxy_protocol->trusted, std::vector<Cidr>{cidr("10.0.0.0/16")});
  EXPECT_FALSE(c.listeners[2].forward.has_value());

  EXPECT_EQ(c.admin.address, endpoint("0.0.0.0:9901"));
  EXPECT_EQ(c.access_log.path, "-");
  EXPECT_EQ(c.access_log.on_full, OnFull::block);
  EXPECT_EQ(c.workers, 0U);
  EXPECT_EQ(c.upstream.mark, 0U);
  EXPECT_EQ(c.timeouts.sniff, milliseconds{5'000});
  EXPECT_EQ(c.timeouts.connect, milliseconds{5'000});
  EXPECT_EQ(c.timeouts.idle, milliseconds{300'000});
  EXPECT_EQ(c.timeouts.drain_delay, milliseconds{5'000});
  EXPECT_EQ(c.timeouts.drain, milliseconds{25'000});
  EXPECT_EQ(c.limits.max_connections, 0U);
  EXPECT_EQ(c.limits.max_connections_per_source, 0U);
  EXPECT_TRUE(c.dns.servers.empty());
  EXPECT_EQ(c.dns.timeout, milliseconds{2'000});
  EXPECT_EQ(c.dns.verify_window, milliseconds{300'000});
  EXPECT_TRUE(c.tls.require_sni);
  EXPECT_EQ(c.tls.ech, EchMode::outer);

  const PolicySpec& p = c.policy;
  EXPECT_EQ(p.mode, PolicyMode::enforce);
  EXPECT_EQ(p.default_action, Action::deny);
  EXPECT_FALSE(p.revoke_on_reload);
  ASSERT_EQ(p.rules.size(), 2U);
  const RuleSpec& github = p.rules[0];
  EXPECT_EQ(github.name, "github");
  EXPECT_EQ(github.action, Action::allow);
  EXPECT_EQ(github.from, std::vector<Cidr>{cidr("10.0.1.0/24")});
  EXPECT_FALSE(github.mode.has_value());
  EXPECT_FALSE(github.until.has_value());
  ASSERT_EQ(github.to.size(), 4U);
  EXPECT_EQ(github.to[0].host, "github.com");
  EXPECT_TRUE(github.to[0].ports.empty());
  EXPECT_EQ(github.to[0].destination, Integrity::verify);
  EXPECT_EQ(github.to[1].host, "*.githubusercontent.com");
  EXPECT_EQ(github.to[1].ports, (std::vector<PortRange>{{443, 443}}));
  EXPECT_EQ(github.to[2].host, "**.github.io");
  EXPECT_EQ(github.to[2].destination, Integrity::resolve);
  EXPECT_FALSE(github.to[3].host.has_value());
  EXPECT_EQ(github.to[3].cidr, cidr("140.82.112.0/20"));
  EXPECT_EQ(github.to[3].ports, (std::vector<PortRange>{{22, 22}, {8000, 8100}}));
  EXPECT_EQ(github.to[3].pos.line, 65);
  const RuleSpec& paste = p.rules[1];
  EXPECT_EQ(paste.name, "no-paste-sites");
  EXPECT_EQ(paste.action, Action::deny);
  EXPECT_EQ(paste.mode, PolicyMode::audit);
  EXPECT_EQ(paste.until, std::chrono::sys_days{std::chrono::year{2026} / 12 / 31});
  ASSERT_EQ(paste.to.size(), 1U);
  EXPECT_EQ(paste.to[0].host, "**.pastebin.com");
  EXPECT_EQ(paste.to[0].ports, (std::vector<PortRange>{{80, 80}, {443, 443}}));

  ASSERT_EQ(p.tests.size(), 2U);
  EXPECT_EQ(p.tests[0].src, *IpAddress::parse("10.0.1.5"));
  EXPECT_EQ(p.tests[0].dst, endpoint("140.82.112.3:443"));
  EXPECT_EQ(p.tests[0].host, "github.com");
  EXPECT_EQ(p.tests[0].expect, Expect::allow);
  EXPECT_EQ(p.tests[0].rule, "github");
  EXPECT_FALSE(p.tests[0].proto.has_value());
  EXPECT_FALSE(p.tests[0].listener.has_value());
  EXPECT_EQ(p.tests[1].expect, Expect::deny);
  EXPECT_FALSE(p.tests[1].rule.has_value());
  EXPECT_EQ(p.tests[1].pos.line, 76);
}

TEST(ContractExample, UntilInThePastWarns) {
  LoadOptions options;
  options.today = std::chrono::sys_days{std::chrono::year{2027} / 1 / 1};
  const LoadResult r = load_config_file(fixture_path("contract_example.yaml"), options);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.diagnostics.size(), 3U);
  EXPECT_EQ(r.diagnostics[2].to_string(),
            fixture_path("contract_example.yaml") +
                ":70:14: warning: policy.rules[1].until: '2026-12-31' has passed; the rule's mode "
                "override no longer applies");
}

TEST(ManyMistakes, ReportsEveryOneInOrder) {
  const LoadResult r = load_fixture("many_mistakes.yaml");
  EXPECT_FALSE(r.ok());
  const std::string f = fixture_path("many_mistakes.yaml") + ":";
  const std::vector<std::string> expected = {
      f + "3:11: listeners[0].name: invalid listener name 'Transparent' (use lowercase letters, "
          "digits, '_' and '-')",
      f + "8:11: listeners[1].mode: invalid value 'socks' (expected one of: redirect, tproxy, "
          "explicit)",
      f + "9:5: unknown key 'listner' in listeners[1] (expected one of: name, address, mode, "
          "proxy_protocol, forward)",
      f + "10:11: listeners[2].name: duplicate listener name 'proxy' (first at 6:11)",
      f + "11:14: listeners[2].address: 0.0.0.0:3128 is already the address of another listener "
          "(at 7:14)",
      f + "13:5: listeners[2].forward: only a redirect listener can forward",
      f + "15:14: listeners[3].address: invalid address '10.0.0.1' (expected \"IPv4:port\" or "
          "\"[IPv6]:port\", port 1-65535)",
      f + "17:16: listeners[3].proxy_protocol.trusted: an empty list matches nothing; list at "
          "least one CIDR block",
      f + "19:12: admin.address: invalid address '[::1]:99999' (expected \"IPv4:port\" or "
          "\"[IPv6]:port\", port 1-65535)",
      f + "21:12: access_log.on_full: invalid value 'wait' (expected one of: block, drop)",
      f + "22:10: workers: expected an integer 0-1024, got '-1'",
      f + "24:9: upstream.mark: expected an integer 0-4294967295, got '4294967296'",
      f + "26:10: timeouts.sniff: invalid duration '5': add a unit (ms, s, m or h), as in 5s",
      f + "27:12: timeouts.connect: invalid duration '1.5s' (expected an integer and a unit, as in "
          "250ms, 5s, 10m or 1h)",
      f + "28:9: timeouts.idle: invalid duration '5 s' (expected an integer and a unit, as in "
          "250ms, 5s, 10m or 1h)",
      f + "29:10: timeouts.drain: invalid duration '-1s' (expected an integer and a unit, as in "
          "250ms, 5s, 10m or 1h)",
      f + "30:16: timeouts.drain_delay: invalid duration '99999999999999999999h': longer than the "
          "maximum, 8760h",
      f + "32:24: dns.servers[1]: invalid DNS server 'dns.google' (expected \"IP\", \"IPv4:port\" "
          "or \"[IPv6]:port\")",
      f + "34:3: duplicate key 'timeout' in dns (first at 33:3)",
      f + "36:16: tls.require_sni: expected true or false, got 'yes please'",
      f + "43:14: policy.rules[0].from[0]: invalid CIDR block '10.0.1.0/33' (expected an address "
          "and a prefix length, as in 10.0.0.0/8 or fd00::/8)",
      f + "45:17: policy.rules[0].to[0].host: invalid host 'a*.github.com': '*' is allowed only as "
          "the whole first label, as in '*.example.com' or '**.example.com'",
      f + "47:11: policy.rules[0].to[1]: has both host and cidr; an entry has exactly one",
      f + "49:19: policy.rules[0].to[1].ports[0]: invalid port '0' (expected 1-65535 or a range "
          "\"a-b\")",
      f + "49:22: policy.rules[0].to[1].ports[1]: invalid port range '9000-8000' (the first port "
          "is greater than the last)",
      f + "49:35: policy.rules[0].to[1].ports[2]: invalid port 'x' (expected 1-65535 or a range "
          "\"a-b\")",
      f + "51:11: policy.rules[0].to[2].destination: only a host entry has a destination check; a "
          "cidr entry matches the address itself",
      f + "52:13: policy.rules[1].name: duplicate rule name 'github' (first at 42:13)",
      f + "53:11: policy.rules[1].to: a rule needs at least one entry",
      f + "54:7: missing required key 'name' in policy.rules[2]",
      f + "54:7: missing required key 'to' in policy.rules[2] (a list of host or cidr entries)",
      f + "55:14: policy.rules[2].until: invalid date '2026-02-30' (expected a calendar day as "
          "YYYY-MM-DD)",
      f + "57:11: policy.rules[3].to: expected a list, got a mapping",
      f + "59:28: policy.tests[0].dst: invalid address '140.82.112.3' (expected \"IPv4:port\" or "
          "\"[IPv6]:port\", port 1-65535)",
      f + "60:51: policy.tests[1].expect: invalid value 'maybe' (expected one of: allow, deny, "
          "audit_deny)",
      f + "60:68: policy.tests[1].listener: no listener is named 'nope'",
      f + "60:80: policy.tests[1].rule: no rule is named 'nope' (expected a rule name, default or "
          "builtin:...)",
  };
  EXPECT_THAT(render(r.diagnostics), ElementsAreArray(expected));
}

// Fixture files whose whole output is known.
struct FixtureCase {
  std::string name;                   // file under test/testdata/config/
  std::vector<std::string> expected;  // without the "PATH:" prefix
};

void PrintTo(const FixtureCase& c, std::ostream* os) {
  *os << c.name;
}

class FixtureTest : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(FixtureTest, ReportsExactly) {
  const FixtureCase& c = GetParam();
  const LoadResult r = load_fixture(c.name);
  std::vector<std::string> expected;
  for (const auto& e : c.expected) expected.push_back(fixture_path(c.name) + e);
  EXPECT_THAT(render(r.diagnostics), ElementsAreArray(expected));
  EXPECT_FALSE(r.ok());
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, FixtureTest,
    ::testing::Values(
        FixtureCase{"empty.yaml",
                    {": the configuration is empty (expected a mapping with 'listeners')"}},
        FixtureCase{"not_a_mapping.yaml",
                    {":1:1: the configuration: expected a mapping of settings, got a list"}},
        FixtureCase{"syntax_error.yaml", {":6:1: YAML syntax error: end of map flow not found"}},
        FixtureCase{"two_documents.yaml",
                    {":2:1: more than one YAML document; expected exactly one"}},
        FixtureCase{"anchors.yaml",
                    {":2:5: YAML anchor '&base' is refused: write the value out in full",
                     ":5:5: YAML alias '*base' is refused: write the value out in full",
                     ":9:37: YAML anchor '&web' is refused: write the value out in full",
                     ":11:37: YAML alias '*web' is refused: write the value out in full"}},
        FixtureCase{"duplicate_keys.yaml",
                    {":4:5: duplicate key 'name' in listeners[0] (first at 2:5)",
                     ":9:30: duplicate key 'host' in policy.rules[0].to[0] (first at 9:13)",
                     ":10:3: duplicate key 'default' in policy (first at 6:3)"}},
        FixtureCase{"invalid_idna.yaml",
                    {":6:18: policy.rules[0].to[0].host: invalid host '☃.example': not a valid "
                     "internationalised name (string contains a disallowed character)",
                     ":7:18: policy.rules[0].to[1].host: invalid host '-ü.example': not a valid "
                     "internationalised name (string start/ends with forbidden hyphen)",
                     ":8:18: policy.rules[0].to[2].host: invalid host 'xn--ü.example': not a "
                     "valid internationalised name (string contains invalid punycode data)"}},
        FixtureCase{"missing.yaml", {": cannot open: No such file or directory"}}),
    [](const auto& param_info) {
      return param_info.param.name.substr(0, param_info.param.name.find('.'));
    });

TEST(UnicodeHosts, BecomePunycode) {
  const LoadResult r = load_fixture("unicode_hosts.yaml");
  EXPECT_THAT(render(r.diagnostics), ElementsAre());
  ASSERT_TRUE(r.ok());
  const auto& to = r.config->policy.rules.at(0).to;
  ASSERT_EQ(to.size(), 4U);
  EXPECT_EQ(to[0].host, "xn--bcher-kva.example");
  EXPECT_EQ(to[1].host, "*.xn--bcher-kva.example");
  EXPECT_EQ(to[2].host, "**.xn--strae-oqa.de");
  EXPECT_EQ(to[3].host, "example.com");
}

// Snippets appended to one valid listener; positions count from line 1 of
// the whole text, so snippets start on line 2.
constexpr std::string_view kListener = "listeners: [{name: a, address: \"0.0.0.0:1\"}]\n";

struct SnippetCase {
  std::string name;
  std::string yaml;                   // appended to kListener
  std::vector<std::string> expected;  // rendered, file "t.yaml"
  bool ok = false;                    // loads (warnings allowed)
};

void PrintTo(const SnippetCase& c, std::ostream* os) {
  *os << c.name;
}

class SnippetTest : public ::testing::TestWithParam<SnippetCase> {};

TEST_P(SnippetTest, Reports) {
  const SnippetCase& c = GetParam();
  const LoadResult r = load_config_text(std::string(kListener) + c.yaml, "t.yaml", fixed_today());
  EXPECT_THAT(render(r.diagnostics), ElementsAreArray(c.expected));
  EXPECT_EQ(r.ok(), c.ok);
}

const std::string kNoPorts =
    ": host entry without ports: every port waits for client bytes, so server-first protocols "
    "(SMTP, MySQL, SSH) through cidr rules will wait for timeouts.sniff; add ports";

// One rule around a `to` list written on line 4 of the whole text.
std::string rule_with(std::string_view to) {
  return "policy:\n  rules:\n    - {name: r, to: [" + std::string(to) + "]}\n";
}

INSTANTIATE_TEST_SUITE_P(
    Snippets, SnippetTest,
    ::testing::Values(
        SnippetCase{"minimal", "", {}, true},
        SnippetCase{"unknown_top_level_key",
                    "polcy: {}\n",
                    {"t.yaml:2:1: unknown key 'polcy' at the top level (expected one of: "
                     "listeners, admin, access_log, workers, upstream, timeouts, limits, dns, "
                     "tls, kubernetes, policy)"}},
        SnippetCase{"duplicate_top_level_key",
                    "workers: 1\nworkers: 2\n",
                    {"t.yaml:3:1: duplicate key 'workers' at the top level (first at 2:1)"}},
        SnippetCase{"non_scalar_key",
                    "? [a]\n: 1\n",
                    {"t.yaml:2:3: keys must be plain strings, got a list at the top level"}},
        SnippetCase{"timeouts_as_list",
                    "timeouts: [5s]\n",
                    {"t.yaml:2:11: timeouts: expected a mapping, got a list"}},
        SnippetCase{"empty_value",
                    "policy:\n  rules:\n",
                    {"t.yaml:3:3: policy.rules: expected a list, got an empty value"}},
        SnippetCase{"zero_sniff",
                    "timeouts: {sniff: 0s, drain: 0s, drain_delay: 0ms}\n",
                    {"t.yaml:2:19: timeouts.sniff: must be longer than 0"}},
        SnippetCase{"duration_as_mapping",
                    "dns: {timeout: {s: 1}}\n",
                    {"t.yaml:2:16: dns.timeout: expected a duration, got a mapping"}},
        SnippetCase{"good_values",
                    "workers: 4\nupstream: {mark: 0x100}\nlimits: {max_connections: 4294967295}\n"
                    "dns: {servers: [\"10.0.0.2\", \"10.0.0.3:5353\", \"[fd00::53]:53\", \"::1\"], "
                    "timeout: 250ms, verify_window: 0s}\ntls: {require_sni: false, ech: deny}\n"
                    "access_log: {path: /var/log/egressd.log, on_full: drop}\n"
                    "admin: {address: \"[::]:9901\"}\n",
                    {},
                    true},
        SnippetCase{"bad_bool",
                    "tls: {require_sni: 1}\n",
                    {"t.yaml:2:20: tls.require_sni: expected true or false, got '1'"}},
        SnippetCase{"workers_too_many",
                    "workers: 100000\n",
                    {"t.yaml:2:10: workers: expected an integer 0-1024, got '100000'"}},
        SnippetCase{"admin_on_listener_address",
                    "admin: {address: \"0.0.0.0:1\"}\n",
                    {"t.yaml:2:18: admin.address: 0.0.0.0:1 is already the address of a listener "
                     "(at 1:32)"}},
        SnippetCase{"dns_server_bad",
                    "dns: {servers: [\"[10.0.0.1]:53\", \"10.0.0.1:0\", {a: 1}]}\n",
                    {"t.yaml:2:17: dns.servers[0]: invalid DNS server '[10.0.0.1]:53' (expected "
                     "\"IP\", \"IPv4:port\" or \"[IPv6]:port\")",
                     "t.yaml:2:34: dns.servers[1]: invalid DNS server '10.0.0.1:0' (expected "
                     "\"IP\", \"IPv4:port\" or \"[IPv6]:port\")",
                     "t.yaml:2:48: dns.servers[2]: expected \"IP[:port]\", got a mapping"}},
        SnippetCase{"control_bytes_escaped",
                    "tls: {ech: \"a\\tb\\u00e9\\x01\"}\n",
                    {"t.yaml:2:12: tls.ech: invalid value 'a\\x09bé\\x01' (expected one of: "
                     "outer, deny)"}},
        // --- rules ----------------------------------------------------------
        SnippetCase{"host_and_cidr_neither",
                    rule_with("{ports: [443]}"),
                    {"t.yaml:4:22: policy.rules[0].to[0]: needs a host or a cidr"}},
        SnippetCase{"host_is_ip",
                    rule_with("{host: 10.1.2.3, ports: [443]}"),
                    {"t.yaml:4:29: policy.rules[0].to[0].host: invalid host '10.1.2.3': an IP "
                     "address, not a name; use cidr"}},
        SnippetCase{"host_without_ports_warns",
                    rule_with("{host: a.example}"),
                    {"t.yaml:4:29: warning: policy.rules[0].to[0]" + kNoPorts},
                    true},
        SnippetCase{"trust_warns",
                    rule_with("{host: a.example, ports: [443], destination: trust}"),
                    {"t.yaml:4:67: warning: policy.rules[0].to[0].destination: trust uses the "
                     "client's destination address unchecked; a client can reach any address by "
                     "sending an allowed name"},
                    true},
        SnippetCase{"wildcard_tld_warns",
                    rule_with("{host: \"*.com\", ports: [443]}"),
                    {"t.yaml:4:29: warning: policy.rules[0].to[0].host: '*.com' matches names "
                     "directly under a top-level domain"},
                    true},
        SnippetCase{"cidr_host_bits_warns",
                    rule_with("{cidr: 10.1.2.3/8}"),
                    {"t.yaml:4:29: warning: policy.rules[0].to[0].cidr: '10.1.2.3/8' has bits "
                     "set beyond its prefix; it means 10.0.0.0/8"},
                    true},
        SnippetCase{"bad_destination",
                    rule_with("{host: a.example, ports: [443], destination: check}"),
                    {"t.yaml:4:67: policy.rules[0].to[0].destination: invalid value 'check' "
                     "(expected one of: verify, resolve, trust)"}},
        SnippetCase{"ports",
                    rule_with("{cidr: 10.0.0.0/8, ports: [65535, \"1-65535\", 65536, \"80-\", "
                              "\" 80\", [80], \"80-80\"]}"),
                    {"t.yaml:4:67: policy.rules[0].to[0].ports[2]: invalid port '65536' "
                     "(expected 1-65535 or a range \"a-b\")",
                     "t.yaml:4:74: policy.rules[0].to[0].ports[3]: invalid port range '80-' "
                     "(expected \"a-b\" with ports 1-65535)",
                     "t.yaml:4:81: policy.rules[0].to[0].ports[4]: invalid port ' 80' (expected "
                     "1-65535 or a range \"a-b\")",
                     "t.yaml:4:88: policy.rules[0].to[0].ports[5]: expected a port or a range "
                     "\"a-b\", got a list"}},
        SnippetCase{"ports_empty",
                    rule_with("{cidr: 10.0.0.0/8, ports: []}"),
                    {"t.yaml:4:48: policy.rules[0].to[0].ports: an empty list matches no port; "
                     "omit ports to match any port"}},
        SnippetCase{"ports_scalar",
                    rule_with("{cidr: 10.0.0.0/8, ports: 443}"),
                    {"t.yaml:4:48: policy.rules[0].to[0].ports: expected a list, got a scalar"}},
        SnippetCase{"from_empty",
                    "policy:\n  rules:\n    - {name: r, from: [], to: [{cidr: 10.0.0.0/8}]}\n",
                    {"t.yaml:4:23: policy.rules[0].from: an empty list matches nothing; list "
                     "CIDR blocks or identity selectors, or leave `from` out for any source"}},
        SnippetCase{"from_scalar",
                    "policy:\n  rules:\n    - {name: r, from: 10.0.0.0/8, to: [{cidr: "
                    "10.0.0.0/8}]}\n",
                    {"t.yaml:4:23: policy.rules[0].from: expected a list, got a scalar"}},
        SnippetCase{"until_without_mode_warns",
                    "policy:\n  rules:\n    - {name: r, until: 2030-01-01, to: [{cidr: "
                    "10.0.0.0/8}]}\n",
                    {"t.yaml:4:24: warning: policy.rules[0].until: has no effect without 'mode' "
                     "(it ends the rule's mode override)"},
                    true},
        SnippetCase{
            "until_passed_warns",
            "policy:\n  rules:\n    - {name: r, mode: audit, until: 2026-11-25, to: [{cidr: "
            "10.0.0.0/8}]}\n",
            {"t.yaml:4:37: warning: policy.rules[0].until: '2026-11-25' has passed; the "
             "rule's mode override no longer applies"},
            true},
        SnippetCase{
            "until_today_is_fine",
            "policy:\n  rules:\n    - {name: r, mode: audit, until: 2026-11-26, to: [{cidr: "
            "10.0.0.0/8}]}\n",
            {},
            true},
        SnippetCase{"rule_name_reserved",
                    "policy:\n  rules:\n    - {name: default, to: [{cidr: 10.0.0.0/8}]}\n",
                    {"t.yaml:4:14: policy.rules[0].name: invalid rule name 'default' (use 1-128 "
                     "letters, digits, '_', '-' and '.'; 'default' is reserved)"}},
        SnippetCase{
            "rule_name_builtin",
            "policy:\n  rules:\n    - {name: \"builtin:guard\", to: [{cidr: 10.0.0.0/8}]}\n",
            {"t.yaml:4:14: policy.rules[0].name: invalid rule name 'builtin:guard' (use "
             "1-128 letters, digits, '_', '-' and '.'; 'default' is reserved)"}},
        SnippetCase{"rule_not_a_mapping",
                    "policy:\n  rules:\n    - github\n",
                    {"t.yaml:4:7: policy.rules[0]: expected a mapping (a rule), got a scalar"}},
        SnippetCase{"policy_enums",
                    "policy: {mode: audit, default: allow, revoke_on_reload: true}\n",
                    {},
                    true},
        SnippetCase{"policy_bad_enums",
                    "policy: {mode: strict, default: maybe}\n",
                    {"t.yaml:2:16: policy.mode: invalid value 'strict' (expected one of: "
                     "enforce, audit)",
                     "t.yaml:2:33: policy.default: invalid value 'maybe' (expected one of: deny, "
                     "allow)"}},
        // --- listeners ------------------------------------------------------
        SnippetCase{"test_case_names_checked",
                    "policy:\n  rules: [{name: r, to: [{cidr: 10.0.0.0/8}]}]\n  tests:\n"
                    "    - {src: 10.0.0.1, dst: \"10.0.0.2:22\", expect: allow, rule: r, "
                    "listener: a, proto: tcp}\n"
                    "    - {src: 10.0.0.1, dst: \"10.0.0.2:22\", expect: deny, rule: "
                    "\"builtin:guard\"}\n"
                    "    - {src: 10.0.0.1, dst: \"10.0.0.2:22\", expect: deny, rule: default}\n",
                    {},
                    true}),
    [](const auto& param_info) { return param_info.param.name; });

// Whole documents for the listener checks (no shared prefix).
struct DocumentCase {
  std::string name;
  std::string yaml;
  std::vector<std::string> expected;
};

void PrintTo(const DocumentCase& c, std::ostream* os) {
  *os << c.name;
}

class DocumentTest : public ::testing::TestWithParam<DocumentCase> {};

TEST_P(DocumentTest, Reports) {
  const DocumentCase& c = GetParam();
  const LoadResult r = load_config_text(c.yaml, "t.yaml", fixed_today());
  EXPECT_THAT(render(r.diagnostics), ElementsAreArray(c.expected));
}

INSTANTIATE_TEST_SUITE_P(
    Documents, DocumentTest,
    ::testing::Values(
        DocumentCase{"no_listeners",
                     "workers: 1\n",
                     {"t.yaml:1:1: missing required key 'listeners' at the top level (at least "
                      "one listener)"}},
        DocumentCase{"empty_listeners",
                     "listeners: []\n",
                     {"t.yaml:1:12: listeners: at least one listener is required"}},
        DocumentCase{"listeners_mapping",
                     "listeners: {name: a}\n",
                     {"t.yaml:1:12: listeners: expected a list, got a mapping"}},
        DocumentCase{"null_document",
                     "~\n",
                     {"t.yaml: the configuration is empty (expected a "
                      "mapping with 'listeners')"}},
        DocumentCase{"scalar_document",
                     "hello\n",
                     {"t.yaml:1:1: the configuration: expected a mapping of settings, got a "
                      "scalar"}},
        DocumentCase{"listener_missing_fields",
                     "listeners:\n  - {mode: redirect}\n",
                     {"t.yaml:2:5: missing required key 'name' in listeners[0]",
                      "t.yaml:2:5: missing required key 'address' in listeners[0]"}},
        DocumentCase{"listener_ipv6_and_node_agent",
                     "listeners:\n  - {name: v6, address: \"[::]:15001\", mode: tproxy}\n"
                     "  - {name: agent, address: \"0.0.0.0:15001\", forward: "
                     "\"EgressD.egress.svc.:15008\"}\n"
                     "  - {name: agent2, address: \"0.0.0.0:15002\", forward: "
                     "\"[fd00::1]:15008\"}\n",
                     {}},
        DocumentCase{"forward_bad",
                     "listeners:\n  - {name: a, address: \"0.0.0.0:1\", mode: explicit, forward: "
                     "\"gw:0\"}\n",
                     {"t.yaml:2:53: listeners[0].forward: only a redirect listener can forward",
                      "t.yaml:2:62: listeners[0].forward: invalid target 'gw:0' (expected "
                      "\"host:port\", port 1-65535)"}},
        DocumentCase{"forward_no_port",
                     "listeners:\n  - {name: a, address: \"0.0.0.0:1\", forward: gw.example}\n",
                     {"t.yaml:2:46: listeners[0].forward: invalid target 'gw.example' (expected "
                      "\"host:port\", port 1-65535)"}},
        DocumentCase{"proxy_protocol_problems",
                     "listeners:\n  - name: a\n    address: \"0.0.0.0:1\"\n"
                     "    proxy_protocol: {trusted: 10.0.0.0/8}\n"
                     "  - name: b\n    address: \"0.0.0.0:2\"\n    proxy_protocol: {peers: []}\n"
                     "  - name: c\n    address: \"0.0.0.0:3\"\n    proxy_protocol: [10.0.0.0/8]\n",
                     {"t.yaml:4:31: listeners[0].proxy_protocol.trusted: expected a list, got a "
                      "scalar",
                      "t.yaml:7:21: missing required key 'trusted' in listeners[1].proxy_protocol "
                      "(the peers allowed to send PROXY headers)",
                      "t.yaml:7:22: unknown key 'peers' in listeners[1].proxy_protocol (expected "
                      "one of: trusted)",
                      "t.yaml:10:21: listeners[2].proxy_protocol: expected a mapping with "
                      "'trusted', got a list"}},
        DocumentCase{"listener_port_zero",
                     "listeners: [{name: a, address: \"0.0.0.0:0\"}]\n",
                     {"t.yaml:1:32: listeners[0].address: invalid address '0.0.0.0:0' (expected "
                      "\"IPv4:port\" or \"[IPv6]:port\", port 1-65535)"}},
        DocumentCase{"alias_not_reported_twice",
                     "listeners: [{name: &n a, address: \"0.0.0.0:1\"}, {name: *n, address: "
                     "\"0.0.0.0:2\"}]\n",
                     {"t.yaml:1:20: YAML anchor '&n' is refused: write the value out in full",
                      "t.yaml:1:56: YAML alias '*n' is refused: write the value out in full"}}),
    [](const auto& param_info) { return param_info.param.name; });

TEST(Limits, DeepNestingIsASyntaxError) {
  // yaml-cpp stops at its depth limit and reports where its scanner stood.
  std::string nested;
  for (int i = 0; i < 3000; ++i) nested += "- ";
  const LoadResult r = load_config_text(nested + "x\n", "t.yaml");
  EXPECT_THAT(render(r.diagnostics),
              ElementsAre("t.yaml:1:1000: YAML syntax error: nested too deeply"));
  EXPECT_FALSE(r.ok());
}

TEST(ListenerSpecs, NodeAgentForwardIsCanonical) {
  const LoadResult r = load_config_text(
      "listeners:\n  - {name: agent, address: \"0.0.0.0:15001\", forward: "
      "\"EgressD.egress.svc.:15008\"}\n  - {name: v6, address: \"[::]:15002\", mode: tproxy}\n",
      "t.yaml");
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(render(r.diagnostics));
  EXPECT_EQ(r.config->listeners[0].forward, "egressd.egress.svc:15008");
  EXPECT_EQ(r.config->listeners[1].mode, ListenerMode::tproxy);
  EXPECT_EQ(r.config->listeners[1].address, endpoint("[::]:15002"));
}

TEST(Limits, OversizedInputIsRefusedBeforeParsing) {
  const std::string big(kMaxConfigBytes + 1, '#');
  const LoadResult r = load_config_text(big, "big.yaml");
  EXPECT_THAT(render(r.diagnostics), ElementsAre("big.yaml: larger than 64 MiB (67108865 bytes)"));
  EXPECT_FALSE(r.ok());
}

TEST(Limits, ManyRulesLoadAndDuplicatesPointAtTheFirst) {
  // Big enough that quadratic duplicate detection would be noticed.
  constexpr int kRules = 20'000;
  std::string yaml(kListener);
  yaml += "policy:\n  rules:\n";
  for (int i = 0; i < kRules; ++i)
    yaml += "    - {name: r" + std::to_string(i) + ", to: [{cidr: 10.0.0.0/8}]}\n";
  yaml += "    - {name: r7, to: [{cidr: 10.0.0.0/8}]}\n";
  const LoadResult r = load_config_text(yaml, "t.yaml");
  EXPECT_THAT(render(r.diagnostics),
              ElementsAre("t.yaml:20004:14: policy.rules[20000].name: duplicate rule name 'r7' "
                          "(first at 11:14)"));
}

TEST(DiagnosticText, Formats) {
  Diagnostic d{Diagnostic::Severity::error, SourcePos{"a.yaml", 3, 7}, "bad"};
  EXPECT_EQ(d.to_string(), "a.yaml:3:7: bad");
  d.severity = Diagnostic::Severity::warning;
  EXPECT_EQ(d.to_string(), "a.yaml:3:7: warning: bad");
  d.pos.line = 0;
  EXPECT_EQ(d.to_string(), "a.yaml: warning: bad");
}

// --- CASES files -----------------------------------------------------------

TEST(TestCases, ParsesAList) {
  const TestCasesResult r = load_test_cases_file(fixture_path("cases_good.yaml"));
  EXPECT_THAT(render(r.diagnostics), ElementsAre());
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r.cases.size(), 3U);
  EXPECT_EQ(r.cases[0].src, *IpAddress::parse("10.0.1.5"));
  EXPECT_EQ(r.cases[0].dst, endpoint("140.82.112.3:443"));
  EXPECT_EQ(r.cases[0].host, "github.com");
  EXPECT_EQ(r.cases[0].expect, Expect::allow);
  EXPECT_EQ(r.cases[0].rule, "github");
  EXPECT_EQ(r.cases[0].pos.line, 2);
  EXPECT_EQ(r.cases[0].pos.col, 3);
  EXPECT_EQ(r.cases[1].src, *IpAddress::parse("2001:db8::1"));
  EXPECT_EQ(r.cases[1].dst, endpoint("[2001:db8::2]:8443"));
  EXPECT_EQ(r.cases[1].proto, Proto::h2c);
  EXPECT_EQ(r.cases[1].listener, "proxy");  // not checked without a config
  EXPECT_EQ(r.cases[1].expect, Expect::audit_deny);
  EXPECT_FALSE(r.cases[1].host.has_value());
  EXPECT_EQ(r.cases[2].proto, Proto::tcp);
  EXPECT_EQ(r.cases[2].rule, "default");
}

TEST(TestCases, ReportsEveryProblem) {
  const std::string f = fixture_path("cases_bad.yaml");
  const TestCasesResult r = load_test_cases_file(f);
  EXPECT_FALSE(r.ok());
  EXPECT_TRUE(r.cases.empty());
  EXPECT_THAT(
      render(r.diagnostics),
      ElementsAre(f + ":1:9: [0].src: invalid IP address '10.0.1.500'",
                  f + ":2:3: missing required key 'src' in [1]",
                  f + ":2:31: [1].proto: invalid value 'quic' (expected one of: tls, "
                      "http, h2c, tcp, connect)",
                  f + ":2:51: unknown key 'extra' in [1] (expected one of: src, dst, "
                      "host, proto, listener, expect, rule, namespace, labels, namespace_labels)",
                  f + ":3:3: [2]: expected a mapping (a test case), got a scalar"));
}

TEST(TestCases, TopLevelMustBeAList) {
  const std::string f = fixture_path("cases_not_a_list.yaml");
  const TestCasesResult r = load_test_cases_file(f);
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(render(r.diagnostics),
              ElementsAre(f + ":1:1: the test cases file: expected a list of test cases, got a "
                              "mapping"));
  const TestCasesResult empty = load_test_cases_text("", "c.yaml");
  EXPECT_FALSE(empty.ok());
  EXPECT_THAT(render(empty.diagnostics),
              ElementsAre("c.yaml: empty (expected a list of test cases)"));
  const TestCasesResult none = load_test_cases_text("[]\n", "c.yaml");
  EXPECT_TRUE(none.ok());
  EXPECT_TRUE(none.cases.empty());
}

}  // namespace
}  // namespace egressd::config

namespace egressd::config {
namespace {

// Identity selectors in `from` and the `kubernetes:` section (contract "Pod
// identity"): parsed into LabelSelectors, validated with line:col.
TEST(IdentitySelectors, ParseIntoLabelSelectors) {
  const std::string yaml = std::string(kListener) +
                           "kubernetes:\n"
                           "  kubeconfig: /etc/kube/config\n"
                           "  sync_timeout: 10s\n"
                           "policy:\n"
                           "  rules:\n"
                           "    - name: stripe\n"
                           "      from:\n"
                           "        - 10.0.1.0/24\n"
                           "        - namespace: payments\n"
                           "        - namespaceSelector: {matchLabels: {team: billing}}\n"
                           "          podSelector:\n"
                           "            matchExpressions:\n"
                           "              - {key: app, operator: In, values: [worker, api, api]}\n"
                           "              - {key: example.com/tier, operator: DoesNotExist}\n"
                           "        - podSelector: {}\n"
                           "      to: [{host: api.stripe.com, ports: [443]}]\n"
                           "  tests:\n"
                           "    - {src: 10.0.9.9, dst: \"1.2.3.4:443\", host: api.stripe.com,\n"
                           "       namespace: payments, labels: {app: api},\n"
                           "       namespace_labels: {team: billing}, expect: allow}\n";
  const LoadResult r = load_config_text(yaml, "t.yaml", fixed_today());
  ASSERT_TRUE(r.ok()) << ::testing::PrintToString(render(r.diagnostics));
  const ConfigSpec& c = *r.config;
  ASSERT_TRUE(c.kubernetes);
  EXPECT_EQ(c.kubernetes->kubeconfig, "/etc/kube/config");
  EXPECT_EQ(c.kubernetes->sync_timeout, std::chrono::seconds(10));
  const RuleSpec& rule = c.policy.rules.at(0);
  ASSERT_EQ(rule.from.size(), 1U);
  ASSERT_EQ(rule.from_identities.size(), 3U);
  using Op = LabelRequirement::Operator;
  const auto& ns = rule.from_identities[0];
  ASSERT_TRUE(ns.namespace_selector);
  EXPECT_FALSE(ns.pod_selector);
  ASSERT_EQ(ns.namespace_selector->requirements.size(), 1U);
  EXPECT_EQ(ns.namespace_selector->requirements[0].key, "kubernetes.io/metadata.name");
  EXPECT_EQ(ns.namespace_selector->requirements[0].values, std::vector<std::string>{"payments"});
  const auto& both = rule.from_identities[1];
  ASSERT_TRUE(both.namespace_selector && both.pod_selector);
  EXPECT_EQ(both.namespace_selector->requirements[0].key, "team");
  ASSERT_EQ(both.pod_selector->requirements.size(), 2U);
  EXPECT_EQ(both.pod_selector->requirements[0].key, "app");
  EXPECT_EQ(both.pod_selector->requirements[0].op, Op::in);
  EXPECT_EQ(both.pod_selector->requirements[0].values, (std::vector<std::string>{"api", "worker"}));
  EXPECT_EQ(both.pod_selector->requirements[1].op, Op::does_not_exist);
  const auto& all = rule.from_identities[2];
  ASSERT_TRUE(all.pod_selector);
  EXPECT_TRUE(all.pod_selector->requirements.empty());
  const TestCase& t = c.policy.tests.at(0);
  EXPECT_EQ(t.namespace_name, "payments");
  EXPECT_EQ(t.labels, (Labels{{"app", "api"}}));
  EXPECT_EQ(t.namespace_labels,
            (Labels{{"kubernetes.io/metadata.name", "payments"}, {"team", "billing"}}));
}

TEST(IdentitySelectors, EveryMistakeWithItsPosition) {
  const std::string yaml =
      std::string(kListener) +
      "kubernetes: {}\n"
      "policy:\n"
      "  rules:\n"
      "    - name: r\n"
      "      from:\n"
      "        - {namespace: Payments}\n"
      "        - {podSelector: {matchLabels: {\"-app\": x}}}\n"
      "        - {podSelector: {matchLabels: {app: \"bad value!\"}}}\n"
      "        - {podSelector: {matchExpressions: [{key: app, operator: In}]}}\n"
      "        - {podSelector: {matchExpressions: [{key: app, operator: Exists, values: [a]}]}}\n"
      "        - {podSelector: {matchExpressions: [{key: app, operator: Maybe, values: [a]}]}}\n"
      "        - {namespace: a, namespaceSelector: {}}\n"
      "        - {nodeSelector: {}}\n"
      "        - {}\n"
      "        - {podSelector: {matchLabels: {UPPER.example.com/x: y}}}\n"
      "      to: [{cidr: 10.0.0.0/8}]\n";
  const LoadResult r = load_config_text(yaml, "t.yaml", fixed_today());
  EXPECT_FALSE(r.ok());
  const auto d = render(r.diagnostics);
  const auto has = [&](const std::string& text) {
    return std::any_of(d.begin(), d.end(),
                       [&](const std::string& x) { return x.find(text) != std::string::npos; });
  };
  EXPECT_TRUE(has("t.yaml:7:23: policy.rules[0].from[0].namespace: invalid namespace 'Payments'"))
      << ::testing::PrintToString(d);
  EXPECT_TRUE(
      has("t.yaml:8:40: policy.rules[0].from[1].podSelector.matchLabels: invalid label "
          "key '-app'"))
      << ::testing::PrintToString(d);
  EXPECT_TRUE(has("invalid label value 'bad value!'"));
  EXPECT_TRUE(has("In and NotIn need a non-empty `values` list"));
  EXPECT_TRUE(has("Exists and DoesNotExist take no `values`"));
  EXPECT_TRUE(has("invalid value 'Maybe' (expected one of: In, NotIn, Exists, DoesNotExist)"));
  EXPECT_TRUE(has("give either namespace or namespaceSelector, not both"));
  EXPECT_TRUE(has("unknown key 'nodeSelector'"));
  EXPECT_TRUE(has("an identity selector needs namespace, namespaceSelector or podSelector"));
  EXPECT_TRUE(has("the key's prefix must be a DNS subdomain"));
  EXPECT_EQ(d.size(), 11U) << ::testing::PrintToString(d);
}

TEST(IdentitySelectors, NeedAKubernetesSection) {
  const std::string yaml = std::string(kListener) +
                           "policy:\n"
                           "  rules:\n"
                           "    - {name: r, from: [{namespace: a}], to: [{cidr: 10.0.0.0/8}]}\n";
  const LoadResult r = load_config_text(yaml, "t.yaml", fixed_today());
  EXPECT_THAT(render(r.diagnostics),
              ElementsAre("t.yaml:4:24: policy.rules[0].from[0]: identity selectors need a "
                          "`kubernetes:` section (pod identity comes from the Kubernetes API)"));
}

TEST(IdentitySelectors, CaseLabelsNeedANamespace) {
  const std::string yaml = std::string(kListener) +
                           "policy:\n"
                           "  tests:\n"
                           "    - {src: 10.0.0.1, dst: \"1.2.3.4:443\", labels: {app: a}, "
                           "expect: deny}\n";
  const LoadResult r = load_config_text(yaml, "t.yaml", fixed_today());
  EXPECT_THAT(render(r.diagnostics),
              ElementsAre(::testing::HasSubstr("a source pod's labels need its `namespace`")));
}

TEST(LabelSyntax, KeysValuesAndNamespaces) {
  for (const char* good : {"app", "app.kubernetes.io/name", "a", "A-b_c.d", "x/y", "k8s.io/a"})
    EXPECT_FALSE(label_key_problem(good)) << good;
  for (const char* bad :
       {"", "-a", "a-", "a/b/c", "/a", "a/", "Upper.io/a", "a..b/c", "a b", "a\xc3\xa9"})
    EXPECT_TRUE(label_key_problem(bad)) << bad;
  EXPECT_TRUE(label_key_problem(std::string(64, 'a')));
  EXPECT_FALSE(label_key_problem(std::string(63, 'a')));
  for (const char* good : {"", "v1", "a.b-c_d"}) EXPECT_FALSE(label_value_problem(good)) << good;
  for (const char* bad : {"-v", "v-", "a b", "a/b"}) EXPECT_TRUE(label_value_problem(bad)) << bad;
  for (const char* good : {"payments", "a", "team-1"}) EXPECT_FALSE(namespace_name_problem(good));
  for (const char* bad : {"", "Payments", "-a", "a-", "a.b", "a_b"})
    EXPECT_TRUE(namespace_name_problem(bad)) << bad;
}

}  // namespace
}  // namespace egressd::config
