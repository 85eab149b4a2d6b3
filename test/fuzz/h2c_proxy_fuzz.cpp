// libFuzzer target for the h2c front end (l7::H2cProxy) without sockets:
// arbitrary client frames, judged by a fixed rule, routed to one or two
// upstream sessions that answer with arbitrary frames too.
//
// Input: byte 0 = options (bit 0: prepend the client preface so frames are
// reached; bit 1: connect the upstreams; bit 2: drain midway), bytes 1-2 =
// where the client part ends, then the client bytes, then the upstream
// bytes (prefixed with an empty SETTINGS frame: a server's preface).
// Checks: no crash or sanitizer report, and the stream buffers never hold
// more than the two connection windows allow.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "egressd/l7/h2c.hpp"

namespace {

constexpr std::uint8_t kPreface[] = {'P',  'R',  'I', ' ', '*',  ' ',  'H',  'T',
                                     'T',  'P',  '/', '2', '.',  '0',  '\r', '\n',
                                     '\r', '\n', 'S', 'M', '\r', '\n', '\r', '\n'};
constexpr std::uint8_t kServerSettings[] = {0, 0, 0, 4, 0, 0, 0, 0, 0};

void pump(egressd::l7::H2cProxy& proxy, std::size_t upstreams) {
  std::string out;
  for (int round = 0; round < 4; ++round) {
    out.clear();
    proxy.take_client_output(out, 1 << 20);
    for (std::size_t u = 0; u < upstreams; ++u) proxy.take_upstream_output(u, out, 1 << 20);
  }
}

void judge_all(egressd::l7::H2cProxy& proxy, std::size_t& upstreams, bool connect) {
  for (const auto& r : proxy.take_requests()) {
    if (!r.problem.empty() || r.name.empty() || (r.name.size() % 3) == 0) {
      proxy.refuse(r.stream_id, r.problem.empty() ? 403 : 400, "egressd: denied\n");
      continue;
    }
    // Two upstreams, picked by the name: the routing and the lazy start.
    const std::size_t want = r.name.size() % 2;
    while (upstreams <= want) {
      const std::size_t u = proxy.add_upstream();
      if (connect) proxy.upstream_connected(u);
      ++upstreams;
    }
    proxy.route(r.stream_id, want);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  const std::uint8_t options = data[0];
  const std::size_t split = std::min<std::size_t>(size - 3, (std::size_t{data[1]} << 8U) | data[2]);
  const std::span<const std::uint8_t> client(data + 3, split);
  const std::span<const std::uint8_t> upstream(data + 3 + split, size - 3 - split);
  const bool connect = (options & 2U) != 0;

  egressd::l7::H2cProxy proxy;
  std::size_t upstreams = 0;
  if ((options & 1U) != 0) proxy.feed_client(kPreface);
  // The client's bytes in uneven pieces, with output taken in between.
  std::size_t at = 0;
  std::size_t piece = 1;
  while (at < client.size()) {
    const std::size_t n = std::min(piece, client.size() - at);
    if (!proxy.feed_client(client.subspan(at, n))) break;
    at += n;
    piece = piece * 3 + 1;
    judge_all(proxy, upstreams, connect);
    pump(proxy, upstreams);
    if ((options & 4U) != 0 && at * 2 >= client.size()) proxy.drain();
  }
  for (std::size_t u = 0; u < upstreams; ++u) {
    if (!connect) {
      proxy.upstream_failed(u, 502, "egressd: cannot connect\n");
      continue;
    }
    proxy.feed_upstream(u, kServerSettings);
    if (!proxy.feed_upstream(u, upstream)) proxy.upstream_closed(u);
    pump(proxy, upstreams);
  }
  const std::size_t bound =
      2 * static_cast<std::size_t>(egressd::l7::kH2cConnectionWindow) * (1 + upstreams);
  if (proxy.buffered_bytes() > bound) std::abort();
  for (std::size_t u = 0; u < upstreams; ++u) proxy.upstream_closed(u);
  pump(proxy, upstreams);
  (void)proxy.client_done();
  return 0;
}
