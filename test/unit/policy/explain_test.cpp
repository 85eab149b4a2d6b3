// CompiledPolicy::explain: the verdict decide() gives under AssumeIntegrity,
// plus the rules that nearly matched and what stopped them (issue 8 item 6).
// A near miss is a rule that did not decide and either matched (overridden,
// preempted, shadowed, audit_only) or failed exactly one condition that is
// not the destination (wrong_port, source_not_in_from).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "policy_test_util.hpp"

namespace egressd::policy::testing {
namespace {

using ::testing::HasSubstr;

using config::IdentitySelector;
using config::LabelRequirement;
using config::LabelSelector;
using Op = LabelRequirement::Operator;

// "rule:why" for each near miss, in order: compact to compare.
std::vector<std::string> misses(const Explanation& x) {
  std::vector<std::string> out;
  for (const NearMiss& m : x.near_misses)
    out.push_back(std::string(m.rule) + ":" + std::string(m.why));
  return out;
}

std::vector<std::string> notes(const Explanation& x) {
  std::vector<std::string> out;
  for (const ExplainNote& n : x.notes)
    out.push_back(std::string(n.rule) + ":" + std::string(n.why));
  return out;
}

using Strings = std::vector<std::string>;

const NearMiss& only_miss(const Explanation& x) {
  EXPECT_EQ(x.near_misses.size(), 1U) << ::testing::PrintToString(misses(x));
  static const NearMiss none;
  return x.near_misses.empty() ? none : x.near_misses.front();
}

// The verdict is decide()'s, unchanged: explain adds, never alters.
void expect_same_verdict(const CompiledPolicy& p, const FlowFacts& f, const Explanation& x) {
  const Outcome o = p.decide(f, AssumeIntegrity{});
  EXPECT_EQ(to_string(x.verdict.decision), to_string(o.verdict.decision));
  EXPECT_EQ(x.verdict.rule, o.verdict.rule);
  EXPECT_EQ(x.verdict.reason, o.verdict.reason);
  EXPECT_EQ(x.verdict.integrity, o.verdict.integrity);
}

Explanation explain(const CompiledPolicy& p, const Flow& flow) {
  const FlowFacts f = flow.facts();
  Explanation x = p.explain(f);
  expect_same_verdict(p, f, x);
  return x;
}

TEST(ExplainNearMiss, RightHostWrongPort) {
  const auto p = CompiledPolicy::compile(
      spec({allow("github", {host("github.com", {port(443), ports(8000, 8100)})})}), {});
  const Explanation x = explain(*p, {.port = 80, .name = "github.com"});
  EXPECT_EQ(x.verdict.rule, "default");
  const NearMiss& m = only_miss(x);
  EXPECT_EQ(m.rule, "github");
  EXPECT_EQ(m.action, Action::allow);
  EXPECT_EQ(m.why, "wrong_port");
  EXPECT_EQ(m.reason,
            "host github.com matched github.com, but port 80 is not in its ports (443, 8000-8100)");
  EXPECT_TRUE(m.by.empty());
  EXPECT_TRUE(m.source.empty());
}

TEST(ExplainNearMiss, RightCidrWrongPort) {
  const auto p =
      CompiledPolicy::compile(spec({allow("ssh", {net("140.82.112.0/20", {port(22)})})}), {});
  const Explanation x = explain(*p, {.dst = "140.82.112.3", .port = 443});
  const NearMiss& m = only_miss(x);
  EXPECT_EQ(m.why, "wrong_port");
  EXPECT_EQ(m.reason, "140.82.112.3 is in 140.82.112.0/20, but port 443 is not in its ports (22)");
}

TEST(ExplainNearMiss, RightPortButAnotherHostIsNoNearMiss) {
  // The destination is what the flow is about: a pattern that differs by a
  // letter, a label or a wildcard level is a different destination.
  const auto p = CompiledPolicy::compile(spec({
                                             allow("exact", {host("github.com", {port(443)})}),
                                             allow("single", {host("*.example.com", {port(443)})}),
                                         }),
                                         {});
  for (const char* name :
       {"github.co", "gitHub.com.evil.test", "api.github.com", "a.b.example.com", "example.com"}) {
    SCOPED_TRACE(name);
    const Explanation x = explain(*p, {.name = name});
    EXPECT_EQ(x.verdict.rule, "default");
    EXPECT_EQ(misses(x), Strings{});
  }
}

TEST(ExplainNearMiss, TwoConditionsFailedIsNoNearMiss) {
  // Right host, but both the port and the source are wrong.
  const auto p = CompiledPolicy::compile(
      spec({allow("github", {host("github.com", {port(443)})}, {"10.0.1.0/24"})}), {});
  EXPECT_EQ(misses(explain(*p, {.src = "10.0.9.9", .port = 80, .name = "github.com"})), Strings{});
  EXPECT_EQ(misses(explain(*p, {.src = "10.0.9.9", .port = 443, .name = "github.com"})),
            Strings{"github:source_not_in_from"});
  EXPECT_EQ(misses(explain(*p, {.src = "10.0.1.9", .port = 80, .name = "github.com"})),
            Strings{"github:wrong_port"});
}

TEST(ExplainNearMiss, SourceOutsideFromCidrs) {
  const auto p = CompiledPolicy::compile(
      spec({allow("github", {host("github.com", {port(443)})}, {"10.0.1.0/24", "10.0.3.0/24"})}),
      {});
  const Explanation x = explain(*p, {.src = "10.0.9.9", .name = "github.com"});
  const NearMiss& m = only_miss(x);
  EXPECT_EQ(m.why, "source_not_in_from");
  EXPECT_EQ(m.source, "cidr");
  EXPECT_EQ(m.reason,
            "host github.com matched github.com, but the source is not in its from: 10.0.9.9 is "
            "outside 10.0.1.0/24, 10.0.3.0/24");
}

LabelSelector match_labels(Labels labels) {
  LabelSelector s;
  for (auto& [k, v] : labels) s.requirements.push_back({k, Op::in, {v}});
  return s;
}

IdentitySelector namespace_and_pods(std::string ns, Labels pod_labels) {
  IdentitySelector s;
  s.namespace_selector = match_labels({{std::string(kNamespaceNameLabel), std::move(ns)}});
  s.pod_selector = match_labels(std::move(pod_labels));
  return s;
}

PodIdentity pod(std::string ns, Labels labels) {
  PodIdentity p;
  p.namespace_name = ns;
  p.pod = "p";
  p.labels = std::move(labels);
  normalize_labels(p.labels);
  p.namespace_labels.emplace_back(std::string(kNamespaceNameLabel), ns);
  return p;
}

TEST(ExplainNearMiss, SourceOutsideFromSaysWhichIdentityPartFailed) {
  config::RuleSpec r = allow("payments-api", {host("api.stripe.com", {port(443)})});
  r.from_identities = {namespace_and_pods("payments", {{"app", "api"}})};
  config::RuleSpec mixed = allow("mixed", {host("api.stripe.com", {port(443)})}, {"10.0.1.0/24"});
  mixed.from_identities = {namespace_and_pods("payments", {{"app", "api"}})};
  const auto p = CompiledPolicy::compile(spec({r, mixed}), {});

  const auto explain_from = [&](const PodIdentity* who) {
    const Flow flow{.src = "10.0.9.9", .name = "api.stripe.com"};  // f points into it
    FlowFacts f = flow.facts();
    f.identity = who;
    Explanation x = p->explain(f);
    expect_same_verdict(*p, f, x);
    return x;
  };
  {
    const Explanation x = explain_from(nullptr);
    ASSERT_EQ(misses(x), (Strings{"payments-api:source_not_in_from", "mixed:source_not_in_from"}));
    EXPECT_EQ(x.near_misses[0].source, "no_pod");
    EXPECT_THAT(x.near_misses[0].reason, HasSubstr("pod-less IP"));
    EXPECT_EQ(x.near_misses[1].source, "no_pod");
    EXPECT_THAT(x.near_misses[1].reason, HasSubstr("10.0.9.9 is outside 10.0.1.0/24"));
  }
  {
    const PodIdentity shop = pod("shop", {{"app", "api"}});
    const Explanation x = explain_from(&shop);
    ASSERT_EQ(x.near_misses.size(), 2U);
    EXPECT_EQ(x.near_misses[0].source, "namespace");
    EXPECT_THAT(x.near_misses[0].reason, HasSubstr("namespace shop is selected by none"));
  }
  {
    const PodIdentity web = pod("payments", {{"app", "web"}});
    const Explanation x = explain_from(&web);
    ASSERT_EQ(x.near_misses.size(), 2U);
    EXPECT_EQ(x.near_misses[0].source, "labels");
    EXPECT_THAT(x.near_misses[0].reason, HasSubstr("accepts namespace payments but not the pod"));
  }
  {
    const PodIdentity api = pod("payments", {{"app", "api"}});
    const Explanation x = explain_from(&api);
    EXPECT_EQ(x.verdict.rule, "payments-api");
    EXPECT_EQ(misses(x), Strings{"mixed:shadowed"});
  }
}

TEST(ExplainNearMiss, AllowOverriddenByADenyEarlierOrLaterInTheFile) {
  // Order never changes the decision (rule 5): a deny after the allow still
  // denies, and the allow is listed as overridden either way.
  for (const bool deny_first : {true, false}) {
    SCOPED_TRACE(deny_first ? "deny first" : "allow first");
    const auto a = allow("internal", {net("10.0.0.0/8")});
    const auto d = deny("no-db", {net("10.9.0.0/16", {port(5432)})});
    const auto p =
        CompiledPolicy::compile(spec(deny_first ? std::vector{d, a} : std::vector{a, d}), {});
    const Explanation x = explain(*p, {.dst = "10.9.1.1", .port = 5432});
    EXPECT_EQ(to_string(x.verdict.decision), "deny");
    EXPECT_EQ(x.verdict.rule, "no-db");
    const NearMiss& m = only_miss(x);
    EXPECT_EQ(m.rule, "internal");
    EXPECT_EQ(m.why, "overridden");
    EXPECT_EQ(m.by, "no-db");
    EXPECT_EQ(m.reason,
              "10.9.1.1 is in 10.0.0.0/8, but deny rule no-db matched too, and a matching deny "
              "rule outranks every allow");
  }
}

TEST(ExplainNearMiss, AllowOverriddenByAnAuditDenyStillPasses) {
  config::RuleSpec d = deny("no-paste", {host("**.pastebin.com")});
  d.mode = PolicyMode::audit;
  const auto p = CompiledPolicy::compile(spec({allow("web", {host("**.pastebin.com")}), d}), {});
  const Explanation x = explain(*p, {.name = "www.pastebin.com"});
  EXPECT_EQ(to_string(x.verdict.decision), "audit_deny");
  const NearMiss& m = only_miss(x);
  EXPECT_EQ(m.why, "overridden");
  EXPECT_EQ(m.by, "no-paste");
  EXPECT_THAT(m.reason, HasSubstr("the flow passes, recorded as audit_deny"));
}

TEST(ExplainNearMiss, AuditDenyThatDoesNotDecide) {
  // Nothing allows the flow: default deny decides, and the audit deny rule
  // that matched is listed: it does not deny.
  config::RuleSpec d = deny("no-paste", {host("**.pastebin.com")});
  d.mode = PolicyMode::audit;
  const auto p = CompiledPolicy::compile(spec({d}), {});
  const Explanation x = explain(*p, {.name = "www.pastebin.com"});
  EXPECT_EQ(x.verdict.rule, "default");
  const NearMiss& m = only_miss(x);
  EXPECT_EQ(m.action, Action::deny);
  EXPECT_EQ(m.why, "audit_only");
  EXPECT_THAT(m.reason, HasSubstr("audit mode"));
}

TEST(ExplainNotes, ModeOverrideUntil) {
  // `until` ends the rule's mode override (contract rule 6): before it the
  // audit deny lets the flow pass, after it the rule enforces.
  config::RuleSpec d = deny("no-paste", {host("**.pastebin.com")});
  d.mode = PolicyMode::audit;
  d.until = day(2026, 11, 25);  // the day before kToday
  config::RuleSpec active = d;
  active.name = "no-paste-later";
  active.until = day(2026, 12, 31);
  {
    const auto p = CompiledPolicy::compile(spec({d, allow("web", {host("**.pastebin.com")})}), {});
    const Explanation x = explain(*p, {.name = "www.pastebin.com"});
    EXPECT_EQ(to_string(x.verdict.decision), "deny");
    EXPECT_EQ(x.verdict.rule, "no-paste");
    EXPECT_EQ(notes(x), Strings{"no-paste:mode_override_expired"});
    EXPECT_EQ(x.notes[0].reason,
              "the mode: audit override of no-paste ended after 2026-11-25; it follows "
              "policy.mode (enforce) now");
    EXPECT_EQ(misses(x), Strings{"web:overridden"});
  }
  {
    const auto p =
        CompiledPolicy::compile(spec({active, allow("web", {host("**.pastebin.com")})}), {});
    const Explanation x = explain(*p, {.name = "www.pastebin.com"});
    EXPECT_EQ(to_string(x.verdict.decision), "audit_deny");
    EXPECT_EQ(notes(x), Strings{"no-paste-later:mode_override_active"});
    EXPECT_THAT(x.notes[0].reason, HasSubstr("through 2026-12-31"));
  }
  {
    // Both match: the expired one enforces and decides; the active one is
    // only auditing. Each says why.
    const auto p = CompiledPolicy::compile(spec({active, d}), {});
    const Explanation x = explain(*p, {.name = "www.pastebin.com"});
    EXPECT_EQ(x.verdict.rule, "no-paste");
    EXPECT_EQ(misses(x), Strings{"no-paste-later:audit_only"});
    EXPECT_EQ(notes(x),
              (Strings{"no-paste-later:mode_override_active", "no-paste:mode_override_expired"}));
  }
}

TEST(ExplainNotes, IntegrityAssumedForVerifyAndResolve) {
  const auto p =
      CompiledPolicy::compile(spec({
                                  allow("verify", {host("verify.test", {}, Integrity::verify)}),
                                  allow("resolve", {host("resolve.test", {}, Integrity::resolve)}),
                                  allow("trust", {host("trust.test", {}, Integrity::trust)}),
                              }),
                              {});
  {
    const Explanation x = explain(*p, {.name = "verify.test"});
    EXPECT_EQ(notes(x), Strings{"verify:integrity_assumed"});
    EXPECT_THAT(x.notes[0].reason, HasSubstr("only if verify.test resolves to 93.184.216.34"));
  }
  {
    const Explanation x = explain(*p, {.name = "resolve.test"});
    EXPECT_EQ(notes(x), Strings{"resolve:integrity_assumed"});
    EXPECT_THAT(x.notes[0].reason, HasSubstr("connects to an address resolve.test resolves to"));
  }
  EXPECT_EQ(notes(explain(*p, {.name = "trust.test"})), Strings{});
  // Explicit mode: the gateway resolved dst itself; nothing is assumed.
  EXPECT_EQ(notes(explain(*p, {.name = "verify.test", .transparent = false})), Strings{});
}

TEST(ExplainNotes, IntegrityAssumedNamesTheAllowRuleUnderAnAuditDeny) {
  config::RuleSpec d = deny("watch", {host("verify.test")});
  d.mode = PolicyMode::audit;
  const auto p = CompiledPolicy::compile(
      spec({d, allow("verify", {host("verify.test", {}, Integrity::verify)})}), {});
  const Explanation x = explain(*p, {.name = "verify.test"});
  EXPECT_EQ(x.verdict.rule, "watch");
  EXPECT_EQ(notes(x), Strings{"verify:integrity_assumed"});
}

TEST(ExplainNearMiss, GuardPreemptsTheRulesThatMatched) {
  const auto p = CompiledPolicy::compile(spec({
                                             allow("everything", {net("0.0.0.0/0")}),
                                             allow("lo", {net("127.0.0.0/8")}),
                                             allow("github", {host("github.com")}),
                                         }),
                                         {});
  {
    // Loopback: nothing lifts it.
    const Explanation x = explain(*p, {.dst = "127.0.0.1"});
    EXPECT_EQ(x.verdict.rule, "builtin:guard");
    EXPECT_EQ(misses(x), (Strings{"everything:preempted", "lo:preempted"}));
    EXPECT_EQ(x.near_misses[1].by, "builtin:guard");
    EXPECT_THAT(x.near_misses[1].reason, HasSubstr("loopback: no rule can lift it"));
  }
  {
    // The metadata address: a broader cidr does not lift it.
    const Explanation x = explain(*p, {.dst = "169.254.169.254", .port = 80});
    EXPECT_EQ(x.verdict.rule, "builtin:guard");
    EXPECT_EQ(misses(x), Strings{"everything:preempted"});
    EXPECT_THAT(x.near_misses[0].reason,
                HasSubstr("only an allow cidr entry inside the guarded range lifts it"));
  }
  {
    // A private address reached by name.
    const Explanation x = explain(*p, {.dst = "10.1.2.3", .name = "github.com"});
    EXPECT_EQ(x.verdict.rule, "builtin:guard");
    EXPECT_EQ(misses(x), (Strings{"everything:preempted", "github:preempted"}));
  }
}

TEST(ExplainNearMiss, OtherBuiltinsPreemptToo) {
  const auto p = CompiledPolicy::compile(spec({allow("net", {net("93.184.216.0/24")})}), {});
  const Explanation x = explain(*p, {.name = "a..b"});
  EXPECT_EQ(x.verdict.rule, "builtin:invalid-name");
  EXPECT_EQ(misses(x), Strings{"net:preempted"});
  EXPECT_EQ(x.near_misses[0].reason,
            "93.184.216.34 is in 93.184.216.0/24, but builtin:invalid-name decided first");
}

TEST(ExplainNearMiss, ALaterRuleOfTheSameKindIsShadowed) {
  const auto p = CompiledPolicy::compile(spec({
                                             allow("first", {host("github.com")}),
                                             allow("second", {host("**.com")}),
                                             deny("d1", {host("evil.test")}),
                                             deny("d2", {host("**.test")}),
                                         }),
                                         {});
  EXPECT_EQ(misses(explain(*p, {.name = "github.com"})), Strings{"second:shadowed"});
  const Explanation x = explain(*p, {.name = "evil.test"});
  EXPECT_EQ(x.verdict.rule, "d1");
  EXPECT_EQ(misses(x), Strings{"d2:shadowed"});
  EXPECT_EQ(x.near_misses[0].by, "d1");
}

TEST(ExplainNearMiss, NoNearMisses) {
  const auto p = CompiledPolicy::compile(
      spec({
          allow("github", {host("github.com", {port(443)}, Integrity::trust)}, {"10.0.1.0/24"}),
          deny("no-paste", {host("**.pastebin.com")}),
      }),
      {});
  {
    // An exact allow: the deny rule for other names is not listed.
    const Explanation x = explain(*p, {.src = "10.0.1.5", .name = "github.com"});
    EXPECT_EQ(x.verdict.rule, "github");
    EXPECT_EQ(misses(x), Strings{});
    EXPECT_EQ(notes(x), Strings{});
  }
  {
    // An unrelated deny decides; the allow for another name is not listed.
    const Explanation x = explain(*p, {.src = "10.0.1.5", .name = "www.pastebin.com"});
    EXPECT_EQ(x.verdict.rule, "no-paste");
    EXPECT_EQ(misses(x), Strings{});
  }
  {
    const Explanation x = explain(*p, {.src = "10.0.1.5", .name = "example.org"});
    EXPECT_EQ(x.verdict.rule, "default");
    EXPECT_EQ(misses(x), Strings{});
  }
}

TEST(ExplainNearMiss, ListedInRuleOrder) {
  const auto p = CompiledPolicy::compile(spec({
                                             allow("a", {host("x.test", {port(80)})}),
                                             deny("b", {net("93.184.216.0/24", {port(22)})}),
                                             allow("c", {host("x.test")}, {"10.0.0.0/8"}),
                                             allow("d", {host("**.test", {port(8080)})}),
                                         }),
                                         {});
  const Explanation x = explain(*p, {.name = "x.test"});
  EXPECT_EQ(x.verdict.rule, "default");
  EXPECT_EQ(misses(x),
            (Strings{"a:wrong_port", "b:wrong_port", "c:source_not_in_from", "d:wrong_port"}));
  EXPECT_EQ(x.near_misses[1].action, Action::deny);
}

TEST(ExplainNearMiss, VerdictUnchangedAcrossManyFlows) {
  // A mixed policy; every flow's verdict from explain is decide()'s.
  config::RuleSpec audit = deny("audit", {host("**.audit.test")});
  audit.mode = PolicyMode::audit;
  const auto p = CompiledPolicy::compile(
      spec({
          allow("a", {host("a.test", {port(443)}, Integrity::verify), net("10.0.0.0/8")}),
          allow("b", {host("*.b.test", {}, Integrity::resolve)}, {"192.0.2.0/24"}),
          deny("c", {net("10.9.0.0/16", {port(5432)})}),
          audit,
          allow("all", {net("0.0.0.0/0", {port(80)})}),
      }),
      {}, {ip("198.51.100.1")});
  for (const char* dst : {"93.184.216.34", "10.9.1.1", "127.0.0.1", "198.51.100.1",
                          "169.254.169.254", "192.168.1.1"}) {
    for (const std::uint16_t port_number : std::initializer_list<std::uint16_t>{80, 443, 5432}) {
      for (const char* name : {"", "a.test", "x.b.test", "y.audit.test", "bad..name"}) {
        Flow flow{.dst = dst, .port = port_number};
        if (*name != '\0') flow.name = name;
        SCOPED_TRACE(std::string(dst) + " " + std::to_string(port_number) + " " + name);
        (void)explain(*p, flow);
      }
    }
  }
}

}  // namespace
}  // namespace egressd::policy::testing
