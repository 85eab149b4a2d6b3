#pragma once
// Load, validate, compile and self-test a config: what `check`, `explain`,
// `test`, start-up and reload all need, so they agree on what "valid" means.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "egressd/config/loader.hpp"
#include "egressd/config/spec.hpp"
#include "egressd/policy/policy.hpp"

namespace egressd::cli {

struct ValidatedConfig {
  std::optional<config::ConfigSpec> config;              // set unless loading failed
  std::shared_ptr<const policy::CompiledPolicy> policy;  // set unless loading failed
  std::vector<config::Diagnostic> diagnostics;           // errors, warnings, failed own tests

  // No error: the config may replace a running one.
  [[nodiscard]] bool ok() const noexcept;
};

// Loads `path`, compiles its policy and, when `run_own_tests`, runs the
// config's own `tests:`; a failing case is an error diagnostic at its
// position. `today` is the UTC day `until` is compared with, by the tests
// and by the loader's "until has passed" warning. Never throws on bad input:
// an unreadable or invalid file is diagnostics, `config` and `policy` unset.
// `own_addresses` (the running gateway's, for the guard) go into the
// compile, so a reload's tests judge exactly the policy that will serve and
// it is compiled once; `check` and the other commands pass none.
ValidatedConfig load_and_validate(const std::string& path, std::chrono::sys_days today,
                                  bool run_own_tests = true,
                                  const std::vector<IpAddress>& own_addresses = {});

// A failed case in one phrase, without its position: `expected allow (rule
// github), got deny (rule default: no rule matched; default deny)`.
std::string describe_failure(const policy::TestResult& result);

// Today's date in UTC.
std::chrono::sys_days utc_today();

}  // namespace egressd::cli
