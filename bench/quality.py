"""Time to digits: sample quality of each recipe after 30, 60, 120 and 300 s of training.

    python bench/quality.py [--budgets 30 60 120 300] [--seed-max 120] [--n 5000]
    python bench/quality.py --recipes --budgets 120 300 \
        --variants augment=0 model=dcgan,lr=0.0002 model=dcgan,augment=2
    python bench/quality.py --recipes "course FC" "course DCGAN" --budgets 120 300 --g-statistics
    python bench/quality.py --steps 8000 --recipes "course FC" --seeds 0 1 2 --jobs 2 \
        --variants augment=1

Trains the seed and course recipes of the FC GAN and of DCGAN on this machine's CPU,
pauses the clock at each wall-clock budget to score the recipe's sampler (G's weight
average for the course recipe, G itself for the seed's) with
``gan_helpers.metrics`` against the MNIST test split, which no run trains on (Fréchet
distance in the shipped classifier's feature space, class entropy, share legible,
classes missing, Inception-Score analogue, and the memorisation figures: the median
distance to the nearest training digit over a test digit's, and the share of near
copies), prints one table (under the floor and the share of real test digits that is
legible) and saves a plot of the metrics against training time. Scoring time is not
counted in the budgets. Nothing is cached: every run trains from scratch.

``--variants`` adds runs of the course FC recipe (of course DCGAN when the pairs include
``model=dcgan``) with changed options (``KEY=VALUE`` pairs of ``TrainConfig``,
comma-separated), the way the course defaults were chosen;
``--raw`` also scores G itself where a recipe samples from G's weight average;
``--g-statistics`` also scores that average with G's BatchNorm running statistics in
place of the ones the sampler recomputes for it (``standing_statistics``).

``--ablation fc`` (or ``dcgan``) runs the course recipe and, for each training choice
in which it differs from the seed's recipe, the course recipe with that one choice set
back to the seed's value (``ablation_variants``): what each choice buys.

``--additions fc`` (or ``dcgan``) goes the other way: the seed's recipe, then the course's
in-memory batches with the seed's values, then each course choice added in turn, so the
last row is the course recipe (``addition_variants``).

``--steps`` scores at step counts instead of wall-clock budgets. Those figures do not
depend on how fast the machine runs at the moment, so runs may share it: ``--jobs J``
trains J runs at a time in separate processes, one thread each (``--threads``), and
``--seeds`` repeats every run with other seeds, to show the spread between runs. Each
point is then the same as training with ``python -m gan_helpers train --max-steps N``
and scoring the checkpoint with ``python -m gan_helpers evaluate --n 5000``. No plot
is drawn in this mode.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path

import torch

from gan_helpers.data import load_images
from gan_helpers.metrics import real_floor, real_legible, score_generator
from gan_helpers.config import COURSE_DCGAN, COURSE_FC, SEED_RECIPE, TrainConfig
from gan_helpers.trainer import GANTrainer

RECIPES = {
    "seed FC": dict(recipe="seed", model="fc"),
    "course FC": dict(recipe="course", model="fc"),
    "seed DCGAN": dict(recipe="seed", model="dcgan"),
    "course DCGAN": dict(recipe="course", model="dcgan"),
}


def parse_variant(text: str) -> dict:
    """``"batch_size=256,lr=0.001"`` -> {"batch_size": 256, "lr": 0.001}, typed by TrainConfig."""
    # The annotations are strings ("int", or "int | None" for a recipe-dependent field).
    types = {f.name: str(f.type).removesuffix(" | None") for f in fields(TrainConfig)}
    options = {}
    for pair in text.split(","):
        key, _, value = pair.partition("=")
        if key not in types or not value:
            raise SystemExit(f"bad variant {text!r}: use KEY=VALUE with KEY one of {', '.join(types)}")
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true")}.get(
            types[key], str)
        try:
            options[key] = kind(value)
        except ValueError:
            raise SystemExit(f"bad variant {text!r}: {key} takes {types[key]} values, got {value!r}")
    return options


def course_choices(model: str) -> list[str]:
    """The TrainConfig fields in which the course recipe of ``model`` differs from the
    seed's and which change that model: the augmentation's ramp goes with the
    augmentation, and BatchNorm in G is an FC option (DCGAN's G always has it)."""
    course = COURSE_DCGAN if model == "dcgan" else COURSE_FC
    skip = {"augment_ramp"} | ({"g_batchnorm"} if model == "dcgan" else set())
    return [k for k in course if k not in skip and SEED_RECIPE[k] != course[k]]


def ablation_variants(model: str) -> dict[str, dict]:
    """For the course recipe of ``model``: "minus KEY" -> the options that set KEY back
    to the seed recipe's value, one per choice in which the two recipes differ. The
    augmentation's ramp goes with the augmentation; the course DCGAN's half-width D is
    one more choice (``d_width``, the seed's D is as wide as G)."""
    variants = {f"minus {key}": {key: SEED_RECIPE[key]} for key in course_choices(model)}
    if model == "dcgan":
        variants["minus d_width"] = {"d_width": TrainConfig(model="dcgan").width}
    return variants


def addition_variants(model: str) -> dict[str, dict]:
    """From the seed's recipe of ``model`` to the course's, one choice at a time, as
    label -> TrainConfig options (cumulative)."""
    course = COURSE_DCGAN if model == "dcgan" else COURSE_FC
    options = {"recipe": "course", "model": model, **SEED_RECIPE}
    if model == "dcgan":
        options["d_width"] = TrainConfig(model="dcgan").width  # the seed's D is as wide as G
        options["g_batchnorm"] = course["g_batchnorm"]  # DCGAN's G has BatchNorm either way
    variants = {f"seed {model.upper()}": {"recipe": "seed", "model": model},
                "+ in-memory batches": dict(options)}
    for key in course_choices(model):
        options[key] = course[key]
        if key == "augment":
            options["augment_ramp"] = course["augment_ramp"]
        variants[f"+ {key}"] = dict(options)
    if model == "dcgan":
        options.pop("d_width")
        variants["+ d_width"] = dict(options)
    return variants


def run(name: str, options: dict, budgets: list[float], n: int, data, raw: bool,
        g_statistics: bool = False, by: str = "seconds") -> list[dict]:
    """Train the recipe ``options`` once and score it at each of ``budgets``: seconds of
    training (``by="seconds"``) or total steps (``by="steps"``). One row per sampler and
    budget, with the step reached and the seconds spent training."""
    trainer = GANTrainer(TrainConfig.for_recipe(**options), data=data, log=lambda _: None)

    def average_with_g_statistics() -> torch.nn.Module:
        average = copy.deepcopy(trainer.ema_generator)
        for mine, gs in zip(average.buffers(), trainer.generator.buffers()):
            mine.copy_(gs)
        return average

    # Read at scoring time: ``trainer.sampler`` refreshes the average's BatchNorm statistics.
    samplers = [(name, lambda: trainer.sampler)]
    if raw and trainer.ema_generator is not None:
        samplers.append((f"{name} (G)", lambda: trainer.generator))
    if g_statistics and trainer.ema_generator is not None:
        samplers.append((f"{name} (G's BN stats)", average_with_g_statistics))
    rows, trained = [], 0.0
    for budget in budgets:
        start = time.perf_counter()
        if by == "steps":
            trainer.fit(steps=int(budget), progress=False)
        else:
            trainer.fit(seconds=budget - trained, progress=False)
        trained += time.perf_counter() - start
        # The recipe's sampler (G's weight average where the recipe keeps one, else G);
        # with --raw, G itself as well; with --g-statistics, the average with G's
        # BatchNorm statistics.
        for label, sampler in samplers:
            scores = score_generator(sampler(), n=n, seed=0)
            rows.append({"recipe": label, "seed": trainer.config.seed, "budget": budget,
                         "seconds": trained,
                         "steps": trainer.step, **scores})
            print(f"  {label:22s} seed {trainer.config.seed}  {trained:5.0f} s  "
                  f"{trainer.step:6d} steps  FD {scores['frechet_distance']:8.2f}  "
                  f"entropy {scores['class_entropy']:.3f}  legible {scores['legible']:.0%}  "
                  f"memorisation {scores['memorisation_ratio']:.2f}  copies {scores['near_copies']:.1%}",
                  flush=True)
    return rows


def _one_thread_each(threads: int) -> None:
    torch.set_num_threads(threads)


def run_job(job: tuple, data=None) -> list[dict]:
    """``run`` for one (name, options, budgets, n, raw, g_statistics, by) tuple; a worker
    process loads the data itself."""
    name, options, budgets, n, raw, g_statistics, by = job
    return run(name, options, budgets, n, data if data is not None else load_images(), raw, g_statistics, by)


def plot(rows: list[dict], floor: float, path: Path) -> None:
    from gan_helpers.plots import new_figure

    fig, axes = new_figure(3, (15, 3.6))
    for name in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == name]
        if not mine:
            continue
        t = [r["budget"] for r in mine]
        axes[0].plot(t, [r["frechet_distance"] for r in mine], "o-", label=name)
        axes[1].plot(t, [r["class_entropy"] for r in mine], "o-", label=name)
        axes[2].plot(t, [r["legible"] for r in mine], "o-", label=name)
    axes[0].axhline(floor, color="gray", ls="--", lw=0.8, label="training vs test digits")
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
    # Beside the panels, not on them: the curves fill the axes.
    fig.legend(*axes[0].get_legend_handles_labels(), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.83, 1))
    fig.savefig(path, dpi=80)


def plot_choices(rows: list[dict], floor: float, path: Path) -> None:
    """For runs scored at one budget: each recipe or variant in the order run, every seed
    a dot and the mean a bar, Fréchet distance (log scale) and share legible."""
    from gan_helpers.plots import new_figure

    names = list(dict.fromkeys(r["recipe"] for r in rows))
    fig, axes = new_figure(2, (12, 4.2))
    for ax, key, title in ((axes[0], "frechet_distance", "Fréchet distance (lower is better)"),
                           (axes[1], "legible", "share legible (confidence >= 0.9)")):
        for x, name in enumerate(names):
            values = [r[key] for r in rows if r["recipe"] == name]
            ax.bar(x, sum(values) / len(values), color="#4a7ab5", alpha=0.5, width=0.6)
            ax.plot([x] * len(values), values, "o", color="#1f3b5c", ms=4)
        ax.set_xticks(range(len(names)), labels=names, rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    axes[0].axhline(floor, color="gray", ls="--", lw=0.8, label="training vs test digits")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    axes[1].set_ylim(0, 1.02)
    budget = rows[0]["budget"]
    fig.suptitle(f"after {budget:.0f} s of training on a 2-core CPU; dots: seeds, bars: mean")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def rows_from_log(path: Path) -> tuple[list[dict], float]:
    """The per-run rows and the floor that an earlier run of this script printed."""
    rows, floor, table = [], None, False
    for line in path.read_text().splitlines():
        if line.startswith("floor:"):
            floor = float(line.rsplit(None, 1)[1])
        elif line.startswith("recipe ") and line.rstrip().endswith("missing"):
            table = True
        elif table and not line.strip():
            table = False
        elif table:
            recipe, seed, seconds, steps, fd, entropy, legible, score, memo, copies, missing = (
                line.rsplit(None, 10))
            rows.append({"recipe": recipe.strip(), "seed": int(seed), "seconds": float(seconds),
                         "budget": float(seconds), "steps": int(steps),
                         "frechet_distance": float(fd), "class_entropy": float(entropy),
                         "legible": float(legible.rstrip("%")) / 100,
                         "inception_score": float(score), "memorisation_ratio": float(memo),
                         "near_copies": float(copies.rstrip("%")) / 100,
                         "classes_missing": [] if missing == "-" else
                         [int(c) for c in missing.split(",")]})
    if floor is None or not rows:
        raise SystemExit(f"{path}: no floor line or no table of runs in it")
    return rows, floor


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[30, 60, 120, 300],
                        help="seconds of training after which each run is scored (default 30 60 120 300)")
    parser.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES),
                        help="recipes to run (none: only the --variants)")
    parser.add_argument("--variants", nargs="+", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="extra runs of the course FC recipe (course DCGAN with "
                        "model=dcgan) with these options changed")
    parser.add_argument("--ablation", choices=["fc", "dcgan"], default=None,
                        help="the course recipe of this model and, for each choice it makes, "
                        "the same recipe with that choice set back to the seed's")
    parser.add_argument("--additions", choices=["fc", "dcgan"], default=None,
                        help="the seed's recipe of this model, then the course's choices "
                        "added one at a time")
    parser.add_argument("--raw", action="store_true",
                        help="also score G itself where the recipe samples from its average")
    parser.add_argument("--g-statistics", action="store_true",
                        help="also score the weight average with G's BatchNorm statistics "
                        "instead of its own (the sampler recomputes them: standing statistics)")
    parser.add_argument("--n", type=int, default=5000, help="samples scored per point (default 5000)")
    parser.add_argument("--seed-max", type=float, default=None,
                        help="stop the seed recipes at this budget (saves time; default: all)")
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="score at these step counts instead of the --budgets in seconds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="train every run once with each of these seeds (default: 0)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="with --steps: runs trained at a time, in separate processes")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per run (default: 1 with --jobs > 1, else torch's)")
    parser.add_argument("--plot", type=Path, default=Path("images/runs/quality_vs_time.png"),
                        help="where the plot goes (default images/runs/quality_vs_time.png)")
    parser.add_argument("--from-log", type=Path, default=None, metavar="LOG",
                        help="train nothing: print the table and draw the plot of an earlier "
                        "run from what it printed (its log)")
    return parser


def _runs(args) -> dict[str, dict]:
    """The runs the options ask for, as label -> TrainConfig options; a bad variant stops
    the script before any work."""
    runs = {name: RECIPES[name] for name in args.recipes}
    for text in args.variants:  # before any work, so a typo fails at once
        options = parse_variant(text)
        base = "course DCGAN" if options.get("model") == "dcgan" else "course FC"
        label = ",".join(p for p in text.split(",") if not p.startswith("model="))
        runs[f"{base} {label}"] = {**RECIPES[base], **options}
        try:
            TrainConfig.for_recipe(**runs[f"{base} {label}"])
        except ValueError as err:
            raise SystemExit(f"bad variant {text!r}: {err}")
    if args.ablation:
        base = f"course {'DCGAN' if args.ablation == 'dcgan' else 'FC'}"
        runs.setdefault(base, RECIPES[base])
        for label, options in ablation_variants(args.ablation).items():
            runs[f"{base} {label}"] = {**RECIPES[base], **options}
    if args.additions:
        runs.update(addition_variants(args.additions))
    return runs


def _print_table(rows: list[dict], seeds: list[int], by: str) -> None:
    """One line per run and budget, then the means over seeds where there are several."""
    print()
    width = max(12, *(len(r["recipe"]) for r in rows))
    print(f"{'recipe':{width}s} {'seed':>4s} {'seconds':>7s} {'steps':>6s} {'FD':>8s} "
          f"{'entropy':>7s} {'legible':>7s} {'IS':>5s} {'memo':>5s} {'copies':>6s}  missing")
    for r in rows:
        print(f"{r['recipe']:{width}s} {r['seed']:4d} {r['seconds']:7.0f} {r['steps']:6d} "
              f"{r['frechet_distance']:8.2f} {r['class_entropy']:7.3f} {r['legible']:7.2%} "
              f"{r['inception_score']:5.2f} {r['memorisation_ratio']:5.2f} {r['near_copies']:6.1%}  "
              f"{','.join(map(str, r['classes_missing'])) or '-'}")
    if len(seeds) > 1:
        print(f"\nmeans over seeds {', '.join(map(str, seeds))}:")
        for (recipe, steps_or_seconds), mine in mean_over_seeds(rows).items():
            print(f"{recipe:{width}s} {steps_or_seconds:>8.0f} {by:7s} "
                  f"FD {mean(mine, 'frechet_distance'):8.2f}  "
                  f"entropy {mean(mine, 'class_entropy'):.3f}  "
                  f"legible {mean(mine, 'legible'):7.2%}  "
                  f"memorisation {mean(mine, 'memorisation_ratio'):.2f}  "
                  f"copies {mean(mine, 'near_copies'):6.1%}  "
                  f"missing {max(len(r['classes_missing']) for r in mine)}")


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.jobs < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--jobs and --threads must be at least 1")
    if args.jobs > 1 and args.steps is None:
        parser.error("--jobs > 1 needs --steps: runs that share the machine cannot be timed")
    if min(args.budgets) <= 0 or (args.steps and min(args.steps) < 1):
        parser.error("--budgets must be positive seconds and --steps positive step counts")
    if args.n < 2:
        parser.error("--n must be at least 2 (the Fréchet distance compares two spreads; "
                     "a few thousand give stable figures)")
    if args.from_log is not None:
        rows, floor = rows_from_log(args.from_log)
        _report(rows, floor, sorted({r["seed"] for r in rows}), "seconds", args.plot)
        return
    runs = _runs(args)
    by = "steps" if args.steps else "seconds"
    threads = args.threads or (1 if args.jobs > 1 else torch.get_num_threads())
    torch.set_num_threads(threads)

    data = load_images()
    print(f"torch {torch.__version__}, {threads} thread(s) per run, {args.jobs} at a time; "
          f"{data.source}")
    floor = real_floor(n=args.n)
    print(f"floor: {args.n} training digits against the test split, Fréchet distance {floor:.2f}")
    print(f"real test digits: {real_legible():.1%} legible")
    jobs = schedule(runs, args, by)
    if args.jobs == 1:
        results = [run_job(job, data) for job in jobs]
    else:
        # spawn, not fork: a forked child of a process that has run OpenMP threads can hang.
        with ProcessPoolExecutor(args.jobs, multiprocessing.get_context("spawn"),
                                 initializer=_one_thread_each, initargs=(threads,)) as pool:
            results = list(pool.map(run_job, jobs))
    rows = by_recipe([row for result in results for row in result])
    _report(rows, floor, args.seeds, by, args.plot)


def schedule(runs: dict[str, dict], args: argparse.Namespace, by: str) -> list[tuple]:
    """The jobs for ``run_job``, each scored at ``args.steps`` (``by`` "steps") or
    ``args.budgets`` ("seconds"): seed by seed, every recipe in turn, since the machine's
    speed drifts and recipes timed back to back share its state of the moment."""
    jobs = []
    for seed in args.seeds:
        for name, options in runs.items():
            budgets = sorted(args.steps or args.budgets)
            if by == "seconds" and name.startswith("seed") and args.seed_max:
                budgets = [b for b in budgets if b <= args.seed_max]
            jobs.append((name, {**options, "seed": seed}, budgets, args.n, args.raw,
                         args.g_statistics, by))
    return jobs


def by_recipe(rows: list[dict]) -> list[dict]:
    """``rows`` recipe by recipe, in the order the recipes first appear; within a recipe
    seeds and budgets keep their order."""
    labels = {label: i for i, label in enumerate(dict.fromkeys(r["recipe"] for r in rows))}
    return sorted(rows, key=lambda r: labels[r["recipe"]])


def _report(rows: list[dict], floor: float, seeds: list[int], by: str, path: Path) -> None:
    """The table, then the plot: against time, or recipe by recipe at a single budget."""
    _print_table(rows, seeds, by)
    if by == "seconds":
        path.parent.mkdir(parents=True, exist_ok=True)
        one_budget = len({r["budget"] for r in rows}) == 1
        (plot_choices if one_budget else plot)(rows, floor, path)
        print(f"plot: {path}")




def mean(rows: list[dict], key: str) -> float:
    return sum(r[key] for r in rows) / len(rows)


def mean_over_seeds(rows: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """Rows grouped by (recipe, budget), in first-seen order; the budget is a step count
    or a number of seconds, as the run was given."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["recipe"], r["budget"]), []).append(r)
    return groups


if __name__ == "__main__":
    main()
