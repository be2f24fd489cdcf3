import pytest
import torch

from gan_helpers.data import ImageSet, load_images


@pytest.fixture(scope="session")
def mnist_small() -> ImageSet:
    """The first 512 training digits: enough for a few real training steps."""
    s = load_images("mnist", root="/nonexistent")
    return ImageSet(s.images[:512].clone(), s.labels[:512].clone(), "the first 512 training digits")


@pytest.fixture
def as_if_trained_on_cuda():
    """A function that rewrites a CPU run's checkpoint as a CUDA run writes it: its noise
    and augmentation generators' states are then 16 bytes (seed and offset), not the
    CPU's 5,056, and its "device" is "cuda"."""
    def rewrite(path):
        state = torch.load(path, weights_only=True)
        state["device"] = "cuda"
        state["noise_rng"] = state["augment_rng"] = torch.zeros(16, dtype=torch.uint8)
        torch.save(state, path)

    return rewrite


@pytest.fixture(autouse=True)
def _deterministic_threads():
    # Bit-exact comparisons need the same reduction order in every run of a test.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
