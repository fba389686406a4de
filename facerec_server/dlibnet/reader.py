"""Pure-Python reader for dlib's serialized DNN files (``dlib::serialize(net, out)``).

The byte format follows ``dlib/serialize.h``:

* integers are "portable": one header byte (low nibble = number of payload bytes, bit 7 =
  negative) followed by the magnitude, little endian;
* ``float``/``double`` scalars are ``float_details``: a portable int64 mantissa then a
  portable int16 exponent (value = mantissa * 2**exponent; exponents 32000/32001/32002
  mean +inf/-inf/nan);
* ``std::string`` is a portable length followed by the raw bytes; ``bool`` is one char
  ``'1'``/``'0'``;
* ``resizable_tensor`` (``dlib/cuda/tensor.h``) is version 2, n, k, nr, nc and then raw
  little-endian IEEE float32 data; ``alias_tensor`` is version 1, n, k, nr, nc.

A network (``dlib/dnn/core.h``) is written outside-in: ``add_loss_layer`` writes its
version, the loss details, then its sub-network; each ``add_layer`` writes its version (2, or
3 when the sub-network is the input layer) and *then* its sub-network, followed by its own
layer details and some training state; ``add_tag_layer``/``add_skip_layer`` write only a
version (1) and their sub-network. Tag/skip ids are therefore not stored in the file; the
graph is rebuilt from dlib's residual idioms by :func:`resolve_graph`.

The result is a :class:`NetDescription`: the input layer, the computational layers from
input to output (each with ``type``, scalar ``attrs`` and numpy ``params``) and the loss.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

__all__ = [
    "DlibFormatError", "UnsupportedLayerError", "Layer", "NetDescription",
    "parse_bytes", "read_net", "load_net", "resolve_graph", "default_cache_dir",
]

CACHE_FORMAT = 1


class DlibFormatError(ValueError):
    """The bytes are not a dlib network this reader understands."""


class UnsupportedLayerError(DlibFormatError):
    """The file holds a layer (or input/loss) type this reader cannot interpret."""

    def __init__(self, layer_type: str, offset: int = -1):
        self.layer_type = layer_type
        where = f" at byte {offset}" if offset >= 0 else ""
        super().__init__(f"unsupported dlib layer type {layer_type!r}{where}")


@dataclass
class Layer:
    """One node. ``inputs`` holds indices into ``NetDescription.layers`` (-1 = the input)."""

    type: str
    attrs: Dict[str, Any] = field(default_factory=dict)
    params: Dict[str, np.ndarray] = field(default_factory=dict)
    inputs: List[int] = field(default_factory=list)
    version: str = ""


@dataclass
class NetDescription:
    input: Layer
    layers: List[Layer]
    loss: Layer
    sha256: str = ""

    def summary(self) -> str:
        lines = [f"input {self.input.type} {self.input.attrs}"]
        for i, layer in enumerate(self.layers):
            shapes = {k: tuple(v.shape) for k, v in layer.params.items()}
            lines.append(f"{i:3d} {layer.type:10s} in={layer.inputs} {layer.attrs} {shapes}")
        lines.append(f"loss {self.loss.type} {self.loss.attrs}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# primitive decoding (serialize.h)


class _Stream:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of data at byte {self.pos} (need {n})")

    def int(self) -> int:
        self._need(1)
        head = self.data[self.pos]
        size = head & 0x0F
        if size > 8 or head & 0x70:
            raise DlibFormatError(f"bad integer header 0x{head:02x} at byte {self.pos}")
        self._need(1 + size)
        value = int.from_bytes(self.data[self.pos + 1:self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        if exponent == 32000:
            return float("inf")
        if exponent == 32001:
            return float("-inf")
        if exponent == 32002:
            return float("nan")
        return float(np.ldexp(np.float64(mantissa), exponent))

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 4096:
            raise DlibFormatError(f"implausible string length {n} at byte {self.pos}")
        self._need(n)
        s = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        try:
            return s.decode("ascii")
        except UnicodeDecodeError as exc:
            raise DlibFormatError(f"non-ASCII string at byte {self.pos - n}") from exc

    def bool(self) -> bool:
        self._need(1)
        c = bytes(self.data[self.pos:self.pos + 1])
        if c not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {c!r} at byte {self.pos}")
        self.pos += 1
        return c == b"1"

    def tensor(self) -> np.ndarray:
        at = self.pos
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"unexpected tensor version {version} at byte {at}")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape, dtype=np.int64))
        if min(shape) < 0:
            raise DlibFormatError(f"bad tensor shape {shape} at byte {at}")
        self._need(4 * count)
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return arr.astype(np.float32).reshape(shape)

    def alias(self) -> tuple:
        at = self.pos
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"unexpected alias_tensor version {version} at byte {at}")
        return tuple(self.int() for _ in range(4))


def _take(params: np.ndarray, shape: tuple, offset: int) -> np.ndarray:
    size = int(np.prod(shape, dtype=np.int64))
    flat = params.reshape(-1)
    if offset + size > flat.size:
        raise DlibFormatError("alias tensor exceeds its parameter tensor")
    return flat[offset:offset + size].reshape(shape).copy()


# --------------------------------------------------------------------------------------
# layer details (dlib/dnn/layers.h, input.h, loss.h)


def _con(s: _Stream, version: str) -> Layer:
    params = s.tensor()
    attrs = {"num_filters": s.int(), "nr": s.int(), "nc": s.int(),
             "stride_y": s.int(), "stride_x": s.int(),
             "padding_y": s.int(), "padding_x": s.int()}
    fshape = s.alias()
    bshape = s.alias()
    for _ in range(4):  # learning-rate / weight-decay multipliers
        s.float()
    use_bias = True
    use_relu = False
    if version in ("con_5", "con_6"):
        use_bias = s.bool()
    if version == "con_6":
        use_relu = s.bool()
    attrs["use_relu"] = use_relu
    out = {"weight": _take(params, fshape, 0)}
    if use_bias:
        out["bias"] = _take(params, bshape, int(np.prod(fshape))).reshape(-1)
    return Layer("con", attrs, out, version=version)


def _fc(s: _Stream, version: str) -> Layer:
    attrs = {"num_outputs": s.int(), "num_inputs": s.int()}
    params = s.tensor()
    wshape = s.alias()
    bshape = s.alias()
    bias_mode = s.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    for _ in range(4):
        s.float()
    if version == "fc_3" and not s.bool():  # use_bias == false
        bias_mode = 1
    out = {"weight": _take(params, wshape, 0).reshape(wshape[0], wshape[1])}
    if bias_mode == 0:
        out["bias"] = _take(params, bshape, int(np.prod(wshape))).reshape(-1)
    return Layer("fc", attrs, out, version=version)


def _affine(s: _Stream, version: str) -> Layer:
    params = s.tensor()
    gshape = s.alias()
    bshape = s.alias()
    mode = s.int()  # layer_mode: CONV_MODE = 0, FC_MODE = 1
    if version == "affine_2":
        if s.bool():  # disabled: identity
            return Layer("identity", {}, {}, version=version)
    gamma = _take(params, gshape, 0)
    beta = _take(params, bshape, int(np.prod(gshape)))
    if mode != 0:
        raise UnsupportedLayerError("affine_ (FC_MODE)", s.pos)
    return Layer("affine", {"mode": "conv"},
                 {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)}, version=version)


def _bn_conv(s: _Stream, version: str) -> Layer:
    """``bn_con2``: affine_ converts it on load (layers.h ``affine_(const bn_&)``)."""
    params = s.tensor()
    gshape = s.alias()
    bshape = s.alias()
    s.tensor()  # means
    s.tensor()  # invstds
    running_means = s.tensor().reshape(-1)
    running_variances = s.tensor().reshape(-1)
    s.int()  # num_updates
    s.int()  # running_stats_window_size
    for _ in range(4):
        s.float()
    eps = np.float32(s.float())
    sg = _take(params, gshape, 0).reshape(-1)
    sb = _take(params, bshape, int(np.prod(gshape))).reshape(-1)
    # float arithmetic as in dlib: g = sg / sqrt(rv + eps); b = sb - g * rm
    gamma = (sg / np.sqrt(running_variances + eps)).astype(np.float32)
    beta = (sb - gamma * running_means).astype(np.float32)
    return Layer("affine", {"mode": "conv", "from": version},
                 {"gamma": gamma, "beta": beta}, version=version)


def _relu(s: _Stream, version: str) -> Layer:
    if version == "relu_2" and s.bool():  # disabled
        return Layer("identity", {}, {}, version=version)
    return Layer("relu", {}, {}, version=version)


def _pool(kind: str):
    def parse(s: _Stream, version: str) -> Layer:
        attrs = {"nr": s.int(), "nc": s.int(), "stride_y": s.int(), "stride_x": s.int(),
                 "padding_y": s.int(), "padding_x": s.int()}
        return Layer(kind, attrs, {}, version=version)
    return parse


def _simple(kind: str):
    def parse(s: _Stream, version: str) -> Layer:
        return Layer(kind, {}, {}, version=version)
    return parse


LAYER_PARSERS = {
    "con_4": _con, "con_5": _con, "con_6": _con,
    "fc_2": _fc, "fc_3": _fc,
    "bn_con2": _bn_conv,
    "affine_": _affine, "affine_2": _affine,
    "relu_": _relu, "relu_2": _relu,
    "add_prev_": _simple("add_prev"),
    "max_pool_2": _pool("max_pool"),
    "avg_pool_2": _pool("avg_pool"),
}


def _input_sized(s: _Stream, version: str) -> Layer:
    attrs = {"avg_red": s.float(), "avg_green": s.float(), "avg_blue": s.float(),
             "nr": s.int(), "nc": s.int()}
    return Layer("input_rgb_image_sized", attrs, version=version)


def _input_rgb(s: _Stream, version: str) -> Layer:
    attrs = {"avg_red": s.float(), "avg_green": s.float(), "avg_blue": s.float()}
    return Layer("input_rgb_image", attrs, version=version)


def _input_pyramid(s: _Stream, version: str) -> Layer:
    attrs = {"avg_red": s.float(), "avg_green": s.float(), "avg_blue": s.float(),
             "pyramid_padding": 10, "pyramid_outer_padding": 11}
    if version == "input_rgb_image_pyramid2":
        attrs["pyramid_padding"] = s.int()
        attrs["pyramid_outer_padding"] = s.int()
    return Layer("input_rgb_image_pyramid", attrs, version=version)


INPUT_PARSERS = {
    "input_rgb_image_sized": _input_sized,
    "input_rgb_image": _input_rgb,
    "input_rgb_image_pyramid": _input_pyramid,
    "input_rgb_image_pyramid2": _input_pyramid,
}


def _loss_metric(s: _Stream, version: str) -> Layer:
    attrs = {}
    if version == "loss_metric_2":
        attrs = {"margin": s.float(), "dist_thresh": s.float()}
    return Layer("loss_metric", attrs, version=version)


def _test_box_overlap(s: _Stream) -> dict:
    return {"iou_thresh": s.float(), "percent_covered_thresh": s.float()}


def _loss_mmod(s: _Stream, version: str) -> Layer:
    at = s.pos
    opt_version = s.int()
    if not 1 <= opt_version <= 4:
        raise DlibFormatError(f"unexpected mmod_options version {opt_version} at byte {at}")
    attrs: Dict[str, Any] = {"options_version": opt_version}
    if opt_version == 1:
        width = s.int()
        height = s.int()
        windows = [{"width": width, "height": height, "label": ""}]
    else:
        windows = []
        for _ in range(s.int()):  # std::vector<detector_window_details>
            at = s.pos
            window_version = s.int()
            if window_version not in (1, 2):
                raise DlibFormatError(f"unexpected detector window version {window_version} "
                                      f"at byte {at}")
            w = s.int()
            h = s.int()
            label = s.string() if window_version == 2 else ""
            windows.append({"width": w, "height": h, "label": label})
    attrs["detector_windows"] = windows
    attrs["loss_per_false_alarm"] = s.float()
    attrs["loss_per_missed_target"] = s.float()
    attrs["truth_match_iou_threshold"] = s.float()
    attrs["overlaps_nms"] = _test_box_overlap(s)
    attrs["overlaps_ignore"] = _test_box_overlap(s)
    attrs["assume_image_pyramid"] = 1
    attrs["use_bounding_box_regression"] = False
    if opt_version >= 3:
        attrs["assume_image_pyramid"] = s.int()
    if opt_version >= 4:
        attrs["use_bounding_box_regression"] = s.bool()
        attrs["bbr_lambda"] = s.float()
    return Layer("loss_mmod", attrs, version=version)


LOSS_PARSERS = {
    "loss_metric_": _loss_metric, "loss_metric_2": _loss_metric,
    "loss_mmod_": _loss_mmod,
}


# --------------------------------------------------------------------------------------
# network structure (core.h)


def _layer_details(s: _Stream, table: dict) -> Layer:
    at = s.pos
    name = s.string()
    parser = table.get(name)
    if parser is None:
        raise UnsupportedLayerError(name, at)
    return parser(s, name)


def parse_bytes(data: bytes) -> NetDescription:
    """Parse the bytes of a dlib network file into a :class:`NetDescription`."""
    s = _Stream(data)
    loss_version = s.int()
    if loss_version != 1:
        raise DlibFormatError(f"unexpected add_loss_layer version {loss_version}")
    loss = _layer_details(s, LOSS_PARSERS)
    # versions of the nested layers, outermost first, down to the one on the input layer
    kinds: List[str] = []
    while True:
        at = s.pos
        version = s.int()
        if version == 2:
            kinds.append("layer")
        elif version == 1:
            kinds.append("marker")  # add_tag_layer or add_skip_layer
        elif version == 3:
            kinds.append("layer_on_input")
            break
        else:
            raise DlibFormatError(f"unexpected layer version {version} at byte {at}")
        if len(kinds) > 100000:
            raise DlibFormatError("no input layer found")
    inp = _layer_details(s, INPUT_PARSERS)
    layers: List[Layer] = []
    for kind in reversed(kinds):
        if kind == "marker":
            layers.append(Layer("marker"))
            continue
        layer = _layer_details(s, LAYER_PARSERS)
        s.bool()  # this_layer_setup_called
        s.bool()  # gradient_input_is_stale
        s.bool()  # get_output_and_gradient_together
        s.tensor()  # x_grad
        s.tensor()  # cached_output
        s.tensor()  # params_grad (grad_final for the layer on the input)
        if kind == "layer_on_input":
            s.int()  # _sample_expansion_factor
        layers.append(layer)
    if s.pos != len(s.data):
        raise DlibFormatError(f"{len(s.data) - s.pos} trailing bytes after the network")
    return NetDescription(inp, resolve_graph(layers), loss)


def resolve_graph(layers: List[Layer]) -> List[Layer]:
    """Rebuild the data flow: set ``inputs`` and drop tag/skip markers.

    dlib files do not record tag ids, so markers are interpreted with dlib's residual
    idioms (``add_prev<block<tag<x>>>`` and
    ``add_prev<avg_pool<skip<tag<block<tag<x>>>>>>``): a marker directly on top of another
    marker is a skip, which jumps to the output of the most recent open tag below that
    other marker; ``add_prev`` adds the most recent open tag.
    """
    out: List[Layer] = []
    open_tags: List[int] = []  # node index (-1 = input) each open tag points at
    current = -1
    prev_marker = False
    for layer in layers:
        if layer.type == "marker":
            if prev_marker:  # skip
                if len(open_tags) < 2:
                    raise DlibFormatError("cannot resolve a skip layer (no tag to jump to)")
                current = open_tags.pop(-2)
            else:
                open_tags.append(current)
            prev_marker = True
            continue
        prev_marker = False
        if layer.type == "identity":
            continue
        if layer.type == "add_prev":
            if not open_tags:
                raise DlibFormatError("add_prev layer without a tag")
            layer.inputs = [current, open_tags.pop()]
        else:
            layer.inputs = [current]
        out.append(layer)
        current = len(out) - 1
    return out


# --------------------------------------------------------------------------------------
# loading with a cache


def default_cache_dir() -> pathlib.Path:
    env = os.environ.get("FACEREC_CACHE_DIR")
    if env:
        return pathlib.Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "facerec"


def _to_npz(net: NetDescription, path: pathlib.Path) -> None:
    arrays: Dict[str, np.ndarray] = {}

    def meta(layer: Layer, key: str) -> dict:
        names = []
        for name, value in layer.params.items():
            arrays[f"{key}.{name}"] = value
            names.append(name)
        return {"type": layer.type, "attrs": layer.attrs, "params": names,
                "inputs": layer.inputs, "version": layer.version}

    doc = {"format": CACHE_FORMAT, "sha256": net.sha256,
           "input": meta(net.input, "input"), "loss": meta(net.loss, "loss"),
           "layers": [meta(layer, f"l{i}") for i, layer in enumerate(net.layers)]}
    arrays["__meta__"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def _from_npz(path: pathlib.Path) -> Optional[NetDescription]:
    with np.load(path, allow_pickle=False) as z:
        doc = json.loads(bytes(z["__meta__"]).decode())
        if doc.get("format") != CACHE_FORMAT:
            return None

        def layer(m: dict, key: str) -> Layer:
            return Layer(m["type"], m["attrs"], {n: z[f"{key}.{n}"] for n in m["params"]},
                         list(m["inputs"]), m["version"])

        return NetDescription(layer(doc["input"], "input"),
                              [layer(m, f"l{i}") for i, m in enumerate(doc["layers"])],
                              layer(doc["loss"], "loss"), doc["sha256"])


def read_net(model_path) -> NetDescription:
    """Parse a dlib network file (no cache)."""
    data = pathlib.Path(model_path).read_bytes()
    net = parse_bytes(data)
    net.sha256 = hashlib.sha256(data).hexdigest()
    return net


def load_net(model_path, cache_dir=None, use_cache: bool = True) -> NetDescription:
    """Parse ``model_path``, through a ``<cache_dir>/<sha256>.npz`` cache.

    ``cache_dir`` defaults to ``$FACEREC_CACHE_DIR`` or ``~/.cache/facerec``. The cache is
    keyed by the file's sha256, so a changed model file is re-parsed. Cache write failures
    are ignored (read-only home directories work, just without the speed-up).
    """
    data = pathlib.Path(model_path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    cache = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"dlibnet-{digest}.npz"
    if use_cache and cache_file.is_file():
        try:
            net = _from_npz(cache_file)
            if net is not None and net.sha256 == digest:
                return net
        except (OSError, ValueError, KeyError):
            pass
    net = parse_bytes(data)
    net.sha256 = digest
    if use_cache:
        try:
            _to_npz(net, cache_file)
        except OSError:
            pass
    return net
