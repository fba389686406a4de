"""Fuzzing with hypothesis (issue 21): the inputs other programs and other people control.

Targets: the JPEG header reader and the decode guard (the size libjpeg decodes is the size the
guard checked), the bridge's protocol parser, the reference-file reader, the gallery readers
(rows and meta written by another program, a damaged file) and the parameter validation of
the server, bridge and camera. Each property says what any input may do: succeed, or fail
with the module's own one-line error; never another exception, never more pixels than the
limit, never a gallery row a matcher cannot use.

In ``make test`` each target runs a small, fixed set of examples (derandomized, no example
database: the same examples every run). ``make fuzz`` runs each target for
``FACEREC_FUZZ_SECONDS`` (default 600) with fresh random examples, in batches, and writes
what ran to ``bench/results/fuzz.json``. A failure prints the smallest input hypothesis
found; it then becomes a regression test (the examples given to each target below are the
findings so far, checked first on every run).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import struct
import time

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from facerec_server.bridge import protocol
from facerec_server.core import images
from facerec_server.core.gallery import Gallery, GalleryError
from facerec_server.core.reference import ReferenceError, load_reference

SECONDS = float(os.environ.get("FACEREC_FUZZ_SECONDS", "0") or 0)
EXAMPLES = int(os.environ.get("FACEREC_FUZZ_EXAMPLES", "150"))
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "bench", "results", "fuzz.json")
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.function_scoped_fixture]


def _fuzz(name, function, strategies, examples=()):
    """Check ``function(*values)`` on values drawn from ``strategies`` (and first on each
    tuple of ``examples``): one fixed batch in ``make test``, fresh batches for
    FACEREC_FUZZ_SECONDS under ``make fuzz``."""
    counter = {"examples": 0}

    def counted(values):
        counter["examples"] += 1
        function(*values)

    def batch(**options):
        test = given(st.tuples(*strategies))(counted)
        for values in examples:
            test = example(tuple(values))(test)
        settings(database=None, deadline=None, suppress_health_check=_HEALTH,
                 **options)(test)()

    if not SECONDS:
        batch(max_examples=EXAMPLES, derandomize=True)
        assert counter["examples"] > 0
        return
    started = time.monotonic()
    batches = 0
    outcome = "interrupted"
    try:
        while time.monotonic() - started < SECONDS:
            batch(max_examples=2000, derandomize=False)
            batches += 1
        outcome = "nothing found"
    except Exception as error:
        outcome = f"failed: {type(error).__name__}: {str(error)[:300]}"
        raise
    finally:
        _record(name, time.monotonic() - started, counter["examples"], batches, outcome)


def _record(name, seconds, examples, batches, outcome):
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    try:
        with open(RESULTS) as handle:
            results = json.load(handle)
    except (OSError, ValueError):
        results = {}
    results[name] = {"seconds": round(seconds, 1), "examples": examples, "batches": batches,
                     "outcome": outcome, "hypothesis_runs_per_batch": 2000,
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with open(RESULTS, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)


# --- JPEG header reader and decode guard ------------------------------------------------------

def _jpeg(shape, progressive=False):
    image = np.random.default_rng(len(shape)).integers(0, 255, shape, dtype=np.uint8)
    flags = [cv2.IMWRITE_JPEG_QUALITY, 60] + ([cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
                                              if progressive else [])
    ok, buf = cv2.imencode(".jpg", image, flags)
    assert ok
    return buf.tobytes()


BASES = [_jpeg((8, 8)), _jpeg((16, 24, 3)), _jpeg((16, 16, 3), progressive=True)]
#: Byte strings libjpeg treats specially before the frame header (see test/jpeg_bombs.py).
TOKENS = [b"\x00", b"\xff", b"\xff\xff", b"\xff\x00", b"\xff\xd0", b"\xff\x01", b"\xff\xd8",
          b"\xff\xd9", b"\xff\xda", b"\xff\xc0", b"\xff\xc2", b"\xff\xc3", b"\xff\xc9",
          b"\xff\xc5", b"\xff\xcf", b"\xff\xfe\x00\x00", b"\xff\xfe\x00\x01",
          b"\xff\xfe\x00\x02", b"\xff\xe1\x00\x08Exif", b"\xff\xdd\x00\x04\x00\x01",
          b"\xff\xc0\x00\x0b\x08\x01\x00\x01\x00\x01\x01\x11\x00"]
MAX_SIDE = 4000  # declared sides the mutations write (the oracle decodes at 1/8 scale)


@st.composite
def jpeg_like(draw):
    data = bytearray(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(("insert", "insert_random", "sof_size", "delete", "flip",
                                   "truncate")))
        pos = draw(st.integers(0, len(data)))
        if op == "insert":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "insert_random":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "sof_size":  # the size a frame header declares, at any SOF in the data
            sof = max(data.find(b"\xff\xc0"), data.find(b"\xff\xc2"))
            if sof >= 0 and sof + 9 <= len(data):
                data[sof + 5:sof + 9] = struct.pack(">HH", draw(st.integers(0, MAX_SIDE)),
                                                    draw(st.integers(0, MAX_SIDE)))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 8))]
        elif op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


def _libjpeg_size(data):
    """(width, height) of what libjpeg decodes, from a 1/8-scale grey decode (so a frame the
    header reader missed cannot allocate much), or None when it decodes nothing."""
    if not data:
        return None
    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None or image.size == 0:
        return None
    return image.shape[1], image.shape[0]


def _jpeg_target(data):
    header = images.encoded_size(data)
    decoded = _libjpeg_size(data)
    if decoded is not None:
        # whatever libjpeg decodes, the guard read its size first
        assert header is not None, "libjpeg decoded a frame the header reader found no size of"
        assert (math.ceil(header[0] / 8), math.ceil(header[1] / 8)) == decoded, (header, decoded)
    limit = 300
    try:
        image = images.decode_image(data, "jpeg", max_pixels=limit)
    except images.ImageDecodeError as error:
        assert "\n" not in str(error)
    else:
        assert image.ndim == 3 and image.shape[0] * image.shape[1] <= limit


def test_fuzz_jpeg_header_and_decode_guard():
    _fuzz("jpeg_header_and_decode_guard", _jpeg_target, [jpeg_like()], [
        (bytes.fromhex("ffd8") + b"\x00" + BASES[0][2:],)])  # issue 21: a stray byte


# --- the bridge's protocol parser -------------------------------------------------------------

_json_scalars = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70)
                 | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                            max_leaves=12)
_commands = st.integers(-3, 40) | st.sampled_from([int(c) for c in protocol.Command])


@st.composite
def bridge_text(draw):
    kind = draw(st.sampled_from(("json", "legacy", "text", "bytes", "digits", "nested",
                                 "tags")))
    if kind == "json":
        document = {"command": draw(_commands | _json_scalars), "context": draw(_json_values)}
        if draw(st.booleans()):
            document.pop("context")
        return json.dumps(document)
    if kind == "legacy":
        return chr(draw(st.integers(0, 0x10FFFF).filter(lambda n: not 0xD800 <= n < 0xE000))) \
            + ":" + draw(st.text(max_size=30))
    if kind == "text":
        return draw(st.text(max_size=60))
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    if kind == "digits":  # issue 21 item 6: numbers int() does not take, or too many digits
        digits = draw(st.text(st.characters(categories=("Nd", "No")), min_size=1,
                              max_size=60) | st.text("0123456789", min_size=30, max_size=6000))
        return '{"command": %d, "context": %s}' % (
            draw(st.sampled_from([int(c) for c in protocol.Command])),
            digits if draw(st.booleans()) else json.dumps(digits))
    if kind == "nested":
        depth = draw(st.integers(1, 5000))
        return '{"command": 6, "context": ' + "[" * depth + "]" * depth + "}"
    tags = draw(st.lists(st.dictionaries(st.sampled_from(("tag", "x", "y", "width", "height",
                                                          "label", "prediction")),
                                         _json_scalars, max_size=7), max_size=3))
    return json.dumps({"command": draw(st.sampled_from([int(c) for c in protocol.Command])),
                       "context": tags})


def _protocol_target(text, client_side):
    allowed = protocol.CLIENT_COMMANDS if client_side else None
    try:
        message = protocol.parse_text(text, allowed)
    except protocol.ProtocolError as error:
        assert error.kind in ("malformed", "unknown_command", "bad_context")
        assert "\n" not in str(error)
        return
    settings_ = protocol.ClientSettings()
    if message.command in protocol.CLIENT_COMMANDS:
        settings_.apply(message)
        for line in settings_.to_messages():  # what the server sends back parses again
            protocol.parse_text(line)
    if message.context is None or isinstance(message.context, (str, int, bool)):
        again = protocol.parse_text(protocol.encode(message.command, message.context))
        assert again.command == message.command and again.context == message.context


def test_fuzz_bridge_protocol_parser():
    _fuzz("bridge_protocol_parser", _protocol_target, [bridge_text(), st.booleans()], [
        ('{"command": 6, "context": "\u00b2"}', True),  # issue 21 item 6
        ("\x06:\u00b2", True), ('{"command": 6, "context": ' + "9" * 5000 + "}", True)])


# --- the reference-file reader ----------------------------------------------------------------

_entries = st.lists(st.one_of(
    st.fixed_dictionaries({"tag": _json_scalars, "photos": _json_values}),
    st.fixed_dictionaries({"tag": st.text(max_size=70), "photos": st.lists(
        st.text(max_size=20), max_size=3) | st.text(max_size=20)}),
    _json_values), max_size=6)


@st.composite
def reference_bytes(draw):
    kind = draw(st.sampled_from(("entries", "json", "bytes", "nested", "mutated")))
    if kind == "entries":
        return json.dumps(draw(_entries)).encode()
    if kind == "json":
        return json.dumps(draw(_json_values)).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "nested":
        depth = draw(st.integers(1, 200_000))
        opener, closer = draw(st.sampled_from((("[", "]"), ('{"a":', "}"))))
        return (opener * depth + "1" + closer * depth).encode()
    data = bytearray(json.dumps(draw(_entries)).encode())
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        data[pos:pos + draw(st.integers(0, 3))] = draw(st.binary(max_size=3))
    return bytes(data)


def _reference_target(folder):
    def target(data):
        path = os.path.join(folder, "reference.json")
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            entries = load_reference(path)
        except ReferenceError as error:
            assert "\n" not in str(error) and path in str(error)
        else:
            assert isinstance(entries, list)
            from facerec_server.core import reference
            for entry in entries:  # what import_reference checks before any photo is read
                if isinstance(entry, dict):
                    try:
                        reference._photos_of(entry)
                    except ValueError as error:
                        assert "\n" not in str(error)
    return target


def test_fuzz_reference_reader(tmp_path):
    _fuzz("reference_reader", _reference_target(str(tmp_path)), [reference_bytes()],
          [(b"[" * 100_000 + b"]" * 100_000,)])  # issue 21 item 14


# --- the gallery readers ----------------------------------------------------------------------

_sqlite_int = st.integers(-2 ** 63, 2 ** 63 - 1)
_names = st.none() | st.text(max_size=70) | _sqlite_int | st.binary(max_size=8)
_blobs = st.one_of(
    st.binary(max_size=600),
    st.lists(st.floats(width=32), min_size=128, max_size=128).map(
        lambda v: np.asarray(v, "<f4").tobytes()),
    st.integers(0, 127).map(lambda i: np.eye(128, dtype="<f4")[i].tobytes()),
    st.none(), _sqlite_int, st.text(max_size=10))
_generations = st.one_of(st.none(), _sqlite_int, st.text(max_size=25), st.floats(),
                         st.binary(max_size=8), st.just("delete"))


def _gallery_target(folder):
    pristine = os.path.join(folder, "pristine.db")
    with Gallery(pristine) as gallery:
        gallery.add_samples("alice", [np.eye(128, dtype=np.float32)[0]], source="fuzz")

    def target(rows, generation, damage):
        path = os.path.join(folder, "gallery.db")
        shutil.copyfile(pristine, path)
        db = sqlite3.connect(path, isolation_level=None)  # another program writes rows, meta

        def write(statement, values=()):
            try:
                db.execute(statement, values)
            except sqlite3.IntegrityError:  # the schema refuses it (NOT NULL, UNIQUE)
                pass
        for number, (name, blob) in enumerate(rows):
            write("INSERT INTO people (name, created_at) VALUES (?, 0)", (f"p{number}",))
            write("INSERT INTO samples (person_id, descriptor, created_at, source) "
                  "SELECT id, ?, 0, 'fuzz' FROM people WHERE name = ?", (blob, f"p{number}"))
            write("UPDATE people SET name = ? WHERE name = ?", (name, f"p{number}"))
        if generation == "delete":
            write("DELETE FROM meta WHERE key = 'generation'")
        else:
            write("UPDATE meta SET value = ? WHERE key = 'generation'", (generation,))
        db.close()
        if damage:  # and bytes of the file itself
            with open(path, "r+b") as handle:
                size = os.fstat(handle.fileno()).st_size
                for offset, data in damage:
                    handle.seek(min(offset, size - 1))
                    handle.write(data)
        try:
            with Gallery(path) as gallery:
                token, names, matrix = gallery.snapshot()
                gallery.people()
        except GalleryError as error:
            assert "\n" not in str(error).strip()
            return
        assert isinstance(token, int)
        assert matrix.shape == (len(names), 128) and matrix.dtype == np.float32
        assert np.isfinite(matrix).all()
        assert all(isinstance(name, str) and name for name in names)
    return target


def test_fuzz_gallery_readers(tmp_path):
    _fuzz("gallery_readers", _gallery_target(str(tmp_path)), [
        st.lists(st.tuples(_names, _blobs), max_size=5), _generations,
        st.lists(st.tuples(st.integers(0, 4096), st.binary(min_size=1, max_size=4)),
                 max_size=3)])


# --- parameter validation ---------------------------------------------------------------------

_param_values = st.one_of(
    st.booleans(), st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(),
    st.text(max_size=40), st.sampled_from(["~", "~nouser/x.db", "/dev/zero", "/", "", "9abc",
                                           "camera//x", "0", "-1"]),
    st.lists(st.text(max_size=12), max_size=4), st.lists(st.integers(-2 ** 63, 2 ** 63 - 1),
                                                         max_size=4),
    st.lists(st.floats(), max_size=4))


def _all_specs():
    from facerec_camera.camera_node import SPECS as CAMERA
    from facerec_server.bridge_node import BRIDGE_SPECS
    from facerec_server.params import SPECS as SERVER
    return [("server", s) for s in SERVER] + [("bridge", s) for s in BRIDGE_SPECS] \
        + [("camera", s) for s in CAMERA]


def _params_target():
    from facerec_server import params, ros_params, settings as server_settings
    from facerec_server.core.models import ModelError

    def target(owner_spec, value):
        owner, spec = owner_spec
        value = ros_params.coerce(spec, value)
        reason = ros_params.type_error(spec, value)
        if reason is None:
            reason = spec.validate(value)
        if reason is not None:
            assert isinstance(reason, str) and reason and "\n" not in reason
            return
        if isinstance(value, float) or (isinstance(value, list) and value
                                        and isinstance(value[0], float)):
            # a value taken must be one the node can use: no NaN/inf where a range is set
            values = value if isinstance(value, list) else [value]
            assert spec.low is None or all(math.isfinite(v) for v in values), (spec.name, value)
        if owner == "server" and not spec.read_only:
            class Change:
                name = spec.name
            Change.value = value
            try:
                server_settings.apply_changes(params.defaults(), [Change])
            except (ValueError, ModelError) as error:
                assert "\n" not in str(error).strip()
    return target


def test_fuzz_parameter_validation():
    from facerec_server import params
    _fuzz("parameter_validation", _params_target(), [st.sampled_from(_all_specs()),
                                                     _param_values],
          [(("server", params.BY_NAME["image_topics"]), ["9abc"]),  # issue 21 item 14
           (("server", params.BY_NAME["face.padding"]), float("nan")),  # found by fuzzing
           (("server", params.BY_NAME["face.models.shape_predictor"]), "~\x00")])


@pytest.fixture(autouse=True, scope="module")
def _quiet_logging():
    import logging
    logging.getLogger("facerec").setLevel(logging.ERROR)
    yield
