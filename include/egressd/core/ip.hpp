#pragma once
// IP addresses, endpoints and CIDR blocks as plain values: no sockets, no
// Asio, so that policy and the parsers can use them and stay pure.
//
// Normalisation happens here and only here: an IPv4-mapped IPv6 address
// (::ffff:a.b.c.d) becomes the IPv4 address, as the contract requires for
// sources and destinations alike.

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace egressd {

class IpAddress {
 public:
  enum class Family : std::uint8_t { v4, v6 };

  // 0.0.0.0
  constexpr IpAddress() = default;

  static IpAddress from_v4(std::array<std::uint8_t, 4> bytes) noexcept;
  // IPv4-mapped input yields the IPv4 address.
  static IpAddress from_v6(std::array<std::uint8_t, 16> bytes) noexcept;
  // Host-order 32-bit value, e.g. 0x7f000001 for 127.0.0.1.
  static IpAddress from_v4_uint(std::uint32_t host_order) noexcept;

  // Accepts dotted-quad IPv4 and RFC 4291 text IPv6 (no brackets, no zone,
  // no port). Refuses anything else, including leading zeros in IPv4
  // ("010.0.0.1" is ambiguous between octal and decimal).
  static std::optional<IpAddress> parse(std::string_view text) noexcept;

  [[nodiscard]] Family family() const noexcept { return family_; }
  [[nodiscard]] bool is_v4() const noexcept { return family_ == Family::v4; }
  [[nodiscard]] bool is_v6() const noexcept { return family_ == Family::v6; }
  // 4 bytes for IPv4, 16 for IPv6, network order.
  [[nodiscard]] std::span<const std::uint8_t> bytes() const noexcept {
    return {bytes_.data(), is_v4() ? 4U : 16U};
  }
  [[nodiscard]] std::uint32_t v4_uint() const noexcept;  // host order; IPv4 only
  // Bit `i` (0 = most significant) of the address.
  [[nodiscard]] bool bit(unsigned i) const noexcept {
    return ((bytes_[i / 8] >> (7 - i % 8)) & 1U) != 0;
  }
  [[nodiscard]] unsigned bit_width() const noexcept { return is_v4() ? 32 : 128; }

  // Canonical text: dotted quad, or RFC 5952 for IPv6.
  [[nodiscard]] std::string to_string() const;

  friend auto operator<=>(const IpAddress&, const IpAddress&) = default;
  friend bool operator==(const IpAddress&, const IpAddress&) = default;

 private:
  std::array<std::uint8_t, 16> bytes_{};  // IPv4 uses the first 4 bytes
  Family family_ = Family::v4;
};

struct Endpoint {
  IpAddress ip;
  std::uint16_t port = 0;

  // "IPv4:port" or "[IPv6]:port"; port 1-65535 unless allow_port_zero.
  static std::optional<Endpoint> parse(std::string_view text,
                                       bool allow_port_zero = false) noexcept;
  // "ip:port", IPv6 as "[ip]:port" (the access log's form).
  [[nodiscard]] std::string to_string() const;

  friend auto operator<=>(const Endpoint&, const Endpoint&) = default;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

struct Cidr {
  IpAddress base;  // host bits are always zero
  std::uint8_t prefix_len = 0;

  // "a.b.c.d/n", "v6/n", or a bare address (a /32 or /128). An IPv4-mapped
  // IPv6 block with a prefix of at least 96 becomes the IPv4 block.
  // `had_host_bits` (optional) reports whether bits beyond the prefix were
  // set in the text and masked away, so config can warn about it.
  static std::optional<Cidr> parse(std::string_view text, bool* had_host_bits = nullptr) noexcept;
  static Cidr make(IpAddress address, std::uint8_t prefix_len) noexcept;  // masks

  [[nodiscard]] bool contains(const IpAddress& ip) const noexcept;
  // True when every address of `inner` is in this block.
  [[nodiscard]] bool contains(const Cidr& inner) const noexcept;
  [[nodiscard]] std::string to_string() const;

  friend auto operator<=>(const Cidr&, const Cidr&) = default;
  friend bool operator==(const Cidr&, const Cidr&) = default;
};

}  // namespace egressd
