"""Data sets as uint8 image tensors: IDX (Fashion-MNIST), CIFAR-10/100 pickles, image folders.

Every loader returns an `ImageDataset` holding uint8 images (N, C, H, W) and int64 labels (N,).
The zoo's models take float images in [0, 1] (`ImageDataset.to_float`), never normalized; what
another model takes (scale, normalization, size, channels) is its `training.inputs.InputSpec`.

Nothing here downloads implicitly: the ``download_*`` functions are the only code that touches
the network, and they are called only when the user asks for them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..core.errors import DataError, note, warn
from .assets import ASSETS_DIR

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]

# Fashion-MNIST files (Xiao, Rasul & Vollgraf 2017), split -> (images, labels).
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# SHA-256 of the four files' *uncompressed* IDX bytes, computed from the Debian package
# dataset-fashion-mnist (/usr/share/datasets/fashion-mnist). The content is hashed, not the
# gzip container: Debian's .gz files are recompressed and differ byte-wise from upstream's.
FASHION_MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz":
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz":
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# Debian package dataset-fashion-mnist installs the four files here.
SYSTEM_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# CIFAR "python version" archives (Krizhevsky 2009), MD5 as published on the CIFAR page.
CIFAR_ARCHIVES: dict[str, tuple[str, str, str]] = {
    # name: (url, md5, extracted folder)
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                 "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python"),
}

KNOWN_DATASETS = ("fashion-mnist", "cifar10", "cifar100")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dims
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dim


def embedded_fashion_mnist_dir() -> Path:
    """Folder of the Fashion-MNIST test split shipped inside the package."""
    return ASSETS_DIR / "fashion-mnist"


# ---- common representation -------------------------------------------------------------------
@dataclass
class ImageDataset:
    """Images uint8 (N, C, H, W), labels int64 (N,), class names, and a data set name.

    `from_folders`: the labels are the indices of the sorted class-folder names of an image
    folder (not labels of the data set's own), so a model's class names must map them."""

    images: Tensor
    labels: Tensor
    classes: list[str]
    name: str
    from_folders: bool = False

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(f"{self.name}: images must be uint8 (N, C, H, W), got "
                            f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dim() != 1 or len(self.labels) != len(self.images):
            raise DataError(f"{self.name}: {len(self.images)} images but labels of shape "
                            f"{tuple(self.labels.shape)}")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Per-image shape (C, H, W)."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, start: int, stop: int | None = None) -> ImageDataset:
        """Images ``start:stop`` (Python slice semantics) as a new data set sharing storage."""
        return ImageDataset(self.images[start:stop], self.labels[start:stop], self.classes,
                            self.name, self.from_folders)

    def fitted(self, channels: int, size: int, how: str = "auto") -> ImageDataset:
        """This data set with its images fitted by `fit_images` (itself when they already fit)."""
        if self.shape == (channels, size, size):
            return self
        return ImageDataset(fit_images(self.images, channels, size, how), self.labels,
                            self.classes, self.name, self.from_folders)

    def to_float(self) -> Tensor:
        """All images as float32 in [0, 1] (pixel / 255)."""
        return self.images.to(torch.float32) / 255.0

    def loader(self, batch_size: int, shuffle: bool = False,
               seed: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (float32 images in [0, 1], int64 labels) batches; shuffling uses ``seed``."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        if shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        else:
            order = torch.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            yield self.images[idx].to(torch.float32) / 255.0, self.labels[idx]


def fit_images(images: Tensor, channels: int, size: int | None, how: str = "auto") -> Tensor:
    """uint8 (or float) (N, C, H, W) images fitted to (N, ``channels``, ``size``, ``size``).

    Channels: grey -> RGB repeats the plane; RGB -> grey takes the ITU-R BT.601 luma
    (0.299 R + 0.587 G + 0.114 B, what PIL's "L" conversion uses). Size, by ``how``:
    "pad" centres the image in zeros (28x28 Fashion-MNIST -> 32x32, the usual way to give
    LeNet/VGG-style 32x32 networks MNIST-like data; needs an even, non-negative difference),
    "resize" is bilinear (antialiased when shrinking), "auto" pads when the difference is
    even and non-negative, else resizes; ``size`` None keeps the images' size. Images already
    of that shape are returned as they are. Float images are fitted the same way (padding with
    0.0) and stay float32.
    """
    if not (images.dtype == torch.uint8 or images.is_floating_point()) or images.dim() != 4:
        raise DataError(f"images must be uint8 or float (N, C, H, W), got {images.dtype} "
                        f"{tuple(images.shape)}")
    pixels = images.dtype == torch.uint8
    if channels < 1 or (size is not None and size < 1):
        raise DataError(f"cannot fit images to {channels} channels of {size}x{size}")
    if how not in ("auto", "pad", "resize"):
        raise DataError(f"image fit must be auto, pad or resize, got {how!r}")
    c, h, w = (int(d) for d in images.shape[1:])
    out = images
    if c != channels:
        if c == 1:
            out = out.expand(-1, channels, -1, -1)
        elif c == 3 and channels == 1:
            luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            out = (out.to(torch.float32) * luma).sum(dim=1, keepdim=True)
            out = out.round().clamp(0, 255).to(torch.uint8) if pixels else out
        else:
            raise DataError(f"cannot convert {c}-channel images to {channels} channels "
                            "(only grey <-> RGB)")
    if size is not None and (h, w) != (size, size):
        dh, dw = size - h, size - w
        pad_ok = dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0
        if how == "pad" and not pad_ok:
            raise DataError(f"cannot pad {h}x{w} images to {size}x{size} (needs an even, "
                            "non-negative difference); use resize (--input-fit resize)")
        if how in ("pad", "auto") and pad_ok:
            out = torch.nn.functional.pad(out, (dw // 2, dw // 2, dh // 2, dh // 2))
        else:
            shrink = size < h or size < w
            out = torch.nn.functional.interpolate(
                out.to(torch.float32), size=(size, size), mode="bilinear", align_corners=False,
                antialias=shrink)
            out = out.round().clamp(0, 255).to(torch.uint8) if pixels else out
    return out.contiguous() if pixels else out.to(torch.float32).contiguous()


def fit_description(shape: tuple[int, int, int], channels: int, size: int | None,
                    how: str = "auto") -> str:
    """What `fit_images` does to images of `shape` (C, H, W), in words ('' when nothing):
    e.g. 'grey -> RGB, 28x28 -> 32x32 (zero padding)'."""
    c, h, w = shape
    parts = []
    if c != channels:
        names = {1: "grey", 3: "RGB"}
        parts.append(f"{names.get(c, f'{c} channels')} -> {names.get(channels, channels)}")
    if size is not None and (h, w) != (size, size):
        dh, dw = size - h, size - w
        pad = how in ("auto", "pad") and dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0
        parts.append(f"{h}x{w} -> {size}x{size} ({'zero padding' if pad else 'bilinear resize'})")
    return ", ".join(parts)


# ---- IDX (MNIST / Fashion-MNIST) -------------------------------------------------------------
_GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of a gzip file


def _read_maybe_gzip(path: Path) -> bytes:
    """File bytes, gunzipped when the file starts with the gzip magic 1f 8b."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"corrupt gzip file {path}: {exc}") from None
    return raw


def _parse_idx(path: Path, magic: int, ndim: int,
               limit: int | None = None) -> tuple[np.ndarray, int]:
    """Parse an unsigned-byte IDX file with ``ndim`` dimensions into a uint8 array and the
    item count its header gives: all of it, or its first ``limit`` items where the whole
    file's size checks out without reading it (`_idx_prefix`)."""
    if limit is not None:
        prefix = _idx_prefix(path, magic, ndim, limit)
        if prefix is not None:
            return prefix
    data = _read_maybe_gzip(path)
    header = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"truncated IDX file {path}: {len(data)} bytes, header needs {header}")
    (got_magic,) = struct.unpack(">I", data[:4])
    if got_magic != magic:
        raise DataError(f"bad IDX magic 0x{got_magic:08x} in {path}, expected 0x{magic:08x}")
    if len(data) < header:
        raise DataError(f"truncated IDX file {path}: {len(data)} bytes, header needs {header}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    _check_idx_dims(path, dims)
    expected = math.prod(dims)
    payload = len(data) - header
    if payload < expected:
        raise DataError(f"truncated IDX file {path}: {payload} payload bytes, dims {dims} "
                        f"need {expected}")
    if payload > expected:
        raise DataError(f"oversize IDX file {path}: {payload} payload bytes, dims {dims} "
                        f"need {expected}")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)
    return (array if limit is None else array[:limit]), dims[0]


def _check_idx_dims(path: Path, dims: tuple[int, ...]) -> None:
    """Refuse an IDX header with a 0 dimension (no items, or images of no pixels: a corrupt
    header, not a data set). The dims are unsigned 32-bit; their product is an exact Python
    int, so an absurd combination is refused by the payload-length check, never wrapped."""
    if 0 in dims:
        raise DataError(f"corrupt IDX file {path}: dims {dims} include a 0")


def _idx_prefix(path: Path, magic: int, ndim: int,
                limit: int) -> tuple[np.ndarray, int] | None:
    """The first ``limit`` items of an IDX file and its item count, reading (and gunzipping)
    only those, when the header is valid and the whole file's length is what its dims say: a
    raw file's size, or a gzip file's ISIZE trailer (uncompressed length mod 2^32: files
    under 4 GiB only). None otherwise: the caller then reads the whole file, which names what
    is wrong. Bytes past the prefix are not decompressed, so damage there goes unseen, as it
    changes none of the images used. (64 images of the 10k test split: 0.03 -> 0.001 s.)"""
    header = 4 + 4 * ndim
    try:
        with path.open("rb") as raw:
            gz = raw.read(2) == _GZIP_MAGIC
            size = raw.seek(0, os.SEEK_END)
            if gz:
                if size < 18:  # shorter than a gzip header and trailer
                    return None
                raw.seek(size - 4)
                (length,) = struct.unpack("<I", raw.read(4))
            else:
                length = size
            raw.seek(0)
            read: Callable[[int], bytes] = gzip.GzipFile(fileobj=raw).read if gz else raw.read
            head = read(header)
            if len(head) < header or struct.unpack(">I", head[:4])[0] != magic:
                return None
            dims = struct.unpack(f">{ndim}I", head[4:])
            if 0 in dims:
                return None  # the whole read names it
            item = math.prod(dims[1:])
            whole = header + dims[0] * item
            if length != whole or (gz and whole >= 2**32):  # ISIZE is the length mod 2^32
                return None
            count = min(limit, dims[0])
            body = read(count * item)
    except (OSError, EOFError, zlib.error):
        return None  # the whole read raises the matching DataError
    if len(body) < count * item:
        return None
    return np.frombuffer(body, dtype=np.uint8).reshape(count, *dims[1:]), dims[0]


def load_idx(images_path: str | Path, labels_path: str | Path,
             limit: int | None = None) -> tuple[Tensor, Tensor]:
    """Load an IDX image file (magic 0x803) and label file (0x801), gzip or raw.

    Returns uint8 images (N, 1, H, W) and int64 labels (N,). Format: LeCun's MNIST page.
    ``limit``: the first ``limit`` images and labels only, read without decompressing the
    rest where the files' sizes check out (`_idx_prefix`).
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images, image_count = _parse_idx(images_path, _IDX_IMAGES_MAGIC, 3, limit)
    labels, label_count = _parse_idx(labels_path, _IDX_LABELS_MAGIC, 1, limit)
    if image_count != label_count:
        raise DataError(f"{images_path} has {image_count} images but {labels_path} has "
                        f"{label_count} labels")
    img = torch.from_numpy(images.copy()).unsqueeze(1)
    lab = torch.from_numpy(labels.astype(np.int64))
    return img, lab


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use 'train' or 'test'")


def fashion_mnist_dirs(split: str, root: str | Path | None = None,
                       download_dir: str | Path | None = None) -> list[Path]:
    """Folders searched for a Fashion-MNIST split, in order.

    ``root`` if given; the embedded copy (test split only); /usr/share/datasets/fashion-mnist
    (Debian package dataset-fashion-mnist); ``download_dir`` if given. (`fashion_mnist` goes
    past a ``root`` given explicitly only when it holds the split: an explicit folder without
    its files is refused, never replaced by another copy.)
    """
    _check_split(split)
    dirs: list[Path] = []
    if root is not None:
        dirs.append(Path(root))
    if split == "test":
        dirs.append(embedded_fashion_mnist_dir())
    dirs.append(SYSTEM_FASHION_MNIST_DIR)
    if download_dir is not None:
        dirs.append(Path(download_dir))
    return dirs


def _find_idx_pair(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` in ``folder``, gzip or uncompressed names."""
    img_name, lab_name = FASHION_MNIST_FILES[split]
    for suffix in (".gz", ""):
        img = folder / img_name.removesuffix(".gz")
        lab = folder / lab_name.removesuffix(".gz")
        img, lab = Path(str(img) + suffix), Path(str(lab) + suffix)
        if img.is_file() and lab.is_file():
            return img, lab
    return None


def fashion_mnist(split: str = "test", root: str | Path | None = None,
                  download_dir: str | Path | None = None,
                  limit: int | None = None) -> ImageDataset:
    """Fashion-MNIST ``split`` ('train' 60k or 'test' 10k, 28x28 gray) from local files.

    Searches `fashion_mnist_dirs` in order; never downloads (see `download_fashion_mnist`).
    A ``root`` given explicitly must hold the split's two files: otherwise DataError naming
    the folder and the files (falling back to the embedded copy would run on other data than
    the caller named). ``limit``: the split's first ``limit`` images only (see `load_idx`).
    """
    if root is not None and _find_idx_pair(Path(root), split) is None:
        img_name, lab_name = (n.removesuffix(".gz") for n in FASHION_MNIST_FILES[split])
        raise DataError(f"Fashion-MNIST {split} split not found in root {root}: it needs "
                        f"{img_name} and {lab_name} (each raw or .gz); without a root, the "
                        f"embedded test split and {SYSTEM_FASHION_MNIST_DIR} are searched")
    dirs = fashion_mnist_dirs(split, root, download_dir)
    for folder in dirs:
        pair = _find_idx_pair(folder, split)
        if pair is not None:
            if pair[0].suffix == ".gz" and pair[0].with_suffix("").is_file():
                note(f"{folder} holds {pair[0].with_suffix('').name} both gzipped and raw: "
                     f"reading {pair[0].name} and {pair[1].name}")
            images, labels = load_idx(*pair, limit=limit)
            count = len(FASHION_MNIST_CLASSES)
            if len(labels) and int(labels.max()) >= count:  # unsigned bytes: never below 0
                raise DataError(f"Fashion-MNIST labels outside [0, {count}) in {pair[1]}: "
                                f"found {int(labels.max())} (a corrupt or foreign file)")
            return ImageDataset(images, labels, list(FASHION_MNIST_CLASSES), "fashion-mnist")
    searched = ", ".join(str(d) for d in dirs)
    raise DataError(f"Fashion-MNIST {split} split not found (searched {searched}); install "
                    "Debian package dataset-fashion-mnist or call download_fashion_mnist()")


def idx_content_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of an IDX file's uncompressed bytes (gzip or raw file)."""
    return hashlib.sha256(_read_maybe_gzip(Path(path))).hexdigest()


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, timeout_s: float = 60.0) -> None:
    """Fetch ``url`` to ``dest`` atomically (temp file in the same folder, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with open(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            shutil.copyfileobj(resp, out)
        mask = os.umask(0)
        os.umask(mask)
        tmp.chmod(0o666 & ~mask)  # mkstemp creates 0600
        tmp.replace(dest)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot download {url} (offline?): {exc}") from None


def _content_ok(path: Path, sha256: str) -> bool:
    try:
        return idx_content_sha256(path) == sha256
    except DataError:
        return False


def download_fashion_mnist(download_dir: str | Path, split: str | None = None) -> Path:
    """Download Fashion-MNIST (both splits, or ``split``) into ``download_dir``.

    Each file's uncompressed content is checked against `FASHION_MNIST_SHA256`; files already
    present with the right content are kept. Raises DataError when offline. Never called
    implicitly by the loaders.
    """
    folder = Path(download_dir)
    splits = ["train", "test"] if split is None else [split]
    for s in splits:
        _check_split(s)
        for name in FASHION_MNIST_FILES[s]:
            dest = folder / name
            if dest.is_file() and _content_ok(dest, FASHION_MNIST_SHA256[name]):
                continue
            _download(FASHION_MNIST_URL + name, dest)
            digest = idx_content_sha256(dest)
            if digest != FASHION_MNIST_SHA256[name]:
                dest.unlink(missing_ok=True)
                raise DataError(f"checksum mismatch for downloaded {dest}: sha256 {digest}")
    return folder


# ---- CIFAR-10 / CIFAR-100 ("python version" pickles) -----------------------------------------
class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that only resolves the numpy globals a CIFAR batch needs (no arbitrary code)."""

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"), ("copyreg", "_reconstructor"), ("builtins", "object"),
    }

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        if (module, name) in (("__builtin__", "bytes"), ("builtins", "bytes")):
            return _empty_bytes  # how protocol 2 pickles b"" (an empty array's buffer)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _empty_bytes(*args: object) -> bytes:
    """bytes() as a CIFAR pickle may call it: with no arguments only (b"")."""
    if args:
        raise pickle.UnpicklingError("forbidden call bytes(...) with arguments")
    return b""


def _unpickle(path: Path) -> dict[bytes, object]:
    """A CIFAR batch file as a dict with bytes keys (files were written by Python 2)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        obj = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure means a corrupt or foreign file
        raise DataError(f"cannot unpickle {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} does not hold a dict (got {type(obj).__name__})")
    return {(k.encode() if isinstance(k, str) else k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and int64 labels (N,) from one CIFAR batch file."""
    batch = _unpickle(path)
    for key in (b"data", label_key):
        if key not in batch:
            raise DataError(f"{path} lacks key {key.decode()!r}")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' must be uint8 (N, 3072), got {data.dtype} "
                        f"{data.shape}")
    if labels.ndim != 1 or labels.shape[0] != data.shape[0]:
        raise DataError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if data.shape[0] == 0:
        raise DataError(f"{path} holds no images")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got {labels.dtype}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_folder(name: str, root: str | Path) -> Path:
    """The extracted CIFAR folder: ``root`` itself or ``root/<standard folder name>``."""
    folder_name = CIFAR_ARCHIVES[name][2]
    root = Path(root)
    marker = "test_batch" if name == "cifar10" else "test"
    for cand in (root, root / folder_name):
        if (cand / marker).is_file():
            return cand
    _refuse_cifar_binary(root)
    raise DataError(f"{name} not found in {root} (expected {marker} there or in "
                    f"{root / folder_name}); download_cifar() can fetch it")


# The CIFAR "binary version" (records of label bytes + 3072 pixels): folder, test file.
CIFAR_BINARY = {"cifar10": ("cifar-10-batches-bin", "test_batch.bin"),
                "cifar100": ("cifar-100-binary", "test.bin")}


def _refuse_cifar_binary(folder: Path) -> None:
    """Refuse a folder holding the CIFAR binary version (or its extracted folder), naming the
    python version that is read instead."""
    for name, (binary, marker) in CIFAR_BINARY.items():
        if (folder / marker).is_file() or (folder / binary / marker).is_file():
            archive = CIFAR_ARCHIVES[name][0].rsplit("/", 1)[1]
            raise DataError(f"{folder} holds the {name} binary version ({marker}), which is not "
                            f"supported: use the python version ({archive}, extracted to "
                            f"{CIFAR_ARCHIVES[name][2]}; download_cifar() fetches it)")


def _refuse_idx_folder(folder: Path) -> None:
    """Refuse a folder of IDX files read as an image folder, saying how to name it."""
    try:
        idx = any(p.name.endswith(("-idx3-ubyte", "-idx3-ubyte.gz")) for p in folder.iterdir())
    except OSError:
        return  # image_folder names what cannot be read
    if idx:
        raise DataError(f"{folder} holds IDX files, not an image folder: give it as the root "
                        f"of the named data set, --data fashion-mnist --root {folder} (Python: "
                        f"load_dataset('fashion-mnist', root=...))")


def _class_names(meta_path: Path, key: bytes, count: int) -> list[str]:
    if meta_path.is_file():
        meta = _unpickle(meta_path)
        names = meta.get(key)
        if isinstance(names, list) and len(names) >= count:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [str(i) for i in range(count)]


def cifar(name: str, split: str, root: str | Path) -> ImageDataset:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (fine labels) ``split`` from ``root``.

    ``root`` is the extracted folder (cifar-10-batches-py / cifar-100-python) or its parent.
    """
    if name not in CIFAR_ARCHIVES:
        raise DataError(f"unknown CIFAR variant {name!r}; use 'cifar10' or 'cifar100'")
    _check_split(split)
    folder = _cifar_folder(name, root)
    if name == "cifar10":
        files = ([folder / f"data_batch_{i}" for i in range(1, 6)] if split == "train"
                 else [folder / "test_batch"])
        label_key, meta, names_key, count = b"labels", "batches.meta", b"label_names", 10
    else:
        files = [folder / split]
        label_key, meta, names_key, count = b"fine_labels", "meta", b"fine_label_names", 100
    parts = []
    for f in files:
        if not f.is_file():
            raise DataError(f"{name} {split} file missing: {f}")
        parts.append(_cifar_batch(f, label_key))
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() >= count):
        raise DataError(f"{name} labels outside [0, {count}) in {folder}")
    classes = _class_names(folder / meta, names_key, count)
    if name == "cifar10" and classes == [str(i) for i in range(10)]:
        classes = list(CIFAR10_CLASSES)
    return ImageDataset(torch.from_numpy(np.ascontiguousarray(images)),
                        torch.from_numpy(labels), classes, name)


def download_cifar(name: str, download_dir: str | Path) -> Path:
    """Download and extract the CIFAR ``name`` archive into ``download_dir`` (MD5 checked).

    Returns the extracted folder. Raises DataError when offline or on a checksum mismatch.
    Never called implicitly by the loaders.
    """
    if name not in CIFAR_ARCHIVES:
        raise DataError(f"unknown CIFAR variant {name!r}; use 'cifar10' or 'cifar100'")
    url, md5, folder_name = CIFAR_ARCHIVES[name]
    folder = Path(download_dir)
    archive = folder / url.rsplit("/", 1)[1]
    if not (archive.is_file() and _md5(archive) == md5):
        _download(url, archive)
        digest = _md5(archive)
        if digest != md5:
            archive.unlink(missing_ok=True)
            raise DataError(f"checksum mismatch for downloaded {archive}: md5 {digest}")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(folder, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}") from None
    return folder / folder_name


# ---- image folders ------------------------------------------------------------------------------
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_T = TypeVar("_T")


@dataclass
class _ImageRead:
    """One image file as read: uint8 pixels (channels, H, W), the file's own (W, H), and
    whether it is a 16-bit image whose values are all <= 255, not all 0 (black once scaled)."""

    pixels: np.ndarray
    size: tuple[int, int]
    low16: bool


def _with_image(path: Path, use: Callable[[Any], _T]) -> _T:
    """``use(image)`` on the PIL image of ``path``; every PIL failure is a one-line DataError
    naming the file. PIL's DecompressionBombWarning (an image over `Image.MAX_IMAGE_PIXELS`)
    is silenced (`image_folder` notes such images itself); its DecompressionBombError (over
    twice that) is refused."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as src:
                return use(src)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"cannot read image {path}: {str(exc).rstrip('.')}; shrink "
                        "it") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None


def _eight_bit(src: Any, path: Path) -> tuple[Any, bool]:
    """``src`` with 8-bit pixels, and whether it is a 16-bit image whose values are all <= 255
    (not all 0: 8-bit values saved as 16-bit, most likely). 16-bit grey (modes I;16, I;16B,
    I;16L, or I holding values in 0..65535) keeps its top byte, ``v >> 8``: how PIL itself
    reads 16-bit RGB PNGs, and exact for an 8-bit image x 257 (a 16-bit copy of an 8-bit image
    reads back as that image). Float images (mode F) and 32-bit ones (mode I beyond 0..65535)
    are refused: no scale to 8 bits is known."""
    from PIL import Image

    mode = src.mode
    if mode == "F":
        raise DataError(f"cannot read image {path}: mode F (32-bit float) pixels have no "
                        "8-bit scale; convert it to 8-bit (mode L or RGB)")
    if not mode.startswith("I"):
        return src, False
    values = np.asarray(src)
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise DataError(f"cannot read image {path}: mode {mode} pixels span {lo}..{hi}, beyond "
                        "16 bits (0..65535); convert it to 8-bit (mode L or RGB)")
    return Image.fromarray((values >> 8).astype(np.uint8)), 0 < hi <= 255


def _read_image(path: Path, size: tuple[int, int], channels: int) -> _ImageRead:
    """One image file as uint8 (channels, H, W) of `size` (W, H), resized bilinearly with PIL
    when it differs; 16-bit images scaled to 8 bits first (`_eight_bit`)."""
    from PIL import Image

    def read(src: Any) -> _ImageRead:
        img, low16 = _eight_bit(src, path)
        img = img.convert("L" if channels == 1 else "RGB")
        if img.size != size:
            img = img.resize(size, Image.Resampling.BILINEAR)
        return _ImageRead(np.asarray(img, dtype=np.uint8), src.size, low16)

    got = _with_image(path, read)
    arr = got.pixels[None] if got.pixels.ndim == 2 else got.pixels.transpose(2, 0, 1)
    got.pixels = np.ascontiguousarray(arr)
    return got


def _image_header(path: Path) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (W, H)) of an image file, from its header."""
    return _with_image(path, lambda src: (src.mode, src.size))


def _report_images(root: Path, paths: list[Path], reads: list[_ImageRead]) -> None:
    """A note on the images PIL would have warned about as over its decompression-bomb
    limit (read all the same), and a warning on 16-bit images that read as black."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    big = [(p, r.size) for p, r in zip(paths, reads, strict=True)
           if limit and r.size[0] * r.size[1] > limit]
    if big:
        (first, (w, h)) = big[0]
        note(f"{len(big)} image(s) of {root} exceed PIL's decompression-bomb limit of {limit} "
             f"pixels (first: {first}, {w}x{h}); read all the same")
    low = [p for p, r in zip(paths, reads, strict=True) if r.low16]
    if low:
        warn(f"{len(low)} 16-bit image(s) of {root} hold only values up to 255 (first: "
             f"{low[0]}): read as 16-bit (top byte) they are black; save 8-bit values as an "
             "8-bit image")


def image_folder(root: str | Path, size: int | None = None, channels: int | None = None,
                 name: str | None = None) -> ImageDataset:
    """Images from ``root/<class>/*.<image suffix>``; classes are the sorted sub-folder names
    (`ImageDataset.from_folders`: a model's class names must map them).

    ``channels``: 1 (grey) or 3 (RGB); None: 1 when every image is grey, else 3. ``size``:
    every image resized to ``size`` x ``size`` (bilinear); None: the images' own size, or
    when they differ, the most common one (the others resized to it). Files are ordered by
    class, then by file name. Fitting to a model's input is `fit_images`' job.

    Pixels are 8-bit: a 16-bit grey image keeps each value's top byte (``v >> 8``, so a 16-bit
    copy of an 8-bit image, value x 257, reads back exactly as that image; `_eight_bit`). Float
    (mode F) and 32-bit integer images are refused, as is an image over twice PIL's
    decompression-bomb limit (`_with_image`); any unreadable image is a DataError naming it.
    """
    root = Path(root)
    if channels is not None and channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    if size is not None and size < 1:
        raise DataError(f"image size must be >= 1, got {size}")
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"image folder {root} has no class sub-folders")
    files: list[tuple[int, Path]] = []
    for label, cls in enumerate(classes):
        files += [(label, f) for f in sorted((root / cls).iterdir())
                  if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"image folder {root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if size is None or channels is None:
        headers = [_image_header(f) for _, f in files]
        if channels is None:
            channels = 1 if all(mode in GREY_MODES for mode, _ in headers) else 3
        if size is None:
            sizes = [wh for _, wh in headers]
            target = max(set(sizes), key=lambda wh: (sizes.count(wh), wh))
        else:
            target = (size, size)
    else:
        target = (size, size)
    reads = [_read_image(f, target, channels) for _, f in files]
    _report_images(root, [f for _, f in files], reads)
    return ImageDataset(torch.from_numpy(np.stack([r.pixels for r in reads])),
                        torch.tensor([label for label, _ in files], dtype=torch.int64),
                        classes, name or root.name, from_folders=True)


# ---- by name -------------------------------------------------------------------------------------
def load_dataset(name_or_path: str | Path, split: str = "test", root: str | Path | None = None,
                 download_dir: str | Path | None = None, size: int | None = None,
                 channels: int | None = None, limit: int | None = None) -> ImageDataset:
    """A data set by name ('fashion-mnist', 'cifar10', 'cifar100') or folder path.

    A folder path is read as CIFAR when it is (or contains) an extracted CIFAR folder, else
    as an image folder.

    ``root`` is where the named data set's files are (needed for CIFAR); ``download_dir`` is
    one more folder searched (files fetched earlier by a ``download_*`` function), never in
    place of a ``root`` given: an explicit root is the one read, or refused. For an image
    folder, ``split`` selects ``<path>/<split>`` when that sub-folder exists, and images are
    resized to ``size`` with ``channels`` channels. ``limit``: the first ``limit`` images
    only (Fashion-MNIST reads no more of its files than those; the others are cut after
    loading).
    """
    _check_split(split)
    key = str(name_or_path)
    norm = key.lower().replace("_", "-")
    if norm in ("fashion-mnist", "fashionmnist", "fmnist"):
        return fashion_mnist(split, root, download_dir, limit)
    return _load_other(key, norm, split, root, download_dir, size, channels).subset(0, limit)


def _load_other(key: str, norm: str, split: str, root: str | Path | None,
                download_dir: str | Path | None, size: int | None,
                channels: int | None) -> ImageDataset:
    """`load_dataset` for CIFAR-10/100 (by name or folder) and image folders."""
    if norm in ("cifar10", "cifar-10", "cifar100", "cifar-100"):
        cname = norm.replace("-", "")
        # a root given explicitly is the one read (as for Fashion-MNIST): falling back to
        # download_dir would run on other data than the caller named
        folder = root if root is not None else download_dir
        if folder is None:
            raise DataError(f"{cname} needs root=<folder with "
                            f"{CIFAR_ARCHIVES[cname][2]}> (CLI: --root; a sweep file: "
                            "data: <that folder>; download_cifar() can fetch it)")
        return cifar(cname, split, folder)
    path = Path(key)
    if path.is_dir():
        for cname in ("cifar10", "cifar100"):
            try:
                _cifar_folder(cname, path)
            except DataError:
                continue
            return cifar(cname, split, path)
        folder = path / split if (path / split).is_dir() else path
        _refuse_cifar_binary(folder)
        _refuse_idx_folder(folder)
        return image_folder(folder, size=size, channels=channels, name=path.name)
    raise DataError(f"unknown data set {key!r}: not a folder and not one of "
                    f"{', '.join(KNOWN_DATASETS)}")
