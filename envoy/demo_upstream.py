"""The demo upstream: answers every request with the request it received
(method, path, headers, body size) as JSON, so a user can see what Tollgate
forwarded (identity headers in, Authorization out).

GET /__received on the upstream's own port (not through Envoy) lists every
request it has seen, which the tests use to prove token requests never
arrive here.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_seen: list[dict] = []
_lock = threading.Lock()


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tollgate-demo-upstream"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/__received":
            with _lock:
                payload = json.dumps(_seen).encode()
        else:
            headers: dict[str, list[str]] = {}
            for name, value in self.headers.items():
                headers.setdefault(name.lower(), []).append(value)
            record = {"method": self.command, "path": self.path, "headers": headers, "body_bytes": len(body)}
            with _lock:
                _seen.append(record)
            payload = json.dumps(record, indent=1).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _answer

    def do_HEAD(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, fmt: str, *args) -> None:  # quiet: Envoy logs access
        pass


class Server(ThreadingHTTPServer):
    # Envoy opens upstream connections in bursts under load; the default
    # listen backlog of 5 drops connects, which Envoy turns into 503s.
    request_queue_size = 256
    daemon_threads = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=0)
    # In a container the upstream is reached over the compose network; on
    # the host it stays on loopback.
    ap.add_argument("--host", default="127.0.0.1")
    a = ap.parse_args()
    server = Server((a.host, a.port), Echo)
    print(f"demo upstream listening on http://{a.host}:{server.server_address[1]}", flush=True)
    # As a container's PID 1 no signal has a default action: without this,
    # `docker compose down` waits out its whole grace period, then kills.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        sys.stdout.flush()


if __name__ == "__main__":
    main()
