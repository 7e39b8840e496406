"""Server memory per idle WebSocket: RSS growth over N upgraded, silent connections, / N.

usage: python3 scripts/idle-memory.py [--tls] [--partial] [--path /echo] PID HOST PORT [N]
       (HOST must be loopback; --partial: each client sends the first 30 bytes of its request
       head and stops, as a slowloris attacker does, instead of completing the upgrade)
"""
import socket
import ssl
import sys
import time

from measure_common import REQ, rss_kib


def main():
    args = sys.argv[1:]
    tls = "--tls" in args
    partial = "--partial" in args
    args = [a for a in args if a not in ("--tls", "--partial")]
    path = "/echo"
    if "--path" in args:
        i = args.index("--path")
        path = args[i + 1]
        del args[i:i + 2]
    global REQ
    REQ = REQ.replace(b"%s", path.encode())
    pid, host, port = int(args[0]), args[1], int(args[2])
    n = int(args[3]) if len(args) > 3 else 10000
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    assert host.startswith("127.") or host in ("::1", "localhost")
    before = rss_kib(pid)
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        if ctx:
            s = ctx.wrap_socket(s, server_hostname="localhost")
        s.sendall(REQ[:30] if partial else REQ)
        conns.append(s)
    for s in conns if not partial else []:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
    time.sleep(0.5)
    after = rss_kib(pid)
    what = "connections with 30 bytes of a request head" if partial else "idle connections"
    print(f"{n} {'TLS ' if tls else ''}{what}: RSS {before} KiB -> {after} KiB, "
          f"{(after - before) * 1024 / n:.0f} bytes per connection")


if __name__ == "__main__":
    main()
