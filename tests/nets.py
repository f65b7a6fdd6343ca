"""Small model factories shared by the tests (and usable as `--model tests.nets:<factory>`).

Every factory is deterministic (seeded) and cheap: a handful of channels, 8x8 to 28x28 inputs.
`randomize_bn` gives BatchNorm layers non-trivial running statistics so BN folding is exercised.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random running mean/var and affine parameters for every BatchNorm (eval-mode stats)."""
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = mod.num_features
            with torch.no_grad():
                mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.3)
                mod.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.25)
                mod.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model.eval()


def seeded_init(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialize Conv/Linear weights and biases from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            fan_in = mod.weight[0].numel()
            with torch.no_grad():
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen) / fan_in**0.5)
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.1)
    return model


def random_images(n: int, channels: int = 1, size: int = 8, seed: int = 0,
                  signed: bool = False) -> Tensor:
    """Float images in [0, 1] (or [-1, 1] when `signed`), seeded."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, channels, size, size), generator=gen)
    return x * 2 - 1 if signed else x


def random_labels(n: int, classes: int = 10, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed + 1)
    return torch.randint(0, classes, (n,), generator=gen)


class TinyCNN(nn.Module):
    """conv-BN-ReLU, maxpool, conv-ReLU, flatten, linear: three crossbar layers."""

    def __init__(self, in_ch: int = 1, classes: int = 10, size: int = 8, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(width, width * 2, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width * 2 * (size // 2) ** 2, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.conv2(x))
        return self.fc(self.flatten(x))


def tiny_cnn(in_ch: int = 1, classes: int = 10, size: int = 8, width: int = 4,
             seed: int = 0) -> nn.Module:
    return randomize_bn(seeded_init(TinyCNN(in_ch, classes, size, width), seed), seed)


def tiny_fmnist_net() -> nn.Module:
    """TinyCNN for 1x28x28 inputs, 10 classes (the CLI's default data set shape)."""
    return tiny_cnn(1, 10, 28, 2, seed=3)


class _ViewFlattenCNN(TinyCNN):
    """TinyCNN flattening with `x.view(x.size(0), -1)` (common in user models) instead of
    nn.Flatten: a view needs a contiguous tensor."""

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu1(self.bn1(self.conv1(x))))
        x = self.relu2(self.conv2(x))
        return self.fc(x.view(x.size(0), -1))


def view_flatten_net() -> nn.Module:
    """`tiny_fmnist_net`'s weights in `_ViewFlattenCNN` (the same function)."""
    net = _ViewFlattenCNN(1, 10, 28, 2)
    net.load_state_dict(tiny_fmnist_net().state_dict())
    return net.eval()


class ResidualNet(nn.Module):
    """Random-shape residual network used by the exactness property tests.

    stem conv (k, stride, padding, dilation) + BN + ReLU -> conv + BN, added to the stem output
    (a residual add) -> optional ReLU -> conv (its input is signed when the ReLU is absent) ->
    ReLU -> flatten -> linear head.
    """

    def __init__(self, in_ch: int, c1: int, c2: int, k1: int, stride: int, padding: int,
                 dilation: int, k2: int, size: int, classes: int, relu_after_add: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_ch, c1, k1, stride=stride, padding=padding, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(c1)
        self.body = nn.Conv2d(c1, c1, k2, padding=k2 // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(c1)
        self.relu_after_add = relu_after_add
        self.tail = nn.Conv2d(c1, c2, 1)
        self.flatten = nn.Flatten()
        h = (size + 2 * padding - dilation * (k1 - 1) - 1) // stride + 1
        self.fc = nn.Linear(c2 * h * h, classes)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.stem(x)))
        z = self.bn2(self.body(y)) + y
        if self.relu_after_add:
            z = torch.relu(z)
        z = torch.relu(self.tail(z))
        return self.fc(self.flatten(z))


def residual_net(in_ch: int = 2, c1: int = 4, c2: int = 3, k1: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, k2: int = 3, size: int = 8,
                 classes: int = 5, relu_after_add: bool = True, seed: int = 0) -> nn.Module:
    net = ResidualNet(in_ch, c1, c2, k1, stride, padding, dilation, k2, size, classes,
                      relu_after_add)
    return randomize_bn(seeded_init(net, seed), seed)


class SingleConv(nn.Module):
    """One conv layer (optionally followed by ReLU): the unit of the lossy-ADC reference test."""

    def __init__(self, in_ch: int, out_ch: int, k: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride=stride, padding=padding, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def single_conv(in_ch: int = 2, out_ch: int = 3, k: int = 3, stride: int = 1, padding: int = 1,
                dilation: int = 1, seed: int = 0) -> nn.Module:
    return seeded_init(SingleConv(in_ch, out_ch, k, stride, padding, dilation), seed).eval()


class Mlp(nn.Module):
    def __init__(self, features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(features, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.relu(self.bn(self.fc1(self.flatten(x)))))


def mlp(features: int = 64, hidden: int = 20, classes: int = 10, seed: int = 0) -> nn.Module:
    return randomize_bn(seeded_init(Mlp(features, hidden, classes), seed), seed)


class GroupedNet(nn.Module):
    """conv-ReLU6 stem, a grouped (depthwise when groups = channels) conv-BN-ReLU, a grouped
    1x1 conv, a residual add when the shapes allow it, flatten, linear."""

    def __init__(self, in_ch: int, channels: int, groups: int, k: int, stride: int,
                 padding: int, size: int, pw_groups: int, classes: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_ch, channels, 3, padding=1)
        self.act0 = nn.ReLU6()
        self.dw = nn.Conv2d(channels, channels, k, stride=stride, padding=padding, groups=groups,
                            bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act1 = nn.ReLU()
        self.pw = nn.Conv2d(channels, channels, 1, groups=pw_groups)
        out = (size + 2 * padding - k) // stride + 1
        self.residual = out == size
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels * out * out, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act0(self.stem(x))
        y = self.pw(self.act1(self.bn(self.dw(x))))
        if self.residual:
            y = y + x
        return self.fc(self.flatten(y))


def grouped_net(in_ch: int = 2, channels: int = 6, groups: int = 6, k: int = 3, stride: int = 1,
                padding: int = 1, size: int = 8, pw_groups: int = 2, classes: int = 5,
                seed: int = 0) -> nn.Module:
    """`GroupedNet`: a depthwise/grouped conv and a grouped 1x1 conv, seeded."""
    net = GroupedNet(in_ch, channels, groups, k, stride, padding, size, pw_groups, classes)
    return randomize_bn(seeded_init(net, seed), seed)


# ---- models the simulator must refuse -------------------------------------------------------
class _GeluNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.act = nn.GELU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * 28 * 28, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.act(self.conv(x))))


def unsupported_net() -> nn.Module:
    """A net with nn.GELU, which cannot be mapped."""
    return _GeluNet().eval()


class _GroupedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(torch.relu(self.conv(torch.relu(self.conv0(x))))))


def grouped_conv_net() -> nn.Module:
    """A 28x28 net with a grouped convolution (groups=2): dense and pattern map it, the other
    schemes refuse it."""
    return _GroupedNet().eval()


class _LstmNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, 8, batch_first=True)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(x.reshape(x.shape[0], 28, 28))
        return self.fc(out[:, -1])


def lstm_net() -> nn.Module:
    """A net with nn.LSTM, which cannot be mapped."""
    return _LstmNet().eval()


def nan_net() -> nn.Module:
    """The 28x28 TinyCNN with one NaN weight."""
    net = tiny_fmnist_net()
    with torch.no_grad():
        net.conv2.weight[0, 0, 0, 0] = float("nan")
    return net


def not_a_module() -> object:
    """A factory that returns something that is not an nn.Module."""
    return {"not": "a module"}


def bn_nan_net() -> nn.Module:
    """The 28x28 TinyCNN with a NaN in a BatchNorm running mean (a buffer, not a parameter)."""
    net = tiny_fmnist_net()
    with torch.no_grad():
        net.bn1.running_mean[0] = float("nan")
    return net


def bn_eps0_net() -> nn.Module:
    """The 28x28 TinyCNN whose BatchNorm has eps=0 and a zero running variance: folding it
    would divide by zero."""
    net = tiny_fmnist_net()
    net.bn1.eps = 0.0
    with torch.no_grad():
        net.bn1.running_var[0] = 0.0
    return net


def raising_factory() -> nn.Module:
    """A factory that raises."""
    raise RuntimeError("weights server unreachable")


def factory_with_argument(width: int) -> nn.Module:
    """A factory that needs an argument."""
    return tiny_cnn(1, 10, 28, width)


def tuple_factory() -> tuple[nn.Module, int]:
    """A factory that returns a tuple (a model and something else)."""
    return tiny_fmnist_net(), 3


def rgb32_net() -> nn.Module:
    """TinyCNN for 3x32x32 inputs (CIFAR-shaped), 10 classes."""
    return tiny_cnn(3, 10, 32, 2, seed=4)


def five_class_net() -> nn.Module:
    """TinyCNN for 1x28x28 inputs with 5 outputs."""
    return tiny_cnn(1, 5, 28, 2, seed=5)


def default_on_pixels() -> nn.Module:
    """The shipped VGG-8 made to take pixel values 0..255 instead of [0, 1] (its first conv's
    weights / 255: conv(255 x) then gives the shipped model's activations), as a model trained
    on unscaled images (Keras style) would: its float top-1 is the shipped model's only with
    an input scale of 1."""
    from sparsexbar.training.checkpoint import load_shipped_model

    net, _ = load_shipped_model()
    with torch.no_grad():
        net.features[0].weight.div_(255.0)
    return net.eval()


def zero_output_net() -> nn.Module:
    """A classifier with no classes (a Linear of 0 outputs)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 0))


def meta_net() -> nn.Module:
    """Parameters on the meta device: shapes without values."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).to("meta")


def half_net() -> nn.Module:
    """float16 parameters."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).half()


class _Raising(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("forward\nexploded: weights not loaded")


def raising_forward_net() -> nn.Module:
    """A forward that raises a two-line error."""
    return _Raising()


def exiting_factory() -> nn.Module:
    """A factory that calls sys.exit(3)."""
    import sys

    sys.exit(3)


class _Exiting(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x: Tensor) -> Tensor:
        import sys

        sys.exit(4)


def exiting_forward_net() -> nn.Module:
    """A forward that calls sys.exit(4)."""
    return _Exiting()
