#include "egressd/cli/cli.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <CLI/CLI.hpp>

#include "egressd/cli/learn.hpp"
#include "egressd/cli/validate.hpp"
#include "egressd/config/loader.hpp"
#include "egressd/core/hostname.hpp"
#include "egressd/log/json.hpp"
#include "egressd/log/record.hpp"
#include "egressd/policy/policy.hpp"
#include "egressd/version.hpp"

namespace egressd::cli {
namespace {

// Thrown inside a command for bad usage that CLI11 cannot see (an unknown
// listener name, an unparsable address); caught in dispatch. User text in
// the message is JSON-quoted, so the sentence stays on one line.
struct UsageError {
  std::string message;
};

std::chrono::sys_days day_or_today(const std::string& now) {
  if (now.empty()) return utc_today();
  auto day = config::parse_date(now);
  if (!day) throw UsageError{"--now must be a date as YYYY-MM-DD, not " + log::json_string(now)};
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
  std::string namespace_name;
  std::string labels;
  std::string namespace_labels;
};

// "k=v,k2=v2" (Kubernetes label syntax, checked) -> sorted labels.
Labels parse_label_list(const std::string& text, const char* option) {
  Labels out;
  std::string_view rest = text;
  while (!rest.empty()) {
    const std::size_t comma = rest.find(',');
    const std::string_view item = rest.substr(0, comma);
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos)
      throw UsageError{std::string(option) + " takes k=v pairs separated by commas, not " +
                       log::json_string(std::string(item))};
    const std::string key(item.substr(0, eq));
    const std::string value(item.substr(eq + 1));
    if (auto why = config::label_key_problem(key))
      throw UsageError{std::string(option) + ": invalid label key " + log::json_string(key) + ": " +
                       *why};
    if (auto why = config::label_value_problem(value))
      throw UsageError{std::string(option) + ": invalid label value " + log::json_string(value) +
                       ": " + *why};
    out.emplace_back(key, value);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  normalize_labels(out);
  return out;
}

const config::ListenerSpec* find_listener(const config::ConfigSpec& cfg, const std::string& name) {
  if (!name.empty()) {
    for (const auto& l : cfg.listeners) {
      if (l.name == name) return &l;
    }
    throw UsageError{"--listener " + log::json_string(name) + " is not a listener of this config"};
  }
  for (const auto& l : cfg.listeners) {
    if (l.mode == config::ListenerMode::redirect) return &l;
  }
  return cfg.listeners.empty() ? nullptr : &cfg.listeners.front();
}

int cmd_explain(const ExplainArgs& a, std::ostream& out, std::ostream& err) {
  const auto today = day_or_today(a.now);
  const auto src = IpAddress::parse(a.src);
  if (!src) throw UsageError{"--src must be an IP address, not " + log::json_string(a.src)};
  const auto dst = Endpoint::parse(a.dst);
  if (!dst)
    throw UsageError{"--dst must be IP:PORT (IPv6 as [IP]:PORT), not " + log::json_string(a.dst)};
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
  facts.transparent = listener == nullptr || listener->mode != config::ListenerMode::explicit_proxy;
  facts.src = *src;
  facts.dst = dst->ip;
  facts.port = dst->port;
  facts.today = today;
  if (!a.host.empty()) facts.name = a.host;
  facts.proto = proto.value_or(a.host.empty() ? Proto::tcp : Proto::tls);
  facts.tls_without_sni = facts.proto == Proto::tls && a.host.empty();
  // The source pod (identity selectors); without --namespace a pod-less IP.
  PodIdentity pod;
  if (!a.namespace_name.empty()) {
    if (auto why = config::namespace_name_problem(a.namespace_name))
      throw UsageError{"--namespace: " + *why};
    pod.namespace_name = a.namespace_name;
    pod.labels = parse_label_list(a.labels, "--labels");
    pod.namespace_labels = parse_label_list(a.namespace_labels, "--namespace-labels");
    pod.namespace_labels.emplace_back(std::string(kNamespaceNameLabel), a.namespace_name);
    normalize_labels(pod.namespace_labels);
    facts.identity = &pod;
  } else if (!a.labels.empty() || !a.namespace_labels.empty()) {
    throw UsageError{"--labels and --namespace-labels need --namespace"};
  }

  // The verdict is decide()'s under AssumeIntegrity; explain() adds why.
  const policy::Explanation explanation = v.policy->explain(facts);
  const policy::Verdict& verdict = explanation.verdict;
  std::string json;
  // `"key":"value"`, after a comma unless it opens an object.
  const auto field = [&json](std::string_view key, std::string_view value) {
    if (json.back() != '{') json += ',';
    log::append_json_string(json, key);
    json += ':';
    log::append_json_string(json, value);
  };
  json += '{';
  field("decision", policy::to_string(verdict.decision));
  field("rule", verdict.rule);
  field("reason", verdict.reason);
  if (verdict.integrity) field("integrity", log::to_string(*verdict.integrity));
  // Always present, possibly empty, so scripts need not test for them.
  json += ",\"near_misses\":[";
  for (std::size_t i = 0; i < explanation.near_misses.size(); ++i) {
    const policy::NearMiss& m = explanation.near_misses[i];
    json += i > 0 ? ",{" : "{";
    field("rule", m.rule);
    field("action", m.action == config::Action::allow ? "allow" : "deny");
    field("why", m.why);
    if (!m.by.empty()) field("by", m.by);
    if (!m.source.empty()) field("source", m.source);
    field("reason", m.reason);
    json += '}';
  }
  json += "],\"notes\":[";
  for (std::size_t i = 0; i < explanation.notes.size(); ++i) {
    const policy::ExplainNote& n = explanation.notes[i];
    json += i > 0 ? ",{" : "{";
    field("why", n.why);
    field("rule", n.rule);
    field("reason", n.reason);
    json += '}';
  }
  json += "]}\n";
  out << json;
  return kExitOk;
}

// The CASES file's `listener` and `rule` names, checked against the config
// (the loader has no config to check them against): a case naming one the
// config lacks fails with that sentence instead of being judged.
std::optional<std::string> unknown_name(const config::ConfigSpec& cfg, const config::TestCase& c) {
  if (c.listener &&
      std::none_of(cfg.listeners.begin(), cfg.listeners.end(),
                   [&](const config::ListenerSpec& l) { return l.name == *c.listener; }))
    return "no listener is named " + log::json_string(*c.listener);
  if (c.rule && *c.rule != "default" && !c.rule->starts_with("builtin:") &&
      std::none_of(cfg.policy.rules.begin(), cfg.policy.rules.end(),
                   [&](const config::RuleSpec& r) { return r.name == *c.rule; }))
    return "no rule is named " + log::json_string(*c.rule) +
           " (expected a rule name, default or builtin:...)";
  return std::nullopt;
}

std::string position(const config::SourcePos& pos) {
  std::string out = pos.file;
  if (pos.line > 0) out += ':' + std::to_string(pos.line) + ':' + std::to_string(pos.col);
  return out;
}

int cmd_test(const std::string& config_path, const std::string& cases_path, const std::string& now,
             std::ostream& out, std::ostream& err) {
  const auto today = day_or_today(now);
  const ValidatedConfig v = load_and_validate(config_path, today, /*run_own_tests=*/false);
  if (has_errors(v.diagnostics) || !v.policy) {
    print_diagnostics(v.diagnostics, err);
    return kExitFailure;
  }
  std::vector<config::TestCase> cases = v.config->policy.tests;
  if (!cases_path.empty()) {
    config::TestCasesResult extra = config::load_test_cases_file(cases_path);
    print_diagnostics(extra.diagnostics, err);  // warnings too
    if (!extra.ok()) return kExitFailure;
    cases.insert(cases.end(), std::make_move_iterator(extra.cases.begin()),
                 std::make_move_iterator(extra.cases.end()));
  }
  std::size_t passed = 0;
  std::size_t failed = 0;
  std::vector<config::TestCase> judged;
  std::vector<std::pair<const config::TestCase*, std::string>> failures;
  for (const auto& c : cases) {
    if (auto problem = unknown_name(*v.config, c)) {
      failures.emplace_back(&c, std::move(*problem));
    } else {
      judged.push_back(c);
    }
  }
  for (const auto& r : policy::run_tests(*v.policy, v.config->listeners, judged, today)) {
    if (r.passed) {
      ++passed;
    } else {
      failures.emplace_back(r.test, describe_failure(r));
    }
  }
  // In file order, so the output reads alongside the cases.
  std::stable_sort(failures.begin(), failures.end(), [](const auto& a, const auto& b) {
    const auto& pa = a.first->pos;
    const auto& pb = b.first->pos;
    return std::tie(pa.file, pa.line, pa.col) < std::tie(pb.file, pb.line, pb.col);
  });
  for (const auto& [c, message] : failures) {
    out << position(c->pos) << ": " << message << '\n';
    ++failed;
  }
  out << passed << " passed, " << failed << " failed\n";
  return failed == 0 ? kExitOk : kExitFailure;
}

int cmd_learn(const std::string& config_path, const std::vector<std::string>& logs,
              std::ostream& out, std::ostream& err) {
  const auto today = utc_today();
  const ValidatedConfig v = load_and_validate(config_path, today, /*run_own_tests=*/false);
  if (has_errors(v.diagnostics) || !v.policy) {
    print_diagnostics(v.diagnostics, err);
    return kExitFailure;
  }
  // Every log is opened before anything is printed: an unreadable one is a
  // runtime error, not half an answer.
  std::vector<std::ifstream> files;
  for (const auto& path : logs) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
      // A directory opens as a stream that reads as empty: refuse it.
      err << "egressd: cannot read access log " << path << ": it is a directory\n";
      return kExitFailure;
    }
    files.emplace_back(path, std::ios::binary);
    if (!files.back()) {
      err << "egressd: cannot read access log " << path << ": " << std::strerror(errno) << '\n';
      return kExitFailure;
    }
  }
  LearnOptions options;
  options.today = today;
  Learner learner(*v.config, v.policy, options);
  std::string line;
  for (std::size_t i = 0; i < files.size(); ++i) {
    const std::size_t before = learner.malformed_lines();
    while (std::getline(files[i], line)) learner.add_line(line);
    if (files[i].bad()) {
      err << "egressd: cannot read access log " << logs[i] << ": read error\n";
      return kExitFailure;
    }
    if (const std::size_t skipped = learner.malformed_lines() - before; skipped > 0) {
      err << "egressd: " << logs[i] << ": skipped " << skipped << " malformed line"
          << (skipped == 1 ? "" : "s") << " (not an access-log record)\n";
    }
  }
  out << learner.suggest().yaml;
  return kExitOk;
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
  return arg == "run" || arg == "check" || arg == "explain" || arg == "test" || arg == "learn";
}

int dispatch(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
             const RunGateway& run_gateway) {
  // `run` is the default command: `egressd --config FILE` runs the gateway.
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  const bool top_level_only =
      args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "--version";
  if (!top_level_only && !is_subcommand(args[0])) {
    if (!args[0].starts_with("-")) {
      err << "egressd: unknown command " << log::json_string(args[0])
          << " (commands: run, check, explain, test, learn; see egressd --help)\n";
      return kExitUsage;
    }
    args.insert(args.begin(), "run");
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes a reversed vector

  CLI::App app{"egressd: an egress gateway that checks every outbound flow against an allow-list",
               "egressd"};
  app.set_version_flag("--version", std::string("egressd ") + kVersion);
  app.require_subcommand(1, 1);
  app.failure_message(CLI::FailureMessage::simple);
  // `run` is the default command: its options belong on the first page.
  app.footer(
      "Run (the default command): egressd [run] --config FILE [--log-level LEVEL]\n"
      "  --config FILE        the config to serve (YAML; see docs/config.md)\n"
      "  --log-level LEVEL    debug | info | warn | error (default: info)\n"
      "\n"
      "egressd SUBCOMMAND --help shows a subcommand's options.");

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
  explain->add_option("--namespace", ex.namespace_name, "The source pod's namespace");
  explain->add_option("--labels", ex.labels, "The source pod's labels, k=v,...");
  explain->add_option("--namespace-labels", ex.namespace_labels, "Its namespace's labels, k=v,...");

  std::string cases_path;
  std::string test_now;
  auto* test = app.add_subcommand("test", "Run policy test cases; print N passed, N failed");
  test->add_option("--config", config_path, "Config file")->required();
  test->add_option("cases", cases_path, "CASES.yaml: a list of test cases");
  test->add_option("--now", test_now, "Day to compare `until` with (YYYY-MM-DD, UTC)");

  std::vector<std::string> logs;
  auto* learn = app.add_subcommand(
      "learn", "Suggest allow rules (YAML for policy.rules) from denied flows in access logs");
  learn->add_option("--config", config_path, "Config file")->required();
  learn->add_option("logs", logs, "ACCESS_LOG files (JSON lines)")->required();

  try {
    if (args.empty()) {
      err << "egressd: a command or --config is required (see egressd --help)\n";
      return kExitUsage;
    }
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
    if (learn->parsed()) return cmd_learn(config_path, logs, out, err);
    return cmd_run(config_path, log_level, err, run_gateway);
  } catch (const UsageError& e) {
    err << "egressd: " << e.message << " (see egressd --help)\n";
    return kExitUsage;
  }
}

}  // namespace

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err,
            const RunGateway& run_gateway) {
  // The one place exceptions stop: whatever escapes a command (out of
  // memory, a broken invariant) is one sentence and exit 1, never a dump.
  try {
    return dispatch(argc, argv, out, err, run_gateway);
  } catch (const std::exception& e) {
    err << "egressd: " << e.what() << '\n';
    return kExitFailure;
  } catch (...) {
    err << "egressd: an unexpected internal error occurred\n";
    return kExitFailure;
  }
}

}  // namespace egressd::cli
