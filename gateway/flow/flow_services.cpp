#include "flow_services.hpp"

#include "egressd/dns/resolver.hpp"
#include "egressd/log/access_log.hpp"
#include "egressd/metrics/registry.hpp"

namespace egressd::flow {

void note_flow_opened(Worker& worker, const ListenerInfo& listener) {
  worker.metrics().flow_opened(listener.index);
}

void note_flow_closed(Worker& worker, const ListenerInfo& listener, const log::FlowRecord& record,
                      std::uint64_t already_reported_up, std::uint64_t already_reported_down) {
  auto& m = worker.metrics();
  m.add_bytes(listener.index, record.bytes_up - already_reported_up,
              record.bytes_down - already_reported_down);
  m.flow_closed(listener.index, record.proto, record.decision, record.rule, record.duration);
}

void note_connect_failure(Worker& worker, std::string_view reason) {
  metrics::ConnectFailure f = metrics::ConnectFailure::other;
  if (reason == "refused")
    f = metrics::ConnectFailure::refused;
  else if (reason == "timeout")
    f = metrics::ConnectFailure::timeout;
  else if (reason == "unreachable")
    f = metrics::ConnectFailure::unreachable;
  else if (reason == "reset")
    f = metrics::ConnectFailure::reset;
  worker.metrics().upstream_connect_failed(f);
}

void note_verdict(Worker& worker, const policy::Verdict& verdict) {
  if (verdict.guard_class.empty()) return;
  if (auto c = metrics::guard_class_from(verdict.guard_class)) worker.metrics().guard_denied(*c);
}

void note_http_request(Worker& worker, Proto proto, log::Decision decision) {
  worker.metrics().http_request(proto, decision);
}

void submit_record(Worker& worker, log::FlowRecord&& record) {
  if (auto* access_log = worker.services().access_log) access_log->submit(std::move(record));
}

namespace {

// egressd_dns_queries_total counts the lookups flows waited for, by outcome.
void note_dns_lookup(Worker& worker, const dns::Answer& answer) {
  if (worker.services().metrics == nullptr) return;
  metrics::DnsResult result = metrics::DnsResult::error;
  if (answer.ok()) {
    result = answer.addresses.empty() ? metrics::DnsResult::nodata : metrics::DnsResult::success;
  } else if (answer.error == "NXDOMAIN") {
    result = metrics::DnsResult::nxdomain;
  } else if (answer.error == "SERVFAIL") {
    result = metrics::DnsResult::servfail;
  } else if (answer.error == "timeout") {
    result = metrics::DnsResult::timeout;
  }
  worker.services().metrics->dns_query(result);
}

}  // namespace

policy::Outcome decide(Worker& worker, const policy::CompiledPolicy& policy,
                       const policy::FlowFacts& facts, const ResolvedName* resolved) {
  const dns::Cache* cache = worker.services().dns_cache;
  if (cache == nullptr) {
    const policy::AssumeIntegrity none;
    return policy.decide(facts, none);
  }
  dns::CacheAnswers answers(*cache, dns::Clock::now());
  if (resolved != nullptr) answers.pin(resolved->name, resolved->answer);
  return policy.decide(facts, answers);
}

boost::asio::awaitable<ResolvedName> resolve_name(Worker& worker, std::string name) {
  ResolvedName out;
  out.name = name;
  if (auto* resolver = worker.services().resolver) {
    out.answer = co_await resolver->resolve(std::move(name));
    note_dns_lookup(worker, out.answer);
  } else {
    out.answer.status = dns::Answer::Status::failed;
    out.answer.error = "no resolver";
  }
  co_return out;
}

boost::asio::awaitable<policy::Outcome> decide_resolving(Worker& worker,
                                                         const policy::CompiledPolicy& policy,
                                                         const policy::FlowFacts& facts) {
  policy::Outcome outcome = decide(worker, policy, facts, nullptr);
  if (outcome.needs_lookup) {
    const ResolvedName resolved = co_await resolve_name(worker, std::move(outcome.lookup_name));
    outcome = decide(worker, policy, facts, &resolved);
  }
  co_return outcome;
}

}  // namespace egressd::flow
