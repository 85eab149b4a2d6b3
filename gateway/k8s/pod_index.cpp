#include "egressd/k8s/pod_index.hpp"

#include <algorithm>
#include <utility>

#include <boost/json/value.hpp>

namespace egressd::k8s {

namespace json = boost::json;

namespace {

const json::object* object_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v != nullptr ? v->if_object() : nullptr;
}

std::string string_at(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  if (v == nullptr) return {};
  const auto* s = v->if_string();
  return s != nullptr ? std::string(s->data(), s->size()) : std::string();
}

Labels labels_at(const json::object& metadata) {
  Labels out;
  if (const auto* labels = object_at(metadata, "labels")) {
    out.reserve(labels->size());
    for (const auto& kv : *labels) {
      // Label values are strings in the API; anything else is not a label.
      if (const auto* s = kv.value().if_string()) {
        out.emplace_back(std::string(kv.key()), std::string(s->data(), s->size()));
      }
    }
  }
  normalize_labels(out);
  return out;
}

void add_ip(std::vector<IpAddress>& ips, const json::value& v) {
  const auto* s = v.if_string();
  if (s == nullptr) return;
  const auto ip = IpAddress::parse(std::string_view(s->data(), s->size()));
  if (!ip) return;
  if (std::find(ips.begin(), ips.end(), *ip) == ips.end()) ips.push_back(*ip);
}

std::string pod_key(std::string_view ns, std::string_view name) {
  std::string key;
  key.reserve(ns.size() + 1 + name.size());
  key.append(ns).append("/").append(name);
  return key;
}

// "ns/" .. the first key past every "ns/..." key ('/' + 1 == '0').
std::string namespace_range_end(std::string_view ns) {
  std::string end(ns);
  end.push_back(static_cast<char>('/' + 1));
  return end;
}

}  // namespace

std::size_t IpAddressHash::operator()(const IpAddress& ip) const noexcept {
  std::size_t h = 1469598103934665603ULL;
  for (auto b : ip.bytes()) h = (h ^ b) * 1099511628211ULL;
  return h;
}

PodIdentityPtr IdentitySnapshot::find(const IpAddress& ip) const noexcept {
  const auto it = by_ip_.find(ip);
  return it == by_ip_.end() ? nullptr : it->second;
}

std::optional<PodRecord> parse_pod(const json::value& object) {
  const auto* obj = object.if_object();
  if (obj == nullptr) return std::nullopt;
  const auto* metadata = object_at(*obj, "metadata");
  if (metadata == nullptr) return std::nullopt;
  PodRecord pod;
  pod.namespace_name = string_at(*metadata, "namespace");
  pod.name = string_at(*metadata, "name");
  if (pod.namespace_name.empty() || pod.name.empty()) return std::nullopt;
  // '/' would break the key's namespace ranges; the API never allows it.
  if (pod.namespace_name.find('/') != std::string::npos) return std::nullopt;
  pod.resource_version = string_at(*metadata, "resourceVersion");
  pod.labels = labels_at(*metadata);

  bool host_network = false;
  if (const auto* spec = object_at(*obj, "spec")) {
    pod.service_account = string_at(*spec, "serviceAccountName");
    if (const auto* hn = spec->if_contains("hostNetwork")) {
      host_network = hn->is_bool() && hn->get_bool();
    }
  }
  const auto* status = object_at(*obj, "status");
  if (status == nullptr || host_network) return pod;

  std::vector<IpAddress> ips;
  if (const auto* list = status->if_contains("podIPs"); list != nullptr && list->is_array()) {
    for (const auto& entry : list->get_array()) {
      if (const auto* e = entry.if_object()) {
        if (const auto* ip = e->if_contains("ip")) add_ip(ips, *ip);
      }
    }
  }
  if (ips.empty()) {
    if (const auto* ip = status->if_contains("podIP")) add_ip(ips, *ip);
  }
  const std::string phase = string_at(*status, "phase");
  // Pending with an IP: the sandbox has its address and may already send.
  if (phase == "Running" || (phase == "Pending" && !ips.empty())) pod.ips = std::move(ips);
  return pod;
}

std::optional<NamespaceRecord> parse_namespace(const json::value& object) {
  const auto* obj = object.if_object();
  if (obj == nullptr) return std::nullopt;
  const auto* metadata = object_at(*obj, "metadata");
  if (metadata == nullptr) return std::nullopt;
  NamespaceRecord ns;
  ns.name = string_at(*metadata, "name");
  if (ns.name.empty()) return std::nullopt;
  ns.resource_version = string_at(*metadata, "resourceVersion");
  ns.labels = labels_at(*metadata);
  // The API server sets it; we force it so that it can never disagree.
  ns.labels.emplace_back(std::string(kNamespaceNameLabel), ns.name);
  normalize_labels(ns.labels);
  return ns;
}

bool PodIndex::apply_pod(EventType type, const json::value& object) {
  auto pod = parse_pod(object);
  if (!pod) return false;
  if (type == EventType::deleted) {
    erase_pod(pod->namespace_name, pod->name);
  } else {
    upsert_pod(std::move(*pod));
  }
  return true;
}

bool PodIndex::apply_namespace(EventType type, const json::value& object) {
  auto ns = parse_namespace(object);
  if (!ns) return false;
  if (type == EventType::deleted) {
    erase_namespace(ns->name);
  } else {
    upsert_namespace(std::move(*ns));
  }
  return true;
}

void PodIndex::claim(PodState& pod) {
  for (const auto& ip : pod.record.ips) claims_[ip].push_back(&pod);
}

void PodIndex::release(PodState& pod) {
  for (const auto& ip : pod.record.ips) {
    const auto it = claims_.find(ip);
    if (it == claims_.end()) continue;
    auto& owners = it->second;
    owners.erase(std::remove(owners.begin(), owners.end(), &pod), owners.end());
    if (owners.empty()) claims_.erase(it);
  }
}

void PodIndex::upsert_pod(PodRecord pod) {
  changed_ = true;
  const std::string key = pod_key(pod.namespace_name, pod.name);
  auto it = pods_.find(key);
  if (it == pods_.end()) {
    it = pods_.emplace(key, PodState{std::move(pod), nullptr}).first;
  } else {
    // Release first: the IPs the pod no longer holds are free at once, and
    // the ones it keeps are claimed again below.
    release(it->second);
    it->second.record = std::move(pod);
    it->second.identity = nullptr;
  }
  claim(it->second);
}

void PodIndex::erase_pod(std::string_view namespace_name, std::string_view name) {
  const auto it = pods_.find(pod_key(namespace_name, name));
  if (it == pods_.end()) return;
  changed_ = true;
  release(it->second);
  pods_.erase(it);
}

void PodIndex::invalidate_namespace(std::string_view name) {
  const std::string first = pod_key(name, "");
  const auto end = pods_.lower_bound(namespace_range_end(name));
  for (auto it = pods_.lower_bound(first); it != end; ++it) it->second.identity = nullptr;
}

void PodIndex::upsert_namespace(NamespaceRecord ns) {
  changed_ = true;
  const std::string name = ns.name;
  namespaces_.insert_or_assign(name, std::move(ns));
  invalidate_namespace(name);
}

void PodIndex::erase_namespace(std::string_view name) {
  const auto it = namespaces_.find(name);
  if (it == namespaces_.end()) return;
  changed_ = true;
  namespaces_.erase(it);
  invalidate_namespace(name);
}

void PodIndex::replace_pods(std::vector<PodRecord> items) {
  changed_ = true;
  claims_.clear();
  pods_.clear();
  for (auto& pod : items) {
    // A list never holds one name twice; if it did, the later one wins.
    // (The key first: argument evaluation order is unspecified.)
    std::string key = pod_key(pod.namespace_name, pod.name);
    pods_.insert_or_assign(std::move(key), PodState{std::move(pod), nullptr});
  }
  for (auto& [key, state] : pods_) claim(state);
}

void PodIndex::replace_namespaces(std::vector<NamespaceRecord> items) {
  changed_ = true;
  namespaces_.clear();
  for (auto& ns : items) {
    std::string name = ns.name;
    namespaces_.insert_or_assign(std::move(name), std::move(ns));
  }
  for (auto& [key, state] : pods_) state.identity = nullptr;
}

const Labels* PodIndex::namespace_labels(std::string_view name) const {
  const auto it = namespaces_.find(name);
  return it == namespaces_.end() ? nullptr : &it->second.labels;
}

IdentitySnapshotPtr PodIndex::snapshot() {
  if (!changed_ && snapshot_) return snapshot_;
  auto snap = std::make_shared<IdentitySnapshot>();
  snap->by_ip_.reserve(claims_.size());
  std::size_t holding = 0;
  for (auto& [key, state] : pods_) {
    if (state.record.ips.empty()) continue;
    ++holding;
    if (state.identity) continue;
    auto id = std::make_shared<PodIdentity>();
    id->namespace_name = state.record.namespace_name;
    id->pod = state.record.name;
    id->service_account = state.record.service_account;
    id->labels = state.record.labels;
    if (const auto* ns = namespace_labels(state.record.namespace_name)) {
      id->namespace_labels = *ns;
    } else {
      // Unknown namespace: its name and nothing else (fail closed).
      id->namespace_labels.emplace_back(std::string(kNamespaceNameLabel),
                                        state.record.namespace_name);
    }
    state.identity = std::move(id);
  }
  for (const auto& [ip, owners] : claims_) {
    if (owners.size() == 1) snap->by_ip_.emplace(ip, owners.front()->identity);
  }
  snap->pods_ = holding;
  snapshot_ = std::move(snap);
  changed_ = false;
  return snapshot_;
}

}  // namespace egressd::k8s
