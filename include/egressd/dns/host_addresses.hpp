#pragma once
// Every address of the gateway's own host, for the built-in guard (contract
// rule 7: always denied, any port), so a flow cannot be pointed back at the
// gateway or at services bound to the node's addresses.

#include <vector>

#include "egressd/core/ip.hpp"

namespace egressd::dns {

// The IPv4 and IPv6 addresses of every interface (up or down, loopback
// included; IPv6 link-local without its zone), sorted, no duplicates.
// Throws std::system_error when the interfaces cannot be listed: start-up
// and reload only, where a guard with a hole must not be built.
std::vector<IpAddress> own_host_addresses();

}  // namespace egressd::dns
