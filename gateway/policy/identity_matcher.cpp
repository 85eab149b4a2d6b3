#include "identity_matcher.hpp"

#include <algorithm>
#include <functional>
#include <string_view>

namespace egressd::policy::detail {

using Op = config::LabelRequirement::Operator;

std::uint32_t IdentityMatcher::add(const config::IdentitySelector& s) {
  const auto part = [](const std::optional<config::LabelSelector>& sel) {
    Part p;
    if (!sel) return p;
    p.present = true;
    for (const auto& r : sel->requirements) {
      Requirement q{r.key, r.op, r.values};
      std::sort(q.values.begin(), q.values.end());
      q.values.erase(std::unique(q.values.begin(), q.values.end()), q.values.end());
      p.requirements.push_back(std::move(q));
    }
    std::sort(p.requirements.begin(), p.requirements.end(), [](const auto& a, const auto& b) {
      if (a.key != b.key) return a.key < b.key;
      if (a.op != b.op) return a.op < b.op;
      return a.values < b.values;
    });
    return p;
  };
  Selector sel{part(s.namespace_selector), part(s.pod_selector)};
  // Policies repeat the same few selectors across many rules; one id each,
  // found through a canonical text of the selector (no quadratic compare).
  std::string key;
  for (const Part* p : {&sel.ns, &sel.pod}) {
    key += p->present ? '{' : '-';
    for (const Requirement& r : p->requirements) {
      key += r.key;
      key += '\0';
      key += static_cast<char>('0' + static_cast<int>(r.op));
      for (const std::string& v : r.values) {
        key += v;
        key += '\0';
      }
      key += '\1';
    }
    key += '}';
  }
  const auto [it, inserted] =
      dedupe_.emplace(std::move(key), static_cast<std::uint32_t>(selectors_.size()));
  if (inserted) selectors_.push_back(std::move(sel));
  return it->second;
}

std::uint64_t IdentityMatcher::anchor_hash(bool pod_scope, std::string_view key,
                                           std::string_view value) noexcept {
  const std::uint64_t k = std::hash<std::string_view>{}(key);
  const std::uint64_t v = std::hash<std::string_view>{}(value);
  // Order matters (key vs value, namespace vs pod): mix asymmetrically.
  return (k * 0x9E3779B97F4A7C15ULL) ^ (v + 0x7F4A7C159E3779B9ULL + (k << 6) + (k >> 2)) ^
         (pod_scope ? 0xD6E8FEB86659FD93ULL : 0);
}

std::uint64_t IdentityMatcher::pair_hash(std::string_view ns, std::string_view key,
                                         std::string_view value) noexcept {
  return anchor_hash(true, key, value) * 0xC2B2AE3D27D4EB4FULL ^ std::hash<std::string_view>{}(ns);
}

void IdentityMatcher::build() {
  std::unordered_map<std::string, std::uint32_t>().swap(dedupe_);
  anchored_.clear();
  paired_.clear();
  unanchored_.clear();
  constexpr std::size_t kMaxPairs = 64;  // cross product of In values filed
  for (std::size_t i = 0; i < selectors_.size(); ++i) {
    const auto id = static_cast<std::uint32_t>(i);
    const Selector& s = selectors_[i];
    // Namespace name and a pod label: file under each (namespace, value).
    const Requirement* ns_name = nullptr;
    for (const Requirement& r : s.ns.requirements) {
      if (r.op == Op::in && r.key == kNamespaceNameLabel) ns_name = &r;
    }
    const Requirement* pod_in = nullptr;
    for (const Requirement& r : s.pod.requirements) {
      if (r.op == Op::in && (pod_in == nullptr || r.values.size() < pod_in->values.size()))
        pod_in = &r;
    }
    if (ns_name != nullptr && pod_in != nullptr &&
        ns_name->values.size() * pod_in->values.size() <= kMaxPairs) {
      for (const std::string& ns : ns_name->values) {
        for (const std::string& v : pod_in->values) {
          paired_[pair_hash(ns, pod_in->key, v)].push_back(id);
        }
      }
      continue;
    }
    // Anchor on one In requirement, the namespace part's first: every
    // identity this selector accepts carries one of its (key, value) pairs.
    const Requirement* anchor = nullptr;
    bool pod_scope = false;
    for (const bool pod : {false, true}) {
      for (const Requirement& r : (pod ? s.pod : s.ns).requirements) {
        if (r.op == Op::in && (anchor == nullptr || r.values.size() < anchor->values.size())) {
          anchor = &r;
          pod_scope = pod;
        }
      }
      if (anchor != nullptr) break;
    }
    if (anchor == nullptr) {
      unanchored_.push_back(id);
      continue;
    }
    for (const std::string& v : anchor->values) {
      anchored_[anchor_hash(pod_scope, anchor->key, v)].push_back(id);
    }
  }
}

std::size_t IdentityMatcher::memory_bytes() const noexcept {
  std::size_t bytes = selectors_.capacity() * sizeof(Selector) +
                      unanchored_.capacity() * sizeof(std::uint32_t) +
                      (anchored_.bucket_count() + paired_.bucket_count()) * sizeof(void*);
  for (const auto* index : {&anchored_, &paired_}) {
    for (const auto& [h, ids] : *index) bytes += 32 + ids.capacity() * sizeof(std::uint32_t);
  }
  for (const Selector& s : selectors_) {
    for (const Part* p : {&s.ns, &s.pod}) {
      for (const Requirement& r : p->requirements) {
        bytes += sizeof(Requirement) + r.key.capacity();
        for (const auto& v : r.values) bytes += sizeof(std::string) + v.capacity();
      }
    }
  }
  return bytes;
}

bool IdentityMatcher::holds(const Part& part, const Labels& labels) {
  for (const Requirement& r : part.requirements) {
    const std::string* value = find_label(labels, r.key);
    switch (r.op) {
      case Op::in:
        if (value == nullptr || !std::binary_search(r.values.begin(), r.values.end(), *value))
          return false;
        break;
      case Op::not_in:
        if (value != nullptr && std::binary_search(r.values.begin(), r.values.end(), *value))
          return false;
        break;
      case Op::exists:
        if (value == nullptr) return false;
        break;
      case Op::does_not_exist:
        if (value != nullptr) return false;
        break;
    }
  }
  return true;
}

IdentityMatcher::PartsMatch IdentityMatcher::match_parts(std::uint32_t id,
                                                         const PodIdentity& identity) const {
  const Selector& s = selectors_.at(id);
  return {!s.ns.present || holds(s.ns, identity.namespace_labels),
          !s.pod.present || holds(s.pod, identity.labels)};
}

void IdentityMatcher::match(const PodIdentity* identity, SelectorIds& out) const {
  if (identity == nullptr || selectors_.empty()) return;
  SelectorIds candidates;
  const auto collect = [&](bool pod_scope, const Labels& labels) {
    for (const auto& [k, v] : labels) {
      auto it = anchored_.find(anchor_hash(pod_scope, k, v));
      if (it == anchored_.end()) continue;
      for (const std::uint32_t id : it->second) candidates.push_back(id);
    }
  };
  if (!anchored_.empty()) {
    collect(false, identity->namespace_labels);
    collect(true, identity->labels);
  }
  if (!paired_.empty()) {
    for (const auto& [k, v] : identity->labels) {
      auto it = paired_.find(pair_hash(identity->namespace_name, k, v));
      if (it == paired_.end()) continue;
      for (const std::uint32_t id : it->second) candidates.push_back(id);
    }
  }
  for (const std::uint32_t id : unanchored_) candidates.push_back(id);
  std::sort(candidates.begin(), candidates.end());
  const auto last = std::unique(candidates.begin(), candidates.end());
  for (const std::uint32_t* it = candidates.begin(); it != last; ++it) {
    const Selector& s = selectors_[*it];
    if ((!s.ns.present || holds(s.ns, identity->namespace_labels)) &&
        (!s.pod.present || holds(s.pod, identity->labels))) {
      out.push_back(*it);
    }
  }
}

}  // namespace egressd::policy::detail
