"""Secure websocket bridge speaking the iot-facerecognition protocol (no ROS here).

Devices connect over ``wss://`` (TLS always; plain ``ws://`` fails the TLS handshake),
authenticate (bearer token, client certificate, or explicitly nothing), receive
INIT_REQUEST, announce their name and settings (each echoed back as acknowledgement),
stream JPEG frames as binary messages and receive MESSAGE_TAG_FACE / MESSAGE_TAG_OBJECT
results. Every text message the bridge sends is JSON, whatever form the client's commands
took. See :mod:`facerec_server.bridge.protocol` for the wire format.

Per client:

* **latest-frame semantics**: one frame is processed at a time; a frame arriving while
  another is processed replaces the waiting one (``frames_dropped``);
* results go out ahead of anything else queued for that client; the outgoing result
  queue holds at most ``send_queue_size`` result sets and drops the stalest
  (``results_dropped``); the transport's buffer is bounded by ``write_limit``;
* a disabled part (faces / objects) is not computed; with both off frames are only
  relayed through ``on_frame``.

Object results either come with the frame's reply (the processor returns them) or, when the
processor returns ``objects=None``, from the host on their own schedule through the
thread-safe :meth:`BridgeServer.send_objects` (``facerec_server.bridge_node`` does this so
that a slow object model never delays face results). Flow control for clients that wait for
one reply per frame: in the second mode the per-frame reply is MESSAGE_TAG_FACE (command 3)
only; MESSAGE_TAG_OBJECT (command 4) replies are asynchronous, at most as often as the host
runs object recognition, and are not tied to a particular frame. A client with faces
disabled then gets no per-frame reply at all.

Close codes: 1008 authentication failed or message rate exceeded, 1009 message too big
(``max_frame_size``), 1013 too many clients (try again later); HTTP 429 (no upgrade) for an
address backing off after failed logins. Malformed JSON, unknown commands, bad setting
values and undecodable frames are logged (throttled) and counted; the connection stays open.
A frame the processor fails on gets no result, the client a MESSAGE ``frame not processed:
<reason>``; the next frame is processed as usual.

Authentication lives in :class:`~facerec_server.bridge.auth.Authenticator` (bearer token,
web session cookie, client certificate or none; per-address back-off); with a token or
certificate the credential's name is the client's name, SETTING_NAME cannot change it.
Bearer tokens: ``Authorization: Bearer <token>`` header (preferred) or ``?token=<token>`` in
the URL. Prefer the header: URLs end up in proxy and server logs. Tokens are compared with
:func:`hmac.compare_digest` and never logged.

With a ``web`` application (:mod:`facerec_server.bridge.web`) the same port also answers
plain HTTPS requests: the first request of a connection that is not a websocket upgrade
hands the connection to :mod:`facerec_server.bridge.http` (same TLS, same gate).

Connections are accepted as plain TCP and upgraded to TLS by the bridge (:class:`_Gate`):
at most ``max_pending`` may be in their handshakes (the oldest is closed), and TLS starts
only when a connection has sent something, so idle connections cost little and never
exhaust the file descriptors.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import errno
import functools
import http
import logging
import os
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from . import http as http_server
from . import protocol
from .auth import AuthResult, Authenticator, Principal
from .config import BridgeConfig, BridgeConfigError, make_ssl_context
from .processing import FrameFailed, Processor, UndecodableFrame
from .protocol import ClientSettings, Command, ProtocolError

LOG = logging.getLogger("facerec.bridge")

CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
JPEG_MAGIC = b"\xff\xd8\xff"

# Counter names, per client and global.
COUNTERS = (
    "frames_received", "frames_processed", "frames_dropped", "frames_skipped",
    "bytes_received", "decode_errors", "processing_errors", "malformed", "unknown_command",
    "bad_context", "messages", "settings", "results_sent", "results_dropped",
    "control_dropped", "callback_errors", "names_refused",
)
GLOBAL_COUNTERS = COUNTERS + (
    "connections", "rejected_auth", "rejected_backoff", "rejected_capacity", "closed_rate",
    "closed_too_big", "accept_errors",
)


class _TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.capacity = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> bool:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def full(self) -> bool:
        self._refill()
        return self.tokens >= self.capacity


class _ParkedBuckets:
    """Message-rate buckets of closed connections, by (principal, source address): a new
    connection from the same key continues the emptiest of them, so a reconnect does not
    refill the allowance. A bucket that has refilled is forgotten; at most ``size`` kept."""

    def __init__(self, size: int = 4096):
        self.size = size
        self._table: "OrderedDict[Tuple[str, str], _TokenBucket]" = OrderedDict()

    def park(self, key: Tuple[str, str], bucket: _TokenBucket) -> None:
        if bucket.full():
            return
        kept = self._table.pop(key, None)
        if kept is not None and kept.tokens < bucket.tokens:
            bucket = kept
        self._table[key] = bucket
        while len(self._table) > self.size:
            self._table.popitem(last=False)

    def take(self, key: Tuple[str, str]) -> Optional[_TokenBucket]:
        return self._table.pop(key, None)


# --- connections before they are websocket clients -----------------------------------------

class _Gate:
    """Connections that have not finished their TLS and websocket handshakes ("pending").

    The bridge accepts TCP without TLS and starts TLS itself (``loop.start_tls``), so it sees
    each connection from its first moment: at most ``limit`` are pending, and a new one
    closes the oldest pending one (a real client finishes its handshakes in milliseconds).
    TLS starts only once the client has sent something (its ClientHello): an idle
    connection costs a few kB instead of the TLS layer's 256 kB read buffer."""

    def __init__(self, context: ssl.SSLContext, limit: int, handshake_timeout: float,
                 web=None):
        self.context, self.limit = context, limit
        self.web = web  # answers requests that are not websocket upgrades (or None)
        self.handshake_timeout = handshake_timeout
        self.pending: "OrderedDict[_GateConnection, None]" = OrderedDict()
        self.evicted = 0

    def admit(self, connection: "_GateConnection") -> None:
        while len(self.pending) >= self.limit:
            oldest, _ = self.pending.popitem(last=False)
            self.evicted += 1
            oldest.drop()
        self.pending[connection] = None

    def release(self, connection: "_GateConnection") -> None:
        self.pending.pop(connection, None)

    def close_all(self) -> None:
        while self.pending:
            self.pending.popitem(last=False)[0].drop()


class _GateConnection(ServerConnection):
    """A websocket connection that starts as plain TCP: pending in the :class:`_Gate`, then
    upgraded to TLS, then handed to websockets as if it had been accepted with TLS."""

    def __init__(self, protocol_, server, *, gate: _Gate, **kwargs):
        super().__init__(protocol_, server, **kwargs)
        self._gate = gate
        self._raw: Optional[asyncio.Transport] = None
        self._watch_fd: Optional[int] = None
        self._tls_task: Optional[asyncio.Task] = None
        self._handed_over = False
        self._lost = False
        self._tls: Optional[asyncio.Transport] = None  # TLS done, first request not yet read
        self._head: Optional[bytearray] = None  # the first request's head, while it comes in
        self._head_timer: Optional[asyncio.TimerHandle] = None
        self.auth: Optional[AuthResult] = None  # set by BridgeServer._process_request

    def connection_made(self, transport) -> None:  # plain TCP, before TLS
        transport.pause_reading()  # the TLS layer reads the ClientHello
        self._raw = transport
        self._gate.admit(self)
        try:  # wait until the client sends something, on a duplicate of the socket's fd
            self._watch_fd = os.dup(transport.get_extra_info("socket").fileno())
            self.loop.add_reader(self._watch_fd, self._client_spoke)
        except (AttributeError, NotImplementedError, OSError, RuntimeError):
            self._stop_watching()
            self._client_spoke()  # no fd to spare or no add_reader: start TLS now

    def _client_spoke(self) -> None:
        self._stop_watching()
        if not self._lost and self._tls_task is None:
            self._tls_task = self.loop.create_task(self._start_tls(self._raw))

    def _stop_watching(self) -> None:
        fd, self._watch_fd = self._watch_fd, None
        if fd is not None:
            self.loop.remove_reader(fd)
            os.close(fd)

    async def _start_tls(self, transport) -> None:
        if self._gate.web is not None:
            # The first request decides: a websocket upgrade goes to websockets, anything
            # else to the web pages. Until its head is complete the connection stays
            # pending. (Its bytes may arrive before start_tls returns.)
            self._head = bytearray()
        try:
            tls = await self.loop.start_tls(transport, self, self._gate.context,
                                            server_side=True,
                                            ssl_handshake_timeout=self._gate.handshake_timeout)
        except Exception as exc:  # noqa: BLE001 - failed handshake, time-out, or dropped
            # The traceback links asyncio's frames (and the 256 kB TLS buffer) in a cycle
            # only the garbage collector would free: cut it, so memory goes back at once.
            exc.__traceback__ = exc.__context__ = exc.__cause__ = None
            self._gate.release(self)
            transport.abort()
            return
        if self._lost or tls is None or tls.is_closing():
            self._gate.release(self)
            return
        if self._head is None:
            self._hand_to_websockets(tls, b"")
            return
        self._tls = tls
        self._head_timer = self.loop.call_later(self._gate.handshake_timeout, self.drop)
        self._route_first_request()

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            super().data_received(data)
            return
        self._head += data
        if self._tls is not None:
            self._route_first_request()
        elif len(self._head) > http_server.MAX_HEAD and b"\r\n\r\n" not in self._head:
            self.drop()  # no request head is this long

    def _route_first_request(self) -> None:
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > http_server.MAX_HEAD:
                self.drop()  # no request head is this long
            return
        head, self._head = bytes(self._head), None
        self._head_timer.cancel()
        if http_server.is_websocket_upgrade(head[:end]):
            self._hand_to_websockets(self._tls, head)
        else:
            self._gate.release(self)
            self._gate.web.adopt(self._tls, head)  # the transport gets a new protocol

    def _hand_to_websockets(self, tls, data: bytes) -> None:
        self._handed_over = True
        super().connection_made(tls)  # websockets takes over (handshake, open_timeout)
        if data:
            super().data_received(data)

    def handshake_done(self) -> None:
        """The websocket handshake is over: no longer pending."""
        self._gate.release(self)

    def drop(self) -> None:
        """Close a pending connection at once (evicted, or the bridge stops)."""
        self._stop_watching()
        if self._handed_over:
            self.transport.abort()
        elif self._tls is not None:
            self._tls.abort()
        elif self._raw is not None:
            self._raw.abort()

    def eof_received(self):
        if self._handed_over:
            return super().eof_received()
        self.drop()  # closed before its first request (browsers pre-connect sockets)
        return None

    def connection_lost(self, exc) -> None:
        self._lost = True
        self._stop_watching()
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._gate.release(self)
        if self._handed_over:
            super().connection_lost(exc)


class _Outbox:
    """Bounded outgoing queues of one client: result sets first, then control messages."""

    def __init__(self, result_depth: int, control_depth: int, count: Callable[[str], None]):
        self.results: Deque[List[str]] = deque()
        self.control: Deque[str] = deque()
        self.result_depth, self.control_depth = result_depth, control_depth
        self._count = count
        self._ready = asyncio.Event()

    def put_result(self, messages: List[str]) -> None:
        if len(self.results) >= self.result_depth:
            self.results.popleft()
            self._count("results_dropped")
        self.results.append(messages)
        self._ready.set()

    def put_control(self, message: str) -> None:
        if len(self.control) >= self.control_depth:
            self.control.popleft()
            self._count("control_dropped")
        self.control.append(message)
        self._ready.set()

    async def get(self) -> Tuple[bool, List[str]]:
        while not self.results and not self.control:
            self._ready.clear()
            await self._ready.wait()
        if self.results:
            return True, self.results.popleft()
        return False, [self.control.popleft()]


class _Session:
    """State of one connected client."""

    def __init__(self, server: "BridgeServer", ws, client_id: str, name: str,
                 principal: Principal, address: str):
        self.ws = ws
        self.id = client_id
        self.principal = principal
        self.settings = server.config.default_settings.copy()
        self.settings.name = name
        self.counters: Dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.pending: Optional[Tuple[bytes, float]] = None
        self.frame_ready = asyncio.Event()
        self.log_budget: Dict[str, int] = {}
        self.outbox = _Outbox(server.config.send_queue_size, server.config.control_queue_size,
                              lambda key: server._count(self, key))
        rate = server.config.max_message_rate
        burst = server.config.rate_burst or max(1.0, 2.0 * rate)
        self.rate_key = (principal.name, address)
        self.bucket = None
        if rate and rate > 0:  # a reconnect continues the bucket of its closed connection
            self.bucket = server._parked.take(self.rate_key) or _TokenBucket(rate, burst)

    @property
    def name(self) -> str:
        return self.settings.name


FrameCallback = Callable[[str, bytes, float], None]
ResultCallback = Callable[[str, float, Optional[list], Optional[list], float], None]
ClientCallback = Callable[[str, bool], None]


class BridgeServer:
    """The websocket bridge.

    ``processor`` is the blocking callable described in
    :mod:`facerec_server.bridge.processing`. Callbacks run on the bridge's event loop
    thread and must be quick (e.g. a ROS publish); exceptions are logged and counted:

    * ``on_frame(client_name, jpeg, stamp)`` for every accepted JPEG frame (before
      processing, also for frames later dropped); ``stamp`` is ``time.time()`` at receipt;
    * ``on_result(client_name, stamp, faces, objects, processing_time)`` for every processed
      frame; ``stamp`` is that frame's receipt stamp; ``faces`` / ``objects`` are lists of
      ``FaceResult`` / ``ObjectResult`` or None when that part is disabled for the client
      (``objects`` is also None when the processor returned None: objects are then the
      host's business, see :meth:`send_objects`; they are not reported here);
    * ``on_client(client_name, connected)`` when a client appears or goes; a rename is
      reported as the old name disconnecting and the new one connecting.

    Client names are unique among connected clients, compared by
    :func:`protocol.sanitize_name` (a duplicate gets ``(1)``, ``(2)``... appended).
    """

    def __init__(self, config: BridgeConfig, processor: Processor,
                 on_frame: Optional[FrameCallback] = None,
                 on_result: Optional[ResultCallback] = None,
                 on_client: Optional[ClientCallback] = None, web=None):
        config.validate()
        self.config = config
        self.web = web  # a facerec_server.bridge.web.WebApp, or None: no web pages
        if web is not None:
            web.bind(self)
        self.processor = processor
        self.on_frame, self.on_result, self.on_client = on_frame, on_result, on_client
        self.auth = Authenticator(config)
        self._ssl = make_ssl_context(config)
        self._sessions: Dict[str, _Session] = {}
        self._global: Dict[str, int] = dict.fromkeys(GLOBAL_COUNTERS, 0)
        self._parked = _ParkedBuckets()
        self._next_id = 0
        self._server = None
        self._gate: Optional[_Gate] = None
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._previous_handler = None
        self._accept_error_logged = -1e9

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.auth == "none":
            LOG.warning("bridge authentication is DISABLED (auth=none): any client that "
                        "reaches %s:%s may stream frames", self.config.host, self.config.port)
        self._check_file_limit()
        loop = asyncio.get_running_loop()
        # TLS is started per connection by the gate (ssl=None here), so that connections
        # still in their handshakes are bounded (max_pending) and can be dropped.
        self._gate = _Gate(self._ssl, self.config.max_pending, self.config.open_timeout or 10.0,
                           self.web)
        try:
            self._server = await serve(
                self._handle, self.config.host, self.config.port,
                create_connection=functools.partial(_GateConnection, gate=self._gate),
                process_request=self._process_request,
                compression=None,  # JPEG does not deflate; spare the CPU
                max_size=self.config.max_frame_size, write_limit=self.config.write_limit,
                max_queue=4,  # incoming messages buffered before TCP backpressure applies
                ping_interval=self.config.ping_interval, ping_timeout=self.config.ping_timeout,
                open_timeout=self.config.open_timeout,
                logger=protocol.RedactingLogger(LOG.getChild("ws")))
        except OSError as exc:
            raise BridgeConfigError(_listen_error(self.config, exc)) from None
        self._loop = loop
        self._previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_exception)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.config.workers, thread_name_prefix="bridge-proc")
        if self.web is not None:
            await self.web.start()
        LOG.info("bridge listening on wss://%s:%d (auth=%s)", self.config.host, self.port,
                 self.config.auth)

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        loop, self._loop = self._loop, None  # send_objects() from now on: dropped
        if self._server is not None:
            self._server.close()  # closes connections with 1001 going away
            if self._gate is not None:
                self._gate.close_all()
            await self._server.wait_closed()
            self._server = None
        if self.web is not None:
            await self.web.stop()
        if loop is not None:
            loop.set_exception_handler(self._previous_handler)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Future()
        finally:
            await self.stop()

    # --- introspection -----------------------------------------------------------------------

    def clients(self) -> Dict[str, ClientSettings]:
        """Connected clients: name -> a copy of their settings."""
        return {s.name: s.settings.copy() for s in list(self._sessions.values())}

    def client_settings(self, client_name: str) -> Optional[ClientSettings]:
        """A copy of a connected client's current settings, or None (any thread)."""
        session = self._session_named(client_name)
        return session.settings.copy() if session is not None else None

    def send_objects(self, client_name: str, objects: Sequence) -> bool:
        """Send object results to a connected client outside the frame/reply cycle.

        Thread-safe and non-blocking: the delivery is scheduled on the bridge's event loop.
        There, like per-frame results, the objects are sorted by score and cut to the
        client's ``label_count``, sent as MESSAGE_TAG_OBJECT (``[{"label", "prediction"}]``;
        an empty list only with ``send_empty_results``) through the client's bounded result
        queue (``results_dropped`` when it overflows). They are dropped when by then the
        client has left (or was renamed) or has disabled objects. Returns False when nothing
        was scheduled (bridge not running or no client of that name), else True.
        """
        loop = self._loop
        if loop is None or self._session_named(client_name) is None:
            return False
        try:
            loop.call_soon_threadsafe(self._deliver_objects, client_name, list(objects))
        except RuntimeError:  # the loop has closed meanwhile
            return False
        return True

    def stats(self) -> Dict[str, dict]:
        """``{"global": {counter: n}, "clients": {name: {counter: n, principal, settings}}}``"""
        clients = {}
        for s in list(self._sessions.values()):
            clients[s.name] = dict(s.counters, principal=s.principal.name,
                                   settings=dataclasses.asdict(s.settings))
        gate = self._gate
        return {"global": dict(self._global, clients=len(clients),
                               pending=len(gate.pending) if gate else 0,
                               evicted_pending=gate.evicted if gate else 0),
                "clients": clients}

    # --- internals ---------------------------------------------------------------------------

    def _session_named(self, name: str) -> Optional[_Session]:
        for session in list(self._sessions.values()):
            if session.name == name:
                return session
        return None

    def _deliver_objects(self, client_name: str, objects: list) -> None:
        """Event loop side of :meth:`send_objects`."""
        session = self._session_named(client_name)
        if session is None or not session.settings.objects_enabled:
            return
        objects = protocol_objects(objects, session.settings)
        if objects or self.config.send_empty_results:
            session.outbox.put_result([protocol.encode(
                Command.MESSAGE_TAG_OBJECT, protocol.object_tags(objects))])

    def _count(self, session: Optional[_Session], key: str, n: int = 1) -> None:
        self._global[key] += n
        if session is not None:
            session.counters[key] += n

    def _log_throttled(self, session: _Session, kind: str, message: str, *args,
                       exc_info=None) -> bool:
        """Warn for the first 5 events of a kind per client, then every 100th (True when it
        did); ``exc_info`` (a traceback) only with the first."""
        seen = session.log_budget.get(kind, 0) + 1
        session.log_budget[kind] = seen
        if seen <= 5 or seen % 100 == 0:
            LOG.warning("client %r: " + message + " (%d so far)", session.name, *args, seen,
                        exc_info=exc_info if seen == 1 else None)
            return True
        return False

    def _unique_name(self, wanted: str, session: _Session) -> str:
        taken = {protocol.sanitize_name(s.name) for s in self._sessions.values()
                 if s is not session}
        name, n = wanted, 0
        while protocol.sanitize_name(name) in taken:
            n += 1
            name = f"{wanted}({n})"
        return name

    def _callback(self, session: _Session, callback, *args) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - a hook must not take the bridge down
            self._count(session, "callback_errors")
            LOG.exception("bridge callback %r failed", getattr(callback, "__name__", callback))

    def _process_request(self, connection: "_GateConnection", request):
        """Authenticate the upgrade request (:class:`Authenticator`; a web page's session
        cookie only from a page of this origin); an address that backs off after failed
        logins gets 429 Too Many Requests without a check."""
        address = str((connection.remote_address or ("?",))[0])
        connection.auth = self.auth.check(request.headers, request.path,
                                          connection.transport.get_extra_info("peercert"),
                                          address,
                                          cookie=http_server.same_origin(request.headers))
        if connection.auth.principal is None and connection.auth.retry_after > 0:
            self._global["rejected_backoff"] += 1
            refused = self._global["rejected_backoff"]
            if refused <= 10 or refused % 100 == 0:
                LOG.warning("refused %s: too many failed logins, retry in %.0f s (%d so far)",
                            address, connection.auth.retry_after, refused)
            response = connection.respond(http.HTTPStatus.TOO_MANY_REQUESTS,
                                          "Too many failed logins from this address.\n")
            response.headers["Retry-After"] = str(max(1, round(connection.auth.retry_after)))
            return response
        return None

    async def _handle(self, ws) -> None:
        ws.handshake_done()
        self._global["connections"] += 1
        peer = ws.remote_address
        principal = ws.auth.principal if ws.auth is not None else None
        if principal is None:
            self._global["rejected_auth"] += 1
            rejected = self._global["rejected_auth"]
            if rejected <= 10 or rejected % 100 == 0:  # an attacker must not flood the log
                LOG.warning("rejected %s: authentication failed (%d so far)", peer, rejected)
            await ws.close(CLOSE_POLICY, "authentication failed")
            return
        if len(self._sessions) >= self.config.max_clients:
            self._global["rejected_capacity"] += 1
            LOG.warning("rejected %s (%s): %d clients already connected", peer, principal,
                        len(self._sessions))
            await ws.close(CLOSE_TRY_AGAIN, "too many clients, try again later")
            return
        self._next_id += 1
        client_id = f"client{self._next_id}"
        name = self._unique_name(principal.name if principal.bound else client_id, None)
        session = _Session(self, ws, client_id, name, principal, str((peer or ("?",))[0]))
        self._sessions[session.id] = session
        LOG.info("client %r connected from %s as %s", session.name, peer, principal.name)
        self._callback(session, self.on_client, session.name, True)
        sender = asyncio.create_task(self._send_loop(session))
        worker = asyncio.create_task(self._process_loop(session))
        session.outbox.put_control(protocol.encode(Command.INIT_REQUEST))
        try:
            async for message in ws:
                if session.bucket is not None and not session.bucket.take():
                    self._global["closed_rate"] += 1
                    LOG.warning("client %r exceeded %.0f messages/s: closing", session.name,
                                self.config.max_message_rate)
                    await _close_draining(ws, CLOSE_POLICY, "message rate limit exceeded")
                    break
                if isinstance(message, bytes):
                    self._on_binary(session, message)
                else:
                    self._on_text(session, message)
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CLOSE_TOO_BIG:
                self._global["closed_too_big"] += 1
                LOG.warning("client %r sent a message over %d bytes: closed (1009)",
                            session.name, self.config.max_frame_size)
        finally:
            sender.cancel()
            worker.cancel()
            await asyncio.gather(sender, worker, return_exceptions=True)
            self._sessions.pop(session.id, None)
            if session.bucket is not None:
                self._parked.park(session.rate_key, session.bucket)
            LOG.info("client %r disconnected (code %s): %s", session.name, ws.close_code,
                     {k: v for k, v in session.counters.items() if v})
            self._callback(session, self.on_client, session.name, False)
            if self.web is not None:
                self.web.client_left(session.name, dict(session.counters))

    def _on_binary(self, session: _Session, data: bytes) -> None:
        self._count(session, "frames_received")
        self._count(session, "bytes_received", len(data))
        if not data.startswith(JPEG_MAGIC):
            self._count(session, "decode_errors")
            self._log_throttled(session, "decode", "binary message is not a JPEG")
            return
        stamp = time.time()
        self._callback(session, self.on_frame, session.name, data, stamp)
        if self.web is not None:
            self.web.client_frame(session.name, data, stamp)
        settings = session.settings
        if not (settings.faces_enabled or settings.objects_enabled):
            self._count(session, "frames_skipped")
            return
        if session.pending is not None:
            self._count(session, "frames_dropped")
        session.pending = (data, stamp)
        session.frame_ready.set()

    def _on_text(self, session: _Session, text: str) -> None:
        try:
            message = protocol.parse_text(text, protocol.CLIENT_COMMANDS)
        except ProtocolError as exc:
            self._count(session, exc.kind)
            self._log_throttled(session, exc.kind, "%s", exc.reason)
            return
        except (ValueError, TypeError, RecursionError) as exc:  # a parser gap: still bad input
            self._count(session, "malformed")
            self._log_throttled(session, "malformed", "unparsable message (%s)",
                                type(exc).__name__)
            return
        if message.command == Command.MESSAGE:
            self._count(session, "messages")
            LOG.info("client %r says: %r", session.name, message.context[:500])
            return
        self._count(session, "settings")
        if message.command == Command.SETTING_NAME and session.principal.bound:
            if message.context != session.principal.name:  # the credential decides the name
                self._count(session, "names_refused")
                self._log_throttled(session, "name", "asked to be called %r; the name comes "
                                    "from its credential", message.context)
        elif message.command == Command.SETTING_NAME:
            old, new = session.name, self._unique_name(message.context, session)
            if new != old:
                session.settings.name = new
                LOG.info("client %r is now called %r", old, new)
                self._callback(session, self.on_client, old, False)
                self._callback(session, self.on_client, new, True)
                if self.web is not None:
                    self.web.client_left(old, dict(session.counters))
        else:
            session.settings.apply(message)
            LOG.info("client %r: %s = %r", session.name, message.command.name, message.context)
        session.outbox.put_control(protocol.encode(
            message.command, session.settings.value_of(message.command)))

    async def _send_loop(self, session: _Session) -> None:
        try:
            while True:
                is_result, messages = await session.outbox.get()
                for text in messages:
                    await session.ws.send(text)
                if is_result:
                    self._count(session, "results_sent")
        except ConnectionClosed:
            pass

    async def _process_loop(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await session.frame_ready.wait()
            session.frame_ready.clear()
            if session.pending is None:
                continue
            jpeg, stamp = session.pending
            session.pending = None
            settings = session.settings.copy()
            if not (settings.faces_enabled or settings.objects_enabled):
                self._count(session, "frames_skipped")
                continue
            executor = self._executor
            if executor is None:  # stopping
                return
            try:
                (faces, objects), elapsed = await loop.run_in_executor(
                    executor, _timed, self.processor, session.id, jpeg, settings)
            except asyncio.CancelledError:
                raise
            except UndecodableFrame as exc:
                self._count(session, "decode_errors")
                self._log_throttled(session, "decode", "undecodable frame: %s", exc)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad frame must not end the session
                if self._executor is None:  # stopping: the executor refused the job
                    return
                self._frame_failed(session, exc)
                continue
            self._count(session, "frames_processed")
            faces = list(faces) if settings.faces_enabled else None
            objects = protocol_objects(objects, settings) \
                if settings.objects_enabled and objects is not None else None
            self._callback(session, self.on_result, session.name, stamp, faces, objects,
                           elapsed)
            if self.web is not None:
                self.web.client_result(session.name, stamp, faces, time.time() - stamp)
            messages = []
            if faces is not None and (faces or self.config.send_empty_results):
                messages.append(protocol.encode(
                    Command.MESSAGE_TAG_FACE, protocol.face_tags(faces)))
            if objects is not None and (objects or self.config.send_empty_results):
                messages.append(protocol.encode(
                    Command.MESSAGE_TAG_OBJECT, protocol.object_tags(objects)))
            if messages:
                session.outbox.put_result(messages)

    def _check_file_limit(self) -> None:
        """Warn when the open-file limit leaves too little room for the configured clients
        and pending connections (accept() then fails with EMFILE)."""
        try:
            import resource
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
            return
        needed = self.config.max_clients + self.config.max_pending + 64
        if soft != resource.RLIM_INFINITY and soft < needed:
            LOG.warning("the open-file limit (%d) is below what max_clients + max_pending "
                        "need (about %d): raise it (ulimit -n) or lower them", soft, needed)

    def _loop_exception(self, loop, context: dict) -> None:
        """The event loop's error handler while the bridge runs: accept() failing for lack of
        file descriptors is one throttled line (asyncio logs a traceback per attempt, and
        retries many times a second), everything else goes to the previous handler."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS \
                and "accept" in str(context.get("message", "")):
            self._global["accept_errors"] += 1
            now = time.monotonic()
            if now - self._accept_error_logged >= 10.0:
                self._accept_error_logged = now
                LOG.warning("cannot accept connections: %s (%d times so far); the process is "
                            "at its open-file limit: raise it (ulimit -n) or lower "
                            "max_clients / max_pending", exc.strerror,
                            self._global["accept_errors"])
            return
        if self._previous_handler is not None:
            self._previous_handler(loop, context)
        else:
            loop.default_exception_handler(context)

    def _frame_failed(self, session: _Session, exc: Exception) -> None:
        """A frame the processor could not process: count, log (throttled) and tell the
        client (MESSAGE, as often as the log line), then go on with the next frame."""
        self._count(session, "processing_errors")
        reason = f"{type(exc).__name__}: {exc}" if not isinstance(exc, FrameFailed) \
            else str(exc)
        if self._log_throttled(session, "processing", "frame not processed: %s", reason,
                               exc_info=None if isinstance(exc, FrameFailed) else exc):
            session.outbox.put_control(protocol.encode(
                Command.MESSAGE, f"frame not processed: {reason}"[:500]))


_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


async def _close_draining(ws, code: int, reason: str) -> None:
    """Close while discarding what the client still sends: unread messages would keep the
    transport paused (max_queue), so the client's close reply would never be read and the
    close would wait the whole close timeout."""
    closing = asyncio.ensure_future(ws.close(code, reason))
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    await closing


def _listen_error(config: BridgeConfig, exc: OSError) -> str:
    """One line for an OSError from binding the listening socket."""
    host = f"{config.label('host')} {config.host!r}"
    port = f"{config.label('port')} {config.port}"
    where = f"{host} {port}"
    if isinstance(exc, socket.gaierror):
        return (f"{host} cannot be resolved ({exc.strerror}): use an IP address, a name this "
                "machine resolves, or 0.0.0.0 for every interface")
    if exc.errno == errno.EADDRINUSE:
        return (f"{port} on {host} is in use (another facerec_bridge?): choose another port "
                "or stop the other server")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine: use one of its own"
    if exc.errno == errno.EACCES:
        return f"{port} needs privileges (below 1024): use a port from 1024 up, e.g. 50000"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def protocol_objects(objects, settings: ClientSettings) -> list:
    """Objects sorted by score (highest first), at most ``settings.label_count``."""
    ordered = sorted(objects, key=lambda o: o.score, reverse=True)
    return ordered[:settings.label_count]


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


class BridgeThread:
    """Runs a :class:`BridgeServer` on its own event loop in a daemon thread (for hosts such
    as a ROS node whose main thread spins something else)::

        thread = BridgeThread(BridgeServer(config, processor, on_frame=..., on_result=...))
        thread.start()   # raises what the server's start raised (e.g. port in use)
        ...
        thread.stop()
    """

    def __init__(self, server: BridgeServer):
        self.server = server
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stop: Optional[asyncio.Event] = None
        self._started = threading.Event()
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name="facerec-bridge", daemon=True)

    def start(self, timeout: float = 15.0) -> None:
        self._thread.start()
        if not self._started.wait(timeout):
            raise TimeoutError("bridge did not start")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 15.0) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await self.server.start()
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
            self._started.set()
            return
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await self.server.stop()
