#include "egressd/log/json.hpp"

#include <random>
#include <string>

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

namespace egressd::log {
namespace {

TEST(JsonString, EscapesHostileNames) {
  struct Case {
    std::string in;
    std::string out;
  };
  const Case cases[] = {
      {"github.com", R"("github.com")"},
      {R"(a"b)", R"("a\"b")"},
      {R"(a\b)", R"("a\\b")"},
      {"a\nb\r\t", R"("a\nb\r\t")"},
      {std::string("a\0b", 3), R"("a\u0000b")"},
      {"\x01\x1f\x7f", R"("\u0001\u001f\u007f")"},
      {"caf\xc3\xa9", "\"caf\xc3\xa9\""},            // valid UTF-8 kept
      {"\xf0\x9f\x98\x80", "\"\xf0\x9f\x98\x80\""},  // 4-byte kept
      {"a\xff"
       "b",
       "\"a\xef\xbf\xbd"
       "b\""},                                                       // invalid byte
      {"\xc0\xaf", "\"\xef\xbf\xbd\xef\xbf\xbd\""},                  // overlong: 2 replacements
      {"\xed\xa0\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},  // surrogate
      {"\xe2\x82", "\"\xef\xbf\xbd\""},  // truncated: one maximal subpart
      {"\xf4\x90\x80\x80", "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\""},  // > U+10FFFF
  };
  for (const auto& c : cases) EXPECT_EQ(json_string(c.in), c.out);
}

TEST(JsonString, AnyBytesGiveValidJson) {
  std::mt19937 rng(42);
  for (int round = 0; round < 2000; ++round) {
    std::string in(rng() % 40, '\0');
    for (auto& ch : in) ch = static_cast<char>(rng() & 0xFF);
    const std::string doc = "[" + json_string(in) + "]";
    boost::system::error_code ec;
    auto v = boost::json::parse(doc, ec);
    ASSERT_FALSE(ec) << "round " << round;
    ASSERT_TRUE(v.is_array());
  }
}

}  // namespace
}  // namespace egressd::log
