"""CNNs through the ONNX frontend, against onnxruntime: a small network exported by
torch.onnx (Conv, BatchNormalization, Relu, MaxPool, GlobalAveragePool, Gemm) and
hand-built Conv / pooling / Pad nodes with the attributes exporters emit."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from test_onnx import check

from coec.frontend.onnx_model import random_inputs

F = TensorProto.FLOAT


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.MaxPool2d(3, stride=2, padding=1),
            torch.nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise
            torch.nn.Conv2d(8, 16, 1),
            torch.nn.AvgPool2d(2),
        )
        self.head = torch.nn.Linear(16, 5)

    def forward(self, x):
        y = self.features(x)
        return self.head(torch.nn.functional.adaptive_avg_pool2d(y, 1).flatten(1))


@pytest.mark.parametrize("fusion", ["none", "dataflow"])
def test_exported_cnn_matches_onnxruntime(tmp_path, fusion):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():  # statistics that are not the identity
        bn = model.features[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 3, 16, 16),), str(path), dynamo=True)
    onnx_model = onnx.load(str(path))
    ops = {n.op_type for n in onnx_model.graph.node}
    assert {"Conv", "MaxPool"} <= ops
    check(onnx_model, random_inputs(onnx_model), fusion=fusion)


def _graph(node: onnx.NodeProto, x_shape, weights: dict[str, np.ndarray] = ()) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v, k) for k, v in dict(weights).items()]
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", F, x_shape)],
        [helper.make_tensor_value_info("y", F, None)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(model)


RNG = np.random.default_rng(0)
W = {"w": RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)}
NODES = {
    "conv auto_pad SAME_UPPER stride 2": (
        helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2]),
        W,
    ),
    "conv asymmetric pads": (
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 1]),
        W,
    ),
    "max pool ceil mode": (
        helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        {},
    ),
    "average pool counting pads": (
        helper.make_node(
            "AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1
        ),
        {},
    ),
    "global max pool": (helper.make_node("GlobalMaxPool", ["x"], ["y"]), {}),
}


@pytest.mark.parametrize("name", sorted(NODES))
def test_hand_built_cnn_node_matches_onnxruntime(name):
    node, weights = NODES[name]
    model = _graph(node, [1, 3, 7, 9], weights)
    check(model, {"x": RNG.standard_normal((1, 3, 7, 9)).astype(np.float32)})


def test_constant_pad_on_spatial_and_channel_dims():
    pads = numpy_helper.from_array(np.array([0, 1, 2, 0, 0, 0, 1, 3], dtype=np.int64), "pads")
    value = numpy_helper.from_array(np.array(0.5, dtype=np.float32), "v")
    node = helper.make_node("Pad", ["x", "pads", "v"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", F, [1, 3, 4, 5])],
        [helper.make_tensor_value_info("y", F, None)],
        [pads, value],
    )
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    )
    check(model, {"x": RNG.standard_normal((1, 3, 4, 5)).astype(np.float32)})
