"""Misbehaving peers for test_faults.py (Python 3 standard library only).

  serve --ip IP --log FILE --ready-file FILE     (run in inet)
      TCP on IP:
        7100 rst-down: reads one line "N\\n", writes N bytes, waits until the
             peer has acknowledged them all, then resets (SO_LINGER 0)
        7101 rst-up:   reads until it has read 64 KiB, then resets
        7102 silent:   accepts and reads, never writes; closes on EOF
      every TCP connection ends with one JSON line in FILE:
        {"port", "peer", "read", "wrote", "how"}
      DNS (UDP and TCP) on IP:5300, by the name's last labels:
        *.ok.test     A 198.18.0.10, TTL 60
        *.slow.test   the same answer, 1.5 s late (past dns.timeout)
        *.liar.test   an answer whose A record is owned by another name
        *.qliar.test  an answer to another question (qname other.test)
        *.tc.test     UDP: TC set and the answer cut; TCP: the whole answer
        *.tcbad.test  UDP: TC and cut; TCP: closed without an answer
        *.ttl0.test   A 198.18.0.10 with TTL 0
        *.flood.test  300 A records, 198.18.0.10 first, in one UDP datagram
      AAAA: NODATA for every name (after the same delay for slow names).
      Any other name: REFUSED.

  upload --dst IP:PORT [--max BYTES]              (run in the pod)
      sends "up\\n" then data until the peer resets or BYTES are sent;
      prints {"local", "sent", "received", "closed", "elapsed_ms"}

  download --dst IP:PORT --host H --path P [--stop-after B]   (run in the pod)
      HTTP/1.1 GET; stops itself (SIGSTOP) after B body bytes until SIGCONT;
      prints {"local", "sent", "received", "status", "body", "sha256"}

  pump --dst IP:PORT [--n N] [--bytes B]          (run in the pod)
      N echo flows at once, B bytes each way in flight together
"""

import argparse
import fcntl
import json
import os
import select
import socket
import struct
import sys
import termios
import threading
import time

from servers import parse_question  # the same parsing as the world's rebinding DNS

WEB_IP = "198.18.0.10"
RST_DOWN, RST_UP, SILENT = 7100, 7101, 7102
DNS_PORT = 5300
UP_LIMIT = 64 * 1024
TIOCOUTQ = getattr(termios, "TIOCOUTQ", 0x5411)

_log_lock = threading.Lock()


def log(path, **rec):
    with _log_lock, open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def reset(conn):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def unacked(conn):
    buf = fcntl.ioctl(conn.fileno(), TIOCOUTQ, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


def recv_until(sock, marker, size):
    """Reads until `marker` has arrived (or the peer closed); returns all read."""
    buf = b""
    while marker not in buf:
        chunk = sock.recv(size)
        if not chunk:
            break
        buf += chunk
    return buf


def rst_down(conn, peer, path):
    """Reads "N\\n", sends N bytes, waits until they are acknowledged (so they
    reached the gateway), then resets."""
    buf = recv_until(conn, b"\n", 4096)
    n = int(buf.split(b"\n")[0] or b"0")
    data = (b"0123456789abcdef" * (n // 16 + 1))[:n]
    conn.sendall(data)
    deadline = time.monotonic() + 5
    while unacked(conn) > 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    log(path, port=RST_DOWN, peer=peer, read=len(buf), wrote=n, how="reset")
    reset(conn)


def rst_up(conn, peer, path):
    got = 0
    while got < UP_LIMIT:
        chunk = conn.recv(min(65536, UP_LIMIT - got))
        if not chunk:
            break
        got += len(chunk)
    log(path, port=RST_UP, peer=peer, read=got, wrote=0, how="reset")
    reset(conn)


def silent(conn, peer, path):
    got = 0
    while True:
        try:
            chunk = conn.recv(65536)
        except OSError:
            how = "reset"
            break
        if not chunk:
            how = "eof"
            break
        got += len(chunk)
    log(path, port=SILENT, peer=peer, read=got, wrote=0, how=how)
    conn.close()


def tcp_server(ip, port, handler, path):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, port))
    s.listen(128)

    def loop():
        while True:
            conn, peer = s.accept()
            threading.Thread(target=handler, args=(conn, "%s:%d" % peer, path), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


# ---- DNS ---------------------------------------------------------------------

def encode_name(name):
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\0"


def a_rr(ip, ttl=60, owner=b"\xc0\x0c"):
    return owner + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(ip)


def answer(q, tcp):
    """(delay seconds, response bytes or None to send nothing / close)."""
    p = parse_question(q)
    if p is None:
        return 0, None
    qid, _, labels, qtype, question = p
    kind = labels[-2] if len(labels) >= 2 and labels[-1] == "test" else ""

    def resp(records, n=None, rcode=0, tc=False, quest=question):
        flags = 0x8180 | rcode | (0x0200 if tc else 0)
        count = n if n is not None else (1 if records else 0)
        return struct.pack("!HHHHHH", qid, flags, 1, count, 0, 0) + quest + records

    if kind not in ("ok", "slow", "liar", "qliar", "tc", "tcbad", "ttl0", "flood"):
        return 0, resp(b"", rcode=5)
    delay = 1.5 if kind == "slow" else 0
    if qtype != 1:  # NODATA
        return delay, resp(b"")
    if kind in ("ok", "slow"):
        return delay, resp(a_rr(WEB_IP))
    if kind == "liar":
        return 0, resp(a_rr(WEB_IP, owner=encode_name("other.test")))
    if kind == "qliar":
        return 0, resp(a_rr(WEB_IP), quest=encode_name("other.test") + struct.pack("!HH", 1, 1))
    if kind in ("tc", "tcbad"):
        if tcp:
            return 0, (resp(a_rr(WEB_IP)) if kind == "tc" else None)
        whole = resp(a_rr(WEB_IP), tc=True)
        return 0, whole[:len(whole) - 6]
    if kind == "ttl0":
        return 0, resp(a_rr(WEB_IP, ttl=0))
    records = a_rr(WEB_IP) + b"".join(a_rr("198.18.%d.%d" % (1 + i // 250, 1 + i % 250)) for i in range(299))
    return 0, resp(records, n=300)


def dns_udp(ip):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((ip, DNS_PORT))

    def reply(q, peer):
        delay, r = answer(q, tcp=False)
        if delay:
            time.sleep(delay)
        if r is not None:
            u.sendto(r, peer)

    def loop():
        while True:
            q, peer = u.recvfrom(65535)
            threading.Thread(target=reply, args=(q, peer), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def dns_tcp(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, DNS_PORT))
    s.listen(64)

    def serve(conn):
        try:
            buf = b""
            while True:
                while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                n = struct.unpack("!H", buf[:2])[0]
                q, buf = buf[2:2 + n], buf[2 + n:]
                delay, r = answer(q, tcp=True)
                if delay:
                    time.sleep(delay)
                if r is None:
                    return
                conn.sendall(struct.pack("!H", len(r)) + r)
        except OSError:
            pass
        finally:
            conn.close()

    def loop():
        while True:
            conn, _ = s.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def cmd_serve(a):
    tcp_server(a.ip, RST_DOWN, rst_down, a.log)
    tcp_server(a.ip, RST_UP, rst_up, a.log)
    tcp_server(a.ip, SILENT, silent, a.log)
    dns_udp(a.ip)
    dns_tcp(a.ip)
    with open(a.ready_file, "w") as f:
        f.write("ready\n")
    while True:
        time.sleep(3600)


# ---- clients -----------------------------------------------------------------

def local(s):
    a = s.getsockname()
    return "[%s]:%d" % (a[0], a[1]) if ":" in a[0] else "%s:%d" % (a[0], a[1])


def cmd_upload(a):
    host, _, port = a.dst.rpartition(":")
    t0 = time.monotonic()
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
    me = local(s)
    s.setblocking(False)
    chunk = b"u" * 65536
    data = b"up\n"
    sent = received = 0
    closed = None
    while closed is None and time.monotonic() - t0 < a.timeout:
        want_write = sent < a.max
        r, w, _ = select.select([s], [s] if want_write else [], [], 0.5)
        if r:
            try:
                got = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                closed = "reset"
                break
            except BlockingIOError:
                got = None
            if got == b"":
                closed = "eof"
                break
            if got:
                received += len(got)
        if w:
            if not data:
                data = chunk[:max(0, min(len(chunk), a.max - sent))]
            try:
                n = s.send(data)
            except (ConnectionResetError, BrokenPipeError):
                closed = "reset"
                break
            except BlockingIOError:
                n = 0
            sent += n
            data = data[n:]
    out = {"local": me, "sent": sent, "received": received, "closed": closed or "timeout",
           "elapsed_ms": int((time.monotonic() - t0) * 1000)}
    s.close()
    sys.stdout.write(json.dumps(out) + "\n")


def cmd_pump(a):
    """--n echo flows at once, each writing --bytes while reading them back
    (keeps bytes in flight both ways: warms the gateway's pipe and buffer
    pools); prints {"ok": flows whose echo came back whole, "locals": [...]}."""
    host, _, port = a.dst.rpartition(":")
    results = [None] * a.n

    def one(i):
        try:
            s = socket.create_connection((host.strip("[]"), int(port)), timeout=20)
            me = local(s)
            data = os.urandom(a.bytes)

            def writer():
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            got = bytearray()
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
            t.join(20)
            s.close()
            results[i] = (me, bytes(got) == data)
        except OSError:
            results[i] = (None, False)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(a.n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    sys.stdout.write(json.dumps({"ok": sum(1 for r in results if r and r[1]),
                                 "locals": [r[0] for r in results if r and r[0]]}) + "\n")


def cmd_download(a):
    """GET --path from --dst with Host --host over HTTP/1.1 (Connection:
    close); after --stop-after body bytes it stops itself (SIGSTOP) until
    SIGCONT. Prints {"local", "sent", "received", "status", "body",
    "sha256", "stopped_at"}: sent/received are bytes on the socket."""
    import hashlib
    import signal
    host, _, port = a.dst.rpartition(":")
    s = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
    me = local(s)
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (a.path, a.host)).encode()
    s.sendall(req)
    head = recv_until(s, b"\r\n\r\n", 65536)
    received = len(head)
    head, _, body = head.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    h = hashlib.sha256(body)
    n = len(body)
    stopped_at = None
    while True:
        if stopped_at is None and n >= a.stop_after:
            stopped_at = n
            os.kill(os.getpid(), signal.SIGSTOP)
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        received += len(chunk)
        n += len(chunk)
        h.update(chunk)
    s.close()
    sys.stdout.write(json.dumps({"local": me, "sent": len(req), "received": received, "status": status, "body": n,
                                 "sha256": h.hexdigest(), "stopped_at": stopped_at}) + "\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--ip", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--ready-file", required=True)
    p.set_defaults(fn=cmd_serve)
    p = sub.add_parser("upload")
    p.add_argument("--dst", required=True)
    p.add_argument("--max", type=int, default=64 << 20)
    p.add_argument("--timeout", type=float, default=10.0)
    p.set_defaults(fn=cmd_upload)
    p = sub.add_parser("download")
    p.add_argument("--dst", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--stop-after", type=int, default=4 << 20)
    p.set_defaults(fn=cmd_download)
    p = sub.add_parser("pump")
    p.add_argument("--dst", required=True)
    p.add_argument("--n", type=int, default=6)
    p.add_argument("--bytes", type=int, default=4 << 20)
    p.set_defaults(fn=cmd_pump)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
