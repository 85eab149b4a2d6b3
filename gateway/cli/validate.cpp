#include "egressd/cli/validate.hpp"

namespace egressd::cli {

bool ValidatedConfig::ok() const noexcept {
  if (!config || !policy) return false;
  for (const auto& d : diagnostics) {
    if (d.severity == config::Diagnostic::Severity::error) return false;
  }
  return true;
}

ValidatedConfig load_and_validate(const std::string& path, std::chrono::sys_days today,
                                  bool run_own_tests, const std::vector<IpAddress>& own_addresses) {
  ValidatedConfig out;
  config::LoadResult loaded = config::load_config_file(path, config::LoadOptions{today});
  out.diagnostics = std::move(loaded.diagnostics);
  if (!loaded.config) return out;
  out.config = std::move(loaded.config);
  out.policy = policy::CompiledPolicy::compile(out.config->policy, out.config->tls, own_addresses);
  if (!run_own_tests) return out;
  const auto results =
      policy::run_tests(*out.policy, out.config->listeners, out.config->policy.tests, today);
  for (const auto& r : results) {
    if (r.passed) continue;
    config::Diagnostic d;
    d.severity = config::Diagnostic::Severity::error;
    d.pos = r.test->pos;
    d.message = "policy test failed: " + describe_failure(r);
    out.diagnostics.push_back(std::move(d));
  }
  return out;
}

std::string describe_failure(const policy::TestResult& result) {
  // run_tests judged nothing (e.g. an unknown listener): its text says why.
  if (result.test == nullptr || result.verdict.rule.empty()) return result.failure;
  const config::TestCase& c = *result.test;
  std::string out = "expected ";
  switch (c.expect) {
    case config::Expect::allow:
      out += "allow";
      break;
    case config::Expect::deny:
      out += "deny";
      break;
    case config::Expect::audit_deny:
      out += "audit_deny";
      break;
  }
  if (c.rule) out += " (rule " + *c.rule + ")";
  out += ", got ";
  out += policy::to_string(result.verdict.decision);
  out += " (rule ";
  out += result.verdict.rule;
  out += ": ";
  out += result.verdict.reason;
  out += ")";
  return out;
}

std::chrono::sys_days utc_today() {
  return std::chrono::floor<std::chrono::days>(std::chrono::system_clock::now());
}

}  // namespace egressd::cli
