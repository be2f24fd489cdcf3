"""Training throughput: the seed's loop against the course loop, on the same FC models.

    python bench/speed.py [--seconds 20] [--threads N]

Measures images per second through a full G and D step:

- seed loop: gan.py's loop as written: torchvision's DataLoader with per-image
  transforms, noise from ``np.random.normal``, label tensors built each step, Adam with
  PyTorch's default implementation, D's weight gradients computed in the G step.
- course loop: ``GANTrainer`` with ``recipe="course"``: the data set as one tensor,
  batches by index, fused Adam, D frozen during G's backward.

Then the course loop at batch 256 as a fraction of this machine's limit: the fp32
matmul rate (GFLOP/s of a large square ``torch.mm``) divided by the FLOPs one image
costs in a training step (counted with ``torch.utils.flop_counter.FlopCounterMode``).
The last line is ``ratio: X.XX`` (course / seed images per second at batch 64).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from gan_helpers.data import load_images, seed_dataloader
from gan_helpers.losses import adversarial_loss
from gan_helpers.models import build_models
from gan_helpers.training import GANTrainer, TrainConfig


def seed_loop(images, seconds: float, batch_size: int = 64) -> float:
    """gan.py's training loop, transcribed; returns images per second."""
    torch.manual_seed(0)
    np.random.seed(0)
    generator, discriminator = build_models("fc")
    adversarial = adversarial_loss("bce")
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=0.0002, betas=(0.5, 0.999))
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=0.0002, betas=(0.5, 0.999))
    Tensor = torch.FloatTensor
    done = 0
    start = time.perf_counter()
    while True:
        for imgs, _ in seed_dataloader(images, batch_size):
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
            if time.perf_counter() - start >= seconds:
                return done / (time.perf_counter() - start)


def course_loop(images, seconds: float, batch_size: int) -> float:
    """GANTrainer's course recipe; returns images per second (after a warm-up)."""
    # The seed's FC networks (no BatchNorm in G), so both loops train the same models.
    config = TrainConfig.for_recipe("course", batch_size=batch_size, g_batchnorm=False)
    trainer = GANTrainer(config, data=images)
    trainer.fit(steps=20, progress=False)  # warm-up: first-call allocations
    first = trainer.step
    start = time.perf_counter()
    trainer.fit(seconds=seconds, progress=False)
    return (trainer.step - first) * batch_size / (time.perf_counter() - start)


def flops_per_image(batch_size: int = 256) -> float:
    """FLOPs of one course training step divided by the batch size."""
    trainer = GANTrainer(
        TrainConfig.for_recipe("course", batch_size=batch_size, g_batchnorm=False),
        data=load_images(),
        log=lambda _: None,
    )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="time per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_images()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; data: {len(images)} images")

    seed = seed_loop(images, args.seconds)
    print(f"seed loop,   batch  64: {seed:8.0f} images/s")
    course = course_loop(images, args.seconds, 64)
    print(f"course loop, batch  64: {course:8.0f} images/s")
    course256 = course_loop(images, args.seconds, 256)
    print(f"course loop, batch 256: {course256:8.0f} images/s")

    flops = flops_per_image(256)
    limit = matmul_gflops()
    achieved = course256 * flops / 1e9
    print(f"one image costs {flops / 1e6:.1f} MFLOP per training step (G step + D step)")
    print(f"fp32 matmul limit: {limit:.0f} GFLOP/s; course batch 256 reaches "
          f"{achieved:.0f} GFLOP/s = {achieved / limit:.0%} of it")
    print(f"ratio: {course / seed:.2f}")


if __name__ == "__main__":
    main()
