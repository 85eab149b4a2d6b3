// Metric names in PromQL expressions, and the live metric families of an
// egressd binary, so alerts and dashboards can only name metrics that exist.
import { spawn } from "node:child_process";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const KEYWORDS = new Set([
  "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
  "and", "or", "unless", "offset", "atan2", "inf", "nan", "start", "end",
]);
// Labels Prometheus adds from the scrape target; never in /metrics itself.
export const TARGET_LABELS = new Set(["namespace", "pod", "job", "instance", "service", "container", "endpoint", "node"]);
// Series Prometheus writes itself for every target.
const SYNTHETIC = new Set(["up"]);

// [{name, labels: [label names in its {} matcher]}] for every selector.
export function selectors(expr) {
  let e = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')   // strings
    .replace(/\$\{[^}]*\}|\$\w+/g, "0")                              // Grafana variables
    .replace(/\[[^\]]*\]/g, "");                                     // ranges, subqueries
  e = e.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ");
  const out = [];
  const re = /(?<![\w:.])([A-Za-z_:][\w:]*)\s*(\{[^}]*\})?\s*(\()?/g;
  let m;
  while ((m = re.exec(e)) !== null) {
    const [, name, braces, call] = m;
    if (call && !braces) continue;                 // a function or aggregation
    if (KEYWORDS.has(name)) { if (braces) out.push({ name: null, labels: labelNames(braces) }); continue; }
    out.push({ name, labels: braces ? labelNames(braces) : [] });
  }
  // A bare {__name__=...} or {label=...} selector (no metric name before it).
  for (const b of e.matchAll(/(?<![\w:])\{[^}]*\}/g)) {
    const before = e.slice(0, b.index).trimEnd();
    if (!/[\w:]$/.test(before)) out.push({ name: null, labels: labelNames(b[0]) });
  }
  return out;
}

function labelNames(braces) {
  return [...braces.matchAll(/([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)/g)].map((m) => m[1]);
}

// Metric names in a Grafana variable query: label_values(metric, label),
// query_result(expr), or a plain expression.
export function variableSelectors(query) {
  const lv = /^\s*label_values\s*\(\s*([^,)]*?)\s*(?:,\s*([\w]+)\s*)?\)\s*$/.exec(query);
  if (lv) return lv[2] === undefined ? [] : selectors(lv[1]);
  const qr = /^\s*query_result\s*\(([\s\S]*)\)\s*$/.exec(query);
  if (qr) return selectors(qr[1]);
  if (/^\s*(label_names|metrics)\s*\(/.test(query)) return [];
  return selectors(query);
}

// {names: Set, labels: Map name -> Set(label names)} from exposition text.
export function parseExposition(text) {
  const names = new Set(), labels = new Map();
  for (const line of text.split("\n")) {
    const t = /^# TYPE (\S+) (\S+)/.exec(line);
    if (t) {
      names.add(t[1]);
      if (t[2] === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(t[1] + s);
      if (t[2] === "summary") for (const s of ["_sum", "_count"]) names.add(t[1] + s);
      continue;
    }
    const s = /^([A-Za-z_:][\w:]*)(\{([^}]*)\})?\s/.exec(line);
    if (!s) continue;
    names.add(s[1]);
    const set = labels.get(s[1]) ?? new Set();
    for (const l of (s[3] ?? "").matchAll(/([A-Za-z_]\w*)="/g)) set.add(l[1]);
    labels.set(s[1], set);
  }
  return { names, labels };
}

export function checkExpr(expr, known, recorded, where, problems) {
  for (const sel of selectors(expr)) {
    if (sel.name === null) continue;
    if (SYNTHETIC.has(sel.name) || recorded.has(sel.name)) continue;
    if (!known.names.has(sel.name)) {
      problems.push(`${where}: metric ${sel.name} does not exist in egressd's /metrics`);
      continue;
    }
    // No sample in the exposition (a family not yet written): labels unknown.
    // Samples without labels: only target labels can match.
    const have = known.labels.get(sel.name);
    if (!have) continue;
    for (const l of sel.labels) {
      if (l === "__name__" || TARGET_LABELS.has(l) || have.has(l)) continue;
      problems.push(`${where}: metric ${sel.name} has no label ${l} (it has ${have.size ? [...have].sort().join(", ") : "none"})`);
    }
  }
}

// A throwaway CA so the binary accepts the kubeconfig and shows its
// egressd_kubernetes_* families; the API server address refuses connections.
const PLACEHOLDER_CA = `-----BEGIN CERTIFICATE-----
MIIBpjCCAUugAwIBAgIUTDN3pthbnVi07j1HuLer/kIp9vEwCgYIKoZIzj0EAwIw
JzElMCMGA1UEAwwcZWdyZXNzZC12YWxpZGF0ZS1wbGFjZWhvbGRlcjAgFw0yNjEy
MDUwOTQwNDhaGA8yMTI2MTExMTA5NDA0OFowJzElMCMGA1UEAwwcZWdyZXNzZC12
YWxpZGF0ZS1wbGFjZWhvbGRlcjBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABCQd
QAlFstuR+UFpR7flf6Frm1wZYZti0iLhUU8dCoIOWhlu1bgcFr6MPQPfARm+s04O
AlW3W0BPVNPlomJi20SjUzBRMB0GA1UdDgQWBBTtYIArD0ky2DX7o2G++8JcRShO
NzAfBgNVHSMEGDAWgBTtYIArD0ky2DX7o2G++8JcRShONzAPBgNVHRMBAf8EBTAD
AQH/MAoGCCqGSM49BAMCA0kAMEYCIQCo/tDP5ffevt/D+YB+3cBJ4kaSz6qGRucA
E+haMKmkIQIhAOLpL68uZkoVjbidkYesmq5JI7ORkM2YJ300odNfw1pv
-----END CERTIFICATE-----
`;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function get(port, pathname) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: "127.0.0.1", port, path: pathname, timeout: 2000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c) => { body += c; });
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("timeout")));
  });
}

// One request through the explicit listener; the answer does not matter,
// only that the flow and request counters get labelled samples.
function proxyRequest(port, request) {
  return new Promise((resolve) => {
    const s = net.connect(port, "127.0.0.1", () => s.write(request));
    let got = "";
    s.setTimeout(3000, () => s.destroy());
    s.on("data", (d) => { got += d; if (got.includes("\r\n\r\n")) s.end(); });
    s.on("close", () => resolve(got.split("\r\n")[0]));
    s.on("error", () => resolve(""));
  });
}

// Starts egressd on loopback, sends one denied CONNECT and one forward
// request, reads /metrics, stops it. Returns the exposition text.
export async function liveMetrics(egressd) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "egressd-validate-"));
  const [proxyPort, adminPort, deadPort] = [await freePort(), await freePort(), await freePort()];
  fs.writeFileSync(path.join(dir, "ca.pem"), PLACEHOLDER_CA);
  fs.writeFileSync(path.join(dir, "kubeconfig"), [
    "apiVersion: v1", "kind: Config", "current-context: c",
    "clusters: [{name: c, cluster: {server: \"https://127.0.0.1:" + deadPort + "\", certificate-authority: " + JSON.stringify(path.join(dir, "ca.pem")) + "}}]",
    "users: [{name: u, user: {token: placeholder}}]",
    "contexts: [{name: c, context: {cluster: c, user: u}}]", "",
  ].join("\n"));
  const config = path.join(dir, "egressd.yaml");
  fs.writeFileSync(config, [
    "listeners:",
    `  - {name: proxy, address: "127.0.0.1:${proxyPort}", mode: explicit}`,
    `admin: {address: "127.0.0.1:${adminPort}"}`,
    "access_log: {path: \"-\"}",
    "timeouts: {drain_delay: 100ms, drain: 1s}",
    `kubernetes: {kubeconfig: ${JSON.stringify(path.join(dir, "kubeconfig"))}, sync_timeout: 1s}`,
    "policy:",
    "  default: deny",
    "  rules:",
    "    - name: example",
    "      to: [{host: \"api.stripe.com\", ports: [443]}]",
    "",
  ].join("\n"));
  const child = spawn(egressd, ["--config", config], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  try {
    let ready = false;
    for (let i = 0; i < 100 && !ready && child.exitCode === null; i++) {
      try { ready = (await get(adminPort, "/healthz")).status === 200; } catch { /* not yet */ }
      if (!ready) await new Promise((r) => setTimeout(r, 100));
    }
    if (!ready) throw new Error(`egressd did not start: ${stderr.trim().split("\n").slice(-3).join(" | ")}`);
    await proxyRequest(proxyPort, "CONNECT github.com:443 HTTP/1.1\r\nHost: github.com:443\r\n\r\n");
    await proxyRequest(proxyPort, `GET http://127.0.0.1:${deadPort}/ HTTP/1.1\r\nHost: 127.0.0.1:${deadPort}\r\n\r\n`);
    const metrics = await get(adminPort, "/metrics");
    if (metrics.status !== 200) throw new Error(`/metrics answered ${metrics.status}`);
    return metrics.body;
  } finally {
    if (child.exitCode === null) child.kill("SIGTERM");
    const t = setTimeout(() => child.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(t);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
