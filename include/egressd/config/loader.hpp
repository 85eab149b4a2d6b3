#pragma once
// YAML -> ConfigSpec. Collects every problem, each with its position, so an
// operator fixes a config in one pass. Never throws on bad input.
//
// What is refused (each an error with FILE:LINE:COL): YAML syntax errors,
// more than one document, anchors and aliases, duplicate keys in one
// mapping, unknown keys, values of the wrong type, and every value the
// contract's "Configuration (YAML)" section does not allow. What only warns:
// `destination: trust`, a host entry without `ports` (contract rule 11), a
// CIDR with host bits set (the masked block is used), a wildcard directly
// under a top-level domain (`*.com`), `until` without `mode`, and an `until`
// day already past.

#include <chrono>
#include <cstddef>
#include <cstdint>
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

// Input larger than this is refused whole (one diagnostic), before parsing.
// A 100k-rule policy in block style is about 17 MiB: leave room above it.
inline constexpr std::size_t kMaxConfigBytes = std::size_t{64} << 20;

struct LoadOptions {
  // The UTC day `until` is compared with for the "already past" warning;
  // nullopt = today by the system clock.
  std::optional<std::chrono::sys_days> today;
};

// Parses and validates. `file` names the source in diagnostics. Diagnostics
// come sorted by position (those without one first).
LoadResult load_config_text(std::string_view yaml, std::string_view file);
LoadResult load_config_text(std::string_view yaml, std::string_view file,
                            const LoadOptions& options);
// Reads `path` (an unreadable file is one diagnostic) and parses it.
LoadResult load_config_file(const std::string& path);
LoadResult load_config_file(const std::string& path, const LoadOptions& options);
// Parses a CASES file for `egressd test`: a top-level list of test cases in
// the same format as `policy.tests`. Listener and rule names are not checked
// here (there is no config to check them against): the caller does that.
struct TestCasesResult {
  std::vector<TestCase> cases;
  std::vector<Diagnostic> diagnostics;
  [[nodiscard]] bool ok() const noexcept;  // no error (warnings allowed)
};
TestCasesResult load_test_cases_file(const std::string& path);
TestCasesResult load_test_cases_text(std::string_view yaml, std::string_view file);

// --- Value syntax, shared with the command line -------------------------

// "250ms", "5s", "10m", "1h": a decimal integer immediately followed by the
// unit. Refuses everything else ("5", "-1s", "1.5s", "5 s", "5S") and
// values over kMaxDuration.
inline constexpr Duration kMaxDuration = std::chrono::hours{24 * 365};
std::optional<Duration> parse_duration(std::string_view text) noexcept;

// "YYYY-MM-DD", a valid Gregorian calendar day (e.g. "2026-02-29" refused).
std::optional<std::chrono::sys_days> parse_date(std::string_view text) noexcept;

// A `to.host` pattern: "name", "*.name" (exactly one label below) or
// "**.name" (one or more). Returns the canonical form — lowercase ASCII,
// trailing dot removed, Unicode labels converted to punycode (IDNA 2008,
// UTS 46 non-transitional, via libidn2) — or a one-sentence reason.
// Refuses: empty names, '*' anywhere but as the whole first label, a lone
// '*' / '*.' / '**.', empty labels, labels over 63 bytes, names over 253,
// bytes other than letters, digits and hyphens after IDNA, IP literals.
struct HostPatternResult {
  std::optional<std::string> pattern;
  std::string error;  // set when pattern is nullopt
};
HostPatternResult canonicalize_host_pattern(std::string_view raw);

// Kubernetes label syntax (apimachinery validation): nullopt when valid,
// else a one-sentence reason.
// - a key is [prefix/]name: the prefix a DNS-1123 subdomain (lowercase
//   letters, digits, '-' and '.', at most 253 bytes, each label starting and
//   ending alphanumeric), the name 1-63 bytes of letters, digits, '-', '_'
//   and '.', starting and ending alphanumeric;
// - a value is empty or like a key's name part;
// - a namespace name is a DNS-1123 label (lowercase letters, digits and
//   '-', 1-63 bytes, starting and ending alphanumeric).
std::optional<std::string> label_key_problem(std::string_view key);
std::optional<std::string> label_value_problem(std::string_view value);
std::optional<std::string> namespace_name_problem(std::string_view name);

}  // namespace egressd::config
