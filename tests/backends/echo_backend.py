"""A wsgate backend in Python (stdlib only), for the integration tests.

usage: echo_backend.py SOCKET FRAMING [LOG]
  FRAMING: raw | lines | framed | direct | stall | flood | noaccept
  LOG: a file where events are appended (HELLO lines, CLOSE codes), for the tests to check.

Echoes every message. In framed mode it also understands the text commands
  "hello?"    -> replies with the HELLO payload, as text
  "close-me"  -> sends CLOSE 4001 "asked" and closes
  "die"       -> exits at once (a crash, as far as wsgate can tell)
  "split"     -> replies with a text message in three fragments: "abc" "def" "ghi"
and drives pub/sub for its client (protocol version 2 records):
  "id?"          -> replies with the client's id from the HELLO
  "sub:T"        -> SUBSCRIBE T            "unsub:T" -> UNSUBSCRIBE T
  "pub:T:MSG"    -> PUBLISH MSG to T       "pubx:T:MSG" -> the same, not to its own client
  "send:ID:MSG"  -> SEND MSG to connection ID
  "publ:T:ID,ID:MSG" -> PUBLISH MSG to T, not to the connections with those ids
and (protocol version 3) asks about topics with history:
  "req:JSON"     -> REQUEST JSON; every ANSWER record goes to the client as "answer:JSON"
In direct mode it receives the client's socket and writes one WebSocket text frame to it.
In stall mode it accepts and never reads; in flood mode it writes without end; in noaccept
mode it listens with the smallest backlog and never accepts.
"""
import os
import socket
import struct
import sys
import threading
import time


def log(path, line):
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def read_record(conn):
    head = read_exact(conn, 6)
    if head is None:
        return None
    kind, flags, length = head[0], head[1], struct.unpack(">I", head[2:6])[0]
    payload = read_exact(conn, length) if length else b""
    return kind, flags & 1, payload


def record(kind, payload, fin=True):
    return struct.pack(">BBI", kind, 1 if fin else 0, len(payload)) + payload


def serve_framed(conn, logfile):
    kind, _, hello = read_record(conn)
    assert kind == 1, kind
    log(logfile, "HELLO " + hello.decode().replace("\n", "|"))
    while True:
        rec = read_record(conn)
        if rec is None:
            log(logfile, "EOF")
            return
        kind, fin, payload = rec
        if kind == 10:
            conn.sendall(record(2, b"answer:" + payload))
            continue
        if kind == 4:
            code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
            log(logfile, "CLOSE %s %s" % (code, payload[2:].decode()))
            conn.sendall(record(4, payload))
            return
        if kind == 2 and payload == b"hello?":
            conn.sendall(record(2, hello))
        elif kind == 2 and payload == b"close-me":
            conn.sendall(record(4, struct.pack(">H", 4001) + b"asked"))
            return
        elif kind == 2 and payload == b"die":
            os._exit(1)
        elif kind == 2 and payload == b"id?":
            ident = [l for l in hello.decode().split("\n") if l.startswith("id: ")][0][4:]
            conn.sendall(record(2, ident.encode()))
        elif kind == 2 and payload.startswith(b"sub:"):
            conn.sendall(record(5, payload[4:]))
        elif kind == 2 and payload.startswith(b"unsub:"):
            conn.sendall(record(6, payload[6:]))
        elif kind == 2 and (payload.startswith(b"pub:") or payload.startswith(b"pubx:")):
            cmd, topic, msg = payload.split(b":", 2)
            flags = 2 if cmd == b"pubx" else 0
            conn.sendall(record(7, bytes([flags, len(topic)]) + topic + msg))
        elif kind == 2 and payload.startswith(b"publ:"):
            _, topic, ids, msg = payload.split(b":", 3)
            ids = [int(i) for i in ids.split(b",") if i]
            listed = bytes([len(ids)]) + b"".join(struct.pack(">Q", i) for i in ids)
            conn.sendall(record(7, bytes([4, len(topic)]) + topic + listed + msg))
        elif kind == 2 and payload.startswith(b"req:"):
            conn.sendall(record(9, payload[4:]))
        elif kind == 2 and payload.startswith(b"send:"):
            _, ident, msg = payload.split(b":", 2)
            conn.sendall(record(8, struct.pack(">Q", int(ident)) + bytes([0]) + msg))
        elif kind == 2 and payload == b"split":
            conn.sendall(record(2, b"abc", False) + record(2, b"def", False) + record(2, b"ghi", True))
        else:
            conn.sendall(record(kind, payload, fin))


def serve_stream(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def serve_flood(conn):
    chunk = b"x" * 65536
    try:
        while True:
            conn.sendall(chunk)
    except OSError:
        return


def serve_direct(conn, logfile):
    msg, fds, _, _ = socket.recv_fds(conn, 65536, 1)
    # The HELLO record, then whatever the client sent past its request.
    kind = msg[0]
    length = struct.unpack(">I", msg[2:6])[0]
    hello = msg[6:6 + length]
    log(logfile, "DIRECT %d %s" % (kind, hello.decode().replace("\n", "|")))
    client = socket.socket(fileno=fds[0])
    text = b"from the backend, directly"
    client.sendall(bytes([0x81, len(text)]) + text)
    client.close()


def main():
    path, mode = sys.argv[1], sys.argv[2]
    logfile = sys.argv[3] if len(sys.argv) > 3 else None
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen(0 if mode == "noaccept" else 128)
    print("ready", flush=True)
    if mode == "noaccept":
        time.sleep(3600)
    while True:
        conn, _ = srv.accept()
        if mode == "framed":
            target, args = serve_framed, (conn, logfile)
        elif mode == "direct":
            target, args = serve_direct, (conn, logfile)
        elif mode == "stall":
            target, args = time.sleep, (3600,)
        elif mode == "flood":
            target, args = serve_flood, (conn,)
        else:
            target, args = serve_stream, (conn,)
        threading.Thread(target=target, args=args, daemon=True).start()


if __name__ == "__main__":
    main()
