#include "egressd/dns/resolver.hpp"

#include <atomic>
#include <cstdlib>
#include <future>
#include <map>
#include <thread>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fake_dns_server.hpp"

namespace egressd::dns {
namespace {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using std::chrono::seconds;
using test::FakeDnsServer;
using test::FakeRecord;
using test::FakeReply;
using test::kTypeA;
using test::kTypeAaaa;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

IpAddress ip(std::string_view text) {
  return *IpAddress::parse(text);
}

// One worker: an io_context on its own thread, as in the gateway.
struct Worker {
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard{ioc.get_executor()};
  std::thread thread{[this] { ioc.run(); }};

  Worker() = default;
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() {
    guard.reset();
    ioc.stop();
    thread.join();
  }
};

struct Outcome {
  Answer answer;
  bool on_caller_thread = false;
};

asio::awaitable<Outcome> resolve_on(Resolver* r, Worker* w, std::string name) {
  Answer a = co_await r->resolve(std::move(name));
  const bool mine = w->ioc.get_executor().running_in_this_thread() &&
                    std::this_thread::get_id() == w->thread.get_id();
  co_return Outcome{std::move(a), mine};
}

std::future<Outcome> spawn_resolve(Worker& w, Resolver& r, std::string name) {
  return asio::co_spawn(w.ioc, resolve_on(&r, &w, std::move(name)), asio::use_future);
}

// The time the cache sees; tests move it by hand.
struct ManualClock {
  std::atomic<std::int64_t> ms{0};
  TimePoint now() const { return TimePoint{} + std::chrono::hours{1000} + milliseconds{ms.load()}; }
  void advance(seconds s) { ms += std::chrono::duration_cast<milliseconds>(s).count(); }
};

FakeReply script(const std::string& qname, std::uint16_t qtype, std::size_t nth) {
  static const std::map<std::string, FakeReply> kReplies = {
      {"ok.test.",
       {false,
        0,
        {{ip("192.0.2.1"), 30}, {ip("192.0.2.2"), 60}, {ip("2001:db8::1"), 45}},
        milliseconds{0}}},
      {"nx.test.", {false, 3, {}, milliseconds{0}}},
      {"servfail.test.", {false, 2, {}, milliseconds{0}}},
      {"refused.test.", {false, 5, {}, milliseconds{0}}},
      {"hang.test.", {true, 0, {}, milliseconds{0}}},
      {"nodata.test.", {false, 0, {}, milliseconds{0}}},
      {"slow.test.", {false, 0, {{ip("192.0.2.9"), 60}}, milliseconds{300}}},
  };
  if (qname == "rr.test.") {
    // Round-robin: every query a different address.
    return {false,
            0,
            {{IpAddress::from_v4_uint(0xC6336401U + static_cast<std::uint32_t>(nth)), 5}},
            milliseconds{0}};
  }
  if (qname == "many.test." || qname == "toomany.test.") {
    // 60 (or 70) A records in one reply, 198.51.100.1 up; no AAAA. Both fit
    // the EDNS payload size (1232): no TCP, which this server lacks.
    FakeReply r{false, 0, {}, milliseconds{0}};
    if (qtype == kTypeA) {
      const std::uint32_t n = qname == "many.test." ? 60 : 70;
      for (std::uint32_t i = 1; i <= n; ++i)
        r.records.push_back({IpAddress::from_v4_uint(0xC6336400U + i), 60});
    }
    return r;
  }
  if (auto it = kReplies.find(qname); it != kReplies.end()) return it->second;
  return {false, 3, {}, milliseconds{0}};
}

// A and AAAA disagree: A answers, AAAA fails.
FakeReply script_v4only(const std::string& qname, std::uint16_t qtype, std::size_t nth) {
  if (qname == "v4only.test.") {
    if (qtype == kTypeAaaa) return {false, 2, {}, milliseconds{0}};
    return {false, 0, {{ip("192.0.2.7"), 60}}, milliseconds{0}};
  }
  return script(qname, qtype, nth);
}

class ResolverTest : public ::testing::Test {
 protected:
  void start(milliseconds timeout = milliseconds{500}, std::size_t max_in_flight = 1024,
             test::Responder responder = &script_v4only) {
    server_ = std::make_unique<FakeDnsServer>(std::move(responder));
    CacheOptions co;
    co.min_ttl = seconds{1};
    co.verify_window = seconds{60};
    cache_ = std::make_unique<Cache>(co);
    ResolverOptions ro;
    ro.servers = {server_->endpoint()};
    ro.timeout = timeout;
    ro.max_in_flight = max_in_flight;
    ro.clock = [this] { return clock_.now(); };
    resolver_ = std::make_unique<Resolver>(*cache_, ro);
  }

  Outcome resolve(std::string name, Worker* w = nullptr) {
    return spawn_resolve(w != nullptr ? *w : w1_, *resolver_, std::move(name)).get();
  }

  std::uint64_t counted(QueryResult r) const {
    return resolver_->snapshot()[static_cast<std::size_t>(r)];
  }

  void TearDown() override {
    resolver_.reset();
    cache_.reset();
    server_.reset();
  }

  Worker w1_;
  Worker w2_;
  ManualClock clock_;
  std::unique_ptr<FakeDnsServer> server_;
  std::unique_ptr<Cache> cache_;
  std::unique_ptr<Resolver> resolver_;
};

TEST_F(ResolverTest, CollectsAandAAAAAndHonoursTheSmallestTtl) {
  start();
  const Outcome o = resolve("ok.test");
  ASSERT_TRUE(o.answer.ok()) << o.answer.error;
  EXPECT_THAT(o.answer.addresses, ElementsAre(ip("192.0.2.1"), ip("192.0.2.2"), ip("2001:db8::1")));
  EXPECT_TRUE(o.on_caller_thread);
  EXPECT_EQ(server_->count("ok.test.", kTypeA), 1U);
  EXPECT_EQ(server_->count("ok.test.", kTypeAaaa), 1U);
  EXPECT_EQ(counted(QueryResult::success), 1U);

  clock_.advance(seconds{29});  // smallest TTL is 30
  EXPECT_TRUE(resolve("ok.test").answer.ok());
  EXPECT_EQ(server_->count("ok.test.", kTypeA), 1U);
  EXPECT_EQ(counted(QueryResult::cache_hit), 1U);

  clock_.advance(seconds{1});
  EXPECT_TRUE(resolve("ok.test").answer.ok());
  EXPECT_EQ(server_->count("ok.test.", kTypeA), 2U);
}

TEST_F(ResolverTest, EveryAddressTheCacheCanKeepIsRead) {
  // A reply with 60 addresses: all of them, the last included (it was cut
  // at 32, and a flow to the 33rd address was denied as an integrity
  // failure).
  start();
  const Outcome o = resolve("many.test");
  ASSERT_TRUE(o.answer.ok()) << o.answer.error;
  ASSERT_EQ(o.answer.addresses.size(), 60U);
  EXPECT_EQ(o.answer.current, 60U);
  EXPECT_EQ(o.answer.addresses.back(), IpAddress::from_v4_uint(0xC6336400U + 60));
  // Past the cache's max_addresses_per_name (64), the first 64 are kept.
  const Outcome more = resolve("toomany.test");
  ASSERT_TRUE(more.answer.ok()) << more.answer.error;
  ASSERT_EQ(more.answer.addresses.size(), cache_->options().max_addresses_per_name);
  EXPECT_EQ(more.answer.addresses.front(), IpAddress::from_v4_uint(0xC6336400U + 1));
}

struct OutcomeCase {
  const char* name;
  bool ok;
  const char* error;
  std::vector<IpAddress> addresses;
  QueryResult counted_as;
};

class ResolverOutcomeTest : public ResolverTest,
                            public ::testing::WithParamInterface<OutcomeCase> {};

TEST_P(ResolverOutcomeTest, EveryOutcomeIsAnAnswer) {
  const OutcomeCase& c = GetParam();
  start(milliseconds{400});
  const auto begin = std::chrono::steady_clock::now();
  const Outcome o = resolve(c.name);
  const auto took = std::chrono::steady_clock::now() - begin;
  EXPECT_EQ(o.answer.ok(), c.ok) << c.name;
  EXPECT_EQ(o.answer.error, c.error) << c.name;
  EXPECT_EQ(o.answer.addresses, c.addresses) << c.name;
  EXPECT_TRUE(o.on_caller_thread);
  EXPECT_EQ(counted(c.counted_as), 1U) << c.name;
  // dns.timeout bounds every lookup, retries included.
  EXPECT_LT(took, milliseconds{1200}) << c.name;
  // The failure is cached too: asking again sends nothing.
  const std::size_t sent = server_->queries().size();
  EXPECT_EQ(resolve(c.name).answer.error, c.error);
  EXPECT_EQ(server_->queries().size(), sent);
}

INSTANTIATE_TEST_SUITE_P(
    Resolver, ResolverOutcomeTest,
    ::testing::Values(OutcomeCase{"nx.test", false, "NXDOMAIN", {}, QueryResult::nxdomain},
                      OutcomeCase{"servfail.test", false, "SERVFAIL", {}, QueryResult::servfail},
                      OutcomeCase{"refused.test", false, "REFUSED", {}, QueryResult::refused},
                      OutcomeCase{"hang.test", false, "timeout", {}, QueryResult::timeout},
                      OutcomeCase{"nodata.test", true, "", {}, QueryResult::success},
                      OutcomeCase{"v4only.test", true, "", {ip("192.0.2.7")}, QueryResult::success},
                      OutcomeCase{"bad_name.test", false, "invalid name", {}, QueryResult::error}),
    [](const ::testing::TestParamInfo<OutcomeCase>& param_info) {
      std::string n = param_info.param.name;
      for (char& ch : n) {
        if (ch == '.' || ch == '_') ch = '_';
      }
      return n;
    });

TEST_F(ResolverTest, TimeoutTakesAboutDnsTimeout) {
  start(milliseconds{400});
  const auto begin = std::chrono::steady_clock::now();
  EXPECT_EQ(resolve("hang.test").answer.error, "timeout");
  const auto took = std::chrono::steady_clock::now() - begin;
  EXPECT_GE(took, milliseconds{350});
  EXPECT_LT(took, milliseconds{1000});
  // c-ares retried within the budget.
  EXPECT_GE(server_->count("hang.test.", kTypeA), 1U);
}

TEST_F(ResolverTest, RoundRobinAnswersAccumulateWithinTheWindow) {
  start();
  EXPECT_THAT(resolve("rr.test").answer.addresses, ElementsAre(ip("198.51.100.1")));
  clock_.advance(seconds{6});  // TTL 5 expired
  EXPECT_THAT(resolve("rr.test").answer.addresses,
              ElementsAre(ip("198.51.100.2"), ip("198.51.100.1")));
  clock_.advance(seconds{6});
  const Outcome third = resolve("rr.test");
  EXPECT_THAT(third.answer.addresses,
              ElementsAre(ip("198.51.100.3"), ip("198.51.100.2"), ip("198.51.100.1")));
  // What the policy sees through the view, before the window passes.
  CacheAnswers view(*cache_, clock_.now());
  const auto seen = view.find("rr.test");
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->status, policy::NameAnswer::Status::ok);
  EXPECT_EQ(seen->addresses.size(), 3U);

  clock_.advance(seconds{120});  // past verify_window (60 s)
  EXPECT_THAT(resolve("rr.test").answer.addresses, ElementsAre(ip("198.51.100.4")));
}

TEST_F(ResolverTest, ConcurrentLookupsFromTwoWorkersShareOneQueryPair) {
  start(milliseconds{1500});  // first try 500 ms: no retransmission before the 300 ms reply
  std::vector<std::future<Outcome>> futures;
  for (int i = 0; i < 4; ++i) {
    futures.push_back(spawn_resolve(w1_, *resolver_, "slow.test"));
    futures.push_back(spawn_resolve(w2_, *resolver_, "slow.test"));
  }
  for (auto& f : futures) {
    const Outcome o = f.get();
    ASSERT_TRUE(o.answer.ok()) << o.answer.error;
    EXPECT_THAT(o.answer.addresses, ElementsAre(ip("192.0.2.9")));
    // Resumed on the worker that asked, not on the resolver thread.
    EXPECT_TRUE(o.on_caller_thread);
  }
  EXPECT_EQ(server_->count("slow.test.", kTypeA), 1U);
  EXPECT_EQ(server_->count("slow.test.", kTypeAaaa), 1U);
  EXPECT_EQ(counted(QueryResult::success), 1U);
  EXPECT_EQ(counted(QueryResult::coalesced) + counted(QueryResult::cache_hit), 7U);
}

TEST_F(ResolverTest, NamesAreAbsoluteWhateverTheSearchList) {
  // c-ares would take a search list and ndots from these; none may apply.
  ::setenv("LOCALDOMAIN", "search.example", 1);
  ::setenv("RES_OPTIONS", "ndots:5", 1);
  start();
  ::unsetenv("LOCALDOMAIN");
  ::unsetenv("RES_OPTIONS");
  EXPECT_EQ(resolve("short").answer.error, "NXDOMAIN");
  EXPECT_TRUE(resolve("OK.Test.").answer.ok());
  std::vector<std::string> names;
  for (const auto& q : server_->queries()) names.push_back(q.qname);
  EXPECT_THAT(names, UnorderedElementsAre("short.", "short.", "ok.test.", "ok.test."));
}

TEST_F(ResolverTest, InvalidNameIsRefusedWithoutAQuery) {
  start();
  for (const char* bad : {"", ".", "a..b", "sp ace.test", "under_score.test"}) {
    const Outcome o = resolve(bad);
    EXPECT_FALSE(o.answer.ok()) << bad;
    EXPECT_EQ(o.answer.error, "invalid name") << bad;
  }
  EXPECT_TRUE(server_->queries().empty());
}

asio::awaitable<std::pair<bool, milliseconds>> resolve_or_give_up(Resolver* r, std::string name,
                                                                  milliseconds limit) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(co_await asio::this_coro::executor, limit);
  const auto begin = std::chrono::steady_clock::now();
  auto which = co_await (r->resolve(std::move(name)) || timer.async_wait(asio::use_awaitable));
  co_return std::pair{which.index() == 1, std::chrono::duration_cast<milliseconds>(
                                              std::chrono::steady_clock::now() - begin)};
}

TEST_F(ResolverTest, CancelledCallerLeavesAtOnceAndTheLookupGoesOn) {
  start(milliseconds{800});
  auto f =
      asio::co_spawn(w1_.ioc, resolve_or_give_up(resolver_.get(), "hang.test", milliseconds{50}),
                     asio::use_future);
  const auto [gave_up, took] = f.get();
  EXPECT_TRUE(gave_up);
  EXPECT_LT(took, milliseconds{400});
  // The same name from another worker joins the running lookup, which still
  // ends in its own timeout; other names are unaffected.
  auto later = spawn_resolve(w2_, *resolver_, "hang.test");
  EXPECT_TRUE(resolve("ok.test").answer.ok());
  const Outcome o = later.get();
  EXPECT_EQ(o.answer.error, "timeout");
  EXPECT_TRUE(o.on_caller_thread);
}

TEST_F(ResolverTest, TooManyLookupsInFlightFailFast) {
  start(milliseconds{2000}, 1);
  auto slow = spawn_resolve(w1_, *resolver_, "slow.test");
  const Outcome rejected = resolve("ok.test");
  EXPECT_FALSE(rejected.answer.ok());
  EXPECT_EQ(rejected.answer.error, "resolver overloaded");
  EXPECT_EQ(counted(QueryResult::overloaded), 1U);
  EXPECT_TRUE(slow.get().answer.ok());
}

TEST_F(ResolverTest, DestroyingTheResolverAnswersPendingCallers) {
  start(milliseconds{5000});
  auto pending = spawn_resolve(w1_, *resolver_, "hang.test");
  std::this_thread::sleep_for(milliseconds{100});
  resolver_.reset();
  ASSERT_EQ(pending.wait_for(seconds{2}), std::future_status::ready);
  const Outcome o = pending.get();
  EXPECT_EQ(o.answer.error, "resolver stopped");
  EXPECT_TRUE(o.on_caller_thread);
}

TEST(ResolverSetup, StartsFromResolvConfWhenNoServersAreGiven) {
  Cache cache;
  Resolver resolver(cache, ResolverOptions{});
  EXPECT_EQ(resolver.snapshot(), QueryCounts{});
}

TEST(ResolverSetup, OptionsComeFromTheDnsSection) {
  config::DnsSpec spec;
  spec.servers = {*Endpoint::parse("[2001:db8::53]:5353")};
  spec.timeout = milliseconds{750};
  const ResolverOptions o = ResolverOptions::from(spec);
  EXPECT_EQ(o.servers, spec.servers);
  EXPECT_EQ(o.timeout, milliseconds{750});
  // An IPv6 server is accepted by c-ares in the form we give it.
  Cache cache;
  EXPECT_NO_THROW(Resolver(cache, o));
}

TEST(QueryResultNames, AreStableLabelValues) {
  const std::vector<std::string_view> names = {
      to_string(QueryResult::cache_hit), to_string(QueryResult::coalesced),
      to_string(QueryResult::success),   to_string(QueryResult::nxdomain),
      to_string(QueryResult::servfail),  to_string(QueryResult::refused),
      to_string(QueryResult::timeout),   to_string(QueryResult::error),
      to_string(QueryResult::overloaded)};
  EXPECT_THAT(names, ElementsAre("cache_hit", "coalesced", "success", "nxdomain", "servfail",
                                 "refused", "timeout", "error", "overloaded"));
  EXPECT_EQ(names.size(), kQueryResultCount);
}

}  // namespace
}  // namespace egressd::dns
