import gzip
import os
import shutil
from pathlib import Path

import pytest
import torch

from gan_helpers import data
from gan_helpers.data import DataFileError, ShuffledBatches, load_images, read_idx


def test_shipped_split_is_the_real_mnist_test_set(tmp_path):
    images, labels = data.load_shipped_test_split()
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,)
    # the official class counts of the MNIST test split
    assert labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_fallback_to_shipped_split_says_so(tmp_path):
    s = load_images("mnist", root=tmp_path)
    assert not s.full and len(s) == 10000
    assert "test split" in s.source and "python -m gan_helpers download mnist" in s.source
    # what a notebook shows for `data`: a line, not two tensors' worth of numbers
    assert repr(s).startswith("ImageSet(10000 images (10000, 28, 28) torch.uint8, labels (10000,), full=False")
    assert "\n" not in repr(s) and len(repr(s)) < 400


def test_full_set_in_torchvision_layout_is_preferred(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # a "training set" of the shipped files, uncompressed (as torchvision extracts them)
    for kind in ("images-idx3", "labels-idx1"):
        with gzip.open(data.SHIPPED_DIR / f"t10k-{kind}-ubyte.gz") as src:
            (raw / f"train-{kind}-ubyte").write_bytes(src.read())
    s = load_images("mnist", root=tmp_path)
    assert s.full and len(s) == 10000
    # the line names the folder (relative to the working directory where it is near)
    shown = s.source.split(" training images from ", 1)[1]
    assert Path(shown).resolve() == raw.resolve()


def test_scaling_to_unit_range():
    s = load_images("mnist", root="/nonexistent")
    x = s.scaled()
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
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
    images, labels = data.load_shipped_test_split()
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


def test_wrong_md5_names_the_file_and_the_fix(tmp_path):
    path = copy_shipped(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte\.gz is corrupt: its md5.*Restore"):
        read_idx(path, "images", "Restore it.", data.official_md5("mnist"))


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
    with pytest.raises(DataFileError, match="git checkout"):
        data.load_shipped_test_split()


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


def test_fashion_mnist_missing_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "none")
    with pytest.raises(DataFileError, match="apt-get install dataset-fashion-mnist"):
        load_images("fashion-mnist", root=tmp_path)


@pytest.mark.parametrize("dataset, meanwhile", [
    ("mnist", "until then training uses the shipped MNIST test split"),
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
    monkeypatch.chdir(project / "notebooks")
    s = load_images("mnist", root=project / "data")
    assert "Full MNIST not found in ../data/MNIST/raw:" in s.source
    assert str(tmp_path) not in s.source
    monkeypatch.chdir(project)
    assert "not found in data/MNIST/raw:" in load_images("mnist", root=project / "data").source
    elsewhere = tmp_path / "a" / "b" / "c"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    s = load_images("mnist", root=project / "data")
    assert f"not found in {project / 'data' / 'MNIST' / 'raw'}:" in s.source
    # one level up from a folder at the top of the filesystem is the root: absolute too
    top = Path(tmp_path.anchor)
    beside = next(
        p for p in sorted(top.iterdir())
        if p.is_dir() and not p.is_symlink() and os.access(p, os.X_OK)
        and p.name != tmp_path.parts[1]
    )
    monkeypatch.chdir(beside)
    s = load_images("mnist", root=project / "data")
    assert f"not found in {project / 'data' / 'MNIST' / 'raw'}:" in s.source
