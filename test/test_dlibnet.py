"""facerec_server.dlibnet: dlib's networks read in pure Python and run on OpenCV DNN.

Real models (face_recognition_models) and real faces (astronaut, messi, plus mirrored and
rescaled copies) compared against dlib itself; the reader is also checked on hand-built
bytes written with a tiny serializer that follows dlib/serialize.h.
"""
import math
import struct

import cv2
import numpy as np
import pytest

from facerec_server.core.detect import CnnDetector
from facerec_server.core.models import default_model_path
from facerec_server.dlibnet import reader
from facerec_server.dlibnet.embed import OpenCVEmbedder
from facerec_server.dlibnet.mmod import MmodNet, OpenCVMmodDetector, tiled_pyramid_layout
from facerec_server.dlibnet.net import DlibNet
from facerec_server.dlibnet.reader import UnsupportedLayerError, load_net, parse_bytes
from boxes import iou_inclusive as iou

dlib = pytest.importorskip("dlib")  # dlib is a hard dependency of the project


# --------------------------------------------------------------------------------------
# a tiny serializer (dlib/serialize.h, dlib/cuda/tensor.h, dlib/dnn/core.h)


def ser_int(value: int) -> bytes:
    neg = value < 0
    mag = -value if neg else value
    payload = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little")
    return bytes([len(payload) | (0x80 if neg else 0)]) + payload


def ser_float(value: float, digits: int = 53) -> bytes:
    """float_details: int64 mantissa, int16 exponent (digits = 24 for float, 53 double)."""
    if math.isinf(value):
        return ser_int(0) + ser_int(32000 if value > 0 else 32001)
    if math.isnan(value):
        return ser_int(0) + ser_int(32002)
    if digits == 24:
        value = float(np.float32(value))  # dlib serializes the float's own value
    man, exp = math.frexp(value)
    mantissa = int(man * (1 << digits))
    exponent = exp - digits
    for _ in range(8):
        if mantissa & 0xFF or mantissa == 0:
            break
        mantissa >>= 8
        exponent += 8
    return ser_int(mantissa) + ser_int(exponent)


def ser_str(s: str) -> bytes:
    return ser_int(len(s)) + s.encode()


def ser_bool(b: bool) -> bytes:
    return b"1" if b else b"0"


def ser_tensor(a) -> bytes:
    a = np.asarray(a, dtype=np.float32)
    shape = (list(a.shape) + [1, 1, 1, 1])[:4] if a.ndim < 4 else list(a.shape)
    return ser_int(2) + b"".join(ser_int(d) for d in shape) + a.astype("<f4").tobytes()


def ser_alias(*shape) -> bytes:
    shape = (list(shape) + [1, 1, 1])[:4]
    return ser_int(1) + b"".join(ser_int(d) for d in shape)


def con_details(weight, bias, stride, pad, version="con_5") -> bytes:
    f, k, nr, nc = weight.shape
    params = np.concatenate([weight.reshape(-1), bias.reshape(-1)])
    out = ser_str(version) + ser_tensor(params) + ser_int(f) + ser_int(nr) + ser_int(nc)
    out += ser_int(stride) + ser_int(stride) + ser_int(pad) + ser_int(pad)
    out += ser_alias(f, k, nr, nc) + ser_alias(1, f)
    out += b"".join(ser_float(v) for v in (1.0, 1.0, 1.0, 0.0))
    if version in ("con_5", "con_6"):
        out += ser_bool(True)
    if version == "con_6":
        out += ser_bool(False)
    return out


def fc_details(weight) -> bytes:
    n_in, n_out = weight.shape
    out = ser_str("fc_2") + ser_int(n_out) + ser_int(n_in) + ser_tensor(weight.reshape(-1))
    out += ser_alias(n_in, n_out) + ser_alias(0, 0, 0, 0) + ser_int(1)  # FC_NO_BIAS
    return out + b"".join(ser_float(v) for v in (1.0, 1.0, 1.0, 0.0))


def training_state(on_input: bool) -> bytes:
    empty = ser_tensor(np.zeros((0, 0, 0, 0), np.float32))
    out = ser_bool(True) + ser_bool(True) + ser_bool(False) + empty * 3
    return out + (ser_int(1) if on_input else b"")


def tiny_net(weight, bias, fc_weight, middle=b"relu") -> bytes:
    """loss_metric<fc_no_bias<relu<tag1<con<input_rgb_image_sized<4>>>>>>."""
    data = ser_int(1) + ser_str("loss_metric_2") + ser_float(0.04, 24) + ser_float(0.6, 24)
    data += ser_int(2)  # fc
    data += ser_int(2)  # relu (or the layer under test)
    data += ser_int(1)  # tag1
    data += ser_int(3)  # con on the input layer
    data += ser_str("input_rgb_image_sized") + ser_float(122.782, 24) + \
        ser_float(117.001, 24) + ser_float(104.298, 24) + ser_int(4) + ser_int(4)
    data += con_details(weight, bias, 1, 1) + training_state(True)
    data += (ser_str("relu_") if middle == b"relu" else middle) + training_state(False)
    data += fc_details(fc_weight) + training_state(False)
    return data


@pytest.fixture
def tiny():
    rng = np.random.default_rng(3)
    weight = rng.normal(size=(2, 3, 3, 3)).astype(np.float32)
    bias = rng.normal(size=2).astype(np.float32)
    fc_weight = rng.normal(size=(32, 5)).astype(np.float32)
    return weight, bias, fc_weight


def test_portable_int_and_float_round_trip():
    values = [0, 1, -1, 127, 128, 255, 256, -300, 2**31 - 1, -(2**40), 2**63 - 1]
    s = reader._Stream(b"".join(ser_int(v) for v in values))
    assert [s.int() for _ in values] == values
    floats = [0.0, 1.0, -2.5, 0.1, 122.782, 1e-30, -3.4e38, float("inf"), float("-inf")]
    for digits in (24, 53):
        s = reader._Stream(b"".join(ser_float(v, digits) for v in floats))
        got = [s.float() for _ in floats]
        want = [float(np.float32(v)) if digits == 24 else v for v in floats]
        assert got == want
    s = reader._Stream(ser_float(float("nan")))
    assert math.isnan(s.float())


def test_reader_round_trips_a_hand_built_net(tiny):
    weight, bias, fc_weight = tiny
    net = parse_bytes(tiny_net(weight, bias, fc_weight))
    assert net.input.type == "input_rgb_image_sized"
    assert net.input.attrs["nr"] == 4 and net.input.attrs["avg_red"] == pytest.approx(122.782)
    assert [layer.type for layer in net.layers] == ["con", "relu", "fc"]
    assert [layer.inputs for layer in net.layers] == [[-1], [0], [1]]
    con = net.layers[0]
    np.testing.assert_array_equal(con.params["weight"], weight)
    np.testing.assert_array_equal(con.params["bias"], bias)
    assert (con.attrs["stride_y"], con.attrs["padding_x"]) == (1, 1)
    np.testing.assert_array_equal(net.layers[2].params["weight"], fc_weight)
    assert "bias" not in net.layers[2].params
    assert net.loss.type == "loss_metric"
    assert net.loss.attrs["dist_thresh"] == pytest.approx(0.6)


def test_converted_tiny_net_matches_numpy(tiny):
    weight, bias, fc_weight = tiny
    desc = parse_bytes(tiny_net(weight, bias, fc_weight))
    runner = DlibNet(description=desc)
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    got = runner.forward(images.transpose(0, 3, 1, 2).astype(np.float32))
    mean = np.array([122.782, 117.001, 104.298], np.float32).reshape(1, 3, 1, 1)
    x = (images.transpose(0, 3, 1, 2).astype(np.float32) - mean) / 256
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((2, 2, 4, 4), np.float64)
    for r in range(4):
        for c in range(4):
            patch = xp[:, :, r:r + 3, c:c + 3]
            conv[:, :, r, c] = np.einsum("nkij,fkij->nf", patch, weight) + bias
    want = np.maximum(conv, 0).reshape(2, -1) @ fc_weight
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_unsupported_layer_is_named(tiny):
    weight, bias, fc_weight = tiny
    prelu = ser_str("prelu_") + ser_tensor(np.array([0.25], np.float32)) + ser_float(0.25, 24)
    with pytest.raises(UnsupportedLayerError, match="prelu_") as info:
        parse_bytes(tiny_net(weight, bias, fc_weight, middle=prelu))
    assert info.value.layer_type == "prelu_"


def test_mmod_options_v4_round_trip():
    """mmod_options version 4 (loss.h): windows with labels, pyramid flag, bbr fields."""
    data = ser_int(4) + ser_int(2)
    data += ser_int(2) + ser_int(80) + ser_int(80) + ser_str("face")
    data += ser_int(1) + ser_int(40) + ser_int(60)  # a version-1 window: no label
    for value in (1.0, 1.0, 0.5, 0.35, 1.0, 0.5, 0.95):  # losses, nms, ignore
        data += ser_float(value)
    data += ser_int(1) + ser_bool(True) + ser_float(100.0)
    layer = reader._loss_mmod(reader._Stream(data), "loss_mmod_")
    assert layer.attrs["detector_windows"] == [
        {"width": 80, "height": 80, "label": "face"}, {"width": 40, "height": 60, "label": ""}]
    assert layer.attrs["overlaps_nms"] == {"iou_thresh": 0.35, "percent_covered_thresh": 1.0}
    assert layer.attrs["overlaps_ignore"]["percent_covered_thresh"] == 0.95
    assert layer.attrs["use_bounding_box_regression"] is True
    assert layer.attrs["bbr_lambda"] == 100.0


def test_truncated_file_is_a_format_error(tiny):
    data = tiny_net(*tiny)
    with pytest.raises(reader.DlibFormatError):
        parse_bytes(data[:-7])


def test_cache_hit_after_first_load(tmp_path, monkeypatch, tiny):
    model = tmp_path / "tiny.dat"
    model.write_bytes(tiny_net(*tiny))
    cache = tmp_path / "cache"
    first = load_net(model, cache_dir=cache)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and first.sha256 in files[0].name

    def boom(data):
        raise AssertionError("parsed again instead of using the cache")

    monkeypatch.setattr(reader, "parse_bytes", boom)
    second = load_net(model, cache_dir=cache)
    assert [layer.type for layer in second.layers] == [layer.type for layer in first.layers]
    np.testing.assert_array_equal(second.layers[0].params["weight"],
                                  first.layers[0].params["weight"])
    assert second.loss.attrs == first.loss.attrs
    # a different file (different sha256) is parsed, not served from the cache
    model.write_bytes(tiny_net(tiny[0] * 2, tiny[1], tiny[2]))
    with pytest.raises(AssertionError, match="parsed again"):
        load_net(model, cache_dir=cache)


def test_real_models_parse_quickly_and_completely():
    import time
    path = default_model_path("recognition")
    start = time.perf_counter()
    net = reader.read_net(path)
    assert time.perf_counter() - start < 5.0
    assert sum(layer.type == "con" for layer in net.layers) == 29
    assert sum(layer.type == "add_prev" for layer in net.layers) == 14
    assert net.layers[-1].type == "fc" and net.layers[-1].params["weight"].shape == (256, 128)
    mmod = reader.read_net(default_model_path("cnn_detector"))
    assert mmod.loss.type == "loss_mmod"
    assert mmod.loss.attrs["detector_windows"][0]["width"] == 80


# --------------------------------------------------------------------------------------
# the face descriptor network against dlib


def _chips_of(image_rgb, detector, predictor, upsample):
    chips = []
    for rect in detector(image_rgb, upsample):
        shape = predictor(image_rgb, rect)
        chips.append(dlib.get_face_chip(image_rgb, shape, 150, 0.25))
    return chips


@pytest.fixture(scope="module")
def face_chips(request):
    astronaut = request.getfixturevalue("astronaut")
    messi = request.getfixturevalue("messi")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(default_model_path("shape_predictor")))
    chips = []
    for bgr, upsample in ((astronaut, 0), (messi, 1)):
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        variants = [rgb, np.ascontiguousarray(rgb[:, ::-1]),
                    cv2.resize(rgb, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA),
                    cv2.resize(rgb, None, fx=1.3, fy=1.3, interpolation=cv2.INTER_LINEAR)]
        for variant in variants:
            chips += _chips_of(variant, detector, predictor, upsample)
    assert len(chips) >= 8
    return chips


@pytest.fixture(scope="module")
def embedder():
    emb = OpenCVEmbedder()
    emb.load()
    return emb


def test_descriptors_equal_dlib(face_chips, embedder):
    model = dlib.face_recognition_model_v1(str(default_model_path("recognition")))
    want = np.array([np.asarray(v) for v in model.compute_face_descriptor(face_chips)],
                    dtype=np.float32)
    got = embedder.embed_chips(face_chips)
    assert got.shape == (len(face_chips), 128) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-4
    one = embedder.embed_chips(face_chips[:1])  # batch of one gives the same vector
    assert np.abs(one[0] - want[0]).max() <= 1e-4


def test_embedder_interface(embedder, face_chips):
    assert embedder.embed_chips([]).shape == (0, 128)
    with pytest.raises(ValueError):
        embedder.embed_chips([np.zeros((150, 150), np.uint8)])
    with pytest.raises(ValueError):
        OpenCVEmbedder(jitter=-1)
    from facerec_server.core.models import ModelError
    with pytest.raises(ModelError, match="metric"):
        OpenCVEmbedder(default_model_path("cnn_detector")).load()
    jittered = embedder.with_settings(jitter=10)
    assert jittered._net is embedder._net
    vec = jittered.embed_chips(face_chips[:1])[0]
    model = dlib.face_recognition_model_v1(str(default_model_path("recognition")))
    want = np.asarray(model.compute_face_descriptor(face_chips[0], 10))
    # same perturbations as dlib's jitter_image, different random numbers (~0.06 apart)
    assert np.linalg.norm(vec - want) < 0.15


# --------------------------------------------------------------------------------------
# the MMOD detector against dlib


@pytest.fixture(scope="module")
def mmod_pair():
    path = str(default_model_path("cnn_detector"))
    return dlib.cnn_face_detection_model_v1(path), MmodNet(path)


@pytest.mark.parametrize("name,upsample", [("astronaut", 0), ("messi", 1)])
def test_mmod_detections_equal_dlib(request, mmod_pair, name, upsample):
    ref, mine = mmod_pair
    rgb = cv2.cvtColor(request.getfixturevalue(name), cv2.COLOR_BGR2RGB)
    want = [((d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()), d.confidence)
            for d in ref(rgb, upsample)]
    got = mine.detect(rgb, upsample)
    assert len(want) >= 1
    assert len(got) == len(want)
    for (wr, wc), (gr, gc) in zip(sorted(want), sorted(got)):
        assert iou(wr, gr) >= 0.9
        assert abs(wc - gc) <= 0.01


def test_mmod_detector_interface_matches_cnn_detector(astronaut):
    path = default_model_path("cnn_detector")
    mine = OpenCVMmodDetector(path, upsample=0, scale=1.0)
    theirs = CnnDetector(path, upsample=0, scale=1.0)
    got = mine.detect(astronaut)
    want = theirs.detect(astronaut)
    assert [d.box for d in got] == [d.box for d in want]
    assert [d.score for d in got] == pytest.approx([d.score for d in want], abs=0.01)
    other = mine.with_settings(upsample=1, scale=0.5)
    assert other._raw is mine._raw and other.upsample == 1
    assert other.detect(astronaut)  # the face is still found on the half-size copy


def test_tiled_pyramid_layout_fits():
    rects, nr, nc = tiled_pyramid_layout(342, 548, 10, 11)
    assert rects[0] == (11, 11, 11 + 548 - 1, 11 + 342 - 1)
    for left, top, right, bottom in rects:
        assert 0 <= left <= right < nc and 0 <= top <= bottom < nr
    heights = [b - t + 1 for _, t, _, b in rects]
    assert heights == sorted(heights, reverse=True) and heights[-1] >= 5


def test_struct_sanity():
    # ser_float(float) must produce what dlib writes for 0.04 in loss_metric_2 (file bytes)
    path = default_model_path("recognition")
    with open(path, "rb") as handle:
        head = handle.read(30)
    assert ser_float(0.04, 24) in head and struct.calcsize("<f") == 4


def test_rectangle_rounding_matches_dlib():
    """drectangle -> rectangle rounds half away from zero (matters for boxes left of x=0)."""
    from facerec_server.dlibnet.mmod import _round
    values = [-4.5, -3.5, -0.5, 0.49999999999999994, 2.5, 74.5, -4.6, 3.2, -7.25]
    for a, b in zip(values[::2], values[1::2]):
        rect = dlib.rectangle(dlib.drectangle(a, b, a + 100, b + 100))
        assert (rect.left(), rect.top()) == (_round(a), _round(b))
