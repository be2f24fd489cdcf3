"""What the dashboard's collapse warning sees along a run: every 500 steps, the class
entropy and share legible of its 256 fixed samples, for a recipe with some options changed.

    python bench/collapse.py --recipe seed --steps 3000
    python bench/collapse.py --steps 3000 ema=0 g_lr_factor=8      # course FC, two options changed
    python bench/collapse.py --steps 1500 model=dcgan

Prints one line per point; ``gan_helpers.live.COLLAPSE_STEPS`` is read against these.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import parse_variant  # noqa: E402  (KEY=VALUE options, as quality.py takes them)

from gan_helpers.config import TrainConfig  # noqa: E402
from gan_helpers.live import probe_classes, probe_noise  # noqa: E402
from gan_helpers.trainer import GANTrainer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("options", nargs="*", metavar="KEY=VALUE", help="TrainConfig options")
    parser.add_argument("--recipe", choices=["course", "seed"], default="course")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500)
    args = parser.parse_args()
    options = parse_variant(",".join(args.options)) if args.options else {}
    config = TrainConfig.for_recipe(args.recipe, **options)
    noise = probe_noise(config.latent_dim)  # the dashboard's 256 samples
    print(f"{args.recipe} recipe, {options or 'as it is'}; torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory() as out:
        trainer = GANTrainer(config, out_dir=out)

        def probe(event) -> None:
            if event.step % args.every == 0 and not event.final:
                scores = probe_classes(trainer, noise)
                print(f"step {event.step:6d}  class entropy {scores['class_entropy']:.2f}  "
                      f"legible {scores['legible']:4.0%}  missing "
                      f"{','.join(map(str, scores['classes_missing'])) or '-'}", flush=True)

        trainer.fit(steps=args.steps, hooks=[probe], progress=False)


if __name__ == "__main__":
    main()
