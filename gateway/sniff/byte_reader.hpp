#pragma once
// A bounds-checked big-endian cursor over a byte span: every read says
// whether the bytes were there, so no length is ever used unchecked.

#include <cstddef>
#include <cstdint>
#include <span>

namespace egressd::sniff::detail {

class ByteReader {
 public:
  explicit ByteReader(std::span<const std::uint8_t> data) noexcept : data_(data) {}

  [[nodiscard]] std::size_t remaining() const noexcept { return data_.size() - pos_; }
  [[nodiscard]] bool empty() const noexcept { return remaining() == 0; }

  bool u8(std::uint8_t& out) noexcept {
    if (remaining() < 1) return false;
    out = data_[pos_++];
    return true;
  }
  bool u16(std::uint16_t& out) noexcept {
    if (remaining() < 2) return false;
    out = static_cast<std::uint16_t>((data_[pos_] << 8U) | data_[pos_ + 1]);
    pos_ += 2;
    return true;
  }
  bool u24(std::uint32_t& out) noexcept {
    if (remaining() < 3) return false;
    out = (std::uint32_t{data_[pos_]} << 16U) | (std::uint32_t{data_[pos_ + 1]} << 8U) |
          std::uint32_t{data_[pos_ + 2]};
    pos_ += 3;
    return true;
  }
  bool bytes(std::size_t n, std::span<const std::uint8_t>& out) noexcept {
    if (remaining() < n) return false;
    out = data_.subspan(pos_, n);
    pos_ += n;
    return true;
  }
  bool skip(std::size_t n) noexcept {
    if (remaining() < n) return false;
    pos_ += n;
    return true;
  }

 private:
  std::span<const std::uint8_t> data_;
  std::size_t pos_ = 0;
};

}  // namespace egressd::sniff::detail
