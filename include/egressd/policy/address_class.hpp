#pragma once
// Address classes for the built-in guard (contract decision rule 7). Pure and
// small so that the DNS and net code can classify the addresses they resolve
// or connect to with the same table the policy uses.
//
// | class          | ranges                                                    | guard            |
// |----------------|-----------------------------------------------------------|------------------|
// | unspecified    | 0.0.0.0/8, ::/128                                         | always denied    |
// | loopback       | 127.0.0.0/8, ::1/128                                      | always denied    |
// | multicast      | 224.0.0.0/4, ff00::/8                                     | always denied    |
// | broadcast      | 255.255.255.255/32                                        | always denied    |
// | link_local     | 169.254.0.0/16 (cloud metadata 169.254.169.254), fe80::/10| unless lifted    |
// | private_use    | 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7          | host flows only  |
// | ipv4_embedded  | 2002::/16 (6to4), 64:ff9b::/96 and 64:ff9b:1::/48 (NAT64),| host flows only  |
// |                | ::/96 (IPv4-compatible, beyond :: and ::1)                |                  |
// | global         | everything else                                           | never            |
//
// IPv4-mapped IPv6 addresses never reach this table as IPv6: IpAddress
// already turned them into IPv4.

#include <cstdint>
#include <string_view>

#include "egressd/core/ip.hpp"

namespace egressd::policy {

enum class AddressClass : std::uint8_t {
  global,
  unspecified,
  loopback,
  multicast,
  broadcast,
  link_local,
  private_use,
  ipv4_embedded,
};

// "global", "unspecified", "loopback", "multicast", "broadcast",
// "link-local", "private", "IPv4-embedding IPv6".
std::string_view to_string(AddressClass c) noexcept;

struct AddressClassification {
  AddressClass cls = AddressClass::global;
  // The specific block of the class that holds the address (e.g. 10.0.0.0/8,
  // not "RFC 1918"): an allow cidr entry lifts the guard only when it lies
  // inside this block. For `global`, 0.0.0.0/0 or ::/0.
  Cidr range;
  bool cloud_metadata = false;  // 169.254.169.254
};

// Classifies any address; never fails.
AddressClassification classify(const IpAddress& address) noexcept;

// True for the classes nothing can lift (unspecified, loopback, multicast,
// broadcast).
constexpr bool always_denied(AddressClass c) noexcept {
  return c == AddressClass::unspecified || c == AddressClass::loopback ||
         c == AddressClass::multicast || c == AddressClass::broadcast;
}

}  // namespace egressd::policy
