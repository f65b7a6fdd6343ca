"""Frontend: trace an nn.Module with torch.fx, fold BatchNorm, quantize, expose crossbar layers.

The result, a `QuantizedModel`, runs the network three ways with the same graph:
- float (BN folded, no quantization),
- integer-quantized reference (exact float64 integer convolutions: the engine's oracle),
- through any `LayerExecutor` (the crossbar engine), which must return the integer
  accumulator of each crossbar layer; everything else (ReLU, pooling, residual adds, bias,
  requantization) is digital and identical in all integer modes.

Quantization (DESIGN.md 2.1): weights symmetric per output channel, integers in
[-(2^(B-1)-1), 2^(B-1)-1]; inputs one scale per layer from calibration (max of |x|), unsigned
integers in [0, 2^b-1], or, for a signed input, sign-magnitude with a b-bit magnitude run as
two passes (positive and negative part).

Grouped and depthwise Conv2d (`groups` > 1) keep torch's weight shape (Cout, Cin/groups, kh,
kw); their crossbar matrix is the dense-equivalent, block-diagonal one (`matrix()`: rows the
full im2col rows Cin*kh*kw, zero outside each group's block), which the mapping places group
by group (core/mapping.py). ReLU6 is a digital clamp to [0, 6]: like ReLU its outputs are
non-negative (the next layer's inputs stay unsigned) and it zeroes every negative output.
"""

from __future__ import annotations

import copy
import math
import operator
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.fx.experimental.optimization import fuse

from .errors import UnsupportedModelError
from .runtime import torch_threads

# QuantLayer._cache key of the latest quantize_input result: (weak reference, version).
_QUANTIZED_KEY = "quantized input"
MAXIMUM_SLACK = 1e-3  # relative: calibration images this close to a layer's float32 input
# maximum are run again in float64 (`_refine_maxima`; float32 rounding moves a maximum ~1e-6)

_PASSTHROUGH_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten, nn.Dropout,
                        nn.Identity)
_RELU_MODULES = (nn.ReLU, nn.ReLU6)
_WEIGHTED_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)  # called once each
_ALLOWED_MODULES = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, *_RELU_MODULES,
                    *_PASSTHROUGH_MODULES)
_RELU_FUNCTIONS = {F.relu, torch.relu, F.relu6}
_ADD_FUNCTIONS = {operator.add, torch.add}
_PASSTHROUGH_FUNCTIONS = {torch.flatten, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
                          F.dropout}
_ALLOWED_FUNCTIONS = _RELU_FUNCTIONS | _ADD_FUNCTIONS | _PASSTHROUGH_FUNCTIONS | {operator.getitem,
                                                                                  getattr}
_PASSTHROUGH_METHODS = {"view", "reshape", "flatten", "contiguous"}
_ALLOWED_METHODS = _PASSTHROUGH_METHODS | {"relu", "size", "add", "dim"}
# Ops whose output is some of their input's values (`_input_exact`): ReLUs and the
# pass-through ops but the averaging ones.
_AVERAGING_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_EXACT_MODULES = (*_RELU_MODULES,
                  *(m for m in _PASSTHROUGH_MODULES if m not in _AVERAGING_MODULES))
_EXACT_FUNCTIONS = _RELU_FUNCTIONS | (_PASSTHROUGH_FUNCTIONS
                                      - {F.avg_pool2d, F.adaptive_avg_pool2d})
_EXACT_METHODS = _PASSTHROUGH_METHODS | {"relu"}
SUPPORTED = ("Conv2d (grouped and depthwise included), Linear, BatchNorm, ReLU, ReLU6, max/avg "
             "pooling, Flatten, Dropout, residual adds")


@dataclass
class QuantLayer:
    """One crossbar layer (Conv2d or Linear) after BN folding and quantization."""

    name: str
    kind: str  # "conv" or "linear"
    weight_int: Tensor  # int64, (Cout, Cin, kh, kw) or (Cout, Cin)
    weight_scale: Tensor  # float32 (Cout,), real weight = weight_int * weight_scale
    bias: Tensor  # float32 (Cout,)
    float_weight: Tensor  # float32, BN-folded, unquantized
    input_scale: float = 1.0  # real input = integer input * input_scale
    input_signed: bool = False
    followed_by_relu: bool = False
    input_bits: int = 8
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1  # grouped/depthwise conv: weight_int is (Cout, Cin/groups, kh, kw)
    input_shape: tuple[int, ...] = ()  # per image, recorded at calibration
    output_shape: tuple[int, ...] = ()  # per image
    # Derived operators of this layer's fixed weights, built on first use (e.g. the exact
    # shortcut's int8 convolution per device, `engine.exact`); never compared or printed, and
    # not an init field: `dataclasses.replace` (new weights) starts with an empty cache.
    _cache: dict[object, object] = field(default_factory=dict, init=False, repr=False,
                                         compare=False)

    @property
    def out_channels(self) -> int:
        return int(self.weight_int.shape[0])

    @property
    def in_channels(self) -> int:
        """Input channels (features of a linear layer), all groups together."""
        return int(self.weight_int.shape[1]) * self.groups

    @property
    def group_rows(self) -> int:
        """im2col rows of one group: (Cin/groups)*kh*kw (all rows when groups is 1)."""
        return int(self.weight_int[0].numel())

    @property
    def rows(self) -> int:
        """Rows of the unrolled layer: Cin*kh*kw (im2col order, every group's rows)."""
        return self.group_rows * self.groups

    @property
    def kernel_size(self) -> tuple[int, int]:
        if self.kind == "linear":
            return (1, 1)
        return (int(self.weight_int.shape[2]), int(self.weight_int.shape[3]))

    @property
    def positions(self) -> int:
        """Output positions per image (1 for linear layers)."""
        if self.kind == "linear":
            return 1
        return int(self.output_shape[1] * self.output_shape[2])

    @property
    def passes(self) -> int:
        """2 when the input is signed (positive and negative parts run separately), else 1."""
        return 2 if self.input_signed else 1

    @property
    def input_max(self) -> int:
        return 2**self.input_bits - 1

    def dense_weight(self, weight: Tensor | None = None) -> Tensor:
        """`weight` (default `weight_int`; torch's grouped shape) as the dense-equivalent
        (Cout, Cin, kh, kw) tensor: group g's output channels see only its input channels,
        zeros elsewhere. The weight itself when groups is 1."""
        w = self.weight_int if weight is None else weight
        if self.groups == 1:
            return w
        cout, cin_g = int(w.shape[0]), int(w.shape[1])
        out = torch.zeros((cout, cin_g * self.groups, *w.shape[2:]), dtype=w.dtype,
                          device=w.device)
        per = cout // self.groups
        view = out.view(self.groups, per, self.groups, cin_g, *w.shape[2:])
        idx = torch.arange(self.groups, device=w.device)
        view[idx, :, idx] = w.view(self.groups, per, cin_g, *w.shape[2:])
        return out

    def matrix(self) -> Tensor:
        """Integer weight matrix (rows = Cin*kh*kw in im2col order, cols = Cout), int64;
        block-diagonal for a grouped conv (`dense_weight`)."""
        return self.dense_weight().reshape(self.out_channels, -1).t().contiguous()

    def quantize_input(self, x: Tensor) -> Tensor:
        """Real input -> integers (as float32 holding integer values) in the layer's input
        range, [-input_max, input_max] for signed inputs, else [0, input_max]. The result
        is remembered (weakly) so that `holds_quantized` can tell it apart."""
        lo = -self.input_max if self.input_signed else 0
        out = torch.div(x, self.input_scale).round_().clamp_(lo, self.input_max)
        self._cache[_QUANTIZED_KEY] = (weakref.ref(out), out._version)
        return out

    def holds_quantized(self, x_int: Tensor) -> bool:
        """Whether x_int is the latest `quantize_input` result of this layer, or a view of
        it, unchanged since (torch's version counter, shared by views): its values are then
        integers in the layer's input range without looking at them (a range check is a
        full pass over the input: ~0.5 ms per layer of the shipped VGG-8 at batch 64).
        False for anything else, which the caller checks itself."""
        record = self._cache.get(_QUANTIZED_KEY)
        if not isinstance(record, tuple):
            return False
        ref, version = record
        made = ref()
        if made is None or (x_int is not made and x_int._base is not made):
            return False
        return bool(x_int._version == version)

    def dequantize(self, acc: Tensor, out: Tensor | None = None) -> Tensor:
        """Integer accumulator (any dtype holding integers) -> real output, float32 (into
        `out`, of acc's shape, when given): the accumulator rounded to float32, times the
        scale, plus the bias. The output keeps the accumulator's memory format: a
        channels-last accumulator (the int8 convolution's) gives a channels-last output,
        which the periphery (elementwise, pooling) keeps and the next layer's int8
        convolution reads without a transposing copy (~1 ms per 800k float32 values on one
        thread, against 0.1 ms for the product itself)."""
        shape = (1, -1, 1, 1) if self.kind == "conv" else (1, -1)
        scale = (self.weight_scale * self.input_scale).reshape(shape)
        if out is None:
            out = torch.empty_like(acc, dtype=torch.float32)
        return torch.mul(acc.to(torch.float32), scale, out=out).add_(self.bias.reshape(shape))

    def patches(self, x_int: Tensor) -> Tensor:
        """im2col: (N, Cin, H, W) -> (N*P, rows); linear: (N, Cin) -> (N, Cin). Same dtype
        as x_int: integer inputs (uint8: a quarter of float32's bytes) are unfolded by
        `_integer_patches`, since torch's im2col takes floating point only."""
        if self.kind == "linear":
            return x_int.reshape(x_int.shape[0], -1)
        if not x_int.is_floating_point():
            return self._integer_patches(x_int)
        cols = F.unfold(x_int, self.kernel_size, dilation=self.dilation, padding=self.padding,
                        stride=self.stride)  # (N, R, P)
        return cols.transpose(1, 2).reshape(-1, self.rows)

    def _integer_patches(self, x_int: Tensor) -> Tensor:
        """im2col of an integer tensor: one strided copy per kernel element (kh x kw of
        them) into the (N, Ho, Wo, Cin, kh x kw) result, i.e. rows in im2col order. Measured
        on a 64 x 32 x 28 x 28 uint8 input, 3x3 (one thread): 12 ms, against 70 ms for a
        permuted copy of the unfolded windows and 140-190 ms for float32 im2col."""
        (kh, kw), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        ph, pw = self.padding
        _, ho, wo = self.output_shape
        n, c = int(x_int.shape[0]), int(x_int.shape[1])
        padded = F.pad(x_int, (pw, pw, ph, ph))
        out = torch.empty((n, ho, wo, c, kh * kw), dtype=x_int.dtype, device=x_int.device)
        dest = out.permute(0, 3, 4, 1, 2)  # (N, C, kh x kw, Ho, Wo) view
        for i in range(kh):  # kernel elements: a handful
            for j in range(kw):
                dest[:, :, i * kw + j] = padded[:, :, i * dh : i * dh + (ho - 1) * sh + 1 : sh,
                                                j * dw : j * dw + (wo - 1) * sw + 1 : sw]
        return out.view(n * ho * wo, c * kh * kw)

    def fold_output(self, acc_mat: Tensor, batch: int) -> Tensor:
        """(N*P, Cout) -> (N, Cout, Ho, Wo) for conv, as a channels-last view of the rows (no
        transposing copy: rows are that layout's memory order); identity for linear."""
        if self.kind == "linear":
            return acc_mat
        _, ho, wo = self.output_shape
        return acc_mat.reshape(batch, ho, wo, -1).permute(0, 3, 1, 2)

    def linear_op(self, x: Tensor, weight: Tensor) -> Tensor:
        """The layer's linear map (no bias) of x with the given weight tensor."""
        if self.kind == "linear":
            return F.linear(x, weight)
        return F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def reference_accumulate(self, x_int: Tensor) -> Tensor:
        """Exact integer accumulator via float64 (exact below 2^53), returned as int64."""
        acc = self.linear_op(x_int.to(torch.float64), self.weight_int.to(torch.float64))
        return torch.round(acc).to(torch.int64)


class LayerExecutor(Protocol):
    """Computes a crossbar layer's integer accumulator from its integer input."""

    def __call__(self, layer: QuantLayer, x_int: Tensor) -> Tensor: ...


class CrossbarModule(nn.Module):
    """Stands in for a Conv2d/Linear in the traced graph; delegates to the active executor."""

    def __init__(self, layer: QuantLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - replaced by the interpreter
        return self.layer.linear_op(x, self.layer.float_weight) + _bias(self.layer)


def _strided_2x2(mod: nn.Module, x: Any) -> bool:
    """True for a 2x2, stride-2 max pooling without padding, dilation or ceil mode on a 4-D
    CPU tensor (the VGG pools): `_max_pool_2x2` gives the same values."""
    return (isinstance(mod, nn.MaxPool2d) and isinstance(x, Tensor) and x.dim() == 4
            and x.device.type == "cpu" and _pair(mod.kernel_size) == (2, 2)
            and _pair(mod.stride or mod.kernel_size) == (2, 2) and _pair(mod.padding) == (0, 0)
            and _pair(mod.dilation) == (1, 1) and not mod.ceil_mode
            and not mod.return_indices)


def _max_pool_2x2(x: Tensor) -> Tensor:
    """2x2, stride-2 max pooling (floor mode) as three elementwise maxima of strided views:
    the same values as F.max_pool2d, which on CPU takes 6.3 ms for a 64x32x28x28 float32
    batch on one thread against 0.5 ms here (2026-11-24); it is digital periphery of every
    integer run of VGG-8."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    top = torch.maximum(x[:, :, 0:h:2, 0:w:2], x[:, :, 0:h:2, 1:w:2])
    return torch.maximum(top, torch.maximum(x[:, :, 1:h:2, 0:w:2], x[:, :, 1:h:2, 1:w:2]))


def _bias(layer: QuantLayer) -> Tensor:
    return layer.bias.reshape((1, -1, 1, 1) if layer.kind == "conv" else (1, -1))


@dataclass
class RunStats:
    """Digital work outside the crossbar layers, attributed to the last crossbar layer run."""

    digital_ops: dict[str, int] = field(default_factory=dict)


class _Runner(fx.Interpreter):
    def __init__(self, qmodel: QuantizedModel, executor: LayerExecutor | None,
                 stats: RunStats | None, record: dict[str, _InputRecord] | None) -> None:
        super().__init__(qmodel.graph_module)
        self.qmodel = qmodel
        self.executor = executor
        self.stats = stats
        self.record = record
        self.current = qmodel.layers[0].name
        self.threads = torch.get_num_threads()  # the crossbar layers' intra-op threads
        # An executor whose layers run on task workers says so (`single_thread_periphery`).
        self.single_periphery = bool(getattr(executor, "single_thread_periphery", False))

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """With an executor whose layers run on task workers, the digital periphery
        (quantize, rescale, ReLU, pooling) runs on one intra-op thread: a second OpenMP
        thread spins for milliseconds after each operation, taking a core from the workers
        that start next (VGG-8, batch 64: the periphery takes ~12 ms on one thread or two).
        The crossbar layers run with the caller's thread count."""
        if not self.single_periphery or self.threads <= 1:
            return super().run(*args, **kwargs)
        with torch_threads(1):
            return super().run(*args, **kwargs)

    def _count(self, n: int) -> None:
        if self.stats is not None:
            self.stats.digital_ops[self.current] = self.stats.digital_ops.get(self.current, 0) + n

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        mod = self.fetch_attr(target)
        if isinstance(mod, CrossbarModule):
            layer = mod.layer
            self.current = layer.name
            x = args[0]
            if self.record is not None:
                self.record.setdefault(layer.name, _InputRecord()).add(x.detach(), layer)
            if self.executor is None:  # float (float64 in calibration, `_refine_maxima`)
                weight, bias = layer.float_weight.to(x.dtype), _bias(layer).to(x.dtype)
                return layer.linear_op(x, weight) + bias
            x_int = layer.quantize_input(x)
            # An executor that dequantizes itself (`dequantized`: the real output, e.g. each
            # image task its own rows) saves the full accumulator's copy.
            run = getattr(self.executor, "dequantized", None)
            if not self.single_periphery:
                return (run(layer, x_int) if run is not None
                        else layer.dequantize(self.executor(layer, x_int)))
            with torch_threads(self.threads):
                if run is not None:
                    return run(layer, x_int)
                acc = self.executor(layer, x_int)
            return layer.dequantize(acc)
        if self.executor is not None and _strided_2x2(mod, args[0]):
            out = _max_pool_2x2(args[0])
        else:
            out = super().call_module(target, args, kwargs)
        if isinstance(mod, (nn.MaxPool2d, nn.AvgPool2d)):
            kh, kw = _pair(mod.kernel_size)
            self._count(out.numel() * max(kh * kw - 1, 1))
        elif isinstance(mod, nn.AdaptiveAvgPool2d):
            self._count(args[0].numel())
        elif isinstance(mod, (nn.ReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU6)):
            self._count(out.numel() * (1 if type(mod) is nn.ReLU else 2))  # ReLU6: 2 compares
        return out

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        out = super().call_function(target, args, kwargs)
        if target is F.relu6:
            self._count(out.numel() * 2)
        elif target in _ADD_FUNCTIONS or target in _RELU_FUNCTIONS:
            self._count(out.numel())
        elif target in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d):
            self._count(args[0].numel())
        return out

    def call_method(self, target: Any, args: Any, kwargs: Any) -> Any:
        if target == "view" and isinstance(args[0], Tensor) and not args[0].is_contiguous():
            # The engine hands on channels-last results (the int8 convolution's layout), where
            # the model's own PyTorch saw contiguous NCHW ones: `x.view(n, -1)` works on
            # those and not on these. The contiguous copy is what the model's view sees.
            args = (args[0].contiguous(), *args[1:])
        out = super().call_method(target, args, kwargs)
        if target in ("relu", "add"):
            self._count(out.numel())
        return out


class QuantizedModel:
    """A traced, BN-folded, quantized network: `layers` in execution order."""

    def __init__(self, graph_module: fx.GraphModule, layers: list[QuantLayer],
                 input_bits: int, weight_bits: int) -> None:
        self.graph_module = graph_module
        self.layers = layers
        self.input_bits = input_bits
        self.weight_bits = weight_bits

    def layer(self, name: str) -> QuantLayer:
        for q in self.layers:
            if q.name == name:
                return q
        raise KeyError(name)

    @torch.no_grad()
    def run(self, x: Tensor, executor: LayerExecutor | None = None,
            stats: RunStats | None = None) -> Tensor:
        """Float (executor None) or integer run of the whole network on a batch."""
        return _Runner(self, executor, stats, None).run(x)

    @torch.no_grad()
    def run_float(self, x: Tensor) -> Tensor:
        return self.run(x, None)

    @torch.no_grad()
    def run_reference(self, x: Tensor, stats: RunStats | None = None) -> Tensor:
        """The integer-quantized network, exact: the oracle of the engine."""
        return self.run(x, lambda layer, x_int: layer.reference_accumulate(x_int), stats)

    def to(self, device: torch.device | str) -> QuantizedModel:
        """Move every layer tensor to `device` (in place); returns self."""
        self.graph_module.to(device)
        for q in self.layers:
            for attr in ("weight_int", "weight_scale", "bias", "float_weight"):
                setattr(q, attr, getattr(q, attr).to(device))
        return self


# ---- building -------------------------------------------------------------------------------
def _check_supported(gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    for node in gm.graph.nodes:
        if node.op == "call_module":
            mod = modules[node.target]
            if not isinstance(mod, _ALLOWED_MODULES):
                raise UnsupportedModelError(
                    f"unsupported layer '{node.target}' ({type(mod).__name__}); supported: "
                    f"{SUPPORTED}"
                )
            if isinstance(mod, _WEIGHTED_MODULES) and calls[str(node.target)] > 1:
                raise UnsupportedModelError(
                    f"unsupported layer '{node.target}': called {calls[str(node.target)]} "
                    f"times in forward (shared weights); each {type(mod).__name__} is mapped "
                    "onto its own arrays and costed per call site: give each call its own layer"
                )
            if isinstance(mod, nn.MaxPool2d) and mod.return_indices:
                raise UnsupportedModelError(
                    f"unsupported layer '{node.target}': MaxPool2d(return_indices=True)")
            if isinstance(mod, nn.Conv2d):
                if mod.padding_mode != "zeros":
                    raise UnsupportedModelError(
                        f"unsupported layer '{node.target}': padding_mode={mod.padding_mode}"
                    )
                if isinstance(mod.padding, str):
                    raise UnsupportedModelError(
                        f"unsupported layer '{node.target}': padding='{mod.padding}' (give numbers)"
                    )
        elif node.op == "call_function" and node.target not in _ALLOWED_FUNCTIONS:
            name = getattr(node.target, "__name__", str(node.target))
            raise UnsupportedModelError(f"unsupported operation '{name}' at node '{node.name}'")
        elif node.op == "call_function" and node.target is F.dropout:
            p = node.kwargs.get("p", node.args[1] if len(node.args) > 1 else 0.5)
            training = node.kwargs.get("training", node.args[2] if len(node.args) > 2 else True)
            if training is not False and p != 0:
                raise UnsupportedModelError(
                    f"unsupported operation 'dropout' at node '{node.name}': F.dropout with "
                    "training=True (its default) drops at random at inference; pass "
                    "training=self.training or use nn.Dropout")
        elif (node.op == "call_function" and node.target is F.max_pool2d
              and (node.kwargs.get("return_indices") or len(node.args) > 6 and node.args[6])):
            raise UnsupportedModelError(
                f"unsupported operation 'max_pool2d' at node '{node.name}': "
                "return_indices=True")
        elif node.op == "call_method" and node.target not in _ALLOWED_METHODS:
            raise UnsupportedModelError(
                f"unsupported tensor method '.{node.target}()' at node '{node.name}'"
            )
        elif node.op == "get_attr":
            raise UnsupportedModelError(
                f"unsupported direct use of parameter/buffer '{node.target}' in forward"
            )


def _wrapped_module(model: nn.Module) -> str | None:
    """How to reach the plain module inside a wrapper fx cannot trace (DataParallel,
    DistributedDataParallel, torch.compile's OptimizedModule), else None."""
    if isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel):
        return "model.module"
    if type(model).__name__ == "OptimizedModule" and hasattr(model, "_orig_mod"):
        return "model._orig_mod"
    return None


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace and fold Conv/Linear + BatchNorm pairs (eval-mode statistics)."""
    wrapped = _wrapped_module(model)
    if wrapped is not None:  # fx cannot trace the wrapper; the module inside it is the model
        raise UnsupportedModelError(
            f"model is wrapped ({type(model).__name__}), which torch.fx cannot trace: pass "
            f"the module inside ({wrapped})")
    model = copy.deepcopy(model).cpu().eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise UnsupportedModelError(
            f"model {type(model).__name__} cannot be traced with torch.fx: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None
    _check_supported(gm)
    _check_finite(gm)
    fused = fuse(gm, inplace=False)
    return fused if isinstance(fused, fx.GraphModule) else fx.symbolic_trace(fused)


def _check_finite(gm: fx.GraphModule) -> None:
    """Parameters and buffers (BatchNorm running statistics) finite, and every BatchNorm's
    running_var + eps positive (else folding divides by zero)."""
    for kind, items in (("parameter", gm.named_parameters()), ("buffer", gm.named_buffers())):
        for name, t in items:
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise UnsupportedModelError(f"model {kind} '{name}' contains NaN or Inf")
    for name, mod in gm.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.running_var is not None:
            if not bool((mod.running_var + mod.eps > 0).all()):
                raise UnsupportedModelError(
                    f"BatchNorm '{name}': running_var + eps is not positive for some channel "
                    f"(eps={mod.eps}); folding it would divide by zero")


def _nonnegative(node: fx.Node, modules: dict[str, nn.Module], input_nonneg: bool) -> bool:
    """Whether a node's value is >= 0 by construction (DESIGN.md 2.1)."""
    if node.op == "placeholder":
        return input_nonneg
    if node.op == "call_module":
        mod = modules[str(node.target)]
        if isinstance(mod, _RELU_MODULES):
            return True
        if isinstance(mod, _PASSTHROUGH_MODULES):
            return _arg_nonneg(node.args[0], modules, input_nonneg)
        return False
    if node.op == "call_function":
        if node.target in _RELU_FUNCTIONS:
            return True
        if node.target in _ADD_FUNCTIONS:
            return _add_nonneg(node, modules, input_nonneg)
        if node.target in _PASSTHROUGH_FUNCTIONS:
            return _arg_nonneg(node.args[0], modules, input_nonneg)
        return False
    if node.op == "call_method":
        if node.target == "relu":
            return True
        if node.target in _PASSTHROUGH_METHODS:
            return _arg_nonneg(node.args[0], modules, input_nonneg)
        if node.target == "add":
            return _add_nonneg(node, modules, input_nonneg)
    return False


def _add_nonneg(node: fx.Node, modules: dict[str, nn.Module], input_nonneg: bool) -> bool:
    """An add's value is >= 0 when both terms are and its `alpha` (a + alpha x b; torch.add,
    Tensor.add) is a number >= 0: alpha=-1 subtracts."""
    alpha = node.kwargs.get("alpha", 1)
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or alpha < 0:
        return False
    return all(_arg_nonneg(a, modules, input_nonneg) for a in node.args)


def _arg_nonneg(arg: Any, modules: dict[str, nn.Module], input_nonneg: bool) -> bool:
    if isinstance(arg, fx.Node):
        return _nonnegative(arg, modules, input_nonneg)
    if isinstance(arg, (int, float)):
        return arg >= 0
    return False


def _input_exact(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether a node's value is the network input's, selected but not computed (ReLU,
    ReLU6, max pooling, reshapes): the same in float32 and float64 (`_refine_maxima`)."""
    if node.op == "placeholder":
        return True
    if node.op == "call_module":
        exact = isinstance(modules[str(node.target)], _EXACT_MODULES)
    elif node.op == "call_function":
        exact = node.target in _EXACT_FUNCTIONS
    else:
        exact = node.op == "call_method" and node.target in _EXACT_METHODS
    return exact and isinstance(node.args[0], fx.Node) and _input_exact(node.args[0], modules)


def _followed_by_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    users = list(node.users)
    if len(users) != 1:
        return False
    u = users[0]
    return (
        (u.op == "call_module" and isinstance(modules.get(str(u.target)), _RELU_MODULES))
        or (u.op == "call_function" and u.target in _RELU_FUNCTIONS)
        or (u.op == "call_method" and u.target == "relu")
    )


def _quantize_weight(w: Tensor, weight_bits: int) -> tuple[Tensor, Tensor]:
    qmax = 2 ** (weight_bits - 1) - 1
    flat = w.reshape(w.shape[0], -1)
    amax = flat.abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax)).to(torch.float32)
    shape = (-1,) + (1,) * (w.dim() - 1)
    w_int = torch.round(w / scale.reshape(shape)).clamp(-qmax, qmax).to(torch.int64)
    return w_int, scale


def quantize_model(
    model: nn.Module,
    calibration: Tensor | Iterable[Tensor],
    weight_bits: int = 8,
    input_bits: int = 8,
) -> QuantizedModel:
    """Trace, fold BN, quantize weights per channel and inputs per layer from calibration data.

    `calibration`: a float image batch (N, C, H, W) or an iterable of batches, in the model's
    input range. Input scale = max|x| / (2^input_bits - 1) over the calibration inputs of each
    layer (a layer that only ever sees zeros gets scale 1).
    """
    gm = trace(model)
    modules = dict(gm.named_modules())
    batches = [calibration] if isinstance(calibration, Tensor) else list(calibration)
    if not batches:
        raise UnsupportedModelError("calibration data is empty")
    for b in batches:
        if not torch.isfinite(b).all():
            raise UnsupportedModelError("calibration data contains NaN or Inf")
    input_nonneg = all(bool((b >= 0).all()) for b in batches)

    layers: list[QuantLayer] = []
    exact_inputs: set[str] = set()  # layers whose input is the network input's values
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        mod = modules[str(node.target)]
        if not isinstance(mod, (nn.Conv2d, nn.Linear)):
            continue
        w = mod.weight.detach().to(torch.float32)
        b = (mod.bias.detach().to(torch.float32) if mod.bias is not None
             else torch.zeros(w.shape[0]))
        w_int, w_scale = _quantize_weight(w, weight_bits)
        layer = QuantLayer(
            name=str(node.target),
            kind="conv" if isinstance(mod, nn.Conv2d) else "linear",
            weight_int=w_int,
            weight_scale=w_scale,
            bias=b.clone(),
            float_weight=w.clone(),
            input_signed=not _arg_nonneg(node.args[0], modules, input_nonneg),
            followed_by_relu=_followed_by_relu(node, modules),
            input_bits=input_bits,
        )
        if isinstance(mod, nn.Conv2d):
            layer.stride = _pair(mod.stride)
            layer.padding = _pair(mod.padding)  # type: ignore[arg-type]  # str refused above
            layer.dilation = _pair(mod.dilation)
            layer.groups = int(mod.groups)
        layers.append(layer)
        if _input_exact(node.args[0], modules):
            exact_inputs.add(layer.name)
        gm.add_submodule(str(node.target), CrossbarModule(layer))
    if not layers:
        raise UnsupportedModelError("model has no Conv2d or Linear layer to map onto crossbars")

    qmodel = QuantizedModel(gm, layers, input_bits, weight_bits)
    record = _record_inputs(qmodel, batches, exact_inputs)
    for layer in layers:
        rec = record.get(layer.name)
        if rec is None:
            raise UnsupportedModelError(f"layer '{layer.name}' is never executed")
        amax = float(torch.tensor(rec.amax, dtype=torch.float32))  # see _refine_maxima
        if not math.isfinite(amax):
            raise UnsupportedModelError(f"the inputs of layer '{layer.name}' reach NaN or Inf "
                                        "on the calibration images (the model overflows)")
        if layer.kind == "linear" and len(rec.input_shape) != 1:
            raise UnsupportedModelError(
                f"unsupported layer '{layer.name}': Linear on inputs of shape "
                f"{tuple(rec.input_shape)} per image (it is mapped for one vector per image: "
                "flatten before it)")
        layer.input_scale = amax / layer.input_max if amax > 0 else 1.0
        layer.input_shape = rec.input_shape
        layer.output_shape = rec.output_shape
    return qmodel


def _record_inputs(qmodel: QuantizedModel, batches: list[Tensor],
                   exact_inputs: set[str]) -> dict[str, _InputRecord]:
    """Every crossbar layer's input maxima and shapes over the calibration batches: a float32
    run of the model, then `_refine_maxima` (but for the layers in `exact_inputs`)."""
    record: dict[str, _InputRecord] = {}
    with torch.no_grad():
        for batch in batches:
            _Runner(qmodel, None, None, record).run(batch.to(torch.float32))
        _refine_maxima(qmodel, batches,
                       {k: v for k, v in record.items() if k not in exact_inputs})
    return record


def _refine_maxima(qmodel: QuantizedModel, batches: list[Tensor],
                   record: dict[str, _InputRecord]) -> None:
    """Replace each layer's float32 input maximum by the float64 one, so that no scale
    depends on the CPU: a float32 run's maxima moved by an ulp between CPUs with and without
    AVX-512 (oneDNN sums in another order), and a scale an ulp apart rounds some inputs the
    other way (the same demo gave event counts ~1e-7 apart on two CPUs). Only the images whose
    float32 maximum is within `MAXIMUM_SLACK` of a layer's run again, in float64 (the model's
    float32 parameters converted for the run, then back, losslessly): float32 and float64
    values of one image differ far less, so the image with the largest float64 value is among
    them on any CPU. A layer whose input is the network input's values (`_input_exact`) is
    left out of `record`: its float32 maximum is exact. A model with parameters other than
    float32, or that fails in float64, keeps its float32 maxima."""
    gm = qmodel.graph_module
    if not all(t.dtype == torch.float32 for t in [*gm.parameters(), *gm.buffers()]
               if t.is_floating_point()):
        return
    chosen: set[int] = set()
    for rec in record.values():
        maxima = torch.cat(rec.image_maxima)
        top = float(maxima.max())
        if 0 < top < math.inf:
            chosen.update(torch.nonzero(maxima >= top * (1 - MAXIMUM_SLACK)).view(-1).tolist())
    if not chosen:
        return
    picked, start = [], 0
    for batch in batches:
        inside = [i - start for i in sorted(chosen) if start <= i < start + len(batch)]
        if inside:
            picked.append(batch[inside].to(torch.float64))
        start += len(batch)
    wide: dict[str, _InputRecord] = {}
    try:
        gm.double()
        _Runner(qmodel, None, None, wide).run(torch.cat(picked))
    except RuntimeError:  # an operation without float64: the float32 maxima stay
        return
    finally:
        gm.float()
    for name, rec in record.items():
        if 0 < rec.amax < math.inf and name in wide:
            rec.amax = wide[name].amax


@dataclass
class _InputRecord:
    """What calibration keeps of a layer's inputs: max |x| and the per-image shapes."""

    amax: float = 0.0
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    image_maxima: list[Tensor] = field(default_factory=list)  # max |x| of each image, per batch

    def add(self, x: Tensor, layer: QuantLayer) -> None:
        maxima = x.abs().flatten(1).amax(1)
        self.image_maxima.append(maxima)
        self.amax = max(self.amax, float(maxima.max()))
        if not self.input_shape:
            self.input_shape = tuple(x.shape[1:])
            self.output_shape = tuple(
                layer.linear_op(x[:1], layer.float_weight.to(x.dtype)).shape[1:])


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    return (int(v[0]), int(v[1]))


def accuracy(logits: Tensor, labels: Tensor) -> int:
    """Number of correct top-1 predictions."""
    return int((logits.argmax(dim=1) == labels).sum())


