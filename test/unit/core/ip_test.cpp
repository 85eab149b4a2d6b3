#include "egressd/core/ip.hpp"

#include <gtest/gtest.h>

namespace egressd {
namespace {

TEST(IpAddress, ParsesAndPrintsCanonically) {
  struct Case {
    const char* in;
    const char* out;
  };
  const Case cases[] = {
      {"10.0.1.5", "10.0.1.5"},
      {"0.0.0.0", "0.0.0.0"},
      {"255.255.255.255", "255.255.255.255"},
      {"2001:DB8::1", "2001:db8::1"},
      {"::1", "::1"},
      {"::ffff:10.1.2.3", "10.1.2.3"},  // IPv4-mapped is IPv4 everywhere
      {"::FFFF:a01:203", "10.1.2.3"},
  };
  for (const auto& c : cases) {
    auto ip = IpAddress::parse(c.in);
    ASSERT_TRUE(ip) << c.in;
    EXPECT_EQ(ip->to_string(), c.out) << c.in;
  }
  EXPECT_TRUE(IpAddress::parse("::ffff:10.1.2.3")->is_v4());
}

TEST(IpAddress, RefusesMalformed) {
  for (const char* bad : {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.4 ", " 1.2.3.4",
                          "1.2.3.-4", "1..2.3", "::g", "1:2:3:4:5:6:7:8:9", "[::1]", "fe80::1%eth0",
                          "0x7f.0.0.1", "1.2.3.4/32"}) {
    EXPECT_FALSE(IpAddress::parse(bad)) << bad;
  }
  const std::string with_nul("1.2.3.4\0", 8);
  EXPECT_FALSE(IpAddress::parse(with_nul));
  const std::string v6_with_nul("::1\0evil", 8);
  EXPECT_FALSE(IpAddress::parse(v6_with_nul));
  EXPECT_FALSE(Endpoint::parse(std::string("[::1\0x]:80", 10)));
  EXPECT_FALSE(Cidr::parse(std::string("fd00::\0/8", 9)));
}

TEST(Endpoint, ParsesBothFamilies) {
  auto v4 = Endpoint::parse("127.0.0.1:15001");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->port, 15001);
  EXPECT_EQ(v4->to_string(), "127.0.0.1:15001");
  auto v6 = Endpoint::parse("[fd00::1]:443");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->to_string(), "[fd00::1]:443");
  for (const char* bad :
       {"127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "fd00::1:443", "[fd00::1]443",
        "[1.2.3.4]:80", "1.2.3.4:080", "1.2.3.4:+80", "[fd00::1]:"}) {
    EXPECT_FALSE(Endpoint::parse(bad)) << bad;
  }
  EXPECT_TRUE(Endpoint::parse("0.0.0.0:0", /*allow_port_zero=*/true));
}

TEST(Cidr, ParsesMasksAndContains) {
  bool host_bits = false;
  auto c = Cidr::parse("10.0.1.5/24", &host_bits);
  ASSERT_TRUE(c);
  EXPECT_TRUE(host_bits);
  EXPECT_EQ(c->to_string(), "10.0.1.0/24");
  EXPECT_TRUE(c->contains(*IpAddress::parse("10.0.1.255")));
  EXPECT_FALSE(c->contains(*IpAddress::parse("10.0.2.0")));
  EXPECT_FALSE(c->contains(*IpAddress::parse("fd00::1")));

  auto six = Cidr::parse("fd00::/8");
  ASSERT_TRUE(six);
  EXPECT_TRUE(six->contains(*IpAddress::parse("fdff::1")));
  EXPECT_FALSE(six->contains(*IpAddress::parse("fe00::1")));

  auto bare = Cidr::parse("1.2.3.4");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->prefix_len, 32);

  auto mapped = Cidr::parse("::ffff:10.0.0.0/104");
  ASSERT_TRUE(mapped);
  EXPECT_EQ(mapped->to_string(), "10.0.0.0/8");

  auto all = Cidr::parse("0.0.0.0/0");
  ASSERT_TRUE(all);
  EXPECT_TRUE(all->contains(*IpAddress::parse("8.8.8.8")));
  EXPECT_TRUE(all->contains(*Cidr::parse("10.0.0.0/8")));
  EXPECT_FALSE(Cidr::parse("10.0.0.0/8")->contains(*all));

  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/08", "::/129",
                          "::ffff:10.0.0.0/95", "x/8", "10.0.0.0/8/8"}) {
    EXPECT_FALSE(Cidr::parse(bad)) << bad;
  }
}

}  // namespace
}  // namespace egressd
