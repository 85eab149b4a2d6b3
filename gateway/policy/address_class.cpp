#include "egressd/policy/address_class.hpp"

#include <span>

namespace egressd::policy {
namespace {

// The class blocks, built once. classify() below tests bits directly (it
// runs for every flow that passes) and only reads the matching block here.
struct Blocks {
  Cidr any_v4 = Cidr::make(IpAddress{}, 0);
  Cidr any_v6 = Cidr::make(IpAddress::from_v6({}), 0);
  Cidr this_net = make("0.0.0.0/8");
  Cidr loopback = make("127.0.0.0/8");
  Cidr broadcast = make("255.255.255.255/32");
  Cidr multicast = make("224.0.0.0/4");
  Cidr link_local = make("169.254.0.0/16");
  Cidr rfc1918_10 = make("10.0.0.0/8");
  Cidr rfc1918_172 = make("172.16.0.0/12");
  Cidr rfc1918_192 = make("192.168.0.0/16");
  Cidr cgnat = make("100.64.0.0/10");
  Cidr v6_unspecified = make("::/128");
  Cidr v6_loopback = make("::1/128");
  Cidr v6_multicast = make("ff00::/8");
  Cidr v6_link_local = make("fe80::/10");
  Cidr v6_ula = make("fc00::/7");
  Cidr six_to_four = make("2002::/16");
  Cidr nat64 = make("64:ff9b::/96");
  Cidr nat64_local = make("64:ff9b:1::/48");
  Cidr v4_compatible = make("::/96");

  // The texts are constants; the unit test checks every block's text.
  static Cidr make(std::string_view text) noexcept { return Cidr::parse(text).value_or(Cidr{}); }
};

const Blocks& blocks() noexcept {
  static const Blocks kBlocks;
  return kBlocks;
}

AddressClassification classify_v4(std::uint32_t v, const Blocks& b) noexcept {
  const std::uint32_t top = v >> 24;
  if (top == 0) return {AddressClass::unspecified, b.this_net, false};
  if (top == 127) return {AddressClass::loopback, b.loopback, false};
  if (v == 0xFFFFFFFFU) return {AddressClass::broadcast, b.broadcast, false};
  if ((top & 0xF0U) == 0xE0U) return {AddressClass::multicast, b.multicast, false};
  if ((v >> 16) == 0xA9FEU) return {AddressClass::link_local, b.link_local, v == 0xA9FEA9FEU};
  if (top == 10) return {AddressClass::private_use, b.rfc1918_10, false};
  if ((v >> 20) == 0xAC1U) return {AddressClass::private_use, b.rfc1918_172, false};
  if ((v >> 16) == 0xC0A8U) return {AddressClass::private_use, b.rfc1918_192, false};
  if ((v >> 22) == 0x191U) return {AddressClass::private_use, b.cgnat, false};
  return {AddressClass::global, b.any_v4, false};
}

AddressClassification classify_v6(std::span<const std::uint8_t> a, const Blocks& b) noexcept {
  const auto zero = [&](std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) {
      if (a[i] != 0) return false;
    }
    return true;
  };
  if (zero(0, 12)) {
    if (zero(12, 15) && a[15] <= 1) {
      return a[15] == 0 ? AddressClassification{AddressClass::unspecified, b.v6_unspecified, false}
                        : AddressClassification{AddressClass::loopback, b.v6_loopback, false};
    }
    return {AddressClass::ipv4_embedded, b.v4_compatible, false};
  }
  if (a[0] == 0xFF) return {AddressClass::multicast, b.v6_multicast, false};
  if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80)
    return {AddressClass::link_local, b.v6_link_local, false};
  if ((a[0] & 0xFE) == 0xFC) return {AddressClass::private_use, b.v6_ula, false};
  if (a[0] == 0x20 && a[1] == 0x02) return {AddressClass::ipv4_embedded, b.six_to_four, false};
  if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xFF && a[3] == 0x9B) {
    if (zero(4, 12)) return {AddressClass::ipv4_embedded, b.nat64, false};
    if (a[4] == 0x00 && a[5] == 0x01) return {AddressClass::ipv4_embedded, b.nat64_local, false};
  }
  return {AddressClass::global, b.any_v6, false};
}

}  // namespace

std::string_view to_string(AddressClass c) noexcept {
  switch (c) {
    case AddressClass::global:
      return "global";
    case AddressClass::unspecified:
      return "unspecified";
    case AddressClass::loopback:
      return "loopback";
    case AddressClass::multicast:
      return "multicast";
    case AddressClass::broadcast:
      return "broadcast";
    case AddressClass::link_local:
      return "link-local";
    case AddressClass::private_use:
      return "private";
    case AddressClass::ipv4_embedded:
      return "IPv4-embedding IPv6";
  }
  return "unknown";
}

AddressClassification classify(const IpAddress& address) noexcept {
  const Blocks& b = blocks();
  return address.is_v4() ? classify_v4(address.v4_uint(), b) : classify_v6(address.bytes(), b);
}

}  // namespace egressd::policy
