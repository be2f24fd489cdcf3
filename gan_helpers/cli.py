"""The command line: ``python -m gan_helpers COMMAND ...`` (``--help`` lists the commands).

    python -m gan_helpers train --model fc --max-seconds 120 --out images/runs/fc-mnist
    python -m gan_helpers train --resume images/runs/fc-mnist/checkpoint.pt --max-seconds 60
    python -m gan_helpers train --recipe seed            # gan.py as written, 300 epochs
    python -m gan_helpers sample --checkpoint CKPT --n 64 --out samples.png
    python -m gan_helpers sample --checkpoint dcgan --out dcgan.png   # a shipped generator
    python -m gan_helpers download fashion-mnist         # needs internet; MNIST ships with the package
    python -m gan_helpers evaluate --checkpoint CKPT --n 10000
    python -m gan_helpers release notebooks/assignments released/
    python -m gan_helpers grade released/01_build_the_fc_gan.ipynb --json

Options keep the seed's names (``--n_epochs`` is accepted for ``--epochs``). A bad
value gets a one-line error, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import fields
from pathlib import Path
from typing import Callable

from .assignments import ASSIGNMENTS
from .data import DATASET_NAMES, DataFileError
from .models import MODEL_NAMES, MODEL_TITLES

GENERATOR_SOURCE_HELP = ("a run folder, its checkpoint.pt, a generator file, or fc / dcgan "
                         "for the generators shipped with the package")


def _generator_source(path: Path) -> Path:
    """``--checkpoint`` as a file to load: a path that exists, else a shipped generator's
    name (``fc``, ``dcgan``)."""
    from .checkpoints import CheckpointError, pretrained_file

    if path.exists():
        return path
    if str(path).lower() in MODEL_NAMES:
        return pretrained_file(str(path))
    raise CheckpointError(f"checkpoint {path} does not exist; check the path, or pass fc or "
                          "dcgan for a shipped generator.")


def _checked(convert: Callable[[str], float], allowed: Callable[[float], bool], what: str):
    """An argparse type: ``convert`` the text, and refuse what is not ``allowed`` (or not
    a number at all) with "must be WHAT, got TEXT"."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not allowed(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
_nonnegative_int = _checked(int, lambda v: v >= 0, "0 or a positive integer")
_positive_float = _checked(float, lambda v: 0 < v < math.inf, "a positive number")
# what torch's generators take, with room for the seeds derived from it
_seed = _checked(int, lambda v: 0 <= v < 2**63, "a whole number from 0 to 2**63 - 1")


def _add_config_options(group) -> None:
    """One option per TrainConfig field that carries a help text (``config._option``),
    typed and checked from the field, with each recipe's value from the config."""
    from .config import TrainConfig, recipe_values

    checked = {("int", "positive"): _positive_int, ("int", "nonnegative"): _nonnegative_int,
               ("int", "seed"): _seed, ("float", "positive"): _positive_float,
               ("int", None): int, ("float", None): float, ("str", None): str}
    for field in fields(TrainConfig):
        meta = field.metadata
        if "help" not in meta:
            continue
        kind = str(field.type).split(" |")[0]
        default = recipe_values(field.name) or (
            f"default {field.default}" if field.default is not None else "")
        help_text = f"{meta['help']} ({default})" if default else meta["help"]
        names = ["--" + field.name.replace("_", "-"), *meta.get("aliases", [])]
        if kind == "bool":
            group.add_argument(*names, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
            continue
        extra = {"choices": meta["choices"]} if "choices" in meta else {
            "type": checked[kind, meta.get("check")]}
        group.add_argument(*names, default=None, metavar=meta.get("metavar"), help=help_text,
                           **extra)


class _OneLineErrors(argparse.ArgumentParser):
    """Usage mistakes print one line (and where to look), not the whole usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="python -m gan_helpers",
        description="Train and sample the GAN course's models on MNIST.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    _add_sampling(sub)
    _add_teaching(sub)
    _add_tools(sub)
    return parser


def _add_train(sub) -> None:
    train = sub.add_parser(
        "train", help="train a GAN and write sample grids and a checkpoint",
        description="Train a GAN. Stops at --epochs or --max-seconds (or --max-steps), "
        "whichever comes first; Ctrl-C saves a checkpoint and stops.",
    )
    stop = train.add_argument_group("when to stop (the first one reached)")
    stop.add_argument("--epochs", "--n_epochs", type=_positive_float, default=None,
                      help="total epochs, counted from the start of the run (seed: 300)")
    stop.add_argument("--max-seconds", type=_positive_float, default=None,
                      help="wall-clock seconds for this invocation (120 when no rule is given)")
    stop.add_argument("--max-steps", type=_positive_int, default=None,
                      help="total training steps (batches)")
    _add_config_options(train.add_argument_group(
        "the run's configuration (saved in its checkpoint; the seed's options keep their names)"))
    files = train.add_argument_group("files")
    files.add_argument("--out", type=Path, default=None,
                       help="run folder for grids and checkpoint.pt (default images/runs/MODEL-DATASET)")
    files.add_argument("--resume", type=Path, default=None, metavar="CKPT",
                       help="continue from this checkpoint.pt (or run folder), with its own configuration")
    files.add_argument("--checkpoint-every", type=_positive_float, default=120.0,
                       help="seconds between checkpoints (default 120; also at the end and on Ctrl-C)")
    files.add_argument("--data-dir", type=Path, default=None,
                       help="where full data sets live (default data/ in the project, or $GAN_DATA)")
    files.add_argument("--download", action="store_true",
                       help="download the full data set first if it is missing (needs internet)")
    train.add_argument("--device", default=None,
                       help="cpu, cuda, cuda:N, mps, or auto: the CUDA GPU where there is one "
                       "(default cpu; with --resume, the run's own kind of device where this "
                       "machine has one)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_sampling(sub) -> None:
    sample = sub.add_parser("sample", help="draw images from a trained generator",
                            description="Draw images from a checkpoint or a generator file.")
    sample.add_argument("--checkpoint", type=Path, required=True, help=GENERATOR_SOURCE_HELP)
    sample.add_argument("--n", type=_positive_int, default=64, help="number of images (default 64)")
    sample.add_argument("--out", type=Path, required=True,
                        help=".npy: float32 array (N, 28, 28) in [-1, 1]; .png: a grid, 8 images a "
                        "row (a square past 64)")
    sample.add_argument("--seed", type=_seed, default=None, help="same seed, same images")

    evaluate = sub.add_parser(
        "evaluate", help="score a generator against the test split: Fréchet distance and its "
        "floor, class coverage, legibility, memorisation",
        description="Draw samples from a checkpoint or generator file and print the metrics "
        "of gan_helpers.metrics, measured against the test split, which no GAN here trains on.",
    )
    evaluate.add_argument("--checkpoint", type=Path, required=True, help=GENERATOR_SOURCE_HELP)
    evaluate.add_argument("--n", type=_positive_int, default=10000,
                          help="samples to score (default 10000); the distance is larger for "
                          "fewer samples, so compare scores at the same n")
    evaluate.add_argument("--seed", type=_seed, default=0,
                          help="seed of the samples (default 0); other seeds draw other samples")
    evaluate.add_argument("--json", action="store_true", help="print one line of JSON")
    export = sub.add_parser(
        "export", help="write the generator of a checkpoint as a small sampling-only file",
        description="Keep only what sampling needs (the generator and its configuration).",
    )
    export.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint.pt or its run folder")
    export.add_argument("--out", type=Path, required=True,
                        help="the file to write, e.g. generator.pt; sample and evaluate read it")


def _add_teaching(sub) -> None:
    release = sub.add_parser(
        "release", help="write student copies of solution notebooks",
        description="Replace every ### BEGIN/END SOLUTION block with a stub that raises "
        "NotImplementedError, clear all outputs and stamp each copy with its assignment.",
    )
    release.add_argument("src", type=Path, help="a solution notebook, or a folder of them")
    release.add_argument("dest_dir", type=Path, help="folder for the student notebooks")
    release.add_argument("--force", action="store_true",
                         help="replace notebooks already in DEST_DIR (and any work in them)")
    release.add_argument("--no-solutions", dest="solutions", action="store_false",
                         help="the copies' .solution() says solutions are closed")

    grade = sub.add_parser(
        "grade", help="score student notebooks' exercises, then run them",
        description="Score every exercise of each notebook's assignment in a separate process "
        "that runs only the notebook's imports, defs and classes, then execute the notebook "
        "in a limited kernel for its cell errors (gan_helpers.grading says what is and is "
        "not isolated). Given several notebooks (a class: returned/*/01_build_the_fc_gan.ipynb), "
        "it ends with a summary, and with --csv writes one row per notebook.",
    )
    grade.add_argument("notebook", type=Path, nargs="+",
                       help="the student notebooks to grade (a class: returned/*/NAME.ipynb)")
    grade.add_argument("--json", action="store_true", help="print one line of JSON per notebook")
    grade.add_argument("--csv", type=Path, default=None, metavar="FILE",
                       help="also write the scores to FILE, one row per notebook")
    grade.add_argument("--cell-timeout", type=_positive_float, default=120.0,
                       help="seconds each of the student's cells may run (default 120)")
    grade.add_argument("--jobs", type=_positive_int, default=1,
                       help="notebooks graded at a time, each in its own processes (default 1)")
    grade.add_argument("--no-run", dest="run", action="store_false",
                       help="score the exercises only, without executing the notebooks")
    grade.add_argument("--assignment", default=None, choices=list(ASSIGNMENTS),
                       help="grade as this assignment, whatever the notebooks' stamps say")


def _add_tools(sub) -> None:
    classifier = sub.add_parser(
        "train-classifier", help="retrain the shipped digit classifier used by evaluate",
        description="Train gan_helpers.metrics.DigitClassifier on the project's data, print "
        "its test-split accuracy and write it into the package.",
    )
    classifier.add_argument("--dataset", choices=DATASET_NAMES, default="mnist",
                            help="whose classifier to retrain (default mnist)")
    classifier.add_argument("--epochs", type=_positive_int, default=5,
                            help="passes over its training digits (default 5)")
    diagrams = sub.add_parser(
        "diagrams", help="draw the GAN and DCGAN pictures (gan_helpers.diagrams) as PNG files")
    diagrams.add_argument("--out", type=Path, default=Path("images"),
                          help="folder to write gan_diagram.png and dcgan_diagram.png (default images/)")

    tidy = sub.add_parser(
        "tidy-notebooks", help="drop saved widget state that no notebook output shows",
        description="After executing notebooks (make notebooks): remove widget state that no "
        "output can display, such as the closed live dashboards' last images.",
    )
    tidy.add_argument("notebooks", type=Path, nargs="+", help="notebooks to tidy, in place")

    download = sub.add_parser(
        "download", help="download MNIST or Fashion-MNIST with torchvision (internet; MNIST "
        "also ships with the package)")
    download.add_argument("dataset", choices=DATASET_NAMES, nargs="?", default="mnist",
                          help="which data set (default mnist)")
    download.add_argument("--data-dir", type=Path, default=None, help="target folder (default data/)")


def _config_from_args(args):
    from .config import SEED_EPOCHS, TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names and v is not None}
    recipe = given.pop("recipe", "course")
    # Options for the other architecture would be stored in the config and ignored.
    for name in ("width", "d_width"):
        if given.get("model", "fc") == "fc" and name in given:
            option = "--" + name.replace("_", "-")
            raise ValueError(
                f"{option} sets the DCGAN's channel width; the FC networks keep the seed's "
                f"sizes (100-128-256-512-784, 784-512-256-1). Leave {option} out, or add "
                "--model dcgan."
            )
    if given.get("model") == "dcgan" and "g_batchnorm" in given:
        raise ValueError(
            "--g-batchnorm and --no-g-batchnorm choose BatchNorm in the FC generator; the "
            "DCGAN generator always has it (the DCGAN rules). Leave the option out, or use "
            "--model fc."
        )
    config = TrainConfig.for_recipe(recipe, **given)
    if recipe == "seed" and args.epochs is None and args.max_seconds is None and args.max_steps is None:
        args.epochs = SEED_EPOCHS
    return config


def _as_option(name: str, value) -> str:
    """A TrainConfig field and value as the train option that sets it: ``--lr 0.001``,
    ``--no-g-batchnorm``."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"--{flag} {value}"


def _run_train(args) -> int:
    from .data import load_images
    from .config import TrainConfig, resolve_device, resume_device
    from .trainer import GANTrainer

    if args.resume is not None:
        from .checkpoints import load_checkpoint

        state = load_checkpoint(args.resume)
        saved = TrainConfig.from_dict(state["config"])
        # Only stopping rules may change on resume: an option repeated with the
        # checkpoint's own value passes, any other is refused, not ignored (every
        # TrainConfig field, so that a new option cannot slip past).
        changed = [
            f"{_as_option(field.name, given)} (the checkpoint's: "
            f"{_as_option(field.name, getattr(saved, field.name))})"
            for field in fields(TrainConfig)
            if (given := getattr(args, field.name, None)) is not None
            and given != getattr(saved, field.name)
        ]
        if changed:
            raise ValueError(
                f"{'; '.join(changed)}: cannot change on --resume, the run continues with its "
                "checkpoint's configuration. Leave these options out, or start a new run with --out."
            )
        data = load_images(saved.dataset, args.data_dir, args.download)
        trainer = GANTrainer.from_checkpoint(
            args.resume, data=data, out_dir=args.out,
            device=resume_device(args.device, state.get("device", "cpu")), checkpoint_every=args.checkpoint_every,
        )
        config = trainer.config
    else:
        config = _config_from_args(args)
        data = load_images(config.dataset, args.data_dir, args.download)
        out = args.out or Path("images") / "runs" / f"{config.model}-{config.dataset}"
        trainer = GANTrainer(config, data=data, out_dir=out,
                             device=resolve_device(args.device or "cpu"),
                             checkpoint_every=args.checkpoint_every)
    if args.epochs is None and args.max_seconds is None and args.max_steps is None:
        args.max_seconds = 120.0
    print(data.source)
    print(f"training the {MODEL_TITLES[config.model]} ({config.recipe} recipe) on {config.dataset}, "
          f"from step {trainer.step}; output in {trainer.out_dir}")
    trainer.fit(epochs=args.epochs, steps=args.max_steps, seconds=args.max_seconds,
                progress=not args.quiet)
    h = trainer.history
    if h["g_loss"]:
        print(f"step {trainer.step}: G loss {h['g_loss'][-1]:.3f}, D loss {h['d_loss'][-1]:.3f}, "
              f"D(x) {h['d_real'][-1]:.2f}, D(G(z)) {h['d_fake'][-1]:.2f}")
    print(f"sample grids: {trainer.out_dir}/step_*.png, early vs late: early_vs_late.png, "
          f"training film: training.gif")
    print(f"checkpoint: {trainer.checkpoint_path}  (continue with --resume)")
    return 130 if trainer.interrupted else 0


def _run_sample(args) -> int:
    import numpy as np

    from .checkpoints import generate, load_generator

    suffix = args.out.suffix.lower()
    if suffix not in (".npy", ".png"):
        raise ValueError(f"--out must end in .npy or .png, got {args.out.name!r}")
    generator, _ = load_generator(_generator_source(args.checkpoint))
    images = generate(generator, args.n, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(args.out, images[:, 0].numpy().astype(np.float32))
    else:
        from torchvision.utils import save_image

        # 8 a row as the training grids; past 64 images a square, not a tall strip
        per_row = min(args.n, max(8, math.ceil(math.sqrt(args.n))))
        save_image(images, args.out, nrow=per_row, normalize=True, value_range=(-1, 1))
    print(f"wrote {args.n} samples to {args.out}")
    return 0


def _run_evaluate(args) -> int:
    import json

    from .metrics import format_scores, score_generator
    from .checkpoints import load_generator

    generator, config = load_generator(_generator_source(args.checkpoint))
    scores = score_generator(generator, n=args.n, seed=args.seed, dataset=config.dataset)
    if args.json:
        print(json.dumps({"checkpoint": str(args.checkpoint), **scores}))
    else:
        print(f"{args.checkpoint}: {config.model} generator, {config.dataset}")
        print(format_scores(scores))
    return 0


def _run_train_classifier(args) -> int:
    from .metrics import (accuracy, classifier_split, load_classifier, save_classifier,
                          train_classifier)

    split = classifier_split(args.dataset)
    print(f"{args.dataset}: training on {len(split['train_x']):,} training images, "
          f"{len(split['val_x']):,} more held out to choose the epoch")
    model = train_classifier(split["train_x"], split["train_y"], epochs=args.epochs,
                             validation=(split["val_x"], split["val_y"]))
    test = accuracy(model, split["test_x"], split["test_y"])
    path = save_classifier(model, args.dataset, test)
    shipped = accuracy(load_classifier(args.dataset), split["test_x"], split["test_y"])
    print(f"test-split accuracy: {test:.2%} (as saved, float16: {shipped:.2%}); weights: {path}")
    return 0


def _run_diagrams(args) -> int:
    from .diagrams import save_diagrams

    for path in save_diagrams(args.out):
        print(f"wrote {path}")
    return 0


def _run_release(args) -> int:
    from .assignments import BEGIN, release

    released = release(args.src, args.dest_dir, overwrite=args.force, solutions=args.solutions)
    for path, removed in released.items():
        print(f"released {path}" + ("" if removed else
              f"  (note: no '{BEGIN}' in it, so nothing was removed; outputs cleared)"))
    return 0


def _run_grade(args) -> int:
    import json

    from .grading import format_report, format_summary, grade_class, write_grades_csv

    def show(report: dict) -> None:
        if "error" in report:
            print(f"error: {report['error']}", file=sys.stderr)
        elif args.json:
            print(json.dumps({k: v for k, v in report.items() if k != "cell_errors"}), flush=True)
        else:
            print(format_report(report) + ("\n" if len(args.notebook) > 1 else ""), flush=True)

    reports = grade_class(args.notebook, cell_timeout=args.cell_timeout, jobs=args.jobs,
                          assignment=args.assignment, run=args.run, log=show)
    if len(reports) > 1 and not args.json:
        print(format_summary(reports))
    if args.csv is not None:
        print(f"wrote {write_grades_csv(reports, args.csv)}", file=sys.stderr if args.json else sys.stdout)
    return 1 if any("error" in r for r in reports) else 0


def _run_export(args) -> int:
    from .checkpoints import checkpoint_file, load_generator, save_generator

    source = checkpoint_file(args.checkpoint)
    if args.out.resolve() == source.resolve():
        raise ValueError(
            f"--out {args.out} is the checkpoint being exported: writing over it would drop "
            "D, both optimizers and the history that resuming needs. Choose another --out, "
            "e.g. generator.pt."
        )
    generator, config = load_generator(source)
    path = save_generator(generator, config, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


def _run_tidy_notebooks(args) -> int:
    import nbformat

    from .assignments import read_notebook
    from .live import prune_widget_state

    for path in args.notebooks:
        nb = read_notebook(path)
        dropped = prune_widget_state(nb)
        nbformat.write(nb, path)
        print(f"{path}: dropped {dropped} unused widget models")
    return 0


def _run_download(args) -> int:
    from .data import download

    raw = download(args.dataset, args.data_dir)
    print(f"{args.dataset}: full data set in {raw}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 error, 2 usage, 130 interrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .trainer import TrainingDiverged
    from .checkpoints import CheckpointError

    try:
        run = {
            "train": _run_train, "sample": _run_sample, "download": _run_download,
            "release": _run_release, "grade": _run_grade, "evaluate": _run_evaluate,
            "train-classifier": _run_train_classifier, "tidy-notebooks": _run_tidy_notebooks,
            "export": _run_export, "diagrams": _run_diagrams,
        }
        return run[args.command](args)
    except (ValueError, DataFileError, CheckpointError, TrainingDiverged, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # PyTorch's "can't allocate memory" (CPU), "out of memory" (GPU)
        if "allocate" not in str(err) and "out of memory" not in str(err):
            raise
        words = str(err).splitlines()[0]
        words = words[words.find("DefaultCPUAllocator"):] if "DefaultCPUAllocator" in words else words
        print(f"error: not enough memory ({words}); ask for less: a smaller --n or "
              "--batch-size", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
