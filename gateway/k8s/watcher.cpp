#include "egressd/k8s/watcher.hpp"

#include <openssl/ssl.h>

#include <algorithm>
#include <exception>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/stream_parser.hpp>
#include <boost/json/value.hpp>
#include <spdlog/spdlog.h>

#include "egressd/k8s/watch_stream.hpp"
#include "egressd/version.hpp"

namespace egressd::k8s {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Stream = beast::ssl_stream<beast::tcp_stream>;
using SteadyClock = std::chrono::steady_clock;

std::string_view to_string(Resource r) noexcept {
  return r == Resource::pods ? "pods" : "namespaces";
}

std::string_view to_string(RestartReason r) noexcept {
  switch (r) {
    case RestartReason::gone:
      return "gone";
    case RestartReason::closed:
      return "closed";
    case RestartReason::error:
      return "error";
    case RestartReason::timeout:
      return "timeout";
  }
  return "error";
}

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
// Body bytes taken from the parser per read.
constexpr std::size_t kReadChunk = 64 * 1024;
// An error response's body (a Status object) is kept up to this size.
constexpr std::size_t kMaxErrorBody = 64 * 1024;

struct Failure {
  RestartReason reason = RestartReason::error;
  std::string what;
};
using MaybeFailure = std::optional<Failure>;

RestartReason reason_of(const beast::error_code& ec) {
  if (ec == beast::error::timeout) return RestartReason::timeout;
  if (ec == http::error::end_of_stream || ec == http::error::partial_message ||
      ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated) {
    return RestartReason::closed;
  }
  return RestartReason::error;
}

Failure failure_from(const beast::error_code& ec, std::string_view doing) {
  return {reason_of(ec), std::string(doing) + ": " + ec.message()};
}

// RFC 3986 unreserved characters pass; everything else is %XX.
std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out.push_back(ch);
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

std::string string_at(const json::value* v, std::initializer_list<std::string_view> path) {
  for (auto key : path) {
    const auto* o = v != nullptr ? v->if_object() : nullptr;
    v = o != nullptr ? o->if_contains(key) : nullptr;
  }
  const auto* s = v != nullptr ? v->if_string() : nullptr;
  return s != nullptr ? std::string(s->data(), s->size()) : std::string();
}

// "HTTP 403: pods is forbidden: ..." from a Status body when there is one.
std::string describe_status(unsigned status, const std::string& body) {
  std::string out = "HTTP " + std::to_string(status);
  json::error_code ec;
  const auto v = json::parse(body, ec);
  if (!ec) {
    if (auto msg = string_at(&v, {"message"}); !msg.empty()) out += ": " + msg;
  }
  return out;
}

ssl::context make_tls_context(const ClientConfig& c) {
  ssl::context ctx(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.set_verify_mode(ssl::verify_peer);
  if (c.ca_pem.empty()) {
    ctx.set_default_verify_paths();
  } else {
    ctx.add_certificate_authority(asio::buffer(c.ca_pem));
  }
  if (!c.client_cert_pem.empty()) {
    ctx.use_certificate_chain(asio::buffer(c.client_cert_pem));
    ctx.use_private_key(asio::buffer(c.client_key_pem), ssl::context::pem);
  }
  return ctx;
}

// Capped exponential backoff; each delay drawn in [d/2, d].
class Backoff {
 public:
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max)
      : initial_(std::max<std::chrono::milliseconds::rep>(1, initial.count())),
        max_(std::max<std::chrono::milliseconds::rep>(initial_, max.count())),
        next_(initial_) {}
  std::chrono::milliseconds next(std::mt19937_64& rng) {
    const auto d = next_;
    next_ = std::min(max_, next_ * 2);
    std::uniform_int_distribution<std::chrono::milliseconds::rep> pick(d - d / 2, d);
    return std::chrono::milliseconds(pick(rng));
  }
  void reset() { next_ = initial_; }

 private:
  std::chrono::milliseconds::rep initial_;
  std::chrono::milliseconds::rep max_;
  std::chrono::milliseconds::rep next_;
};

std::int64_t steady_now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

}  // namespace

struct Watcher::Impl {
  explicit Impl(WatcherOptions o)
      : opt(std::move(o)), tls(make_tls_context(opt.client)), rng(std::random_device{}()) {
    if (opt.stall_timeout.count() <= 0) {
      opt.stall_timeout =
          std::chrono::duration_cast<std::chrono::milliseconds>(opt.watch_timeout) * 2;
    }
    if (opt.page_size == 0) opt.page_size = 500;
    const bool v6 = opt.client.host.find(':') != std::string::npos;
    host_header = (v6 ? "[" + opt.client.host + "]" : opt.client.host) + ":" +
                  std::to_string(opt.client.port);
  }

  struct ResourceState {
    std::atomic<bool> live{false};
    std::atomic<std::int64_t> last_contact_ns{0};
    std::array<std::atomic<std::uint64_t>, kRestartReasonCount> restarts{};
    // Watcher thread only:
    bool listed = false;
    std::string resource_version;
  };

  // One connection to the API server (a list's pages share one).
  struct Connection {
    explicit Connection(asio::io_context& io, ssl::context& ctx) : stream(io, ctx) {}
    Stream stream;
    beast::flat_buffer buffer;
    bool open = false;
  };

  WatcherOptions opt;
  ssl::context tls;
  std::string host_header;
  std::mt19937_64 rng;
  std::atomic<bool> synced{false};
  std::array<ResourceState, kResourceCount> state;
  PodIndex index;  // watcher thread only
  IdentitySnapshotPtr published;
  std::thread thread;
  std::atomic<bool> stopped{false};
  // Last: destroyed first, with the coroutine frames that use the members
  // above.
  asio::io_context io{1};

  ResourceState& st(Resource r) { return state[static_cast<std::size_t>(r)]; }

  void touch(Resource r) {
    st(r).last_contact_ns.store(steady_now_ns(), std::memory_order_relaxed);
  }
  void set_live(Resource r, bool live) {
    touch(r);
    st(r).live.store(live, std::memory_order_relaxed);
  }

  void publish() {
    if (!synced.load(std::memory_order_relaxed)) return;
    auto snap = index.snapshot();
    if (snap == published) return;
    published = snap;
    if (!opt.on_snapshot) return;
    try {
      opt.on_snapshot(std::move(snap));
    } catch (const std::exception& e) {
      spdlog::error("kubernetes: on_snapshot threw: {}", e.what());
    } catch (...) {
      spdlog::error("kubernetes: on_snapshot threw");
    }
  }

  // --- One HTTP exchange ------------------------------------------------------

  asio::awaitable<MaybeFailure> connect(Connection& c) {
    const auto& cfg = opt.client;
    auto& lowest = beast::get_lowest_layer(c.stream);
    lowest.expires_after(opt.request_timeout);
    tcp::resolver resolver(io);
    auto [rec, endpoints] =
        co_await resolver.async_resolve(cfg.host, std::to_string(cfg.port), kTuple);
    if (rec) co_return failure_from(rec, "resolve " + cfg.host);
    auto [cec, ep] = co_await lowest.async_connect(endpoints, kTuple);
    if (cec) co_return failure_from(cec, "connect to " + host_header);
    boost::system::error_code addr_ec;
    (void)asio::ip::make_address(cfg.verify_name(), addr_ec);
    if (addr_ec) {
      // A name: send it as SNI (never an IP address, RFC 6066). The macro
      // SSL_set_tlsext_host_name is this call with an old-style cast.
      if (SSL_ctrl(c.stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME,
                   TLSEXT_NAMETYPE_host_name, const_cast<char*>(cfg.verify_name().c_str())) != 1) {
        co_return Failure{RestartReason::error, "cannot set SNI " + cfg.verify_name()};
      }
    }
    c.stream.set_verify_callback(ssl::host_name_verification(cfg.verify_name()));
    auto [hec] = co_await c.stream.async_handshake(ssl::stream_base::client, kTuple);
    if (hec) co_return failure_from(hec, "TLS handshake with " + host_header);
    c.open = true;
    co_return std::nullopt;
  }

  // Sends GET `target` and reads the response, handing body bytes to
  // `on_body` as they arrive (which may stop the exchange with a Failure).
  // `read_timeout`: when set, the deadline is reset before every read (a
  // watch); otherwise request_timeout bounds the whole exchange.
  // Non-200 responses: 410 -> gone, other -> error with the Status message.
  template <class OnBody>
  asio::awaitable<MaybeFailure> exchange(Connection& c, const std::string& target,
                                         std::optional<std::chrono::milliseconds> read_timeout,
                                         OnBody&& on_body, bool* opened = nullptr,
                                         std::optional<Resource> live_of = std::nullopt) {
    auto& lowest = beast::get_lowest_layer(c.stream);
    if (!c.open) {
      if (auto f = co_await connect(c)) co_return f;
    }
    std::string token;
    std::string token_error;
    if (!opt.client.read_token(token, token_error)) {
      co_return Failure{RestartReason::error, token_error};
    }
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, host_header);
    req.set(http::field::accept, "application/json");
    req.set(http::field::user_agent, std::string("egressd/") + kVersion);
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    req.keep_alive(true);
    lowest.expires_after(opt.request_timeout);
    auto [wec, wn] = co_await http::async_write(c.stream, req, kTuple);
    if (wec) {
      c.open = false;
      co_return failure_from(wec, "send " + target);
    }

    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);  // the callers cap what they keep
    auto [hec, hn] = co_await http::async_read_header(c.stream, c.buffer, parser, kTuple);
    if (hec) {
      c.open = false;
      co_return failure_from(hec, "read the response to " + target);
    }
    const unsigned status = parser.get().result_int();
    if (status == 200 && opened != nullptr) *opened = true;
    if (status == 200 && live_of) set_live(*live_of, true);
    std::string error_body;
    std::vector<char> chunk(kReadChunk);
    MaybeFailure stop;
    while (!parser.is_done()) {
      parser.get().body().data = chunk.data();
      parser.get().body().size = chunk.size();
      if (read_timeout) lowest.expires_after(*read_timeout);
      auto [rec, rn] = co_await http::async_read_some(c.stream, c.buffer, parser, kTuple);
      if (rec == http::error::need_buffer) rec = {};
      const std::size_t got = chunk.size() - parser.get().body().size;
      if (got > 0) {
        if (status == 200) {
          stop = on_body(std::string_view(chunk.data(), got));
        } else if (error_body.size() < kMaxErrorBody) {
          error_body.append(chunk.data(), std::min(got, kMaxErrorBody - error_body.size()));
        }
      }
      if (stop) break;
      if (rec) {
        c.open = false;
        co_return failure_from(rec, "read the response to " + target);
      }
    }
    if (stop || !parser.get().keep_alive()) {
      beast::error_code ignored;
      lowest.socket().close(ignored);
      c.open = false;
    }
    if (stop) co_return stop;
    if (status == 410) co_return Failure{RestartReason::gone, describe_status(status, error_body)};
    if (status != 200) {
      co_return Failure{RestartReason::error, describe_status(status, error_body)};
    }
    co_return std::nullopt;
  }

  // --- LIST -----------------------------------------------------------------

  asio::awaitable<MaybeFailure> list(Resource r) {
    const std::string base = opt.client.path_prefix + "/api/v1/" + std::string(to_string(r)) +
                             "?limit=" + std::to_string(opt.page_size);
    std::vector<PodRecord> pods;
    std::vector<NamespaceRecord> namespaces;
    std::string cont;
    std::string version;
    Connection conn(io, tls);
    std::size_t pages = 0;
    do {
      const std::string target = base + (cont.empty() ? "" : "&continue=" + percent_encode(cont));
      json::stream_parser parser;
      std::size_t bytes = 0;
      MaybeFailure parse_failure;
      auto f = co_await exchange(conn, target, std::nullopt, [&](std::string_view data) {
        bytes += data.size();
        if (bytes > opt.max_page_bytes) {
          return MaybeFailure(
              Failure{RestartReason::error, "a list page is larger than the limit"});
        }
        json::error_code ec;
        parser.write(data.data(), data.size(), ec);
        if (ec) return MaybeFailure(Failure{RestartReason::error, "list: " + ec.message()});
        return MaybeFailure();
      });
      if (f) co_return f;
      json::error_code ec;
      parser.finish(ec);
      if (ec)
        co_return Failure{RestartReason::error,
                          "list " + std::string(to_string(r)) + ": " + ec.message()};
      const json::value page = parser.release();
      touch(r);
      const auto* obj = page.if_object();
      const auto* items = obj != nullptr ? obj->if_contains("items") : nullptr;
      if (items == nullptr || !(items->is_array() || items->is_null())) {
        co_return Failure{RestartReason::error,
                          "list " + std::string(to_string(r)) + ": the response is not a list"};
      }
      if (items->is_array()) {
        for (const auto& item : items->get_array()) {
          if (r == Resource::pods) {
            if (auto p = parse_pod(item)) pods.push_back(std::move(*p));
          } else if (auto n = parse_namespace(item)) {
            namespaces.push_back(std::move(*n));
          }
        }
      }
      version = string_at(&page, {"metadata", "resourceVersion"});
      cont = string_at(&page, {"metadata", "continue"});
      ++pages;
    } while (!cont.empty());
    if (version.empty()) {
      co_return Failure{RestartReason::error,
                        "list " + std::string(to_string(r)) + ": no metadata.resourceVersion"};
    }
    const std::size_t count = r == Resource::pods ? pods.size() : namespaces.size();
    if (r == Resource::pods) {
      index.replace_pods(std::move(pods));
    } else {
      index.replace_namespaces(std::move(namespaces));
    }
    auto& s = st(r);
    s.resource_version = version;
    s.listed = true;
    spdlog::info("kubernetes: listed {} {} in {} page(s) at resourceVersion {}", count,
                 to_string(r), pages, version);
    if (!synced.load(std::memory_order_relaxed) && st(Resource::pods).listed &&
        st(Resource::namespaces).listed) {
      synced.store(true, std::memory_order_release);
      spdlog::info("kubernetes: synced");
    }
    publish();
    co_return std::nullopt;
  }

  // --- WATCH ------------------------------------------------------------------

  // One event line. Sets `changed` when the index changed.
  MaybeFailure handle_event(Resource r, std::string_view line, bool& changed) {
    WatchDecoded decoded = decode_watch_event(line);
    if (auto* failure = std::get_if<WatchFailure>(&decoded)) {
      return Failure{failure->gone ? RestartReason::gone : RestartReason::error,
                     std::move(failure->message)};
    }
    auto& event = std::get<WatchEvent>(decoded);
    auto& s = st(r);
    if (event.type != WatchEvent::Type::bookmark) {
      const EventType et = event.index_event();
      const bool ok = r == Resource::pods ? index.apply_pod(et, event.object)
                                          : index.apply_namespace(et, event.object);
      if (!ok) {
        // Not fatal: the rest of the stream is fine. The object is skipped.
        spdlog::warn("kubernetes: watch {}: skipped an event with a malformed object",
                     to_string(r));
      } else {
        changed = true;
      }
    }
    if (!event.resource_version.empty()) s.resource_version = std::move(event.resource_version);
    return std::nullopt;
  }

  asio::awaitable<MaybeFailure> watch(Resource r, bool& opened) {
    auto& s = st(r);
    const std::string target = opt.client.path_prefix + "/api/v1/" + std::string(to_string(r)) +
                               "?watch=true&allowWatchBookmarks=true&resourceVersion=" +
                               percent_encode(s.resource_version) +
                               "&timeoutSeconds=" + std::to_string(opt.watch_timeout.count());
    Connection conn(io, tls);
    WatchLineSplitter lines(opt.max_event_bytes);
    auto f = co_await exchange(
        conn, target, opt.stall_timeout,
        [&](std::string_view data) -> MaybeFailure {
          touch(r);
          bool changed = false;
          MaybeFailure out;
          const auto stop = lines.feed(data, [&](std::string_view line) {
            out = handle_event(r, line, changed);
            return !out;
          });
          if (stop == WatchLineSplitter::Stop::line_too_long) {
            out = Failure{RestartReason::error, "a watch event is larger than the limit"};
          }
          if (changed) publish();
          return out;
        },
        &opened, r);
    if (opened && !f) {
      // The server ended the watch (timeoutSeconds): the stream may end with
      // an unterminated event only if it was cut.
      if (lines.mid_line()) f = Failure{RestartReason::closed, "watch ended inside an event"};
    }
    co_return f;
  }

  // --- The loop of one resource ---------------------------------------------

  asio::awaitable<void> run(Resource r) {
    auto& s = st(r);
    Backoff backoff(opt.backoff_initial, opt.backoff_max);
    int gone_in_a_row = 0;
    asio::steady_timer timer(io);
    for (;;) {
      MaybeFailure failure;
      bool opened = false;
      std::string_view phase = "list";
      try {
        if (!s.listed) failure = co_await list(r);
        if (!failure) {
          phase = "watch";
          failure = co_await watch(r, opened);
        }
      } catch (const std::exception& e) {
        failure = Failure{RestartReason::error, e.what()};
      } catch (...) {
        failure = Failure{RestartReason::error, "unknown exception"};
      }
      if (s.live.load(std::memory_order_relaxed)) set_live(r, false);
      if (opened) backoff.reset();
      if (!failure) {
        gone_in_a_row = 0;
        continue;  // the server ended the watch: watch again from here
      }
      s.restarts[static_cast<std::size_t>(failure->reason)].fetch_add(1, std::memory_order_relaxed);
      std::chrono::milliseconds delay{0};
      if (failure->reason == RestartReason::gone) {
        s.listed = false;
        // One 410 relists at once; repeated ones back off like failures.
        if (++gone_in_a_row > 1) delay = backoff.next(rng);
      } else {
        gone_in_a_row = 0;
        delay = backoff.next(rng);
      }
      spdlog::warn("kubernetes: {} {} ({}): {}; {} in {} ms", phase, to_string(r),
                   to_string(failure->reason), failure->what,
                   s.listed ? "watching again" : "listing again", delay.count());
      if (delay.count() > 0) {
        timer.expires_after(delay);
        co_await timer.async_wait(kTuple);
      }
    }
  }

  void start() {
    for (auto r : {Resource::pods, Resource::namespaces}) {
      asio::co_spawn(io, run(r), [r](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& ex) {
          spdlog::error("kubernetes: the {} watch ended: {}", to_string(r), ex.what());
        } catch (...) {
          spdlog::error("kubernetes: the {} watch ended", to_string(r));
        }
      });
    }
    thread = std::thread([this] {
      for (;;) {
        try {
          io.run();
          return;
        } catch (const std::exception& e) {
          spdlog::error("kubernetes: watcher: {}", e.what());
        } catch (...) {
          spdlog::error("kubernetes: watcher: unknown exception");
        }
      }
    });
  }

  void stop() noexcept {
    if (stopped.exchange(true)) return;
    io.stop();
    if (thread.joinable()) thread.join();
  }
};

Watcher::Watcher(WatcherOptions options) : impl_(std::make_shared<Impl>(std::move(options))) {
  impl_->start();
}

Watcher::~Watcher() {
  stop();
}

void Watcher::stop() noexcept {
  impl_->stop();
}

bool Watcher::synced() const noexcept {
  return impl_->synced.load(std::memory_order_acquire);
}

std::optional<std::chrono::milliseconds> Watcher::data_age() const noexcept {
  if (!synced()) return std::nullopt;
  const auto now = steady_now_ns();
  std::int64_t age = 0;
  for (const auto& s : impl_->state) {
    if (s.live.load(std::memory_order_relaxed)) continue;
    age = std::max(age, now - s.last_contact_ns.load(std::memory_order_relaxed));
  }
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::nanoseconds(age));
}

std::uint64_t Watcher::restarts(Resource resource, RestartReason reason) const noexcept {
  return impl_->state[static_cast<std::size_t>(resource)]
      .restarts[static_cast<std::size_t>(reason)]
      .load(std::memory_order_relaxed);
}

}  // namespace egressd::k8s
