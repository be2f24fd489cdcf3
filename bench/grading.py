"""Time to grade a class: N returns of the FC assignment, graded with --jobs 1 and --jobs J.

    python bench/grading.py [--returns 30] [--jobs 2]

Makes N student copies of ``01_build_the_fc_gan.ipynb`` (released, then solved, each a
little different, so that no two are the same file), grades them all with ``python -m
gan_helpers grade ... --csv`` once one at a time and once J at a time, prints the
wall-clock time of each and checks that both wrote the same grades.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from gan_helpers.assignments import release

FC = Path(__file__).resolve().parents[1] / "notebooks" / "assignments" / "01_build_the_fc_gan.ipynb"


def make_returns(folder: Path, n: int) -> list[Path]:
    release(FC, folder / "released")
    solved = nbformat.read(FC, as_version=4)
    paths = []
    for i in range(n):
        nb = nbformat.read(folder / "released" / FC.name, as_version=4)
        for cell, answer in zip(nb.cells, solved.cells):
            cell.source = answer.source
        nb.cells[0].source += f"\n\n(student {i})"
        path = folder / "returned" / f"student{i:02d}" / FC.name
        path.parent.mkdir(parents=True)
        nbformat.write(nb, path)
        paths.append(path)
    return paths


def time_grading(paths: list[Path], jobs: int, sheet: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gan_helpers", "grade", *map(str, paths), "--jobs",
                    str(jobs), "--csv", str(sheet)], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--returns", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_returns(folder, args.returns)
        sheets = {}
        for jobs in (1, args.jobs):
            sheets[jobs] = folder / f"grades-{jobs}.csv"
            seconds = time_grading(paths, jobs, sheets[jobs])
            print(f"--jobs {jobs}: {args.returns} returns in {seconds:.0f} s "
                  f"({seconds / args.returns:.1f} s each)", flush=True)
        rows = [list(csv.reader(sheets[jobs].open())) for jobs in (1, args.jobs)]
        print("same grades:", rows[0] == rows[1],
              f"({sum(r[1] == r[2] for r in rows[0][1:])} of {args.returns} full marks)")


if __name__ == "__main__":
    main()
