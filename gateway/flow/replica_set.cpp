#include "egressd/flow/replica_set.hpp"

#include <algorithm>
#include <memory>

namespace egressd::flow {

bool ReplicaSet::Attempts::tried(const Endpoint& ep) const noexcept {
  return std::find(tried_.begin(), tried_.begin() + static_cast<std::ptrdiff_t>(n_), ep) !=
         tried_.begin() + static_cast<std::ptrdiff_t>(n_);
}

void ReplicaSet::Attempts::add(const Endpoint& ep) noexcept {
  if (n_ < tried_.size()) tried_[n_++] = ep;
}

std::optional<Endpoint> ReplicaSet::Attempts::last() const noexcept {
  if (n_ == 0) return std::nullopt;
  return tried_[n_ - 1];
}

ReplicaSet::ReplicaSet(Endpoint fixed, Options options) : port_(fixed.port), options_(options) {
  replicas_.push_back({fixed, {}});
}

ReplicaSet::ReplicaSet(std::string name, std::uint16_t port, Options options)
    : name_(std::move(name)), port_(port), options_(options) {}

std::unique_ptr<ReplicaSet> ReplicaSet::from_target(std::string_view target, Options options) {
  if (auto ep = Endpoint::parse(target)) return std::make_unique<ReplicaSet>(*ep, options);
  const auto colon = target.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return nullptr;
  unsigned port = 0;
  const std::string_view digits = target.substr(colon + 1);
  if (digits.empty() || digits.size() > 5) return nullptr;
  for (char c : digits) {
    if (c < '0' || c > '9') return nullptr;
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  if (port == 0 || port > 65535) return nullptr;
  return std::make_unique<ReplicaSet>(std::string(target.substr(0, colon)),
                                      static_cast<std::uint16_t>(port), options);
}

std::size_t ReplicaSet::size() const {
  std::lock_guard lock(mu_);
  return replicas_.size();
}

std::optional<Endpoint> ReplicaSet::pick(TimePoint now, const Attempts& attempts) {
  std::lock_guard lock(mu_);
  const std::size_t n = replicas_.size();
  if (n == 0 || attempts.count() >= kMaxAttempts) return std::nullopt;
  // Round-robin over the replicas not skipped.
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t idx = (cursor_ + i) % n;
    const Replica& r = replicas_[idx];
    if (r.skip_until <= now && !attempts.tried(r.endpoint)) {
      cursor_ = (idx + 1) % n;
      return r.endpoint;
    }
  }
  // Every untried replica is skipped: try the one skipped the longest ago
  // rather than refusing (they may all be back).
  std::optional<std::size_t> best;
  for (std::size_t idx = 0; idx < n; ++idx) {
    if (attempts.tried(replicas_[idx].endpoint)) continue;
    if (!best || replicas_[idx].skip_until < replicas_[*best].skip_until) best = idx;
  }
  if (!best) return std::nullopt;
  cursor_ = (*best + 1) % n;
  return replicas_[*best].endpoint;
}

std::size_t ReplicaSet::attempts_left(const Attempts& attempts) const {
  std::lock_guard lock(mu_);
  std::size_t untried = 0;
  for (const Replica& r : replicas_) {
    if (!attempts.tried(r.endpoint)) ++untried;
  }
  return std::min(untried, kMaxAttempts - std::min(kMaxAttempts, attempts.count()));
}

void ReplicaSet::failed(const Endpoint& replica, TimePoint now) {
  std::lock_guard lock(mu_);
  for (Replica& r : replicas_) {
    if (r.endpoint == replica) r.skip_until = now + options_.skip_for;
  }
}

void ReplicaSet::succeeded(const Endpoint& replica) {
  std::lock_guard lock(mu_);
  for (Replica& r : replicas_) {
    if (r.endpoint == replica) r.skip_until = {};
  }
}

bool ReplicaSet::claim_refresh(TimePoint now) {
  if (name_.empty()) return false;
  std::lock_guard lock(mu_);
  if (replicas_.empty()) return true;
  if (now < refresh_at_) return false;
  if (claimed_at_ && now < *claimed_at_ + kLostClaim) return false;
  claimed_at_ = now;
  return true;
}

void ReplicaSet::update(std::span<const IpAddress> addresses, TimePoint now, TimePoint refresh_at) {
  std::vector<Replica> next;
  next.reserve(std::min(addresses.size(), kMaxReplicas));
  {
    std::lock_guard lock(mu_);
    for (const IpAddress& ip : addresses) {
      if (next.size() >= kMaxReplicas) break;
      const Endpoint ep{ip, port_};
      if (std::any_of(next.begin(), next.end(), [&](const Replica& r) { return r.endpoint == ep; }))
        continue;
      auto old = std::find_if(replicas_.begin(), replicas_.end(),
                              [&](const Replica& r) { return r.endpoint == ep; });
      next.push_back({ep, old != replicas_.end() ? old->skip_until : TimePoint{}});
    }
    if (!next.empty() || replicas_.empty()) {
      replicas_.swap(next);
      if (!replicas_.empty()) cursor_ %= replicas_.size();
    }
    refresh_at_ = std::max(refresh_at, now + options_.retry_resolve);
    claimed_at_.reset();
  }
}

void ReplicaSet::resolve_failed(TimePoint now) {
  std::lock_guard lock(mu_);
  refresh_at_ = now + options_.retry_resolve;
  claimed_at_.reset();
}

}  // namespace egressd::flow
