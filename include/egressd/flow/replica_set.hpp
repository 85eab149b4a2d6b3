#pragma once
// The central gateway's replicas as a node agent sees them (`forward`):
// every address its name resolves to (a headless Service gives one per
// replica), or one fixed address. Pure bookkeeping, no I/O and no clock of
// its own (the caller passes `now`), so the rules below are unit-tested.
//
// - New connections are spread round-robin over the replicas.
// - A replica that refused or timed out is skipped for new connections for
//   `skip_for`; when every replica not yet tried by a connection is skipped,
//   the one skipped the longest ago is tried anyway, so a fleet that came
//   back is found at once and the agent never refuses on its own.
// - One connection tries each replica at most once, and at most
//   kMaxAttempts replicas in all (its budget is timeouts.connect).
// - The name is looked up again when its DNS answer expires (its TTL,
//   through the shared cache), never per connection: one caller claims the
//   refresh, the others keep using the current addresses. A failed lookup
//   keeps the last good addresses and is retried after `retry_resolve`.
//
// Thread-safe: the workers of one listener share a set; each call holds a
// mutex for a few comparisons (no allocation except in update()).

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/core/ip.hpp"

namespace egressd::flow {

struct ReplicaSetOptions {
  std::chrono::milliseconds skip_for{5'000};       // after a refused or timed-out connect
  std::chrono::milliseconds retry_resolve{1'000};  // after a failed lookup; the least TTL
};

class ReplicaSet {
 public:
  using Clock = std::chrono::steady_clock;
  using TimePoint = Clock::time_point;

  static constexpr std::size_t kMaxAttempts = 4;

  using Options = ReplicaSetOptions;

  // The replicas one pod connection has tried, in order.
  class Attempts {
   public:
    [[nodiscard]] bool tried(const Endpoint& ep) const noexcept;
    void add(const Endpoint& ep) noexcept;  // ignored beyond kMaxAttempts
    [[nodiscard]] std::size_t count() const noexcept { return n_; }
    [[nodiscard]] std::optional<Endpoint> last() const noexcept;

   private:
    std::array<Endpoint, kMaxAttempts> tried_{};
    std::size_t n_ = 0;
  };

  // A fixed address: never resolved.
  explicit ReplicaSet(Endpoint fixed, Options options = {});
  // A DNS name (canonical: lowercase, no trailing dot) and the port every
  // replica listens on; empty until the first update().
  ReplicaSet(std::string name, std::uint16_t port, Options options = {});
  ReplicaSet(const ReplicaSet&) = delete;
  ReplicaSet& operator=(const ReplicaSet&) = delete;

  // "host:port" or "IP:port" as the config loader canonicalised it.
  static std::unique_ptr<ReplicaSet> from_target(std::string_view target, Options options = {});

  [[nodiscard]] const std::string& name() const noexcept { return name_; }  // "" when fixed
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }
  [[nodiscard]] std::size_t size() const;

  // The replica for a connection's next attempt: the next one round-robin
  // that `attempts` has not tried and that is not skipped at `now`; if all
  // untried ones are skipped, the one whose skip ends first. nullopt when
  // the set is empty, every replica was tried or kMaxAttempts is reached.
  std::optional<Endpoint> pick(TimePoint now, const Attempts& attempts);
  // How many more attempts `attempts` can make (to share out a deadline).
  [[nodiscard]] std::size_t attempts_left(const Attempts& attempts) const;

  // A connect refused or timed out: skip `replica` until now + skip_for.
  void failed(const Endpoint& replica, TimePoint now);
  // A connect succeeded: `replica` is no longer skipped.
  void succeeded(const Endpoint& replica);

  // DNS. True for exactly one caller when a lookup is due (the set is a
  // name whose answer expired; a claim older than 30 s counts as lost);
  // that caller then calls update() or resolve_failed(). While the set is
  // empty every caller may look up (the resolver coalesces them).
  bool claim_refresh(TimePoint now);
  // The current DNS answer: the replicas become `addresses` (duplicates
  // dropped, at most 64); a replica kept keeps its skip; an empty answer
  // keeps the replicas there were (a name that lost its records is not a
  // reason to stop forwarding). Next lookup at `refresh_at` (at least
  // retry_resolve from now).
  void update(std::span<const IpAddress> addresses, TimePoint now, TimePoint refresh_at);
  // The lookup failed: keep the replicas, look up again after retry_resolve.
  void resolve_failed(TimePoint now);

 private:
  struct Replica {
    Endpoint endpoint;
    TimePoint skip_until{};
  };
  static constexpr std::size_t kMaxReplicas = 64;
  static constexpr std::chrono::seconds kLostClaim{30};

  std::string name_;
  std::uint16_t port_ = 0;
  Options options_;
  mutable std::mutex mu_;
  std::vector<Replica> replicas_;
  std::size_t cursor_ = 0;
  TimePoint refresh_at_{};
  std::optional<TimePoint> claimed_at_;
};

}  // namespace egressd::flow
