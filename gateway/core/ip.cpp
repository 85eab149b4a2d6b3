#include "egressd/core/ip.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace egressd {
namespace {

constexpr std::array<std::uint8_t, 12> kV4MappedPrefix = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool is_v4_mapped(const std::array<std::uint8_t, 16>& b) noexcept {
  return std::equal(kV4MappedPrefix.begin(), kV4MappedPrefix.end(), b.begin());
}

// Strict dotted quad: four decimal octets 0-255, no leading zeros, no signs.
std::optional<std::array<std::uint8_t, 4>> parse_dotted_quad(std::string_view s) noexcept {
  std::array<std::uint8_t, 4> out{};
  std::size_t pos = 0;
  for (std::size_t i = 0; i < 4; ++i) {
    if (i > 0) {
      if (pos >= s.size() || s[pos] != '.') return std::nullopt;
      ++pos;
    }
    const std::size_t start = pos;
    unsigned value = 0;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && pos - start < 3) {
      value = value * 10 + static_cast<unsigned>(s[pos] - '0');
      ++pos;
    }
    const std::size_t len = pos - start;
    if (len == 0 || value > 255 || (len > 1 && s[start] == '0')) return std::nullopt;
    out[i] = static_cast<std::uint8_t>(value);
  }
  if (pos != s.size()) return std::nullopt;
  return out;
}

}  // namespace

IpAddress IpAddress::from_v4(std::array<std::uint8_t, 4> bytes) noexcept {
  IpAddress a;
  std::copy(bytes.begin(), bytes.end(), a.bytes_.begin());
  a.family_ = Family::v4;
  return a;
}

IpAddress IpAddress::from_v4_uint(std::uint32_t v) noexcept {
  return from_v4({static_cast<std::uint8_t>(v >> 24), static_cast<std::uint8_t>(v >> 16),
                  static_cast<std::uint8_t>(v >> 8), static_cast<std::uint8_t>(v)});
}

IpAddress IpAddress::from_v6(std::array<std::uint8_t, 16> bytes) noexcept {
  if (is_v4_mapped(bytes)) return from_v4({bytes[12], bytes[13], bytes[14], bytes[15]});
  IpAddress a;
  a.bytes_ = bytes;
  a.family_ = Family::v6;
  return a;
}

std::optional<IpAddress> IpAddress::parse(std::string_view text) noexcept {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN - 1) return std::nullopt;
  if (text.find(':') == std::string_view::npos) {
    auto quad = parse_dotted_quad(text);
    if (!quad) return std::nullopt;
    return from_v4(*quad);
  }
  // inet_pton needs a NUL-terminated string; the length is bounded above.
  // A NUL inside would end the text early ("::1\0junk" read as ::1).
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  char buf[INET6_ADDRSTRLEN];
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  std::array<std::uint8_t, 16> b{};
  if (::inet_pton(AF_INET6, buf, b.data()) != 1) return std::nullopt;
  return from_v6(b);
}

std::uint32_t IpAddress::v4_uint() const noexcept {
  return (std::uint32_t{bytes_[0]} << 24) | (std::uint32_t{bytes_[1]} << 16) |
         (std::uint32_t{bytes_[2]} << 8) | std::uint32_t{bytes_[3]};
}

std::string IpAddress::to_string() const {
  char buf[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes_.data(), buf, sizeof buf);
  return buf;
}

std::optional<Endpoint> Endpoint::parse(std::string_view text, bool allow_port_zero) noexcept {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    if (host.find(':') == std::string_view::npos) return std::nullopt;  // [1.2.3.4]:80
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // IPv6 needs brackets
  }
  auto ip = IpAddress::parse(host);
  if (!ip || port.empty() || port.size() > 5) return std::nullopt;
  if (port.size() > 1 && port.front() == '0') return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (ec != std::errc{} || end != port.data() + port.size() || value > 65535) return std::nullopt;
  if (value == 0 && !allow_port_zero) return std::nullopt;
  return Endpoint{*ip, static_cast<std::uint16_t>(value)};
}

std::string Endpoint::to_string() const {
  std::string out;
  if (ip.is_v6()) {
    out.reserve(48);
    out += '[';
    out += ip.to_string();
    out += ']';
  } else {
    out = ip.to_string();
  }
  out += ':';
  out += std::to_string(port);
  return out;
}

Cidr Cidr::make(IpAddress address, std::uint8_t prefix_len) noexcept {
  const unsigned width = address.bit_width();
  if (prefix_len > width) prefix_len = static_cast<std::uint8_t>(width);
  auto b = address.bytes();
  std::array<std::uint8_t, 16> masked{};
  std::copy(b.begin(), b.end(), masked.begin());
  for (unsigned i = prefix_len; i < width; ++i)
    masked[i / 8] &= static_cast<std::uint8_t>(~(0x80U >> (i % 8)));
  Cidr c;
  c.base = address.is_v4() ? IpAddress::from_v4({masked[0], masked[1], masked[2], masked[3]})
                           : IpAddress::from_v6(masked);
  c.prefix_len = prefix_len;
  return c;
}

std::optional<Cidr> Cidr::parse(std::string_view text, bool* had_host_bits) noexcept {
  if (had_host_bits != nullptr) *had_host_bits = false;
  const auto slash = text.find('/');
  const std::string_view addr_text = text.substr(0, slash);
  // Parse the raw bytes first: an IPv4-mapped block must be detected before
  // IpAddress normalises the address.
  bool mapped = false;
  std::optional<IpAddress> ip;
  if (addr_text.find(':') != std::string_view::npos) {
    if (addr_text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
    if (addr_text.find('\0') != std::string_view::npos) return std::nullopt;
    char buf[INET6_ADDRSTRLEN];
    std::memcpy(buf, addr_text.data(), addr_text.size());
    buf[addr_text.size()] = '\0';
    std::array<std::uint8_t, 16> b{};
    if (::inet_pton(AF_INET6, buf, b.data()) != 1) return std::nullopt;
    mapped = is_v4_mapped(b);
    ip = IpAddress::from_v6(b);
  } else {
    ip = IpAddress::parse(addr_text);
  }
  if (!ip) return std::nullopt;
  unsigned len = mapped ? 128 : ip->bit_width();
  if (slash != std::string_view::npos) {
    const std::string_view len_text = text.substr(slash + 1);
    if (len_text.empty() || len_text.size() > 3 || (len_text.size() > 1 && len_text.front() == '0'))
      return std::nullopt;
    auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (ec != std::errc{} || end != len_text.data() + len_text.size()) return std::nullopt;
    if (len > (mapped ? 128U : ip->bit_width())) return std::nullopt;
  }
  if (mapped) {
    if (len < 96) return std::nullopt;  // would span non-IPv4 space
    len -= 96;
  }
  Cidr c = make(*ip, static_cast<std::uint8_t>(len));
  if (had_host_bits != nullptr) *had_host_bits = c.base != *ip;
  return c;
}

bool Cidr::contains(const IpAddress& ip) const noexcept {
  if (ip.family() != base.family()) return false;
  auto a = ip.bytes();
  auto b = base.bytes();
  const unsigned full = prefix_len / 8U;
  if (!std::equal(a.begin(), a.begin() + full, b.begin())) return false;
  const unsigned rest = prefix_len % 8U;
  if (rest == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xFFU << (8 - rest));
  return (a[full] & mask) == (b[full] & mask);
}

bool Cidr::contains(const Cidr& inner) const noexcept {
  return inner.base.family() == base.family() && inner.prefix_len >= prefix_len &&
         contains(inner.base);
}

std::string Cidr::to_string() const {
  return base.to_string() + '/' + std::to_string(prefix_len);
}

}  // namespace egressd
