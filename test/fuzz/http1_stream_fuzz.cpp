// libFuzzer target for the HTTP/1 request stream as l7::serve_http1 walks
// it: each head is checked by sniff::parse_http1_head (contract rule 12),
// then Beast's parser, which frames the body the gateway forwards, reads
// the same bytes. The two must agree on every request — where the head
// ends, the body's framing and length — or a request the checker saw is
// not the request the origin gets (smuggling). Pipelined requests are
// walked one after the other, as a kept-alive connection does. (Keep-alive
// itself may differ: Beast's parser also reads Proxy-Connection, which the
// gateway, like an origin, ignores; it decides no framing.)
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "egressd/sniff/http1_head.hpp"

namespace http = boost::beast::http;

namespace {
[[noreturn]] void disagree(const char* what) {
  std::fprintf(stderr, "the checker and Beast disagree: %s\n", what);
  std::abort();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using egressd::sniff::Status;
  std::span<const std::uint8_t> rest(data, size);
  for (int requests = 0; requests < 64 && !rest.empty(); ++requests) {
    const auto checked = egressd::sniff::parse_http1_head(rest);
    if (checked.status != Status::found) break;
    const auto& head = checked.head;

    http::request_parser<http::buffer_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(egressd::sniff::kDefaultMaxHttp1Head));
    parser.body_limit(boost::none);
    parser.eager(false);
    boost::system::error_code ec;
    const std::size_t head_used = parser.put(boost::asio::buffer(rest.data(), rest.size()), ec);
    // What the checker accepted, Beast accepts, ending at the same byte.
    if (ec) disagree("Beast refuses the head");
    if (!parser.is_header_done() || head_used != head.head_length) disagree("where the head ends");
    if (parser.chunked() != head.chunked) disagree("chunked");
    if (head.content_length.has_value() != parser.content_length().has_value() ||
        (head.content_length && *head.content_length != *parser.content_length())) {
      disagree("Content-Length");
    }
    if (head.connect) break;  // a tunnel follows, not a body

    // The body, as the relay reads it, in small pieces.
    std::size_t used = head_used;
    std::array<char, 512> scratch{};
    while (!parser.is_done()) {
      parser.get().body().data = scratch.data();
      parser.get().body().size = scratch.size();
      const std::size_t n =
          parser.put(boost::asio::buffer(rest.data() + used, rest.size() - used), ec);
      used += n;
      if (ec == http::error::need_buffer) {
        ec = {};
        continue;
      }
      if (ec || n == 0) break;  // need_more (input ends) or a bad chunk: the relay ends there
    }
    if (!parser.is_done() || !head.keep_alive) break;
    if (used > rest.size()) disagree("bytes used");
    rest = rest.subspan(used);
  }
  return 0;
}
