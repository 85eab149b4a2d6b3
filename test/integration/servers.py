"""TCP servers for the inet namespace: echo, and a server-first banner.

Run as `ip netns exec INET python3 servers.py --echo IP:PORT ... --banner
IP:PORT --banner-text TEXT --ready-file FILE`. Every server is a thread per
connection; the ready file appears once every socket listens. Exits on
SIGTERM.
"""

import argparse
import signal
import socket
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
    ap.add_argument("--ready-file", required=True)
    a = ap.parse_args()
    text = a.banner_text.encode()
    socks = [(listen(parse_addr(x)), echo) for x in a.echo]
    socks += [(listen(parse_addr(x)), banner(text)) for x in a.banner]
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
