#include "egressd/sniff/proxy_header.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace egressd::sniff {
namespace {

using Bytes = std::vector<std::uint8_t>;

ProxyHeaderResult parse(const Bytes& b, std::size_t n) {
  return parse_proxy_header(std::span<const std::uint8_t>(b.data(), n));
}
ProxyHeaderResult parse(const Bytes& b) {
  return parse(b, b.size());
}
Bytes text(std::string_view s) {
  return Bytes(s.begin(), s.end());
}

// A v2 header: signature, ver/cmd, fam/proto, length, then `block`.
Bytes v2(std::uint8_t ver_cmd, std::uint8_t fam, const Bytes& block) {
  Bytes out(kProxyV2Signature.begin(), kProxyV2Signature.end());
  out.push_back(ver_cmd);
  out.push_back(fam);
  out.push_back(static_cast<std::uint8_t>(block.size() >> 8U));
  out.push_back(static_cast<std::uint8_t>(block.size()));
  out.insert(out.end(), block.begin(), block.end());
  return out;
}
const Bytes kInetBlock = {10, 0, 1, 5, 140, 82, 112, 3, 0xa8, 0x52, 0x01, 0xbb};  // 43090 -> 443
Bytes inet6_block() {
  Bytes b = {0xfd, 0,    0,    0,    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
             0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  const Bytes ports = {0x30, 0x39, 0x00, 0x50};  // 12345 -> 80
  b.insert(b.end(), ports.begin(), ports.end());
  return b;
}

// Every prefix is need_more, the whole is found, and payload after it is
// not consumed.
void expect_fragmentation_safe(const Bytes& header) {
  for (std::size_t n = 0; n < header.size(); ++n) {
    const auto r = parse(header, n);
    ASSERT_EQ(r.status, Status::need_more) << "prefix " << n << ": " << r.reason;
  }
  Bytes with_payload = header;
  for (char c : std::string("\x16\x03\x01 payload"))
    with_payload.push_back(static_cast<std::uint8_t>(c));
  const auto r = parse(with_payload);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.header.bytes_consumed, header.size());
}

TEST(ProxyHeader, V1Tcp4AndTcp6) {
  const Bytes h4 = text("PROXY TCP4 10.0.1.5 140.82.112.3 43090 443\r\n");
  auto r = parse(h4);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.header.version, 1U);
  EXPECT_EQ(r.header.command, ProxyHeader::Command::proxy);
  EXPECT_EQ(r.header.family, ProxyHeader::Family::inet);
  EXPECT_EQ(r.header.source->to_string(), "10.0.1.5:43090");
  EXPECT_EQ(r.header.destination->to_string(), "140.82.112.3:443");
  expect_fragmentation_safe(h4);

  const Bytes h6 = text("PROXY TCP6 fd00::1 2001:db8::2 12345 80\r\n");
  r = parse(h6);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.header.family, ProxyHeader::Family::inet6);
  EXPECT_EQ(r.header.source->to_string(), "[fd00::1]:12345");
  EXPECT_EQ(r.header.destination->to_string(), "[2001:db8::2]:80");
  expect_fragmentation_safe(h6);

  // The longest v1 line (TCP6, full-width addresses and ports) is 104 bytes.
  const Bytes longest = text(
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
  EXPECT_EQ(parse(longest).status, Status::found);
}

TEST(ProxyHeader, V1Unknown) {
  for (std::string_view s : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"}) {
    const Bytes h = text(s);
    const auto r = parse(h);
    ASSERT_EQ(r.status, Status::found) << s;
    EXPECT_EQ(r.header.family, ProxyHeader::Family::unspec);
    EXPECT_FALSE(r.header.source);
    EXPECT_FALSE(r.header.destination);
    expect_fragmentation_safe(h);
  }
}

TEST(ProxyHeader, V1Malformed) {
  for (std::string_view s : {
           "PROXY TCP4 10.0.1.5 140.82.112.3 43090 443\n",
           "PROXY TCP4 10.0.1.5 140.82.112.3 43090 443\rX",
           "PROXY TCP4 10.0.1.5 140.82.112.3 43090 65536\r\n",
           "PROXY TCP4 10.0.1.5 140.82.112.3 043090 443\r\n",
           "PROXY TCP4 10.0.1.5 140.82.112.3 -1 443\r\n",
           "PROXY TCP4 10.0.1.5 140.82.112.3 43090\r\n",
           "PROXY TCP4 10.0.1.5 140.82.112.3 43090 443 1\r\n",
           "PROXY TCP4  10.0.1.5 140.82.112.3 43090 443\r\n",
           "PROXY TCP4 10.0.1.5 140.82.112.3 43090 443 \r\n",
           "PROXY TCP4 10.0.1.256 140.82.112.3 43090 443\r\n",
           "PROXY TCP4 fd00::1 140.82.112.3 43090 443\r\n",
           "PROXY TCP6 10.0.1.5 fd00::2 1 2\r\n",
           "PROXY TCP6 fd00::1 [fd00::2] 1 2\r\n",
           "PROXY UDP4 10.0.1.5 140.82.112.3 43090 443\r\n",
           "PROXY tcp4 10.0.1.5 140.82.112.3 43090 443\r\n",
           "PROXY UNKNOWNX\r\n",
           "PROXY \r\n",
           "PROXY TCP4 10.0.1.5\t140.82.112.3 43090 443\r\n",
       }) {
    const auto r = parse(text(s));
    EXPECT_EQ(r.status, Status::malformed) << s;
    EXPECT_FALSE(r.reason.empty()) << s;
  }
  std::string non_ascii = "PROXY TCP4 10.0.1.5 \xc3\xa9";
  EXPECT_EQ(parse(text(non_ascii)).status, Status::malformed);
  // No CRLF within 107 bytes, however the bytes arrive.
  const Bytes endless = text("PROXY UNKNOWN " + std::string(200, 'x'));
  EXPECT_EQ(parse(endless, 106).status, Status::need_more);
  EXPECT_EQ(parse(endless, 107).status, Status::malformed);
  EXPECT_EQ(parse(endless).status, Status::malformed);
  // 105 bytes + CRLF = 107: accepted; one more byte is too long.
  EXPECT_EQ(parse(text("PROXY UNKNOWN " + std::string(91, 'x') + "\r\n")).status, Status::found);
  EXPECT_EQ(parse(text("PROXY UNKNOWN " + std::string(92, 'x') + "\r\n")).status,
            Status::malformed);
}

TEST(ProxyHeader, V2Inet) {
  const Bytes h = v2(0x21, 0x11, kInetBlock);
  const auto r = parse(h);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.header.version, 2U);
  EXPECT_EQ(r.header.command, ProxyHeader::Command::proxy);
  EXPECT_EQ(r.header.family, ProxyHeader::Family::inet);
  EXPECT_EQ(r.header.source->to_string(), "10.0.1.5:43090");
  EXPECT_EQ(r.header.destination->to_string(), "140.82.112.3:443");
  EXPECT_EQ(r.header.bytes_consumed, 28U);
  expect_fragmentation_safe(h);
}

TEST(ProxyHeader, V2Inet6WithTlvs) {
  Bytes block = inet6_block();
  // PP2_TYPE_AUTHORITY "a.com", then a NOOP with an empty value.
  const Bytes tlvs = {0x02, 0x00, 0x05, 'a', '.', 'c', 'o', 'm', 0x04, 0x00, 0x00};
  block.insert(block.end(), tlvs.begin(), tlvs.end());
  const Bytes h = v2(0x21, 0x21, block);
  const auto r = parse(h);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.header.family, ProxyHeader::Family::inet6);
  EXPECT_EQ(r.header.source->to_string(), "[fd00::1]:12345");
  EXPECT_EQ(r.header.destination->to_string(), "[2001:db8::2]:80");
  EXPECT_EQ(r.header.bytes_consumed, 16U + block.size());
  expect_fragmentation_safe(h);
}

TEST(ProxyHeader, V2MappedAddressIsIpv4) {
  Bytes block(36, 0);
  block[10] = block[11] = 0xff;
  block[12] = 10;
  block[15] = 9;
  block[31] = 1;
  const auto r = parse(v2(0x21, 0x21, block));
  ASSERT_EQ(r.status, Status::found);
  EXPECT_EQ(r.header.source->to_string(), "10.0.0.9:0");
}

TEST(ProxyHeader, V2LocalAndUnspec) {
  // LOCAL: whatever follows is ignored, even junk.
  for (const Bytes& h :
       {v2(0x20, 0x00, {}), v2(0x20, 0x11, kInetBlock), v2(0x20, 0x11, {1, 2, 3})}) {
    const auto r = parse(h);
    ASSERT_EQ(r.status, Status::found) << r.reason;
    EXPECT_EQ(r.header.command, ProxyHeader::Command::local);
    EXPECT_FALSE(r.header.source);
    expect_fragmentation_safe(h);
  }
  const auto r = parse(v2(0x21, 0x00, {}));
  ASSERT_EQ(r.status, Status::found);
  EXPECT_EQ(r.header.command, ProxyHeader::Command::proxy);
  EXPECT_EQ(r.header.family, ProxyHeader::Family::unspec);
  EXPECT_FALSE(r.header.source);
  const auto unix_socket = parse(v2(0x21, 0x31, Bytes(216, 0)));
  ASSERT_EQ(unix_socket.status, Status::found);
  EXPECT_EQ(unix_socket.header.family, ProxyHeader::Family::unix_socket);
  EXPECT_FALSE(unix_socket.header.source);
}

TEST(ProxyHeader, V2Malformed) {
  Bytes tlv_overrun = kInetBlock;
  for (std::uint8_t x : Bytes{0x02, 0x00, 0x05, 'a'}) tlv_overrun.push_back(x);
  Bytes tlv_header_cut = kInetBlock;
  for (std::uint8_t x : Bytes{0x02, 0x00}) tlv_header_cut.push_back(x);
  struct Case {
    const char* what;
    Bytes bytes;
  };
  const std::vector<Case> cases = {
      {"version 1", v2(0x11, 0x11, kInetBlock)},
      {"version 3", v2(0x31, 0x11, kInetBlock)},
      {"command 2", v2(0x22, 0x11, kInetBlock)},
      {"family 4", v2(0x21, 0x41, kInetBlock)},
      {"transport 3", v2(0x21, 0x13, kInetBlock)},
      {"dgram", v2(0x21, 0x12, kInetBlock)},
      {"inet short", v2(0x21, 0x11, Bytes(11, 0))},
      {"inet6 short", v2(0x21, 0x21, kInetBlock)},
      {"unix short", v2(0x21, 0x31, Bytes(215, 0))},
      {"tlv overrun", v2(0x21, 0x11, tlv_overrun)},
      {"tlv header cut", v2(0x21, 0x11, tlv_header_cut)},
  };
  for (const auto& c : cases) {
    const auto r = parse(c.bytes);
    EXPECT_EQ(r.status, Status::malformed) << c.what;
    EXPECT_FALSE(r.reason.empty()) << c.what;
  }
  // A length beyond the cap is refused from the fixed header alone.
  Bytes big = v2(0x21, 0x11, kInetBlock);
  big[14] = 0x10;
  big[15] = 0x01;  // 4097
  EXPECT_EQ(parse(big, 16).status, Status::malformed);
  big[15] = 0x00;  // 4096: allowed, so wait for it
  EXPECT_EQ(parse(big, 16).status, Status::need_more);
}

TEST(ProxyHeader, Garbage) {
  for (std::string_view s :
       {std::string_view("GET / HTTP/1.1\r\n"), std::string_view("\x16\x03\x01"),
        std::string_view("PROXZ"), std::string_view("proxy "),
        std::string_view("\r\n\r\n\0\r\nQUIX", 12)}) {
    const auto r = parse(text(s));
    EXPECT_EQ(r.status, Status::not_this_protocol) << s;
  }
  const Bytes sig(kProxyV2Signature.begin(), kProxyV2Signature.end());
  for (std::size_t n = 0; n <= sig.size(); ++n) EXPECT_EQ(parse(sig, n).status, Status::need_more);
  const Bytes v1 = text("PROXY ");
  for (std::size_t n = 0; n <= v1.size(); ++n) EXPECT_EQ(parse(v1, n).status, Status::need_more);
}

// ---- write_proxy_v2 -------------------------------------------------------

Endpoint ep(std::string_view ip, std::uint16_t port) {
  return Endpoint{*IpAddress::parse(ip), port};
}

// What a node agent writes, parsed back: the same endpoints, exactly the
// header's bytes consumed, the payload after it left alone.
void expect_round_trip(const Endpoint& src, const Endpoint& dst, std::size_t size) {
  const ProxyV2Bytes w = write_proxy_v2(src, dst);
  ASSERT_EQ(w.size, size);
  const Bytes header(w.bytes().begin(), w.bytes().end());
  expect_fragmentation_safe(header);
  const auto r = parse(header);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.header.version, 2U);
  EXPECT_EQ(r.header.command, ProxyHeader::Command::proxy);
  ASSERT_TRUE(r.header.source && r.header.destination);
  EXPECT_EQ(*r.header.source, src);
  EXPECT_EQ(*r.header.destination, dst);
}

TEST(ProxyHeaderWriter, RoundTripsIpv4) {
  expect_round_trip(ep("10.200.1.2", 43090), ep("198.18.0.10", 443), 28);
  expect_round_trip(ep("0.0.0.0", 0), ep("255.255.255.255", 65535), 28);
}

TEST(ProxyHeaderWriter, RoundTripsIpv6) {
  expect_round_trip(ep("fd00:200:1::2", 1), ep("2001:db8::1", 65535), 52);
}

TEST(ProxyHeaderWriter, MixedFamiliesUseInet6WithMappedIpv4) {
  // Never produced by one TCP connection, but the header stays valid: the
  // IPv4 side is written mapped and read back as IPv4.
  expect_round_trip(ep("10.0.0.1", 5), ep("2001:db8::1", 80), 52);
  const ProxyV2Bytes w = write_proxy_v2(ep("10.0.0.1", 5), ep("2001:db8::1", 80));
  EXPECT_EQ(w.data[13], 0x21);  // INET6 / STREAM
  EXPECT_EQ(w.data[16 + 10], 0xff);
  EXPECT_EQ(w.data[16 + 11], 0xff);
}

TEST(ProxyHeaderWriter, ExactBytesForIpv4) {
  const ProxyV2Bytes w = write_proxy_v2(ep("10.0.1.5", 43090), ep("140.82.112.3", 443));
  Bytes want(kProxyV2Signature.begin(), kProxyV2Signature.end());
  const Bytes rest = {0x21, 0x11, 0x00, 0x0c};
  want.insert(want.end(), rest.begin(), rest.end());
  want.insert(want.end(), kInetBlock.begin(), kInetBlock.end());
  EXPECT_EQ(Bytes(w.bytes().begin(), w.bytes().end()), want);
}

}  // namespace
}  // namespace egressd::sniff
