#pragma once
// "Could an entry of some kind apply to a flow from this source to this
// port?", answered without scanning rules: the rules' `from` blocks in a
// prefix trie with one merged port set per block, identity selectors with
// one port set per selector, and a 65536-bit map for rules without `from`.
// The policy keeps one for host entries (rule 11: may a name still change
// the decision?) and one for allow cidr entries (may some address still be
// allowed, so that an explicit-mode name is worth resolving?).

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "cidr_trie.hpp"
#include "egressd/core/ip.hpp"
#include "identity_matcher.hpp"
#include "port_ranges.hpp"

namespace egressd::policy::detail {

class SourcePortIndex {
 public:
  // One rule's entries of the indexed kind: its `from` blocks and selector
  // ids (both empty = any source) and the ports of those entries (empty
  // list = any port).
  void add(std::span<const Cidr> from, std::span<const std::uint32_t> selectors,
           std::vector<PortRange> ports);
  // Call once after the last add(); `selector_count` = the matcher's size.
  void build(std::size_t selector_count);

  // `selectors`: the ids the flow's pod satisfies, ascending.
  [[nodiscard]] bool contains(const IpAddress& src, const SelectorIds& selectors,
                              std::uint16_t port) const noexcept;
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

 private:
  bool any_source_any_port_ = false;
  std::vector<std::uint64_t> any_source_ports_;  // 65536-bit map; empty = none
  CidrTrie from_v4_;                             // value: index into sets_
  CidrTrie from_v6_;
  std::vector<PortRange> pool_;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> sets_;           // (offset, count)
  std::vector<std::pair<std::uint32_t, std::uint32_t>> selector_sets_;  // per selector id

  // Until build().
  std::vector<std::pair<Cidr, PortRange>> pending_blocks_;
  std::vector<std::vector<PortRange>> pending_selectors_;
};

}  // namespace egressd::policy::detail
