"""Server memory with N subscribers that never read while one client publishes to their room.

Starts the release binary with a chat route under the given slow-consumer policy, connects N
subscribers to /room (they complete the upgrade, then never read again), and a publisher that
sends COUNT messages of SIZE bytes, reading each back (it is a member too). Prints the server's
RSS before, at the peak and after, the subscribers closed as slow consumers (policy close), and
the messages dropped (policy drop, from the access lines once the subscribers hang up).

usage: python3 scripts/slow-consumers.py [--policy close|drop] [--max-backpressure 1MiB]
                                         [N] [COUNT] [SIZE]        (defaults 10000 2000 1024)
"""
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time

from measure_common import rss_kib, upgrade_request

REQ = upgrade_request("/room")


def upgrade(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(REQ)
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def masked(payload):
    key = b"\x11\x22\x33\x44"
    n = len(payload)
    head = bytes([0x82]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big"))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def read_frame(s, buf):
    while True:
        if len(buf) >= 2:
            n = buf[1] & 0x7F
            off = 2
            if n == 126:
                if len(buf) < 4:
                    n = None
                else:
                    n, off = int.from_bytes(buf[2:4], "big"), 4
            if n is not None and len(buf) >= off + n:
                frame = bytes(buf[off:off + n])
                del buf[:off + n]
                return frame
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError
        buf.extend(chunk)


def main():
    args = sys.argv[1:]
    opt = {"--policy": "close", "--max-backpressure": "1MiB"}
    for k in list(opt):
        if k in args:
            i = args.index(k)
            opt[k] = args[i + 1]
            del args[i:i + 2]
    n = int(args[0]) if args else 10000
    count = int(args[1]) if len(args) > 1 else 2000
    size = int(args[2]) if len(args) > 2 else 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1000), hard))
    conf = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    conf.write(f'[server]\nlisten = ["127.0.0.1:0"]\nmax_connections = {n + 100}\n'
               f'[[route]]\npath = "/room"\napp = "chat"\nmax_backpressure = "{opt["--max-backpressure"]}"\n'
               f'on_backpressure = "{opt["--policy"]}"\n')
    conf.close()
    binary = os.path.join(os.path.dirname(__file__), "..", "target", "release", "wsgate")
    server = subprocess.Popen([binary, "-c", conf.name], stderr=subprocess.PIPE, text=True)
    lines = []
    port_box = []

    def pump():
        for line in server.stderr:
            lines.append(line)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
            if m:
                port_box.append(int(m.group(1)))
    threading.Thread(target=pump, daemon=True).start()
    while not port_box:
        time.sleep(0.05)
    port = port_box[0]
    try:
        base = rss_kib(server.pid)
        subs = [upgrade(port) for _ in range(n)]
        time.sleep(0.5)
        idle = rss_kib(server.pid)
        pub = upgrade(port)
        buf = bytearray()
        payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
        peak = idle
        started = time.time()
        for i in range(count):
            pub.sendall(masked(payload))
            assert read_frame(pub, buf) == payload
            if i % 100 == 0:
                peak = max(peak, rss_kib(server.pid))
        secs = time.time() - started
        time.sleep(0.5)
        peak = max(peak, rss_kib(server.pid))
        end = rss_kib(server.pid)
        for s in subs:
            s.close()
        time.sleep(3)
        gone = rss_kib(server.pid)
        slow = sum("close=1008 (slow consumer" in l for l in lines)
        dropped = sum(int(m.group(1)) for l in lines for m in [re.search(r" dropped=(\d+)", l)] if m)
        print(f"{n} subscribers that never read, {count} x {size} B published "
              f"({count * n / secs:,.0f} deliveries/s offered), policy {opt['--policy']}, "
              f"max_backpressure {opt['--max-backpressure']}: RSS {base} KiB before, {idle} KiB idle, "
              f"{peak} KiB peak, {end} KiB at the end, {gone} KiB once they hung up; "
              f"{slow} closed as slow consumers, "
              f"{dropped} messages dropped")
    finally:
        server.kill()
        os.unlink(conf.name)


if __name__ == "__main__":
    main()
