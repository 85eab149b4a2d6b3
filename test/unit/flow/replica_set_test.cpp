#include "egressd/flow/replica_set.hpp"

#include <map>
#include <vector>

#include <gtest/gtest.h>

namespace egressd::flow {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Attempts = ReplicaSet::Attempts;

const ReplicaSet::TimePoint kT0 = ReplicaSet::TimePoint{} + std::chrono::hours{1000};

IpAddress ip(std::string_view text) {
  return *IpAddress::parse(text);
}
Endpoint ep(std::string_view text, std::uint16_t port = 15008) {
  return Endpoint{ip(text), port};
}

// A name with `addresses`, fresh until t0+30s.
std::unique_ptr<ReplicaSet> named(std::vector<IpAddress> addresses) {
  auto set = std::make_unique<ReplicaSet>("central.test", 15008);
  set->update(addresses, kT0, kT0 + seconds{30});
  return set;
}

// One connection's first pick.
Endpoint first_pick(ReplicaSet& set, ReplicaSet::TimePoint now) {
  const Attempts none;
  auto p = set.pick(now, none);
  EXPECT_TRUE(p.has_value());
  return p.value_or(Endpoint{});
}

TEST(ReplicaSet, FromTarget) {
  auto fixed = ReplicaSet::from_target("10.200.0.5:15008");
  ASSERT_TRUE(fixed);
  EXPECT_EQ(fixed->name(), "");
  EXPECT_EQ(fixed->size(), 1U);
  EXPECT_FALSE(fixed->claim_refresh(kT0));  // an address is never looked up
  EXPECT_EQ(first_pick(*fixed, kT0), ep("10.200.0.5"));

  auto v6 = ReplicaSet::from_target("[fd00::5]:443");
  ASSERT_TRUE(v6);
  EXPECT_EQ(first_pick(*v6, kT0), ep("fd00::5", 443));

  auto name = ReplicaSet::from_target("egressd.egress.svc:15008");
  ASSERT_TRUE(name);
  EXPECT_EQ(name->name(), "egressd.egress.svc");
  EXPECT_EQ(name->port(), 15008);
  EXPECT_EQ(name->size(), 0U);

  EXPECT_FALSE(ReplicaSet::from_target("noport"));
  EXPECT_FALSE(ReplicaSet::from_target("host:0"));
  EXPECT_FALSE(ReplicaSet::from_target("host:65536"));
  EXPECT_FALSE(ReplicaSet::from_target(":80"));
}

TEST(ReplicaSet, RoundRobinSpreadsNewConnections) {
  auto set = named({ip("10.200.0.1"), ip("10.200.0.2"), ip("10.200.0.3")});
  std::map<Endpoint, int> seen;
  for (int i = 0; i < 30; ++i) ++seen[first_pick(*set, kT0)];
  ASSERT_EQ(seen.size(), 3U);
  for (const auto& [e, n] : seen) EXPECT_EQ(n, 10) << e.to_string();
  // In order, one after another.
  const Endpoint a = first_pick(*set, kT0);
  const Endpoint b = first_pick(*set, kT0);
  const Endpoint c = first_pick(*set, kT0);
  EXPECT_NE(a, b);
  EXPECT_NE(b, c);
  EXPECT_EQ(first_pick(*set, kT0), a);
}

TEST(ReplicaSet, OneConnectionTriesEachReplicaOnce) {
  auto set = named({ip("10.200.0.1"), ip("10.200.0.2")});
  Attempts attempts;
  EXPECT_EQ(set->attempts_left(attempts), 2U);
  auto first = set->pick(kT0, attempts);
  ASSERT_TRUE(first);
  attempts.add(*first);
  set->failed(*first, kT0);
  EXPECT_EQ(set->attempts_left(attempts), 1U);
  auto second = set->pick(kT0, attempts);
  ASSERT_TRUE(second);
  EXPECT_NE(*second, *first);
  attempts.add(*second);
  set->failed(*second, kT0);
  EXPECT_EQ(set->attempts_left(attempts), 0U);
  EXPECT_FALSE(set->pick(kT0, attempts));
  EXPECT_EQ(attempts.last(), second);
}

TEST(ReplicaSet, AttemptsAreCappedPerConnection) {
  std::vector<IpAddress> many;
  for (int i = 1; i <= 10; ++i) many.push_back(ip("10.200.0." + std::to_string(i)));
  auto set = named(many);
  Attempts attempts;
  for (std::size_t i = 0; i < ReplicaSet::kMaxAttempts; ++i) {
    EXPECT_EQ(set->attempts_left(attempts), ReplicaSet::kMaxAttempts - i);
    auto p = set->pick(kT0, attempts);
    ASSERT_TRUE(p);
    attempts.add(*p);
  }
  EXPECT_EQ(set->attempts_left(attempts), 0U);
  EXPECT_FALSE(set->pick(kT0, attempts));
}

TEST(ReplicaSet, FailedReplicaIsSkippedForAWhile) {
  ReplicaSet::Options o;
  o.skip_for = seconds{5};
  ReplicaSet set("central.test", 15008, o);
  const std::vector<IpAddress> two{ip("10.200.0.1"), ip("10.200.0.2")};
  set.update(two, kT0, kT0 + seconds{60});
  set.failed(ep("10.200.0.1"), kT0);
  // For five seconds every new connection goes to the other one.
  for (int i = 0; i < 10; ++i) EXPECT_EQ(first_pick(set, kT0 + seconds{4}), ep("10.200.0.2"));
  // Then both again.
  std::map<Endpoint, int> seen;
  for (int i = 0; i < 4; ++i) ++seen[first_pick(set, kT0 + seconds{5})];
  EXPECT_EQ(seen[ep("10.200.0.1")], 2);
  EXPECT_EQ(seen[ep("10.200.0.2")], 2);
}

TEST(ReplicaSet, SuccessEndsTheSkip) {
  auto set = named({ip("10.200.0.1"), ip("10.200.0.2")});
  set->failed(ep("10.200.0.1"), kT0);
  set->succeeded(ep("10.200.0.1"));
  std::map<Endpoint, int> seen;
  for (int i = 0; i < 4; ++i) ++seen[first_pick(*set, kT0 + seconds{1})];
  EXPECT_EQ(seen.size(), 2U);
}

TEST(ReplicaSet, WhenAllAreSkippedTheOldestSkipIsTriedRatherThanRefusing) {
  auto set = named({ip("10.200.0.1"), ip("10.200.0.2"), ip("10.200.0.3")});
  set->failed(ep("10.200.0.2"), kT0);
  set->failed(ep("10.200.0.3"), kT0 + seconds{1});
  set->failed(ep("10.200.0.1"), kT0 + seconds{2});
  const auto now = kT0 + seconds{3};
  Attempts attempts;
  auto p = set->pick(now, attempts);
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, ep("10.200.0.2"));
  attempts.add(*p);
  p = set->pick(now, attempts);
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, ep("10.200.0.3"));
  attempts.add(*p);
  p = set->pick(now, attempts);
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, ep("10.200.0.1"));
  // A single fixed replica that keeps failing is still tried.
  ReplicaSet one(ep("10.200.0.9"));
  one.failed(ep("10.200.0.9"), kT0);
  EXPECT_EQ(first_pick(one, kT0 + milliseconds{1}), ep("10.200.0.9"));
}

TEST(ReplicaSet, EmptySetPicksNothing) {
  ReplicaSet set("central.test", 15008);
  const Attempts none;
  EXPECT_FALSE(set.pick(kT0, none));
  EXPECT_EQ(set.attempts_left(none), 0U);
}

TEST(ReplicaSet, RefreshIsClaimedOnceWhenTheAnswerExpires) {
  ReplicaSet::Options o;
  o.retry_resolve = seconds{1};
  ReplicaSet set("central.test", 15008, o);
  // Empty: everyone may look up (the resolver coalesces them).
  EXPECT_TRUE(set.claim_refresh(kT0));
  EXPECT_TRUE(set.claim_refresh(kT0));
  const std::vector<IpAddress> two{ip("10.200.0.1"), ip("10.200.0.2")};
  set.update(two, kT0, kT0 + seconds{10});
  // Fresh: nobody looks up, per connection or otherwise.
  EXPECT_FALSE(set.claim_refresh(kT0 + seconds{9}));
  // Expired: exactly one caller.
  EXPECT_TRUE(set.claim_refresh(kT0 + seconds{10}));
  EXPECT_FALSE(set.claim_refresh(kT0 + seconds{10}));
  EXPECT_FALSE(set.claim_refresh(kT0 + seconds{20}));
  // A failed lookup keeps the replicas and is retried after retry_resolve.
  set.resolve_failed(kT0 + seconds{20});
  EXPECT_EQ(set.size(), 2U);
  EXPECT_FALSE(set.claim_refresh(kT0 + milliseconds{20'500}));
  EXPECT_TRUE(set.claim_refresh(kT0 + seconds{21}));
  // A claim never answered (its flow went away) is lost after 30 s.
  EXPECT_FALSE(set.claim_refresh(kT0 + seconds{50}));
  EXPECT_TRUE(set.claim_refresh(kT0 + seconds{52}));
  // A TTL of zero does not mean a lookup per connection.
  set.update(two, kT0 + seconds{60}, kT0 + seconds{60});
  EXPECT_FALSE(set.claim_refresh(kT0 + milliseconds{60'500}));
}

TEST(ReplicaSet, UpdateKeepsSkipsOfReplicasThatStayAndDropsDuplicates) {
  auto set = named({ip("10.200.0.1"), ip("10.200.0.2")});
  set->failed(ep("10.200.0.1"), kT0);
  const std::vector<IpAddress> next{ip("10.200.0.1"), ip("10.200.0.3"), ip("10.200.0.3")};
  set->update(next, kT0 + seconds{1}, kT0 + seconds{40});
  EXPECT_EQ(set->size(), 2U);
  for (int i = 0; i < 4; ++i) EXPECT_EQ(first_pick(*set, kT0 + seconds{2}), ep("10.200.0.3"));
  // An empty answer keeps what there was.
  set->update({}, kT0 + seconds{3}, kT0 + seconds{40});
  EXPECT_EQ(set->size(), 2U);
  // A fixed set ignores nothing it is given but is never asked to refresh.
  ReplicaSet fixed(ep("10.200.0.9"));
  EXPECT_FALSE(fixed.claim_refresh(kT0 + std::chrono::hours{1}));
}

}  // namespace
}  // namespace egressd::flow
