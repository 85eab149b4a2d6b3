"""A two-node cluster in network namespaces: node agents and central replicas.

    p1 (pod) 10.200.101.2 -- n1 (node, agent)  10.200.11.2 --+
    p2 (pod) 10.200.102.2 -- n2 (node, agent)  10.200.12.2 --+-- core (router) -- inet 198.18.0.0/24
                             c1 (central)      10.200.21.2 --+                    (nginx, dnsmasq, echo)
                             c2 (central)      10.200.22.2 --+

- Each node runs the shipped node-rule script
  (k8s/scripts/egressd-node-rules.sh, what the DaemonSet runs): TCP from its
  pod's /24 to anywhere outside 10.200.0.0/16 goes to its egressd agent on
  :15001, a redirect listener with `forward: "central.test:15008"`; UDP 443
  from the pod is refused.
- dnsmasq answers central.test with both central addresses (a headless
  Service's two replicas), and the world's usual test names.
- Each central runs egressd with a PROXY listener on :15008 whose
  `proxy_protocol.trusted` is the two node addresses, and the real policy.
- `inet` is world.World's internet namespace (nginx with the test CA,
  dnsmasq, echo and banner), built by World's own code; core stands where
  World's gw stands (198.18.0.1), routing only.

Names: the World tag plus -core, -n1, -n2, -p1, -p2, -c1, -c2 (and World's
-inet), so runs never collide; namespaces of dead runs are removed at start
and this run's on any exit (World.stop, atexit).
"""

import os
import re
import subprocess
import sys

import world as W

NODES_TAG_RE = re.compile(r"^" + W.PREFIX + r"(\d+)x(\d+)-(core|n1|n2|p1|p2|c1|c2)$")

POD1_IP = "10.200.101.2"
POD2_IP = "10.200.102.2"
NODE1_IP = "10.200.11.2"
NODE2_IP = "10.200.12.2"
CENTRAL1_IP = "10.200.21.2"
CENTRAL2_IP = "10.200.22.2"
AGENT_PORT = 15001
CENTRAL_PORT = 15008
CENTRAL_NAME = "central.test"
AGENT_MARK = 42  # upstream.mark of the agents
CLUSTER_CIDR = "10.200.0.0/16"  # nodes, pods and centrals: exempt from redirection
NODE_RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "k8s", "scripts",
                          "egressd-node-rules.sh")

# (namespace suffix, core-side link, core address, far address)
_LINKS = [
    ("n1", "core-n1", "10.200.11.1", NODE1_IP),
    ("n2", "core-n2", "10.200.12.1", NODE2_IP),
    ("c1", "core-c1", "10.200.21.1", CENTRAL1_IP),
    ("c2", "core-c2", "10.200.22.1", CENTRAL2_IP),
]
# (pod suffix, node suffix, node-side link, node address, pod address)
_PODS = [
    ("p1", "n1", "n1-pod", "10.200.101.1", POD1_IP),
    ("p2", "n2", "n2-pod", "10.200.102.1", POD2_IP),
]


def remove_stale_nodes():
    p = W.run(["ip", "netns", "list"], check=False)
    for line in p.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = NODES_TAG_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not W._pid_alive(int(m.group(1))):
            W._delete_netns(name)


class NodesWorld(W.World):
    """World's internet (nginx, dnsmasq, servers) behind a router, with two
    nodes (each a pod and an agent) and two centrals around it."""

    def __init__(self):
        super().__init__(interception=None)
        self.core = self.tag + "-core"
        self.ns = {s: self.tag + "-" + s for s in ("n1", "n2", "p1", "p2", "c1", "c2")}
        self.pod = self.ns["p1"]  # World's pod helpers act on p1
        self.gw = self.core

    def start(self):
        remove_stale_nodes()
        super().start()

    # World.start's steps, for this topology.

    def _make_namespaces(self):
        def add_ns(ns):
            W.run(["ip", "netns", "add", ns])
            self._namespaces.append(ns)
            self._ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
            W.run(["ip", "-n", ns, "link", "set", "lo", "up"])

        def up(ns, dev, *addresses):
            for a in addresses:
                W.run(["ip", "-n", ns, "addr", "add", a, "dev", dev])
            W.run(["ip", "-n", ns, "link", "set", dev, "up"])

        for ns in [self.core, self.inet] + list(self.ns.values()):
            add_ns(ns)
        forward = ["net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"]
        self._ns(self.core, "sysctl", "-qw", *forward)
        # core <-> inet, with World's addresses (core stands where gw does).
        W.run(["ip", "-n", self.core, "link", "add", "core-inet", "type", "veth", "peer", "name", "eth0",
               "netns", self.inet])
        up(self.core, "core-inet", W.GW_INET_IP + "/24")
        up(self.inet, "eth0", *[ip + "/24" for ip in W.INET_IPS])
        for ip in W.INET_IPS6:  # World's servers bind them too
            W.run(["ip", "-n", self.inet, "-6", "addr", "add", ip + "/64", "dev", "eth0", "nodad"])
        W.run(["ip", "-n", self.inet, "route", "add", "default", "via", W.GW_INET_IP])
        for suffix, dev, core_ip, far_ip in _LINKS:
            ns = self.ns[suffix]
            W.run(["ip", "-n", self.core, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", ns])
            up(self.core, dev, core_ip + "/24")
            up(ns, "eth0", far_ip + "/24")
            W.run(["ip", "-n", ns, "route", "add", "default", "via", core_ip])
        for pod, node, dev, node_ip, pod_ip in _PODS:
            W.run(["ip", "-n", self.ns[node], "link", "add", dev, "type", "veth", "peer", "name", "eth0",
                   "netns", self.ns[pod]])
            up(self.ns[node], dev, node_ip + "/24")
            up(self.ns[pod], "eth0", pod_ip + "/24")
            W.run(["ip", "-n", self.ns[pod], "route", "add", "default", "via", node_ip])
            # The pod network is routed, as in a cluster: traffic the node
            # rules leave alone (the cluster range) reaches its peers.
            far_node = dict((s, far) for s, _, _, far in _LINKS)[node]
            W.run(["ip", "-n", self.core, "route", "add", pod_ip.rsplit(".", 1)[0] + ".0/24", "via", far_node])
            self._ns(self.ns[node], "sysctl", "-qw", *forward)

    def set_interception(self, mode):
        """Each node runs the shipped node-rule script (the DaemonSet's init
        step, k8s/scripts/egressd-node-rules.sh): its pod's TCP goes to the
        agent, the cluster's own range stays direct, UDP 443 is refused. A
        counting rule (not part of the script) sees the agents' marked
        upstream packets."""
        for _, node, _, _, pod_ip in _PODS:
            self.node_rules(node, "install", "--pod-cidr", pod_ip.rsplit(".", 1)[0] + ".0/24")
            self._ns(self.ns[node], "iptables", "-t", "mangle", "-A", "OUTPUT", "-p", "tcp", "--dport",
                     str(CENTRAL_PORT), "-m", "mark", "--mark", str(AGENT_MARK))
        self.interception = "redirect"

    def node_rules(self, node, action, *args, check=True):
        """Runs the node-rule script in `node` with the world's settings."""
        cmd = ["sh", NODE_RULES, action]
        if action == "install":
            cmd += list(args) + ["--exempt", CLUSTER_CIDR, "--port", str(AGENT_PORT), "--mark", str(AGENT_MARK)]
        return self._ns(self.ns[node], *cmd, check=check)

    def _popen(self, name, ns, cmd, stdout=None, stdin=None):
        # World's dnsmasq, also answering central.test with both replicas.
        if name == "dnsmasq":
            cmd = list(cmd) + ["--address=/%s/%s" % (CENTRAL_NAME, ip) for ip in (CENTRAL1_IP, CENTRAL2_IP)]
        return super()._popen(name, ns, cmd, stdout=stdout, stdin=stdin)

    # ---- helpers -------------------------------------------------------------

    def at(self, suffix):
        """A view of this world for world.Gateway: its `gw` is namespace `suffix`."""
        return _At(self, self.ns[suffix])

    def run_in(self, suffix, cmd, timeout=30, **kw):
        ns = self.inet if suffix == "inet" else self.ns[suffix]
        return self.ns_run(ns, cmd, timeout=timeout, **kw)

    def curl_from(self, pod, url, ip, timeout=10, extra=()):
        """curl in pod `pod` ("p1"/"p2") with --resolve to `ip`."""
        u = W.urllib.parse.urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
        cmd = ["curl", "-sS", "--http1.1", "--max-time", str(timeout), "--cacert", self.ca, "-D", "-",
               "--resolve", "%s:%d:%s" % (u.hostname, port, ip)] + list(extra) + [url]
        p = self.run_in(pod, cmd, timeout=timeout + 10)
        return W.Response.parse(p.returncode, p.stdout, p.stderr)

    def hello_from(self, pod, dst, sni):
        """client.py hello from pod `pod`; returns its JSON reply."""
        return self.client("hello", "--dst", dst, "--sni", sni, ns=self.ns[pod])

    def raw_from(self, suffix, dst_ip, dst_port, payload, wait=5.0):
        """Connects from namespace `suffix` to dst, sends `payload` (bytes) in
        one write, reads until the peer closes or `wait` passes. Returns
        {"closed": "eof"|"reset"|"open", "received": bytes, "seconds": float}."""
        code = r"""
import json, socket, sys, time
ip, port, data, wait = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3]), float(sys.argv[4])
t0 = time.monotonic()
s = socket.create_connection((ip, port), timeout=5)
if data:
    s.sendall(data)
s.settimeout(wait)
got, closed = b"", "open"
try:
    while True:
        b = s.recv(65536)
        if not b:
            closed = "eof"
            break
        got += b
except ConnectionResetError:
    closed = "reset"
except socket.timeout:
    pass
print(json.dumps({"closed": closed, "received": got.hex(), "seconds": time.monotonic() - t0}))
"""
        p = self.run_in(suffix, [W.PYTHON, "-c", code, dst_ip, str(dst_port), payload.hex(), str(wait)],
                        timeout=wait + 15)
        if p.returncode != 0:
            raise AssertionError("raw client failed: %s" % p.stderr.decode("utf-8", "replace"))
        r = W.json.loads(p.stdout.decode().strip().splitlines()[-1])
        r["received"] = bytes.fromhex(r["received"])
        return r

    def nginx_requests(self):
        """Lines in nginx's access log so far."""
        try:
            with open(self.path("nginx-access.log"), "rb") as f:
                return f.read().count(b"\n")
        except OSError:
            return 0

    def mark_counter(self, node):
        """Packets the agent on `node` sent to :15008 with upstream.mark set."""
        out = self._ns(self.ns[node], "iptables", "-t", "mangle", "-L", "OUTPUT", "-v", "-x", "-n").stdout
        for line in out.splitlines():
            if "dpt:%d" % CENTRAL_PORT in line and "mark match" in line:
                return int(line.split()[0])
        return 0


class _At:
    """World as world.Gateway expects it, with `gw` = one namespace."""

    def __init__(self, world, ns):
        self._world = world
        self.gw = ns

    def __getattr__(self, name):
        return getattr(self._world, name)
