"""Classroom assignments: release student copies of solution notebooks, grade returns.

Solutions sit between nbgrader's markers, ``### BEGIN SOLUTION`` and ``### END
SOLUTION``, so the same notebooks also work with nbgrader.

- ``release(src, dest_dir)`` writes each notebook (one, or a folder's) with every
  solution replaced by a stub that raises ``NotImplementedError``, all outputs and
  execution counts cleared, and the saved widget state dropped: nothing of the
  solutions is left in the file.
- ``grade(notebook)`` executes a notebook in a fresh kernel with a time limit per cell
  (errors and endless loops are recorded, not fatal), then runs every exercise's check
  (``gan_helpers.checks``) on what the notebook defined, and returns the scores.
- ``grade_class(notebooks)`` grades a whole class's returns, one after another; a file
  that is not a notebook gets an error entry instead of stopping the rest.
  ``write_grades_csv`` turns the reports into one spreadsheet row per notebook.
"""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Callable

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = 'raise NotImplementedError("your code here")'
TEXT_STUB = "YOUR ANSWER HERE"
_GRADE_MARK = "__GAN_COURSE_GRADE__"
GRADING_CELL_TIMEOUT = 300.0  # seconds for the cell that runs the checks, at least
_SOLUTION = re.compile(
    r"^(?P<indent>[ \t]*)" + re.escape(BEGIN) + r"[^\n]*\n.*?^[ \t]*" + re.escape(END) + r"[^\n]*$",
    re.DOTALL | re.MULTILINE,
)
# nbval's markers (e.g. "# NBVAL_CHECK_OUTPUT") serve the course's CI, not the students.
_NBVAL_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_\w+[ \t]*\n?", re.MULTILINE)


def strip_solutions(source: str, stub: str = CODE_STUB) -> str:
    """Replace each BEGIN/END SOLUTION block in ``source`` with ``stub`` at the block's
    indentation. Raises ValueError on an unmatched marker."""
    def replace(block: re.Match) -> str:
        if block.group(0).count(BEGIN) > 1:  # a BEGIN whose END is missing: keep its code
            raise ValueError(f"unmatched '{BEGIN}' / '{END}' marker in:\n{source}")
        return block.group("indent") + stub

    stripped = _SOLUTION.sub(replace, source)
    if BEGIN in stripped or END in stripped:
        raise ValueError(f"unmatched '{BEGIN}' / '{END}' marker in:\n{source}")
    return stripped


def read_notebook(path: str | os.PathLike) -> nbformat.NotebookNode:
    """``nbformat.read`` (version 4), with a ValueError naming the file when it is
    missing or is not a Jupyter notebook (a student's returned file can be anything)."""
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"notebook {path} does not exist; check the path")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # nbformat raises several kinds (NotJSONError, KeyError, ...)
        first = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        raise ValueError(
            f"{path} is not a readable Jupyter notebook ({first}); pass the .ipynb file "
            "itself, as saved by Jupyter"
        ) from err


def _student_copy(src: Path) -> tuple[nbformat.NotebookNode, int]:
    """The student copy of notebook ``src``, in memory, and how many solutions it lost."""
    nb = read_notebook(src)
    removed = 0
    for number, cell in enumerate(nb.cells, start=1):
        if BEGIN in cell.source or END in cell.source:
            removed += cell.source.count(BEGIN)
            try:
                cell.source = strip_solutions(cell.source, CODE_STUB if cell.cell_type == "code" else TEXT_STUB)
            except ValueError:
                raise ValueError(
                    f"{src}, cell {number}: a '{BEGIN}' without its '{END}' or the other way "
                    "round; give each solution both markers, each on its own line"
                ) from None
        if cell.cell_type == "code":
            cell.source = _NBVAL_MARKER.sub("", cell.source)
            cell.outputs = []
            cell.execution_count = None
        cell.pop("attachments", None)
    nb.metadata.pop("widgets", None)
    return nb, removed


def release_notebook(src: str | os.PathLike, dest: str | os.PathLike) -> int:
    """Write the student copy of one notebook; returns the number of solutions removed."""
    import nbformat

    nb, removed = _student_copy(Path(src))
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, dest)
    return removed


def release(
    src: str | os.PathLike, dest_dir: str | os.PathLike, overwrite: bool = False
) -> dict[Path, int]:
    """Release one notebook, or every notebook in the folder ``src``, into ``dest_dir``;
    returns each written path with the number of solutions removed from it.

    Every copy is made in memory before any is written, so a marker without its partner
    in any notebook (ValueError naming the notebook and cell) leaves ``dest_dir`` as it
    was. A notebook already in ``dest_dir`` may hold a student's work, so nothing is
    written when any would be replaced (ValueError naming them), unless ``overwrite``."""
    import nbformat

    src, dest_dir = Path(src), Path(dest_dir)
    if not src.exists():
        raise ValueError(f"{src} does not exist: give a solution notebook or a folder of them")
    notebooks = [src] if src.is_file() else sorted(src.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"no notebooks (*.ipynb) in {src}")
    if dest_dir.resolve() == notebooks[0].parent.resolve():
        raise ValueError("DEST_DIR must differ from the solutions' folder: releasing in place "
                         "would delete the solutions")
    existing = [dest_dir / nb.name for nb in notebooks if (dest_dir / nb.name).exists()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise ValueError(
            f"{dest_dir} already has {names}, perhaps with work done in them; nothing was "
            "written. Release into another folder, or replace them with --force "
            "(overwrite=True in Python)."
        )
    copies = [(dest_dir / path.name, *_student_copy(path)) for path in notebooks]
    dest_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for target, nb, removed in copies:
        nbformat.write(nb, target)
        written[target] = removed
    return written


def grade(
    notebook: str | os.PathLike, cell_timeout: float = 120.0, kernel_name: str = "python3",
    fast: bool = True,
) -> dict:
    """Execute ``notebook`` in a fresh kernel and score its exercises.

    Each cell may run ``cell_timeout`` seconds; a cell that raises or runs too long is
    recorded and execution goes on. The cell that grade adds to run the checks may run
    longer, ``GRADING_CELL_TIMEOUT`` seconds at least. With ``fast`` (the default) the kernel runs in the
    course's fast mode (``GAN_COURSE_FAST=1``, as under ``make test``), so the "Try it"
    cells train for a few steps only: the scores come from the checks, not from them.
    Returns ``{"notebook", "score", "max_score", "exercises": [{"name", "score",
    "max_score", "feedback"}], "cell_errors": [...]}``. Raises ValueError for a notebook
    with no exercise in it (not an assignment), without running it.
    """
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    from .checks import EXERCISES

    path = Path(notebook)
    nb = read_notebook(path)
    source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # The notebook's exercises: those whose check object (gan_helpers.checks.NAME_exercise)
    # it imports or whose class or function it defines. Each is scored, so a renamed class or a deleted cell scores
    # 0 for its exercise rather than dropping it from the total.
    exercises = [
        ex.name for ex in EXERCISES
        if re.search(rf"\b{ex.name}_exercise\b", source)
        or any(re.search(rf"\b(class|def)\s+{n}\b", source) for n in ex.student_names)
    ]
    if not exercises:
        raise ValueError(
            f"{path} has no exercises to grade: it neither imports an exercise's check (such "
            "as generator_exercise) nor defines an exercise's class or function (such as "
            "FCGenerator). Grade the students' copies of the assignment notebooks."
        )
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import json as _json\nfrom gan_helpers.checks import grade_namespace as _grade\n"
            f"print({_GRADE_MARK!r} + _json.dumps(_grade(globals(), {exercises!r})))"
        )
    )
    # The limit is for the student's cells; the grading cell runs every check (the training
    # step's builds and steps networks), which on a busy machine can take longer than a
    # small --cell-timeout, and would then score the whole notebook 0.
    grading_timeout = max(cell_timeout, GRADING_CELL_TIMEOUT)
    client = NotebookClient(
        nb, timeout=cell_timeout, allow_errors=True, interrupt_on_timeout=True,
        timeout_func=lambda cell: grading_timeout if _GRADE_MARK in cell.source else cell_timeout,
        kernel_name=kernel_name, resources={"metadata": {"path": str(path.parent.resolve())}},
        # ipykernel 7.3+ warns at every start that its local TCP sockets are unencrypted;
        # "auto" has jupyter_client give the kernel CurveZMQ keys where it supports them.
        config=Config({"KernelManager": {"transport_encryption": "auto"}}),
    )
    failure = None
    kernel_env = {"env": {**os.environ, "GAN_COURSE_FAST": "1"}} if fast else {}
    try:
        client.execute(**kernel_env)
    except Exception as err:  # the kernel died, or could not start
        failure = f"the notebook could not be run to the end: {type(err).__name__}: {err}"
    cell_errors = []
    graded = None
    for index, cell in enumerate(nb.cells[:-1]):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                cell_errors.append(f"cell {index + 1}: {out.get('ename')}: {out.get('evalue')}")
    for out in nb.cells[-1].get("outputs", []):
        text = out.get("text", "") if out.get("output_type") == "stream" else ""
        if _GRADE_MARK in text:
            graded = json.loads(text.split(_GRADE_MARK, 1)[1])
    if graded is None:
        reason = failure or "the grading cell did not run"
        graded = [{"name": name, "score": 0, "max_score": 1, "feedback": reason}
                  for name in exercises]
    return {
        "notebook": str(path),
        "score": sum(e["score"] for e in graded),
        "max_score": sum(e["max_score"] for e in graded),
        "exercises": graded,
        "cell_errors": cell_errors,
    }


def format_report(report: dict) -> str:
    """The grade as text for a person: one line per exercise, then the total."""
    lines = [f"Grading {report['notebook']}"]
    width = max([16] + [len(e["name"]) for e in report["exercises"]])
    for e in report["exercises"]:
        lines.append(f"  {e['name']:{width}s} {e['score']}/{e['max_score']}  {e['feedback']}")
    for err in report["cell_errors"]:
        lines.append(f"  note: {err}")
    lines.append(f"Score: {report['score']}/{report['max_score']}")
    return "\n".join(lines)


def grade_class(
    notebooks: list[str | os.PathLike], cell_timeout: float = 120.0,
    log: Callable[[dict], object] | None = None,
) -> list[dict]:
    """``grade`` each of ``notebooks`` in turn. A file that cannot be read as a notebook
    gets ``{"notebook": path, "error": message}`` instead of a score, and the others are
    still graded. ``log``, if given, is called with each report as it is done."""
    reports = []
    for path in notebooks:
        try:
            report = grade(path, cell_timeout=cell_timeout)
        except ValueError as err:
            report = {"notebook": str(path), "error": str(err)}
        reports.append(report)
        if log is not None:
            log(report)
    return reports


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
