#pragma once
// A path-compressed binary trie (Patricia) over the prefixes of one address
// family, with a list of values on each prefix. visit() walks from the root
// along the address and reports EVERY stored prefix that contains it —
// deny-overrides needs all of them, not only the longest. Depth is bounded
// by the number of distinct stored prefixes on one path (at most 33 for
// IPv4, 129 for IPv6), not by the number of prefixes.
//
// Each level of a walk is a cache miss once the trie outgrows the cache, so
// large tries get a jump table indexed by the K bits just below the root's
// prefix (K ~ log2(nodes), at most 16): it names the deepest value-bearing
// node fully decided by those bits (the others are reached through `up`
// links) and the node where the ordinary walk resumes. A lookup then costs
// one table read, the few prefixes that contain the address, and the short
// tail of the walk below the table's depth.

#include <cstdint>
#include <span>
#include <vector>

#include "egressd/core/ip.hpp"

namespace egressd::policy::detail {

// An address as 128 bits, most significant first; IPv4 in the top 32 bits.
struct Bits128 {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend auto operator<=>(const Bits128&, const Bits128&) = default;
  friend bool operator==(const Bits128&, const Bits128&) = default;
};

Bits128 to_bits(const IpAddress& address) noexcept;

class CidrTrie {
 public:
  struct Item {
    Bits128 key;  // host bits zero
    std::uint8_t length = 0;
    std::uint32_t value = 0;
  };

  // Replaces the contents. Values of one prefix are kept in ascending order.
  // `width`: 32 for IPv4, 128 for IPv6.
  void build(std::vector<Item> items, unsigned width);

  // Calls f(prefix_length, values) for each stored prefix containing
  // `address`, in no particular order; stops early when f returns true.
  // Returns whether f stopped it.
  template <class F>
  bool visit(const Bits128& address, F&& f) const {
    std::uint32_t n = root_;
    if (!jump_.empty()) {
      const Node& root = nodes_[root_];
      if (!prefix_matches(address, root.key, root.length)) return false;
      const Jump j = jump_[extract(address, root.length, jump_bits_)];
      for (std::uint32_t c = j.chain; c != kNone; c = nodes_[c].up) {
        const Node& node = nodes_[c];
        const std::span<const std::uint32_t> values{values_.data() + node.values + 1,
                                                    values_[node.values]};
        if (f(node.length, values)) return true;
      }
      n = j.next;
    }
    while (n != kNone) {
      const Node& node = nodes_[n];
      if (!prefix_matches(address, node.key, node.length)) return false;
      if (node.values != kNone) {
        const std::span<const std::uint32_t> values{values_.data() + node.values + 1,
                                                    values_[node.values]};
        if (f(node.length, values)) return true;
      }
      if (node.length >= 128) return false;
      n = node.child[bit(address, node.length)];
    }
    return false;
  }

  // Starts loading the jump-table entry visit(address) will read.
  void prefetch(const Bits128& address) const noexcept {
    if (jump_.empty()) return;
    const Node& root = nodes_[root_];
    if (prefix_matches(address, root.key, root.length)) {
      __builtin_prefetch(&jump_[extract(address, root.length, jump_bits_)]);
    }
  }

  [[nodiscard]] bool empty() const noexcept { return root_ == kNone; }
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

  static bool prefix_matches(const Bits128& a, const Bits128& prefix, unsigned length) noexcept {
    const std::uint64_t mask_hi =
        length >= 64 ? ~0ULL : (length == 0 ? 0ULL : ~0ULL << (64 - length));
    const std::uint64_t mask_lo =
        length <= 64 ? 0ULL : (length >= 128 ? ~0ULL : ~0ULL << (128 - length));
    return ((a.hi ^ prefix.hi) & mask_hi) == 0 && ((a.lo ^ prefix.lo) & mask_lo) == 0;
  }
  // `count` (1-32) bits of `a` starting at bit `offset`, as an integer.
  static std::uint32_t extract(const Bits128& a, unsigned offset, unsigned count) noexcept {
    const unsigned end = offset + count;
    std::uint64_t v = 0;
    if (end <= 64) {
      v = a.hi >> (64 - end);
    } else if (offset >= 64) {
      v = a.lo >> (128 - end);
    } else {
      v = (a.hi << (end - 64)) | (a.lo >> (128 - end));
    }
    return static_cast<std::uint32_t>(v & ((1ULL << count) - 1));
  }
  static unsigned bit(const Bits128& a, unsigned i) noexcept {
    return i < 64 ? static_cast<unsigned>((a.hi >> (63 - i)) & 1U)
                  : static_cast<unsigned>((a.lo >> (127 - i)) & 1U);
  }

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFU;
  struct Node {
    Bits128 key;
    std::uint32_t child[2] = {kNone, kNone};
    std::uint32_t values = kNone;  // index into values_: count, then the values
    std::uint32_t up = kNone;      // nearest value-bearing proper ancestor
    std::uint8_t length = 0;
  };
  struct Jump {
    std::uint32_t chain = kNone;  // deepest value-bearing node above the table's depth
    std::uint32_t next = kNone;   // where the walk resumes (prefix not yet checked)
  };
  void build_jump_table(unsigned width);
  void insert(const Bits128& key, std::uint8_t length, std::uint32_t values);
  std::uint32_t add_node(const Bits128& key, std::uint8_t length, std::uint32_t values);

  std::vector<Node> nodes_;
  std::vector<std::uint32_t> values_;
  std::vector<Jump> jump_;
  unsigned jump_bits_ = 0;
  std::uint32_t root_ = kNone;
};

}  // namespace egressd::policy::detail
