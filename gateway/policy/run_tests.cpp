// Policy test cases (config `tests:` and CASES files), judged without
// network: a host match counts as a match and its integrity mode is
// reported, not performed (contract, `explain` and `test`).

#include <algorithm>

#include "egressd/policy/policy.hpp"

namespace egressd::policy {
namespace {

std::string_view expect_name(config::Expect e) noexcept {
  switch (e) {
    case config::Expect::allow:
      return "allow";
    case config::Expect::deny:
      return "deny";
    case config::Expect::audit_deny:
      return "audit_deny";
  }
  return "deny";
}

Decision expected_decision(config::Expect e) noexcept {
  switch (e) {
    case config::Expect::allow:
      return Decision::allow;
    case config::Expect::deny:
      return Decision::deny;
    case config::Expect::audit_deny:
      return Decision::audit_deny;
  }
  return Decision::deny;
}

std::string where(const config::TestCase& c) {
  std::string out = "case at ";
  out += c.pos.file.empty() ? std::string("<config>") : c.pos.file;
  if (c.pos.line > 0) {
    out += ':';
    out += std::to_string(c.pos.line);
  }
  return out;
}

}  // namespace

std::vector<TestResult> run_tests(const CompiledPolicy& policy,
                                  const std::vector<config::ListenerSpec>& listeners,
                                  std::span<const config::TestCase> cases,
                                  std::chrono::sys_days today) {
  const auto first_redirect = std::find_if(
      listeners.begin(), listeners.end(),
      [](const config::ListenerSpec& l) { return l.mode == config::ListenerMode::redirect; });
  const AssumeIntegrity assume;
  std::vector<TestResult> results;
  results.reserve(cases.size());
  for (const config::TestCase& c : cases) {
    TestResult result;
    result.test = &c;

    FlowFacts facts;
    facts.transparent = true;
    if (c.listener) {
      const auto it =
          std::find_if(listeners.begin(), listeners.end(),
                       [&](const config::ListenerSpec& l) { return l.name == *c.listener; });
      if (it == listeners.end()) {
        result.failure = where(c);
        result.failure += ": unknown listener \"";
        result.failure += *c.listener;
        result.failure += '"';
        results.push_back(std::move(result));
        continue;
      }
      facts.listener = it->name;
      facts.transparent = it->mode != config::ListenerMode::explicit_proxy;
    } else if (first_redirect != listeners.end()) {
      facts.listener = first_redirect->name;
    }
    facts.src = c.src;
    facts.dst = c.dst.ip;
    facts.port = c.dst.port;
    facts.proto = c.proto.value_or(c.host ? Proto::tls : Proto::tcp);
    if (c.host) facts.name = std::string_view(*c.host);
    facts.tls_without_sni = facts.proto == Proto::tls && !c.host;
    facts.today = today;
    // The source pod, when the case names one (else a pod-less IP).
    PodIdentity pod;
    if (c.namespace_name) {
      pod.namespace_name = *c.namespace_name;
      pod.labels = c.labels;
      pod.namespace_labels = c.namespace_labels;
      facts.identity = &pod;
    }

    // AssumeIntegrity always answers, so one call is final.
    Outcome outcome = policy.decide(facts, assume);
    result.verdict = std::move(outcome.verdict);
    const Verdict& v = result.verdict;
    result.passed = v.decision == expected_decision(c.expect) && (!c.rule || *c.rule == v.rule);
    if (!result.passed) {
      // Appended piece by piece: g++ 12 -O3 warns (-Wrestrict, a false
      // positive) on long operator+ chains of temporaries.
      std::string& f = result.failure;
      f = where(c);
      f += ": expected ";
      f += expect_name(c.expect);
      if (c.rule) {
        f += " (rule ";
        f += *c.rule;
        f += ')';
      }
      f += ", got ";
      f += to_string(v.decision);
      f += " (rule ";
      f += v.rule;
      f += ": ";
      f += v.reason;
      f += ')';
    }
    results.push_back(std::move(result));
  }
  return results;
}

}  // namespace egressd::policy
