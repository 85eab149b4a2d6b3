#include "egressd/sniff/client_hello.hpp"

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/client_hello_builder.hpp"

namespace egressd::sniff {
namespace {

using test::ClientHelloBuilder;
using Bytes = std::vector<std::uint8_t>;

ClientHelloResult parse(const Bytes& b) {
  return parse_client_hello(b);
}
ClientHelloResult parse_prefix(const Bytes& b, std::size_t n) {
  return parse_client_hello(std::span<const std::uint8_t>(b.data(), n));
}

ClientHelloBuilder typical() {
  return ClientHelloBuilder{}
      .grease()
      .sni("example.com")
      .alpn({"h2", "http/1.1"})
      .versions({0x0304, 0x0303})
      .key_share(32, 0x001d);
}

TEST(ClientHello, ExtractsTheFieldsPolicyNeeds) {
  const Bytes b = typical().build();
  const auto r = parse(b);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_TRUE(r.reason.empty());
  EXPECT_TRUE(r.hello.has_sni);
  EXPECT_EQ(r.hello.sni, "example.com");
  EXPECT_EQ(r.hello.alpn, (std::vector<std::string>{"h2", "http/1.1"}));
  EXPECT_EQ(r.hello.supported_versions, (std::vector<std::uint16_t>{0x0304, 0x0303}));
  EXPECT_FALSE(r.hello.ech);
  EXPECT_EQ(r.hello.record_version, 0x0301);
  EXPECT_EQ(r.hello.legacy_version, 0x0303);
  EXPECT_EQ(r.hello.record_count, 1U);
  EXPECT_EQ(r.hello.bytes_consumed, b.size());
}

TEST(ClientHello, ByteByByteIsNeedMoreUntilTheLastByte) {
  for (const Bytes& b : {typical().build(), typical().records(4).build()}) {
    for (std::size_t n = 0; n < b.size(); ++n) {
      const auto r = parse_prefix(b, n);
      ASSERT_EQ(r.status, Status::need_more) << "prefix " << n << ": " << r.reason;
    }
    EXPECT_EQ(parse(b).status, Status::found);
  }
}

TEST(ClientHello, BytesAfterTheHelloAreNotConsumed) {
  Bytes b = typical().build();
  const std::size_t hello_size = b.size();
  // A TLS 1.3 middlebox-compat ChangeCipherSpec record, then early data.
  const Bytes after = {0x14, 0x03, 0x03, 0x00, 0x01, 0x01, 0x17, 0x03};
  b.insert(b.end(), after.begin(), after.end());
  const auto r = parse(b);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.hello.bytes_consumed, hello_size);
}

TEST(ClientHello, EverySplitIntoTwoRecords) {
  const ClientHelloBuilder base = typical();
  const std::size_t message_size = base.handshake().size();
  for (std::size_t k = 1; k < message_size; ++k) {
    const Bytes b = ClientHelloBuilder(base).fragments({k}).build();
    const auto r = parse(b);
    ASSERT_EQ(r.status, Status::found) << "split " << k << ": " << r.reason;
    EXPECT_EQ(r.hello.record_count, 2U);
    EXPECT_EQ(r.hello.sni, "example.com");
    EXPECT_EQ(r.hello.alpn.size(), 2U);
    EXPECT_EQ(r.hello.bytes_consumed, b.size());
    // Every truncation of the two-record form is still a valid prefix.
    for (std::size_t n = 0; n < b.size(); n += 7) {
      ASSERT_EQ(parse_prefix(b, n).status, Status::need_more) << "split " << k << " prefix " << n;
    }
  }
}

TEST(ClientHello, OneByteRecords) {
  const Bytes message = typical().handshake();
  const Bytes b = typical().fragments(std::vector<std::size_t>(message.size(), 1)).build();
  const auto r = parse(b);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.hello.record_count, message.size());
  EXPECT_EQ(r.hello.sni, "example.com");
}

TEST(ClientHello, SniBytesAreReturnedRaw) {
  const std::string with_nul("evil.com\0.good.com", 18);
  const std::string non_ascii =
      "b\xc3\xbc"
      "cher.de";
  const std::string long_name(300, 'a');
  for (const std::string& name : {with_nul, non_ascii, long_name, std::string("A.Example.COM.")}) {
    const auto r = parse(ClientHelloBuilder{}.sni(name).build());
    ASSERT_EQ(r.status, Status::found) << r.reason;
    EXPECT_EQ(r.hello.sni, name);
  }
}

TEST(ClientHello, SniBeyond64KiBIsTooLarge) {
  // The 16-bit lengths wrap; the message itself is over the cap.
  const auto r = parse(ClientHelloBuilder{}.sni(std::string(70000, 'a')).build());
  EXPECT_EQ(r.status, Status::too_large);
}

TEST(ClientHello, NoSniNoAlpn) {
  const auto r = parse(ClientHelloBuilder{}.versions({0x0304}).build());
  ASSERT_EQ(r.status, Status::found);
  EXPECT_FALSE(r.hello.has_sni);
  EXPECT_TRUE(r.hello.sni.empty());
  EXPECT_TRUE(r.hello.alpn.empty());
  const auto bare = parse(ClientHelloBuilder{}.no_extensions().build());
  ASSERT_EQ(bare.status, Status::found) << bare.reason;
  EXPECT_FALSE(bare.hello.has_sni);
}

TEST(ClientHello, GreaseIsSkipped) {
  const auto r = parse(ClientHelloBuilder{}
                           .grease()
                           .sni("a.b")
                           .alpn({std::string("\x3a\x3a"), "h2", std::string("\xfa\xfa")})
                           .versions({0x7a7a, 0x0304, 0xdada, 0x0303})
                           .build());
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.hello.alpn, std::vector<std::string>{"h2"});
  EXPECT_EQ(r.hello.supported_versions, (std::vector<std::uint16_t>{0x0304, 0x0303}));
  // Near misses are not GREASE.
  const auto near =
      parse(ClientHelloBuilder{}.alpn({std::string("\x3a\x4a")}).versions({0x7a6a}).build());
  ASSERT_EQ(near.status, Status::found);
  EXPECT_EQ(near.hello.alpn.size(), 1U);
  EXPECT_EQ(near.hello.supported_versions, std::vector<std::uint16_t>{0x7a6a});
}

TEST(ClientHello, EchIsReported) {
  const auto r = parse(typical().ech(200).build());
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_TRUE(r.hello.ech);
  EXPECT_EQ(r.hello.sni, "example.com");
}

TEST(ClientHello, PostQuantumSizedHello) {
  // X25519MLKEM768 (1216) + X25519 (32): about 1.7 KB, past one MSS.
  const ClientHelloBuilder pq = ClientHelloBuilder{}
                                    .grease()
                                    .sni("pq.example")
                                    .alpn({"h2"})
                                    .key_share(1216 + 32)
                                    .pad_to(1750);
  const Bytes b = pq.build();
  ASSERT_GT(b.size(), 1500U);
  ASSERT_LT(b.size(), 2048U);
  EXPECT_EQ(parse(b).status, Status::found);
  // As two TCP segments and as two records, each split point.
  for (std::size_t k = 1; k < b.size(); k += 97) {
    EXPECT_EQ(parse_prefix(b, k).status, Status::need_more);
    const auto r = parse(ClientHelloBuilder(pq).fragments({k}).build());
    ASSERT_EQ(r.status, Status::found) << k;
    EXPECT_EQ(r.hello.sni, "pq.example");
  }
}

TEST(ClientHello, LargeHelloAcrossRecordsIsAccepted) {
  const Bytes b = typical().pad_to(40000).build();
  const auto r = parse(b);
  ASSERT_EQ(r.status, Status::found) << r.reason;
  EXPECT_EQ(r.hello.record_count, 3U);  // 2^14-byte records
  EXPECT_EQ(r.hello.sni, "example.com");
  EXPECT_EQ(r.hello.bytes_consumed, b.size());
}

TEST(ClientHello, SizeCaps) {
  // A declared message length over the cap is refused from its header.
  Bytes header = {22, 3, 1, 0x40, 0x00, 1, 0x01, 0x00, 0x01};  // 65537
  EXPECT_EQ(parse(header).status, Status::too_large);
  header[7] = 0x00;
  header[8] = 0x00;  // exactly 65536: allowed, so wait for it
  EXPECT_EQ(parse(header).status, Status::need_more);
  // A hello cut into 1-byte records spans more wire bytes than allowed.
  const ClientHelloBuilder big = typical().pad_to(30000);
  const Bytes tiny = ClientHelloBuilder(big).fragments(std::vector<std::size_t>(30000, 1)).build();
  EXPECT_EQ(parse(tiny).status, Status::too_large);
}

TEST(ClientHello, NotTls) {
  const std::vector<Bytes> cases = {
      {'G', 'E', 'T', ' '},
      {0x17, 0x03, 0x03, 0x00, 0x10},
      {0x16, 0x02},                    // record major version 2
      {0x80, 0x2e, 0x01, 0x03, 0x01},  // SSLv2-compatible ClientHello
      {0x00},
  };
  for (const auto& b : cases) {
    const auto r = parse(b);
    EXPECT_EQ(r.status, Status::not_this_protocol) << int{b[0]};
    EXPECT_FALSE(r.reason.empty());
  }
}

TEST(ClientHello, BrokenRecordLayerIsMalformed) {
  const Bytes good = typical().build();
  struct Case {
    const char* what;
    Bytes bytes;
  };
  std::vector<Case> cases;
  cases.push_back({"empty record", {22, 3, 1, 0, 0}});
  cases.push_back({"record over 2^14+256", {22, 3, 1, 0x41, 0x01}});
  cases.push_back({"server hello", ClientHelloBuilder{}.handshake_type(2).build()});
  {
    // Two records with an alert record between them.
    Bytes b = typical().fragments({10}).build();
    const Bytes alert = {21, 3, 3, 0, 2, 2, 40};
    b.insert(b.begin() + 15, alert.begin(), alert.end());
    cases.push_back({"interleaved alert", b});
  }
  {
    Bytes b = typical().fragments({10}).build();
    b[15 + 1] = 4;  // second record's major version
    cases.push_back({"second record not TLS", b});
  }
  cases.push_back({"trailing handshake bytes", typical().trailing({2, 0, 0, 0}).build()});
  for (const auto& c : cases) {
    const auto r = parse(c.bytes);
    EXPECT_EQ(r.status, Status::malformed) << c.what;
    EXPECT_FALSE(r.reason.empty()) << c.what;
  }
  (void)good;
}

TEST(ClientHello, InnerInconsistencyOnceCompleteIsMalformed) {
  const ClientHelloBuilder base = typical();
  const std::size_t body = base.handshake().size() - 4;
  // Declared message longer than what was sent: the next record may bring
  // the rest, so this is only a prefix.
  EXPECT_EQ(
      parse(
          ClientHelloBuilder(base).handshake_length(static_cast<std::uint32_t>(body + 10)).build())
          .status,
      Status::need_more);
  struct Case {
    const char* what;
    ClientHelloBuilder builder;
  };
  auto ext_len = [&](int delta) {
    // The extensions block length as built, shifted.
    const Bytes m = base.handshake();
    const std::size_t at = 4 + 2 + 32 + 1 + 32 + 2 + 10 + 2;
    const auto declared = static_cast<std::uint16_t>((m[at] << 8U) | m[at + 1]);
    return ClientHelloBuilder(base).extensions_length(static_cast<std::uint16_t>(declared + delta));
  };
  const std::vector<Case> cases = {
      {"extensions length +1", ext_len(1)},
      {"extensions length -1", ext_len(-1)},
      {"message length too short for body", ClientHelloBuilder(base).handshake_length(40)},
      {"session id over 32", ClientHelloBuilder{}.session_id(33)},
      {"duplicate extension", ClientHelloBuilder{}.alpn({"h2"}).alpn({"h2"})},
      {"duplicate server_name", ClientHelloBuilder{}.sni("a.com").sni("b.com")},
      {"two host_names", ClientHelloBuilder{}.sni_entries({{0, "a.com"}, {0, "b.com"}})},
      {"unknown name type", ClientHelloBuilder{}.sni_entries({{1, "a.com"}})},
      {"empty host_name", ClientHelloBuilder{}.sni("")},
      {"empty server_name list", ClientHelloBuilder{}.sni_entries({})},
      {"server_name list overruns",
       ClientHelloBuilder{}.extension(0, {0, 9, 0, 0, 3, 'a', 'b', 'c'})},
      {"host_name overruns", ClientHelloBuilder{}.extension(0, {0, 6, 0, 0, 9, 'a', 'b', 'c'})},
      {"empty ALPN list", ClientHelloBuilder{}.alpn({})},
      {"empty ALPN name", ClientHelloBuilder{}.alpn({"h2", ""})},
      {"ALPN overruns", ClientHelloBuilder{}.extension(16, {0, 3, 5, 'h', '2'})},
      {"odd supported_versions", ClientHelloBuilder{}.extension(43, {3, 3, 4, 3})},
      {"supported_versions mismatch", ClientHelloBuilder{}.extension(43, {4, 3, 4})},
      {"psk not last", ClientHelloBuilder{}.extension(41, {0, 0}).sni("a.com")},
  };
  for (const auto& c : cases) {
    const Bytes b = c.builder.build();
    const auto r = parse(b);
    EXPECT_EQ(r.status, Status::malformed) << c.what;
    EXPECT_FALSE(r.reason.empty()) << c.what;
    // Before its last byte, the same hello is only a prefix.
    EXPECT_EQ(parse_prefix(b, b.size() - 1).status, Status::need_more) << c.what;
  }
  // pre_shared_key last is fine.
  EXPECT_EQ(parse(ClientHelloBuilder{}.sni("a.com").extension(41, {0, 0}).build()).status,
            Status::found);
}

// Hellos captured from real clients on loopback (see
// test/testdata/client_hellos/README.md).
TEST(ClientHello, RealClients) {
  struct Case {
    const char* file;
    const char* sni;
    std::vector<std::string> alpn;
  };
  const std::vector<Case> cases = {
      {"openssl_s_client.bin", "example.com", {"h2", "http/1.1"}},
      {"curl.bin", "example.com", {"h2", "http/1.1"}},
      {"python_ssl.bin", "example.com", {"h2", "http/1.1"}},
  };
  for (const auto& c : cases) {
    std::ifstream in(std::string(EGRESSD_TESTDATA_DIR) + "/client_hellos/" + c.file,
                     std::ios::binary);
    ASSERT_TRUE(in) << c.file;
    const Bytes b((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto r = parse(b);
    ASSERT_EQ(r.status, Status::found) << c.file << ": " << r.reason;
    EXPECT_EQ(r.hello.sni, c.sni) << c.file;
    EXPECT_EQ(r.hello.alpn, c.alpn) << c.file;
    EXPECT_FALSE(r.hello.supported_versions.empty()) << c.file;
    for (std::size_t n = 0; n < r.hello.bytes_consumed; ++n) {
      ASSERT_EQ(parse_prefix(b, n).status, Status::need_more) << c.file << " prefix " << n;
    }
  }
}

}  // namespace
}  // namespace egressd::sniff
