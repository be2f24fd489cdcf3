"""Scoring in a worker process that imports the checks before any student code, one
forked child per exercise (``score_exercises``)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..assignments import POINTS
from .definitions import CELL_PREFIX, definitions
from .sandbox import (MEMORY_BYTES, _kill_group, _kill_user_processes, _run, _student_env, _text,
                      adopt_orphans, end_descendants, limit_this_process, sandbox_available,
                      sandbox_uid)

CHECK_SECONDS = 300.0  # wall-clock limit for one exercise's check
_WORKER_MARK = "__GAN_COURSE_SCORES__"

def _snapshot(namespaces: list) -> dict:
    return {(name, key): value for name, ns in namespaces for key, value in list(vars(ns).items())}


def _changed(before: dict, namespaces: list) -> list[str]:
    after = _snapshot(namespaces)
    missing = object()
    return sorted(f"{name}.{key}" for (name, key), value in before.items()
                  if after.get((name, key), missing) is not value)


def _reference_code(exercises) -> tuple[set, set]:
    """The code objects of the package's reference solutions (``Exercise._solution``):
    (functions and constructors, which student code must not call; methods, which it
    must not call on its own objects)."""
    import inspect

    calls, methods = set(), set()
    for exercise in exercises:
        for obj in exercise._solution:
            if isinstance(obj, str):  # a question's worked answer, not code
                continue
            if isinstance(obj, type):
                for name, member in vars(obj).items():
                    code = getattr(inspect.unwrap(member), "__code__", None) if callable(member) else None
                    if code is not None:
                        (calls if name == "__init__" else methods).add(code)
            else:
                calls.add(inspect.unwrap(obj).__code__)
    return calls, methods


def _watched() -> list[tuple[str, object]]:
    """The objects whose attributes the student's code must leave alone while it is
    checked: every checks module, the package's reference modules, builtins, torch."""
    import builtins

    import torch
    from torch import nn

    from .. import checkpoints, checks, config, losses, models, step, trainer
    from ..checks import exercise as framework
    from ..checks import losses as loss_checks
    from ..checks import networks, probes, questions
    from ..checks import train_step as step_checks

    return [("gan_helpers.checks", checks), ("gan_helpers.checks.exercise", framework),
            ("gan_helpers.checks.probes", probes), ("gan_helpers.checks.networks", networks),
            ("gan_helpers.checks.losses", loss_checks),
            ("gan_helpers.checks.train_step", step_checks),
            ("gan_helpers.checks.questions", questions), ("gan_helpers.losses", losses),
            ("gan_helpers.models", models), ("gan_helpers.step", step),
            ("gan_helpers.trainer", trainer), ("gan_helpers.config", config),
            ("gan_helpers.checkpoints", checkpoints),
            ("gan_helpers.grading.scoring", sys.modules[__name__]),
            ("checks.Exercise", checks.Exercise), ("checks.CheckResult", checks.CheckResult),
            ("builtins", builtins), ("torch", torch), ("torch.Tensor", torch.Tensor),
            ("torch.nn.Module", nn.Module), ("torch.nn.functional", nn.functional),
            ("torch.autograd", torch.autograd)]


def _run_definitions(modules: list[tuple[int, ast.Module]]) -> tuple[dict, list[str]]:
    """Run the notebook's definitions (``definitions``), cell by cell; returns the
    namespace and the cells that failed, as "cell N: Error: message"."""
    namespace: dict = {"__name__": "__main__"}
    failed = []
    for number, module in modules:
        try:
            exec(compile(module, f"{CELL_PREFIX}{number}>", "exec"), namespace)
        except BaseException as err:  # noqa: BLE001 - a student's import can fail any way
            failed.append(f"cell {number}: {type(err).__name__}: {err}")
    return namespace, failed


def _reference_call_tracer(all_exercises, calls: list[str]) -> Callable:
    """A ``sys.setprofile`` function that appends to ``calls`` each call into the
    package's reference solutions made from the student's code."""
    from .. import checks

    checks_folder = os.path.dirname(checks.__file__) + os.sep
    forbidden_calls, forbidden_methods = _reference_code(all_exercises)

    def from_student(frame) -> bool:
        # The student's code is on the way to this call before the checks' code is:
        # direct calls, and calls made through the standard library (functools, ...).
        frame = frame.f_back
        while frame is not None:
            if frame.f_code.co_filename.startswith(CELL_PREFIX):
                return True
            if frame.f_code.co_filename.startswith(checks_folder):
                return False
            frame = frame.f_back
        return False

    def profile(frame, event, arg):
        if event != "call":
            return
        code = frame.f_code
        if code in forbidden_calls or (
                code in forbidden_methods
                # a method of the package's network that the check itself handed over
                and not type(frame.f_locals.get("self")).__module__.startswith("gan_helpers")):
            if from_student(frame):
                calls.append(f"{Path(code.co_filename).stem}.{code.co_qualname}"
                             if hasattr(code, "co_qualname") else code.co_name)

    return profile


def _check_in_child(exercise, modules: list[tuple[int, ast.Module]], all_exercises) -> dict:
    """In a forked child: run the student's definitions, then ``exercise``'s check,
    tracing calls from the student's code into the package's reference solutions.
    Returns the result."""
    watched = _watched()
    before = _snapshot(watched)
    changed_since = _changed  # held here: the student's code runs before it is called
    calls: list[str] = []
    profile = _reference_call_tracer(all_exercises, calls)

    def result(passed: bool, feedback: str) -> dict:
        return {"name": exercise.name, "score": int(passed), "feedback": feedback}

    namespace, failed = _run_definitions(modules)
    missing = [n for n in exercise.student_names if n not in namespace]
    if missing:
        return result(False, f"{', '.join(missing)} is not defined by a def or class statement, "
                             "or by an assignment of a number or a string, in the notebook: the "
                             "check looks for your work under the name the exercise cell gives "
                             "it, so keep that name."
                             + (f" (Running the notebook's imports and definitions failed in "
                                f"{'; '.join(failed)}.)" if failed else ""))
    objects = [namespace[n] for n in exercise.student_names]
    for name, obj in zip(exercise.student_names, objects):
        borrowed = _borrowed(obj)
        if borrowed:
            return result(False, f"{name} {borrowed}: write your own.")
    sys.setprofile(profile)
    try:
        outcome = exercise.result(*objects)
    finally:
        sys.setprofile(None)
    changed = changed_since(before, watched)
    if changed:
        return result(False, "your code changed the grader's or PyTorch's own objects while "
                             f"it was checked ({', '.join(changed[:5])}): that scores 0.")
    if calls:
        return result(False, "your code calls gan_helpers' own implementation "
                             f"({', '.join(sorted(set(calls))[:3])}) instead of doing the work "
                             "itself: write your own.")
    return result(outcome.passed, " ".join(outcome.feedback))


def _borrowed(obj: object) -> str:
    """Why ``obj`` is not the student's own work, or "" when it is."""
    import inspect

    if obj is ... or type(obj) in (int, float, str):  # a question's answer, or its blank
        return ""
    if isinstance(obj, type):
        theirs = [c for c in obj.__mro__ if c.__module__.startswith("gan_helpers")]
        if theirs:
            return f"is, or is built on, gan_helpers' {theirs[0].__qualname__}"
        for member in vars(obj).values():
            code = getattr(inspect.unwrap(member), "__code__", None) if callable(member) else None
            if code is not None and not code.co_filename.startswith(CELL_PREFIX):
                return "has methods that were not written in the notebook"
        return ""
    code = getattr(inspect.unwrap(obj), "__code__", None) if callable(obj) else None
    if code is None or not code.co_filename.startswith(CELL_PREFIX):
        where = getattr(obj, "__module__", None) or type(obj).__name__
        return f"is not a function written in the notebook (it comes from {where})"
    return ""


def _worker(request: dict) -> list[dict]:
    """Score ``request["exercises"]`` on ``request["cells"]``: one forked child each.
    Runs in a fresh interpreter that imported the checks before any student code."""
    from .. import checks

    adopt_orphans()  # what a child's code leaves running, in any session, stays ours to end
    exercises = {e.name: e for e in checks.EXERCISES}
    modules, _notes = definitions(request["cells"])
    home = Path.cwd() / "home"  # the children's: theirs to write
    home.mkdir()
    if request["uid"] is not None:
        os.chown(home, request["uid"], request["uid"])
    results = []
    for name in request["exercises"]:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: student code runs only here
            os.close(read)
            try:
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.chdir(home)
                os.environ.clear()
                os.environ.update(_student_env(home))
                # CPU time beyond the wall-clock limit: the limit the parent judges by.
                limit_this_process(request["seconds"] + 60, request["memory"], request["uid"])
                try:
                    outcome = _check_in_child(exercises[name], modules, checks.EXERCISES)
                except Exception as err:  # noqa: BLE001 - the grader's own failure, reported
                    outcome = {"name": name, "score": 0, "feedback": "the grader failed while "
                               f"checking this exercise: {type(err).__name__}: {err}"}
                os.write(write, json.dumps(outcome).encode())
            finally:
                os._exit(0)
        os.close(write)
        results.append(_collect(name, pid, read, request["seconds"]))
        if request["uid"] is not None:
            _kill_user_processes(request["uid"])
        end_descendants()  # what this child left, before the next
    return results


def _collect(name: str, pid: int, read: int, seconds: float) -> dict:
    """The child's result for exercise ``name``, or a 0 saying why there is none."""
    deadline = time.monotonic() + seconds
    chunks, size = [], 0
    os.set_blocking(read, False)
    while True:
        try:
            chunk = os.read(read, 1 << 16)
            if chunk and size < (1 << 20):
                chunks.append(chunk)
                size += len(chunk)
        except BlockingIOError:
            pass
        exited = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if exited is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    _kill_group(pid)  # before reaping it: whatever the student's code left in its group
    _, status = os.waitpid(pid, 0)
    try:
        while (chunk := os.read(read, 1 << 16)) and size < (1 << 20):
            chunks.append(chunk)
            size += len(chunk)
    except BlockingIOError:
        pass
    os.close(read)
    if exited is None:
        return {"name": name, "score": 0,
                "feedback": f"the check did not finish within {seconds:.0f} s: is there an "
                            "endless loop in your code?"}
    try:
        outcome = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        outcome = None
    if not (isinstance(outcome, dict) and outcome.get("name") == name
            and type(outcome.get("score")) is int and isinstance(outcome.get("feedback"), str)):
        how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else "ended without a result")
        return {"name": name, "score": 0,
                "feedback": f"checking your code {how} (out of memory or CPU time, or your "
                            "code ended the process)."}
    return {"name": name, "score": outcome["score"], "feedback": outcome["feedback"]}


def score_exercises(cells: list[str], exercises: list[str], seconds: float = CHECK_SECONDS,
                    memory: int = MEMORY_BYTES, uid: int | None = None) -> list[dict]:
    """The scores of ``exercises`` on the code cells ``cells``, from a fresh worker
    process (see the module docstring): [{"name", "score", "max_score", "feedback"}],
    each score clamped to 0..max_score. ``uid``: the user the checked code runs as."""
    if uid is None and sandbox_available():
        with sandbox_uid() as uid:
            return score_exercises(cells, exercises, seconds, memory, uid)
    request = {"cells": cells, "exercises": exercises, "seconds": seconds, "memory": memory,
               "uid": uid}
    with tempfile.TemporaryDirectory(prefix="gan-grade-") as work:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-m", "gan_helpers.grading"], input=json.dumps(request),
                capture_output=True, text=True, cwd=work, start_new_session=True,
                timeout=(seconds + 30) * max(1, len(exercises)) + 120,
            )
        except subprocess.TimeoutExpired as err:
            proc = subprocess.CompletedProcess(err.cmd, -9, stdout="", stderr="it timed out")
    # The worker writes one line of scores as it ends. A second such line, or a worker
    # that did not end cleanly, means that something else wrote there: no scores then.
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_WORKER_MARK)]
    reported, failure = {}, None
    if proc.returncode != 0 or len(lines) != 1:
        failure = ("the grader's worker failed: " + (proc.stderr.strip().splitlines() or [
            f"exit status {proc.returncode}, {len(lines)} lines of scores"])[-1])
    else:
        reported = {r["name"]: r for r in json.loads(lines[0][len(_WORKER_MARK):])}
    scores = []
    for name in exercises:
        r = reported.get(name) or {"score": 0, "feedback": failure or "no score reported"}
        score = r.get("score", 0)
        score = min(max(score, 0), POINTS) if type(score) is int else 0
        scores.append({"name": name, "score": score, "max_score": POINTS,
                       "feedback": _text(r.get("feedback", ""))})
    return scores


def _main() -> None:
    if "--run" in sys.argv:
        _run(json.loads(sys.argv[sys.argv.index("--run") + 1]))
        return
    out = _worker(json.loads(sys.stdin.read()))
    sys.stdout.write(_WORKER_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()
