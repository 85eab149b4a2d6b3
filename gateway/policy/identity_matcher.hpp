#pragma once
// Identity selectors of a compiled policy (the mapping entries of `from`),
// matched against a flow's source pod once per decision.
//
// Every distinct selector gets an id. A selector that names a namespace
// (`namespace:` or an In on kubernetes.io/metadata.name) and an In pod
// label is filed under each (namespace, key, value) pair it accepts; any
// other selector with an `In` requirement (matchLabels, an In expression)
// under each (namespace-or-pod, key, value) of one such requirement. A
// flow looks up only the labels its pod and namespace carry (and each pod
// label with its namespace), then checks the few candidates in full. Selectors with no `In`
// requirement (only NotIn / Exists / DoesNotExist, or `{}`) are checked for every identity: there
// are few in real policies, and each costs a handful of label lookups. So the cost of a match grows
// with the pod's labels and the candidates they name, not with the number of rules.
//
// Semantics are Kubernetes LabelSelector's: all requirements must hold; In
// needs the key with a listed value; NotIn holds when the key is absent or
// its value is not listed; Exists / DoesNotExist test the key; an empty
// selector selects everything. A selector with both parts needs both; an
// unknown source (no identity) matches none.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "egressd/config/spec.hpp"
#include "egressd/core/identity.hpp"
#include "egressd/policy/policy.hpp"

namespace egressd::policy::detail {

using SelectorIds = SelectorSet;

class IdentityMatcher {
 public:
  // Adds `s` (or finds an equal one); returns its id. Ids are dense from 0.
  std::uint32_t add(const config::IdentitySelector& s);
  // Builds the index; call once after the last add().
  void build();

  [[nodiscard]] bool empty() const noexcept { return selectors_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return selectors_.size(); }
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

  // The ids of the selectors `identity` satisfies, ascending. None for a
  // null identity. Allocation-free unless a pod matches more than 16.
  void match(const PodIdentity* identity, SelectorIds& out) const;

  // Slow path, for explain: whether selector `id`'s namespace part and its
  // pod part each hold for `identity` (an absent part holds). Checks the
  // one selector in full; no index.
  struct PartsMatch {
    bool namespace_ok = false;
    bool pod_ok = false;
  };
  [[nodiscard]] PartsMatch match_parts(std::uint32_t id, const PodIdentity& identity) const;

 private:
  struct Requirement {
    std::string key;
    config::LabelRequirement::Operator op = config::LabelRequirement::Operator::exists;
    std::vector<std::string> values;  // sorted
    friend bool operator==(const Requirement&, const Requirement&) = default;
  };
  struct Part {
    bool present = false;
    std::vector<Requirement> requirements;  // sorted by key
    friend bool operator==(const Part&, const Part&) = default;
  };
  struct Selector {
    Part ns;
    Part pod;
    friend bool operator==(const Selector&, const Selector&) = default;
  };

  static bool holds(const Part& part, const Labels& labels);
  static std::uint64_t anchor_hash(bool pod_scope, std::string_view key,
                                   std::string_view value) noexcept;
  // A namespace name and one pod label, for selectors that need both.
  static std::uint64_t pair_hash(std::string_view ns, std::string_view key,
                                 std::string_view value) noexcept;

  std::vector<Selector> selectors_;
  std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> anchored_;
  // Selectors naming a namespace and an In pod label: filed under the pair,
  // so a pod's candidates are the few selectors of its own namespace AND
  // labels, not every selector of its namespace.
  std::unordered_map<std::uint64_t, std::vector<std::uint32_t>> paired_;
  std::vector<std::uint32_t> unanchored_;
  std::unordered_map<std::string, std::uint32_t> dedupe_;  // until build()
};

}  // namespace egressd::policy::detail
