"""Crafted-bytes clients run inside the pod namespace.

Each subcommand prints one JSON object (the last line of stdout); `hold` and
`many` also print an intermediate line and then wait for a command on stdin.

  hello  --dst IP:PORT [--sni NAME | --sni-hex HEX | --no-sni] [--ech]
         [--alpn h2,http/1.1] [--byte-delay S] [--malformed]
         crafted TLS ClientHello; reports what came back (alert, handshake)
  raw    --dst IP:PORT --send-hex HEX [--byte-delay S]     arbitrary bytes
  slow   --dst IP:PORT [--interval S]   slowloris: one byte of a ClientHello
         per interval until the peer closes
  banner --dst IP:PORT       server-first: time until the first bytes arrive
  tls    --dst IP:PORT --sni NAME --ca FILE [--path P] [--dribble S]
         real TLS (Python ssl) + HTTP/1.1 GET; --dribble sends the first
         flight (the ClientHello) one byte at a time
  tls-seq --dst IP:PORT --sni NAME --ca FILE --n N [--requests K]
         N TLS connections one after the other, K kept-alive GETs on each
  hold   --dst IP:PORT [--defer]   echo round trip, print, then on stdin:
         "close" closes, "wait" waits for the peer to close; --defer: print
         {"ready"} and connect only after a line on stdin
  many   --dst IP:PORT --sni NAME --ca FILE --n N   N concurrent TLS GETs kept
         open until a line arrives on stdin
  dns    --server IP --query NAME:TYPE ...   DNS queries over UDP (TYPE A|AAAA)

Every subcommand takes --src IP to choose the source address.
"""

import argparse
import hashlib
import json
import os
import select
import socket
import ssl
import struct
import sys
import threading
import time


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def connect(dst, src=None, timeout=10):
    host, port = parse_addr(dst)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    if src:
        s.bind((src, 0))
    s.connect((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def local(s):
    a = s.getsockname()
    return "[%s]:%d" % (a[0], a[1]) if ":" in a[0] else "%s:%d" % (a[0], a[1])


class Counting:
    """A socket that counts the bytes written and read through it (for the
    accounting of test_stress.py and the soak)."""

    def __init__(self, s):
        self.s, self.sent, self.recvd = s, 0, 0

    def sendall(self, d):
        self.s.sendall(d)
        self.sent += len(d)

    def send(self, d):
        n = self.s.send(d)
        self.sent += n
        return n

    def recv(self, n):
        d = self.s.recv(n)
        self.recvd += len(d)
        return d

    def __getattr__(self, k):
        return getattr(self.s, k)


def send(s, data, byte_delay=0.0):
    if byte_delay <= 0:
        s.sendall(data)
        return
    for i in range(len(data)):
        s.sendall(data[i:i + 1])
        time.sleep(byte_delay)


def read_all(s, timeout, done=None):
    """Reads until EOF, reset, timeout or done(buf); returns (bytes, how),
    how being "eof", "reset", "timeout" or "done"."""
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        if done is not None and done(buf):
            return buf, "done"
        left = deadline - time.monotonic()
        if left <= 0:
            return buf, "timeout"
        s.settimeout(left)
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            return buf, "timeout"
        except ConnectionResetError:
            return buf, "reset"
        if not chunk:
            return buf, "eof"
        buf += chunk


# ---- TLS ClientHello builder (RFC 8446 4.1.2; TLS 1.2-compatible) -----------

def u8(n):
    return struct.pack("!B", n)


def u16(n):
    return struct.pack("!H", n)


def u24(n):
    return struct.pack("!I", n)[1:]


def ext(kind, body):
    return u16(kind) + u16(len(body)) + body


def client_hello(sni=None, ech=False, alpn=None, malformed=False):
    """A ClientHello record an OpenSSL server answers with a TLS 1.2 ServerHello.

    sni: bytes or None (no server_name extension). ech: add an
    encrypted_client_hello (0xfe0d) outer extension with random payload.
    malformed: a session_id length longer than the message (a parser must
    refuse it, not wait for more bytes)."""
    exts = b""
    if sni is not None:
        entry = b"\x00" + u16(len(sni)) + sni
        exts += ext(0x0000, u16(len(entry)) + entry)
    exts += ext(0x000a, u16(4) + b"\x00\x1d\x00\x17")  # supported_groups x25519, P-256
    exts += ext(0x000b, b"\x01\x00")  # ec_point_formats: uncompressed
    exts += ext(0x000d, u16(8) + b"\x04\x03\x08\x04\x04\x01\x05\x01")  # signature_algorithms
    exts += ext(0xff01, b"\x00")  # renegotiation_info
    if alpn:
        names = b"".join(u8(len(a)) + a for a in alpn)
        exts += ext(0x0010, u16(len(names)) + names)
    if ech:
        # ECHClientHello outer: type 0, HPKE suite (kdf 1, aead 1), config id,
        # enc (32 bytes), payload.
        payload = b"\x00" + u16(1) + u16(1) + b"\x2a" + u16(32) + os.urandom(32) + u16(144) + os.urandom(144)
        exts += ext(0xfe0d, payload)
    ciphers = b"\xc0\x2b\xc0\x2f\xc0\x2c\xc0\x30\x00\x9c\x00\x9d"
    if malformed:
        body = b"\x03\x03" + os.urandom(32) + b"\xff" + os.urandom(8)
    else:
        body = (b"\x03\x03" + os.urandom(32) + b"\x20" + os.urandom(32) + u16(len(ciphers)) + ciphers + b"\x01\x00"
                + u16(len(exts)) + exts)
    hs = b"\x01" + u24(len(body)) + body
    return b"\x16\x03\x01" + u16(len(hs)) + hs


def describe_tls_reply(data):
    """What a TLS client would make of the first record it got back."""
    r = {"recv_hex": data[:64].hex(), "recv_len": len(data), "alert": None, "handshake": False}
    if len(data) >= 7 and data[0] == 0x15 and data[1] == 0x03 and data[3:5] == b"\x00\x02":
        r["alert"] = [data[5], data[6]]  # level (2 = fatal), description (49 = access_denied)
    if len(data) >= 6 and data[0] == 0x16 and data[1] == 0x03 and data[5] == 0x02:
        r["handshake"] = True  # a ServerHello: the server answered
    return r


def cmd_hello(a):
    if a.no_sni:
        sni = None
    elif a.sni_hex is not None:
        sni = bytes.fromhex(a.sni_hex)
    else:
        sni = a.sni.encode()
    alpn = [x.encode() for x in a.alpn.split(",")] if a.alpn else None
    hello = client_hello(sni, ech=a.ech, alpn=alpn, malformed=a.malformed)
    t0 = time.monotonic()
    s = connect(a.dst, a.src)
    try:
        send(s, hello, a.byte_delay)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data, how = read_all(s, a.read_timeout) if not a.first_record else read_record(s, a.read_timeout)
    r = describe_tls_reply(data)
    r.update(local=local(s), sent=len(hello), closed=how, elapsed_ms=int((time.monotonic() - t0) * 1000))
    s.close()
    out(r)


def read_record(s, timeout):
    """Reads until one whole TLS record arrived (or EOF/reset/timeout)."""
    data, how = read_all(s, timeout,
                         done=lambda b: len(b) >= 5 and len(b) >= 5 + struct.unpack("!H", b[3:5])[0])
    return data, "record" if how == "done" else how


def cmd_raw(a):
    t0 = time.monotonic()
    s = connect(a.dst, a.src)
    me = local(s)
    try:
        send(s, bytes.fromhex(a.send_hex), a.byte_delay)
        if a.shut_wr:
            s.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the gateway may already have closed (limit, deny): read what came
    try:
        data, how = read_all(s, a.read_timeout)
    except OSError:
        data, how = b"", "reset"
    out({"local": me, "recv": data.decode("latin-1"), "recv_hex": data[:64].hex(), "closed": how,
         "elapsed_ms": int((time.monotonic() - t0) * 1000)})
    s.close()


def cmd_connect(a):
    """CONNECT through an explicit proxy; then, optionally, a ClientHello
    inside the tunnel (--sni / --no-sni)."""
    t0 = time.monotonic()
    s = connect(a.dst, a.src)
    me = local(s)
    r = {"local": me, "status": None, "head": "", "alert": None, "handshake": False}
    try:
        send(s, ("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (a.target, a.target)).encode())
        head, how = read_all(s, a.read_timeout, done=lambda b: b"\r\n\r\n" in b)
    except OSError:
        head, how = b"", "reset"
    text = head.decode("latin-1")
    r["head"] = text
    try:
        r["status"] = int(text.split(" ", 2)[1])
    except (IndexError, ValueError):
        pass
    if r["status"] == 200 and (a.sni or a.no_sni):
        hello = client_hello(None if a.no_sni else a.sni.encode())
        try:
            send(s, hello)
            data, how = read_record(s, a.read_timeout)
        except OSError:
            data, how = b"", "reset"
        r.update(describe_tls_reply(data))
    r.update(closed=how, elapsed_ms=int((time.monotonic() - t0) * 1000))
    s.close()
    out(r)


def cmd_slow(a):
    hello = client_hello(b"allowed.test")
    t0 = time.monotonic()
    s = connect(a.dst, a.src)
    sent, how = 0, "timeout"
    while sent < len(hello) and time.monotonic() - t0 < a.max_time:
        try:
            s.sendall(hello[sent:sent + 1])
            sent += 1
        except (BrokenPipeError, ConnectionResetError):
            how = "reset"
            break
        r, _, _ = select.select([s], [], [], a.interval)
        if r:
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                how = "reset"
                break
            if not data:
                how = "eof"
                break
    out({"local": local(s), "sent": sent, "closed": how, "closed_after_ms": int((time.monotonic() - t0) * 1000)})
    s.close()


def cmd_banner(a):
    t0 = time.monotonic()
    s = connect(a.dst, a.src)
    t1 = time.monotonic()
    s.settimeout(a.read_timeout)
    try:
        data = s.recv(4096)
    except socket.timeout:
        data = b""
    t2 = time.monotonic()
    reply = b""
    if data:
        s.sendall(b"QUIT\r\n")
        reply, _ = read_all(s, 5)
    out({"local": local(s), "banner": data.decode("latin-1"), "connect_ms": int((t1 - t0) * 1000),
         "latency_ms": int((t2 - t1) * 1000), "reply": reply.decode("latin-1")})
    s.close()


class TlsConn:
    """TLS over a plain socket through memory BIOs, so the first flight can
    be written one byte at a time."""

    def __init__(self, sock, ctx, sni, dribble=0.0):
        self.sock = sock
        self.inc = ssl.MemoryBIO()
        self.outb = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.outb, server_hostname=sni)
        self.dribble = dribble

    def _flush(self, delay=0.0):
        data = self.outb.read()
        if data:
            send(self.sock, data, delay)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            self.inc.write_eof()
        else:
            self.inc.write(chunk)

    def handshake(self):
        first = True
        while True:
            try:
                self.obj.do_handshake()
                self._flush()
                return
            except ssl.SSLWantReadError:
                self._flush(self.dribble if first else 0.0)
                first = False
                self._fill()

    def write(self, data):
        self.obj.write(data)
        self._flush()

    def read(self):
        """Some plaintext, or b'' at EOF."""
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._fill()
            except ssl.SSLZeroReturnError:
                return b""
            except ssl.SSLEOFError:
                return b""


def read_http(conn):
    """Reads one HTTP/1.1 response (Content-Length or to EOF)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.read()
        if not chunk:
            break
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(body) < n:
            chunk = conn.read()
            if not chunk:
                break
            body += chunk
    else:
        while True:
            chunk = conn.read()
            if not chunk:
                break
            body += chunk
    return status, headers, body


def close_after_eof(s, timeout=2.0):
    """Reads (and drops) what the server still sends — its close_notify,
    session tickets — until its FIN, then closes: closing with unread bytes
    would make the kernel send a RST, and the flow would end as `reset`."""
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    s.close()


def get_request(path, host, keep_alive):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n" % (
        path, host, "keep-alive" if keep_alive else "close")).encode()


def tls_get(dst, sni, ca, path="/", dribble=0.0, src=None, keep_alive=False, timeout=20):
    s = connect(dst, src, timeout)
    ctx = ssl.create_default_context(cafile=ca)
    conn = TlsConn(s, ctx, sni, dribble)
    conn.handshake()
    conn.write(get_request(path, sni, keep_alive))
    status, headers, body = read_http(conn)
    return s, conn, status, headers, body


def cmd_tls(a):
    t0 = time.monotonic()
    r = {}
    try:
        s, conn, status, headers, body = tls_get(a.dst, a.sni, a.ca, a.path, a.dribble, a.src)
        r.update(local=local(s), status=status, headers=headers, body=body[:512].decode("latin-1"),
                 len=len(body), sha256=hashlib.sha256(body).hexdigest(), error=None)
        close_after_eof(s)
    except ssl.SSLError as e:
        r.update(status=None, error="ssl:" + str(e.reason or e))
    except OSError as e:
        r.update(status=None, error="os:" + str(e))
    r["elapsed_ms"] = int((time.monotonic() - t0) * 1000)
    out(r)


def cmd_tls_seq(a):
    """--n TLS connections one after the other, each with --requests GETs
    kept alive (the last asks Connection: close). A fixed workload for
    counting the gateway's system calls per connection and per request."""
    ok = failed = 0
    ctx = ssl.create_default_context(cafile=a.ca)
    for _ in range(a.n):
        try:
            s = connect(a.dst, a.src, 10)
            conn = TlsConn(s, ctx, a.sni)
            conn.handshake()
            for i in range(a.requests):
                conn.write(get_request(a.path, a.sni, keep_alive=i < a.requests - 1))
                status, _, _ = read_http(conn)
                if status != 200:
                    raise OSError("status %s" % status)
            close_after_eof(s)
            ok += 1
        except (OSError, ssl.SSLError):
            failed += 1
    out({"ok": ok, "failed": failed})


def cmd_hold(a):
    if a.defer:
        # Started ahead of time (interpreter start-up can take seconds on a
        # loaded machine); connects when told, for timing-sensitive tests.
        out({"ready": True})
        sys.stdin.readline()
    s = connect(a.dst, a.src)
    s.sendall(b"hello\n")
    s.settimeout(10)
    got = b""
    while len(got) < 6:
        chunk = s.recv(64)
        if not chunk:
            break
        got += chunk
    out({"local": local(s), "echo_ok": got == b"hello\n"})
    line = sys.stdin.readline().strip()
    if line == "wait":
        data, how = read_all(s, a.wait_timeout)
        out({"closed": how, "recv": data.decode("latin-1")})
    else:
        s.shutdown(socket.SHUT_WR)
        data, how = read_all(s, 10)
        out({"closed": how, "recv": data.decode("latin-1")})
    s.close()


def cmd_many(a):
    results = [None] * a.n
    conns = [None] * a.n
    done = threading.Barrier(a.n + 1)

    def one(i):
        try:
            s, conn, status, headers, body = tls_get(a.dst, a.sni, a.ca, "/", 0.0, a.src, keep_alive=True,
                                                     timeout=60)
            conns[i] = s
            results[i] = "ok" if status == 200 else "status %s" % status
        except Exception as e:  # reported, not raised: the test counts failures
            results[i] = "%s: %s" % (type(e).__name__, e)
        try:
            done.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(a.n)]
    for t in threads:
        t.start()
    try:
        done.wait(timeout=120)
    except threading.BrokenBarrierError:
        pass
    errors = [r for r in results if r != "ok"]
    out({"held": sum(1 for c in conns if c is not None), "ok": a.n - len(errors), "errors": errors[:10]})
    sys.stdin.readline()
    for c in conns:
        if c is not None:
            c.close()
    out({"ok": a.n - len(errors), "errors": errors[:10], "closed": True})


def cmd_echo_loop(a):
    """Short echo flows back to back on --concurrency threads for --seconds:
    each sends a line, half-closes and must get the line back. Prints every
    flow's local address (to find its record) and the failures."""
    stop_at = time.monotonic() + a.seconds
    lock = threading.Lock()
    locals_ok, failures = [], []

    def worker(t):
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            line = ("flow %d.%d\n" % (t, n)).encode()
            where = None
            try:
                s = connect(a.dst, a.src, timeout=5)
                where = local(s)
                s.sendall(line)
                s.shutdown(socket.SHUT_WR)
                data, how = read_all(s, 5)
                s.close()
                ok = data == line and how == "eof"
                why = None if ok else "got %r, %s" % (data, how)
            except Exception as e:  # counted, not raised
                ok, why = False, "%s: %s" % (type(e).__name__, e)
            with lock:
                if ok:
                    locals_ok.append(where)
                else:
                    failures.append({"local": where, "why": why})

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(a.seconds + 30)
    out({"flows": len(locals_ok) + len(failures), "ok": locals_ok, "failures": failures[:20]})


def cmd_latency(a):
    """One short echo flow every --interval seconds for --seconds: connect,
    send a line, read it back, close. Prints one JSON line per flow as it
    ends: [start (wall clock, s), latency ms or null when it failed]."""
    stop_at = time.monotonic() + a.seconds
    while time.monotonic() < stop_at:
        t_wall, t0 = time.time(), time.monotonic()
        try:
            s = connect(a.dst, a.src, timeout=5)
            s.sendall(b"ping\n")
            got = b""
            s.settimeout(5)
            while len(got) < 5:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            s.close()
            ms = (time.monotonic() - t0) * 1000 if got == b"ping\n" else None
        except OSError:
            ms = None
        out([round(t_wall, 4), None if ms is None else round(ms, 3)])
        left = a.interval - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)


def read_response(s, buf, head_only=False):
    """One HTTP/1.1 response from s (bytes already read in buf): returns
    (status, headers dict, body, rest of buf), or None when the connection
    ends first. Bodies by Content-Length or chunked; none for 1xx/204/304
    or head_only."""
    def fill(need):
        nonlocal buf
        while need(buf):
            data = s.recv(65536)
            if not data:
                return False
            buf += data
        return True
    while True:
        if not fill(lambda b: b"\r\n\r\n" not in b):
            return None
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200 and status != 101:
            continue
        break
    body = b""
    if head_only or status in (101, 204, 304):
        return status, headers, body, buf
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            if not fill(lambda b: b"\r\n" not in b):
                return None
            size_line, _, buf = buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if not fill(lambda b: len(b) < size + 2):
                return None
            body += buf[:size]
            buf = buf[size + 2:]
            if size == 0:
                break
    elif "content-length" in headers:
        n = int(headers["content-length"])
        if not fill(lambda b: len(b) < n):
            return None
        body, buf = buf[:n], buf[n:]
    else:
        while True:
            data = s.recv(65536)
            if not data:
                break
            buf += data
        body, buf = buf, b""
    return status, headers, body, buf


def cmd_http_seq(a):
    """Requests on one connection, one after the other (each after the
    previous response) or all at once (--pipeline). --req is
    METHOD|HOST|PATH[|Header: v;;Header: v]. Prints each response and
    whether the connection was closed after the last."""
    reqs = []
    for r in a.req:
        parts = r.split("|")
        method, host, path = parts[0], parts[1], parts[2]
        extra = "".join(h + "\r\n" for h in parts[3].split(";;")) if len(parts) > 3 and parts[3] else ""
        reqs.append((method, ("%s %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (method, path, host, extra)).encode()))
    s = connect(a.dst, a.src)
    s.settimeout(a.read_timeout)
    responses, buf = [], b""
    try:
        if a.pipeline:
            s.sendall(b"".join(r for _, r in reqs))
        for method, r in reqs:
            if not a.pipeline:
                s.sendall(r)
            got = read_response(s, buf, head_only=method == "HEAD")
            if got is None:
                break
            status, headers, body, buf = got
            responses.append({"status": status, "headers": headers, "body": body.decode("latin-1")})
    except OSError as e:
        responses.append({"error": "%s: %s" % (type(e).__name__, e)})
    data, how = read_all(s, a.read_timeout if responses and "error" not in responses[-1] else 0.5)
    out({"local": local(s), "responses": responses, "after": (buf + data).decode("latin-1"), "closed": how})


def dns_query(server, name, qtype_name):
    qtype = {"A": 1, "AAAA": 28}[qtype_name]
    qid = int.from_bytes(os.urandom(2), "big")
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += u8(len(label)) + label.encode()
    q += b"\x00" + struct.pack("!HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(q, (server, 53))
    data, _ = s.recvfrom(4096)
    s.close()
    rid, flags, qd, an = struct.unpack("!HHHH", data[:8])
    pos = 12
    for _ in range(qd):  # skip the question
        while data[pos] != 0:
            pos += 1 + data[pos]
        pos += 5
    answers = []
    for _ in range(an):
        if data[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            while data[pos] != 0:
                pos += 1 + data[pos]
            pos += 1
        rtype, _, _, rdlen = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        rdata = data[pos:pos + rdlen]
        pos += rdlen
        if rtype == 1:
            answers.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
    return {"name": name, "type": qtype_name, "id_ok": rid == qid, "rcode": flags & 0xF, "answers": answers}


def cmd_dns(a):
    """--query NAME:TYPE, repeatable; prints {"results": [...]}."""
    out({"results": [dns_query(a.server, *q.rsplit(":", 1)) for q in a.query]})


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)

    def sp(name, fn):
        p = sub.add_parser(name)
        p.add_argument("--src")
        p.set_defaults(fn=fn)
        return p

    p = sp("hello", cmd_hello)
    p.add_argument("--dst", required=True)
    p.add_argument("--sni", default="allowed.test")
    p.add_argument("--sni-hex")
    p.add_argument("--no-sni", action="store_true")
    p.add_argument("--ech", action="store_true")
    p.add_argument("--alpn")
    p.add_argument("--malformed", action="store_true")
    p.add_argument("--byte-delay", type=float, default=0.0)
    p.add_argument("--read-timeout", type=float, default=5.0)
    p.add_argument("--first-record", action="store_true", help="stop after one whole record")

    p = sp("raw", cmd_raw)
    p.add_argument("--dst", required=True)
    p.add_argument("--send-hex", required=True)
    p.add_argument("--byte-delay", type=float, default=0.0)
    p.add_argument("--shut-wr", action="store_true")
    p.add_argument("--read-timeout", type=float, default=5.0)

    p = sp("connect", cmd_connect)
    p.add_argument("--dst", required=True, help="the proxy")
    p.add_argument("--target", required=True, help="host:port to CONNECT to")
    p.add_argument("--sni")
    p.add_argument("--no-sni", action="store_true")
    p.add_argument("--read-timeout", type=float, default=5.0)

    p = sp("slow", cmd_slow)
    p.add_argument("--dst", required=True)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--max-time", type=float, default=15.0)

    p = sp("echo-loop", cmd_echo_loop)
    p.add_argument("--dst", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--concurrency", type=int, default=4)

    p = sp("latency", cmd_latency)
    p.add_argument("--dst", required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--interval", type=float, default=0.01)

    p = sp("http-seq", cmd_http_seq)
    p.add_argument("--dst", required=True)
    p.add_argument("--req", action="append", required=True)
    p.add_argument("--pipeline", action="store_true")
    p.add_argument("--read-timeout", type=float, default=5.0)

    p = sp("banner", cmd_banner)
    p.add_argument("--dst", required=True)
    p.add_argument("--read-timeout", type=float, default=5.0)

    p = sp("tls", cmd_tls)
    p.add_argument("--dst", required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--dribble", type=float, default=0.0)

    p = sp("tls-seq", cmd_tls_seq)
    p.add_argument("--dst", required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--requests", type=int, default=1)

    p = sp("hold", cmd_hold)
    p.add_argument("--dst", required=True)
    p.add_argument("--defer", action="store_true", help="connect only after a line on stdin")
    p.add_argument("--wait-timeout", type=float, default=30.0)

    p = sp("many", cmd_many)
    p.add_argument("--dst", required=True)
    p.add_argument("--sni", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--n", type=int, default=300)

    p = sp("dns", cmd_dns)
    p.add_argument("--server", required=True)
    p.add_argument("--query", action="append", required=True, help="NAME:A or NAME:AAAA")

    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
