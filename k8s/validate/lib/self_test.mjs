// Proves the checks can fail: each case breaks one thing in a copy of a real
// rendering (or dashboard) and expects a problem that names it; the
// unbroken renderings must give none. With --egressd the metric names come
// from the live binary and the config case runs `egressd check`; without,
// from the contract's list below.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { KeySchemas } from "./keys.mjs";
import { liveMetrics, parseExposition } from "./promql.mjs";
import { promtoolAvailable } from "./checks.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));

// The contract's metric families (docs/config.md, contract "Metrics").
const CONTRACT_EXPOSITION = `
# TYPE egressd_flows_total counter
egressd_flows_total{listener="proxy",proto="connect",decision="deny",rule="default"} 1
# TYPE egressd_flows_active gauge
egressd_flows_active{listener="proxy"} 0
# TYPE egressd_flows_limit gauge
egressd_flows_limit 16384
# TYPE egressd_flow_bytes_total counter
egressd_flow_bytes_total{listener="proxy",direction="up"} 0
# TYPE egressd_flow_duration_seconds histogram
egressd_flow_duration_seconds_bucket{listener="proxy",le="+Inf"} 1
# TYPE egressd_http_requests_total counter
egressd_http_requests_total{proto="http",decision="deny"} 1
# TYPE egressd_upstream_connect_failures_total counter
egressd_upstream_connect_failures_total{reason="refused"} 0
# TYPE egressd_dns_queries_total counter
egressd_dns_queries_total{result="success"} 0
# TYPE egressd_guard_denials_total counter
egressd_guard_denials_total{class="cloud_metadata"} 0
# TYPE egressd_access_log_dropped_total counter
egressd_access_log_dropped_total 0
# TYPE egressd_config_reloads_total counter
egressd_config_reloads_total{result="success"} 0
# TYPE egressd_config_last_reload_success_timestamp_seconds gauge
egressd_config_last_reload_success_timestamp_seconds 0
# TYPE egressd_config_generation gauge
egressd_config_generation 1
# TYPE egressd_build_info gauge
egressd_build_info{version="0.1.0"} 1
# TYPE egressd_kubernetes_pods gauge
egressd_kubernetes_pods 0
# TYPE egressd_kubernetes_synced gauge
egressd_kubernetes_synced 0
# TYPE egressd_kubernetes_watch_restarts_total counter
egressd_kubernetes_watch_restarts_total{resource="pods",reason="error"} 0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 0
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 0
# TYPE process_open_fds gauge
process_open_fds 0
# TYPE process_max_fds gauge
process_max_fds 0
# TYPE process_start_time_seconds gauge
process_start_time_seconds 0
`;

const clone = (x) => structuredClone(x);
const find = (objs, kind, name) => {
  const o = objs.find((x) => x.kind === kind && (!name || x.metadata?.name === name));
  if (!o) throw new Error(`self-test: no ${kind}/${name} in the rendering`);
  return o;
};
const container = (objs, kind, name) => find(objs, kind, name).spec.template.spec.containers[0];
const replaceInConfig = (objs, cm, from, to) => {
  const o = find(objs, "ConfigMap", cm);
  if (!o.data["egressd.yaml"].includes(from)) throw new Error(`self-test: ${cm} has no ${from}`);
  o.data["egressd.yaml"] = o.data["egressd.yaml"].replace(from, to);
};
const rule = (objs, alert) => find(objs, "PrometheusRule").spec.groups.flatMap((g) => g.rules).find((r) => r.alert === alert);

const CASES = [
  { name: "misspelled readinessProbe", on: "overlays/node-agents", expect: /unknown key spec\.template\.spec\.containers\[0\]\.readinesProbe \(did you mean readinessProbe\?\)/,
    mutate: (o) => { const c = container(o, "Deployment"); c.readinesProbe = c.readinessProbe; delete c.readinessProbe; } },
  { name: "lowercase containerport", on: "overlays/node-agents", expect: /unknown key .*ports\[0\]\.containerport/,
    mutate: (o) => { const p = container(o, "DaemonSet").ports[0]; p.containerport = p.containerPort; } },
  { name: "misspelled key in a ServiceMonitor (CRD)", on: "base", expect: /ServiceMonitor\/egressd: unknown key spec\.endpoints\[0\]\.intervall/,
    mutate: (o) => { find(o, "ServiceMonitor").spec.endpoints[0].intervall = "30s"; } },
  { name: "wrong type", on: "base", expect: /HorizontalPodAutoscaler\/egressd: schema:/,
    mutate: (o) => { find(o, "HorizontalPodAutoscaler").spec.minReplicas = "two"; } },
  { name: "unknown kind", on: "base", expect: /Widget\/w: unknown kind example\.com\/v1\/Widget/,
    mutate: (o) => { o.push({ apiVersion: "example.com/v1", kind: "Widget", metadata: { name: "w", namespace: "egress" } }); } },
  { name: "Service targetPort that no container has", on: "base", expect: /Service\/egressd: port proxy targetPort proxyy is not a port/,
    mutate: (o) => { find(o, "Service", "egressd").spec.ports[0].targetPort = "proxyy"; } },
  { name: "probe on a port that does not exist", on: "base", expect: /container egressd readinessProbe port admn is not one of its ports/,
    mutate: (o) => { container(o, "Deployment").readinessProbe.httpGet.port = "admn"; } },
  { name: "Service selector that selects nothing", on: "base", expect: /Service\/egressd-central: selector .* selects no pods/,
    mutate: (o) => { find(o, "Service", "egressd-central").spec.selector["app.kubernetes.io/component"] = "central"; } },
  { name: "Deployment selector that misses its template", on: "base", expect: /Deployment\/egressd: spec\.selector does not match its own pod template/,
    mutate: (o) => { find(o, "Deployment").spec.template.metadata.labels["app.kubernetes.io/component"] = "gw"; } },
  { name: "PDB that selects nothing", on: "base", expect: /PodDisruptionBudget\/egressd: selector selects no pods/,
    mutate: (o) => { find(o, "PodDisruptionBudget").spec.selector.matchLabels.app = "egressd"; } },
  { name: "HPA with one replica", on: "base", expect: /Deployment\/egressd: runs 1 replica/,
    mutate: (o) => { find(o, "HorizontalPodAutoscaler").spec.minReplicas = 1; } },
  { name: "ServiceMonitor on a port name the Service lacks", on: "base", expect: /ServiceMonitor\/egressd: endpoint port metrics is not a port name/,
    mutate: (o) => { find(o, "ServiceMonitor").spec.endpoints[0].port = "metrics"; } },
  { name: "NetworkPolicy peer that misses the gateway pods", on: "overlays/explicit-proxy", expect: /NetworkPolicy\/egress-only-through-egressd: egress peer podSelector .* selects no pods in namespace egress/,
    mutate: (o) => { find(o, "NetworkPolicy", "egress-only-through-egressd").spec.egress[0].to[0].podSelector.matchLabels = { app: "egressd" }; } },
  { name: "NetworkPolicy to a port the gateway does not serve", on: "overlays/explicit-proxy", expect: /egress port 8080 is not a port/,
    mutate: (o) => { find(o, "NetworkPolicy", "egress-only-through-egressd").spec.egress[0].ports[0].port = 8080; } },
  { name: "grace period shorter than the drain", on: "base", expect: /Deployment\/egressd: terminationGracePeriodSeconds 20 must exceed drain_delay \+ drain = 30s/,
    mutate: (o) => { find(o, "Deployment").spec.template.spec.terminationGracePeriodSeconds = 20; } },
  { name: "drain longer than the grace period", on: "overlays/node-agents", expect: /DaemonSet\/egressd-agent: terminationGracePeriodSeconds 40 must exceed .* = 62s/,
    mutate: (o) => { replaceInConfig(o, "egressd-agent", "drain: 25s", "drain: 1m"); } },
  { name: "config mounted with subPath", on: "base", expect: /subPath: ConfigMap updates never reach/,
    mutate: (o) => { const m = container(o, "Deployment").volumeMounts[0]; m.mountPath = "/etc/egressd/egressd.yaml"; m.subPath = "egressd.yaml"; } },
  { name: "container port the config does not serve", on: "base", expect: /port proxy 3129 is neither a listener nor the admin port/,
    mutate: (o) => { container(o, "Deployment").ports[0].containerPort = 3129; } },
  { name: "agent without rule removal on shutdown", on: "overlays/node-agents", expect: /DaemonSet\/egressd-agent: container egressd's preStop does not run \/usr\/local\/sbin\/egressd-node-rules remove/,
    mutate: (o) => { delete container(o, "DaemonSet").lifecycle; } },
  { name: "node rules and agent disagree on the mark", on: "overlays/node-agents", expect: /--mark 42 but the agent's upstream\.mark is 7/,
    mutate: (o) => { replaceInConfig(o, "egressd-agent", "mark: 42", "mark: 7"); } },
  { name: "tproxy gateway without its rules", on: "overlays/tproxy-egress-nodes", expect: /no initContainer runs \/usr\/local\/sbin\/egressd-tproxy-rules install/,
    mutate: (o) => { delete find(o, "Deployment").spec.template.spec.initContainers; } },
  { name: "container that may escalate", on: "base", expect: /allowPrivilegeEscalation must be false/,
    mutate: (o) => { container(o, "Deployment").securityContext.allowPrivilegeEscalation = true; } },
  { name: "identity without RBAC", on: "base", expect: /ServiceAccount egressd is not bound/,
    mutate: (o) => { o.splice(o.indexOf(find(o, "ClusterRoleBinding")), 1); } },
  { name: "unknown metric in an alert", on: "base", expect: /alert EgressdIdentityNotSynced: metric egressd_kubernetes_sync does not exist/,
    mutate: (o) => { const r = rule(o, "EgressdIdentityNotSynced"); r.expr = r.expr.replace("egressd_kubernetes_synced", "egressd_kubernetes_sync"); } },
  { name: "unknown metric in a recording rule", on: "base", expect: /record egressd:flows_denied:rate5m: metric egressd_flows_totl does not exist/,
    mutate: (o) => { const r = find(o, "PrometheusRule").spec.groups[0].rules[0]; r.expr = r.expr.replace("egressd_flows_total", "egressd_flows_totl"); } },
  { name: "unknown label in an alert", on: "base", expect: /metric egressd_config_reloads_total has no label outcome/,
    mutate: (o) => { const r = rule(o, "EgressdConfigReloadFailed"); r.expr = r.expr.replace("result=", "outcome="); } },
  { name: "alert without for:", on: "base", expect: /alert EgressdAccessLogDropped has no for:/,
    mutate: (o) => { delete rule(o, "EgressdAccessLogDropped").for; } },
  { name: "label matcher on a metric without labels", on: "base", expect: /alert EgressdNearMaxConnections: metric egressd_flows_limit has no label listener \(it has none\)/,
    mutate: (o) => { const r = rule(o, "EgressdNearMaxConnections"); r.expr = r.expr.replace("(egressd_flows_limit)", "(egressd_flows_limit{listener=\"proxy\"})"); } },
  { name: "PromQL that does not parse", on: "base", expect: /PrometheusRule\/egressd: promtool check rules: .*EgressdAccessLogDropped|PrometheusRule\/egressd: promtool check rules: .*parse error/, promtool: true,
    mutate: (o) => { const r = rule(o, "EgressdAccessLogDropped"); r.expr = "increase(egressd_access_log_dropped_total[5m] > 0"; } },
  { name: "config that egressd check refuses", on: "base", expect: /ConfigMap\/egressd: egressd\.yaml fails egressd check/, binary: true,
    mutate: (o) => { replaceInConfig(o, "egressd", "mode: explicit", "mode: transparent"); } },
  { name: "config whose own tests fail", on: "base", expect: /ConfigMap\/egressd: egressd\.yaml fails egressd check/, binary: true,
    mutate: (o) => { replaceInConfig(o, "egressd", "host: \"api.stripe.com\"", "host: \"api.stripe.example\""); } },
];

export async function selfTest(opts, { renderings, checkRendering, checkDashboard, checkRepoFiles }) {
  let known, source;
  if (opts.egressd) { known = parseExposition(await liveMetrics(opts.egressd)); source = "live /metrics"; }
  else { known = parseExposition(CONTRACT_EXPOSITION); source = "the contract's list"; }
  const ctx = { keySchemas: new KeySchemas(path.join(here, "..", "node_modules")), egressd: opts.egressd, known, promtool: promtoolAvailable() };
  const rendered = renderings(opts);
  for (const r of rendered) if (r.error) { console.log(`FAIL ${r.error}`); return 1; }
  const all = new Map(rendered.map((r) => [r.label, r.objects]));
  let passed = 0, failed = 0;
  const verdict = (ok, name, detail) => {
    if (ok) passed++; else failed++;
    console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? `: ${detail}` : ""}`);
  };

  // The shipped renderings are clean (else every case below proves nothing).
  for (const [label, objects] of all) {
    const problems = [];
    await checkRendering({ label, objects }, ctx, problems);
    verdict(problems.length === 0, `${label} as shipped has no problems`, problems.slice(0, 3).join(" | "));
  }

  for (const c of CASES) {
    if (c.binary && !opts.egressd) { console.log(`skip ${c.name} (needs --egressd)`); continue; }
    if (c.promtool && !ctx.promtool) { console.log(`skip ${c.name} (needs promtool)`); continue; }
    const objects = clone(all.get(c.on));
    c.mutate(objects);
    const problems = [];
    await checkRendering({ label: c.on, objects }, ctx, problems);
    const hit = problems.find((p) => c.expect.test(p));
    verdict(!!hit, c.name, hit ?? `expected ${c.expect}, got: ${problems.join(" | ") || "no problem"}`);
  }

  // Dashboards and repo files.
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "egressd-selftest-"));
  try {
    const dash = path.join(tmp, "d.json");
    fs.writeFileSync(dash, JSON.stringify({
      panels: [{ title: "bad", targets: [{ expr: "sum(rate(egressd_flow_byte_total[5m]))" }] }],
      templating: { list: [{ type: "query", name: "pod", query: "label_values(egressd_buildinfo, pod)" }] },
    }));
    let problems = [];
    checkDashboard(dash, known, new Set(), problems);
    verdict(problems.some((p) => /panel "bad": metric egressd_flow_byte_total does not exist/.test(p)), "unknown metric in a dashboard panel", problems[0]);
    verdict(problems.some((p) => /variable pod: metric egressd_buildinfo does not exist/.test(p)), "unknown metric in a dashboard variable", problems[1]);
    problems = [];
    fs.writeFileSync(path.join(tmp, "Dockerfile"), "FROM debian:bookworm-slim\n");
    checkRepoFiles(tmp, problems);
    verdict(problems.some((p) => /egressd-node-rules\.sh: missing/.test(p)) && problems.some((p) => /Dockerfile: no "COPY k8s\/scripts\/egressd-tproxy-rules\.sh/.test(p)),
      "node-rule scripts missing from the repo and the image", problems[0]);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  console.log(`self-test (metric names from ${source}): ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}
