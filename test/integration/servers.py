"""TCP servers for the inet namespace: echo, a server-first banner, and an
HTTP/1.1 server that switches to an echo on `Upgrade: websocket`.

Run as `ip netns exec INET python3 servers.py --echo IP:PORT ... --banner
IP:PORT --banner-text TEXT --ready-file FILE`. Every server is a thread per
connection; the ready file appears once every socket listens. Exits on
SIGTERM.
"""

import argparse
import signal
import socket
import struct
import sys
import threading


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def listen(address):
    host, port = address
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, port))
    s.listen(1024)
    return s


def echo(conn):
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    finally:
        conn.close()


def banner(text):
    def serve(conn):
        try:
            # Server-first: the banner goes out before the client says anything.
            conn.sendall(text)
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                if data.strip().upper().startswith(b"QUIT"):
                    conn.sendall(b"221 bye\r\n")
                    break
                conn.sendall(b"250 ok\r\n")
        except OSError:
            pass
        finally:
            conn.close()
    return serve


def upgrade_server(conn):
    """HTTP/1.1 keep-alive: a request with `Upgrade: websocket` gets a 101
    and the connection becomes an echo; GET /raw gets its own head back as
    the body; /chunked is a chunked response with a trailer; any other gets
    a 200 naming its Host."""
    try:
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            if fields.get("upgrade", "").lower() == "websocket":
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n" + buf)
                echo(conn)
                return
            method, target = (lines[0].split(" ") + ["", ""])[:2]
            if target == "/chunked":
                # A chunked response with a trailer (HEAD: the head alone).
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                             (b"" if method == "HEAD" else b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"))
                continue
            if lines[0].split(" ")[1:2] == ["/raw"]:
                # The request exactly as it arrived: its head, and a chunked
                # body with its chunk lines and trailers.
                raw = head + b"\r\n\r\n"
                if fields.get("transfer-encoding", "").lower() == "chunked":
                    while True:
                        while b"\r\n" not in buf:
                            buf += conn.recv(65536)
                        size_line, _, buf = buf.partition(b"\r\n")
                        raw += size_line + b"\r\n"
                        size = int(size_line.split(b";")[0], 16)
                        if size == 0:
                            while b"\r\n\r\n" not in b"\r\n" + buf:
                                buf += conn.recv(65536)
                            end = (b"\r\n" + buf).index(b"\r\n\r\n") + 2
                            raw += buf[:end]
                            buf = buf[end:]
                            break
                        while len(buf) < size + 2:
                            buf += conn.recv(65536)
                        raw += buf[:size + 2]
                        buf = buf[size + 2:]
                body = raw
            else:
                body = ("upgrade-server host=%s\n" % fields.get("host", "")).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    except OSError:
        pass
    finally:
        conn.close()


def parse_question(q):
    """A DNS query's (id, flags, qname labels, qtype, raw question), or None
    when it is not one well-formed question."""
    if len(q) < 17:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", q[:6])
    pos, labels = 12, []
    while pos < len(q) and q[pos] != 0:
        n = q[pos]
        labels.append(q[pos + 1:pos + 1 + n].decode("ascii", "replace").lower())
        pos += 1 + n
    if pos + 5 > len(q) or qdcount != 1:
        return None
    qtype = struct.unpack("!H", q[pos + 1:pos + 3])[0]
    return qid, flags, labels, qtype, q[12:pos + 5]


def rebinding_dns(sock, names):
    """A DNS server whose A answers change with every query: names maps a
    name to the addresses it answers in turn (TTL 1), as a rebinding
    attacker's server does. AAAA gets NODATA; other names REFUSED."""
    turn = {}
    while True:
        try:
            q, peer = sock.recvfrom(4096)
        except OSError:
            return
        parsed = parse_question(q)
        if parsed is None:
            continue
        qid, _, labels, qtype, question = parsed
        name = ".".join(labels)
        answers = names.get(name)
        rcode, records = 0, b""
        if answers is None:
            rcode = 5
        elif qtype == 1:
            i = turn.get(name, 0)
            turn[name] = i + 1
            ip = answers[i % len(answers)]
            records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + socket.inet_aton(ip)
        head = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, 1 if records else 0, 0, 0)
        sock.sendto(head + question + records, peer)


def accept_loop(sock, handler):
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--echo", action="append", default=[])
    ap.add_argument("--banner", action="append", default=[])
    ap.add_argument("--banner-text", default="220 banner\r\n")
    ap.add_argument("--upgrade", action="append", default=[])
    ap.add_argument("--rebind-dns", help="IP:PORT of the rebinding DNS server")
    ap.add_argument("--rebind", action="append", default=[], help="NAME=IP1,IP2,...")
    ap.add_argument("--ready-file", required=True)
    a = ap.parse_args()
    if a.rebind_dns:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(parse_addr(a.rebind_dns))
        names = {}
        for spec in a.rebind:
            name, _, ips = spec.partition("=")
            names[name.lower()] = ips.split(",")
        threading.Thread(target=rebinding_dns, args=(u, names), daemon=True).start()
    text = a.banner_text.encode()
    socks = [(listen(parse_addr(x)), echo) for x in a.echo]
    socks += [(listen(parse_addr(x)), banner(text)) for x in a.banner]
    socks += [(listen(parse_addr(x)), upgrade_server) for x in a.upgrade]
    for s, h in socks:
        threading.Thread(target=accept_loop, args=(s, h), daemon=True).start()
    with open(a.ready_file, "w") as f:
        f.write("ready\n")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
