"""Grading a returned assignment where the student's code cannot write its own score.

``grade(notebook)`` works in three steps:

1. **What is graded** comes from the assignment, never from the student's source: the
   stamp ``release`` put in the notebook's metadata names the assignment, and its
   exercise list is read from ``assignments.ASSIGNMENTS``. A removed stamp falls back
   to the file name; an edited one is noted and ignored.
2. **Scores** come from a fresh worker process (``python -I -m gan_helpers.grading``)
   that imports the checks before any student code. For each exercise it forks a child
   that runs only the notebook's imports and top-level ``def``/``class`` statements
   (taken from the cells with ``ast``; any other statement, and any definition that
   runs code while it is defined, is skipped) and then that exercise's check, with a
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
and write your files; README (For teachers) says how to grade inside a container.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from .assignments import ASSIGNMENTS, POINTS, STAMP_KEY, read_notebook

CELL_PREFIX = "<notebook cell "  # the file name of the student's compiled code
CHECK_SECONDS = 300.0  # wall-clock limit for one exercise's check
MEMORY_BYTES = 4 * 1024**3  # RLIMIT_DATA of the student's processes
ADDRESS_SLACK = 8 * 1024**3  # RLIMIT_AS is this much above it (shared mappings count there)
FILE_BYTES = 1024**3  # RLIMIT_FSIZE: no file larger than this
EXTRA_PROCESSES = 256  # processes a notebook may start (RLIMIT_NPROC, above the user's own)
_WORKER_MARK = "__GAN_COURSE_SCORES__"
_ALLOWED_DECORATORS = {"staticmethod", "classmethod", "property", "abstractmethod",
                       "torch.no_grad", "torch.inference_mode", "torch.enable_grad"}
RUN_SECONDS = 600.0  # wall-clock limit for running one notebook, whatever its cells
_MAX_TEXT = 600  # characters of a student's text (feedback, an error) kept in a report


# ------------------------------------------------------------------ what is graded
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
def _dotted(node: ast.AST) -> str:
    return _dotted(node.value) + "." + node.attr if isinstance(node, ast.Attribute) else \
        node.id if isinstance(node, ast.Name) else ""


def _is_literal(node: ast.AST | None) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False


def _definition_runs_code(node: ast.AST) -> bool:
    """True when defining ``node`` (a def or class) would run code: a decorator other
    than ``staticmethod``, ``property``, ``torch.no_grad()`` and the like, a call, a
    lambda, a walrus or a comprehension in a default value, annotation or base class, a
    metaclass, or a class body statement other than a def, a docstring or an assignment
    of a literal value."""
    exprs: list[ast.AST] = []
    for d in node.decorator_list:
        call = isinstance(d, ast.Call)
        if _dotted(d.func if call else d) not in _ALLOWED_DECORATORS or (call and (d.args or d.keywords)):
            return True
    if isinstance(node, ast.ClassDef):
        if node.keywords:  # metaclass=..., or arguments for a base's __init_subclass__
            return True
        exprs += node.bases
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _definition_runs_code(stmt):
                    return True
            elif isinstance(stmt, ast.Pass) or (
                    isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
                pass
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and (
                    stmt.value is None or _is_literal(stmt.value)):
                if isinstance(stmt, ast.AnnAssign):
                    exprs.append(stmt.annotation)
            else:
                return True
    else:
        a = node.args
        exprs += a.defaults + [d for d in a.kw_defaults if d is not None]
        exprs += [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs if x.annotation]
        exprs += [x.annotation for x in (a.vararg, a.kwarg) if x is not None and x.annotation]
        if node.returns is not None:
            exprs.append(node.returns)
    unsafe = (ast.Call, ast.Lambda, ast.NamedExpr, ast.ListComp, ast.SetComp, ast.DictComp,
              ast.GeneratorExp, ast.Await, ast.Yield, ast.YieldFrom)
    return any(isinstance(n, unsafe) for e in exprs for n in ast.walk(e))


def _python_of(source: str) -> str:
    """A cell's source as plain Python: IPython's magics and shell lines become calls
    of ``get_ipython()``, which the grader does not run."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        return TransformerManager().transform_cell(source)
    except Exception:  # noqa: BLE001 - IPython's own parser failing on a student's text
        return source


def definitions(cells: list[str], names: set[str] | None = None
                ) -> tuple[list[tuple[int, ast.Module]], list[str]]:
    """The statements of ``cells`` (code cell sources) that the grader runs: imports,
    assignments of literal values (``LATENT = 100``), and top-level ``def``/``class``
    statements that run no code while being defined; each as a one-statement module
    with its cell number, in order. Also returns a note per def or class skipped, and
    per assignment skipped that binds one of ``names`` (the exercises' names)."""
    kept, notes = [], []
    for number, source in enumerate(cells, start=1):
        try:
            tree = ast.parse(_python_of(source))
        except SyntaxError as err:
            notes.append(f"code cell {number} is not valid Python ({err.msg}, line {err.lineno}); "
                         "nothing in it was graded")
            continue
        except (ValueError, MemoryError, RecursionError) as err:
            notes.append(f"code cell {number} could not be read ({type(err).__name__}); "
                         "nothing in it was graded")
            continue
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                kept.append((number, stmt))
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if _definition_runs_code(stmt):
                    notes.append(f"code cell {number}: `{stmt.name}` was not run by the grader, "
                                 "since defining it runs code (a decorator, a call in a default "
                                 "value or base class, a metaclass, or statements in the class "
                                 "body)")
                else:
                    kept.append((number, stmt))
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                if isinstance(stmt, ast.Assign) and _is_literal(stmt.value) and all(
                        isinstance(t, ast.Name) for t in stmt.targets):
                    kept.append((number, stmt))
                    continue
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                bound = [n.id for t in targets for n in ast.walk(t)
                         if isinstance(n, ast.Name) and n.id in (names or ())]
                if bound:
                    notes.append(f"code cell {number}: the assignment to {', '.join(bound)} was "
                                 "not run by the grader, which runs only imports, def and class "
                                 "statements and assignments of literal values")
    return [(n, ast.Module(body=[stmt], type_ignores=[])) for n, stmt in kept], notes


# ----------------------------------------------------------------------- limits
def _running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _user_tasks() -> int:
    """Processes and threads of this user: what RLIMIT_NPROC counts."""
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(entry / "task"))
            except OSError:
                pass
    return count


def sandbox_available() -> bool:
    """Whether notebooks can run as a user of their own: grading runs as root, and
    other users can reach this Python (its interpreter and its standard library). A
    Python under /root, as pyenv installs it there, is out of their reach."""
    if not _running_as_root():
        return False
    import stat
    import sysconfig

    paths = {os.path.realpath(sys.executable)} | {
        os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib", "purelib")}
    for path in paths:
        parts = Path(path).parts
        for i in range(1, len(parts) + 1):
            mode = os.stat(Path(*parts[:i])).st_mode
            if not mode & stat.S_IXOTH:
                return False
    return True


_free_uids: "queue.Queue[int] | None" = None
_uid_lock = threading.Lock()


@contextlib.contextmanager
def sandbox_uid():
    """When ``sandbox_available()``: a user and group id of its own for one notebook's
    processes (none of the system's), so that they can write nothing of the grader's,
    the process limit holds for them (root is exempt from it), and whatever they leave
    running or in the shared temporary folders is removed without touching another
    notebook's. Else None."""
    global _free_uids
    if not sandbox_available():
        yield None
        return
    import grp
    import pwd

    with _uid_lock:
        if _free_uids is None:
            taken = {p.pw_uid for p in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
            _free_uids = queue.Queue()
            for uid in range(64000, 65000):
                if uid not in taken:
                    _free_uids.put(uid)
    uid = _free_uids.get()
    try:
        yield uid
    finally:
        clean_up_after(uid)
        _free_uids.put(uid)


def clean_up_after(uid: int) -> None:
    """End every process of sandbox user ``uid``, wherever it went (a new session, a
    double fork), and delete its files in the shared temporary folders."""
    _kill_user_processes(uid)
    for top in ("/tmp", "/var/tmp", "/dev/shm"):
        for folder, dirs, files in os.walk(top, topdown=False):
            for name in files + dirs:
                path = os.path.join(folder, name)
                try:
                    if os.lstat(path).st_uid == uid:
                        if os.path.isdir(path) and not os.path.islink(path):
                            os.rmdir(path)
                        else:
                            os.unlink(path)
                except OSError:
                    pass


def limit_this_process(cpu_seconds: float, memory_bytes: int = MEMORY_BYTES,
                       uid: int | None = None) -> None:
    """Limits for a process about to run student code (and inherited by its children):
    CPU time, private memory (RLIMIT_DATA: imports still work, a 20 GB tensor fails)
    and address space, file size, processes, no core files; with ``uid`` (when root),
    become that user first."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    cpu = max(1, int(cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    space = memory_bytes + ADDRESS_SLACK  # torch's libraries map a few GB they never touch
    resource.setrlimit(resource.RLIMIT_AS, (space, space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_BYTES, FILE_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A fresh sandbox user owns nothing yet; as yourself, your own tasks count too.
    processes = EXTRA_PROCESSES + (0 if uid is not None else _user_tasks())
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_user_processes(uid: int) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # every process this user may signal, but itself
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _student_env(home: Path, fast: bool = True) -> dict:
    """The whole environment of a process that runs student code: none of the
    teacher's variables (tokens, say), its folder as home, Jupyter's and matplotlib's
    files there too."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "HOME": str(home), "USER": "student", "LOGNAME": "student", "TMPDIR": str(home),
           "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(home / ".matplotlib"),
           "JUPYTER_RUNTIME_DIR": str(home / ".runtime"), "JUPYTER_DATA_DIR": str(home / ".data"),
           "JUPYTER_CONFIG_DIR": str(home / ".jupyter"), "IPYTHONDIR": str(home / ".ipython"),
           "JUPYTER_PLATFORM_DIRS": "1"}
    if fast:
        env["GAN_COURSE_FAST"] = "1"
    return env


def _text(value: object) -> str:
    """A student's text for a report: printable characters only, at most _MAX_TEXT."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return text if len(text) <= _MAX_TEXT else text[:_MAX_TEXT] + "..."


# ----------------------------------------------------------------- the worker side
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
            if isinstance(obj, type):
                for name, member in vars(obj).items():
                    code = getattr(inspect.unwrap(member), "__code__", None) if callable(member) else None
                    if code is not None:
                        (calls if name == "__init__" else methods).add(code)
            else:
                calls.add(inspect.unwrap(obj).__code__)
    return calls, methods


def _check_in_child(exercise, modules: list[tuple[int, ast.Module]], all_exercises) -> dict:
    """In a forked child: run the student's definitions, then ``exercise``'s check,
    tracing calls from the student's code into the package's reference solutions.
    Returns the result."""
    import builtins

    import torch
    from torch import nn

    from . import checks, config, losses, models, step, trainer

    watched = [("gan_helpers.checks", checks), ("gan_helpers.losses", losses),
               ("gan_helpers.models", models), ("gan_helpers.step", step),
               ("gan_helpers.trainer", trainer), ("gan_helpers.config", config),
               ("checks.Exercise", checks.Exercise), ("checks.CheckResult", checks.CheckResult),
               ("builtins", builtins), ("torch", torch), ("torch.Tensor", torch.Tensor),
               ("torch.nn.Module", nn.Module), ("torch.nn.functional", nn.functional),
               ("torch.autograd", torch.autograd)]
    before = _snapshot(watched)
    forbidden_calls, forbidden_methods = _reference_code(all_exercises)

    def result(passed: bool, feedback: str) -> dict:
        return {"name": exercise.name, "score": int(passed), "feedback": feedback}

    namespace: dict = {"__name__": "__main__"}
    failed = []
    for number, module in modules:
        try:
            exec(compile(module, f"{CELL_PREFIX}{number}>", "exec"), namespace)
        except BaseException as err:  # noqa: BLE001 - a student's import can fail any way
            failed.append(f"cell {number}: {type(err).__name__}: {err}")
    missing = [n for n in exercise.student_names if n not in namespace]
    if missing:
        return result(False, f"{', '.join(missing)} is not defined by a def or class statement "
                             "in the notebook: the check looks for your code under the name the "
                             "exercise cell gives it, so keep that name."
                             + (f" (Running the notebook's imports and definitions failed in "
                                f"{'; '.join(failed)}.)" if failed else ""))
    objects = [namespace[n] for n in exercise.student_names]
    for name, obj in zip(exercise.student_names, objects):
        borrowed = _borrowed(obj)
        if borrowed:
            return result(False, f"{name} {borrowed}: write your own.")
    calls: list[str] = []

    def from_student(frame) -> bool:
        # The student's code is on the way to this call before the checks' code is:
        # direct calls, and calls made through the standard library (functools, ...).
        frame = frame.f_back
        while frame is not None:
            if frame.f_code.co_filename.startswith(CELL_PREFIX):
                return True
            if frame.f_code.co_filename == checks.__file__:
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

    sys.setprofile(profile)
    try:
        outcome = exercise.result(*objects)
    finally:
        sys.setprofile(None)
    changed = _changed(before, watched)
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
    from . import checks

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
            _kill_user_processes(request["uid"])  # what this child left, before the next
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


# ------------------------------------------------------------- running the notebook
def run_notebook(path: Path, cell_timeout: float, total_seconds: float = RUN_SECONDS,
                 fast: bool = True, uid: int | None = None) -> list[str]:
    """Execute the notebook at ``path`` (a copy alone in a temporary folder) in a
    kernel, in a limited process (as ``uid``, when given), for at most
    ``total_seconds``; returns its cell errors ("cell N: Name: message")."""
    home = path.parent
    result = home / ".cell-errors.json"
    request = {"path": str(path), "cell_timeout": cell_timeout, "seconds": total_seconds,
               "result": str(result)}
    # No pipe to this process or its kernel: what the student's code leaves running
    # could hold one open and hang the grader, or flood it.
    proc = subprocess.Popen(
        [sys.executable, "-I", "-m", "gan_helpers.grading", "--run", json.dumps(request)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=home, start_new_session=True, env=_student_env(home, fast),
        **({"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}),
    )
    try:
        proc.wait(timeout=total_seconds + 30)
    except subprocess.TimeoutExpired:
        return [f"the notebook did not finish within {total_seconds:.0f} s and was stopped"]
    finally:
        _kill_group(proc.pid)
        proc.wait()
        if uid is not None:
            _kill_user_processes(uid)
    try:
        with open(result, "rb") as f:
            errors = json.loads(f.read(1 << 20))
        if not (isinstance(errors, list) and all(isinstance(e, str) for e in errors)):
            raise ValueError("not a list of strings")
    except (OSError, ValueError) as err:
        return [f"the notebook could not be run to the end ({type(err).__name__})"]
    return [_text(e) for e in errors[:100]]


def _run(request: dict) -> None:
    """In the limited process: execute the notebook with nbclient, writing its cell
    errors, as a JSON list of strings, to ``request["result"]``."""
    limit_this_process(request["seconds"])
    errors: list[str] = []
    try:
        from nbclient import NotebookClient
        from traitlets.config import Config

        path = Path(request["path"])
        nb = read_notebook(path)
        client = NotebookClient(
            nb, timeout=request["cell_timeout"], allow_errors=True, interrupt_on_timeout=True,
            kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
            # ipykernel 7.3+ warns at every start that its local TCP sockets are unencrypted.
            config=Config({"KernelManager": {"transport_encryption": "auto"}}),
        )
        try:
            client.execute()
        except Exception as err:  # the kernel died (out of memory, say) or could not start
            errors.append(f"the notebook could not be run to the end: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}")
        found = []
        for index, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                if out.get("output_type") != "error":
                    continue
                if out.get("ename") == "KeyboardInterrupt":  # nbclient interrupts at the limit
                    found.append(f"cell {index + 1}: stopped at its {request['cell_timeout']:.0f}-s "
                                 "limit (an endless loop, or a long wait?)")
                else:
                    found.append(f"cell {index + 1}: {out.get('ename')}: {out.get('evalue')}")
        errors = found + errors
    except Exception as err:  # noqa: BLE001 - reported to the teacher, not raised
        errors.append(f"the notebook could not be run: {type(err).__name__}: {err}")
    with open(request["result"], "w") as f:
        json.dump(errors, f)


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
    from .checks import EXERCISES

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


def _main() -> None:
    if "--run" in sys.argv:
        _run(json.loads(sys.argv[sys.argv.index("--run") + 1]))
        return
    out = _worker(json.loads(sys.stdin.read()))
    sys.stdout.write(_WORKER_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _main()
