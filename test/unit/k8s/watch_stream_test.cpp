#include "egressd/k8s/watch_stream.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace egressd::k8s {
namespace {

std::vector<std::string> split_all(WatchLineSplitter& s, const std::vector<std::string>& chunks,
                                   WatchLineSplitter::Stop* last = nullptr) {
  std::vector<std::string> lines;
  WatchLineSplitter::Stop stop = WatchLineSplitter::Stop::more;
  for (const auto& c : chunks) {
    stop = s.feed(c, [&](std::string_view line) {
      lines.emplace_back(line);
      return true;
    });
    if (stop != WatchLineSplitter::Stop::more) break;
  }
  if (last != nullptr) *last = stop;
  return lines;
}

TEST(WatchLineSplitter, LinesAcrossAnyChunking) {
  const std::string stream = "{\"a\":1}\n{\"b\":2}\r\n\n  \n{\"c\":3}\n";
  const std::vector<std::string> want = {"{\"a\":1}", "{\"b\":2}\r", "{\"c\":3}"};
  for (std::size_t step = 1; step <= stream.size(); ++step) {
    std::vector<std::string> chunks;
    for (std::size_t i = 0; i < stream.size(); i += step) chunks.push_back(stream.substr(i, step));
    WatchLineSplitter s(1024);
    EXPECT_EQ(split_all(s, chunks), want) << "step " << step;
    EXPECT_FALSE(s.mid_line());
  }
}

TEST(WatchLineSplitter, CutInsideALineIsVisible) {
  WatchLineSplitter s(1024);
  EXPECT_EQ(split_all(s, {"{\"a\":1}\n{\"b\""}), std::vector<std::string>{"{\"a\":1}"});
  EXPECT_TRUE(s.mid_line());
}

TEST(WatchLineSplitter, LongLineStopsEvenWithoutItsNewline) {
  WatchLineSplitter s(8);
  WatchLineSplitter::Stop stop{};
  EXPECT_EQ(split_all(s, {"12345678\n", "1234", "56789"}, &stop),
            std::vector<std::string>{"12345678"});
  EXPECT_EQ(stop, WatchLineSplitter::Stop::line_too_long);
}

TEST(WatchLineSplitter, CallerStops) {
  WatchLineSplitter s(64);
  int seen = 0;
  const auto stop = s.feed("a\nb\nc\n", [&](std::string_view) { return ++seen < 2; });
  EXPECT_EQ(stop, WatchLineSplitter::Stop::by_caller);
  EXPECT_EQ(seen, 2);
}

TEST(WatchLineSplitter, NulBytesStayInTheLine) {
  WatchLineSplitter s(64);
  const std::string with_nul("a\0b\n", 4);
  EXPECT_EQ(split_all(s, {with_nul}), std::vector<std::string>{std::string("a\0b", 3)});
}

TEST(DecodeWatchEvent, Types) {
  const auto added = decode_watch_event(
      R"({"type":"ADDED","object":{"metadata":{"name":"p","resourceVersion":"42"}}})");
  ASSERT_TRUE(std::holds_alternative<WatchEvent>(added));
  EXPECT_EQ(std::get<WatchEvent>(added).type, WatchEvent::Type::added);
  EXPECT_EQ(std::get<WatchEvent>(added).resource_version, "42");
  EXPECT_TRUE(std::get<WatchEvent>(added).object.is_object());

  const auto bookmark =
      decode_watch_event(R"({"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}})");
  ASSERT_TRUE(std::holds_alternative<WatchEvent>(bookmark));
  EXPECT_EQ(std::get<WatchEvent>(bookmark).type, WatchEvent::Type::bookmark);
  EXPECT_EQ(std::get<WatchEvent>(bookmark).resource_version, "7");

  for (const char* t : {"MODIFIED", "DELETED"}) {
    const auto e =
        decode_watch_event(std::string(R"({"type":")") + t + R"(","object":{"metadata":{}}})");
    ASSERT_TRUE(std::holds_alternative<WatchEvent>(e)) << t;
    EXPECT_EQ(std::get<WatchEvent>(e).resource_version, "");
  }
}

TEST(DecodeWatchEvent, GoneAndErrors) {
  const auto gone = decode_watch_event(
      R"({"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old resource version"}})");
  ASSERT_TRUE(std::holds_alternative<WatchFailure>(gone));
  EXPECT_TRUE(std::get<WatchFailure>(gone).gone);
  EXPECT_NE(std::get<WatchFailure>(gone).message.find("too old"), std::string::npos);

  const auto error = decode_watch_event(R"({"type":"ERROR","object":{"code":"410"}})");
  ASSERT_TRUE(std::holds_alternative<WatchFailure>(error));
  EXPECT_FALSE(std::get<WatchFailure>(error).gone) << "a string code is not 410";

  const std::vector<std::string> bad = {"",
                                        "not json",
                                        "[]",
                                        R"({"type":"ADDED"})",
                                        R"({"object":{}})",
                                        R"({"type":5,"object":{}})",
                                        R"({"type":"WEIRD","object":{}})",
                                        R"({"type":"ADDED","object":{}} trailing)",
                                        std::string("{\"type\":\"ADDED\",\"object\":{}}\0", 29),
                                        std::string("{\"type\":\"ADD\0ED\",\"object\":{}}", 29)};
  for (const auto& line : bad) {
    const auto e = decode_watch_event(line);
    ASSERT_TRUE(std::holds_alternative<WatchFailure>(e)) << line;
    EXPECT_FALSE(std::get<WatchFailure>(e).gone) << line;
  }
}

TEST(DecodeWatchEvent, NonObjectObjectIsLeftToTheIndex) {
  const auto e = decode_watch_event(R"({"type":"ADDED","object":5})");
  ASSERT_TRUE(std::holds_alternative<WatchEvent>(e));
  PodIndex index;
  EXPECT_FALSE(
      index.apply_pod(std::get<WatchEvent>(e).index_event(), std::get<WatchEvent>(e).object));
}

TEST(DecodeWatchEvent, DuplicateKeysTakeTheLast) {
  const auto e = decode_watch_event(
      R"({"type":"ERROR","type":"ADDED","object":{"metadata":{"resourceVersion":"1","resourceVersion":"2"}}})");
  ASSERT_TRUE(std::holds_alternative<WatchEvent>(e));
  EXPECT_EQ(std::get<WatchEvent>(e).resource_version, "2");
}

}  // namespace
}  // namespace egressd::k8s
