#include "egressd/core/ip_literal.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "egressd/core/hostname.hpp"

namespace egressd {
namespace {

using K = LiteralKind;

struct Case {
  std::string in;
  LiteralKind kind;
  const char* address = nullptr;  // canonical text when kind == ip
};

std::string show(const std::string& s) {
  std::string out;
  for (const char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += c;
    } else {
      out += "\\x";
      out += "0123456789abcdef"[(static_cast<unsigned char>(c) >> 4) & 0xF];
      out += "0123456789abcdef"[static_cast<unsigned char>(c) & 0xF];
    }
  }
  return out.size() > 80 ? out.substr(0, 80) + "...(" + std::to_string(s.size()) + " bytes)" : out;
}

void run(const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    const IpLiteral got = parse_ip_literal(c.in);
    EXPECT_EQ(got.kind, c.kind) << show(c.in);
    if (c.kind == K::ip && got.kind == K::ip) {
      EXPECT_EQ(got.address.to_string(), c.address) << show(c.in);
    }
  }
}

TEST(IpLiteral, Ipv4SpellingsOfLoopback) {
  run({
      {"127.0.0.1", K::ip, "127.0.0.1"},
      {"127.1", K::ip, "127.0.0.1"},
      {"127.0.1", K::ip, "127.0.0.1"},
      {"2130706433", K::ip, "127.0.0.1"},
      {"0x7f000001", K::ip, "127.0.0.1"},
      {"0X7F000001", K::ip, "127.0.0.1"},
      {"0x7F.1", K::ip, "127.0.0.1"},
      {"0177.0.0.1", K::ip, "127.0.0.1"},
      {"0177.1", K::ip, "127.0.0.1"},
      {"017700000001", K::ip, "127.0.0.1"},
      {"0x7f.0.0.0x1", K::ip, "127.0.0.1"},
      {"127.0.0.1.", K::ip, "127.0.0.1"},
      {"0x0000007f.1", K::ip, "127.0.0.1"},  // leading zeros do not count against range
      {"00000000000000000000177.1", K::ip, "127.0.0.1"},
  });
}

TEST(IpLiteral, Ipv4Ranges) {
  run({
      {"0", K::ip, "0.0.0.0"},
      {"0x", K::ip, "0.0.0.0"},
      {"0X", K::ip, "0.0.0.0"},
      {"0x.0x.0x.0x", K::ip, "0.0.0.0"},
      {"00", K::ip, "0.0.0.0"},
      {"4294967295", K::ip, "255.255.255.255"},
      {"0xffffffff", K::ip, "255.255.255.255"},
      {"037777777777", K::ip, "255.255.255.255"},
      {"1.16777215", K::ip, "1.255.255.255"},
      {"1.2.65535", K::ip, "1.2.255.255"},
      {"1.2.3.4", K::ip, "1.2.3.4"},
      {"1.2.3.4.", K::ip, "1.2.3.4"},
      {"10.0.1.5", K::ip, "10.0.1.5"},
      {"169.254.169.254", K::ip, "169.254.169.254"},
      {"4294967296", K::invalid},
      {"0x100000000", K::invalid},
      {"040000000000", K::invalid},
      {"99999999999999999999999999999", K::invalid},
      {"0x" + std::string(40, 'f'), K::invalid},
      {"1.16777216", K::invalid},
      {"1.2.65536", K::invalid},
      {"256.0.0.1", K::invalid},
      {"1.2.3.256", K::invalid},
      {"1.0x100.3", K::invalid},
      {"1.2.3.4.5", K::invalid},
      {"1.2.3.4.5.", K::invalid},
      {"09.1.1.1", K::invalid},  // 09 is not octal
      {"1.1.1.08", K::invalid},
      {"08", K::invalid},
      {"0x1g.1", K::invalid},
      {"1..2", K::invalid},
      {"..1", K::invalid},
      {".1", K::invalid},
      {"+1.2.3.4", K::invalid},
      {" 1.2.3.4", K::invalid},
  });
}

TEST(IpLiteral, EndsInANumber) {
  run({
      {"example.com", K::not_literal},
      {"a1.b2", K::not_literal},
      {"1a.com", K::not_literal},
      {"1.2.3.com", K::not_literal},
      {"0xg", K::not_literal},        // not a number: a (valid) DNS label
      {"1.2.3.0xg", K::not_literal},  // likewise: a valid DNS name
      {"1.2.3.-4", K::not_literal},   // "-4" is no number; check_dns_name judges it
      {"foo.0x10", K::invalid},       // ends in a number, "foo" is no number part
      {"foo.0x", K::invalid},
      {"foo.123", K::invalid},
      {"foo.09", K::invalid},  // digits: ends in a number even though 09 fails
      {"a b.1", K::invalid},
      {"example.com.1.", K::invalid},
      // One trailing dot only: the last label of "1.2.3.4.." is empty, so
      // it does not end in a number; check_dns_name refuses it (empty label).
      {"1.2.3.4..", K::not_literal},
      {".", K::not_literal},
      {"", K::not_literal},
  });
}

TEST(IpLiteral, Ipv6) {
  run({
      {"[::1]", K::ip, "::1"},
      {"::1", K::ip, "::1"},
      {"[::]", K::ip, "::"},
      {"[FD00::1]", K::ip, "fd00::1"},
      {"[2001:DB8:0:0:0:0:0:1]", K::ip, "2001:db8::1"},
      {"[::ffff:127.0.0.1]", K::ip, "127.0.0.1"},
      {"::ffff:127.0.0.1", K::ip, "127.0.0.1"},
      {"[::ffff:7f00:1]", K::ip, "127.0.0.1"},
      {"::FFFF:7F00:1", K::ip, "127.0.0.1"},
      {"[::127.0.0.1]", K::ip, "::127.0.0.1"},  // IPv4-compatible (deprecated): IPv6
      {"[fe80::1%25eth0]", K::ip, "fe80::1"},
      {"fe80::1%25eth0", K::ip, "fe80::1"},
      {"fe80::1%eth0", K::ip, "fe80::1"},
      {"[fe80::1%eth0]", K::ip, "fe80::1"},
      {"[fe80::1%25en0%2Ex]", K::ip, "fe80::1"},
      {"fe80::1%3", K::ip, "fe80::1"},
      {"[::ffff:127.0.0.1%25lo]", K::ip, "127.0.0.1"},
      {"[::1", K::invalid},
      {"::1]", K::invalid},
      {"[", K::invalid},
      {"[]", K::invalid},
      {"]", K::invalid},
      {"[[::1]]", K::invalid},
      {"[::1]:443", K::invalid},
      {"[1.2.3.4]", K::invalid},  // brackets hold IPv6 only
      {"[127.1]", K::invalid},
      {"[example.com]", K::invalid},
      {"[::ffff:0x7f.1]", K::invalid},  // no WHATWG IPv4 forms inside IPv6
      {"[::ffff:127.1]", K::invalid},
      {"[::ffff:0177.0.0.1]", K::invalid},
      {"[fe80::1%]", K::invalid},
      {"fe80::1%", K::invalid},
      {"fe80::1%%", K::invalid},
      {"fe80::1%25%", K::invalid},
      {"fe80::1%eth0:1", K::invalid},
      {"fe80::1%eth 0", K::invalid},
      {"[fe80::1%eth0", K::invalid},
      {"1::2::3", K::invalid},
      {"1:2:3:4:5:6:7:8:9", K::invalid},
      {"::g", K::invalid},
      {"[ ::1]", K::invalid},
      {"example.com:443", K::invalid},  // a port left on: no DNS name has ':'
      {"1.2.3.4:80", K::invalid},
      {"a[b", K::invalid},
  });
}

TEST(IpLiteral, NulBytes) {
  run({
      {std::string("127.0.0.1\0", 10), K::not_literal},  // last label "1\0": check_dns_name refuses
      {std::string("127.0\0.0.1", 10), K::invalid},
      {std::string("\0.1", 3), K::invalid},
      {std::string("[::1\0]", 6), K::invalid},  // inet_pton would stop at the NUL
      {std::string("[::1\0evil]", 10), K::invalid},
      {std::string("::1\0", 4), K::invalid},
      {std::string("fe80::1%eth\0", 12), K::invalid},
      {std::string("\0", 1), K::not_literal},
  });
}

TEST(IpLiteral, OverLongInputs) {
  const std::string zeros(300, '0');
  std::string dotted;
  while (dotted.size() < 300) dotted += "1.";
  dotted += "1";
  run({
      {zeros, K::invalid},                               // 0 in WHATWG, but no name is this long
      {std::string(253, '0'), K::ip, "0.0.0.0"},         // 253 bytes: still a name
      {std::string(252, '0') + "1.", K::ip, "0.0.0.1"},  // and its trailing dot
      {std::string(254, '0'), K::invalid},
      {dotted, K::invalid},
      {std::string(300, 'a') + ".1", K::invalid},
      {std::string(300, 'a') + ".com", K::not_literal},  // check_dns_name: too long
      {"[::1%25" + std::string(300, 'a') + "]", K::invalid},
      {"::1%" + std::string(300, 'a'), K::invalid},
      {"[" + std::string(300, ':') + "]", K::invalid},
      {"[" + std::string(60, '0') + "::1]", K::invalid},
  });
}

TEST(IpLiteral, CanonicalizeNameAgrees) {
  // Every literal canonicalize_name accepts is parse_ip_literal's, with the
  // same address; every invalid literal is an invalid name.
  for (const char* in : {"127.1", "0x7f000001", "[::ffff:127.0.0.1]", "fe80::1%eth0", "foo.0x10",
                         "1.2.3.256", "example.com", "1.2.3.4..", "[::1"}) {
    const IpLiteral literal = parse_ip_literal(in);
    const CanonicalNameResult name = canonicalize_name(in);
    switch (literal.kind) {
      case K::ip:
        ASSERT_TRUE(name.name) << in;
        ASSERT_TRUE(name.name->ip) << in;
        EXPECT_EQ(*name.name->ip, literal.address) << in;
        EXPECT_EQ(name.name->text, literal.address.to_string()) << in;
        EXPECT_EQ(IpAddress::parse(name.name->text), literal.address) << in;
        break;
      case K::invalid:
        EXPECT_FALSE(name.name) << in;
        EXPECT_EQ(name.problem, NameProblem::bad_ip_literal) << in;
        break;
      case K::not_literal:
        EXPECT_TRUE(!name.name || !name.name->ip) << in;
        break;
    }
  }
}

}  // namespace
}  // namespace egressd
