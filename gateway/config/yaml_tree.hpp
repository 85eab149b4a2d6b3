#pragma once
// A YAML document as a small tree built from yaml-cpp's parser events, not
// from YAML::Node: the events carry a position for every node, show every
// key of a mapping (YAML::Node keeps one of two duplicate keys silently)
// and show anchors and aliases, which the contract refuses.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/config/loader.hpp"

namespace egressd::config::detail {

struct YamlNode {
  enum class Kind : std::uint8_t {
    null,      // `~`, `null` or nothing at all
    scalar,    // any other scalar, quoted or not
    sequence,  // children are the items
    mapping,   // children alternate key, value, key, value, ...
    alias,     // `*name`: already reported as an error, carries no value
  };
  Kind kind = Kind::null;
  int line = 0;       // 1-based
  int col = 0;        // 1-based
  std::string value;  // scalars only
  std::vector<YamlNode> children;
};

// Parses exactly one document. On a syntax error, or several documents,
// returns nullopt with one error. An empty document (nothing but comments)
// returns nullopt and no diagnostic: the caller says what was expected.
// Anchors and aliases are reported as errors but the tree is still returned
// (aliases become Kind::alias), so the rest of the document is checked too.
std::optional<YamlNode> parse_yaml(std::string_view text, std::string_view file,
                                   std::vector<Diagnostic>& diagnostics);

}  // namespace egressd::config::detail
