#include "egressd/dns/resolver.hpp"

#include <netinet/in.h>
#include <poll.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>
#include <utility>

#include <ares.h>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "egressd/core/hostname.hpp"

namespace egressd::dns {

namespace asio = boost::asio;

namespace {

constexpr int kClassIn = 1;
constexpr int kTypeA = 1;
constexpr int kTypeAaaa = 28;
// Reads per readiness event before giving the loop back; c-ares drains UDP
// sockets itself, TCP needs one call per segment.
constexpr int kMaxDrain = 64;
constexpr int kTries = 2;
constexpr int kEdnsPayloadSize = 1232;

Answer failed(std::string_view why) {
  Answer a;
  a.status = Answer::Status::failed;
  a.error = std::string(why);
  return a;
}

struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

// One resolve() call waiting for a lookup. complete() runs on the resolver
// thread, exactly once, and hands the answer to the caller's executor.
class Waiter {
 public:
  Waiter() = default;
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;
  virtual ~Waiter() = default;
  virtual void complete(Answer answer) = 0;
};

template <class Handler>
class HandlerWaiter final : public Waiter {
 public:
  explicit HandlerWaiter(Handler h)
      : handler_(std::move(h)),
        // Tracked: the caller's io_context must not run out of work while
        // its coroutine waits on another thread.
        work_(asio::prefer(asio::get_associated_executor(handler_),
                           asio::execution::outstanding_work.tracked)) {}

  void complete(Answer answer) override {
    asio::post(work_, [h = std::move(handler_), a = std::move(answer)]() mutable {
      // Our cancellation handler must not outlive the operation.
      asio::get_associated_cancellation_slot(h).clear();
      std::move(h)(std::move(a));
    });
  }

 private:
  Handler handler_;
  asio::any_io_executor work_;
};

struct FamilyResult {
  bool done = false;
  int status = ARES_SUCCESS;
  std::vector<IpAddress> addresses;
  int min_ttl = INT_MAX;
};

struct Lookup {
  Lookup(asio::io_context& ioc, std::string n, std::uint64_t i)
      : name(std::move(n)), id(i), deadline(ioc) {}
  std::string name;
  std::uint64_t id;
  FamilyResult v4;
  FamilyResult v6;
  std::vector<std::pair<std::uint64_t, std::unique_ptr<Waiter>>> waiters;
  asio::steady_timer deadline;
};

// A socket c-ares asked us to watch. The descriptor does not own the fd:
// c-ares closes it, after telling us (released first).
struct Watch {
  Watch(asio::io_context& ioc, std::uint64_t g) : sd(ioc), generation(g) {}
  asio::posix::stream_descriptor sd;
  std::uint64_t generation;
  bool want_read = false;
  bool want_write = false;
  bool reading = false;
  bool writing = false;
};

std::string server_csv(const std::vector<Endpoint>& servers) {
  std::string csv;
  for (const Endpoint& e : servers) {
    if (!csv.empty()) csv += ',';
    const std::uint16_t port = e.port == 0 ? 53 : e.port;
    if (e.ip.is_v6()) {
      csv += '[' + e.ip.to_string() + "]:" + std::to_string(port);
    } else {
      csv += e.ip.to_string() + ':' + std::to_string(port);
    }
  }
  return csv;
}

bool is_definite(int status) noexcept {
  return status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND;
}

struct Failure {
  QueryResult result;
  std::string_view reason;
};

Failure describe_failure(int status) noexcept {
  switch (status) {
    case ARES_ETIMEOUT:
      return {QueryResult::timeout, "timeout"};
    case ARES_ESERVFAIL:
      return {QueryResult::servfail, "SERVFAIL"};
    case ARES_EREFUSED:
      return {QueryResult::refused, "REFUSED"};
    case ARES_ENOTIMP:
      return {QueryResult::error, "NOTIMP"};
    case ARES_EFORMERR:
      return {QueryResult::error, "FORMERR"};
    case ARES_ECONNREFUSED:
      return {QueryResult::error, "connection refused by the DNS server"};
    case ARES_EBADRESP:
      return {QueryResult::error, "malformed DNS response"};
    case ARES_ENOMEM:
      return {QueryResult::error, "out of memory"};
    default:
      return {QueryResult::error, "DNS error"};
  }
}

std::once_flag g_library_once;

}  // namespace

std::string_view to_string(QueryResult r) noexcept {
  switch (r) {
    case QueryResult::cache_hit:
      return "cache_hit";
    case QueryResult::coalesced:
      return "coalesced";
    case QueryResult::success:
      return "success";
    case QueryResult::nxdomain:
      return "nxdomain";
    case QueryResult::servfail:
      return "servfail";
    case QueryResult::refused:
      return "refused";
    case QueryResult::timeout:
      return "timeout";
    case QueryResult::error:
      return "error";
    case QueryResult::overloaded:
      return "overloaded";
  }
  return "error";
}

ResolverOptions ResolverOptions::from(const config::DnsSpec& spec) {
  ResolverOptions o;
  o.servers = spec.servers;
  o.timeout = spec.timeout;
  return o;
}

// Everything below runs on the resolver thread, except count(), the
// counters, next_waiter_id and post().
struct Resolver::Impl {
  Impl(Cache& c, ResolverOptions o) : cache(c), options(std::move(o)) {}

  Cache& cache;
  ResolverOptions options;
  asio::io_context ioc{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard{ioc.get_executor()};
  asio::steady_timer ares_timer{ioc};
  ares_channel channel = nullptr;
  std::unordered_map<int, std::unique_ptr<Watch>> watches;
  std::uint64_t next_generation = 1;
  std::unordered_map<std::string, std::unique_ptr<Lookup>, NameHash, std::equal_to<>> lookups;
  std::uint64_t next_lookup_id = 1;
  std::atomic<std::uint64_t> next_waiter_id{1};
  std::array<std::atomic<std::uint64_t>, kQueryResultCount> counts{};
  bool stopping = false;
  std::thread thread;

  void count(QueryResult r) noexcept {
    counts[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed);
  }

  void init_channel() {
    std::call_once(g_library_once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
    ares_options opts{};
    int mask = 0;
    // No search list and no HOSTALIASES: names are absolute (contract).
    // NOCHECKRESP: a SERVFAIL or REFUSED answer is reported as such; without
    // it c-ares 1.18 tries the next server and, once all are used, reports
    // the misleading "connection refused".
    // EDNS(0) with a 1232-byte UDP payload (the DNS flag day size): answers
    // up to that size come in one datagram instead of a truncated one and a
    // retry over TCP. c-ares asks again without EDNS if a server answers
    // FORMERR.
    opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | ARES_FLAG_NOCHECKRESP | ARES_FLAG_EDNS;
    mask |= ARES_OPT_FLAGS;
    opts.ednspsz = kEdnsPayloadSize;
    mask |= ARES_OPT_EDNSPSZ;
    // c-ares doubles the per-try timeout on each round: a third, then two
    // thirds, fit dns.timeout; our own deadline enforces it regardless.
    const auto total = std::max<std::chrono::milliseconds::rep>(3, options.timeout.count());
    opts.timeout = static_cast<int>(std::min<std::chrono::milliseconds::rep>(total / 3, INT_MAX));
    mask |= ARES_OPT_TIMEOUTMS;
    opts.tries = kTries;
    mask |= ARES_OPT_TRIES;
    opts.sock_state_cb = &Impl::on_sock_state_cb;
    opts.sock_state_cb_data = this;
    mask |= ARES_OPT_SOCK_STATE_CB;
    if (const int rc = ares_init_options(&channel, &opts, mask); rc != ARES_SUCCESS) {
      throw std::runtime_error(std::string("cannot initialise the DNS resolver: ") +
                               ares_strerror(rc));
    }
    if (!options.servers.empty()) {
      const std::string csv = server_csv(options.servers);
      if (const int rc = ares_set_servers_ports_csv(channel, csv.c_str()); rc != ARES_SUCCESS) {
        ares_destroy(channel);
        channel = nullptr;
        throw std::runtime_error("cannot use DNS servers " + csv + ": " + ares_strerror(rc));
      }
    }
  }

  // --- c-ares sockets and timers on the io_context -------------------------

  // c-ares calls back through C frames: nothing may propagate out of the
  // callbacks. The only exception possible is bad_alloc; a lookup it breaks
  // still ends at its deadline.
  static void on_sock_state_cb(void* data, ares_socket_t fd, int readable, int writable) noexcept {
    try {
      static_cast<Impl*>(data)->on_sock_state(fd, readable != 0, writable != 0);
    } catch (...) {  // NOLINT(bugprone-empty-catch): see above
    }
  }

  void on_sock_state(int fd, bool readable, bool writable) {
    auto it = watches.find(fd);
    if (!readable && !writable) {
      // c-ares is about to close fd: let go of it first.
      if (it != watches.end()) {
        boost::system::error_code ignored;
        it->second->sd.cancel(ignored);
        it->second->sd.release();
        watches.erase(it);
      }
      return;
    }
    if (it == watches.end()) {
      auto w = std::make_unique<Watch>(ioc, next_generation++);
      boost::system::error_code ec;
      w->sd.assign(fd, ec);
      if (ec) return;  // not watchable: the lookup's deadline answers
      it = watches.emplace(fd, std::move(w)).first;
    }
    it->second->want_read = readable;
    it->second->want_write = writable;
    arm(fd);
  }

  void arm(int fd) {
    auto it = watches.find(fd);
    if (it == watches.end()) return;
    Watch& w = *it->second;
    const std::uint64_t gen = w.generation;
    if (w.want_read && !w.reading) {
      w.reading = true;
      w.sd.async_wait(
          asio::posix::descriptor_base::wait_read,
          [this, fd, gen](boost::system::error_code ec) { on_ready(fd, gen, ec, true); });
    }
    if (w.want_write && !w.writing) {
      w.writing = true;
      w.sd.async_wait(
          asio::posix::descriptor_base::wait_write,
          [this, fd, gen](boost::system::error_code ec) { on_ready(fd, gen, ec, false); });
    }
  }

  Watch* current_watch(int fd, std::uint64_t gen) {
    auto it = watches.find(fd);
    return it != watches.end() && it->second->generation == gen ? it->second.get() : nullptr;
  }

  void on_ready(int fd, std::uint64_t gen, boost::system::error_code ec, bool read) {
    Watch* w = current_watch(fd, gen);
    if (w == nullptr) return;  // released since: a stale wait
    (read ? w->reading : w->writing) = false;
    if (ec == asio::error::operation_aborted) return;
    if (read) {
      // The reactor is edge-triggered: keep going while data remains, or a
      // partly drained socket would never wake us again.
      for (int i = 0; i < kMaxDrain; ++i) {
        ares_process_fd(channel, fd, ARES_SOCKET_BAD);
        w = current_watch(fd, gen);
        if (w == nullptr || !w->want_read) break;
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 0) <= 0) break;
      }
    } else {
      ares_process_fd(channel, ARES_SOCKET_BAD, fd);
    }
    arm(fd);
    reschedule();
  }

  void reschedule() {
    if (channel == nullptr) return;
    timeval tv{};
    if (ares_timeout(channel, nullptr, &tv) == nullptr) {
      ares_timer.cancel();
      return;
    }
    ares_timer.expires_after(std::chrono::seconds{tv.tv_sec} +
                             std::chrono::microseconds{tv.tv_usec});
    ares_timer.async_wait([this](boost::system::error_code ec) {
      if (ec == asio::error::operation_aborted || channel == nullptr) return;
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      reschedule();
    });
  }

  // --- lookups --------------------------------------------------------------

  struct QueryArg {
    Impl* impl;
    std::string name;
    std::uint64_t lookup_id;
    bool v6;
  };

  static void on_answer_cb(void* arg, int status, int /*timeouts*/, unsigned char* abuf,
                           int alen) noexcept {
    std::unique_ptr<QueryArg> q(static_cast<QueryArg*>(arg));
    if (status == ARES_EDESTRUCTION) return;  // shutting down: waiters already answered
    try {
      q->impl->on_answer(*q, status, abuf, alen);
    } catch (...) {  // NOLINT(bugprone-empty-catch): see on_sock_state_cb
    }
  }

  Lookup* find_lookup(std::string_view name, std::uint64_t id) {
    auto it = lookups.find(name);
    return it != lookups.end() && it->second->id == id ? it->second.get() : nullptr;
  }

  void on_answer(const QueryArg& q, int status, const unsigned char* abuf, int alen) {
    Lookup* lk = find_lookup(q.name, q.lookup_id);
    if (lk == nullptr) return;  // the deadline answered already
    FamilyResult& f = q.v6 ? lk->v6 : lk->v4;
    if (f.done) return;
    f.done = true;
    f.status = status;
    if (status == ARES_SUCCESS) parse(q.v6, abuf, alen, cache.options().max_addresses_per_name, f);
    if (lk->v4.done && lk->v6.done) finish(*lk);
  }

  // The answer section, via c-ares (which follows the CNAME chain from the
  // question and checks every length).
  // At most `keep` addresses per family: as many as the cache keeps for a
  // name, so that every address a flow may be checked against later was
  // read (a destination past them is denied: builtin:integrity).
  static void parse(bool v6, const unsigned char* abuf, int alen, std::size_t keep,
                    FamilyResult& f) {
    int n = static_cast<int>(std::min<std::size_t>(keep, 4096));
    if (v6) {
      std::vector<ares_addr6ttl> recs(static_cast<std::size_t>(n));
      f.status = ares_parse_aaaa_reply(abuf, alen, nullptr, recs.data(), &n);
      if (f.status != ARES_SUCCESS) return;
      for (int i = 0; i < n; ++i) {
        const auto& r = recs[static_cast<std::size_t>(i)];
        std::array<std::uint8_t, 16> b{};
        std::memcpy(b.data(), &r.ip6addr, b.size());
        f.addresses.push_back(IpAddress::from_v6(b));
        f.min_ttl = std::min(f.min_ttl, r.ttl);
      }
    } else {
      std::vector<ares_addrttl> recs(static_cast<std::size_t>(n));
      f.status = ares_parse_a_reply(abuf, alen, nullptr, recs.data(), &n);
      if (f.status != ARES_SUCCESS) return;
      for (int i = 0; i < n; ++i) {
        const auto& r = recs[static_cast<std::size_t>(i)];
        std::array<std::uint8_t, 4> b{};
        std::memcpy(b.data(), &r.ipaddr, b.size());
        f.addresses.push_back(IpAddress::from_v4(b));
        f.min_ttl = std::min(f.min_ttl, r.ttl);
      }
    }
    if (f.addresses.empty()) f.status = ARES_ENODATA;
  }

  // Both families answered (or the deadline passed): one result for the
  // name, into the cache, to every waiter.
  void finish(Lookup& lk) {
    const TimePoint now = options.clock();
    const FamilyResult& a = lk.v4;
    const FamilyResult& b = lk.v6;
    Answer answer;
    if (!a.addresses.empty() || !b.addresses.empty()) {
      std::vector<IpAddress> all = a.addresses;
      all.insert(all.end(), b.addresses.begin(), b.addresses.end());
      std::chrono::seconds ttl{std::max(0, std::min(a.min_ttl, b.min_ttl))};
      // One family failed for a passing reason: ask again soon for it.
      if (!is_definite(a.status) || !is_definite(b.status)) {
        ttl = std::min(ttl, cache.options().negative_ttl);
      }
      answer = cache.store_success(lk.name, all, ttl, now);
      count(QueryResult::success);
    } else if (a.status == ARES_ENOTFOUND || b.status == ARES_ENOTFOUND) {
      // NXDOMAIN is about the name, whatever the type: it decides.
      answer = cache.store_failure(lk.name, "NXDOMAIN", FailureKind::negative, now);
      count(QueryResult::nxdomain);
    } else if (is_definite(a.status) && is_definite(b.status)) {
      answer = cache.store_success(lk.name, {}, std::chrono::seconds{0}, now);  // NODATA
      count(QueryResult::success);
    } else {
      const Failure f = describe_failure(is_definite(a.status) ? b.status : a.status);
      answer = cache.store_failure(lk.name, f.reason, FailureKind::transient, now);
      count(f.result);
    }
    complete(lk.name, answer);
  }

  // Answers every waiter of `name` and forgets the lookup.
  void complete(const std::string& name, const Answer& answer) {
    auto it = lookups.find(name);
    if (it == lookups.end()) return;
    std::unique_ptr<Lookup> lk = std::move(it->second);
    lookups.erase(it);
    lk->deadline.cancel();
    for (auto& [id, w] : lk->waiters) w->complete(answer);
  }

  void start_lookup(std::string name, std::uint64_t waiter_id, std::unique_ptr<Waiter> w) {
    const std::uint64_t id = next_lookup_id++;
    auto lk = std::make_unique<Lookup>(ioc, name, id);
    lk->waiters.emplace_back(waiter_id, std::move(w));
    lk->deadline.expires_after(options.timeout);
    lk->deadline.async_wait([this, name, id](boost::system::error_code ec) {
      if (ec == asio::error::operation_aborted) return;
      Lookup* l = find_lookup(name, id);
      if (l == nullptr) return;
      for (FamilyResult* f : {&l->v4, &l->v6}) {
        if (!f->done) {
          f->done = true;
          f->status = ARES_ETIMEOUT;
        }
      }
      finish(*l);
    });
    lookups.emplace(name, std::move(lk));
    // The final dot makes the name absolute for c-ares itself too.
    const std::string qname = name + '.';
    // A callback may run inside ares_query (e.g. no usable server): the
    // lookup may be gone after either call, so nothing touches it here.
    ares_query(channel, qname.c_str(), kClassIn, kTypeA, &Impl::on_answer_cb,
               new QueryArg{this, name, id, false});
    ares_query(channel, qname.c_str(), kClassIn, kTypeAaaa, &Impl::on_answer_cb,
               new QueryArg{this, name, id, true});
    reschedule();
  }

  void add_waiter(std::string name, std::uint64_t waiter_id, std::unique_ptr<Waiter> w) {
    if (stopping) {
      w->complete(failed("resolver stopped"));
      return;
    }
    // Filled while this request crossed threads?
    if (std::optional<Answer> cached = cache.find(name, options.clock())) {
      count(QueryResult::cache_hit);
      w->complete(std::move(*cached));
      return;
    }
    if (auto it = lookups.find(name); it != lookups.end()) {
      count(QueryResult::coalesced);
      it->second->waiters.emplace_back(waiter_id, std::move(w));
      return;
    }
    if (lookups.size() >= options.max_in_flight) {
      count(QueryResult::overloaded);
      w->complete(failed("resolver overloaded"));
      return;
    }
    start_lookup(std::move(name), waiter_id, std::move(w));
  }

  void cancel_waiter(const std::string& name, std::uint64_t waiter_id) {
    auto it = lookups.find(name);
    if (it == lookups.end()) return;
    auto& ws = it->second->waiters;
    auto w =
        std::find_if(ws.begin(), ws.end(), [&](const auto& p) { return p.first == waiter_id; });
    if (w == ws.end()) return;
    std::unique_ptr<Waiter> waiter = std::move(w->second);
    ws.erase(w);
    // The lookup goes on: other waiters and the cache still want it.
    waiter->complete(failed("cancelled"));
  }

  void shutdown() {
    stopping = true;
    const Answer stopped = failed("resolver stopped");
    while (!lookups.empty()) {
      const std::string name = lookups.begin()->first;
      complete(name, stopped);
    }
    if (channel != nullptr) {
      ares_destroy(channel);  // callbacks see ARES_EDESTRUCTION; sockets reported closed
      channel = nullptr;
    }
    for (auto& [fd, w] : watches) {
      boost::system::error_code ignored;
      w->sd.cancel(ignored);
      w->sd.release();
    }
    watches.clear();
    ares_timer.cancel();
    guard.reset();
  }
};

namespace {

// Runs on the caller's thread when its coroutine is cancelled (e.g. the
// flow closed): the resolver thread drops the waiter and answers it.
struct CancelRequest {
  std::weak_ptr<Resolver::Impl> impl;
  std::string name;
  std::uint64_t waiter_id;

  void operator()(asio::cancellation_type type) const {
    if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                 asio::cancellation_type::total)) == asio::cancellation_type::none) {
      return;
    }
    if (std::shared_ptr<Resolver::Impl> i = impl.lock()) {
      Resolver::Impl* raw = i.get();
      asio::post(raw->ioc, [raw, n = name, id = waiter_id] { raw->cancel_waiter(n, id); });
    }
  }
};

struct Initiation {
  std::shared_ptr<Resolver::Impl> impl;

  template <class Handler>
  void operator()(Handler&& handler, std::string name) const {
    const std::uint64_t id = impl->next_waiter_id.fetch_add(1, std::memory_order_relaxed);
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.template emplace<CancelRequest>(CancelRequest{impl, name, id});
    std::unique_ptr<Waiter> w =
        std::make_unique<HandlerWaiter<std::decay_t<Handler>>>(std::forward<Handler>(handler));
    Resolver::Impl* raw = impl.get();
    // A raw pointer: a handler on the resolver's own io_context must not own
    // the resolver (it would be destroyed inside its io_context).
    asio::post(raw->ioc, [raw, n = std::move(name), id, w = std::move(w)]() mutable {
      raw->add_waiter(std::move(n), id, std::move(w));
    });
  }
};

}  // namespace

Resolver::Resolver(Cache& cache, ResolverOptions options)
    : cache_(cache), impl_(std::make_shared<Impl>(cache, std::move(options))) {
  impl_->init_channel();
  Impl* raw = impl_.get();
  impl_->thread = std::thread([raw] { raw->ioc.run(); });
}

Resolver::~Resolver() {
  Impl* raw = impl_.get();
  asio::post(raw->ioc, [raw] { raw->shutdown(); });
  if (raw->thread.joinable()) raw->thread.join();
}

asio::awaitable<Answer> Resolver::resolve(std::string canonical_name) {
  if (!canonical_name.empty() && canonical_name.back() == '.') canonical_name.pop_back();
  ascii_lowercase(canonical_name);
  if (check_dns_name(canonical_name) != NameProblem::none) {
    impl_->count(QueryResult::error);
    co_return failed("invalid name");
  }
  if (std::optional<Answer> cached = cache_.find(canonical_name, impl_->options.clock())) {
    impl_->count(QueryResult::cache_hit);
    co_return std::move(*cached);
  }
  // Named, not temporaries: g++ 12 mishandles temporaries with destructors
  // inside a co_await full-expression (destroyed twice).
  const Initiation initiation{impl_};
  Answer answer = co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(Answer)>(
      initiation, asio::use_awaitable, std::move(canonical_name));
  co_return answer;
}

QueryCounts Resolver::snapshot() const noexcept {
  QueryCounts out{};
  for (std::size_t i = 0; i < kQueryResultCount; ++i) {
    out[i] = impl_->counts[i].load(std::memory_order_relaxed);
  }
  return out;
}

}  // namespace egressd::dns
