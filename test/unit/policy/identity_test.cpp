// Identity selectors in `from` (contract "Pod identity"): Kubernetes
// LabelSelector semantics, NetworkPolicy peer shape, fail closed; and the
// explicit-mode decision by name alone.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "policy_test_util.hpp"

namespace egressd::policy::testing {
namespace {

using config::IdentitySelector;
using config::LabelRequirement;
using config::LabelSelector;
using Op = LabelRequirement::Operator;

LabelSelector match_labels(Labels labels) {
  LabelSelector s;
  for (auto& [k, v] : labels) s.requirements.push_back({k, Op::in, {v}});
  return s;
}
LabelSelector expr(std::string key, Op op, std::vector<std::string> values = {}) {
  LabelSelector s;
  s.requirements.push_back({std::move(key), op, std::move(values)});
  return s;
}
LabelSelector all_of(std::vector<LabelSelector> parts) {
  LabelSelector s;
  for (auto& p : parts) {
    for (auto& r : p.requirements) s.requirements.push_back(std::move(r));
  }
  return s;
}
IdentitySelector in_namespace(std::string ns) {
  IdentitySelector s;
  s.namespace_selector = match_labels({{std::string(kNamespaceNameLabel), std::move(ns)}});
  return s;
}
IdentitySelector pods(LabelSelector pod) {
  IdentitySelector s;
  s.pod_selector = std::move(pod);
  return s;
}
IdentitySelector both(LabelSelector ns, LabelSelector pod) {
  IdentitySelector s;
  s.namespace_selector = std::move(ns);
  s.pod_selector = std::move(pod);
  return s;
}

config::RuleSpec with_identities(config::RuleSpec r, std::vector<IdentitySelector> ids) {
  r.from_identities = std::move(ids);
  return r;
}

PodIdentity pod(std::string ns, Labels labels, Labels ns_labels = {}) {
  PodIdentity p;
  p.namespace_name = ns;
  p.pod = "p";
  p.labels = std::move(labels);
  normalize_labels(p.labels);
  p.namespace_labels = std::move(ns_labels);
  p.namespace_labels.emplace_back(std::string(kNamespaceNameLabel), ns);
  normalize_labels(p.namespace_labels);
  return p;
}

// One selector as the only `from` of an allow rule: does it select `who`?
bool selects(const IdentitySelector& sel, const PodIdentity* who) {
  const auto p =
      CompiledPolicy::compile(spec({with_identities(allow("r", {net("0.0.0.0/0")}), {sel})}), {});
  FlowFacts f = Flow{}.facts();
  f.identity = who;
  return p->decide(f, AssumeIntegrity{}).verdict.decision == Decision::allow;
}

// The Kubernetes documentation's label selector examples
// (concepts/overview/working-with-objects/labels): environment in
// (production, qa), tier notin (frontend), partition, !partition.
TEST(IdentitySelectors, LabelSelectorSemantics) {
  const PodIdentity prod = pod("shop", {{"environment", "production"}, {"tier", "backend"}});
  const PodIdentity qa = pod("shop", {{"environment", "qa"}, {"partition", "customerA"}});
  const PodIdentity dev = pod("shop", {{"environment", "dev"}, {"tier", "frontend"}});
  const PodIdentity bare = pod("shop", {});
  struct Row {
    const char* what;
    LabelSelector sel;
    bool prod, qa, dev, bare;
  };
  const std::vector<Row> rows = {
      {"environment in (production, qa)", expr("environment", Op::in, {"production", "qa"}), true,
       true, false, false},
      {"tier notin (frontend): absent key matches", expr("tier", Op::not_in, {"frontend"}), true,
       true, false, true},
      {"partition (exists)", expr("partition", Op::exists), false, true, false, false},
      {"!partition", expr("partition", Op::does_not_exist), true, false, true, true},
      {"matchLabels environment=production,tier=backend",
       match_labels({{"environment", "production"}, {"tier", "backend"}}), true, false, false,
       false},
      {"In and NotIn together",
       all_of({expr("environment", Op::in, {"production", "dev"}),
               expr("tier", Op::not_in, {"frontend"})}),
       true, false, false, false},
      {"empty selector selects all", LabelSelector{}, true, true, true, true},
      {"value compared exactly (case)", expr("environment", Op::in, {"Production"}), false, false,
       false, false},
  };
  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    const IdentitySelector sel = pods(r.sel);
    EXPECT_EQ(selects(sel, &prod), r.prod);
    EXPECT_EQ(selects(sel, &qa), r.qa);
    EXPECT_EQ(selects(sel, &dev), r.dev);
    EXPECT_EQ(selects(sel, &bare), r.bare);
    EXPECT_FALSE(selects(sel, nullptr)) << "an unknown source matches no selector";
  }
}

TEST(IdentitySelectors, NetworkPolicyPeerShape) {
  const PodIdentity api = pod("payments", {{"app", "api"}}, {{"team", "billing"}});
  const PodIdentity worker = pod("payments", {{"app", "worker"}}, {{"team", "billing"}});
  const PodIdentity web = pod("payments", {{"app", "web"}}, {{"team", "billing"}});
  const PodIdentity other_ns = pod("shop", {{"app", "api"}}, {{"team", "retail"}});

  EXPECT_TRUE(selects(in_namespace("payments"), &web)) << "namespace: every pod of it";
  EXPECT_FALSE(selects(in_namespace("payments"), &other_ns));
  // Contract: a podSelector alone selects in every namespace.
  EXPECT_TRUE(selects(pods(match_labels({{"app", "api"}})), &api));
  EXPECT_TRUE(selects(pods(match_labels({{"app", "api"}})), &other_ns));
  // Both: pods matching podSelector in namespaces matching namespaceSelector.
  const IdentitySelector billing_api =
      both(match_labels({{"team", "billing"}}), expr("app", Op::in, {"api", "worker"}));
  EXPECT_TRUE(selects(billing_api, &api));
  EXPECT_TRUE(selects(billing_api, &worker));
  EXPECT_FALSE(selects(billing_api, &web));
  EXPECT_FALSE(selects(billing_api, &other_ns));
  // A namespace label the pod carries does not count, nor the reverse.
  EXPECT_FALSE(selects(pods(match_labels({{"team", "billing"}})), &api));
  IdentitySelector ns_app;
  ns_app.namespace_selector = match_labels({{"app", "api"}});
  EXPECT_FALSE(selects(ns_app, &api));
  // An empty namespaceSelector with a podSelector: that pod in any namespace.
  EXPECT_TRUE(selects(both(LabelSelector{}, match_labels({{"app", "api"}})), &other_ns));
}

TEST(IdentitySelectors, MixWithCidrsAndDenyOverrides) {
  const PodIdentity api = pod("payments", {{"app", "api"}});
  const PodIdentity web = pod("payments", {{"app", "web"}});
  auto stripe = allow("stripe", {host("api.stripe.com", {port(443)})}, {"10.9.0.0/16"});
  stripe = with_identities(std::move(stripe), {pods(match_labels({{"app", "api"}}))});
  auto no_web = with_identities(deny("no-web", {host("**.stripe.com")}),
                                {pods(match_labels({{"app", "web"}}))});
  const auto p = CompiledPolicy::compile(spec({no_web, stripe}), {});
  const auto decide = [&](const char* src, const PodIdentity* who) {
    const Flow flow{.src = src, .name = "api.stripe.com"};  // owns the strings facts() views
    FlowFacts f = flow.facts();
    f.identity = who;
    return p->decide(f, AssumeIntegrity{}).verdict;
  };
  EXPECT_EQ(decide("10.1.2.3", &api).rule, "stripe");
  EXPECT_EQ(decide("10.1.2.3", &web).rule, "no-web");
  EXPECT_EQ(decide("10.1.2.3", nullptr).rule, "default") << "fail closed: unknown source";
  EXPECT_EQ(decide("10.9.1.1", nullptr).rule, "stripe") << "the CIDR entry still works";
  EXPECT_EQ(decide("10.9.1.1", &web).rule, "no-web") << "deny overrides";
}

TEST(IdentitySelectors, RuleElevenSeesIdentityHostRules) {
  auto r = with_identities(allow("api", {host("api.stripe.com", {port(443)})}),
                           {in_namespace("payments")});
  const auto p =
      CompiledPolicy::compile(spec({r, allow("smtp", {net("0.0.0.0/0", {port(25)})})}), {});
  const PodIdentity in = pod("payments", {});
  const PodIdentity out = pod("shop", {});
  EXPECT_TRUE(p->name_can_matter("l", ip("10.0.0.1"), 443, &in));
  EXPECT_FALSE(p->name_can_matter("l", ip("10.0.0.1"), 443, &out));
  EXPECT_FALSE(p->name_can_matter("l", ip("10.0.0.1"), 443, nullptr));
  EXPECT_FALSE(p->name_can_matter("l", ip("10.0.0.1"), 25, &in));
}

TEST(IdentitySelectors, ManySelectorsShareIds) {
  std::vector<config::RuleSpec> rules;
  for (int i = 0; i < 500; ++i) {
    rules.push_back(with_identities(
        allow("r" + std::to_string(i), {host("h" + std::to_string(i) + ".test")}),
        {in_namespace("ns" + std::to_string(i % 50)), pods(match_labels({{"app", "a"}}))}));
  }
  const auto p = CompiledPolicy::compile(spec(std::move(rules)), {});
  const PodIdentity who = pod("ns7", {{"app", "b"}});
  const Flow flow{.name = "h57.test"};  // owns the strings facts() views
  FlowFacts f = flow.facts();
  f.identity = &who;
  EXPECT_EQ(p->decide(f, AssumeIntegrity{}).verdict.rule, "r57");
  f.name = "h58.test";
  EXPECT_EQ(p->decide(f, AssumeIntegrity{}).verdict.rule, "default");
  const PodIdentity app_a = pod("zzz", {{"app", "a"}});
  f.identity = &app_a;
  EXPECT_EQ(p->decide(f, AssumeIntegrity{}).verdict.rule, "r58");
}

// Explicit mode: a name is resolved only when its address can matter.
TEST(DecideByName, DeniedNamesNeedNoLookup) {
  const auto p = CompiledPolicy::compile(
      spec({deny("block", {host("**.evil.test")}), allow("web", {host("web.test", {port(443)})}),
            allow("nets", {net("198.51.100.0/24", {port(8443)})}, {"10.1.0.0/16"})}),
      {});
  const auto by_name = [&](const char* name, std::uint16_t port, const char* src = "10.2.0.1") {
    return p->decide_by_name(
        Flow{.src = src, .dst = "0.0.0.0", .port = port, .name = name, .transparent = false}
            .facts());
  };
  auto v = by_name("x.evil.test", 443);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->rule, "block");
  v = by_name("bad..name", 443);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->rule, "builtin:invalid-name");
  v = by_name("unknown.test", 443);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->rule, "default");
  EXPECT_FALSE(by_name("web.test", 443)) << "an allow host entry needs the address";
  EXPECT_TRUE(by_name("web.test", 80)) << "wrong port: default";
  EXPECT_FALSE(by_name("unknown.test", 8443, "10.1.2.3")) << "an allow cidr may match";
  EXPECT_TRUE(by_name("unknown.test", 8443, "10.3.2.3")) << "that cidr's `from` excludes src";
  EXPECT_FALSE(by_name("127.0.0.1", 443)) << "IP literals are not resolved anyway";

  const auto audit = CompiledPolicy::compile(
      spec({allow("web", {host("web.test")})}, Action::deny, PolicyMode::audit), {});
  EXPECT_FALSE(audit->decide_by_name(Flow{.name = "other.test", .transparent = false}.facts()))
      << "under audit anything may pass";
  const auto open = CompiledPolicy::compile(spec({}, Action::allow), {});
  EXPECT_FALSE(open->decide_by_name(Flow{.name = "other.test", .transparent = false}.facts()));
}

}  // namespace
}  // namespace egressd::policy::testing
