#include "egressd/sniff/h2c_preface.hpp"

#include <string>

#include <gtest/gtest.h>

namespace egressd::sniff {
namespace {

H2cPrefaceResult parse(std::string_view s) {
  return parse_h2c_preface({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
}

TEST(H2cPreface, EveryPrefixThenFound) {
  const std::string full =
      std::string(kH2cPreface) + "\x00\x00\x00\x04";  // a SETTINGS frame follows
  for (std::size_t n = 0; n < kH2cPreface.size(); ++n) {
    EXPECT_EQ(parse(full.substr(0, n)).status, Status::need_more) << n;
  }
  for (std::size_t n = kH2cPreface.size(); n <= full.size(); ++n) {
    const auto r = parse(full.substr(0, n));
    EXPECT_EQ(r.status, Status::found);
    EXPECT_EQ(r.bytes_consumed, 24U);
  }
}

TEST(H2cPreface, AnyDifferenceIsNotH2c) {
  const std::string preface(kH2cPreface);
  for (std::size_t i = 0; i < preface.size(); ++i) {
    std::string bad = preface;
    bad[i] = static_cast<char>(bad[i] ^ 0x20);
    for (std::size_t n = i + 1; n <= bad.size(); n += 5) {
      EXPECT_EQ(parse(bad.substr(0, n)).status, Status::not_this_protocol) << i << " " << n;
    }
  }
  EXPECT_EQ(parse("PRI / HTTP/1.1\r\n").status, Status::not_this_protocol);
  EXPECT_EQ(parse("GET / HTTP/1.1\r\n").status, Status::not_this_protocol);
}

}  // namespace
}  // namespace egressd::sniff
