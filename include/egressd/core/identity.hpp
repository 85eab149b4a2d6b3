#pragma once
// The identity of a flow's source pod, as the Kubernetes API describes it:
// what identity selectors in `from` are matched against. Plain values, no
// I/O: the `k8s` module builds them from its watch, `policy` reads them,
// `explain`/`test` build them from the command line or a CASES file.

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace egressd {

// Label key -> value, sorted by key, keys unique.
using Labels = std::vector<std::pair<std::string, std::string>>;

// The value of `key` in `labels`, or nullptr. Binary search: `labels` must
// be sorted by key.
const std::string* find_label(const Labels& labels, std::string_view key) noexcept;

// Sorts by key; on a duplicate key the last value wins.
void normalize_labels(Labels& labels);

// The label every namespace carries with its own name (Kubernetes >= 1.21,
// and in `explain`/`test` too).
inline constexpr std::string_view kNamespaceNameLabel = "kubernetes.io/metadata.name";

struct PodIdentity {
  std::string namespace_name;
  std::string pod;
  std::string service_account;  // "" when unknown
  Labels labels;                // the pod's labels, sorted
  Labels namespace_labels;      // the namespace's labels, sorted; always
                                // holds kNamespaceNameLabel = namespace_name
};

// Immutable once published: flows hold it by shared_ptr while they use it.
using PodIdentityPtr = std::shared_ptr<const PodIdentity>;

}  // namespace egressd
