#pragma once
// The DNS answer cache shared by every worker (contract "Destination
// integrity": answers cached by TTL, one cache for all workers, an address
// seen for a name within dns.verify_window still counts).
//
// Per name the cache keeps
//   - the current answer: the addresses of the latest successful lookup (or
//     the failure of the latest lookup) and when it expires;
//   - a history: each address the name had in an earlier answer, with the
//     time that answer stopped being current (expired or was replaced). An
//     address counts for verify_window after that time, so round-robin DNS
//     (each answer a different subset) does not cause false denies.
// A failed lookup reports failure while it is fresh, whatever the history
// holds: DNS failure is a deny with a reason, never an allow. The history
// is kept through the failure and counts again after the next success.
//
// Bounds, so a hostile client cannot grow memory without limit: at most
// `max_names` names (the least recently used are evicted, expired ones
// first) and at most `max_addresses_per_name` addresses per name.
//
// Thread safety: every member function may be called from any thread.
// Readers of different names rarely contend (the map is sharded; readers
// share a shard's lock).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/config/spec.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/policy/policy.hpp"

namespace egressd::dns {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;

// What the cache knows about one name at one moment.
struct Answer {
  enum class Status : std::uint8_t { ok, failed };
  Status status = Status::failed;
  // When ok: the current answer first (in the order the server gave it, A
  // before AAAA), then addresses from the history still inside the window,
  // most recently valid first; no duplicates. May be empty (NODATA).
  std::vector<IpAddress> addresses;
  std::string error;  // when failed: "NXDOMAIN", "SERVFAIL", "timeout", ...
  // How many of `addresses` (the first ones) are the current answer, and
  // when that answer expires (its clamped TTL): what a user of the name
  // itself, rather than of its history, needs (a node agent's replicas).
  std::size_t current = 0;
  TimePoint expires{};

  [[nodiscard]] bool ok() const noexcept { return status == Status::ok; }
};

struct CacheOptions {
  // A positive answer lives for its TTL clamped to [min_ttl, max_ttl]: the
  // floor keeps TTL-0 names from costing a lookup per flow, the ceiling
  // bounds how long a changed record goes unseen.
  std::chrono::seconds min_ttl{5};
  std::chrono::seconds max_ttl{3600};
  // NXDOMAIN and NODATA (the name definitely has no address).
  std::chrono::seconds negative_ttl{5};
  // Timeouts, SERVFAIL, REFUSED and other transient failures: short, so a
  // resolver hiccup denies for at most this long.
  std::chrono::seconds error_ttl{1};
  std::chrono::milliseconds verify_window{300'000};
  std::size_t max_names = 10'000;
  std::size_t max_addresses_per_name = 64;  // current + history
  std::size_t shards = 16;                  // >= 1; tests use 1 for exact eviction

  // The contract's dns.verify_window; the rest keep their defaults.
  static CacheOptions from(const config::DnsSpec& spec);
};

// How a failed lookup is kept (which TTL applies).
enum class FailureKind : std::uint8_t {
  negative,   // NXDOMAIN: negative_ttl
  transient,  // timeout, SERVFAIL, REFUSED, network error: error_ttl
};

class Cache {
 public:
  explicit Cache(CacheOptions options = {});
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;
  ~Cache();

  // The fresh answer for `name` (canonical: lowercase, no trailing dot) at
  // `now`; nullopt when the name is unknown or its answer expired (a new
  // lookup is due). Allocates only the returned answer.
  [[nodiscard]] std::optional<Answer> find(std::string_view name, TimePoint now) const;

  // Records a successful lookup at `now`: `addresses` become the current
  // answer for `ttl` (clamped; an empty list is NODATA and lives for
  // negative_ttl). The previous current addresses move into the history.
  // `ttl` is the smallest TTL among the records. Returns the answer as
  // find() would give it at `now` (also when the name was evicted at once).
  Answer store_success(std::string_view name, std::span<const IpAddress> addresses,
                       std::chrono::seconds ttl, TimePoint now);

  // Records a failed lookup: the name reports `error` until the failure's
  // TTL (by `kind`) passes. The history is kept.
  Answer store_failure(std::string_view name, std::string_view error, FailureKind kind,
                       TimePoint now);

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] const CacheOptions& options() const noexcept { return options_; }

  struct Shard;

 private:
  Shard& shard_for(std::string_view name) const noexcept;

  CacheOptions options_;
  std::unique_ptr<Shard[]> shards_;
  std::size_t per_shard_cap_ = 0;
};

// The policy's view of the cache for one flow (policy::NameAnswers), as of
// the time point it was made. Spans and error texts it returns stay valid
// while the view lives: each find() copies into storage the view owns.
//
// `pin` puts the answer a lookup returned in front of the cache, so the
// decision that follows the lookup sees it even if the cache evicted the
// name in between (a flood of names could do that).
//
// One view belongs to one flow: not thread-safe.
class CacheAnswers final : public policy::NameAnswers {
 public:
  CacheAnswers(const Cache& cache, TimePoint now) : cache_(cache), now_(now) {}

  void pin(std::string name, Answer answer);

  [[nodiscard]] std::optional<policy::NameAnswer> find(
      std::string_view canonical_name) const override;

 private:
  struct Pinned {
    std::string name;
    Answer answer;
  };
  const Cache& cache_;
  TimePoint now_;
  std::vector<Pinned> pinned_;
  // What find() returned; a deque, so growing never moves earlier answers.
  mutable std::deque<Answer> held_;
};

}  // namespace egressd::dns
