#pragma once
// The asynchronous resolver behind destination integrity: c-ares on one
// dedicated thread, answers into the shared dns::Cache.
//
// - Servers from dns.servers, or /etc/resolv.conf when that list is empty.
// - Names are absolute: a name is queried exactly as given (with a final
//   dot), never with a search-list suffix, whatever resolv.conf says.
// - A and AAAA are asked together; the answer is their union.
// - dns.timeout bounds each lookup end to end; inside it c-ares tries each
//   server twice, the first try getting a third of the budget. A SERVFAIL
//   or REFUSED answer is final (reported as such, not retried elsewhere).
// - Concurrent lookups of one name, from any number of workers, share one
//   pair of queries.
// - Every failure is a failed answer with a reason; nothing fails open.
//
// Lifetime: destroy the Resolver before the io_contexts of the workers
// that call it. Destruction completes every pending resolve() with the
// failure "resolver stopped".

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "egressd/config/spec.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/dns/cache.hpp"

namespace egressd::dns {

struct ResolverOptions {
  std::vector<Endpoint> servers;  // empty = /etc/resolv.conf; port 0 means 53
  std::chrono::milliseconds timeout{2'000};
  // Distinct names being looked up at once; beyond it a lookup fails at
  // once ("resolver overloaded") instead of queueing without bound.
  std::size_t max_in_flight = 1024;
  // Where time comes from (cache freshness); tests inject their own.
  std::function<TimePoint()> clock = [] { return Clock::now(); };

  static ResolverOptions from(const config::DnsSpec& spec);
};

// Outcomes counted for egressd_dns_queries_total{result}. cache_hit and
// coalesced count resolve() calls that needed no query of their own; the
// others count lookups (one per name, covering its A and AAAA queries).
enum class QueryResult : std::uint8_t {
  cache_hit,
  coalesced,
  success,  // at least one address, or NODATA
  nxdomain,
  servfail,
  refused,
  timeout,
  error,       // network error, malformed response, invalid name
  overloaded,  // max_in_flight reached
};
inline constexpr std::size_t kQueryResultCount = 9;
// The label value, e.g. "cache_hit".
std::string_view to_string(QueryResult r) noexcept;

using QueryCounts = std::array<std::uint64_t, kQueryResultCount>;

class Resolver {
 public:
  // Starts the resolver thread. Throws std::runtime_error when c-ares
  // cannot be set up (bad server list, unreadable resolv.conf): start-up
  // only. `cache` must outlive the resolver.
  Resolver(Cache& cache, ResolverOptions options);
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;
  ~Resolver();

  // Resolves `canonical_name` (lowercase, no trailing dot, as the policy's
  // lookup_name) and returns the answer, also stored in the cache. A fresh
  // cached answer returns without suspending. Callable from any thread's
  // coroutine; resumes on the caller's own executor. Never throws for DNS
  // reasons: an invalid name, a failed or timed-out lookup, overload and
  // shutdown are failed answers. Honours cancellation (e.g. the `||`
  // operator): a cancelled call returns the failure "cancelled" at once and
  // the lookup goes on for the other waiters and the cache.
  boost::asio::awaitable<Answer> resolve(std::string canonical_name);

  [[nodiscard]] Cache& cache() noexcept { return cache_; }
  [[nodiscard]] QueryCounts snapshot() const noexcept;

  struct Impl;

 private:
  Cache& cache_;
  std::shared_ptr<Impl> impl_;
};

}  // namespace egressd::dns
