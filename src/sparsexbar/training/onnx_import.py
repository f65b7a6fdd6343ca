"""ONNX files -> fx-traceable `nn.Module`s, read with the `onnx` package (`sparsexbar[onnx]`).

A model trained anywhere (PyTorch, or Keras/TensorFlow through tf2onnx) comes in as an ONNX
graph; this module rebuilds it from torch modules, one per ONNX node, as an `fx.GraphModule`
that the frontend then traces, folds and quantizes like any other model. Initializers become
parameters and buffers. Supported nodes:

| ONNX op | becomes |
| --- | --- |
| Conv (2-D; groups, strides, dilations, symmetric pads) | nn.Conv2d |
| Gemm (alpha, beta, transA = 0, transB) | nn.Linear |
| MatMul by an initializer (+ Add of a 1-D initializer: the bias) | nn.Linear |
| BatchNormalization (inference) | nn.BatchNorm2d / nn.BatchNorm1d |
| Relu; Clip(0, 6); Clip(0, none) | nn.ReLU; nn.ReLU6; nn.ReLU |
| MaxPool, AveragePool (2-D, symmetric pads) | nn.MaxPool2d, nn.AvgPool2d |
| GlobalAveragePool; ReduceMean over axes (2, 3) | nn.AdaptiveAvgPool2d(1) (+ nn.Flatten) |
| Flatten (axis 1); Reshape to (N, -1) | nn.Flatten |
| Transpose(0, 2, 3, 1), flatten, Gemm/MatMul (Keras' Flatten) | the order folded into the Linear |
| Add of two tensors | a residual add |
| Identity, Dropout | nothing (the input passes through) |
| Constant | a value for the nodes above (a Clip bound, a Reshape shape) |

Anything else is refused with the node's name and op type (`UnsupportedModelError`: one line,
exit 2 on the CLI). Opsets 7 to 23 are read (attributes that became inputs, Clip's min/max
in opset 11 and Reshape's shape in opset 5, are taken from either); the tests export with
torch's TorchScript exporter at opset 17 and its default (dynamo) exporter at opset 20.
"""

from __future__ import annotations

import math
import operator
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from ..core.errors import SparsexbarError, UnsupportedModelError

try:  # optional dependency: pip install sparsexbar[onnx]
    import onnx
    from onnx import numpy_helper
except ImportError:  # pragma: no cover - the dev environment installs it
    onnx = None  # type: ignore[assignment]
    numpy_helper = None  # type: ignore[assignment]

MIN_OPSET, MAX_OPSET = 7, 23
SUPPORTED_OPS = ("Conv", "Gemm", "MatMul", "BatchNormalization", "Relu", "Clip", "MaxPool",
                 "AveragePool", "GlobalAveragePool", "ReduceMean", "Flatten", "Reshape",
                 "Transpose", "Add", "Identity", "Dropout", "Constant")


def _attrs(node: Any) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    """The ONNX graph being rebuilt: constants, the fx graph and its modules."""

    def __init__(self, model: Any, where: str) -> None:
        self.where = where
        g = model.graph
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t)
                                              for t in g.initializer}
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.values: dict[str, fx.Node] = {}
        self.names: set[str] = set()
        inputs = [i for i in g.input if i.name not in self.consts]
        if not g.node and not inputs and not g.output:  # protobuf reads junk as empty
            raise UnsupportedModelError(f"{where}: not an ONNX model (an empty graph)")
        if len(inputs) != 1 or len(g.output) != 1:
            raise UnsupportedModelError(
                f"{where}: the graph must have one input and one output, it has "
                f"{len(inputs)} and {len(g.output)}")
        self.values[inputs[0].name] = self.graph.placeholder("x")
        # Shapes of the values where ONNX shape inference knows them (None: a dimension it
        # does not know): the rank of a BatchNormalization's input, a Transpose's (C, H, W).
        self.shapes: dict[str, list[int | None]] = {}
        for info in [*g.input, *g.value_info, *g.output]:
            if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
                self.shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None
                                          for d in info.type.tensor_type.shape.dim]
        self.ranks = {name: len(shape) for name, shape in self.shapes.items()}
        # A Transpose(0, 2, 3, 1) of an NCHW value (tf2onnx writes one before a Keras Flatten):
        # its name -> (C, H, W); the fx node stays the NCHW value. Flattened, it becomes a
        # value whose features are in channels-last order: its name -> the permutation
        # (feature j of the channels-last flatten is feature perm[j] of the NCHW flatten),
        # which the next Gemm/MatMul folds into its weight.
        self.nhwc: dict[str, tuple[int, int, int]] = {}
        self.permuted: dict[str, torch.Tensor] = {}
        self.output = g.output[0].name
        # How many nodes read each value (a MatMul's Add is folded only when it is the one).
        self.readers: dict[str, int] = {}
        for node in g.node:
            for name in node.input:
                self.readers[name] = self.readers.get(name, 0) + 1

    def refuse(self, node: Any, why: str) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"{self.where}: ONNX node '{node.name or node.output[0]}' ({node.op_type}): {why}")

    def const(self, node: Any, index: int, what: str) -> np.ndarray | None:
        """The constant value of input `index` of `node` (None when the input is absent)."""
        if index >= len(node.input) or not node.input[index]:
            return None
        name = node.input[index]
        if name not in self.consts:
            raise self.refuse(node, f"its {what} must be a constant (initializer)")
        return self.consts[name]

    def tensor(self, node: Any, index: int = 0) -> fx.Node:
        name = node.input[index]
        if name in self.nhwc or name in self.permuted:
            raise self.refuse(node, "it reads a channels-last (transposed) tensor: only a "
                              "Flatten/Reshape and then a Gemm/MatMul may follow a "
                              "Transpose(0, 2, 3, 1)")
        if name not in self.values:
            if name in self.consts:
                raise self.refuse(node, "a constant tensor input is not supported here")
            raise self.refuse(node, f"its input '{name}' is not computed before it")
        return self.values[name]

    def module(self, node: Any, mod: nn.Module, arg: fx.Node, suffix: str = "") -> None:
        """Add `mod`, named after the node, applied to `arg`: the node's output value."""
        base = re.sub(r"\W", "_", node.name or f"{node.op_type}_{node.output[0]}").strip("_")
        base = (base if base and not base[0].isdigit() else f"n_{base}") + suffix
        name, i = base, 1
        while name in self.names or hasattr(self.root, name):
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        self.root.add_module(name, mod)
        self.values[node.output[0]] = self.graph.call_module(name, (arg,))

    def passthrough(self, node: Any) -> None:
        """Identity and Dropout: the input passes through (a constant stays a constant)."""
        if node.input[0] in self.consts and node.input[0] not in self.values:
            self.consts[node.output[0]] = self.consts[node.input[0]]
        else:
            self.values[node.output[0]] = self.tensor(node)


def _param(value: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.array(value, dtype=np.float32)),
                        requires_grad=False)


def _pads2d(g: _Graph, node: Any, attrs: dict[str, Any]) -> tuple[int, int]:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise g.refuse(node, f"auto_pad={attrs['auto_pad']!r} is not supported (give pads)")
    pads = list(attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
        raise g.refuse(node, f"pads {pads}: only 2-D symmetric padding is supported")
    return int(pads[0]), int(pads[1])


def _conv(g: _Graph, node: Any, attrs: dict[str, Any]) -> None:
    w = g.const(node, 1, "weight")
    assert w is not None
    if w.ndim != 4:
        raise g.refuse(node, f"a {w.ndim - 2}-D convolution (only 2-D is supported)")
    b = g.const(node, 2, "bias")
    groups = int(attrs.get("group", 1))
    cout, cin_g, kh, kw = (int(v) for v in w.shape)
    conv = nn.Conv2d(cin_g * groups, cout, (kh, kw), stride=tuple(attrs.get("strides", [1, 1])),
                     padding=_pads2d(g, node, attrs),
                     dilation=tuple(attrs.get("dilations", [1, 1])), groups=groups,
                     bias=b is not None)
    conv.weight = _param(w)
    if b is not None:
        conv.bias = _param(b)
    g.module(node, conv, g.tensor(node))


def _linear(weight: np.ndarray, bias: np.ndarray | None) -> nn.Linear:
    """nn.Linear with weight (out, in) and an optional bias."""
    lin = nn.Linear(int(weight.shape[1]), int(weight.shape[0]), bias=bias is not None)
    lin.weight = _param(weight)
    if bias is not None:
        lin.bias = _param(np.broadcast_to(bias, (weight.shape[0],)))
    return lin


def _features_input(g: _Graph, node: Any, weight: np.ndarray) -> tuple[np.ndarray, fx.Node]:
    """A linear layer's weight (out, in) and input: a channels-last flatten (`_Graph.permuted`)
    is read as the NCHW flatten it permutes, the permutation folded into the weight."""
    name = node.input[0]
    perm = g.permuted.get(name)
    if perm is None:
        return weight, g.tensor(node)
    if weight.shape[1] != perm.numel():
        raise g.refuse(node, f"{weight.shape[1]} input features after a channels-last flatten "
                       f"of {perm.numel()}")
    folded = np.zeros_like(weight)
    folded[:, perm.numpy()] = weight
    return folded, g.values[name]


def _gemm(g: _Graph, node: Any, attrs: dict[str, Any]) -> None:
    if int(attrs.get("transA", 0)) != 0:
        raise g.refuse(node, "transA=1 is not supported")
    b = g.const(node, 1, "weight (B)")
    assert b is not None
    w = b if int(attrs.get("transB", 0)) else b.T
    w = w * float(attrs.get("alpha", 1.0))
    c = g.const(node, 2, "bias (C)")
    if c is not None:
        c = np.asarray(c, dtype=np.float64).reshape(-1) * float(attrs.get("beta", 1.0))
    w, arg = _features_input(g, node, w)
    g.module(node, _linear(w, c), arg)


def _matmul(g: _Graph, node: Any, nodes: list[Any], index: int) -> int:
    """MatMul by an initializer as nn.Linear, with the next node's Add of a 1-D initializer
    folded in as its bias; returns the index of the last node consumed."""
    w = g.const(node, 1, "second operand")
    assert w is not None
    if w.ndim != 2:
        raise g.refuse(node, "only a 2-D initializer as the second operand is supported")
    out = node.output[0]
    bias = None
    last = index
    nxt = nodes[index + 1] if index + 1 < len(nodes) else None
    if (nxt is not None and nxt.op_type == "Add" and g.readers.get(out, 0) == 1
            and out in nxt.input):
        other = nxt.input[1] if nxt.input[0] == out else nxt.input[0]
        value = g.consts.get(other)
        if value is not None and value.size == w.shape[1]:
            bias = value.reshape(-1)
            last = index + 1
    weight, arg = _features_input(g, node, np.ascontiguousarray(w.T))
    g.module(node, _linear(weight, bias), arg)
    if last != index:
        g.values[nodes[last].output[0]] = g.values[out]
    return last


def _batchnorm(g: _Graph, node: Any, attrs: dict[str, Any]) -> None:
    scale, bias, mean, var = (g.const(node, i, what) for i, what in
                              ((1, "scale"), (2, "bias"), (3, "mean"), (4, "variance")))
    assert scale is not None and bias is not None and mean is not None and var is not None
    n = int(scale.shape[0])
    rank = g.ranks.get(node.input[0], 4)  # shape inference; conv feature maps when unknown
    if rank not in (2, 4):
        raise g.refuse(node, f"a {rank}-D input (only 2-D and 4-D are supported)")
    bn: nn.BatchNorm1d | nn.BatchNorm2d = (nn.BatchNorm2d if rank == 4 else nn.BatchNorm1d)(
        n, eps=float(attrs.get("epsilon", 1e-5)))
    bn.weight = _param(scale)
    bn.bias = _param(bias)
    bn.running_mean = torch.from_numpy(np.array(mean, dtype=np.float32))
    bn.running_var = torch.from_numpy(np.array(var, dtype=np.float32))
    g.module(node, bn.eval(), g.tensor(node))


def _clip(g: _Graph, node: Any, attrs: dict[str, Any]) -> None:
    lo_v = g.const(node, 1, "min") if len(node.input) > 1 else attrs.get("min")
    hi_v = g.const(node, 2, "max") if len(node.input) > 2 else attrs.get("max")
    lo = None if lo_v is None else float(np.asarray(lo_v).reshape(-1)[0])
    hi = None if hi_v is None else float(np.asarray(hi_v).reshape(-1)[0])
    if lo == 0.0 and hi == 6.0:
        mod: nn.Module = nn.ReLU6()
    elif lo == 0.0 and (hi is None or math.isinf(hi) or hi >= 3.0e38):
        mod = nn.ReLU()
    else:
        raise g.refuse(node, f"Clip({lo}, {hi}): only Clip(0, 6) (ReLU6) and Clip(0, none) "
                       "(ReLU) are supported")
    g.module(node, mod, g.tensor(node))


def _pool(g: _Graph, node: Any, attrs: dict[str, Any]) -> None:
    kernel = list(attrs.get("kernel_shape", []))
    if len(kernel) != 2:
        raise g.refuse(node, f"kernel_shape {kernel}: only 2-D pooling is supported")
    strides = tuple(attrs.get("strides", [1, 1]))
    pads = _pads2d(g, node, attrs)
    ceil = bool(attrs.get("ceil_mode", 0))
    if node.op_type == "MaxPool":
        if len(node.output) > 1 and node.output[1]:
            raise g.refuse(node, "the Indices output is not supported")
        if int(attrs.get("storage_order", 0)) != 0:
            raise g.refuse(node, "storage_order=1 is not supported")
        mod: nn.Module = nn.MaxPool2d(tuple(kernel), strides, pads,
                                      tuple(attrs.get("dilations", [1, 1])), ceil_mode=ceil)
    else:
        if tuple(attrs.get("dilations", [1, 1])) != (1, 1):
            raise g.refuse(node, "a dilated AveragePool is not supported")
        mod = nn.AvgPool2d(tuple(kernel), strides, pads, ceil_mode=ceil,
                           count_include_pad=bool(attrs.get("count_include_pad", 0)))
    g.module(node, mod, g.tensor(node))


def _reduce_mean(g: _Graph, node: Any, attrs: dict[str, Any]) -> None:
    """ReduceMean over the two spatial axes of a 4-D input (torch's exporter writes global
    average pooling so): nn.AdaptiveAvgPool2d(1), then nn.Flatten when keepdims is 0."""
    axes_v = g.const(node, 1, "axes") if len(node.input) > 1 else attrs.get("axes")
    axes = sorted(int(a) % 4 for a in np.asarray(axes_v).reshape(-1)) if axes_v is not None \
        else []
    if axes != [2, 3] or g.ranks.get(node.input[0], 4) != 4:
        raise g.refuse(node, f"ReduceMean over axes {axes}: only the spatial mean of a 4-D "
                       "input (global average pooling) is supported")
    g.module(node, nn.AdaptiveAvgPool2d(1), g.tensor(node))
    if not int(attrs.get("keepdims", 1)):
        g.module(node, nn.Flatten(), g.values[node.output[0]], "_flatten")


def _reshape(g: _Graph, node: Any, attrs: dict[str, Any]) -> None:
    shape = g.const(node, 1, "shape") if len(node.input) > 1 else attrs.get("shape")
    target = [int(v) for v in np.asarray(shape).reshape(-1)] if shape is not None else []
    # (N, -1), (0, -1), or a batch-1 export's (1, K) / (-1, K): a flatten to (N, features).
    if len(target) != 2 or target[0] not in (-1, 0, 1) or (target[0] == -1 and target[1] == -1):
        raise g.refuse(node, f"Reshape to {target}: only a flatten to (N, -1) is supported")
    _flatten(g, node)


def _flatten(g: _Graph, node: Any) -> None:
    """nn.Flatten of the node's input; of a Transpose(0, 2, 3, 1), the NCHW value flattened,
    its output marked as permuted (`_Graph.permuted`)."""
    name = node.input[0]
    chw = g.nhwc.get(name)
    if chw is None:
        g.module(node, nn.Flatten(), g.tensor(node))
        return
    g.module(node, nn.Flatten(), g.values[name])
    c, h, w = chw
    g.permuted[node.output[0]] = torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0) \
        .reshape(-1)


def _transpose(g: _Graph, node: Any, attrs: dict[str, Any]) -> None:
    perm = [int(p) for p in attrs.get("perm", [])]
    if perm != [0, 2, 3, 1]:
        raise g.refuse(node, f"Transpose perm {perm}: only (0, 2, 3, 1) before a flatten (a "
                       "channels-last Flatten, as tf2onnx writes Keras' Flatten) is supported")
    shape = g.shapes.get(node.input[0], [])
    if len(shape) != 4 or any(d is None or d <= 0 for d in shape[1:]):
        raise g.refuse(node, "the (C, H, W) shape of its input is unknown")
    g.values[node.output[0]] = g.tensor(node)
    g.nhwc[node.output[0]] = (int(shape[1] or 0), int(shape[2] or 0), int(shape[3] or 0))


def _build(model: Any, where: str) -> fx.GraphModule:
    g = _Graph(model, where)
    nodes = list(model.graph.node)
    i = 0
    while i < len(nodes):  # ONNX nodes, in their (topological) order
        node = nodes[i]
        op, attrs = node.op_type, _attrs(node)
        if node.domain not in ("", "ai.onnx"):
            raise g.refuse(node, f"operators of domain '{node.domain}' are not supported")
        if op == "Constant":
            value = attrs.get("value")
            if value is None:
                raise g.refuse(node, "only a tensor 'value' is supported")
            g.consts[node.output[0]] = numpy_helper.to_array(value)
        elif op == "Conv":
            _conv(g, node, attrs)
        elif op == "Gemm":
            _gemm(g, node, attrs)
        elif op == "MatMul":
            i = _matmul(g, node, nodes, i)
        elif op == "BatchNormalization":
            if len([o for o in node.output if o]) > 1 or int(attrs.get("training_mode", 0)):
                raise g.refuse(node, "training-mode BatchNormalization is not supported")
            _batchnorm(g, node, attrs)
        elif op == "Relu":
            g.module(node, nn.ReLU(), g.tensor(node))
        elif op == "Clip":
            _clip(g, node, attrs)
        elif op in ("MaxPool", "AveragePool"):
            _pool(g, node, attrs)
        elif op == "GlobalAveragePool":
            g.module(node, nn.AdaptiveAvgPool2d(1), g.tensor(node))
        elif op == "ReduceMean":
            _reduce_mean(g, node, attrs)
        elif op == "Flatten":
            if int(attrs.get("axis", 1)) != 1:
                raise g.refuse(node, f"axis={attrs['axis']}: only a flatten from axis 1 is "
                               "supported")
            _flatten(g, node)
        elif op == "Transpose":
            _transpose(g, node, attrs)
        elif op == "Reshape":
            _reshape(g, node, attrs)
        elif op == "Add":
            if len(node.input) != 2 or any(name in g.consts for name in node.input):
                raise g.refuse(node, "only the sum of two computed tensors (a residual add) is "
                               "supported")
            g.values[node.output[0]] = g.graph.call_function(
                operator.add, (g.tensor(node, 0), g.tensor(node, 1)))
        elif op in ("Identity", "Dropout"):
            g.passthrough(node)
        else:
            raise g.refuse(node, f"op {op} is not supported (supported: "
                           f"{', '.join(SUPPORTED_OPS)})")
        i += 1
    if g.output not in g.values:
        raise UnsupportedModelError(f"{where}: the graph output '{g.output}' is not computed")
    g.graph.output(g.values[g.output])
    gm = fx.GraphModule(g.root, g.graph, class_name="OnnxModel")
    return gm.eval()


def load_onnx(path: str | Path) -> nn.Module:
    """The ONNX model at `path` as an fx-traceable torch module (eval mode, float32)."""
    if onnx is None:
        raise SparsexbarError("reading ONNX files needs the onnx package: "
                              "pip install 'sparsexbar[onnx]'")
    p = Path(path)
    if p.is_dir():
        raise SparsexbarError(f"ONNX file {p} is a directory, not a file")
    if not p.is_file():
        raise SparsexbarError(f"ONNX file {p} does not exist")
    if p.stat().st_size == 0:
        raise SparsexbarError(f"ONNX file {p} is empty")
    try:
        model = onnx.load(str(p))
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise SparsexbarError(f"{p}: not a readable ONNX file: "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              ) from None
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if opsets and not MIN_OPSET <= opsets[0] <= MAX_OPSET:
        raise UnsupportedModelError(f"{p}: ONNX opset {opsets[0]} is outside the supported "
                                    f"range {MIN_OPSET}-{MAX_OPSET}")
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - ranks are a hint; conversion works without them
        pass
    return _build(model, p.name)
