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
EXTRA_PROCESSES = 256  # processes a notebook may start (RLIMIT_NPROC, above the user's own)
_WORKER_MARK = "__GAN_COURSE_SCORES__"
_ALLOWED_DECORATOR_CALLS = {"torch.no_grad", "torch.inference_mode", "torch.enable_grad"}


# ------------------------------------------------------------------ what is graded
def assignment_of(nb, path: Path, assignment: str | None = None) -> tuple[str | None, list[str]]:
    """The assignment ``nb`` is graded as, and notes for the report. The teacher's
    ``assignment`` wins; then the stamp's name; then the file name."""
    notes = []
    stamp = nb.metadata.get(STAMP_KEY)
    stamped = stamp.get("assignment") if isinstance(stamp, dict) else None
    if assignment is not None:
        name = assignment
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


def _definition_runs_code(node: ast.AST) -> bool:
    """True when defining ``node`` (a def or class) would run code: a call, a lambda, a
    walrus or a comprehension in a decorator, default value, annotation or base, or a
    class body statement other than a def, a docstring or a constant assignment."""
    exprs: list[ast.AST] = []
    for d in node.decorator_list:
        if isinstance(d, ast.Call) and _dotted(d.func) in _ALLOWED_DECORATOR_CALLS and not d.args:
            continue
        exprs.append(d)
    if isinstance(node, ast.ClassDef):
        exprs += node.bases + [k.value for k in node.keywords]
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if _definition_runs_code(stmt):
                    return True
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                pass
            elif isinstance(stmt, ast.Pass):
                pass
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and (
                    stmt.value is None or isinstance(stmt.value, ast.Constant)):
                pass
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
              ast.GeneratorExp, ast.Await, ast.Yield, ast.YieldFrom, ast.Subscript)
    return any(isinstance(n, unsafe) for e in exprs for n in ast.walk(e))


def definitions(cells: list[str]) -> tuple[list[tuple[int, ast.Module]], list[str]]:
    """The statements of ``cells`` (code cell sources) that the grader runs: imports and
    top-level ``def``/``class`` statements that run no code while being defined, as one
    module per cell with its cell number. Also returns a note per statement skipped."""
    kept, notes = [], []
    for number, source in enumerate(cells, start=1):
        # IPython's own syntax (%magic, !shell, cell magics) is not Python: drop those lines.
        if source.lstrip().startswith("%%"):
            continue
        lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError as err:
            notes.append(f"code cell {number} is not valid Python ({err.msg}, line {err.lineno}); "
                         "nothing in it was graded")
            continue
        body = []
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                body.append(stmt)
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if _definition_runs_code(stmt):
                    notes.append(f"code cell {number}: `{stmt.name}` was not run by the grader, "
                                 "since defining it runs code (a call in a decorator, default "
                                 "value or base class, or statements in the class body)")
                else:
                    body.append(stmt)
            elif isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
                if names:
                    notes.append(f"code cell {number}: the assignment to {', '.join(names)} was "
                                 "not run by the grader, which runs only imports, def and class")
        if body:
            kept.append((number, ast.Module(body=body, type_ignores=[])))
    return kept, notes


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


_free_uids: "queue.Queue[int] | None" = None
_uid_lock = threading.Lock()


@contextlib.contextmanager
def sandbox_uid():
    """When root: a user id of its own for one notebook's processes (none of the
    system's users), so that they can write nothing of the grader's, the process limit
    holds for them (root is exempt from it), and whatever they leave running can be
    ended without touching another notebook's. None when not root."""
    global _free_uids
    if not _running_as_root():
        yield None
        return
    import pwd

    with _uid_lock:
        if _free_uids is None:
            taken = {p.pw_uid for p in pwd.getpwall()}
            _free_uids = queue.Queue()
            for uid in range(64000, 65000):
                if uid not in taken:
                    _free_uids.put(uid)
    uid = _free_uids.get()
    try:
        yield uid
    finally:
        _kill_user_processes(uid)
        _free_uids.put(uid)


def limit_this_process(cpu_seconds: float, memory_bytes: int = MEMORY_BYTES,
                       uid: int | None = None) -> None:
    """Limits for a process about to run student code (and inherited by its children):
    CPU time, private memory (RLIMIT_DATA: imports still work, a 20 GB tensor fails),
    processes, no core files; with ``uid`` (when root), become that user first."""
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    cpu = max(1, int(cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    processes = _user_tasks() + EXTRA_PROCESSES
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_user_processes(uid: int) -> None:
    """End every process of ``uid`` (a sandbox user), wherever the student's code put
    it (a new session, a double fork)."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setuid(uid)
            os.kill(-1, signal.SIGKILL)  # every process this user may signal, but itself
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _student_env(home: Path) -> dict:
    """The environment of the processes that run a notebook: its temporary folder as
    home, and Jupyter's and matplotlib's files there too."""
    return {**os.environ, "HOME": str(home), "USER": "student", "LOGNAME": "student",
            "MPLCONFIGDIR": str(home / ".matplotlib"),
            "JUPYTER_RUNTIME_DIR": str(home / ".runtime"), "JUPYTER_DATA_DIR": str(home / ".data"),
            "JUPYTER_CONFIG_DIR": str(home / ".jupyter"), "IPYTHONDIR": str(home / ".ipython"),
            "TMPDIR": str(home)}


# ----------------------------------------------------------------- the worker side
def _snapshot(namespaces: list) -> dict:
    return {(name, key): id(value) for name, ns in namespaces
            for key, value in list(vars(ns).items())}


def _changed(before: dict, namespaces: list) -> list[str]:
    after = _snapshot(namespaces)
    return sorted(f"{name}.{key}" for (name, key), ident in before.items()
                  if after.get((name, key)) != ident)


def _check_in_child(exercise, modules: list[tuple[int, ast.Module]], package_dir: str) -> dict:
    """In a forked child: run the student's definitions, then ``exercise``'s check,
    tracing calls from the student's code into ``package_dir``. Returns the result."""
    import builtins
    import threading

    import torch
    from torch import nn

    from . import checks, losses, models, training

    watched = [("gan_helpers.checks", checks), ("gan_helpers.losses", losses),
               ("gan_helpers.models", models), ("gan_helpers.training", training),
               ("checks.Exercise", checks.Exercise), ("checks.CheckResult", checks.CheckResult),
               ("builtins", builtins), ("torch", torch), ("torch.Tensor", torch.Tensor),
               ("torch.nn.Module", nn.Module), ("torch.nn.functional", nn.functional),
               ("torch.autograd", torch.autograd)]
    before = _snapshot(watched)

    def result(passed: bool, feedback: str) -> dict:
        return {"name": exercise.name, "score": int(passed), "feedback": feedback}

    namespace: dict = {"__name__": "__main__"}
    for number, module in modules:
        try:
            exec(compile(module, f"{CELL_PREFIX}{number}>", "exec"), namespace)
        except BaseException as err:  # noqa: BLE001 - a student's import can fail any way
            namespace.setdefault("__grading_errors__", []).append(
                f"cell {number}: {type(err).__name__}: {err}")
    missing = [n for n in exercise.student_names if n not in namespace]
    if missing:
        failed = namespace.get("__grading_errors__", [])
        return result(False, f"{', '.join(missing)} is not defined by a def or class statement "
                             "in the notebook: the check looks for your code under the name the "
                             "exercise cell gives it, so keep that name."
                             + (f" (Running the notebook's imports and definitions failed in "
                                f"{'; '.join(failed)}.)" if failed else ""))
    objects = [namespace[n] for n in exercise.student_names]
    for name, obj in zip(exercise.student_names, objects):
        borrowed = _borrowed(obj, package_dir)
        if borrowed:
            return result(False, f"{name} {borrowed}: write your own.")
    calls: list[str] = []
    # The package's implementations; not the checking machinery, whose objects (a spy
    # optimizer, say) the check hands to the student's code to call.
    machinery = tuple(str(Path(package_dir) / f) for f in ("checks.py", "grading.py"))

    def profile(frame, event, arg):
        if event == "call" and frame.f_back is not None \
                and frame.f_back.f_code.co_filename.startswith(CELL_PREFIX) \
                and frame.f_code.co_filename.startswith(package_dir) \
                and not frame.f_code.co_filename.startswith(machinery):
            calls.append(f"{Path(frame.f_code.co_filename).stem}.{frame.f_code.co_name}")

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        outcome = exercise.result(*objects)
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    changed = _changed(before, watched)
    if changed:
        return result(False, "your code changed the grader's or PyTorch's own objects while "
                             f"it was checked ({', '.join(changed[:5])}): that scores 0.")
    if calls:
        return result(False, "your code calls gan_helpers' own implementation "
                             f"({', '.join(sorted(set(calls))[:3])}) instead of doing the work "
                             "itself: write your own.")
    return result(outcome.passed, " ".join(outcome.feedback))


def _borrowed(obj: object, package_dir: str) -> str:
    """Why ``obj`` is not the student's own work, or "" when it is."""
    if isinstance(obj, type):
        theirs = [c for c in obj.__mro__ if c.__module__.startswith("gan_helpers")]
        if theirs:
            return f"is, or is built on, gan_helpers' {theirs[0].__qualname__}"
        code = [getattr(f, "__code__", None) for f in vars(obj).values()]
        if any(c is not None and not c.co_filename.startswith(CELL_PREFIX) for c in code):
            return "has methods that were not written in the notebook"
        return ""
    code = getattr(obj, "__code__", None)
    if code is None or not code.co_filename.startswith(CELL_PREFIX):
        where = getattr(obj, "__module__", None) or type(obj).__name__
        return f"is not a function written in the notebook (it comes from {where})"
    return ""


def _worker(request: dict) -> list[dict]:
    """Score ``request["exercises"]`` on ``request["cells"]``: one forked child each.
    Runs in a fresh interpreter that imported the checks before any student code."""
    from . import checks

    package_dir = str(Path(checks.__file__).resolve().parent)
    exercises = {e.name: e for e in checks.EXERCISES}
    modules, _notes = definitions(request["cells"])
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
                limit_this_process(request["seconds"], request["memory"], request["uid"])
                try:
                    outcome = _check_in_child(exercises[name], modules, package_dir)
                except Exception as err:  # noqa: BLE001 - the grader's own failure, reported
                    outcome = {"name": name, "score": 0, "feedback": "the grader failed while "
                               f"checking this exercise: {type(err).__name__}: {err}"}
                os.write(write, json.dumps(outcome).encode())
            finally:
                os._exit(0)
        os.close(write)
        results.append(_collect(name, pid, read, request["seconds"]))
    return results


def _collect(name: str, pid: int, read: int, seconds: float) -> dict:
    """The child's result for exercise ``name``, or a 0 saying why there is none."""
    deadline = time.monotonic() + seconds
    chunks, status = [], None
    os.set_blocking(read, False)
    while True:
        try:
            chunk = os.read(read, 1 << 16)
            if chunk:
                chunks.append(chunk)
        except BlockingIOError:
            pass
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            try:
                while chunk := os.read(read, 1 << 16):
                    chunks.append(chunk)
            except BlockingIOError:
                pass
            break
        if time.monotonic() > deadline:
            _kill_group(pid)
            os.waitpid(pid, 0)
            os.close(read)
            return {"name": name, "score": 0,
                    "feedback": f"the check did not finish within {seconds:.0f} s: is there an "
                                "endless loop in your code?"}
        time.sleep(0.02)
    os.close(read)
    _kill_group(pid)  # whatever the student's code left running
    try:
        outcome = json.loads(b"".join(chunks) or b"null")
    except ValueError:
        outcome = None
    if not isinstance(outcome, dict) or outcome.get("name") != name:
        how = (f"was killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else "ended without a result")
        return {"name": name, "score": 0,
                "feedback": f"checking your code {how} (out of memory or CPU time, or your "
                            "code ended the process)."}
    return {"name": name, "score": outcome.get("score", 0), "feedback": str(outcome.get("feedback", ""))}


def score_exercises(cells: list[str], exercises: list[str], seconds: float = CHECK_SECONDS,
                    memory: int = MEMORY_BYTES, uid: int | None = None) -> list[dict]:
    """The scores of ``exercises`` on the code cells ``cells``, from a fresh worker
    process (see the module docstring): [{"name", "score", "max_score", "feedback"}],
    each score clamped to 0..max_score. ``uid``: the user the checked code runs as."""
    if uid is None and _running_as_root():
        with sandbox_uid() as uid:
            return score_exercises(cells, exercises, seconds, memory, uid)
    request = {"cells": cells, "exercises": exercises, "seconds": seconds, "memory": memory,
               "uid": uid}
    with tempfile.TemporaryDirectory(prefix="gan-grade-") as work:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-m", "gan_helpers.grading"], input=json.dumps(request),
                capture_output=True, text=True, cwd=work, start_new_session=True,
                timeout=seconds * max(1, len(exercises)) + 120,
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
        score = min(max(int(r.get("score", 0)), 0), POINTS)
        scores.append({"name": name, "score": score, "max_score": POINTS,
                       "feedback": r.get("feedback", "")})
    return scores


# ------------------------------------------------------------- running the notebook
def run_notebook(path: Path, cell_timeout: float, total_seconds: float, fast: bool = True,
                 uid: int | None = None) -> list[str]:
    """Execute the notebook at ``path`` (a copy in a temporary folder) in a kernel, in a
    limited process (as ``uid``, when given); returns its cell errors ("cell N: Name:
    message")."""
    request = {"path": str(path), "cell_timeout": cell_timeout, "fast": fast,
               "seconds": total_seconds, "uid": uid}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gan_helpers.grading", "--run"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=path.parent,
        start_new_session=True, env=_student_env(path.parent),
    )
    try:
        out, err = proc.communicate(json.dumps(request), timeout=total_seconds + 30)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        proc.communicate()
        return [f"the notebook did not finish within {total_seconds:.0f} s and was stopped"]
    finally:
        _kill_group(proc.pid)
    for line in out.splitlines():
        if line.startswith(_WORKER_MARK):
            return json.loads(line[len(_WORKER_MARK):])
    return ["the notebook could not be run to the end: "
            + (err.strip().splitlines() or ["its process ended"])[-1]]


def _run(request: dict) -> list[str]:
    """In the limited process: execute the notebook with nbclient; its cell errors."""
    from nbclient import NotebookClient
    from traitlets.config import Config

    path = Path(request["path"])
    limit_this_process(request["seconds"], uid=request["uid"])
    home = path.parent
    env = dict(os.environ)
    if request["fast"]:
        env["GAN_COURSE_FAST"] = "1"
    nb = read_notebook(path)
    client = NotebookClient(
        nb, timeout=request["cell_timeout"], allow_errors=True, interrupt_on_timeout=True,
        kernel_name="python3", resources={"metadata": {"path": str(home)}},
        # ipykernel 7.3+ warns at every start that its local TCP sockets are unencrypted.
        config=Config({"KernelManager": {"transport_encryption": "auto"}}),
    )
    errors = []
    try:
        client.execute(env=env)
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
    return found + errors


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
    notes += definitions(cells)[1]
    cell_errors = []
    with sandbox_uid() as uid:
        scores = score_exercises(cells, exercises, uid=uid)
        if run:
            with tempfile.TemporaryDirectory(prefix="gan-run-") as work:
                copy = Path(work) / path.name
                copy.write_bytes(path.read_bytes())
                if uid is not None:
                    os.chown(work, uid, uid)
                    os.chown(copy, uid, uid)
                cell_errors = run_notebook(copy, cell_timeout, cell_timeout * (len(nb.cells) + 1),
                                           uid=uid)
    return {
        "notebook": str(path), "assignment": name,
        "score": sum(s["score"] for s in scores), "max_score": POINTS * len(exercises),
        "exercises": scores, "notes": notes, "cell_errors": cell_errors,
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
    request = json.loads(sys.stdin.read())
    if "--run" in sys.argv:
        out = _run(request)
    else:
        out = _worker(request)
    sys.stdout.write(_WORKER_MARK + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    _main()
