"""The web pages of the bridge: routes, the JSON API and the static files (no ROS here).

Served on the bridge's TLS port next to the websocket protocol (:mod:`.server` hands every
connection whose first request is not a websocket upgrade to :mod:`.http`). Nothing is
answered without authentication (:class:`~facerec_server.bridge.auth.Authenticator`):

* ``token`` mode: a request without a valid credential gets 401 and, when a browser asks for
  a page, the log-in form (no script, no other file). The form posts the token in the request
  body to ``/login``, which sets the session cookie (``Secure; HttpOnly; SameSite=Strict``,
  ``__Host-`` prefix) and redirects to ``/``; scripts may send ``Authorization: Bearer``
  on every request instead. A token is never accepted in a URL here.
* ``mtls``: the client certificate is the credential (no log-in); ``none``: open (warned).

State-changing requests (POST) must come from the page's own origin (``Origin`` /
``Sec-Fetch-Site`` checked). Pages: ``/`` (one page with Live, Enroll, People, Cameras and
Statistics views, files under ``/static/``). API (JSON unless noted):

=====================================  ==========================================================
``GET  /api/session``                  who is logged in, the authentication mode
``GET  /api/people``                   people, sample and chip counts, what the gallery supports;
                                       the anonymous identities (most recently seen first)
``GET  /api/people/chip?name=&index=`` one stored face chip (JPEG) of a person or identity
``POST /api/people/forget``            ``{"name"}``: forget a person (the core's Gallery.forget)
``POST /api/people/rename``            ``{"name", "new_name"}``: needs a gallery with ``rename``
``POST /api/people/name``              ``{"anonymous_id", "name"}``: name an anonymous identity
                                       (Gallery.name_anonymous: a new person, or joins one)
``POST /api/enroll``                   ``{"name", "samples", "timeout", "kind"}``: a capture
``POST /api/enroll/frame?id=``         one JPEG frame or photo (body): ``{"result", ...}``
``POST /api/enroll/finish?id=``        write what was accepted (one transaction)
``POST /api/enroll/cancel?id=``        drop the capture, nothing written
``GET  /api/cameras``                  every input with its counters (:class:`.board.Board`)
``GET  /api/cameras/frame?id=``        the input's newest annotated frame (JPEG)
``GET  /api/stats?since=``             history samples newer than ``since`` and totals
=====================================  ==========================================================

Enrollment runs the core's :class:`~facerec_server.core.enroll.Enroller` (the rules of the
server's ``~/enroll`` and ``facerec-enroll``): each frame's verdict is one of the core's
reasons (``no face``, ``several faces``, ``too small``, ``near-duplicate``, ``decode error``)
or ``added``. Captures are bounded (MAX_CAPTURES, one per principal, each ends with its
timeout). Blocking work (gallery, face pipeline, drawing) runs in a small thread pool.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import hashlib
import html
import json
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from importlib import resources
from typing import Callable, Dict, Optional, Tuple

from . import http as http_server
from .auth import SESSION_COOKIE
from .board import Board
from .http import Request, Response

LOG = logging.getLogger("facerec.bridge.web")

MAX_CAPTURES = 8
CAPTURE_GRACE = 60.0  # seconds a finished capture waits for /finish before it is dropped
MAX_CHIPS = 12  # chips per person the People page shows
MAX_ANONYMOUS = 50  # anonymous identities the People page lists (the most recently seen)
MAX_INPUTS = 3  # inputs listed per anonymous identity (where it was seen most recently)
HTTP_CONNECTIONS = 64
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
         ".md": "text/plain; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'{style}; img-src 'self' blob: "
       "data:; media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = [("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin"),
                    ("X-Frame-Options", "DENY"),
                    ("Permissions-Policy", "camera=(self), microphone=(), geolocation=()")]


class GalleryAccess:
    """What the web pages do to the gallery, through the core's own code.

    ``gallery``: a :class:`~facerec_server.core.gallery.Gallery` (or any object with its
    API); ``enroller``: a :class:`~facerec_server.core.enroll.Enroller` on that gallery;
    ``changed()``: called after every change (e.g. the host reloads its matcher);
    ``allow_conflicts()``: whether enrollment may add a face that matches someone else
    (the ``gallery.allow_conflicts`` parameter)."""

    def __init__(self, gallery, enroller, changed: Optional[Callable[[], None]] = None,
                 allow_conflicts: Callable[[], bool] = lambda: False):
        self.gallery, self.enroller = gallery, enroller
        self.changed = changed or (lambda: None)
        self.allow_conflicts = allow_conflicts

    @property
    def can_rename(self) -> bool:
        # Hook for issue 16 (rename, anonymous identities): its gallery API adds rename().
        return callable(getattr(self.gallery, "rename", None))

    @property
    def can_name(self) -> bool:
        """The gallery keeps anonymous identities (issue 16) and can name them."""
        return all(callable(getattr(self.gallery, method, None))
                   for method in ("anonymous", "name_anonymous", "sightings"))


@dataclasses.dataclass
class _Capture:
    id: str
    owner: str
    kind: str
    session: object  # core.enroll.CaptureSession
    finished_at: float = math.inf


class _Static:
    """The files under ``static/``, read once: path -> (bytes, content type, ETag)."""

    def __init__(self, folder=None):
        root = resources.files(__package__).joinpath("static") if folder is None else folder
        self.files: Dict[str, Tuple[bytes, str, str]] = {}
        self._walk(root, "")

    def _walk(self, folder, prefix: str) -> None:
        for item in folder.iterdir():
            name = prefix + item.name
            if item.is_dir():
                self._walk(item, name + "/")
            elif os.path.splitext(name)[1] in TYPES:
                data = item.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
                self.files[name] = (data, TYPES[os.path.splitext(name)[1]], etag)


class WebApp:
    """The web pages for one :class:`~facerec_server.bridge.server.BridgeServer`.

    ``gallery``: a :class:`GalleryAccess` (None: the People and Enroll pages say that this
    bridge has no gallery); ``board``: the inputs' :class:`~.board.Board` (a host that also
    feeds ROS inputs passes its own). The server binds itself (:meth:`bind`)."""

    def __init__(self, gallery: Optional[GalleryAccess] = None, board: Optional[Board] = None,
                 static_folder=None, idle_timeout: float = 30.0):
        self.gallery = gallery
        self.board = board or Board()
        self.static = _Static(static_folder)
        self.idle_timeout = idle_timeout
        self.server = None
        self.connections = http_server.ConnectionTable(HTTP_CONNECTIONS)
        self._captures: "OrderedDict[str, _Capture]" = OrderedDict()
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._ticker: Optional[asyncio.Task] = None
        self._login_page, self._login_style = self._login_template()
        self.counters = {"requests": 0, "refused": 0, "logins": 0, "failed_logins": 0}

    # --- lifecycle (called by BridgeServer) ----------------------------------------------------
    def bind(self, server) -> None:
        self.server = server

    async def start(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="bridge-web")
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        self.connections.close_all()
        for capture in self._captures.values():
            capture.session.cancel()
        self._captures.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    def adopt(self, transport, head: bytes) -> None:
        """Take over a TLS connection whose first request (``head`` so far) is plain HTTP."""
        connection = http_server.HttpConnection(self.handle, self.connections,
                                                self.server.config.max_frame_size,
                                                self.idle_timeout)
        transport.set_protocol(connection)
        connection.connection_made(transport)
        connection.data_received(head)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.board.client_counters(self.server.stats()["clients"])
                self.board.tick()
                self._expire_captures()
            except Exception:  # noqa: BLE001 - the statistics must not stop the bridge
                LOG.exception("web statistics tick failed")

    # --- bridge hooks (event loop thread) ------------------------------------------------------
    def client_frame(self, name: str, jpeg: bytes, stamp: float) -> None:
        self.board.client_frame(name, jpeg, stamp)

    def client_result(self, name: str, stamp: float, faces, latency: float) -> None:
        self.board.client_result(name, stamp, faces, latency)

    def client_left(self, name: str, counters: dict) -> None:
        self.board.client_counters({name: counters})
        self.board.client_left(name)

    # --- requests ------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        self.counters["requests"] += 1
        auth = self.server.auth
        if request.method == "POST" and not http_server.same_origin(request.headers):
            self.counters["refused"] += 1
            return _text(403, "cross-origin request refused")
        if request.path == "/login" and auth.mode == "token":
            return self._login(request)
        result = auth.check(request.headers, "", request.peercert, request.address,
                            query_token=False)
        if result.principal is None:
            self.counters["refused"] += 1
            if result.retry_after > 0:
                response = _text(429, "too many failed logins from this address; try later")
                response.headers.append(("Retry-After", str(max(1, round(result.retry_after)))))
                return response
            if "text/html" in request.headers.get("accept") and request.method == "GET":
                return self._login_response(401, "")
            return _text(401, "authentication required")
        try:
            return await self._route(request, result.principal)
        except _Refused as refused:
            return _json(refused.status, {"error": str(refused)})

    async def _route(self, request: Request, principal) -> Response:
        method, path = request.method, request.path
        if method == "GET" and path in ("/", "/index.html"):
            return self._file("index.html")
        if method == "GET" and path.startswith("/static/"):
            return self._file(path[len("/static/"):], request)
        if method == "POST" and path == "/logout":
            self.server.auth.logout(request.headers)
            return Response(303, headers=[("Location", "/"), ("Set-Cookie", _cookie(""))])
        handler = _ROUTES.get((method, path))
        if handler is None:
            known = any(p == path for _, p in _ROUTES)
            return _json(405 if known else 404, {"error": f"no {method} {path[:100]}"})
        return await handler(self, request, principal)

    # --- log-in ------------------------------------------------------------------------------
    def _login(self, request: Request) -> Response:
        if request.method == "GET":
            return self._login_response(200, "")
        if request.method != "POST":
            return _text(405, "use GET or POST")
        token = _form_field(request.body, "token")
        result, session_id = self.server.auth.login(token or "", request.address)
        if result.retry_after > 0:
            response = self._login_response(
                429, f"Too many failed log-ins from this address: wait "
                     f"{max(1, round(result.retry_after))} s.")
            response.headers.append(("Retry-After", str(max(1, round(result.retry_after)))))
            return response
        if session_id is None:
            self.counters["failed_logins"] += 1
            LOG.warning("failed web log-in from %s", request.address)
            return self._login_response(401, "Wrong token.")
        self.counters["logins"] += 1
        LOG.info("web log-in from %s as %s", request.address, result.principal.name)
        return Response(303, headers=[("Location", "/"), ("Set-Cookie", _cookie(session_id))])

    def _login_template(self) -> Tuple[str, str]:
        page = self.static.files["login.html"][0].decode("utf-8")
        start, end = page.index("<style>") + len("<style>"), page.index("</style>")
        digest = hashlib.sha256(page[start:end].encode("utf-8")).digest()
        return page, f" 'sha256-{base64.b64encode(digest).decode()}'"

    def _login_response(self, status: int, message: str) -> Response:
        body = self._login_page.replace("{{message}}", html.escape(message))
        return Response(status, body.encode("utf-8"), TYPES[".html"],
                        headers=_page_headers(self._login_style))

    # --- static files --------------------------------------------------------------------------
    def _file(self, name: str, request: Optional[Request] = None) -> Response:
        entry = self.static.files.get(name)
        if entry is None or name == "login.html":
            return _text(404, "no such file")
        data, content_type, etag = entry
        headers = [("ETag", etag), ("Cache-Control", "private, no-cache")]
        if content_type.startswith("text/html"):
            headers += _page_headers("")
        else:
            headers += SECURITY_HEADERS
        if request is not None and request.headers.get("if-none-match") == etag:
            return Response(304, headers=headers)
        return Response(200, data, content_type, headers=headers)

    # --- API: session, people ------------------------------------------------------------------
    async def api_session(self, request, principal) -> Response:
        return _json(200, {"name": principal.name, "auth": self.server.auth.mode,
                           "gallery": self.gallery is not None})

    async def api_people(self, request, principal) -> Response:
        access = self._gallery()

        def work():
            people = []
            for name, samples in access.gallery.people():
                people.append({"name": name, "samples": samples,
                               "chips": min(MAX_CHIPS, len(access.gallery.chips(name)))})
            anonymous, total = self._anonymous(access) if access.can_name else ([], 0)
            return people, anonymous, total
        people, anonymous, total = await self._run(work)
        return _json(200, {"people": people, "can_rename": access.can_rename,
                           "can_name": access.can_name, "anonymous": anonymous,
                           "anonymous_total": total})

    @staticmethod
    def _anonymous(access: GalleryAccess):
        """(the MAX_ANONYMOUS most recently seen anonymous identities, how many there are):
        name, samples, chips, created_at, last_seen (Unix seconds or None) and the inputs
        it was seen on, most recent first (from the sightings)."""
        gallery = access.gallery
        identities = sorted(gallery.anonymous(), reverse=True,
                            key=lambda a: a["last_seen"] or a["created_at"] or 0.0)
        shown = identities[:MAX_ANONYMOUS]
        inputs: Dict[str, list] = {}
        if shown:
            for sighting in gallery.sightings():  # most recent first, bounded by the gallery
                if sighting["anonymous"]:
                    seen = inputs.setdefault(sighting["name"], [])
                    if len(seen) < MAX_INPUTS:
                        seen.append(sighting["input"])
        return [{"name": a["name"], "samples": a["samples"],
                 "chips": min(MAX_CHIPS, len(gallery.chips(a["name"]))),
                 "created_at": a["created_at"], "last_seen": a["last_seen"],
                 "inputs": inputs.get(a["name"], [])} for a in shown], len(identities)

    async def api_chip(self, request, principal) -> Response:
        access = self._gallery()
        name, index = request.query.get("name", ""), _integer(request.query.get("index", "0"))
        chips = await self._run(access.gallery.chips, name)
        if not 0 <= index < len(chips):
            return _text(404, "no such chip")
        return Response(200, chips[index], "image/jpeg",
                        headers=[("Cache-Control", "private, no-cache")] + SECURITY_HEADERS)

    async def api_forget(self, request, principal) -> Response:
        access = self._gallery()
        name = _body_field(request, "name")
        removed = await self._run(self._change, access, access.gallery.forget, name)
        LOG.info("web: %s forgot %r (%d samples)", principal.name, name, removed)
        return _json(200, {"name": name, "samples_removed": removed,
                           "message": f"forgot {name!r} ({removed} samples)" if removed
                           else f"{name!r} is not in the gallery"})

    async def api_rename(self, request, principal) -> Response:
        access = self._gallery()
        if not access.can_rename:
            raise _Refused(501, "this gallery cannot rename people yet (it needs the gallery "
                                "API of issue 16); forget and enroll again instead")
        name, new_name = _body_field(request, "name"), _body_field(request, "new_name")
        await self._run(self._change, access, access.gallery.rename, name, new_name)
        LOG.info("web: %s renamed %r to %r", principal.name, name, new_name)
        return _json(200, {"name": new_name, "message": f"renamed {name!r} to {new_name!r}"})

    async def api_name(self, request, principal) -> Response:
        access = self._gallery()
        if not access.can_name:
            raise _Refused(501, "this gallery keeps no anonymous identities (it needs the "
                                "gallery API of issue 16)")
        anonymous_id, name = _body_field(request, "anonymous_id"), _body_field(request, "name")
        samples, merged = await self._run(self._change, access, access.gallery.name_anonymous,
                                          anonymous_id, name)
        LOG.info("web: %s named %r %r (%s)", principal.name, anonymous_id, name,
                 "joined the person" if merged else "a new person")
        message = (f"{anonymous_id} joined {name!r} ({samples} samples now)" if merged
                   else f"{anonymous_id} is {name!r} now ({samples} samples)")
        return _json(200, {"anonymous_id": anonymous_id, "name": name, "samples": samples,
                           "merged": merged, "message": message})

    def _change(self, access: GalleryAccess, function, *args):
        from facerec_server.core.gallery import EnrollmentError
        try:
            result = function(*args)
        except EnrollmentError as exc:  # an invalid name, an unknown person, a conflict
            raise _Refused(400, str(exc)) from None
        access.changed()
        return result

    # --- API: enrollment -----------------------------------------------------------------------
    async def api_enroll(self, request, principal) -> Response:
        access = self._gallery()
        body = _json_body(request)
        kind = body.get("kind", "camera")
        if kind not in ("camera", "photos"):
            raise _Refused(400, f"kind must be 'camera' or 'photos', got {kind!r}")
        from facerec_server.core.gallery import EnrollmentError
        try:
            session = access.enroller.capture(
                body.get("name"), samples=_integer(body.get("samples", 0)),
                timeout=_number(body.get("timeout", 0)),
                source=f"web-{kind}:{principal.name}", force=access.allow_conflicts())
        except (EnrollmentError, ValueError, TypeError) as exc:
            raise _Refused(400, str(exc)) from None
        for old in [c for c in self._captures.values() if c.owner == principal.name]:
            self._drop_capture(old.id)  # one capture per principal: the newest wins
        while len(self._captures) >= MAX_CAPTURES:
            self._drop_capture(next(iter(self._captures)))
        capture = _Capture(secrets.token_urlsafe(12), principal.name, kind, session)
        self._captures[capture.id] = capture
        return _json(200, {"id": capture.id, "name": session.name, "samples": session.samples,
                           "timeout": session.timeout})

    async def api_enroll_frame(self, request, principal) -> Response:
        capture = self._capture(request, principal)
        session = capture.session
        result = await self._run(session.verdict, request.body)
        if session.done and capture.finished_at == math.inf:
            capture.finished_at = time.monotonic()
        return _json(200, {"result": "added" if result is None else result,
                           "accepted": len(session.accepted), "wanted": session.samples,
                           "frames": session.frames, "done": session.done,
                           "remaining": round(session.remaining(), 1)})

    async def api_enroll_finish(self, request, principal) -> Response:
        access = self._gallery()
        capture = self._capture(request, principal)
        self._captures.pop(capture.id, None)
        result = await self._run(access.enroller.finish, capture.session)
        if result.success:
            access.changed()
        LOG.info("web: %s enrolled %r: %s", principal.name, capture.session.name,
                 result.message)
        return _json(200 if result.success else 409, {
            "success": result.success, "message": result.message, "name": result.name,
            "samples_added": result.samples_added, "rejected": result.rejected,
            "conflict": result.conflict})

    async def api_enroll_cancel(self, request, principal) -> Response:
        capture = self._capture(request, principal)
        self._drop_capture(capture.id)
        return _json(200, {"cancelled": capture.id})

    def _capture(self, request: Request, principal) -> _Capture:
        capture = self._captures.get(request.query.get("id", ""))
        if capture is None or capture.owner != principal.name:
            raise _Refused(404, "no such capture (it ended or was replaced): start again")
        return capture

    def _drop_capture(self, capture_id: str) -> None:
        capture = self._captures.pop(capture_id, None)
        if capture is not None:
            capture.session.cancel()

    def _expire_captures(self) -> None:
        now = time.monotonic()
        for capture in list(self._captures.values()):
            if capture.session.done and capture.finished_at == math.inf:
                capture.finished_at = now
            if now - capture.finished_at > CAPTURE_GRACE:
                self._drop_capture(capture.id)

    # --- API: cameras, statistics --------------------------------------------------------------
    async def api_cameras(self, request, principal) -> Response:
        self.board.viewed()
        return _json(200, {"inputs": self.board.cameras()})

    async def api_camera_frame(self, request, principal) -> Response:
        self.board.viewed()
        jpeg = await self._run(self.board.frame, request.query.get("id", ""), _draw)
        if jpeg is None:
            return _text(404, "no frame from this input yet")
        return Response(200, jpeg, "image/jpeg", headers=list(SECURITY_HEADERS))

    async def api_stats(self, request, principal) -> Response:
        since = _number(request.query.get("since", "0") or 0)
        stats = self.board.statistics()
        stats["history"] = [s for s in stats["history"] if s["t"] > since]
        return _json(200, stats)

    # --- helpers -------------------------------------------------------------------------------
    def _gallery(self) -> GalleryAccess:
        if self.gallery is None:
            raise _Refused(503, "this bridge has no gallery")
        return self.gallery

    async def _run(self, function, *args):
        loop = asyncio.get_running_loop()
        if self._executor is None:
            raise _Refused(503, "the bridge is stopping")
        return await loop.run_in_executor(self._executor, function, *args)


_ROUTES = {
    ("GET", "/api/session"): WebApp.api_session,
    ("GET", "/api/people"): WebApp.api_people,
    ("GET", "/api/people/chip"): WebApp.api_chip,
    ("POST", "/api/people/forget"): WebApp.api_forget,
    ("POST", "/api/people/rename"): WebApp.api_rename,
    ("POST", "/api/people/name"): WebApp.api_name,
    ("POST", "/api/enroll"): WebApp.api_enroll,
    ("POST", "/api/enroll/frame"): WebApp.api_enroll_frame,
    ("POST", "/api/enroll/finish"): WebApp.api_enroll_finish,
    ("POST", "/api/enroll/cancel"): WebApp.api_enroll_cancel,
    ("GET", "/api/cameras"): WebApp.api_cameras,
    ("GET", "/api/cameras/frame"): WebApp.api_camera_frame,
    ("GET", "/api/stats"): WebApp.api_stats,
}


class _Refused(Exception):
    """A request the API answers with ``status`` and this message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _draw(jpeg: bytes, faces) -> Optional[bytes]:
    """A client's frame with its faces drawn (the server's overlay), as JPEG."""
    from facerec_server.core.images import ImageDecodeError, decode_image, encode_jpeg
    from facerec_server.core.overlay import draw_overlay
    try:
        return encode_jpeg(draw_overlay(decode_image(jpeg), faces), 75)
    except ImageDecodeError:
        return None


def _cookie(value: str) -> str:
    expiry = "; Max-Age=0" if not value else ""
    return f"{SESSION_COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{expiry}"


def _page_headers(style: str):
    return [("Content-Security-Policy", CSP.format(style=style))] + SECURITY_HEADERS


def _text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode("utf-8"), headers=list(SECURITY_HEADERS))


def _json(status: int, document) -> Response:
    return Response(status, json.dumps(document, allow_nan=False).encode("utf-8"),
                    "application/json", headers=list(SECURITY_HEADERS))


def _json_body(request: Request) -> dict:
    try:
        document = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Refused(400, "the request body must be a JSON object") from None
    if not isinstance(document, dict):
        raise _Refused(400, "the request body must be a JSON object")
    return document


def _body_field(request: Request, name: str) -> str:
    value = _json_body(request).get(name)
    if not isinstance(value, str):
        raise _Refused(400, f"{name!r} must be a string")
    return value


def _form_field(body: bytes, name: str) -> Optional[str]:
    from urllib.parse import parse_qs
    try:
        values = parse_qs(body.decode("utf-8"), max_num_fields=4).get(name)
    except (UnicodeDecodeError, ValueError):
        return None
    return values[0] if values else None


def _integer(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _Refused(400, f"expected a whole number, got {str(value)[:40]!r}") from None


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise _Refused(400, f"expected a number, got {str(value)[:40]!r}")
    return number
