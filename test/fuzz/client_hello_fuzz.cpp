// libFuzzer target for parse_client_hello.
//
// Besides "never crash", checks the parser's contract on every input:
//  - a final verdict on a prefix does not change when the rest arrives
//    (the input is fed in two pieces at a data-derived split, as TCP would);
//  - found consumes no more than it was given, and reports what a second
//    parse of exactly the consumed bytes reports.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "egressd/sniff/client_hello.hpp"

namespace {

bool same(const egressd::sniff::ClientHelloResult& a, const egressd::sniff::ClientHelloResult& b) {
  if (a.status != b.status || a.reason != b.reason) return false;
  if (a.status != egressd::sniff::Status::found) return true;
  const auto& x = a.hello;
  const auto& y = b.hello;
  return x.sni == y.sni && x.has_sni == y.has_sni && x.alpn == y.alpn &&
         x.supported_versions == y.supported_versions && x.ech == y.ech &&
         x.bytes_consumed == y.bytes_consumed && x.record_count == y.record_count &&
         x.record_version == y.record_version && x.legacy_version == y.legacy_version;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using egressd::sniff::Status;
  const std::span<const std::uint8_t> all(data, size);
  const auto whole = egressd::sniff::parse_client_hello(all);

  const std::size_t split = size == 0 ? 0 : (data[0] * 257U + data[size - 1]) % (size + 1);
  const auto first = egressd::sniff::parse_client_hello(all.first(split));
  if (first.status != Status::need_more && !same(first, whole)) std::abort();

  if (whole.status == Status::found) {
    if (whole.hello.bytes_consumed > size || whole.hello.bytes_consumed == 0) std::abort();
    const auto exact = egressd::sniff::parse_client_hello(all.first(whole.hello.bytes_consumed));
    if (!same(exact, whole)) std::abort();
  } else if (whole.status != Status::need_more && whole.reason.empty()) {
    std::abort();
  }
  return 0;
}
