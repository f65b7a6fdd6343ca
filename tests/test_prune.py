"""Magnitude pruning for `sre` (prune.py): OU-structured blocks follow the hardware's OU column
groups and become rows that static compression drops; unstructured hits its exact count;
gradual pruning with fine-tuning keeps the masks; the `prune` CLI writes a loadable checkpoint
and the per-layer table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sparsexbar.checkpoint import load_checkpoint, read_meta, save_checkpoint
from sparsexbar.cli import main
from sparsexbar.config import preset
from sparsexbar.data import ImageDataset
from sparsexbar.frontend import quantize_model
from sparsexbar.prune import channel_groups, layer_mask, prune_model, schedule, sparsity_table
from sparsexbar.schemes.sre import kept_matrix, map_sre
from tests import nets


def test_channel_groups_follow_ou_columns() -> None:
    hw = preset("isaac")  # 8 columns per channel (2 polarities x 4 slices), OU 16 columns
    assert channel_groups(5, hw).tolist() == [0, 0, 1, 1, 2]
    hw2 = hw.with_overrides({"array.cols": 24, "ou.cols": 16})  # 3 channels per array
    # Tile 0 holds channels 0-2 (groups 0: ch 0-1, 1: ch 2); tile 1 channels 3-5 ...
    assert channel_groups(6, hw2).tolist() == [0, 0, 1, 2, 2, 3]


def test_ou_structured_mask_zeroes_whole_blocks() -> None:
    hw = preset("isaac")
    gen = torch.Generator().manual_seed(0)
    w = torch.randn((6, 4, 3, 3), generator=gen)
    mask = layer_mask(w, 0.5, "ou-structured", hw)
    flat = mask.reshape(6, -1)
    groups = channel_groups(6, hw)
    for g in groups.unique().tolist():
        block = flat[groups == g]  # (channels in group, rows)
        assert bool(((block.all(dim=0)) | (~block).all(dim=0)).all())
    zeros = int((~mask).sum())
    assert 0.5 * w.numel() - 2 < zeros <= 0.5 * w.numel()  # blocks of 2 weights
    # The dropped blocks are the smallest by L2 norm.
    norms = (w.reshape(6, -1) ** 2).reshape(3, 2, -1).sum(dim=1).sqrt()  # (group, row)
    dropped = (~flat).reshape(3, 2, -1).all(dim=1)
    assert float(norms[dropped].max()) <= float(norms[~dropped].min())


def test_unstructured_mask_exact_count() -> None:
    w = torch.randn((8, 3, 3, 3), generator=torch.Generator().manual_seed(1))
    mask = layer_mask(w, 0.7, "unstructured", preset("isaac"))
    assert int((~mask).sum()) == int(0.7 * w.numel())
    assert float(w[~mask].abs().max()) <= float(w[mask].abs().min())


def test_schedule_is_gradual() -> None:
    s = schedule(0.8, 3)
    assert s[-1] == pytest.approx(0.8)
    assert s == sorted(s) and s[0] > 0


def _tiny_ds(n: int = 48) -> ImageDataset:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return ImageDataset(images, labels, [str(i) for i in range(10)], "tiny")


def test_prune_with_fine_tuning_keeps_blocks_and_sre_drops_them() -> None:
    torch.manual_seed(0)
    hw = preset("isaac")
    net = nets.tiny_cnn(size=8, width=4)
    out = prune_model(net, _tiny_ds(), hw, 0.6, "ou-structured", steps=2, epochs=1, lr=0.01)
    assert len(out["history"]) == 2
    table = {row["layer"]: row for row in sparsity_table(net, hw)}
    for name, mask in out["masks"].items():
        w = dict(net.named_modules())[name].weight
        assert bool((w[~mask] == 0).all())  # fine-tuning did not regrow pruned weights
        assert table[name]["sparsity"] >= 0.55
        # Every layer has an even channel count: all blocks are 2 channels x 1 row.
        assert table[name]["zero_blocks"] * 2 == int((~mask).sum())
    # Static compression drops every zero block's row from its (array, column group).
    q = quantize_model(net, nets.random_images(4, size=8), 8, 8)
    for layer in q.layers:
        row = table[layer.name]
        kept = int(kept_matrix(map_sre(layer, hw, True)).sum())
        assert kept <= row["blocks"] - row["zero_blocks"]


def test_prune_cli_writes_checkpoint_and_table(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from sparsexbar.zoo import build_model

    torch.manual_seed(0)
    net = build_model("lenet5", in_channels=1, num_classes=10, input_size=28, width=0.5)
    src = tmp_path / "base"
    save_checkpoint(src, net, {"architecture": "lenet5",
                               "arch_kwargs": {"in_channels": 1, "num_classes": 10,
                                               "input_size": 28, "width": 0.5},
                               "dataset": "fashion-mnist"})
    out = tmp_path / "pruned"
    main(["prune", "--model", str(src), "--data", "fashion-mnist", "--split", "test",
          "--sparsity", "0.5", "--steps", "1", "--epochs", "1", "--limit", "64",
          "--out", str(out)])
    text = capsys.readouterr().out
    assert "block sparsity" in text
    model, meta = load_checkpoint(out)
    assert meta["pruning"]["method"] == "ou-structured"
    assert read_meta(out)["pruning"]["sparsity"] == 0.5
    for row in meta["pruning"]["table"]:
        assert row["sparsity"] >= 0.45
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules()
                if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert zeros == sum(row["zeros"] for row in meta["pruning"]["table"])
    assert (tmp_path / "pruned.sparsity.md").read_text().startswith("| layer |")


def test_prune_cli_bad_method_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--method", "random"])
    assert exc.value.code == 2
    assert "--method" in capsys.readouterr().err
