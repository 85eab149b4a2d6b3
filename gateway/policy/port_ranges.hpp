#pragma once
// Sorted, merged port range lists (internal to `policy`).

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <span>
#include <vector>

#include "egressd/config/spec.hpp"

namespace egressd::policy::detail {

using config::PortRange;

inline constexpr PortRange kAnyPort{0, 65535};

// `ranges` sorted and merged (merge_ranges): is `port` in one of them?
inline bool ranges_contain(std::span<const PortRange> ranges, std::uint16_t port) noexcept {
  // The candidate is the last range starting at or below port.
  auto it = std::upper_bound(ranges.begin(), ranges.end(), port,
                             [](std::uint16_t p, const PortRange& r) { return p < r.first; });
  if (it == ranges.begin()) return false;
  return port <= std::prev(it)->last;
}

// Sorts and merges overlapping or adjacent ranges; drops empty ones.
inline std::vector<PortRange> merge_ranges(std::vector<PortRange> ranges) {
  std::sort(ranges.begin(), ranges.end(),
            [](const PortRange& a, const PortRange& b) { return a.first < b.first; });
  std::vector<PortRange> out;
  for (const PortRange& r : ranges) {
    if (r.first > r.last) continue;
    if (!out.empty() && std::uint32_t{r.first} <= std::uint32_t{out.back().last} + 1U) {
      out.back().last = std::max(out.back().last, r.last);
    } else {
      out.push_back(r);
    }
  }
  return out;
}

}  // namespace egressd::policy::detail
