#include "cidr_trie.hpp"

#include <algorithm>
#include <bit>

namespace egressd::policy::detail {
namespace {

Bits128 masked(const Bits128& k, unsigned length) noexcept {
  Bits128 out = k;
  if (length < 128) {
    if (length <= 64) {
      out.lo = 0;
      out.hi = length == 0 ? 0 : (length == 64 ? k.hi : k.hi & (~0ULL << (64 - length)));
    } else {
      out.lo = k.lo & (~0ULL << (128 - length));
    }
  }
  return out;
}

unsigned common_prefix(const Bits128& a, const Bits128& b, unsigned limit) noexcept {
  unsigned n = 0;
  if (const std::uint64_t x = a.hi ^ b.hi; x != 0) {
    n = static_cast<unsigned>(std::countl_zero(x));
  } else if (const std::uint64_t y = a.lo ^ b.lo; y != 0) {
    n = 64 + static_cast<unsigned>(std::countl_zero(y));
  } else {
    n = 128;
  }
  return std::min(n, limit);
}

}  // namespace

Bits128 to_bits(const IpAddress& address) noexcept {
  Bits128 out;
  const auto b = address.bytes();
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i < 8) {
      out.hi |= std::uint64_t{b[i]} << (56 - 8 * i);
    } else {
      out.lo |= std::uint64_t{b[i]} << (56 - 8 * (i - 8));
    }
  }
  return out;
}

std::uint32_t CidrTrie::add_node(const Bits128& key, std::uint8_t length, std::uint32_t values) {
  Node n;
  n.key = key;
  n.length = length;
  n.values = values;
  nodes_.push_back(n);
  return static_cast<std::uint32_t>(nodes_.size() - 1);
}

void CidrTrie::insert(const Bits128& key, std::uint8_t length, std::uint32_t values) {
  if (root_ == kNone) {
    root_ = add_node(key, length, values);
    return;
  }
  std::uint32_t parent = kNone;
  unsigned dir = 0;
  std::uint32_t cur = root_;
  // Links are re-read by index after every add_node: push_back may move nodes_.
  const auto link = [&](std::uint32_t to) {
    if (parent == kNone) {
      root_ = to;
    } else {
      nodes_[parent].child[dir] = to;
    }
  };
  for (;;) {
    const Node node = nodes_[cur];
    const unsigned common = common_prefix(key, node.key, std::min<unsigned>(length, node.length));
    if (common == node.length) {
      if (length == node.length) {
        nodes_[cur].values = values;  // build() groups duplicates, so this was a glue node
        return;
      }
      const unsigned b = bit(key, node.length);
      if (node.child[b] == kNone) {
        const std::uint32_t leaf = add_node(key, length, values);
        nodes_[cur].child[b] = leaf;
        return;
      }
      parent = cur;
      dir = b;
      cur = node.child[b];
      continue;
    }
    if (common == length) {
      // The new prefix sits above `cur`.
      const std::uint32_t above = add_node(key, length, values);
      nodes_[above].child[bit(node.key, length)] = cur;
      link(above);
      return;
    }
    // The paths diverge below `common`: a glue node holds both.
    const std::uint32_t glue =
        add_node(masked(key, common), static_cast<std::uint8_t>(common), kNone);
    const std::uint32_t leaf = add_node(key, length, values);
    nodes_[glue].child[bit(key, common)] = leaf;
    nodes_[glue].child[bit(node.key, common)] = cur;
    link(glue);
    return;
  }
}

void CidrTrie::build(std::vector<Item> items, unsigned width) {
  nodes_.clear();
  values_.clear();
  jump_.clear();
  jump_bits_ = 0;
  root_ = kNone;
  for (auto& i : items) i.key = masked(i.key, i.length);
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.key != b.key) return a.key < b.key;
    if (a.length != b.length) return a.length < b.length;
    return a.value < b.value;
  });
  values_.reserve(items.size() * 2);
  nodes_.reserve(items.size() * 2);
  for (std::size_t i = 0; i < items.size();) {
    std::size_t j = i;
    while (j < items.size() && items[j].key == items[i].key && items[j].length == items[i].length) {
      ++j;
    }
    const auto at = static_cast<std::uint32_t>(values_.size());
    values_.push_back(static_cast<std::uint32_t>(j - i));
    for (std::size_t k = i; k < j; ++k) values_.push_back(items[k].value);
    insert(items[i].key, items[i].length, at);
    i = j;
  }
  nodes_.shrink_to_fit();
  values_.shrink_to_fit();
  if (root_ == kNone) return;

  // `up` links, parents before children (iterative: depth can reach 129).
  std::vector<std::uint32_t> stack = {root_};
  while (!stack.empty()) {
    const std::uint32_t n = stack.back();
    stack.pop_back();
    const Node& node = nodes_[n];
    const std::uint32_t up_for_children = node.values != kNone ? n : node.up;
    for (const std::uint32_t c : node.child) {
      if (c == kNone) continue;
      nodes_[c].up = up_for_children;
      stack.push_back(c);
    }
  }
  build_jump_table(width);
}

void CidrTrie::build_jump_table(unsigned width) {
  // Small tries stay in cache; the table would only add a miss.
  constexpr std::size_t kMinNodes = 256;
  if (nodes_.size() < kMinNodes) return;
  const Node root = nodes_[root_];
  if (root.length >= width) return;
  const auto log2_nodes = static_cast<unsigned>(std::bit_width(nodes_.size()));
  jump_bits_ = std::min({16U, log2_nodes, width - root.length});
  jump_.assign(std::size_t{1} << jump_bits_, Jump{});
  const unsigned depth = root.length + jump_bits_;
  for (std::uint32_t index = 0; index < jump_.size(); ++index) {
    // The root's prefix followed by `index`; bits below `depth` stay zero
    // and are never looked at.
    Bits128 a = root.key;
    for (unsigned i = 0; i < jump_bits_; ++i) {
      if (((index >> (jump_bits_ - 1 - i)) & 1U) == 0) continue;
      const unsigned b = root.length + i;
      if (b < 64) {
        a.hi |= 1ULL << (63 - b);
      } else {
        a.lo |= 1ULL << (127 - b);
      }
    }
    Jump j;
    std::uint32_t n = root_;
    while (n != kNone) {
      const Node& node = nodes_[n];
      if (node.length >= depth) {
        j.next = n;  // needs bits below the table's depth: the walk checks it
        break;
      }
      if (!prefix_matches(a, node.key, node.length)) break;
      if (node.values != kNone) j.chain = n;
      n = node.child[bit(a, node.length)];
    }
    jump_[index] = j;
  }
}

std::size_t CidrTrie::memory_bytes() const noexcept {
  return nodes_.capacity() * sizeof(Node) + values_.capacity() * sizeof(std::uint32_t) +
         jump_.capacity() * sizeof(Jump);
}

}  // namespace egressd::policy::detail
