"""ROS-less camera client for the facerec websocket bridge (iot-facerecognition protocol).

Connects over ``wss://`` only, verifying the server certificate by default (``cafile``; the
system store when not given; ``insecure=True`` / ``--insecure`` turns verification off for
self-signed tests). Authenticates with a bearer token (``Authorization`` header by default;
``token_in_query`` puts it in the URL, which ends up in logs) and/or a client certificate.

On INIT_REQUEST it sends its name and settings; the server echoes each one back
(``BridgeClient.server_settings``). It then streams JPEG frames taken from a callable
(returning bytes, or None at the end), an iterable or an async iterable, with flow control:
at most ``max_in_flight`` frames wait for their result; a frame whose result does not
arrive within ``result_timeout`` seconds is given up on (the server may drop frames; logged,
throttled) and its slot goes to the next frame. Replies carry no frame number but come in the
order the frames were sent, so a reply that arrives after its frame was given up on is
accounted to that frame (its real latency) and does not free the slot of the frame sent since;
given-up frames are forgotten after ``LATE_WINDOW`` result time-outs. If that reply was really
the newer frame's (the given-up frame was dropped by the server), the newer frame then times
out too and is forgotten instead of expected late, which puts the accounting back in step.
When no result at all arrives for ``stall_timeout`` seconds while frames wait for one, the
connection is given up on too (warning) and made again: a new session on the bridge. The next
frame is pulled from the source only when it can be sent, so it is fresh.

Results go to ``on_result(Result)``. Lost connections are re-established with exponential
back-off (``backoff_initial`` doubling up to ``backoff_max``, with jitter) and the settings
are sent again. Authentication and certificate errors are fatal (:class:`BridgeClientError`).

CLI: ``facerec-ws-camera --url wss://host:50000 --name cam1 --cafile ca.pem --source 0``
(token from ``--token-file`` or the ``FACEREC_BRIDGE_TOKEN`` environment variable).
Needs only ``websockets`` (plus OpenCV/numpy for the CLI's capture); no ROS.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import random
import socket
import ssl
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterable, Callable, Deque, Dict, Iterable, List, Optional, Union
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from facerec_server.bridge.protocol import (
    SERVER_COMMANDS, ClientSettings, Command, FaceTag, ObjectTag, ProtocolError,
    RedactingLogger, encode, parse_text)
from facerec_server.core import files
from facerec_server.core.images import DEFAULT_MAX_PIXELS

LOG = logging.getLogger("facerec.ws_client")

#: A given-up frame's late reply is still expected for this many result time-outs.
LATE_WINDOW = 3.0

FrameSourceLike = Union[Callable[[], Optional[bytes]], Iterable[bytes], AsyncIterable[bytes]]
_END = object()


class BridgeClientError(RuntimeError):
    """A fatal error: retrying will not help (bad token, bad certificate, bad URL)."""


@dataclass
class Result:
    """One result message from the bridge."""

    kind: str  # "faces" or "objects"
    tags: List[Union[FaceTag, ObjectTag]]
    received: float  # time.time()
    latency: Optional[float] = None  # seconds since the frame it completes was sent


@dataclass
class ClientStats:
    frames_sent: int = 0
    bytes_sent: int = 0
    results: int = 0
    result_timeouts: int = 0
    connections: int = 0
    reconnects: int = 0
    protocol_errors: int = 0


def make_ssl_context(cafile: Optional[str] = None, certfile: Optional[str] = None,
                     keyfile: Optional[str] = None, insecure: bool = False) -> ssl.SSLContext:
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    return context


class BridgeClient:
    def __init__(self, url: str, settings: Optional[ClientSettings] = None, *,
                 token: Optional[str] = None, token_in_query: bool = False,
                 cafile: Optional[str] = None, certfile: Optional[str] = None,
                 keyfile: Optional[str] = None, insecure: bool = False,
                 on_result: Optional[Callable[[Result], None]] = None,
                 max_in_flight: int = 1, result_timeout: float = 2.0,
                 fps: Optional[float] = None, init_timeout: float = 3.0,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0,
                 open_timeout: float = 10.0, max_size: int = 1024 * 1024,
                 stall_timeout: float = 60.0):
        parts = urlsplit(url)
        if parts.scheme != "wss":
            raise BridgeClientError(f"the bridge only speaks wss:// (TLS), not {url!r}")
        self.settings = settings.copy() if settings else ClientSettings()
        headers = {}
        if token and token_in_query:
            query = "&".join(filter(None, [parts.query, urlencode({"token": token})]))
            url = urlunsplit(parts._replace(query=query))
        elif token:
            headers["Authorization"] = f"Bearer {token}"
        self._url, self._headers = url, headers
        self._ssl = make_ssl_context(cafile, certfile, keyfile, insecure)
        self.on_result = on_result
        self.max_in_flight = max(1, int(max_in_flight))
        self.result_timeout = result_timeout
        self.fps = fps
        self.init_timeout = init_timeout
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.open_timeout, self.max_size = open_timeout, max_size
        self.stall_timeout = stall_timeout
        self._waiting_since: Optional[float] = None  # oldest frame sent since the last result
        self.stats = ClientStats()
        self.server_settings: Dict[Command, Any] = {}  # last echo of each setting
        self.connected = asyncio.Event()
        self._ws = None
        self._in_flight: Deque[float] = deque()  # send times of frames awaiting a reply
        self._late: Deque[float] = deque(maxlen=16)  # send times of frames given up on
        self._suspect: Optional[float] = None  # in flight when a late reply was accounted
        self._slot = asyncio.Event()
        self._stopped = False
        self._fetch: Optional[asyncio.Future] = None
        self._last_send = 0.0

    # --- public API -------------------------------------------------------------------------

    async def run(self, frames: FrameSourceLike, max_frames: Optional[int] = None) -> None:
        """Stream ``frames`` until the source ends, ``max_frames`` were sent or ``stop()``;
        reconnect on connection loss. Raises BridgeClientError on fatal errors."""
        source = _FrameReader(frames)
        backoff = self.backoff_initial
        while not self._stopped:
            try:
                async with connect(self._url, ssl=self._ssl, additional_headers=self._headers,
                                   compression=None, open_timeout=self.open_timeout,
                                   max_size=self.max_size,
                                   logger=RedactingLogger(LOG.getChild("ws"))) as ws:
                    self._ws = ws
                    self.stats.connections += 1
                    if self.stats.connections > 1:
                        self.stats.reconnects += 1
                    LOG.info("connected to %s", _redact(self._url))
                    done = await self._session(ws, source, max_frames)
                    backoff = self.backoff_initial
                    if done:
                        return
            except ConnectionClosed as exc:
                self._check_fatal(exc)
                LOG.warning("connection lost: %s", exc)
            except ssl.SSLCertVerificationError as exc:
                raise BridgeClientError(f"server certificate rejected: {exc.verify_message}; "
                                        "pass --cafile (or --insecure for tests)") from exc
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise BridgeClientError(f"rejected by the server: {exc}") from exc
                LOG.warning("connection failed: %s", exc)
            except (OSError, InvalidHandshake, asyncio.TimeoutError, EOFError) as exc:
                hint = ""
                if isinstance(exc.__cause__, EOFError) or isinstance(exc, EOFError):
                    hint = (" (the server hung up during the handshake: with mTLS, check "
                            "--certfile/--keyfile)")
                LOG.warning("connection failed: %r%s", exc, hint)
            finally:
                self._ws = None
                self.connected.clear()
                self._in_flight.clear()
                self._late.clear()
            if self._stopped:
                return
            delay = backoff * (0.75 + 0.5 * random.random())
            LOG.info("reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)
            backoff = min(backoff * 2.0, self.backoff_max)

    def stop(self) -> None:
        """Stop streaming and close the connection (call from the client's event loop)."""
        self._stopped = True
        self._slot.set()
        if self._ws is not None:
            asyncio.ensure_future(self._ws.close())

    async def send_message(self, text: str) -> None:
        """Send a MESSAGE (logged by the server)."""
        if self._ws is not None:
            await self._ws.send(encode(Command.MESSAGE, text))

    async def update_settings(self, **changes) -> None:
        """Change settings (field names of ClientSettings); sent now if connected, and on
        every reconnect."""
        self.settings = dataclasses.replace(self.settings, **changes)
        if self._ws is not None:
            for text in self.settings.to_messages():
                await self._ws.send(text)

    # --- internals --------------------------------------------------------------------------

    @staticmethod
    def _check_fatal(exc: ConnectionClosed) -> None:
        frame = exc.rcvd
        if frame is not None and frame.code == 1008 and "auth" in frame.reason:
            raise BridgeClientError(f"rejected by the server: {frame.reason}") from exc

    def _expected_parts(self) -> List[str]:
        faces = self.server_settings.get(Command.SETTING_FACERECOGNITIONENABLED,
                                         self.settings.faces_enabled)
        objects = self.server_settings.get(Command.SETTING_OBJDETECTIONENABLED,
                                           self.settings.objects_enabled)
        return [kind for kind, on in (("faces", faces), ("objects", objects)) if on]

    async def _session(self, ws, source: "_FrameReader", max_frames: Optional[int]) -> bool:
        """One connection; True when streaming is finished, False to reconnect."""
        initialised = asyncio.Event()
        self._waiting_since = None
        receiver = asyncio.create_task(self._receive(ws, initialised))
        sender = asyncio.create_task(self._send(ws, source, max_frames, initialised))
        watchdog = asyncio.create_task(self._watch_replies())
        try:
            done, _ = await asyncio.wait({receiver, sender, watchdog},
                                         return_when=asyncio.FIRST_COMPLETED)
            if sender in done:
                sender.result()  # re-raise send errors
                await self._drain()
                return True
            if watchdog in done:  # the session stopped answering: a new one
                await ws.close()
                return self._stopped
            receiver.result()  # re-raise (ConnectionClosed -> reconnect)
            return self._stopped
        finally:
            for task in (receiver, sender, watchdog):
                task.cancel()
            await asyncio.gather(receiver, sender, watchdog, return_exceptions=True)

    async def _watch_replies(self) -> None:
        """Return when frames have waited ``stall_timeout`` seconds without any result."""
        while True:
            since = self._waiting_since
            now = time.monotonic()
            if since is not None and now - since >= self.stall_timeout:
                LOG.warning("no reply from the bridge for %.0f s although frames were sent: "
                            "reconnecting", now - since)
                return
            await asyncio.sleep(min(1.0, self.stall_timeout / 4))

    async def _drain(self) -> None:
        deadline = time.monotonic() + self.result_timeout
        while self._in_flight and time.monotonic() < deadline:
            self._slot.clear()
            try:
                await asyncio.wait_for(self._slot.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break

    async def _receive(self, ws, initialised: asyncio.Event) -> None:
        async for text in ws:
            if isinstance(text, bytes):
                self.stats.protocol_errors += 1
                continue
            try:
                message = parse_text(text, SERVER_COMMANDS)
            except ProtocolError as exc:
                self.stats.protocol_errors += 1
                LOG.warning("ignoring a message from the server: %s", exc.reason)
                continue
            command = message.command
            if command == Command.INIT_REQUEST:
                for setting in self.settings.to_messages():
                    await ws.send(setting)
                initialised.set()
                self.connected.set()
            elif command in (Command.MESSAGE_TAG_FACE, Command.MESSAGE_TAG_OBJECT):
                self._on_result(command, message.context)
            elif command == Command.MESSAGE:  # e.g. "frame not processed: <reason>"
                LOG.warning("server says: %s", message.context)
            else:
                self.server_settings[command] = message.context

    def _on_result(self, command: Command, tags) -> None:
        kind = "faces" if command == Command.MESSAGE_TAG_FACE else "objects"
        self._waiting_since = None
        now = time.time()
        result = Result(kind, tags, now)
        parts = self._expected_parts()
        # The per-frame reply is the face result; object results come on the server's own
        # schedule, so they free a frame slot only for a client that asked for objects only.
        if not parts or kind == parts[0]:
            result.latency = self._reply_arrived()
        self.stats.results += 1
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # noqa: BLE001 - a user callback must not end the stream
                LOG.exception("on_result callback failed")

    def _reply_arrived(self) -> Optional[float]:
        """A frame's reply came: the latency of the oldest frame still awaiting one."""
        now = time.monotonic()
        while self._late and now - self._late[0] > LATE_WINDOW * self.result_timeout:
            self._late.popleft()  # its reply is not coming any more
        if self._late:  # replies come in order: this one is for a frame given up on
            if self._in_flight:
                self._suspect = self._in_flight[0]
            return now - self._late.popleft()
        if self._in_flight:
            self._slot.set()
            return now - self._in_flight.popleft()
        return None

    async def _wait_slot(self) -> None:
        while len(self._in_flight) >= self.max_in_flight and not self._stopped:
            timeout = self._in_flight[0] + self.result_timeout - time.monotonic()
            if timeout <= 0:
                sent = self._in_flight.popleft()
                if sent != self._suspect:  # (else its reply was taken for a late one's)
                    self._late.append(sent)
                self.stats.result_timeouts += 1
                if self.stats.result_timeouts <= 3 or self.stats.result_timeouts % 100 == 0:
                    LOG.warning("no reply to a frame within %.1f s (%d so far)",
                                self.result_timeout, self.stats.result_timeouts)
                continue
            self._slot.clear()
            try:
                await asyncio.wait_for(self._slot.wait(), timeout)
            except asyncio.TimeoutError:
                pass

    async def _send(self, ws, source: "_FrameReader", max_frames: Optional[int],
                    initialised: asyncio.Event) -> None:
        try:
            await asyncio.wait_for(initialised.wait(), self.init_timeout)
        except asyncio.TimeoutError:  # a server that never asks: announce anyway
            LOG.warning("no INIT_REQUEST from the server; sending settings anyway")
            for setting in self.settings.to_messages():
                await ws.send(setting)
        flow_control = bool(self._expected_parts())
        while not self._stopped and (max_frames is None or self.stats.frames_sent < max_frames):
            if flow_control:
                await self._wait_slot()
            if self.fps:
                delay = self._last_send + 1.0 / self.fps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            frame = await source.next()
            if frame is _END or self._stopped:
                return
            await ws.send(frame)
            self._last_send = time.monotonic()
            if flow_control:
                self._in_flight.append(self._last_send)
                if self._waiting_since is None:
                    self._waiting_since = self._last_send
            self.stats.frames_sent += 1
            self.stats.bytes_sent += len(frame)


class _FrameReader:
    """Pulls frames from a callable / iterable (in a worker thread) or an async iterable.
    An in-progress blocking read survives a reconnect instead of being run twice."""

    def __init__(self, frames: FrameSourceLike):
        self._async = None
        self._call = None
        if hasattr(frames, "__aiter__"):
            self._async = frames.__aiter__()
        elif callable(frames):
            self._call = frames
        else:
            iterator = iter(frames)
            self._call = lambda: next(iterator, None)
        self._pending: Optional[asyncio.Future] = None

    async def next(self):
        if self._async is not None:
            try:
                return await self._async.__anext__()
            except StopAsyncIteration:
                return _END
        if self._pending is None:
            self._pending = asyncio.ensure_future(asyncio.to_thread(self._call))
        frame = await asyncio.shield(self._pending)
        self._pending = None
        return _END if frame is None else frame


def _redact(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="token=***" if "token=" in parts.query
                                     else parts.query))


# --- CLI ----------------------------------------------------------------------------------

def format_result(result: Result) -> str:
    if result.kind == "faces":
        items = [f"{t.tag or '<unknown>'}@({t.x},{t.y} {t.width}x{t.height})"
                 for t in result.tags]
    else:
        items = [f"{t.label}:{t.prediction:.2f}" for t in result.tags]
    latency = f" [{result.latency * 1000:.0f} ms]" if result.latency is not None else ""
    return f"{result.kind}: {', '.join(items) or '-'}{latency}"


def _camera_frames(args) -> Callable[[], Optional[bytes]]:
    from .encode import FrameEncoder
    from .sources import open_source

    source = open_source(args.source, args.width, args.height, args.fps, loop=args.loop,
                         max_pixels=args.max_pixels)
    source.open()
    encoder = FrameEncoder(jpeg_quality=args.quality, max_pixels=args.max_pixels)

    def read() -> Optional[bytes]:
        frame = source.read()
        return None if frame is None else encoder.encode(frame)

    read.close = source.close
    return read


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facerec-ws-camera",
        description="Stream a camera to the facerec websocket bridge (wss://) and print the "
                    "face / object results. No ROS needed.")
    parser.add_argument("--url", default="wss://localhost:50000",
                        help="bridge URL (wss:// only; default %(default)s)")
    parser.add_argument("--name", default=socket.gethostname(), help="client name")
    parser.add_argument("--source", default="0",
                        help="camera index, /dev/videoN, picamera, pattern, image/video/folder")
    parser.add_argument("--fps", type=float, default=5.0, help="maximum frames/s sent")
    parser.add_argument("--quality", type=int, default=80, help="JPEG quality 1-100")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--loop", action="store_true", help="loop video files / folders")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, metavar="N",
                        help="largest image or video frame decoded from a file source, in "
                             "pixels (default %(default)s)")
    auth = parser.add_argument_group("security")
    auth.add_argument("--token-file", help="file holding the bearer token (first line)")
    auth.add_argument("--token", help="bearer token (visible in `ps`; prefer --token-file or "
                                      "FACEREC_BRIDGE_TOKEN)")
    auth.add_argument("--token-in-query", action="store_true",
                      help="send the token as ?token= instead of the Authorization header "
                           "(ends up in server/proxy logs)")
    auth.add_argument("--cafile", help="CA certificate(s) to verify the server with")
    auth.add_argument("--certfile", help="client certificate (mTLS)")
    auth.add_argument("--keyfile", help="client certificate key (mTLS)")
    auth.add_argument("--insecure", action="store_true",
                      help="do NOT verify the server certificate (self-signed tests only)")
    settings = parser.add_argument_group("recognition settings (sent to the server)")
    settings.add_argument("--no-faces", dest="faces", action="store_false",
                          help="disable face recognition")
    settings.add_argument("--objects", dest="objects", action="store_true", default=False,
                          help="enable object recognition")
    settings.add_argument("--label-count", type=int, default=5, help="object labels wanted")
    settings.add_argument("--deterministic", action="store_true",
                          help="deterministic object recognition")
    parser.add_argument("--max-in-flight", type=int, default=1,
                        help="frames sent before their result arrived (flow control)")
    parser.add_argument("--stall-timeout", type=float, default=60.0,
                        help="reconnect when no result arrived for this many seconds while "
                             "frames were sent (default %(default)s)")
    parser.add_argument("--frames", type=int, default=None, help="stop after N frames")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _read_token(args) -> Optional[str]:
    if args.token_file:
        text = files.read_regular(args.token_file, "token file", 1024 * 1024)
        return text.decode("utf-8").partition("\n")[0].strip() or None
    return args.token or os.environ.get("FACEREC_BRIDGE_TOKEN") or None


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.insecure:
        LOG.warning("--insecure: the server certificate is NOT verified")
    settings = ClientSettings(name=args.name, faces_enabled=args.faces,
                              objects_enabled=args.objects, label_count=args.label_count,
                              deterministic=args.deterministic)
    try:
        client = BridgeClient(
            args.url, settings, token=_read_token(args), token_in_query=args.token_in_query,
            cafile=args.cafile, certfile=args.certfile, keyfile=args.keyfile,
            insecure=args.insecure, max_in_flight=args.max_in_flight, fps=args.fps,
            stall_timeout=args.stall_timeout,
            on_result=lambda result: print(f"{args.name} {format_result(result)}",
                                           flush=True))
        frames = _camera_frames(args)
    except (BridgeClientError, OSError, ssl.SSLError, ValueError, RuntimeError) as exc:
        print(f"facerec-ws-camera: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(client.run(frames, args.frames))
    except BridgeClientError as exc:
        print(f"facerec-ws-camera: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        frames.close()
    print(f"sent {client.stats.frames_sent} frames, {client.stats.results} results, "
          f"{client.stats.reconnects} reconnects", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
