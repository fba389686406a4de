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
(``max_frame_size``), 1013 too many clients (try again later). Malformed JSON, unknown
commands, bad setting values and undecodable frames are logged (throttled) and counted;
the connection stays open.

Bearer tokens: ``Authorization: Bearer <token>`` header (preferred) or ``?token=<token>``
in the URL. Prefer the header: URLs end up in proxy and server logs. Tokens are compared
with :func:`hmac.compare_digest` and never logged.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import hmac
import logging
import os
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from . import protocol
from .processing import FrameFailed, Processor, UndecodableFrame
from .protocol import ClientSettings, Command, ProtocolError

LOG = logging.getLogger("facerec.bridge")

AUTH_MODES = ("token", "mtls", "none")
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
JPEG_MAGIC = b"\xff\xd8\xff"
CERT_HELP = (
    "the bridge only serves TLS (wss://): set certfile and keyfile. For a self-signed "
    "test pair run `python3 -m facerec_server.bridge.certs --out-dir <dir> --host <name-or-ip>` "
    "(writes ca.pem, server.pem, server.key; give clients --cafile ca.pem)")

# Counter names, per client and global.
COUNTERS = (
    "frames_received", "frames_processed", "frames_dropped", "frames_skipped",
    "bytes_received", "decode_errors", "processing_errors", "malformed", "unknown_command",
    "bad_context", "messages", "settings", "results_sent", "results_dropped",
    "control_dropped", "callback_errors",
)
GLOBAL_COUNTERS = COUNTERS + (
    "connections", "rejected_auth", "rejected_capacity", "closed_rate", "closed_too_big",
)


class BridgeConfigError(ValueError):
    """The bridge cannot start with this configuration (the message says why and what to do)."""


@dataclass
class BridgeConfig:
    """Bridge parameters (the ROS node maps its parameters 1:1 onto these fields)."""

    host: str = "0.0.0.0"
    port: int = 50000  # 0 = pick a free port (tests); see BridgeServer.port
    certfile: Optional[str] = None  # PEM certificate chain (required)
    keyfile: Optional[str] = None  # PEM private key (required)
    auth: str = "token"  # "token" | "mtls" | "none" (none must be explicit; warns)
    tokens_file: Optional[str] = None  # one token per line, or "name:token"; '#' comments
    ca_file: Optional[str] = None  # CA bundle that signs client certificates (auth=mtls)
    max_frame_size: int = 2 * 1024 * 1024  # bytes per websocket message (-> close 1009)
    max_clients: int = 16  # more -> close 1013
    max_message_rate: float = 60.0  # messages/s per client, token bucket; 0 = unlimited
    rate_burst: Optional[float] = None  # bucket capacity; default 2 s worth of messages
    send_queue_size: int = 2  # result sets waiting per client before the stalest is dropped
    control_queue_size: int = 64  # other outgoing messages (echoes) waiting per client
    write_limit: int = 64 * 1024  # transport write buffer high-water mark, bytes
    send_empty_results: bool = True  # send [] when nothing was found (clients' flow control)
    workers: int = 1  # processor threads shared by all clients
    ping_interval: Optional[float] = 20.0
    ping_timeout: Optional[float] = 20.0
    open_timeout: Optional[float] = 10.0  # TLS + websocket handshake
    default_settings: ClientSettings = field(default_factory=ClientSettings)

    def validate(self) -> None:
        if self.auth not in AUTH_MODES:
            raise BridgeConfigError(f"auth must be one of {AUTH_MODES}, got {self.auth!r}")
        if not self.certfile or not self.keyfile:
            raise BridgeConfigError(CERT_HELP)
        for label, path in (("certfile", self.certfile), ("keyfile", self.keyfile)):
            if not os.path.isfile(path):
                raise BridgeConfigError(f"{label} {path!r} does not exist; {CERT_HELP}")
        if self.auth == "token":
            if not self.tokens_file:
                raise BridgeConfigError(
                    "auth=token needs tokens_file (one token per line, or name:token); "
                    "use auth=none explicitly to run without authentication")
            load_tokens(self.tokens_file)  # raises when unreadable or empty
        if self.auth == "mtls" and not (self.ca_file and os.path.isfile(self.ca_file)):
            raise BridgeConfigError("auth=mtls needs ca_file: the CA that signs client "
                                    "certificates (see facerec_server.bridge.certs --client)")
        if self.max_frame_size <= 0 or self.max_clients <= 0 or self.send_queue_size <= 0:
            raise BridgeConfigError("max_frame_size, max_clients and send_queue_size must be > 0")
        if self.workers <= 0:
            raise BridgeConfigError("workers must be > 0")


def load_tokens(path: str) -> List[Tuple[str, str]]:
    """(name, token) pairs from ``path``: one token per line, optionally ``name:token``
    (split at the first colon); blank lines and lines starting with '#' are ignored.
    Unnamed tokens are named ``token<line>``."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise BridgeConfigError(f"cannot read tokens_file {path!r}: {exc.strerror}") from None
    tokens = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        if not sep:
            name, token = f"token{number}", line
        name, token = name.strip(), token.strip()
        if token:
            tokens.append((name or f"token{number}", token))
    if not tokens:
        raise BridgeConfigError(f"tokens_file {path!r} holds no token")
    return tokens


def make_ssl_context(config: BridgeConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.certfile, config.keyfile)
    if config.auth == "mtls":
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=config.ca_file)
    return context


class _TokenBucket:
    def __init__(self, rate: float, burst: float):
        self.rate, self.capacity = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


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

    def __init__(self, server: "BridgeServer", ws, client_id: str, principal: str):
        self.ws = ws
        self.id = client_id
        self.principal = principal
        self.settings = server.config.default_settings.copy()
        self.settings.name = client_id
        self.counters: Dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.pending: Optional[Tuple[bytes, float]] = None
        self.frame_ready = asyncio.Event()
        self.log_budget: Dict[str, int] = {}
        self.outbox = _Outbox(server.config.send_queue_size, server.config.control_queue_size,
                              lambda key: server._count(self, key))
        rate = server.config.max_message_rate
        burst = server.config.rate_burst or max(1.0, 2.0 * rate)
        self.bucket = _TokenBucket(rate, burst) if rate and rate > 0 else None

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
                 on_client: Optional[ClientCallback] = None):
        config.validate()
        self.config = config
        self.processor = processor
        self.on_frame, self.on_result, self.on_client = on_frame, on_result, on_client
        self._tokens = load_tokens(config.tokens_file) if config.auth == "token" else []
        self._ssl = make_ssl_context(config)
        self._sessions: Dict[str, _Session] = {}
        self._global: Dict[str, int] = dict.fromkeys(GLOBAL_COUNTERS, 0)
        self._next_id = 0
        self._server = None
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.auth == "none":
            LOG.warning("bridge authentication is DISABLED (auth=none): any client that "
                        "reaches %s:%s may stream frames", self.config.host, self.config.port)
        self._loop = asyncio.get_running_loop()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            self.config.workers, thread_name_prefix="bridge-proc")
        self._server = await serve(
            self._handle, self.config.host, self.config.port, ssl=self._ssl,
            compression=None,  # JPEG does not deflate; spare the CPU
            max_size=self.config.max_frame_size, write_limit=self.config.write_limit,
            max_queue=4,  # incoming messages buffered before TCP backpressure applies
            ping_interval=self.config.ping_interval, ping_timeout=self.config.ping_timeout,
            open_timeout=self.config.open_timeout,
            logger=protocol.RedactingLogger(LOG.getChild("ws")))
        LOG.info("bridge listening on wss://%s:%d (auth=%s)", self.config.host, self.port,
                 self.config.auth)

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._loop = None  # send_objects() from now on: dropped
        if self._server is not None:
            self._server.close()  # closes connections with 1001 going away
            await self._server.wait_closed()
            self._server = None
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
            clients[s.name] = dict(s.counters, principal=s.principal,
                                   settings=dataclasses.asdict(s.settings))
        return {"global": dict(self._global, clients=len(clients)), "clients": clients}

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

    def _authenticate(self, ws) -> Optional[str]:
        """The authenticated principal's name, or None when authentication fails."""
        if self.config.auth == "none":
            return "anonymous"
        if self.config.auth == "mtls":  # the TLS layer already verified the certificate
            cert = ws.transport.get_extra_info("peercert") or {}
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return value
            for _, value in cert.get("subjectAltName", ()):
                return value
            return "client-certificate"
        candidate = None
        header = ws.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            candidate = value.strip()
        else:
            values = parse_qs(urlsplit(ws.request.path).query).get("token")
            candidate = values[0] if values else None
        if not candidate:
            return None
        principal = None
        for name, token in self._tokens:  # no early exit: timing does not reveal the index
            if hmac.compare_digest(candidate.encode(), token.encode()):
                principal = name
        return principal

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

    async def _handle(self, ws) -> None:
        self._global["connections"] += 1
        peer = ws.remote_address
        principal = self._authenticate(ws)
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
        session = _Session(self, ws, self._unique_name(f"client{self._next_id}", None),
                           principal)
        self._sessions[session.id] = session
        LOG.info("client %r connected from %s as %s", session.name, peer, principal)
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
                    await ws.close(CLOSE_POLICY, "message rate limit exceeded")
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
            LOG.info("client %r disconnected (code %s): %s", session.name, ws.close_code,
                     {k: v for k, v in session.counters.items() if v})
            self._callback(session, self.on_client, session.name, False)

    def _on_binary(self, session: _Session, data: bytes) -> None:
        self._count(session, "frames_received")
        self._count(session, "bytes_received", len(data))
        if not data.startswith(JPEG_MAGIC):
            self._count(session, "decode_errors")
            self._log_throttled(session, "decode", "binary message is not a JPEG")
            return
        stamp = time.time()
        self._callback(session, self.on_frame, session.name, data, stamp)
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
        if message.command == Command.SETTING_NAME:
            old, new = session.name, self._unique_name(message.context, session)
            if new != old:
                session.settings.name = new
                LOG.info("client %r is now called %r", old, new)
                self._callback(session, self.on_client, old, False)
                self._callback(session, self.on_client, new, True)
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
            messages = []
            if faces is not None and (faces or self.config.send_empty_results):
                messages.append(protocol.encode(
                    Command.MESSAGE_TAG_FACE, protocol.face_tags(faces)))
            if objects is not None and (objects or self.config.send_empty_results):
                messages.append(protocol.encode(
                    Command.MESSAGE_TAG_OBJECT, protocol.object_tags(objects)))
            if messages:
                session.outbox.put_result(messages)

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
