// The command line, driven through run_cli with string streams: output,
// stderr sentences and exit codes exactly as the contract's "Command line".

#include "egressd/cli/cli.hpp"

#include <initializer_list>
#include <sstream>
#include <string>
#include <vector>

#include <boost/json.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "egressd/version.hpp"

namespace egressd::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::MatchesRegex;
using ::testing::StartsWith;

const std::string kData = EGRESSD_TESTDATA_DIR;
const std::string kGood = kData + "/cli/good.yaml";

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

CliRun run(const std::vector<std::string>& args, const RunGateway& gateway = {}) {
  std::vector<std::string> storage{"egressd"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<const char*> argv;
  for (const auto& a : storage) argv.push_back(a.c_str());
  std::ostringstream out;
  std::ostringstream err;
  CliRun r;
  r.code = run_cli(static_cast<int>(argv.size()), argv.data(), out, err, gateway);
  r.out = out.str();
  r.err = err.str();
  return r;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// One clear sentence: a single line starting "egressd: ".
void expect_one_sentence(const std::string& err) {
  EXPECT_THAT(err, StartsWith("egressd: "));
  EXPECT_EQ(lines(err).size(), 1U) << err;
}

// --- check ---------------------------------------------------------------

TEST(Check, GoodConfigPrintsSummaryAndExitsZero) {
  const CliRun r = run({"check", "--config", kGood});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_EQ(r.out, kGood + ": OK (2 listeners, 3 rules, 2 tests passed)\n");
  EXPECT_EQ(r.err, "");
}

TEST(Check, EveryMistakeIsOneFileLineColLine) {
  const std::string path = kData + "/cli/mistakes.yaml";
  const CliRun r = run({"check", "--config", path});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "");
  const auto got = lines(r.err);
  // mode, default, the port and the trust warning; the host without ports
  // warns too.
  ASSERT_GE(got.size(), 4U) << r.err;
  for (const auto& l : got) {
    EXPECT_THAT(l, StartsWith(path + ":")) << l;
    EXPECT_THAT(l, MatchesRegex(".*:[0-9]+:[0-9]+: .*")) << l;
  }
  EXPECT_THAT(r.err, HasSubstr(path + ":4:11: "));            // mode: sideways
  EXPECT_THAT(r.err, HasSubstr(path + ":6:12: "));            // default: maybe
  EXPECT_THAT(r.err, HasSubstr(path + ":11:19: "));           // ports: [70000]
  EXPECT_THAT(r.err, HasSubstr(path + ":13:24: warning: "));  // destination: trust
}

TEST(Check, WarningsDoNotChangeTheExitCode) {
  const std::string path = kData + "/cli/warnings.yaml";
  const CliRun r = run({"check", "--config", path});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_EQ(r.out, path + ": OK (1 listener, 1 rule, 0 tests passed)\n");
  const auto got = lines(r.err);
  ASSERT_EQ(got.size(), 2U) << r.err;
  for (const auto& l : got) EXPECT_THAT(l, MatchesRegex(".*:[0-9]+:[0-9]+: warning: .*")) << l;
}

TEST(Check, FailingOwnTestIsAnErrorAtTheCase) {
  const std::string path = kData + "/cli/failing_own_test.yaml";
  const CliRun r = run({"check", "--config", path});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(r.err, path +
                       ":12:7: policy test failed: expected allow, got deny (rule default: no "
                       "rule matched; default deny)\n");
}

TEST(Check, UnreadableConfigExitsOne) {
  const std::string path = kData + "/cli/does-not-exist.yaml";
  const CliRun r = run({"check", "--config", path});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_THAT(r.err, StartsWith(path + ": "));
  EXPECT_EQ(lines(r.err).size(), 1U);
}

// --- explain -------------------------------------------------------------

boost::json::object explain_json(const CliRun& r) {
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(lines(r.out).size(), 1U) << r.out;
  boost::system::error_code ec;
  boost::json::value v = boost::json::parse(r.out, ec);
  EXPECT_FALSE(ec) << r.out;
  if (ec || !v.is_object()) return {};
  return v.as_object();
}

struct ExplainCase {
  const char* label;
  std::vector<std::string> args;  // after --config good.yaml
  const char* decision;
  const char* rule;
  const char* integrity;  // nullptr = absent
};

class Explain : public ::testing::TestWithParam<ExplainCase> {};

TEST_P(Explain, PrintsOneJsonObject) {
  const ExplainCase& c = GetParam();
  std::vector<std::string> storage{"egressd", "explain", "--config", kGood};
  storage.insert(storage.end(), c.args.begin(), c.args.end());
  std::vector<const char*> argv;
  for (const auto& a : storage) argv.push_back(a.c_str());
  std::ostringstream out;
  std::ostringstream err;
  CliRun r;
  r.code = run_cli(static_cast<int>(argv.size()), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  const boost::json::object o = explain_json(r);
  EXPECT_EQ(o.at("decision").as_string(), c.decision);
  EXPECT_EQ(o.at("rule").as_string(), c.rule);
  EXPECT_FALSE(o.at("reason").as_string().empty());
  if (c.integrity != nullptr) {
    EXPECT_EQ(o.at("integrity").as_string(), c.integrity);
  } else {
    EXPECT_FALSE(o.contains("integrity"));
  }
  // The contract's fields, and the two lists explain adds (always present).
  EXPECT_EQ(o.size(), c.integrity != nullptr ? 6U : 5U);
  EXPECT_TRUE(o.at("near_misses").is_array());
  EXPECT_TRUE(o.at("notes").is_array());
}

INSTANTIATE_TEST_SUITE_P(
    Cli, Explain,
    ::testing::Values(
        ExplainCase{"allow_host",
                    {"--src", "10.0.1.5", "--dst", "140.82.112.3:443", "--host", "github.com"},
                    "allow",
                    "github",
                    "verify"},
        ExplainCase{
            "allow_resolve",
            {"--src", "10.0.1.5", "--dst", "185.199.108.153:443", "--host", "docs.github.io"},
            "allow",
            "github",
            "resolve"},
        ExplainCase{"allow_cidr",
                    {"--src", "10.0.1.5", "--dst", "140.82.112.3:22"},
                    "allow",
                    "github",
                    nullptr},
        ExplainCase{"deny_default",
                    {"--src", "10.0.9.9", "--dst", "1.2.3.4:443", "--host", "evil.example"},
                    "deny",
                    "default",
                    nullptr},
        ExplainCase{"invalid_name",
                    {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--host", "a..b"},
                    "deny",
                    "builtin:invalid-name",
                    nullptr},
        ExplainCase{"no_sni",
                    {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--proto", "tls"},
                    "deny",
                    "builtin:no-sni",
                    nullptr},
        ExplainCase{"guard_private_by_name",
                    {"--src", "10.0.1.5", "--dst", "10.1.2.3:443", "--host", "github.com"},
                    "deny",
                    "builtin:guard",
                    nullptr},
        ExplainCase{"audit_deny_until_not_reached",
                    {"--src", "10.0.1.5", "--dst", "104.20.1.1:443", "--host", "www.pastebin.com",
                     "--now", "2099-12-31"},
                    "audit_deny",
                    "no-paste-sites",
                    "verify"},  // the host entry of `web` lets it pass
        ExplainCase{"deny_after_until",
                    {"--src", "10.0.1.5", "--dst", "104.20.1.1:443", "--host", "www.pastebin.com",
                     "--now", "2100-01-01"},
                    "deny",
                    "no-paste-sites",
                    nullptr},
        ExplainCase{"explicit_listener",
                    {"--src", "10.0.1.5", "--dst", "140.82.112.3:443", "--host", "github.com",
                     "--proto", "connect", "--listener", "proxy"},
                    "allow",
                    "github",
                    "verify"}),
    [](const auto& test_info) { return std::string(test_info.param.label); });

// near_misses as "rule:action:why[:by|source]", notes as "rule:why".
std::vector<std::string> near_misses(const boost::json::object& o) {
  std::vector<std::string> out;
  for (const auto& v : o.at("near_misses").as_array()) {
    const auto& m = v.as_object();
    std::string s = std::string(m.at("rule").as_string()) + ":" +
                    std::string(m.at("action").as_string()) + ":" +
                    std::string(m.at("why").as_string());
    if (m.contains("by")) s += ":" + std::string(m.at("by").as_string());
    if (m.contains("source")) s += ":" + std::string(m.at("source").as_string());
    EXPECT_FALSE(m.at("reason").as_string().empty());
    EXPECT_EQ(m.size(), 4U + (m.contains("by") ? 1U : 0U) + (m.contains("source") ? 1U : 0U));
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<std::string> notes(const boost::json::object& o) {
  std::vector<std::string> out;
  for (const auto& v : o.at("notes").as_array()) {
    const auto& n = v.as_object();
    EXPECT_EQ(n.size(), 3U);
    EXPECT_FALSE(n.at("reason").as_string().empty());
    out.push_back(std::string(n.at("rule").as_string()) + ":" +
                  std::string(n.at("why").as_string()));
  }
  return out;
}

struct WhyCase {
  const char* label;
  std::vector<std::string> args;  // after --config good.yaml
  const char* rule;
  std::vector<std::string> near_misses;
  std::vector<std::string> notes;
};

class ExplainWhy : public ::testing::TestWithParam<WhyCase> {};

TEST_P(ExplainWhy, NearMissesAndNotes) {
  const WhyCase& c = GetParam();
  std::vector<std::string> args{"explain", "--config", kGood};
  args.insert(args.end(), c.args.begin(), c.args.end());
  const CliRun r = run(args);
  EXPECT_EQ(r.err, "");
  const auto o = explain_json(r);
  EXPECT_EQ(o.at("rule").as_string(), c.rule);
  EXPECT_EQ(near_misses(o), c.near_misses);
  EXPECT_EQ(notes(o), c.notes);
}

INSTANTIATE_TEST_SUITE_P(
    Cli, ExplainWhy,
    ::testing::Values(
        WhyCase{"right_host_wrong_port",
                {"--src", "10.0.1.5", "--dst", "140.82.112.3:80", "--host", "github.com"},
                "default",
                {"github:allow:wrong_port"},
                {}},
        WhyCase{"right_port_other_host",
                {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--host", "github.co"},
                "default",
                {},
                {}},
        WhyCase{"source_outside_from",
                {"--src", "10.0.9.9", "--dst", "140.82.112.3:443", "--host", "github.com"},
                "default",
                {"github:allow:source_not_in_from:cidr"},
                {}},
        WhyCase{"overridden_after_until",
                {"--src", "10.0.1.5", "--dst", "104.20.1.1:443", "--host", "www.pastebin.com",
                 "--now", "2100-01-01"},
                "no-paste-sites",
                {"web:allow:overridden:no-paste-sites"},
                {"no-paste-sites:mode_override_expired"}},
        WhyCase{"overridden_by_audit_before_until",
                {"--src", "10.0.1.5", "--dst", "104.20.1.1:443", "--host", "www.pastebin.com",
                 "--now", "2099-12-31"},
                "no-paste-sites",
                {"web:allow:overridden:no-paste-sites"},
                {"web:integrity_assumed", "no-paste-sites:mode_override_active"}},
        WhyCase{"guard_preempts",
                {"--src", "10.0.1.5", "--dst", "10.1.2.3:443", "--host", "github.com"},
                "builtin:guard",
                {"github:allow:preempted:builtin:guard"},
                {}},
        WhyCase{"integrity_resolve",
                {"--src", "10.0.1.5", "--dst", "185.199.108.153:443", "--host", "docs.github.io"},
                "github",
                {},
                {"github:integrity_assumed"}},
        WhyCase{"explicit_listener_assumes_nothing",
                {"--src", "10.0.1.5", "--dst", "140.82.112.3:443", "--host", "github.com",
                 "--proto", "connect", "--listener", "proxy"},
                "github",
                {},
                {}},
        WhyCase{"no_near_misses",
                {"--src", "10.0.9.9", "--dst", "1.2.3.4:443", "--host", "evil.example"},
                "default",
                {},
                {}}),
    [](const auto& test_info) { return std::string(test_info.param.label); });

TEST(ExplainWhy, TheExactShape) {
  const CliRun r =
      run({"explain", "--config", kGood, "--src", "10.0.9.9", "--dst", "140.82.112.3:22"});
  EXPECT_EQ(r.code, kExitOk) << r.err;
  EXPECT_EQ(
      r.out,
      "{\"decision\":\"deny\",\"rule\":\"default\",\"reason\":\"no rule matched; default "
      "deny\",\"near_misses\":[{\"rule\":\"github\",\"action\":\"allow\",\"why\":\"source_"
      "not_in_from\",\"source\":\"cidr\",\"reason\":\"140.82.112.3 is in 140.82.112.0/20, but "
      "the source is not in its from: 10.0.9.9 is outside 10.0.1.0/24\"}],\"notes\":[]}\n");
}

TEST(ExplainWhy, IdentityPartThatFailed) {
  const std::string config = kData + "/cli/identity.yaml";
  const auto source = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"explain",        "--config", config,
                                  "--src",          "10.0.1.5", "--dst",
                                  "3.18.12.63:443", "--host",   "api.stripe.com"};
    args.insert(args.end(), extra.begin(), extra.end());
    return near_misses(explain_json(run(args)));
  };
  using Strings = std::vector<std::string>;
  EXPECT_EQ(source({}), Strings{"payments-api:allow:source_not_in_from:no_pod"});
  EXPECT_EQ(source({"--namespace", "shop"}),
            Strings{"payments-api:allow:source_not_in_from:namespace"});
  EXPECT_EQ(source({"--namespace", "payments", "--labels", "app=web"}),
            Strings{"payments-api:allow:source_not_in_from:labels"});
  EXPECT_EQ(source({"--namespace", "payments", "--labels", "app=api"}), Strings{});
}

TEST(ExplainIntegrity, FailedIntegrityCannotHappenWithoutNetwork) {
  // explain needs no network: a host match counts, so a name that in
  // traffic would fail verify is reported as the entry's mode.
  const CliRun r = run({"explain", "--config", kGood, "--src", "10.0.1.5", "--dst",
                        "203.0.113.1:443", "--host", "github.com"});
  const auto o = explain_json(r);
  EXPECT_EQ(o.at("decision").as_string(), "allow");
  EXPECT_EQ(o.at("integrity").as_string(), "verify");
}

TEST(ExplainIdentity, TheSourcePodFromTheCommandLine) {
  const std::string config = kData + "/cli/identity.yaml";
  const auto decide = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{"explain",        "--config", config,
                                  "--src",          "10.0.1.5", "--dst",
                                  "3.18.12.63:443", "--host",   "api.stripe.com"};
    args.insert(args.end(), extra.begin(), extra.end());
    const CliRun r = run(args);
    EXPECT_EQ(r.code, kExitOk) << r.err;
    return std::string(explain_json(r).at("rule").as_string());
  };
  EXPECT_EQ(decide({"--namespace", "payments", "--labels", "app=api,tier=web"}), "payments-api");
  EXPECT_EQ(decide({"--namespace", "payments", "--labels", "app=web"}), "default");
  EXPECT_EQ(decide({"--namespace", "shop", "--namespace-labels", "team=billing"}), "payments-api");
  EXPECT_EQ(decide({}), "default") << "no namespace: a pod-less IP";
  // The namespace always carries its own name as a label.
  EXPECT_EQ(decide({"--namespace", "payments", "--labels", "app=api", "--namespace-labels",
                    "kubernetes.io/metadata.name=other"}),
            "payments-api");
}

struct BadUsage {
  const char* label;
  std::vector<std::string> args;
  const char* mentions;
};

class ExplainBadUsage : public ::testing::TestWithParam<BadUsage> {};

TEST_P(ExplainBadUsage, ExitsTwoWithOneSentence) {
  const BadUsage& c = GetParam();
  std::vector<std::string> storage{"egressd", "explain", "--config", kGood};
  storage.insert(storage.end(), c.args.begin(), c.args.end());
  std::vector<const char*> argv;
  for (const auto& a : storage) argv.push_back(a.c_str());
  std::ostringstream out;
  std::ostringstream err;
  EXPECT_EQ(run_cli(static_cast<int>(argv.size()), argv.data(), out, err), kExitUsage);
  EXPECT_EQ(out.str(), "");
  expect_one_sentence(err.str());
  EXPECT_THAT(err.str(), HasSubstr(c.mentions));
}

INSTANTIATE_TEST_SUITE_P(
    Cli, ExplainBadUsage,
    ::testing::Values(
        BadUsage{"bad_src", {"--src", "10.0.1", "--dst", "1.2.3.4:443"}, "--src"},
        BadUsage{"src_with_newline", {"--src", "10.0.0.1\nx", "--dst", "1.2.3.4:443"}, "--src"},
        BadUsage{"bad_dst_no_port", {"--src", "10.0.1.5", "--dst", "1.2.3.4"}, "--dst"},
        BadUsage{
            "bad_dst_v6_unbracketed", {"--src", "10.0.1.5", "--dst", "2001:db8::1:443"}, "--dst"},
        BadUsage{"bad_proto",
                 {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--proto", "udp"},
                 "--proto"},
        BadUsage{"bad_now",
                 {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--now", "2026-02-30"},
                 "--now"},
        BadUsage{"unknown_listener",
                 {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--listener", "nope"},
                 "--listener"},
        BadUsage{"missing_dst", {"--src", "10.0.1.5"}, "--dst"},
        BadUsage{"labels_without_namespace",
                 {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--labels", "app=a"},
                 "--namespace"},
        BadUsage{
            "bad_label_list",
            {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--namespace", "a", "--labels", "app"},
            "--labels"},
        BadUsage{
            "bad_label_key",
            {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--namespace", "a", "--labels", "-x=1"},
            "--labels"},
        BadUsage{"bad_namespace",
                 {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--namespace", "Pay"},
                 "--namespace"},
        BadUsage{
            "unknown_flag", {"--src", "10.0.1.5", "--dst", "1.2.3.4:443", "--bogus"}, "--bogus"}),
    [](const auto& test_info) { return std::string(test_info.param.label); });

TEST(Explain, UnreadableConfigExitsOne) {
  const CliRun r = run({"explain", "--config", kData + "/cli/nope.yaml", "--src", "10.0.1.5",
                        "--dst", "1.2.3.4:443"});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, "");
  EXPECT_EQ(lines(r.err).size(), 1U);
}

// --- test ----------------------------------------------------------------

TEST(TestCommand, ConfigOwnTestsOnly) {
  const CliRun r = run({"test", "--config", kGood});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_EQ(r.out, "2 passed, 0 failed\n");
}

TEST(TestCommand, OneFailingCaseThenSummary) {
  const std::string cases = kData + "/cli/cases.yaml";
  const CliRun r = run({"test", "--config", kGood, cases});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, cases +
                       ":4:3: expected allow, got deny (rule default: no rule matched; default "
                       "deny)\n5 passed, 1 failed\n");
  EXPECT_EQ(r.err, "");
}

TEST(TestCommand, UnknownListenerOrRuleInCasesFailsThatCase) {
  const std::string cases = kData + "/cli/cases_unknown_names.yaml";
  const CliRun r = run({"test", "--config", kGood, cases});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.out, cases + ":1:3: no listener is named \"nope\"\n" + cases +
                       ":2:3: no rule is named \"gitbub\" (expected a rule name, default or "
                       "builtin:...)\n3 passed, 2 failed\n");
}

TEST(TestCommand, NowChangesAnUntilOutcome) {
  const std::string cases = kData + "/cli/cases_until.yaml";
  const CliRun before = run({"test", "--config", kGood, cases, "--now", "2099-12-31"});
  EXPECT_EQ(before.code, kExitOk);
  EXPECT_EQ(before.out, "3 passed, 0 failed\n");
  const CliRun after = run({"test", "--config", kGood, cases, "--now", "2100-01-01"});
  EXPECT_EQ(after.code, kExitFailure);
  EXPECT_THAT(after.out, HasSubstr(cases + ":2:3: expected audit_deny (rule no-paste-sites), got "
                                           "deny (rule no-paste-sites: "));
  EXPECT_THAT(after.out, HasSubstr("\n2 passed, 1 failed\n"));
}

TEST(TestCommand, BadCasesFileIsInvalidInput) {
  const CliRun r = run({"test", "--config", kGood, kData + "/config/cases_not_a_list.yaml"});
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_THAT(r.err, HasSubstr("cases_not_a_list.yaml:"));
}

TEST(TestCommand, BadNowIsBadUsage) {
  const CliRun r = run({"test", "--config", kGood, "--now", "tomorrow"});
  EXPECT_EQ(r.code, kExitUsage);
  expect_one_sentence(r.err);
}

// --- top level -----------------------------------------------------------

TEST(TopLevel, Version) {
  const CliRun r = run({"--version"});
  EXPECT_EQ(r.code, kExitOk);
  EXPECT_EQ(r.out, std::string("egressd ") + kVersion + "\n");
}

TEST(TopLevel, Help) {
  for (const char* flag : {"--help", "-h"}) {
    const CliRun r = run({flag});
    EXPECT_EQ(r.code, kExitOk);
    for (const char* cmd : {"run", "check", "explain", "test", "learn"})
      EXPECT_THAT(r.out, HasSubstr(cmd));
    // run's options on the first page: it is the default command.
    EXPECT_THAT(r.out, HasSubstr("--config FILE"));
    EXPECT_THAT(r.out, HasSubstr("--log-level"));
  }
  const CliRun sub = run({"explain", "--help"});
  EXPECT_EQ(sub.code, kExitOk);
  EXPECT_THAT(sub.out, HasSubstr("--listener"));
}

TEST(TopLevel, UnknownSubcommandIsBadUsage) {
  const CliRun r = run({"frobnicate", "--config", kGood});
  EXPECT_EQ(r.code, kExitUsage);
  expect_one_sentence(r.err);
  EXPECT_THAT(r.err, HasSubstr("frobnicate"));
}

TEST(TopLevel, UnknownFlagIsBadUsage) {
  const CliRun r = run({"check", "--config", kGood, "--frobnicate"});
  EXPECT_EQ(r.code, kExitUsage);
  expect_one_sentence(r.err);
}

TEST(TopLevel, NoArgumentsIsBadUsage) {
  const CliRun r = run({});
  EXPECT_EQ(r.code, kExitUsage);
  expect_one_sentence(r.err);
}

TEST(TopLevel, BadLogLevelIsBadUsage) {
  const CliRun r = run({"--config", kGood, "--log-level", "loud"});
  EXPECT_EQ(r.code, kExitUsage);
  expect_one_sentence(r.err);
}

TEST(TopLevel, ConfigAloneDefaultsToRun) {
  std::string seen_path;
  std::string seen_level;
  const RunGateway gateway = [&](const std::string& path, const std::string& level, std::ostream&) {
    seen_path = path;
    seen_level = level;
    return 0;
  };
  EXPECT_EQ(run({"--config", kGood, "--log-level", "debug"}, gateway).code, kExitOk);
  EXPECT_EQ(seen_path, kGood);
  EXPECT_EQ(seen_level, "debug");
  EXPECT_EQ(run({"run", "--config", kGood}, gateway).code, kExitOk);
  EXPECT_EQ(seen_level, "info");
}

TEST(TopLevel, RunWithoutGatewayIsARuntimeError) {
  const CliRun r = run({"--config", kGood});
  EXPECT_EQ(r.code, kExitFailure);
  expect_one_sentence(r.err);
  EXPECT_THAT(r.err, HasSubstr("without the gateway"));
}

TEST(TopLevel, GatewayExceptionIsOneSentence) {
  const RunGateway gateway = [](const std::string&, const std::string&, std::ostream&) -> int {
    throw std::runtime_error("cannot bind 0.0.0.0:15001: address in use");
  };
  const CliRun r = run({"--config", kGood}, gateway);
  EXPECT_EQ(r.code, kExitFailure);
  EXPECT_EQ(r.err, "egressd: cannot bind 0.0.0.0:15001: address in use\n");
}

}  // namespace
}  // namespace egressd::cli
