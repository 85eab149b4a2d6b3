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
      {"[1.2.3.4]", NameProblem::bad_byte},
  };
  for (const auto& c : cases) {
    auto r = canonicalize_name(c.in);
    EXPECT_FALSE(r.name) << c.in;
    EXPECT_EQ(r.problem, c.problem) << c.in;
  }
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
