#include "source_port_index.hpp"

#include <algorithm>

namespace egressd::policy::detail {

void SourcePortIndex::add(std::span<const Cidr> from, std::span<const std::uint32_t> selectors,
                          std::vector<PortRange> ports) {
  if (ports.empty()) ports.push_back(kAnyPort);
  const auto merged = merge_ranges(std::move(ports));
  if (from.empty() && selectors.empty()) {
    if (merged.size() == 1 && merged.front() == kAnyPort) {
      any_source_any_port_ = true;
      return;
    }
    if (any_source_ports_.empty()) any_source_ports_.assign(65536 / 64, 0);
    for (const PortRange& pr : merged) {
      for (std::uint32_t port = pr.first; port <= pr.last; ++port) {
        any_source_ports_[port / 64] |= 1ULL << (port % 64);
      }
    }
    return;
  }
  for (const Cidr& c : from) {
    for (const PortRange& pr : merged) pending_blocks_.emplace_back(c, pr);
  }
  for (const std::uint32_t id : selectors) {
    if (pending_selectors_.size() <= id) pending_selectors_.resize(id + 1);
    pending_selectors_[id].insert(pending_selectors_[id].end(), merged.begin(), merged.end());
  }
}

void SourcePortIndex::build(std::size_t selector_count) {
  // One merged port set per distinct source block, so a source shared by
  // many rules costs one range search, not one per rule.
  std::sort(pending_blocks_.begin(), pending_blocks_.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    return a.second.first < b.second.first;
  });
  std::vector<CidrTrie::Item> v4;
  std::vector<CidrTrie::Item> v6;
  for (std::size_t i = 0; i < pending_blocks_.size();) {
    std::size_t j = i;
    std::vector<PortRange> ranges;
    while (j < pending_blocks_.size() && pending_blocks_[j].first == pending_blocks_[i].first) {
      ranges.push_back(pending_blocks_[j].second);
      ++j;
    }
    ranges = merge_ranges(std::move(ranges));
    const auto set = static_cast<std::uint32_t>(sets_.size());
    sets_.emplace_back(static_cast<std::uint32_t>(pool_.size()),
                       static_cast<std::uint32_t>(ranges.size()));
    pool_.insert(pool_.end(), ranges.begin(), ranges.end());
    const Cidr& c = pending_blocks_[i].first;
    (c.base.is_v4() ? v4 : v6).push_back(CidrTrie::Item{to_bits(c.base), c.prefix_len, set});
    i = j;
  }
  from_v4_.build(std::move(v4), 32);
  from_v6_.build(std::move(v6), 128);
  selector_sets_.assign(selector_count, {0, 0});
  for (std::size_t id = 0; id < pending_selectors_.size() && id < selector_count; ++id) {
    if (pending_selectors_[id].empty()) continue;
    const auto merged = merge_ranges(std::move(pending_selectors_[id]));
    selector_sets_[id] = {static_cast<std::uint32_t>(pool_.size()),
                          static_cast<std::uint32_t>(merged.size())};
    pool_.insert(pool_.end(), merged.begin(), merged.end());
  }
  std::vector<std::pair<Cidr, PortRange>>().swap(pending_blocks_);
  std::vector<std::vector<PortRange>>().swap(pending_selectors_);
}

bool SourcePortIndex::contains(const IpAddress& src, const SelectorIds& selectors,
                               std::uint16_t port) const noexcept {
  if (any_source_any_port_) return true;
  if (!any_source_ports_.empty() && ((any_source_ports_[port / 64] >> (port % 64)) & 1U) != 0) {
    return true;
  }
  for (const std::uint32_t id : selectors) {
    if (id >= selector_sets_.size()) continue;
    const auto [off, count] = selector_sets_[id];
    if (count != 0 && ranges_contain({pool_.data() + off, count}, port)) return true;
  }
  const CidrTrie& trie = src.is_v4() ? from_v4_ : from_v6_;
  return trie.visit(to_bits(src), [&](unsigned, std::span<const std::uint32_t> sets) {
    for (const std::uint32_t s : sets) {
      const auto [off, count] = sets_[s];
      if (ranges_contain({pool_.data() + off, count}, port)) return true;
    }
    return false;
  });
}

std::size_t SourcePortIndex::memory_bytes() const noexcept {
  return any_source_ports_.capacity() * sizeof(std::uint64_t) + from_v4_.memory_bytes() +
         from_v6_.memory_bytes() + pool_.capacity() * sizeof(PortRange) +
         (sets_.capacity() + selector_sets_.capacity()) *
             sizeof(std::pair<std::uint32_t, std::uint32_t>);
}

}  // namespace egressd::policy::detail
