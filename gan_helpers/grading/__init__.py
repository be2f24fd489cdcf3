"""Grading a returned assignment where the student's code cannot write its own score.

``grade(notebook)`` works in three steps:

1. **What is graded** comes from the assignment, never from the student's source: the
   stamp ``release`` put in the notebook's metadata names the assignment, and its
   exercise list is read from ``assignments.ASSIGNMENTS``. A removed stamp falls back
   to the file name; an edited one is noted and ignored.
2. **Scores** come from a fresh worker process (``python -I -m gan_helpers.grading``)
   that imports the checks before any student code. For each exercise it forks a child
   that runs only the notebook's imports, top-level ``def``/``class`` statements and
   assignments of literals or of arithmetic on numbers (a question's answer), taken
   from the cells with ``ast``; any other statement, and any definition that runs code
   while it is defined, is skipped) and then that exercise's check, with a
   time and memory limit. The child traces the calls: work borrowed from
   ``gan_helpers`` (an import, a subclass, a wrapper, a call from the student's code
   into the package) scores 0, and so does a check whose modules the student's code
   changed while it ran. The worker, which never runs student code, reports the scores;
   ``grade`` clamps each to its exercise's maximum.
3. **The notebook runs** in a Jupyter kernel, for its outputs and cell errors only,
   after its scores are fixed: in a temporary working directory, with limits on CPU
   time, memory and processes, and, when grading runs as root, as a user id of its own
   that owns nothing else (``sandbox_uid``).

What this does not do: it is no container. A notebook that runs as your user can read
and write your files; docs/teaching.md says how to grade inside a container.
"""

from __future__ import annotations

import csv
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..assignments import ASSIGNMENTS, POINTS, STAMP_KEY, read_notebook
from .definitions import CELL_PREFIX, definitions
from .sandbox import (RUN_SECONDS, _running_as_root, _text, clean_up_after, run_notebook,
                      sandbox_available, sandbox_uid)
from .scoring import CHECK_SECONDS, score_exercises

def assignment_of(nb, path: Path, assignment: str | None = None) -> tuple[str | None, list[str]]:
    """The assignment ``nb`` is graded as, and notes for the report. The teacher's
    ``assignment`` wins; then the file name, where it is an assignment's; then the
    stamp's name."""
    notes = []
    stamp = nb.metadata.get(STAMP_KEY)
    stamped = stamp.get("assignment") if isinstance(stamp, dict) else None
    if assignment is not None:
        name = assignment
    elif path.stem in ASSIGNMENTS and stamped != path.stem:
        # The file keeps the name it was released under; a stamp can be edited to any.
        name = path.stem
        notes.append(f"the notebook's assignment stamp names {stamped!r}; graded as {name}, "
                     "by its file name" if stamped else
                     f"the notebook has no assignment stamp; graded as {name}, by its file name")
    elif stamped in ASSIGNMENTS:
        name = stamped
        if list(stamp.get("exercises", [])) != list(ASSIGNMENTS[name]):
            notes.append(f"the notebook's assignment stamp was edited; graded against "
                         f"{name}'s own exercise list")
    elif path.stem in ASSIGNMENTS:
        name = path.stem
        notes.append(f"the notebook has no assignment stamp; graded as {name}, by its file name")
    else:
        return None, notes
    if name not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment {name!r}: choose one of {', '.join(ASSIGNMENTS)}")
    return name, notes


# --------------------------------------------------------------- the student's code


# ------------------------------------------------------------------ grade, grade_class
def grade(
    notebook: str | os.PathLike, cell_timeout: float = 120.0, assignment: str | None = None,
    fast: bool = True, run: bool = True,
) -> dict:
    """Grade one returned notebook (see the module docstring).

    Returns ``{"notebook", "assignment", "score", "max_score", "exercises": [{"name",
    "score", "max_score", "feedback"}], "notes": [...], "cell_errors": [...]}``. Raises
    ValueError for a file that is no notebook, or one that names no assignment.
    ``run=False`` skips executing the notebook (scores only)."""
    path = Path(notebook)
    nb = read_notebook(path)
    name, notes = assignment_of(nb, path, assignment)
    if name is None:
        raise ValueError(
            f"{path} names no assignment: it has no stamp from `release` and its file name is "
            f"none of {', '.join(ASSIGNMENTS)}. Grade it with --assignment NAME."
        )
    exercises = list(ASSIGNMENTS[name])
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    from ..checks import EXERCISES

    names = {n for e in EXERCISES if e.name in exercises for n in e.student_names}
    notes += definitions(cells, names)[1]
    if _running_as_root() and not sandbox_available():
        notes.append("the notebook's code ran as root, with the other limits only: this "
                     "Python is out of other users' reach (docs/teaching.md)")
    cell_errors = []
    with sandbox_uid() as uid:
        scores = score_exercises(cells, exercises, uid=uid)
        if uid is not None:
            clean_up_after(uid)  # nothing of the scoring may meet the run
        if run:
            with tempfile.TemporaryDirectory(prefix="gan-run-") as work:
                home = Path(work) / "notebook"
                home.mkdir()
                copy = home / path.name
                copy.write_bytes(path.read_bytes())
                if uid is not None:
                    os.chown(copy, uid, uid, follow_symlinks=False)
                    os.chown(home, uid, uid, follow_symlinks=False)
                cell_errors = run_notebook(copy, cell_timeout, fast=fast, uid=uid)
                if uid is not None:
                    clean_up_after(uid)  # before the folder is deleted
    return {
        "notebook": str(path), "assignment": name,
        "score": sum(s["score"] for s in scores), "max_score": POINTS * len(exercises),
        "exercises": scores, "notes": [_text(n) for n in notes], "cell_errors": cell_errors,
    }


def grade_class(
    notebooks: list[str | os.PathLike], cell_timeout: float = 120.0, jobs: int = 1,
    assignment: str | None = None, run: bool = True,
    log: Callable[[dict], object] | None = None,
) -> list[dict]:
    """``grade`` each of ``notebooks``, ``jobs`` at a time, in the given order. A file
    that cannot be graded gets ``{"notebook": path, "error": message}`` and the others
    are still graded. ``log``, if given, is called with each report in order."""
    def one(path) -> dict:
        try:
            return grade(path, cell_timeout=cell_timeout, assignment=assignment, run=run)
        except ValueError as err:
            return {"notebook": str(path), "error": str(err)}
        except Exception as err:  # noqa: BLE001 - one notebook must not stop the class
            return {"notebook": str(path), "error": f"the grader failed on this notebook: "
                                                   f"{type(err).__name__}: {_text(err)}"}

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        reports = []
        for report in pool.map(one, notebooks):
            reports.append(report)
            if log is not None:
                log(report)
    return reports


def format_report(report: dict) -> str:
    """The grade as text for a person: one line per exercise, then the total."""
    lines = [f"Grading {report['notebook']}"]
    width = max([16] + [len(e["name"]) for e in report["exercises"]])
    for e in report["exercises"]:
        lines.append(f"  {e['name']:{width}s} {e['score']}/{e['max_score']}  {e['feedback']}")
    if report.get("assignment"):
        lines[0] += f" (assignment {report['assignment']})"
    for note in report.get("notes", []) + report["cell_errors"]:
        lines.append(f"  note: {note}")
    lines.append(f"Score: {report['score']}/{report['max_score']}")
    return "\n".join(lines)


def format_summary(reports: list[dict]) -> str:
    """One line per graded notebook: its score, or that it could not be graded."""
    width = max(len(r["notebook"]) for r in reports)
    lines = [f"Summary, {len(reports)} notebooks:"]
    for r in reports:
        result = ("not graded (see the error above)" if "error" in r
                  else f"{r['score']}/{r['max_score']}")
        lines.append(f"  {r['notebook']:{width}s}  {result}")
    return "\n".join(lines)


def write_grades_csv(reports: list[dict], path: str | os.PathLike) -> Path:
    """One row per report: notebook, score, max_score, one column per exercise (its
    score, empty where the notebook did not attempt it) and error (empty when graded).
    Opens in any spreadsheet."""
    names: list[str] = []
    for report in reports:
        for e in report.get("exercises", []):
            if e["name"] not in names:
                names.append(e["name"])
    path = Path(path)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["notebook", "score", "max_score", *names, "error"])
        for r in reports:
            by_name = {e["name"]: e["score"] for e in r.get("exercises", [])}
            writer.writerow([r["notebook"], r.get("score", ""), r.get("max_score", ""),
                             *(by_name.get(n, "") for n in names), r.get("error", "")])
    return path


__all__ = ["CELL_PREFIX", "CHECK_SECONDS", "RUN_SECONDS", "assignment_of", "clean_up_after",
           "definitions", "format_report", "format_summary", "grade", "grade_class", "run_notebook",
           "sandbox_available", "sandbox_uid", "score_exercises", "write_grades_csv"]
