"""ONNX import (training/onnx_import.py): torch models exported to ONNX in the test and read
back simulate bit-identically to the torch originals; hand-built graphs cover the ops torch's
exporters do not write (MatMul + Add, BatchNormalization after ReLU, Clip bounds as attributes);
a graph with an unsupported node is refused in one line naming the node (exit 2)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn
from torch.fx.experimental.optimization import fuse

import sparsexbar
from sparsexbar.core.errors import SparsexbarError, UnsupportedModelError
from sparsexbar.training.onnx_import import load_onnx
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli


class KerasStyle(nn.Module):
    """A Keras-style CIFAR CNN converted by hand: BatchNorm after ReLU (not foldable into the
    conv before it), then max pooling, dense layers."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.r1 = nn.ReLU()
        self.b1 = nn.BatchNorm2d(6)
        self.p1 = nn.MaxPool2d(2)
        self.c2 = nn.Conv2d(6, 8, 3)
        self.r2 = nn.ReLU()
        self.b2 = nn.BatchNorm2d(8)
        self.flatten = nn.Flatten()
        self.d1 = nn.Linear(8 * 2 * 2, 12)
        self.r3 = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.d2 = nn.Linear(12, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.p1(self.b1(self.r1(self.c1(x))))
        x = self.flatten(self.b2(self.r2(self.c2(x))))
        return self.d2(self.drop(self.r3(self.d1(x))))


def export(model: nn.Module, x: Tensor, path: Path, dynamo: bool) -> Path:
    """torch.onnx.export: the default (dynamo) exporter, or the TorchScript one at opset 17."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model.eval(), (x[:1],), str(path), dynamo=True, verbose=False)
        else:
            torch.onnx.export(model.eval(), (x[:1],), str(path), dynamo=False, opset_version=17)
    return path


@pytest.mark.parametrize(("factory", "shape", "dynamo"), [
    # Conv + BN pairs folded first: the exporters fold them in their own float arithmetic,
    # whose last bits may differ from the frontend's folding (docs/models.md).
    (lambda: fuse(nets.grouped_net(in_ch=2, channels=6, groups=6, pw_groups=2, seed=3)),
     (2, 8), True),
    (lambda: nets.randomize_bn(nets.seeded_init(KerasStyle(), 5), 5), (3, 8), False),
])
def test_exported_models_simulate_bit_identically(tmp_path: Path, factory: object,
                                                  shape: tuple[int, int], dynamo: bool) -> None:
    """A torch model exported in the test (dynamo exporter, opset 20; TorchScript exporter,
    opset 17) and read back: the same logits to the last bit, the same events and arrays."""
    assert callable(factory)
    model = factory()
    x = nets.random_images(6, shape[0], shape[1], seed=11)
    path = export(model, x, tmp_path / "net.onnx", dynamo)
    labels = torch.zeros(6, dtype=torch.int64)
    want = sparsexbar.simulate(model, (x, labels), hw="isaac", scheme="dense")
    got = sparsexbar.simulate(str(path), (x, labels), hw="isaac", scheme="dense")
    assert got.model == "net"
    assert got.outputs is not None and want.outputs is not None
    assert torch.equal(got.outputs, want.outputs)
    assert [lay.events for lay in got.layers] == [lay.events for lay in want.layers]
    assert [lay.arrays for lay in got.layers] == [lay.arrays for lay in want.layers]
    imported = load_onnx(path)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), model(x), rtol=1e-5, atol=1e-5)


def _model(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], in_shape: list[int],
           out_shape: list[int] | None, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_hand_built_graph_with_matmul_add_clip_and_global_pool(tmp_path: Path) -> None:
    """Keras/tf2onnx-style nodes: Conv, Clip(0, 6) with attribute bounds (opset 9), a
    BatchNormalization, a spatial ReduceMean without kept dims, MatMul + Add (a dense layer):
    the rebuilt module computes what torch computes in float64 from the same weights."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 2, 3, 3)) * 0.4
    m = rng.normal(size=(4, 3))
    b = rng.normal(size=(3,))
    scale, shift = rng.uniform(0.5, 1.5, 4), rng.normal(size=4) * 0.1
    mean, var = rng.normal(size=4) * 0.1, rng.uniform(0.5, 1.5, 4)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Clip", ["c"], ["r"], name="relu6", min=0.0, max=6.0),
        helper.make_node("BatchNormalization", ["r", "s", "t", "mu", "var"], ["n"], name="bn",
                         epsilon=1e-3),
        helper.make_node("ReduceMean", ["n"], ["f"], name="gap", axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["f", "m"], ["mm"], name="dense"),
        helper.make_node("Add", ["mm", "b"], ["y"], name="dense_bias"),
    ]
    model = _model(nodes, {"w": w, "m": m, "b": b, "s": scale, "t": shift, "mu": mean,
                           "var": var}, [1, 2, 5, 5], [1, 3], opset=9)
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    net = load_onnx(path)
    kinds = [type(mod).__name__ for mod in net.children()]
    assert kinds == ["Conv2d", "ReLU6", "BatchNorm2d", "AdaptiveAvgPool2d", "Flatten", "Linear"]
    assert [name for name, _ in net.named_children()][3:] == ["gap", "gap_flatten", "dense"]
    x = torch.rand(3, 2, 5, 5) * 4
    conv = torch.nn.functional.conv2d(x.double(), torch.from_numpy(w), padding=1).clamp(0, 6)
    bn = ((conv - torch.from_numpy(mean).view(1, -1, 1, 1))
          / torch.sqrt(torch.from_numpy(var).view(1, -1, 1, 1) + 1e-3)
          * torch.from_numpy(scale).view(1, -1, 1, 1) + torch.from_numpy(shift).view(1, -1, 1, 1))
    want = bn.mean(dim=(2, 3)) @ torch.from_numpy(m) + torch.from_numpy(b)
    with torch.no_grad():
        torch.testing.assert_close(net(x).double(), want, rtol=1e-5, atol=1e-5)
    res = sparsexbar.simulate(str(path), (x, torch.zeros(3, dtype=torch.int64)), hw="isaac")
    assert [lay.name for lay in res.layers] == ["conv", "dense"]


def test_keras_flatten_after_a_channels_last_transpose(tmp_path: Path) -> None:
    """tf2onnx writes a Keras Flatten after convolutions (inputs as NCHW) as Transpose(0, 2,
    3, 1) + Reshape(-1, K): the importer flattens the NCHW tensor and folds the channels-last
    order into the next Dense (MatMul + Add); BatchNormalization after the ReLU stays a
    digital BatchNorm, so the dense layer's inputs are signed."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 1, 3, 3)) * 0.5
    m, b = rng.normal(size=(3 * 2 * 2, 4)), rng.normal(size=(4,))
    scale, shift = rng.uniform(0.5, 1.5, 3), rng.normal(size=3) * 0.3
    mean, var = rng.normal(size=3) * 0.2, rng.uniform(0.5, 1.5, 3)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv2d/Conv2D", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c"], ["r"], name="conv2d/Relu"),
        helper.make_node("BatchNormalization", ["r", "s", "t", "mu", "var"], ["n"],
                         name="batch_normalization/FusedBatchNormV3"),
        helper.make_node("MaxPool", ["n"], ["p"], name="max_pooling2d/MaxPool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Transpose", ["p"], ["t_out"], name="flatten/transpose",
                         perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["t_out", "shape"], ["f"], name="flatten/Reshape"),
        helper.make_node("MatMul", ["f", "m"], ["mm"], name="dense/MatMul"),
        helper.make_node("Add", ["mm", "b"], ["y"], name="dense/BiasAdd"),
    ]
    model = _model(nodes, {"w": w, "m": m, "b": b, "s": scale, "t": shift, "mu": mean,
                           "var": var}, [1, 1, 4, 4], [1, 4])
    model.graph.initializer.append(numpy_helper.from_array(np.array([-1, 12], np.int64),
                                                           "shape"))
    path = tmp_path / "keras.onnx"
    onnx.save(model, str(path))
    net = load_onnx(path)
    x = torch.rand(5, 1, 4, 4)
    conv = torch.nn.functional.conv2d(x.double(), torch.from_numpy(w), padding=1).relu()
    bn = ((conv - torch.from_numpy(mean).view(1, -1, 1, 1))
          / torch.sqrt(torch.from_numpy(var).view(1, -1, 1, 1) + 1e-5)
          * torch.from_numpy(scale).view(1, -1, 1, 1) + torch.from_numpy(shift).view(1, -1, 1, 1))
    pooled = torch.nn.functional.max_pool2d(bn, 2)
    want = pooled.permute(0, 2, 3, 1).reshape(5, -1) @ torch.from_numpy(m) + torch.from_numpy(b)
    with torch.no_grad():
        torch.testing.assert_close(net(x).double(), want, rtol=1e-5, atol=1e-5)
    res = sparsexbar.simulate(str(path), (x, torch.zeros(5, dtype=torch.int64)), hw="isaac")
    assert [(lay.name, lay.input_signed) for lay in res.layers] == [
        ("conv2d_Conv2D", False), ("dense_MatMul", True)]
    # Anything else reading the transposed tensor is refused, naming the node.
    bad = _model([*nodes[:5], helper.make_node("Relu", ["t_out"], ["y"], name="oops")],
                 {"w": w, "s": scale, "t": shift, "mu": mean, "var": var}, [1, 1, 4, 4], None)
    onnx.save(bad, str(tmp_path / "bad.onnx"))
    with pytest.raises(UnsupportedModelError, match="'oops' .Relu.: it reads a channels-last"):
        load_onnx(tmp_path / "bad.onnx")


def unsupported_graph(path: Path) -> Path:
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1", kernel_shape=[1, 1]),
             helper.make_node("Sigmoid", ["c"], ["s"], name="gate/sigmoid_7"),
             helper.make_node("Flatten", ["s"], ["y"], name="flat")]
    onnx.save(_model(nodes, {"w": np.ones((2, 1, 1, 1))}, [1, 1, 28, 28], [1, 1568]),
              str(path))
    return path


def test_unsupported_node_is_refused_naming_it(tmp_path: Path) -> None:
    path = unsupported_graph(tmp_path / "bad.onnx")
    with pytest.raises(UnsupportedModelError) as info:
        load_onnx(path)
    text = str(info.value)
    assert "\n" not in text
    assert "'gate/sigmoid_7' (Sigmoid)" in text and "bad.onnx" in text


def test_cli_refuses_an_unsupported_onnx_node_with_exit_2(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    path = unsupported_graph(tmp_path / "bad.onnx")
    code, _, err = cli(capsys, "run", "--model", str(path), "--data", "default", "--limit", "2",
                       "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, "gate/sigmoid_7", "Sigmoid")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("nodes", "inits", "fragment"), [
    ([helper.make_node("Clip", ["x"], ["y"], name="clip", min=-1.0, max=1.0)], {},
     "Clip(-1.0, 1.0)"),
    ([helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[0, 0, 1, 1],
                       kernel_shape=[1, 1])], {"w": np.ones((1, 1, 1, 1))}, "symmetric"),
    ([helper.make_node("Reshape", ["x", "shape"], ["y"], name="r")],
     {"shape": np.array([1, 1, 784])}, "flatten"),
    ([helper.make_node("Add", ["x", "k"], ["y"], name="a")], {"k": np.ones(1)}, "residual"),
])
def test_unsupported_node_forms_are_refused(tmp_path: Path, nodes: list[onnx.NodeProto],
                                            inits: dict[str, np.ndarray],
                                            fragment: str) -> None:
    path = tmp_path / "m.onnx"
    inits = {k: v.astype(np.int64) if k == "shape" else v for k, v in inits.items()}
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)]), str(path))
    with pytest.raises(UnsupportedModelError, match=re.escape(fragment)) as info:
        load_onnx(path)
    assert f"ONNX node '{nodes[0].name}'" in str(info.value)


def test_missing_or_corrupt_onnx_files(tmp_path: Path) -> None:
    with pytest.raises(SparsexbarError, match="does not exist"):
        load_onnx(tmp_path / "none.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf\xff" * 3)
    with pytest.raises(SparsexbarError, match="bad.onnx"):
        load_onnx(bad)
    # (before: 'must have one input and one output, it has 0 and 0' and 'does not exist')
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(SparsexbarError, match="empty.onnx is empty"):
        load_onnx(empty)
    folder = tmp_path / "folder.onnx"
    folder.mkdir()
    with pytest.raises(SparsexbarError, match="folder.onnx is a directory"):
        load_onnx(folder)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\n\x00")  # parses as an empty ModelProto
    with pytest.raises(SparsexbarError, match="not an ONNX model"):
        load_onnx(junk)
