#include "egressd/log/record.hpp"

#include <algorithm>
#include <charconv>

#include "egressd/log/json.hpp"

namespace egressd::log {
namespace {

void append_uint(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto res = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, res.ptr);
}

// Zero-padded fixed width, for timestamp parts.
void append_padded(std::string& out, unsigned v, int width) {
  char buf[8];
  for (int i = width - 1; i >= 0; --i) {
    buf[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  out.append(buf, static_cast<std::size_t>(width));
}

// `,"key":` — every field but the first starts this way.
void key(std::string& out, std::string_view k) {
  out += ",\"";
  out += k;
  out += "\":";
}

void string_field(std::string& out, std::string_view k, std::string_view v) {
  key(out, k);
  append_json_string(out, v);
}

void endpoint_field(std::string& out, std::string_view k, const Endpoint& e) {
  key(out, k);
  // Endpoint text is digits, dots, colons, hex and brackets: nothing to
  // escape, but it still goes through the escaper so the invariant is local.
  append_json_string(out, e.to_string());
}

void string_array_field(std::string& out, std::string_view k, const std::vector<std::string>& v) {
  key(out, k);
  out += '[';
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i > 0) out += ',';
    append_json_string(out, v[i]);
  }
  out += ']';
}

}  // namespace

std::string_view to_string(Event e) noexcept {
  switch (e) {
    case Event::open:
      return "open";
    case Event::flow:
      return "flow";
    case Event::request:
      return "request";
  }
  return "flow";
}

std::string_view to_string(Decision d) noexcept {
  switch (d) {
    case Decision::allow:
      return "allow";
    case Decision::deny:
      return "deny";
    case Decision::audit_deny:
      return "audit_deny";
    case Decision::forward:
      return "forward";
  }
  return "deny";
}

std::string_view to_string(CloseReason c) noexcept {
  switch (c) {
    case CloseReason::eof:
      return "eof";
    case CloseReason::reset:
      return "reset";
    case CloseReason::idle_timeout:
      return "idle_timeout";
    case CloseReason::sniff_timeout:
      return "sniff_timeout";
    case CloseReason::malformed:
      return "malformed";
    case CloseReason::denied:
      return "denied";
    case CloseReason::upstream_connect_failed:
      return "upstream_connect_failed";
    case CloseReason::drained:
      return "drained";
    case CloseReason::limit:
      return "limit";
    case CloseReason::revoked:
      return "revoked";
  }
  return "reset";
}

std::string_view to_string(config::Integrity i) noexcept {
  switch (i) {
    case config::Integrity::verify:
      return "verify";
    case config::Integrity::resolve:
      return "resolve";
    case config::Integrity::trust:
      return "trust";
  }
  return "verify";
}

void FlowRecord::add_host(std::string_view name) {
  if (!host) host.emplace(name);
  if (hosts.size() >= kMaxHosts) return;
  if (std::find(hosts.begin(), hosts.end(), name) != hosts.end()) return;
  hosts.emplace_back(name);
}

void append_timestamp(std::string& out, std::chrono::system_clock::time_point t) {
  using namespace std::chrono;
  constexpr sys_days kMin = sys_days{year{1970} / January / 1};
  constexpr sys_days kMax = sys_days{year{9999} / December / 31};
  auto ms = time_point_cast<milliseconds>(t);
  if (ms < kMin) ms = kMin;
  if (ms >= kMax + days{1}) ms = time_point_cast<milliseconds>(kMax + days{1}) - milliseconds{1};
  // floor, not truncation toward zero, so the day part is right for any ms.
  const sys_days day = floor<days>(ms);
  const year_month_day ymd{day};
  const hh_mm_ss<milliseconds> hms{ms - day};
  append_padded(out, static_cast<unsigned>(static_cast<int>(ymd.year())), 4);
  out += '-';
  append_padded(out, static_cast<unsigned>(ymd.month()), 2);
  out += '-';
  append_padded(out, static_cast<unsigned>(ymd.day()), 2);
  out += 'T';
  append_padded(out, static_cast<unsigned>(hms.hours().count()), 2);
  out += ':';
  append_padded(out, static_cast<unsigned>(hms.minutes().count()), 2);
  out += ':';
  append_padded(out, static_cast<unsigned>(hms.seconds().count()), 2);
  out += '.';
  append_padded(out, static_cast<unsigned>(hms.subseconds().count()), 3);
  out += 'Z';
}

void append_record_line(std::string& out, const FlowRecord& r) {
  out += "{\"time\":\"";
  append_timestamp(out, r.time);
  out += '"';
  string_field(out, "event", to_string(r.event));
  string_field(out, "listener", r.listener);
  endpoint_field(out, "src", r.src);
  if (r.source_pod) {
    const PodIdentity& p = *r.source_pod;
    if (!p.namespace_name.empty()) string_field(out, "namespace", p.namespace_name);
    if (!p.pod.empty()) string_field(out, "pod", p.pod);
    if (!p.service_account.empty()) string_field(out, "service_account", p.service_account);
  }
  if (r.dst) endpoint_field(out, "dst", *r.dst);
  string_field(out, "proto", to_string(r.proto));
  if (r.host) string_field(out, "host", *r.host);
  if (r.hosts.size() > 1) string_array_field(out, "hosts", r.hosts);
  if (r.alpn) string_array_field(out, "alpn", *r.alpn);
  if (r.ech) {
    key(out, "ech");
    out += *r.ech ? "true" : "false";
  }
  string_field(out, "decision", to_string(r.decision));
  string_field(out, "rule", r.rule);
  if (r.integrity) string_field(out, "integrity", to_string(*r.integrity));
  string_field(out, "reason", r.reason);
  if (r.upstream) endpoint_field(out, "upstream", *r.upstream);
  if (r.event == Event::flow) {
    key(out, "bytes_up");
    append_uint(out, r.bytes_up);
    key(out, "bytes_down");
    append_uint(out, r.bytes_down);
    key(out, "duration_ms");
    append_uint(out, static_cast<std::uint64_t>(std::max<std::int64_t>(0, r.duration.count())));
    string_field(out, "close", to_string(r.close));
  }
  out += "}\n";
}

}  // namespace egressd::log
