#include "egressd/core/identity.hpp"

#include <algorithm>

namespace egressd {

const std::string* find_label(const Labels& labels, std::string_view key) noexcept {
  const auto it = std::lower_bound(labels.begin(), labels.end(), key,
                                   [](const auto& kv, std::string_view k) { return kv.first < k; });
  if (it == labels.end() || it->first != key) return nullptr;
  return &it->second;
}

void normalize_labels(Labels& labels) {
  // Stable, so among equal keys the original order is kept and the last
  // one can win.
  std::stable_sort(labels.begin(), labels.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  Labels out;
  out.reserve(labels.size());
  for (auto& kv : labels) {
    if (!out.empty() && out.back().first == kv.first) {
      out.back().second = std::move(kv.second);
    } else {
      out.push_back(std::move(kv));
    }
  }
  labels = std::move(out);
}

}  // namespace egressd
