#include "fake_dns_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace egressd::dns::test {

namespace {

using Clock = std::chrono::steady_clock;

struct Pending {
  Clock::time_point due;
  std::vector<std::uint8_t> bytes;
  sockaddr_in to{};
};

void put16(std::vector<std::uint8_t>& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v & 0xff));
}

void put32(std::vector<std::uint8_t>& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v >> 16));
  put16(out, static_cast<std::uint16_t>(v & 0xffff));
}

std::uint16_t get16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}

// Parses the first question: its name as text (with the final dot), its
// type, and where the question ends. False for anything malformed.
bool parse_question(const std::uint8_t* msg, std::size_t len, std::string& qname,
                    std::uint16_t& qtype, std::size_t& end) {
  if (len < 12 || get16(msg + 4) < 1) return false;
  std::size_t pos = 12;
  qname.clear();
  while (true) {
    if (pos >= len) return false;
    const std::size_t label = msg[pos++];
    if (label == 0) break;
    if (label > 63 || pos + label > len) return false;
    qname.append(reinterpret_cast<const char*>(msg + pos), label);
    qname += '.';
    pos += label;
  }
  if (pos + 4 > len) return false;
  qtype = get16(msg + pos);
  end = pos + 4;
  return true;
}

}  // namespace

FakeDnsServer::FakeDnsServer(Responder responder) : responder_(std::move(responder)) {
  fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd_ < 0) throw std::runtime_error("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    throw std::runtime_error("bind");
  }
  socklen_t alen = sizeof addr;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &alen);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { run(); });
}

FakeDnsServer::~FakeDnsServer() {
  stop_ = true;
  thread_.join();
  ::close(fd_);
}

Endpoint FakeDnsServer::endpoint() const {
  return Endpoint{IpAddress::from_v4({127, 0, 0, 1}), port_};
}

std::vector<SeenQuery> FakeDnsServer::queries() const {
  std::lock_guard lock(mu_);
  return seen_;
}

std::size_t FakeDnsServer::count(std::string_view qname, std::uint16_t qtype) const {
  std::lock_guard lock(mu_);
  return static_cast<std::size_t>(std::count_if(seen_.begin(), seen_.end(), [&](const auto& q) {
    return q.qname == qname && q.qtype == qtype;
  }));
}

void FakeDnsServer::run() {
  std::vector<Pending> pending;
  std::uint8_t buf[1500];
  while (!stop_) {
    const auto now = Clock::now();
    for (auto it = pending.begin(); it != pending.end();) {
      if (it->due <= now) {
        ::sendto(fd_, it->bytes.data(), it->bytes.size(), 0,
                 reinterpret_cast<const sockaddr*>(&it->to), sizeof it->to);
        it = pending.erase(it);
      } else {
        ++it;
      }
    }
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5) <= 0) continue;
    sockaddr_in from{};
    socklen_t flen = sizeof from;
    const ssize_t n =
        ::recvfrom(fd_, buf, sizeof buf, 0, reinterpret_cast<sockaddr*>(&from), &flen);
    if (n <= 0) continue;
    const auto len = static_cast<std::size_t>(n);
    std::string qname;
    std::uint16_t qtype = 0;
    std::size_t qend = 0;
    if (!parse_question(buf, len, qname, qtype, qend)) continue;
    std::size_t nth = 0;
    {
      std::lock_guard lock(mu_);
      nth = static_cast<std::size_t>(std::count_if(seen_.begin(), seen_.end(), [&](const auto& q) {
        return q.qname == qname && q.qtype == qtype;
      }));
      seen_.push_back({qname, qtype});
    }
    const FakeReply reply = responder_(qname, qtype, nth);
    if (reply.drop) continue;

    std::vector<const FakeRecord*> answers;
    for (const FakeRecord& r : reply.records) {
      if ((qtype == kTypeA && r.address.is_v4()) || (qtype == kTypeAaaa && r.address.is_v6())) {
        answers.push_back(&r);
      }
    }
    std::vector<std::uint8_t> out;
    put16(out, get16(buf));                                        // ID
    put16(out, static_cast<std::uint16_t>(0x8180 | reply.rcode));  // QR RD RA, RCODE
    put16(out, 1);                                                 // QDCOUNT
    put16(out, static_cast<std::uint16_t>(answers.size()));        // ANCOUNT
    put16(out, 0);
    put16(out, 0);
    out.insert(out.end(), buf + 12, buf + qend);  // the question, as asked
    for (const FakeRecord* r : answers) {
      put16(out, 0xC00C);  // pointer to the question name
      put16(out, qtype);
      put16(out, 1);  // IN
      put32(out, r->ttl);
      const auto bytes = r->address.bytes();
      put16(out, static_cast<std::uint16_t>(bytes.size()));
      out.insert(out.end(), bytes.begin(), bytes.end());
    }
    pending.push_back({Clock::now() + reply.delay, std::move(out), from});
  }
}

}  // namespace egressd::dns::test
