"""The integration test world: three network namespaces and real peers.

    pod  (client)            gw (egressd)                 inet (servers)
    eth0 10.200.1.2/24  ---  gw-pod   10.200.1.1/24
         10.200.1.3/24       gw-inet  198.18.0.1/24  ---  eth0 198.18.0.10 .11 .12
         fd00:200:1::2/64             fd00:198:18::1/64        .20 .21 .53
         fd00:200:1::3/64                                      fd00:198:18::10 ::11 ::12 ::20

Every TCP connection the pod makes is intercepted in `gw` (iptables nat
REDIRECT to :15001, or mangle TPROXY to :15002); the gateway's own upstream
connections leave through gw-inet and are never intercepted, because the
rules match only packets arriving on gw-pod.

`inet` runs nginx (HTTPS and HTTP for every test name, certificates from a
CA made at start-up), dnsmasq (the test names, some pointing at private and
link-local addresses), and servers.py (TCP echo, server-first banner).

Everything a run creates carries a tag made of the runner's pid, so parallel
or stale runs never collide; namespaces of runs whose process is gone are
removed at start. `World` is a context manager and cleans up on any failure,
KeyboardInterrupt included.
"""

import atexit
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

PREFIX = "egdit"
TAG_RE = re.compile(r"^" + PREFIX + r"(\d+)x(\d+)-(pod|gw|inet)$")

# Addresses (see the drawing above).
POD_IP = "10.200.1.2"
POD_IP2 = "10.200.1.3"
POD_IP6 = "fd00:200:1::2"
POD_IP6_2 = "fd00:200:1::3"
GW_POD_IP = "10.200.1.1"
GW_POD_IP6 = "fd00:200:1::1"
GW_INET_IP = "198.18.0.1"
GW_INET_IP6 = "fd00:198:18::1"
WEB_IP = "198.18.0.10"  # nginx; allowed.test and most names
WEB2_IP = "198.18.0.11"  # nginx; other.test (integrity mismatch target)
WEB3_IP = "198.18.0.12"  # nginx; denied.test
ECHO_IP = "198.18.0.20"  # servers.py echo on 7000 (allowed) and 7001 (not allowed)
BANNER_IP = "198.18.0.21"  # servers.py banner on 2525
DNS_IP = "198.18.0.53"  # dnsmasq
WEB_IP6 = "fd00:198:18::10"
WEB2_IP6 = "fd00:198:18::11"
WEB3_IP6 = "fd00:198:18::12"
ECHO_IP6 = "fd00:198:18::20"
PRIVATE_IP = "10.200.99.1"  # what private.test resolves to; nothing listens
METADATA_IP = "169.254.169.254"  # what metadata.test resolves to

INET_IPS = [WEB_IP, WEB2_IP, WEB3_IP, ECHO_IP, BANNER_IP, DNS_IP]
INET_IPS6 = [WEB_IP6, WEB2_IP6, WEB3_IP6, ECHO_IP6]

ECHO_PORT = 7000
ECHO_PORT_DENIED = 7001
UPGRADE_PORT = 8088  # servers.py: HTTP/1.1 that switches to an echo on `Upgrade: websocket`
BANNER_PORT = 2525
H2C_PORT = 8080  # nghttpd --no-tls on WEB_IP: an h2c origin, docroot world.path("h2c-www")
BANNER = b"220 banner.test ESMTP egressd-integration\r\n"

# rebind.test is served by servers.py's rebinding DNS (dnsmasq forwards it):
# its A answer alternates between a public and the metadata address.
REBIND_NAME = "rebind.test"
REBIND_DNS_PORT = 5353

REDIRECT_PORT = 15001
TPROXY_PORT = 15002
TPROXY_RULES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "k8s", "scripts",
                            "egressd-tproxy-rules.sh")
ADMIN = "127.0.0.1:9901"

# DNS answers served by dnsmasq. DNS_DOMAINS also answer for every name below
# them (dnsmasq --address); DNS_HOSTS answer for that name only, and with
# NODATA (not NXDOMAIN) for the family they lack. Any other name under .test
# is NXDOMAIN.
DNS_DOMAINS = {
    "allowed.test": [WEB_IP, WEB_IP6],
    "other.test": [WEB2_IP, WEB2_IP6],
    "denied.test": [WEB3_IP, WEB3_IP6],
}
DNS_HOSTS = {
    "res.test": [WEB_IP],
    "src.test": [WEB_IP],
    "star.test": [WEB_IP],
    "x.star.test": [WEB_IP],
    "a.b.star.test": [WEB_IP],
    "deep.test": [WEB_IP],
    "x.deep.test": [WEB_IP],
    "a.b.deep.test": [WEB_IP],
    "echo.test": [ECHO_IP],
    "ws.test": [ECHO_IP],
    "private.test": [PRIVATE_IP],
    "metadata.test": [METADATA_IP],
    "loopback.test": ["127.0.0.1"],
    "own.test": [GW_POD_IP],
}

# Names on the server certificate (curl checks them, so every name a test
# reaches through an allowed flow must be here).
CERT_NAMES = [
    "allowed.test", "*.allowed.test", "other.test", "denied.test", "res.test",
    "src.test", "x.star.test", "a.b.star.test", "star.test", "x.deep.test",
    "a.b.deep.test", "deep.test", "nope.test", "private.test", "metadata.test",
]

BIG_SIZE = 64 * 1024 * 1024
SLOW_SIZE = 384 * 1024
SLOW_RATE = "128k"

_live_worlds = []
_counter = [0]


def run(cmd, check=True, timeout=30, **kw):
    """Runs a command, returns CompletedProcess; raises with its output on failure."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (p.returncode, " ".join(cmd), p.stdout, p.stderr))
    return p


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_netns_pids(ns):
    p = run(["ip", "netns", "pids", ns], check=False)
    for tok in p.stdout.split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass


def _delete_netns(ns):
    # A surviving process keeps a deleted namespace alive: kill first.
    for _ in range(3):
        _kill_netns_pids(ns)
        if not run(["ip", "netns", "pids", ns], check=False).stdout.split():
            break
        time.sleep(0.1)
    run(["ip", "netns", "del", ns], check=False)


def remove_stale():
    """Removes namespaces and temp dirs left by runs whose process is gone."""
    p = run(["ip", "netns", "list"], check=False)
    for line in p.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = TAG_RE.match(name)
        if m and (int(m.group(1)) != os.getpid()) and not _pid_alive(int(m.group(1))):
            _delete_netns(name)
    tmp = tempfile.gettempdir()
    for entry in os.listdir(tmp):
        m = re.match(r"^" + PREFIX + r"(\d+)x\d+\.", entry)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(tmp, entry), ignore_errors=True)


def _stop_popen(p, term_wait=3.0):
    if p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=term_wait)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
        except ProcessLookupError:
            pass


def addr(ip, port):
    """ip:port as the access log writes it ([ip]:port for IPv6)."""
    return "[%s]:%d" % (ip, port) if ":" in ip else "%s:%d" % (ip, port)


class World:
    """The three namespaces, interception rules and servers.

    interception: "redirect" (nat REDIRECT to :15001), "tproxy" (mangle TPROXY
    to :15002) or None (plain routing; used to check the world itself).
    """

    def __init__(self, interception="redirect"):
        _counter[0] += 1
        self.tag = "%s%dx%d" % (PREFIX, os.getpid(), _counter[0])
        self.pod = self.tag + "-pod"
        self.gw = self.tag + "-gw"
        self.inet = self.tag + "-inet"
        self.interception = None
        self.want_interception = interception
        self.dir = None
        self.procs = {}  # name -> Popen of daemons we started
        self._namespaces = []
        self._big_lock = threading.Lock()
        self.big_sha256 = None
        self.slow_sha256 = None

    # ---- lifecycle -------------------------------------------------------

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        if os.geteuid() != 0:
            raise RuntimeError("the integration world needs root (network namespaces, iptables)")
        remove_stale()
        _live_worlds.append(self)
        try:
            self.dir = tempfile.mkdtemp(prefix=self.tag + ".")
            self._make_namespaces()
            self.set_interception(self.want_interception)
            self._make_certs()
            self._make_content()
            self._start_nginx()
            self._start_dnsmasq()
            self._start_servers()
            self._start_nghttpd()
            self._wait_servers_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self):
        """Stops every daemon and removes the namespaces; safe to call twice."""
        for name in list(self.procs):
            p = self.procs.pop(name)
            try:
                _stop_popen(p)
            except Exception:
                pass
            for f in ("stdout", "stderr", "stdin"):
                s = getattr(p, f, None)
                if s:
                    try:
                        s.close()
                    except Exception:
                        pass
        for ns in reversed(self._namespaces):
            _delete_netns(ns)
        self._namespaces = []
        if self.dir and not os.environ.get("EGRESSD_IT_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        if self in _live_worlds:
            _live_worlds.remove(self)

    # ---- building ----------------------------------------------------------

    def _ns(self, ns, *cmd, check=True, timeout=30):
        return run(["ip", "netns", "exec", ns] + list(cmd), check=check, timeout=timeout)

    def _make_namespaces(self):
        for ns in (self.pod, self.gw, self.inet):
            run(["ip", "netns", "add", ns])
            self._namespaces.append(ns)
            # No duplicate address detection anywhere: addresses usable at once.
            self._ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0",
                     "net.ipv6.conf.default.accept_dad=0")
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", self.gw, "link", "add", "gw-pod", "type", "veth", "peer", "name", "eth0", "netns", self.pod])
        run(["ip", "-n", self.gw, "link", "add", "gw-inet", "type", "veth", "peer", "name", "eth0", "netns", self.inet])

        def addrs(ns, dev, v4, v6):
            for a in v4:
                run(["ip", "-n", ns, "addr", "add", a, "dev", dev])
            for a in v6:
                run(["ip", "-n", ns, "-6", "addr", "add", a, "dev", dev, "nodad"])
            run(["ip", "-n", ns, "link", "set", dev, "up"])

        addrs(self.pod, "eth0", [POD_IP + "/24", POD_IP2 + "/24"], [POD_IP6 + "/64"])
        # The second address only when asked for (--interface): deprecated,
        # so the kernel never picks it as a default source.
        run(["ip", "-n", self.pod, "-6", "addr", "add", POD_IP6_2 + "/64", "dev", "eth0", "nodad", "preferred_lft", "0"])
        addrs(self.gw, "gw-pod", [GW_POD_IP + "/24"], [GW_POD_IP6 + "/64"])
        addrs(self.gw, "gw-inet", [GW_INET_IP + "/24"], [GW_INET_IP6 + "/64"])
        addrs(self.inet, "eth0", [ip + "/24" for ip in INET_IPS], [ip + "/64" for ip in INET_IPS6])
        run(["ip", "-n", self.pod, "route", "add", "default", "via", GW_POD_IP])
        run(["ip", "-n", self.pod, "-6", "route", "add", "default", "via", GW_POD_IP6])
        run(["ip", "-n", self.inet, "route", "add", "default", "via", GW_INET_IP])
        run(["ip", "-n", self.inet, "-6", "route", "add", "default", "via", GW_INET_IP6])
        self._ns(self.gw, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
                 "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0",
                 "net.ipv4.conf.gw-pod.rp_filter=0")

    def set_interception(self, mode):
        """Installs the interception rules of `mode` in gw (replacing any)."""
        if mode not in (None, "redirect", "tproxy"):
            raise ValueError("interception must be None, 'redirect' or 'tproxy'")
        for tool in ("iptables", "ip6tables"):
            self._ns(self.gw, tool, "-t", "nat", "-F", "PREROUTING")
        self._ns(self.gw, "sh", TPROXY_RULES, "remove")
        if mode == "redirect":
            for tool in ("iptables", "ip6tables"):
                self._ns(self.gw, tool, "-t", "nat", "-A", "PREROUTING", "-i", "gw-pod", "-p", "tcp",
                         "-j", "REDIRECT", "--to-ports", str(REDIRECT_PORT))
        elif mode == "tproxy":
            # The shipped script of the tproxy-egress-nodes overlay.
            self._ns(self.gw, "sh", TPROXY_RULES, "install", "--in-interface", "gw-pod",
                     "--port", str(TPROXY_PORT), "--mark", "1", "--table", "100")
        self.interception = mode

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def _make_certs(self):
        d = self.path("pki")
        os.makedirs(d)
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run(["openssl", "req", "-x509"] + ec + [
            "-keyout", d + "/ca.key", "-out", d + "/ca.pem", "-days", "3", "-subj", "/CN=egressd integration CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        run(["openssl", "req", "-new"] + ec + [
            "-keyout", d + "/leaf.key", "-out", d + "/leaf.csr", "-subj", "/CN=allowed.test"])
        san = ",".join(["DNS:" + n for n in CERT_NAMES] + ["IP:" + ip for ip in (WEB_IP, WEB2_IP, WEB3_IP)])
        with open(d + "/ext.cnf", "w") as f:
            f.write("subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n" % san)
        run(["openssl", "x509", "-req", "-in", d + "/leaf.csr", "-CA", d + "/ca.pem", "-CAkey", d + "/ca.key",
             "-CAcreateserial", "-out", d + "/leaf.pem", "-days", "3", "-extfile", d + "/ext.cnf"])
        self.ca = d + "/ca.pem"

    def _make_content(self):
        www = self.path("www")
        os.makedirs(www + "/slow")
        data = os.urandom(SLOW_SIZE)
        with open(www + "/slow/blob", "wb") as f:
            f.write(data)
        self.slow_sha256 = hashlib.sha256(data).hexdigest()

    def ensure_big_file(self):
        """Writes www/big.bin (64 MiB of random bytes) once; returns its sha256."""
        with self._big_lock:
            if self.big_sha256 is None:
                h = hashlib.sha256()
                with open(self.path("www", "big.bin"), "wb") as f:
                    left = BIG_SIZE
                    while left:
                        chunk = os.urandom(min(left, 1 << 20))
                        h.update(chunk)
                        f.write(chunk)
                        left -= len(chunk)
                self.big_sha256 = h.hexdigest()
        return self.big_sha256

    def _popen(self, name, ns, cmd, stdout=None, stdin=None):
        out = stdout if stdout is not None else open(self.path(name + ".out"), "wb")
        err = open(self.path(name + ".err"), "wb")
        prefix = ["ip", "netns", "exec", ns] if ns else []  # no ns: the command joins one itself
        p = subprocess.Popen(prefix + cmd, stdout=out, stderr=err, stdin=stdin or subprocess.DEVNULL)
        if stdout is None:
            out.close()
        err.close()
        self.procs[name] = p
        return p

    def _start_nginx(self):
        d = self.dir
        conf = """
user root root;
worker_processes 1;
worker_rlimit_nofile 8192;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  log_format withhost '$host $request_method $request_uri $status';
  access_log {d}/nginx-access.log withhost;
  client_body_temp_path {d}/ngx-body;
  proxy_temp_path {d}/ngx-proxy;
  fastcgi_temp_path {d}/ngx-fastcgi;
  uwsgi_temp_path {d}/ngx-uwsgi;
  scgi_temp_path {d}/ngx-scgi;
  default_type application/octet-stream;
  sendfile on;
  keepalive_timeout 60;
  keepalive_requests 10000;
  server {{
    listen 80 default_server;
    listen [::]:80 default_server;
    listen 443 ssl default_server;
    listen [::]:443 ssl default_server;
    server_name _;
    ssl_certificate {d}/pki/leaf.pem;
    ssl_certificate_key {d}/pki/leaf.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    root {d}/www;
    add_header X-Server-Addr $server_addr always;
    location = / {{ return 200 "server=$server_addr host=$host\\n"; }}
    location /slow/ {{ limit_rate {rate}; }}
    location = /204 {{ return 204; }}
    location /put/ {{ dav_methods PUT; create_full_put_path on; client_max_body_size 256m; }}
  }}
}}
""".format(d=d, rate=SLOW_RATE)
        with open(self.path("nginx.conf"), "w") as f:
            f.write(conf)
        self._popen("nginx", self.inet, ["nginx", "-p", d, "-e", d + "/nginx-error.log", "-c", d + "/nginx.conf",
                                         "-g", "daemon off;"])

    def _start_dnsmasq(self):
        cmd = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
               "--bind-interfaces", "--listen-address=" + DNS_IP, "--pid-file=" + self.path("dnsmasq.pid"),
               "--log-facility=" + self.path("dnsmasq.log"), "--log-queries", "--local=/test/", "--user=root"]
        for name, ips in DNS_DOMAINS.items():
            for ip in ips:
                cmd.append("--address=/%s/%s" % (name, ip))
        for name, ips in DNS_HOSTS.items():
            cmd.append("--host-record=%s,%s" % (name, ",".join(ips)))
        cmd.append("--server=/%s/%s#%d" % (REBIND_NAME, DNS_IP, REBIND_DNS_PORT))
        self._popen("dnsmasq", self.inet, cmd)

    def _start_servers(self):
        self._popen("servers", self.inet, [
            PYTHON, os.path.join(HERE, "servers.py"),
            "--echo", addr(ECHO_IP, ECHO_PORT), "--echo", addr(ECHO_IP, ECHO_PORT_DENIED),
            "--echo", addr(ECHO_IP6, ECHO_PORT),
            "--banner", addr(BANNER_IP, BANNER_PORT), "--banner-text", BANNER.decode(),
            "--upgrade", addr(ECHO_IP, UPGRADE_PORT),
            "--rebind-dns", addr(DNS_IP, REBIND_DNS_PORT), "--rebind", "%s=%s,%s" % (REBIND_NAME, WEB_IP, METADATA_IP),
            "--ready-file", self.path("servers.ready")])

    def _start_nghttpd(self):
        """An h2c origin (HTTP/2 with prior knowledge, no TLS). -v logs every
        frame it receives (line-buffered), so tests can see which
        :authority values reached it."""
        os.makedirs(self.path("h2c-www"), exist_ok=True)
        with open(self.path("h2c-www", "index.html"), "w") as f:
            f.write("h2c origin\n")
        self._popen("nghttpd", self.inet, ["stdbuf", "-oL", "nghttpd", "--no-tls", "-v", "--address=" + WEB_IP,
                                           "-d", self.path("h2c-www"), str(H2C_PORT)])

    def nghttpd_authorities(self):
        """The :authority of every request nghttpd has received so far, in order."""
        try:
            with open(self.path("nghttpd.out"), "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        return re.findall(r"recv \(stream_id=\d+\) :authority: (\S+)", text)

    def _listening(self, ns, port):
        out = self._ns(ns, "ss", "-Hltn", "sport = :%d" % port, check=False).stdout
        return bool(out.strip())

    def _wait_servers_ready(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError("%s exited with %s at start-up:\n%s" % (name, p.returncode, self.tail(name + ".err")))
            if (os.path.exists(self.path("servers.ready")) and self._listening(self.inet, 443)
                    and self._listening(self.inet, 80) and self._listening(self.inet, H2C_PORT)
                    and self._dns_ready()):
                return
            time.sleep(0.05)
        raise RuntimeError("servers not ready after %ss:\n%s\n%s" % (
            timeout, self.tail("nginx-error.log"), self.tail("dnsmasq.err")))

    def _dns_ready(self):
        out = self._ns(self.inet, "ss", "-Hlun", "sport = :53", check=False).stdout
        return DNS_IP in out

    # ---- helpers for tests --------------------------------------------------

    def tail(self, name, lines=30):
        """The last lines of a file in the world's directory ('' when absent)."""
        try:
            with open(self.path(name), "rb") as f:
                data = f.read()[-20000:]
        except OSError:
            return ""
        text = data.decode("utf-8", "replace").splitlines()[-lines:]
        return "\n".join(text)

    def ns_run(self, ns, cmd, timeout=30, **kw):
        return subprocess.run(["ip", "netns", "exec", ns] + list(cmd), capture_output=True,
                              timeout=timeout, **kw)

    def pod_run(self, cmd, timeout=30, **kw):
        """Runs cmd in the pod; returns CompletedProcess (bytes output)."""
        return self.ns_run(self.pod, cmd, timeout=timeout, **kw)

    def pod_popen(self, cmd, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.pod] + list(cmd), **kw)

    def curl(self, url, ip=None, extra=(), timeout=15, src=None, insecure=False, output=None):
        """curl from the pod. ip: the address to connect to (--resolve), so no
        DNS is involved on the client side. Returns Response(rc, status,
        headers, body, stderr)."""
        u = urllib.parse.urlsplit(url)
        port = u.port or (443 if u.scheme == "https" else 80)
        cmd = ["curl", "-sS", "--http1.1", "--max-time", str(timeout), "--cacert", self.ca, "-D", "-"]
        if ip is not None:
            cmd += ["--resolve", "%s:%d:%s" % (u.hostname, port, ("[%s]" % ip) if ":" in ip else ip)]
        if src is not None:
            cmd += ["--interface", src]
        if insecure:
            cmd += ["-k"]
        if output is not None:
            cmd += ["-o", output]
        cmd += list(extra) + [url]
        p = self.pod_run(cmd, timeout=timeout + 10)
        return Response.parse(p.returncode, p.stdout, p.stderr)

    def client(self, *args, timeout=60, ns=None):
        """Runs client.py in the pod (or ns); returns its JSON result."""
        p = self.ns_run(ns or self.pod, [PYTHON, os.path.join(HERE, "client.py")] + [str(a) for a in args],
                        timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("client.py %s failed (%d): %s" % (" ".join(map(str, args)), p.returncode,
                                                                    p.stderr.decode("utf-8", "replace")))
        try:
            return json.loads(p.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise AssertionError("client.py printed no JSON: %r %r" % (p.stdout, p.stderr))

    def client_popen(self, *args):
        """Starts client.py in the pod with pipes (for flows held open)."""
        return self.pod_popen([PYTHON, os.path.join(HERE, "client.py")] + [str(a) for a in args],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


class Response:
    """An HTTP response as curl -D - printed it."""

    def __init__(self, rc, status, headers, body, stderr):
        self.rc, self.status, self.headers, self.body, self.stderr = rc, status, headers, body, stderr

    @staticmethod
    def parse(rc, out, err):
        status, headers, body = None, {}, out
        # -D - prints every header block (100 Continue etc.) before the body.
        while body.startswith(b"HTTP/"):
            head, sep, rest = body.partition(b"\r\n\r\n")
            if not sep:
                break
            lines = head.decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split()[1])
            except (IndexError, ValueError):
                break
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            body = rest
        return Response(rc, status, headers, body, err.decode("utf-8", "replace"))

    def __repr__(self):
        return "Response(rc=%s status=%s headers=%s body=%r stderr=%r)" % (
            self.rc, self.status, self.headers, self.body[:200], self.stderr[-300:])


# ---- the gateway -------------------------------------------------------------

def base_config(access_log, rules, interception="redirect", default="deny", mode="enforce", **over):
    """A gateway config (a dict; written as JSON, which is YAML) for `world`.

    Listeners: redirect on 0.0.0.0:15001 and [::]:15001 (IPv6 only), or
    tproxy on 0.0.0.0:15002 and [::]:15002. Short timeouts keep tests fast.
    `over` replaces top-level sections (shallow merge of dicts)."""
    if interception == "tproxy":
        listeners = [{"name": "tproxy", "address": "0.0.0.0:%d" % TPROXY_PORT, "mode": "tproxy"},
                     {"name": "tproxy6", "address": "[::]:%d" % TPROXY_PORT, "mode": "tproxy"}]
    else:
        listeners = [{"name": "transparent", "address": "0.0.0.0:%d" % REDIRECT_PORT, "mode": "redirect"},
                     {"name": "transparent6", "address": "[::]:%d" % REDIRECT_PORT, "mode": "redirect"}]
    cfg = {
        "listeners": listeners,
        "admin": {"address": ADMIN},
        "access_log": {"path": access_log, "on_full": "block"},
        "workers": 2,
        "timeouts": {"sniff": "2s", "connect": "2s", "idle": "60s", "drain_delay": "1s", "drain": "3s"},
        "dns": {"servers": [DNS_IP], "timeout": "1s"},
        "tls": {"require_sni": True, "ech": "outer"},
        "policy": {"mode": mode, "default": default, "rules": rules},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k] = dict(cfg[k], **v)
        else:
            cfg[k] = v
    return cfg


class AccessLog:
    """Reads the gateway's access log file (JSON lines) as it grows."""

    def __init__(self, path):
        self.path = path

    def records(self):
        """Every complete record so far; a line that is not a JSON object fails."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        out = []
        lines = data.split(b"\n")
        for raw in lines[:-1]:  # the last piece is an incomplete line (or b"")
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise AssertionError("access log line is not valid UTF-8 JSON (%s): %r" % (e, raw[:300]))
            if not isinstance(rec, dict):
                raise AssertionError("access log line is not a JSON object: %r" % raw[:300])
            out.append(rec)
        return out

    def mark(self):
        """A position: records after it are those written later."""
        return len(self.records())

    def find(self, pred, since=0):
        return [r for r in self.records()[since:] if pred(r)]

    def wait(self, pred, since=0, timeout=10, count=1, what="record"):
        """Waits until `count` records after `since` satisfy pred; returns them
        (one record when count == 1)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.find(pred, since)
            if len(found) >= count:
                return found[0] if count == 1 else found
            if time.monotonic() > deadline:
                raise AssertionError("no %s in the access log after %ss (%d of %d found); last records:\n%s" % (
                    what, timeout, len(found), count, self.tail(since)))
            time.sleep(0.05)

    def tail(self, since=0, lines=15):
        try:
            recs = self.records()[since:]
        except AssertionError as e:
            return str(e)
        return "\n".join(json.dumps(r) for r in recs[-lines:])


def match(**want):
    """A record predicate: every given field equals the given value."""
    return lambda r: all(r.get(k) == v for k, v in want.items())


METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


class Metrics(dict):
    """Prometheus text exposition parsed into {(name, ((label, value), ...)): float}."""

    @staticmethod
    def parse(text):
        m = Metrics()
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            g = METRIC_LINE.match(line)
            if not g:
                raise AssertionError("unparseable metrics line: %r" % line)
            labels = []
            body = g.group(3) or ""
            pos = 0
            while pos < len(body):
                lm = LABEL.match(body, pos)
                if not lm:
                    raise AssertionError("unparseable labels in metrics line: %r" % line)
                labels.append((lm.group(1), lm.group(2).encode().decode("unicode_escape")))
                pos = lm.end()
            m[(g.group(1), tuple(sorted(labels)))] = float(g.group(4))
        return m

    def sum(self, name, **labels):
        """Sum over the series of `name` whose labels include `labels`."""
        total = 0.0
        for (n, ls), v in self.items():
            if n == name:
                d = dict(ls)
                if all(d.get(k) == str(val) for k, val in labels.items()):
                    total += v
        return total

    def has(self, name):
        return any(n == name for n, _ in self)


class Gateway:
    """One egressd process in the gw namespace."""

    def __init__(self, world, egressd, config_fn, name="egressd", directory=None):
        """config_fn(access_log_path) -> config dict. The config and the
        access log go in `directory` (default: the world's)."""
        _counter[0] += 1
        self.world = world
        self.egressd = egressd
        self.name = "%s-%d" % (name, _counter[0])
        directory = directory or world.dir
        self.log = AccessLog(os.path.join(directory, self.name + ".access.log"))
        self.config = config_fn(self.log.path)
        self.config_path = os.path.join(directory, self.name + ".yaml")
        with open(self.config_path, "w") as f:
            json.dump(self.config, f, indent=2)
        self.proc = None
        self.returncode = None

    def command(self):
        """The command line that runs this egressd (in the gw namespace)."""
        if not self.egressd or not os.path.exists(self.egressd):
            raise RuntimeError("egressd binary not found: %r (pass --egressd)" % self.egressd)
        return [self.egressd, "--config", self.config_path]

    # The command joins the gw namespace itself (False: it is run with `ip
    # netns exec`).
    joins_namespace = False

    def start(self, ready_timeout=15):
        self.proc = self.world._popen(self.name, None if self.joins_namespace else self.world.gw, self.command())
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("egressd exited with %s at start-up:\n%s" % (self.proc.returncode, self.stderr_tail()))
            try:
                if self.admin_get("/readyz")[0] == 200:
                    return self
            except Exception:
                pass
            time.sleep(0.05)
        raise RuntimeError("egressd not ready after %ss:\n%s" % (ready_timeout, self.stderr_tail()))

    @property
    def pid(self):
        return self.proc.pid  # ip netns exec execs egressd: same pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_tail(self, lines=40):
        return "\n".join(x for x in (self.world.tail(self.name + ".err", lines), self.world.tail(self.name + ".out", lines)) if x)

    def admin_get(self, path, timeout=5):
        """GET on the admin address from inside gw; returns (status, body str)."""
        p = self.world.ns_run(self.world.gw, ["curl", "-sS", "--max-time", str(timeout), "-o", "-",
                                              "-w", "\n%{http_code}", "http://%s%s" % (ADMIN, path)],
                              timeout=timeout + 5)
        out = p.stdout.decode("utf-8", "replace")
        body, _, code = out.rpartition("\n")
        try:
            return int(code), body
        except ValueError:
            return 0, out

    def metrics_text(self):
        status, body = self.admin_get("/metrics")
        if status != 200:
            raise AssertionError("GET /metrics returned %s: %s" % (status, body[:300]))
        return body

    def metrics(self):
        return Metrics.parse(self.metrics_text())

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=None):
        """SIGTERM, wait for exit; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            t = self.config["timeouts"]
            timeout = timeout or (_secs(t["drain_delay"]) + _secs(t["drain"]) + 10)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self.returncode = None
                return None
        self.returncode = self.proc.returncode
        self.world.procs.pop(self.name, None)
        return self.returncode

    def diagnostics(self):
        return "---- egressd stderr (%s) ----\n%s\n---- access log tail ----\n%s" % (
            self.name, self.stderr_tail(), self.log.tail())


def _secs(d):
    m = re.match(r"^(\d+)(ms|s|m|h)$", d)
    n = int(m.group(1))
    return {"ms": n / 1000.0, "s": n, "m": n * 60, "h": n * 3600}[m.group(2)]


@atexit.register
def _cleanup_all():
    for w in list(_live_worlds):
        w.stop()
