#include "egressd/sniff/client_hello.hpp"

#include <algorithm>
#include <array>
#include <bitset>

#include "byte_reader.hpp"

namespace egressd::sniff {
namespace {

using detail::ByteReader;
using Bytes = std::span<const std::uint8_t>;

constexpr std::uint8_t kContentHandshake = 22;
constexpr std::uint8_t kHandshakeClientHello = 1;
constexpr std::size_t kRecordHeaderLength = 5;
constexpr std::size_t kHandshakeHeaderLength = 4;

constexpr std::uint16_t kExtServerName = 0;
constexpr std::uint16_t kExtAlpn = 16;
constexpr std::uint16_t kExtPreSharedKey = 41;
constexpr std::uint16_t kExtSupportedVersions = 43;
constexpr std::uint16_t kExtEncryptedClientHello = 0xfe0d;
constexpr std::uint8_t kNameTypeHostName = 0;

ClientHelloResult verdict(Status status, std::string_view reason) {
  ClientHelloResult r;
  r.status = status;
  r.reason = reason;
  return r;
}

// Where the handshake message lives on the wire, found by walking the
// records without copying anything.
struct RecordWalk {
  Status status = Status::need_more;
  std::string_view reason;
  std::size_t message_length = 0;  // handshake header + body
  std::size_t wire_end = 0;        // end of the last record of the hello
  std::size_t records = 0;
  std::uint16_t record_version = 0;
};

// TLS record layer, RFC 8446 §5.1:
//
//   0        1        2        3        4        5
//   +--------+--------+--------+--------+--------+----------------------+
//   |  type  | legacy_record_version   |     length      |   fragment...   |
//   +--------+--------+--------+--------+--------+----------------------+
//   type 22 = handshake; length <= 2^14 (+256 tolerated, §5.2 ceiling).
//
// The handshake messages are the concatenation of the fragments of
// consecutive handshake records; the ClientHello may span several. Each
// record header is fully validated before its fragment is used.
//
// Handshake message, RFC 8446 §4:
//
//   +--------+--------+--------+--------+------------------------------+
//   | msg_type (1 = client_hello) |      length (24 bits)      |  body  |
//   +--------+--------+--------+--------+------------------------------+
RecordWalk walk_records(Bytes data) {
  RecordWalk walk;
  if (data.empty()) return walk;
  if (data[0] != kContentHandshake) {
    walk.status = Status::not_this_protocol;
    walk.reason = "first byte is not a TLS handshake record";
    return walk;
  }
  if (data.size() >= 2 && data[1] != 3) {
    walk.status = Status::not_this_protocol;
    walk.reason = "TLS record major version is not 3";
    return walk;
  }

  std::array<std::uint8_t, kHandshakeHeaderLength> header{};
  std::size_t have = 0;  // handshake bytes seen so far
  std::size_t offset = 0;
  for (;;) {
    const std::size_t left = data.size() - offset;
    // Validate what is present of the record header before waiting for more.
    if (left >= 1 && data[offset] != kContentHandshake) {
      walk.status = Status::malformed;
      walk.reason = "non-handshake record inside the ClientHello";
      return walk;
    }
    if (left >= 2 && data[offset + 1] != 3) {
      walk.status = Status::malformed;
      walk.reason = "TLS record major version is not 3";
      return walk;
    }
    if (left < kRecordHeaderLength) return walk;  // need_more

    const auto version = static_cast<std::uint16_t>((data[offset + 1] << 8U) | data[offset + 2]);
    const std::size_t length = (std::size_t{data[offset + 3]} << 8U) | data[offset + 4];
    if (walk.records == 0) walk.record_version = version;
    if (length == 0) {
      // RFC 8446 §5.1: zero-length handshake fragments MUST NOT be sent.
      walk.status = Status::malformed;
      walk.reason = "empty handshake record";
      return walk;
    }
    if (length > kMaxTlsRecordLength) {
      walk.status = Status::malformed;
      walk.reason = "TLS record longer than 2^14+256";
      return walk;
    }
    if (offset + kRecordHeaderLength + length > kMaxClientHelloWireBytes) {
      walk.status = Status::too_large;
      walk.reason = "ClientHello records exceed the size cap";
      return walk;
    }
    ++walk.records;

    const std::size_t fragment_start = offset + kRecordHeaderLength;
    const std::size_t present = std::min(length, data.size() - fragment_start);
    // Look at the handshake header as its bytes arrive, so a wrong message
    // type or an over-long message is refused without waiting for more.
    for (std::size_t i = 0; i < present && have + i < kHandshakeHeaderLength; ++i) {
      header[have + i] = data[fragment_start + i];
      if (have + i == 0 && header[0] != kHandshakeClientHello) {
        walk.status = Status::malformed;
        walk.reason = "first handshake message is not a ClientHello";
        return walk;
      }
      if (have + i == kHandshakeHeaderLength - 1) {
        const std::size_t body =
            (std::size_t{header[1]} << 16U) | (std::size_t{header[2]} << 8U) | header[3];
        if (body > kMaxClientHelloLength) {
          walk.status = Status::too_large;
          walk.reason = "ClientHello longer than the size cap";
          return walk;
        }
        walk.message_length = kHandshakeHeaderLength + body;
      }
    }
    if (present < length) return walk;  // need_more: this record is incomplete
    have += length;
    offset = fragment_start + length;

    if (have >= kHandshakeHeaderLength && have >= walk.message_length) {
      if (have > walk.message_length) {
        // A client sends nothing after its ClientHello until the server
        // answers; trailing handshake bytes are a smuggling attempt.
        walk.status = Status::malformed;
        walk.reason = "bytes after the ClientHello in its record";
        return walk;
      }
      walk.status = Status::found;
      walk.wire_end = offset;
      return walk;
    }
  }
}

// Copies the fragments of the records covering the hello into one buffer.
std::vector<std::uint8_t> reassemble(Bytes data, std::size_t wire_end) {
  std::vector<std::uint8_t> out;
  std::size_t offset = 0;
  while (offset < wire_end) {
    const std::size_t length = (std::size_t{data[offset + 3]} << 8U) | data[offset + 4];
    const auto fragment = data.subspan(offset + kRecordHeaderLength, length);
    out.insert(out.end(), fragment.begin(), fragment.end());
    offset += kRecordHeaderLength + length;
  }
  return out;
}

// server_name extension_data, RFC 6066 §3:
//
//   +--------+--------+--------+--------+--------+-----------------+
//   | server_name_list length | name_type| HostName length | HostName ...
//   +--------+--------+--------+--------+--------+-----------------+
//   list<1..2^16-1>, name_type 0 = host_name, HostName<1..2^16-1>.
//
// Exactly one host_name entry, as OpenSSL and BoringSSL require: a second
// name (or an unknown type, whose layout nobody can know) would let the
// gateway and the server disagree about which name the client asked for.
std::string_view parse_server_name(Bytes ext, ClientHello& hello) {
  ByteReader r(ext);
  std::uint16_t list_length = 0;
  if (!r.u16(list_length) || list_length != r.remaining()) {
    return "server_name list length mismatch";
  }
  if (list_length == 0) return "empty server_name list";
  bool seen_host_name = false;
  while (!r.empty()) {
    std::uint8_t type = 0;
    std::uint16_t length = 0;
    Bytes name;
    if (!r.u8(type) || !r.u16(length) || !r.bytes(length, name)) {
      return "server_name entry overruns its list";
    }
    if (type != kNameTypeHostName) return "server_name entry is not a host_name";
    if (seen_host_name) return "several host_name entries in server_name";
    if (length == 0) return "empty host_name in server_name";
    seen_host_name = true;
    hello.sni.assign(name.begin(), name.end());
  }
  hello.has_sni = true;
  return {};
}

// application_layer_protocol_negotiation extension_data, RFC 7301 §3.1:
//
//   +--------+--------+--------+--------------+--------+------------
//   | protocol_name_list len  | name len | name bytes   | name len | ...
//   +--------+--------+--------+--------------+--------+------------
//   list<2..2^16-1>, ProtocolName<1..2^8-1>.
std::string_view parse_alpn(Bytes ext, ClientHello& hello) {
  ByteReader r(ext);
  std::uint16_t list_length = 0;
  if (!r.u16(list_length) || list_length != r.remaining()) return "ALPN list length mismatch";
  if (list_length == 0) return "empty ALPN list";
  while (!r.empty()) {
    std::uint8_t length = 0;
    Bytes name;
    if (!r.u8(length) || !r.bytes(length, name)) return "ALPN name overruns its list";
    if (length == 0) return "empty ALPN protocol name";
    // RFC 8701 §2: GREASE ALPN ids are two equal bytes of the form 0x?A.
    if (length == 2 && name[0] == name[1] && (name[0] & 0x0fU) == 0x0aU) continue;
    hello.alpn.emplace_back(name.begin(), name.end());
  }
  return {};
}

// supported_versions extension_data in a ClientHello, RFC 8446 §4.2.1:
//
//   +--------+--------+--------+--------+--------+---
//   | length | version         | version         | ...
//   +--------+--------+--------+--------+--------+---
//   ProtocolVersion versions<2..254>.
std::string_view parse_supported_versions(Bytes ext, ClientHello& hello) {
  ByteReader r(ext);
  std::uint8_t length = 0;
  if (!r.u8(length) || length != r.remaining()) return "supported_versions length mismatch";
  if (length < 2 || length % 2 != 0) return "bad supported_versions list length";
  while (!r.empty()) {
    std::uint16_t version = 0;
    r.u16(version);  // cannot fail: the length is even and matches
    if (!is_grease_u16(version)) hello.supported_versions.push_back(version);
  }
  return {};
}

// ClientHello body, RFC 8446 §4.1.2 (TLS 1.2 hellos, RFC 5246 §7.4.1.2,
// may stop after the compression methods):
//
//   +--------+--------+----------------+--------+----------------+
//   | legacy_version  | random (32)    | sid len| session_id<0..32>
//   +--------+--------+----------------+--------+----------------+
//   | cipher_suites len | cipher_suites<2..2^16-2> (even)        |
//   +--------+--------+----------------------------------------+
//   | comp len | legacy_compression_methods<1..2^8-1>           |
//   +--------+-------------------------------------------------+
//   | extensions len  | { type(2) length(2) data } ...          |
//   +--------+--------+-----------------------------------------+
//
// `body` is complete (its length came from the handshake header), so every
// inconsistency here is malformed, never need_more.
std::string_view parse_body(Bytes body, ClientHello& hello) {
  ByteReader r(body);
  std::uint8_t sid_length = 0;
  std::uint16_t suites_length = 0;
  std::uint8_t compression_length = 0;
  if (!r.u16(hello.legacy_version) || !r.skip(32) || !r.u8(sid_length)) {
    return "ClientHello shorter than its fixed fields";
  }
  if (sid_length > 32) return "legacy_session_id longer than 32 bytes";
  if (!r.skip(sid_length)) return "legacy_session_id overruns the ClientHello";
  if (!r.u16(suites_length) || !r.skip(suites_length)) {
    return "cipher_suites overrun the ClientHello";
  }
  if (suites_length < 2 || suites_length % 2 != 0) return "bad cipher_suites length";
  if (!r.u8(compression_length) || !r.skip(compression_length)) {
    return "compression methods overrun the ClientHello";
  }
  if (compression_length == 0) return "empty compression methods";
  if (r.empty()) return {};  // a TLS 1.2 hello without extensions

  std::uint16_t extensions_length = 0;
  if (!r.u16(extensions_length)) return "truncated extensions length";
  if (extensions_length != r.remaining()) return "extensions length mismatch";

  // One bit per extension type (8 KiB of stack, no allocation): RFC 8446
  // §4.2 forbids duplicates, and a bitset keeps the check linear however
  // many extensions a hostile hello packs in.
  std::bitset<65536> seen;
  while (!r.empty()) {
    std::uint16_t type = 0;
    std::uint16_t length = 0;
    Bytes ext;
    if (!r.u16(type) || !r.u16(length) || !r.bytes(length, ext)) {
      return "extension overruns the extensions block";
    }
    if (seen.test(type)) return "duplicate extension";
    seen.set(type);
    // RFC 8446 §4.2.11: pre_shared_key MUST be the last extension.
    if (type == kExtPreSharedKey && !r.empty()) return "pre_shared_key is not the last extension";
    std::string_view problem;
    switch (type) {
      case kExtServerName:
        problem = parse_server_name(ext, hello);
        break;
      case kExtAlpn:
        problem = parse_alpn(ext, hello);
        break;
      case kExtSupportedVersions:
        problem = parse_supported_versions(ext, hello);
        break;
      case kExtEncryptedClientHello:
        hello.ech = true;
        break;
      default:
        break;
    }
    if (!problem.empty()) return problem;
  }
  return {};
}

}  // namespace

ClientHelloResult parse_client_hello(std::span<const std::uint8_t> data) {
  const RecordWalk walk = walk_records(data);
  if (walk.status != Status::found) return verdict(walk.status, walk.reason);

  ClientHelloResult result;
  ClientHello& hello = result.hello;
  hello.record_version = walk.record_version;
  hello.record_count = walk.records;
  hello.bytes_consumed = walk.wire_end;

  std::string_view problem;
  if (walk.records == 1) {
    // The common case: the whole hello in one record, parsed in place.
    problem = parse_body(data.subspan(kRecordHeaderLength + kHandshakeHeaderLength,
                                      walk.message_length - kHandshakeHeaderLength),
                         hello);
  } else {
    const std::vector<std::uint8_t> message = reassemble(data, walk.wire_end);
    problem = parse_body(Bytes(message).subspan(kHandshakeHeaderLength), hello);
  }
  if (!problem.empty()) return verdict(Status::malformed, problem);
  result.status = Status::found;
  return result;
}

}  // namespace egressd::sniff
