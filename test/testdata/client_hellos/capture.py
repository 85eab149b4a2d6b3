#!/usr/bin/env python3
import socket, sys, time
# Records the first bytes a client sends on 127.0.0.1:PORT, then closes.
port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(1); s.settimeout(20)
c, _ = s.accept(); c.settimeout(1.0)
data = b""
while True:
    try:
        chunk = c.recv(65536)
    except socket.timeout:
        break
    if not chunk: break
    data += chunk
open(out, "wb").write(data); c.close(); s.close()
print(out, len(data))
