import gzip
import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch

from gan_helpers import data
from gan_helpers.data import DataFileError, ShuffledBatches, load_images, read_idx


OFFICIAL_COUNTS = {  # digits per class, as published
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}


@pytest.mark.parametrize("split, n, first", [("train", 60000, [5, 0, 4, 1, 9]),
                                             ("test", 10000, [7, 2, 1, 0, 4])])
def test_shipped_splits_are_the_official_mnist(split, n, first, tmp_path):
    s = load_images("mnist", root=tmp_path, split=split)
    assert s.images.shape == (n, 28, 28) and s.images.dtype == torch.uint8
    assert s.labels.dtype == torch.int64 and s.labels.bincount().tolist() == OFFICIAL_COUNTS[split]
    assert s.labels[:5].tolist() == first
    assert s.source == f"mnist: {n:,} {split} images from the files shipped with gan_helpers"
    # what a notebook shows for `data`: a line, not two tensors' worth of numbers
    assert repr(s).startswith(f"ImageSet({n} images ({n}, 28, 28) torch.uint8, labels ({n},)")
    assert "\n" not in repr(s) and len(repr(s)) < 400


def test_training_split_is_the_default_and_other_splits_are_refused(tmp_path):
    assert len(load_images(root=tmp_path)) == 60000
    with pytest.raises(ValueError, match="unknown split 'valid': choose one of train, test"):
        load_images("mnist", root=tmp_path, split="valid")


def test_shipped_files_decompress_to_the_official_bytes():
    for name, md5 in data.DECOMPRESSED_MD5["mnist"].items():
        raw = gzip.decompress((data.SHIPPED_DIR / f"{name}.gz").read_bytes())
        assert hashlib.md5(raw).hexdigest() == md5
    # the training files were re-compressed: their .gz md5 is not the official .gz's
    official_gz = "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert hashlib.md5((data.SHIPPED_DIR / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest() != official_gz


@pytest.mark.parametrize("form", ["plain", "gzip-1", "gzip-9"])
def test_integrity_is_checked_on_the_decompressed_bytes(tmp_path, form):
    # the same bytes, however stored, pass; one flipped pixel fails, however stored
    raw = gzip.decompress((data.SHIPPED_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    damaged = bytearray(raw)
    damaged[-1] ^= 0x01
    md5 = data.DECOMPRESSED_MD5["mnist"]
    for content, ok in ((raw, True), (bytes(damaged), False)):
        if form == "plain":
            path = tmp_path / "t10k-labels-idx1-ubyte"
            path.write_bytes(content)
        else:
            path = tmp_path / "t10k-labels-idx1-ubyte.gz"
            path.write_bytes(gzip.compress(content, compresslevel=int(form[-1]), mtime=0))
        if ok:
            assert read_idx(path, "labels", "fix", md5)[:3].tolist() == [7, 2, 1]
        else:
            with pytest.raises(DataFileError, match=(
                    rf"{path.name} is corrupt: the md5 of its decompressed bytes is \w+, the "
                    r"official file's is 27ae3e4e09519cfbb04c329615203637\. Restore it\.")):
                read_idx(path, "labels", "Restore it.", md5)


@pytest.mark.parametrize("content", [b"not gzip at all", b"\x1f\x8b\x08\x00 then nothing"])
def test_unreadable_gzip_names_the_file_and_the_fix(tmp_path, content):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=r"train-images-idx3-ubyte\.gz is not a readable gzip file .*Fix me"):
        read_idx(path, "images", "Fix me", data.DECOMPRESSED_MD5["mnist"])


def test_files_in_torchvision_layout_are_preferred(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # the test split uncompressed, as torchvision extracts it
    for kind in ("images-idx3", "labels-idx1"):
        with gzip.open(data.SHIPPED_DIR / f"t10k-{kind}-ubyte.gz") as src:
            (raw / f"t10k-{kind}-ubyte").write_bytes(src.read())
    s = load_images("mnist", root=tmp_path, split="test")
    assert len(s) == 10000
    # the line names the folder (relative to the working directory where it is near)
    shown = s.source.split(" test images from ", 1)[1]
    assert Path(shown).resolve() == raw.resolve()
    # a damaged copy there says to download again, not to restore the shipped files
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + bytes(20))
    with pytest.raises(DataFileError, match="python -m gan_helpers download mnist"):
        load_images("mnist", root=tmp_path, split="test")


def test_scaling_to_unit_range():
    s = load_images("mnist", root="/nonexistent")
    x = s.scaled()
    assert x.shape == (60000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    # same as the seed's ToTensor + Normalize([0.5], [0.5])
    from torchvision.transforms.functional import normalize, to_tensor
    from PIL import Image

    seed = normalize(to_tensor(Image.fromarray(s.images[0].numpy())), [0.5], [0.5])
    torch.testing.assert_close(x[0], seed)


@pytest.mark.parametrize("make, fix", [
    # a student's own images, as torchvision's ToTensor gives them: [0, 1], with a channel
    (lambda u: u.float().div(255).unsqueeze(1),
     "For images in [0, 1]: (images * 255).squeeze(1).round().to(torch.uint8)."),
    # already scaled as the GAN sees them
    (lambda u: u.float().div(127.5).sub(1),
     "For images in [-1, 1]: ((images + 1) * 127.5).round().to(torch.uint8)."),
    (lambda u: u.float(), "Use images.round().to(torch.uint8)."),
    (lambda u: u.view(-1, 784), "Use images.view(-1, 28, 28)."),
    (lambda u: u[:, :14], "The images must be 28x28 pixels"),
    (lambda u: u[:, :14].float().div(255), "The images must be 28x28 pixels"),
    # MNIST's usual Normalize((0.1307,), (0.3081,)): rounding would not bring pixels back
    (lambda u: u.float().div(255).sub(0.1307).div(0.3081), "undo any Normalize"),
])
def test_image_set_refuses_images_it_would_scale_wrongly(make, fix):
    s = load_images("mnist", root="/nonexistent", split="test")
    images, labels = s.images, s.labels
    bad = make(images[:8])
    with pytest.raises(ValueError, match="must be a uint8 tensor \\(N, 28, 28\\)") as err:
        data.ImageSet(bad, labels[:8], "mine")
    assert fix in str(err.value) and str(tuple(bad.shape)) in str(err.value)
    # the advice, followed, gives back the original pixels
    if fix.startswith("For images in"):
        expression = fix.split(": ", 1)[1].rstrip(".")
        torch.testing.assert_close(eval(expression, {"images": bad, "torch": torch}), images[:8])
    with pytest.raises(ValueError, match="one class index per image, N = 8; got \\(7,\\)"):
        data.ImageSet(images[:8], labels[:7], "mine")


def copy_shipped(tmp_path, name="t10k-images-idx3-ubyte.gz"):
    target = tmp_path / name
    shutil.copy(data.SHIPPED_DIR / name, target)
    return target


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataFileError, match=r"train-images.*is missing\. Fix me"):
        read_idx(tmp_path / "train-images-idx3-ubyte", "images", "Fix me")


def test_truncated_file(tmp_path):
    raw = gzip.decompress((data.SHIPPED_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    path = tmp_path / "my-images"
    path.write_bytes(raw[:-784])
    with pytest.raises(DataFileError, match=r"my-images has the wrong length.*truncated"):
        read_idx(path, "images", "fix")


def test_wrong_magic_number(tmp_path):
    path = tmp_path / "labels-as-images"
    path.write_bytes(gzip.decompress((data.SHIPPED_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    with pytest.raises(DataFileError, match=r"labels-as-images is not an IDX images file: magic number 0x00000801"):
        read_idx(path, "images", "fix")


def test_corrupt_shipped_file_is_reported(monkeypatch, tmp_path):
    path = copy_shipped(tmp_path)
    copy_shipped(tmp_path, "t10k-labels-idx1-ubyte.gz")
    path.write_bytes(path.read_bytes()[:1000])
    monkeypatch.setattr(data, "SHIPPED_DIR", tmp_path)
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte\.gz .*Restore the shipped files: `git checkout -- "):
        load_images("mnist", root=tmp_path, split="test")


def test_shuffled_batches_cover_each_epoch_once():
    images = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1).expand(10, 1, 28, 28).contiguous()
    batches = ShuffledBatches(images, batch_size=3, seed=0)
    assert batches.steps_per_epoch == 3
    seen = torch.cat([b[:, 0, 0, 0] for b in batches.epoch(0)])
    assert len(seen) == 9 and len(set(seen.tolist())) == 9
    # resuming mid-epoch gives the same remaining batches
    full = list(batches.epoch(1))
    torch.testing.assert_close(torch.stack(list(batches.epoch(1, start=1))), torch.stack(full[1:]))
    assert not torch.equal(torch.stack(full), torch.stack(list(batches.epoch(2))))


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be between 1 and the data set size 10"):
        ShuffledBatches(torch.zeros(10, 1, 28, 28), batch_size=11)


def test_seed_dataloader_matches_fast_path(mnist_small):
    loader = data.SeedLoaderBatches(mnist_small, batch_size=100, seed=3)
    fast = ShuffledBatches(mnist_small.scaled(), batch_size=100, seed=3)
    assert loader.steps_per_epoch == 6  # keeps the last, smaller batch as the seed does
    seed_batches = list(loader.epoch(0))
    assert seed_batches[-1].shape == (12, 1, 28, 28)
    for a, b in zip(seed_batches, fast.epoch(0)):
        torch.testing.assert_close(a, b)


def test_fashion_mnist_from_debian_when_installed():
    if not data._has_pair(data.DEBIAN_FASHION_DIR, "train"):
        pytest.skip("dataset-fashion-mnist is not installed")
    s = load_images("fashion-mnist", root="/nonexistent")
    assert s.images.shape == (60000, 28, 28) and s.labels.bincount().tolist() == [6000] * 10
    test = load_images("fashion-mnist", root="/nonexistent", split="test")
    assert test.images.shape == (10000, 28, 28) and test.labels.bincount().tolist() == [1000] * 10


def test_fashion_mnist_missing_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "none")
    with pytest.raises(DataFileError, match="apt-get install dataset-fashion-mnist"):
        load_images("fashion-mnist", root=tmp_path)


@pytest.mark.parametrize("dataset, meanwhile", [
    ("mnist", "meanwhile the course uses the MNIST files shipped with gan_helpers"),
    ("fashion-mnist", "apt-get install dataset-fashion-mnist"),
])
def test_failed_download_says_why_and_what_to_do(monkeypatch, tmp_path, dataset, meanwhile):
    class Offline:  # torchvision's own message when no mirror answers
        def __init__(self, root, train, download):
            raise RuntimeError(
                "Error downloading train-images-idx3-ubyte.gz:\n"
                "Tried https://ossci-datasets.s3.amazonaws.com/mnist/, got:\n"
                "<urlopen error [Errno -2] Name or service not known>\n"
            )

    monkeypatch.setattr(data, "_torchvision_class", lambda name: Offline)
    with pytest.raises(DataFileError) as failed:
        data.download(dataset, tmp_path)
    message = str(failed.value)
    assert f"could not download {dataset} into {tmp_path}" in message
    assert "train-images-idx3-ubyte.gz: <urlopen error [Errno -2] Name or service not known>" in message
    assert f"copy the four IDX files into {tmp_path / 'Offline' / 'raw'}" in message
    assert meanwhile in message


def test_data_line_names_the_folder_as_typed_from_here(tmp_path, monkeypatch):
    # From a notebook (working directory notebooks/ under the project) the line names
    # ../data/..., not the absolute path of whoever ran it last; far away, it is absolute.
    project = tmp_path / "course"
    (project / "notebooks").mkdir(parents=True)
    raw = project / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (raw / name).symlink_to(data.SHIPPED_DIR / name)

    def line():
        return load_images("mnist", root=project / "data", split="test").source

    monkeypatch.chdir(project / "notebooks")
    assert line() == "mnist: 10,000 test images from ../data/MNIST/raw"
    monkeypatch.chdir(project)
    assert line() == "mnist: 10,000 test images from data/MNIST/raw"
    elsewhere = tmp_path / "a" / "b" / "c"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert line() == f"mnist: 10,000 test images from {raw}"
    # one level up from a folder at the top of the filesystem is the root: absolute too
    top = Path(tmp_path.anchor)
    beside = next(
        p for p in sorted(top.iterdir())
        if p.is_dir() and not p.is_symlink() and os.access(p, os.X_OK)
        and p.name != tmp_path.parts[1]
    )
    monkeypatch.chdir(beside)
    assert line() == f"mnist: 10,000 test images from {raw}"
