#!/usr/bin/env node
// Validates egressd's Kubernetes manifests beyond what `kubectl kustomize`
// and schema validation see. CI runs it as the ctest tests k8s.validate and
// k8s.validate_self_test (k8s/validate/CMakeLists.txt).
//
//   node k8s/validate/validate.mjs --egressd build/release/gateway/egressd
//   node k8s/validate/validate.mjs --self-test [--egressd PATH]
//
// For k8s/base and every k8s/overlays/*, rendered with `kubectl kustomize`:
//   - every object against its schema (kubernetes-models, Kubernetes 1.27, and
//     the Prometheus Operator's CRDs); a kind without a schema is a problem;
//   - unknown keys (misspellings the schemas let through), from the packages'
//     type declarations (lib/keys.mjs);
//   - selectors select what they mean to (workload <-> template, Services,
//     PDB, HPA target, ServiceMonitor -> Service, NetworkPolicy peers) and
//     named ports exist (probes, targetPorts, ServiceMonitor endpoints);
//   - every egressd config in a ConfigMap passes `egressd check`; each
//     egressd container reads one (a directory mount, not subPath); its grace
//     period exceeds drain_delay + drain; its ports are the config's; node
//     agents and tproxy gateways run the node-rule scripts around themselves;
//   - every metric in the PrometheusRules and the Grafana dashboard exists in
//     the /metrics of the given egressd binary, started on loopback; the
//     rules pass `promtool check rules` (when promtool is installed).
// And once: the node-rule scripts exist and the Dockerfile installs them.
// Prints one line per problem ("rendering/Kind/name: message") and a
// summary; exit 1 on any problem, 2 on a usage or environment error.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import yaml from "js-yaml";
import { KeySchemas } from "./lib/keys.mjs";
import {
  checkConfigsWithBinary, checkRuleMetrics, checkSchemas,
  checkSelectorsAndPorts, checkWorkloadConfigs, egressdConfigs, recordedNames,
  checkRulesWithPromtool, promtoolAvailable,
} from "./lib/checks.mjs";
import { checkExpr, liveMetrics, parseExposition, variableSelectors } from "./lib/promql.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));

function parseArgs(argv) {
  const opts = { root: path.resolve(here, "../.."), kubectl: "kubectl", egressd: null, selfTest: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--egressd") opts.egressd = argv[++i];
    else if (a === "--root") opts.root = path.resolve(argv[++i]);
    else if (a === "--kubectl") opts.kubectl = argv[++i];
    else if (a === "--self-test") opts.selfTest = true;
    else if (a === "-h" || a === "--help") {
      console.log("usage: validate.mjs --egressd PATH [--root REPO] [--kubectl PATH]\n       validate.mjs --self-test [--egressd PATH]");
      process.exit(0);
    } else { console.error(`validate: unknown argument ${a}`); process.exit(2); }
  }
  return opts;
}

function render(kubectl, dir) {
  const out = execFileSync(kubectl, ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 });
  return yaml.loadAll(out).filter((o) => o && typeof o === "object");
}

function renderings(opts) {
  const k8s = path.join(opts.root, "k8s");
  const dirs = [["base", path.join(k8s, "base")]];
  const overlays = path.join(k8s, "overlays");
  for (const d of fs.readdirSync(overlays).sort()) {
    if (fs.existsSync(path.join(overlays, d, "kustomization.yaml"))) dirs.push([`overlays/${d}`, path.join(overlays, d)]);
  }
  return dirs.map(([label, dir]) => {
    try {
      return { label, objects: render(opts.kubectl, dir) };
    } catch (e) {
      const why = `${e.stderr ?? ""}`.trim().split("\n").slice(-2).join(" | ") || e.message;
      return { label, objects: [], error: `${label}: kubectl kustomize failed: ${why}` };
    }
  });
}

// All the per-rendering checks; `known` = live metric families (or null to skip).
async function checkRendering(r, ctx, problems) {
  await checkSchemas(r.label, r.objects, ctx.keySchemas, problems);
  checkSelectorsAndPorts(r.label, r.objects, problems);
  const configs = egressdConfigs(r.label, r.objects, problems);
  if (ctx.egressd) checkConfigsWithBinary(r.label, configs, ctx.egressd, problems);
  checkWorkloadConfigs(r.label, r.objects, configs, problems);
  if (ctx.known) checkRuleMetrics(r.label, r.objects, ctx.known, problems);
  if (ctx.promtool) checkRulesWithPromtool(r.label, r.objects, problems);
}

// The node-rule scripts the manifests call are in the repo and in the image.
function checkRepoFiles(root, problems) {
  const dockerfile = path.join(root, "Dockerfile");
  const text = fs.existsSync(dockerfile) ? fs.readFileSync(dockerfile, "utf8") : "";
  for (const name of ["egressd-node-rules", "egressd-tproxy-rules"]) {
    const src = `k8s/scripts/${name}.sh`;
    if (!fs.existsSync(path.join(root, src))) problems.push(`repo/${src}: missing (the manifests run /usr/local/sbin/${name})`);
    const copy = new RegExp(`^COPY\\s+(--\\S+\\s+)*${src.replace(/[.]/g, "\\.")}\\s+/usr/local/sbin/${name}\\s*$`, "m");
    if (!copy.test(text)) problems.push(`repo/Dockerfile: no "COPY ${src} /usr/local/sbin/${name}" (the manifests run it from the image)`);
  }
}

function dashboardExprs(dashboard) {
  const out = [];
  const visit = (panels, trail) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ at: `panel "${p.title ?? p.id}" ${trail}`.trim(), expr: t.expr, variable: false });
      visit(p.panels, trail);
    }
  };
  visit(dashboard.panels, "");
  for (const v of dashboard.templating?.list ?? []) {
    if (v.type !== "query") continue;
    const q = typeof v.query === "string" ? v.query : v.query?.query ?? v.definition ?? "";
    out.push({ at: `variable ${v.name}`, expr: q, variable: true });
  }
  return out;
}

function checkDashboard(file, known, recorded, problems) {
  const label = `grafana/${path.basename(file)}`;
  let d;
  try { d = JSON.parse(fs.readFileSync(file, "utf8")); } catch (e) { problems.push(`${label}: not JSON: ${e.message}`); return; }
  const exprs = dashboardExprs(d);
  if (exprs.filter((e) => !e.variable).length === 0) problems.push(`${label}: no panel queries`);
  for (const { at, expr, variable } of exprs) {
    if (variable) {
      for (const sel of variableSelectors(expr)) {
        if (sel.name && !known.names.has(sel.name) && !recorded.has(sel.name)) problems.push(`${label}: ${at}: metric ${sel.name} does not exist in egressd's /metrics`);
      }
    } else {
      checkExpr(expr, known, recorded, `${label}: ${at}`, problems);
    }
  }
}

function report(problems, what) {
  for (const p of problems) console.log(p);
  console.log(`${what}: ${problems.length} problem${problems.length === 1 ? "" : "s"}`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.selfTest) {
    const { selfTest } = await import("./lib/self_test.mjs");
    process.exit(await selfTest(opts, { renderings, checkRendering, checkDashboard, checkRepoFiles }));
  }
  if (!opts.egressd) { console.error("validate: --egressd PATH is required (the metric and config checks run the binary)"); process.exit(2); }
  const problems = [];
  let known;
  try {
    known = parseExposition(await liveMetrics(opts.egressd));
  } catch (e) {
    console.error(`validate: could not read egressd's /metrics: ${e.message}`);
    process.exit(2);
  }
  const ctx = { keySchemas: new KeySchemas(path.join(here, "node_modules")), egressd: opts.egressd, known, promtool: promtoolAvailable() };
  if (!ctx.promtool) console.log("validate: promtool not found, PromQL syntax not checked (apt-get install prometheus)");
  const all = renderings(opts);
  const recorded = new Set();
  let objects = 0;
  for (const r of all) {
    if (r.error) { problems.push(r.error); continue; }
    objects += r.objects.length;
    await checkRendering(r, ctx, problems);
    for (const n of recordedNames(r.objects)) recorded.add(n);
  }
  checkRepoFiles(opts.root, problems);
  const grafana = path.join(opts.root, "k8s", "grafana");
  const dashboards = fs.existsSync(grafana) ? fs.readdirSync(grafana).filter((f) => f.endsWith(".json")) : [];
  if (dashboards.length === 0) problems.push("grafana: no dashboard in k8s/grafana");
  for (const f of dashboards) checkDashboard(path.join(grafana, f), known, recorded, problems);
  report(problems, `validate: ${all.length} renderings (${all.map((r) => r.label).join(", ")}), ${objects} objects, ${dashboards.length} dashboard(s), ${known.names.size} live metric names`);
  process.exit(problems.length ? 1 : 0);
}

main().catch((e) => { console.error(`validate: ${e.stack ?? e}`); process.exit(2); });
