import math

import numpy as np
import pytest
import torch

from gan_helpers import metrics
from gan_helpers.cli import main
from gan_helpers.data import load_images

SHIPPED_CLASSIFIER = metrics.weights_path("mnist")


@pytest.fixture(scope="module")
def split():
    return metrics.classifier_split("mnist")


def test_shipped_classifier_is_small_and_accurate(split):
    assert metrics.weights_path("mnist").stat().st_size < 2 * 1024 * 1024
    assert len(split["test_x"]) == 10000 and len(split["train_x"]) + len(split["val_x"]) == 60000
    acc = metrics.accuracy(metrics.load_classifier("mnist"), split["test_x"], split["test_y"])
    assert acc >= 0.99  # on the test split, which it never trained on
    state = torch.load(metrics.weights_path("mnist"), weights_only=True)
    assert abs(state["test_accuracy"] - acc) < 1e-6


def test_real_digits_score_near_their_floor(split):
    real = split["test_x"]
    scores = metrics.class_scores(real)
    assert scores["classes_missing"] == [] and scores["class_entropy"] > 0.99
    assert scores["legible"] > 0.9 and scores["inception_score"] > 8.5
    floor = metrics.frechet_distance(real[:1000], real[1000:2000])
    noise = torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert 0 <= floor < 0.02 * metrics.frechet_distance(noise, real[:1000])


def test_a_collapsed_generator_scores_badly(split):
    one_image = split["test_x"][:1].expand(2000, 1, 28, 28)
    scores = metrics.score_images(one_image)
    assert scores["class_entropy"] < 0.05 and len(scores["classes_missing"]) == 9
    assert scores["inception_score"] < 1.1
    real_floor = metrics.frechet_distance(split["test_x"][:1000], split["test_x"][1000:])
    assert scores["frechet_distance"] > 20 * real_floor


class FirstColumns(torch.nn.Module):
    """A feature extractor that passes the first 8 values of each input through."""

    num_features = 8

    def forward(self, x):
        return x.flatten(1)[:, :8]


def test_frechet_distance_agrees_with_an_independent_computation():
    # N(0, I) against N(0.5, diag(1, 1, 1, 1, 4, 4, 4, 4)) in 8 dimensions: the distance
    # between the two Gaussians is 8 * 0.5^2 + 4 * (2 - 1)^2 = 6
    g = torch.Generator().manual_seed(0)
    real = torch.randn(20000, 8, generator=g, dtype=torch.float64)
    scale = torch.tensor([1.0] * 4 + [2.0] * 4, dtype=torch.float64)
    fake = 0.5 + scale * torch.randn(20000, 8, generator=g, dtype=torch.float64)
    ours = metrics._frechet_distance(fake.float(), real.float(), FirstColumns())
    # NumPy alone: tr sqrt(S1 S2) is the sum of the square roots of S1 S2's eigenvalues
    a, b = fake.numpy(), real.numpy()
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2)
                - 2 * np.sqrt(np.linalg.eigvals(s1 @ s2)).real.sum())
    assert ours == pytest.approx(expected, rel=1e-4)
    assert ours == pytest.approx(6.0, abs=0.15)
    assert metrics._frechet_distance(real[:10000].float(), real[10000:].float(), FirstColumns()) < 0.01


def test_floor_is_training_digits_against_the_test_split(split):
    floor = metrics.real_floor()
    assert 0 < floor < 0.01 * metrics.frechet_distance(torch.rand(1000, 1, 28, 28) * 2 - 1)
    # the same as scoring 10,000 training digits as if they were samples
    train = torch.cat([split["train_x"], split["val_x"]])
    assert metrics.frechet_distance(train[:10000]) == pytest.approx(floor, rel=0.3)


def test_memorisation_flags_training_digits_and_not_test_digits(split):
    train = split["train_x"][:1000]
    copies = metrics.memorisation(train)
    assert copies["near_copies"] == 1.0 and copies["memorisation_ratio"] < 0.05
    # copies with a little noise on every pixel are still copies
    g = torch.Generator().manual_seed(0)
    noisy = (train + 0.05 * torch.randn(train.shape, generator=g)).clamp(-1, 1)
    assert metrics.memorisation(noisy)["near_copies"] > 0.9
    fresh = metrics.memorisation(split["test_x"][5000:6000])
    assert 0.9 < fresh["memorisation_ratio"] < 1.1 and fresh["near_copies"] < 0.05
    # the distance itself: 0 for a training digit, its pixel distance for a shifted one
    d = metrics.nearest_training_distance(torch.cat([train[:1], train[:1].roll(3, dims=-1)]))
    assert d[0] < 0.05 and d[1] > 1


def test_images_on_another_scale_are_refused_with_the_conversion(split):
    real = split["test_x"][:300]  # floats (300, 1, 28, 28) in [-1, 1]
    pixels = ((real + 1) * 127.5).round().to(torch.uint8)  # raw MNIST: once scored FD ~1e7
    with pytest.raises(ValueError, match=r"uint8, the metrics take floats in \[-1, 1\]: for "
                       r"pixels 0..255, images.float\(\) / 127.5 - 1"):
        metrics.score_images(pixels)
    with pytest.raises(ValueError, match=r"range over \[0, 255\]; the metrics take \[-1, 1\]"):
        metrics.frechet_distance(pixels.float())
    with pytest.raises(ValueError, match="must be 28x28 images"):
        metrics.class_scores(torch.zeros(4, 1, 32, 32))
    with pytest.warns(UserWarning, match="none of the 300 generated images has a pixel below 0"):
        metrics.score_images((real + 1) / 2)  # [0, 1]: once scored 0% legible, silently
    # the conversions it names give back the right scores; other layouts are the same images
    same = metrics.class_scores(real)
    assert metrics.class_scores(pixels.float() / 127.5 - 1) == same
    assert metrics.class_scores(real.view(300, 784)) == metrics.class_scores(real[:, 0]) == same
    assert metrics.class_scores(real[:, 0].numpy()) == same  # as `sample --out x.npy` writes
    with pytest.raises(ValueError, match="must be a torch.Tensor or NumPy array of images, got list"):
        metrics.class_scores(real.tolist())


def test_noise_is_illegible():
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = metrics.score_images(noise)
    assert scores["legible"] < 0.05, "noise must not count as legible (outlier exposure)"
    assert scores["frechet_distance"] > 50


class NoiseRecorder(torch.nn.Module):
    """A stand-in generator that keeps the noise it is given."""

    latent_dim = 100

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, z):
        self.seen.append(z.clone())
        return torch.tanh(z[:, :1, None, None].expand(-1, 1, 28, 28))


def test_each_seed_scores_its_own_samples():
    noise = {}
    for seed in (0, 1):
        recorder = NoiseRecorder()
        metrics.score_generator(recorder, n=2500, seed=seed)
        noise[seed] = torch.cat(recorder.seen)
        assert [len(z) for z in recorder.seen] == [1000, 1000, 500]  # in chunks
        # one stream of N(0, 1) noise per seed
        assert torch.equal(noise[seed], torch.randn(2500, 100, generator=torch.Generator().manual_seed(seed)))
    assert not (noise[0][:, None] == noise[1][None]).all(-1).any(), "seeds 0 and 1 share samples"


def test_too_few_samples_for_a_distance(capsys):
    with pytest.raises(ValueError, match="at least 2 images on each side"):
        metrics.frechet_distance(torch.zeros(1, 1, 28, 28))
    from gan_helpers.checkpoints import PRETRAINED_DIR

    assert main(["evaluate", "--checkpoint", str(PRETRAINED_DIR / "generator-fc.pt"), "--n", "1"]) == 1
    assert "needs at least 2 images" in capsys.readouterr().err


def test_evaluate_cli(tmp_path, capsys):
    assert main(["train", "--max-steps", "3", "--batch-size", "32", "--out", str(tmp_path), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--n", "300", "--json"]) == 0
    import json

    scores = json.loads(capsys.readouterr().out)
    assert scores["n"] == 300 and len(scores["class_histogram"]) == 10
    assert math.isfinite(scores["frechet_distance"]) and 0 <= scores["legible"] <= 1
    # the floor at the same sample count, and how near the samples are to training digits
    assert scores["frechet_floor"] == pytest.approx(metrics.real_floor("mnist", 300))
    # what real digits read, beside the samples' legibility: most of the test split
    test_split = load_images(split="test").scaled()
    assert scores["legible_real"] == pytest.approx(metrics.class_scores(test_split)["legible"])
    assert 0.9 < scores["legible_real"] < 1
    assert 0 <= scores["near_copies"] <= 1 and scores["memorisation_ratio"] > 0
    assert main(["evaluate", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--n", "300"]) == 0
    out = capsys.readouterr().out
    for line in (f"frechet_floor      {scores['frechet_floor']:.2f}   (300 real training digits against the test split)",
                 f"near_copies        {scores['near_copies']:.1%}", "memorisation_ratio ",
                 f"real test digits {scores['legible_real']:.1%})"):
        assert line in out


def test_printed_distance_warns_when_samples_are_few():
    scores = {"n": 500, "frechet_distance": 18.2, "frechet_floor": 9.1, "class_entropy": 0.99,
              "classes_missing": [], "legible": 0.78, "legible_real": 0.95, "inception_score": 7.5,
              "class_histogram": [0.1] * 10, "memorisation_ratio": 1.02, "near_copies": 0.01}
    assert "from 500 samples it reads high" in metrics.format_scores(scores)
    assert "reads high" not in metrics.format_scores({**scores, "n": 10000})


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_shipped_generators_sample_and_score(model, tmp_path, capsys):
    from gan_helpers.checkpoints import PRETRAINED_DIR, pretrained

    path = PRETRAINED_DIR / f"generator-{model}.pt"
    assert path.stat().st_size < 5 * 1024 * 1024
    generator = pretrained(model)
    assert not generator.training
    assert main(["sample", "--checkpoint", str(path), "--n", "10", "--out", str(tmp_path / "s.npy")]) == 0
    import numpy as np

    a = np.load(tmp_path / "s.npy")
    assert a.shape == (10, 28, 28) and a.min() >= -1 and a.max() <= 1
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(path), "--n", "1000", "--json"]) == 0
    import json

    scores = json.loads(capsys.readouterr().out)
    assert scores["classes_missing"] == [] and scores["legible"] > 0.5


def test_pretrained_unknown_name():
    from gan_helpers.checkpoints import CheckpointError, pretrained

    with pytest.raises(CheckpointError, match="choose 'fc' or 'dcgan'"):
        pretrained("vae")


@pytest.fixture
def weights_elsewhere(tmp_path, monkeypatch):
    """Points the package's weights folder at tmp_path for one test, so retraining
    cannot touch the shipped classifier, and forgets any classifier loaded meanwhile."""
    monkeypatch.setattr(metrics, "WEIGHTS_DIR", tmp_path)
    metrics.load_classifier.cache_clear()
    yield tmp_path
    metrics.load_classifier.cache_clear()


def test_train_classifier_cli_retrains_and_writes_the_weights(weights_elsewhere, split, capsys,
                                                              monkeypatch):
    shipped = SHIPPED_CLASSIFIER.read_bytes()
    # 6,000 training and 1,000 validation digits for two epochs instead of 55,000 and
    # 5,000 for 5: enough to show it learns, in seconds.
    small = {k: v[:6000] if k.startswith("train") else v[:1000] if k.startswith("val") else v
             for k, v in split.items()}
    monkeypatch.setattr(metrics, "classifier_split", lambda dataset: small)
    assert main(["train-classifier", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "training on 6,000 training images, 1,000 more held out to choose the epoch" in out
    assert "epoch 2/2: loss " in out and ", validation accuracy " in out
    assert "test-split accuracy: " in out

    path = weights_elsewhere / "classifier-mnist.pt"
    state = torch.load(path, weights_only=True)
    assert state["dataset"] == "mnist"
    assert all(v.dtype == torch.float16 for v in state["model"].values() if v.is_floating_point())
    model = metrics.load_classifier("mnist")  # the new file, not the shipped one
    acc = metrics.accuracy(model, split["test_x"], split["test_y"])
    assert acc > 0.9 and abs(state["test_accuracy"] - acc) < 0.01
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        confidence = torch.softmax(model(noise), dim=1).max(dim=1).values
    assert confidence.max() < metrics.CONFIDENT  # outlier exposure: noise is no digit
    assert SHIPPED_CLASSIFIER.read_bytes() == shipped
