#pragma once
// `egressd learn`: from access logs to suggested allow rules (docs/learn.md).
//
// Feed every line of every log to a Learner, then call suggest(). Lines are
// untrusted: a line that is not a JSON object, or a denied flow record
// without valid addresses, is counted as malformed and skipped; nothing
// throws on bad input. The suggestions are plain RuleSpecs plus their YAML,
// every scalar quoted, ready to paste under `policy.rules`.

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/config/spec.hpp"
#include "egressd/core/ip.hpp"
#include "egressd/core/protocol.hpp"
#include "egressd/policy/policy.hpp"

namespace egressd::cli {

// Tuning of the grouping heuristics (docs/learn.md explains each).
struct LearnOptions {
  // Distinct names below one base before `*.base` / `**.base` is suggested.
  std::size_t min_names_for_wildcard = 3;
  // Distinct destination addresses in one /24 (IPv4) or /64 (IPv6) before
  // the block is suggested instead of each address.
  std::size_t min_addresses_for_block = 3;
  // More source blocks (/24 or /64), or namespaces, than this and `from` is
  // omitted.
  std::size_t max_source_blocks = 8;
  // The UTC day `until` is compared with when re-judging flows.
  std::chrono::sys_days today{};
};

struct LearnResult {
  std::vector<config::RuleSpec> rules;  // the suggestions, in output order
  std::string yaml;                     // comments + the rules, indented for policy.rules
  std::size_t records = 0;              // JSON records read (malformed lines excluded)
  std::size_t denied = 0;               // denied flow/request records
  std::size_t covered = 0;              // flows the suggestions make pass (verified)
  std::size_t malformed_lines = 0;
};

class Learner {
 public:
  // `cfg` is the config the suggestions are for: its rule names are avoided,
  // its listeners give each record's mode, and `policy` (compiled from it)
  // drops flows it already allows and verifies the suggestions. Both must
  // outlive the Learner.
  Learner(const config::ConfigSpec& cfg, std::shared_ptr<const policy::CompiledPolicy> policy,
          LearnOptions options);

  // One access-log line (without its '\n'). Never throws on any bytes.
  void add_line(std::string_view line);

  // Lines counted as malformed so far (for a per-file report).
  [[nodiscard]] std::size_t malformed_lines() const noexcept { return malformed_; }

  // Groups what was seen into rules, verifies them against the policy and
  // renders the YAML. Deterministic: the same lines in any order give the
  // same output.
  [[nodiscard]] LearnResult suggest() const;

  // One denied flow a rule could fix, as the policy would see it again.
  struct Observation {
    std::string name;  // canonical DNS name; empty = judged by address
    IpAddress src;
    IpAddress dst;
    std::uint16_t port = 0;
    Proto proto = Proto::tcp;
    bool transparent = true;
    bool integrity_failed = false;  // denied as builtin:integrity: suggest `resolve`
    // The source pod's namespace from the record ("" = a pod-less source):
    // with a kubernetes section, `from` is suggested by namespace.
    std::string namespace_name;
    friend auto operator<=>(const Observation&, const Observation&) = default;
  };
  // How often, and when, an observation was seen: the records' `time`
  // (UTC, "YYYY-MM-DDTHH:MM:SS.mmmZ", so text order is time order).
  struct Seen {
    std::size_t flows = 0;
    std::string first;  // empty = no record carried a well-formed time
    std::string last;
    void add(std::size_t n, std::string_view first_time, std::string_view last_time);
  };

 private:
  void add_observation(Observation obs, std::string_view listener, std::string_view time);
  // The flow an observation stands for, as decide() takes it; `pod` holds
  // its source identity (namespace only) and must outlive the facts.
  [[nodiscard]] policy::FlowFacts facts_of(const Observation& obs, PodIdentity& pod) const;
  void not_covered(const std::string& why, std::size_t n = 1);

  const config::ConfigSpec& cfg_;
  std::shared_ptr<const policy::CompiledPolicy> policy_;
  LearnOptions options_;
  std::map<Observation, Seen> observations_;
  std::map<std::string, std::size_t> not_covered_;  // reason -> flows
  std::size_t records_ = 0;
  std::size_t denied_ = 0;
  std::size_t malformed_ = 0;
};

// YAML double-quoted scalar for any bytes: only printable ASCII is written
// as is; everything else is escaped, so no input can end the scalar, the
// line or the document.
std::string yaml_quote(std::string_view s);

// The "registrable" part of a canonical DNS name: one label more than the
// longest public suffix it ends with, by a small built-in list (two-level
// country suffixes such as co.uk, and multi-tenant hosting domains such as
// github.io where each label below belongs to someone else); any single
// label counts as a suffix. Empty when the name is itself a suffix.
std::string registrable_domain(std::string_view name);

}  // namespace egressd::cli
