#include "egressd/dns/host_addresses.hpp"

#include <algorithm>

#include <gtest/gtest.h>

namespace egressd::dns {
namespace {

TEST(OwnHostAddresses, IncludesLoopbackSortedWithoutDuplicates) {
  const std::vector<IpAddress> all = own_host_addresses();
  EXPECT_TRUE(std::binary_search(all.begin(), all.end(), *IpAddress::parse("127.0.0.1")));
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
  EXPECT_EQ(std::adjacent_find(all.begin(), all.end()), all.end());
}

}  // namespace
}  // namespace egressd::dns
