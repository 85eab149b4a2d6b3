#pragma once
// A scriptable DNS server on 127.0.0.1 (UDP, port 0) for resolver tests.
// Each query is answered by a Responder, on the server's own thread.
//
// Wire format built here (RFC 1035 section 4.1): a 12-byte header (ID,
// flags with QR/RD/RA and RCODE, QD/AN/NS/AR counts), the question copied
// from the query, then one RR per record: a compression pointer to the
// question name (0xC00C), TYPE, CLASS IN, TTL, RDLENGTH and the address.

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "egressd/core/ip.hpp"

namespace egressd::dns::test {

inline constexpr std::uint16_t kTypeA = 1;
inline constexpr std::uint16_t kTypeAaaa = 28;

struct FakeRecord {
  IpAddress address;
  std::uint32_t ttl = 60;
};

struct FakeReply {
  bool drop = false;       // never answer (a timeout)
  std::uint8_t rcode = 0;  // 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED
  // Only the records of the asked family are sent (A for A, AAAA for AAAA).
  std::vector<FakeRecord> records;
  std::chrono::milliseconds delay{0};
};

struct SeenQuery {
  std::string qname;  // as on the wire, labels joined by dots, with the final dot
  std::uint16_t qtype = 0;
};

// `nth` counts earlier queries for the same qname and qtype (0 first).
using Responder =
    std::function<FakeReply(const std::string& qname, std::uint16_t qtype, std::size_t nth)>;

class FakeDnsServer {
 public:
  explicit FakeDnsServer(Responder responder);
  FakeDnsServer(const FakeDnsServer&) = delete;
  FakeDnsServer& operator=(const FakeDnsServer&) = delete;
  ~FakeDnsServer();

  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  [[nodiscard]] Endpoint endpoint() const;
  [[nodiscard]] std::vector<SeenQuery> queries() const;
  [[nodiscard]] std::size_t count(std::string_view qname, std::uint16_t qtype) const;

 private:
  void run();

  Responder responder_;
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  mutable std::mutex mu_;
  std::vector<SeenQuery> seen_;
  std::thread thread_;
};

}  // namespace egressd::dns::test
