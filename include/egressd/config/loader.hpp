#pragma once
// YAML -> ConfigSpec. Collects every problem, each with its position, so an
// operator fixes a config in one pass. Never throws on bad input.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/config/spec.hpp"

namespace egressd::config {

struct Diagnostic {
  enum class Severity : std::uint8_t { error, warning };
  Severity severity = Severity::error;
  SourcePos pos;
  std::string message;

  // "FILE:LINE:COL: message" or "FILE:LINE:COL: warning: message"
  // (LINE:COL omitted when unknown).
  [[nodiscard]] std::string to_string() const;
};

struct LoadResult {
  std::optional<ConfigSpec> config;  // set only when there is no error
  std::vector<Diagnostic> diagnostics;

  [[nodiscard]] bool ok() const noexcept { return config.has_value(); }
};

// Parses and validates. `file` names the source in diagnostics.
LoadResult load_config_text(std::string_view yaml, std::string_view file);
// Reads `path` (an unreadable file is one diagnostic) and parses it.
LoadResult load_config_file(const std::string& path);
// Parses a CASES file for `egressd test`: a top-level list of test cases in
// the same format as `policy.tests`.
struct TestCasesResult {
  std::vector<TestCase> cases;
  std::vector<Diagnostic> diagnostics;
  [[nodiscard]] bool ok() const noexcept;
};
TestCasesResult load_test_cases_file(const std::string& path);
TestCasesResult load_test_cases_text(std::string_view yaml, std::string_view file);

}  // namespace egressd::config
