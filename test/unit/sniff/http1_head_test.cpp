#include "egressd/sniff/http1_head.hpp"

#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace egressd::sniff {
namespace {

std::span<const std::uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
Http1HeadResult parse(std::string_view s, std::size_t max_head = kDefaultMaxHttp1Head) {
  return parse_http1_head(bytes(s), max_head);
}

TEST(Http1Head, OriginFormRequest) {
  const std::string req =
      "GET /index.html?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: t\r\n"
      "Accept: */*\r\n\r\nBODY";
  const auto r = parse(req);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  const auto& h = r.head;
  EXPECT_EQ(h.method, "GET");
  EXPECT_EQ(h.target, "/index.html?q=1");
  EXPECT_EQ(h.version, 11U);
  EXPECT_EQ(h.host.name, "Example.COM");
  EXPECT_EQ(h.host.port, 8080);
  EXPECT_FALSE(h.absolute_form);
  EXPECT_FALSE(h.connect);
  EXPECT_FALSE(h.target_authority);
  EXPECT_TRUE(h.keep_alive);
  EXPECT_FALSE(h.content_length);
  EXPECT_FALSE(h.chunked);
  EXPECT_EQ(h.head_length, req.size() - 4);
}

TEST(Http1Head, FramingAndConnectionFields) {
  auto r = parse("POST /u HTTP/1.1\r\nhost: a\r\ncontent-length: 42\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.head.content_length, 42U);
  EXPECT_FALSE(r.head.keep_alive);
  r = parse("POST /u HTTP/1.1\r\nHOST: a\r\nTRANSFER-ENCODING: Chunked\r\n\r\n");
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_TRUE(r.head.chunked);
  r = parse("POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_TRUE(r.head.chunked);
  r = parse("GET / HTTP/1.0\r\nHost: a\r\n\r\n");
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.head.version, 10U);
  EXPECT_FALSE(r.head.keep_alive);
}

TEST(Http1Head, UpgradeTokens) {
  const auto r = parse(
      "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
      "Upgrade: h2c, websocket\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.head.upgrade, (std::vector<std::string>{"h2c", "websocket"}));
  EXPECT_TRUE(r.head.http2_settings);
}

TEST(Http1Head, HostForms) {
  struct Case {
    const char* host;
    const char* name;
    int port;  // -1: none
  };
  const Case cases[] = {
      {"a.com", "a.com", -1},         {"a.com.", "a.com.", -1},
      {"a.com:443", "a.com", 443},    {"[fd00::1]:8080", "[fd00::1]", 8080},
      {"[fd00::1]", "[fd00::1]", -1}, {"10.0.0.1:80", "10.0.0.1", 80},
      {"a.com:", "a.com", -1},        {"", "", -1},
  };
  for (const auto& c : cases) {
    const auto r = parse(std::string("GET / HTTP/1.1\r\nHost: ") + c.host + "\r\n\r\n");
    ASSERT_EQ(r.status, Status::found) << c.host << ": " << r.reason;
    EXPECT_EQ(r.head.host.name, c.name);
    EXPECT_EQ(r.head.host.port.has_value(), c.port >= 0) << c.host;
    if (c.port >= 0) {
      EXPECT_EQ(*r.head.host.port, c.port);
    }
  }
  for (const char* bad :
       {"fd00::1", "[fd00::1", "[fd00::1]x", "a.com:99999", "a.com:8o", "u@a.com", "a.com:443:1"}) {
    const auto r = parse(std::string("GET / HTTP/1.1\r\nHost: ") + bad + "\r\n\r\n");
    EXPECT_EQ(r.status, Status::malformed) << bad;
  }
}

TEST(Http1Head, AbsoluteFormAndConnect) {
  auto r = parse("GET http://A.com/x HTTP/1.1\r\nHost: a.com:80\r\n\r\n");
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_TRUE(r.head.absolute_form);
  EXPECT_EQ(r.head.target_scheme, "http");
  ASSERT_TRUE(r.head.target_authority);
  EXPECT_EQ(r.head.target_authority->name, "A.com");
  EXPECT_FALSE(r.head.target_authority->port);

  // Matches: default ports, case, one trailing dot.
  for (const char* ok : {"GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n",
                         "GET http://a.com:80/ HTTP/1.1\r\nHost: a.com\r\n\r\n",
                         "GET https://a.com/ HTTP/1.1\r\nHost: A.COM:443\r\n\r\n",
                         "GET http://a.com./ HTTP/1.1\r\nHost: a.com\r\n\r\n",
                         "GET http://[fd00::1]:8080?x HTTP/1.1\r\nHost: [FD00::1]:8080\r\n\r\n",
                         "GET HTTP://a.com HTTP/1.1\r\nHost: a.com\r\n\r\n"}) {
    EXPECT_EQ(parse(ok).status, Status::found) << ok;
  }
  // Mismatches and bad absolute targets.
  for (const char* bad :
       {"GET http://a.com/ HTTP/1.1\r\nHost: b.com\r\n\r\n",
        "GET http://a.com:8080/ HTTP/1.1\r\nHost: a.com\r\n\r\n",
        "GET http://a.com/ HTTP/1.1\r\nHost: a.com:443\r\n\r\n",
        "GET https://a.com/ HTTP/1.1\r\nHost: a.com:80\r\n\r\n",
        "GET http://a.com.evil/ HTTP/1.1\r\nHost: a.com\r\n\r\n",
        "GET http://u@a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n",
        "GET http:///x HTTP/1.1\r\nHost: a.com\r\n\r\n",
        "GET ftp://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n",
        "GET a.com HTTP/1.1\r\nHost: a.com\r\n\r\n", "GET * HTTP/1.1\r\nHost: a.com\r\n\r\n"}) {
    const auto res = parse(bad);
    EXPECT_EQ(res.status, Status::malformed) << bad;
    EXPECT_FALSE(res.reason.empty());
  }
  EXPECT_EQ(parse("OPTIONS * HTTP/1.1\r\nHost: a.com\r\n\r\n").status, Status::found);

  r = parse("CONNECT [fd00::1]:443 HTTP/1.1\r\nHost: [fd00::1]:443\r\n\r\n");
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_TRUE(r.head.connect);
  ASSERT_TRUE(r.head.target_authority);
  EXPECT_EQ(r.head.target_authority->name, "[fd00::1]");
  EXPECT_EQ(r.head.target_authority->port, 443);
  r = parse(
      "CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\nProxy-Connection: x\r\n\r\n");
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.head.target_authority->name, "github.com");
  for (const char* bad : {"CONNECT github.com HTTP/1.1\r\nHost: github.com\r\n\r\n",
                          "CONNECT /x HTTP/1.1\r\nHost: github.com\r\n\r\n",
                          "CONNECT :443 HTTP/1.1\r\nHost: github.com\r\n\r\n"}) {
    EXPECT_EQ(parse(bad).status, Status::malformed) << bad;
  }
}

TEST(Http1Head, ContractRule12IsMalformed) {
  struct Case {
    const char* what;
    std::string request;
  };
  const std::string pre = "POST / HTTP/1.1\r\nHost: a.com\r\n";
  const std::vector<Case> cases = {
      {"CL+TE", pre + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"TE+CL", pre + "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"},
      {"double CL same", pre + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n"},
      {"double CL differ", pre + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"},
      {"CL list", pre + "Content-Length: 5, 5\r\n\r\n"},
      {"CL sign", pre + "Content-Length: +5\r\n\r\n"},
      {"CL hex", pre + "Content-Length: 0x5\r\n\r\n"},
      {"CL empty", pre + "Content-Length:\r\n\r\n"},
      {"CL overflow", pre + "Content-Length: 99999999999999999999\r\n\r\n"},
      {"TE gzip", pre + "Transfer-Encoding: gzip\r\n\r\n"},
      {"TE chunked,gzip", pre + "Transfer-Encoding: chunked,gzip\r\n\r\n"},
      {"TE chunked twice",
       pre + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"TE split chunked then gzip",
       pre + "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"},
      {"TE chunked params", pre + "Transfer-Encoding: chunked;q=1\r\n\r\n"},
      {"TE empty", pre + "Transfer-Encoding: \r\n\r\n"},
      {"TE xchunked", pre + "Transfer-Encoding: xchunked\r\n\r\n"},
      // Found by http1_stream_fuzz: a coding that is no token made Beast
      // stop reading the list and frame the body differently.
      {"TE params on another coding", pre + "Transfer-Encoding: gzip, chz;ip, chunked\r\n\r\n"},
      {"TE non-token coding", pre + "Transfer-Encoding: \xe6gzip, chunked\r\n\r\n"},
      {"TE field-like coding",
       pre + "Transfer-Encoding: ost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"},
      {"TE in 1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"},
      {"obs-fold", pre + "X-A: b\r\n c\r\n\r\n"},
      {"obs-fold tab", pre + "X-A: b\r\n\tc\r\n\r\n"},
      {"obs-fold first", "GET / HTTP/1.1\r\n Host: a\r\nHost: a\r\n\r\n"},
      {"no Host", "GET / HTTP/1.1\r\nX: y\r\n\r\n"},
      {"two Host", "GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"},
      {"two Host differ", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"},
      {"NUL in value", std::string("GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 36)},
      {"CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"},
      {"bare LF", "GET / HTTP/1.1\nHost: a\n\n"},
      {"bare LF in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\nb\r\n\r\n"},
      {"control byte",
       "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
       "b\r\n\r\n"},
      {"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n"},
      {"no colon", "GET / HTTP/1.1\r\nHost: a\r\nfoo\r\n\r\n"},
      {"empty name", "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n"},
      {"bad name", "GET / HTTP/1.1\r\nHost: a\r\nX(y): z\r\n\r\n"},
      {"request line garbage", "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"two spaces", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n"},
      {"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n"},
      {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n"},
      {"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
      {"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"},
  };
  for (const auto& c : cases) {
    const auto r = parse(c.request);
    EXPECT_EQ(r.status, Status::malformed) << c.what;
    EXPECT_FALSE(r.reason.empty()) << c.what;
  }
}

TEST(Http1Head, NotHttpIsDecidedEarly) {
  for (std::string_view s :
       {std::string_view("\x16\x03", 2), std::string_view("get / HTTP/1.1"),
        std::string_view(" GET"), std::string_view("SSH-2.0-OpenSSH"), std::string_view("-GET "),
        std::string_view("ABCDEFGHIJKLMNOPQRSTUVWXYZ ")}) {
    EXPECT_EQ(parse(s).status, Status::not_this_protocol) << s;
  }
  EXPECT_EQ(parse("").status, Status::need_more);
  EXPECT_EQ(parse("GE").status, Status::need_more);
  EXPECT_EQ(parse("M-SEARCH").status, Status::need_more);
  EXPECT_EQ(parse("GET ").status, Status::need_more);
}

// Contract rule 11: a first line that ends without an HTTP version is not
// HTTP, decided as soon as the line is complete (client-first protocols
// such as SMTP and Redis must not wait for the sniff timeout).
TEST(Http1Head, FirstLineWithoutAVersionIsNotHttp) {
  for (std::string_view s :
       {"EHLO client.example\r\n", "PING\r\n", "PING\n", "QUIT\r\nmore", "GET /\r\n",
        "AUTH PLAIN x y\r\n\r\n", "GET / HTTPS/1.1\r\n", "GET / http/1.1\r\nHost: a\r\n\r\n"}) {
    const auto r = parse(s);
    EXPECT_EQ(r.status, Status::not_this_protocol) << s;
  }
  // Until the line ends nothing is decided; with a version it is HTTP.
  EXPECT_EQ(parse("EHLO client.example").status, Status::need_more);
  EXPECT_EQ(parse("GET / HTTP/1.1\r\n").status, Status::need_more);
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n").status, Status::found);
  // A version the contract refuses is still HTTP, and malformed.
  EXPECT_EQ(parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n").status, Status::malformed);
}

TEST(Http1Head, FragmentedAtEveryOffset) {
  const std::string req =
      "POST http://api.example.com:8080/v1?x=y HTTP/1.1\r\nHost: api.example.com:8080\r\n"
      "Content-Length: 3\r\nConnection: keep-alive\r\nUpgrade: h2c\r\n\r\nabc";
  const std::size_t head = req.size() - 3;
  for (std::size_t n = 0; n < head; ++n) {
    const auto r = parse(std::string_view(req).substr(0, n));
    ASSERT_EQ(r.status, Status::need_more) << n << ": " << r.reason;
  }
  for (std::size_t n = head; n <= req.size(); ++n) {
    const auto r = parse(std::string_view(req).substr(0, n));
    ASSERT_EQ(r.status, Status::found) << n << ": " << r.reason;
    EXPECT_EQ(r.head.head_length, head);
    EXPECT_EQ(r.head.content_length, 3U);
  }
}

TEST(Http1Head, MalformedVerdictHoldsForEveryLongerPrefix) {
  const std::string req = "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\nY: z\r\n\r\n";
  bool seen = false;
  for (std::size_t n = 0; n <= req.size(); ++n) {
    const auto r = parse(std::string_view(req).substr(0, n));
    if (seen) {
      EXPECT_EQ(r.status, Status::malformed) << n;
    }
    seen = seen || r.status == Status::malformed;
    if (!seen) {
      EXPECT_EQ(r.status, Status::need_more) << n;
    }
  }
  EXPECT_TRUE(seen);
}

TEST(Http1Head, OversizedHead) {
  std::string req = "GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + std::string(20000, 'x') + "\r\n\r\n";
  EXPECT_EQ(parse(req).status, Status::too_large);
  EXPECT_EQ(parse(std::string_view(req).substr(0, kDefaultMaxHttp1Head)).status, Status::too_large);
  EXPECT_EQ(parse(std::string_view(req).substr(0, kDefaultMaxHttp1Head - 1)).status,
            Status::need_more);
  // Exactly at the cap is accepted.
  const std::string small = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  EXPECT_EQ(parse(small, small.size()).status, Status::found);
  EXPECT_EQ(parse(small, small.size() - 1).status, Status::too_large);
  // A CR as the last byte within the cap does not change the verdict.
  std::string cr = "GET / HTTP/1.1\r\nHost: a\r\nX: ";
  cr += '\r';
  EXPECT_EQ(parse(cr, cr.size()).status, Status::too_large);
  EXPECT_EQ(parse(cr + "x", cr.size()).status, Status::too_large);
}

TEST(Http1Head, SmugglingClassics) {
  for (std::string s : {
           // CL.TE / TE.CL
           std::string("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 13\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED"),
           // TE obfuscation
           std::string("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                       "Transfer-encoding: x\r\n\r\n"),
           std::string("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"),
           std::string("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n"
                       "Content-Length: 4\r\n\r\n"),
           std::string(
               "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"),
           std::string("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"),
           std::string("POST / HTTP/1.1\r\nHost: a\r\nX: y\nTransfer-Encoding: chunked\r\n\r\n"),
           // Host confusion
           std::string("GET http://allowed.com/ HTTP/1.1\r\nHost: evil.com\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: allowed.com\r\nHost: evil.com\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: allowed.com\r\n evil.com\r\n\r\n"),
       }) {
    const auto r = parse(s);
    EXPECT_EQ(r.status, Status::malformed) << s;
  }
}

}  // namespace
}  // namespace egressd::sniff
