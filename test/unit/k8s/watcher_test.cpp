// The watcher against test/k8s/fake_apiserver.py over real HTTPS: a
// kubeconfig with the server's test CA and token, loaded by client_config.

#include "egressd/k8s/watcher.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fake_apiserver.hpp"

namespace egressd::k8s {
namespace {

using namespace std::chrono_literals;
using test::FakeApiServer;

IpAddress ip(std::string_view text) {
  return *IpAddress::parse(text);
}

// Polls `pred` until it holds or `limit` passes.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit = 5s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(10ms);
  }
  return pred();
}

// A watcher on `server`'s kubeconfig (or `kubeconfig`), recording the
// snapshots it publishes.
class Harness {
 public:
  // A generous request timeout: the machine may be busy building.
  explicit Harness(const std::string& kubeconfig, std::size_t page_size = 500,
                   std::chrono::milliseconds stall = 0ms,
                   std::chrono::milliseconds request_timeout = 5s) {
    auto cfg = load_kubeconfig(kubeconfig);
    if (!cfg.ok()) throw std::runtime_error(cfg.error);
    WatcherOptions o;
    o.client = *cfg.config;
    o.on_snapshot = [this](IdentitySnapshotPtr s) {
      std::lock_guard lock(mu_);
      last_ = std::move(s);
      ++published_;
    };
    o.watch_timeout = 30s;
    o.request_timeout = request_timeout;
    o.stall_timeout = stall;
    o.backoff_initial = 20ms;
    o.backoff_max = 200ms;
    o.page_size = page_size;
    watcher_ = std::make_unique<Watcher>(std::move(o));
  }

  Watcher& watcher() { return *watcher_; }
  IdentitySnapshotPtr last() {
    std::lock_guard lock(mu_);
    return last_;
  }
  int published() {
    std::lock_guard lock(mu_);
    return published_;
  }
  PodIdentityPtr find(std::string_view a) {
    const auto s = last();
    return s ? s->find(ip(a)) : nullptr;
  }
  // Until `a` maps to pod `name` ("" = to nothing).
  bool holds(std::string_view a, const std::string& name) {
    return eventually([&] {
      const auto id = find(a);
      return name.empty() ? id == nullptr : (id != nullptr && id->pod == name);
    });
  }
  std::uint64_t restarts(Resource r, RestartReason why) { return watcher_->restarts(r, why); }

 private:
  std::mutex mu_;
  IdentitySnapshotPtr last_;
  int published_ = 0;
  std::unique_ptr<Watcher> watcher_;
};

TEST(Watcher, ListsInPagesSyncsAndAppliesEvents) {
  FakeApiServer server;
  server.put_namespace("payments", {{"team", "billing"}});
  for (int i = 0; i < 5; ++i) {
    server.put_pod("payments", "api-" + std::to_string(i),
                   {"10.0.0." + std::to_string(i + 1), "fd00::" + std::to_string(i + 1)},
                   {{"app", "api"}});
  }
  server.put_pod("default", "pending", {}, {}, "Pending");
  Harness h(server.kubeconfig(), /*page_size=*/2);
  ASSERT_TRUE(eventually([&] { return h.watcher().synced(); }));
  ASSERT_NE(h.last(), nullptr);
  EXPECT_EQ(h.last()->pods(), 5U);
  EXPECT_EQ(server.requests("list pods"), 3);  // 6 pods in pages of 2
  const auto id = h.find("10.0.0.3");
  ASSERT_NE(id, nullptr);
  EXPECT_EQ(id->pod, "api-2");
  EXPECT_EQ(id->namespace_name, "payments");
  EXPECT_EQ(id->service_account, "api-2-sa");
  EXPECT_EQ(*find_label(id->labels, "app"), "api");
  EXPECT_EQ(*find_label(id->namespace_labels, "team"), "billing");
  EXPECT_EQ(h.find("fd00::3")->pod, "api-2");
  ASSERT_TRUE(h.watcher().data_age().has_value());

  // Watch events: a new pod, a deletion, a namespace relabelled.
  server.put_pod("default", "web", {"10.0.1.1"});
  EXPECT_TRUE(h.holds("10.0.1.1", "web"));
  server.delete_pod("payments", "api-0");
  EXPECT_TRUE(h.holds("10.0.0.1", ""));
  server.put_namespace("payments", {{"team", "ops"}});
  EXPECT_TRUE(eventually([&] {
    const auto p = h.find("10.0.0.2");
    return p != nullptr && *find_label(p->namespace_labels, "team") == "ops";
  }));
  // The Pending pod gets its IP.
  server.put_pod("default", "pending", {"10.0.1.2"}, {}, "Pending");
  EXPECT_TRUE(h.holds("10.0.1.2", "pending"));
  // Data current while both watches are open.
  EXPECT_TRUE(eventually([&] { return h.watcher().data_age() == 0ms; }));
  EXPECT_EQ(server.requests("list pods"), 3);  // no relist
  for (auto r : {Resource::pods, Resource::namespaces}) {
    for (auto why : {RestartReason::gone, RestartReason::closed, RestartReason::error,
                     RestartReason::timeout}) {
      EXPECT_EQ(h.restarts(r, why), 0U) << to_string(r) << " " << to_string(why);
    }
  }
}

TEST(Watcher, GoneRelistsAndDropsWhatTheListLacks) {
  FakeApiServer server;
  server.put_pod("a", "keep", {"10.0.0.1"});
  server.put_pod("a", "lost", {"10.0.0.2"});
  Harness h(server.kubeconfig());
  ASSERT_TRUE(eventually([&] { return h.watcher().synced(); }));
  ASSERT_TRUE(h.holds("10.0.0.2", "lost"));
  ASSERT_TRUE(eventually([&] { return server.open_watches("pods") == 1; }));

  // The deletion's event is lost (compacted away); the re-watch from the
  // old resourceVersion gets an ERROR 410 event and must relist.
  server.delete_pod("a", "lost", /*silent=*/true);
  server.control({{"op", "compact"}});
  server.control({{"op", "drop"}});
  EXPECT_TRUE(h.holds("10.0.0.2", ""));
  EXPECT_TRUE(h.holds("10.0.0.1", "keep"));
  EXPECT_GE(h.restarts(Resource::pods, RestartReason::gone), 1U);
  EXPECT_GE(h.restarts(Resource::pods, RestartReason::closed), 1U);
  EXPECT_EQ(server.requests("list pods"), 2);

  // A 410 as the HTTP status (not an event) works the same.
  const auto lists = server.requests("list namespaces");
  server.control({{"op", "gone"}, {"resource", "namespaces"}, {"mode", "status"}});
  server.control({{"op", "drop"}});
  EXPECT_TRUE(eventually([&] { return server.requests("list namespaces") == lists + 1; }));
  EXPECT_GE(h.restarts(Resource::namespaces, RestartReason::gone), 1U);
  // And the watch goes on afterwards.
  server.put_pod("b", "new", {"10.0.0.3"});
  EXPECT_TRUE(h.holds("10.0.0.3", "new"));
}

TEST(Watcher, DroppedConnectionRewatchesFromTheLastVersion) {
  FakeApiServer server;
  server.put_pod("a", "one", {"10.0.0.1"});
  Harness h(server.kubeconfig());
  ASSERT_TRUE(eventually([&] { return h.watcher().synced(); }));
  // Both watches open before the drop: a namespaces watch still on its way
  // would miss it and never be closed.
  ASSERT_TRUE(eventually(
      [&] { return server.open_watches("pods") == 1 && server.open_watches("namespaces") == 1; }));
  const auto watches = server.requests("watch pods");
  server.control({{"op", "drop"}});
  EXPECT_TRUE(eventually([&] {
    return h.restarts(Resource::pods, RestartReason::closed) >= 1 &&
           h.restarts(Resource::namespaces, RestartReason::closed) >= 1;
  }));
  EXPECT_TRUE(eventually([&] { return server.requests("watch pods") > watches; }));
  // Changes made while it was away and after: both arrive, no relist.
  server.put_pod("a", "two", {"10.0.0.2"});
  EXPECT_TRUE(h.holds("10.0.0.2", "two"));
  EXPECT_EQ(server.requests("list pods"), 1);
  EXPECT_EQ(h.restarts(Resource::pods, RestartReason::gone), 0U);
}

TEST(Watcher, BookmarksAdvanceTheVersionSoCompactionDoesNotForceARelist) {
  FakeApiServer server;
  server.put_pod("a", "one", {"10.0.0.1"});
  Harness h(server.kubeconfig());
  ASSERT_TRUE(eventually([&] { return h.watcher().synced(); }));
  ASSERT_TRUE(eventually([&] { return server.open_watches("pods") == 1; }));
  // Namespace changes move the global version past what the pods watch saw.
  server.put_namespace("x");
  server.put_namespace("y");
  server.control({{"op", "bookmark"}});
  std::this_thread::sleep_for(500ms);  // the bookmark reaches the watcher
  server.control({{"op", "compact"}});
  server.control({{"op", "drop"}});
  EXPECT_TRUE(eventually([&] { return h.restarts(Resource::pods, RestartReason::closed) >= 1; }));
  server.put_pod("a", "two", {"10.0.0.2"});
  EXPECT_TRUE(h.holds("10.0.0.2", "two"));
  EXPECT_EQ(h.restarts(Resource::pods, RestartReason::gone), 0U);
  EXPECT_EQ(server.requests("list pods"), 1);
}

TEST(Watcher, WrongTokenNeverSyncsUntilTheServerAcceptsIt) {
  FakeApiServer server("right-token");
  server.put_pod("a", "one", {"10.0.0.1"});
  std::string kc = test::read_file(server.kubeconfig());
  kc.replace(kc.find("token: right-token"), 18, "token: wrong-token");
  const std::string path = server.dir().file("wrong-kubeconfig");
  test::write_file(path, kc);
  Harness h(path);
  EXPECT_TRUE(eventually([&] { return h.restarts(Resource::pods, RestartReason::error) >= 2; }));
  EXPECT_FALSE(h.watcher().synced());
  EXPECT_FALSE(h.watcher().data_age().has_value());
  EXPECT_EQ(h.published(), 0);
  EXPECT_EQ(h.last(), nullptr);
  // The server now accepts that token (as after a rotation): it heals.
  server.control({{"op", "token"}, {"token", "wrong-token"}});
  EXPECT_TRUE(eventually([&] { return h.watcher().synced(); }));
  EXPECT_TRUE(h.holds("10.0.0.1", "one"));
}

TEST(Watcher, TokenFileIsReadForEveryRequest) {
  FakeApiServer server("first");
  server.put_pod("a", "one", {"10.0.0.1"});
  std::string kc = test::read_file(server.kubeconfig());
  const std::string token_file = server.dir().file("token");
  test::write_file(token_file, "first\n");
  kc.replace(kc.find("token: first"), 12, "tokenFile: " + token_file);
  const std::string path = server.dir().file("file-kubeconfig");
  test::write_file(path, kc);
  Harness h(path);
  ASSERT_TRUE(eventually([&] { return h.watcher().synced(); }));
  // Rotation: the server takes only the new token, the file gets it.
  server.control({{"op", "token"}, {"token", "second"}});
  test::write_file(token_file, "second\n");
  server.control({{"op", "drop"}});
  server.put_pod("a", "two", {"10.0.0.2"});
  EXPECT_TRUE(h.holds("10.0.0.2", "two"));
}

TEST(Watcher, ServerDownAfterSyncKeepsTheLastSnapshotAndAgesIt) {
  auto server = std::make_unique<FakeApiServer>();
  server->put_pod("a", "one", {"10.0.0.1"});
  Harness h(server->kubeconfig());
  ASSERT_TRUE(eventually([&] { return h.watcher().synced(); }));
  ASSERT_TRUE(h.holds("10.0.0.1", "one"));
  ASSERT_TRUE(eventually([&] { return h.watcher().data_age() == 0ms; }));
  const auto published = h.published();
  server->kill();
  EXPECT_TRUE(eventually([&] { return h.watcher().data_age() >= 300ms; }));
  EXPECT_TRUE(h.watcher().synced());
  EXPECT_EQ(h.find("10.0.0.1")->pod, "one");
  EXPECT_EQ(h.published(), published);  // nothing new, nothing emptied
  EXPECT_TRUE(eventually([&] { return h.restarts(Resource::pods, RestartReason::error) >= 2; }));
}

TEST(Watcher, StalledWatchTimesOut) {
  FakeApiServer server;
  server.put_pod("a", "one", {"10.0.0.1"});
  Harness h(server.kubeconfig(), 500, /*stall=*/300ms);
  ASSERT_TRUE(eventually([&] { return h.watcher().synced(); }));
  server.control({{"op", "stall"}, {"seconds", 2}});
  EXPECT_TRUE(eventually([&] { return h.restarts(Resource::pods, RestartReason::timeout) >= 1; }));
}

TEST(Watcher, SlowListTimesOutThenSucceeds) {
  FakeApiServer server;
  server.put_pod("a", "one", {"10.0.0.1"});
  server.control({{"op", "delay"}, {"seconds", 1.5}});  // beyond request_timeout (1 s)
  Harness h(server.kubeconfig(), 500, 0ms, /*request_timeout=*/1s);
  EXPECT_TRUE(eventually([&] { return h.restarts(Resource::pods, RestartReason::timeout) >= 1; }));
  EXPECT_FALSE(h.watcher().synced());
  server.control({{"op", "delay"}, {"seconds", 0}});
  EXPECT_TRUE(eventually([&] { return h.watcher().synced(); }, 8s));
}

TEST(Watcher, WrongCaIsRefused) {
  FakeApiServer server;
  FakeApiServer other;  // another CA
  auto cfg = load_kubeconfig(server.kubeconfig());
  ASSERT_TRUE(cfg.ok()) << cfg.error;
  cfg.config->ca_pem = test::read_file(other.dir().file("ca.crt"));
  WatcherOptions o;
  o.client = *cfg.config;
  o.backoff_initial = 20ms;
  o.backoff_max = 100ms;
  Watcher w(std::move(o));
  EXPECT_TRUE(eventually([&] { return w.restarts(Resource::pods, RestartReason::error) >= 2; }));
  EXPECT_FALSE(w.synced());
  EXPECT_EQ(server.requests("list pods"), 0);
}

TEST(Watcher, HostNameMustMatchTheCertificate) {
  FakeApiServer server;
  auto cfg = load_kubeconfig(server.kubeconfig());
  ASSERT_TRUE(cfg.ok()) << cfg.error;
  cfg.config->tls_server_name = "not-the-server.example";  // cert: 127.0.0.1, ::1, localhost
  WatcherOptions o;
  o.client = *cfg.config;
  o.backoff_initial = 20ms;
  Watcher w(std::move(o));
  EXPECT_TRUE(eventually([&] { return w.restarts(Resource::pods, RestartReason::error) >= 1; }));
  EXPECT_FALSE(w.synced());
  // The name it does carry works.
  cfg.config->tls_server_name = "localhost";
  WatcherOptions ok;
  ok.client = *cfg.config;
  Watcher good(std::move(ok));
  EXPECT_TRUE(eventually([&] { return good.synced(); }));
}

TEST(Watcher, OversizedEventIsAnErrorNotABuffer) {
  FakeApiServer server;
  auto cfg = load_kubeconfig(server.kubeconfig());
  ASSERT_TRUE(cfg.ok()) << cfg.error;
  WatcherOptions o;
  o.client = *cfg.config;
  o.max_event_bytes = 4096;
  o.backoff_initial = 20ms;
  o.backoff_max = 100ms;
  Watcher w(std::move(o));
  ASSERT_TRUE(eventually([&] { return w.synced(); }));
  ASSERT_TRUE(eventually([&] { return server.open_watches("pods") == 1; }));
  server.put_pod("a", "big", {"10.0.0.1"}, {{"blob", std::string(8192, 'x')}});
  EXPECT_TRUE(eventually([&] { return w.restarts(Resource::pods, RestartReason::error) >= 1; }));
  EXPECT_EQ(w.restarts(Resource::namespaces, RestartReason::error), 0U);
}

TEST(Watcher, StopIsPrompt) {
  FakeApiServer server;
  Harness h(server.kubeconfig());
  ASSERT_TRUE(eventually([&] { return h.watcher().synced(); }));
  const auto start = std::chrono::steady_clock::now();
  h.watcher().stop();
  h.watcher().stop();  // idempotent
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
}

}  // namespace
}  // namespace egressd::k8s
