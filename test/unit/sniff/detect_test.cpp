#include "egressd/sniff/detect.hpp"

#include <string>

#include <gtest/gtest.h>

#include "egressd/sniff/h2c_preface.hpp"

namespace egressd::sniff {
namespace {

Detected detect(std::string_view s) {
  return detect_protocol({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
}

TEST(Detect, ClassifiesWithFewBytes) {
  struct Case {
    std::string bytes;
    Detected expect;
  };
  const Case cases[] = {
      {"", Detected::need_more},
      {"\x16", Detected::need_more},
      {"\x16\x03", Detected::tls},
      {std::string("\x16\x03\x01\x02\x00", 5), Detected::tls},
      {"\x16\x02", Detected::other},
      {"G", Detected::need_more},
      {"GET", Detected::need_more},
      {"GET ", Detected::http1},
      {"CONNECT a:443 HTTP/1.1\r\n", Detected::http1},
      {"M-SEARCH ", Detected::http1},
      {"get ", Detected::other},
      {"SSH-2.0-OpenSSH_9.2\r\n", Detected::other},
      {"\x80\x2e\x01", Detected::other},  // SSLv2 hello
      {std::string("\0\0", 2), Detected::other},
      {"P", Detected::need_more},
      {"PRI ", Detected::need_more},  // could still be the h2c preface
      {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r", Detected::need_more},
      {std::string(kH2cPreface), Detected::h2c},
      {std::string(kH2cPreface) + "\0\0", Detected::h2c},
      {"PRI /x HTTP/1.1\r\n", Detected::http1},  // not the preface: a PRI method
      {"PRI * HTTP/1.1\r\n", Detected::http1},
      {"PROXY TCP4 ", Detected::http1},  // route PROXY headers with parse_proxy_header instead
      {std::string(24, 'A') + " ", Detected::http1},
      {std::string(25, 'A'), Detected::other},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(detect(c.bytes), c.expect) << c.bytes << " -> " << to_string(detect(c.bytes));
  }
}

TEST(Detect, PrefixesOfTheH2cPrefaceWaitThenH2cWins) {
  const std::string preface(kH2cPreface);
  for (std::size_t n = 0; n < preface.size(); ++n) {
    EXPECT_EQ(detect(preface.substr(0, n)), Detected::need_more) << n;
  }
  EXPECT_EQ(detect(preface), Detected::h2c);
}

}  // namespace
}  // namespace egressd::sniff
