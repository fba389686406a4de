"""The websocket bridge end to end: real TLS on 127.0.0.1 (trustme certificates), real dlib.

Each test runs its own event loop (asyncio.run) with the bridge and raw websockets clients
or the ROS-less ``facerec_camera.ws_client.BridgeClient`` in it.
"""
import asyncio
import json
import logging
import ssl
import threading
import time

import cv2
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from facerec_camera import ws_client
from facerec_camera.ws_client import BridgeClient, BridgeClientError
from facerec_server.bridge import (BridgeConfig, BridgeConfigError, BridgeServer, BridgeThread,
                                   ClientSettings, PipelineProcessor)
from facerec_server.core.types import ObjectResult

from conftest import BRIDGE_TOKEN as TOKEN
COLOURS = ("blue", "green", "red")  # BGR channel order


# --- fixtures -------------------------------------------------------------------------------

class ColourRecognizer:
    """A trivial real object recognizer: scores each colour by its share of the image."""

    def __init__(self):
        self.calls = 0

    def recognize(self, image_bgr, label_count=5, deterministic=False, crops=16):
        self.calls += 1
        means = image_bgr.reshape(-1, 3).mean(axis=0)
        shares = means / max(float(means.sum()), 1e-6)
        results = [ObjectResult(COLOURS[i], float(shares[i]), model="test:colour")
                   for i in range(3)]
        return sorted(results, key=lambda r: -r.score)[:label_count]


class SpyPipeline:
    def __init__(self, pipeline):
        self.pipeline, self.calls = pipeline, 0

    def process(self, image):
        self.calls += 1
        return self.pipeline.process(image)


@pytest.fixture(scope="module")
def face_pipeline(astronaut):
    """The real dlib pipeline (HOG, upsample 1 for messi's small face), astronaut enrolled."""
    from facerec_server.core.pipeline import FaceConfig, FacePipeline
    pipeline = FacePipeline(FaceConfig(upsample=1))
    faces = pipeline.process(astronaut).faces
    biggest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
    pipeline.matcher.set_gallery(["astronaut"], [biggest.descriptor])
    return pipeline, biggest.box


def jpeg(image, quality=90) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buffer.tobytes()


def solid(bgr, size=32) -> bytes:
    return jpeg(np.full((size, size, 3), bgr, np.uint8))


RED = solid((0, 0, 255))
GREEN = solid((0, 255, 0))


def light_processor(delay=0.0):
    """Real decode + colour recognizer, no faces (fast); optional artificial slowness."""
    inner = PipelineProcessor(face_pipeline=None, object_recognizer=ColourRecognizer())

    def process(client_id, data, settings):
        if delay:
            time.sleep(delay)
        return inner(client_id, data, settings)
    process.inner = inner
    return process


def config(tls, **overrides) -> BridgeConfig:
    values = dict(host="127.0.0.1", port=0, certfile=tls["paths"]["server.pem"],
                  keyfile=tls["paths"]["server.key"], auth="token",
                  tokens_file=tls["paths"]["tokens"])
    values.update(overrides)
    return BridgeConfig(**values)


def run(coro, timeout=60):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


class Bridge:
    """async context manager: a started BridgeServer that records its callbacks."""

    def __init__(self, cfg, processor):
        self.frames, self.results, self.client_events = [], [], []
        self.server = BridgeServer(
            cfg, processor, on_frame=lambda *a: self.frames.append(a),
            on_result=lambda *a: self.results.append(a),
            on_client=lambda *a: self.client_events.append(a))

    async def __aenter__(self):
        await self.server.start()
        self.url = f"wss://127.0.0.1:{self.server.port}"
        return self

    async def __aexit__(self, *exc):
        await self.server.stop()


def open_client(tls, bridge, token=TOKEN, path="/", context=None, open_timeout=10, **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(bridge.url + path, ssl=context or tls["client_context"](),
                   additional_headers=headers, compression=None, open_timeout=open_timeout,
                   **kwargs)


async def recv_json(ws, timeout=30):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def announce(ws, name, faces=True, objects=True, label_count=5, deterministic=False):
    """What a client does on INIT_REQUEST; returns the echoes."""
    assert await recv_json(ws) == {"command": 9}
    settings = ClientSettings(name, faces, objects, label_count, deterministic)
    for text in settings.to_messages():
        await ws.send(text)
    return [await recv_json(ws) for _ in range(5)]


async def results_for(ws, frame, count):
    await ws.send(frame)
    return [await recv_json(ws) for _ in range(count)]


async def until(predicate, timeout=10):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def closed_code(ws, timeout=10):
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


# --- configuration --------------------------------------------------------------------------

def test_refuses_to_start_without_certificate_or_tokens(tls, caplog):
    with pytest.raises(BridgeConfigError, match="facerec_server.bridge.certs"):
        BridgeServer(BridgeConfig(auth="none"), light_processor())
    with pytest.raises(BridgeConfigError, match="certfile '/nonexistent.pem': No such file"):
        BridgeServer(config(tls, certfile="/nonexistent.pem"), light_processor())
    with pytest.raises(BridgeConfigError, match="tokens_file"):
        BridgeServer(config(tls, tokens_file=None), light_processor())
    with pytest.raises(BridgeConfigError, match="ca_file"):
        BridgeServer(config(tls, auth="mtls"), light_processor())
    with pytest.raises(BridgeConfigError, match="auth must be"):
        BridgeServer(config(tls, auth="maybe"), light_processor())

    async def start_unauthenticated():
        async with Bridge(config(tls, auth="none", tokens_file=None), light_processor()):
            pass
    with caplog.at_level(logging.WARNING, logger="facerec.bridge"):
        run(start_unauthenticated())
    assert "authentication is DISABLED" in caplog.text
    assert TOKEN not in caplog.text


def test_make_certs_helper_pair_works(tmp_path):
    from facerec_server.bridge.certs import make_certs
    paths = make_certs(str(tmp_path), ["localhost", "127.0.0.1"], ["cam1"])

    async def scenario():
        cfg = BridgeConfig(host="127.0.0.1", port=0, certfile=paths["server"],
                           keyfile=paths["server_key"], auth="mtls", ca_file=paths["ca"])
        async with Bridge(cfg, light_processor()) as bridge:
            context = ssl.create_default_context(cafile=paths["ca"])
            context.load_cert_chain(paths["client-cam1"], paths["client-cam1_key"])
            async with connect(bridge.url, ssl=context) as ws:
                assert await recv_json(ws) == {"command": 9}
                assert bridge.server.stats()["clients"]["cam1"]["principal"] == "cam1"
    run(scenario())


# --- the protocol with the real pipeline ------------------------------------------------------

def test_handshake_settings_echo_and_real_face_results(tls, face_pipeline, astronaut, messi):
    pipeline, astronaut_box = face_pipeline
    processor = PipelineProcessor(pipeline, ColourRecognizer())

    async def scenario():
        async with Bridge(config(tls, auth="none"), processor) as bridge:
            async with open_client(tls, bridge) as ws:
                echoes = await announce(ws, "front door", label_count=2)
                assert echoes == [
                    {"command": 1, "context": "front door"},
                    {"command": 8, "context": True}, {"command": 5, "context": True},
                    {"command": 6, "context": 2}, {"command": 7, "context": False}]
                await ws.send("\x06:4")  # the '<chr(n)>:' form is accepted, echoed as JSON
                assert await recv_json(ws) == {"command": 6, "context": 4}
                await ws.send('{"command": 6, "context": 3}')
                assert await recv_json(ws) == {"command": 6, "context": 3}
                await ws.send(json.dumps({"command": 2, "context": "hello"}))

                faces, objects = await results_for(ws, jpeg(astronaut), 2)
                assert faces["command"] == 3 and objects["command"] == 4
                left, top, right, bottom = astronaut_box
                assert {"tag": "astronaut", "x": left, "y": top, "width": right - left,
                        "height": bottom - top} in faces["context"]
                assert all(set(tag) == {"tag", "x", "y", "width", "height"}
                           for tag in faces["context"])
                assert [o["label"] for o in objects["context"]] == list(
                    ColourRecognizer().recognize(astronaut, 3)[i].label for i in range(3))
                assert set(objects["context"][0]) == {"label", "prediction"}

                faces, _ = await results_for(ws, jpeg(messi), 2)
                assert len(faces["context"]) == 1
                assert faces["context"][0]["tag"] == ""  # unknown
                assert faces["context"][0]["width"] > 20

            stats = bridge.server.stats()["global"]
            assert stats["frames_processed"] == 2 and stats["messages"] == 1
        # ROS hooks: frames and results under the client's name, with matching stamps
        assert [f[0] for f in bridge.frames] == ["front door", "front door"]
        assert bridge.frames[0][1][:3] == b"\xff\xd8\xff"
        name, stamp, faces, objects, elapsed = bridge.results[0]
        assert (name, stamp) == ("front door", bridge.frames[0][2])
        assert "astronaut" in [f.name for f in faces] and len(objects) == 3 and elapsed > 0
        assert ("front door", True) in bridge.client_events
        assert bridge.client_events[-1] == ("front door", False)
    run(scenario(), timeout=120)


def test_two_clients_get_only_what_they_asked_for(tls, face_pipeline, messi):
    faces_spy, objects_spy = SpyPipeline(face_pipeline[0]), ColourRecognizer()
    processor = PipelineProcessor(faces_spy, objects_spy)
    frame = jpeg(messi)

    async def scenario():
        async with Bridge(config(tls, auth="none"), processor) as bridge:
            async with open_client(tls, bridge) as a, open_client(tls, bridge) as b:
                await announce(a, "faces-only", faces=True, objects=False)
                await announce(b, "objects-only", faces=False, objects=True, label_count=1)
                got_a, got_b = await asyncio.gather(results_for(a, frame, 1),
                                                    results_for(b, frame, 1))
                assert got_a[0]["command"] == 3 and got_a[0]["context"][0]["tag"] == ""
                assert got_b[0] == {"command": 4, "context": [
                    {"label": got_b[0]["context"][0]["label"],
                     "prediction": got_b[0]["context"][0]["prediction"]}]}
                # nothing else arrives for either of them
                for ws in (a, b):
                    with pytest.raises(asyncio.TimeoutError):
                        await asyncio.wait_for(ws.recv(), 0.5)
        assert (faces_spy.calls, objects_spy.calls) == (1, 1)  # disabled parts not computed
        by_name = {r[0]: r for r in bridge.results}
        assert by_name["faces-only"][3] is None and by_name["objects-only"][2] is None
    run(scenario(), timeout=120)


def test_send_objects_outside_the_reply_cycle(tls):
    """A processor that returns objects=None: the frame's reply is faces only, and object
    results go out when the host calls send_objects (from any thread), in the usual shape,
    only to a connected client that enabled objects, cut to its label_count."""
    objects = [ObjectResult("cat", 0.2), ObjectResult("dog", 0.9), ObjectResult("owl", 0.5)]

    def faces_only(client_id, data, settings):
        return [], None

    async def scenario():
        async with Bridge(config(tls, auth="none"), faces_only) as bridge:
            server = bridge.server
            async with open_client(tls, bridge) as a, open_client(tls, bridge) as b:
                await announce(a, "wants-objects", label_count=2)
                await announce(b, "no-objects", objects=False)
                for ws in (a, b):
                    assert await results_for(ws, RED, 1) == [{"command": 3, "context": []}]
                    with pytest.raises(asyncio.TimeoutError):  # no per-frame object reply
                        await asyncio.wait_for(ws.recv(), 0.3)
                assert server.client_settings("wants-objects").label_count == 2
                assert server.client_settings("nobody") is None
                sent = await asyncio.to_thread(
                    lambda: [server.send_objects(name, objects)
                             for name in ("wants-objects", "no-objects", "nobody")])
                assert sent == [True, True, False]
                assert await recv_json(a) == {"command": 4, "context": [
                    {"label": "dog", "prediction": 0.9}, {"label": "owl", "prediction": 0.5}]}
                for ws in (a, b):
                    with pytest.raises(asyncio.TimeoutError):
                        await asyncio.wait_for(ws.recv(), 0.3)
                # the client changes its mind: dropped at delivery time
                await a.send('{"command": 5, "context": false}')
                assert await recv_json(a) == {"command": 5, "context": False}
                assert await asyncio.to_thread(server.send_objects, "wants-objects", objects)
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(a.recv(), 0.3)
                assert server.stats()["clients"]["wants-objects"]["results_sent"] == 2
            await until(lambda: not server.clients())
            assert not server.send_objects("wants-objects", objects)  # gone
        assert not server.send_objects("wants-objects", objects)  # bridge stopped
        assert [r[3] for r in bridge.results] == [None, None]  # on_result: faces only
        assert [r[2] for r in bridge.results] == [[], []]
    run(scenario())


# --- refused connections --------------------------------------------------------------------

def test_refused_plain_ws_missing_and_wrong_token(tls, caplog):
    async def scenario():
        async with Bridge(config(tls), light_processor()) as bridge:
            async with open_client(tls, bridge) as good:
                await announce(good, "good", faces=False)
                port = bridge.server.port
                with pytest.raises((InvalidHandshake, OSError, EOFError)):
                    async with connect(f"ws://127.0.0.1:{port}", open_timeout=5):
                        pass
                async with open_client(tls, bridge, token=None) as ws:
                    assert await closed_code(ws) == 1008
                async with open_client(tls, bridge, token="wrong-token") as ws:
                    assert await closed_code(ws) == 1008
                async with open_client(tls, bridge, token=None, path=f"/?token={TOKEN}") as ws:
                    assert await recv_json(ws) == {"command": 9}  # query token accepted
                assert bridge.server.stats()["global"]["rejected_auth"] == 2
                assert bridge.server.stats()["clients"]["robot1"]["principal"] == "robot1"
                # the first client was never disturbed
                reply = await results_for(good, RED, 1)
                assert reply[0]["context"][0]["label"] == "red"
    with caplog.at_level(logging.DEBUG):
        run(scenario())
    bridge_logs = "\n".join(r.getMessage() for r in caplog.records
                            if r.name.startswith("facerec"))
    assert "Bearer ***" in bridge_logs and "token=***" in bridge_logs  # debug handshake logs
    assert TOKEN not in bridge_logs and "wrong-token" not in bridge_logs


def test_mtls_refuses_wrong_or_missing_client_certificate(tls):
    cfg = config(tls, auth="mtls", tokens_file=None, ca_file=tls["paths"]["client-ca.pem"])

    async def scenario():
        async with Bridge(cfg, light_processor()) as bridge:
            good_context = tls["client_context"](tls["client_ca"])
            async with open_client(tls, bridge, token=None, context=good_context) as good:
                await announce(good, "cert-cam", faces=False)
                assert bridge.server.stats()["clients"]["cam-mtls"]["principal"] == "cam-mtls"
                for context in (tls["client_context"](tls["rogue_ca"]), tls["client_context"]()):
                    with pytest.raises((InvalidHandshake, OSError, EOFError, ConnectionClosed)):
                        async with open_client(tls, bridge, token=None, context=context) as ws:
                            await ws.recv()
                reply = await results_for(good, GREEN, 1)
                assert reply[0]["context"][0]["label"] == "green"
    run(scenario())


# --- bad input and limits -------------------------------------------------------------------

def test_bad_input_is_counted_and_limits_close_with_documented_codes(tls):
    cfg = config(tls, auth="none", max_frame_size=64 * 1024, max_message_rate=100, max_clients=4)

    async def scenario():
        async with Bridge(cfg, light_processor(delay=0.05)) as bridge:
            async with open_client(tls, bridge) as ws, open_client(tls, bridge) as other:
                await announce(ws, "noisy", faces=False)
                await announce(other, "bystander", faces=False)
                for text in ("this is not json", '{"command": 42, "context": 1}',
                             '{"command": 6, "context": -3}', "[1,2",
                             # issue 21 item 6: these raised ValueError and closed with 1011
                             '{"command": 6, "context": "\u00b2"}', "\x06:\u00b2",
                             "\x06:" + "9" * 5000, '{"command": 6, "context": %s}' % ("9" * 5000)):
                    await ws.send(text)
                await ws.send(b"\x00\x01 binary garbage")
                await ws.send(b"\xff\xd8\xff\xe0 truncated jpeg garbage")
                await until(lambda: bridge.server.stats()["global"]["decode_errors"] == 2)
                reply = await results_for(ws, RED, 1)  # the connection lives on
                assert reply[0]["context"][0]["label"] == "red"
                client = bridge.server.stats()["clients"]["noisy"]
                assert (client["malformed"], client["unknown_command"], client["bad_context"],
                        client["decode_errors"]) == (2, 1, 5, 2)

                # a flood within the rate limit: latest-frame semantics drop waiting frames
                for _ in range(30):
                    await ws.send(GREEN)
                await ws.send(RED)
                while True:
                    reply = await recv_json(ws)
                    if reply["context"][0]["label"] == "red":
                        break
                client = bridge.server.stats()["clients"]["noisy"]
                assert client["frames_dropped"] >= 20
                assert client["frames_processed"] + client["frames_dropped"] == 32

                # too big -> 1009
                await ws.send(b"\xff\xd8\xff" + bytes(64 * 1024))
                assert await closed_code(ws) == 1009

                # more than max_message_rate (burst 200) -> 1008
                async with open_client(tls, bridge) as flooder:
                    await announce(flooder, "flooder", faces=False)
                    with pytest.raises(ConnectionClosed):
                        for _ in range(1000):
                            await flooder.send('{"command": 2, "context": "spam"}')
                            await asyncio.sleep(0)
                    assert flooder.close_code == 1008

                # the bystander is unaffected
                reply = await results_for(other, RED, 1)
                assert reply[0]["context"][0]["label"] == "red"
                stats = bridge.server.stats()["global"]
                assert stats["closed_too_big"] == 1 and stats["closed_rate"] == 1
    run(scenario(), timeout=90)


def test_max_clients_closes_with_try_again_later(tls):
    async def scenario():
        async with Bridge(config(tls, max_clients=1), light_processor()) as bridge:
            async with open_client(tls, bridge) as first:
                await announce(first, "first", faces=False)
                async with open_client(tls, bridge) as second:
                    assert await closed_code(second) == 1013
                assert (await results_for(first, RED, 1))[0]["command"] == 4
            assert bridge.server.stats()["global"]["rejected_capacity"] == 1
    run(scenario())


def test_commands_in_the_chr_form_get_json_replies(tls):
    """Issue 14: a client that sends '<chr(n)>:<context>' commands still gets every reply as
    JSON in the original layouts (the original clients json.loads every text message)."""
    async def scenario():
        async with Bridge(config(tls, auth="none"), light_processor()) as bridge:
            async with open_client(tls, bridge, token=None) as ws:
                assert await recv_json(ws) == {"command": 9}
                for text, echo in (("\x01:oldcam", {"command": 1, "context": "oldcam"}),
                                   ("\x08:0", {"command": 8, "context": False}),
                                   ("\x05:True", {"command": 5, "context": True}),
                                   ("\x06:2", {"command": 6, "context": 2})):
                    await ws.send(text)
                    assert await recv_json(ws) == echo
                await ws.send(RED)
                reply = await recv_json(ws)
                assert reply["command"] == 4 and len(reply["context"]) == 2
                assert reply["context"][0]["label"] == "red"
                assert all(set(t) == {"label", "prediction"} for t in reply["context"])
                assert bridge.server.clients()["oldcam"].faces_enabled is False
    run(scenario())


def test_duplicate_names_are_made_unique(tls):
    async def scenario():
        async with Bridge(config(tls, auth="none"), light_processor()) as bridge:
            async with open_client(tls, bridge) as a, open_client(tls, bridge) as b:
                await announce(a, "cam", faces=False)
                echoes = await announce(b, "cam", faces=False)
                assert echoes[0] == {"command": 1, "context": "cam(1)"}
                assert sorted(bridge.server.clients()) == ["cam", "cam(1)"]
    run(scenario())


def test_slow_reader_gets_stale_results_dropped(tls):
    """A client that stops reading: the bridge's writes block (write_limit) and it keeps at
    most send_queue_size result sets, dropping the stalest, instead of buffering without
    bound. Big (~150 KB) results fill the kernel's socket buffers quickly."""
    cfg = config(tls, auth="none", write_limit=1024, send_queue_size=2)
    labels = [ObjectResult(f"label-{i:04d}-" + "x" * 60, 1.0 - i / 5000) for i in range(2000)]

    def big_results(client_id, data, settings):
        return [], labels[:settings.label_count]

    async def scenario():
        async with Bridge(cfg, big_results) as bridge:
            async with open_client(tls, bridge, max_size=None) as ws:
                await announce(ws, "sleepy", faces=False, label_count=2000)
                ws.transport.pause_reading()
                for _ in range(60):
                    await ws.send(RED)
                    await asyncio.sleep(0.01)
                await until(lambda: bridge.server.stats()["clients"]["sleepy"][
                    "results_dropped"] > 0)
                session = bridge.server._sessions["client1"]
                assert len(session.outbox.results) <= 2
                ws.transport.resume_reading()
                await until(lambda: session.counters["frames_processed"]
                            == session.counters["results_sent"]
                            + session.counters["results_dropped"])
                received = 0
                while True:
                    try:
                        reply = await recv_json(ws, timeout=1)
                    except asyncio.TimeoutError:
                        break
                    assert reply["command"] == 4 and len(reply["context"]) == 2000
                    received += 1
                stats = bridge.server.stats()["clients"]["sleepy"]
                assert received == stats["results_sent"] < stats["frames_processed"]
    run(scenario())


# --- the ROS-less client ----------------------------------------------------------------------

def test_ws_client_streams_and_reconnects_after_bridge_restart(tls):
    settings = ClientSettings("robot-cam", faces_enabled=False, objects_enabled=True,
                              label_count=2)

    def frames():
        while True:
            yield RED

    async def scenario():
        cfg = config(tls, auth="none")
        results = []
        client = BridgeClient("wss://127.0.0.1:1", settings, token=TOKEN,
                              cafile=tls["paths"]["ca.pem"], on_result=results.append,
                              backoff_initial=0.1, backoff_max=0.5, fps=50)
        first = Bridge(cfg, light_processor())
        async with first:
            port = first.server.port
            client._url = f"wss://127.0.0.1:{port}"
            task = asyncio.create_task(client.run(frames()))
            while len(results) < 3:
                await asyncio.sleep(0.05)
            assert first.server.clients()["robot-cam"].label_count == 2
            assert first.server.stats()["clients"]["robot-cam"]["frames_dropped"] == 0
        count = len(results)
        await asyncio.sleep(0.3)  # the bridge is down: the client backs off and retries
        second = Bridge(config(tls, auth="none", port=port), light_processor())
        async with second:
            while len(results) < count + 3:
                await asyncio.sleep(0.05)
            assert second.server.clients()["robot-cam"] == settings
            client.stop()
            await task
        assert client.stats.reconnects >= 1
        assert client.server_settings[ws_client.Command.SETTING_LABELCOUNT] == 2
        assert all(r.kind == "objects" and len(r.tags) == 2 and r.tags[0].label == "red"
                   for r in results)
        assert results[-1].latency is not None and results[-1].latency < 5
    run(scenario())


def test_ws_client_warns_and_reconnects_when_replies_stop(tls, caplog):
    """Issue 21 item 2: a bridge session that no longer answers (as one did when its face
    worker died) must not leave facerec-ws-camera sending frames into silence forever: it
    warns about the missing replies and reconnects, and the new session answers."""
    release = threading.Event()
    inner = light_processor()
    sessions = []

    def processor(client_id, data, settings):
        if not sessions or sessions[0] == client_id:
            sessions[:1] = [client_id]
            release.wait(30)  # the first session never answers (until the test ends)
        return inner(client_id, data, settings)

    async def scenario():
        async with Bridge(config(tls, workers=2), processor) as bridge:
            results = []
            client = BridgeClient(bridge.url, ClientSettings("silent", faces_enabled=False),
                                  token=TOKEN, cafile=tls["paths"]["ca.pem"], fps=20,
                                  result_timeout=0.3, stall_timeout=1.5, backoff_initial=0.1,
                                  on_result=results.append)
            task = asyncio.create_task(client.run(lambda: RED))
            try:
                await until(lambda: results, timeout=20)
            finally:
                client.stop()
                release.set()
                await task
            return client
    with caplog.at_level(logging.WARNING, logger="facerec.ws_client"):
        client = run(scenario())
    assert client.stats.reconnects >= 1 and client.stats.result_timeouts >= 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "facerec.ws_client"]
    assert any("no reply" in w for w in warnings), warnings
    assert any("reconnecting" in w for w in warnings), warnings


def test_ws_client_fatal_errors(tls):
    async def scenario():
        async with Bridge(config(tls), light_processor()) as bridge:
            with pytest.raises(BridgeClientError, match="authentication failed"):
                await BridgeClient(bridge.url, token="nope", cafile=tls["paths"]["ca.pem"],
                                   backoff_initial=0.05).run([RED])
            with pytest.raises(BridgeClientError, match="certificate"):
                await BridgeClient(bridge.url, token=TOKEN,  # system CAs do not know ours
                                   backoff_initial=0.05).run([RED])
            client = BridgeClient(bridge.url, token=TOKEN, insecure=True,
                                  settings=ClientSettings("insecure", faces_enabled=False))
            await client.run([RED, GREEN])  # a finite source: returns when done
            assert client.stats.frames_sent == 2 and client.stats.results == 2
    with pytest.raises(BridgeClientError, match="wss://"):
        BridgeClient("ws://127.0.0.1:50000")
    run(scenario())


def test_ws_camera_cli_with_test_pattern(tls, capsys):
    thread = BridgeThread(BridgeServer(config(tls), light_processor()))
    thread.start()
    try:
        url = f"wss://127.0.0.1:{thread.server.port}"
        code = ws_client.main(["--url", url, "--name", "cli-cam", "--source", "pattern",
                               "--fps", "20", "--frames", "3", "--no-faces", "--objects",
                               "--label-count", "1", "--cafile", tls["paths"]["ca.pem"],
                               "--token-file", tls["paths"]["tokens"] + ".first"])
    finally:
        thread.stop()
    assert code == 2  # the token file does not exist: a clear error, not a traceback
    with open(tls["paths"]["tokens"] + ".first", "w") as handle:
        handle.write(TOKEN + "\n")
    thread = BridgeThread(BridgeServer(config(tls), light_processor()))
    thread.start()
    try:
        url = f"wss://127.0.0.1:{thread.server.port}"
        code = ws_client.main(["--url", url, "--name", "cli-cam", "--source", "pattern",
                               "--fps", "20", "--frames", "3", "--no-faces", "--objects",
                               "--label-count", "1", "--cafile", tls["paths"]["ca.pem"],
                               "--token-file", tls["paths"]["tokens"] + ".first"])
        assert thread.server.stats()["global"]["frames_processed"] == 3
    finally:
        thread.stop()
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "objects:" in line]
    assert len(lines) == 3 and lines[0].startswith("cli-cam objects: ")


def test_ws_client_imports_without_ros():
    import subprocess
    import sys
    code = ("import sys; import facerec_camera.ws_client; "
            "assert 'rclpy' not in sys.modules and 'facerec_server.core.pipeline' "
            "not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bridge_thread_reports_start_errors(tls):
    first = BridgeThread(BridgeServer(config(tls), light_processor()))
    first.start()
    try:
        second = BridgeThread(BridgeServer(config(tls, port=first.server.port),
                                           light_processor()))
        with pytest.raises(BridgeConfigError, match="in use"):
            second.start()
    finally:
        first.stop()
    assert not any(t.name == "facerec-bridge" and t.is_alive() for t in threading.enumerate()
                   if t is not second._thread)


def test_ws_client_keeps_one_frame_in_flight_after_a_reply_time_out(tls):
    """The first frame's reply comes after the client's time-out: the client sends the next
    frame then, but the late reply must not free a second slot (it is the first frame's), and
    its latency is the first frame's (not an impossible few ms for the frame sent since)."""
    slow, normal, timeout = 2.5, 0.25, 1.5
    seen = {"frames": 0, "results": 0}
    outstanding_at_arrival = []
    inner = light_processor()

    def process(client_id, data, settings):
        time.sleep(slow if seen["results"] == 0 else normal)
        return inner(client_id, data, settings)

    def on_frame(*args):
        outstanding_at_arrival.append(seen["frames"] - seen["results"])
        seen["frames"] += 1

    def on_result(*args):
        seen["results"] += 1

    async def scenario():
        results = []
        server = BridgeServer(config(tls), process, on_frame=on_frame, on_result=on_result)
        await server.start()
        try:
            client = BridgeClient(
                f"wss://127.0.0.1:{server.port}", ClientSettings("cam", objects_enabled=False),
                token=TOKEN, cafile=tls["paths"]["ca.pem"], on_result=results.append,
                result_timeout=timeout)
            task = asyncio.create_task(client.run(iter(lambda: RED, None)))
            await until(lambda: len(results) >= 8, timeout=30)
            client.stop()
            await task
        finally:
            await server.stop()
        return client, results

    client, results = run(scenario())
    assert client.stats.result_timeouts == 1
    latencies = [r.latency for r in results if r.latency is not None]
    # the late reply is accounted to the slow first frame
    assert latencies[0] >= slow - 0.05, latencies
    # every later reply belongs to a frame that waited at least one processing time
    assert min(latencies[1:]) >= normal - 0.05, latencies
    # after the late reply, each frame arrives when the previous one has been answered
    assert outstanding_at_arrival[:2] == [0, 1], outstanding_at_arrival
    assert outstanding_at_arrival[2:] == [0] * len(outstanding_at_arrival[2:]), \
        outstanding_at_arrival


def test_ws_client_recovers_when_a_frame_gets_no_reply(tls):
    """A frame the server never answers (its processing failed): after the time-out the next
    frame's reply is first taken for the lost frame's, the accounting gets back in step after
    at most one more time-out, and then one frame is in flight at a time."""
    normal, timeout = 0.25, 1.5
    seen = {"frames": 0, "done": 0}
    outstanding_at_arrival = []
    inner = light_processor()

    def process(client_id, data, settings):
        try:
            time.sleep(normal)
            if seen["done"] == 0:
                raise ValueError("this frame is lost")
            return inner(client_id, data, settings)
        finally:
            seen["done"] += 1

    def on_frame(*args):
        outstanding_at_arrival.append(seen["frames"] - seen["done"])
        seen["frames"] += 1

    async def scenario():
        results = []
        server = BridgeServer(config(tls), process, on_frame=on_frame)
        await server.start()
        try:
            client = BridgeClient(
                f"wss://127.0.0.1:{server.port}", ClientSettings("cam", objects_enabled=False),
                token=TOKEN, cafile=tls["paths"]["ca.pem"], on_result=results.append,
                result_timeout=timeout)
            task = asyncio.create_task(client.run(iter(lambda: RED, None)))
            await until(lambda: len(results) >= 8, timeout=30)
            client.stop()
            await task
        finally:
            await server.stop()
        return client, results

    client, results = run(scenario())
    assert client.stats.result_timeouts <= 2, client.stats
    # once back in step, every frame arrives after the previous one was answered
    assert outstanding_at_arrival[3:] == [0] * len(outstanding_at_arrival[3:]), \
        outstanding_at_arrival
