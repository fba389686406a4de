"""Plain HTTPS requests on the bridge's port: a small, strict HTTP/1.1 server (no I/O policy).

The bridge's connections start TLS themselves (:mod:`.server`); a connection whose first
request is not a websocket upgrade is handed to :class:`HttpConnection`, which reads
requests one at a time and answers each with the application's ``handle(request)``
coroutine. Everything is bounded:

* a request head (request line and headers) of at most :data:`MAX_HEAD` bytes and
  :data:`MAX_HEADERS` headers; a body only with ``Content-Length``, at most ``max_body``
  bytes (bigger: 413 and the connection closes); ``Transfer-Encoding`` is refused (501);
* one request at a time per connection (the next is not read before the answer is written
  and the transport's buffer has drained); keep-alive connections close after
  ``idle_timeout`` seconds without a request;
* the application bounds how many connections it keeps (:class:`ConnectionTable`).

Malformed requests get 400 and the connection closes. Nothing here logs a header value.
"""
from __future__ import annotations

import asyncio
import http
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

LOG = logging.getLogger("facerec.bridge.http")

MAX_HEAD = 16 * 1024  # bytes of request line + headers
MAX_HEADERS = 64
_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def is_websocket_upgrade(head: bytes) -> bool:
    """Whether a request head (without the final blank line) asks for a websocket:
    an ``Upgrade`` header naming ``websocket``."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"upgrade" \
                and b"websocket" in [v.strip().lower() for v in value.split(b",")]:
            return True
    return False


def same_origin(headers) -> bool:
    """Whether a browser request comes from a page of this origin: ``Sec-Fetch-Site`` is
    same-origin or none, or (browsers without it) ``Origin`` is ``https://<Host>``. Requests
    with neither (scripts, devices) pass: they carry their own credential."""
    site = headers.get("Sec-Fetch-Site", "")
    if site:
        return site in ("same-origin", "none")
    origin = headers.get("Origin", "")
    return not origin or origin == f"https://{headers.get('Host', '')}"


class Headers:
    """Request headers: case-insensitive names; repeated headers kept in order."""

    def __init__(self, items: List[Tuple[str, str]]):
        self.items = items

    def get(self, name: str, default: str = "") -> str:
        values = self.get_all(name)
        return ", ".join(values) if values else default

    def get_all(self, name: str) -> List[str]:
        name = name.lower()
        return [value for key, value in self.items if key == name]

    def __contains__(self, name: str) -> bool:
        return bool(self.get_all(name))


@dataclass
class Request:
    """One HTTP request. ``path`` is percent-decoded, ``query`` parsed (first value of each
    name); ``target`` is the raw request target (may carry a query: never log it whole)."""

    method: str
    target: str
    headers: Headers
    body: bytes
    address: str
    peercert: Optional[dict]
    path: str = ""
    query: Dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        parts = urlsplit(self.target)
        self.path = unquote(parts.path or "/")
        self.query = {k: v[0] for k, v in parse_qs(parts.query).items()}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: List[Tuple[str, str]] = field(default_factory=list)
    close: bool = False

    def serialize(self, keep_alive: bool) -> bytes:
        try:
            reason = http.HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        names = {name.lower() for name, _ in self.headers}
        if self.body or self.status not in (204, 304):
            lines.append(f"Content-Type: {self.content_type}")
        lines.append(f"Content-Length: {len(self.body)}")
        if "cache-control" not in names:
            lines.append("Cache-Control: no-store")
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


Handler = Callable[[Request], Awaitable[Response]]


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def parse_head(head: bytes) -> Tuple[str, str, str, List[Tuple[str, str]]]:
    """``(method, target, version, [(lower-case name, value)])`` of a request head without
    its final blank line; raises _BadRequest."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or not parts[1] \
            or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise _BadRequest(400, "malformed request line")
    if len(lines) - 1 > MAX_HEADERS:
        raise _BadRequest(431, "too many headers")
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):  # also refuses obsolete line folding
            raise _BadRequest(400, "malformed header")
        headers.append((name.decode("ascii").lower(), value.strip().decode("latin-1")))
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise _BadRequest(400, "non-ASCII request target") from None
    return parts[0].decode("ascii"), target, parts[2].decode("ascii"), headers


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTPS connection answering requests with ``handler``."""

    def __init__(self, handler: Handler, table: "ConnectionTable", max_body: int,
                 idle_timeout: float = 30.0):
        self.handler, self.table = handler, table
        self.max_body, self.idle_timeout = max_body, idle_timeout
        self.transport: Optional[asyncio.Transport] = None
        self.address = "?"
        self._buffer = bytearray()
        self._busy = False  # a request is being answered
        self._closing = False
        self._task: Optional[asyncio.Task] = None
        self._idle: Optional[asyncio.TimerHandle] = None
        self._drained = asyncio.Event()
        self._drained.set()

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else "?"
        self.table.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_HEAD + self.max_body:
            self.transport.pause_reading()  # the current request is read; wait for it
        self._next()

    def eof_received(self) -> None:
        self._closing = True  # the answer in progress is still written, then the transport
        #                       closes (TLS cannot keep a half-closed connection)

    def connection_lost(self, exc) -> None:
        self._closing = True
        self.table.remove(self)
        if self._idle is not None:
            self._idle.cancel()
        if self._task is not None:
            self._task.cancel()
        self._drained.set()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    # --- requests ----------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        return not self._busy

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _arm_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle = asyncio.get_running_loop().call_later(self.idle_timeout, self.close)

    def _next(self) -> None:
        """Start answering the next complete request in the buffer, if any."""
        if self._busy or self._closing:
            return
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 and len(self._buffer) <= MAX_HEAD:
            return  # the head is still coming
        if end < 0 or end > MAX_HEAD:
            self._fail(_BadRequest(431, "request head too large"))
            return
        try:
            method, target, version, items = parse_head(bytes(self._buffer[:end]))
            headers = Headers(items)
            if "transfer-encoding" in headers:
                raise _BadRequest(501, "Transfer-Encoding is not supported: send "
                                       "Content-Length")
            lengths = set(headers.get_all("content-length"))
            if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
                raise _BadRequest(400, "bad Content-Length")
            length = int(lengths.pop()) if lengths else 0
            if length > self.max_body:
                raise _BadRequest(413, f"request body over {self.max_body} bytes")
        except _BadRequest as exc:
            self._fail(exc)
            return
        if len(self._buffer) < end + 4 + length:
            return  # the body is still coming
        body = bytes(self._buffer[end + 4:end + 4 + length])
        del self._buffer[:end + 4 + length]
        keep_alive = version == "HTTP/1.1" \
            and "close" not in headers.get("connection").lower()
        request = Request(method, target, headers, body, self.address,
                          self.transport.get_extra_info("peercert"))
        self._busy = True
        if self._idle is not None:
            self._idle.cancel()
        self._task = asyncio.get_running_loop().create_task(self._answer(request, keep_alive))

    async def _answer(self, request: Request, keep_alive: bool) -> None:
        try:
            response = await self.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one failed request must not end the bridge
            LOG.exception("web request %s %s failed", request.method, request.path[:200])
            response = Response(500, b"internal error (see the bridge's log)\n")
        keep_alive = keep_alive and not response.close and not self._closing
        if self.transport.is_closing():
            return
        self.transport.write(response.serialize(keep_alive))
        if not keep_alive:
            self.transport.close()
            return
        await self._drained.wait()  # a slow reader holds its own connection only
        self._busy = False
        self.transport.resume_reading()
        self._arm_idle()
        self._next()

    def _fail(self, error: _BadRequest) -> None:
        self._closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(Response(error.status, f"{error}\n".encode()).serialize(False))
            self.transport.close()


class ConnectionTable:
    """The open HTTP connections: at most ``limit``; a new one closes the oldest idle one
    (or the oldest, if every one is busy)."""

    def __init__(self, limit: int):
        self.limit = limit
        self._open: "OrderedDict[HttpConnection, None]" = OrderedDict()

    def add(self, connection: HttpConnection) -> None:
        while len(self._open) >= self.limit:
            victim = next((c for c in self._open if c.idle), next(iter(self._open)))
            self._open.pop(victim, None)
            victim.close()
        self._open[connection] = None

    def remove(self, connection: HttpConnection) -> None:
        self._open.pop(connection, None)

    def close_all(self) -> None:
        while self._open:
            self._open.popitem(last=False)[0].close()

    def __len__(self) -> int:
        return len(self._open)
