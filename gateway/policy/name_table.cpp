#include "name_table.hpp"

#include <algorithm>
#include <bit>
#include <cstring>

namespace egressd::policy::detail {
namespace {

constexpr std::uint64_t kMul1 = 0x9E3779B97F4A7C15ULL;
constexpr std::uint64_t kMul2 = 0xD6E8FEB86659FD93ULL;

inline std::uint64_t mix(std::uint64_t h) noexcept {
  h ^= h >> 32;
  h *= kMul2;
  h ^= h >> 29;
  return h;
}

}  // namespace

std::uint64_t hash_bytes(std::string_view s) noexcept {
  std::uint64_t h = 0x243F6A8885A308D3ULL ^ (s.size() * kMul1);
  const char* p = s.data();
  std::size_t n = s.size();
  while (n >= 8) {
    std::uint64_t v = 0;
    std::memcpy(&v, p, 8);
    h = std::rotl((h ^ v) * kMul1, 31);
    p += 8;
    n -= 8;
  }
  if (n > 0) {
    std::uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = std::rotl((h ^ v) * kMul1, 31);
  }
  return mix(h);
}

void NameTable::build(std::string_view arena, std::vector<Item> items) {
  arena_ = arena;
  const auto key_of = [&](const Item& i) { return arena.substr(i.key_offset, i.key_length); };
  std::sort(items.begin(), items.end(), [&](const Item& a, const Item& b) {
    const auto ka = key_of(a);
    const auto kb = key_of(b);
    return ka != kb ? ka < kb : a.value < b.value;
  });
  keys_ = 0;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i == 0 || key_of(items[i]) != key_of(items[i - 1])) ++keys_;
  }
  // Keys are names or pattern bases: at most 256 bytes (the 16-bit length).
  items.erase(std::remove_if(items.begin(), items.end(),
                             [](const Item& i) { return i.key_length > 0xFFFFU; }),
              items.end());
  // Load factor at most 1/2 keeps linear probes short.
  std::size_t capacity = 8;
  while (capacity < keys_ * 2) capacity *= 2;
  slots_.assign(keys_ == 0 ? 0 : capacity, Slot{});
  mask_ = capacity - 1;
  values_.clear();
  values_.reserve(items.size() + keys_);
  std::size_t filter_bits = 64;
  while (filter_bits < keys_ * 16) filter_bits *= 2;
  filter_.assign(keys_ == 0 ? 0 : filter_bits / 64, 0);
  filter_mask_ = filter_bits - 1;
  for (std::size_t i = 0; i < items.size();) {
    std::size_t j = i;
    while (j < items.size() && key_of(items[j]) == key_of(items[i])) ++j;
    const auto key = key_of(items[i]);
    const std::uint64_t h = hash_bytes(key);
    const std::size_t bit = (h >> 32) & filter_mask_;
    filter_[bit / 64] |= 1ULL << (bit % 64);
    std::size_t pos = h & mask_;
    while (slots_[pos].state != State::empty) pos = (pos + 1) & mask_;
    Slot& slot = slots_[pos];
    slot.hash = static_cast<std::uint32_t>(h);
    slot.key_offset = items[i].key_offset;
    slot.key_length = static_cast<std::uint16_t>(key.size());
    if (j - i == 1) {
      slot.state = State::single;
      slot.values = items[i].value;
    } else {
      slot.state = State::list;
      slot.values = static_cast<std::uint32_t>(values_.size());
      values_.push_back(static_cast<std::uint32_t>(j - i));
      for (std::size_t k = i; k < j; ++k) values_.push_back(items[k].value);
    }
    i = j;
  }
}

std::span<const std::uint32_t> NameTable::find(std::string_view key) const noexcept {
  if (keys_ == 0) return {};
  const std::uint64_t h = hash_bytes(key);
  const std::size_t bit = (h >> 32) & filter_mask_;
  if (((filter_[bit / 64] >> (bit % 64)) & 1U) == 0) return {};
  const auto h32 = static_cast<std::uint32_t>(h);
  for (std::size_t pos = h & mask_;; pos = (pos + 1) & mask_) {
    const Slot& slot = slots_[pos];
    if (slot.state == State::empty) return {};
    if (slot.hash == h32 && slot.key_length == key.size() &&
        std::memcmp(arena_.data() + slot.key_offset, key.data(), key.size()) == 0) {
      if (slot.state == State::single) return {&slot.values, 1};
      return {values_.data() + slot.values + 1, values_[slot.values]};
    }
  }
}

void NameTable::prefetch(std::string_view key) const noexcept {
  if (keys_ == 0) return;
  const std::uint64_t h = hash_bytes(key);
  const std::size_t bit = (h >> 32) & filter_mask_;
  __builtin_prefetch(&filter_[bit / 64]);
  __builtin_prefetch(&slots_[h & mask_]);
}

std::size_t NameTable::memory_bytes() const noexcept {
  return slots_.capacity() * sizeof(Slot) + values_.capacity() * sizeof(std::uint32_t) +
         filter_.capacity() * sizeof(std::uint64_t);
}

}  // namespace egressd::policy::detail
