"""The bridge's web pages without a browser or ROS: authentication on every route, the log-in
cookie, the HTTP limits, and the API (enrollment with the core's rules, people, cameras,
statistics) with real TLS, real dlib models, a real SQLite gallery and real faces.

Requests go through Python's http.client; the websocket client is the websockets library."""
import asyncio
import http.client
import json
import logging
import socket
import ssl
import time

import cv2
import numpy as np
import pytest
from websockets.asyncio.client import connect

from facerec_server.bridge import BridgeServer, BridgeThread, PipelineProcessor
from facerec_server.bridge.auth import SESSION_COOKIE
from facerec_server.bridge.web import GalleryAccess, WebApp
from facerec_server.core.enroll import Enroller
from facerec_server.core.gallery import Gallery, GalleryMatcherSync
from facerec_server.core.pipeline import FaceConfig, FacePipeline
from rosutil import jpeg
from conftest import BRIDGE_TOKEN
from test_bridge import config

TOKEN = BRIDGE_TOKEN  # the tokens file of conftest's ``tls``: robot1:<TOKEN>
PROTECTED = [  # (method, target): every page, asset and API route
    ("GET", "/"), ("GET", "/index.html"), ("GET", "/static/app.js"),
    ("GET", "/static/style.css"), ("GET", "/static/vendor/chart.umd.min.js"),
    ("GET", "/static/vendor/chart.js-LICENSE.md"), ("GET", "/api/session"),
    ("GET", "/api/people"), ("GET", "/api/people/chip?name=eileen&index=0"),
    ("POST", "/api/people/forget"), ("POST", "/api/people/rename"),
    ("POST", "/api/people/name"), ("POST", "/api/enroll"),
    ("POST", "/api/enroll/frame?id=x"), ("POST", "/api/enroll/finish?id=x"),
    ("GET", "/api/cameras"), ("GET", "/api/cameras/frame?id=client:robot1"),
    ("GET", "/api/stats"), ("POST", "/logout"), ("GET", "/nothing-here"),
]


class Web:
    """A started BridgeServer with web pages in its own thread; HTTPS requests to it."""

    def __init__(self, cfg, gallery_path, tls):
        self.gallery = Gallery(str(gallery_path))
        self.pipeline = FacePipeline(FaceConfig(upsample=1))
        self.sync = GalleryMatcherSync(self.gallery, self.pipeline.matcher)
        self.sync.refresh(force=True)
        inner = PipelineProcessor(face_pipeline=self.pipeline)

        def process(client_id, data, settings):
            self.sync.refresh()
            return inner(client_id, data, settings)
        self.app = WebApp(GalleryAccess(self.gallery, Enroller(self.gallery, self.pipeline),
                                        changed=lambda: self.sync.refresh(force=True)))
        self.server = BridgeServer(cfg, process, web=self.app)
        self.thread = BridgeThread(self.server)
        self.thread.start()
        self.port = self.server.port
        self.context = tls["client_context"]()
        self.sessions_seen = []

    def connection(self, context=None, source="127.0.0.1") -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                           context=context or self.context,
                                           source_address=(source, 0))

    def request(self, method, target, body=None, headers=None, cookie=None, bearer=None,
                context=None, source="127.0.0.1"):
        """(status, headers dict (lower-case names), body bytes) on a new connection."""
        headers = dict(headers or {})
        if cookie:
            headers["Cookie"] = f"{SESSION_COOKIE}={cookie}"
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        conn = self.connection(context, source)
        try:
            conn.request(method, target, body=body, headers=headers)
            response = conn.getresponse()
            return (response.status, {k.lower(): v for k, v in response.getheaders()},
                    response.read())
        finally:
            conn.close()

    def login(self, token=TOKEN):
        status, headers, _ = self.request(
            "POST", "/login", body=f"token={token}",
            headers={"Content-Type": "application/x-www-form-urlencoded"})
        return status, headers

    def session(self):
        status, headers = self.login()
        assert status == 303, status
        return headers["set-cookie"].split(";")[0].split("=", 1)[1]

    def api(self, method, target, document=None, cookie=None, raw=None, expect=200):
        body = raw if raw is not None else (json.dumps(document).encode() if document is not
                                            None else None)
        status, headers, data = self.request(method, target, body=body, cookie=cookie,
                                             headers={"Content-Type": "application/json"})
        assert status == expect, (status, data[:300])
        return json.loads(data) if headers.get("content-type") == "application/json" else data

    def close(self):
        self.thread.stop()
        self.gallery.close()


@pytest.fixture(scope="module")
def web(tls, tmp_path_factory, astronaut):
    folder = tmp_path_factory.mktemp("web_http")
    with Gallery(str(folder / "gallery.db")) as gallery:
        Enroller(gallery, FacePipeline(FaceConfig(upsample=0))).enroll_images(
            "eileen", [astronaut], source="test")
    server = Web(config(tls), folder / "gallery.db", tls)
    yield server
    server.close()


def _run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


# --- no credential, no answer -------------------------------------------------------------------

def test_every_route_refuses_a_missing_or_wrong_credential(web):
    index = web.app.static.files["index.html"][0]
    attempts = {"none": {}, "wrong bearer": {"bearer": "wrong-token-0123456789"},
                "wrong cookie": {"cookie": "made-up-session-id"}}
    for number, (method, target) in enumerate(PROTECTED):
        for what, credential in attempts.items():
            body = b"{}" if method == "POST" else None
            # each from its own address: failed tokens back off per address (tested below)
            status, headers, data = web.request(method, target, body=body, **credential,
                                                source=f"127.0.1.{number + 1}")
            assert status == 401, (what, method, target, status)
            assert data == b"authentication required\n", (what, target, data[:100])
    # a browser asking for a page gets the log-in form, nothing of the application
    status, headers, data = web.request("GET", "/static/app.js", headers={"Accept": "text/html"})
    assert status == 401 and b'action="/login"' in data and b"<script" not in data
    assert index not in data and b"page-live" not in data
    # the token in the URL is not a credential for the web (it would end up in logs)
    status, _, _ = web.request("GET", f"/api/people?token={TOKEN}", source="127.0.2.1")
    assert status == 401
    assert [name for name, _ in web.gallery.people()] == ["eileen"]  # forget was refused


def test_websocket_without_credential_gets_no_protocol_message(web):
    async def scenario():
        async with connect(f"wss://127.0.0.1:{web.port}/", ssl=web.context) as ws:
            await asyncio.wait_for(ws.wait_closed(), 10)
            return ws.close_code
    assert _run(scenario()) == 1008


class _Lines(logging.Handler):
    """Every line the bridge's loggers write, at every level. Attached to each of them:
    with launch_testing's pytest plugin loaded, loggers do not propagate (launch's logger
    class), so pytest's caplog sees nothing."""

    NAMES = ("facerec.bridge", "facerec.bridge.ws", "facerec.bridge.web",
             "facerec.bridge.http")

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []
        self.loggers = [logging.getLogger(name) for name in self.NAMES]

    def emit(self, record):
        self.lines.append(record.getMessage())

    def __enter__(self):
        self.levels = [logger.level for logger in self.loggers]
        for logger in self.loggers:
            logger.setLevel(logging.DEBUG)
            logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        for logger, level in zip(self.loggers, self.levels):
            logger.removeHandler(self)
            logger.setLevel(level)


def test_login_sets_a_strict_session_cookie_and_logout_ends_it(web):
    with _Lines() as log:
        _login_and_logout(web)
    text = "\n".join(log.lines)
    assert "failed web log-in from 127.0.0.1" in text and "< Cookie: ***" in text, text[-2000:]
    assert TOKEN not in text and "wrong-token-0123456789" not in text
    assert not any(session in text for session in web.sessions_seen)


def _login_and_logout(web):
    status, headers = web.login()
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    name_value, *flags = [part.strip() for part in cookie.split(";")]
    assert name_value.startswith(f"{SESSION_COOKIE}=") and SESSION_COOKIE.startswith("__Host-")
    assert {"Secure", "HttpOnly", "SameSite=Strict", "Path=/"} <= set(flags)
    session = name_value.split("=", 1)[1]
    web.sessions_seen.append(session)
    assert len(session) >= 40 and TOKEN not in cookie
    status, headers, data = web.request("GET", "/", cookie=session)
    assert status == 200 and data == web.app.static.files["index.html"][0]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert web.api("GET", "/api/session", cookie=session)["name"] == "robot1"
    # scripts may use the bearer header instead of a cookie
    assert web.request("GET", "/api/people", bearer=TOKEN)[0] == 200
    status, headers, _ = web.request("POST", "/logout", cookie=session)
    assert status == 303 and "Max-Age=0" in headers["set-cookie"]
    assert web.request("GET", "/api/people", cookie=session)[0] == 401
    status, _, data = web.request("POST", "/login", body="token=wrong-token-0123456789",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 401 and b"Wrong token." in data
    session = web.session()
    web.sessions_seen.append(session)

    async def upgrade():  # websockets logs the handshake's headers at debug level
        async with connect(f"wss://127.0.0.1:{web.port}/", ssl=web.context,
                           additional_headers={"Cookie": f"{SESSION_COOKIE}={session}"}) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 10))
    assert _run(upgrade()) == {"command": 9}


def test_failed_logins_back_off_with_429(tls, tmp_path):
    web = Web(config(tls), tmp_path / "gallery.db", tls)
    try:
        statuses = [web.login("wrong-token-0123456789")[0] for _ in range(6)]
        assert statuses == [401] * 5 + [429]
        status, headers = web.login()  # even the right token waits
        assert status == 429 and int(headers["retry-after"]) >= 1
        status, headers, _ = web.request("GET", "/api/people", bearer=TOKEN)
        assert status == 429 and "retry-after" in headers
        # requests without any credential do not count as failures (nothing was guessed)
        assert [web.request("GET", "/", source="127.0.0.3")[0] for _ in range(8)] == [401] * 8
        assert web.login()[0] == 429 and web.request("GET", "/", bearer=TOKEN,
                                                     source="127.0.0.3")[0] == 200
    finally:
        web.close()


def test_sessions_are_bounded(web):
    table = web.server.auth.sessions
    first = web.session()
    for _ in range(table.size + 5):
        table.create(web.server.auth._verify(TOKEN, "10.0.0.1", time.monotonic()).principal,
                     time.monotonic())
    assert len(table) == table.size
    assert web.request("GET", "/api/session", cookie=first)[0] == 401  # the oldest was dropped
    assert web.request("GET", "/api/session", cookie=web.session())[0] == 200


def test_cross_origin_requests_are_refused(web):
    session = web.session()
    status, _, _ = web.request("POST", "/api/people/forget", body=b'{"name": "eileen"}',
                               cookie=session, headers={"Origin": "https://evil.example"})
    assert status == 403
    status, _, _ = web.request("POST", "/api/people/forget", body=b'{"name": "eileen"}',
                               cookie=session, headers={"Sec-Fetch-Site": "cross-site"})
    assert status == 403
    assert [name for name, _ in web.gallery.people()] == ["eileen"]

    async def upgrade(origin):  # a page of another origin cannot use the cookie for wss
        headers = {"Cookie": f"{SESSION_COOKIE}={session}"}
        async with connect(f"wss://127.0.0.1:{web.port}/", ssl=web.context, origin=origin,
                           additional_headers=headers) as ws:
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            except Exception:  # noqa: BLE001 - closed instead
                return ws.close_code
            return first["command"]
    assert _run(upgrade("https://evil.example")) == 1008
    assert _run(upgrade(f"https://127.0.0.1:{web.port}")) == 9  # the page's own origin


# --- HTTP limits ---------------------------------------------------------------------------------

def _raw(web, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        with web.context.wrap_socket(sock, server_hostname="127.0.0.1") as tls_sock:
            try:
                tls_sock.sendall(data)
            except (ssl.SSLError, OSError):  # the bridge closed the connection meanwhile
                pass
            chunks = []
            while True:
                try:
                    chunk = tls_sock.recv(65536)
                except (ssl.SSLError, OSError):
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks)


def test_bad_and_oversized_requests_are_refused(web):
    session = web.session()
    cookie = f"Cookie: {SESSION_COOKIE}={session}\r\n".encode()
    for size in (20000, 200000):  # dropped unread, or answered 431, never processed
        answer = _raw(web, b"GET / HTTP/1.1\r\nHost: x\r\n" + cookie + b"X-A: "
                      + b"a" * size + b"\r\n\r\n")
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    big = web.server.config.max_frame_size + 1
    answer = _raw(web, b"POST /api/enroll/frame?id=x HTTP/1.1\r\nHost: x\r\n" + cookie
                  + f"Content-Length: {big}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 413 ")
    answer = _raw(web, b"POST /api/enroll HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  + cookie + b"\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 ")
    assert _raw(web, b"GET / HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    # keep-alive: two requests on one connection, answered in order
    answer = _raw(web, (b"GET /api/session HTTP/1.1\r\nHost: x\r\n" + cookie + b"\r\n") * 2
                  + b"GET /api/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + cookie
                  + b"\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 3 and answer.count(b'"auth": "token"') == 2
    assert answer.endswith(b"}") and b'"history"' in answer.rsplit(b"HTTP/1.1", 1)[1]


# --- the API -------------------------------------------------------------------------------------

def _scaled(image, factor):
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_LINEAR)


def test_enrollment_judges_each_frame_by_the_core_rules_and_writes_once(web, messi, astronaut):
    session = web.session()
    started = web.api("POST", "/api/enroll", {"name": "lionel", "samples": 3, "timeout": 60},
                      cookie=session)
    assert started["samples"] == 3 and started["name"] == "lionel"
    frame = f"/api/enroll/frame?id={started['id']}"
    verdicts = []
    big = _scaled(messi, 2.0)  # messi5's face is 37 px wide, below min_face_size 40
    for image in (np.full((480, 640, 3), 128, np.uint8), big, big, messi, cv2.flip(big, 1)):
        verdicts.append(web.api("POST", frame, raw=jpeg(image), cookie=session))
    assert [v["result"] for v in verdicts] == ["no face", "added", "near-duplicate",
                                               "too small", "added"]
    assert verdicts[-1]["accepted"] == 2 and not verdicts[-1]["done"]
    assert web.api("POST", frame, raw=b"not an image", cookie=session)["result"] == \
        "decode error"
    assert "lionel" not in dict(web.gallery.people())  # nothing written before finish
    done = web.api("POST", f"/api/enroll/finish?id={started['id']}", cookie=session)
    assert done["success"] and done["samples_added"] == 2
    people = web.api("GET", "/api/people", cookie=session)
    assert {"name": "lionel", "samples": 2, "chips": 2} in people["people"]
    chip = web.api("GET", "/api/people/chip?name=lionel&index=1", cookie=session)
    assert cv2.imdecode(np.frombuffer(chip, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (150, 150)
    # a face that is someone else's is refused at finish; nothing is written
    started = web.api("POST", "/api/enroll", {"name": "impostor", "samples": 1,
                                              "timeout": 60}, cookie=session)
    assert web.api("POST", f"/api/enroll/frame?id={started['id']}", raw=jpeg(astronaut),
                   cookie=session)["done"]
    refused = web.api("POST", f"/api/enroll/finish?id={started['id']}", cookie=session,
                      expect=409)
    assert refused["conflict"] == "eileen" and "impostor" not in dict(web.gallery.people())
    # bad input: one line naming the value
    error = web.api("POST", "/api/enroll", {"name": " ", "samples": 1}, cookie=session,
                    expect=400)["error"]
    assert "name" in error and "\n" not in error
    assert web.api("POST", "/api/enroll/frame?id=nope", raw=b"x", cookie=session,
                   expect=404)["error"].startswith("no such capture")


def test_people_forget_and_rename(web, messi):
    session = web.session()
    with Gallery(web.gallery.path) as other:
        Enroller(other, FacePipeline(FaceConfig(upsample=1))).enroll_images(
            "lionel2", [_scaled(messi, 2.0)], source="test", force=True)
    forgot = web.api("POST", "/api/people/forget", {"name": "lionel2"}, cookie=session)
    assert forgot["samples_removed"] == 1
    assert "lionel2" not in [p["name"] for p in web.api("GET", "/api/people",
                                                        cookie=session)["people"]]
    people = web.api("GET", "/api/people", cookie=session)
    assert people["can_rename"] is True  # the gallery's rename (issue 16)
    renamed = web.api("POST", "/api/people/rename", {"name": "eileen", "new_name": "Eileen C"},
                      cookie=session)
    assert renamed["name"] == "Eileen C"
    names = [p["name"] for p in web.api("GET", "/api/people", cookie=session)["people"]]
    assert "Eileen C" in names and "eileen" not in names
    web.api("POST", "/api/people/rename", {"name": "nobody", "new_name": "x"}, cookie=session,
            expect=400)
    web.api("POST", "/api/people/rename", {"name": "Eileen C", "new_name": "eileen"},
            cookie=session)


def _strangers(web, messi):
    """Two anonymous identities of messi5 (real descriptors and chips), as the server's tracks
    would leave them in the shared gallery, the first one seen on a camera topic."""
    with Gallery(web.gallery.path) as other:
        enroller = Enroller(other, FacePipeline(FaceConfig(upsample=1)))
        big = _scaled(messi, 2.0)
        samples = [enroller.sample_from_image(image)[0]
                   for image in (big, cv2.flip(big, 1), _scaled(messi, 2.6))]
        assert all(s is not None and s.chip for s in samples)
        first = other.add_anonymous(samples[:2], source="test")
        second = other.add_anonymous(samples[2:], source="test")
        now = time.time()
        other.record_sightings([(first, "/camera/image/compressed", now - 5, now, 1)])
    return first, second


def test_people_lists_and_names_anonymous_identities(web, messi):
    session = web.session()
    first, second = _strangers(web, messi)
    people = web.api("GET", "/api/people", cookie=session)
    assert people["can_name"] is True and people["anonymous_total"] == 2
    listed = {a["name"]: a for a in people["anonymous"]}
    assert [a["name"] for a in people["anonymous"]] == [first, second]  # most recently seen
    assert (listed[first]["samples"], listed[first]["chips"]) == (2, 2)
    assert (listed[second]["samples"], listed[second]["chips"]) == (1, 1)
    assert listed[first]["inputs"] == ["/camera/image/compressed"]
    assert listed[second]["inputs"] == [] and listed[second]["last_seen"] > 0
    assert first not in [p["name"] for p in people["people"]]  # not a known person
    chip = web.api("GET", f"/api/people/chip?name={first}&index=1", cookie=session)
    assert cv2.imdecode(np.frombuffer(chip, np.uint8), cv2.IMREAD_COLOR).shape[:2] == (150, 150)
    # a new name: the identity becomes that person (samples and chips kept)
    named = web.api("POST", "/api/people/name", {"anonymous_id": first, "name": "bob"},
                    cookie=session)
    assert (named["name"], named["samples"], named["merged"]) == ("bob", 2, False)
    assert named["message"] == f"{first} is 'bob' now (2 samples)"
    people = web.api("GET", "/api/people", cookie=session)
    assert {"name": "bob", "samples": 2, "chips": 2} in people["people"]
    assert [a["name"] for a in people["anonymous"]] == [second]
    assert "bob" in web.pipeline.matcher.names  # the bridge's matcher was reloaded
    # the name of an existing person: the identity's samples join that person
    named = web.api("POST", "/api/people/name", {"anonymous_id": second, "name": "bob"},
                    cookie=session)
    assert (named["samples"], named["merged"]) == (3, True)
    people = web.api("GET", "/api/people", cookie=session)
    assert {"name": "bob", "samples": 3, "chips": 3} in people["people"]
    assert people["anonymous"] == [] and people["anonymous_total"] == 0
    assert web.gallery.anonymous() == []
    web.api("POST", "/api/people/forget", {"name": "bob"}, cookie=session)


def test_naming_refuses_bad_input_and_strangers_to_the_site(web, messi):
    session = web.session()
    first, second = _strangers(web, messi)
    before = web.gallery.export(descriptors=True)
    refused = [  # (body, words the one-line error must hold)
        ({"anonymous_id": first, "name": ""}, "empty"),
        ({"anonymous_id": first, "name": "  bob"}, "white space"),
        ({"anonymous_id": first, "name": "bo\nb"}, "control character"),
        ({"anonymous_id": first, "name": "x" * 65}, "at most 64"),
        ({"anonymous_id": first, "name": "unknown-999"}, "anonymous identity"),
        ({"anonymous_id": first, "name": 7}, "'name' must be a string"),
        ({"name": "bob"}, "'anonymous_id' must be a string"),
        ({"anonymous_id": "unknown-999999", "name": "bob"}, "no anonymous identity"),
        ({"anonymous_id": "eileen", "name": "bob"}, "is a known person"),
    ]
    for body, words in refused:
        error = web.api("POST", "/api/people/name", body, cookie=session, expect=400)["error"]
        assert words in error and "\n" not in error, (body, error)
    assert web.api("POST", "/api/people/name", raw=b"[1, 2]", cookie=session,
                   expect=400)["error"] == "the request body must be a JSON object"
    # no credential, a wrong one, or another site's page: refused, nothing named
    body = json.dumps({"anonymous_id": first, "name": "mallory"}).encode()
    assert web.request("POST", "/api/people/name", body=body)[0] == 401
    assert web.request("POST", "/api/people/name", body=body, cookie="made-up-session")[0] == 401
    assert web.request("POST", "/api/people/name", body=body, cookie=session,
                       headers={"Origin": "https://evil.example"})[0] == 403
    assert web.api("GET", "/api/people", expect=200, cookie=session)["anonymous_total"] == 2
    after = web.gallery.export(descriptors=True)
    assert after["people"] == before["people"]  # nothing lost, nothing changed
    for name in (first, second):
        web.gallery.forget(name)


def test_cameras_and_statistics_follow_a_bridge_client(web, astronaut):
    session = web.session()

    async def stream():
        async with connect(f"wss://127.0.0.1:{web.port}/", ssl=web.context,
                           additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert json.loads(await ws.recv()) == {"command": 9}
            tags = []
            for _ in range(4):
                await ws.send(jpeg(astronaut))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 60))
                tags += [t["tag"] for t in reply["context"]]
                await asyncio.sleep(0.6)
            return tags
    assert "eileen" in _run(stream(), 120)
    time.sleep(1.5)  # one more statistics tick
    inputs = web.api("GET", "/api/cameras", cookie=session)["inputs"]
    client = next(i for i in inputs if i["id"] == "client:robot1")
    assert client["kind"] == "client" and client["processed"] == 4 and client["has_frame"]
    assert client["bytes"] == 4 * len(jpeg(astronaut))
    drawn = web.api("GET", "/api/cameras/frame?id=client:robot1", cookie=session)
    image = cv2.imdecode(np.frombuffer(drawn, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == astronaut.shape
    # the overlay's green box around the known face: pixels the original does not have
    green = (image[:, :, 1] > 180) & (image[:, :, 0] < 60) & (image[:, :, 2] < 60)
    original = (astronaut[:, :, 1] > 180) & (astronaut[:, :, 0] < 60) & (astronaut[:, :, 2] < 60)
    assert green.sum() > original.sum() + 200
    stats = web.api("GET", "/api/stats", cookie=session)
    assert stats["recognitions"]["eileen"] == 4
    series = [s["inputs"]["client:robot1"] for s in stats["history"]
              if "client:robot1" in s["inputs"]]
    assert max(s["fps"] for s in series) > 0 and max(s["bytes"] for s in series) > 0
    assert any(s["latency_ms"] for s in series)
    newer = web.api("GET", f"/api/stats?since={stats['history'][-1]['t']}", cookie=session)
    assert all(s["t"] > stats["history"][-1]["t"] for s in newer["history"])


def test_mtls_mode_needs_no_login_and_no_certificate_gets_nothing(tls, tmp_path):
    cfg = config(tls, auth="mtls", ca_file=tls["paths"]["client-ca.pem"])
    web = Web(cfg, tmp_path / "gallery.db", tls)
    try:
        with_cert = tls["client_context"](tls["client_ca"])
        status, _, data = web.request("GET", "/api/session", context=with_cert)
        assert status == 200 and json.loads(data)["name"] == "cam-mtls"
        for context in (tls["client_context"](), tls["client_context"](tls["rogue_ca"])):
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                web.request("GET", "/", context=context)
    finally:
        web.close()


def test_without_web_pages_the_port_answers_websockets_only(tls):
    server = BridgeServer(config(tls), PipelineProcessor())
    thread = BridgeThread(server)
    thread.start()
    try:
        conn = http.client.HTTPSConnection("127.0.0.1", server.port, timeout=30,
                                           context=tls["client_context"]())
        conn.request("GET", "/", headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        assert response.status == 426 and b"page-live" not in response.read()
        conn.close()
    finally:
        thread.stop()
