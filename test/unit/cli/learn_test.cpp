// `egressd learn`: exact output for a small log, the suggestions round-trip
// through the config loader and let every covered flow pass, hostile names
// never break the YAML, and the grouping heuristics hold.

#include "egressd/cli/learn.hpp"

#include <algorithm>
#include <fstream>
#include <initializer_list>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "egressd/cli/cli.hpp"
#include "egressd/cli/validate.hpp"
#include "egressd/config/loader.hpp"
#include "egressd/log/json.hpp"
#include "egressd/policy/policy.hpp"

namespace egressd::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kData = EGRESSD_TESTDATA_DIR;
const std::string kConfig = kData + "/cli/learn.yaml";
const std::string kSmallLog = kData + "/access_logs/small.log";
const std::string kHostileLog = kData + "/access_logs/hostile.log";

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

CliRun run(std::vector<std::string> args) {
  args.insert(args.begin(), "egressd");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out;
  std::ostringstream err;
  CliRun r;
  r.code = run_cli(static_cast<int>(argv.size()), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// learn.yaml ends with its rules list (items at 4 spaces), so learn's
// output appended to it lands under policy.rules, as a user pastes it.
config::LoadResult config_with(const std::string& suggestions) {
  return config::load_config_text(read_file(kConfig) + suggestions, "learned.yaml");
}

struct FlowCase {
  const char* src;
  const char* dst;
  const char* host;  // nullptr = none
  Proto proto;
  bool transparent;
};

policy::Verdict decide(const policy::CompiledPolicy& p, const FlowCase& f) {
  policy::FlowFacts facts;
  facts.src = *IpAddress::parse(f.src);
  const auto dst = *Endpoint::parse(f.dst);
  facts.dst = dst.ip;
  facts.port = dst.port;
  facts.proto = f.proto;
  facts.transparent = f.transparent;
  if (f.host != nullptr) facts.name = f.host;
  facts.tls_without_sni = f.proto == Proto::tls && f.host == nullptr;
  facts.today = utc_today();
  const policy::AssumeIntegrity assume;
  return p.decide(facts, assume).verdict;
}

// Walked through by hand (docs/learn.md): a/b/c.api.example.com are three
// names under one base; example.com comes from other sources, so it is its
// own rule; learned-example-com is taken by learn.yaml; three addresses in
// 203.0.113.0/24 make the block; pkg.example.net failed integrity, so
// `resolve`; the mirror came through the explicit listener under audit.
constexpr const char* kSmallExpected =
    R"(# egressd learn: 20 denied flows in 22 records; 14 allowed by 6 rules below.
# Not covered:
#   1 flow already allowed by the current config
#   1 flow denied by "builtin:guard": the built-in guard (gateway host, loopback, metadata, private ranges)
#   1 flow denied by "builtin:sniff_timeout": a client that sent nothing in time
#   1 flow denied by deny rule "no-paste"; an allow rule cannot override a deny rule
#   1 flow went by name to a private address, which the guard denies to host entries
#   1 flow went to a link-local address: not suggested, the guard protects it
# Paste under policy.rules:
    - name: "learned-example-com-2"  # 4 flows
      from: ["10.0.1.4/30"]
      to:
        - host: "*.api.example.com"  # 3 names, 4 flows, first seen 2026-11-26T05:00:00Z, last 2026-11-26T07:15:30Z
          ports: [443]
    - name: "learned-example-com-3"  # 2 flows
      from: ["10.0.1.5/32", "10.0.2.9/32"]
      to:
        - host: "example.com"  # 2 flows, seen 2026-11-26T05:00:00Z
          ports: [443, 8443]
    - name: "learned-example-net"  # 1 flow
      from: ["10.0.1.5/32"]
      to:
        - host: "pkg.example.net"  # 1 flow, seen 2026-11-26T05:00:00Z
          ports: [443]
          destination: "resolve"
    - name: "learned-example-org"  # 1 flow
      from: ["10.0.3.1/32"]
      to:
        - host: "mirror.example.org"  # 1 flow, seen 2026-11-26T05:00:00Z
          ports: [443]
    - name: "learned-addresses"  # 5 flows
      from: ["10.0.1.5/32"]
      to:
        - cidr: "192.0.2.1/32"  # 1 flow, seen 2026-11-26T05:00:00Z
          ports: [443]
        - cidr: "198.51.100.7/32"  # 1 flow, seen 2026-11-26T05:00:00Z
          ports: [22]
        - cidr: "203.0.113.0/24"  # 3 flows, first seen 2026-11-25T23:59:59Z, last 2026-11-26T05:00:00Z
          ports: [5432]
    - name: "learned-addresses-2"  # 1 flow
      from: ["2001:db8:1::5/128"]
      to:
        - cidr: "2001:db8:2::1/128"  # 1 flow, seen 2026-11-26T05:00:00Z
          ports: [443]
)";

TEST(Learn, SmallLogExactOutput) {
  const CliRun r = run({"learn", "--config", kConfig, kSmallLog});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(r.err,
            "egressd: " + kSmallLog + ": skipped 4 malformed lines (not an access-log record)\n");
  EXPECT_EQ(r.out, kSmallExpected);
}

TEST(Learn, SuggestionsRoundTripAndLetEveryCoveredFlowPass) {
  const CliRun r = run({"learn", "--config", kConfig, kSmallLog});
  ASSERT_EQ(r.code, kExitOk);
  const config::LoadResult loaded = config_with(r.out);
  ASSERT_TRUE(loaded.ok()) << r.out
                           << (loaded.diagnostics.empty() ? "" : loaded.diagnostics[0].to_string());
  for (const auto& d : loaded.diagnostics) {
    EXPECT_EQ(d.severity, config::Diagnostic::Severity::warning) << d.to_string();
  }
  const auto before = config::load_config_file(kConfig);
  ASSERT_TRUE(before.ok());
  const auto old_policy =
      policy::CompiledPolicy::compile(before.config->policy, before.config->tls);
  const auto new_policy =
      policy::CompiledPolicy::compile(loaded.config->policy, loaded.config->tls);

  // Every flow of small.log a rule can fix: denied before, allowed now.
  const std::vector<FlowCase> fixed = {
      {"10.0.1.5", "93.184.216.34:443", "a.api.example.com", Proto::tls, true},
      {"10.0.1.6", "93.184.216.34:443", "b.api.example.com", Proto::tls, true},
      {"10.0.1.7", "93.184.216.34:443", "c.api.example.com", Proto::tls, true},
      {"10.0.1.5", "93.184.216.34:443", "example.com", Proto::tls, true},
      {"10.0.2.9", "93.184.216.34:8443", "example.com", Proto::http, true},
      {"10.0.1.5", "203.0.113.10:5432", nullptr, Proto::tcp, true},
      {"10.0.1.5", "203.0.113.11:5432", nullptr, Proto::tcp, true},
      {"10.0.1.5", "203.0.113.12:5432", nullptr, Proto::tcp, true},
      {"10.0.1.5", "198.51.100.7:22", nullptr, Proto::tcp, true},
      {"2001:db8:1::5", "[2001:db8:2::1]:443", nullptr, Proto::tcp, true},
      {"10.0.1.5", "192.0.2.1:443", nullptr, Proto::tls, true},
      {"10.0.1.5", "151.101.1.1:443", "pkg.example.net", Proto::tls, true},
      {"10.0.3.1", "151.101.2.2:443", "mirror.example.org", Proto::connect, false},
  };
  for (const auto& f : fixed) {
    SCOPED_TRACE(f.dst);
    if (f.host == nullptr || std::string_view(f.host) != "pkg.example.net") {
      // (pkg.example.net was an integrity failure: without DNS it looks allowed.)
      EXPECT_NE(decide(*old_policy, f).decision, policy::Decision::allow);
    }
    EXPECT_EQ(decide(*new_policy, f).decision, policy::Decision::allow);
  }
  // What no allow rule should lift stays denied.
  const std::vector<FlowCase> still = {
      {"10.0.1.5", "104.20.1.1:443", "www.pastebin.com", Proto::tls, true},
      {"10.0.1.5", "10.9.9.9:443", "wiki.example.com", Proto::tls, true},
      {"10.0.1.5", "169.254.169.254:80", nullptr, Proto::http, true},
  };
  for (const auto& f : still) {
    SCOPED_TRACE(f.dst);
    EXPECT_NE(decide(*new_policy, f).decision, policy::Decision::allow);
  }
}

TEST(Learn, HostileNamesNeverBreakTheYaml) {
  const CliRun r = run({"learn", "--config", kConfig, kHostileLog});
  ASSERT_EQ(r.code, kExitOk) << r.err;
  // Comment lines, and rule lines whose every scalar is a quoted string of
  // printable ASCII (or a port number).
  const std::regex scalar_line(
      R"re(( *- name: "[a-z0-9.-]+"  # .*|      from: \[.*\]|      to:|        - (host|cidr): "[a-z0-9.:*/-]+"  # .*|          ports: \[[0-9, "-]+\]|          destination: "resolve"))re");
  for (const auto& l : lines(r.out)) {
    for (char c : l) {
      const auto u = static_cast<unsigned char>(c);
      EXPECT_TRUE(u >= 0x20 && u < 0x7f) << "unprintable byte in: " << l;
    }
    if (l.starts_with("#")) continue;
    EXPECT_TRUE(std::regex_match(l, scalar_line)) << l;
  }
  EXPECT_THAT(r.out, Not(HasSubstr("injected")));
  EXPECT_THAT(r.out, HasSubstr("\"evil\\\"\\x0Arule: {}\\x0A# \""));
  const config::LoadResult loaded = config_with(r.out);
  ASSERT_TRUE(loaded.ok()) << r.out;
  // Only the valid names became entries.
  const std::size_t own_rules = 3;  // learn.yaml's
  std::vector<std::string> hosts;
  for (std::size_t i = own_rules; i < loaded.config->policy.rules.size(); ++i) {
    for (const auto& to : loaded.config->policy.rules[i].to) {
      hosts.push_back(to.host ? *to.host : to.cidr->to_string());
    }
  }
  std::sort(hosts.begin(), hosts.end());
  // "-leading" is a name the traffic and the config both accept; the IP
  // literal and the bracketed [::1] are judged by address.
  EXPECT_EQ(hosts, (std::vector<std::string>{"-leading.example.com", "198.51.100.9/32",
                                             "93.184.216.34/32", "fine.example.com"}))
      << r.out;
  EXPECT_EQ(r.err,
            "egressd: " + kHostileLog + ": skipped 4 malformed lines (not an access-log record)\n");
}

TEST(Learn, UnreadableLogIsARuntimeError) {
  const CliRun r = run({"learn", "--config", kConfig, kSmallLog, kData + "/access_logs/nope.log"});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(lines(r.err).size(), 1U);
  EXPECT_THAT(r.err, HasSubstr("cannot read access log " + kData + "/access_logs/nope.log"));
}

TEST(Learn, DirectoryAsLogIsARuntimeError) {
  const CliRun r = run({"learn", "--config", kConfig, kData + "/access_logs"});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "");
  EXPECT_THAT(r.err, HasSubstr("is a directory"));
}

TEST(Learn, NeedsALog) {
  const CliRun r = run({"learn", "--config", kConfig});
  EXPECT_EQ(r.code, kExitUsage);
  EXPECT_EQ(lines(r.err).size(), 1U);
}

TEST(Learn, InvalidConfigExitsOne) {
  const CliRun r = run({"learn", "--config", kData + "/cli/mistakes.yaml", kSmallLog});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "");
}

// --- the heuristics, through Learner ---------------------------------------

class LearnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    loaded_ = config::load_config_file(kConfig);
    ASSERT_TRUE(loaded_.ok());
    policy_ = policy::CompiledPolicy::compile(loaded_.config->policy, loaded_.config->tls);
  }

  static std::string line(const std::string& src, const std::string& dst, const char* host,
                          const char* rule = "default", const char* decision = "deny") {
    std::string l =
        R"({"time":"2026-11-26T05:00:00.000Z","event":"flow","listener":"transparent","src":)";
    l += log::json_string(src) + ",\"dst\":" + log::json_string(dst) + ",\"proto\":\"tls\"";
    if (host != nullptr) l += ",\"host\":" + log::json_string(host);
    l += ",\"decision\":" + log::json_string(decision) + ",\"rule\":" + log::json_string(rule) +
         ",\"reason\":\"x\",\"close\":\"denied\"}";
    return l;
  }

  LearnResult learn(const std::vector<std::string>& log_lines, LearnOptions options = {}) {
    options.today = utc_today();
    Learner learner(*loaded_.config, policy_, options);
    for (const auto& l : log_lines) learner.add_line(l);
    return learner.suggest();
  }

  // host or cidr patterns of the learned rules, in output order.
  static std::vector<std::string> entries(const LearnResult& r) {
    std::vector<std::string> out;
    for (const auto& rule : r.rules) {
      for (const auto& to : rule.to) out.push_back(to.host ? *to.host : to.cidr->to_string());
    }
    return out;
  }

  config::LoadResult loaded_;
  std::shared_ptr<const policy::CompiledPolicy> policy_;
};

struct GroupingCase {
  const char* label;
  std::vector<const char*> names;
  std::vector<std::string> expected;  // entries, sorted as output
};

class Grouping : public LearnerTest, public ::testing::WithParamInterface<GroupingCase> {};

TEST_P(Grouping, NamesBecomeTheExpectedPatterns) {
  std::vector<std::string> log_lines;
  for (const char* n : GetParam().names)
    log_lines.push_back(line("10.0.1.5:1", "93.184.216.34:443", n));
  const LearnResult r = learn(log_lines);
  EXPECT_EQ(entries(r), GetParam().expected) << r.yaml;
  EXPECT_EQ(r.covered, GetParam().names.size()) << r.yaml;
}

INSTANTIATE_TEST_SUITE_P(
    Learn, Grouping,
    ::testing::Values(
        GroupingCase{"two_stay_exact",
                     {"a.example.com", "b.example.com"},
                     {"a.example.com", "b.example.com"}},
        GroupingCase{"three_one_level",
                     {"a.example.com", "b.example.com", "c.example.com"},
                     {"*.example.com"}},
        GroupingCase{"mixed_depth",
                     {"a.example.com", "x.b.example.com", "c.example.com"},
                     {"**.example.com"}},
        GroupingCase{"base_itself_stays_exact",
                     {"example.com", "a.example.com", "b.example.com", "c.example.com"},
                     {"*.example.com", "example.com"}},
        GroupingCase{"deepest_base_first",
                     {"a.x.example.com", "b.x.example.com", "c.x.example.com", "d.example.com"},
                     {"*.x.example.com", "d.example.com"}},
        GroupingCase{"wider_absorbs_narrower",
                     {"a.x.example.com", "b.x.example.com", "c.x.example.com", "d.example.com",
                      "e.example.com", "f.example.com"},
                     {"**.example.com"}},
        GroupingCase{"never_under_a_tld", {"a.com", "b.com", "c.com"}, {"a.com", "b.com", "c.com"}},
        GroupingCase{"never_under_co_uk",
                     {"a.co.uk", "b.co.uk", "c.co.uk"},
                     {"a.co.uk", "b.co.uk", "c.co.uk"}},
        GroupingCase{"under_a_registrable_co_uk",
                     {"a.shop.co.uk", "b.shop.co.uk", "c.shop.co.uk"},
                     {"*.shop.co.uk"}},
        GroupingCase{"never_under_github_io",
                     {"a.github.io", "b.github.io", "c.github.io"},
                     {"a.github.io", "b.github.io", "c.github.io"}},
        GroupingCase{"never_under_s3",
                     {"a.s3.amazonaws.com", "b.s3.amazonaws.com", "c.s3.amazonaws.com"},
                     {"a.s3.amazonaws.com", "b.s3.amazonaws.com", "c.s3.amazonaws.com"}}),
    [](const auto& test_info) { return std::string(test_info.param.label); });

TEST_F(LearnerTest, OneRulePerSiteSortedByName) {
  const LearnResult r = learn({line("10.0.1.5:1", "93.184.216.34:443", "b.example.net"),
                               line("10.0.1.5:1", "93.184.216.34:443", "a.example.com")});
  ASSERT_EQ(r.rules.size(), 2U);
  // learned-example-com is taken by learn.yaml.
  EXPECT_EQ(r.rules[0].name, "learned-example-com-2");
  EXPECT_EQ(r.rules[1].name, "learned-example-net");
}

TEST_F(LearnerTest, DestinationsAggregateToABlockOnlyWithEnoughAddresses) {
  const LearnResult r = learn({line("10.0.1.5:1", "203.0.113.1:5432", nullptr),
                               line("10.0.1.5:1", "203.0.113.2:5432", nullptr),
                               line("10.0.1.5:1", "198.51.100.1:5432", nullptr),
                               line("10.0.1.5:1", "198.51.100.2:5432", nullptr),
                               line("10.0.1.5:1", "198.51.100.3:5432", nullptr)});
  EXPECT_EQ(entries(r),
            (std::vector<std::string>{"198.51.100.0/24", "203.0.113.1/32", "203.0.113.2/32"}));
}

TEST_F(LearnerTest, SourcesCoverEachBlockOrAreOmittedWhenSpread) {
  const LearnResult near = learn({line("10.0.1.4:1", "203.0.113.1:443", nullptr),
                                  line("10.0.1.7:1", "203.0.113.1:443", nullptr),
                                  line("10.0.2.9:1", "203.0.113.1:443", nullptr)});
  ASSERT_EQ(near.rules.size(), 1U);
  std::vector<std::string> from;
  for (const auto& c : near.rules[0].from) from.push_back(c.to_string());
  EXPECT_EQ(from, (std::vector<std::string>{"10.0.1.4/30", "10.0.2.9/32"}));

  std::vector<std::string> spread;
  for (int i = 0; i < 9; ++i)
    spread.push_back(line("10.0." + std::to_string(i) + ".1:1", "203.0.113.1:443", nullptr));
  const LearnResult far = learn(spread);
  ASSERT_EQ(far.rules.size(), 1U);
  EXPECT_TRUE(far.rules[0].from.empty());
  EXPECT_THAT(far.yaml, Not(HasSubstr("from:")));
}

TEST_F(LearnerTest, DifferentSourcesSplitOneSite) {
  std::vector<std::string> log_lines;
  for (int i = 0; i < 9; ++i)
    log_lines.push_back(
        line("10.0." + std::to_string(i) + ".1:1", "93.184.216.34:443", "a.example.org"));
  log_lines.push_back(line("10.0.1.5:1", "93.184.216.34:443", "b.example.org"));
  const LearnResult r = learn(log_lines);
  ASSERT_EQ(r.rules.size(), 2U) << r.yaml;
  EXPECT_EQ(r.rules[0].name, "learned-example-org");
  EXPECT_EQ(r.rules[1].name, "learned-example-org-2");
}

TEST_F(LearnerTest, PortsRunsBecomeRanges) {
  std::vector<std::string> log_lines;
  for (int port : {8000, 8001, 8002, 8003, 9000, 9001, 22})
    log_lines.push_back(line("10.0.1.5:1", "203.0.113.1:" + std::to_string(port), nullptr));
  const LearnResult r = learn(log_lines);
  EXPECT_THAT(r.yaml, HasSubstr("ports: [22, \"8000-8003\", 9000, 9001]"));
}

TEST_F(LearnerTest, OrderOfLinesDoesNotMatter) {
  std::vector<std::string> log_lines;
  std::istringstream in(read_file(kSmallLog));
  for (std::string l; std::getline(in, l);) log_lines.push_back(l);
  const std::string first = learn(log_lines).yaml;
  std::mt19937 rng(7);
  for (int i = 0; i < 5; ++i) {
    std::shuffle(log_lines.begin(), log_lines.end(), rng);
    EXPECT_EQ(learn(log_lines).yaml, first);
  }
}

TEST_F(LearnerTest, NothingToSuggest) {
  const LearnResult r =
      learn({line("10.0.1.5:1", "104.20.1.1:443", "www.pastebin.com", "no-paste")});
  EXPECT_TRUE(r.rules.empty());
  EXPECT_THAT(r.yaml, HasSubstr("# Nothing to suggest.\n"));
  for (const auto& l : lines(r.yaml)) EXPECT_TRUE(l.starts_with("#")) << l;
}

TEST_F(LearnerTest, MutatedLogLinesNeverBreakTheOutput) {
  // A seeded mutation run over small.log: flipped, dropped and inserted
  // bytes. Whatever survives, the output must still load as a config.
  std::vector<std::string> seeds;
  std::istringstream in(read_file(kSmallLog));
  for (std::string l; std::getline(in, l);) seeds.push_back(l);
  std::mt19937 rng(20261126);
  std::vector<std::string> mutated;
  for (int i = 0; i < 3000; ++i) {
    std::string l = seeds[rng() % seeds.size()];
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !l.empty(); ++e) {
      const std::size_t at = rng() % l.size();
      switch (rng() % 3) {
        case 0:
          l[at] = static_cast<char>(rng() % 256);
          break;
        case 1:
          l.erase(at, 1);
          break;
        default:
          l.insert(at, 1, "\"\\\n:{}[]#-*.0\x85\xe2"[rng() % 14]);
          break;
      }
    }
    mutated.push_back(std::move(l));
  }
  const LearnResult r = learn(mutated);
  EXPECT_GT(r.malformed_lines, 0U);
  EXPECT_FALSE(r.rules.empty());
  const config::LoadResult loaded = config_with(r.yaml);
  ASSERT_TRUE(loaded.ok()) << r.yaml;
  EXPECT_EQ(loaded.config->policy.rules.size(), 3 + r.rules.size());
}

TEST(YamlQuote, EscapesEverythingButPrintableAscii) {
  EXPECT_EQ(yaml_quote("a.example.com"), "\"a.example.com\"");
  EXPECT_EQ(yaml_quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
  EXPECT_EQ(yaml_quote(std::string("a\nb\0c", 5)), "\"a\\x0Ab\\x00c\"");
  EXPECT_EQ(yaml_quote("\xe2\x80\xa8"), "\"\\xE2\\x80\\xA8\"");
  EXPECT_EQ(yaml_quote(""), "\"\"");
}

TEST(RegistrableDomain, SmallPublicSuffixList) {
  EXPECT_EQ(registrable_domain("a.b.example.com"), "example.com");
  EXPECT_EQ(registrable_domain("example.com"), "example.com");
  EXPECT_EQ(registrable_domain("com"), "");
  EXPECT_EQ(registrable_domain("co.uk"), "");
  EXPECT_EQ(registrable_domain("www.shop.co.uk"), "shop.co.uk");
  EXPECT_EQ(registrable_domain("me.github.io"), "me.github.io");
  EXPECT_EQ(registrable_domain("x.bucket.s3.amazonaws.com"), "bucket.s3.amazonaws.com");
  EXPECT_EQ(registrable_domain("localhost"), "");
}

}  // namespace
}  // namespace egressd::cli

namespace egressd::cli {
namespace {

// Records with `namespace` (a gateway with a kubernetes section): `from` is
// suggested by namespace, not by pod IP block; pod-less sources keep CIDRs.
TEST(LearnIdentity, GroupsPodSourcesByNamespace) {
  const std::string config_text =
      "listeners: [{name: transparent, address: \"0.0.0.0:15001\"}]\n"
      "kubernetes: {}\n"
      "policy: {rules: [{name: github, to: [{host: github.com, ports: [443]}]}]}\n";
  const config::LoadResult loaded = config::load_config_text(config_text, "k.yaml");
  ASSERT_TRUE(loaded.ok());
  const auto policy = policy::CompiledPolicy::compile(loaded.config->policy, loaded.config->tls);
  const auto line = [](const char* src, const char* ns, const char* host) {
    std::string l =
        R"({"time":"2026-12-05T02:00:00.000Z","event":"flow","listener":"transparent","src":")";
    l += src;
    l += "\"";
    if (ns != nullptr) l += std::string(",\"namespace\":\"") + ns + "\",\"pod\":\"p\"";
    l += R"(,"dst":"3.18.12.63:443","proto":"tls","host":")";
    l += host;
    l += R"(","decision":"deny","rule":"default","reason":"x","close":"denied"})";
    return l;
  };
  LearnOptions options;
  options.today = utc_today();
  Learner learner(*loaded.config, policy, options);
  // Pods of payments on three nodes' ranges, one of shop, and a node.
  learner.add_line(line("10.1.0.5:1", "payments", "api.stripe.com"));
  learner.add_line(line("10.2.7.9:1", "payments", "api.stripe.com"));
  learner.add_line(line("10.3.1.1:1", "payments", "api.stripe.com"));
  learner.add_line(line("10.4.0.2:1", "shop", "api.stripe.com"));
  learner.add_line(line("192.168.0.10:1", nullptr, "files.stripe.com"));
  const LearnResult r = learner.suggest();
  ASSERT_EQ(r.rules.size(), 2U) << r.yaml;
  std::vector<std::string> namespaces;
  for (const auto& rule : r.rules) {
    for (const auto& sel : rule.from_identities) {
      namespaces.push_back(sel.namespace_selector->requirements.front().values.front());
    }
  }
  EXPECT_EQ(namespaces, (std::vector<std::string>{"payments", "shop"})) << r.yaml;
  EXPECT_THAT(r.yaml, HasSubstr(R"(from: [{namespace: "payments"}, {namespace: "shop"}])"));
  EXPECT_THAT(r.yaml, HasSubstr(R"(from: ["192.168.0.10/32"])"));
  EXPECT_EQ(r.covered, 5U) << r.yaml;

  // Without a kubernetes section the namespace is ignored: CIDRs as before.
  const std::string plain = "listeners: [{name: transparent, address: \"0.0.0.0:15001\"}]\n";
  const config::LoadResult no_k8s = config::load_config_text(plain, "p.yaml");
  ASSERT_TRUE(no_k8s.ok());
  Learner by_address(*no_k8s.config,
                     policy::CompiledPolicy::compile(no_k8s.config->policy, no_k8s.config->tls),
                     options);
  by_address.add_line(line("10.1.0.5:1", "payments", "api.stripe.com"));
  const LearnResult a = by_address.suggest();
  ASSERT_EQ(a.rules.size(), 1U);
  EXPECT_TRUE(a.rules[0].from_identities.empty());
  EXPECT_EQ(a.rules[0].from.size(), 1U);
}

TEST_F(LearnerTest, FirstAndLastSeenComeOnlyFromWellFormedTimes) {
  auto at = [](std::string l, const std::string& time) {
    const std::string from = "2026-11-26T05:00:00.000Z";
    return l.replace(l.find(from), from.size(), time);
  };
  const std::string flow = line("10.0.1.5:1", "203.0.113.1:5432", nullptr);
  const LearnResult r = learn({at(flow, "2026-11-27T01:02:03.456Z"), flow,
                               at(flow, "2026-11-28T00:00:00Z\\n# injected"),
                               at(flow, "9999-99-99T99:99:99.999"), at(flow, "")});
  EXPECT_NE(r.yaml.find("# 5 flows, first seen 2026-11-26T05:00:00Z, last 2026-11-27T01:02:03Z\n"),
            std::string::npos)
      << r.yaml;
  EXPECT_EQ(r.yaml.find("injected"), std::string::npos) << r.yaml;

  const LearnResult untimed = learn({at(flow, "yesterday")});
  EXPECT_NE(untimed.yaml.find("\"203.0.113.1/32\"  # 1 flow\n"), std::string::npos) << untimed.yaml;
}

}  // namespace
}  // namespace egressd::cli
