#pragma once
// The flow's calls into the process-wide services (metrics, access log,
// DNS), in one place so flow.cpp reads as the life of a flow.

#include <string>
#include <string_view>

#include <boost/asio/awaitable.hpp>

#include "egressd/dns/cache.hpp"
#include "egressd/flow/worker.hpp"
#include "egressd/log/record.hpp"
#include "egressd/policy/policy.hpp"

namespace egressd::flow {

void note_flow_opened(Worker& worker, const ListenerInfo& listener);
// `already_reported_*`: bytes the once-a-second sweep has already counted.
void note_flow_closed(Worker& worker, const ListenerInfo& listener, const log::FlowRecord& record,
                      std::uint64_t already_reported_up, std::uint64_t already_reported_down);
void note_connect_failure(Worker& worker, std::string_view reason);
// A verdict taken: counts builtin:guard denials by address class.
void note_verdict(Worker& worker, const policy::Verdict& verdict);
// One HTTP request judged (egressd_http_requests_total).
void note_http_request(Worker& worker, Proto proto, log::Decision decision);
void submit_record(Worker& worker, log::FlowRecord&& record);

// A lookup this flow made and waited for: its answer is used as is, even
// if the shared cache has evicted it since.
struct ResolvedName {
  std::string name;
  dns::Answer answer;
};

// decide() against the shared DNS cache (plus `resolved`, when set).
policy::Outcome decide(Worker& worker, const policy::CompiledPolicy& policy,
                       const policy::FlowFacts& facts, const ResolvedName* resolved);
// Resolves `name` through the shared resolver (a failure is an answer too).
boost::asio::awaitable<ResolvedName> resolve_name(Worker& worker, std::string name);
// decide(); when the verdict needs a lookup the cache cannot answer, looks
// the name up and decides again with that answer. The outcome may still
// say needs_lookup (the lookup failed): callers treat that as no address.
boost::asio::awaitable<policy::Outcome> decide_resolving(Worker& worker,
                                                         const policy::CompiledPolicy& policy,
                                                         const policy::FlowFacts& facts);

}  // namespace egressd::flow
