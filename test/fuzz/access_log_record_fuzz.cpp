// Access-log records built from arbitrary bytes (names come from untrusted
// traffic) must always format as exactly one line of valid JSON with every
// field present; /proc text parsers must never crash on any input.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/parse.hpp>

#include "egressd/log/record.hpp"
#include "egressd/metrics/process.hpp"

namespace {

// Splits the input at NUL bytes: field i of the record takes piece i.
std::vector<std::string_view> pieces(std::string_view in) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (out.size() < 40) {
    const auto end = in.find('\0', start);
    out.push_back(
        in.substr(start, end == std::string_view::npos ? in.size() - start : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  (void)egressd::metrics::parse_proc_stat(in);
  (void)egressd::metrics::parse_boot_time(in);

  const auto p = pieces(in);
  const auto at = [&](std::size_t i) { return i < p.size() ? p[i] : std::string_view(); };
  const std::uint8_t flags = size > 0 ? data[0] : 0;

  egressd::log::FlowRecord r;
  r.event = static_cast<egressd::log::Event>(flags % 3);
  r.time = std::chrono::system_clock::time_point{
      std::chrono::milliseconds{static_cast<std::int64_t>(size) * 1'000'003}};
  r.listener = at(0);
  r.rule = at(1);
  r.reason = at(2);
  if ((flags & 0x08) != 0)
    r.alpn = std::vector<std::string>{std::string(at(3)), std::string(at(4))};
  if ((flags & 0x10) != 0) r.ech = (flags & 0x20) != 0;
  for (std::size_t i = 5; i < p.size(); ++i) r.add_host(p[i]);
  r.bytes_up = size;
  r.duration = std::chrono::milliseconds{-static_cast<std::int64_t>(size)};

  std::string line;
  egressd::log::append_record_line(line, r);
  if (line.empty() || line.back() != '\n' || line.find('\n') != line.size() - 1) std::abort();
  boost::system::error_code ec;
  const auto v = boost::json::parse(line, ec);
  if (ec || !v.is_object()) std::abort();
  const auto& o = v.as_object();
  if (!o.contains("time") || !o.contains("listener") || !o.contains("rule") ||
      !o.contains("reason") || !o.contains("decision")) {
    std::abort();
  }
  if (r.host && !o.contains("host")) std::abort();
  return 0;
}
