"""MNIST and Fashion-MNIST from their IDX files, scaled to [-1, 1] as the seed does.

Each data set has a training split (60,000 images, what every GAN here trains on, as the
seed does) and a test split (10,000 images, never trained on: the metrics score samples
against it). Where the files come from, in order:

1. Under the data root in torchvision's layout (``<root>/MNIST/raw/train-images-idx3-ubyte``
   ...), as ``python -m gan_helpers download`` or ``torchvision.datasets.MNIST(root,
   download=True)`` leaves them.
2. MNIST: the four official files shipped inside this package (``gan_helpers/mnist/``),
   so the course runs offline. Fashion-MNIST: Debian's ``dataset-fashion-mnist``.

Every file is checked against the md5 of its *decompressed* bytes (``DECOMPRESSED_MD5``),
so official downloads and re-compressed copies of the same bytes both pass, and a damaged
file fails with a message that names it and says how to fix it.

Two ways to draw batches:

- ``ShuffledBatches`` (the course's fast path) keeps the whole set as one float tensor
  and takes each shuffled batch by index: no per-image PIL work in the training loop.
- ``seed_dataloader`` is the seed's ``DataLoader`` with torchvision transforms
  (``Resize``, ``ToTensor``, ``Normalize([0.5], [0.5])``), for ``--recipe seed``.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from PIL import Image

DATASET_NAMES = ("mnist", "fashion-mnist")
SPLITS = {"train": "train", "test": "t10k"}  # split -> the IDX files' name prefix
SHIPPED_DIR = Path(__file__).resolve().parent / "mnist"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

# md5 of each file's decompressed bytes. MNIST: the published md5 of the official
# uncompressed files (gan_helpers/mnist/README.md). Fashion-MNIST: computed from Debian's
# dataset-fashion-mnist, whose files are the official release re-compressed.
DECOMPRESSED_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}
DOWNLOAD_HINT = "python -m gan_helpers download {dataset}  (needs internet)"


class DataFileError(RuntimeError):
    """A data file is missing, truncated or corrupt; the message says how to fix it."""


@dataclass
class ImageSet:
    """A whole data set in memory.

    images: uint8 tensor (N, 28, 28), pixel values 0..255.
    labels: int64 tensor (N,), class indices 0..9.
    source: one line saying what this is and where it came from.
    """

    images: torch.Tensor
    labels: torch.Tensor
    source: str

    def __post_init__(self) -> None:
        # scaled() assumes 0..255: float images in [0, 1] or [-1, 1] would come out as an
        # almost uniform grey and train a GAN on nothing, without any error.
        x = self.images
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 3 \
                or tuple(x.shape[1:]) != (28, 28):
            raise ValueError(
                f"ImageSet.images must be a uint8 tensor (N, 28, 28) of pixel values 0..255; "
                f"got {_describe(x)}. {_uint8_fix(x)}"
            )
        if not isinstance(self.labels, torch.Tensor) or self.labels.shape != (len(x),):
            got = tuple(self.labels.shape) if isinstance(self.labels, torch.Tensor) else type(self.labels).__name__
            raise ValueError(
                f"ImageSet.labels must be a tensor (N,) with one class index per image, "
                f"N = {len(x)}; got {got}"
            )

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        # The dataclass default would print both tensors, a screenful in a notebook.
        return (f"ImageSet({len(self)} images {tuple(self.images.shape)} {self.images.dtype}, "
                f"labels {tuple(self.labels.shape)}, source={self.source!r})")

    def scaled(self) -> torch.Tensor:
        """The images as float32 (N, 1, 28, 28) in [-1, 1]: x / 127.5 - 1, which is the
        seed's ``ToTensor()`` then ``Normalize([0.5], [0.5])``."""
        return to_unit_range(self.images)


def _describe(x: object) -> str:
    if not isinstance(x, torch.Tensor):
        return f"a {type(x).__name__}"
    text = f"{x.dtype} {tuple(x.shape)}"
    if x.is_floating_point() and x.numel():
        text += f" with values in [{x.min().item():.3g}, {x.max().item():.3g}]"
    return text


def _uint8_fix(x: object) -> str:
    """How to turn ``x`` into uint8 (N, 28, 28), as far as its type, shape and range tell."""
    if not isinstance(x, torch.Tensor):
        return "Convert it first, e.g. torch.as_tensor(images, dtype=torch.uint8)."
    flat = x.dim() == 2 and x.shape[1] == 784
    if tuple(x.shape[-2:]) != (28, 28) and not flat:
        return "The images must be 28x28 pixels, as MNIST's are (resize them first)."
    steps = [".squeeze(1)"] if x.dim() == 4 and x.shape[1] == 1 else [".view(-1, 28, 28)"] if flat else []
    if x.is_floating_point() and x.numel():
        low, high = x.min().item(), x.max().item()
        if low >= -1 - 1e-6 and high <= 1 + 1e-6:
            scale = "((images + 1) * 127.5)" if low < 0 else "(images * 255)"
            return (f"For images in [{'-1' if low < 0 else '0'}, 1]: "
                    f"{scale}{''.join(steps)}.round().to(torch.uint8).")
        if low < 0 or high > 255:
            # e.g. after Normalize((0.1307,), (0.3081,)): no rounding or clamping recovers pixels
            return ("These values are no pixel range: undo any Normalize and scale them to "
                    "0..255 first (0 for the background, 255 for the ink).")
        steps.append(".round().to(torch.uint8)")
    elif x.dtype != torch.uint8:
        steps.append(".clamp(0, 255).to(torch.uint8)")
    return f"Use images{''.join(steps)}." if steps else ""


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) in 0..255 -> float32 (N, 1, 28, 28) in [-1, 1]."""
    return (images.float().div_(127.5).sub_(1.0)).unsqueeze(1)


def default_data_root() -> Path:
    """Where full data sets live: ``$GAN_DATA``, else ``data/`` in the project checkout,
    else ``~/.cache/gan-course``."""
    if os.environ.get("GAN_DATA"):
        return Path(os.environ["GAN_DATA"])
    project = SHIPPED_DIR.parent.parent
    if (project / "pyproject.toml").exists():
        return project / "data"
    return Path.home() / ".cache" / "gan-course"


def _shown_path(path: str | os.PathLike) -> str:
    """``path`` as a user would type it from the working directory: relative where it
    lies under the working directory or its parent (``data/MNIST/raw`` from the project,
    ``../data/MNIST/raw`` from ``notebooks/``), absolute elsewhere. The lines that say
    which data a run trains on use it, so a notebook's saved output names no one's home
    folder."""
    absolute = os.path.abspath(path)
    try:
        relative = Path(os.path.relpath(absolute))
    except ValueError:  # another drive on Windows
        return absolute
    if relative.parts[:1] != (os.pardir,):
        return str(relative)
    # One level up is still "near" unless that level is the filesystem's root: from /tmp,
    # ../work/course/data is the long way round to /work/course/data.
    parent = Path.cwd().parent
    near = relative.parts[:2] != (os.pardir, os.pardir) and parent != Path(parent.anchor)
    return str(relative) if near else absolute


def read_idx(
    path: str | os.PathLike, kind: str, fix: str, md5: dict[str, str] | None = None
) -> torch.Tensor:
    """Read one IDX file (plain or .gz), after checking it.

    kind: ``"images"`` (returns uint8 (N, rows, cols)) or ``"labels"`` (int64 (N,)).
    fix: the sentence that tells the user how to repair a bad file.
    md5: md5 of the decompressed bytes by file name without ``.gz``
    (``DECOMPRESSED_MD5[dataset]``); files not in it are checked by header and length only.
    Raises DataFileError naming the file for a missing file, an unreadable gzip, a wrong
    md5, a wrong magic number or a wrong length.
    """
    path = Path(path)
    if not path.exists():
        raise DataFileError(f"data file {path} is missing. {fix}")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataFileError(f"{path} is not a readable gzip file ({err}). {fix}") from err
    header = 16 if kind == "images" else 8
    if len(raw) < header:
        raise DataFileError(f"{path} is truncated: {len(raw)} bytes, no IDX header. {fix}")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[kind]:
        raise DataFileError(
            f"{path} is not an IDX {kind} file: magic number {magic:#010x}, expected "
            f"{_IDX_MAGIC[kind]:#010x}. {fix}"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    expected_len = header + math.prod(dims)
    if len(raw) != expected_len:
        raise DataFileError(
            f"{path} has the wrong length: {len(raw)} bytes, its header {dims} needs "
            f"{expected_len}. The file is truncated or damaged. {fix}"
        )
    expected_md5 = (md5 or {}).get(path.name.removesuffix(".gz"))
    if expected_md5 is not None:
        actual = hashlib.md5(raw).hexdigest()
        if actual != expected_md5:
            raise DataFileError(
                f"{path} is corrupt: the md5 of its decompressed bytes is {actual}, the "
                f"official file's is {expected_md5}. {fix}"
            )
    values = torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=header).view(*dims)
    return values if kind == "images" else values.long()


def _read_pair(
    folder: Path, prefix: str, fix: str, md5: dict[str, str] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    def find(stem: str) -> Path:
        for name in (stem, stem + ".gz"):
            if (folder / name).exists():
                return folder / name
        return folder / (stem + ".gz")

    images = read_idx(find(f"{prefix}-images-idx3-ubyte"), "images", fix, md5)
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte"), "labels", fix, md5)
    if len(images) != len(labels) or tuple(images.shape[1:]) != (28, 28):
        raise DataFileError(
            f"{folder}: {len(images)} images of shape {tuple(images.shape[1:])} but "
            f"{len(labels)} labels; expected matching counts of 28x28 images. {fix}"
        )
    return images, labels


def _has_pair(folder: Path, prefix: str) -> bool:
    return any((folder / f"{prefix}-images-idx3-ubyte{ext}").exists() for ext in ("", ".gz"))


def _torchvision_class(dataset: str):
    from torchvision import datasets

    if dataset == "mnist":
        return datasets.MNIST
    if dataset == "fashion-mnist":
        return datasets.FashionMNIST
    raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASET_NAMES)}")


def download(dataset: str = "mnist", root: str | os.PathLike | None = None) -> Path:
    """Download the full data set with torchvision into ``root``; returns its raw folder.

    Raises DataFileError with the reason when there is no internet.
    """
    root = Path(root) if root is not None else default_data_root()
    cls = _torchvision_class(dataset)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # torchvision raises RuntimeError or URLError
        # torchvision's message: "Error downloading FILE:", then each mirror tried and why
        # it failed; the first and the last line say what and why.
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [
            type(err).__name__]
        reason = lines[0] if len(lines) == 1 else f"{lines[0]} {lines[-1]}"
        meanwhile = (
            "meanwhile the course uses the MNIST files shipped with gan_helpers" if dataset == "mnist"
            else "on Debian, `apt-get install dataset-fashion-mnist` installs it offline"
        )
        raise DataFileError(
            f"could not download {dataset} into {root} ({reason}). Without internet, copy "
            f"the four IDX files into {root / cls.__name__ / 'raw'}; {meanwhile}."
        ) from err
    return root / cls.__name__ / "raw"


def load_images(
    dataset: str = "mnist",
    root: str | os.PathLike | None = None,
    download_missing: bool = False,
    split: str = "train",
) -> ImageSet:
    """Load one split of ``dataset`` (``"mnist"`` or ``"fashion-mnist"``): ``"train"``
    (60,000 images, what the GANs train on) or ``"test"`` (10,000, what they are scored
    against). Returns uint8 images (N, 28, 28) in 0..255 and int64 labels (N,).

    Looks under ``root`` (default: ``default_data_root()``) first, downloads there first
    when ``download_missing``, and otherwise reads the files the module docstring names.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    cls = _torchvision_class(dataset)
    prefix, md5 = SPLITS[split], DECOMPRESSED_MD5[dataset]
    root = Path(root) if root is not None else default_data_root()
    raw = root / cls.__name__ / "raw"
    if download_missing and not _has_pair(raw, prefix):
        download(dataset, root)
    if _has_pair(raw, prefix):
        folder, fix = raw, f"Delete it and run `{DOWNLOAD_HINT.format(dataset=dataset)}`."
    elif dataset == "mnist":
        folder, fix = SHIPPED_DIR, (
            f"Restore the shipped files: `git checkout -- {_shown_path(SHIPPED_DIR)}` in the "
            "course's checkout, or reinstall gan_helpers.")
    elif _has_pair(DEBIAN_FASHION_DIR, prefix):
        folder, fix = DEBIAN_FASHION_DIR, (
            "Reinstall it: apt-get install --reinstall dataset-fashion-mnist")
    else:
        raise DataFileError(
            f"Fashion-MNIST not found in {_shown_path(raw)} nor {DEBIAN_FASHION_DIR}. Get it with "
            f"`{DOWNLOAD_HINT.format(dataset=dataset)}` or, on Debian, "
            "`apt-get install dataset-fashion-mnist`."
        )
    images, labels = _read_pair(folder, prefix, fix, md5)
    shown = "the files shipped with gan_helpers" if folder == SHIPPED_DIR else _shown_path(folder)
    return ImageSet(images, labels, f"{dataset}: {len(images):,} {split} images from {shown}")


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The image order of ``epoch``: int64 (n,), a function of (seed, epoch) only, so a
    run can resume mid-epoch without replaying the earlier ones."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


class ShuffledBatches:
    """Shuffled mini-batches drawn by index from one in-memory tensor.

    images: float tensor (N, 1, 28, 28) in [-1, 1] (see ``ImageSet.scaled``).
    Each epoch is a fresh permutation drawn from ``seed`` and the epoch number alone,
    so any (epoch, position) can be resumed without replaying earlier epochs. The last
    incomplete batch is dropped so every batch has ``batch_size`` images.
    """

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int = 0) -> None:
        if batch_size < 1 or batch_size > len(images):
            raise ValueError(
                f"batch_size must be between 1 and the data set size {len(images)}, "
                f"got {batch_size}"
            )
        self.images = images
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(images) // batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """Yield the batches of ``epoch`` from batch index ``start``: (B, 1, 28, 28)."""
        perm = epoch_permutation(len(self.images), self.seed, epoch).to(self.images.device)
        b = self.batch_size
        for i in range(start, self.steps_per_epoch):
            yield self.images.index_select(0, perm[i * b : (i + 1) * b])


class UInt8ImageDataset(Dataset):
    """A torchvision-style dataset over uint8 images (N, 28, 28): item i is
    ``(transform(PIL image), label)``, exactly as ``torchvision.datasets.MNIST`` gives."""

    def __init__(self, image_set: ImageSet, transform=None) -> None:
        self.data, self.targets = image_set.images, image_set.labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int):
        from PIL import Image

        img = Image.fromarray(self.data[index].numpy())  # uint8 2-D -> mode "L"
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index])


def seed_transform() -> Callable[[Image.Image], torch.Tensor]:
    """The seed's transform: PIL image -> float (1, 28, 28) in [-1, 1]."""
    from torchvision import transforms

    return transforms.Compose(
        [transforms.Resize(28), transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
    )


def seed_dataloader(
    image_set: ImageSet, batch_size: int, order: Sequence[int] | None = None
) -> DataLoader:
    """The seed's DataLoader: per-image PIL transforms, batches of (B, 1, 28, 28) in
    [-1, 1] with their labels. ``order`` gives the sample order (the seed shuffles; the
    trainer passes a seeded permutation so runs are reproducible and resumable)."""
    dataset = UInt8ImageDataset(image_set, seed_transform())
    return DataLoader(dataset, batch_size=batch_size, sampler=order, shuffle=order is None)


class SeedLoaderBatches:
    """The seed's data path with the ``ShuffledBatches`` interface: each batch goes
    through the DataLoader and per-image transforms; the last batch may be smaller,
    as in the seed (which keeps it). Batches are moved to ``device`` one by one, as the
    seed's ``imgs.type(Tensor)`` does, since the DataLoader builds them on the CPU."""

    def __init__(
        self, image_set: ImageSet, batch_size: int, seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.image_set = image_set
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.steps_per_epoch = math.ceil(len(image_set) / batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """Yield the batches of ``epoch`` from batch index ``start``: (B, 1, 28, 28)."""
        perm = epoch_permutation(len(self.image_set), self.seed, epoch)
        order = perm[start * self.batch_size :].tolist()
        for images, _labels in seed_dataloader(self.image_set, self.batch_size, order):
            yield images.to(self.device)
