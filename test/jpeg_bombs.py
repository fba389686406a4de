"""Small JPEGs that declare a huge frame, hidden in ways libjpeg reads past (tests only).

libjpeg (jdmarker.c) skips any bytes that are not 0xFF before a marker (with a warning),
swallows 0xFF fill bytes and stuffed 0xFF 0x00 pairs, skips parameterless markers (RSTn,
TEM) and skips a segment whose length field is below 2 by just its length field. A header
reader that stops at any of these returns no size, and a size guard that trusts it lets
libjpeg allocate the declared frame. Each function returns the bytes of a valid tiny JPEG
(8x8, grey) whose SOF0 declares ``width`` x ``height``, with one such trick before the SOF.
"""
from __future__ import annotations

import struct
from typing import Callable, Dict

import cv2
import numpy as np


def _base() -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((8, 8), 128, np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    return buf.tobytes()


def _with(width: int, height: int, before_sof: bytes) -> bytes:
    data = bytearray(_base())
    sof = data.find(b"\xff\xc0")
    assert sof > 0
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data[:sof]) + before_sof + bytes(data[sof:])


TRICKS: Dict[str, bytes] = {
    "stray byte": b"\x00",            # the finding of issue 21: one byte libjpeg skips
    "stray bytes": b"\x12\x34\x56",
    "fill bytes": b"\xff\xff",         # 0xFF padding before the marker (legal)
    "stuffed zero": b"\xff\x00",       # discarded by libjpeg's marker search
    "restart marker": b"\xff\xd3",     # parameterless
    "TEM marker": b"\xff\x01",         # parameterless
    "short comment": b"\xff\xfe\x00\x00",  # length 0: libjpeg skips only the length field
    "comment": b"\xff\xfe\x00\x05abc",
}


def bomb(trick: str, width: int = 30000, height: int = 30000) -> bytes:
    """A valid tiny JPEG declaring ``width`` x ``height``, with ``trick`` before its SOF."""
    return _with(width, height, TRICKS[trick])


def all_bombs(width: int = 30000, height: int = 30000) -> Dict[str, bytes]:
    return {trick: bomb(trick, width, height) for trick in TRICKS}


Maker = Callable[[int, int], bytes]
