#include "egressd/sniff/http1_head.hpp"

#include <algorithm>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>

namespace egressd::sniff {
namespace {

namespace http = boost::beast::http;

Http1HeadResult verdict(Status status, std::string_view reason) {
  Http1HeadResult r;
  r.status = status;
  r.reason = reason;
  return r;
}

char lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Calls `fn` with each non-empty, OWS-trimmed element of a comma list
// (RFC 9110 §5.6.1: empty elements are ignored).
template <class Fn>
void for_each_element(std::string_view list, Fn&& fn) {
  while (true) {
    const auto comma = list.find(',');
    const auto element = trim_ows(list.substr(0, comma));
    if (!element.empty()) fn(element);
    if (comma == std::string_view::npos) return;
    list.remove_prefix(comma + 1);
  }
}

// RFC 9110 §5.6.2 tchar: what a token (a transfer coding's name) is made of.
bool is_token(std::string_view text) noexcept {
  if (text.empty()) return false;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!alnum && std::string_view("!#$%&'*+-.^_`|~").find(ch) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

bool is_method_byte(std::uint8_t c, std::size_t index) noexcept {
  if (c >= 'A' && c <= 'Z') return true;
  return index > 0 && (c == '-' || c == '_');
}

// What the raw header lines say about framing and the authority, collected
// before Beast sees them because Beast accepts some of what rule 12 refuses.
struct RawFields {
  std::size_t host_count = 0;
  std::string_view host;
  std::size_t content_length_count = 0;
  std::string_view content_length;
  bool has_transfer_encoding = false;
  std::vector<std::string_view> transfer_codings;  // every element, in order
  std::vector<std::string_view> upgrade;
  bool http2_settings = false;
};

// Header section lines, RFC 9112 §5:
//
//   field-line = field-name ":" OWS field-value OWS CRLF
//
// A line starting with SP or HTAB is obs-fold (§5.2), refused here rather
// than unfolded; whitespace between name and colon is refused (§5.1).
std::string_view scan_field_lines(std::string_view fields, RawFields& raw) {
  while (!fields.empty()) {
    const auto eol = fields.find("\r\n");
    const std::string_view line = fields.substr(0, eol);
    fields.remove_prefix(eol == std::string_view::npos ? fields.size() : eol + 2);
    if (line.empty()) break;  // the blank line ending the head
    if (line.front() == ' ' || line.front() == '\t') return "obsolete line folding";
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return "header line without a colon";
    const std::string_view name = line.substr(0, colon);
    if (name.empty()) return "empty header name";
    if (name.back() == ' ' || name.back() == '\t') return "whitespace before a header colon";
    const std::string_view value = trim_ows(line.substr(colon + 1));
    if (iequals(name, "host")) {
      ++raw.host_count;
      raw.host = value;
    } else if (iequals(name, "content-length")) {
      ++raw.content_length_count;
      raw.content_length = value;
    } else if (iequals(name, "transfer-encoding")) {
      raw.has_transfer_encoding = true;
      for_each_element(value, [&](std::string_view e) { raw.transfer_codings.push_back(e); });
    } else if (iequals(name, "upgrade")) {
      for_each_element(value, [&](std::string_view e) { raw.upgrade.push_back(e); });
    } else if (iequals(name, "http2-settings")) {
      raw.http2_settings = true;
    }
  }
  return {};
}

// Message framing, RFC 9112 §6.1-6.3, as contract rule 12 narrows it.
std::string_view check_framing(const RawFields& raw, Http1Head& head) {
  if (raw.content_length_count > 0 && raw.has_transfer_encoding) {
    return "both Content-Length and Transfer-Encoding";
  }
  if (raw.content_length_count > 1) return "several Content-Length headers";
  if (raw.content_length_count == 1) {
    const std::string_view v = raw.content_length;
    if (v.find(',') != std::string_view::npos) return "several Content-Length values";
    // 1*DIGIT; 19 digits always fit in 64 bits.
    if (v.empty() || v.size() > 19) return "invalid Content-Length";
    std::uint64_t n = 0;
    for (char c : v) {
      if (c < '0' || c > '9') return "invalid Content-Length";
      n = n * 10 + static_cast<std::uint64_t>(c - '0');
    }
    head.content_length = n;
  }
  if (raw.has_transfer_encoding) {
    if (raw.transfer_codings.empty()) return "empty Transfer-Encoding";
    for (std::size_t i = 0; i < raw.transfer_codings.size(); ++i) {
      const std::string_view coding = raw.transfer_codings[i];
      const std::string_view name = trim_ows(coding.substr(0, coding.find(';')));
      // A coding that is no token is read differently by different
      // parsers (Beast stops at it): refused, so framing is never in doubt.
      // Nor are parameters, which Beast does not read either.
      if (!is_token(name)) return "invalid Transfer-Encoding";
      if (name.size() != coding.size()) return "parameters on a transfer coding";
      if (!iequals(name, "chunked")) continue;
      if (i + 1 != raw.transfer_codings.size()) return "chunked is not the final transfer coding";
      head.chunked = true;
    }
    if (!head.chunked) return "Transfer-Encoding does not end with chunked";
  }
  return {};
}

std::string_view describe_beast_error(const boost::system::error_code& ec) {
  if (ec == http::error::bad_method) return "invalid method";
  if (ec == http::error::bad_target) return "invalid request target";
  if (ec == http::error::bad_version) return "invalid HTTP version";
  if (ec == http::error::bad_field) return "invalid header name";
  if (ec == http::error::bad_value) return "invalid header value";
  if (ec == http::error::bad_line_ending) return "bad line ending";
  if (ec == http::error::bad_content_length) return "invalid Content-Length";
  if (ec == http::error::multiple_content_length) return "several Content-Length values";
  if (ec == http::error::bad_transfer_encoding) return "invalid Transfer-Encoding";
  return "invalid request head";
}

std::string lowercase(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = lower(c);
  return out;
}

std::string lowercase_without_trailing_dot(std::string_view name) {
  if (!name.empty() && name.back() == '.') name.remove_suffix(1);
  return lowercase(name);
}

// absolute-form, RFC 9112 §3.2.2 / RFC 3986 §3:
//   scheme "://" authority [ path-abempty ] [ "?" query ]
// Only http and https: the gateway forwards nothing else.
std::string_view parse_absolute_form(std::string_view target, Http1Head& head) {
  const auto sep = target.find("://");
  if (sep == std::string_view::npos || sep == 0) return "invalid request target";
  const std::string_view scheme = target.substr(0, sep);
  if (!iequals(scheme, "http") && !iequals(scheme, "https")) return "unsupported URI scheme";
  std::string_view rest = target.substr(sep + 3);
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  if (authority.empty()) return "absolute-form target without a host";
  auto parsed = parse_authority(authority);
  if (!parsed || parsed->name.empty()) return "invalid authority in the request target";
  head.absolute_form = true;
  head.target_scheme = lowercase(scheme);
  head.target_authority = std::move(parsed);
  return {};
}

// Host vs the absolute-form authority: see the header for the rule.
bool same_authority(const Http1Head& head) {
  const Authority& uri = *head.target_authority;
  const std::uint16_t default_port = head.target_scheme == "https" ? 443 : 80;
  if (uri.port.value_or(default_port) != head.host.port.value_or(default_port)) return false;
  return lowercase_without_trailing_dot(uri.name) == lowercase_without_trailing_dot(head.host.name);
}

}  // namespace

Status check_http1_method(std::span<const std::uint8_t> data) noexcept {
  for (std::size_t i = 0; i < data.size(); ++i) {
    const std::uint8_t c = data[i];
    if (c == ' ' && i > 0) return Status::found;
    if (!is_method_byte(c, i) || i == kMaxHttp1MethodLength) return Status::not_this_protocol;
  }
  return Status::need_more;
}

std::optional<Authority> parse_authority(std::string_view text) {
  if (text.find('@') != std::string_view::npos) return std::nullopt;
  Authority out;
  std::string_view port;
  bool has_colon = false;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    out.name = std::string(text.substr(0, close + 1));
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      has_colon = true;
      port = rest.substr(1);
    }
  } else {
    const auto colon = text.find(':');
    if (colon != std::string_view::npos) {
      if (text.find(':', colon + 1) != std::string_view::npos) return std::nullopt;
      has_colon = true;
      port = text.substr(colon + 1);
    }
    out.name = std::string(text.substr(0, colon));
  }
  if (has_colon && !port.empty()) {
    if (port.size() > 5) return std::nullopt;
    std::uint32_t n = 0;
    for (char c : port) {
      if (c < '0' || c > '9') return std::nullopt;
      n = n * 10 + static_cast<std::uint32_t>(c - '0');
    }
    if (n > 65535) return std::nullopt;
    out.port = static_cast<std::uint16_t>(n);
  }
  return out;
}

// Request head, RFC 9112 §2.1 and §3:
//
//   +--------+-----+----------------+-----+--------------+------+
//   | method | SP  | request-target | SP  | HTTP-version | CRLF |
//   +--------+-----+----------------+-----+--------------+------+
//   | field-name ":" OWS field-value OWS CRLF    (zero or more) |
//   +-------------------------------------------------------------+
//   | CRLF                                                        |
//   +-------------------------------------------------------------+
Http1HeadResult parse_http1_head(std::span<const std::uint8_t> data, std::size_t max_head) {
  // Classify on the method token alone, so a non-HTTP client is told apart
  // after a handful of bytes.
  if (const Status method = check_http1_method(data); method != Status::found) {
    return verdict(method, method == Status::need_more ? "" : "not an HTTP method token");
  }

  // Find the end of the head, refusing bytes no field may hold. Only the
  // first `max_head` bytes are looked at, so the verdict is the same
  // however many bytes follow them.
  const std::size_t limit = std::min(data.size(), max_head);

  std::size_t head_length = 0;
  bool first_line = true;
  for (std::size_t i = 0; i < limit && head_length == 0; ++i) {
    const std::uint8_t c = data[i];
    if (c == '\n' && first_line) {
      // Contract rule 11: a first line that ends without an HTTP version
      // (`EHLO x`, `PING`, HTTP/0.9's `GET /`) is not HTTP, decided as soon
      // as the line ends, so client-first protocols on ports with host
      // entries are not held until the sniff timeout. (Bytes before it were
      // checked above: the verdict never changes as bytes are appended.)
      first_line = false;
      std::size_t end = i;
      if (end > 0 && data[end - 1] == '\r') --end;
      const std::string_view line(reinterpret_cast<const char*>(data.data()), end);
      const std::size_t space = line.rfind(' ');
      const std::string_view last = space == std::string_view::npos ? line : line.substr(space + 1);
      if (!last.starts_with("HTTP/")) {
        return verdict(Status::not_this_protocol, "the first line has no HTTP version");
      }
    }
    if (c == '\n') {
      if (i == 0 || data[i - 1] != '\r')
        return verdict(Status::malformed, "bare LF in request head");
      if (i >= 3 && data[i - 2] == '\n' && data[i - 3] == '\r') head_length = i + 1;
    } else if (c == '\r') {
      if (i + 1 < limit && data[i + 1] != '\n') {
        return verdict(Status::malformed, "bare CR in request head");
      }
    } else if (c == 0) {
      return verdict(Status::malformed, "NUL byte in request head");
    } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
      return verdict(Status::malformed, "control byte in request head");
    }
  }
  if (head_length == 0) {
    if (data.size() >= max_head)
      return verdict(Status::too_large, "request head over the size cap");
    return verdict(Status::need_more, {});
  }

  const std::string_view text(reinterpret_cast<const char*>(data.data()), head_length);
  const auto request_line_end = text.find("\r\n");
  Http1HeadResult result;
  Http1Head& head = result.head;
  head.head_length = head_length;

  RawFields raw;
  if (auto problem = scan_field_lines(text.substr(request_line_end + 2), raw); !problem.empty()) {
    return verdict(Status::malformed, problem);
  }
  if (auto problem = check_framing(raw, head); !problem.empty()) {
    return verdict(Status::malformed, problem);
  }
  if (raw.host_count == 0) return verdict(Status::malformed, "no Host header");
  if (raw.host_count > 1) return verdict(Status::malformed, "several Host headers");

  // Beast judges the syntax: method and field-name tokens, target and
  // version grammar, field-value bytes.
  http::request_parser<http::empty_body> parser;
  parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(max_head, UINT32_MAX)));
  parser.body_limit(boost::none);  // the body is never read here
  parser.eager(false);
  boost::system::error_code ec;
  parser.put(boost::asio::buffer(text.data(), text.size()), ec);
  if (ec == http::error::header_limit) {
    return verdict(Status::too_large, "request head over the size cap");
  }
  if (ec) return verdict(Status::malformed, describe_beast_error(ec));
  if (!parser.is_header_done()) return verdict(Status::malformed, "invalid request head");

  const auto& message = parser.get();
  head.version = message.version();
  if (head.version != 10 && head.version != 11) {
    return verdict(Status::malformed, "HTTP version is not 1.0 or 1.1");
  }
  // RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request is faulty framing.
  if (head.version == 10 && raw.has_transfer_encoding) {
    return verdict(Status::malformed, "Transfer-Encoding in an HTTP/1.0 request");
  }
  head.method = std::string(message.method_string());
  head.target = std::string(message.target());
  head.keep_alive = message.keep_alive();

  auto host = parse_authority(raw.host);
  if (!host) return verdict(Status::malformed, "invalid Host header");
  head.host = std::move(*host);

  const std::string_view target = head.target;
  if (head.method == "CONNECT") {
    // authority-form, RFC 9112 §3.2.3: host ":" port, nothing else.
    auto authority = parse_authority(target);
    if (!authority || authority->name.empty() || !authority->port) {
      return verdict(Status::malformed, "CONNECT target is not host:port");
    }
    head.connect = true;
    head.target_authority = std::move(authority);
  } else if (!target.empty() && target.front() == '/') {
    // origin-form
  } else if (target == "*") {
    if (head.method != "OPTIONS")
      return verdict(Status::malformed, "asterisk target outside OPTIONS");
  } else {
    if (auto problem = parse_absolute_form(target, head); !problem.empty()) {
      return verdict(Status::malformed, problem);
    }
    if (!same_authority(head))
      return verdict(Status::malformed, "absolute-form target differs from Host");
  }

  for (auto token : raw.upgrade) head.upgrade.emplace_back(token);
  head.http2_settings = raw.http2_settings;
  result.status = Status::found;
  return result;
}

}  // namespace egressd::sniff
