#include "egressd/cli/cli.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <exception>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "egressd/cli/validate.hpp"
#include "egressd/config/loader.hpp"
#include "egressd/core/hostname.hpp"
#include "egressd/log/json.hpp"
#include "egressd/policy/policy.hpp"
#include "egressd/version.hpp"

namespace egressd::cli {
namespace {

// Thrown inside a command for bad usage that CLI11 cannot see (an unknown
// listener name, an unparsable address); caught in run_cli.
struct UsageError {
  std::string message;
};

std::chrono::sys_days day_or_today(const std::string& now) {
  if (now.empty()) return utc_today();
  auto day = parse_date(now);
  if (!day) throw UsageError{"--now must be a date as YYYY-MM-DD, not '" + now + "'"};
  return *day;
}

void print_diagnostics(const std::vector<config::Diagnostic>& diagnostics, std::ostream& err) {
  for (const auto& d : diagnostics) err << d.to_string() << '\n';
}

bool has_errors(const std::vector<config::Diagnostic>& diagnostics) {
  return std::any_of(diagnostics.begin(), diagnostics.end(), [](const config::Diagnostic& d) {
    return d.severity == config::Diagnostic::Severity::error;
  });
}

std::string_view integrity_name(config::Integrity i) {
  switch (i) {
    case config::Integrity::verify: return "verify";
    case config::Integrity::resolve: return "resolve";
    case config::Integrity::trust: return "trust";
  }
  return "verify";
}

int cmd_check(const std::string& path, std::ostream& out, std::ostream& err) {
  const ValidatedConfig v = load_and_validate(path, utc_today());
  print_diagnostics(v.diagnostics, err);
  if (!v.ok()) return kExitFailure;
  const auto stats = v.policy->stats();
  out << path << ": OK (" << v.config->listeners.size() << " listener"
      << (v.config->listeners.size() == 1 ? "" : "s") << ", " << stats.rules << " rule"
      << (stats.rules == 1 ? "" : "s") << ", " << v.config->policy.tests.size() << " test"
      << (v.config->policy.tests.size() == 1 ? "" : "s") << " passed)\n";
  return kExitOk;
}

struct ExplainArgs {
  std::string config;
  std::string src;
  std::string dst;
  std::string host;
  std::string proto;
  std::string listener;
  std::string now;
};

const config::ListenerSpec* find_listener(const config::ConfigSpec& cfg, const std::string& name) {
  if (!name.empty()) {
    for (const auto& l : cfg.listeners) {
      if (l.name == name) return &l;
    }
    throw UsageError{"--listener '" + name + "' is not a listener of this config"};
  }
  for (const auto& l : cfg.listeners) {
    if (l.mode == config::ListenerMode::redirect) return &l;
  }
  return cfg.listeners.empty() ? nullptr : &cfg.listeners.front();
}

int cmd_explain(const ExplainArgs& a, std::ostream& out, std::ostream& err) {
  const auto today = day_or_today(a.now);
  const auto src = IpAddress::parse(a.src);
  if (!src) throw UsageError{"--src must be an IP address, not '" + a.src + "'"};
  const auto dst = Endpoint::parse(a.dst);
  if (!dst) throw UsageError{"--dst must be IP:PORT (IPv6 as [IP]:PORT), not '" + a.dst + "'"};
  std::optional<Proto> proto;
  if (!a.proto.empty()) {
    proto = parse_proto(a.proto);
    if (!proto) throw UsageError{"--proto must be one of tls, http, h2c, tcp, connect"};
  }

  const ValidatedConfig v = load_and_validate(a.config, today, /*run_own_tests=*/false);
  if (has_errors(v.diagnostics) || !v.policy) {
    print_diagnostics(v.diagnostics, err);
    return kExitFailure;
  }
  const config::ListenerSpec* listener = find_listener(*v.config, a.listener);

  policy::FlowFacts facts;
  facts.listener = listener != nullptr ? std::string_view(listener->name) : std::string_view();
  facts.transparent =
      listener == nullptr || listener->mode != config::ListenerMode::explicit_proxy;
  facts.src = *src;
  facts.dst = dst->ip;
  facts.port = dst->port;
  facts.today = today;
  if (!a.host.empty()) facts.name = a.host;
  facts.proto = proto.value_or(a.host.empty() ? Proto::tcp : Proto::tls);
  facts.tls_without_sni = facts.proto == Proto::tls && a.host.empty();

  const policy::AssumeIntegrity answers;
  const policy::Outcome o = v.policy->decide(facts, answers);
  const policy::Verdict& verdict = o.verdict;
  std::string json = "{\"decision\":";
  log::append_json_string(json, policy::to_string(verdict.decision));
  json += ",\"rule\":";
  log::append_json_string(json, verdict.rule);
  json += ",\"reason\":";
  log::append_json_string(json, verdict.reason);
  if (verdict.integrity) {
    json += ",\"integrity\":";
    log::append_json_string(json, integrity_name(*verdict.integrity));
  }
  json += "}\n";
  out << json;
  return kExitOk;
}

std::string_view expect_name(config::Expect e) {
  switch (e) {
    case config::Expect::allow: return "allow";
    case config::Expect::deny: return "deny";
    case config::Expect::audit_deny: return "audit_deny";
  }
  return "deny";
}

int cmd_test(const std::string& config_path, const std::string& cases_path,
             const std::string& now, std::ostream& out, std::ostream& err) {
  const auto today = day_or_today(now);
  const ValidatedConfig v = load_and_validate(config_path, today, /*run_own_tests=*/false);
  if (has_errors(v.diagnostics) || !v.policy) {
    print_diagnostics(v.diagnostics, err);
    return kExitFailure;
  }
  std::vector<config::TestCase> cases = v.config->policy.tests;
  if (!cases_path.empty()) {
    config::TestCasesResult extra = config::load_test_cases_file(cases_path);
    if (!extra.ok()) {
      print_diagnostics(extra.diagnostics, err);
      return kExitFailure;
    }
    cases.insert(cases.end(), std::make_move_iterator(extra.cases.begin()),
                 std::make_move_iterator(extra.cases.end()));
  }
  // A case naming a listener the config lacks cannot be judged: a failure.
  std::size_t passed = 0;
  std::size_t failed = 0;
  const auto results = policy::run_tests(*v.policy, v.config->listeners, cases, today);
  for (const auto& r : results) {
    if (r.passed) {
      ++passed;
      continue;
    }
    ++failed;
    const auto& pos = r.test->pos;
    out << pos.file;
    if (pos.line > 0) out << ':' << pos.line << ':' << pos.col;
    out << ": FAIL expect " << expect_name(r.test->expect) << ": " << r.failure << '\n';
  }
  out << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? kExitOk : kExitFailure;
}

int cmd_run(const std::string& path, const std::string& log_level, std::ostream& err,
            const RunGateway& run_gateway) {
  if (!run_gateway) {
    err << "egressd: this program was built without the gateway; use egressd check\n";
    return kExitFailure;
  }
  return run_gateway(path, log_level, err);
}

bool is_subcommand(std::string_view arg) {
  return arg == "run" || arg == "check" || arg == "explain" || arg == "test";
}

}  // namespace

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
            const RunGateway& run_gateway) {
  // `run` is the default command: `egressd --config FILE` runs the gateway.
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  const bool top_level_only =
      args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "--version";
  if (!top_level_only && !is_subcommand(args[0])) args.insert(args.begin(), "run");
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector

  CLI::App app{"egressd: an egress gateway that checks every outbound flow against an allow-list",
               "egressd"};
  app.set_version_flag("--version", std::string("egressd ") + kVersion);
  app.require_subcommand(1, 1);
  app.failure_message(CLI::FailureMessage::simple);

  std::string config_path;
  std::string log_level = "info";
  auto* run = app.add_subcommand("run", "Run the gateway (the default command)");
  run->add_option("--config", config_path, "Config file")->required();
  run->add_option("--log-level", log_level, "Log level")
      ->check(CLI::IsMember({"debug", "info", "warn", "error"}));

  auto* check = app.add_subcommand("check", "Validate a config and run its tests: (binds nothing)");
  check->add_option("--config", config_path, "Config file")->required();

  ExplainArgs ex;
  auto* explain = app.add_subcommand("explain", "Print the decision for one flow as JSON");
  explain->add_option("--config", ex.config, "Config file")->required();
  explain->add_option("--src", ex.src, "Source IP")->required();
  explain->add_option("--dst", ex.dst, "Original destination IP:PORT")->required();
  explain->add_option("--host", ex.host, "Name seen in the traffic (SNI, Host, ...)");
  explain->add_option("--proto", ex.proto, "tls|http|h2c|tcp|connect");
  explain->add_option("--listener", ex.listener, "Listener name (default: first redirect)");
  explain->add_option("--now", ex.now, "Day to compare `until` with (YYYY-MM-DD, UTC)");

  std::string cases_path;
  std::string test_now;
  auto* test = app.add_subcommand("test", "Run policy test cases; print N passed, N failed");
  test->add_option("--config", config_path, "Config file")->required();
  test->add_option("cases", cases_path, "CASES.yaml: a list of test cases");
  test->add_option("--now", test_now, "Day to compare `until` with (YYYY-MM-DD, UTC)");

  try {
    if (args.empty()) throw CLI::RequiredError("a command or --config");
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForVersion&) {
    out << "egressd " << kVersion << '\n';
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    err << "egressd: " << e.what() << " (see egressd --help)\n";
    return kExitUsage;
  }

  try {
    if (check->parsed()) return cmd_check(config_path, out, err);
    if (explain->parsed()) return cmd_explain(ex, out, err);
    if (test->parsed()) return cmd_test(config_path, cases_path, test_now, out, err);
    return cmd_run(config_path, log_level, err, run_gateway);
  } catch (const UsageError& e) {
    err << "egressd: " << e.message << " (see egressd --help)\n";
    return kExitUsage;
  } catch (const std::exception& e) {
    err << "egressd: " << e.what() << '\n';
    return kExitFailure;
  }
}

}  // namespace egressd::cli
