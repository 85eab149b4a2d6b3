// Value syntax: durations, dates and host patterns, table-driven.

#include <string>

#include <gtest/gtest.h>

#include "egressd/config/loader.hpp"

namespace egressd::config {
namespace {

using std::chrono::milliseconds;

struct DurationCase {
  std::string_view text;
  std::optional<milliseconds> expected;
};

class DurationTest : public ::testing::TestWithParam<DurationCase> {};

TEST_P(DurationTest, Parses) {
  const auto& c = GetParam();
  EXPECT_EQ(parse_duration(c.text), c.expected) << "'" << c.text << "'";
}

INSTANTIATE_TEST_SUITE_P(
    Table, DurationTest,
    ::testing::Values(
        DurationCase{"250ms", milliseconds{250}}, DurationCase{"5s", milliseconds{5'000}},
        DurationCase{"10m", milliseconds{600'000}}, DurationCase{"1h", milliseconds{3'600'000}},
        DurationCase{"0s", milliseconds{0}}, DurationCase{"007s", milliseconds{7'000}},
        DurationCase{"8760h", milliseconds{31'536'000'000}},
        DurationCase{"525600m", milliseconds{31'536'000'000}}, DurationCase{"5", std::nullopt},
        DurationCase{"-1s", std::nullopt}, DurationCase{"+1s", std::nullopt},
        DurationCase{"1.5s", std::nullopt}, DurationCase{"5 s", std::nullopt},
        DurationCase{" 5s", std::nullopt}, DurationCase{"5s ", std::nullopt},
        DurationCase{"5S", std::nullopt}, DurationCase{"5sec", std::nullopt},
        DurationCase{"5d", std::nullopt}, DurationCase{"1h30m", std::nullopt},
        DurationCase{"s", std::nullopt}, DurationCase{"", std::nullopt},
        DurationCase{"8761h", std::nullopt}, DurationCase{"31536000001ms", std::nullopt},
        DurationCase{"99999999999999999999999999h", std::nullopt}));

struct DateCase {
  std::string_view text;
  std::optional<std::chrono::year_month_day> expected;
};

class DateTest : public ::testing::TestWithParam<DateCase> {};

TEST_P(DateTest, Parses) {
  const auto& c = GetParam();
  const auto got = parse_date(c.text);
  ASSERT_EQ(got.has_value(), c.expected.has_value()) << "'" << c.text << "'";
  if (got) {
    EXPECT_EQ(std::chrono::year_month_day{*got}, *c.expected);
  }
}

using std::chrono::day;
using std::chrono::month;
using std::chrono::year;

INSTANTIATE_TEST_SUITE_P(
    Table, DateTest,
    ::testing::Values(DateCase{"2026-12-31", year{2026} / month{12} / day{31}},
                      DateCase{"2028-02-29", year{2028} / month{2} / day{29}},
                      DateCase{"2026-02-29", std::nullopt}, DateCase{"2026-02-30", std::nullopt},
                      DateCase{"2026-13-01", std::nullopt}, DateCase{"2026-00-10", std::nullopt},
                      DateCase{"2026-01-00", std::nullopt}, DateCase{"26-12-31", std::nullopt},
                      DateCase{"2026-1-31", std::nullopt}, DateCase{"2026/12/31", std::nullopt},
                      DateCase{"2026-12-31T00:00", std::nullopt}, DateCase{"", std::nullopt},
                      DateCase{"2026-12-3x", std::nullopt}));

struct HostCase {
  std::string raw;
  std::string canonical;  // empty: refused
  std::string error = {};
};

class HostPatternTest : public ::testing::TestWithParam<HostCase> {};

TEST_P(HostPatternTest, Canonicalizes) {
  const auto& c = GetParam();
  const HostPatternResult r = canonicalize_host_pattern(c.raw);
  if (c.canonical.empty()) {
    EXPECT_FALSE(r.pattern.has_value()) << "'" << c.raw << "' -> " << r.pattern.value_or("");
    EXPECT_EQ(r.error, c.error) << "'" << c.raw << "'";
  } else {
    ASSERT_TRUE(r.pattern.has_value()) << "'" << c.raw << "': " << r.error;
    EXPECT_EQ(*r.pattern, c.canonical);
  }
}

const std::string kLabel63(63, 'a');
const std::string kLabel64(64, 'a');
// 4 * 63 + 3 dots = 255 > 253; 3 * 63 + 2 + 61 + 1 = 253.
const std::string kName253 =
    kLabel63 + "." + kLabel63 + "." + kLabel63 + "." + std::string(61, 'b');
const std::string kName254 = kName253 + "c";
const std::string kWild251 = "*." + kLabel63 + "." + kLabel63 + "." + kLabel63 + "." +
                             std::string(59, 'b');  // base 251: "x." + base = 253
const std::string kWild252 = kWild251 + "c";

const std::string kNumber = "ends in a number, so it is an IP address, not a name; use cidr";
const std::string kStar =
    "'*' is allowed only as the whole first label, as in '*.example.com' or '**.example.com'";

INSTANTIATE_TEST_SUITE_P(
    Table, HostPatternTest,
    ::testing::Values(
        HostCase{"github.com", "github.com"}, HostCase{"GitHub.COM.", "github.com"},
        HostCase{"*.githubusercontent.com", "*.githubusercontent.com"},
        HostCase{"**.GitHub.io", "**.github.io"}, HostCase{"*.com", "*.com"},
        HostCase{"localhost", "localhost"}, HostCase{"a-b.c-d", "a-b.c-d"},
        HostCase{"bücher.example", "xn--bcher-kva.example"},
        HostCase{"BÜCHER.Example.", "xn--bcher-kva.example"},
        HostCase{"*.bücher.example", "*.xn--bcher-kva.example"},
        HostCase{"**.straße.de", "**.xn--strae-oqa.de"},  // non-transitional: ß kept
        HostCase{kLabel63 + ".x", kLabel63 + ".x"}, HostCase{kName253, kName253},
        HostCase{kWild251, kWild251}, HostCase{"", "", "an empty host"}, HostCase{"*", "", kStar},
        HostCase{"**", "", kStar}, HostCase{"*.", "", "nothing after '*.'"},
        HostCase{"**.", "", "nothing after '**.'"}, HostCase{".", "", "a lone '.' is not a name"},
        HostCase{"a*.b", "", kStar}, HostCase{"a.*.b", "", kStar}, HostCase{"*a.b", "", kStar},
        HostCase{"***.b", "", kStar}, HostCase{"*.*.b", "", kStar}, HostCase{"b.*", "", kStar},
        HostCase{"1.2.3.4", "", "an IP address, not a name; use cidr"},
        HostCase{"2130706433", "", kNumber}, HostCase{"*.10.0.0", "", kNumber},
        HostCase{"**.0x7f", "", kNumber}, HostCase{"a.1b", "a.1b"}, HostCase{"1a.com", "1a.com"},
        HostCase{"a..b", "", "an empty label"}, HostCase{".a", "", "an empty label"},
        HostCase{"a..", "", "an empty label"}, HostCase{"*..a", "", "an empty label"},
        HostCase{kLabel64 + ".x", "", "a label longer than 63 bytes"},
        HostCase{kName254, "", "a name longer than 253 bytes"},
        HostCase{kWild252, "", "too long: no name under it fits in 253 bytes"},
        HostCase{"a_b.example", "", "a byte other than a letter, digit, hyphen or dot"},
        HostCase{"a b.example", "", "a byte other than a letter, digit, hyphen or dot"},
        HostCase{"example.com:443", "", "a byte other than a letter, digit, hyphen or dot"},
        HostCase{"1.2.3.4", "", "an IP address, not a name; use cidr"},
        HostCase{"::1", "", "an IP address, not a name; use cidr"},
        HostCase{"[2001:db8::1]", "", "an IP address, not a name; use cidr"},
        HostCase{"10.0.0.0/8", "", "an IP address, not a name; use cidr"},
        HostCase{"☃.example", "",
                 "not a valid internationalised name (string contains a disallowed character)"},
        HostCase{"-ü.example", "",
                 "not a valid internationalised name (string start/ends with forbidden hyphen)"},
        HostCase{"xn--ü.example", "",
                 "not a valid internationalised name (string contains invalid punycode data)"},
        HostCase{"\xff.example", "", "not a valid internationalised name (string encoding error)"},
        HostCase{std::string("\xc3\xbc\0.example", 11), "",
                 "a byte other than a letter, digit, hyphen or dot"},
        HostCase{"ü_x.example", "", "a byte other than a letter, digit, hyphen or dot"}));

}  // namespace
}  // namespace egressd::config
