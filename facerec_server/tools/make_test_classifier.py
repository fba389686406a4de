"""Write a tiny ONNX colour classifier (and its label file) for tests and demos.

The network is ``GlobalAveragePool -> Flatten -> Gemm -> [Softmax]``: it averages each input
channel over the image and scores the labels ``red``, ``green`` and ``blue`` by how much
their channel's mean exceeds the mean of the other two. A pure red picture is "red" with a
probability close to 1. It expects the input blob in RGB channel order with values in 0..1,
i.e. object model settings ``swap_rb: true``, ``scale: 1/255`` (0.00392156862745098),
``mean: [0, 0, 0]``. The batch dimension is dynamic.

Usage::

    python -m facerec_server.tools.make_test_classifier OUT_DIR [--logits] [--size W H]

writes ``OUT_DIR/colours.onnx`` and ``OUT_DIR/colours.txt`` and prints an example
``object_recognition`` parameter block for config/server.yaml.
"""
from __future__ import annotations

import argparse
import pathlib
from typing import Tuple

import numpy as np

LABELS = ("red", "green", "blue")
SCALE = 1.0 / 255.0


def make_colour_classifier(onnx_path, labels_path=None, softmax: bool = True,
                           input_size: Tuple[int, int] = (227, 227), gain: float = 10.0):
    """Write the colour classifier to ``onnx_path`` (and the labels to ``labels_path``).

    ``softmax`` False leaves the final Softmax out, so the model outputs raw logits.
    ``input_size`` is (width, height). Returns ``(onnx_path, labels_path)``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width, height = int(input_size[0]), int(input_size[1])
    # logit_c = gain * (x_c - (sum of the other two) / 2); Gemm computes x @ W + b.
    weights = np.full((3, 3), -gain / 2.0, dtype=np.float32)
    np.fill_diagonal(weights, gain)
    bias = np.zeros(3, dtype=np.float32)

    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits" if softmax else "output"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["output"], axis=1))
    graph = helper.make_graph(
        nodes, "colour_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, height, width])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="facerec make_test_classifier")
    model.ir_version = 8  # readable by older ONNX runtimes and OpenCV 4.x
    onnx.checker.check_model(model)
    onnx_path = pathlib.Path(onnx_path)
    onnx.save(model, str(onnx_path))
    if labels_path is None:
        labels_path = onnx_path.with_suffix(".txt")
    labels_path = pathlib.Path(labels_path)
    labels_path.write_text("".join(label + "\n" for label in LABELS))
    return onnx_path, labels_path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--logits", action="store_true", help="leave the final softmax out")
    parser.add_argument("--size", type=int, nargs=2, default=(227, 227), metavar=("W", "H"))
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, labels_path = make_colour_classifier(
        args.out_dir / "colours.onnx", args.out_dir / "colours.txt",
        softmax=not args.logits, input_size=tuple(args.size))
    print(f"""wrote {onnx_path} and {labels_path}; example parameters:
object_recognition:
  models: ["colours"]
  colours:
    type: "onnx"
    path: "{onnx_path.resolve()}"
    labels_file: "{labels_path.resolve()}"
    input_size: [{args.size[0]}, {args.size[1]}]
    mean: [0.0, 0.0, 0.0]
    scale: {SCALE!r}
    swap_rb: true
    softmax: "auto"
""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
