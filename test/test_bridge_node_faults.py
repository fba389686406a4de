"""facerec_bridge when its face worker process dies or hangs (issue 21 items 2 and 3).

The real node with one face worker process; the worker is SIGKILLed or SIGSTOPped (as a
crash or a hang would) while clients stream real frames over wss://.
"""
import asyncio
import json
import os
import signal
import time

import cv2
import numpy as np
import pytest
from websockets.asyncio.client import connect

from rosutil import jpeg
from test_bridge_node import start_bridge

FRAME_TIMEOUT = 6.0


def _children(pid: int):
    kids = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            kids += [int(k) for k in handle.read().split()]
    return kids


def _face_workers(pid: int):
    """The node's face worker processes (spawned children; not the resource tracker)."""
    workers = []
    for kid in _children(pid):
        try:
            with open(f"/proc/{kid}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except FileNotFoundError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(kid)
    return workers


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bridge_faults")
    bridge = start_bridge(tmp, {
        "bridge.auth": "none", "bridge.frame_timeout": FRAME_TIMEOUT,
        "bridge.publish_images": False, "gallery.path": str(tmp / "gallery.db"), "workers": 1,
        "object_recognition.enabled": False})
    proc = bridge["proc"]
    yield bridge
    code = proc.stop()
    assert code == 0, f"bridge exit code {code}:\n{proc.output()}"


async def _client(bridge, name):
    ws = await connect(f"wss://127.0.0.1:{bridge['port']}", ssl=bridge["context"],
                       max_size=2 ** 22)
    assert json.loads(await ws.recv()) == {"command": 9}
    await ws.send(json.dumps({"command": 1, "context": name}))
    assert json.loads(await ws.recv()) == {"command": 1, "context": name}
    return ws


async def _faces_reply(ws, frame, timeout):
    """Send ``frame`` until a command 3 reply arrives (frames that failed get none); the
    other messages seen meanwhile."""
    others = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await ws.send(frame)
        try:
            while True:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 2.0))
                if reply["command"] == 3:
                    return reply, others
                others.append(reply)
        except asyncio.TimeoutError:
            continue
    return None, others


def _cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` in clock ticks (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def _until_busy(pid: int, ticks: int = 3, timeout: float = 20.0) -> None:
    """Until ``pid`` has used ``ticks`` clock ticks more CPU than now: it is processing."""
    start = _cpu_ticks(pid)
    deadline = time.monotonic() + timeout
    while _cpu_ticks(pid) - start < ticks and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def test_client_gets_replies_again_after_the_face_worker_died(bridge, astronaut):
    frame = jpeg(astronaut)
    # nine faces on 1536x1536: a frame that keeps the worker busy for a good while, killed
    # once the worker is seen using CPU on it (a fixed sleep lost the race on a fast machine)
    big = jpeg(cv2.resize(np.tile(astronaut, (3, 3, 1)), (1536, 1536)))

    async def scenario():
        ws = await _client(bridge, "crash-victim")
        try:
            reply, _ = await _faces_reply(ws, frame, 60)
            assert reply is not None, "no reply before the crash"
            workers = _face_workers(bridge["proc"].popen.pid)
            assert len(workers) == 1, workers
            await ws.send(big)  # being processed when its worker dies
            await _until_busy(workers[0])
            os.kill(workers[0], signal.SIGKILL)
            return await _faces_reply(ws, frame, 90)
        finally:
            await ws.close()

    reply, others = asyncio.run(scenario())
    output = bridge["proc"].output()
    assert reply is not None, f"no reply after the face worker died:\n{output[-3000:]}"
    assert reply["context"], reply
    # the client was told, and the bridge logged it (one line, no traceback)
    assert any(m["command"] == 2 and "not processed" in m["context"] for m in others), others
    assert "crash-victim" in output and "face worker" in output
    assert "Traceback" not in output


def test_stuck_face_worker_holds_other_clients_up_at_most_frame_timeout(bridge, astronaut):
    frame = jpeg(astronaut)

    async def scenario():
        stuck = await _client(bridge, "stuck")
        other = await _client(bridge, "bystander")
        try:
            assert (await _faces_reply(stuck, frame, 60))[0] is not None
            workers = _face_workers(bridge["proc"].popen.pid)
            assert len(workers) == 1, workers
            os.kill(workers[0], signal.SIGSTOP)  # hangs, as a wedged worker would
            try:
                await stuck.send(frame)
                await asyncio.sleep(0.5)
                started = time.monotonic()
                reply, _ = await _faces_reply(other, frame, 90)
                waited = time.monotonic() - started
            finally:
                if workers[0] in _face_workers(bridge["proc"].popen.pid):
                    os.kill(workers[0], signal.SIGCONT)
            again, _ = await _faces_reply(stuck, frame, 60)
            return reply, waited, again
        finally:
            await stuck.close()
            await other.close()

    reply, waited, again = asyncio.run(scenario())
    output = bridge["proc"].output()
    print(f"bystander waited {waited:.1f} s for a reply (frame_timeout {FRAME_TIMEOUT} s)")
    assert reply is not None and reply["context"], output[-3000:]
    assert again is not None, output[-3000:]
    assert "did not answer within" in output and "Traceback" not in output
