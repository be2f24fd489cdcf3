"""Training throughput: the seed's loop against the course loop, on the same FC models.

    python bench/speed.py [--seconds 5] [--rounds 5] [--threads N] [--compile]
    python bench/speed.py --device cuda [--seconds 5] [--rounds 5] [--profile]

Measures images per second through a full G and D step:

- seed loop: gan.py's loop as written: torchvision's DataLoader with per-image
  transforms, noise from ``np.random.normal``, label tensors built each step, Adam with
  PyTorch's default implementation, D's weight gradients computed in the G step.
- course loop: ``GANTrainer`` with ``recipe="course"``: the data set as one tensor,
  batches by index, fused Adam, D frozen during G's backward. Timed without the
  course's augmentation of D's inputs (the seed has none), and once more with it.
- course DCGAN at batch 64, in the channels-last memory format the trainer uses on the
  CPU and in PyTorch's default layout, to show what the format is worth.
- the course loop under ``torch.autocast("cpu", dtype=torch.bfloat16)``: matrix
  products in bfloat16, which this CPU may run faster (AVX512-BF16, AMX). The course
  does not train this way (it changes the numerics); the rows show what it would buy.
- the course loop with one pass of D over real and fake images serving both steps
  (``shared_forward_step``): D's weights do not change in G's step, so the scores of
  the fakes that D's step needs are the ones G's step computed. Same maths, one forward
  pass of D over the fakes fewer; the course does not train this way (its step is the
  seed's, which the notebooks teach); the row shows what it would buy.
- with ``--compile``, the course loop with G and D wrapped in ``torch.compile``
  (TorchInductor, which needs a C++ compiler), at batch 64 and 256: whether fusing the
  small element-wise operations between the matrix products pays on this CPU. The
  course does not compile (it would cost every run the compilation time first).

With ``--device DEVICE`` (cpu, cuda, ...) the bench times something else: the course's
two recipes as ``train`` runs them (FC GAN and DCGAN, course defaults) on that device, in
steps and images per second, medians over ``--rounds``. The seed comparison and the
matmul limit are measures of this CPU and are left out, and so is the ratio line. With
``--profile`` as well (CUDA only), ``torch.profiler`` then follows 100 more steps of each
recipe and the bench prints how much of a step the GPU spends computing (its kernels'
time over the unprofiled step time) and how many kernels a step launches: what keeps
small networks from using a large GPU.

The machine's speed drifts (a shared 2-core VM here: the same loop has measured 6k and
9k images/s minutes apart), so the loops take turns: each round runs every loop for
``--seconds`` and the figures are medians over ``--rounds``, with the ratio taken
within each round, where all loops saw the same machine.

Then the course loop at batch 256 as a fraction of this machine's limit: the fp32
matmul rate (GFLOP/s of a large square ``torch.mm``, measured in every round) divided
by the FLOPs one image costs in a training step (counted with
``torch.utils.flop_counter.FlopCounterMode``). The last line is ``ratio: X.XX``
(course / seed images per second at batch 64, median over rounds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from gan_helpers import trainer as trainer_module
from gan_helpers.config import TrainConfig, resolve_device
from gan_helpers.data import ImageSet, load_images, seed_dataloader
from gan_helpers.losses import adversarial_loss, discriminator_loss, generator_loss
from gan_helpers.models import MODEL_NAMES, MODEL_TITLES, build_models
from gan_helpers.step import StepStats, train_step
from gan_helpers.trainer import GANTrainer


class SeedLoop:
    """gan.py's training loop, transcribed, run in slices of wall time."""

    def __init__(self, images: ImageSet, batch_size: int = 64) -> None:
        torch.manual_seed(0)
        np.random.seed(0)
        self.images, self.batch_size = images, batch_size
        self.generator, self.discriminator = build_models("fc")
        self.adversarial = adversarial_loss("bce")
        betas = (0.5, 0.999)
        self.optimizer_g = torch.optim.Adam(self.generator.parameters(), lr=0.0002, betas=betas)
        self.optimizer_d = torch.optim.Adam(self.discriminator.parameters(), lr=0.0002, betas=betas)
        self.batches = iter(())

    def _next_batch(self) -> torch.Tensor:
        for imgs, _ in self.batches:
            return imgs
        self.batches = iter(seed_dataloader(self.images, self.batch_size))
        return self._next_batch()

    def run(self, seconds: float) -> float:
        """Train for ``seconds``; returns images per second."""
        generator, discriminator, adversarial = self.generator, self.discriminator, self.adversarial
        optimizer_g, optimizer_d = self.optimizer_g, self.optimizer_d
        Tensor = torch.FloatTensor
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            imgs = self._next_batch()
            valid = Tensor(imgs.size(0), 1).fill_(1.0)
            fake = Tensor(imgs.size(0), 1).fill_(0.0)
            real_imgs = imgs.type(Tensor)

            optimizer_g.zero_grad()
            z = Tensor(np.random.normal(0, 1, (imgs.shape[0], 100)))
            gen_imgs = generator(z)
            g_loss = adversarial(discriminator(gen_imgs), valid)
            g_loss.backward()
            optimizer_g.step()

            optimizer_d.zero_grad()
            real_loss = adversarial(discriminator(real_imgs), valid)
            fake_loss = adversarial(discriminator(gen_imgs.detach()), fake)
            d_loss = (real_loss + fake_loss) / 2
            d_loss.backward()
            optimizer_d.step()
            done += imgs.shape[0]
        return done / (time.perf_counter() - start)


def shared_forward_step(generator, discriminator, opt_g, opt_d, criterion, real, z,
                        augment=None, real_label: float = 1.0) -> StepStats:
    """``train_step``'s updates from one forward pass of D: the seed's G step
    and D step, for a BatchNorm-free D without augmentation (the bench's FC loop).

    D scores real and fake images once. G's gradient flows back through D's inputs only
    (``autograd.grad`` on the fakes, then into G), D's gradient into its weights only;
    the fake batch D learns from is the one G was scored on, as with ``detach()``.
    real: (B, 1, 28, 28) in [-1, 1]; z: (B, latent_dim). Returns the step's StepStats.
    """
    if augment is not None:
        raise ValueError("shared_forward_step times the step without augmentation")
    opt_g.zero_grad(set_to_none=True)
    opt_d.zero_grad(set_to_none=True)
    fake = generator(z)
    scored = fake.detach().requires_grad_()
    d_on_real, d_on_fake = discriminator(torch.cat([real, scored])).split(
        [real.shape[0], scored.shape[0]])
    g_loss = generator_loss(criterion, d_on_fake)
    (towards_valid,) = torch.autograd.grad(g_loss, scored, retain_graph=True)
    fake.backward(towards_valid)
    opt_g.step()
    d_loss = discriminator_loss(criterion, d_on_real, d_on_fake, real_label)
    d_loss.backward(inputs=list(discriminator.parameters()))
    opt_d.step()
    return StepStats(g_loss.detach(), d_loss.detach(), d_on_real.detach().mean(),
                     d_on_fake.detach().mean())


class CourseLoop:
    """GANTrainer's course recipe on the seed's FC networks (no BatchNorm in G, so both
    loops train the same models), run in slices of wall time. ``augment`` 0 (the
    default here) leaves out the course's augmentation of D's inputs, work the seed's
    step does not do; the bench times it separately. ``model="dcgan"`` times the course
    DCGAN recipe instead, in the channels-last memory format the trainer uses on the
    CPU or, with ``channels_last=False``, in PyTorch's default layout. ``bf16`` runs the
    steps under bfloat16 autocast (speed only; the course trains in float32);
    ``compiled`` wraps G and D in ``torch.compile`` (same maths); ``shared_forward``
    trains with ``shared_forward_step`` in place of the course's step."""

    def __init__(self, images: ImageSet, batch_size: int, augment: int = 0,
                 model: str = "fc", channels_last: bool = True, bf16: bool = False,
                 compiled: bool = False, shared_forward: bool = False) -> None:
        if model == "fc":
            config = TrainConfig.for_recipe(
                "course", batch_size=batch_size, g_batchnorm=False, augment=augment
            )
        else:
            config = TrainConfig.for_recipe("course", model=model, batch_size=batch_size)
        self.trainer = GANTrainer(config, data=images, log=lambda _: None)
        if not channels_last:
            t = self.trainer
            for net in (t.generator, t.discriminator, t.ema_generator):
                net.to(memory_format=torch.contiguous_format)
        if compiled:
            self.trainer.generator = torch.compile(self.trainer.generator)
            self.trainer.discriminator = torch.compile(self.trainer.discriminator)
        self.batch_size = batch_size
        self.bf16 = bf16
        self.step_fn = shared_forward_step if shared_forward else train_step

    def run(self, seconds: float) -> float:
        first = self.trainer.step
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16), \
                mock.patch.object(trainer_module, "train_step", self.step_fn):
            self.trainer.fit(seconds=seconds, progress=False)
        return (self.trainer.step - first) * self.batch_size / (time.perf_counter() - start)


def time_shares(loop: CourseLoop, steps: int = 100) -> dict[str, float]:
    """Where a course step's CPU time goes, from ``torch.profiler`` (self time per op):
    shares for matrix products, Adam, and everything else."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        loop.trainer.fit(steps=loop.trainer.step + steps, progress=False)
    groups = {"matrix products": ("aten::mm", "aten::addmm", "aten::bmm"),
              "Adam": ("aten::_fused_adam_",)}
    self_us = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(self_us.values())
    shares = {g: sum(self_us.get(k, 0.0) for k in keys) / total for g, keys in groups.items()}
    shares["everything else"] = 1.0 - sum(shares.values())
    return shares


def flops_per_image(images: ImageSet, batch_size: int = 256) -> float:
    """FLOPs of one course training step divided by the batch size."""
    trainer = CourseLoop(images, batch_size).trainer
    with FlopCounterMode(display=False) as counter:
        trainer.fit(steps=1, progress=False)
    return counter.get_total_flops() / batch_size


def matmul_gflops(n: int = 1024, repeats: int = 20) -> float:
    """fp32 GFLOP/s of an n x n matmul: the machine's practical limit for these models."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def gpu_busy(trainer: GANTrainer, steps: int = 100) -> tuple[float, float]:
    """Follow ``steps`` training steps of ``trainer`` (on a CUDA device) with
    ``torch.profiler``: the GPU's kernel time in seconds per step, and the kernels
    launched per step."""
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        first = trainer.step
        trainer.fit(steps=first + steps, progress=False)
        torch.cuda.synchronize(trainer.device)
    done = trainer.step - first
    events = prof.key_averages()
    # Device-side events only: the CPU ops that launched them carry the same time again.
    kernel_us = sum(e.self_device_time_total for e in events
                    if e.device_type == torch.autograd.DeviceType.CUDA)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC"))
    return kernel_us / 1e6 / done, launches / done


def recipe_rates(images: ImageSet, device: str, seconds: float, rounds: int,
                 profile_gpu: bool = False) -> None:
    """Print the steps and images per second of the course's FC and DCGAN recipes, as
    ``train`` runs them, on ``device``: medians over ``rounds`` of ``seconds`` each. With
    ``profile_gpu`` (CUDA), then each recipe's GPU share of a step (see ``gpu_busy``)."""
    trainers = {
        MODEL_TITLES[m]: GANTrainer(TrainConfig.for_recipe("course", model=m), data=images,
                                    device=device, log=lambda _: None)
        for m in MODEL_NAMES
    }
    for trainer in trainers.values():
        trainer.fit(seconds=1.0, progress=False)  # warm-up: allocations, kernel choice
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            first, start = trainer.step, time.perf_counter()
            trainer.fit(seconds=seconds, progress=False)  # syncs every step: reads the losses
            rates[name].append((trainer.step - first) / (time.perf_counter() - start))
    for name, trainer in trainers.items():
        r, batch = rates[name], trainer.config.batch_size
        print(f"course {name} on {trainer.device}, batch {batch}: {statistics.median(r):.0f} "
              f"steps/s, {statistics.median(r) * batch:.0f} images/s (median of {rounds}; "
              f"range {min(r):.0f}-{max(r):.0f} steps/s)")
    if not profile_gpu:
        return
    for name, trainer in trainers.items():
        kernel_s, launches = gpu_busy(trainer)
        step_s = 1 / statistics.median(rates[name])
        print(f"course {name} on {trainer.device}: the GPU computes {kernel_s * 1e3:.2f} ms of "
              f"each {step_s * 1e3:.2f}-ms step ({kernel_s / step_s:.0%}), in {launches:.0f} "
              "kernel launches (torch.profiler, 100 steps)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per loop per round (default 5)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5; the figures are medians)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the course loop with G and D under torch.compile")
    parser.add_argument("--device", default=None,
                        help="time only the course's FC and DCGAN recipes, as trained, on this "
                        "device (cpu, cuda, cuda:N, mps)")
    parser.add_argument("--profile", action="store_true",
                        help="with --device cuda: also print how much of a step the GPU "
                        "computes, and its kernel launches a step (torch.profiler)")
    return parser


def _loops(images, compiled: bool) -> dict:
    """The loops a round times, by label (each a ``SeedLoop`` or ``CourseLoop``)."""
    loops = {"seed 64": SeedLoop(images), "course 64": CourseLoop(images, 64),
             "course 256": CourseLoop(images, 256), "course 64 +aug": CourseLoop(images, 64, 2),
             "DCGAN 64": CourseLoop(images, 64, model="dcgan"),
             "DCGAN 64 NCHW": CourseLoop(images, 64, model="dcgan", channels_last=False),
             "course 64 bf16": CourseLoop(images, 64, bf16=True),
             "course 256 bf16": CourseLoop(images, 256, bf16=True),
             "course 64 shared D pass": CourseLoop(images, 64, shared_forward=True)}
    if compiled:
        loops["course 64 compiled"] = CourseLoop(images, 64, compiled=True)
        loops["course 256 compiled"] = CourseLoop(images, 256, compiled=True)
    return loops


def _warm_up(loops: dict) -> None:
    """One second of each loop: first-call allocations, caches, compilation."""
    for name, loop in loops.items():
        start = time.perf_counter()
        try:
            loop.run(1.0)  # warm-up: first-call allocations, caches, compilation
        except Exception as err:
            if not name.endswith("compiled"):
                raise
            first_line = (str(err).strip().splitlines() or [""])[0]
            raise SystemExit(f"--compile: torch.compile failed ({type(err).__name__}: "
                             f"{first_line}). TorchInductor needs a working C++ compiler "
                             "(g++ or clang); run without --compile.") from err
        if name.endswith("compiled"):
            print(f"{name}: warm-up, compilation included, took "
                  f"{time.perf_counter() - start:.0f} s")


def _time_rounds(loops: dict, images, seconds: float, rounds: int) -> tuple:
    """Each loop for ``seconds`` per round, in turns; returns (images/s by loop, matmul
    limits, course/seed ratios, shares of the matmul limit, FLOP per image)."""
    rates: dict[str, list[float]] = {name: [] for name in loops}
    limits, ratios, shares = [], [], []
    flops = flops_per_image(images, 256)
    for round_ in range(1, rounds + 1):
        for name, loop in loops.items():
            rates[name].append(loop.run(seconds))
        limits.append(matmul_gflops())
        ratios.append(rates["course 64"][-1] / rates["seed 64"][-1])
        shares.append(rates["course 256"][-1] * flops / 1e9 / limits[-1])
        print(f"round {round_}: " + ", ".join(f"{n} {r[-1]:.0f}" for n, r in rates.items())
              + f" images/s; matmul {limits[-1]:.0f} GFLOP/s; ratio {ratios[-1]:.2f}")

    return rates, limits, ratios, shares, flops


def _report(loops: dict, rates: dict, limits: list, ratios: list, shares: list, flops: float,
            rounds: int, compiled: bool) -> None:
    """The medians over rounds, and what they mean against the seed loop and the matmul limit."""
    median = {name: statistics.median(r) for name, r in rates.items()}
    print(f"seed loop,   batch  64: {median['seed 64']:8.0f} images/s (median of {rounds})")
    print(f"course loop, batch  64: {median['course 64']:8.0f} images/s")
    print(f"course loop, batch 256: {median['course 256']:8.0f} images/s")
    print(f"course loop, batch  64, with its augmentation of D's inputs (2 px): "
          f"{median['course 64 +aug']:.0f} images/s")
    layout = [a / b for a, b in zip(rates["DCGAN 64"], rates["DCGAN 64 NCHW"])]
    print(f"course DCGAN, batch 64: {median['DCGAN 64']:.0f} images/s channels-last (as trained), "
          f"{median['DCGAN 64 NCHW']:.0f} images/s in the default layout (NCHW); channels-last / "
          f"NCHW within a round: median {statistics.median(layout):.2f}, "
          f"range {min(layout):.2f}-{max(layout):.2f}")
    bf16_ratio = [a / b for a, b in zip(rates["course 64 bf16"], rates["seed 64"])]
    bf16_share = [r * flops / 1e9 / limit for r, limit in zip(rates["course 256 bf16"], limits)]
    print(f"course loop with bf16 matrix products (autocast; not how the course trains): "
          f"batch 64 {median['course 64 bf16']:.0f} images/s, {statistics.median(bf16_ratio):.2f}x "
          f"the seed loop; batch 256 {median['course 256 bf16']:.0f} images/s, "
          f"{statistics.median(bf16_share):.0%} of the fp32 matmul limit (medians over rounds)")
    shared_ratio = [a / b for a, b in zip(rates["course 64 shared D pass"], rates["seed 64"])]
    shared_gain = [a / b for a, b in zip(rates["course 64 shared D pass"], rates["course 64"])]
    print(f"course loop with one pass of D serving both steps (not how the course trains): "
          f"batch 64 {median['course 64 shared D pass']:.0f} images/s, "
          f"{statistics.median(shared_ratio):.2f}x the seed loop; shared / course step within "
          f"a round: median {statistics.median(shared_gain):.2f}, "
          f"range {min(shared_gain):.2f}-{max(shared_gain):.2f}")
    if compiled:
        compiled_ratio = [a / b for a, b in zip(rates["course 64 compiled"], rates["course 64"])]
        print(f"course loop under torch.compile: batch 64 {median['course 64 compiled']:.0f} "
              f"images/s, batch 256 {median['course 256 compiled']:.0f} images/s; compiled / "
              f"eager at batch 64 within a round: median {statistics.median(compiled_ratio):.2f}")
    print(f"one image costs {flops / 1e6:.1f} MFLOP per training step (G step + D step)")
    print(f"fp32 matmul limit: {statistics.median(limits):.0f} GFLOP/s; course batch 256 reaches "
          f"{statistics.median(shares):.0%} of it (median over rounds; "
          f"range {min(shares):.0%}-{max(shares):.0%})")
    shares = time_shares(loops["course 64"])
    print("course loop, batch 64, CPU time: " + ", ".join(f"{g} {v:.0%}" for g, v in shares.items()))
    ceiling = statistics.median(ratios) / shares["matrix products"]
    print(f"if only its matrix products took time, the course loop would reach {ceiling:.1f}x the seed loop")
    print(f"ratio range over rounds: {min(ratios):.2f}-{max(ratios):.2f}")
    print(f"ratio: {statistics.median(ratios):.2f}")


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if not args.seconds > 0 or args.rounds < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--seconds must be positive, --rounds and --threads at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = None
    if args.device is not None:
        if args.compile:
            parser.error("--compile times the CPU loops of the default bench; leave it out "
                         "with --device")
        try:
            device = resolve_device(args.device)
        except ValueError as err:
            parser.error(str(err))
    if args.profile and (device is None or device.type != "cuda"):
        parser.error("--profile measures a CUDA GPU's share of a step: use it with --device cuda")
    images = load_images()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data: {len(images)} images")
    if device is not None:
        if device.type == "cuda":
            print(f"device: {torch.cuda.get_device_name(device)}")
        recipe_rates(images, str(device), args.seconds, args.rounds, args.profile)
        return

    loops = _loops(images, args.compile)
    _warm_up(loops)
    rates, limits, ratios, shares, flops = _time_rounds(loops, images, args.seconds, args.rounds)
    _report(loops, rates, limits, ratios, shares, flops, args.rounds, args.compile)

if __name__ == "__main__":
    main()
