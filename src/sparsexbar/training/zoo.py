"""Model zoo: small pure-torch CNNs that the simulator frontend can trace and map.

Every constructor takes ``in_channels``, ``num_classes`` and ``input_size`` (H = W, pixels)
and works for 28x28 one-channel (Fashion-MNIST) and 32x32 three-channel (CIFAR) inputs.
Only crossbar-mappable layer types are used (Conv2d, grouped and depthwise included, Linear,
BatchNorm2d/1d, ReLU, ReLU6, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout), ReLUs
are never in-place,
residual adds are written ``out = out + shortcut``, and no forward has data-dependent Python
control flow, so ``torch.fx.symbolic_trace`` works on all of them.

Models expect images in [0, 1] without normalization (the first crossbar layer's inputs are
then unsigned).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from ..core.errors import SparsexbarError

# VGG layer plans: an int is a conv3x3-BN-ReLU with that many (base) output channels,
# "M" a 2x2 max pool. vgg8 follows NeuroSim's VGG8 (6 conv + 2 linear, hidden 1024);
# vgg11/vgg16 are the CIFAR variants of Simonyan & Zisserman (configs A and D).
_VGG_PLANS: dict[str, tuple[Sequence[int | str], int]] = {
    "vgg8": ((128, 128, "M", 256, 256, "M", 512, 512, "M"), 1024),
    "vgg11": ((64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"), 512),
    "vgg16": ((64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
               512, 512, 512, "M"), 512),
}


def _check_args(in_channels: int, num_classes: int, input_size: int, width: float,
                min_size: int = 4) -> None:
    if in_channels < 1:
        raise SparsexbarError(f"in_channels must be >= 1, got {in_channels}")
    if num_classes < 1:
        raise SparsexbarError(f"num_classes must be >= 1, got {num_classes}")
    if input_size < min_size:
        raise SparsexbarError(f"input_size must be >= {min_size} pixels, got {input_size}")
    if not width > 0:
        raise SparsexbarError(f"width must be > 0, got {width}")


def _scaled(channels: int, width: float) -> int:
    """Channel count ``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


class VGG(nn.Module):
    """CIFAR-style VGG: conv3x3-BN-ReLU stacks with 2x2 max pools, then Flatten and two Linear.

    A max pool is skipped when the feature map is already 1x1 (28x28 inputs in vgg11/vgg16),
    decided at construction time from ``input_size``.
    """

    def __init__(self, plan: Sequence[int | str], hidden: int, in_channels: int,
                 num_classes: int, input_size: int, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        size = input_size
        for item in plan:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                    size //= 2
                continue
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(item), nn.ReLU()]
            channels = item
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        head: list[nn.Module] = [nn.Linear(channels * size * size, hidden, bias=False),
                                 nn.BatchNorm1d(hidden), nn.ReLU()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(hidden, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


def _vgg(name: str, in_channels: int, num_classes: int, input_size: int, width: float,
         dropout: float) -> VGG:
    _check_args(in_channels, num_classes, input_size, width)
    base_plan, base_hidden = _VGG_PLANS[name]
    plan = [item if item == "M" else _scaled(int(item), width) for item in base_plan]
    return VGG(plan, _scaled(base_hidden, width), in_channels, num_classes, input_size, dropout)


def vgg8(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
         width: float = 1.0, dropout: float = 0.0) -> VGG:
    """NeuroSim-style VGG-8: 6 conv (128-128-M-256-256-M-512-512-M) + 2 linear (1024 hidden).

    All channel counts and the hidden width are multiplied by ``width`` (0.25 gives
    32-32-64-64-128-128 and a 256-unit hidden layer).
    """
    return _vgg("vgg8", in_channels, num_classes, input_size, width, dropout)


def vgg11(in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
          width: float = 1.0, dropout: float = 0.0) -> VGG:
    """CIFAR VGG-11 (config A): 8 conv + 2 linear (512 hidden), channels times ``width``."""
    return _vgg("vgg11", in_channels, num_classes, input_size, width, dropout)


def vgg16(in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
          width: float = 1.0, dropout: float = 0.0) -> VGG:
    """CIFAR VGG-16 (config D): 13 conv + 2 linear (512 hidden), channels times ``width``."""
    return _vgg("vgg16", in_channels, num_classes, input_size, width, dropout)


class BasicBlock(nn.Module):
    """ResNet basic block: two conv3x3-BN, residual add, ReLU.

    The shortcut is a 1x1 conv + BN when the stride or channel count changes, else the input.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Structural (not data-dependent) branch: fixed at construction, fx-traceable.
        shortcut = x if self.shortcut is None else self.shortcut(x)
        out = out + shortcut
        return self.relu2(out)


class ResNet(nn.Module):
    """CIFAR-style ResNet: conv3x3 stem (stride 1), stages of BasicBlocks, global average pool,
    Linear classifier."""

    def __init__(self, stage_planes: Sequence[int], blocks: Sequence[int], in_channels: int,
                 num_classes: int) -> None:
        super().__init__()
        stem = stage_planes[0]
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        stages: list[nn.Module] = []
        in_planes = stem
        for i, (planes, count) in enumerate(zip(stage_planes, blocks, strict=True)):
            stage: list[nn.Module] = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        return self.fc(self.flatten(self.pool(out)))


def resnet20(in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
             width: float = 1.0) -> ResNet:
    """ResNet-20 of He et al. (2016) for CIFAR: 16-32-64 channels (times ``width``), 3x3 blocks.

    ``input_size`` is only validated: global average pooling makes the head size-independent.
    """
    _check_args(in_channels, num_classes, input_size, width)
    planes = [_scaled(p, width) for p in (16, 32, 64)]
    return ResNet(planes, (3, 3, 3), in_channels, num_classes)


def resnet18(in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
             width: float = 1.0) -> ResNet:
    """CIFAR ResNet-18: 3x3 stride-1 stem, 64-128-256-512 channels (times ``width``), 2x4 blocks."""
    _check_args(in_channels, num_classes, input_size, width)
    planes = [_scaled(p, width) for p in (64, 128, 256, 512)]
    return ResNet(planes, (2, 2, 2, 2), in_channels, num_classes)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling.

    conv5x5(6, pad 2)-pool-conv5x5(16)-pool-FC120-FC84-FC(num_classes); the first FC's size
    follows from ``input_size`` (16*5*5 for 28x28, 16*6*6 for 32x32).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
                 width: float = 1.0) -> None:
        super().__init__()
        _check_args(in_channels, num_classes, input_size, width, min_size=12)
        c1, c2 = _scaled(6, width), _scaled(16, width)
        f1, f2 = _scaled(120, width), _scaled(84, width)
        size = ((input_size // 2) - 4) // 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(c2 * size * size, f1), nn.ReLU(),
            nn.Linear(f1, f2), nn.ReLU(),
            nn.Linear(f2, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.features(x)))


def lenet5(in_channels: int = 1, num_classes: int = 10, input_size: int = 28,
           width: float = 1.0) -> LeNet5:
    """LeNet-5 with ReLU/max pooling; see `LeNet5`."""
    return LeNet5(in_channels, num_classes, input_size, width)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion conv-BN-ReLU6 (left out when ``expand`` is 1), 3x3
    depthwise conv-BN-ReLU6 (stride 1 or 2), 1x1 linear projection conv-BN; a residual add when
    the stride is 1 and the channel count is kept."""

    def __init__(self, in_planes: int, planes: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_planes * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(in_planes, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden,
                             bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, planes, 1, bias=False), nn.BatchNorm2d(planes)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_planes == planes

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        # Structural (fixed at construction), so fx traces one branch.
        return out + x if self.residual else out


# MobileNetV2 stages (Sandler et al. 2018, table 2): expansion t, channels c, blocks n,
# stride s of the first block. CIFAR-style: a stride-1 stem and three stride-2 stages (24, 32,
# 64; the paper's 160-stage stride is 1 here), so a 32x32 input ends at 4x4 and no expanded
# (6x) block runs at full resolution (they dominated CPU training time at 32x32).
_MBV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 1), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """CIFAR-style MobileNetV2: 3x3 stem (stride 1), inverted residual blocks with depthwise
    3x3 convolutions and ReLU6, 1x1 head conv, global average pool, Linear classifier.
    ``width`` scales every channel count (head included); ``blocks`` caps the blocks per stage
    (a shallower net for small budgets)."""

    def __init__(self, in_channels: int, num_classes: int, width: float = 1.0,
                 blocks: int = 2, head: int = 1280, dropout: float = 0.0) -> None:
        super().__init__()
        stem = _scaled(32, width)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, stem, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(stem), nn.ReLU6())
        layers: list[nn.Module] = []
        in_planes = stem
        for expand, channels, count, stride in _MBV2_STAGES:
            planes = _scaled(channels, width)
            for j in range(min(count, blocks)):
                layers.append(InvertedResidual(in_planes, planes, stride if j == 0 else 1,
                                               expand))
                in_planes = planes
        self.blocks = nn.Sequential(*layers)
        last = _scaled(head, width)
        self.head = nn.Sequential(nn.Conv2d(in_planes, last, 1, bias=False),
                                  nn.BatchNorm2d(last), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.head(self.blocks(self.stem(x)))
        return self.fc(self.dropout(self.flatten(self.pool(out))))


def mobilenetv2(in_channels: int = 3, num_classes: int = 10, input_size: int = 32,
                width: float = 1.0, blocks: int = 2, head: int = 1280,
                dropout: float = 0.0) -> MobileNetV2:
    """CIFAR-style MobileNetV2 (see `MobileNetV2`): channels times ``width``, at most
    ``blocks`` inverted residual blocks per stage (2: 12 blocks, a CPU budget; 4: the paper's
    17), a ``head``-channel 1x1 conv (times ``width``). ``input_size`` is only validated
    (global average pooling)."""
    _check_args(in_channels, num_classes, input_size, width, min_size=8)
    if blocks < 1:
        raise SparsexbarError(f"blocks must be >= 1, got {blocks}")
    if head < 1:
        raise SparsexbarError(f"head must be >= 1, got {head}")
    return MobileNetV2(in_channels, num_classes, width, blocks, head, dropout)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "vgg8": vgg8,
    "vgg11": vgg11,
    "vgg16": vgg16,
    "resnet20": resnet20,
    "resnet18": resnet18,
    "lenet5": lenet5,
    "mobilenetv2": mobilenetv2,
}


def build_model(name: str, **kwargs: object) -> nn.Module:
    """Build zoo model ``name`` with constructor keyword arguments ``kwargs``."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise SparsexbarError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}") from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise SparsexbarError(f"bad arguments for model {name!r}: {exc}") from None
