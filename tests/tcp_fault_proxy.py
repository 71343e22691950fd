"""A real TCP proxy on 127.0.0.1 in front of a storage server, which can cut it off on cue.

A storage outage is the server going away under open connections and refusing new ones until
it is back. Emulators that keep their data in memory (moto, gcp-storage-emulator) lose it when
killed, and a shared sshd or Azurite cannot be restarted with another test's data in flight, so
the tests put this proxy between artifactd and storage instead: `cut` resets every connection
it carries (SO_LINGER 0, so the peers see ECONNRESET at once, as when a server process dies)
and resets every new one at accept until `restore`. `cut_after` arms a cut at a byte count in
one direction, so an outage lands mid-transfer at the same point on every run, however fast
the machine is. The listening port never changes, so artifactd's configuration stays valid.

The proxy is protocol-blind: it suits HTTP stores and SSH, not FTP (whose data connections go
to ports the server announces, around the proxy).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

UP, DOWN = "up", "down"
"""Client to storage (request bodies, uploads), storage to client (downloads)."""
_LINGER_RESET = struct.pack("ii", 1, 0)


def _reset(sock: socket.socket) -> None:
    """Ends `sock` at once: the shutdown wakes a pump thread blocked on it (a bare close would
    wait for that thread, leaving the connection open), and with SO_LINGER 0 the close sends a
    RST rather than a FIN, so the peer's next read or write fails."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()


class TcpFaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self._listener.settimeout(0.1)  # so the accepting thread notices `stop`
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._down = False
        self._stopping = threading.Event()
        self.forwarded = {UP: 0, DOWN: 0}
        self._trigger: tuple[str, int] | None = None
        self.cut_at: float | None = None
        """`time.monotonic()` of the last cut."""
        self.was_cut = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def cut(self) -> None:
        """Storage goes away: every open connection is reset, and every new one until
        `restore`."""
        with self._lock:
            self._down = True
            self._trigger = None
            pairs, self._pairs = self._pairs, []
            self.cut_at = time.monotonic()
        self.was_cut.set()  # first: the failure may reach the client at once
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def cut_after(self, direction: str, count: int) -> None:
        """Cuts once `count` more bytes have been forwarded in `direction` (UP or DOWN)."""
        with self._lock:
            self.was_cut.clear()
            self._trigger = (direction, self.forwarded[direction] + count)

    def restore(self) -> None:
        """Storage is back: new connections are forwarded again."""
        with self._lock:
            self._down = False

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
        self._listener.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                down = self._down
            if down:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._down:  # cut while connecting
                    _reset(client)
                    _reset(upstream)
                    continue
                self._pairs.append((client, upstream))
            for source, sink, direction in ((client, upstream, UP), (upstream, client, DOWN)):
                threading.Thread(
                    target=self._pump, args=(source, sink, direction), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                with suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)  # a clean end passes on as one
                return
            try:
                sink.sendall(data)
            except OSError:
                return
            with self._lock:
                self.forwarded[direction] += len(data)
                trigger = self._trigger
                due = trigger is not None and trigger[0] == direction
                due = due and self.forwarded[direction] >= trigger[1]  # type: ignore[index]
            if due:
                self.cut()
                return


@contextmanager
def tcp_fault_proxy(upstream_host: str, upstream_port: int) -> Iterator[TcpFaultProxy]:
    proxy = TcpFaultProxy(upstream_host, upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
