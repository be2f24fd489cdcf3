"""Modes of the 2-D ring that a toy GAN covers after N steps, per optimizer setting and seed.

    python bench/toy.py [--steps 2000] [--seeds 0 1 2]

Trains ``gan_helpers.toy.ToyRun`` (one thread) with the settings notebook 4 uses, with
and without the minibatch standard deviation layer in D, and prints how many of the
eight modes G's points cover (``toy.modes_covered``) for each seed: the evidence for
the notebook's "plain run", "collapse" and "fix".
"""

from __future__ import annotations

import argparse
import time

import torch

from gan_helpers import toy

SETTINGS = {  # notebook 4's runs
    "lr 3e-4, the seed's beta1 0.5 (the live run)": dict(lr=3e-4, betas=(0.5, 0.999)),
    "Adam's defaults, lr 1e-3, beta1 0.9 (collapse)": dict(lr=1e-3, betas=(0.9, 0.999)),
    "lr 1e-3, beta1 0.5 (question 1)": dict(lr=1e-3, betas=(0.5, 0.999)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; {args.steps} steps; modes covered of {toy.MODES}")
    for name, options in SETTINGS.items():
        for minibatch_std in (False, True):
            start = time.perf_counter()
            modes = [toy.modes_covered(toy.ToyRun(seed=s, minibatch_std=minibatch_std, **options)
                                       .fit(args.steps).samples()) for s in args.seeds]
            label = name + (" + minibatch std" if minibatch_std else "")
            print(f"{label:60s} seeds {args.seeds}: {modes}  "
                  f"({(time.perf_counter() - start) / len(args.seeds):.1f} s a run)", flush=True)


if __name__ == "__main__":
    main()
