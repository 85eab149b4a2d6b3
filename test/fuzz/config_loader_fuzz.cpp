// Arbitrary bytes into the config loader and the CASES loader: they must
// never crash, throw, leak or hand out a config alongside an error.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "egressd/config/loader.hpp"

namespace {

bool has_error(const std::vector<egressd::config::Diagnostic>& diagnostics) {
  for (const auto& d : diagnostics) {
    if (d.severity == egressd::config::Diagnostic::Severity::error) return true;
    // Positions are 1-based or absent, never negative or half-set.
    if (d.pos.line < 0 || d.pos.col < 0 || (d.pos.line == 0) != (d.pos.col == 0)) std::abort();
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  const auto config = egressd::config::load_config_text(text, "fuzz.yaml");
  if (config.ok() == has_error(config.diagnostics)) std::abort();
  for (const auto& d : config.diagnostics) {
    if (d.to_string().empty()) std::abort();
  }

  const auto cases = egressd::config::load_test_cases_text(text, "fuzz.yaml");
  if (cases.ok() == has_error(cases.diagnostics)) std::abort();
  if (!cases.ok() && !cases.cases.empty()) std::abort();
  return 0;
}
