"""What one client streaming very large messages costs everyone else: echo round trips of a
second client while the first sends ~21 MiB messages without pause, compressed (each
inflating from ~4 MiB) or plain, to an echo route or a chat room it is alone in.

usage: python3 scripts/big-message-latency.py [--bin PATH] [compressed|plain] [echo|chat]

The server runs on core 0 (taskset), this script and the heavy client (niced) wherever the
caller pins them (e.g. `taskset -c 1`). Prints the echo latency's p50, p99 and max.
"""
import multiprocessing
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib

ARGS = sys.argv[1:]
BINARY = "target/release/wsgate"
if "--bin" in ARGS:
    i = ARGS.index("--bin")
    BINARY = ARGS[i + 1]
    del ARGS[i:i + 2]
MODE = ARGS[0] if ARGS else "compressed"
APP = ARGS[1] if len(ARGS) > 1 else "echo"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PORT = free_port()


def upgrade(path, extra=""):
    s = socket.create_connection(("127.0.0.1", PORT))
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def frame(first, payload):
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    # A zero mask: the payload goes as it is.
    return head + b"\0\0\0\0" + payload


def heavy(big, compressed):
    os.nice(19)
    s = upgrade("/big", "Sec-WebSocket-Extensions: permessage-deflate\r\n" if compressed else "")
    pid = os.fork()
    try:
        if pid == 0:
            while s.recv(1 << 20):
                pass
        else:
            while True:
                s.sendall(big)
    except OSError:
        pass  # the server stopped
    os._exit(0)


def main():
    text = b"".join(b'{"n":%d,"v":"%d"},' % (i, i % 977) for i in range(1_000_000))
    compressed = MODE == "compressed"
    if compressed:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        z = (c.compress(text) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
        big = frame(0xC2, z)
        print(f"{len(text) >> 20} MiB messages inflated from {len(z) >> 10} KiB, app {APP}", flush=True)
    else:
        big = frame(0x82, text)
        print(f"{len(text) >> 20} MiB plain messages, app {APP}", flush=True)
    route = 'app = "echo"' if APP == "echo" else 'app = "chat"\nexclude_sender = true'
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(f'[[listener]]\naddr = "127.0.0.1:{PORT}"\n[limits]\nmax_message_size = "32MiB"\n'
                f'max_frame_size = "32MiB"\n[[route]]\npath = "/big"\n{route}\ncompression = "shared"\n'
                f'[[route]]\npath = "/echo"\napp = "echo"\n')
        conf = f.name
    server = subprocess.Popen(["taskset", "-c", "0", BINARY, "-q", "-c", conf])
    try:
        time.sleep(0.4)
        load = multiprocessing.Process(target=heavy, args=(big, compressed), daemon=True)
        load.start()
        e = upgrade("/echo")
        e.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ping = frame(0x81, b"ping")
        time.sleep(0.5)
        lat = []
        end = time.time() + 8
        while time.time() < end:
            t = time.perf_counter()
            e.sendall(ping)
            got = b""
            while len(got) < 6:
                got += e.recv(64)
            lat.append((time.perf_counter() - t) * 1e6)
            time.sleep(0.002)
        load.kill()
        lat.sort()
        q = lambda f: lat[int(len(lat) * f)]
        print(f"{len(lat)} echoes: p50 {q(0.5):.0f} us, p99 {q(0.99):.0f} us, max {lat[-1]:.0f} us", flush=True)
    finally:
        server.kill()
        os.unlink(conf)


if __name__ == "__main__":
    main()
