#include "egressd/net/socket.hpp"

#include <netinet/in.h>
#include <sys/resource.h>

#include <array>
#include <cerrno>
#include <cstring>

// From <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h>,
// which clash with glibc's <netinet/in.h> when both are included.
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

namespace egressd::net {

std::optional<Endpoint> endpoint_from_sockaddr(const sockaddr* sa, socklen_t len) noexcept {
  if (sa == nullptr) return std::nullopt;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in in{};
    std::memcpy(&in, sa, sizeof in);
    std::array<std::uint8_t, 4> b{};
    std::memcpy(b.data(), &in.sin_addr, 4);
    return Endpoint{IpAddress::from_v4(b), ntohs(in.sin_port)};
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, sa, sizeof in6);
    std::array<std::uint8_t, 16> b{};
    std::memcpy(b.data(), &in6.sin6_addr, 16);
    return Endpoint{IpAddress::from_v6(b), ntohs(in6.sin6_port)};
  }
  return std::nullopt;
}

socklen_t endpoint_to_sockaddr(const Endpoint& ep, sockaddr_storage& out) noexcept {
  std::memset(&out, 0, sizeof out);
  if (ep.ip.is_v4()) {
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_port = htons(ep.port);
    std::memcpy(&in.sin_addr, ep.ip.bytes().data(), 4);
    std::memcpy(&out, &in, sizeof in);
    return sizeof in;
  }
  sockaddr_in6 in6{};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(ep.port);
  std::memcpy(&in6.sin6_addr, ep.ip.bytes().data(), 16);
  std::memcpy(&out, &in6, sizeof in6);
  return sizeof in6;
}

std::optional<Endpoint> local_endpoint(int fd) noexcept {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return std::nullopt;
  return endpoint_from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
}

std::optional<Endpoint> original_destination(int fd, IpAddress::Family flow_family) noexcept {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int rc = flow_family == IpAddress::Family::v4
                     ? ::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &ss, &len)
                     : ::getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &ss, &len);
  if (rc != 0) return std::nullopt;
  return endpoint_from_sockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
}

std::optional<std::string> set_transparent(int fd, bool v6) {
  const int one = 1;
  const int rc = v6 ? ::setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one)
                    : ::setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
  if (rc == 0) return std::nullopt;
  return std::string("cannot set ") + (v6 ? "IPV6_TRANSPARENT" : "IP_TRANSPARENT") + ": " +
         std::strerror(errno) + " (TPROXY listeners need CAP_NET_ADMIN)";
}

std::optional<std::string> set_mark(int fd, std::uint32_t mark) {
  if (::setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) == 0) return std::nullopt;
  return std::string("cannot set SO_MARK: ") + std::strerror(errno) +
         " (upstream.mark needs CAP_NET_ADMIN)";
}

std::uint64_t fd_limit() noexcept {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
  return rl.rlim_cur == RLIM_INFINITY ? 1U << 20 : rl.rlim_cur;
}

}  // namespace egressd::net
