#include "egressd/policy/address_class.hpp"

#include <gtest/gtest.h>

#include "unit/policy/policy_test_util.hpp"

namespace egressd::policy::testing {
namespace {

TEST(AddressClass, Table) {
  struct Case {
    std::string address;
    AddressClass cls;
    std::string range;
    bool metadata = false;
  };
  const std::vector<Case> cases = {
      {"0.0.0.0", AddressClass::unspecified, "0.0.0.0/8"},
      {"0.1.2.3", AddressClass::unspecified, "0.0.0.0/8"},
      {"127.0.0.1", AddressClass::loopback, "127.0.0.0/8"},
      {"127.255.0.9", AddressClass::loopback, "127.0.0.0/8"},
      {"224.0.0.1", AddressClass::multicast, "224.0.0.0/4"},
      {"239.255.255.255", AddressClass::multicast, "224.0.0.0/4"},
      {"255.255.255.255", AddressClass::broadcast, "255.255.255.255/32"},
      {"255.255.255.254", AddressClass::global, "0.0.0.0/0"},
      {"169.254.169.254", AddressClass::link_local, "169.254.0.0/16", true},
      {"169.254.1.1", AddressClass::link_local, "169.254.0.0/16"},
      {"10.255.0.1", AddressClass::private_use, "10.0.0.0/8"},
      {"172.16.0.1", AddressClass::private_use, "172.16.0.0/12"},
      {"172.31.255.255", AddressClass::private_use, "172.16.0.0/12"},
      {"172.32.0.1", AddressClass::global, "0.0.0.0/0"},
      {"192.168.0.1", AddressClass::private_use, "192.168.0.0/16"},
      {"100.64.0.1", AddressClass::private_use, "100.64.0.0/10"},
      {"100.128.0.1", AddressClass::global, "0.0.0.0/0"},
      {"8.8.8.8", AddressClass::global, "0.0.0.0/0"},
      {"::", AddressClass::unspecified, "::/128"},
      {"::1", AddressClass::loopback, "::1/128"},
      {"::2", AddressClass::ipv4_embedded, "::/96"},
      {"::ffff:127.0.0.1", AddressClass::loopback, "127.0.0.0/8"},  // mapped = IPv4
      {"::ffff:10.0.0.1", AddressClass::private_use, "10.0.0.0/8"},
      {"ff02::1", AddressClass::multicast, "ff00::/8"},
      {"fe80::1", AddressClass::link_local, "fe80::/10"},
      {"febf::1", AddressClass::link_local, "fe80::/10"},
      {"fec0::1", AddressClass::global, "::/0"},
      {"fc00::1", AddressClass::private_use, "fc00::/7"},
      {"fdff::1", AddressClass::private_use, "fc00::/7"},
      {"2002:a00:1::1", AddressClass::ipv4_embedded, "2002::/16"},
      {"64:ff9b::808:808", AddressClass::ipv4_embedded, "64:ff9b::/96"},
      {"64:ff9b:1::1", AddressClass::ipv4_embedded, "64:ff9b:1::/48"},
      {"64:ff9b:2::1", AddressClass::global, "::/0"},
      {"2606:4700::1111", AddressClass::global, "::/0"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.address);
    const AddressClassification got = classify(ip(c.address));
    EXPECT_EQ(to_string(got.cls), to_string(c.cls));
    EXPECT_EQ(got.range.to_string(), c.range);
    EXPECT_EQ(got.cloud_metadata, c.metadata);
  }
  EXPECT_TRUE(always_denied(AddressClass::loopback));
  EXPECT_FALSE(always_denied(AddressClass::link_local));
  EXPECT_FALSE(always_denied(AddressClass::private_use));
}

}  // namespace
}  // namespace egressd::policy::testing
