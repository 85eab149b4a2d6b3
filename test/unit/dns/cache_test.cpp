#include "egressd/dns/cache.hpp"

#include <atomic>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace egressd::dns {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using ::testing::ElementsAre;

IpAddress ip(std::string_view text) {
  return *IpAddress::parse(text);
}

const TimePoint kT0 = TimePoint{} + std::chrono::hours{1000};

CacheOptions small_options() {
  CacheOptions o;
  o.min_ttl = seconds{10};
  o.max_ttl = seconds{100};
  o.negative_ttl = seconds{7};
  o.error_ttl = seconds{2};
  o.verify_window = seconds{60};
  return o;
}

struct TtlCase {
  const char* what;
  seconds record_ttl;
  seconds probe;  // time after the store
  bool fresh;
};

class TtlTest : public ::testing::TestWithParam<TtlCase> {};

TEST_P(TtlTest, ClampedToBounds) {
  const TtlCase& c = GetParam();
  Cache cache(small_options());
  const std::vector<IpAddress> addrs{ip("192.0.2.1")};
  cache.store_success("a.test", addrs, c.record_ttl, kT0);
  EXPECT_EQ(cache.find("a.test", kT0 + c.probe).has_value(), c.fresh) << c.what;
}

INSTANTIATE_TEST_SUITE_P(
    Cache, TtlTest,
    ::testing::Values(TtlCase{"plain ttl, inside", seconds{30}, seconds{29}, true},
                      TtlCase{"plain ttl, at expiry", seconds{30}, seconds{30}, false},
                      TtlCase{"ttl 0 raised to min", seconds{0}, seconds{9}, true},
                      TtlCase{"ttl 0 expires at min", seconds{0}, seconds{10}, false},
                      TtlCase{"huge ttl capped, inside", seconds{1'000'000}, seconds{99}, true},
                      TtlCase{"huge ttl capped, at max", seconds{1'000'000}, seconds{100}, false}));

struct FailureCase {
  const char* what;
  FailureKind kind;
  seconds fresh_until;
};

class FailureTtlTest : public ::testing::TestWithParam<FailureCase> {};

TEST_P(FailureTtlTest, KeepsReasonForItsTtl) {
  const FailureCase& c = GetParam();
  Cache cache(small_options());
  const Answer stored = cache.store_failure("f.test", "SERVFAIL", c.kind, kT0);
  EXPECT_FALSE(stored.ok());
  EXPECT_EQ(stored.error, "SERVFAIL");
  const auto inside = cache.find("f.test", kT0 + c.fresh_until - seconds{1});
  ASSERT_TRUE(inside.has_value()) << c.what;
  EXPECT_FALSE(inside->ok());
  EXPECT_EQ(inside->error, "SERVFAIL");
  EXPECT_TRUE(inside->addresses.empty());
  EXPECT_FALSE(cache.find("f.test", kT0 + c.fresh_until).has_value()) << c.what;
}

INSTANTIATE_TEST_SUITE_P(
    Cache, FailureTtlTest,
    ::testing::Values(FailureCase{"negative", FailureKind::negative, seconds{7}},
                      FailureCase{"transient", FailureKind::transient, seconds{2}}));

TEST(Cache, UnknownNameIsNotAnswered) {
  Cache cache(small_options());
  EXPECT_FALSE(cache.find("nothing.test", kT0).has_value());
}

TEST(Cache, NodataIsOkEmptyForNegativeTtl) {
  Cache cache(small_options());
  const Answer a = cache.store_success("n.test", {}, seconds{3600}, kT0);
  EXPECT_TRUE(a.ok());
  EXPECT_TRUE(a.addresses.empty());
  EXPECT_TRUE(cache.find("n.test", kT0 + seconds{6}).has_value());
  EXPECT_FALSE(cache.find("n.test", kT0 + seconds{7}).has_value());
}

TEST(Cache, RoundRobinAnswersCountWithinWindowThenAreForgotten) {
  Cache cache(small_options());
  const std::vector<IpAddress> first{ip("198.51.100.1"), ip("198.51.100.2")};
  const std::vector<IpAddress> second{ip("198.51.100.3")};
  cache.store_success("rr.test", first, seconds{10}, kT0);
  // Replaced before it expired: valid until the replacement (t0+5).
  const Answer a = cache.store_success("rr.test", second, seconds{10}, kT0 + seconds{5});
  EXPECT_THAT(a.addresses, ElementsAre(ip("198.51.100.3"), ip("198.51.100.1"), ip("198.51.100.2")));
  // Only the first is the current answer, which expires at t0+15.
  EXPECT_EQ(a.current, 1U);
  EXPECT_EQ(a.expires, kT0 + seconds{15});
  // Current answer expires at t0+15; the old ones count until t0+65.
  const auto at14 = cache.find("rr.test", kT0 + seconds{14});
  ASSERT_TRUE(at14.has_value());
  EXPECT_EQ(at14->addresses.size(), 3U);
  // A later answer at t0+64: the first still inside the window, at t0+66 not.
  cache.store_success("rr.test", second, seconds{10}, kT0 + seconds{64});
  EXPECT_THAT(cache.find("rr.test", kT0 + seconds{65})->addresses,
              ElementsAre(ip("198.51.100.3"), ip("198.51.100.1"), ip("198.51.100.2")));
  EXPECT_THAT(cache.find("rr.test", kT0 + seconds{66})->addresses, ElementsAre(ip("198.51.100.3")));
}

TEST(Cache, ExpiredAnswerCountsUntilWindowAfterItsExpiry) {
  Cache cache(small_options());
  const std::vector<IpAddress> first{ip("198.51.100.1")};
  const std::vector<IpAddress> second{ip("198.51.100.2")};
  cache.store_success("e.test", first, seconds{10}, kT0);  // expires t0+10
  // Looked up again long after expiry: valid until t0+10, counts to t0+70.
  cache.store_success("e.test", second, seconds{100}, kT0 + seconds{50});
  EXPECT_THAT(cache.find("e.test", kT0 + seconds{70})->addresses,
              ElementsAre(ip("198.51.100.2"), ip("198.51.100.1")));
  EXPECT_THAT(cache.find("e.test", kT0 + seconds{71})->addresses, ElementsAre(ip("198.51.100.2")));
}

TEST(Cache, FailureReportsFailureButKeepsHistory) {
  Cache cache(small_options());
  const std::vector<IpAddress> first{ip("198.51.100.1")};
  const std::vector<IpAddress> second{ip("198.51.100.2")};
  cache.store_success("h.test", first, seconds{10}, kT0);
  const Answer f =
      cache.store_failure("h.test", "timeout", FailureKind::transient, kT0 + seconds{12});
  EXPECT_FALSE(f.ok());
  EXPECT_TRUE(f.addresses.empty());
  const Answer ok = cache.store_success("h.test", second, seconds{10}, kT0 + seconds{20});
  EXPECT_THAT(ok.addresses, ElementsAre(ip("198.51.100.2"), ip("198.51.100.1")));
}

TEST(Cache, DuplicatesAndAddressesBackInCurrentAppearOnce) {
  Cache cache(small_options());
  const std::vector<IpAddress> first{ip("192.0.2.1"), ip("192.0.2.1"), ip("192.0.2.2")};
  const std::vector<IpAddress> second{ip("192.0.2.2"), ip("2001:db8::1")};
  EXPECT_THAT(cache.store_success("d.test", first, seconds{10}, kT0).addresses,
              ElementsAre(ip("192.0.2.1"), ip("192.0.2.2")));
  EXPECT_THAT(cache.store_success("d.test", second, seconds{10}, kT0 + seconds{1}).addresses,
              ElementsAre(ip("192.0.2.2"), ip("2001:db8::1"), ip("192.0.2.1")));
}

TEST(Cache, AddressesPerNameAreBounded) {
  CacheOptions o = small_options();
  o.max_addresses_per_name = 4;
  Cache cache(o);
  for (std::uint32_t round = 0; round < 5; ++round) {
    const std::vector<IpAddress> addrs{IpAddress::from_v4_uint(0xC6336400U + round * 2),
                                       IpAddress::from_v4_uint(0xC6336401U + round * 2)};
    cache.store_success("b.test", addrs, seconds{10}, kT0 + seconds{round});
  }
  const auto a = cache.find("b.test", kT0 + seconds{5});
  ASSERT_TRUE(a.has_value());
  // The current pair first, then the most recent history.
  EXPECT_THAT(a->addresses, ElementsAre(ip("198.51.100.8"), ip("198.51.100.9"), ip("198.51.100.6"),
                                        ip("198.51.100.7")));
}

TEST(Cache, NamesAreBoundedLeastRecentlyUsedGoFirst) {
  CacheOptions o = small_options();
  o.max_names = 8;
  o.shards = 1;
  Cache cache(o);
  const std::vector<IpAddress> addrs{ip("192.0.2.1")};
  for (int i = 0; i < 8; ++i) {
    cache.store_success("n" + std::to_string(i) + ".test", addrs, seconds{100}, kT0 + seconds{i});
  }
  // n0 is the oldest insert but was just read: n1 is the least recently used.
  ASSERT_TRUE(cache.find("n0.test", kT0 + seconds{20}).has_value());
  cache.store_success("new.test", addrs, seconds{100}, kT0 + seconds{21});
  EXPECT_LE(cache.size(), 8U);
  EXPECT_TRUE(cache.find("n0.test", kT0 + seconds{22}).has_value());
  EXPECT_FALSE(cache.find("n1.test", kT0 + seconds{22}).has_value());
  EXPECT_TRUE(cache.find("new.test", kT0 + seconds{22}).has_value());
  // A flood of names never grows it past the bound.
  for (int i = 0; i < 1000; ++i) {
    cache.store_failure("flood" + std::to_string(i) + ".test", "NXDOMAIN", FailureKind::negative,
                        kT0 + seconds{30});
  }
  EXPECT_LE(cache.size(), 8U);
}

TEST(Cache, ExpiredNamesAreEvictedBeforeLiveOnes) {
  CacheOptions o = small_options();
  o.max_names = 4;
  o.shards = 1;
  Cache cache(o);
  const std::vector<IpAddress> addrs{ip("192.0.2.1")};
  cache.store_failure("dead.test", "NXDOMAIN", FailureKind::negative, kT0);  // dies at t0+7
  for (int i = 0; i < 3; ++i) {
    cache.store_success("live" + std::to_string(i) + ".test", addrs, seconds{100},
                        kT0 + seconds{1});
  }
  cache.store_success("more.test", addrs, seconds{100}, kT0 + seconds{8});
  EXPECT_EQ(cache.size(), 4U);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(cache.find("live" + std::to_string(i) + ".test", kT0 + seconds{9}).has_value());
  }
}

TEST(Cache, ConcurrentReadersAndWritersAgree) {
  Cache cache(small_options());
  const std::vector<IpAddress> addrs{ip("192.0.2.1")};
  std::atomic<bool> bad{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        const std::string name = "c" + std::to_string(i % 50) + ".test";
        if (t % 2 == 0) {
          cache.store_success(name, addrs, seconds{30}, kT0);
        } else if (auto a = cache.find(name, kT0 + seconds{1})) {
          if (!a->ok() || a->addresses.size() != 1) bad = true;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_FALSE(bad);
  EXPECT_EQ(cache.size(), 50U);
}

TEST(CacheAnswers, SpansStayValidWhileTheViewLives) {
  Cache cache(small_options());
  const std::vector<IpAddress> addrs{ip("192.0.2.1"), ip("2001:db8::1")};
  cache.store_success("v.test", addrs, seconds{30}, kT0);
  cache.store_failure("x.test", "NXDOMAIN", FailureKind::negative, kT0);
  CacheAnswers view(cache, kT0 + seconds{1});
  const auto first = view.find("v.test");
  ASSERT_TRUE(first.has_value());
  // Later finds, pins and cache changes do not touch what was returned.
  const auto failed = view.find("x.test");
  view.pin("p.test", Answer{Answer::Status::ok, {ip("203.0.113.9")}, {}});
  cache.store_success("v.test", {}, seconds{30}, kT0 + seconds{2});
  for (int i = 0; i < 100; ++i) (void)view.find("v.test");
  EXPECT_EQ(first->status, policy::NameAnswer::Status::ok);
  EXPECT_THAT(std::vector<IpAddress>(first->addresses.begin(), first->addresses.end()),
              ElementsAre(ip("192.0.2.1"), ip("2001:db8::1")));
  ASSERT_TRUE(failed.has_value());
  EXPECT_EQ(failed->status, policy::NameAnswer::Status::failed);
  EXPECT_EQ(failed->error, "NXDOMAIN");
  EXPECT_FALSE(view.find("unknown.test").has_value());
}

TEST(CacheAnswers, PinnedAnswerWinsOverTheCache) {
  Cache cache(small_options());
  CacheAnswers view(cache, kT0);
  EXPECT_FALSE(view.find("p.test").has_value());
  view.pin("p.test", Answer{Answer::Status::failed, {}, "timeout"});
  view.pin("p.test", Answer{Answer::Status::ok, {ip("203.0.113.9")}, {}});
  const auto a = view.find("p.test");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->status, policy::NameAnswer::Status::ok);
  ASSERT_EQ(a->addresses.size(), 1U);
  EXPECT_EQ(a->addresses[0], ip("203.0.113.9"));
}

TEST(CacheOptions, TakesVerifyWindowFromConfig) {
  config::DnsSpec spec;
  spec.verify_window = milliseconds{1234};
  EXPECT_EQ(CacheOptions::from(spec).verify_window, milliseconds{1234});
}

}  // namespace
}  // namespace egressd::dns
