#include "egressd/dns/host_addresses.hpp"

#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>

namespace egressd::dns {

std::vector<IpAddress> own_host_addresses() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) {
    throw std::system_error(errno, std::generic_category(), "cannot list the host's addresses");
  }
  const std::unique_ptr<ifaddrs, decltype(&::freeifaddrs)> owner(list, &::freeifaddrs);
  std::vector<IpAddress> out;
  for (const ifaddrs* it = list; it != nullptr; it = it->ifa_next) {
    if (it->ifa_addr == nullptr) continue;
    // memcpy out of the sockaddr: the generic pointer's real type is only
    // known from sa_family, and copying avoids aliasing casts.
    if (it->ifa_addr->sa_family == AF_INET) {
      sockaddr_in sin{};
      std::memcpy(&sin, it->ifa_addr, sizeof sin);
      std::array<std::uint8_t, 4> b{};
      std::memcpy(b.data(), &sin.sin_addr, b.size());
      out.push_back(IpAddress::from_v4(b));
    } else if (it->ifa_addr->sa_family == AF_INET6) {
      sockaddr_in6 sin6{};
      std::memcpy(&sin6, it->ifa_addr, sizeof sin6);
      std::array<std::uint8_t, 16> b{};
      std::memcpy(b.data(), &sin6.sin6_addr, b.size());
      out.push_back(IpAddress::from_v6(b));
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace egressd::dns
