// Table-driven tests of the decision (contract "Decision", rules 2-7, 9-11).

#include "egressd/policy/policy.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "unit/policy/policy_test_util.hpp"

namespace egressd::policy::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Case {
  std::string what;
  Flow flow;
  Decision decision;
  std::string rule;
  std::string reason_has = {};
};

void run_table(const CompiledPolicy& policy, const std::vector<Case>& cases,
               const NameAnswers& answers) {
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const Outcome o = policy.decide(c.flow.facts(), answers);
    ASSERT_FALSE(o.needs_lookup) << o.lookup_name;
    EXPECT_EQ(to_string(o.verdict.decision), to_string(c.decision)) << o.verdict.reason;
    EXPECT_EQ(o.verdict.rule, c.rule) << o.verdict.reason;
    if (!c.reason_has.empty()) {
      EXPECT_THAT(o.verdict.reason, HasSubstr(c.reason_has));
    }
    if (o.verdict.decision == Decision::deny) {
      EXPECT_FALSE(o.verdict.connect_to.has_value());
    }
  }
}

void run_table(const CompiledPolicy& policy, const std::vector<Case>& cases) {
  const AssumeIntegrity assume;
  run_table(policy, cases, assume);
}

constexpr auto kAllow = Decision::allow;
constexpr auto kDeny = Decision::deny;
constexpr auto kAudit = Decision::audit_deny;

TEST(PolicyNames, PatternsAndCanonicalisation) {
  const auto p = CompiledPolicy::compile(
      spec({
          allow("exact", {host("example.com")}),
          allow("single", {host("*.wild.test")}),
          allow("double", {host("**.deep.test")}),
          allow("allowed", {host("allowed.test"), host("*.allowed.test"), host("**.allowed.test")}),
          allow("ip-pattern", {host("1.2.3.4")}),
          allow("v6net", {net("2001:db8::/32")}),
      }),
      {});
  run_table(
      *p, {
              {"exact",
               {.name = "example.com"},
               kAllow,
               "exact",
               "host example.com matched example.com"},
              {"uppercase", {.name = "ExAmPlE.CoM"}, kAllow, "exact", "host example.com matched"},
              {"trailing dot", {.name = "example.com."}, kAllow, "exact"},
              {"exact does not match below",
               {.name = "a.example.com"},
               kDeny,
               "default",
               "no rule matched; default deny"},
              {"exact does not match suffix", {.name = "xexample.com"}, kDeny, "default"},
              {"*. one label", {.name = "a.wild.test"}, kAllow, "single", "matched *.wild.test"},
              {"*. uppercase", {.name = "A.WILD.TEST."}, kAllow, "single"},
              {"*. not two labels", {.name = "a.b.wild.test"}, kDeny, "default"},
              {"*. not itself", {.name = "wild.test"}, kDeny, "default"},
              {"**. one label", {.name = "a.deep.test"}, kAllow, "double", "matched **.deep.test"},
              {"**. three labels", {.name = "a.b.c.deep.test"}, kAllow, "double"},
              {"**. not itself", {.name = "deep.test"}, kDeny, "default"},
              {"**. not a longer label", {.name = "xdeep.test"}, kDeny, "default"},
              {"allowed.test itself", {.name = "allowed.test"}, kAllow, "allowed"},
              {"allowed.test as a prefix", {.name = "allowed.test.evil.test"}, kDeny, "default"},
              {"allowed.test inside a label", {.name = "notallowed.test"}, kDeny, "default"},
              {"allowed.test below", {.name = "x.y.allowed.test"}, kAllow, "allowed"},
              {"IP literal matches no host pattern",
               {.dst = "9.9.9.9", .name = "1.2.3.4"},
               kDeny,
               "default"},
              {"IPv6 literal in brackets, by cidr",
               {.dst = "2001:db8::1", .name = "[2001:DB8::1]"},
               kAllow,
               "v6net",
               "2001:db8::1 is in 2001:db8::/32"},
              {"no name", {.dst = "9.9.9.9"}, kDeny, "default"},
          });
}

TEST(PolicyNames, InvalidNamesAreDeniedAtOnce) {
  // Even a policy that allows everything: rule 2 comes first, in every mode.
  const auto p = CompiledPolicy::compile(
      spec({allow("all", {net("0.0.0.0/0")})}, Action::allow, PolicyMode::audit), {});
  const std::string nul_name("a\0b.com", 7);
  run_table(
      *p,
      {
          {"empty label", {.name = "a..b.com"}, kDeny, "builtin:invalid-name", "an empty label"},
          {"leading dot", {.name = ".a.com"}, kDeny, "builtin:invalid-name"},
          {"space", {.name = "a b.com"}, kDeny, "builtin:invalid-name", "a byte other than"},
          {"NUL", {.name = nul_name}, kDeny, "builtin:invalid-name"},
          {"empty", {.name = ""}, kDeny, "builtin:invalid-name", "an empty name"},
          {"lone dot", {.name = "."}, kDeny, "builtin:invalid-name"},
          {"too long",
           {.name = std::string(300, 'a')},
           kDeny,
           "builtin:invalid-name",
           "longer than 253"},
          {"long label", {.name = std::string(64, 'a') + ".com"}, kDeny, "builtin:invalid-name"},
          {"underscore", {.name = "a_b.com"}, kDeny, "builtin:invalid-name"},
          {"non-ASCII", {.name = "b\xC3\xA4r.com"}, kDeny, "builtin:invalid-name"},
          {"bad bracket literal", {.name = "[1.2.3.4]"}, kDeny, "builtin:invalid-name"},
      });
  // The raw bytes never reach the reason.
  Flow f{.name = "evil\"\n<script>.com"};
  const auto o = p->decide(f.facts(), AssumeIntegrity{});
  EXPECT_THAT(o.verdict.reason, Not(HasSubstr("script")));
}

TEST(PolicyMatch, CidrsPortsAndSources) {
  const auto p = CompiledPolicy::compile(
      spec({
          allow("v4", {net("140.82.112.0/20", {port(22), ports(8000, 8100)})}),
          allow("v6", {net("2606:50c0::/32")}),
          allow("from-net", {host("src.test")}, {"10.0.1.0/24", "fd00:1::/64"}),
          allow("from-mapped", {host("mapped.test")}, {"::ffff:10.9.0.0/112"}),
          allow("single-port", {host("port.test", {port(443)})}),
      }),
      {});
  run_table(
      *p,
      {
          {"v4 port", {.dst = "140.82.112.3", .port = 22}, kAllow, "v4", "140.82.112.3 is in"},
          {"v4 range low", {.dst = "140.82.127.255", .port = 8000}, kAllow, "v4"},
          {"v4 range high", {.dst = "140.82.112.3", .port = 8100}, kAllow, "v4"},
          {"v4 range above", {.dst = "140.82.112.3", .port = 8101}, kDeny, "default"},
          {"v4 range below", {.dst = "140.82.112.3", .port = 7999}, kDeny, "default"},
          {"v4 outside", {.dst = "140.82.128.0", .port = 22}, kDeny, "default"},
          {"v4-mapped dst", {.dst = "::ffff:140.82.112.3", .port = 22}, kAllow, "v4"},
          {"v6", {.dst = "2606:50c0:8000::153", .port = 1}, kAllow, "v6"},
          {"v6 outside", {.dst = "2606:50c1::1"}, kDeny, "default"},
          {"from in", {.src = "10.0.1.77", .name = "src.test"}, kAllow, "from-net"},
          {"from v6 in", {.src = "fd00:1::5", .name = "src.test"}, kAllow, "from-net"},
          {"from out", {.src = "10.0.2.1", .name = "src.test"}, kDeny, "default"},
          {"from v4-mapped src",
           {.src = "::ffff:10.0.1.9", .name = "src.test"},
           kAllow,
           "from-net"},
          {"from mapped block", {.src = "10.9.0.3", .name = "mapped.test"}, kAllow, "from-mapped"},
          {"port ok", {.port = 443, .name = "port.test"}, kAllow, "single-port"},
          {"port no", {.port = 80, .name = "port.test"}, kDeny, "default"},
      });
}

TEST(PolicyPrecedence, DenyOverridesAllowInEitherOrder) {
  const auto forward = CompiledPolicy::compile(spec({
                                                   allow("allow-first", {host("**.x.test")}),
                                                   deny("deny-a", {host("bad.x.test")}),
                                                   deny("deny-b", {host("*.x.test")}),
                                                   allow("allow-last", {host("bad.x.test")}),
                                               }),
                                               {});
  const auto reversed = CompiledPolicy::compile(spec({
                                                    allow("allow-last", {host("bad.x.test")}),
                                                    deny("deny-b", {host("*.x.test")}),
                                                    deny("deny-a", {host("bad.x.test")}),
                                                    allow("allow-first", {host("**.x.test")}),
                                                }),
                                                {});
  run_table(*forward, {
                          {"deny wins, first deny named",
                           {.name = "bad.x.test"},
                           kDeny,
                           "deny-a",
                           "host bad.x.test matched bad.x.test"},
                          {"only the single-star deny", {.name = "ok.x.test"}, kDeny, "deny-b"},
                          {"allow below", {.name = "a.ok.x.test"}, kAllow, "allow-first"},
                      });
  run_table(*reversed, {
                           {"deny wins, first deny named", {.name = "bad.x.test"}, kDeny, "deny-b"},
                           {"only the single-star deny", {.name = "ok.x.test"}, kDeny, "deny-b"},
                           {"allow below", {.name = "a.ok.x.test"}, kAllow, "allow-first"},
                       });
  // Several allow rules: the first in the file is named.
  const auto allows = CompiledPolicy::compile(
      spec({allow("b", {net("10.0.0.0/8")}), allow("a", {net("10.1.0.0/16")})}, Action::deny), {});
  run_table(*allows, {{"first allow", {.dst = "10.1.2.3"}, kAllow, "b"}});
  const auto allows_rev = CompiledPolicy::compile(
      spec({allow("a", {net("10.1.0.0/16")}), allow("b", {net("10.0.0.0/8")})}), {});
  run_table(*allows_rev, {{"first allow", {.dst = "10.1.2.3"}, kAllow, "a"}});
  // A deny cidr entry matches with a name too: a deny entry needs no name.
  const auto cidr_deny = CompiledPolicy::compile(
      spec({allow("h", {host("h.test")}), deny("net", {net("93.184.216.0/24")})}), {});
  run_table(*cidr_deny,
            {{"deny by cidr", {.name = "h.test"}, kDeny, "net", "is in 93.184.216.0/24"}});
}

TEST(PolicyAudit, RuleModesUntilAndPolicyMode) {
  auto audit_rule = [](std::string name, std::string pattern,
                       std::optional<std::chrono::sys_days> until,
                       PolicyMode mode = PolicyMode::audit) {
    auto r = deny(std::move(name), {host(std::move(pattern))});
    r.mode = mode;
    r.until = until;
    return r;
  };
  const auto p = CompiledPolicy::compile(
      spec({
          audit_rule("audit-past", "past.test", day(2026, 11, 25)),
          audit_rule("audit-today", "today.test", kToday),
          audit_rule("audit-future", "future.test", day(2027, 1, 1)),
          audit_rule("audit-forever", "**.both.test", std::nullopt),
          deny("enforce", {host("*.both.test")}),
          allow("allow-all-hosts", {host("**.test"), host("only-audit.example")}),
          audit_rule("audit-only", "only-audit.example", std::nullopt),
      }),
      {});
  run_table(
      *p, {
              {"until in the past: enforcing again", {.name = "past.test"}, kDeny, "audit-past"},
              {"until today: still audit",
               {.name = "today.test"},
               kAudit,
               "audit-today",
               "audit: host today.test matched today.test; would deny"},
              {"until in the future", {.name = "future.test"}, kAudit, "audit-future"},
              {"audit rule first, enforcing rule wins", {.name = "a.both.test"}, kDeny, "enforce"},
              {"only the audit rule", {.name = "a.b.both.test"}, kAudit, "audit-forever"},
              {"allow then audit deny later in file",
               {.name = "only-audit.example"},
               kAudit,
               "audit-only"},
              {"plain allow", {.name = "x.test"}, kAllow, "allow-all-hosts"},
          });
  // Audit deny rule with nothing else: default deny (enforcing) still denies;
  // default allow turns into audit_deny.
  const std::vector<config::RuleSpec> only_audit = {
      audit_rule("watch", "watch.test", std::nullopt)};
  run_table(*CompiledPolicy::compile(spec(only_audit, Action::deny), {}),
            {{"enforcing default deny", {.name = "watch.test"}, kDeny, "default"}});
  run_table(
      *CompiledPolicy::compile(spec(only_audit, Action::allow), {}),
      {{"default allow", {.name = "watch.test"}, kAudit, "watch"},
       {"default allow, no rule", {.name = "other.test"}, kAllow, "default", "default allow"}});
  // policy.mode audit: every deny without its own mode is audit; default
  // and integrity pass as audit_deny; a rule's own `enforce` still denies.
  auto enforce_rule = audit_rule("enforced", "enforced.test", std::nullopt, PolicyMode::enforce);
  const auto audit_policy =
      CompiledPolicy::compile(spec({deny("plain-deny", {host("deny.test")}), enforce_rule,
                                    allow("verify", {host("verify.test", {}, Integrity::verify)})},
                                   Action::deny, PolicyMode::audit),
                              {});
  TableAnswers answers;
  answers.ok("verify.test", {"1.1.1.1"}).ok("deny.test", {"93.184.216.34"});
  run_table(*audit_policy,
            {
                {"deny rule in audit", {.name = "deny.test"}, kAudit, "plain-deny"},
                {"own enforce mode", {.name = "enforced.test"}, kDeny, "enforced"},
                {"default deny in audit",
                 {.name = "nothing.test"},
                 kAudit,
                 "default",
                 "audit: no rule matched; default deny; would deny"},
                {"integrity in audit",
                 {.name = "verify.test"},
                 kAudit,
                 "builtin:integrity",
                 "does not resolve to 93.184.216.34"},
                {"invalid name is not audited", {.name = "a..b"}, kDeny, "builtin:invalid-name"},
                {"guard is not audited",
                 {.dst = "127.0.0.1", .name = "nothing.test"},
                 kDeny,
                 "builtin:guard"},
            },
            answers);
  // audit_deny carries the allow's integrity and destination.
  const auto o = p->decide(Flow{.name = "only-audit.example"}.facts(), AssumeIntegrity{});
  EXPECT_EQ(o.verdict.integrity, Integrity::trust);
  EXPECT_EQ(o.verdict.connect_to, ip("93.184.216.34"));
  EXPECT_TRUE(o.verdict.matched_by_host);
}

TEST(PolicyIntegrity, VerifyResolveTrust) {
  const auto p = CompiledPolicy::compile(
      spec({
          allow("verify", {host("v.test", {}, Integrity::verify)}),
          allow("resolve", {host("r.test", {}, Integrity::resolve)}),
          allow("trust", {host("t.test", {}, Integrity::trust)}),
          allow("resolve-private", {host("rp.test", {}, Integrity::resolve)}),
      }),
      {});
  TableAnswers answers;
  answers.ok("v.test", {"1.1.1.1", "93.184.216.34"})
      .ok("bad.v.test", {"1.1.1.1"})
      .ok("r.test", {"10.0.0.1", "127.0.0.1", "198.51.100.7", "198.51.100.8"})
      .ok("rp.test", {"10.0.0.1", "10.0.0.2"})
      .ok("empty.test", {});
  const auto decide = [&](Flow f) { return p->decide(f.facts(), answers); };

  auto o = decide({.name = "v.test"});
  EXPECT_EQ(o.verdict.decision, Decision::allow);
  EXPECT_EQ(o.verdict.integrity, Integrity::verify);
  EXPECT_EQ(o.verdict.connect_to, ip("93.184.216.34"));
  EXPECT_TRUE(o.verdict.matched_by_host);

  o = decide({.dst = "8.8.8.8", .name = "V.TEST."});
  EXPECT_EQ(o.verdict.decision, Decision::deny);
  EXPECT_EQ(o.verdict.rule, "builtin:integrity");
  EXPECT_EQ(o.verdict.reason, "v.test does not resolve to 8.8.8.8 (verify)");

  // resolve: the client's IP is ignored; the first answer past the guard.
  o = decide({.dst = "8.8.8.8", .name = "r.test"});
  EXPECT_EQ(o.verdict.decision, Decision::allow);
  EXPECT_EQ(o.verdict.integrity, Integrity::resolve);
  EXPECT_EQ(o.verdict.connect_to, ip("198.51.100.7"));
  EXPECT_THAT(o.verdict.reason, HasSubstr("connecting to 198.51.100.7 (resolve)"));

  // resolve with only guarded answers: the guard denies.
  o = decide({.name = "rp.test"});
  EXPECT_EQ(o.verdict.rule, "builtin:guard");
  EXPECT_THAT(o.verdict.reason, HasSubstr("10.0.0.1 is private"));

  o = decide({.dst = "203.0.113.9", .name = "t.test"});
  EXPECT_EQ(o.verdict.decision, Decision::allow);
  EXPECT_EQ(o.verdict.integrity, Integrity::trust);
  EXPECT_EQ(o.verdict.connect_to, ip("203.0.113.9"));

  // Explicit mode: dst is the gateway's own resolution, no check.
  o = decide({.dst = "8.8.8.8", .name = "v.test", .transparent = false});
  EXPECT_FALSE(o.needs_lookup);
  EXPECT_EQ(o.verdict.decision, Decision::allow);
  EXPECT_EQ(o.verdict.integrity, Integrity::verify);
  EXPECT_EQ(o.verdict.connect_to, ip("8.8.8.8"));
}

TEST(PolicyIntegrity, FailuresDenyEvenUnderDefaultAllow) {
  const auto p =
      CompiledPolicy::compile(spec({allow("verify", {host("**.v.test", {}, Integrity::verify)}),
                                    allow("resolve", {host("**.v.test", {}, Integrity::resolve)})},
                                   Action::allow),
                              {});
  TableAnswers answers;
  answers.failed("nx.v.test", "NXDOMAIN").ok("nodata.v.test", {}).ok("other.v.test", {"1.1.1.1"});
  run_table(*p,
            {
                {"DNS failure",
                 {.name = "nx.v.test"},
                 kDeny,
                 "builtin:integrity",
                 "DNS lookup for nx.v.test failed: NXDOMAIN"},
                {"wrong address; resolve rule picks 1.1.1.1",
                 {.name = "other.v.test"},
                 kAllow,
                 "resolve"},
                {"no addresses",
                 {.name = "nodata.v.test"},
                 kDeny,
                 "builtin:integrity",
                 "does not resolve to"},
                {"no host matched: default allow", {.name = "x.other.test"}, kAllow, "default"},
            },
            answers);
}

TEST(PolicyIntegrity, TwoPhaseLookup) {
  const auto p = CompiledPolicy::compile(
      spec({
          allow("verify-first", {host("**.a.test", {}, Integrity::verify)}),
          allow("cidr-second", {net("93.184.216.0/24")}),
          deny("enforced", {host("denied.a.test")}),
          allow("cidr-first", {net("198.51.100.0/24")}),
          allow("verify-later", {host("**.b.test", {}, Integrity::verify)}),
          allow("trust-first",
                {host("t.c.test", {}, Integrity::trust), host("t.c.test", {}, Integrity::verify)}),
      }),
      {});
  // Naming depends on the answer (verify-first may pass): ask, once, with
  // the canonical name.
  TableAnswers none;
  auto o = p->decide(Flow{.name = "X.A.TEST."}.facts(), none);
  EXPECT_TRUE(o.needs_lookup);
  EXPECT_EQ(o.lookup_name, "x.a.test");
  EXPECT_EQ(none.calls, 1);
  TableAnswers with;
  with.ok("x.a.test", {"93.184.216.34"});
  o = p->decide(Flow{.name = "X.A.TEST."}.facts(), with);
  EXPECT_FALSE(o.needs_lookup);
  EXPECT_EQ(o.verdict.rule, "verify-first");
  EXPECT_EQ(with.calls, 1);
  TableAnswers wrong;
  wrong.ok("x.a.test", {"1.1.1.1"});
  o = p->decide(Flow{.name = "x.a.test"}.facts(), wrong);
  EXPECT_FALSE(o.needs_lookup);
  EXPECT_EQ(o.verdict.rule, "cidr-second");
  EXPECT_FALSE(o.verdict.integrity.has_value());

  // An enforcing deny decides without asking.
  none.calls = 0;
  o = p->decide(Flow{.name = "denied.a.test"}.facts(), none);
  EXPECT_FALSE(o.needs_lookup);
  EXPECT_EQ(o.verdict.rule, "enforced");
  EXPECT_EQ(none.calls, 0);

  // An earlier cidr rule decides: the later host entry cannot change the
  // outcome or the name.
  o = p->decide(Flow{.dst = "198.51.100.1", .name = "x.b.test"}.facts(), none);
  EXPECT_FALSE(o.needs_lookup);
  EXPECT_EQ(o.verdict.rule, "cidr-first");
  EXPECT_EQ(none.calls, 0);

  // trust first in the rule: passes without DNS.
  o = p->decide(Flow{.dst = "8.8.8.8", .name = "t.c.test"}.facts(), none);
  EXPECT_FALSE(o.needs_lookup);
  EXPECT_EQ(o.verdict.rule, "trust-first");
  EXPECT_EQ(o.verdict.integrity, Integrity::trust);

  // No host entry matched: nothing to ask.
  o = p->decide(Flow{.dst = "8.8.8.8", .name = "unrelated.test"}.facts(), none);
  EXPECT_FALSE(o.needs_lookup);
  EXPECT_EQ(o.verdict.rule, "default");
  EXPECT_EQ(none.calls, 0);

  // AssumeIntegrity: never asks; resolve has nowhere to connect.
  const auto r =
      CompiledPolicy::compile(spec({allow("r", {host("r.test", {}, Integrity::resolve)})}), {});
  o = r->decide(Flow{.dst = "203.0.113.7", .name = "r.test"}.facts(), AssumeIntegrity{});
  EXPECT_FALSE(o.needs_lookup);
  EXPECT_EQ(o.verdict.decision, Decision::allow);
  EXPECT_EQ(o.verdict.integrity, Integrity::resolve);
  EXPECT_FALSE(o.verdict.connect_to.has_value());
}

// Contract rule 7's precedence: invalid-name, then the guard, then the
// policy; the address-only classes before any rule, the private classes as
// soon as a host entry matched.
TEST(PolicyGuard, PrecedenceOverRulesAndIntegrity) {
  const auto p =
      CompiledPolicy::compile(spec({
                                  deny("block", {host("bad.test"), net("169.254.169.254/32")}),
                                  allow("web", {host("web.test", {}, Integrity::verify)}),
                                  allow("res", {host("res.test", {}, Integrity::resolve)}),
                              }),
                              {}, {ip("192.0.2.1")});
  TableAnswers dns;
  dns.ok("web.test", {"93.184.216.34"}).ok("res.test", {"93.184.216.34"});
  run_table(
      *p,
      {
          {"metadata, no rule matches",
           {.dst = "169.254.169.254", .port = 80},
           kDeny,
           "builtin:guard",
           "cloud metadata"},
          {"metadata, a deny rule matches too", {.dst = "169.254.169.254"}, kDeny, "builtin:guard"},
          {"metadata with a name that fails integrity",
           {.dst = "169.254.169.254", .name = "web.test"},
           kDeny,
           "builtin:guard"},
          {"own listener with a name that fails integrity",
           {.dst = "192.0.2.1", .port = 15001, .name = "web.test"},
           kDeny,
           "builtin:guard",
           "address of this gateway"},
          {"own listener, unknown name",
           {.dst = "192.0.2.1", .name = "x.test"},
           kDeny,
           "builtin:guard"},
          {"invalid name before the guard",
           {.dst = "127.0.0.1", .name = "a..b"},
           kDeny,
           "builtin:invalid-name"},
          {"loopback, ECH refused: guard first",
           {.dst = "127.0.0.1", .ech = true},
           kDeny,
           "builtin:guard"},
          {"private before a deny host rule",
           {.dst = "10.1.2.3", .name = "bad.test"},
           kDeny,
           "builtin:guard",
           "reached by host name"},
          {"private before integrity",
           {.dst = "10.1.2.3", .name = "web.test"},
           kDeny,
           "builtin:guard"},
          {"private, no host entry matched: the policy",
           {.dst = "10.1.2.3", .name = "x.test"},
           kDeny,
           "default"},
          {"private dst, resolve entry connects to its own answer",
           {.dst = "10.1.2.3", .name = "res.test"},
           kAllow,
           "res"},
          {"public, deny rule", {.name = "bad.test"}, kDeny, "block"},
          {"public, integrity fails",
           {.dst = "198.51.100.7", .name = "web.test"},
           kDeny,
           "builtin:integrity"},
      },
      dns);
  // The guard's class is reported for the metric label.
  auto o = p->decide(Flow{.dst = "169.254.169.254"}.facts(), dns);
  EXPECT_EQ(o.verdict.guard_class, "cloud_metadata");
  o = p->decide(Flow{.dst = "192.0.2.1"}.facts(), dns);
  EXPECT_EQ(o.verdict.guard_class, "own_host");
  o = p->decide(Flow{.dst = "10.1.2.3", .name = "web.test"}.facts(), dns);
  EXPECT_EQ(o.verdict.guard_class, "private");
  o = p->decide(Flow{.dst = "fe80::1"}.facts(), dns);
  EXPECT_EQ(o.verdict.guard_class, "link_local");
  o = p->decide(Flow{.name = "web.test"}.facts(), dns);
  EXPECT_TRUE(o.verdict.guard_class.empty());

  // Audit never lifts the guard, and under audit the guard still names
  // itself first.
  const auto a = CompiledPolicy::compile(
      spec({allow("web", {host("web.test")})}, Action::deny, PolicyMode::audit), {});
  run_table(
      *a,
      {{"audit: metadata", {.dst = "169.254.169.254"}, kDeny, "builtin:guard"},
       {"audit: private by host", {.dst = "10.9.9.9", .name = "web.test"}, kDeny, "builtin:guard"}},
      dns);

  // Explicit mode: dst is the gateway's own resolution; the same order.
  run_table(*p,
            {{"explicit: resolved to loopback",
              {.dst = "127.0.0.1", .name = "web.test", .transparent = false},
              kDeny,
              "builtin:guard"},
             {"explicit: resolved to private",
              {.dst = "10.0.0.8", .name = "res.test", .transparent = false},
              kDeny,
              "builtin:guard"},
             {"explicit: public", {.name = "res.test", .transparent = false}, kAllow, "res"}},
            dns);
}

TEST(PolicyGuard, ClassesAndLifting) {
  const auto p = CompiledPolicy::compile(
      spec({
          allow("hosts", {host("**.test")}),
          allow("world", {net("0.0.0.0/0"), net("::/0")}),
          allow("metadata", {net("169.254.169.254/32", {port(80)})}, {"10.0.5.0/24"}),
          allow("priv-net", {net("10.1.0.0/16")}),
          allow("priv-wide", {net("10.0.0.0/7")}),
      }),
      {}, {ip("192.0.2.1"), ip("2001:db8::1")});
  run_table(
      *p,
      {
          {"own address, any port",
           {.dst = "192.0.2.1", .port = 9901},
           kDeny,
           "builtin:guard",
           "192.0.2.1 is an address of this gateway"},
          {"own v6 address", {.dst = "2001:db8::1"}, kDeny, "builtin:guard"},
          {"loopback", {.dst = "127.0.0.2"}, kDeny, "builtin:guard", "127.0.0.2 is loopback"},
          {"v6 loopback", {.dst = "::1"}, kDeny, "builtin:guard"},
          {"mapped loopback", {.dst = "::ffff:127.0.0.1"}, kDeny, "builtin:guard"},
          {"unspecified", {.dst = "0.0.0.0"}, kDeny, "builtin:guard"},
          {"v6 unspecified", {.dst = "::"}, kDeny, "builtin:guard"},
          {"multicast", {.dst = "239.1.1.1"}, kDeny, "builtin:guard"},
          {"v6 multicast", {.dst = "ff02::1"}, kDeny, "builtin:guard"},
          {"broadcast", {.dst = "255.255.255.255"}, kDeny, "builtin:guard"},
          {"metadata via 0.0.0.0/0",
           {.dst = "169.254.169.254", .port = 80},
           kDeny,
           "builtin:guard",
           "169.254.169.254 is link-local (cloud metadata); no allow cidr entry inside "
           "169.254.0.0/16 covers it"},
          {"metadata lifted by a narrow cidr",
           {.src = "10.0.5.9", .dst = "169.254.169.254", .port = 80},
           kAllow,
           "world"},
          {"metadata: lifting entry's port differs",
           {.src = "10.0.5.9", .dst = "169.254.169.254", .port = 443},
           kDeny,
           "builtin:guard"},
          {"metadata: lifting rule's from excludes src",
           {.src = "10.0.6.9", .dst = "169.254.169.254", .port = 80},
           kDeny,
           "builtin:guard"},
          {"v6 link-local", {.dst = "fe80::1"}, kDeny, "builtin:guard", "link-local"},
          {"private via cidr", {.dst = "10.2.0.1"}, kAllow, "world"},
          {"private via host",
           {.dst = "10.2.0.1", .name = "a.test"},
           kDeny,
           "builtin:guard",
           "10.2.0.1 is private and was reached by host name; no allow cidr entry inside "
           "10.0.0.0/8 covers it"},
          {"private via host, lifted", {.dst = "10.1.0.1", .name = "a.test"}, kAllow, "hosts"},
          {"172.16/12 via host", {.dst = "172.20.0.1", .name = "a.test"}, kDeny, "builtin:guard"},
          {"192.168/16 via host", {.dst = "192.168.1.1", .name = "a.test"}, kDeny, "builtin:guard"},
          {"CGNAT via host", {.dst = "100.64.0.1", .name = "a.test"}, kDeny, "builtin:guard"},
          {"ULA via host", {.dst = "fd12::1", .name = "a.test"}, kDeny, "builtin:guard"},
          {"6to4 via host", {.dst = "2002:c000:201::1", .name = "a.test"}, kDeny, "builtin:guard"},
          {"NAT64 via host", {.dst = "64:ff9b::a00:1", .name = "a.test"}, kDeny, "builtin:guard"},
          {"NAT64 local via host",
           {.dst = "64:ff9b:1::1", .name = "a.test"},
           kDeny,
           "builtin:guard"},
          {"IPv4-compatible via host",
           {.dst = "::a00:1", .name = "a.test"},
           kDeny,
           "builtin:guard"},
          {"6to4 via cidr", {.dst = "2002:c000:201::1"}, kAllow, "world"},
          {"public via host", {.name = "a.test"}, kAllow, "hosts"},
      });
  // default allow to a private address: not by host, so no private guard;
  // the always-denied classes still apply.
  const auto d = CompiledPolicy::compile(spec({}, Action::allow), {});
  run_table(*d, {{"private by default", {.dst = "10.0.0.1"}, kAllow, "default"},
                 {"loopback by default", {.dst = "127.0.0.1"}, kDeny, "builtin:guard"}});
}

TEST(PolicyTls, NoSniAndEch) {
  const auto allow_cidr = allow("net", {net("93.184.216.0/24", {port(443)})});
  const auto hosts = allow("hosts", {host("**.test")});
  config::TlsSpec strict;
  config::TlsSpec lax;
  lax.require_sni = false;
  config::TlsSpec no_ech;
  no_ech.ech = config::EchMode::deny;
  const auto s = spec({hosts, allow_cidr}, Action::allow);
  run_table(*CompiledPolicy::compile(s, strict),
            {
                {"no SNI, allow cidr", {.tls_without_sni = true}, kAllow, "net"},
                {"no SNI, port outside the cidr entry",
                 {.port = 8443, .tls_without_sni = true},
                 kDeny,
                 "builtin:no-sni",
                 "93.184.216.34:8443"},
                {"no SNI, default allow is not enough",
                 {.dst = "8.8.8.8", .tls_without_sni = true},
                 kDeny,
                 "builtin:no-sni"},
                {"ECH outer: judged on the outer name",
                 {.dst = "8.8.8.8", .name = "a.test", .ech = true},
                 kAllow,
                 "hosts"},
            });
  run_table(
      *CompiledPolicy::compile(s, lax),
      {{"no SNI judged as tcp", {.dst = "8.8.8.8", .tls_without_sni = true}, kAllow, "default"}});
  run_table(*CompiledPolicy::compile(s, no_ech),
            {{"ECH refused", {.name = "a.test", .ech = true}, kDeny, "builtin:ech"},
             {"no ECH", {.name = "a.test"}, kAllow, "hosts"}});
  // No SNI under audit is still denied (a builtin).
  run_table(*CompiledPolicy::compile(spec({hosts}, Action::deny, PolicyMode::audit), strict),
            {{"no SNI in audit", {.tls_without_sni = true}, kDeny, "builtin:no-sni"}});
}

TEST(PolicyServerFirst, NameCanMatter) {
  struct Q {
    std::string what;
    std::string src;
    std::uint16_t port;
    bool expected;
  };
  const auto check = [](const CompiledPolicy& p, const std::vector<Q>& qs) {
    for (const Q& q : qs) {
      SCOPED_TRACE(q.what);
      EXPECT_EQ(p.name_can_matter("transparent", ip(q.src), q.port), q.expected);
    }
  };
  const auto p = CompiledPolicy::compile(
      spec({
          allow("web", {host("**.test", {port(443), ports(8000, 8080)}), net("10.0.0.0/8")}),
          deny("blk", {host("bad.test", {port(25)})}, {"10.1.0.0/16", "fd00::/8"}),
          allow("db", {net("192.0.2.0/24", {port(3306)})}),
          allow("ssh-from", {host("git.test")}, {"10.2.0.0/16"}),
      }),
      {});
  check(*p, {
                {"https", "10.9.9.9", 443, true},
                {"range", "10.9.9.9", 8080, true},
                {"mysql: only cidr entries", "10.9.9.9", 3306, false},
                {"ssh, other source", "10.9.9.9", 22, false},
                {"smtp from the deny's source", "10.1.2.3", 25, true},
                {"smtp from the deny's v6 source", "fd00::1", 25, true},
                {"smtp elsewhere", "10.3.0.1", 25, false},
                {"any port from ssh-from source", "10.2.0.9", 22, true},
                {"any port from ssh-from source, mapped", "::ffff:10.2.0.9", 5432, true},
            });
  const auto any = CompiledPolicy::compile(spec({allow("a", {host("x.test")})}), {});
  check(*any, {{"a portless, sourceless host entry", "1.2.3.4", 22, true}});
  const auto none = CompiledPolicy::compile(spec({allow("a", {net("0.0.0.0/0")})}), {});
  check(*none, {{"cidr only", "1.2.3.4", 22, false}});
}

TEST(PolicyPrecedence, ManyMatchingEntries) {
  // More matches than the inline buffer holds (32): the list spills to the
  // heap and the order (first in file) must survive it.
  std::vector<config::RuleSpec> rules;
  for (int i = 0; i < 40; ++i) {
    rules.push_back(allow("allow-" + std::to_string(i),
                          {host("**.many.test"), net("93.184.216.0/24"), host("a.many.test")}));
  }
  rules.push_back(deny("deny-last", {host("*.many.test")}));
  rules.push_back(deny("deny-later", {net("93.184.0.0/16")}));
  const auto p = CompiledPolicy::compile(spec(rules), {});
  run_table(*p,
            {
                {"deny after 120 allow matches", {.name = "a.many.test"}, kDeny, "deny-last"},
                {"cidr deny after 40 allow matches", {.dst = "93.184.216.1"}, kDeny, "deny-later"},
            });
  rules.pop_back();
  rules.pop_back();
  const auto q = CompiledPolicy::compile(spec(rules), {});
  run_table(*q, {{"first of 40 allow rules",
                  {.name = "a.many.test"},
                  kAllow,
                  "allow-0",
                  "93.184.216.34 is in 93.184.216.0/24"}});
}

TEST(PolicyStats, CountsEntries) {
  const auto p = CompiledPolicy::compile(
      spec({allow("a", {host("a.test"), host("*.b.test"), host("**.c.test"), net("10.0.0.0/8")}),
            deny("b", {net("::/0")})}),
      {});
  const PolicyStats s = p->stats();
  EXPECT_EQ(s.rules, 2U);
  EXPECT_EQ(s.exact_hosts, 1U);
  EXPECT_EQ(s.wildcard_hosts, 2U);
  EXPECT_EQ(s.cidrs, 2U);
  EXPECT_GT(s.memory_bytes, 0U);
}

}  // namespace
}  // namespace egressd::policy::testing
