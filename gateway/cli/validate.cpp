#include "egressd/cli/validate.hpp"

#include <charconv>

namespace egressd::cli {

bool ValidatedConfig::ok() const noexcept {
  if (!config || !policy) return false;
  for (const auto& d : diagnostics) {
    if (d.severity == config::Diagnostic::Severity::error) return false;
  }
  return true;
}

ValidatedConfig load_and_validate(const std::string& path, std::chrono::sys_days today,
                                  bool run_own_tests) {
  ValidatedConfig out;
  config::LoadResult loaded = config::load_config_file(path);
  out.diagnostics = std::move(loaded.diagnostics);
  if (!loaded.config) return out;
  out.config = std::move(loaded.config);
  out.policy = policy::CompiledPolicy::compile(out.config->policy, out.config->tls);
  if (!run_own_tests) return out;
  const auto results =
      policy::run_tests(*out.policy, out.config->listeners, out.config->policy.tests, today);
  for (const auto& r : results) {
    if (r.passed) continue;
    config::Diagnostic d;
    d.severity = config::Diagnostic::Severity::error;
    d.pos = r.test->pos;
    d.message = "policy test failed: " + r.failure;
    out.diagnostics.push_back(std::move(d));
  }
  return out;
}

std::chrono::sys_days utc_today() {
  return std::chrono::floor<std::chrono::days>(std::chrono::system_clock::now());
}

std::optional<std::chrono::sys_days> parse_date(std::string_view text) {
  // Exactly YYYY-MM-DD.
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return std::nullopt;
  auto number = [&](std::size_t pos, std::size_t len) -> std::optional<int> {
    int v = 0;
    const char* first = text.data() + pos;
    for (std::size_t i = 0; i < len; ++i) {
      if (first[i] < '0' || first[i] > '9') return std::nullopt;
    }
    std::from_chars(first, first + len, v);
    return v;
  };
  auto y = number(0, 4);
  auto m = number(5, 2);
  auto d = number(8, 2);
  if (!y || !m || !d) return std::nullopt;
  const std::chrono::year_month_day ymd{std::chrono::year{*y},
                                        std::chrono::month{static_cast<unsigned>(*m)},
                                        std::chrono::day{static_cast<unsigned>(*d)}};
  if (!ymd.ok()) return std::nullopt;
  return std::chrono::sys_days{ymd};
}

}  // namespace egressd::cli
