#pragma once
// Builds TLS ClientHello bytes for tests: a valid TLS 1.3-style hello by
// default, with knobs for every field the sniffer looks at and raw
// overrides to break lengths on purpose.
//
//   auto bytes = egressd::test::ClientHelloBuilder{}
//                    .sni("example.com").alpn({"h2", "http/1.1"}).records(3).build();

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace egressd::test {

class ClientHelloBuilder {
 public:
  using Bytes = std::vector<std::uint8_t>;

  // server_name with one host_name entry holding `name` verbatim.
  ClientHelloBuilder& sni(std::string_view name) { return sni_entries({{0, std::string(name)}}); }
  // server_name with these (name_type, name) entries, in order.
  ClientHelloBuilder& sni_entries(std::vector<std::pair<std::uint8_t, std::string>> entries) {
    Bytes list;
    for (const auto& [type, name] : entries) {
      list.push_back(type);
      put16(list, name.size());
      list.insert(list.end(), name.begin(), name.end());
    }
    Bytes data;
    put16(data, list.size());
    data.insert(data.end(), list.begin(), list.end());
    return extension(0, std::move(data));
  }
  // ALPN with these protocol names (GREASE ones included as given).
  ClientHelloBuilder& alpn(const std::vector<std::string>& names) {
    Bytes list;
    for (const auto& name : names) {
      list.push_back(static_cast<std::uint8_t>(name.size()));
      list.insert(list.end(), name.begin(), name.end());
    }
    Bytes data;
    put16(data, list.size());
    data.insert(data.end(), list.begin(), list.end());
    return extension(16, std::move(data));
  }
  // supported_versions with these values (GREASE ones included as given).
  ClientHelloBuilder& versions(const std::vector<std::uint16_t>& values) {
    Bytes data;
    data.push_back(static_cast<std::uint8_t>(values.size() * 2));
    for (auto v : values) put16(data, v);
    return extension(43, std::move(data));
  }
  // encrypted_client_hello (0xfe0d) with an opaque payload.
  ClientHelloBuilder& ech(std::size_t payload = 32) {
    return extension(0xfe0d, Bytes(payload, 0xec));
  }
  // key_share with one entry of `key_bytes` (X25519MLKEM768 is 1216).
  ClientHelloBuilder& key_share(std::size_t key_bytes, std::uint16_t group = 0x11ec) {
    Bytes entry;
    put16(entry, group);
    put16(entry, key_bytes);
    entry.resize(entry.size() + key_bytes, 0x4b);
    Bytes data;
    put16(data, entry.size());
    data.insert(data.end(), entry.begin(), entry.end());
    return extension(51, std::move(data));
  }
  // Two GREASE extensions, first and last, as Chrome sends.
  ClientHelloBuilder& grease() {
    grease_ = true;
    return *this;
  }
  // Any extension, verbatim; adding a type twice makes a duplicate.
  ClientHelloBuilder& extension(std::uint16_t type, Bytes data) {
    extensions_.emplace_back(type, std::move(data));
    return *this;
  }
  // A padding extension (21) making the handshake message `total` bytes.
  ClientHelloBuilder& pad_to(std::size_t total) {
    pad_to_ = total;
    return *this;
  }
  // No extensions block at all (a bare TLS 1.2 hello).
  ClientHelloBuilder& no_extensions() {
    no_extensions_ = true;
    return *this;
  }
  ClientHelloBuilder& session_id(std::size_t length) {
    session_id_ = length;
    return *this;
  }
  ClientHelloBuilder& record_version(std::uint16_t v) {
    record_version_ = v;
    return *this;
  }
  ClientHelloBuilder& legacy_version(std::uint16_t v) {
    legacy_version_ = v;
    return *this;
  }
  ClientHelloBuilder& handshake_type(std::uint8_t t) {
    handshake_type_ = t;
    return *this;
  }
  // Raw overrides of declared lengths; the bytes stay as built.
  ClientHelloBuilder& handshake_length(std::uint32_t v) {
    handshake_length_ = v;
    return *this;
  }
  ClientHelloBuilder& extensions_length(std::uint16_t v) {
    extensions_length_ = v;
    return *this;
  }
  // Bytes appended to the handshake message, inside its last record.
  ClientHelloBuilder& trailing(Bytes extra) {
    trailing_ = std::move(extra);
    return *this;
  }
  // Split the message into `n` records of near-equal size.
  ClientHelloBuilder& records(std::size_t n) {
    records_ = n;
    fragments_.clear();
    return *this;
  }
  // Records of these fragment sizes, then one record with whatever
  // remains (if anything does).
  ClientHelloBuilder& fragments(std::vector<std::size_t> sizes) {
    fragments_ = std::move(sizes);
    records_ = 0;
    return *this;
  }

  // The handshake message alone (type, 24-bit length, body).
  [[nodiscard]] Bytes handshake() const {
    Bytes body;
    put16(body, legacy_version_);
    for (std::uint8_t i = 0; i < 32; ++i) body.push_back(i);
    body.push_back(static_cast<std::uint8_t>(session_id_));
    body.resize(body.size() + session_id_, 0x55);
    const std::vector<std::uint16_t> suites = {0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f};
    put16(body, suites.size() * 2);
    for (auto s : suites) put16(body, s);
    body.push_back(1);
    body.push_back(0);
    if (!no_extensions_) {
      Bytes exts;
      if (grease_) append_extension(exts, 0x0a0a, {});
      for (const auto& [type, data] : extensions_) append_extension(exts, type, data);
      if (grease_) append_extension(exts, 0xfafa, Bytes{0});
      if (pad_to_) {
        // message = 4 header + body + 2 ext length + exts + 4 padding header + n
        const std::size_t used = 4 + body.size() + 2 + exts.size() + 4;
        append_extension(exts, 21, Bytes(*pad_to_ > used ? *pad_to_ - used : 0, 0));
      }
      put16(body, extensions_length_.value_or(static_cast<std::uint16_t>(exts.size())));
      body.insert(body.end(), exts.begin(), exts.end());
    }
    Bytes message;
    message.push_back(handshake_type_);
    const std::uint32_t length =
        handshake_length_.value_or(static_cast<std::uint32_t>(body.size()));
    message.push_back(static_cast<std::uint8_t>(length >> 16U));
    message.push_back(static_cast<std::uint8_t>(length >> 8U));
    message.push_back(static_cast<std::uint8_t>(length));
    message.insert(message.end(), body.begin(), body.end());
    message.insert(message.end(), trailing_.begin(), trailing_.end());
    return message;
  }

  // The message wrapped in TLS handshake records.
  [[nodiscard]] Bytes build() const { return wrap(handshake()); }

  // Wraps any payload in handshake records per this builder's split.
  [[nodiscard]] Bytes wrap(const Bytes& message) const {
    Bytes out;
    std::size_t offset = 0;
    auto emit = [&](std::size_t size) {
      out.push_back(22);
      put16(out, record_version_);
      put16(out, size);
      out.insert(out.end(), message.begin() + static_cast<std::ptrdiff_t>(offset),
                 message.begin() + static_cast<std::ptrdiff_t>(offset + size));
      offset += size;
    };
    if (!fragments_.empty()) {
      for (auto size : fragments_) emit(std::min(size, message.size() - offset));
      if (offset < message.size()) emit(message.size() - offset);
      return out;
    }
    // Near-equal records, none over 2^14 bytes (RFC 8446 §5.1).
    const std::size_t n = std::max<std::size_t>(records_, 1);
    const std::size_t each = std::min<std::size_t>((message.size() + n - 1) / n, 16384);
    while (offset < message.size()) emit(std::min(each, message.size() - offset));
    return out;
  }

  static void put16(Bytes& out, std::size_t v) {
    out.push_back(static_cast<std::uint8_t>((v >> 8U) & 0xffU));
    out.push_back(static_cast<std::uint8_t>(v & 0xffU));
  }

 private:
  static void append_extension(Bytes& out, std::uint16_t type, const Bytes& data) {
    put16(out, type);
    put16(out, data.size());
    out.insert(out.end(), data.begin(), data.end());
  }

  std::vector<std::pair<std::uint16_t, Bytes>> extensions_;
  std::optional<std::size_t> pad_to_;
  std::optional<std::uint32_t> handshake_length_;
  std::optional<std::uint16_t> extensions_length_;
  Bytes trailing_;
  std::vector<std::size_t> fragments_;
  std::size_t records_ = 1;
  std::size_t session_id_ = 32;
  std::uint16_t record_version_ = 0x0301;
  std::uint16_t legacy_version_ = 0x0303;
  std::uint8_t handshake_type_ = 1;
  bool grease_ = false;
  bool no_extensions_ = false;
};

}  // namespace egressd::test
