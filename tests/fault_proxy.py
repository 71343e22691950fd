"""A real HTTP proxy on 127.0.0.1 in front of a storage server, which can misbehave on cue.

Direct uploads go from the client straight to storage; the faults they must survive (a 503 on
one part, a refused URL, a part that never finishes) are answers a real storage server gives but
cannot be made to give on demand. This server forwards every request to the storage server and
records the part uploads it sees; `faults` maps a part number to the answers it gives instead of
forwarding, one per attempt: an HTTP status, "hang" to hold the request, or a delay in seconds
before forwarding it (so a presigned URL arrives after it expired).
"""

from __future__ import annotations

import base64
import binascii
import http.client
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

HANG = "hang"
SIGNATURES = ("X-Amz-Signature", "sig", "X-Goog-Signature")  # S3, Azure SAS, GCS V4


def part_number(method: str, path: str) -> int:
    """The part a presigned upload request carries (0: not one), in each store's own terms:
    S3's `partNumber`, an Azure block id (`<id>-<n>`, base64 twice), a GCS part object's name."""
    parts = urlsplit(path)
    query = parse_qs(parts.query)
    if method != "PUT" or not any(name in query for name in SIGNATURES):
        return 0
    if "partNumber" in query:
        return int(query["partNumber"][0])
    if query.get("comp") == ["block"] and "blockid" in query:
        try:
            inner = base64.b64decode(base64.b64decode(query["blockid"][0])).decode()
        except (binascii.Error, UnicodeDecodeError):
            return 0
        return int(inner.rsplit("-", 1)[1])
    found = re.search(r"-(\d+)$", unquote(parts.path))
    return int(found.group(1)) if found else 0


class FaultProxy:
    def __init__(self, upstream: str, *, keep_host: bool = False) -> None:
        """`keep_host`: forward the Host header as the client sent it (the proxy's address),
        as a reverse proxy in front of a store that checks signatures must: URLs are signed
        for the address the client uses, and SigV4 signs the Host header."""
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.keep_host = keep_host
        self.faults: dict[int, list[int | str | float]] = {}
        self.part_puts: list[int] = []  # part numbers of PUTs that reached storage
        self.ranges: list[str] = []  # Range headers of presigned GETs (not the server's own)
        self.release = threading.Event()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                number = part_number(self.command, self.path)
                presigned = any(name in query for name in SIGNATURES)
                if self.command == "GET" and presigned and self.headers.get("Range"):
                    with proxy._lock:
                        proxy.ranges.append(self.headers["Range"])
                if self.command == "PUT" and number:
                    with proxy._lock:
                        planned = proxy.faults.get(number) or []
                        fault = planned.pop(0) if planned else None
                    if fault == HANG:
                        proxy.release.wait(120)
                        self.close_connection = True
                        return
                    if isinstance(fault, float):  # a delay: the request arrives late
                        time.sleep(fault)
                        fault = None
                    if isinstance(fault, int):
                        self.send_response(fault)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    with proxy._lock:
                        proxy.part_puts.append(number)
                connection = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = (
                    self.headers.get("Host", "")
                    if proxy.keep_host
                    else f"{proxy.upstream_host}:{proxy.upstream_port}"
                )
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                # A HEAD answer describes the object; it carries no body of that length.
                length = reply.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


@contextmanager
def fault_proxy(upstream: str, *, keep_host: bool = False) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream, keep_host=keep_host)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
