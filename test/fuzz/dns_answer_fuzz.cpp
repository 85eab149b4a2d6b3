// DNS answers as the resolver receives them. A UDP server on 127.0.0.1 in
// this process answers each A and AAAA query of the real Resolver (c-ares,
// its callbacks, the cache) with bytes from the input: the query's ID is
// written in, and on request the query's question section is put in place
// so that c-ares's own matching lets the rest reach the answer parsing.
// Each input resolves a fresh name. Whatever the bytes: no crash, no leak,
// the lookup ends (by an answer or the deadline), and every address the
// answer holds is one the input carries.
//
// Input: flags (bit 0/1: answer A / AAAA at all; bit 2/3: put the question
// in for A / AAAA), a length byte n, n bytes for the A answer, the rest for
// the AAAA answer.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include "egressd/dns/cache.hpp"
#include "egressd/dns/resolver.hpp"

namespace {

namespace asio = boost::asio;

struct Script {
  std::uint8_t flags = 0;
  std::vector<std::uint8_t> a;
  std::vector<std::uint8_t> aaaa;
};

// The question section of a query: from offset 12 to the end of QTYPE/QCLASS.
std::optional<std::size_t> question_end(const std::uint8_t* q, std::size_t n) {
  std::size_t i = 12;
  while (i < n && q[i] != 0) i += 1 + q[i];
  if (i + 5 > n) return std::nullopt;
  return i + 5;
}

class Server {
 public:
  Server() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) __builtin_trap();
    socklen_t len = sizeof sa;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    std::thread([this] { serve(); }).detach();
  }

  [[nodiscard]] std::uint16_t port() const { return port_; }

  void set(Script s) {
    const std::lock_guard lock(mu_);
    script_ = std::move(s);
  }

 private:
  void serve() {
    std::uint8_t q[1500];
    for (;;) {
      sockaddr_in from{};
      socklen_t len = sizeof from;
      const ssize_t n = ::recvfrom(fd_, q, sizeof q, 0, reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 12) continue;
      const auto qend = question_end(q, static_cast<std::size_t>(n));
      if (!qend) continue;
      const unsigned qtype = (unsigned{q[*qend - 4]} << 8U) | unsigned{q[*qend - 3]};
      std::vector<std::uint8_t> out;
      {
        const std::lock_guard lock(mu_);
        const bool v6 = qtype == 28;
        if ((script_.flags & (v6 ? 2 : 1)) == 0) continue;  // no answer: the deadline ends it
        const auto& body = v6 ? script_.aaaa : script_.a;
        const bool with_question = (script_.flags & (v6 ? 8 : 4)) != 0;
        if (with_question) {
          // The body's first 12 bytes are the header, the rest follows the
          // query's own question.
          const std::size_t header = std::min<std::size_t>(12, body.size());
          out.assign(body.data(), body.data() + header);
          out.resize(12, 0);
          out[4] = 0;
          out[5] = 1;  // QDCOUNT 1
          out.insert(out.end(), q + 12, q + *qend);
          if (body.size() > 12) out.insert(out.end(), body.data() + 12, body.data() + body.size());
        } else {
          out = body;
        }
      }
      if (out.size() >= 2) {
        out[0] = q[0];
        out[1] = q[1];
      }
      ::sendto(fd_, out.data(), out.size(), 0, reinterpret_cast<sockaddr*>(&from), len);
    }
  }

  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::mutex mu_;
  Script script_;
};

bool carries(const std::uint8_t* data, std::size_t size, const std::uint8_t* bytes, std::size_t n) {
  return std::search(data, data + size, bytes, bytes + n) != data + size;
}

struct World {
  Server server;
  egressd::dns::Cache cache;
  egressd::dns::Resolver resolver;
  asio::io_context io;
  std::uint64_t next = 0;

  static egressd::dns::ResolverOptions options(std::uint16_t port) {
    egressd::dns::ResolverOptions o;
    o.servers.push_back(egressd::Endpoint{*egressd::IpAddress::parse("127.0.0.1"), port});
    o.timeout = std::chrono::milliseconds{6};  // an unanswered input costs this much
    return o;
  }

  World() : resolver(cache, options(server.port())) {}
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World* world = new World();  // lives for the process: its threads never stop
  if (size < 2) return 0;
  Script script;
  script.flags = data[0];
  const std::size_t n = std::min<std::size_t>(data[1], size - 2);
  script.a.assign(data + 2, data + 2 + n);
  script.aaaa.assign(data + 2 + n, data + size);
  world->server.set(std::move(script));

  const std::string name = "n" + std::to_string(world->next++) + ".fuzz.test";
  std::optional<egressd::dns::Answer> answer;
  asio::co_spawn(world->io, world->resolver.resolve(name),
                 [&](const std::exception_ptr& e, egressd::dns::Answer a) {
                   if (e) __builtin_trap();  // resolve() never throws for DNS reasons
                   answer = std::move(a);
                 });
  world->io.restart();
  world->io.run();
  if (!answer) __builtin_trap();
  if (answer->ok()) {
    if (answer->current > answer->addresses.size()) __builtin_trap();
    for (const auto& ip : answer->addresses) {
      const auto bytes = ip.bytes();
      if (!carries(data, size, bytes.data(), bytes.size())) __builtin_trap();
    }
  } else if (answer->error.empty()) {
    __builtin_trap();  // every failure says why
  }
  return 0;
}
