#include "egressd/metrics/registry.hpp"

#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace egressd::metrics {
namespace {

using namespace std::chrono_literals;
using log::Decision;

constexpr std::string_view kExpected =
    R"(# HELP egressd_access_log_dropped_total Access log records not written (queue full in drop mode, or a failed write).
# TYPE egressd_access_log_dropped_total counter
egressd_access_log_dropped_total 7
# HELP egressd_build_info Always 1; the version label says which build runs.
# TYPE egressd_build_info gauge
egressd_build_info{version="1.2.3"} 1
# HELP egressd_config_generation Generation of the configuration in force (1 at start, +1 per accepted reload).
# TYPE egressd_config_generation gauge
egressd_config_generation 2
# HELP egressd_config_last_reload_success_timestamp_seconds Unix time the configuration in force was loaded.
# TYPE egressd_config_last_reload_success_timestamp_seconds gauge
egressd_config_last_reload_success_timestamp_seconds 1700000100.25
# HELP egressd_config_reloads_total Configuration reloads, by result.
# TYPE egressd_config_reloads_total counter
egressd_config_reloads_total{result="failure"} 1
egressd_config_reloads_total{result="success"} 1
# HELP egressd_dns_queries_total DNS queries sent, by result.
# TYPE egressd_dns_queries_total counter
egressd_dns_queries_total{result="error"} 0
egressd_dns_queries_total{result="nodata"} 0
egressd_dns_queries_total{result="nxdomain"} 1
egressd_dns_queries_total{result="servfail"} 0
egressd_dns_queries_total{result="success"} 2
egressd_dns_queries_total{result="timeout"} 0
# HELP egressd_flow_bytes_total Bytes relayed, up (client to upstream) and down.
# TYPE egressd_flow_bytes_total counter
egressd_flow_bytes_total{listener="proxy",direction="down"} 0
egressd_flow_bytes_total{listener="proxy",direction="up"} 5
egressd_flow_bytes_total{listener="transparent",direction="down"} 2000
egressd_flow_bytes_total{listener="transparent",direction="up"} 100
# HELP egressd_flow_duration_seconds Connection durations, from accept to close.
# TYPE egressd_flow_duration_seconds histogram
egressd_flow_duration_seconds_bucket{listener="proxy",le="0.005"} 0
egressd_flow_duration_seconds_bucket{listener="proxy",le="0.025"} 0
egressd_flow_duration_seconds_bucket{listener="proxy",le="0.1"} 0
egressd_flow_duration_seconds_bucket{listener="proxy",le="0.5"} 0
egressd_flow_duration_seconds_bucket{listener="proxy",le="1"} 0
egressd_flow_duration_seconds_bucket{listener="proxy",le="5"} 1
egressd_flow_duration_seconds_bucket{listener="proxy",le="30"} 1
egressd_flow_duration_seconds_bucket{listener="proxy",le="120"} 1
egressd_flow_duration_seconds_bucket{listener="proxy",le="600"} 1
egressd_flow_duration_seconds_bucket{listener="proxy",le="3600"} 1
egressd_flow_duration_seconds_bucket{listener="proxy",le="+Inf"} 1
egressd_flow_duration_seconds_sum{listener="proxy"} 5
egressd_flow_duration_seconds_count{listener="proxy"} 1
egressd_flow_duration_seconds_bucket{listener="transparent",le="0.005"} 1
egressd_flow_duration_seconds_bucket{listener="transparent",le="0.025"} 1
egressd_flow_duration_seconds_bucket{listener="transparent",le="0.1"} 1
egressd_flow_duration_seconds_bucket{listener="transparent",le="0.5"} 1
egressd_flow_duration_seconds_bucket{listener="transparent",le="1"} 1
egressd_flow_duration_seconds_bucket{listener="transparent",le="5"} 2
egressd_flow_duration_seconds_bucket{listener="transparent",le="30"} 2
egressd_flow_duration_seconds_bucket{listener="transparent",le="120"} 3
egressd_flow_duration_seconds_bucket{listener="transparent",le="600"} 3
egressd_flow_duration_seconds_bucket{listener="transparent",le="3600"} 3
egressd_flow_duration_seconds_bucket{listener="transparent",le="+Inf"} 4
egressd_flow_duration_seconds_sum{listener="transparent"} 604842.003
egressd_flow_duration_seconds_count{listener="transparent"} 4
# HELP egressd_flows_active Connections open now.
# TYPE egressd_flows_active gauge
egressd_flows_active{listener="proxy"} 0
egressd_flows_active{listener="transparent"} 1
# HELP egressd_flows_limit Concurrent flows allowed (limits.max_connections, or what the fd limit allows).
# TYPE egressd_flows_limit gauge
egressd_flows_limit 9456
# HELP egressd_flows_total Connections ended, by protocol and final decision and rule.
# TYPE egressd_flows_total counter
egressd_flows_total{listener="proxy",proto="http",decision="deny",rule="builtin:sniff_timeout"} 1
egressd_flows_total{listener="transparent",proto="tcp",decision="deny",rule="default"} 1
egressd_flows_total{listener="transparent",proto="tls",decision="allow",rule="github"} 3
# HELP egressd_guard_denials_total Flows and requests refused by the built-in address guard, by address class.
# TYPE egressd_guard_denials_total counter
egressd_guard_denials_total{class="broadcast"} 0
egressd_guard_denials_total{class="cloud_metadata"} 1
egressd_guard_denials_total{class="ipv4_embedded"} 0
egressd_guard_denials_total{class="link_local"} 0
egressd_guard_denials_total{class="loopback"} 0
egressd_guard_denials_total{class="multicast"} 0
egressd_guard_denials_total{class="own_host"} 0
egressd_guard_denials_total{class="private"} 0
egressd_guard_denials_total{class="unspecified"} 0
# HELP egressd_http_requests_total HTTP/1 and h2c requests judged by the policy, by decision.
# TYPE egressd_http_requests_total counter
egressd_http_requests_total{proto="h2c",decision="audit_deny"} 1
egressd_http_requests_total{proto="http",decision="deny"} 2
# HELP egressd_upstream_connect_failures_total Upstream connections that could not be established, by reason.
# TYPE egressd_upstream_connect_failures_total counter
egressd_upstream_connect_failures_total{reason="other"} 0
egressd_upstream_connect_failures_total{reason="refused"} 1
egressd_upstream_connect_failures_total{reason="reset"} 0
egressd_upstream_connect_failures_total{reason="resolve"} 0
egressd_upstream_connect_failures_total{reason="timeout"} 0
egressd_upstream_connect_failures_total{reason="unreachable"} 0
)";

std::chrono::system_clock::time_point epoch_ms(std::int64_t ms) {
  return std::chrono::system_clock::time_point{std::chrono::milliseconds{ms}};
}

// Two workers update their own shards on their own threads; the render
// sums them. Listener 0 = transparent, 1 = proxy (config order, not sorted).
std::unique_ptr<Registry> make_populated() {
  auto owned =
      std::make_unique<Registry>(2, std::vector<std::string>{"transparent", "proxy"}, "1.2.3");
  Registry& reg = *owned;
  std::thread a([&] {
    auto& w = reg.worker(0);
    for (int i = 0; i < 3; ++i) w.flow_opened(0);
    w.flow_closed(0, Proto::tls, Decision::allow, "github", 3ms);
    w.flow_closed(0, Proto::tcp, Decision::deny, "default", 2s);
    w.add_bytes(0, 100, 0);
    w.add_bytes(0, 0, 2000);
    w.http_request(Proto::http, Decision::deny);
    w.upstream_connect_failed(ConnectFailure::refused);
    w.guard_denied(metrics::GuardClass::cloud_metadata);
  });
  std::thread b([&] {
    auto& w = reg.worker(1);
    w.flow_opened(1);
    w.flow_closed(1, Proto::http, Decision::deny, "builtin:sniff_timeout", 5s);
    w.add_bytes(1, 5, 0);
    w.flow_opened(0);
    w.flow_closed(0, Proto::tls, Decision::allow, "github", 40s);
    w.flow_opened(0);
    w.flow_closed(0, Proto::tls, Decision::allow, "github", std::chrono::hours(24 * 7));
    w.http_request(Proto::http, Decision::deny);
    w.http_request(Proto::h2c, Decision::audit_deny);
    w.flow_opened(7);  // unknown listener: ignored
    w.add_bytes(7, 1, 1);
  });
  a.join();
  b.join();
  reg.dns_query(DnsResult::success);
  reg.dns_query(DnsResult::nxdomain);
  reg.dns_query(DnsResult::success);
  reg.config_loaded(1, epoch_ms(1'700'000'000'500));
  reg.reload_failed();
  reg.reload_succeeded(2, epoch_ms(1'700'000'100'250));
  reg.set_access_log_dropped_source([] { return std::uint64_t{7}; });
  reg.set_flows_limit(9456);
  return owned;
}

TEST(Registry, RenderMatchesExpectedText) {
  const auto reg = make_populated();
  std::string out;
  reg->render_egressd(out);
  EXPECT_EQ(out, kExpected);
}

TEST(Registry, RenderIncludesProcessMetrics) {
  const Registry reg(1, {"l"}, "v");
  const std::string out = reg.render();
  for (const char* name : {"process_cpu_seconds_total ", "process_resident_memory_bytes ",
                           "process_virtual_memory_bytes ", "process_open_fds ", "process_max_fds ",
                           "process_start_time_seconds "}) {
    EXPECT_NE(out.find(std::string("\n") + name), std::string::npos) << name;
    EXPECT_NE(out.find(std::string("# TYPE ") + name), std::string::npos) << name;
  }
}

TEST(Registry, LabelValuesAreEscaped) {
  struct Case {
    std::string in;
    std::string out;
  };
  const Case cases[] = {
      {"plain", "plain"},  {R"(a"b)", R"(a\"b)"},   {R"(a\b)", R"(a\\b)"},
      {"a\nb", R"(a\nb)"}, {"\\\"\n", R"(\\\"\n)"}, {"tab\tstays", "tab\tstays"},
  };
  for (const auto& c : cases) {
    std::string s;
    append_label_value(s, c.in);
    EXPECT_EQ(s, c.out);
  }
  Registry reg(1, {"l"}, "v\"1");
  reg.worker(0).flow_opened(0);
  reg.worker(0).flow_closed(0, Proto::tcp, Decision::deny, "odd \"rule\"\\\nname", 1ms);
  std::string out;
  reg.render_egressd(out);
  EXPECT_NE(out.find(R"(egressd_build_info{version="v\"1"} 1)"), std::string::npos);
  EXPECT_NE(out.find(R"(rule="odd \"rule\"\\\nname"} 1)"), std::string::npos) << out;
}

TEST(Registry, ValueFormatting) {
  struct Case {
    double v;
    const char* text;
  };
  const Case cases[] = {{0, "0"},
                        {0.005, "0.005"},
                        {1, "1"},
                        {3600, "3600"},
                        {42.003, "42.003"},
                        {std::numeric_limits<double>::infinity(), "+Inf"},
                        {-std::numeric_limits<double>::infinity(), "-Inf"},
                        {std::numeric_limits<double>::quiet_NaN(), "NaN"}};
  for (const auto& c : cases) {
    std::string s;
    append_value(s, c.v);
    EXPECT_EQ(s, c.text);
  }
}

// A rule renamed by a reload keeps its old series; both are reported.
TEST(Registry, RulesFromSeveralGenerationsKeepTheirSeries) {
  Registry reg(1, {"l"}, "v");
  auto& w = reg.worker(0);
  for (const char* rule : {"old-name", "new-name", "new-name"}) {
    w.flow_opened(0);
    w.flow_closed(0, Proto::tls, Decision::allow, rule, 1ms);
  }
  std::string out;
  reg.render_egressd(out);
  EXPECT_NE(out.find(R"(rule="new-name"} 2)"), std::string::npos);
  EXPECT_NE(out.find(R"(rule="old-name"} 1)"), std::string::npos);
}

// Scrapes run while workers update: totals at the end are exact and each
// scrape sees counters that never go backwards. Meant for TSan too.
TEST(Registry, ConcurrentUpdatesAndScrapes) {
  Registry reg(2, {"l"}, "v");
  constexpr int kFlows = 5000;
  std::atomic<bool> done{false};
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < 2; ++t) {
    workers.emplace_back([&, t] {
      auto& w = reg.worker(t);
      for (int i = 0; i < kFlows; ++i) {
        w.flow_opened(0);
        w.add_bytes(0, 10, 1);
        w.flow_closed(0, Proto::tcp, Decision::allow, i % 2 == 0 ? "a" : "b", 1ms);
      }
    });
  }
  std::thread scraper([&] {
    std::uint64_t last = 0;
    while (!done.load()) {
      std::string out;
      reg.render_egressd(out);
      const std::string key = "egressd_flow_duration_seconds_count{listener=\"l\"} ";
      const auto pos = out.find(key);
      ASSERT_NE(pos, std::string::npos);
      const auto n = std::stoull(out.substr(pos + key.size()));
      EXPECT_GE(n, last);
      last = n;
    }
  });
  for (auto& t : workers) t.join();
  done = true;
  scraper.join();
  std::string out;
  reg.render_egressd(out);
  EXPECT_NE(out.find("egressd_flow_duration_seconds_count{listener=\"l\"} 10000\n"),
            std::string::npos);
  EXPECT_NE(out.find("egressd_flow_bytes_total{listener=\"l\",direction=\"up\"} 100000\n"),
            std::string::npos);
  EXPECT_NE(out.find("egressd_flows_active{listener=\"l\"} 0\n"), std::string::npos);
  EXPECT_NE(out.find(R"(rule="a"} 5000)"), std::string::npos);
}

// A reload adds listeners: a new name gets the next index, a known name
// (a listener changed in place) its old one, and both have series at once.
TEST(Registry, ReloadAddsListenersKnownNamesKeepTheirIndex) {
  Registry reg(2, {"a", "b"}, "v");
  EXPECT_EQ(reg.add_listener("b"), 1U);
  EXPECT_EQ(reg.add_listener("c"), 2U);
  EXPECT_EQ(reg.add_listener("c"), 2U);
  EXPECT_EQ(reg.listeners(), (std::vector<std::string>{"a", "b", "c"}));
  reg.worker(1).flow_opened(2);
  reg.worker(1).add_bytes(2, 3, 4);
  reg.worker(0).flow_opened(7);  // not a listener: ignored
  std::string out;
  reg.render_egressd(out);
  EXPECT_NE(out.find("egressd_flows_active{listener=\"c\"} 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("egressd_flow_bytes_total{listener=\"c\",direction=\"up\"} 3\n"),
            std::string::npos);
  reg.worker(1).flow_closed(2, Proto::tcp, Decision::allow, "r", 1ms);
  out.clear();
  reg.render_egressd(out);
  EXPECT_NE(out.find("egressd_flows_active{listener=\"c\"} 0\n"), std::string::npos);
  EXPECT_NE(
      out.find(R"(egressd_flows_total{listener="c",proto="tcp",decision="allow",rule="r"} 1)"),
      std::string::npos)
      << out;
}

// Listeners added while workers count and a scraper renders (the chunks
// never move): counts stay exact. Meant for TSan and ASan too.
TEST(Registry, ListenersAddedWhileWorkersCount) {
  Registry reg(2, {"l0"}, "v");
  constexpr std::size_t kAdded = 40;  // more than two chunks
  std::atomic<std::size_t> known{1};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 2; ++t) {
    threads.emplace_back([&, t] {
      auto& w = reg.worker(t);
      while (!done.load()) {
        const std::size_t n = known.load();
        for (std::size_t l = 0; l < n; ++l) w.add_bytes(l, 1, 0);
      }
      for (std::size_t l = 0; l <= kAdded; ++l) w.add_bytes(l, 1000, 0);
    });
  }
  std::thread scraper([&] {
    while (!done.load()) {
      std::string out;
      reg.render_egressd(out);
    }
  });
  for (std::size_t i = 1; i <= kAdded; ++i) {
    ASSERT_EQ(reg.add_listener("l" + std::to_string(i)), i);
    known.store(i + 1);
    std::this_thread::sleep_for(100us);
  }
  done = true;
  for (auto& t : threads) t.join();
  scraper.join();
  std::string out;
  reg.render_egressd(out);
  const std::string key = "egressd_flow_bytes_total{listener=\"l40\",direction=\"up\"} ";
  const auto pos = out.find(key);
  ASSERT_NE(pos, std::string::npos) << out;
  EXPECT_GE(std::stoull(out.substr(pos + key.size())), 2000U);
}

TEST(Registry, ListenerNamesAreCapped) {
  Registry reg(1, {}, "v");
  for (std::size_t i = 0; i < WorkerMetrics::kMaxListeners; ++i) {
    ASSERT_EQ(reg.add_listener("l" + std::to_string(i)), i);
  }
  EXPECT_EQ(reg.add_listener("one-too-many"), std::nullopt);
  EXPECT_EQ(reg.add_listener("l5"), 5U);
}

int promtool_check(const std::string& text) {
  FILE* p = ::popen("promtool check metrics >/dev/null 2>&1", "w");
  if (p == nullptr) return -1;
  std::fwrite(text.data(), 1, text.size(), p);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Registry, PromtoolAcceptsTheOutput) {
  if (!std::filesystem::exists("/usr/bin/promtool")) GTEST_SKIP() << "promtool not installed";
  const auto reg = make_populated();
  reg->worker(0).flow_opened(0);
  reg->worker(0).flow_closed(0, Proto::tcp, Decision::deny, "we\"ird\\\nrule", 1ms);
  EXPECT_EQ(promtool_check(reg->render()), 0) << reg->render();
  // An empty registry (no flows yet) is valid too.
  EXPECT_EQ(promtool_check(Registry(1, {"l"}, "v").render()), 0);
  // And the check can fail: a counter without _total is a lint problem.
  EXPECT_NE(promtool_check("# HELP x_bytes b\n# TYPE x_bytes counter\nx_bytes 1\n"), 0);
}

}  // namespace
}  // namespace egressd::metrics
