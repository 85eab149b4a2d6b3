#pragma once
// TLS ClientHello sniffing (RFC 8446 §4.1.2; RFC 6066 §3 server_name;
// RFC 7301 ALPN; RFC 8446 §4.2.1 supported_versions; ECH, type 0xfe0d;
// GREASE values, RFC 8701, are skipped in ALPN and supported_versions).

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/sniff/status.hpp"

namespace egressd::sniff {

// Largest handshake message body (the 24-bit length) accepted: real hellos
// are under 2 KiB, post-quantum ones under 4 KiB; 64 KiB leaves room for
// anything legitimate while bounding what a client can make us buffer.
inline constexpr std::size_t kMaxClientHelloLength = 64 * 1024;
// Largest number of wire bytes (record headers included) the records that
// carry one hello may span. Tiny records cost 5 header bytes each, so this
// also bounds fragmentation games. A caller buffering this many bytes
// always gets a final verdict.
inline constexpr std::size_t kMaxClientHelloWireBytes = 128 * 1024;
// RFC 8446 §5.2: TLSCiphertext.length, the most any record may declare.
inline constexpr std::size_t kMaxTlsRecordLength = (1U << 14) + 256;

struct ClientHello {
  std::uint16_t record_version = 0;  // legacy_record_version of the first record
  std::uint16_t legacy_version = 0;  // ClientHello.legacy_version
  bool has_sni = false;              // a server_name extension was present
  // The raw bytes of the host_name entry, unvalidated: may hold NUL,
  // non-ASCII or be over-long; policy judges it (contract rule 2).
  std::string sni;
  std::vector<std::string> alpn;                  // protocol names, GREASE left out
  std::vector<std::uint16_t> supported_versions;  // GREASE left out
  bool ech = false;                               // encrypted_client_hello present
  std::size_t record_count = 0;                   // TLS records that carried the hello
  // Bytes from byte 0 up to the end of the last record carrying the hello.
  std::size_t bytes_consumed = 0;
};

struct ClientHelloResult {
  Status status = Status::need_more;
  std::string_view reason;  // static text; set unless found / need_more
  ClientHello hello;        // meaningful only when status == found
};

// Parses the ClientHello at the start of a TLS connection.
//
// Accepts: `data`, every byte the client has sent so far, from byte 0.
// Guarantees: never throws on any input, never reads outside `data`, and a
// final verdict does not change when bytes are appended.
//  - not_this_protocol: the first byte is not a handshake record (0x16) or
//    the record's major version is not 3. An SSLv2-compatible hello (first
//    byte with the high bit set) is reported this way too: no client of the
//    last decade sends one, it carries no SNI, and as "not TLS" the flow is
//    judged as plain TCP by address rules only.
//  - need_more: the records seen so far are consistent but the handshake
//    message (or the record holding its last byte) is not complete.
//  - malformed: a broken record layer (non-handshake record between the
//    hello's records, empty or over-long record, bytes after the hello in
//    its last record), a handshake message other than ClientHello, or —
//    once the whole message is present — any inner length inconsistent with
//    it, a duplicate extension, an unusable server_name list (empty name,
//    several entries, a type other than host_name), a malformed ALPN or
//    supported_versions list, pre_shared_key not last.
//  - too_large: the message is longer than kMaxClientHelloLength, or its
//    records span more than kMaxClientHelloWireBytes.
// Allocates only for the SNI and ALPN strings, the versions list, and to
// reassemble a hello that spans several records.
ClientHelloResult parse_client_hello(std::span<const std::uint8_t> data);

// RFC 8701 §2: 0x0A0A, 0x1A1A, ... 0xFAFA.
constexpr bool is_grease_u16(std::uint16_t value) noexcept {
  return (value & 0x0f0fU) == 0x0a0aU && (value >> 8U) == (value & 0xffU);
}

}  // namespace egressd::sniff
