// run_tests(): the engine behind `egressd test` and config `tests:`.

#include <gtest/gtest.h>

#include "egressd/policy/policy.hpp"
#include "unit/policy/policy_test_util.hpp"

namespace egressd::policy::testing {
namespace {

config::TestCase tcase(std::string_view src, std::string_view dst, std::optional<std::string> name,
                       config::Expect expect, std::optional<std::string> rule = std::nullopt,
                       int line = 0) {
  config::TestCase c;
  c.src = ip(src);
  c.dst = Endpoint::parse(dst).value();
  c.host = std::move(name);
  c.expect = expect;
  c.rule = std::move(rule);
  c.pos = {"policy.yaml", line, 5};
  return c;
}

config::ListenerSpec listener(std::string name, config::ListenerMode mode) {
  config::ListenerSpec l;
  l.name = std::move(name);
  l.mode = mode;
  return l;
}

TEST(RunTests, JudgesCasesWithoutNetwork) {
  const auto p = CompiledPolicy::compile(
      spec({allow("github",
                  {host("github.com", {}, Integrity::verify), net("140.82.112.0/20", {port(22)})},
                  {"10.0.1.0/24"}),
            deny("paste", {host("**.pastebin.com")})}),
      {});
  const std::vector<config::ListenerSpec> listeners = {
      listener("proxy", config::ListenerMode::explicit_proxy),
      listener("transparent", config::ListenerMode::redirect),
  };
  std::vector<config::TestCase> cases = {
      tcase("10.0.1.5", "140.82.112.3:443", "github.com", config::Expect::allow, "github", 10),
      tcase("10.0.9.9", "1.2.3.4:443", "evil.example", config::Expect::deny, std::nullopt, 11),
      tcase("10.0.1.5", "1.2.3.4:443", "github.com", config::Expect::allow, "default", 12),
      tcase("10.0.1.5", "1.2.3.4:443", "a.pastebin.com", config::Expect::deny, "paste", 13),
      tcase("10.0.1.5", "1.2.3.4:443", std::nullopt, config::Expect::deny, "builtin:no-sni", 14),
      tcase("10.0.1.5", "1.2.3.4:22", std::nullopt, config::Expect::allow, std::nullopt, 15),
      tcase("10.0.1.5", "1.2.3.4:443", "github.com", config::Expect::allow, "github", 16),
      tcase("10.0.1.5", "1.2.3.4:443", "github.com", config::Expect::allow, "github", 17),
  };
  cases[4].proto = Proto::tls;  // a ClientHello without SNI
  cases[5].proto = Proto::tcp;
  cases[6].listener = "proxy";
  cases[7].listener = "nope";
  const auto results = run_tests(*p, listeners, cases, kToday);
  ASSERT_EQ(results.size(), cases.size());
  EXPECT_TRUE(results[0].passed) << results[0].failure;
  EXPECT_EQ(results[0].verdict.integrity, Integrity::verify);
  EXPECT_TRUE(results[1].passed) << results[1].failure;
  // AssumeIntegrity: verify passes whatever the IP, so the rule is github.
  EXPECT_FALSE(results[2].passed);
  EXPECT_EQ(results[2].failure,
            "case at policy.yaml:12: expected allow (rule default), got allow (rule github: host "
            "github.com matched github.com)");
  EXPECT_TRUE(results[3].passed) << results[3].failure;
  EXPECT_TRUE(results[4].passed) << results[4].failure;
  EXPECT_FALSE(results[5].passed);
  EXPECT_EQ(results[5].failure,
            "case at policy.yaml:15: expected allow, got deny (rule default: no rule matched; "
            "default deny)");
  EXPECT_TRUE(results[6].passed) << results[6].failure;  // explicit listener
  EXPECT_FALSE(results[7].passed);
  EXPECT_EQ(results[7].failure, "case at policy.yaml:17: unknown listener \"nope\"");
  EXPECT_EQ(results[0].test, &cases[0]);
}

}  // namespace
}  // namespace egressd::policy::testing
