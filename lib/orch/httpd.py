"""A small read-only HTTP server for loopback: what `orch-dash serve` runs on.

Rules:
- One thread reads every connection's request head, with a selector: a
  client that sends slowly, or nothing, holds no worker.  A head not complete
  within HEAD_TIMEOUT_S, or longer than MAX_HEAD bytes, ends its connection
  (408, 431); at most MAX_CONNS connections are open at once (beyond that a
  new one is closed at once).
- Only complete heads reach the WORKERS threads that answer; an answer is
  sent with a SEND_TIMEOUT_S timeout, so a client that stops reading frees
  its worker too.  One request per connection (Connection: close).
- A client that goes away is no error: nothing is printed for it.
- The server knows nothing of orch: ANSWER(method, path, headers) gives
  (status, headers, body) for every request that parses.
"""

import selectors
import socket
import sys
import time

HEAD_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 5.0
MAX_HEAD = 16 << 10
MAX_CONNS = 512
WORKERS = 4
BACKLOG = 128
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout",
           431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def listen(host, port):
    """A listening socket on HOST:PORT (raises OSError)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def serve(sock, answer, server_name):
    """Serve on the listening SOCK until interrupted."""
    from concurrent.futures import ThreadPoolExecutor
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    heads = {}  # connection -> [bytes so far, deadline]
    with ThreadPoolExecutor(WORKERS) as pool:
        try:
            while True:
                now = time.monotonic()
                wait = min((d for _, d in heads.values()), default=now + 60) - now
                for key, _ in sel.select(max(wait, 0)):
                    if key.fileobj is sock:
                        _accept(sock, sel, heads)
                        continue
                    conn = key.fileobj
                    try:
                        data = conn.recv(4096)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        _drop(sel, heads, conn)
                        continue
                    heads[conn][0] += data
                    head = heads[conn][0]
                    if b"\r\n\r\n" in head or b"\n\n" in head:
                        sel.unregister(conn)
                        del heads[conn]
                        pool.submit(_respond, conn, head, answer, server_name)
                    elif len(head) > MAX_HEAD:
                        _drop(sel, heads, conn, 431)
                now = time.monotonic()
                for conn in [c for c, (_, d) in heads.items() if d <= now]:
                    _drop(sel, heads, conn, 408)
        finally:
            for conn in list(heads):
                _drop(sel, heads, conn)
            sel.close()


def _accept(sock, sel, heads):
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # out of descriptors, say: the others are still served
        if len(heads) >= MAX_CONNS:
            conn.close()
            continue
        conn.setblocking(False)
        heads[conn] = [b"", time.monotonic() + HEAD_TIMEOUT_S]
        sel.register(conn, selectors.EVENT_READ)


def _drop(sel, heads, conn, status=None):
    sel.unregister(conn)
    del heads[conn]
    if status:
        try:
            conn.send(_response(status, {}, b"", "orch"))
        except OSError:
            pass
    conn.close()


def parse(head):
    """(method, target, {lower-case name: value}) of a request head, or None."""
    text = head.decode("latin-1").replace("\r\n", "\n").split("\n\n", 1)[0]
    lines = text.split("\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[1]:
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            return None
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], headers


def _respond(conn, head, answer, server_name):
    try:
        conn.setblocking(True)
        conn.settimeout(SEND_TIMEOUT_S)
        request = parse(head)
        if request is None:
            reply = _response(400, {"Content-Type": "text/plain"}, b"bad request\n",
                              server_name)
        else:
            method, target, headers = request
            status, extra, body = answer(method, target, headers)
            reply = _response(status, extra, b"" if method == "HEAD" else body, server_name,
                              length=len(body))
        conn.sendall(reply)
    except OSError:
        pass  # the client went away, or stopped reading: nothing to tell anyone
    except Exception as e:  # noqa: BLE001 - a bug answering: one line, the server goes on
        print(f"{server_name.split('/')[0]}: internal error answering a request: "
              f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        conn.close()


def _response(status, headers, body, server_name, length=None):
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}", f"Server: {server_name}",
             f"Content-Length: {len(body) if length is None else length}",
             "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
