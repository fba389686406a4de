"""Run the original iot-facerecognition Python client (PyPI iot-facerecognition-client 1.2.0)
unchanged against a bridge, with a video file as its camera (this machine has none).

Used by test_bridge_original_client.py as a child process, because the client's threads
never end (``while True`` loops that are not daemon threads). The only stand-in is the
camera: ``cv2.VideoCapture(0)`` becomes a real ``cv2.VideoCapture`` of ``--video``, read at
``--fps`` frames per second (a camera delivers frames at its rate; a file would be read as
fast as the client can encode) and started again at its end. Everything else is the
client's own code: ``connect()`` (wss://, CERT_NONE, ``"\\x01:<name>"``), ``start()`` and
its ``mainloop`` / ``receiveloop`` threads (``guienabled`` False).

Every text message the client's ``ws.recv`` returns is printed (before the client's own
``json.loads`` sees it) as ``RECV <json string>``; each frame it sends as ``SENT <bytes>``.
The run ends after ``--seconds`` or once a MESSAGE_TAG_FACE with ``--until-tag`` arrived
(plus one second), with ``DONE {"mainloop": alive, "receiveloop": alive, ...}``.

    python test/original_client.py --port 50000 --video faces.avi --name door \\
        --send 5:0 --send 6:3 --until-tag astronaut --seconds 90
"""
import argparse
import json
import os
import sys
import threading
import time

import cv2
from iot_facerecognition_client import FaceRecognition

_PRINT = threading.Lock()
_REAL_CAPTURE = cv2.VideoCapture


def emit(kind: str, value) -> None:
    with _PRINT:
        sys.stdout.write(f"{kind} {json.dumps(value)}\n")
        sys.stdout.flush()


class VideoCamera:
    """A real cv2.VideoCapture of a video file, paced like a camera and looping."""

    def __init__(self, path: str, fps: float):
        self.path, self.period = path, 1.0 / fps
        self.capture = _REAL_CAPTURE(path)
        self.next_frame = time.monotonic()

    def set(self, prop, value) -> bool:  # the client asks for a capture size: kept as is
        return self.capture.set(prop, value)

    def read(self):
        delay = self.next_frame - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.next_frame = max(self.next_frame + self.period, time.monotonic())
        ok, frame = self.capture.read()
        if not ok:  # end of the file: start again, as a camera never ends
            self.capture.release()
            self.capture = _REAL_CAPTURE(self.path)
            ok, frame = self.capture.read()
        return ok, frame

    def release(self) -> None:
        self.capture.release()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--fps", type=float, default=8.0)
    parser.add_argument("--name", default="iot-client")
    parser.add_argument("--send", action="append", default=[],
                        help="N:CONTEXT, sent with the client's sendCommand after connect()")
    parser.add_argument("--until-tag", default=None)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()

    width, height = 512, 384
    cv2.VideoCapture = lambda index: VideoCamera(args.video, args.fps)  # the camera only

    client = FaceRecognition(args.name, args.host, args.port, width, height, guienabled=False)
    client.connect()
    received = []
    original_recv, original_send_binary = client.ws.recv, client.ws.send_binary

    def recv():
        text = original_recv()
        received.append(text)
        emit("RECV", text if isinstance(text, str) else text.decode("latin-1"))
        return text

    def send_binary(data):
        emit("SENT", len(data))
        return original_send_binary(data)

    client.ws.recv, client.ws.send_binary = recv, send_binary
    for item in args.send:
        command, _, context = item.partition(":")
        client.sendCommand(int(command), context)
    client.start()

    deadline = time.monotonic() + args.seconds
    found_at = None
    while time.monotonic() < deadline and (found_at is None or time.monotonic() < found_at + 1):
        time.sleep(0.1)
        if found_at is None and args.until_tag is not None:
            for text in list(received):
                try:
                    document = json.loads(text)
                except ValueError:
                    continue
                if isinstance(document, dict) and document.get("command") == 3 and any(
                        isinstance(t, dict) and t.get("tag") == args.until_tag
                        for t in document.get("context") or ()):
                    found_at = time.monotonic()
                    break
    emit("DONE", {"mainloop": client.thread1.is_alive(),
                  "receiveloop": client.thread2.is_alive(), "found": found_at is not None})
    os._exit(0)  # the client's threads loop forever


if __name__ == "__main__":
    main()
