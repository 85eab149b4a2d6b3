#pragma once
// HTTP/1.x request head sniffing (RFC 9112), parsed with Boost.Beast and
// checked against contract rule 12 on the raw bytes where Beast is lenient.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/sniff/status.hpp"

namespace egressd::sniff {

inline constexpr std::size_t kDefaultMaxHttp1Head = 16 * 1024;
// The longest method token looked at before the first space; real methods
// (PROPPATCH, VERSION-CONTROL, ...) are shorter.
inline constexpr std::size_t kMaxHttp1MethodLength = 24;

// host [":" port] from a Host header, an absolute-form URI or a CONNECT
// target. `name` is raw (no case folding, trailing dot kept), IPv6 literals
// keep their brackets ("[fd00::1]"): canonicalize_name() takes it as is.
struct Authority {
  std::string name;
  std::optional<std::uint16_t> port;  // absent when the text had none (or "host:")
};

struct Http1Head {
  std::string method;
  std::string target;
  unsigned version = 11;                      // 10 or 11
  Authority host;                             // from the Host header (always present when found)
  bool absolute_form = false;                 // target is "scheme://authority/..."
  bool connect = false;                       // CONNECT with an authority-form target
  std::optional<Authority> target_authority;  // set for absolute-form and CONNECT
  std::string target_scheme;                  // lowercase, absolute-form only ("http")
  bool keep_alive = false;
  std::optional<std::uint64_t> content_length;
  bool chunked = false;
  std::vector<std::string> upgrade;  // Upgrade tokens as sent ("h2c", "websocket")
  bool http2_settings = false;       // an HTTP2-Settings header is present
  std::size_t head_length = 0;       // bytes up to and including the blank line
};

struct Http1HeadResult {
  Status status = Status::need_more;
  std::string_view reason;  // static text; set unless found / need_more
  Http1Head head;           // meaningful only when status == found
};

// Parses the request head at the start of `data` (a connection's bytes
// from byte 0, or from the first byte after the previous request).
//
// Guarantees: never throws, never reads outside `data`, final verdicts do
// not change when bytes are appended.
//  - not_this_protocol, decided on the first bytes: the data does not start
//    with a method token (an uppercase letter, then uppercase letters, '-'
//    or '_', at most kMaxHttp1MethodLength) followed by a space; or, as soon
//    as the first line is complete, it does not end with an HTTP version
//    (`EHLO x`, `PING`, HTTP/0.9's `GET /`: contract rule 11).
//  - need_more: a valid prefix without the blank line ending the head.
//  - too_large: no end of head within `max_head` bytes.
//  - malformed (contract rule 12): bare CR or LF, NUL or other control
//    bytes in the head, obs-fold, both Content-Length and
//    Transfer-Encoding, several Content-Length (even equal), a bad
//    Content-Length value, a Transfer-Encoding whose last coding is not
//    chunked or that names chunked twice, Transfer-Encoding in HTTP/1.0,
//    no Host or several (CONNECT and HTTP/1.0 included: rule 12 makes no
//    exception), a Host that is not host[:port], an absolute-form
//    target whose authority differs from Host, a version other than 1.0 or
//    1.1, a target not in origin, absolute, authority (CONNECT only) or
//    asterisk (OPTIONS only) form, or anything Beast's parser refuses.
//
// Host vs absolute-form: names are compared case-insensitively with one
// trailing dot ignored, and ports after applying the scheme's default
// (http 80, https 443), so "http://a.com/" matches "Host: a.com:80" while
// "http://a.com:8080/" does not match "Host: a.com". A CONNECT target is
// not compared with Host: the target alone names the tunnel.
Http1HeadResult parse_http1_head(std::span<const std::uint8_t> data,
                                 std::size_t max_head = kDefaultMaxHttp1Head);

// The first test of parse_http1_head alone: found when `data` starts with a
// method token and a space, need_more while it may still, else
// not_this_protocol. Allocation-free; detect_protocol uses it.
Status check_http1_method(std::span<const std::uint8_t> data) noexcept;

// Splits "host[:port]" as found in a Host header or URI authority. Accepts
// an IPv6 literal only in brackets. Returns nullopt for userinfo ('@'), a
// bad port (not 1-5 digits, or over 65535), a bare IPv6 literal, or
// unbalanced brackets. The name itself is not validated here.
std::optional<Authority> parse_authority(std::string_view text);

}  // namespace egressd::sniff
