"""Server memory per idle WebSocket: RSS growth over N upgraded, silent connections, / N.

usage: python3 scripts/idle-memory.py PID HOST PORT [N]   (HOST must be loopback)
"""
import socket
import sys
import time

REQ = (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def main():
    pid, host, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 10000
    assert host.startswith("127.") or host in ("::1", "localhost")
    before = rss_kib(pid)
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(REQ)
        conns.append(s)
    for s in conns:
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
    time.sleep(0.5)
    after = rss_kib(pid)
    print(f"{n} idle connections: RSS {before} KiB -> {after} KiB, "
          f"{(after - before) * 1024 / n:.0f} bytes per connection")


if __name__ == "__main__":
    main()
