import torch

from gan_helpers import diagrams
from gan_helpers.cli import main
from gan_helpers.models import DCGANDiscriminator, DCGANGenerator


def test_dcgan_shapes_are_read_from_the_models():
    g = diagrams.shape_walk(DCGANGenerator(width=32), torch.zeros(2, 100))
    assert [shape for _, shape in g[1:]] == [(128, 4, 4), (64, 7, 7), (32, 14, 14), (1, 28, 28)]
    assert [name for name, _ in g[1:]] == ["ConvTranspose2d"] * 4
    d = diagrams.shape_walk(DCGANDiscriminator(width=16), torch.zeros(2, 1, 28, 28))
    assert [shape for _, shape in d] == [(1, 28, 28), (16, 14, 14), (32, 7, 7), (64, 4, 4),
                                         (1, 1, 1), (1,)]
    # another width changes the figure with the model
    assert diagrams.shape_walk(DCGANGenerator(width=8), torch.zeros(2, 100))[1] == ("ConvTranspose2d", (32, 4, 4))


def test_the_pictures_name_what_the_seed_shows(tmp_path, capsys):
    texts = " ".join(t.get_text() for t in diagrams.gan_diagram().axes[0].texts)
    for part in ("noise z ~ N(0, 1)", "generator G", "discriminator", "fake images G(z)",
                 "real images x", "valid 1", "fake 0", "detach()", "flows back through D into G"):
        assert part in texts, part
    assert main(["diagrams", "--out", str(tmp_path)]) == 0
    for name in ("gan_diagram.png", "dcgan_diagram.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'gan_diagram.png'}" in out
