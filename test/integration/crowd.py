"""Thousands of connections from one thread, for the tests at the descriptor
limit (test_stress.py). Python 3 standard library only.

  serve --listen IP:PORT [--listen ...] --ready-file FILE       (run in inet)
      an echo server on epoll: every connection is echoed until its EOF,
      then shut down and closed; no thread per connection, so ten thousand
      connections cost it little.

  hold --dst IP:PORT --src IP --n N [--batch B] [--timeout S] [--keep]
       [--no-wait]                                               (run in the pod)
      opens N connections, B at a time (non-blocking connects; the next
      batch when every connection of this one is answered, or after S
      seconds), and sends "hi\\n" on each. A connection the echo answers is
      held; one the gateway closes (EOF or reset) before any answer is
      closed at once on this side too; one that has neither after S seconds
      is given up (closed), or with --keep left waiting. Prints one line:
        {"held": [{"local", "ms"}], "closed": [{"local", "how", "ms",
         "received"}], "waiting": [{"local", "connected"}],
         "other": [{"local", "how"}]}
      where ms is the time from the connect to the echo or the close. Then,
      unless --no-wait, waits for a line on stdin, half-closes every held
      connection and reads it to EOF; a waiting one is released the same
      way once its echo comes. Prints {"released": [{"local", "end",
      "received"}], "closed": [...]}: the latter those the gateway closed
      without an answer after the release began.
"""

import argparse
import errno
import json
import selectors
import socket
import sys
import time


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def serve(args):
    sel = selectors.DefaultSelector()
    for a in args.listen:
        host, port = parse_addr(a)
        s = socket.socket(family(host), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(4096)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, None)
    with open(args.ready_file, "w") as f:
        f.write("ready\n")
    while True:
        for key, _ in sel.select():
            if key.data is None:  # a listener
                try:
                    while True:
                        c, _ = key.fileobj.accept()
                        c.setblocking(False)
                        sel.register(c, selectors.EVENT_READ, "conn")
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError as e:  # EMFILE: the next select tries again
                    if e.errno not in (errno.EMFILE, errno.ENFILE):
                        raise
                    time.sleep(0.01)
                continue
            c = key.fileobj
            try:
                data = c.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = None
            if data:
                try:
                    c.sendall(data)  # a few bytes: the send buffer has room
                    continue
                except OSError:
                    pass
            sel.unregister(c)
            try:
                if data is not None:
                    c.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            c.close()


def local(s):
    a = s.getsockname()
    return ("[%s]:%d" if ":" in a[0] else "%s:%d") % (a[0], a[1])


class Conn:
    """One client connection: connecting -> sent ("hi\\n" written) -> held
    (the echo came back) -> closing (half-closed, reading to EOF) -> done;
    or closed (EOF or reset before any answer) or failed."""

    def __init__(self, sock, batch):
        self.sock, self.batch = sock, batch
        self.local = local(sock)
        self.t0 = time.monotonic()
        self.state, self.got, self.ms, self.how, self.received = "connecting", b"", None, None, 0
        self.late = False  # ended after the release began


class Crowd:
    def __init__(self, dst, src):
        self.host, self.port = parse_addr(dst)
        self.src = src
        self.sel = selectors.DefaultSelector()
        self.conns = []
        self.releasing = False

    def open(self, n, batch):
        for _ in range(n):
            s = socket.socket(family(self.host), socket.SOCK_STREAM)
            s.setblocking(False)
            s.bind((self.src, 0))
            c = Conn(s, batch)
            self.conns.append(c)
            err = s.connect_ex((self.host, self.port))
            if err not in (0, errno.EINPROGRESS):
                self.finish(c, "failed", "connect: " + errno.errorcode.get(err, str(err)))
                continue
            self.sel.register(s, selectors.EVENT_WRITE, c)

    def finish(self, c, state, how):
        c.state, c.how, c.late = state, how, self.releasing
        if c.ms is None:
            c.ms = int((time.monotonic() - c.t0) * 1000)
        try:
            self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    def start_closing(self, c):
        c.state = "closing"
        try:
            c.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.finish(c, "done", "shutdown: %s" % e)
            return
        self.sel.register(c.sock, selectors.EVENT_READ, c)

    def event(self, c):
        s = c.sock
        if c.state == "connecting":
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.finish(c, "failed", "connect: " + errno.errorcode.get(err, str(err)))
                return
            try:
                s.send(b"hi\n")
            except OSError:
                pass  # the read says what happened
            c.state = "sent"
            self.sel.modify(s, selectors.EVENT_READ, c)
            return
        try:
            data = s.recv(65536)
            how = None if data else "eof"
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            data, how = b"", "reset" if e.errno == errno.ECONNRESET else "error: %s" % e
        if c.state == "closing":
            c.received += len(data)
            if how is not None:
                self.finish(c, "done", how)
            return
        c.got += data
        c.received = len(c.got)
        if how is None and len(c.got) < 3:
            return
        if how is None and c.got == b"hi\n":
            c.state, c.ms = "held", int((time.monotonic() - c.t0) * 1000)
            self.sel.unregister(s)
            if self.releasing:
                self.start_closing(c)
        elif how is not None and not c.got:
            self.finish(c, "closed", how)
        else:
            self.finish(c, "failed", "got %r, %s" % (c.got[:16], how))

    def pump(self, done, timeout):
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            for key, _ in self.sel.select(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                self.event(key.data)

    def in_flight(self, batch=None):
        return [c for c in self.conns if c.state in ("connecting", "sent") and (batch is None or c.batch == batch)]

    def report(self):
        out = {"held": [], "closed": [], "waiting": [], "other": []}
        for c in self.conns:
            if c.state == "held":
                out["held"].append({"local": c.local, "ms": c.ms})
            elif c.state == "closed":
                out["closed"].append({"local": c.local, "how": c.how, "ms": c.ms, "received": 0})
            elif c.state in ("connecting", "sent"):
                out["waiting"].append({"local": c.local, "connected": c.state == "sent"})
            else:
                out["other"].append({"local": c.local, "how": c.how})
        return out


def hold(args):
    crowd = Crowd(args.dst, args.src)
    left, batch = args.n, 0
    while left:
        size = min(args.batch, left)
        left -= size
        batch += 1
        crowd.open(size, batch)
        crowd.pump(lambda: not crowd.in_flight(batch), args.timeout)
        if not args.keep:
            for c in crowd.in_flight(batch):
                crowd.finish(c, "failed", "no answer in %g s" % args.timeout)
    print(json.dumps(crowd.report()), flush=True)
    if args.no_wait:
        return
    sys.stdin.readline()

    # Release: every held connection is half-closed and read to EOF; one
    # still waiting (--keep) is released the same way once its echo comes.
    crowd.releasing = True
    for c in crowd.conns:
        if c.state == "held":
            crowd.start_closing(c)
    crowd.pump(lambda: not any(c.state in ("connecting", "sent", "closing") for c in crowd.conns),
               args.timeout * 6)
    released, late = [], []
    for c in crowd.conns:
        if c.state in ("connecting", "sent", "closing"):
            crowd.finish(c, "done", "no EOF")
        if c.state == "done":
            released.append({"local": c.local, "end": c.how, "received": c.received})
        elif c.state == "closed" and c.late:
            late.append({"local": c.local, "how": c.how, "ms": c.ms})
    print(json.dumps({"released": released, "closed": late}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--listen", action="append", required=True)
    p.add_argument("--ready-file", required=True)
    p = sub.add_parser("hold")
    p.add_argument("--dst", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--no-wait", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    serve(args) if args.cmd == "serve" else hold(args)


if __name__ == "__main__":
    main()
