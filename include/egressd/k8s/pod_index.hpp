#pragma once
// The IP -> pod index behind identity selectors: pure state, no I/O, no
// threads, no logging. The watcher feeds it pod and namespace objects (as
// the Kubernetes API returns them, parsed by Boost.JSON) and publishes the
// immutable snapshots it produces; workers look up a flow's source IP in the
// snapshot they hold, without waiting for anything.
//
// Which pods hold their IPs (contract "Pod identity", issue 7 item 3):
// - phase Running, or phase Pending with at least one IP; never a pod with
//   spec.hostNetwork (its IP is the node's); every other phase (Succeeded,
//   Failed, Unknown, none) holds nothing;
// - its IPs are status.podIPs[].ip (IPv4 and IPv6 in dual stack), or
//   status.podIP when podIPs is absent or empty; an IPv4-mapped IPv6 address
//   is the IPv4 address; text that is not an IP address is ignored.
// Reuse and races, so that rights never move with an IP:
// - a pod deleted, finished, or whose IPs changed releases the IPs it no
//   longer holds in the same call that learns it;
// - an IP claimed by two live pods maps to no pod until only one claims it.
// Namespaces: a pod's namespace_labels are its namespace's labels, and
// always kubernetes.io/metadata.name = the namespace's name. Before the
// namespace object is seen (or after it is deleted) they are that one label
// only: fail closed for every other namespace selector.
// Relists: replace_pods / replace_namespaces replace the whole state of one
// resource; what the new list lacks is gone.
//
// Threads: a PodIndex is used by one thread at a time (the watcher's). A
// snapshot is immutable and may be read from any number of threads.

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/json/fwd.hpp>

#include "egressd/core/identity.hpp"
#include "egressd/core/ip.hpp"

namespace egressd::k8s {

// FNV-1a over the address bytes (as SourceLimiter hashes them): no
// allocation, IPv4 and IPv6 never equal (different lengths are hashed).
struct IpAddressHash {
  std::size_t operator()(const IpAddress& ip) const noexcept;
};

// What a lookup reads: IP -> identity, frozen.
class IdentitySnapshot {
 public:
  // The pod that alone holds `ip`, or nullptr (unknown, ambiguous, not
  // holding). O(1) on average; no allocation (a shared_ptr copy).
  [[nodiscard]] PodIdentityPtr find(const IpAddress& ip) const noexcept;
  // Pods whose IPs the index holds (Running, or Pending with an IP; not
  // hostNetwork), counted once each, including a pod whose IPs are all
  // ambiguous at the moment: egressd_kubernetes_pods.
  [[nodiscard]] std::size_t pods() const noexcept { return pods_; }
  // Addresses that map to a pod (ambiguous ones excluded).
  [[nodiscard]] std::size_t addresses() const noexcept { return by_ip_.size(); }

 private:
  friend class PodIndex;
  std::unordered_map<IpAddress, PodIdentityPtr, IpAddressHash> by_ip_;
  std::size_t pods_ = 0;
};
using IdentitySnapshotPtr = std::shared_ptr<const IdentitySnapshot>;

// The parts of a Pod object the index uses.
struct PodRecord {
  std::string namespace_name;
  std::string name;
  std::string service_account;  // spec.serviceAccountName; "" when absent
  std::string resource_version;
  Labels labels;  // sorted
  // The IPs this pod holds by the rules above, deduplicated: empty when the
  // pod holds none (finished, hostNetwork, Pending without an IP, ...).
  std::vector<IpAddress> ips;
};

// The parts of a Namespace object the index uses.
struct NamespaceRecord {
  std::string name;
  std::string resource_version;
  Labels labels;  // sorted; always holds kubernetes.io/metadata.name = name
};

// From a Pod object (metadata.name and metadata.namespace required, every
// other field optional). nullopt when it is not an object or lacks them.
std::optional<PodRecord> parse_pod(const boost::json::value& object);
// From a Namespace object (metadata.name required).
std::optional<NamespaceRecord> parse_namespace(const boost::json::value& object);

// The type of a watch event that changes state (BOOKMARK and ERROR do not).
enum class EventType : std::uint8_t { added, modified, deleted };

class PodIndex {
 public:
  PodIndex() = default;

  // One watch event. ADDED and MODIFIED are both "the object is now this";
  // DELETED removes it (its content does not matter beyond its name).
  // Returns false, changing nothing, when the object cannot be parsed.
  bool apply_pod(EventType type, const boost::json::value& object);
  bool apply_namespace(EventType type, const boost::json::value& object);

  // The same with parsed records.
  void upsert_pod(PodRecord pod);
  void erase_pod(std::string_view namespace_name, std::string_view name);
  void upsert_namespace(NamespaceRecord ns);
  void erase_namespace(std::string_view name);

  // A complete list: the resource's whole state becomes `items`.
  void replace_pods(std::vector<PodRecord> items);
  void replace_namespaces(std::vector<NamespaceRecord> items);

  // The current state, frozen. Built only when something changed since the
  // last call (else the same pointer again): call it once per batch of
  // events, not per lookup. O(pods + IPs) when rebuilt.
  IdentitySnapshotPtr snapshot();

  // Pods known (holding IPs or not) and namespaces known: for tests.
  [[nodiscard]] std::size_t known_pods() const noexcept { return pods_.size(); }
  [[nodiscard]] std::size_t known_namespaces() const noexcept { return namespaces_.size(); }

 private:
  struct PodState {
    PodRecord record;
    PodIdentityPtr identity;  // nullptr = to be built by the next snapshot()
  };
  // Key "namespace/name" (neither may contain '/'), so that one namespace's
  // pods are one contiguous range.
  using PodMap = std::map<std::string, PodState, std::less<>>;

  void claim(PodState& pod);
  void release(PodState& pod);
  void invalidate_namespace(std::string_view name);
  const Labels* namespace_labels(std::string_view name) const;

  PodMap pods_;
  std::map<std::string, NamespaceRecord, std::less<>> namespaces_;
  // IP -> the live pods claiming it (usually one). Pointers into pods_ (map
  // nodes are stable); a pod is released before it is erased.
  std::unordered_map<IpAddress, std::vector<PodState*>, IpAddressHash> claims_;
  IdentitySnapshotPtr snapshot_;
  bool changed_ = true;
};

}  // namespace egressd::k8s
