#pragma once
// The compiled policy and the decision (contract "Decision", rules 1-12).
// Pure: no sockets, no DNS, no clock reads — the caller supplies the facts
// of a flow, the DNS answers it has, the gateway's own addresses and today's
// date. A CompiledPolicy is immutable after compile(), so one snapshot is
// shared by every worker without locks (hold it by shared_ptr while a flow
// uses names that point into it).
//
// Deciding is two-phase because destination integrity needs DNS:
//   Outcome o = policy.decide(facts, answers);
//   if (o.needs_lookup) { resolve o.lookup_name; fill answers; o = policy.decide(facts, answers); }
// The second call never asks again for a name whose answer it was given
// (a failed lookup is an answer: it fails integrity, it is never an allow).

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/config/spec.hpp"
#include "egressd/core/identity.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/core/protocol.hpp"

namespace egressd::policy {

enum class Decision : std::uint8_t { allow, deny, audit_deny };
std::string_view to_string(Decision d) noexcept;

// The identity selectors of one policy that a source pod satisfies (ids,
// ascending). Computed once per flow by CompiledPolicy::match_identity and
// handed to every decision about that flow; inline for the common few.
class SelectorSet {
 public:
  void push_back(std::uint32_t id) {
    if (size_ < inline_.size()) {
      inline_[size_++] = id;
      return;
    }
    if (size_ == inline_.size()) heap_.assign(inline_.begin(), inline_.end());
    heap_.push_back(id);
    ++size_;
  }
  [[nodiscard]] const std::uint32_t* begin() const noexcept {
    return size_ > inline_.size() ? heap_.data() : inline_.data();
  }
  [[nodiscard]] const std::uint32_t* end() const noexcept { return begin() + size_; }
  std::uint32_t* begin() noexcept { return size_ > inline_.size() ? heap_.data() : inline_.data(); }
  std::uint32_t* end() noexcept { return begin() + size_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] bool contains(std::uint32_t id) const noexcept {
    return std::binary_search(begin(), end(), id);
  }

 private:
  std::array<std::uint32_t, 16> inline_{};
  std::vector<std::uint32_t> heap_;
  std::size_t size_ = 0;
};

// What the gateway learnt about one flow (rule 1).
struct FlowFacts {
  std::string_view listener;  // listener name (reported only)
  bool transparent = true;    // redirect/tproxy: the client chose dst, so integrity applies
  IpAddress src;
  IpAddress dst;  // original destination (transparent) or resolved target (explicit)
  std::uint16_t port = 0;
  Proto proto = Proto::tcp;
  // The name from the traffic, raw (not yet validated or lowercased);
  // nullopt when the bytes carried none.
  std::optional<std::string_view> name;
  // A ClientHello with no server_name (rule 9); only looked at when `name`
  // is unset.
  bool tls_without_sni = false;
  bool ech = false;               // the ClientHello carried encrypted_client_hello (rule 10)
  std::chrono::sys_days today{};  // UTC day, for `until`
  // The source pod, when the Kubernetes index knows the source IP; nullptr
  // = a pod-less or unknown source, which no identity selector matches.
  const PodIdentity* identity = nullptr;
  // match_identity(identity) of the policy deciding, when the caller has
  // it (once per flow); nullptr = computed inside each call.
  const SelectorSet* selectors = nullptr;
};

// DNS answers the caller has for a name: every address seen for it within
// dns.verify_window, or a failure. `assumed` is what AssumeIntegrity gives:
// no answer, but the caller vouches that integrity holds (explain/test):
// verify passes and connects to dst, resolve passes with no address to
// connect to (so the guard is not run for it), nothing is resolved.
struct NameAnswer {
  enum class Status : std::uint8_t { ok, failed, assumed };
  Status status = Status::failed;
  std::span<const IpAddress> addresses;  // when ok; may be empty (NODATA)
  std::string_view error;                // when failed, e.g. "NXDOMAIN"
};

// Looks answers up for the decision. The gateway backs it with its DNS
// cache; explain/test use AssumeIntegrity (no network).
class NameAnswers {
 public:
  NameAnswers() = default;
  NameAnswers(const NameAnswers&) = delete;
  NameAnswers& operator=(const NameAnswers&) = delete;
  virtual ~NameAnswers() = default;
  // nullopt = not known yet (the decision will ask for a lookup).
  [[nodiscard]] virtual std::optional<NameAnswer> find(std::string_view canonical_name) const = 0;
};

// For `explain` and `test`: a host match counts as a match, its integrity
// mode is reported, nothing is resolved (contract: "need no network").
class AssumeIntegrity final : public NameAnswers {
 public:
  [[nodiscard]] std::optional<NameAnswer> find(std::string_view) const override;
};

struct Verdict {
  Decision decision = Decision::deny;
  // A rule name, "default", or "builtin:<check>". Points into the
  // CompiledPolicy or static storage: valid while the policy lives.
  std::string_view rule;
  std::string reason;  // one human sentence for the log and explain
  // The deciding allow host entry's integrity mode, when one decided and the
  // flow passes. In explicit mode (transparent=false) no integrity check is
  // performed (dst is already the gateway's own resolution), and this still
  // reports the entry's configured mode, as explain/test do.
  std::optional<config::Integrity> integrity;
  // Where to connect when the flow passes: dst, or the resolved address
  // under `resolve`. Unset on deny, and under AssumeIntegrity with resolve.
  std::optional<IpAddress> connect_to;
  bool matched_by_host = false;  // the deciding allow came from a host entry
  // builtin:guard only: the class that refused the address, as a metric
  // label ("own_host", "loopback", "unspecified", "multicast", "broadcast",
  // "link_local", "cloud_metadata", "private", "ipv4_embedded"). Static text.
  std::string_view guard_class;
};

struct Outcome {
  bool needs_lookup = false;
  std::string lookup_name;  // canonical name to resolve when needs_lookup
  Verdict verdict;          // final when !needs_lookup
};

// --- explain: why, with near misses -------------------------------------
//
// A rule's conditions (rules 3-4) are: its `from` holds for the source, and
// for one `to` entry, its destination (host pattern or cidr) matches and its
// port list has the port. A rule is listed in Explanation::near_misses when
// it did not decide the flow and either
// - all its conditions held for one entry (it matched) but another rule or
//   a builtin check was named instead: `overridden`, `preempted`,
//   `shadowed`, `audit_only`; or
// - exactly one condition failed, and it was not the destination: an
//   entry's destination matched but its ports lack the port while `from`
//   holds (`wrong_port`), or an entry's destination and port matched but
//   `from` does not hold (`source_not_in_from`).
// A rule whose host or cidr does not match the flow is never listed, however
// close the pattern: the destination is what the flow is about.
struct NearMiss {
  std::string_view rule;  // the rule's name (points into the policy)
  config::Action action = config::Action::allow;
  // `wrong_port`, `source_not_in_from`, or for a rule that matched:
  // `overridden` (an allow rule, a deny rule decided), `preempted` (a
  // builtin check decided first), `shadowed` (a rule of the same kind,
  // earlier in the file, is named; the decision would be the same without
  // this one), `audit_only` (a deny rule in audit mode: it does not deny).
  std::string_view why;
  // overridden, preempted, shadowed: the rule or builtin named instead.
  std::string_view by;
  // source_not_in_from: `cidr` (the source IP is outside every from cidr),
  // `no_pod` (the rule has identity selectors and the source is a pod-less
  // IP), `namespace` (no selector's namespace part holds for the pod),
  // `labels` (a selector's namespace part holds, its pod labels do not).
  std::string_view source;
  std::string reason;  // one human sentence
};

// What the verdict rests on that a live flow could see differently.
struct ExplainNote {
  // `integrity_assumed`: an allow host entry with verify or resolve decided
  // in a transparent listener; a live flow needs DNS to agree (explain
  // resolves nothing). `mode_override_active` / `mode_override_expired`: a
  // deny rule that matched has a `mode` override with `until`, still in
  // force / ended (after `until` the rule follows policy.mode).
  std::string_view why;
  std::string_view rule;
  std::string reason;
};

struct Explanation {
  Verdict verdict;                    // exactly decide(facts, AssumeIntegrity{}).verdict
  std::vector<NearMiss> near_misses;  // in rule (file) order
  std::vector<ExplainNote> notes;
};

struct PolicyStats {
  std::size_t rules = 0;
  std::size_t exact_hosts = 0;
  std::size_t wildcard_hosts = 0;
  std::size_t cidrs = 0;
  std::size_t memory_bytes = 0;  // approximate footprint of the matchers
};

class CompiledPolicy {
 public:
  // Compiles a validated spec. `own_addresses` are every address of the
  // gateway's host (always denied by the guard, rule 7); `tls` and the
  // policy section come from the same config.
  static std::shared_ptr<const CompiledPolicy> compile(const config::PolicySpec& spec,
                                                       const config::TlsSpec& tls,
                                                       std::vector<IpAddress> own_addresses = {});

  CompiledPolicy(const CompiledPolicy&) = delete;
  CompiledPolicy& operator=(const CompiledPolicy&) = delete;
  ~CompiledPolicy();

  // Rules 2-10 (rule 8, sni-mismatch, is the explicit-mode flow's check).
  // Never throws; the matchers never allocate (a flow matching more than a
  // few dozen entries spills one small vector), the verdict's reason text
  // does. Deterministic: the verdict, its rule name and connect_to never
  // depend on which answers happen to be cached — decide() asks for a lookup
  // (needs_lookup) whenever the outcome or the naming would depend on an
  // answer `answers` does not have, and never when an enforcing deny already
  // decides. Only the flow's one name is ever looked up.
  //
  // Which check is named when several would deny (rule 7):
  // builtin:invalid-name, then builtin:guard, then the policy. The guard's
  // address-only classes (own host, unspecified, loopback, multicast,
  // broadcast, link-local) are judged on dst before any rule; its private
  // classes as soon as a host entry (allow or deny) matched, before deny
  // rules and integrity — except a transparent `resolve` allow entry, whose
  // connect address is its own answer and is guarded once known. The
  // address the gateway finally connects to is guarded again in full.
  //
  // Further precedence (documented choices where the contract is silent):
  // - Among allow rules the first in the file that passes is named; within
  //   it a matching cidr entry decides before its host entries (an address
  //   grant needs no integrity), then its host entries in `to` order.
  // - A deny rule in audit mode names the audit_deny even when the flow
  //   passes only because policy.mode is audit (deny rules outrank default
  //   and builtin:integrity, as in rule 5).
  // - A `resolve` entry connects to the first answer that passes the guard;
  //   when none does, to the first answer (and the guard then denies). An
  //   empty answer (NODATA) fails its integrity.
  // - A flow passing as audit_deny after failing integrity connects to dst
  //   and counts as matched by host for the guard.
  [[nodiscard]] Outcome decide(const FlowFacts& facts, const NameAnswers& answers) const;

  // Explicit mode, before the gateway resolves a target name: the verdict
  // when no address could change it — the name is invalid, an enforcing
  // deny host entry matches (named even if a deny cidr entry earlier in the
  // file would match some address), or nothing could let it through (no
  // allow host entry applies, no allow cidr entry applies to this source
  // and port, default deny, policy.mode enforce). A name denied anyway is
  // then never looked up: the gateway's resolver is no channel for data
  // (DNS exfiltration). nullopt when the address matters (resolve, then
  // decide() per answer), and for IP literals.
  [[nodiscard]] std::optional<Verdict> decide_by_name(const FlowFacts& facts) const;

  // Rule 11: can a name from the traffic still change the decision for a
  // flow from `src` to `port` on this listener? False when no host entry of
  // any rule (allow or deny) could match that source and port: the gateway
  // then decides at once, without waiting for client bytes. Rules do not
  // name listeners, so `listener` does not change the answer. O(depth of
  // the source-CIDR trie), independent of the number of rules.
  // With `identity`, host entries of rules whose identity selectors the pod
  // satisfies count too (cost: one identity match).
  [[nodiscard]] bool name_can_matter(std::string_view listener, const IpAddress& src,
                                     std::uint16_t port,
                                     const PodIdentity* identity = nullptr) const noexcept;

  // The identity selectors `identity` satisfies (none for nullptr): what
  // FlowFacts::selectors carries. Cost: a hash lookup per label of the pod
  // and its namespace, then the few candidate selectors checked in full.
  [[nodiscard]] SelectorSet match_identity(const PodIdentity* identity) const;

  // `egressd explain`: the verdict under AssumeIntegrity and why — the
  // near misses and notes above. A separate slow path: it walks every rule
  // and allocates; decide() neither calls it nor pays for it. Valid while
  // the policy lives (names point into it).
  [[nodiscard]] Explanation explain(const FlowFacts& facts) const;

  [[nodiscard]] PolicyStats stats() const noexcept;

  struct Impl;

 private:
  explicit CompiledPolicy(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Result of one policy test case (config `tests:` or a CASES file).
struct TestResult {
  const config::TestCase* test = nullptr;
  bool passed = false;
  Verdict verdict;
  std::string failure;  // e.g. `expected allow (rule github), got deny (rule default): ...`
};

// Runs cases against the policy without network (AssumeIntegrity).
// `listeners`: the config's listeners with their modes, to resolve a case's
// `listener` (default: the first redirect listener; an explicit listener
// judges the case as explicit mode, transparent=false). A case naming an
// unknown listener fails with that message. proto defaults to tls when the
// case has a host, else tcp; tls without a host is a ClientHello without SNI.
// Failure text: `case at FILE:LINE: expected allow (rule github), got deny
// (rule default: no rule matched; default deny)`.
std::vector<TestResult> run_tests(const CompiledPolicy& policy,
                                  const std::vector<config::ListenerSpec>& listeners,
                                  std::span<const config::TestCase> cases,
                                  std::chrono::sys_days today);

}  // namespace egressd::policy
