"""Data loaders on small files written here: IDX (raw, gzip, corrupt), CIFAR-10/100 pickles,
image folders; the ImageDataset API; the embedded Fashion-MNIST test split."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from sparsexbar.core.errors import SparsexbarNote
from sparsexbar.training import data as D
from sparsexbar.training.data import DataError, ImageDataset, load_dataset, load_idx


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def _write_idx(folder: Path, images: np.ndarray, labels: np.ndarray, gz: bool,
               prefix: str = "t10k") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    img = folder / f"{prefix}-images-idx3-ubyte{suffix}"
    lab = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
    for path, payload in ((img, _idx_bytes(images, 0x803)), (lab, _idx_bytes(labels, 0x801))):
        path.write_bytes(gzip.compress(payload) if gz else payload)
    return img, lab


@pytest.fixture
def small_idx() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (7, 5, 4), dtype=np.uint8),
            rng.integers(0, 10, 7, dtype=np.uint8))


@pytest.mark.parametrize("gz", [False, True])
def test_load_idx_roundtrip(tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray],
                            gz: bool) -> None:
    images, labels = small_idx
    img, lab = _write_idx(tmp_path, images, labels, gz)
    x, y = load_idx(img, lab)
    assert x.dtype == torch.uint8 and x.shape == (7, 1, 5, 4)
    assert y.dtype == torch.int64 and y.shape == (7,)
    assert np.array_equal(x[:, 0].numpy(), images)
    assert y.tolist() == labels.astype(int).tolist()


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_load_idx_limit_reads_the_first_images(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray], gz: bool, limit: int) -> None:
    images, labels = small_idx
    img, lab = _write_idx(tmp_path, images, labels, gz)
    x, y = load_idx(img, lab, limit=limit)
    assert x.shape == (min(limit, 7), 1, 5, 4) and y.shape == (min(limit, 7),)
    assert np.array_equal(x[:, 0].numpy(), images[:limit])
    assert y.tolist() == labels[:limit].astype(int).tolist()


def test_load_idx_limit_leaves_the_rest_of_a_gzip_file_unread(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray]) -> None:
    # Damage inside the compressed stream past what the first image needs: the whole read
    # names it, a read of the first image never reaches it (the trailer's length is intact).
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (400, 28, 28), dtype=np.uint8)  # incompressible
    labels = rng.integers(0, 10, 400, dtype=np.uint8)
    img, lab = _write_idx(tmp_path, images, labels, gz=True)
    raw = bytearray(img.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)
    img.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt gzip"):
        load_idx(img, lab)
    x, _ = load_idx(img, lab, limit=1)
    assert np.array_equal(x[0, 0].numpy(), images[0])


@pytest.mark.parametrize("limit", [None, 2])
def test_load_idx_count_mismatch_with_and_without_limit(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray], limit: int | None) -> None:
    images, labels = small_idx
    img, lab = _write_idx(tmp_path, images, labels, gz=True)
    lab.write_bytes(gzip.compress(_idx_bytes(labels[:5], 0x801)))
    with pytest.raises(DataError, match="7 images but .* 5 labels"):
        load_idx(img, lab, limit=limit)


def test_load_dataset_limit_equals_the_subset_of_the_whole_split() -> None:
    first = load_dataset("fashion-mnist", "test", limit=64)
    whole = load_dataset("fashion-mnist", "test").subset(0, 64)
    assert torch.equal(first.images, whole.images) and torch.equal(first.labels, whole.labels)
    assert first.classes == whole.classes and first.name == whole.name


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("delta", [-1, +3])
@pytest.mark.parametrize("limit", [None, 2])
def test_load_idx_truncated_or_oversize_names_file(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray], gz: bool, delta: int,
        limit: int | None) -> None:
    images, labels = small_idx
    img, lab = _write_idx(tmp_path, images, labels, gz=False)
    payload = img.read_bytes()
    payload = payload[:delta] if delta < 0 else payload + b"\0" * delta
    img.write_bytes(gzip.compress(payload) if gz else payload)
    word = "truncated" if delta < 0 else "oversize"
    with pytest.raises(DataError, match=word) as err:
        load_idx(img, lab, limit=limit)
    assert str(img) in str(err.value)


def test_load_idx_bad_magic_count_mismatch_and_corrupt_gzip(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = small_idx
    img, lab = _write_idx(tmp_path, images, labels, gz=False)
    with pytest.raises(DataError, match="bad IDX magic 0x00000801") as err:
        load_idx(lab, lab)  # a label file where images are expected
    assert str(lab) in str(err.value)
    lab.write_bytes(_idx_bytes(labels[:5], 0x801))
    with pytest.raises(DataError, match="7 images but .* 5 labels"):
        load_idx(img, lab)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(_idx_bytes(images, 0x803))[:30])
    for limit in (None, 2):
        with pytest.raises(DataError, match="corrupt gzip") as err:
            load_idx(bad, lab, limit=limit)
        assert str(bad) in str(err.value)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\0\0\x08")
    with pytest.raises(DataError, match="truncated IDX file .*tiny"):
        load_idx(tiny, lab)
    with pytest.raises(DataError, match="cannot read .*missing"):
        load_idx(tmp_path / "missing", lab)


def test_fashion_mnist_root_first_then_embedded(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = small_idx
    _write_idx(tmp_path / "fm", images, labels, gz=True, prefix="t10k")
    ds = D.fashion_mnist("test", root=tmp_path / "fm")
    assert len(ds) == 7 and ds.name == "fashion-mnist" and ds.num_classes == 10
    # The search order lists the root, then the embedded copy (test split only); but
    # `fashion_mnist` refuses an explicit root without the split (tests/test_data_files.py).
    assert D.fashion_mnist_dirs("test", tmp_path)[:2] == [tmp_path,
                                                          D.embedded_fashion_mnist_dir()]
    with pytest.raises(DataError, match="not found in root"):
        D.fashion_mnist("test", root=tmp_path)
    assert D.embedded_fashion_mnist_dir() not in D.fashion_mnist_dirs("train")
    with pytest.raises(DataError, match="unknown split"):
        D.fashion_mnist("val")


def test_embedded_fashion_mnist_test_split() -> None:
    folder = D.embedded_fashion_mnist_dir()
    for name in D.FASHION_MNIST_FILES["test"]:
        assert D.idx_content_sha256(folder / name) == D.FASHION_MNIST_SHA256[name]
    ds = load_dataset("fashion-mnist", "test")
    assert ds.images.shape == (10000, 1, 28, 28) and ds.images.dtype == torch.uint8
    # Balanced: 1000 test images per class; first labels from the published file.
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert ds.labels[:5].tolist() == [9, 2, 1, 1, 6]
    assert ds.classes[9] == "Ankle boot"


def test_missing_fashion_mnist_train_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(D, "SYSTEM_FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DataError, match="Fashion-MNIST train split not found"):
        D.fashion_mnist("train", root=tmp_path)


def test_download_offline_raises_data_error(tmp_path: Path, monkeypatch) -> None:
    import urllib.error
    import urllib.request

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="offline"):
        D.download_fashion_mnist(tmp_path, "test")
    with pytest.raises(DataError, match="offline"):
        D.download_cifar("cifar10", tmp_path)
    assert not any(tmp_path.rglob("*.part"))


# ---- CIFAR ------------------------------------------------------------------------------------
def _cifar_batch(n: int, seed: int, label_key: str, num_classes: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"x", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key.encode(): rng.integers(0, num_classes, n).tolist(),
            b"filenames": [b"f"] * n}


def _dump(obj: object, path: Path) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _write_cifar10(parent: Path) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        _dump(_cifar_batch(3, i, "labels", 10), folder / f"data_batch_{i}")
    _dump(_cifar_batch(4, 9, "labels", 10), folder / "test_batch")
    _dump({b"label_names": [c.encode() for c in D.CIFAR10_CLASSES]}, folder / "batches.meta")
    return folder


def test_cifar10_from_folder_or_parent(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    train = load_dataset("cifar10", "train", root=tmp_path)
    test = load_dataset("cifar10", "test", root=folder)
    assert train.images.shape == (15, 3, 32, 32) and test.images.shape == (4, 3, 32, 32)
    ref = _cifar_batch(3, 2, "labels", 10)  # data_batch_2 is images 3..5
    assert torch.equal(train.images[3:6].reshape(3, -1), torch.from_numpy(ref[b"data"]))
    assert train.labels[3:6].tolist() == ref[b"labels"]
    # Channel-major layout: the first 1024 values are the red plane, row by row.
    assert train.images[3, 0, 0, 1] == int(ref[b"data"][0, 1])
    assert train.images[3, 1, 0, 0] == int(ref[b"data"][0, 1024])
    assert test.classes == D.CIFAR10_CLASSES and test.name == "cifar10"
    assert load_dataset(str(folder), "test").labels.tolist() == test.labels.tolist()


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    _dump(_cifar_batch(6, 1, "fine_labels", 100), folder / "train")
    _dump(_cifar_batch(2, 2, "fine_labels", 100), folder / "test")
    _dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}, folder / "meta")
    ds = load_dataset("cifar100", "train", root=tmp_path)
    assert len(ds) == 6 and ds.num_classes == 100 and ds.classes[42] == "c42"
    assert ds.labels.tolist() == _cifar_batch(6, 1, "fine_labels", 100)[b"fine_labels"]


def test_cifar_corrupt_files_name_the_file(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    test_batch = folder / "test_batch"
    batch = _cifar_batch(4, 9, "labels", 10)
    del batch[b"labels"]
    _dump(batch, test_batch)
    with pytest.raises(DataError, match="lacks key 'labels'") as err:
        load_dataset("cifar10", "test", root=folder)
    assert str(test_batch) in str(err.value)
    batch = _cifar_batch(4, 9, "labels", 10)
    batch[b"data"] = batch[b"data"][:, :100]
    _dump(batch, test_batch)
    with pytest.raises(DataError, match=r"uint8 \(N, 3072\)"):
        load_dataset("cifar10", "test", root=folder)
    test_batch.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="cannot unpickle") as err:
        load_dataset("cifar10", "test", root=folder)
    assert str(test_batch) in str(err.value)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", "train", root=folder)
    with pytest.raises(DataError, match="needs root"):
        load_dataset("cifar100", "test")


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_cifar_unpickler_refuses_arbitrary_globals(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    _dump({b"data": _Evil(), b"labels": [0]}, folder / "test_batch")
    with pytest.raises(DataError, match="forbidden global .*print"):
        load_dataset("cifar10", "test", root=folder)


# ---- image folders and ImageDataset -------------------------------------------------------------
def test_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "imgs"
    colors = {"cat": (255, 0, 0), "ant": (0, 0, 255)}
    for cls, rgb in colors.items():
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10 + i, 12), rgb).save(root / cls / f"{i}.png")
    (root / "ant" / "notes.txt").write_text("ignored")
    ds = load_dataset(str(root), "test", size=8)
    assert ds.classes == ["ant", "cat"] and ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.images.shape == (4, 3, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.images[0, :, 4, 4].tolist() == [0, 0, 255]
    assert ds.images[3, :, 4, 4].tolist() == [255, 0, 0]
    gray = D.image_folder(root, size=8, channels=1)
    assert gray.images.shape == (4, 1, 8, 8)
    assert gray.images[3, 0, 0, 0] == 76  # ITU-R 601 luma of pure red: 0.299 * 255
    (root / "cat" / "broken.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        D.image_folder(root)


def test_load_dataset_unknown_name_lists_known() -> None:
    with pytest.raises(DataError, match="fashion-mnist, cifar10, cifar100"):
        load_dataset("imagenet", "test")


def test_image_dataset_api() -> None:
    images = torch.arange(5 * 2 * 2, dtype=torch.uint8).reshape(5, 1, 2, 2) * 12
    ds = ImageDataset(images, torch.tensor([0, 1, 2, 0, 1]), ["a", "b", "c"], "toy")
    assert len(ds) == 5 and ds.shape == (1, 2, 2)
    f = ds.to_float()
    assert f.dtype == torch.float32 and float(f.max()) == pytest.approx(228 / 255)
    sub = ds.subset(1, 3)
    assert len(sub) == 2 and sub.labels.tolist() == [1, 2]
    batches = list(ds.loader(2))
    assert [len(y) for _, y in batches] == [2, 2, 1]
    assert torch.equal(torch.cat([x for x, _ in batches]), f)
    a = torch.cat([y for _, y in ds.loader(2, shuffle=True, seed=3)])
    b = torch.cat([y for _, y in ds.loader(2, shuffle=True, seed=3)])
    assert torch.equal(a, b) and sorted(a.tolist()) == sorted(ds.labels.tolist())
    with pytest.raises(DataError, match="uint8"):
        ImageDataset(images.float(), ds.labels, ds.classes, "toy")
    with pytest.raises(DataError, match="5 images"):
        ImageDataset(images, ds.labels[:4], ds.classes, "toy")


def test_checksums_are_sha256_hex() -> None:
    assert set(D.FASHION_MNIST_SHA256) == {n for p in D.FASHION_MNIST_FILES.values() for n in p}
    for digest in D.FASHION_MNIST_SHA256.values():
        assert len(digest) == 64 and int(digest, 16) >= 0
    assert hashlib.md5(b"").hexdigest() != D.CIFAR_ARCHIVES["cifar10"][1]


# ---- what the loaders refuse, and how they say it ------------------------------------------------
@pytest.mark.parametrize("split", ["test", "train"])
def test_fashion_mnist_labels_beyond_its_classes_are_refused_naming_the_file(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray], split: str) -> None:
    images, labels = small_idx
    labels = labels.copy()
    labels[2] = 200
    _, lab = _write_idx(tmp_path, images, labels, gz=False,
                        prefix="t10k" if split == "test" else "train")
    with pytest.raises(DataError, match=r"labels outside \[0, 10\) .*found 200") as err:
        load_dataset("fashion-mnist", split, root=tmp_path)
    assert str(lab) in str(err.value)


def test_both_gzipped_and_raw_idx_files_get_a_note(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = small_idx
    _write_idx(tmp_path, images, labels, gz=True)
    _write_idx(tmp_path, images[::-1].copy(), labels, gz=False)
    with pytest.warns(SparsexbarNote,
                      match="both gzipped and raw: reading t10k-images-idx3-ubyte.gz"):
        ds = load_dataset("fashion-mnist", "test", root=tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images))


def test_an_explicit_cifar_root_is_never_replaced_by_download_dir(tmp_path: Path) -> None:
    good = _write_cifar10(tmp_path / "good")
    bad = _write_cifar10(tmp_path / "bad")
    (bad / "test_batch").write_bytes(b"truncated")
    with pytest.raises(DataError, match="cannot unpickle .*bad"):
        load_dataset("cifar10", "test", root=bad, download_dir=good)
    assert len(load_dataset("cifar10", "test", download_dir=good)) == 4


def test_cifar_binary_version_and_idx_folders_are_named(
        tmp_path: Path, small_idx: tuple[np.ndarray, np.ndarray]) -> None:
    binary = tmp_path / "cb" / "cifar-10-batches-bin"
    binary.mkdir(parents=True)
    (binary / "test_batch.bin").write_bytes(bytes(3073))
    for data, root in (("cifar10", tmp_path / "cb"), (str(tmp_path / "cb"), None),
                       (str(binary), None)):
        with pytest.raises(DataError, match=r"binary version \(test_batch.bin\), which is not "
                                            r"supported: use the python version"):
            load_dataset(data, "test", root=root)
    _write_idx(tmp_path / "idx", *small_idx, gz=True)
    with pytest.raises(DataError, match=r"holds IDX files.*--data fashion-mnist --root "):
        load_dataset(str(tmp_path / "idx"), "test")


def test_an_empty_cifar_batch_has_no_images(tmp_path: Path) -> None:
    folder = _write_cifar10(tmp_path)
    _dump({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, folder / "test_batch")
    with pytest.raises(DataError, match="test_batch holds no images"):
        load_dataset("cifar10", "test", root=folder)
