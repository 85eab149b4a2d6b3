#include "egressd/core/hostname.hpp"

#include <string>

#include <gtest/gtest.h>

namespace egressd {
namespace {

TEST(Hostname, CanonicalisesCaseAndTrailingDot) {
  auto r = canonicalize_name("GitHub.COM.");
  ASSERT_TRUE(r.name);
  EXPECT_EQ(r.name->text, "github.com");
  EXPECT_FALSE(r.name->ip);
}

TEST(Hostname, IpLiteralsAreValidNames) {
  auto v4 = canonicalize_name("10.1.2.3");
  ASSERT_TRUE(v4.name);
  ASSERT_TRUE(v4.name->ip);
  auto v6 = canonicalize_name("[FD00::1]");
  ASSERT_TRUE(v6.name);
  EXPECT_EQ(v6.name->text, "fd00::1");
  auto mapped = canonicalize_name("::ffff:1.2.3.4");
  ASSERT_TRUE(mapped.name);
  EXPECT_EQ(mapped.name->text, "1.2.3.4");
}

TEST(Hostname, RefusesInvalidNames) {
  struct Case {
    std::string in;
    NameProblem problem;
  };
  const Case cases[] = {
      {"", NameProblem::empty},
      {".", NameProblem::empty_label},
      {"a..b", NameProblem::empty_label},
      {".a", NameProblem::empty_label},
      {"a.b..", NameProblem::empty_label},
      {"ex ample.com", NameProblem::bad_byte},
      {std::string("evil.com\0.allowed.test", 22), NameProblem::bad_byte},
      {"under_score.com", NameProblem::bad_byte},
      {"caf\xc3\xa9.com", NameProblem::bad_byte},
      {"*.example.com", NameProblem::bad_byte},
      {std::string(64, 'a') + ".com", NameProblem::label_too_long},
      {"[1.2.3.4]", NameProblem::bad_ip_literal},
  };
  for (const auto& c : cases) {
    auto r = canonicalize_name(c.in);
    EXPECT_FALSE(r.name) << c.in;
    EXPECT_EQ(r.problem, c.problem) << c.in;
  }
}

// Every spelling a URL parser (or inet_aton) reads as an address is that
// address here: the policy and the guard see 127.0.0.1, never a DNS name.
TEST(Hostname, IpLiteralsInEverySpelling) {
  struct Case {
    std::string in;
    const char* text;
  };
  const Case cases[] = {
      {"127.0.0.1", "127.0.0.1"},
      {"127.1", "127.0.0.1"},
      {"2130706433", "127.0.0.1"},
      {"0x7f000001", "127.0.0.1"},
      {"0X7F000001", "127.0.0.1"},
      {"0177.0.0.1", "127.0.0.1"},
      {"0x7f.1", "127.0.0.1"},
      {"127.0.0.1.", "127.0.0.1"},
      {"0", "0.0.0.0"},
      {"0x", "0.0.0.0"},
      {"4294967295", "255.255.255.255"},
      {"1.2.3.4.", "1.2.3.4"},
      {"0251.0376.0251.0376", "169.254.169.254"},
      {"[::1]", "::1"},
      {"::1", "::1"},
      {"[::ffff:127.0.0.1]", "127.0.0.1"},
      {"::ffff:127.0.0.1", "127.0.0.1"},
      {"[::ffff:7f00:1]", "127.0.0.1"},
      {"[fe80::1%25eth0]", "fe80::1"},
      {"fe80::1%eth0", "fe80::1"},
      {"[FE80::ABCD%25eth0]", "fe80::abcd"},
  };
  for (const auto& c : cases) {
    auto r = canonicalize_name(c.in);
    ASSERT_TRUE(r.name) << c.in;
    ASSERT_TRUE(r.name->ip) << c.in;
    EXPECT_EQ(r.name->text, c.text) << c.in;
    EXPECT_EQ(r.name->ip->to_string(), c.text) << c.in;
    EXPECT_EQ(r.problem, NameProblem::none) << c.in;
  }
  EXPECT_TRUE(canonicalize_name("0x7f.1").name->ip->is_v4());
  EXPECT_TRUE(canonicalize_name("[::ffff:7f00:1]").name->ip->is_v4());
}

TEST(Hostname, NamesEndingInANumberMustBeIpv4) {
  const std::string cases[] = {
      "1.2.3.4.5",
      "256.0.0.1",
      "1.2.3.256",
      "4294967296",
      "1.0x100.3",
      "09.1.1.1",
      "foo.0x10",
      "foo.123",
      "foo.0x",
      "[::1",
      "::1]",
      "[1.2.3.4]",
      "[127.1]",
      "fe80::1%",
      "example.com:443",
      "..1",
      "a b.1",
      std::string("1\0.1", 4),
      std::string(300, '0'),
  };
  for (const auto& in : cases) {
    auto r = canonicalize_name(in);
    EXPECT_FALSE(r.name) << in;
    EXPECT_EQ(r.problem, NameProblem::bad_ip_literal) << in;
  }
  // Not literals: judged as DNS names.
  EXPECT_EQ(canonicalize_name("1.2.3.4..").problem, NameProblem::empty_label);
  EXPECT_EQ(canonicalize_name(std::string("1.2.3.4\0", 8)).problem, NameProblem::bad_byte);
  for (const char* in : {"example.com", "a1.b2", "1a.com", "0xg", "1.2.3.com", "x-1.0a"}) {
    auto r = canonicalize_name(in);
    ASSERT_TRUE(r.name) << in;
    EXPECT_FALSE(r.name->ip) << in;
  }
  EXPECT_EQ(describe(NameProblem::bad_ip_literal),
            "a malformed IP literal or a name ending in a number");
}

TEST(Hostname, LengthLimits) {
  std::string label63(63, 'a');
  std::string name = label63 + "." + label63 + "." + label63 + "." + std::string(61, 'b');
  ASSERT_EQ(name.size(), 253U);
  EXPECT_EQ(check_dns_name(name), NameProblem::none);
  EXPECT_EQ(check_dns_name(name + "."), NameProblem::none);  // trailing dot is not counted
  EXPECT_EQ(check_dns_name(name + "b"), NameProblem::too_long);
}

}  // namespace
}  // namespace egressd
