"""The checks of the four networks: the FC generator and discriminator (the seed's
sizes, LeakyReLU, tanh and sigmoid at the ends) and the DCGAN pair (the DCGAN rules)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .exercise import Mistake
from .probes import (_batchnorm_after_last, _build, _check_leaky_relus, _check_not_softmax,
    _check_sigmoid_output, _check_tanh_output, _execution_order, _first_run,
    _functional_layer, _is_leaky_relu, _is_relu, _layers_without_batchnorm, _linear_sizes,
    _links, _shape_walk, _walk_advice)


def _check_generator(student) -> list[str]:
    g = _build(student)
    sizes = _linear_sizes(g)
    expected = [(100, 128), (128, 256), (256, 512), (512, 784)]
    if sizes != expected:
        raise Mistake(
            f"wrong layer sizes: the seed's generator is 100 -> 128 -> 256 -> 512 -> 784, "
            f"your linear layers are {' , '.join(f'{i}->{o}' for i, o in sizes) or 'none'}. "
            "Use nn.Linear(100, 128), nn.Linear(128, 256), nn.Linear(256, 512), nn.Linear(512, 784)."
        )
    z = torch.randn(5, 100)
    _check_leaky_relus(g, z)
    with torch.no_grad():
        out = g(z)
    if tuple(out.shape) != (5, 1, 28, 28):
        raise Mistake(
            f"wrong output shape: for noise (5, 100) G must return images (5, 1, 28, 28), "
            f"yours returns {tuple(out.shape)}. Reshape the 784 outputs with "
            ".view(z.shape[0], 1, 28, 28)."
        )
    with torch.no_grad():
        loud = g(z * 100)  # large inputs push an unsquashed output far beyond 1
    if loud.abs().max() > 1.0 + 1e-6:
        raise Mistake(
            f"output outside [-1, 1] (max |x| = {loud.abs().max():.1f}): the real images are "
            "scaled to [-1, 1], so G must end in nn.Tanh() to draw on the same scale."
        )
    _check_tanh_output(g, z, nn.Linear)
    return ["layer sizes 100-128-256-512-784, LeakyReLU, tanh output, shape (N, 1, 28, 28)"]


def _check_discriminator(student) -> list[str]:
    d = _build(student)
    try:
        d_logits = _build(student, logits=True) if not isinstance(student, nn.Module) else None
    except TypeError as err:
        if "logits" not in str(err):
            raise
        raise Mistake(
            "your discriminator takes no logits argument (PyTorch: {err}). Keep the exercise's "
            "def __init__(self, logits=False), and leave out the sigmoid when logits is True "
            "(for BCEWithLogitsLoss).".format(err=err)) from err
    sizes = _linear_sizes(d)
    expected = [(784, 512), (512, 256), (256, 1)]
    if sizes != expected:
        raise Mistake(
            f"wrong layer sizes: the seed's discriminator is 784 -> 512 -> 256 -> 1, your "
            f"linear layers are {' , '.join(f'{i}->{o}' for i, o in sizes) or 'none'}."
        )
    x = torch.randn(6, 1, 28, 28) * 5
    _first_run(d, x)
    _check_leaky_relus(d, x)
    with torch.no_grad():
        p = d(x)
    if tuple(p.shape) != (6, 1):
        fix = ("Return the last layer's (N, 1) as it is, without .squeeze() or .view(-1): the "
               "labels, torch.ones_like(...), take D's shape." if p.dim() < 2 else
               "Flatten the images with x.view(x.shape[0], -1) before the first layer.")
        raise Mistake(
            f"wrong output shape: for images (6, 1, 28, 28) D must return one prediction per "
            f"image, (6, 1); yours returns {tuple(p.shape)}. " + fix
        )
    if not ((p > 0) & (p < 1)).all():
        _check_not_softmax(p)
        raise Mistake("outputs outside (0, 1): with nn.BCELoss, D must end in nn.Sigmoid().")
    _check_sigmoid_output(d, x, nn.Linear)
    if d_logits is not None:
        with torch.no_grad():
            d_logits.load_state_dict(d.state_dict(), strict=False)
            raw = d_logits(x * 20)
        if ((raw > 0) & (raw < 1)).all():
            raise Mistake(
                "double sigmoid: with logits=True your D still ends in a sigmoid, and "
                "BCEWithLogitsLoss applies the sigmoid again. Leave nn.Sigmoid() out when "
                "logits=True."
            )
    return ["layer sizes 784-512-256-1, LeakyReLU, one probability per image, no sigmoid with logits=True"]


def _check_dcgan_generator(student) -> list[str]:
    g = _build(student)
    kinds = {type(m) for m in g.modules()}
    if nn.Linear in kinds:
        raise Mistake("a fully connected layer: DCGAN is all-convolutional; start with a ConvTranspose2d on z viewed as (N, 100, 1, 1).")
    if kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.Upsample}:
        raise Mistake("pooling or fixed upsampling: DCGAN upsamples with learnt transposed convolutions (nn.ConvTranspose2d, stride 2).")
    if nn.ConvTranspose2d not in kinds:
        raise Mistake("no nn.ConvTranspose2d: G must upsample with transposed convolutions.")
    if not any(issubclass(k, nn.BatchNorm2d) for k in kinds):
        raise Mistake("no BatchNorm: DCGAN puts nn.BatchNorm2d after every transposed convolution but the last.")
    z = torch.randn(4, 100)
    g.eval()
    _first_run(g, z, nn.ConvTranspose2d)
    if (problem := _functional_layer(g, z)) is not None:
        raise Mistake(problem)
    if _batchnorm_after_last(g, z, nn.ConvTranspose2d):
        raise Mistake("BatchNorm on the output layer: the DCGAN paper leaves it out of G's "
                      "last layer (and D's first), so that G draws on the images' own scale; "
                      "end with the last transposed convolution, then nn.Tanh().")
    if missing := _layers_without_batchnorm(g, z, nn.ConvTranspose2d):
        raise Mistake(f"no BatchNorm after transposed convolution {missing[0]}: DCGAN puts "
                      "nn.BatchNorm2d after every transposed convolution but the last (before "
                      "the ReLU); it keeps each layer's outputs at a steady scale, which lets "
                      "the deep G learn.")
    # Between two transposed convolutions a ReLU must act, checked on the numbers (so
    # F.relu counts as much as nn.ReLU, before or after a BatchNorm).
    for k, links in enumerate(_links(g, z, nn.ConvTranspose2d), start=1):
        if any(_is_relu(a, b) for a, b in links):
            continue
        leaky = any(_is_leaky_relu(a, b) for a, b in links)
        raise Mistake(
            f"LeakyReLU after transposed convolution {k}: DCGAN's generator uses nn.ReLU "
            "(after the BatchNorm); LeakyReLU belongs to the discriminator." if leaky else
            f"no ReLU after transposed convolution {k}: DCGAN's generator ends every layer "
            "but the last in nn.ReLU (after the BatchNorm)."
        )
    with torch.no_grad():
        out = g(z)
    with torch.no_grad():
        loud = g(z * 100)
    if tuple(out.shape) != (4, 1, 28, 28):
        walk, _ = _shape_walk(g, z, nn.ConvTranspose2d)
        raise Mistake(f"wrong output shape: noise (4, 100) must give (4, 1, 28, 28); yours gives "
                      f"{tuple(out.shape)}. " + _walk_advice(walk, nn.ConvTranspose2d))
    if loud.abs().max() > 1.0 + 1e-6:
        raise Mistake("output outside [-1, 1]: end with nn.Tanh().")
    _check_tanh_output(g, z, nn.ConvTranspose2d)
    return ["transposed convolutions, BatchNorm, ReLU, tanh, (N, 1, 28, 28), no FC or pooling"]


def _check_dcgan_discriminator(student) -> list[str]:
    d = _build(student)
    kinds = {type(m) for m in d.modules()}
    if nn.Linear in kinds:
        raise Mistake("a fully connected layer: DCGAN is all-convolutional; end with a "
                      "Conv2d whose kernel covers the whole last map (4x4), giving (N, 1, 1, 1).")
    if kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d}:
        raise Mistake("pooling: DCGAN's discriminator downsamples with strided convolutions "
                      "(nn.Conv2d with stride=2), so it learns its own downsampling.")
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    if sum(1 for m in convs if max(m.stride) >= 2) < 2:
        raise Mistake("no strided convolutions: halve the picture with nn.Conv2d(..., "
                      "stride=2): 28 -> 14 -> 7 -> 4, then one 4x4 convolution to 1 x 1.")
    if not any(issubclass(k, nn.BatchNorm2d) for k in kinds):
        raise Mistake("no BatchNorm: DCGAN puts nn.BatchNorm2d after every convolution but the "
                      "first and the last.")
    d.eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1  # images in [-1, 1]
    _first_run(d, x, nn.Conv2d)
    if (problem := _functional_layer(d, x)) is not None:
        raise Mistake(problem)
    ran = _execution_order(d, x)
    conv_at = [i for i, m in enumerate(ran) if isinstance(m, nn.Conv2d)]
    if len(conv_at) >= 2 and any(isinstance(m, nn.BatchNorm2d) for m in ran[conv_at[0]:conv_at[1]]):
        raise Mistake("BatchNorm on the first layer: the DCGAN paper leaves it out of D's input "
                      "layer (and G's output layer); put nn.LeakyReLU(0.2) straight after the "
                      "first convolution.")
    if _batchnorm_after_last(d, x, nn.Conv2d):
        raise Mistake("BatchNorm after the last convolution: D's last layer gives each image "
                      "its score, which BatchNorm would shift by the rest of the batch. The "
                      "paper puts it after every convolution but the first and the last; end "
                      "with the 4x4 convolution, then nn.Sigmoid().")
    if missing := [k for k in _layers_without_batchnorm(d, x, nn.Conv2d) if k > 1]:
        raise Mistake(f"no BatchNorm after convolution {missing[0]}: DCGAN puts "
                      "nn.BatchNorm2d after every convolution but the first and the last "
                      "(before the LeakyReLU); it keeps each layer's outputs at a steady "
                      "scale.")
    _check_leaky_relus(d, x, nn.Conv2d, "convolution")
    with torch.no_grad():
        p = d(x)
    if tuple(p.shape) != (4, 1):
        wrong = (f"wrong output shape: images (4, 1, 28, 28) must give one prediction each, "
                 f"(4, 1); yours gives {tuple(p.shape)}. ")
        if p.numel() == 4:
            raise Mistake(wrong + "Reshape with .view(-1, 1).")
        raise Mistake(wrong + _walk_advice(_shape_walk(d, x, nn.Conv2d)[0], nn.Conv2d))
    # A sigmoid keeps even huge scores in [0, 1]: make the last convolution's huge.
    loud = copy.deepcopy(d)
    last = [m for m in _execution_order(loud, x) if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.mul_(1000.0)
        p_loud = loud(x)
    if not (((p > 0) & (p < 1)).all() and ((p_loud >= 0) & (p_loud <= 1)).all()):
        _check_not_softmax(p)
        raise Mistake("outputs outside (0, 1): with nn.BCELoss, D must end in nn.Sigmoid().")
    _check_sigmoid_output(d, x, nn.Conv2d)
    return ["strided convolutions, BatchNorm (not on the first layer), LeakyReLU(0.2), "
            "one probability per image, no FC or pooling"]
