"""The exercise framework: ``Exercise`` (check, hint, solution), ``CheckResult``, and how
a check reports a mistake (``Mistake``) or a crash in the student's code."""

from __future__ import annotations

import inspect
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch


@dataclass
class CheckResult:
    """The outcome of one check: ``passed``, and the feedback lines for the student."""

    name: str
    passed: bool
    feedback: list[str] = field(default_factory=list)

    @property
    def score(self) -> int:
        return int(self.passed)

    def __str__(self) -> str:
        head = f"[{self.name}] " + ("correct" if self.passed else "not yet")
        return "\n".join([head] + [f"  - {line}" for line in self.feedback])


class Mistake(Exception):
    """Raised inside a check to report one diagnosed mistake."""


class NotYet(AssertionError):
    """Raised by a check cell whose exercise is not solved yet, after its feedback, so
    that nbgrader's autograder (and any runner) counts the cell as failed."""


_SOLUTIONS_CLOSED = False


def close_solutions() -> None:
    """Make every exercise's ``.solution()`` say that solutions are closed (the first
    cell of a notebook released with ``release --no-solutions`` calls this)."""
    global _SOLUTIONS_CLOSED
    _SOLUTIONS_CLOSED = True


def _their_frame(err: BaseException) -> traceback.FrameSummary | None:
    """The innermost frame of the traceback in the student's code, not in torch's or
    this package's (the line of torch's linear.py that raised says nothing to them);
    None when their code is not on it (the check tripped over what it returned)."""
    frames = traceback.extract_tb(err.__traceback__)
    library = (str(Path(torch.__file__).parent), str(Path(__file__).parents[1]))
    theirs = [f for f in frames if not f.filename.startswith(library)]
    return theirs[-1] if theirs else None


def _crash_advice(err: BaseException) -> str:
    """What a crash usually means in this course's exercises, where PyTorch's own
    message does not say it."""
    if isinstance(err, ValueError) and "target size" in str(err).lower():
        # Labels built as torch.ones(64, 1) fit one batch size only; the checks use others,
        # and so does a training run's last, shorter batch.
        return (" The labels must have the shape of D's output for every batch size: "
                "torch.ones_like(d_out) and torch.zeros_like(d_out), not torch.ones(64, 1).")
    fixed = re.match(r"shape '\[(\d+),.*' is invalid for input of size", str(err))
    if isinstance(err, RuntimeError) and fixed:
        # img.view(64, -1): a batch size written into the code; the checks use others.
        return (f" If {fixed.group(1)} is a batch size written into the code, take it from the "
                f"input instead, x.view(x.size(0), ...), so that every batch size fits.")
    return ""


@dataclass
class Exercise:
    """One exercise: ``check(...)`` the student's code, ``hint()``, ``solution()``."""

    name: str
    title: str
    student_names: tuple[str, ...]
    _check: Callable[..., list[str]]
    _hint: str
    _solution: tuple

    def check(self, *student) -> CheckResult:
        """A notebook's check cell: run the check on the student's objects, print the
        feedback and return the result; when the exercise is not solved yet, raise
        ``NotYet`` after the feedback, so that a runner (nbgrader) counts the cell."""
        __tracebackhide__ = True  # IPython then shows the student's cell, not this frame
        result = self.report(*student)
        if not result.passed:
            raise NotYet(f"{self.name}: not yet, see the feedback above")
        return result

    def report(self, *student) -> CheckResult:
        """Run the check, print the feedback and return the result, passed or not."""
        result = self.result(*student)
        print(result)
        if not result.passed:
            print(f"  (stuck? {self.name}_exercise.hint(), or .solution() to see the reference)")
        return result

    def result(self, *student) -> CheckResult:
        """Run the check on the student's objects and return the result, silently."""
        try:
            # Checks draw their own inputs from a fixed seed and leave the caller's RNG alone.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                passed_notes = self._check(*student)
            result = CheckResult(self.name, True, passed_notes)
        except Mistake as mistake:
            result = CheckResult(self.name, False, [str(mistake)])
        except NotImplementedError:
            result = CheckResult(self.name, False, ["not implemented yet: replace the `raise NotImplementedError` with your code."])
        except Exception as err:  # the student's code crashed: show where, briefly
            where = _their_frame(err)
            result = CheckResult(self.name, False, [
                f"your code raised {type(err).__name__}: {err} (line {where.lineno}: {where.line})"
                f"{_crash_advice(err)}"
                if where else
                f"what your code returned could not be checked ({type(err).__name__}: {err}): "
                f"is it what the exercise asks for? {self.name}_exercise.hint() says."])
        return result

    def hint(self) -> None:
        print(f"Hint ({self.title}): {self._hint}")

    def solution(self) -> None:
        if _SOLUTIONS_CLOSED:
            print(f"Solutions are closed for this assignment: {self.name}_exercise.hint() "
                  "still helps.")
            return
        if all(isinstance(obj, str) for obj in self._solution):  # a question's worked answer
            print(f"Worked answer ({self.title}): " + "\n".join(self._solution))
            return
        print(f"Reference solution ({self.title}), from gan_helpers:\n")
        for obj in self._solution:
            print(inspect.getsource(obj))
