"""Data files that are unusual or corrupt, written here: 16-bit images (read exactly as their
8-bit originals), float and 32-bit images, images over PIL's decompression-bomb limit, IDX
headers with a 0 or absurd dimension, an explicit root without the data set's files. Each is
read exactly or refused with one line naming the file; no Python warning escapes."""

from __future__ import annotations

import gzip
import io
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsexbar.core.errors import SparsexbarNote, SparsexbarWarning
from sparsexbar.training import data as D
from sparsexbar.training.data import DataError, load_dataset, load_idx
from tests.test_cli_errors import assert_one_line_error, cli

Image = pytest.importorskip("PIL.Image")

TINY = "tests.nets:tiny_fmnist_net"


def _originals() -> dict[str, list[np.ndarray]]:
    """Two classes of two 28x28 uint8 images each, spanning 0..255 (both ends included)."""
    rng = np.random.default_rng(7)
    out: dict[str, list[np.ndarray]] = {}
    for cls in ("bag", "coat"):
        imgs = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(2)]
        imgs[0][0, 0], imgs[0][0, 1] = 0, 255
        out[cls] = imgs
    return out


def _tree(root: Path, images: dict[str, list[np.ndarray]], save: Callable[[np.ndarray, Path],
          None], suffix: str = ".png") -> Path:
    for cls, imgs in images.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i, a in enumerate(imgs):
            save(a, root / cls / f"{i}{suffix}")
    return root


def _no_warnings(load: Callable[[], D.ImageDataset]) -> D.ImageDataset:
    """``load()``, checking that no warning escapes it, whether it returns or raises."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return load()
        finally:
            assert [str(w.message) for w in caught] == []


# ---- 1. 16-bit, float and 32-bit images ------------------------------------------------------
SIXTEEN_BIT = {
    # name: (suffix, writer of the 16-bit copy of an 8-bit image a, the mode PIL reads back)
    "png I;16": (".png", lambda a, p: Image.fromarray(a.astype(np.uint16) * 257).save(p),
                 "I;16"),
    "tiff I;16B": (".tif", lambda a, p: Image.fromarray(
        (a.astype(np.uint16) * 257).astype(">u2")).save(p), "I;16B"),
    "tiff I (int32, 16-bit values)": (".tif", lambda a, p: Image.fromarray(
        a.astype(np.int32) * 257).save(p), "I"),
}


@pytest.mark.parametrize("kind", list(SIXTEEN_BIT))
def test_16bit_images_read_exactly_as_their_8bit_originals(tmp_path: Path, kind: str) -> None:
    suffix, save16, mode = SIXTEEN_BIT[kind]
    originals = _originals()
    eight = _tree(tmp_path / "eight", originals, lambda a, p: Image.fromarray(a).save(p))
    sixteen = _tree(tmp_path / "sixteen", originals, save16, suffix)
    with Image.open(next((sixteen / "bag").iterdir())) as im:
        assert im.mode == mode  # what the test is about
    for kwargs in ({}, {"size": 20}, {"size": 28, "channels": 3}):
        ds8 = _no_warnings(lambda kw=kwargs: load_dataset(str(eight), "test", **kw))
        ds16 = _no_warnings(lambda kw=kwargs: load_dataset(str(sixteen), "test", **kw))
        assert ds16.images.dtype == torch.uint8
        assert ds16.images.shape == ds8.images.shape
        assert torch.equal(ds16.images, ds8.images), kwargs
        assert torch.equal(ds16.labels, ds8.labels) and ds16.classes == ds8.classes
    # 8-bit (v >> 8 keeps the top byte): 0 -> 0, 65535 -> 255, 257 v -> v.
    assert ds16.images[0, 0, 0, 0] == 0 and ds16.images[0, 0, 0, 1] == 255


def test_16bit_image_of_8bit_values_warns_that_it_reads_black(tmp_path: Path) -> None:
    # uint16 array of 8-bit values (a.astype(np.uint16), no x 257): scaled as 16-bit, black.
    root = _tree(tmp_path / "imgs", _originals(),
                 lambda a, p: Image.fromarray(a.astype(np.uint16)).save(p))
    with pytest.warns(SparsexbarWarning, match=r"4 16-bit image\(s\) .*0\.png.*8-bit") as rec:
        ds = load_dataset(str(root), "test")
    assert len(rec) == 1
    assert int(ds.images.max()) == 0


@pytest.mark.parametrize(("what", "pixels", "fragments"), [
    ("float", np.array([[0.0, 0.5], [np.nan, 1.0]], dtype=np.float32), ["mode F", "8-bit"]),
    ("float 0..255", np.array([[0.0, 128.0], [255.0, 3.0]], dtype=np.float32),
     ["mode F", "8-bit"]),
    ("int32 beyond 16 bits", np.array([[0, 70000], [5, 3]], dtype=np.int32),
     ["mode I", "0..70000", "16 bits"]),
    ("negative int32", np.array([[0, -5], [5, 3]], dtype=np.int32), ["mode I", "-5..5"]),
])
def test_float_and_32bit_images_are_refused(tmp_path: Path, what: str, pixels: np.ndarray,
                                            fragments: list[str]) -> None:
    root = tmp_path / "imgs"
    _tree(root, {"bag": [np.zeros((2, 2), np.uint8)]}, lambda a, p: Image.fromarray(a).save(p))
    bad = root / "coat" / "odd.tif"
    bad.parent.mkdir()
    Image.fromarray(pixels).save(bad)
    for kwargs in ({}, {"size": 2, "channels": 1}, {"size": 4, "channels": 3}):
        with pytest.raises(DataError) as err:
            _no_warnings(lambda kw=kwargs: load_dataset(str(root), "test", **kw))
        msg = str(err.value)
        assert "\n" not in msg and str(bad) in msg, msg
        for frag in fragments:
            assert frag in msg, (frag, msg)


# ---- 2. images over PIL's decompression-bomb limit ---------------------------------------------
def _patched_png(path: Path, side: int) -> Path:
    """An 8x8 PNG whose header claims side x side (IHDR CRC recomputed)."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "PNG")
    d = bytearray(buf.getvalue())
    d[16:24] = struct.pack(">II", side, side)
    d[29:33] = struct.pack(">I", zlib.crc32(bytes(d[12:29])))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(d))
    return path


@pytest.mark.parametrize("side", [20000, 10000])
def test_huge_image_header_is_one_error_and_no_pil_warning(tmp_path: Path, side: int) -> None:
    root = tmp_path / "imgs"
    _tree(root, {"bag": [np.zeros((8, 8), np.uint8)]}, lambda a, p: Image.fromarray(a).save(p))
    bomb = _patched_png(root / "coat" / "bomb.png", side)
    for kwargs in ({}, {"size": 8, "channels": 1}):
        with pytest.raises(DataError, match="cannot read image") as err:
            _no_warnings(lambda kw=kwargs: load_dataset(str(root), "test", **kw))
        assert str(bomb) in str(err.value) and "\n" not in str(err.value)
        if side == 20000:
            assert "decompression bomb" in str(err.value)


def test_image_over_pils_limit_is_read_with_a_note(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # PIL warns over MAX_IMAGE_PIXELS and refuses over twice that; a limit of 50 pixels makes
    # an 8x8 image (64) "big" and a 12x12 one (144) a bomb.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8)
    root = _tree(tmp_path / "imgs", {"bag": [pixels], "coat": [pixels]},
                 lambda a, p: Image.fromarray(a).save(p))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(root), "test")
    assert [w.category for w in caught] == [SparsexbarNote], [str(w.message) for w in caught]
    assert "2 image(s)" in str(caught[0].message) and "0.png" in str(caught[0].message)
    assert torch.equal(ds.images[0, 0], torch.from_numpy(pixels))
    big = root / "coat" / "big.png"
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(big)
    with pytest.raises(DataError, match="cannot read image .*big.png.*decompression bomb"):
        _no_warnings(lambda: load_dataset(str(root), "test"))


def test_cli_huge_image_is_one_line_exit_2(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _tree(root, {"bag": [np.zeros((28, 28), np.uint8)]}, lambda a, p: Image.fromarray(a).save(p))
    for side in (10000, 20000):
        bomb = _patched_png(root / "coat" / "bomb.png", side)
        code, _, err = cli(capsys, "run", "--model", TINY, "--data", str(root), "--out",
                           str(tmp_path / "out"))
        assert_one_line_error(code, err, str(bomb))
    assert not (tmp_path / "out").exists()


# ---- 3. IDX headers with a 0 or absurd dimension -----------------------------------------------
def _write_idx_pair(folder: Path, dims: tuple[int, ...], labels: int, gz: bool) -> Path:
    """t10k image file with header ``dims`` and no payload (all a 0 dimension needs), and a
    valid label file of ``labels`` labels; returns the image file."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    img = struct.pack(">I3I", 0x803, *dims)
    lab = struct.pack(">II", 0x801, labels) + bytes(labels)
    for name, raw in ((f"t10k-images-idx3-ubyte{suffix}", img),
                      (f"t10k-labels-idx1-ubyte{suffix}", lab)):
        (folder / name).write_bytes(gzip.compress(raw) if gz else raw)
    return folder / f"t10k-images-idx3-ubyte{suffix}"


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("limit", [None, 1])
@pytest.mark.parametrize("dims", [(2, 0, 28), (2, 28, 0), (0, 28, 28)])
def test_idx_with_a_zero_dimension_is_refused(tmp_path: Path, dims: tuple[int, int, int],
                                              gz: bool, limit: int | None) -> None:
    img = _write_idx_pair(tmp_path / "fm", dims, dims[0], gz)
    with pytest.raises(DataError, match="corrupt IDX file") as err:
        load_idx(img, img.with_name(img.name.replace("images-idx3", "labels-idx1")), limit)
    assert str(img) in str(err.value) and str(dims) in str(err.value)
    with pytest.raises(DataError, match="corrupt IDX file") as err:
        load_dataset("fashion-mnist", "test", root=tmp_path / "fm", limit=limit)
    assert str(img) in str(err.value) and str(dims) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("limit", [None, 1])
@pytest.mark.parametrize("dims", [
    (2**16, 2**24, 2**24),  # 2^64 pixels: a product that wraps to 0 in int64
    (2, 2**32 - 1, 2**32 - 1),  # "-1" read as unsigned
    (2**32 - 1, 2**32 - 1, 2**32 - 1),
])
def test_idx_with_absurd_dimensions_is_refused(tmp_path: Path, dims: tuple[int, int, int],
                                               gz: bool, limit: int | None) -> None:
    img = _write_idx_pair(tmp_path / "fm", dims, 2, gz)
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", "test", root=tmp_path / "fm", limit=limit)
    msg = str(err.value)
    assert str(img) in msg and str(dims) in msg and "\n" not in msg, msg


# ---- 4. an explicit root without the data set's files -----------------------------------------
def test_explicit_root_without_the_files_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for split in ("test", "train"):
        with pytest.raises(DataError, match=f"Fashion-MNIST {split} split not found") as err:
            load_dataset("fashion-mnist", split, root=empty, limit=2)
        assert str(empty) in str(err.value)
        assert f"{'t10k' if split == 'test' else 'train'}-images-idx3-ubyte" in str(err.value)
    # Only the images file: still not the split (the labels are looked for too).
    half = tmp_path / "half"
    _write_idx_pair(half, (1, 2, 2), 1, gz=True)
    (half / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as err:
        D.fashion_mnist("test", root=half)
    assert str(half) in str(err.value)
    # Without a root the search order stands: the embedded test split.
    assert len(load_dataset("fashion-mnist", "test", limit=3)) == 3


def test_cli_root_without_the_files_is_one_line_exit_2(capsys: pytest.CaptureFixture[str],
                                                       tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "run", "--model", TINY, "--data", "fashion-mnist", "--root",
                       str(empty), "--limit", "2", "--out", str(tmp_path / "out"))
    assert_one_line_error(code, err, str(empty), "t10k-images-idx3-ubyte")
    assert not (tmp_path / "out").exists()
