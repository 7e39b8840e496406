"""Server memory per connection in every stage an attacker or a crowd can hold it in.

usage: python3 scripts/memory.py [--bin PATH] [--unix-echo PATH] [--n N] [--warm W] [--trim true|false|none]
                                [--workers N] [STAGE...]

Stages (default: all): head, head-trickle, asking, idle, tls, tls-handshake, tls-partial-header,
tls-partial-hello, backend, subscription, broker, admin-body,
deflate-shared, deflate-dedicated, legacy, legacy-key3, leave.
Each stage starts a fresh server (release build, pinned to core 0 when taskset exists), opens W
connections of that kind to warm the allocator and the buffer pools, then N more; the figure is
the RSS growth over those N divided by N (bytes per connection; per subscription for the
subscription stage). Fixed costs (pools, the first pages of the slab) are in the warm-up, so the
figure is what one more connection costs. --workers N runs N workers (balance "handoff", so
each gets its share of the connections). The leave stage is RSS before, with N clients that
each echoed a 16 KiB message, and 2.5 s after they all left (trim_memory as --trim says).

Build first: cargo build --release && cargo build --release -p wsgate-bench (for unix-echo).
"""
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import json
import zlib

from measure_common import REQ, rss_kib

# The server holds two descriptors per backend client; the machine's limit is often 20,000.
BACKEND_MAX = 9000


def pinned(cmd, core):
    return (["taskset", "-c", str(core)] + cmd) if shutil.which("taskset") else cmd


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, tmp, backend_sock=None, trim="true", workers=1):
        self.port, self.tls_port, self.admin_port = free_port(), free_port(), free_port()
        # An application for auth = "proxy" that takes the requests and never answers (the
        # kernel's backlog accepts them): upgrades to /asked wait for it.
        self.stuck_app = socket.socket()
        self.stuck_app.bind(("127.0.0.1", 0))
        self.stuck_app.listen(1024)
        stuck = self.stuck_app.getsockname()[1]
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        if not os.path.exists(cert):
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", key, "-out", cert],
                           check=True, capture_output=True)
        conf = os.path.join(tmp, "memory.toml")
        backend = ""
        if backend_sock:
            backend = f'[[route]]\npath = "/backend"\nbackend = "unix:{backend_sock}"\n'
        # --trim none: leave the key out (for builds that predate it).
        trim_line = "" if trim == "none" else f"trim_memory = {trim}\n"
        if workers > 1:
            trim_line += f'workers = {workers}\nbalance = "handoff"\n'
        with open(conf, "w") as f:
            f.write(f"""[server]
max_connections = 30000
{trim_line}
[[listener]]
addr = "127.0.0.1:{self.port}"

[[listener]]
addr = "127.0.0.1:{self.tls_port}"
tls = {{ cert = "{cert}", key = "{key}" }}

[limits]
handshake_timeout = "10m"
tls_handshake_timeout = "10m"

[[route]]
path = "/echo"
app = "echo"

[[route]]
path = "/pubsub"
app = "pubsub"
max_subscriptions = 1000

[[route]]
path = "/broker"
app = "broker"

[[route]]
path = "/zshared"
app = "echo"
compression = "shared"

[[route]]
path = "/zdedicated"
app = "echo"
compression = "dedicated"

[[route]]
path = "/legacy"
app = "echo"
legacy = ["hixie-76"]
origins = ["http://example.com"]

[proxy]
connect_url = "http://127.0.0.1:{stuck}/connect"
timeout = "60s"
max_pending = 100000

[[route]]
path = "/asked"
app = "echo"
auth = "proxy"

[admin]
listen = "127.0.0.1:{self.admin_port}"
{backend}""")
        # As root, wsgate insists on dropping privileges when it has backend routes.
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(pinned([binary, "-q", "-c", conf] + user, 0),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port)).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")

    def rss(self):
        return rss_kib(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


_TLS = None


def client_tls():
    """One client context for every connection (making one loads the system's CA store)."""
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context()
        _TLS.check_hostname = False
        _TLS.verify_mode = ssl.CERT_NONE
    return _TLS


def read_head(s):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        b = s.recv(1)
        if not b:
            raise RuntimeError(f"closed during the handshake: {head!r}")
        head += b
    assert head.startswith(b"HTTP/1.1 101"), head
    return head


def upgraded(server, path="/echo", tls=False):
    s = socket.create_connection(("127.0.0.1", server.tls_port if tls else server.port))
    if tls:
        s = client_tls().wrap_socket(s, server_hostname="localhost")
    s.sendall(REQ.replace(b"%s", path.encode()))
    read_head(s)
    return s


def asking(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(REQ.replace(b"%s", b"/asked?user=u"))
    return s


def slow_head(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(REQ.replace(b"%s", b"/echo")[:30])
    return s


BROKER_SEQ = iter(range(10**9))


def compressing(path):
    """A client that negotiated permessage-deflate on `path`, sent one compressed 1 KiB JSON
    message, got the (compressed) echo, and went idle."""
    def open_one(server):
        s = socket.create_connection(("127.0.0.1", server.port))
        s.sendall(REQ.replace(b"%s", path.encode()).replace(
            b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"))
        head = read_head(s)
        assert b"permessage-deflate" in head, head
        body = json.dumps([{"id": i, "name": "item", "ok": True} for i in range(32)]).encode()[:1024]
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        z = c.compress(body) + c.flush(zlib.Z_SYNC_FLUSH)
        assert z.endswith(b"\x00\x00\xff\xff")
        z = z[:-4]
        mask = os.urandom(4)
        s.sendall(struct.pack("!BBH", 0xC1, 0x80 | 126, len(z)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(z))
                  if len(z) >= 126 else
                  struct.pack("!BB", 0xC1, 0x80 | len(z)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(z)))
        read_frames(s, 1)
        return s
    return open_one


# draft-hixie-thewebsocketprotocol-76's own example keys (answered with 8jKS'y:G*Co,Wxa-).
HIXIE76 = (b"GET /legacy HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\nUpgrade: WebSocket\r\n"
           b"Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\nOrigin: http://example.com\r\n\r\n")


def legacy_client(server):
    """A hixie-76 client that sent one message, got its echo, and went idle."""
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(HIXIE76 + b"^n:ds[4U")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    answer = b""
    while len(answer) < 16:
        answer += s.recv(16 - len(answer))
    assert answer == b"8jKS'y:G*Co,Wxa-", answer
    s.sendall(b"\x00" + b"x" * 100 + b"\xff")
    echo = b""
    while not echo.endswith(b"\xff"):
        echo += s.recv(200)
    return s


def legacy_waiting_key3(server):
    """A hixie-76 client that sent its head and 4 of the 8 key bytes."""
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(HIXIE76 + b"^n:d")
    return s


def broker_client(server):
    """An idle broker client holding a token of its own."""
    return upgraded(server, f"/broker?RegisterToken=token{next(BROKER_SEQ)}")


def admin_half_body(server):
    """An admin request whose head and the first 100 bytes of a 30,000-byte body arrived."""
    s = socket.create_connection(("127.0.0.1", server.admin_port))
    s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 30000\r\n\r\n" + b'{"topic":"t","data":"' + b"x" * 79)
    return s


def client_hello():
    """The bytes of a fresh ClientHello (Python's, about 517 bytes)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_tls().wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def tls_half_open(server):
    """Sends a ClientHello and stops: the server has answered and waits for our Finished."""
    s = socket.create_connection(("127.0.0.1", server.tls_port))
    s.sendall(client_hello())
    return s


def tls_partial(cut):
    """Sends the first `cut(len)` bytes of a real ClientHello and goes silent."""
    def open_one(server):
        s = socket.create_connection(("127.0.0.1", server.tls_port))
        hello = client_hello()
        s.sendall(hello[:cut(len(hello))])
        return s
    return open_one


TRICKLE_HEAD = (REQ.replace(b"%s", b"/echo")[:-2] + b"X-Pad: " + b"p" * 200)[:150]


def trickle(conns, nbytes):
    """Sends `nbytes` of a 150-byte request head to every connection, one byte per round, a pause
    between rounds so the server reads each byte on its own."""
    for i in range(nbytes):
        for s in conns:
            s.send(TRICKLE_HEAD[i:i + 1])
        time.sleep(0.05)


def masked_text(text):
    payload = text.encode()
    assert len(payload) < 126
    mask = os.urandom(4)
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frames(s, count):
    """Reads `count` unmasked server frames (small ones)."""
    buf = b""
    got = 0
    while got < count:
        while len(buf) < 2 or len(buf) < 2 + (buf[1] & 0x7F):
            buf += s.recv(65536)
        n = 2 + (buf[1] & 0x7F)
        buf = buf[n:]
        got += 1


def echo_16k(server):
    s = upgraded(server)
    payload = bytes(16384)
    # A zero masking key (legal, if not random) keeps the payload as is: no Python byte loop.
    s.sendall(struct.pack("!BBH", 0x82, 0x80 | 126, len(payload)) + bytes(4) + payload)
    got = 0
    while got < len(payload) + 4:
        data = s.recv(65536)
        if not data:
            raise RuntimeError("the server closed instead of echoing")
        got += len(data)
    return s


def leave(server, n):
    start = server.rss()
    conns = [echo_16k(server) for _ in range(n)]
    time.sleep(0.3)
    connected = server.rss()
    for s in conns:
        s.close()
    time.sleep(2.5)
    after = server.rss()
    print(f"leave          {n} clients that echoed 16 KiB each: RSS {start} KiB at start, {connected} KiB "
          f"connected, {after} KiB 2.5 s after they left", flush=True)


def measure(server, open_one, n, warm):
    keep = [open_one(server) for _ in range(warm)]
    time.sleep(0.3)
    before = server.rss()
    keep += [open_one(server) for _ in range(n)]
    time.sleep(0.5)
    after = server.rss()
    return before, after, keep


def stage(name, binary, unix_echo, tmp, n, warm, trim, workers=1):
    backend_proc = None
    backend_sock = None
    if name == "backend":
        backend_sock = os.path.join(tmp, "echo.sock")
        if os.path.exists(backend_sock):
            os.unlink(backend_sock)
        backend_proc = subprocess.Popen(pinned([unix_echo, backend_sock], 1), stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(backend_sock):
                break
            time.sleep(0.05)
        n = min(n, BACKEND_MAX)
    server = Server(binary, tmp, backend_sock, trim, workers)
    try:
        if name == "leave":
            leave(server, n)
            return None
        if name == "subscription":
            # The same connections, before and after each subscribes to 10 of 1,000 topics.
            per = 10
            conns = [upgraded(server, "/pubsub") for _ in range(n)]
            time.sleep(0.3)
            before = server.rss()
            for i, s in enumerate(conns):
                s.sendall(b"".join(masked_text(f'{{"op":"subscribe","topic":"t{(i * per + k) % 1000}"}}')
                                   for k in range(per)))
            for s in conns:
                read_frames(s, per)
            time.sleep(0.5)
            after = server.rss()
            units, what = n * per, f"{n} connections x {per} subscriptions (1,000 topics)"
        elif name == "head-trickle":
            # Each client sends 150 bytes of a request head one byte at a time: the server reads
            # every byte on its own (what a client trickling one byte a second makes it do).
            warm_conns = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(warm)]
            trickle(warm_conns, len(TRICKLE_HEAD))
            time.sleep(0.3)
            before = server.rss()
            conns = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(n)]
            trickle(conns, len(TRICKLE_HEAD))
            time.sleep(0.5)
            after = server.rss()
            conns += warm_conns
            units, what = n, f"{n} clients that trickled a 150-byte request head one byte per read"
        else:
            open_one, what = {
                "head": (slow_head, "clients holding 30 bytes of a request head"),
                "asking": (asking, "upgrades waiting for an application that never answers (auth = proxy)"),
                "idle": (upgraded, "idle upgraded plain connections"),
                "tls": (lambda srv: upgraded(srv, tls=True), "idle TLS connections after the handshake"),
                "tls-handshake": (tls_half_open, "TLS connections mid-handshake (ClientHello sent)"),
                "tls-partial-header": (tls_partial(lambda n: 5),
                                       "TLS clients that sent the 5-byte record header of a ClientHello"),
                "tls-partial-hello": (tls_partial(lambda n: n // 2),
                                      "TLS clients that sent half a ClientHello"),
                "backend": (lambda srv: upgraded(srv, "/backend"), "idle clients, each with a UNIX backend link"),
                "broker": (broker_client, "idle broker clients, each holding its own token"),
                "admin-body": (admin_half_body, "admin requests holding half a body (head + 100 of 30,000 bytes)"),
                "deflate-shared": (compressing("/zshared"), "idle clients after a compressed echo, compression = shared"),
                "legacy": (legacy_client, "idle hixie-76 clients after one echo"),
                "legacy-key3": (legacy_waiting_key3, "hixie-76 heads waiting for the rest of key3"),
                "deflate-dedicated": (compressing("/zdedicated"),
                                      "idle clients after a compressed echo, compression = dedicated (window 15, memLevel 8)"),
            }[name]
            before, after, conns = measure(server, open_one, n, warm)
            units, what = n, f"{n} {what}"
        per_unit = (after - before) * 1024 / units
        print(f"{name:14} {per_unit:8.0f} B   {what}: RSS {before} -> {after} KiB", flush=True)
        for s in conns:
            s.close()
        return per_unit
    finally:
        server.stop()
        if backend_proc:
            backend_proc.terminate()
            backend_proc.wait()


def main():
    args = sys.argv[1:]
    opts = {"--bin": "target/release/wsgate", "--unix-echo": "target/release/unix-echo", "--n": "10000",
            "--warm": "500", "--trim": "true", "--workers": "1"}
    stages = []
    while args:
        a = args.pop(0)
        if a in opts:
            opts[a] = args.pop(0)
        else:
            stages.append(a)
    stages = stages or ["head", "head-trickle", "asking", "idle", "tls", "tls-handshake", "tls-partial-header",
                        "tls-partial-hello", "backend", "subscription", "broker", "admin-body",
                        "deflate-shared", "deflate-dedicated", "legacy", "legacy-key3", "leave"]
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # the backend socket must be reachable after the privilege drop
        for name in stages:
            stage(name, opts["--bin"], opts["--unix-echo"], tmp, int(opts["--n"]), int(opts["--warm"]),
                  opts["--trim"], int(opts["--workers"]))


if __name__ == "__main__":
    main()
