"""Magnitude pruning for `sre` (prune.py): OU-structured blocks follow the hardware's OU column
groups and become rows that static compression drops; unstructured hits its exact count;
gradual pruning with fine-tuning keeps the masks; the `prune` CLI writes a loadable checkpoint
and the per-layer table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from sparsexbar.app.cli import main
from sparsexbar.core.config import preset
from sparsexbar.core.frontend import quantize_model
from sparsexbar.schemes.sre import kept_matrix, map_sre
from sparsexbar.training.checkpoint import load_checkpoint, read_meta, save_checkpoint
from sparsexbar.training.data import ImageDataset
from sparsexbar.training.prune import (
    channel_groups,
    layer_mask,
    prune_model,
    schedule,
    sparsity_table,
)
from tests import nets
from tests.test_cli_errors import assert_one_line_error, cli


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


def _lenet_checkpoint(tmp_path: Path, stem: str = "base") -> Path:
    """A seeded, untrained LeNet-5 (width 0.5) saved as a Fashion-MNIST checkpoint stem."""
    from sparsexbar.training.zoo import build_model

    torch.manual_seed(0)
    net = build_model("lenet5", in_channels=1, num_classes=10, input_size=28, width=0.5)
    src = tmp_path / stem
    save_checkpoint(src, net, {"architecture": "lenet5",
                               "arch_kwargs": {"in_channels": 1, "num_classes": 10,
                                               "input_size": 28, "width": 0.5},
                               "dataset": "fashion-mnist"})
    return src


def test_prune_cli_writes_checkpoint_and_table(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = _lenet_checkpoint(tmp_path)
    out = tmp_path / "pruned"
    main(["prune", "--model", str(src), "--data", "fashion-mnist", "--split", "test",
          "--sparsity", "0.5", "--steps", "1", "--epochs", "1", "--limit", "64",
          "--out", str(out)])
    text = capsys.readouterr().out
    assert "block sparsity" in text
    # the three files written, named (the .json was not)
    assert text.rstrip().endswith(f"wrote {out}.safetensors, {out}.json, {out}.sparsity.md")
    model, meta = load_checkpoint(out)
    assert meta["pruning"]["method"] == "ou-structured"
    assert read_meta(out)["pruning"]["sparsity"] == 0.5
    for row in meta["pruning"]["table"]:
        assert row["sparsity"] >= 0.45
    zeros = sum(int((m.weight == 0).sum()) for m in model.modules()
                if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert zeros == sum(row["zeros"] for row in meta["pruning"]["table"])
    assert (tmp_path / "pruned.sparsity.md").read_text().startswith("| layer |")


def test_threads_option_sets_the_commands_threads_and_restores_them(tmp_path: Path) -> None:
    """`sparsexbar --threads N CMD`: CMD runs on N intra-op threads (the pruning metadata
    records the count it ran on); the caller's count is back afterwards."""
    src = _lenet_checkpoint(tmp_path)
    before = torch.get_num_threads()
    for threads in (2, 1):
        out = tmp_path / f"pruned{threads}"
        main(["--threads", str(threads), "prune", "--model", str(src), "--sparsity", "0.5",
              "--steps", "1", "--epochs", "1", "--tune-images", "32", "--limit", "32",
              "--out", str(out)])
        assert read_meta(out)["pruning"]["torch_threads"] == threads
        assert torch.get_num_threads() == before


def test_prune_tune_images_cuts_the_tuning_split_only(tmp_path: Path) -> None:
    """--tune-images N fine-tunes on the first N train images; the test split stays whole."""
    src = _lenet_checkpoint(tmp_path)
    out = tmp_path / "pruned"
    main(["prune", "--model", str(src), "--sparsity", "0.5", "--steps", "1", "--epochs", "1",
          "--tune-images", "48", "--out", str(out)])
    pruning = read_meta(out)["pruning"]
    assert pruning["tune_images"] == 48 and pruning["tune_split"] == "train"
    assert pruning["test_images"] == 10_000


def test_prune_cli_bad_method_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--method", "random"])
    assert exc.value.code == 2
    assert "--method" in capsys.readouterr().err


@pytest.mark.parametrize(("method", "given", "message"), [
    ("unstructured", ["--k", "3"], "--k applies to --method pattern only (got --method "
                                   "unstructured); leave it out"),
    ("ou-structured", ["--k", "3", "--max-patterns", "2"],
     "--k and --max-patterns apply to --method pattern only (got --method ou-structured); "
     "leave them out"),
    ("ou-structured", ["--max-patterns=4"], "--max-patterns applies to --method pattern only"),
])
def test_prune_cli_refuses_pattern_options_with_another_method(
        capsys: pytest.CaptureFixture[str], method: str, given: list[str], message: str) -> None:
    """--k and --max-patterns were checked and then ignored by the magnitude methods (a user
    asking for 3 kept weights got a plain magnitude-pruned net): refused before any work."""
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--method", method, *given])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize(("spec", "fragments"), [
    ("nope", ["unknown model 'nope' to prune", "vgg16-fmnist", "checkpoint"]),
    ("net.pt", ["cannot prune", "net.pt", "not a torch.save file"]),
])
def test_prune_cli_names_a_model_it_cannot_prune(capsys: pytest.CaptureFixture[str],
                                                 spec: str, fragments: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--model", spec])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_prune_cli_takes_a_checkpoint_whose_stem_has_a_dot(tmp_path: Path) -> None:
    """The unknown-model check resolves a spec as the checkpoint loader does (<stem>.json
    and .safetensors): 'base.v2' is a checkpoint stem, not 'base' with a suffix."""
    src = _lenet_checkpoint(tmp_path, "base.v2")
    out = tmp_path / "pruned"
    main(["prune", "--model", str(src), "--data", "fashion-mnist", "--split", "test",
          "--sparsity", "0.5", "--steps", "1", "--epochs", "0", "--final-epochs", "0",
          "--limit", "32", "--out", str(out)])
    assert read_meta(out)["pruning"]["sparsity"] == 0.5
    # --out named like one of the files it writes is its stem: net.sparsity.md wrote
    # net.sparsity.md.safetensors, .json and .sparsity.md.sparsity.md
    main(["prune", "--model", str(src), "--data", "fashion-mnist", "--split", "test",
          "--sparsity", "0.5", "--steps", "1", "--epochs", "0", "--final-epochs", "0",
          "--limit", "32", "--out", str(tmp_path / "net.sparsity.md")])
    assert sorted(p.name for p in tmp_path.glob("net*")) == [
        "net.json", "net.safetensors", "net.sparsity.md"]


# ---- pattern pruning (scheme `pattern`) --------------------------------------------------------
def test_select_patterns_takes_the_most_frequent_candidates() -> None:
    from sparsexbar.training.prune import candidate_codes, mask_codes, select_patterns

    gen = torch.Generator().manual_seed(2)
    w = torch.rand((6, 5, 3, 3), generator=gen) * 0.1
    # Force the top-2 positions: (0, 1) for 18 kernels, (4, 8) for 8, (2, 6) for 4.
    flat = w.reshape(30, 9)
    flat[:18, [0, 1]] = 1.0
    flat[18:26, [4, 8]] = 1.0
    flat[26:, [2, 6]] = 1.0
    assert candidate_codes(w, 2).reshape(-1).tolist() == [3] * 18 + [272] * 8 + [68] * 4
    assert select_patterns(w, 2, 2).tolist() == [3, 272]
    assert select_patterns(w, 2, 8).tolist() == [3, 272, 68]
    assert mask_codes(flat[:1].reshape(1, 3, 3) >= 1.0).tolist() == [3]


def test_projection_keeps_the_most_energy_and_connectivity_hits_the_target() -> None:
    from sparsexbar.training.prune import code_masks, connectivity_keep, project_kernels

    gen = torch.Generator().manual_seed(3)
    w = torch.randn((8, 6, 3, 3), generator=gen)
    patterns = torch.tensor([0b000011011, 0b110110000, 0b010111010])  # 4, 4, 5 positions
    best, energy = project_kernels(w, patterns)
    w2 = (w.reshape(8, 6, 9) ** 2).to(torch.float64)
    kept = torch.stack([(w2 * code_masks(p).to(torch.float64)).sum(dim=2) for p in patterns],
                       dim=2)
    assert torch.equal(best, kept.argmax(dim=2))
    assert torch.allclose(energy, kept.amax(dim=2))
    keep = connectivity_keep(energy, 4, 0.8)
    # kept x 4 <= 0.2 x 9 x 48 = 86.4 -> at most 21 kernels kept, exactly 21.
    assert int(keep.sum()) == 21
    assert bool(keep.any(dim=1).all())  # no output channel loses all its kernels
    strongest = energy.argmax(dim=1)
    assert bool(keep[torch.arange(8), strongest].all())
    dropped = energy[~keep]
    others = energy[keep & ~torch.nn.functional.one_hot(strongest, 6).bool()]
    assert float(dropped.max()) <= float(others.min())
    # Gradual: kernels pruned before stay pruned.
    assert bool((connectivity_keep(energy, 4, 0.9, keep) <= keep).all())


def test_pattern_prune_with_fine_tuning_keeps_patterns_and_leaves_linear_dense() -> None:
    from sparsexbar.training.prune import (
        code_masks,
        mask_codes,
        pattern_prune_model,
        pattern_summary,
        pattern_table,
    )

    torch.manual_seed(0)
    net = nets.tiny_cnn(size=8, width=6)
    fc_before = net.fc.weight.detach().clone()
    out = pattern_prune_model(net, _tiny_ds(), k=3, max_patterns=2, sparsity=0.8, steps=2,
                              epochs=1, lr=0.01)
    assert len(out["history"]) == 2 and out["schedule"][-1] == pytest.approx(0.8)
    for name, w in (("conv1", net.conv1.weight), ("conv2", net.conv2.weight)):
        codes = mask_codes(w.detach() != 0)
        allowed = set(out["patterns"][name].tolist()) | {0}
        assert set(codes.reshape(-1).tolist()) <= allowed  # fine-tuning regrew nothing
        assert int(code_masks(codes).sum(dim=2).max()) <= 3
        assert len(out["patterns"][name]) <= 2
    table = {r["layer"]: r for r in pattern_table(net)}
    assert table["conv2"]["sparsity"] >= 0.8 and table["conv2"]["patterns_used"] <= 2
    # conv1 has one input channel: connectivity keeps each filter's kernel (1 - 3/9 sparse).
    assert table["conv1"]["kernel_sparsity"] == 0.0
    assert table["conv1"]["sparsity"] == pytest.approx(1 - 3 / 9)
    assert not table["fc"]["pattern_pruned"] and table["fc"]["note"] == "dense: Linear"
    assert not torch.equal(net.fc.weight, fc_before)  # fine-tuned, not pruned
    summary = pattern_summary(list(table.values()))
    assert summary["patterns_total"] == sum(r["patterns_used"] for r in table.values()
                                            if r["pattern_pruned"])
    assert summary["overall_sparsity"] < summary["pattern_layers_sparsity"]


def test_pattern_table_counts_patterns_not_masks_of_an_already_sparse_net() -> None:
    """Pattern pruning without fine-tuning of a net whose weights are already half zero: each
    kept kernel's mask is its pattern less the zeros it had. The table reported the distinct
    masks as 'patterns' (here 12-15 against --max-patterns 3); it reports the patterns the
    pattern scheme stores (maximal masks, as `infer_patterns` finds them) and the masks
    beside them."""
    from sparsexbar.schemes.pattern import infer_patterns
    from sparsexbar.training.prune import (
        compute_masks,
        mask_applier,
        mask_codes,
        pattern_library,
        pattern_prune_model,
        pattern_table,
        pattern_table_markdown,
    )

    torch.manual_seed(0)
    net = nets.tiny_cnn(size=8, width=12)
    mask_applier(net, compute_masks(net, 0.5, "unstructured", preset("isaac")))(net)
    out = pattern_prune_model(net, None, k=4, max_patterns=3, sparsity=0.3, steps=1, epochs=0)
    table = {r["layer"]: r for r in pattern_table(net)}
    row = table["conv2"]
    codes = mask_codes(net.conv2.weight.detach() != 0)
    assert row["distinct_masks"] == int(codes[codes != 0].unique().numel()) > 3
    assert row["patterns_used"] <= 3
    assert set(row["patterns_used_codes"]) <= set(out["patterns"]["conv2"].tolist())
    patterns, kernel_pattern = pattern_library(codes)
    assert patterns.tolist() == row["patterns_used_codes"]
    inferred, inferred_kernels = infer_patterns(net.conv2.weight.detach() * 7)
    assert torch.equal(inferred, patterns) and torch.equal(inferred_kernels, kernel_pattern)
    kept = codes != 0  # every kept kernel lies inside its pattern
    assert torch.equal(codes[kept] & patterns[kernel_pattern[kept]], codes[kept])
    line = next(x for x in pattern_table_markdown(list(table.values())).splitlines()
                if x.startswith("| conv2 "))
    assert f"| {row['patterns_used']} | {row['distinct_masks']} |" in line


def test_prune_cli_pattern_writes_checkpoint_and_table(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    from sparsexbar.training.prune import mask_codes
    from sparsexbar.training.zoo import build_model

    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": 10, "input_size": 28, "width": 0.0625}
    src = tmp_path / "base"
    save_checkpoint(src, build_model("vgg8", **kwargs),
                    {"architecture": "vgg8", "arch_kwargs": kwargs, "dataset": "fashion-mnist"})
    out = tmp_path / "pat"
    main(["prune", "--model", str(src), "--data", "fashion-mnist", "--split", "test",
          "--method", "pattern", "--k", "4", "--max-patterns", "3", "--sparsity", "0.8",
          "--steps", "1", "--epochs", "1", "--limit", "64", "--out", str(out)])
    text = capsys.readouterr().out
    assert "| pattern-pruned layers |" in text and "dense: Linear" in text
    model, meta = load_checkpoint(out)
    pruning = meta["pruning"]
    assert (pruning["method"], pruning["k"], pruning["max_patterns"]) == ("pattern", 4, 3)
    assert pruning["parent"] == str(src) and "projected gradient" in pruning["fine_tuning"]
    assert pruning["summary"]["pattern_layers_sparsity"] >= 0.79
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            codes = set(mask_codes(mod.weight != 0).reshape(-1).tolist()) - {0}
            assert codes <= set(pruning["patterns"][name])
    assert (tmp_path / "pat.sparsity.md").read_text().startswith("| layer |")


def test_prune_cli_pattern_without_3x3_conv_exits_2(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from sparsexbar.training.zoo import build_model

    kwargs = {"in_channels": 1, "num_classes": 10, "input_size": 28, "width": 0.5}
    src = tmp_path / "lenet"
    save_checkpoint(src, build_model("lenet5", **kwargs),
                    {"architecture": "lenet5", "arch_kwargs": kwargs, "dataset": "fashion-mnist"})
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--model", str(src), "--method", "pattern", "--split", "test",
              "--limit", "8", "--epochs", "0", "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no 3x3 Conv2d" in err


def test_prune_maps_an_image_folders_labels_by_class_name(tmp_path: Path) -> None:
    """An image folder's labels are its sorted folder indices (Bag=0, Sneaker=1, Trouser=2):
    prune maps them to the model's classes by name, as `run` does, so its top-1 before
    pruning is the model's on the true labels (on the folder indices it was near 0)."""
    from sparsexbar.simulate import dataset_for_model
    from sparsexbar.training.data import FASHION_MNIST_CLASSES
    from sparsexbar.training.prune import prune_command
    from sparsexbar.training.shipped import load_shipped
    from sparsexbar.training.train import evaluate
    from tests.test_robustness import _write_folder

    images, labels = _write_folder(tmp_path / "folder", 60,
                                   {1: "Trouser", 7: "Sneaker", 8: "Bag"})
    res = prune_command("default", str(tmp_path / "folder"), preset("isaac"), 0.5,
                        "unstructured", 1, 0, tmp_path / "pruned", limit=12, progress=False,
                        tune_split="test", prepare=dataset_for_model)
    net, _ = load_shipped("default")
    expected = evaluate(net, ImageDataset(images[:12], labels[:12],
                                          list(FASHION_MNIST_CLASSES), "folder"))
    assert res["top1_before"] == expected and expected > 0.8
    assert res["test_images"] == 12


def test_prune_refuses_an_image_folder_whose_classes_the_model_lacks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_robustness import _write_folder

    _write_folder(tmp_path / "folder", 20, {1: "Trouser", 7: "sneakers!"})
    code, _, err = cli(capsys, "prune", "--data", str(tmp_path / "folder"), "--split", "test",
                       "--steps", "1", "--epochs", "0", "--limit", "8",
                       "--out", str(tmp_path / "pruned"))
    assert_one_line_error(code, err, "'sneakers!'", "not one of the model's classes")
    assert not (tmp_path / "pruned.safetensors").exists()
