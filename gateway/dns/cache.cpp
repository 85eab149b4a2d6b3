#include "egressd/dns/cache.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <utility>

namespace egressd::dns {

namespace {

// An address from an earlier answer and the moment that answer stopped
// being current; it counts until last_valid + verify_window.
struct Past {
  IpAddress address;
  TimePoint last_valid;
};

struct Entry {
  std::vector<IpAddress> current;  // empty while failed
  TimePoint expires{};
  bool failed = false;
  std::string error;
  std::vector<Past> history;  // most recently valid first, disjoint from current
  // Written under the shared lock by readers, hence atomic; only ordering
  // among evictions depends on it, so relaxed is enough.
  mutable std::atomic<TimePoint::rep> last_used{0};
};

struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

using Map = std::unordered_map<std::string, Entry, NameHash, std::equal_to<>>;

bool contains(const std::vector<IpAddress>& v, const IpAddress& a) noexcept {
  return std::find(v.begin(), v.end(), a) != v.end();
}

Answer build_answer(const Entry& e, TimePoint now, std::chrono::milliseconds window) {
  Answer out;
  if (e.failed) {
    out.status = Answer::Status::failed;
    out.error = e.error;
    return out;
  }
  out.status = Answer::Status::ok;
  out.addresses.reserve(e.current.size() + e.history.size());
  out.addresses.assign(e.current.begin(), e.current.end());
  out.current = e.current.size();
  out.expires = e.expires;
  for (const Past& p : e.history) {
    if (p.last_valid + window < now) break;  // sorted: the rest are older
    out.addresses.push_back(p.address);
  }
  return out;
}

// The current answer leaves; its addresses join the history as valid until
// now (or until they expired, if that came first).
void retire_current(Entry& e, TimePoint now) {
  const TimePoint valid_until = std::min(e.expires, now);
  for (const IpAddress& a : e.current) {
    auto it = std::find_if(e.history.begin(), e.history.end(),
                           [&](const Past& p) { return p.address == a; });
    if (it == e.history.end()) {
      e.history.push_back({a, valid_until});
    } else {
      it->last_valid = std::max(it->last_valid, valid_until);
    }
  }
  e.current.clear();
}

void tidy_history(Entry& e, TimePoint now, std::chrono::milliseconds window, std::size_t cap) {
  std::erase_if(e.history, [&](const Past& p) {
    return p.last_valid + window < now || contains(e.current, p.address);
  });
  std::stable_sort(e.history.begin(), e.history.end(),
                   [](const Past& a, const Past& b) { return a.last_valid > b.last_valid; });
  const std::size_t room = cap > e.current.size() ? cap - e.current.size() : 0;
  if (e.history.size() > room) e.history.resize(room);
}

bool is_dead(const Entry& e, TimePoint now, std::chrono::milliseconds window) noexcept {
  if (now < e.expires) return false;
  return std::all_of(e.history.begin(), e.history.end(),
                     [&](const Past& p) { return p.last_valid + window < now; });
}

}  // namespace

struct Cache::Shard {
  mutable std::shared_mutex mu;
  Map map;
};

CacheOptions CacheOptions::from(const config::DnsSpec& spec) {
  CacheOptions o;
  o.verify_window = spec.verify_window;
  return o;
}

Cache::Cache(CacheOptions options) : options_(options) {
  options_.shards = std::max<std::size_t>(1, options_.shards);
  options_.max_addresses_per_name = std::max<std::size_t>(1, options_.max_addresses_per_name);
  options_.min_ttl = std::max(options_.min_ttl, std::chrono::seconds{0});
  options_.max_ttl = std::max(options_.max_ttl, options_.min_ttl);
  shards_ = std::make_unique<Shard[]>(options_.shards);
  per_shard_cap_ = std::max<std::size_t>(1, options_.max_names / options_.shards);
}

Cache::~Cache() = default;

Cache::Shard& Cache::shard_for(std::string_view name) const noexcept {
  return shards_[NameHash{}(name) % options_.shards];
}

std::optional<Answer> Cache::find(std::string_view name, TimePoint now) const {
  Shard& s = shard_for(name);
  std::shared_lock lock(s.mu);
  auto it = s.map.find(name);
  if (it == s.map.end() || now >= it->second.expires) return std::nullopt;
  it->second.last_used.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  return build_answer(it->second, now, options_.verify_window);
}

namespace {

// Makes room for one more name in a full shard: first the names with
// nothing left to say (expired, history outside the window), then the
// least recently used eighth, so eviction cost is amortised over many
// inserts rather than paid on each.
void evict(Map& map, std::size_t cap, TimePoint now, std::chrono::milliseconds window) {
  std::erase_if(map, [&](const auto& kv) { return is_dead(kv.second, now, window); });
  if (map.size() < cap) return;
  std::vector<std::pair<TimePoint::rep, Map::iterator>> by_use;
  by_use.reserve(map.size());
  for (auto it = map.begin(); it != map.end(); ++it) {
    by_use.emplace_back(it->second.last_used.load(std::memory_order_relaxed), it);
  }
  const std::size_t keep = cap - std::min(cap, std::max<std::size_t>(1, cap / 8));
  const std::size_t n = by_use.size() - std::min(by_use.size(), keep);
  if (n == 0) return;
  auto nth = by_use.begin() + static_cast<std::ptrdiff_t>(n);
  std::nth_element(by_use.begin(), nth - 1, by_use.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto it = by_use.begin(); it != nth; ++it) map.erase(it->second);
}

Entry& entry_for(Map& map, std::string_view name, std::size_t cap, TimePoint now,
                 std::chrono::milliseconds window) {
  if (auto it = map.find(name); it != map.end()) return it->second;
  if (map.size() >= cap) evict(map, cap, now, window);
  return map.try_emplace(std::string(name)).first->second;
}

}  // namespace

Answer Cache::store_success(std::string_view name, std::span<const IpAddress> addresses,
                            std::chrono::seconds ttl, TimePoint now) {
  Shard& s = shard_for(name);
  std::unique_lock lock(s.mu);
  Entry& e = entry_for(s.map, name, per_shard_cap_, now, options_.verify_window);
  retire_current(e, now);
  for (const IpAddress& a : addresses) {
    if (e.current.size() >= options_.max_addresses_per_name) break;
    if (!contains(e.current, a)) e.current.push_back(a);
  }
  tidy_history(e, now, options_.verify_window, options_.max_addresses_per_name);
  const std::chrono::seconds life = e.current.empty()
                                        ? options_.negative_ttl
                                        : std::clamp(ttl, options_.min_ttl, options_.max_ttl);
  e.expires = now + life;
  e.failed = false;
  e.error.clear();
  e.last_used.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  return build_answer(e, now, options_.verify_window);
}

Answer Cache::store_failure(std::string_view name, std::string_view error, FailureKind kind,
                            TimePoint now) {
  Shard& s = shard_for(name);
  std::unique_lock lock(s.mu);
  Entry& e = entry_for(s.map, name, per_shard_cap_, now, options_.verify_window);
  retire_current(e, now);
  tidy_history(e, now, options_.verify_window, options_.max_addresses_per_name);
  e.expires = now + (kind == FailureKind::negative ? options_.negative_ttl : options_.error_ttl);
  e.failed = true;
  e.error.assign(error);
  e.last_used.store(now.time_since_epoch().count(), std::memory_order_relaxed);
  return build_answer(e, now, options_.verify_window);
}

std::size_t Cache::size() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < options_.shards; ++i) {
    std::shared_lock lock(shards_[i].mu);
    n += shards_[i].map.size();
  }
  return n;
}

void CacheAnswers::pin(std::string name, Answer answer) {
  for (Pinned& p : pinned_) {
    if (p.name == name) {
      p.answer = std::move(answer);
      return;
    }
  }
  pinned_.push_back({std::move(name), std::move(answer)});
}

std::optional<policy::NameAnswer> CacheAnswers::find(std::string_view canonical_name) const {
  const Answer* source = nullptr;
  for (const Pinned& p : pinned_) {
    if (p.name == canonical_name) source = &p.answer;
  }
  if (source != nullptr) {
    held_.push_back(*source);
  } else {
    std::optional<Answer> found = cache_.find(canonical_name, now_);
    if (!found) return std::nullopt;
    held_.push_back(std::move(*found));
  }
  const Answer& a = held_.back();
  policy::NameAnswer out;
  out.status = a.ok() ? policy::NameAnswer::Status::ok : policy::NameAnswer::Status::failed;
  out.addresses = a.addresses;
  out.error = a.error;
  return out;
}

}  // namespace egressd::dns
