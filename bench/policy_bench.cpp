// Policy decision cost at 10, 10k, 100k and 1M rules (see bench/README.md).
//
// Synthetic policies with a pinned mix, drawn from a fixed-seed RNG: 60% of
// rules carry an exact host, 20% a wildcard (`*.` and `**.` alike), 15% a
// CIDR (2/3 IPv4, 1/3 IPv6), 5% are deny rules (exact host or CIDR); 30% of
// rules have `from`, 30% of entries have ports. Queries are precomputed and
// cycled: half hit a random rule (source, port, name or address chosen to
// match it), half miss. Answers always contain the flow's destination, so
// `verify` passes and the path measured is the full one (matchers, integrity,
// guard, reason text).
//
// The *Identity variants add pod identity (contract "Pod identity"): 30% of
// rules select pods instead of (or besides) CIDRs — `namespace: ns-N` (of
// 1,000), a podSelector `app: a-N` (of 300) in every namespace, or both with
// an In expression — and every query comes from a pod with a namespace, 3
// pod labels and 2 namespace labels (a hit: a pod the rule selects). The
// gateway matches a pod's selectors once per flow (BM_MatchIdentity) and
// hands the set to each decision (BM_Decide*Identity).

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "egressd/config/spec.hpp"
#include "egressd/core/identity.hpp"
#include "egressd/policy/policy.hpp"

namespace {

using namespace egressd;
using namespace egressd::policy;

std::size_t rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long size = 0;
  unsigned long resident = 0;
  const int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  if (n != 2) return 0;
  return resident * static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
}

// Answers that always contain the current flow's destination.
class DstAnswers final : public NameAnswers {
 public:
  [[nodiscard]] std::optional<NameAnswer> find(std::string_view) const override {
    NameAnswer a;
    a.status = NameAnswer::Status::ok;
    a.addresses = {&dst, 1};
    return a;
  }
  IpAddress dst;
};

struct Query {
  std::string name;  // empty = no name
  IpAddress src;
  IpAddress dst;
  std::uint16_t port = 443;
  std::shared_ptr<const PodIdentity> identity;  // null = a pod-less source
  SelectorSet selectors;  // the policy's match_identity(identity), once per flow
};

struct Fixture {
  std::shared_ptr<const CompiledPolicy> policy;
  std::vector<Query> hits;
  std::vector<Query> misses;
  double compile_seconds = 0;
  std::size_t rss_delta = 0;
};

class Synth {
 public:
  explicit Synth(std::uint64_t seed) : rng_(seed) {}
  std::uint64_t next() { return rng_(); }
  std::uint64_t below(std::uint64_t n) { return rng_() % n; }
  std::string label() {
    static constexpr char kAlphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    std::string s;
    std::uint64_t v = rng_();
    for (int i = 0; i < 8; ++i) {
      s += kAlphabet[v % 36];
      v /= 36;
    }
    return s;
  }
  // Public-looking addresses. Rules draw from `first` 11-99 (IPv4) and
  // 2001::/16 (IPv6); misses from 101-126 and 2a00::/16, so they miss.
  IpAddress public_v4(bool for_miss = false) {
    const auto v = static_cast<std::uint32_t>(rng_());
    const std::uint32_t first = for_miss ? 101U + (v >> 24) % 26U : 11U + (v >> 24) % 89U;
    return IpAddress::from_v4_uint((first << 24) | (v & 0xFFFFFFU));
  }
  IpAddress public_v6(bool for_miss = false) {
    std::array<std::uint8_t, 16> b{};
    b[0] = for_miss ? 0x2a : 0x20;
    b[1] = for_miss ? 0x00 : 0x01;
    const std::uint64_t hi = rng_();
    const std::uint64_t lo = rng_();
    for (std::size_t i = 0; i < 6; ++i) b[2 + i] = static_cast<std::uint8_t>(hi >> (8 * i));
    for (std::size_t i = 0; i < 8; ++i) b[8 + i] = static_cast<std::uint8_t>(lo >> (8 * i));
    return IpAddress::from_v6(b);
  }

 private:
  std::mt19937_64 rng_;
};

// An address inside `c`, with random host bits.
IpAddress inside(const Cidr& c, Synth& s) {
  auto bytes = c.base.bytes();
  std::array<std::uint8_t, 16> b{};
  std::copy(bytes.begin(), bytes.end(), b.begin());
  const std::uint64_t r = s.next();
  for (unsigned i = c.prefix_len; i < c.base.bit_width(); ++i) {
    if (((r >> (i % 64)) & 1U) != 0) b[i / 8] |= static_cast<std::uint8_t>(0x80U >> (i % 8));
  }
  return c.base.is_v4() ? IpAddress::from_v4({b[0], b[1], b[2], b[3]}) : IpAddress::from_v6(b);
}

// A pod of namespace `ns` with app label `app`, as the k8s index would hold it.
std::shared_ptr<const PodIdentity> make_pod(const std::string& ns, const std::string& app,
                                            Synth& s) {
  auto p = std::make_shared<PodIdentity>();
  p->namespace_name = ns;
  p->pod = app + "-" + s.label();
  p->labels = {{"app", app}, {"pod-template-hash", s.label()}, {"version", "v1"}};
  normalize_labels(p->labels);
  p->namespace_labels = {{std::string(kNamespaceNameLabel), ns}, {"team", "t" + ns.substr(3, 1)}};
  normalize_labels(p->namespace_labels);
  return p;
}

config::LabelSelector label_is(std::string key, std::string value) {
  config::LabelSelector sel;
  sel.requirements.push_back({std::move(key), config::LabelRequirement::Operator::in, {value}});
  return sel;
}

Fixture build(std::size_t rule_count, bool identities) {
  Synth s(0x5EED0000ULL + rule_count + (identities ? 7 : 0));
  config::PolicySpec spec;
  spec.rules.reserve(rule_count);
  // Shared parent domains, so wildcards and exact names overlap realistically.
  std::vector<std::string> domains;
  for (std::size_t i = 0; i < std::max<std::size_t>(rule_count / 20, 4); ++i) {
    domains.push_back(s.label() + (i % 3 == 0 ? ".com" : i % 3 == 1 ? ".net" : ".io"));
  }
  for (std::size_t i = 0; i < rule_count; ++i) {
    config::RuleSpec r;
    r.name = "rule-" + std::to_string(i);
    const auto kind = s.below(100);
    r.action = kind >= 95 ? config::Action::deny : config::Action::allow;
    if (s.below(100) < 30) {
      const auto v = static_cast<std::uint32_t>(s.next());
      r.from.push_back(Cidr::make(IpAddress::from_v4_uint(0x0A000000U | (v & 0x00FF0000U)), 16));
      if (s.below(2) == 0) {
        r.from.push_back(
            Cidr::make(IpAddress::from_v4_uint(0x0A000000U | ((v << 8) & 0x00FF0000U)), 16));
      }
    }
    if (identities && s.below(100) < 30) {
      config::IdentitySelector sel;
      const auto shape = s.below(3);
      const std::string ns = "ns-" + std::to_string(s.below(1000));
      const std::string app = "a-" + std::to_string(s.below(300));
      if (shape != 1) sel.namespace_selector = label_is(std::string(kNamespaceNameLabel), ns);
      if (shape != 0) sel.pod_selector = label_is("app", app);
      r.from_identities.push_back(std::move(sel));
    }
    config::ToSpec t;
    const std::string& domain = domains[s.below(domains.size())];
    if (kind < 60 || (kind >= 95 && kind < 98)) {
      t.host = s.label() + "." + domain;
    } else if (kind < 80) {
      t.host = (s.below(2) == 0 ? "*." : "**.") + s.label() + "." + domain;
    } else if (s.below(3) < 2) {
      t.cidr = Cidr::make(s.public_v4(), static_cast<std::uint8_t>(16 + s.below(17)));
    } else {
      // Mostly /32-/64 allocations, some single hosts.
      const auto len = s.below(8) == 0 ? 128U : 32U + static_cast<unsigned>(s.below(33));
      t.cidr = Cidr::make(s.public_v6(), static_cast<std::uint8_t>(len));
    }
    if (s.below(100) < 30) {
      t.ports = {config::PortRange{443, 443}, config::PortRange{8000, 8100}};
    }
    r.to.push_back(std::move(t));
    spec.rules.push_back(std::move(r));
  }

  Fixture fx;
  const std::size_t rss_before = rss_bytes();
  const auto t0 = std::chrono::steady_clock::now();
  fx.policy = CompiledPolicy::compile(spec, config::TlsSpec{});
  const auto t1 = std::chrono::steady_clock::now();
  fx.compile_seconds = std::chrono::duration<double>(t1 - t0).count();
  const std::size_t rss_after = rss_bytes();
  fx.rss_delta = rss_after > rss_before ? rss_after - rss_before : 0;

  constexpr std::size_t kQueries = 4096;
  for (std::size_t q = 0; q < kQueries; ++q) {
    const config::RuleSpec& r = spec.rules[s.below(spec.rules.size())];
    const config::ToSpec& t = r.to.front();
    Query hit;
    hit.src =
        r.from.empty()
            ? IpAddress::from_v4_uint(0x0A000000U | static_cast<std::uint32_t>(s.below(1U << 24)))
            : inside(r.from.front(), s);
    hit.port = 443;
    if (identities) {
      // A pod this rule selects (or any pod, for a rule without selectors).
      std::string ns = "ns-" + std::to_string(s.below(1000));
      std::string app = "a-" + std::to_string(s.below(300));
      if (!r.from_identities.empty()) {
        const auto& sel = r.from_identities.front();
        if (sel.namespace_selector)
          ns = sel.namespace_selector->requirements.front().values.front();
        if (sel.pod_selector) app = sel.pod_selector->requirements.front().values.front();
        if (r.from.empty())
          hit.src =
              IpAddress::from_v4_uint(0x0B000000U | static_cast<std::uint32_t>(s.below(1U << 24)));
      }
      hit.identity = make_pod(ns, app, s);
    }
    if (t.host) {
      const std::string& h = *t.host;
      if (h.starts_with("**.")) {
        hit.name = s.label() + "." + s.label() + h.substr(2);
      } else if (h.starts_with("*.")) {
        hit.name = s.label() + h.substr(1);
      } else {
        hit.name = h;
      }
      hit.dst = s.public_v4();
    } else {
      hit.dst = inside(*t.cidr, s);
    }
    fx.hits.push_back(std::move(hit));

    Query miss;
    miss.src = IpAddress::from_v4_uint(0x0A000000U | static_cast<std::uint32_t>(s.below(1U << 24)));
    miss.port = 443;
    if (s.below(2) == 0) {
      miss.name = s.label() + ".miss-" + s.label() + ".org";
    }
    miss.dst = s.below(3) == 0 ? s.public_v6(true) : s.public_v4(true);
    if (identities) {
      miss.identity =
          make_pod("ns-" + std::to_string(s.below(1000)), "a-" + std::to_string(s.below(300)), s);
    }
    fx.misses.push_back(std::move(miss));
  }
  for (auto* list : {&fx.hits, &fx.misses}) {
    for (Query& q : *list) {
      if (q.identity) q.selectors = fx.policy->match_identity(q.identity.get());
    }
  }
  return fx;
}

Fixture& fixture(std::size_t rules, bool identities = false) {
  static std::map<std::pair<std::size_t, bool>, Fixture> cache;
  const auto key = std::make_pair(rules, identities);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, build(rules, identities)).first;
  return it->second;
}

void report(benchmark::State& state, const Fixture& fx) {
  const PolicyStats st = fx.policy->stats();
  state.counters["memory_MiB"] = static_cast<double>(st.memory_bytes) / (1024.0 * 1024.0);
  state.counters["rss_delta_MiB"] = static_cast<double>(fx.rss_delta) / (1024.0 * 1024.0);
  state.counters["compile_ms"] = fx.compile_seconds * 1000.0;
}

void run_decisions(benchmark::State& state, const std::vector<Query>& queries,
                   const CompiledPolicy& policy) {
  DstAnswers answers;
  FlowFacts f;
  f.listener = "transparent";
  f.today = std::chrono::sys_days{std::chrono::year{2026} / 11 / 26};
  std::size_t i = 0;
  std::size_t allowed = 0;
  for (auto _ : state) {
    const Query& q = queries[i];
    i = (i + 1) % queries.size();
    f.src = q.src;
    f.dst = q.dst;
    f.port = q.port;
    f.proto = q.name.empty() ? Proto::tcp : Proto::tls;
    f.name = q.name.empty() ? std::nullopt : std::optional<std::string_view>(q.name);
    f.identity = q.identity.get();
    f.selectors = q.identity ? &q.selectors : nullptr;
    answers.dst = q.dst;
    Outcome o = policy.decide(f, answers);
    allowed += o.verdict.decision == Decision::allow ? 1U : 0U;
    benchmark::DoNotOptimize(o);
  }
  state.counters["allowed_fraction"] =
      static_cast<double>(allowed) /
      static_cast<double>(std::max<std::int64_t>(state.iterations(), 1));
}

void BM_DecideHit(benchmark::State& state) {
  Fixture& fx = fixture(static_cast<std::size_t>(state.range(0)));
  run_decisions(state, fx.hits, *fx.policy);
  report(state, fx);
}

void BM_DecideMiss(benchmark::State& state) {
  Fixture& fx = fixture(static_cast<std::size_t>(state.range(0)));
  run_decisions(state, fx.misses, *fx.policy);
  report(state, fx);
}

void BM_NameCanMatter(benchmark::State& state) {
  Fixture& fx = fixture(static_cast<std::size_t>(state.range(0)));
  std::size_t i = 0;
  for (auto _ : state) {
    const Query& q = fx.misses[i];
    i = (i + 1) % fx.misses.size();
    benchmark::DoNotOptimize(fx.policy->name_can_matter("transparent", q.src, 3306));
  }
}

// The same 16 hits over and over: the policy's hot lines stay in cache, so
// this is the compute cost of a decision without memory latency.
void BM_DecideHitWarm(benchmark::State& state) {
  Fixture& fx = fixture(static_cast<std::size_t>(state.range(0)));
  const std::vector<Query> few(fx.hits.begin(), fx.hits.begin() + 16);
  run_decisions(state, few, *fx.policy);
  report(state, fx);
}

// Per flow, once: the selectors a source pod satisfies.
void BM_MatchIdentity(benchmark::State& state) {
  Fixture& fx = fixture(static_cast<std::size_t>(state.range(0)), true);
  std::size_t i = 0;
  std::size_t matched = 0;
  for (auto _ : state) {
    const Query& q = fx.hits[i];
    i = (i + 1) % fx.hits.size();
    const SelectorSet set = fx.policy->match_identity(q.identity.get());
    matched += set.size();
    benchmark::DoNotOptimize(set);
  }
  state.counters["selectors_per_pod"] =
      static_cast<double>(matched) /
      static_cast<double>(std::max<std::int64_t>(state.iterations(), 1));
}

void BM_DecideHitIdentity(benchmark::State& state) {
  Fixture& fx = fixture(static_cast<std::size_t>(state.range(0)), true);
  run_decisions(state, fx.hits, *fx.policy);
  report(state, fx);
}

void BM_DecideMissIdentity(benchmark::State& state) {
  Fixture& fx = fixture(static_cast<std::size_t>(state.range(0)), true);
  run_decisions(state, fx.misses, *fx.policy);
  report(state, fx);
}

BENCHMARK(BM_MatchIdentity)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_DecideHitIdentity)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_DecideMissIdentity)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_DecideHitWarm)->Arg(10)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_DecideHit)->Arg(10)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_DecideMiss)->Arg(10)->Arg(10'000)->Arg(100'000)->Arg(1'000'000);
BENCHMARK(BM_NameCanMatter)->Arg(10)->Arg(100'000);

}  // namespace

BENCHMARK_MAIN();
