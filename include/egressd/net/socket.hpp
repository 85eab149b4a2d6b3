#pragma once
// Socket facts and options the gateway needs beyond what Asio offers:
// the original destination of a redirected connection, transparent
// listeners, SO_MARK. Plain POSIX file descriptors so that this stays
// usable from any Asio socket via native_handle().

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>

#include "egressd/core/ip.hpp"

namespace egressd::net {

// sockaddr (AF_INET / AF_INET6) -> Endpoint; IPv4-mapped becomes IPv4.
std::optional<Endpoint> endpoint_from_sockaddr(const sockaddr* sa, socklen_t len) noexcept;
// Endpoint -> sockaddr_storage; returns the length to pass to bind/connect.
socklen_t endpoint_to_sockaddr(const Endpoint& ep, sockaddr_storage& out) noexcept;

std::optional<Endpoint> local_endpoint(int fd) noexcept;

// The destination the client dialled before iptables REDIRECT rewrote it:
// SO_ORIGINAL_DST for IPv4 flows (also IPv4 clients on a dual-stack IPv6
// socket) and IP6T_SO_ORIGINAL_DST for IPv6. The conntrack entry is per
// family of the flow, so the caller passes the peer's (normalised)
// family. nullopt when the connection was not redirected (no conntrack
// entry); errno is preserved.
std::optional<Endpoint> original_destination(int fd, IpAddress::Family flow_family) noexcept;

// IP_TRANSPARENT / IPV6_TRANSPARENT, before bind, for TPROXY listeners
// (and needs CAP_NET_ADMIN). Returns an error sentence on failure.
std::optional<std::string> set_transparent(int fd, bool v6);

// SO_MARK on an upstream socket, so node rules can exempt the gateway's
// own connections from redirection. Needs CAP_NET_ADMIN.
std::optional<std::string> set_mark(int fd, std::uint32_t mark);

// The number of file descriptors this process may open (RLIMIT_NOFILE soft).
std::uint64_t fd_limit() noexcept;

}  // namespace egressd::net
