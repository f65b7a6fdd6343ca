"""Training: augmentation, evaluation, determinism of a tiny run, fine-tuning with masks,
and train_command end to end (data folder -> checkpoint that reloads to the recorded accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsexbar.core.errors import SparsexbarError
from sparsexbar.training.checkpoint import load_checkpoint
from sparsexbar.training.data import ImageDataset, load_dataset
from sparsexbar.training.train import (
    NibbleExecutor,
    augment_batch,
    evaluate,
    fine_tune,
    round_weights_to_half,
    train,
    train_command,
)
from sparsexbar.training.zoo import build_model


@pytest.fixture(scope="module")
def fmnist256() -> ImageDataset:
    return load_dataset("fashion-mnist", "test").subset(0, 256)


def test_augment_batch_is_a_shifted_crop_and_flip() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(6 * 2 * 5 * 5, dtype=torch.uint8).reshape(6, 2, 5, 5)
    assert torch.equal(augment_batch(x, gen, padding=0), x)
    out = augment_batch(x, gen, padding=2, hflip=True)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):  # every output is one of the 5x5 crops of the padded image, maybe flipped
        crops = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        crops += [c.flip(2) for c in crops]
        assert any(torch.equal(out[i], c) for c in crops)
    gen2 = torch.Generator().manual_seed(0)
    augment_batch(x, gen2, padding=0)
    assert torch.equal(augment_batch(x, gen2, padding=2, hflip=True), out)


class _Fixed(nn.Module):
    """Predicts class (first pixel > 0.5), so accuracy is known exactly."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = (x[:, 0, 0, 0] > 0.5).float()
        return torch.stack([1 - p, p], dim=1)


def test_evaluate_exact_fraction() -> None:
    images = torch.zeros(10, 1, 2, 2, dtype=torch.uint8)
    images[:4, 0, 0, 0] = 255
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 1, 1])  # correct: 3 + 4 = 7
    ds = ImageDataset(images, labels, ["a", "b"], "toy")
    assert evaluate(_Fixed(), ds, batch_size=3) == pytest.approx(0.7)


def _tiny_run(ds: ImageDataset, seed: int) -> tuple[nn.Module, dict]:
    torch.manual_seed(123)  # same initial weights for every run
    model = build_model("vgg8", in_channels=1, num_classes=10, input_size=28, width=0.0625)
    metrics = train(model, ds, None, epochs=1, lr=0.05, batch_size=64, seed=seed,
                    progress=False)
    return model, metrics


def test_tiny_training_is_deterministic_and_learns(fmnist256: ImageDataset) -> None:
    torch.manual_seed(123)
    init = build_model("vgg8", in_channels=1, num_classes=10, input_size=28, width=0.0625)
    a, ma = _tiny_run(fmnist256, seed=0)
    b, mb = _tiny_run(fmnist256, seed=0)
    c, _ = _tiny_run(fmnist256, seed=1)
    sa, sb, sc, s0 = a.state_dict(), b.state_dict(), c.state_dict(), init.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    w = "features.0.weight"
    assert not torch.equal(sa[w], s0[w])
    assert not torch.equal(sa[w], sc[w])
    assert ma["final_loss"] == mb["final_loss"]
    assert len(ma["history"]) == 1 and ma["epochs"] == 1
    assert int(sa["features.1.num_batches_tracked"]) == 4  # 256 / 64 steps
    # After one epoch the loss is below chance level (ln 10 = 2.30).
    assert ma["final_loss"] < 2.3
    assert not a.training


def test_fine_tune_respects_masks(fmnist256: ImageDataset) -> None:
    torch.manual_seed(0)
    model = build_model("lenet5")
    masks = {n: (torch.rand_like(p) > 0.5).float() for n, p in model.named_parameters()
             if p.dim() > 1}

    def apply(m: nn.Module) -> None:
        for n, p in m.named_parameters():
            if n in masks:
                p.mul_(masks[n])

    with torch.no_grad():
        apply(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    out = fine_tune(model, fmnist256.subset(0, 128), epochs=1, lr=0.01, mask_fn=apply)
    assert len(out["history"]) == 1
    for n, p in model.named_parameters():
        if n in masks:
            assert torch.all(p[masks[n] == 0] == 0), n
            assert not torch.equal(p, before[n]), n


def test_bad_training_arguments(fmnist256: ImageDataset) -> None:
    model = build_model("lenet5")
    with pytest.raises(SparsexbarError, match="epochs"):
        train(model, fmnist256, None, epochs=0, progress=False)
    with pytest.raises(SparsexbarError, match="learning rate"):
        train(model, fmnist256, None, epochs=1, lr=0, progress=False)


def test_a_last_batch_of_one_image_joins_the_batch_before(fmnist256: ImageDataset) -> None:
    """9 images in batches of 8 (and 1 image alone) crashed VGG-8's BatchNorm1d with a
    traceback ("Expected more than 1 value per channel when training"): the last image joins
    the batch before, every image is trained on; one image alone is refused in one line."""
    torch.manual_seed(0)
    model = build_model("vgg8", in_channels=1, num_classes=10, input_size=28, width=0.0625)
    nine = fmnist256.subset(0, 9)
    seen: list[int] = []
    original = model.forward
    model.forward = lambda x: (seen.append(len(x)), original(x))[1]  # type: ignore[method-assign]
    train(model, nine, None, epochs=1, lr=0.05, batch_size=8, seed=0, progress=False)
    assert seen == [9]  # one step of 9 images, not 8 + 1
    seen.clear()
    train(model, fmnist256.subset(0, 17), None, epochs=1, lr=0.05, batch_size=8, seed=0,
          progress=False)
    assert seen == [8, 9]
    with pytest.raises(SparsexbarError, match="on one image: its BatchNorm1d"):
        train(model, fmnist256.subset(0, 1), None, epochs=1, progress=False)


def _write_folder_dataset(root: Path) -> None:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 24), ("test", 8)):
        for cls, base in (("dark", 40), ("light", 210)):
            (root / split / cls).mkdir(parents=True)
            for i in range(n // 2):
                noise = torch.randint(-30, 31, (12, 12, 3), generator=gen)
                arr = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(root / split / cls / f"{i:02d}.png")


def test_train_command_writes_a_reloadable_checkpoint(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    _write_folder_dataset(data)
    out = tmp_path / "ckpt" / "net"
    metrics = train_command("lenet5", str(data), epochs=3, out=out, batch_size=8, lr=0.02,
                            seed=0, width=0.5, progress=False, half=True)
    meta = json.loads((tmp_path / "ckpt" / "net.json").read_text())
    assert metrics["checkpoint"] == str(out) + ".safetensors"
    assert meta["architecture"] == "lenet5" and meta["format_version"] == 1
    # an image folder is read at its images' own size (12x12 RGB here)
    assert meta["arch_kwargs"] == {"in_channels": 3, "num_classes": 2, "input_size": 12,
                                   "width": 0.5}
    # what a run needs to feed the model and map an image folder's classes
    assert meta["classes"] == ["dark", "light"]
    assert meta["input"] == {"channels": 3, "size": 12, "fit": "auto", "scale": 1 / 255,
                             "mean": [0.0], "std": [1.0]}
    assert meta["normalization"] == "none, inputs in [0,1]" and meta["dtype"] == "float16"
    assert meta["train"]["epochs"] == 3 and meta["train"]["train_images"] == 24
    model, _ = load_checkpoint(out)
    test = load_dataset(str(data), "test")
    assert evaluate(model, test) == pytest.approx(meta["accuracy"]["float_top1"])
    assert meta["accuracy"]["float_top1"] == metrics["float_top1"]


def test_round_weights_to_half_only_touches_matrices() -> None:
    model = build_model("lenet5")
    with torch.no_grad():
        model.features[0].bias.fill_(1 / 3)
    w = model.features[0].weight.detach().clone()
    round_weights_to_half(model)
    assert torch.equal(model.features[0].weight, w.half().float())
    assert float(model.features[0].bias.detach()[0]) == torch.tensor(1 / 3).item()


@pytest.mark.parametrize("signed_input", [False, True])
def test_nibble_executor_equals_the_float64_reference(signed_input: bool) -> None:
    """The digit-plane accumulator (what quantized_top1 runs) equals the float64 integer
    reference exactly, layer by layer and end to end, on unsigned and signed inputs."""
    from sparsexbar.core.frontend import quantize_model

    torch.manual_seed(3)
    net = build_model("vgg8", in_channels=1, num_classes=10, input_size=16, width=0.25).eval()
    x = torch.rand(24, 1, 16, 16) - (0.5 if signed_input else 0.0)
    q = quantize_model(net, x[:16], 8, 8)
    assert q.layers[0].input_signed == signed_input
    executor = NibbleExecutor()
    with torch.no_grad():
        assert torch.equal(q.run(x, executor), q.run_reference(x))
        for layer in q.layers:
            xi = torch.randint(-layer.input_max if layer.input_signed else 0,
                               layer.input_max + 1, (4, *layer.input_shape)).to(torch.float32)
            got = executor(layer, xi)
            assert got.dtype == torch.int64
            assert torch.equal(got, layer.reference_accumulate(xi)), layer.name


@pytest.mark.parametrize("model", ["grouped", "mobilenetv2"])
def test_nibble_executor_takes_grouped_and_depthwise_convs(model: str) -> None:
    """Grouped and depthwise layers (each group its own block) in the digit-plane accumulator:
    equal to the float64 reference (a groups=1 int8 convolution of a depthwise weight was
    built before, and failed on the layer's input)."""
    from sparsexbar.core.frontend import quantize_model
    from tests import nets

    torch.manual_seed(5)
    if model == "grouped":
        net, size, ch = nets.grouped_net(in_ch=2, channels=6, groups=6, size=8), 8, 2
    else:
        net = build_model("mobilenetv2", in_channels=1, num_classes=10, input_size=32,
                          width=0.25).eval()
        size, ch = 32, 1
    x = torch.rand(6, ch, size, size)
    q = quantize_model(net.eval(), x, 8, 8)
    assert any(layer.groups > 1 for layer in q.layers)
    with torch.no_grad():
        assert torch.equal(q.run(x, NibbleExecutor()), q.run_reference(x))
