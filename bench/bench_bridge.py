#!/usr/bin/env python3
"""Websocket bridge: bytes on the wire per JPEG, frames/s relayed, latency under overload.

Everything runs on 127.0.0.1 with real TLS (a throw-away CA from
``facerec_server.bridge.certs``): the bridge in its own thread and event loop
(``BridgeThread``), the client in the main thread, a counting TCP proxy in between for the
on-the-wire byte counts.

1. **Wire bytes** per ~50 KB JPEG (the skimage astronaut re-encoded to the size): JPEG
   bytes vs websocket payload+framing (measured below TLS) vs TCP payload bytes (TLS records
   included, measured by the proxy), compared with what rosbridge sends for the same image
   as a ``sensor_msgs/CompressedImage`` publish op (``uint8[]`` as base64 inside JSON).
2. **Relay rate**: frames/s the bridge accepts and hands to ``on_frame`` (both recognition
   parts disabled: the ROS relay path); round trips/s with a no-op processor and one frame
   in flight (the camera client's default flow control); results/s when flooding without
   flow control (latest-frame semantics drop the frames that arrive during processing).
3. **Overload**: a processor that takes ``--proc-ms`` per frame, a client sending 2x what it
   can handle without flow control for ``--seconds``. Frames carry a sequence number in a
   JPEG COM segment; the processor echoes it as the face tag, so each result's latency is
   exact. Reports first-quarter vs last-quarter median latency (latest-frame semantics keep
   it flat), the same for the wait (latency minus that frame's own processing time, which
   with a real pipeline varies with the machine's load), frames dropped and results/s.

    python bench/bench_bridge.py [--seconds 8 --proc-ms 50 --target-kb 50] [--real]

``--real`` repeats the overload run with the real dlib face pipeline as the processor
(sending at twice its measured rate).

Writes ``bench/results/bridge.json``.
"""
import argparse
import asyncio
import base64
import datetime
import json
import os
import pathlib
import platform
import ssl
import statistics
import struct
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import websockets  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from facerec_server.bridge import (BridgeConfig, BridgeServer, BridgeThread,  # noqa: E402
                                   ClientSettings)
from facerec_server.bridge.certs import make_certs  # noqa: E402
from facerec_server.core.types import FaceResult  # noqa: E402

TOKEN = "bench-token-0123456789"


def astronaut_jpeg(target_bytes: int) -> bytes:
    import skimage
    image = cv2.imread(str(pathlib.Path(skimage.__file__).parent / "data" / "astronaut.png"))
    best = None
    for quality in range(95, 5, -1):
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        data = buffer.tobytes()
        if best is None or abs(len(data) - target_bytes) < abs(len(best) - target_bytes):
            best = data
        if len(data) < target_bytes:
            break
    return best


def with_sequence(jpeg: bytes, seq: int) -> bytes:
    """Insert a COM segment holding ``seq`` right after SOI (still a valid JPEG)."""
    payload = b"seq=%010d" % seq
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def sequence_of(jpeg: bytes) -> int:
    return int(jpeg[10:20]) if jpeg[6:10] == b"seq=" and jpeg[2:4] == b"\xff\xfe" else -1


class CountingProxy:
    """TCP proxy on 127.0.0.1 counting the bytes each way (TLS records included)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.up = self.down = 0

    async def start(self):
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, reader, writer, direction):
        try:
            while data := await reader.read(65536):
                setattr(self, direction, getattr(self, direction) + len(data))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _client(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer, "up"),
                             self._pipe(up_reader, writer, "down"))

    async def stop(self):
        self.server.close()


def rosbridge_publish_json(jpeg: bytes) -> str:
    """What rosbridge_suite sends for one CompressedImage (uint8[] -> base64 string)."""
    return json.dumps({"op": "publish", "topic": "/camera/image/compressed", "msg": {
        "header": {"stamp": {"sec": 1763700000, "nanosec": 123456789}, "frame_id": "camera"},
        "format": "jpeg", "data": base64.b64encode(jpeg).decode("ascii")}})


def ws_frame_overhead(payload: int, masked: bool) -> int:
    header = 2 + (2 if 126 <= payload < 65536 else 8 if payload >= 65536 else 0)
    return header + (4 if masked else 0)


class Bench:
    def __init__(self, args, certs):
        self.args, self.certs = args, certs
        self.client_ssl = ssl.create_default_context(cafile=certs["ca"])
        self.tokens = os.path.join(os.path.dirname(certs["ca"]), "tokens")
        with open(self.tokens, "w") as handle:
            handle.write(f"bench:{TOKEN}\n")

    def bridge(self, processor, **overrides):
        values = dict(host="127.0.0.1", port=0, certfile=self.certs["server"],
                      keyfile=self.certs["server_key"], auth="token", tokens_file=self.tokens,
                      max_message_rate=0)
        values.update(overrides)
        self.relayed = 0

        def on_frame(name, jpeg, stamp):
            self.relayed += 1
        thread = BridgeThread(BridgeServer(BridgeConfig(**values), processor,
                                           on_frame=on_frame))
        thread.start()
        return thread

    def connect(self, port):
        return connect(f"wss://localhost:{port}", ssl=self.client_ssl, compression=None,
                       additional_headers={"Authorization": f"Bearer {TOKEN}"},
                       max_size=None)

    @staticmethod
    async def announce(ws, settings):
        assert json.loads(await ws.recv()) == {"command": 9}
        for text in settings.to_messages():
            await ws.send(text)
        for _ in range(5):
            await ws.recv()

    # --- 1. wire bytes ----------------------------------------------------------------------
    async def wire_bytes(self, jpeg: bytes, frames: int = 20) -> dict:
        thread = self.bridge(lambda *a: ([], []))
        proxy = CountingProxy(thread.server.port)
        await proxy.start()
        try:
            async with self.connect(proxy.port) as ws:
                await self.announce(ws, ClientSettings("wire", False, False))
                await ws.ping()
                base_up = proxy.up
                sent_ws = [0]
                original = ws.transport.write  # bytes handed to TLS = websocket frames

                def counting(data):
                    sent_ws[0] += len(data)
                    return original(data)
                ws.transport.write = counting
                for _ in range(frames):
                    await ws.send(jpeg)
                while self.relayed < frames:
                    await asyncio.sleep(0.01)
                ws.transport.write = original
                await asyncio.sleep(0.1)
                tcp_per_frame = (proxy.up - base_up) / frames
        finally:
            await proxy.stop()
            thread.stop()
        rosbridge = rosbridge_publish_json(jpeg)
        rosbridge_ws = len(rosbridge) + ws_frame_overhead(len(rosbridge), masked=True)
        return {
            "jpeg_bytes": len(jpeg),
            "bridge_websocket_bytes_per_frame": sent_ws[0] / frames,
            "bridge_websocket_overhead_bytes": sent_ws[0] / frames - len(jpeg),
            "bridge_tcp_bytes_per_frame_tls": round(tcp_per_frame, 1),
            "bridge_tcp_overhead_pct": round(100 * (tcp_per_frame / len(jpeg) - 1), 2),
            "rosbridge_json_base64_websocket_bytes": rosbridge_ws,
            "rosbridge_overhead_pct": round(100 * (rosbridge_ws / len(jpeg) - 1), 2),
            "rosbridge_over_bridge_ratio": round(rosbridge_ws / (sent_ws[0] / frames), 3),
        }

    # --- 2. relay rate ----------------------------------------------------------------------
    async def relay(self, jpeg: bytes, seconds: float) -> dict:
        thread = self.bridge(lambda cid, data, s: ([], []))
        out = {}
        try:
            async with self.connect(thread.server.port) as ws:
                await self.announce(ws, ClientSettings("relay", False, False))
                start, sent = time.perf_counter(), 0
                while time.perf_counter() - start < seconds:
                    await ws.send(jpeg)
                    sent += 1
                while self.relayed < sent:
                    await asyncio.sleep(0.005)
                elapsed = time.perf_counter() - start
                out["relay_only_frames_per_s"] = round(sent / elapsed, 1)
                out["relay_only_mbit_per_s"] = round(sent * len(jpeg) * 8 / elapsed / 1e6, 1)
            async with self.connect(thread.server.port) as ws:
                await self.announce(ws, ClientSettings("roundtrip", True, False))
                start, received = time.perf_counter(), 0
                while time.perf_counter() - start < seconds:  # one frame in flight
                    await ws.send(jpeg)
                    await ws.recv()
                    received += 1
                elapsed = time.perf_counter() - start
                out["round_trips_per_s_one_in_flight"] = round(received / elapsed, 1)
            async with self.connect(thread.server.port) as ws:
                await self.announce(ws, ClientSettings("flood", True, False))
                results = [0]

                async def count():
                    async for _ in ws:
                        results[0] += 1
                counter = asyncio.create_task(count())
                start, sent = time.perf_counter(), 0
                while time.perf_counter() - start < seconds:  # no flow control
                    await ws.send(jpeg)
                    sent += 1
                elapsed = time.perf_counter() - start
                await asyncio.sleep(0.2)
                counter.cancel()
                out["flood_frames_per_s_sent"] = round(sent / elapsed, 1)
                out["flood_results_per_s"] = round(results[0] / elapsed, 1)
        finally:
            thread.stop()
        return out

    # --- 3. overload ------------------------------------------------------------------------
    async def overload(self, jpeg: bytes, seconds: float, proc_s: float,
                       pipeline=None) -> dict:
        proc_times = [proc_s]
        proc_of = {}  # seq -> seconds its processing took

        def slow(client_id, data, settings):
            started = time.perf_counter()
            if pipeline is not None:  # real dlib on the real image; seq tag added after
                faces = pipeline(data)
                proc_times.append(time.perf_counter() - started)
            else:
                time.sleep(proc_s)
                faces = []
            proc_of[sequence_of(data)] = time.perf_counter() - started
            return [FaceResult((0, 0, 1, 1), 1.0, None, name=str(sequence_of(data)))] + \
                list(faces), []

        thread = self.bridge(slow)
        sent_at, latencies = {}, []
        try:
            async with self.connect(thread.server.port) as ws:
                await self.announce(ws, ClientSettings("overload", True, False))

                async def receive():
                    async for text in ws:
                        now = time.perf_counter()
                        message = json.loads(text)
                        seq = int(message["context"][0]["tag"])
                        latencies.append((sent_at[seq] - start, now - sent_at[seq], seq))

                receiver = asyncio.create_task(receive())
                start = time.perf_counter()
                seq = 0
                while time.perf_counter() - start < seconds:
                    # 2x what the processor handles; for the real pipeline, 2x its recent
                    # median (its speed varies with the machine's load)
                    interval = statistics.median(proc_times[-5:]) / 2.0
                    deadline = (sent_at[seq - 1] if seq else start) + interval
                    await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
                    sent_at[seq] = time.perf_counter()
                    await ws.send(with_sequence(jpeg, seq))
                    seq += 1
                await asyncio.sleep(3 * proc_s)
                receiver.cancel()
                stats = thread.server.stats()["clients"]["bench"]  # the token's name
        finally:
            thread.stop()
        values = [latency for _, latency, _ in sorted(latencies)]
        # time not spent processing the frame itself: waiting for the previous frame to finish,
        # transport, TLS; what latest-frame semantics bound (dlib's own speed varies with load)
        waits = [latency - proc_of.get(seq, 0.0) for _, latency, seq in sorted(latencies)]
        quarter = max(1, len(values) // 4)
        return {
            "processor_ms_per_frame": proc_s * 1000,
            "send_rate_fps": round(seq / seconds, 2),
            "processor_ms_per_frame_measured_median": round(
                1000 * statistics.median(proc_times), 1),
            "seconds": seconds,
            "frames_sent": seq,
            "frames_processed": stats["frames_processed"],
            "frames_dropped": stats["frames_dropped"],
            "results_per_s": round(len(values) / seconds, 2),
            "latency_ms_median_first_quarter": round(1000 * statistics.median(values[:quarter]),
                                                     1),
            "latency_ms_median_last_quarter": round(1000 * statistics.median(values[-quarter:]),
                                                    1),
            "latency_ms_median": round(1000 * statistics.median(values), 1),
            "wait_ms_median_first_quarter": round(1000 * statistics.median(waits[:quarter]), 1),
            "wait_ms_median_last_quarter": round(1000 * statistics.median(waits[-quarter:]), 1),
            "latency_ms_max": round(1000 * max(values), 1),
            # for contrast: a plain FIFO (no dropping) would have a backlog growing at
            # (send_rate - 1/proc) frames/s, i.e. this latency for the last frame sent
            "unbounded_fifo_latency_ms_at_end_model": round(
                1000 * seconds * (seq / seconds * statistics.median(proc_times) - 1), 1),
        }


async def main_async(args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        certs = make_certs(folder, ["localhost", "127.0.0.1"])
        bench = Bench(args, certs)
        jpeg = astronaut_jpeg(args.target_kb * 1000)
        results = {
            "wire": await bench.wire_bytes(jpeg),
            "relay": await bench.relay(jpeg, args.relay_seconds),
            "overload": await bench.overload(jpeg, args.seconds, args.proc_ms / 1000),
        }
        if args.real:
            # As facerec_bridge runs it: dlib in a face worker process (dlib holds the GIL,
            # so in a thread it would stall the bridge's event loop and this client).
            from facerec_server.core import face_workers
            from facerec_server.core.pipeline import FaceConfig
            face_config = FaceConfig(upsample=0)
            pool = face_workers.FaceWorkerPool(1)
            try:
                pool.warmup(face_config, None)

                def pipeline(data):
                    return pool.run(face_workers.job_analyse, face_config, None, data,
                                    "jpeg")[0].faces
                timings = []
                for _ in range(3):
                    start = time.perf_counter()
                    pipeline(jpeg)
                    timings.append(time.perf_counter() - start)
                results["overload_real_dlib"] = await bench.overload(
                    jpeg, args.real_seconds, statistics.median(timings), pipeline)
            finally:
                pool.shutdown()
            results["overload_real_dlib"]["note"] = (
                "real FacePipeline (HOG, upsample 0) in a face worker process on the 50 KB "
                "astronaut JPEG; frames sent at twice its recent median speed")
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="overload duration")
    parser.add_argument("--proc-ms", type=float, default=50.0, help="processor time per frame")
    parser.add_argument("--relay-seconds", type=float, default=2.0)
    parser.add_argument("--target-kb", type=int, default=50)
    parser.add_argument("--real", action="store_true",
                        help="also overload a real dlib face pipeline (2x its measured rate)")
    parser.add_argument("--real-seconds", type=float, default=20.0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "bridge.json"))
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    report = {
        "benchmark": "facerec websocket bridge: wire bytes, relay rate, latency under overload",
        "command": "bench/bench_bridge.py " + " ".join(sys.argv[1:]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "cpus": os.cpu_count(),
        "notes": "loopback, TLS (ECDSA P-256), client and bridge in one process (GIL shared; "
                 "machine shared with other jobs), no permessage-deflate",
        **results,
    }
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    sys.exit(main())
