"""Probes: run a student's network on controlled inputs and look at what each layer
passes on (sizes, activations, output squashing, shapes, functional layers)."""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from .exercise import Mistake


def _linear_sizes(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def _build(cls_or_obj, *args, **kwargs):
    """Instantiate a class (or call a factory); copy instances, which the checks may put
    in eval mode or change. The checks feed CPU tensors, so a model moved to a GPU (in
    the notebook or in its own ``__init__``) is checked on a copy on the CPU."""
    if isinstance(cls_or_obj, nn.Module):
        model = copy.deepcopy(cls_or_obj)
    else:
        model = cls_or_obj(*args, **kwargs)
    return model.cpu() if isinstance(model, nn.Module) else model


def _run_hooked(model: nn.Module, x: torch.Tensor, register: Callable):
    """Run ``model`` on ``x`` (no grad) with the hooks that ``register(module)`` returns
    (a list) for each of its modules, removed afterwards; returns what the model gave."""
    hooks = [h for m in model.modules() for h in register(m)]
    try:
        with torch.no_grad():
            return model(x)
    finally:
        for h in hooks:
            h.remove()


def _run_leaves(model: nn.Module, x: torch.Tensor) -> list[tuple]:
    """Run ``model`` on ``x``; (module, input, output) of each leaf module, in the order
    they ran. Clones: an inplace activation would otherwise overwrite what was recorded."""
    ran = []

    def register(m: nn.Module) -> list:
        if any(True for _ in m.children()):
            return []
        seen = {}
        return [m.register_forward_pre_hook(
                    lambda _, a: seen.__setitem__("in", a[0].detach().clone())),
                m.register_forward_hook(
                    lambda mod, a, out: ran.append((mod, seen.pop("in"), out.detach().clone())))]

    _run_hooked(model, x, register)
    return ran


def _execution_order(model: nn.Module, x: torch.Tensor) -> list[nn.Module]:
    """The leaf modules of ``model`` in the order they run on ``x``."""
    return [m for m, _, _ in _run_leaves(model, x)]


def _links(model: nn.Module, x: torch.Tensor, kind: type) -> list[list[tuple]]:
    """Run ``model`` on ``x``; for each pair of consecutive ``kind`` layers (in the order
    they ran), the (before, after) tensor pairs that lead from the first one's output to
    the second one's input: each leaf module that ran in between (what it received and
    gave) and each stretch of plain code (what one module gave and the next received)."""
    ran = _run_leaves(model, x)
    at = [i for i, (m, _, _) in enumerate(ran) if isinstance(m, kind)]
    chains = []
    for i, j in zip(at, at[1:]):
        values = [ran[i][2]] + [t for _, a, out in ran[i + 1:j] for t in (a, out)] + [ran[j][1]]
        chains.append(list(zip(values, values[1:])))
    return chains


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    """Whether ``b`` holds the values of ``a`` (in any shape of as many elements)."""
    return a.numel() == b.numel() and torch.allclose(b, a.reshape(b.shape), atol=atol)


def _is_relu(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the step a -> b is a ReLU that shows as one: some inputs were negative."""
    return bool((a < -1e-3).any()) and _same(torch.relu(a), b)


def _is_leaky_relu(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the step a -> b is a LeakyReLU of any slope in (0, 0.9): inputs >= 0
    pass unchanged, negative ones are all scaled by the same small factor."""
    if a.numel() != b.numel():
        return False
    b = b.reshape(a.shape)
    negative = a < -1e-3
    if not negative.any() or not _same(a[a >= 0], b[a >= 0]):
        return False
    ratio = b[negative] / a[negative]
    return 0 < ratio.min().item() and ratio.max().item() < 0.9 and torch.allclose(
        ratio, ratio.median().expand_as(ratio), atol=1e-3)


def _check_leaky_relu_between(links: list[tuple], k: int, layer: str) -> None:
    """Somewhere on the way from layer k to layer k + 1 (``links``, from ``_links``),
    LeakyReLU(0.2) must be applied, as a module or as a function, before or after a
    BatchNorm. A ReLU, no activation and another slope each get their own message."""
    # On inputs >= 0 LeakyReLU changes nothing, so a step only counts as one if its
    # input had negative values (after a ReLU, what follows would look like one).
    if not links or any((a < -1e-3).any() and _same(nn.functional.leaky_relu(a, 0.2), b)
                        for a, b in links):
        return
    if not all(a.numel() == b.numel() for a, b in links):
        return  # a size mismatch, which the size checks speak to
    if _same(links[0][0], links[-1][1]):
        raise Mistake(f"no activation after {layer} {k}: the seed puts nn.LeakyReLU(0.2) "
                      "after each hidden layer; without it the layers collapse into one linear map.")
    for a, b in links:
        a = a.reshape(b.shape)
        negative = a < -1e-3
        if not negative.any() or _same(a, b):
            continue
        if _is_relu(a, b):
            raise Mistake(f"ReLU after {layer} {k}: use nn.LeakyReLU(0.2), as the seed does; "
                          "its small negative slope keeps units from dying (notebook 2).")
        if _is_leaky_relu(a, b):
            slope = (b[negative] / a[negative]).median().item()
            raise Mistake(f"LeakyReLU with slope {slope:.2g} after {layer} {k}: the seed "
                          "uses nn.LeakyReLU(0.2) (PyTorch's default slope is 0.01).")
    raise Mistake(f"no LeakyReLU after {layer} {k}: the seed uses nn.LeakyReLU(0.2) "
                  "after each hidden layer.")


def _check_leaky_relus(model: nn.Module, x: torch.Tensor, kind: type = nn.Linear,
                       layer: str = "hidden layer") -> None:
    """Between each pair of consecutive ``kind`` layers (in the order they run), the
    next one must receive LeakyReLU(0.2) of the previous one's output, possibly with
    BatchNorm before or after it. Checked on the numbers, so ``F.leaky_relu(h, 0.2)``
    counts as much as ``nn.LeakyReLU(0.2)``."""
    for k, links in enumerate(_links(model, x, kind), start=1):
        _check_leaky_relu_between(links, k, layer)


def _last_output(model: nn.Module, x: torch.Tensor, kind: type) -> tuple[torch.Tensor | None, torch.Tensor]:
    """What the last ``kind`` layer to run on ``x`` gave (None if none ran), and what the
    model gave, from one run: a dropout draws new masks at every run."""
    outs: list = []
    result = _run_hooked(model, x, lambda m: [m.register_forward_hook(
        lambda _, a, out: outs.append(out.detach().clone()))] if isinstance(m, kind) else [])
    return (outs[-1] if outs else None), result


def _check_tanh_output(g: nn.Module, z: torch.Tensor, kind: type) -> None:
    """G's output on ``z`` must be tanh of its last ``kind`` layer's output, judged on
    the numbers: a sigmoid, a clamp or tanh / 2 also stay within [-1, 1]."""
    last, out = _last_output(g, z, kind)
    if last is None or _same(torch.tanh(last), out):
        return
    if out.min() >= 0:
        raise Mistake(
            f"output never below 0 (smallest value {out.min():.2f}): a sigmoid draws in "
            "[0, 1], but the real images are scaled to [-1, 1], their background at -1, "
            "so D tells G's images apart at a glance. End G in nn.Tanh() instead.")
    raise Mistake(
        "output is not tanh of the last layer's output: end G in nn.Tanh() (or torch.tanh) "
        "straight after its last layer. tanh draws on the real images' scale, [-1, 1], and "
        "passes a gradient everywhere; a clamp or hardtanh passes none beyond -1 and 1, and "
        "a scaled tanh cannot reach the -1 of the background.")


def _check_not_softmax(p: torch.Tensor) -> None:
    """D's outputs ``p`` all exactly 1 are a softmax over one value."""
    if bool((p == 1).all()):
        raise Mistake(
            "every output is exactly 1: a softmax over D's one output is always 1, so D "
            "cannot say fake. End D in nn.Sigmoid(), which gives each image its own probability.")


def _check_sigmoid_output(d: nn.Module, x: torch.Tensor, kind: type) -> None:
    """D's output on ``x``, within (0, 1), must be the sigmoid of its last ``kind``
    layer's output, judged on the numbers: two sigmoids also stay within (0, 1)."""
    last, p = _last_output(d, x, kind)
    if last is None or _same(torch.sigmoid(last), p):
        return
    raise Mistake(
        "output is not the sigmoid of the last layer's output: end D in one nn.Sigmoid() "
        "straight after its last layer (a second sigmoid squeezes every answer into "
        "0.27 .. 0.73, so D can never be sure).")


def _shape_walk(model: nn.Module, x: torch.Tensor, kind: type) -> tuple[str, bool]:
    """The shapes that ``model``'s ``kind`` layers take and give on ``x``, in the order
    they run, "(4, 1, 28, 28) -> (4, 32, 14, 14) -> ...", ending, where a layer fails,
    with that layer and the shape it could not take; and whether one failed."""
    walk: list[tuple[nn.Module, tuple, tuple | None]] = []

    def register(m: nn.Module) -> list:
        if not isinstance(m, kind):
            return []
        return [m.register_forward_pre_hook(lambda mod, a: walk.append((mod, _shape(a[0]), None))),
                m.register_forward_hook(
                    lambda mod, a, out: walk.__setitem__(-1, (mod, walk[-1][1], _shape(out))))]

    try:
        _run_hooked(model, x, register)
    except Exception:  # noqa: BLE001 - the walk up to the failing layer is the point
        pass
    if not walk:
        return "", False
    shapes = [str(walk[0][1])] + [str(out) for _, _, out in walk if out is not None]
    text = " -> ".join(shapes)
    failed, shape_in, out = walk[-1]
    if out is None:
        text += f", then {failed} fails on {shape_in}"
    return text, out is None


_DCGAN_WALKS = {  # (what the layers are called, the shapes the assignment aims for)
    nn.ConvTranspose2d: (
        "transposed convolutions",
        "(N, 100, 1, 1) -> (N, 128, 4, 4) -> (N, 64, 7, 7) -> (N, 32, 14, 14) -> (N, 1, 28, 28); "
        "a transposed convolution gives (input - 1) x stride - 2 x padding + kernel"),
    nn.Conv2d: (
        "convolutions",
        "(N, 1, 28, 28) -> (N, 32, 14, 14) -> (N, 64, 7, 7) -> (N, 128, 4, 4) -> (N, 1, 1, 1); "
        "a convolution gives floor((input + 2 x padding - kernel) / stride) + 1"),
}


def _walk_advice(walk: str, kind: type) -> str:
    """Advice for a DCGAN whose shapes go astray: the student's ``walk`` (from
    ``_shape_walk``), then the shapes the assignment aims for."""
    layers, aim = _DCGAN_WALKS[kind]
    return f"Your {layers} take {walk}. The aim: {aim}."


def _first_run(model: nn.Module, x: torch.Tensor, kind: type | None = None) -> None:
    """Run ``model`` on ``x`` once, turning the two classic shape slips into advice:
    images reaching a Linear layer unflattened, noise reaching a transposed convolution
    without its 1 x 1 picture axes. With ``kind`` (a DCGAN's convolution type), a
    convolution that cannot take what reaches it (too few channels, a kernel larger than
    the map) gets the walk of shapes through the layers."""
    slips = {  # (PyTorch's words, dimensions of x): the advice
        ("shapes cannot be multiplied", 4):
            "your D passed the images, shape {shape}, to a Linear layer unflattened "
            "(PyTorch: {error}). Flatten them to (N, 784) first: x.view(x.shape[0], -1).",
        ("input to conv_transpose2d", 2):
            "your G passed the noise, shape {shape}, to a ConvTranspose2d as it is "
            "(PyTorch: {error}). View it as a 1 x 1 picture with 100 channels first: "
            "z.view(z.shape[0], -1, 1, 1).",
    }
    try:
        with torch.no_grad():
            model(x)
    except RuntimeError as err:
        for (words, dims), advice in slips.items():
            if words in str(err) and x.dim() == dims:
                raise Mistake(advice.format(shape=tuple(x.shape), error=err)) from err
        walk, failed = _shape_walk(model, x, kind) if kind is not None else ("", False)
        if failed:
            raise Mistake(f"the shapes do not fit (PyTorch: {err}). " + _walk_advice(walk, kind)) from err
        raise


def _batchnorm_after_last(model: nn.Module, x: torch.Tensor, kind: type) -> bool:
    """Whether a BatchNorm runs after the last ``kind`` layer. (In eval mode a fresh
    BatchNorm changes no number, so this is judged on the order the layers run in.)"""
    ran = _execution_order(model, x)
    at = [i for i, m in enumerate(ran) if isinstance(m, kind)]
    return bool(at) and any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in ran[at[-1]:])


class _FunctionLog(torch.overrides.TorchFunctionMode):
    """Records the name of each torch function a forward pass calls, with the shapes
    going in and out: what module hooks miss when a layer is written as F.max_pool2d,
    F.interpolate, F.linear, ``@`` or ``x.mean((2, 3))`` in ``forward``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple, tuple]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = args[0] if args else None
        self.calls.append((getattr(func, "__name__", ""), _shape(first), _shape(out)))
        return out


def _shape(value: object) -> tuple:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else ()


_FULLY_CONNECTED = {"linear", "bilinear", "matmul", "mm", "addmm", "bmm", "einsum",
                    "__matmul__", "__rmatmul__"}
_UPSAMPLING = {"interpolate", "upsample", "upsample_nearest", "upsample_bilinear"}
_REDUCTIONS = {"mean", "sum", "amax", "max", "amin", "nanmean", "logsumexp"}


def _functional_layer(model: nn.Module, x: torch.Tensor) -> str | None:
    """What ``model``'s forward does with plain functions that DCGAN leaves out: a fully
    connected product, pooling, fixed upsampling or a global average over the picture
    (advice for the student), or None."""
    log = _FunctionLog()
    with torch.no_grad(), log:
        model(x)
    for name, shape_in, shape_out in log.calls:
        if name in _FULLY_CONNECTED:
            return (f"a fully connected layer ({name} in your forward): DCGAN is "
                    "all-convolutional, every layer a (transposed) convolution.")
        if "pool" in name:
            return (f"pooling ({name} in your forward): DCGAN resizes with strided "
                    "convolutions (stride 2), so the network learns its own resizing.")
        if name in _UPSAMPLING:
            return (f"fixed upsampling ({name} in your forward): DCGAN's generator "
                    "upsamples with learnt transposed convolutions (nn.ConvTranspose2d, "
                    "stride 2).")
        if name in _REDUCTIONS and len(shape_in) == 4 and shape_in[2] * shape_in[3] > 1 \
                and len(shape_out) < 4:
            return (f"a global average or sum over the picture (x.{name}(...) in your "
                    "forward): DCGAN's discriminator ends with one convolution whose "
                    "kernel covers the whole last map (4x4), giving (N, 1, 1, 1).")
    return None


def _layers_without_batchnorm(model: nn.Module, x: torch.Tensor, kind: type) -> list[int]:
    """The ``kind`` layers (numbered from 1 in the order they run) that no BatchNorm
    follows before the next ``kind`` layer; the last one is not listed."""
    ran = _execution_order(model, x)
    at = [i for i, m in enumerate(ran) if isinstance(m, kind)]
    return [k for k, (i, j) in enumerate(zip(at, at[1:]), start=1)
            if not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in ran[i:j])]
