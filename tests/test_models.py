import pytest
import torch
from torch import nn

from gan_helpers.models import (
    DCGANDiscriminator,
    DCGANGenerator,
    FCDiscriminator,
    FCGenerator,
    build_models,
    count_parameters,
)


def linear_shapes(module):
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_fc_generator_is_the_seeds():
    g = FCGenerator()
    assert linear_shapes(g) == [(100, 128), (128, 256), (256, 512), (512, 784)]
    acts = [type(m) for m in g.modules() if isinstance(m, (nn.LeakyReLU, nn.Tanh, nn.ReLU, nn.Sigmoid))]
    assert acts == [nn.LeakyReLU] * 3 + [nn.Tanh]
    assert not any(isinstance(m, nn.BatchNorm1d) for m in g.modules())
    # weights + biases of the four layers
    assert count_parameters(g) == 100 * 128 + 128 + 128 * 256 + 256 + 256 * 512 + 512 + 512 * 784 + 784


def test_fc_discriminator_is_the_seeds():
    d = FCDiscriminator()
    assert linear_shapes(d) == [(784, 512), (512, 256), (256, 1)]
    assert isinstance(list(d.modules())[-1], nn.Sigmoid)
    assert count_parameters(d) == 784 * 512 + 512 + 512 * 256 + 256 + 256 + 1
    assert not any(isinstance(m, nn.Sigmoid) for m in FCDiscriminator(logits=True).modules())


def test_fc_generator_batchnorm_option():
    g = FCGenerator(batchnorm=True)
    assert [m.num_features for m in g.modules() if isinstance(m, nn.BatchNorm1d)] == [256, 512]
    assert linear_shapes(g) == linear_shapes(FCGenerator())


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_shapes_and_ranges(model):
    torch.manual_seed(0)
    g, d = build_models(model)
    z = torch.randn(5, 100)
    x = g(z)
    assert x.shape == (5, 1, 28, 28)
    assert x.min() >= -1 and x.max() <= 1
    p = d(x)
    assert p.shape == (5, 1)
    assert ((p > 0) & (p < 1)).all()
    # flat images are accepted too
    assert d(x.view(5, 784)).shape == (5, 1)
    _, d_logits = build_models(model, logits=True)
    d_logits.load_state_dict(d.state_dict())
    d.eval(), d_logits.eval()
    torch.testing.assert_close(torch.sigmoid(d_logits(x)), d(x))


def test_dcgan_follows_the_seed_rules():
    g, d = DCGANGenerator(), DCGANDiscriminator()
    for net in (g, d):
        kinds = {type(m) for m in net.modules()}
        assert not kinds & {nn.Linear, nn.MaxPool2d, nn.AvgPool2d}, "no FC layers, no pooling"
        assert any(issubclass(k, nn.BatchNorm2d) for k in kinds)
    assert {type(m) for m in g.modules()} >= {nn.ConvTranspose2d, nn.ReLU, nn.Tanh}
    assert nn.LeakyReLU in {type(m) for m in d.modules()} and nn.ReLU not in {type(m) for m in d.modules()}
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (2, 2) for c in convs[:-1])
    # no BatchNorm right after G's last layer nor right after D's input layer
    g_layers, d_layers = list(g.net), list(d.net)
    assert isinstance(g_layers[-2], nn.ConvTranspose2d) and isinstance(g_layers[-1], nn.Tanh)
    assert isinstance(d_layers[1], nn.LeakyReLU)


def test_dcgan_shape_walk():
    g = DCGANGenerator()
    x = torch.randn(2, 100).view(2, 100, 1, 1)
    shapes = []
    for layer in g.net:
        x = layer(x)
        if isinstance(layer, nn.ConvTranspose2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(256, 4, 4), (128, 7, 7), (64, 14, 14), (1, 28, 28)]
    d = DCGANDiscriminator()
    x = torch.randn(2, 1, 28, 28)
    shapes = []
    for layer in d.net:
        x = layer(x)
        if isinstance(layer, nn.Conv2d):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 14, 14), (128, 7, 7), (256, 4, 4), (1, 1, 1)]


def test_dcgan_init_is_normal_002():
    torch.manual_seed(0)
    g = DCGANGenerator()
    w = torch.cat([m.weight.flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.mean().item()) < 1e-3
    assert abs(w.std().item() - 0.02) < 1e-3


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_wrong_latent_size_is_a_clear_error(model):
    g, _ = build_models(model)
    with pytest.raises(ValueError, match=r"expects noise of shape \(N, 100\), got \(3, 64\)"):
        g(torch.randn(3, 64))
    # pytorch/examples' DCGAN noise, (N, nz, 1, 1): told how to pass it, not to change latent_dim
    with pytest.raises(ValueError, match=r"got \(3, 100, 1, 1\)\. Pass it as \(N, 100\): z.flatten\(1\)"):
        g(torch.randn(3, 100, 1, 1))
    with pytest.raises(ValueError, match=r"got \(100,\)\. Draw it with torch.randn\(N, 100\): one vector"):
        g(torch.randn(100))


@pytest.mark.parametrize("model", ["fc", "dcgan"])
@pytest.mark.parametrize("shape", [(3, 3, 28, 28), (3, 1, 32, 32), (3, 100), (28, 28)])
def test_wrong_image_shape_is_a_clear_error(model, shape):
    _, d = build_models(model)
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 1, 28, 28\) or \(N, 784\), got"):
        d(torch.randn(*shape))


@pytest.mark.parametrize(
    "shape,fix",
    [
        ((1, 28, 28), "A single image needs a batch axis: x.unsqueeze(0)."),
        ((5, 28, 28), "A batch of 28x28 images needs its channel axis: x.unsqueeze(1)."),
        ((28, 28), "A single image needs a batch axis: x.view(1, 1, 28, 28)."),
        ((784,), "A single image needs a batch axis: x.view(1, 1, 28, 28)."),
        ((5, 3, 28, 28), "These images have 3 channels; the course's networks take grey images"),
        ((5, 1, 64, 64), "The course's networks take 28x28 grey images"),
    ],
)
def test_wrong_image_shape_names_the_fix(shape, fix):
    _, d = build_models("fc")
    with pytest.raises(ValueError) as err:
        d(torch.randn(*shape))
    assert fix in str(err.value)
    if "x." in fix:  # the fix it names works
        x = torch.randn(*shape)
        fixed = eval(fix.split(": ")[1].rstrip("."), {"x": x})
        assert d(fixed).shape == (fixed.shape[0], 1)


@pytest.mark.parametrize("model", ["fc", "dcgan"])
def test_wrong_dtype_names_the_fix(model):
    g, d = build_models(model)
    pixels = torch.randint(0, 256, (5, 1, 28, 28), dtype=torch.uint8)  # raw MNIST
    with pytest.raises(ValueError, match=r"weights but got images of dtype uint8\. Scale pixels"):
        d(pixels)
    assert d(pixels.float() / 127.5 - 1).shape == (5, 1)  # the fix it names works
    with pytest.raises(ValueError, match=r"got noise of dtype float64\. Convert them with "
                       r"\.to\(torch\.float32\)\. \(torch\.from_numpy keeps numpy's float64"):
        g(torch.randn(5, 100, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # mixed dtypes on purpose: allowed
        assert d(g(torch.randn(5, 100))).shape == (5, 1)


@pytest.mark.parametrize("build, message", [
    (lambda: FCGenerator(latent_dim=0), "FCGenerator: latent_dim must be a positive whole number (int), got 0"),
    (lambda: DCGANGenerator(width=32.0), "DCGANGenerator: width must be a positive whole number (int), got 32.0"),
    (lambda: DCGANDiscriminator(width=-8), "DCGANDiscriminator: width must be a positive whole number (int), got -8"),
])
def test_impossible_layer_sizes_are_named(build, message):
    with pytest.raises(ValueError) as err:
        build()
    assert str(err.value) == message


def test_dcgan_discriminator_width_can_differ_from_the_generator():
    g, d = build_models("dcgan", width=32, d_width=16)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 1]
    assert [m.out_channels for m in g.modules() if isinstance(m, nn.ConvTranspose2d)] == [128, 64, 32, 1]
    assert d(g(torch.randn(3, 100))).shape == (3, 1)
    _, same = build_models("dcgan", width=32)
    assert next(same.modules()).net[0].out_channels == 32


def test_unknown_model_name():
    with pytest.raises(ValueError, match="choose one of fc, dcgan"):
        build_models("vae")
