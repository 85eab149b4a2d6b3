// The checks schema validation misses, over one rendering (the objects
// `kubectl kustomize DIR` prints). Each problem is one string,
// "RENDERING/Kind/name: message".
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import yaml from "js-yaml";
import { closest } from "./keys.mjs";
import { checkExpr } from "./promql.mjs";

const DEFAULT_CONFIG = "/etc/egressd/egressd.yaml";   // the image's ENTRYPOINT
const NODE_RULES = "/usr/local/sbin/egressd-node-rules";
const TPROXY_RULES = "/usr/local/sbin/egressd-tproxy-rules";

export function where(label, obj) {
  return `${label}/${obj?.kind ?? "?"}/${obj?.metadata?.name ?? "?"}`;
}

// ---- schemas -------------------------------------------------------------

const MODEL_MODULES = {
  "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

async function modelFor(apiVersion, kind) {
  const spec = MODEL_MODULES[apiVersion] ?? `kubernetes-models/${apiVersion.includes("/") ? apiVersion : "v1"}`;
  try {
    const mod = await import(spec);
    const cls = mod[kind];
    return cls && cls.apiVersion === apiVersion ? cls : null;
  } catch {
    return null;
  }
}

export async function checkSchemas(label, objects, keySchemas, problems) {
  for (const obj of objects) {
    const at = where(label, obj);
    const cls = await modelFor(obj.apiVersion ?? "", obj.kind ?? "");
    if (!cls) { problems.push(`${at}: unknown kind ${obj.apiVersion}/${obj.kind} (no schema to check it against)`); continue; }
    try {
      new cls(obj).validate();
    } catch (e) {
      for (const line of String(e.message ?? e).split("\n").filter(Boolean)) problems.push(`${at}: schema: ${line}`);
    }
    const unknown = keySchemas.unknownKeys(obj);
    if (unknown === null) { problems.push(`${at}: no key list for ${obj.apiVersion}/${obj.kind}`); continue; }
    for (const u of unknown) {
      const hint = closest(u.key, u.known);
      problems.push(`${at}: unknown key ${u.path}${hint ? ` (did you mean ${hint}?)` : ""}`);
    }
  }
}

// ---- selectors -----------------------------------------------------------

// Kubernetes LabelSelector semantics (matchLabels AND matchExpressions).
export function selects(selector, labels) {
  if (!selector) return false;
  labels ??= {};
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    switch (e.operator) {
      case "In": if (!has || !e.values.includes(labels[e.key])) return false; break;
      case "NotIn": if (has && e.values.includes(labels[e.key])) return false; break;
      case "Exists": if (!has) return false; break;
      case "DoesNotExist": if (has) return false; break;
      default: return false;
    }
  }
  return true;
}

// A Service's selector is a plain map.
const mapSelects = (map, labels) => !!map && Object.entries(map).every(([k, v]) => labels?.[k] === v);
const isEmptySelector = (s) => !s || (Object.keys(s.matchLabels ?? {}).length === 0 && (s.matchExpressions ?? []).length === 0);

const WORKLOAD_KINDS = new Set(["Deployment", "DaemonSet", "StatefulSet"]);

function workloads(objects) {
  return objects.filter((o) => WORKLOAD_KINDS.has(o.kind)).map((o) => ({
    obj: o,
    ns: o.metadata?.namespace,
    labels: o.spec?.template?.metadata?.labels ?? {},
    pod: o.spec?.template?.spec ?? {},
  }));
}

const allContainers = (pod) => [...(pod.initContainers ?? []), ...(pod.containers ?? [])];
const portsOf = (pod) => (pod.containers ?? []).flatMap((c) => c.ports ?? []);

function portExists(pod, port) {
  if (port === undefined || port === null) return true;
  const ports = portsOf(pod);
  return typeof port === "string" && !/^\d+$/.test(port)
    ? ports.some((p) => p.name === port)
    : ports.some((p) => p.containerPort === Number(port));
}

export function checkSelectorsAndPorts(label, objects, problems) {
  const wls = workloads(objects);
  const hpas = objects.filter((o) => o.kind === "HorizontalPodAutoscaler");
  const services = objects.filter((o) => o.kind === "Service");

  for (const w of wls) {
    const at = where(label, w.obj);
    if (!selects(w.obj.spec?.selector, w.labels)) problems.push(`${at}: spec.selector does not match its own pod template's labels`);
    for (const t of w.pod.topologySpreadConstraints ?? []) {
      if (!selects(t.labelSelector, w.labels)) problems.push(`${at}: topologySpreadConstraints (${t.topologyKey}) labelSelector does not match its own pods`);
    }
    for (const c of allContainers(w.pod)) {
      for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
        const p = c[probe];
        const port = p?.httpGet?.port ?? p?.tcpSocket?.port ?? p?.grpc?.port;
        if (p && !portExists({ containers: [c] }, port)) problems.push(`${at}: container ${c.name} ${probe} port ${port} is not one of its ports`);
      }
    }
    if (w.obj.kind === "Deployment") {
      const hpa = hpas.find((h) => h.metadata?.namespace === w.ns && h.spec?.scaleTargetRef?.kind === "Deployment" && h.spec?.scaleTargetRef?.name === w.obj.metadata?.name);
      const min = hpa ? (hpa.spec?.minReplicas ?? 1) : (w.obj.spec?.replicas ?? 1);
      if (min < 2) problems.push(`${at}: runs ${min} replica(s) (${hpa ? "HPA minReplicas" : "spec.replicas"}); a gateway needs at least 2`);
    }
  }

  for (const h of hpas) {
    const ref = h.spec?.scaleTargetRef ?? {};
    if (!wls.some((w) => w.ns === h.metadata?.namespace && w.obj.kind === ref.kind && w.obj.metadata?.name === ref.name)) {
      problems.push(`${where(label, h)}: scaleTargetRef ${ref.kind}/${ref.name} is not in this rendering`);
    }
  }

  for (const s of services) {
    const at = where(label, s);
    const sel = s.spec?.selector;
    if (!sel || Object.keys(sel).length === 0) { problems.push(`${at}: no selector`); continue; }
    const chosen = wls.filter((w) => w.ns === s.metadata?.namespace && mapSelects(sel, w.labels));
    if (chosen.length === 0) { problems.push(`${at}: selector ${JSON.stringify(sel)} selects no pods in this rendering`); continue; }
    for (const p of s.spec?.ports ?? []) {
      const target = p.targetPort ?? p.port;
      for (const w of chosen) {
        if (!portExists(w.pod, target)) problems.push(`${at}: port ${p.name ?? p.port} targetPort ${target} is not a port of ${w.obj.kind}/${w.obj.metadata?.name}'s containers`);
      }
    }
  }

  for (const pdb of objects.filter((o) => o.kind === "PodDisruptionBudget")) {
    if (!wls.some((w) => w.ns === pdb.metadata?.namespace && selects(pdb.spec?.selector, w.labels))) {
      problems.push(`${where(label, pdb)}: selector selects no pods in this rendering`);
    }
  }

  for (const sm of objects.filter((o) => o.kind === "ServiceMonitor")) {
    const at = where(label, sm);
    const nsSel = sm.spec?.namespaceSelector;
    const inNs = (svc) => nsSel?.any || (nsSel?.matchNames ? nsSel.matchNames.includes(svc.metadata?.namespace) : svc.metadata?.namespace === sm.metadata?.namespace);
    const chosen = services.filter((svc) => inNs(svc) && selects(sm.spec?.selector, svc.metadata?.labels));
    if (chosen.length === 0) { problems.push(`${at}: selector selects no Service in this rendering`); continue; }
    for (const ep of sm.spec?.endpoints ?? []) {
      for (const svc of chosen) {
        if (ep.port && !(svc.spec?.ports ?? []).some((p) => p.name === ep.port)) {
          problems.push(`${at}: endpoint port ${ep.port} is not a port name of Service ${svc.metadata?.name}`);
        }
        if (ep.targetPort !== undefined) {
          const pods = wls.filter((w) => w.ns === svc.metadata?.namespace && mapSelects(svc.spec?.selector, w.labels));
          for (const w of pods) if (!portExists(w.pod, ep.targetPort)) problems.push(`${at}: endpoint targetPort ${ep.targetPort} is not a port of ${w.obj.metadata?.name}`);
        }
      }
    }
  }

  for (const np of objects.filter((o) => o.kind === "NetworkPolicy")) {
    const at = where(label, np);
    const ns = np.metadata?.namespace;
    const own = isEmptySelector(np.spec?.podSelector)
      ? wls.filter((w) => w.ns === ns)
      : wls.filter((w) => w.ns === ns && selects(np.spec.podSelector, w.labels));
    if (!isEmptySelector(np.spec?.podSelector) && own.length === 0) problems.push(`${at}: spec.podSelector selects no pods in this rendering`);
    const rules = [
      ...(np.spec?.ingress ?? []).map((r) => ({ dir: "ingress", peers: r.from ?? [], ports: r.ports ?? [], targets: own })),
      ...(np.spec?.egress ?? []).map((r) => ({ dir: "egress", peers: r.to ?? [], ports: r.ports ?? [], targets: null })),
    ];
    for (const r of rules) {
      for (const peer of r.peers) {
        if (peer.ipBlock || !peer.podSelector) continue;
        // Which namespace(s) the peer's pods live in, as far as we can tell.
        const named = peer.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"];
        const peerNs = peer.namespaceSelector ? named : ns;
        if (!peerNs || !wls.some((w) => w.ns === peerNs)) continue;   // not rendered here (kube-system, ...)
        const chosen = wls.filter((w) => w.ns === peerNs && selects(peer.podSelector, w.labels));
        if (chosen.length === 0) {
          problems.push(`${at}: ${r.dir} peer podSelector ${JSON.stringify(peer.podSelector)} selects no pods in namespace ${peerNs}`);
          continue;
        }
        if (r.dir === "egress") {
          for (const p of r.ports) for (const w of chosen) {
            if (!w.pod.hostNetwork && !portExists(w.pod, p.port)) problems.push(`${at}: egress port ${p.port} is not a port of ${w.obj.metadata?.name}'s containers`);
          }
        }
      }
      if (r.dir === "ingress") {
        for (const p of r.ports) for (const w of r.targets) {
          if (!w.pod.hostNetwork && !portExists(w.pod, p.port)) problems.push(`${at}: ingress port ${p.port} is not a port of ${w.obj.metadata?.name}'s containers`);
        }
      }
    }
  }
}

// ---- egressd configs -----------------------------------------------------

// "250ms", "5s", "10m", "1h" -> seconds.
export function seconds(d) {
  const m = /^(\d+)(ms|s|m|h)$/.exec(String(d ?? "").trim());
  if (!m) return null;
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
}

const portOf = (address) => Number(/:(\d+)$/.exec(String(address ?? ""))?.[1]);

// Every ConfigMap key that is an egressd config, parsed:
// Map "namespace/name" -> Map key -> {text, config}.
export function egressdConfigs(label, objects, problems) {
  const out = new Map();
  for (const cm of objects.filter((o) => o.kind === "ConfigMap")) {
    for (const [key, text] of Object.entries(cm.data ?? {})) {
      if (!/\.ya?ml$/.test(key)) continue;
      let config;
      try { config = yaml.load(text); } catch (e) { problems.push(`${where(label, cm)}: ${key} is not YAML: ${e.message.split("\n")[0]}`); continue; }
      if (!config || typeof config !== "object" || !Array.isArray(config.listeners)) continue;
      const id = `${cm.metadata?.namespace}/${cm.metadata?.name}`;
      if (!out.has(id)) out.set(id, new Map());
      out.get(id).set(key, { text, config, cm });
    }
  }
  return out;
}

// `egressd check` on every config (the binary's own validation and tests:).
export function checkConfigsWithBinary(label, configs, egressd, problems) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "egressd-validate-cm-"));
  try {
    for (const keys of configs.values()) {
      for (const [key, { text, cm }] of keys) {
        const file = path.join(dir, `${cm.metadata?.name}-${key}`);
        fs.writeFileSync(file, text);
        try {
          execFileSync(egressd, ["check", "--config", file], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
        } catch (e) {
          const lines = `${e.stdout ?? ""}${e.stderr ?? ""}`.split("\n").filter((l) => l && !/warning:/.test(l));
          problems.push(`${where(label, cm)}: ${key} fails egressd check: ${lines.map((l) => l.replace(file, key)).join(" | ") || e.message}`);
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const commandText = (c) => [...(c?.command ?? []), ...(c?.args ?? [])].join(" ");
const flagValue = (text, flag) => { const m = new RegExp(`${flag}\\s+"?(\\d+)`).exec(text); return m ? Number(m[1]) : null; };

// Per egressd container: which config it reads (mounted as a directory from
// a ConfigMap), and what that config demands of the pod.
export function checkWorkloadConfigs(label, objects, configs, problems) {
  const bindings = objects.filter((o) => o.kind === "ClusterRoleBinding" || o.kind === "RoleBinding");
  const roles = objects.filter((o) => o.kind === "ClusterRole" || o.kind === "Role");
  for (const w of workloads(objects)) {
    const at = where(label, w.obj);
    const pod = w.pod;
    for (const c of pod.containers ?? []) {
      if (!/(^|\/)egressd(:|@|$)/.test(c.image ?? "")) continue;
      const args = c.args ?? [];
      const i = args.indexOf("--config");
      const file = i >= 0 ? args[i + 1] : DEFAULT_CONFIG;
      const mount = (c.volumeMounts ?? []).find((m) => file.startsWith(m.mountPath.replace(/\/?$/, "/")) || file === m.mountPath);
      if (!mount) { problems.push(`${at}: container ${c.name} reads ${file}, which no volumeMount provides`); continue; }
      if (mount.subPath || mount.subPathExpr) {
        problems.push(`${at}: container ${c.name} mounts its config with subPath: ConfigMap updates never reach a subPath mount, so the watcher never reloads (mount the directory)`);
      }
      const vol = (pod.volumes ?? []).find((v) => v.name === mount.name);
      const cmName = vol?.configMap?.name;
      if (!cmName) { problems.push(`${at}: container ${c.name}'s config volume ${mount.name} is not a ConfigMap`); continue; }
      const key = mount.subPath ?? path.posix.relative(mount.mountPath, file);
      const entry = configs.get(`${w.ns}/${cmName}`)?.get(key);
      if (!entry) { problems.push(`${at}: container ${c.name} reads ${file}, but ConfigMap ${cmName} has no egressd config under key ${key}`); continue; }
      const cfg = entry.config;

      // (e) the grace period covers the drain.
      const delay = seconds(cfg.timeouts?.drain_delay ?? "5s"), drain = seconds(cfg.timeouts?.drain ?? "25s");
      const grace = pod.terminationGracePeriodSeconds ?? 30;
      if (delay === null || drain === null) problems.push(`${at}: cannot read timeouts.drain_delay/drain of ConfigMap ${cmName}`);
      else if (!(grace > delay + drain)) {
        problems.push(`${at}: terminationGracePeriodSeconds ${grace} must exceed drain_delay + drain = ${delay + drain}s (ConfigMap ${cmName}); the kubelet would kill flows still draining`);
      }

      // Ports: every declared container port is served by the config, and
      // the probes go to its admin port.
      const listenerPorts = new Map((cfg.listeners ?? []).map((l) => [portOf(l.address), l]));
      const adminPort = portOf(cfg.admin?.address ?? "0.0.0.0:9901");
      for (const p of c.ports ?? []) {
        if (p.containerPort !== adminPort && !listenerPorts.has(p.containerPort)) {
          problems.push(`${at}: container ${c.name} port ${p.name ?? ""} ${p.containerPort} is neither a listener nor the admin port of ConfigMap ${cmName}`);
        }
      }
      for (const probe of ["readinessProbe", "livenessProbe", "startupProbe"]) {
        const hp = c[probe]?.httpGet;
        if (!hp) continue;
        const num = typeof hp.port === "number" ? hp.port : (c.ports ?? []).find((p) => p.name === hp.port)?.containerPort;
        if (num !== undefined && num !== adminPort) problems.push(`${at}: ${probe} goes to port ${num}, not the admin port ${adminPort}`);
        const want = probe === "livenessProbe" ? "/healthz" : "/readyz";
        if (probe !== "startupProbe" && hp.path !== want) problems.push(`${at}: ${probe} path ${hp.path}, expected ${want}`);
      }
      if (/^127\.|^\[::1\]/.test(String(cfg.admin?.address ?? ""))) problems.push(`${at}: admin listens on loopback; the kubelet's probes come from outside the pod`);

      // (f) node rules around a node agent, TPROXY rules around a tproxy listener.
      const preStop = commandText(c.lifecycle?.preStop?.exec);
      const inits = (pod.initContainers ?? []).map(commandText);
      const forward = (cfg.listeners ?? []).find((l) => l.forward);
      if (forward) {
        const install = inits.find((t) => t.includes(`${NODE_RULES} install`));
        if (w.obj.kind !== "DaemonSet") problems.push(`${at}: a node agent (listener ${forward.name} forwards) must be a DaemonSet`);
        if (!pod.hostNetwork) problems.push(`${at}: a node agent needs hostNetwork (REDIRECT reaches sockets on the node only)`);
        if (!install) problems.push(`${at}: no initContainer runs ${NODE_RULES} install`);
        else {
          const port = flagValue(install, "--port") ?? 15001, mark = flagValue(install, "--mark") ?? 42;
          if (port !== portOf(forward.address)) problems.push(`${at}: ${NODE_RULES} --port ${port} but the agent listens on ${portOf(forward.address)}`);
          if (mark !== (cfg.upstream?.mark ?? 0)) problems.push(`${at}: ${NODE_RULES} --mark ${mark} but the agent's upstream.mark is ${cfg.upstream?.mark ?? 0} (its own connections would be redirected again)`);
        }
        if (!preStop.includes(`${NODE_RULES} remove`)) problems.push(`${at}: container ${c.name}'s preStop does not run ${NODE_RULES} remove`);
      }
      const tproxy = (cfg.listeners ?? []).find((l) => l.mode === "tproxy");
      if (tproxy) {
        const install = inits.find((t) => t.includes(`${TPROXY_RULES} install`));
        if (!pod.hostNetwork) problems.push(`${at}: a tproxy listener needs hostNetwork`);
        if (!install) problems.push(`${at}: no initContainer runs ${TPROXY_RULES} install`);
        else if ((flagValue(install, "--port") ?? 15002) !== portOf(tproxy.address)) {
          problems.push(`${at}: ${TPROXY_RULES} --port ${flagValue(install, "--port") ?? 15002} but the tproxy listener is on ${portOf(tproxy.address)}`);
        }
        if (!preStop.includes(`${TPROXY_RULES} remove`)) problems.push(`${at}: container ${c.name}'s preStop does not run ${TPROXY_RULES} remove`);
      }
      const needsNetAdmin = !!forward || !!tproxy || (cfg.upstream?.mark ?? 0) !== 0;
      const caps = c.securityContext?.capabilities?.add ?? [];
      if (needsNetAdmin && !caps.includes("NET_ADMIN")) problems.push(`${at}: container ${c.name} needs NET_ADMIN (tproxy, node rules or upstream.mark)`);

      // Pod identity: the service account may list and watch pods and namespaces.
      if (cfg.kubernetes !== undefined && cfg.kubernetes !== null && !cfg.kubernetes.kubeconfig) {
        const sa = pod.serviceAccountName ?? "default";
        const ok = bindings.some((b) => (b.subjects ?? []).some((s) => s.kind === "ServiceAccount" && s.name === sa && (s.namespace ?? b.metadata?.namespace) === w.ns)
          && roles.some((r) => r.kind === b.roleRef?.kind && r.metadata?.name === b.roleRef?.name
            && ["pods", "namespaces"].every((res) => (r.rules ?? []).some((rule) => (rule.resources ?? []).includes(res)
              && ["list", "watch"].every((v) => (rule.verbs ?? []).includes(v))))));
        if (!ok) problems.push(`${at}: the config uses kubernetes: (pod identity) but ServiceAccount ${sa} is not bound to a role that lists and watches pods and namespaces`);
        if (pod.automountServiceAccountToken === false) problems.push(`${at}: the config uses kubernetes: but the pod does not mount its service account token`);
      }
    }

    // Baseline hardening; root with NET_ADMIN only where iptables or
    // IP_TRANSPARENT need it.
    if (pod.hostNetwork && pod.dnsPolicy !== "ClusterFirstWithHostNet") problems.push(`${at}: hostNetwork pods need dnsPolicy ClusterFirstWithHostNet to resolve cluster names`);
    for (const c of allContainers(pod)) {
      const sc = c.securityContext ?? {};
      const privileged = (sc.capabilities?.add ?? []).length > 0;
      if (sc.allowPrivilegeEscalation !== false) problems.push(`${at}: container ${c.name}: allowPrivilegeEscalation must be false`);
      if (sc.readOnlyRootFilesystem !== true) problems.push(`${at}: container ${c.name}: readOnlyRootFilesystem must be true`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) problems.push(`${at}: container ${c.name}: capabilities must drop ALL`);
      if (!privileged && (sc.runAsNonRoot !== true && pod.securityContext?.runAsNonRoot !== true)) problems.push(`${at}: container ${c.name}: runAsNonRoot must be true (no added capabilities)`);
      const seccomp = sc.seccompProfile?.type ?? pod.securityContext?.seccompProfile?.type;
      if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") problems.push(`${at}: container ${c.name}: seccompProfile must be RuntimeDefault`);
      const extra = (sc.capabilities?.add ?? []).filter((x) => !["NET_ADMIN", "NET_RAW"].includes(x));
      if (extra.length) problems.push(`${at}: container ${c.name}: capabilities beyond NET_ADMIN/NET_RAW: ${extra.join(", ")}`);
    }
  }
}

// ---- metric names ----------------------------------------------------------

export function recordedNames(objects) {
  const out = new Set();
  for (const pr of objects.filter((o) => o.kind === "PrometheusRule")) {
    for (const g of pr.spec?.groups ?? []) for (const r of g.rules ?? []) if (r.record) out.add(r.record);
  }
  return out;
}

export function checkRuleMetrics(label, objects, known, problems) {
  const recorded = recordedNames(objects);
  for (const pr of objects.filter((o) => o.kind === "PrometheusRule")) {
    for (const g of pr.spec?.groups ?? []) for (const r of g.rules ?? []) {
      const name = r.alert ?? r.record;
      if (r.alert) {
        if (!r.for) problems.push(`${where(label, pr)}: alert ${name} has no for:`);
        if (!r.labels?.severity) problems.push(`${where(label, pr)}: alert ${name} has no severity label`);
        if (!r.annotations?.summary || !r.annotations?.description) problems.push(`${where(label, pr)}: alert ${name} needs summary and description annotations`);
      }
      checkExpr(r.expr ?? "", known, recorded, `${where(label, pr)}: ${r.alert ? "alert" : "record"} ${name}`, problems);
    }
  }
}

// PromQL syntax and rule structure, by Prometheus's own promtool when it is
// installed (scripts/install-deps.sh installs prometheus for the tests);
// null when it is not.
export function promtoolAvailable() {
  try { execFileSync("promtool", ["--version"], { stdio: "ignore" }); return true; } catch { return false; }
}

export function checkRulesWithPromtool(label, objects, problems) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "egressd-validate-rules-"));
  try {
    for (const pr of objects.filter((o) => o.kind === "PrometheusRule")) {
      const file = path.join(dir, `${pr.metadata?.name}.yaml`);
      fs.writeFileSync(file, yaml.dump({ groups: pr.spec?.groups ?? [] }));
      try {
        execFileSync("promtool", ["check", "rules", file], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
      } catch (e) {
        const lines = `${e.stdout ?? ""}${e.stderr ?? ""}`.split("\n").map((l) => l.trim()).filter((l) => l && !/^Checking|^FAILED:?$/.test(l));
        problems.push(`${where(label, pr)}: promtool check rules: ${lines.join(" | ").replaceAll(file, "rules")}`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
