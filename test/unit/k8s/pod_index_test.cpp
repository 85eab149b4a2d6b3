#include "egressd/k8s/pod_index.hpp"

#include <cctype>
#include <string>
#include <vector>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace egressd::k8s {
namespace {

namespace json = boost::json;
using ::testing::ElementsAre;
using ::testing::Pair;

IpAddress ip(std::string_view text) {
  return *IpAddress::parse(text);
}

// A Pod object as the API returns it.
struct PodSpec {
  std::string ns = "default";
  std::string name = "web";
  std::string phase = "Running";
  std::vector<std::string> ips = {"10.0.0.1"};
  bool pod_ips_field = true;  // false: only status.podIP
  bool host_network = false;
  std::string service_account = "sa";
  json::object labels = {{"app", "web"}};
};

json::value pod(const PodSpec& p) {
  json::object status{{"phase", p.phase}};
  if (!p.ips.empty()) {
    status["podIP"] = p.ips.front();
    if (p.pod_ips_field) {
      json::array list;
      for (const auto& a : p.ips) list.push_back(json::object{{"ip", a}});
      status["podIPs"] = std::move(list);
    }
  }
  json::object spec{{"serviceAccountName", p.service_account}, {"containers", json::array{}}};
  if (p.host_network) spec["hostNetwork"] = true;
  return json::object{
      {"kind", "Pod"},
      {"apiVersion", "v1"},
      {"metadata", json::object{{"name", p.name},
                                {"namespace", p.ns},
                                {"uid", p.ns + "-" + p.name},
                                {"resourceVersion", "7"},
                                {"labels", p.labels}}},
      {"spec", std::move(spec)},
      {"status", std::move(status)},
  };
}

json::value ns_object(const std::string& name, json::object labels) {
  return json::object{{"kind", "Namespace"},
                      {"apiVersion", "v1"},
                      {"metadata", json::object{{"name", name}, {"labels", std::move(labels)}}},
                      {"status", json::object{{"phase", "Active"}}}};
}

// --- Which pods hold their IPs: one table ---------------------------------

struct HoldCase {
  const char* what;
  PodSpec pod;
  std::vector<const char*> held;  // addresses that must map to the pod
  std::vector<const char*> not_held;
  std::size_t pods;  // snapshot.pods()
};

class HoldTest : public ::testing::TestWithParam<HoldCase> {};

TEST_P(HoldTest, HoldsExactlyTheseAddresses) {
  const auto& c = GetParam();
  PodIndex index;
  ASSERT_TRUE(index.apply_pod(EventType::added, pod(c.pod)));
  const auto snap = index.snapshot();
  EXPECT_EQ(snap->pods(), c.pods);
  for (const char* a : c.held) {
    const auto id = snap->find(ip(a));
    ASSERT_NE(id, nullptr) << a;
    EXPECT_EQ(id->pod, c.pod.name);
  }
  for (const char* a : c.not_held) EXPECT_EQ(snap->find(ip(a)), nullptr) << a;
}

PodSpec with(PodSpec p, auto&& change) {
  change(p);
  return p;
}

INSTANTIATE_TEST_SUITE_P(
    Phases, HoldTest,
    ::testing::Values(
        HoldCase{"running", {}, {"10.0.0.1"}, {"10.0.0.2"}, 1},
        HoldCase{"pending with an IP",
                 with(PodSpec{}, [](PodSpec& p) { p.phase = "Pending"; }),
                 {"10.0.0.1"},
                 {},
                 1},
        HoldCase{"pending without an IP",
                 with(PodSpec{},
                      [](PodSpec& p) {
                        p.phase = "Pending";
                        p.ips.clear();
                      }),
                 {},
                 {"10.0.0.1"},
                 0},
        HoldCase{"succeeded",
                 with(PodSpec{}, [](PodSpec& p) { p.phase = "Succeeded"; }),
                 {},
                 {"10.0.0.1"},
                 0},
        HoldCase{
            "failed", with(PodSpec{}, [](PodSpec& p) { p.phase = "Failed"; }), {}, {"10.0.0.1"}, 0},
        HoldCase{"unknown phase",
                 with(PodSpec{}, [](PodSpec& p) { p.phase = "Unknown"; }),
                 {},
                 {"10.0.0.1"},
                 0},
        HoldCase{
            "no phase", with(PodSpec{}, [](PodSpec& p) { p.phase = ""; }), {}, {"10.0.0.1"}, 0},
        HoldCase{"hostNetwork",
                 with(PodSpec{}, [](PodSpec& p) { p.host_network = true; }),
                 {},
                 {"10.0.0.1"},
                 0},
        HoldCase{"dual stack",
                 with(PodSpec{},
                      [](PodSpec& p) {
                        p.ips = {"10.0.0.1", "fd00::1"};
                      }),
                 {"10.0.0.1", "fd00::1"},
                 {"fd00::2"},
                 1},
        HoldCase{"podIP only",
                 with(PodSpec{},
                      [](PodSpec& p) {
                        p.ips = {"fd00::7"};
                        p.pod_ips_field = false;
                      }),
                 {"fd00::7"},
                 {},
                 1},
        HoldCase{"IPv4-mapped IPv6 is the IPv4 address",
                 with(PodSpec{}, [](PodSpec& p) { p.ips = {"::ffff:10.0.0.9"}; }),
                 {"10.0.0.9", "::ffff:10.0.0.9"},
                 {},
                 1},
        HoldCase{"garbage address ignored, the valid one held",
                 with(PodSpec{},
                      [](PodSpec& p) {
                        p.ips = {"not-an-ip", "10.0.0.3"};
                      }),
                 {"10.0.0.3"},
                 {},
                 1},
        HoldCase{"only garbage: holds nothing",
                 with(PodSpec{}, [](PodSpec& p) { p.ips = {"300.1.1.1"}; }),
                 {},
                 {},
                 0}),
    [](const auto& param_info) {
      std::string n = param_info.param.what;
      for (auto& ch : n) {
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      }
      return n;
    });

// --- The identity a lookup gets ---------------------------------------------

TEST(PodIndex, IdentityCarriesPodAndNamespaceFields) {
  PodIndex index;
  index.apply_namespace(EventType::added, ns_object("payments", {{"team", "billing"}}));
  PodSpec p;
  p.ns = "payments";
  p.name = "api-1";
  p.labels = {{"tier", "backend"}, {"app", "api"}};
  p.service_account = "api-sa";
  index.apply_pod(EventType::added, pod(p));
  const auto id = index.snapshot()->find(ip("10.0.0.1"));
  ASSERT_NE(id, nullptr);
  EXPECT_EQ(id->namespace_name, "payments");
  EXPECT_EQ(id->pod, "api-1");
  EXPECT_EQ(id->service_account, "api-sa");
  EXPECT_THAT(id->labels, ElementsAre(Pair("app", "api"), Pair("tier", "backend")));
  EXPECT_THAT(id->namespace_labels, ElementsAre(Pair("kubernetes.io/metadata.name", "payments"),
                                                Pair("team", "billing")));
}

TEST(PodIndex, UnknownNamespaceGivesOnlyTheNameLabelThenLabelsArriveLater) {
  PodIndex index;
  PodSpec p;
  p.ns = "payments";
  index.apply_pod(EventType::added, pod(p));
  auto before = index.snapshot()->find(ip("10.0.0.1"));
  ASSERT_NE(before, nullptr);
  EXPECT_THAT(before->namespace_labels,
              ElementsAre(Pair("kubernetes.io/metadata.name", "payments")));

  index.apply_namespace(EventType::added, ns_object("payments", {{"team", "billing"}}));
  auto after = index.snapshot()->find(ip("10.0.0.1"));
  ASSERT_NE(after, nullptr);
  EXPECT_THAT(after->namespace_labels, ElementsAre(Pair("kubernetes.io/metadata.name", "payments"),
                                                   Pair("team", "billing")));
  // The earlier identity is immutable: holders keep what they saw.
  EXPECT_EQ(before->namespace_labels.size(), 1U);

  index.apply_namespace(EventType::modified, ns_object("payments", {{"team", "ops"}}));
  EXPECT_EQ(*find_label(index.snapshot()->find(ip("10.0.0.1"))->namespace_labels, "team"), "ops");

  index.apply_namespace(EventType::deleted, ns_object("payments", {}));
  EXPECT_THAT(index.snapshot()->find(ip("10.0.0.1"))->namespace_labels,
              ElementsAre(Pair("kubernetes.io/metadata.name", "payments")));
}

TEST(PodIndex, NamespaceNameLabelCannotBeForged) {
  PodIndex index;
  index.apply_namespace(EventType::added,
                        ns_object("dev", {{"kubernetes.io/metadata.name", "payments"}}));
  PodSpec p;
  p.ns = "dev";
  index.apply_pod(EventType::added, pod(p));
  EXPECT_THAT(index.snapshot()->find(ip("10.0.0.1"))->namespace_labels,
              ElementsAre(Pair("kubernetes.io/metadata.name", "dev")));
}

TEST(PodIndex, NamespaceChangeTouchesOnlyItsOwnPods) {
  PodIndex index;
  PodSpec a;
  a.ns = "a";
  PodSpec b;
  b.ns = "ab";  // a prefix of "a" must not be taken for it
  b.ips = {"10.0.0.2"};
  index.apply_pod(EventType::added, pod(a));
  index.apply_pod(EventType::added, pod(b));
  const auto b_before = index.snapshot()->find(ip("10.0.0.2"));
  index.apply_namespace(EventType::added, ns_object("a", {{"x", "y"}}));
  const auto snap = index.snapshot();
  EXPECT_EQ(snap->find(ip("10.0.0.2")), b_before);  // same object, not rebuilt
  EXPECT_NE(find_label(snap->find(ip("10.0.0.1"))->namespace_labels, "x"), nullptr);
}

// --- Changes, deletion, reuse -------------------------------------------------

TEST(PodIndex, PodFinishingOrDeletedReleasesItsIpAtOnce) {
  for (const char* phase : {"Succeeded", "Failed"}) {
    PodIndex index;
    PodSpec p;
    index.apply_pod(EventType::added, pod(p));
    ASSERT_NE(index.snapshot()->find(ip("10.0.0.1")), nullptr);
    p.phase = phase;
    index.apply_pod(EventType::modified, pod(p));
    EXPECT_EQ(index.snapshot()->find(ip("10.0.0.1")), nullptr) << phase;
    EXPECT_EQ(index.snapshot()->pods(), 0U);
  }
  PodIndex index;
  index.apply_pod(EventType::added, pod(PodSpec{}));
  index.apply_pod(EventType::deleted, pod(PodSpec{}));
  EXPECT_EQ(index.snapshot()->find(ip("10.0.0.1")), nullptr);
  EXPECT_EQ(index.known_pods(), 0U);
}

TEST(PodIndex, DeletedThenReusedByPodOfAnotherNamespaceNeverInheritsIdentity) {
  PodIndex index;
  index.apply_namespace(EventType::added, ns_object("payments", {{"team", "billing"}}));
  index.apply_namespace(EventType::added, ns_object("dev", {}));
  PodSpec old_pod;
  old_pod.ns = "payments";
  old_pod.name = "api";
  old_pod.labels = {{"app", "api"}};
  index.apply_pod(EventType::added, pod(old_pod));
  const auto held = index.snapshot()->find(ip("10.0.0.1"));
  ASSERT_NE(held, nullptr);

  index.apply_pod(EventType::deleted, pod(old_pod));
  const auto between = index.snapshot();
  EXPECT_EQ(between->find(ip("10.0.0.1")), nullptr);

  PodSpec new_pod;
  new_pod.ns = "dev";
  new_pod.name = "api";  // same name, other namespace
  new_pod.labels = {{"app", "other"}};
  index.apply_pod(EventType::added, pod(new_pod));
  const auto id = index.snapshot()->find(ip("10.0.0.1"));
  ASSERT_NE(id, nullptr);
  EXPECT_EQ(id->namespace_name, "dev");
  EXPECT_THAT(id->labels, ElementsAre(Pair("app", "other")));
  EXPECT_THAT(id->namespace_labels, ElementsAre(Pair("kubernetes.io/metadata.name", "dev")));
  // The snapshot taken in between still says nothing for the IP.
  EXPECT_EQ(between->find(ip("10.0.0.1")), nullptr);
}

TEST(PodIndex, TwoLivePodsClaimingOneIpMapToNothingUntilOneLetsGo) {
  PodIndex index;
  PodSpec a;
  a.name = "a";
  a.ips = {"10.0.0.1", "fd00::1"};
  PodSpec b;
  b.name = "b";
  b.ns = "other";
  b.ips = {"10.0.0.1"};
  index.apply_pod(EventType::added, pod(a));
  index.apply_pod(EventType::added, pod(b));
  auto snap = index.snapshot();
  EXPECT_EQ(snap->find(ip("10.0.0.1")), nullptr);
  ASSERT_NE(snap->find(ip("fd00::1")), nullptr);  // a's other IP is its alone
  EXPECT_EQ(snap->find(ip("fd00::1"))->pod, "a");
  EXPECT_EQ(snap->pods(), 2U);
  EXPECT_EQ(snap->addresses(), 1U);

  // a finishes: b alone holds the IP now.
  a.phase = "Succeeded";
  index.apply_pod(EventType::modified, pod(a));
  snap = index.snapshot();
  ASSERT_NE(snap->find(ip("10.0.0.1")), nullptr);
  EXPECT_EQ(snap->find(ip("10.0.0.1"))->pod, "b");
  EXPECT_EQ(snap->find(ip("fd00::1")), nullptr);
}

TEST(PodIndex, AmbiguityEndsWhenTheOtherPodsIpChanges) {
  PodIndex index;
  PodSpec a;
  a.name = "a";
  PodSpec b;
  b.name = "b";
  index.apply_pod(EventType::added, pod(a));
  index.apply_pod(EventType::added, pod(b));
  EXPECT_EQ(index.snapshot()->find(ip("10.0.0.1")), nullptr);
  b.ips = {"10.0.0.2"};
  index.apply_pod(EventType::modified, pod(b));
  auto snap = index.snapshot();
  EXPECT_EQ(snap->find(ip("10.0.0.1"))->pod, "a");
  EXPECT_EQ(snap->find(ip("10.0.0.2"))->pod, "b");
}

TEST(PodIndex, ModifiedLabelsMakeANewIdentity) {
  PodIndex index;
  PodSpec p;
  index.apply_pod(EventType::added, pod(p));
  const auto before = index.snapshot()->find(ip("10.0.0.1"));
  p.labels = {{"app", "relabelled"}};
  index.apply_pod(EventType::modified, pod(p));
  const auto after = index.snapshot()->find(ip("10.0.0.1"));
  EXPECT_EQ(*find_label(before->labels, "app"), "web");
  EXPECT_EQ(*find_label(after->labels, "app"), "relabelled");
}

TEST(PodIndex, RelistReplacesEverything) {
  PodIndex index;
  PodSpec keep;
  keep.name = "keep";
  PodSpec gone;
  gone.name = "gone";
  gone.ips = {"10.0.0.2"};
  index.apply_pod(EventType::added, pod(keep));
  index.apply_pod(EventType::added, pod(gone));
  ASSERT_EQ(index.snapshot()->pods(), 2U);

  keep.labels = {{"app", "v2"}};
  std::vector<PodRecord> list;
  list.push_back(*parse_pod(pod(keep)));
  index.replace_pods(std::move(list));
  const auto snap = index.snapshot();
  EXPECT_EQ(snap->pods(), 1U);
  EXPECT_EQ(snap->find(ip("10.0.0.2")), nullptr);
  EXPECT_EQ(*find_label(snap->find(ip("10.0.0.1"))->labels, "app"), "v2");
  EXPECT_EQ(index.known_pods(), 1U);
}

TEST(PodIndex, NamespaceRelistDropsAbsentNamespaces) {
  PodIndex index;
  index.apply_namespace(EventType::added, ns_object("default", {{"x", "1"}}));
  index.apply_pod(EventType::added, pod(PodSpec{}));
  EXPECT_NE(find_label(index.snapshot()->find(ip("10.0.0.1"))->namespace_labels, "x"), nullptr);
  index.replace_namespaces({});
  EXPECT_THAT(index.snapshot()->find(ip("10.0.0.1"))->namespace_labels,
              ElementsAre(Pair("kubernetes.io/metadata.name", "default")));
  EXPECT_EQ(index.known_namespaces(), 0U);
}

TEST(PodIndex, SnapshotIsReusedUntilSomethingChanges) {
  PodIndex index;
  index.apply_pod(EventType::added, pod(PodSpec{}));
  const auto a = index.snapshot();
  EXPECT_EQ(index.snapshot(), a);
  index.erase_pod("default", "absent");  // no such pod: no change
  EXPECT_EQ(index.snapshot(), a);
  index.apply_pod(EventType::modified, pod(PodSpec{}));
  EXPECT_NE(index.snapshot(), a);
}

TEST(PodIndex, EmptyIndexFindsNothing) {
  PodIndex index;
  const auto snap = index.snapshot();
  EXPECT_EQ(snap->pods(), 0U);
  EXPECT_EQ(snap->find(ip("10.0.0.1")), nullptr);
  EXPECT_EQ(snap->find(ip("::")), nullptr);
}

TEST(PodIndex, MalformedObjectsAreRefusedAndChangeNothing) {
  PodIndex index;
  index.apply_pod(EventType::added, pod(PodSpec{}));
  const auto snap = index.snapshot();
  for (const char* text :
       {R"(null)", R"([])", R"({"kind":"Pod"})", R"({"metadata":{"name":"x"}})",
        R"({"metadata":{"namespace":"default"}})", R"({"metadata":{"name":1,"namespace":"d"}})",
        R"({"metadata":{"name":"x","namespace":"a/b"}})"}) {
    EXPECT_FALSE(index.apply_pod(EventType::deleted, json::parse(text))) << text;
    EXPECT_FALSE(index.apply_pod(EventType::added, json::parse(text))) << text;
  }
  EXPECT_FALSE(index.apply_namespace(EventType::added, json::parse(R"({"metadata":{}})")));
  EXPECT_EQ(index.snapshot(), snap);
}

TEST(PodIndex, OddFieldTypesAreTreatedAsAbsent) {
  // Labels with non-string values, hostNetwork not a bool, podIPs not a list.
  const auto v = json::parse(R"({"metadata":{"name":"p","namespace":"n","labels":{"a":"1","b":2}},
      "spec":{"hostNetwork":"yes"},
      "status":{"phase":"Running","podIPs":"10.0.0.5","podIP":"10.0.0.6"}})");
  const auto rec = parse_pod(v);
  ASSERT_TRUE(rec);
  EXPECT_THAT(rec->labels, ElementsAre(Pair("a", "1")));
  EXPECT_THAT(rec->ips, ElementsAre(ip("10.0.0.6")));
}

TEST(PodIndex, ManyPodsLookups) {
  PodIndex index;
  std::vector<PodRecord> list;
  for (int i = 0; i < 2000; ++i) {
    PodSpec p;
    p.name = "p" + std::to_string(i);
    p.ips = {"10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256),
             "fd00::" + std::to_string(i + 1)};
    list.push_back(*parse_pod(pod(p)));
  }
  index.replace_pods(std::move(list));
  const auto snap = index.snapshot();
  EXPECT_EQ(snap->pods(), 2000U);
  EXPECT_EQ(snap->addresses(), 4000U);
  EXPECT_EQ(snap->find(ip("10.1.7.207"))->pod, "p1999");
  EXPECT_EQ(snap->find(ip("fd00::2000"))->pod, "p1999");
}

}  // namespace
}  // namespace egressd::k8s
