"""Time to digits: sample quality of each recipe after 30, 60, 120 and 300 s of training.

    python bench/quality.py [--budgets 30 60 120 300] [--seed-max 120] [--n 5000]

Trains the seed and course recipes of the FC GAN and of DCGAN on this machine's CPU,
pauses the clock at each wall-clock budget to score the recipe's sampler (G's weight
average for the course recipe, G itself for the seed's) with
``gan_helpers.metrics`` (Fréchet distance in the shipped classifier's feature space,
class entropy, share legible, classes missing, Inception-Score analogue), prints one
table and saves a plot of the metrics against training time. Scoring time is not
counted in the budgets. Nothing is cached: every run trains from scratch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from gan_helpers.data import load_images
from gan_helpers.metrics import real_floor, score_generator
from gan_helpers.training import GANTrainer, TrainConfig

RECIPES = {
    "seed FC": dict(recipe="seed", model="fc"),
    "course FC": dict(recipe="course", model="fc"),
    "seed DCGAN": dict(recipe="seed", model="dcgan"),
    "course DCGAN": dict(recipe="course", model="dcgan"),
}


def run(name: str, budgets: list[float], n: int, data) -> list[dict]:
    config = TrainConfig.for_recipe(**RECIPES[name])
    trainer = GANTrainer(config, data=data, log=lambda _: None)
    rows, trained = [], 0.0
    for budget in budgets:
        start = time.perf_counter()
        trainer.fit(seconds=budget - trained, progress=False)
        trained += time.perf_counter() - start
        # The recipe's sampler: G's weight average where the recipe keeps one, else G.
        scores = score_generator(trainer.sampler, n=n, seed=0)
        rows.append({"recipe": name, "seconds": budget, "steps": trainer.step, **scores})
        print(f"  {name:12s} {budget:5.0f} s  {trainer.step:6d} steps  FD {scores['frechet_distance']:8.2f}"
              f"  entropy {scores['class_entropy']:.3f}  legible {scores['legible']:.0%}", flush=True)
    return rows


def plot(rows: list[dict], floor: float, path: Path) -> None:
    from gan_helpers.plots import new_figure

    fig, axes = new_figure(3, (13, 3.6))
    for name in RECIPES:
        mine = [r for r in rows if r["recipe"] == name]
        if not mine:
            continue
        t = [r["seconds"] for r in mine]
        axes[0].plot(t, [r["frechet_distance"] for r in mine], "o-", label=name)
        axes[1].plot(t, [r["class_entropy"] for r in mine], "o-", label=name)
        axes[2].plot(t, [r["legible"] for r in mine], "o-", label=name)
    axes[0].axhline(floor, color="gray", ls="--", lw=0.8, label="real vs real")
    axes[0].set_yscale("log")
    axes[0].set_title("Fréchet distance (lower is better)")
    axes[1].set_title("class entropy (1 = all digits equally)")
    axes[2].set_title("share legible (confidence >= 0.9)")
    for ax in axes:
        ax.set_xlabel("training seconds (2-core CPU)")
        ax.set_xscale("log")
        ax.set_xticks([30, 60, 120, 300], labels=["30", "60", "120", "300"])
        ax.set_xticks([], minor=True)
    axes[1].set_ylim(0, 1.02)
    axes[2].set_ylim(0, 1.02)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30, 60, 120, 300])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--n", type=int, default=5000, help="samples scored per point")
    parser.add_argument("--seed-max", type=float, default=None,
                        help="stop the seed recipes at this budget (saves time; default: all)")
    parser.add_argument("--plot", type=Path, default=Path("images/quality_vs_time.png"))
    args = parser.parse_args()

    data = load_images()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {data.source}")
    floor = real_floor(n=args.n)
    print(f"real vs real Fréchet distance ({args.n} vs {args.n}): {floor:.2f}")
    rows = []
    for name in args.recipes:
        budgets = sorted(args.budgets)
        if name.startswith("seed") and args.seed_max:
            budgets = [b for b in budgets if b <= args.seed_max]
        rows += run(name, budgets, args.n, data)

    print()
    print(f"{'recipe':12s} {'seconds':>7s} {'steps':>6s} {'FD':>8s} {'entropy':>7s} {'legible':>7s} "
          f"{'IS':>5s}  missing")
    for r in rows:
        print(f"{r['recipe']:12s} {r['seconds']:7.0f} {r['steps']:6d} {r['frechet_distance']:8.2f} "
              f"{r['class_entropy']:7.3f} {r['legible']:7.1%} {r['inception_score']:5.2f}  "
              f"{','.join(map(str, r['classes_missing'])) or '-'}")
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, floor, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
