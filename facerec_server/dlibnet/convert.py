"""Convert a :class:`~facerec_server.dlibnet.reader.NetDescription` to an ONNX model.

The ONNX graph takes one input ``data``: float32 NCHW **RGB** pixel values in 0..255 (the
values of dlib's ``rgb_pixel``), and applies dlib's input normalisation itself
(``(pixel - avg) / 256``, input.h). Layer mapping (dlib/dnn/layers.h):

==============  ===========================================================================
dlib            ONNX
==============  ===========================================================================
con_            Conv (cross-correlation, OIHW filters, explicit pads/strides)
affine_/bn_     folded into the preceding Conv (``w*gamma``, ``b*gamma+beta``), or Mul+Add
relu_           Relu
max_pool_       MaxPool (floor output size, padding ignored as dlib does)
avg_pool_       AveragePool (count_include_pad=0); nr=nc=0 -> GlobalAveragePool
add_prev_       Add; dlib's ``tt::add`` zero-extends mismatched shapes at the far end, so
                the smaller operand is first Pad-ed with zeros (needs static shapes)
fc_             Flatten + MatMul (+ Add bias); dlib weights are (inputs, outputs)
==============  ===========================================================================
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .reader import NetDescription, UnsupportedLayerError

OPSET = 13

Shape = Optional[Tuple[int, int, int]]  # (k, nr, nc) without the batch dimension


def _out_hw(size: int, window: int, stride: int, pad: int) -> int:
    return 1 + (size + 2 * pad - window) // stride


def infer_shapes(net: NetDescription, input_hw: Optional[Tuple[int, int]]) -> List[Shape]:
    """Per-layer output shapes (k, nr, nc) for a given input size, or None if unknown."""
    if input_hw is None:
        return [None] * len(net.layers)
    shapes: List[Shape] = []

    def src(i: int) -> Tuple[int, int, int]:
        return (3, input_hw[0], input_hw[1]) if i < 0 else shapes[i]

    for layer in net.layers:
        k, h, w = src(layer.inputs[0])
        a = layer.attrs
        if layer.type == "con":
            shapes.append((a["num_filters"], _out_hw(h, a["nr"], a["stride_y"], a["padding_y"]),
                           _out_hw(w, a["nc"], a["stride_x"], a["padding_x"])))
        elif layer.type in ("max_pool", "avg_pool"):
            nr = a["nr"] or h
            nc = a["nc"] or w
            shapes.append((k, _out_hw(h, nr, a["stride_y"], a["padding_y"]),
                           _out_hw(w, nc, a["stride_x"], a["padding_x"])))
        elif layer.type == "add_prev":
            k2, h2, w2 = src(layer.inputs[1])
            shapes.append((max(k, k2), max(h, h2), max(w, w2)))
        elif layer.type == "fc":
            shapes.append((a["num_outputs"], 1, 1))
        else:
            shapes.append((k, h, w))
    return shapes


def to_onnx(net: NetDescription, input_hw: Optional[Tuple[int, int]] = None,
            fold_affine: bool = True, normalize_input: bool = True):
    """Return an ``onnx.ModelProto`` equivalent to ``net`` (without its loss layer).

    ``input_hw`` fixes the input size (needed when ``add_prev`` adds tensors of different
    shapes, as in dlib's face ResNet); ``None`` leaves height/width dynamic (the default for
    input layers without a fixed size). ``normalize_input=False`` makes the graph take the
    already normalised tensor (as dlib's pyramid input layers build it).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if net.input.type not in ("input_rgb_image_sized", "input_rgb_image",
                              "input_rgb_image_pyramid"):
        raise UnsupportedLayerError(net.input.type)
    if net.input.type == "input_rgb_image_sized" and input_hw is None:
        input_hw = (net.input.attrs["nr"], net.input.attrs["nc"])
    shapes = infer_shapes(net, input_hw)

    nodes = []
    inits = []
    counter = [0]

    def const(name: str, value: np.ndarray) -> str:
        counter[0] += 1
        full = f"{name}_{counter[0]}"
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), full))
        return full

    def node(op: str, inputs: List[str], **attrs) -> str:
        counter[0] += 1
        out = f"{op.lower()}_{counter[0]}"
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    ia = net.input.attrs
    mean = np.array([ia["avg_red"], ia["avg_green"], ia["avg_blue"]],
                    np.float32).reshape(1, 3, 1, 1)
    if normalize_input:
        x = node("Sub", ["data", const("mean", mean)])
        x = node("Mul", [x, const("scale", np.full((1, 1, 1, 1), 1.0 / 256.0, np.float32))])
    else:
        x = "data"

    # which layers feed an affine that can be folded into them
    consumers: Dict[int, int] = {}
    for layer in net.layers:
        for i in layer.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    folded = set()
    if fold_affine:
        for j, layer in enumerate(net.layers):
            i = layer.inputs[0]
            if (layer.type == "affine" and i >= 0 and net.layers[i].type == "con"
                    and consumers.get(i, 0) == 1 and not net.layers[i].attrs.get("use_relu")):
                folded.add(j)

    names: Dict[int, str] = {-1: x}
    for j, layer in enumerate(net.layers):
        a = layer.attrs
        inp = [names[i] for i in layer.inputs]
        if layer.type == "con":
            weight = layer.params["weight"]
            bias = layer.params.get("bias", np.zeros(weight.shape[0], np.float32))
            nxt = [m for m, other in enumerate(net.layers) if j in other.inputs]
            if nxt and nxt[0] in folded:
                g = net.layers[nxt[0]].params["gamma"]
                b = net.layers[nxt[0]].params["beta"]
                weight = weight * g.reshape(-1, 1, 1, 1)
                bias = bias * g + b
            out = node("Conv", [inp[0], const("w", weight.astype(np.float32)),
                                const("b", bias.astype(np.float32))],
                       kernel_shape=[a["nr"], a["nc"]], strides=[a["stride_y"], a["stride_x"]],
                       pads=[a["padding_y"], a["padding_x"], a["padding_y"], a["padding_x"]])
            if a.get("use_relu"):
                out = node("Relu", [out])
        elif layer.type == "affine":
            if j in folded:
                out = inp[0]
            else:
                g = layer.params["gamma"].reshape(1, -1, 1, 1)
                b = layer.params["beta"].reshape(1, -1, 1, 1)
                out = node("Add", [node("Mul", [inp[0], const("gamma", g)]), const("beta", b)])
        elif layer.type == "relu":
            out = node("Relu", inp)
        elif layer.type in ("max_pool", "avg_pool"):
            if a["nr"] == 0 and a["nc"] == 0 and layer.type == "avg_pool":
                out = node("GlobalAveragePool", inp)
            elif a["nr"] == 0 or a["nc"] == 0:
                if layer.type == "max_pool" and a["nr"] == 0 and a["nc"] == 0:
                    out = node("GlobalMaxPool", inp)
                else:
                    raise UnsupportedLayerError(f"{layer.type} with a whole-image dimension")
            else:
                kw = dict(kernel_shape=[a["nr"], a["nc"]], strides=[a["stride_y"], a["stride_x"]],
                          pads=[a["padding_y"], a["padding_x"], a["padding_y"], a["padding_x"]])
                if layer.type == "max_pool":
                    out = node("MaxPool", inp, **kw)
                else:
                    out = node("AveragePool", inp, count_include_pad=0, **kw)
        elif layer.type == "add_prev":
            s1 = shapes[layer.inputs[0]] if layer.inputs[0] >= 0 else None
            s2 = shapes[layer.inputs[1]] if layer.inputs[1] >= 0 else None
            operands = []
            for name, shape in zip(inp, (s1, s2)):
                target = shapes[j]
                if shape is None or target is None:
                    if input_hw is None:
                        operands.append(name)  # assume equal shapes (broadcast-free)
                        continue
                if shape != target:
                    pads = [0, 0, 0, 0, 0, target[0] - shape[0], target[1] - shape[1],
                            target[2] - shape[2]]
                    name = node("Pad", [name, const("pads", np.array(pads, np.int64))],
                                mode="constant")
                operands.append(name)
            out = node("Add", operands)
        elif layer.type == "fc":
            flat = node("Flatten", inp, axis=1)
            out = node("MatMul", [flat, const("fc_w", layer.params["weight"].astype(np.float32))])
            if "bias" in layer.params:
                out = node("Add", [out, const("fc_b", layer.params["bias"].astype(np.float32))])
        else:
            raise UnsupportedLayerError(layer.type)
        names[j] = out

    last = names[len(net.layers) - 1]
    nodes.append(helper.make_node("Identity", [last], ["output"], name="output"))
    h, w = input_hw if input_hw is not None else ("height", "width")
    out_dims = ["batch", "k"] if net.layers and net.layers[-1].type == "fc" else \
        ["batch", "k", "rows", "cols"]
    graph = helper.make_graph(
        nodes, "dlib_net",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["batch", 3, h, w])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="facerec.dlibnet")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
