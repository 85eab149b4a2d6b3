// H2cProxy: the sans-I/O h2c core (see include/egressd/l7/h2c.hpp).
//
// A stream's life on the client (front) session:
//
//   HEADERS (request head; CONTINUATION joined by nghttp2)
//     -> judging (the head is reported by take_requests; request DATA is
//        buffered, at most the stream window, never consumed)
//     -> refused: our own response (status + text body); request DATA
//        consumed and dropped as it arrives
//     -> routed: submitted on an upstream client session once it is
//        connected; request DATA leaves the buffer as that session packs it
//        into frames, and only then is it consumed on the front session
//        (WINDOW_UPDATE to the client). The response goes the other way
//        the same way: upstream DATA buffered, consumed on the upstream
//        session when the front session packs it.
//
// RST_STREAM either way is passed on to the other side; an upstream
// connection that ends leaves its streams with 502 (no response yet) or
// RST_STREAM; GOAWAY from the upstream refuses its later streams
// (REFUSED_STREAM to the client, which may retry) and the next streams for
// that endpoint get a new upstream connection. Frames nghttp2 handles
// alone: SETTINGS, PING, PRIORITY, WINDOW_UPDATE, CONTINUATION, and the
// HTTP/2 messaging checks (pseudo-headers, connection-specific fields,
// content-length), which reset the offending stream.

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <unordered_map>

#include <nghttp2/nghttp2.h>

#include "egressd/l7/h2c.hpp"
#include "egressd/sniff/http1_head.hpp"

namespace egressd::l7 {

namespace {

struct Header {
  std::string name;
  std::string value;
  std::uint8_t flags = NGHTTP2_NV_FLAG_NONE;  // NO_INDEX kept
};

std::vector<nghttp2_nv> to_nv(const std::vector<Header>& headers) {
  std::vector<nghttp2_nv> nv;
  nv.reserve(headers.size());
  for (const Header& h : headers) {
    // nghttp2 copies names and values (no NO_COPY flag): the casts only
    // satisfy its non-const signature.
    nv.push_back({reinterpret_cast<std::uint8_t*>(const_cast<char*>(h.name.data())),
                  reinterpret_cast<std::uint8_t*>(const_cast<char*>(h.value.data())), h.name.size(),
                  h.value.size(), h.flags});
  }
  return nv;
}

std::string lower_without_trailing_dot(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();

}  // namespace

struct H2cProxy::Impl {
  struct Stream {
    std::int32_t id = 0;
    enum class State : std::uint8_t {
      head,
      judging,
      refused,
      routed,
      submitted
    } state = State::head;
    std::vector<Header> request;
    std::vector<Header> request_trailers;
    std::size_t header_bytes = 0;
    std::optional<std::string> authority;
    std::vector<std::string> hosts;
    std::string method;
    std::string path;
    std::string scheme;
    bool request_end = false;
    std::string request_body;  // received from the client, not yet consumed
    std::size_t upstream = kNone;
    std::int32_t upstream_id = 0;
    bool upstream_closed = false;
    // The response, from the upstream or our own refusal.
    std::vector<Header> response;  // the head being received
    std::vector<Header> response_trailers;
    bool response_final = false;      // a final (non-1xx) head was received
    bool response_submitted = false;  // submitted to the client
    bool response_end = false;
    bool response_consumed = false;  // response_body is ours (no upstream to consume on)
    std::string response_body;       // received, not yet consumed
  };

  struct Upstream {
    nghttp2_session* session = nullptr;
    bool connected = false;
    bool closed = false;
    bool goaway = false;
    std::vector<std::int32_t> waiting;                     // routed before the connection was up
    std::unordered_map<std::int32_t, std::int32_t> front;  // upstream stream id -> client stream id
  };

  // A session's callbacks find their way back here and to the upstream.
  struct UpstreamContext {
    Impl* impl;
    std::size_t index;
  };

  nghttp2_session* front = nullptr;
  nghttp2_session_callbacks* front_callbacks = nullptr;
  nghttp2_session_callbacks* upstream_callbacks = nullptr;
  nghttp2_option* option = nullptr;
  std::map<std::int32_t, Stream> streams;
  std::vector<Upstream> upstreams;
  std::vector<std::unique_ptr<UpstreamContext>> contexts;
  std::vector<H2cRequest> requests;
  std::size_t seen = 0;
  bool fatal = false;
  bool goaway_error_sent = false;
  bool drained = false;

  Impl();
  ~Impl();

  Stream* find(std::int32_t id) {
    auto it = streams.find(id);
    return it == streams.end() ? nullptr : &it->second;
  }
  Upstream* upstream_of(const Stream& s) {
    if (s.upstream == kNone || s.upstream >= upstreams.size()) return nullptr;
    Upstream& u = upstreams[s.upstream];
    return u.closed ? nullptr : &u;
  }

  // The client session: request side.
  void head_complete(Stream& s, bool end_stream);
  void submit_upstream(Stream& s);
  void answer(Stream& s, int status, const std::string& body);
  void release_request_body(Stream& s) {
    if (!s.request_body.empty()) {
      nghttp2_session_consume(front, s.id, s.request_body.size());
      s.request_body.clear();
    }
  }
  void release_response_body(Stream& s) {
    if (s.response_body.empty() || s.response_consumed) return;
    if (Upstream* u = upstream_of(s)) {
      nghttp2_session_consume(u->session, s.upstream_id, s.response_body.size());
    }
    s.response_consumed = true;
  }
  void resume_front(std::int32_t id) { nghttp2_session_resume_data(front, id); }
  void resume_upstream(const Stream& s) {
    if (s.state != Stream::State::submitted) return;
    if (Upstream* u = upstream_of(s)) nghttp2_session_resume_data(u->session, s.upstream_id);
  }
  void stream_failed_upstream(Stream& s, std::uint32_t error_code);

  // Front callbacks.
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                       std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                       std::uint8_t flags, void* user);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_data_chunk(nghttp2_session*, std::uint8_t flags, std::int32_t stream_id,
                           const std::uint8_t* data, std::size_t len, void* user);
  static int on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t error_code,
                             void* user);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static ssize_t read_response(nghttp2_session*, std::int32_t stream_id, std::uint8_t* buf,
                               std::size_t length, std::uint32_t* data_flags,
                               nghttp2_data_source* source, void* user);

  // Upstream callbacks (user = UpstreamContext).
  static int up_on_header(nghttp2_session*, const nghttp2_frame* frame, const std::uint8_t* name,
                          std::size_t namelen, const std::uint8_t* value, std::size_t valuelen,
                          std::uint8_t flags, void* user);
  static int up_on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int up_on_data_chunk(nghttp2_session*, std::uint8_t flags, std::int32_t stream_id,
                              const std::uint8_t* data, std::size_t len, void* user);
  static int up_on_stream_close(nghttp2_session*, std::int32_t stream_id, std::uint32_t error_code,
                                void* user);
  static ssize_t read_request(nghttp2_session*, std::int32_t stream_id, std::uint8_t* buf,
                              std::size_t length, std::uint32_t* data_flags,
                              nghttp2_data_source* source, void* user);

  Stream* stream_of_upstream(std::size_t index, std::int32_t upstream_id) {
    if (index >= upstreams.size()) return nullptr;
    auto it = upstreams[index].front.find(upstream_id);
    if (it == upstreams[index].front.end()) return nullptr;
    Stream* s = find(it->second);
    return s != nullptr && s->upstream == index && s->upstream_id == upstream_id ? s : nullptr;
  }
};

H2cProxy::Impl::Impl() {
  nghttp2_option_new(&option);
  nghttp2_option_set_no_auto_window_update(option, 1);

  nghttp2_session_callbacks_new(&front_callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(front_callbacks, &on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(front_callbacks, &on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(front_callbacks, &on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(front_callbacks, &on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(front_callbacks, &on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(front_callbacks, &on_frame_send);

  nghttp2_session_callbacks_new(&upstream_callbacks);
  nghttp2_session_callbacks_set_on_header_callback(upstream_callbacks, &up_on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(upstream_callbacks, &up_on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(upstream_callbacks, &up_on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(upstream_callbacks, &up_on_stream_close);

  nghttp2_session_server_new2(&front, front_callbacks, this, option);
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kH2cMaxStreams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<std::uint32_t>(kH2cStreamWindow)},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<std::uint32_t>(kH2cMaxHeaderBytes)},
  };
  nghttp2_submit_settings(front, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(front, NGHTTP2_FLAG_NONE, 0, kH2cConnectionWindow);
}

H2cProxy::Impl::~Impl() {
  for (Upstream& u : upstreams) nghttp2_session_del(u.session);
  nghttp2_session_del(front);
  nghttp2_session_callbacks_del(upstream_callbacks);
  nghttp2_session_callbacks_del(front_callbacks);
  nghttp2_option_del(option);
}

// ---- the client session ------------------------------------------------------

int H2cProxy::Impl::on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Impl*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  Stream& s = self->streams[frame->hd.stream_id];
  s.id = frame->hd.stream_id;
  return 0;
}

int H2cProxy::Impl::on_header(nghttp2_session*, const nghttp2_frame* frame,
                              const std::uint8_t* name, std::size_t namelen,
                              const std::uint8_t* value, std::size_t valuelen, std::uint8_t flags,
                              void* user) {
  auto* self = static_cast<Impl*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  Stream* s = self->find(frame->hd.stream_id);
  if (s == nullptr) return 0;
  s->header_bytes += namelen + valuelen;
  if (s->header_bytes > kH2cMaxHeaderBytes) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  Header h{std::string(reinterpret_cast<const char*>(name), namelen),
           std::string(reinterpret_cast<const char*>(value), valuelen),
           static_cast<std::uint8_t>(flags & NGHTTP2_NV_FLAG_NO_INDEX)};
  if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    if (h.name == ":authority") s->authority = h.value;
    if (h.name == "host") s->hosts.push_back(h.value);
    if (h.name == ":method") s->method = h.value;
    if (h.name == ":path") s->path = h.value;
    if (h.name == ":scheme") s->scheme = h.value;
    s->request.push_back(std::move(h));
  } else {
    s->request_trailers.push_back(std::move(h));
  }
  return 0;
}

int H2cProxy::Impl::on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Impl*>(user);
  Stream* s = self->find(frame->hd.stream_id);
  if (s == nullptr) return 0;
  const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
      if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        self->head_complete(*s, end_stream);
      } else if (end_stream) {  // trailers
        s->request_end = true;
        self->resume_upstream(*s);
      }
      break;
    case NGHTTP2_DATA:
      if (end_stream) {
        s->request_end = true;
        self->resume_upstream(*s);
      }
      break;
    default:
      break;
  }
  return 0;
}

void H2cProxy::Impl::head_complete(Stream& s, bool end_stream) {
  s.request_end = end_stream;
  s.state = Stream::State::judging;
  ++seen;
  H2cRequest r;
  r.stream_id = s.id;
  r.method = s.method;
  r.path = s.path;
  // RFC 9113 §8.3.1: :authority, else Host; both must name the same
  // authority. A request naming two origins is refused on its own.
  std::optional<std::string> text = s.authority;
  if (s.hosts.size() > 1) {
    r.problem = "several Host fields";
  } else if (!s.authority && s.hosts.empty()) {
    r.problem = "neither :authority nor Host";
  } else if (!s.authority) {
    text = s.hosts.front();
  } else if (!s.hosts.empty() && s.hosts.front() != *s.authority) {
    const auto a = sniff::parse_authority(*s.authority);
    const auto h = sniff::parse_authority(s.hosts.front());
    const std::uint16_t default_port = s.scheme == "https" ? 443 : 80;
    if (!a || !h || lower_without_trailing_dot(a->name) != lower_without_trailing_dot(h->name) ||
        a->port.value_or(default_port) != h->port.value_or(default_port)) {
      r.problem = ":authority and Host disagree";
    }
  }
  if (text) {
    auto parsed = sniff::parse_authority(*text);
    r.name = parsed ? std::move(parsed->name) : *text;
  }
  requests.push_back(std::move(r));
}

int H2cProxy::Impl::on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t stream_id,
                                  const std::uint8_t* data, std::size_t len, void* user) {
  auto* self = static_cast<Impl*>(user);
  Stream* s = self->find(stream_id);
  if (s == nullptr || s->state == Stream::State::refused ||
      (s->state == Stream::State::submitted && self->upstream_of(*s) == nullptr) ||
      s->upstream_closed) {
    nghttp2_session_consume(session, stream_id, len);  // nobody will take it
    return 0;
  }
  s->request_body.append(reinterpret_cast<const char*>(data), len);
  self->resume_upstream(*s);
  return 0;
}

int H2cProxy::Impl::on_stream_close(nghttp2_session*, std::int32_t stream_id,
                                    std::uint32_t error_code, void* user) {
  auto* self = static_cast<Impl*>(user);
  Stream* s = self->find(stream_id);
  if (s == nullptr) return 0;
  self->release_request_body(*s);
  self->release_response_body(*s);
  if (s->state == Stream::State::submitted && !s->upstream_closed) {
    if (Upstream* u = self->upstream_of(*s)) {
      // The client is gone from this stream (RST_STREAM, or it ended before
      // the upstream did): the upstream stops too.
      nghttp2_submit_rst_stream(
          u->session, NGHTTP2_FLAG_NONE, s->upstream_id,
          error_code == NGHTTP2_NO_ERROR ? std::uint32_t{NGHTTP2_CANCEL} : error_code);
    }
  }
  if (s->upstream != kNone && s->upstream < self->upstreams.size()) {
    Upstream& u = self->upstreams[s->upstream];
    if (s->upstream_id != 0) u.front.erase(s->upstream_id);
    std::erase(u.waiting, stream_id);
  }
  self->streams.erase(stream_id);
  return 0;
}

int H2cProxy::Impl::on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Impl*>(user);
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
    self->goaway_error_sent = true;
  }
  return 0;
}

// The front session packs response DATA: from the stream's buffer, consumed
// on the upstream session as it goes (its WINDOW_UPDATE follows what the
// client actually took into its stream).
ssize_t H2cProxy::Impl::read_response(nghttp2_session* session, std::int32_t stream_id,
                                      std::uint8_t* buf, std::size_t length,
                                      std::uint32_t* data_flags, nghttp2_data_source*, void* user) {
  auto* self = static_cast<Impl*>(user);
  Stream* s = self->find(stream_id);
  if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  const std::size_t n = std::min(length, s->response_body.size());
  if (n > 0) {
    std::memcpy(buf, s->response_body.data(), n);
    s->response_body.erase(0, n);
    if (!s->response_consumed) {
      if (Upstream* u = self->upstream_of(*s))
        nghttp2_session_consume(u->session, s->upstream_id, n);
    }
  }
  if (s->response_body.empty()) {
    if (!s->response_end) {
      if (n == 0) return NGHTTP2_ERR_DEFERRED;
    } else {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!s->response_trailers.empty()) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        const auto nv = to_nv(s->response_trailers);
        nghttp2_submit_trailer(session, stream_id, nv.data(), nv.size());
      }
    }
  }
  return static_cast<ssize_t>(n);
}

void H2cProxy::Impl::answer(Stream& s, int status, const std::string& body) {
  const std::vector<Header> head{
      {":status", std::to_string(status)},
      {"content-type", "text/plain; charset=utf-8"},
      {"content-length", std::to_string(body.size())},
  };
  s.response_body = body;
  s.response_consumed = true;
  s.response_end = true;
  s.response_submitted = true;
  const auto nv = to_nv(head);
  nghttp2_data_provider provider{};
  provider.read_callback = &read_response;
  nghttp2_submit_response(front, s.id, nv.data(), nv.size(), body.empty() ? nullptr : &provider);
}

// ---- upstream sessions -----------------------------------------------------------

void H2cProxy::Impl::submit_upstream(Stream& s) {
  Upstream& u = upstreams[s.upstream];
  const auto nv = to_nv(s.request);
  nghttp2_data_provider provider{};
  provider.read_callback = &read_request;
  // A request that ended with trailers still needs the provider: it sends
  // them (after an empty DATA when the body was empty).
  const bool body = !s.request_end || !s.request_body.empty() || !s.request_trailers.empty();
  const std::int32_t id = nghttp2_submit_request(u.session, nullptr, nv.data(), nv.size(),
                                                 body ? &provider : nullptr, nullptr);
  if (id < 0) {
    // The upstream takes no more streams (GOAWAY meanwhile): the client
    // may retry it.
    s.upstream = kNone;
    release_request_body(s);
    nghttp2_submit_rst_stream(front, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_REFUSED_STREAM);
    return;
  }
  s.state = Stream::State::submitted;
  s.upstream_id = id;
  u.front[id] = s.id;
}

// The upstream session packs request DATA from the stream's buffer; the
// client's window opens by what it took.
ssize_t H2cProxy::Impl::read_request(nghttp2_session* session, std::int32_t stream_id,
                                     std::uint8_t* buf, std::size_t length,
                                     std::uint32_t* data_flags, nghttp2_data_source*, void* user) {
  auto* ctx = static_cast<UpstreamContext*>(user);
  Impl* self = ctx->impl;
  Stream* s = self->stream_of_upstream(ctx->index, stream_id);
  if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  const std::size_t n = std::min(length, s->request_body.size());
  if (n > 0) {
    std::memcpy(buf, s->request_body.data(), n);
    s->request_body.erase(0, n);
    nghttp2_session_consume(self->front, s->id, n);
  }
  if (s->request_body.empty()) {
    if (!s->request_end) {
      if (n == 0) return NGHTTP2_ERR_DEFERRED;
    } else {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!s->request_trailers.empty()) {
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        const auto nv = to_nv(s->request_trailers);
        nghttp2_submit_trailer(session, stream_id, nv.data(), nv.size());
      }
    }
  }
  return static_cast<ssize_t>(n);
}

int H2cProxy::Impl::up_on_header(nghttp2_session*, const nghttp2_frame* frame,
                                 const std::uint8_t* name, std::size_t namelen,
                                 const std::uint8_t* value, std::size_t valuelen,
                                 std::uint8_t flags, void* user) {
  auto* ctx = static_cast<UpstreamContext*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  Stream* s = ctx->impl->stream_of_upstream(ctx->index, frame->hd.stream_id);
  if (s == nullptr) return 0;
  Header h{std::string(reinterpret_cast<const char*>(name), namelen),
           std::string(reinterpret_cast<const char*>(value), valuelen),
           static_cast<std::uint8_t>(flags & NGHTTP2_NV_FLAG_NO_INDEX)};
  if (s->response_final) {
    s->response_trailers.push_back(std::move(h));
  } else {
    s->response.push_back(std::move(h));
  }
  return 0;
}

int H2cProxy::Impl::up_on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* ctx = static_cast<UpstreamContext*>(user);
  Impl* self = ctx->impl;
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    self->upstreams[ctx->index].goaway = true;
    return 0;
  }
  Stream* s = self->stream_of_upstream(ctx->index, frame->hd.stream_id);
  if (s == nullptr) return 0;
  const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (frame->hd.type == NGHTTP2_HEADERS) {
    if (!s->response_final && !s->response.empty()) {
      // A response head: 1xx goes on as a non-final HEADERS, the final one
      // opens the client's response.
      const std::vector<Header> head = std::move(s->response);
      s->response.clear();
      const auto nv = to_nv(head);
      const bool informational = !head.empty() && head.front().name == ":status" &&
                                 head.front().value.size() == 3 && head.front().value[0] == '1';
      if (informational && !end_stream) {
        nghttp2_submit_headers(self->front, NGHTTP2_FLAG_NONE, s->id, nullptr, nv.data(), nv.size(),
                               nullptr);
      } else {
        s->response_final = true;
        s->response_submitted = true;
        s->response_end = end_stream;
        nghttp2_data_provider provider{};
        provider.read_callback = &read_response;
        nghttp2_submit_response(self->front, s->id, nv.data(), nv.size(),
                                end_stream ? nullptr : &provider);
      }
    } else if (end_stream) {  // trailers
      s->response_end = true;
      self->resume_front(s->id);
    }
  } else if (frame->hd.type == NGHTTP2_DATA && end_stream) {
    s->response_end = true;
    self->resume_front(s->id);
  }
  return 0;
}

int H2cProxy::Impl::up_on_data_chunk(nghttp2_session* session, std::uint8_t, std::int32_t stream_id,
                                     const std::uint8_t* data, std::size_t len, void* user) {
  auto* ctx = static_cast<UpstreamContext*>(user);
  Stream* s = ctx->impl->stream_of_upstream(ctx->index, stream_id);
  if (s == nullptr || !s->response_submitted) {
    nghttp2_session_consume(session, stream_id, len);
    return 0;
  }
  s->response_body.append(reinterpret_cast<const char*>(data), len);
  ctx->impl->resume_front(s->id);
  return 0;
}

int H2cProxy::Impl::up_on_stream_close(nghttp2_session* session, std::int32_t stream_id,
                                       std::uint32_t error_code, void* user) {
  auto* ctx = static_cast<UpstreamContext*>(user);
  Impl* self = ctx->impl;
  Stream* s = self->stream_of_upstream(ctx->index, stream_id);
  self->upstreams[ctx->index].front.erase(stream_id);
  if (s == nullptr) return 0;
  // What the client has not taken yet stays buffered for it, but the
  // upstream connection's window must not wait for it: the stream is over.
  if (!s->response_consumed && !s->response_body.empty()) {
    nghttp2_session_consume_connection(session, s->response_body.size());
  }
  s->response_consumed = true;
  s->upstream_closed = true;
  self->release_request_body(*s);
  if (error_code == NGHTTP2_NO_ERROR && s->response_end) return 0;
  self->stream_failed_upstream(
      *s, error_code == NGHTTP2_NO_ERROR ? std::uint32_t{NGHTTP2_INTERNAL_ERROR} : error_code);
  return 0;
}

void H2cProxy::Impl::stream_failed_upstream(Stream& s, std::uint32_t error_code) {
  s.upstream_closed = true;
  release_request_body(s);
  if (!s.response_submitted) {
    if (error_code == NGHTTP2_REFUSED_STREAM) {
      nghttp2_submit_rst_stream(front, NGHTTP2_FLAG_NONE, s.id, NGHTTP2_REFUSED_STREAM);
    } else {
      answer(s, 502, "egressd: the upstream ended the stream without a response\n");
    }
  } else if (!s.response_end) {
    nghttp2_submit_rst_stream(front, NGHTTP2_FLAG_NONE, s.id, error_code);
  }
}

// ---- the public face --------------------------------------------------------------

H2cProxy::H2cProxy() : impl_(std::make_unique<Impl>()) {}
H2cProxy::~H2cProxy() = default;

bool H2cProxy::feed_client(std::span<const std::uint8_t> bytes) {
  if (impl_->fatal) return false;
  const ssize_t rv = nghttp2_session_mem_recv(impl_->front, bytes.data(), bytes.size());
  if (rv < 0) {
    impl_->fatal = true;
    // A last word where the protocol allows one (nghttp2 already queued a
    // GOAWAY for most errors; this is a no-op then).
    nghttp2_submit_goaway(impl_->front, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(impl_->front),
                          NGHTTP2_PROTOCOL_ERROR, nullptr, 0);
    return false;
  }
  return true;
}

std::size_t H2cProxy::take_client_output(std::string& out, std::size_t max) {
  const std::size_t start = out.size();
  while (out.size() - start < max) {
    const std::uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(impl_->front, &data);
    if (n < 0) {
      impl_->fatal = true;
      break;
    }
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  return out.size() - start;
}

bool H2cProxy::client_done() const {
  return nghttp2_session_want_read(impl_->front) == 0 &&
         nghttp2_session_want_write(impl_->front) == 0;
}

bool H2cProxy::protocol_error() const noexcept {
  return impl_->fatal || impl_->goaway_error_sent;
}

std::vector<H2cRequest> H2cProxy::take_requests() {
  return std::exchange(impl_->requests, {});
}

void H2cProxy::refuse(std::int32_t stream_id, int status, std::string body) {
  Impl::Stream* s = impl_->find(stream_id);
  if (s == nullptr || s->state != Impl::Stream::State::judging) return;
  s->state = Impl::Stream::State::refused;
  impl_->release_request_body(*s);
  impl_->answer(*s, status, body);
}

void H2cProxy::route(std::int32_t stream_id, std::size_t upstream) {
  Impl::Stream* s = impl_->find(stream_id);
  if (s == nullptr || s->state != Impl::Stream::State::judging ||
      upstream >= impl_->upstreams.size())
    return;
  s->state = Impl::Stream::State::routed;
  s->upstream = upstream;
  Impl::Upstream& u = impl_->upstreams[upstream];
  if (u.closed) {
    impl_->stream_failed_upstream(*s, NGHTTP2_REFUSED_STREAM);
  } else if (u.connected) {
    impl_->submit_upstream(*s);
  } else {
    u.waiting.push_back(stream_id);
  }
}

std::size_t H2cProxy::add_upstream() {
  const std::size_t index = impl_->upstreams.size();
  impl_->contexts.push_back(
      std::make_unique<Impl::UpstreamContext>(Impl::UpstreamContext{impl_.get(), index}));
  Impl::Upstream u;
  nghttp2_session_client_new2(&u.session, impl_->upstream_callbacks, impl_->contexts.back().get(),
                              impl_->option);
  impl_->upstreams.push_back(std::move(u));
  return index;
}

void H2cProxy::upstream_connected(std::size_t upstream) {
  if (upstream >= impl_->upstreams.size()) return;
  Impl::Upstream& u = impl_->upstreams[upstream];
  if (u.closed || u.connected) return;
  u.connected = true;
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, kH2cMaxStreams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<std::uint32_t>(kH2cStreamWindow)},
  };
  nghttp2_submit_settings(u.session, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  nghttp2_session_set_local_window_size(u.session, NGHTTP2_FLAG_NONE, 0, kH2cConnectionWindow);
  for (std::int32_t id : std::exchange(u.waiting, {})) {
    if (Impl::Stream* s = impl_->find(id)) impl_->submit_upstream(*s);
  }
}

void H2cProxy::upstream_failed(std::size_t upstream, int status, const std::string& body) {
  if (upstream >= impl_->upstreams.size()) return;
  Impl::Upstream& u = impl_->upstreams[upstream];
  u.closed = true;
  for (std::int32_t id : std::exchange(u.waiting, {})) {
    Impl::Stream* s = impl_->find(id);
    if (s == nullptr) continue;
    s->upstream_closed = true;
    impl_->release_request_body(*s);
    impl_->answer(*s, status, body);
  }
}

bool H2cProxy::upstream_usable(std::size_t upstream) const {
  if (upstream >= impl_->upstreams.size()) return false;
  const Impl::Upstream& u = impl_->upstreams[upstream];
  if (u.closed || u.goaway) return false;
  return !u.connected || nghttp2_session_check_request_allowed(u.session) != 0;
}

bool H2cProxy::feed_upstream(std::size_t upstream, std::span<const std::uint8_t> bytes) {
  if (upstream >= impl_->upstreams.size()) return false;
  Impl::Upstream& u = impl_->upstreams[upstream];
  if (u.closed || !u.connected) return false;
  return nghttp2_session_mem_recv(u.session, bytes.data(), bytes.size()) >= 0;
}

std::size_t H2cProxy::take_upstream_output(std::size_t upstream, std::string& out,
                                           std::size_t max) {
  if (upstream >= impl_->upstreams.size()) return 0;
  Impl::Upstream& u = impl_->upstreams[upstream];
  if (u.closed || !u.connected) return 0;
  const std::size_t start = out.size();
  while (out.size() - start < max) {
    const std::uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(u.session, &data);
    if (n <= 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  return out.size() - start;
}

void H2cProxy::upstream_closed(std::size_t upstream) {
  if (upstream >= impl_->upstreams.size()) return;
  Impl::Upstream& u = impl_->upstreams[upstream];
  if (u.closed) return;
  u.closed = true;
  std::vector<std::int32_t> ids = std::exchange(u.waiting, {});
  for (const auto& [up_id, front_id] : u.front) ids.push_back(front_id);
  u.front.clear();
  for (std::int32_t id : ids) {
    Impl::Stream* s = impl_->find(id);
    if (s == nullptr || s->upstream != upstream) continue;
    // Its buffered response is ours now: the session it came on is gone.
    s->response_consumed = true;
    if (s->response_end && s->upstream_id != 0) {
      s->upstream_closed = true;
      continue;  // complete: the client still gets what is buffered
    }
    impl_->stream_failed_upstream(*s, NGHTTP2_INTERNAL_ERROR);
  }
}

bool H2cProxy::upstream_done(std::size_t upstream) const {
  if (upstream >= impl_->upstreams.size()) return true;
  const Impl::Upstream& u = impl_->upstreams[upstream];
  if (u.closed) return true;
  if (!u.connected) return false;
  return nghttp2_session_want_read(u.session) == 0 && nghttp2_session_want_write(u.session) == 0;
}

void H2cProxy::drain() {
  if (impl_->drained) return;
  impl_->drained = true;
  nghttp2_submit_goaway(impl_->front, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(impl_->front), NGHTTP2_NO_ERROR,
                        nullptr, 0);
}

bool H2cProxy::draining() const noexcept {
  return impl_->drained;
}

std::size_t H2cProxy::streams_seen() const noexcept {
  return impl_->seen;
}

std::size_t H2cProxy::open_streams() const noexcept {
  return impl_->streams.size();
}

std::size_t H2cProxy::buffered_bytes() const noexcept {
  std::size_t n = 0;
  for (const auto& [id, s] : impl_->streams) n += s.request_body.size() + s.response_body.size();
  return n;
}

}  // namespace egressd::l7
