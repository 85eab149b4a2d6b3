"""The soak's traffic (test_soak.py), run in the pod until a stop file
appears. Python 3 standard library, client.py, and nghttp for h2c.

  soak_client.py SPEC_JSON OUT_FILE

SPEC_JSON: {"stop_file", "ca", "kinds": {kind: {"src", "dst", "threads",
"pause"}}}. Every thread of a kind runs flows of that kind one after the
other, `pause` seconds apart, until the stop file exists; each flow in
progress then finishes. Kinds:

  echo       raw TCP to the echo server: 1 to 32 KiB, half-close, read all
  tls        HTTPS GET / with SNI allowed.test, Connection: close
  keepalive  HTTP/1.1, five GETs on one connection (the last closes it)
  keepalive_deny  two GETs for allowed.test, then one for denied.test on
             the same connection: the gateway answers that one 403, closes
  slow       HTTP GET /slow/blob, which nginx sends at 128 KiB/s (3 s)
  h2c        nghttp, three streams on one h2c connection (prior knowledge;
             nghttp cannot bind a source, so the two h2c kinds own the
             pod's default address and their flows are counted, not matched)
  h2c_deny   nghttp, one stream for denied.test: 403 on that stream
  deny_tls   TLS with SNI denied.test: refused by the policy
  deny_port  TCP to a port no rule allows: refused
  slowloris  a ClientHello's first 5 bytes, then one byte every 0.5 s
             until the gateway gives up on it (timeouts.sniff)
  slowhead   an HTTP request head one byte every 0.5 s, likewise

Each flow is one JSON line in OUT_FILE: {"kind", "local", "sent",
"received", "ok", "clean", "why"}: bytes written and read on the socket
(None when not known: the HTTP/1 request side is relayed request by request,
a 403 of the gateway's own is no relayed byte, and h2c goes through nghttp), whether the flow ended as the kind expects
(`ok`) and whether every byte was read to a clean EOF (`clean`).
"""

import json
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import client as C  # noqa: E402

spec = json.loads(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
out_lock = threading.Lock()


def stopped():
    return os.path.exists(spec["stop_file"])


def read_response(s, buf):
    """One HTTP/1.1 response with a Content-Length from s (buf: bytes read
    ahead); returns (status, body, rest) or raises ValueError."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise ValueError("EOF in the head")
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        d = s.recv(65536)
        if not d:
            raise ValueError("EOF in the body")
        rest += d
    return status, rest[:length], rest[length:]


def to_eof(s, timeout=10):
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except OSError:
        return False


def flow_echo(s, k):
    data = random.randbytes(random.randint(1, 32768))
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got, how = C.read_all(s, 15)
    return got == data and how == "eof", "got %d of %d bytes, %s" % (len(got), len(data), how)


def flow_tls(s, k):
    conn = C.TlsConn(s, ssl.create_default_context(cafile=spec["ca"]), "allowed.test")
    conn.handshake()
    conn.write(C.get_request("/", "allowed.test", keep_alive=False))
    status, _, _ = C.read_http(conn)
    eof = to_eof(s)
    return status == 200 and eof, "status %s, eof %s" % (status, eof)


def flow_keepalive(s, k):
    buf = b""
    for i in range(5):
        last = i == 4
        s.sendall(C.get_request("/", "allowed.test", keep_alive=not last))
        status, _, buf = read_response(s, buf)
        if status != 200:
            return False, "request %d: status %s" % (i, status)
    eof = to_eof(s)
    return eof and not buf, "eof %s, %d bytes after the last response" % (eof, len(buf))


def flow_keepalive_deny(s, k):
    buf = b""
    for i in range(2):
        s.sendall(C.get_request("/", "allowed.test", keep_alive=True))
        status, _, buf = read_response(s, buf)
        if status != 200:
            return False, "request %d: status %s" % (i, status)
    s.sendall(C.get_request("/", "denied.test", keep_alive=True))
    status, _, buf = read_response(s, buf)
    eof = to_eof(s)
    return status == 403 and eof, "denied.test: status %s, eof %s" % (status, eof)


def flow_slow(s, k):
    s.sendall(C.get_request("/slow/blob", "allowed.test", keep_alive=False))
    status, body, rest = read_response(s, b"")
    eof = to_eof(s)
    return status == 200 and len(body) == 384 * 1024 and eof, "status %s, %d body bytes" % (status, len(body))


def flow_deny_tls(s, k):
    conn = C.TlsConn(s, ssl.create_default_context(cafile=spec["ca"]), "denied.test")
    try:
        conn.handshake()
    except (ssl.SSLError, OSError):
        return True, None
    return False, "the handshake for denied.test succeeded"


def flow_deny_port(s, k):
    s.sendall(b"x\n")
    got, how = C.read_all(s, 10)
    return not got and how in ("eof", "reset"), "got %r, %s" % (got[:20], how)


def dribble(s, first, rest):
    s.sendall(first)
    for b in rest:
        time.sleep(0.5)
        try:
            s.sendall(bytes([b]))
        except OSError:
            break
    got, how = C.read_all(s, 10)
    return how in ("eof", "reset"), "got %d bytes, %s" % (len(got), how)


def flow_slowloris(s, k):
    hello = C.client_hello(sni=b"allowed.test")
    return dribble(s, hello[:5], hello[5:])


def flow_slowhead(s, k):
    return dribble(s, b"G", b"ET / HTTP/1.1\r\nHost: allowed.test\r\nUser-Agent: " + b"x" * 200 + b"\r\n\r\n")


FLOWS = {"echo": flow_echo, "tls": flow_tls, "keepalive": flow_keepalive, "keepalive_deny": flow_keepalive_deny,
         "slow": flow_slow,
         "deny_tls": flow_deny_tls, "deny_port": flow_deny_port, "slowloris": flow_slowloris,
         "slowhead": flow_slowhead}
# Byte counts the records are checked against; None: not known to the client.
SENT_KNOWN = {"echo", "tls", "deny_tls", "deny_port", "slowloris", "slowhead"}


def write(rec):
    with out_lock:
        out.write(json.dumps(rec) + "\n")


def one(kind, k):
    rec = {"kind": kind, "local": None, "sent": None, "received": None, "ok": False, "clean": False, "why": None}
    try:
        raw = C.connect(k["dst"], k["src"], timeout=15)
    except OSError as e:
        rec["why"] = "connect: %s" % e
        return rec
    rec["local"] = C.local(raw)
    s = C.Counting(raw)
    try:
        rec["ok"], rec["why"] = FLOWS[kind](s, k)
        rec["clean"] = rec["ok"] and kind not in ("slowloris", "slowhead", "deny_tls", "deny_port")
    except Exception as e:  # noqa: BLE001 -- a bug here is a failed flow, not a lost one
        rec["why"] = "%s: %s" % (type(e).__name__, e)
    finally:
        rec["sent"] = s.sent if kind in SENT_KNOWN else None
        rec["received"] = s.recvd
        raw.close()
    if rec["ok"]:
        rec["why"] = None
    return rec


def one_h2c(kind, k):
    """nghttp: three streams for allowed.test (h2c), or one for denied.test
    (h2c_deny), which the gateway answers 403 on that stream."""
    allowed = kind == "h2c"
    authority = "%s:%s" % ("allowed.test" if allowed else "denied.test", k["dst"].rpartition(":")[2])
    p = subprocess.run(["nghttp", "-v", "-m", "3" if allowed else "1", "-H", ":authority: " + authority,
                        "http://%s/" % k["dst"]], capture_output=True, timeout=30)
    text = p.stdout.decode("latin-1")
    ok = p.returncode == 0 and (text.count(":status: 200") == 3 if allowed else ":status: 403" in text)
    return {"kind": kind, "local": None, "sent": None, "received": None, "ok": ok, "clean": ok,
            "why": None if ok else "nghttp exit %d: %s" % (p.returncode, (text + p.stderr.decode("latin-1"))[-300:])}


def worker(kind, k):
    while not stopped():
        write(one_h2c(kind, k) if kind.startswith("h2c") else one(kind, k))
        time.sleep(k.get("pause", 0.02))


threads = []
for kind, k in spec["kinds"].items():
    for _ in range(k.get("threads", 1)):
        t = threading.Thread(target=worker, args=(kind, k), daemon=True)
        t.start()
        threads.append(t)
print("started", flush=True)
for t in threads:
    t.join()
out.close()
