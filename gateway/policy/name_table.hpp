#pragma once
// Exact-string lookup from a name (or a wildcard pattern's base) to the
// entries that carry it. Open addressing with linear probing over 16-byte
// slots; keys live in an arena owned by the caller, so a lookup is a hash,
// a probe or two and one memcmp — no allocation. A one-hash presence
// bitmap (16 bits per key, so it stays in cache when the slots do not)
// answers most absent keys — the common case for the per-suffix `**.`
// lookups — without touching the slots. Built once, then read-only (safe to
// share between threads).

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace egressd::policy::detail {

// 64-bit hash over the bytes (8 at a time, multiply-xorshift mixing).
// Unseeded on purpose: the keys come from the config, traffic only looks
// names up, and a lookup cannot lengthen a probe chain — so there is no
// hash-flooding surface, and compiled tables are reproducible.
std::uint64_t hash_bytes(std::string_view s) noexcept;

class NameTable {
 public:
  struct Item {
    std::uint32_t key_offset = 0;  // into the arena given to build()
    std::uint32_t key_length = 0;
    std::uint32_t value = 0;
  };

  // `arena` must outlive the table and never move. Values for one key are
  // returned in ascending order.
  void build(std::string_view arena, std::vector<Item> items);

  // The values stored for `key`, ascending; empty when absent.
  [[nodiscard]] std::span<const std::uint32_t> find(std::string_view key) const noexcept;

  // Starts loading the cache lines find(key) will read, so that lookups in
  // different tables (and the CIDR tries) overlap their memory latency.
  void prefetch(std::string_view key) const noexcept;

  [[nodiscard]] bool empty() const noexcept { return keys_ == 0; }
  [[nodiscard]] std::size_t keys() const noexcept { return keys_; }
  [[nodiscard]] std::size_t memory_bytes() const noexcept;

 private:
  enum class State : std::uint16_t { empty, single, list };
  struct Slot {
    std::uint32_t hash = 0;  // low 32 bits of the key's hash, to skip most memcmps
    std::uint32_t key_offset = 0;
    std::uint16_t key_length = 0;
    State state = State::empty;
    // single: the one value itself (saves a cache miss in the common case);
    // list: index into values_ of the count, then the values.
    std::uint32_t values = 0;
  };
  std::string_view arena_;
  std::vector<Slot> slots_;
  std::vector<std::uint32_t> values_;
  std::vector<std::uint64_t> filter_;
  std::size_t filter_mask_ = 0;  // in bits
  std::size_t mask_ = 0;
  std::size_t keys_ = 0;
};

}  // namespace egressd::policy::detail
