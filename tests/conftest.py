import pytest
import torch

from gan_helpers.data import ImageSet, load_shipped_test_split


@pytest.fixture(scope="session")
def mnist_small() -> ImageSet:
    """The first 512 shipped test digits: enough for a few real training steps."""
    images, labels = load_shipped_test_split()
    return ImageSet(images[:512].clone(), labels[:512].clone(), "test subset", full=False)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Bit-exact comparisons need the same reduction order in every run of a test.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
