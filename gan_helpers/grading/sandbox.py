"""The limits a student's code runs under, and running a notebook within them."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..assignments import read_notebook

MEMORY_BYTES = 4 * 1024**3  # RLIMIT_DATA of the student's processes
ADDRESS_SLACK = 8 * 1024**3  # RLIMIT_AS is this much above it (shared mappings count there)
FILE_BYTES = 1024**3  # RLIMIT_FSIZE: no file larger than this
EXTRA_PROCESSES = 256  # processes a notebook may start (RLIMIT_NPROC, above the user's own)
RUN_SECONDS = 600.0  # wall-clock limit for running one notebook, whatever its cells
_GRACE_SECONDS = 30.0  # beyond RUN_SECONDS, for the runner to stop the kernel and clean up
_CLEANUP_SECONDS = 10.0  # at most, to end what a notebook or a check left running
_MAX_TEXT = 600  # characters of a student's text (feedback, an error) kept in a report
_PR_SET_CHILD_SUBREAPER = 36  # prctl's option, from <linux/prctl.h>

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


def adopt_orphans() -> bool:
    """Make this process Linux's "child subreaper": a descendant whose parent ends (a
    daemon's double fork, say) is handed to it instead of to init, so that
    ``end_descendants`` still reaches it, whatever session it moved to or program it
    runs. False where the system has no such thing. Orphans that end stay zombies until
    then, and count against the process limit."""
    try:
        return ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def end_descendants() -> None:
    """Kill every descendant of this process and reap its children, round by round (the
    orphans of those killed come to this process after ``adopt_orphans``), until none is
    left that it may kill, for at most _CLEANUP_SECONDS."""
    deadline = time.monotonic() + _CLEANUP_SECONDS
    while True:
        left = kill_descendants()
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.01)


def kill_descendants() -> set[int]:
    """SIGKILL every running descendant of this process seen in one look at /proc.
    Returns what is left to wait for: those signalled, and this process's own zombies,
    which only it can reap. One it may not signal (a setuid program) is left alone, and
    so is another's zombie (its children have already moved on)."""
    me, children, stats = os.getpid(), {}, _process_stats()
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    zombies = {pid for pid, fields in stats.items() if fields[0] == b"Z"}
    left = zombies & set(children.get(me, []))
    todo = list(children.get(me, []))
    while todo:
        pid = todo.pop()
        if pid in zombies:
            continue
        todo.extend(children.get(pid, []))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            left.add(pid)
    return left


def _process_stats() -> dict[int, list[bytes]]:
    """Each process's /proc/PID/stat fields after its name (state, parent, group,
    session, ...), by pid; empty without /proc."""
    stats = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        with contextlib.suppress(OSError, IndexError):  # it ended meanwhile
            if entry.isdigit():
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stats[int(entry)] = f.read().rsplit(b")", 1)[1].split()  # names hold spaces
    return stats


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _running_processes(uid: int, needle: bytes) -> list[tuple[int, int, bool]]:
    """(pid, session id, whether its command line holds ``needle``) of each running
    process of user ``uid``; zombies, which have ended, are left out."""
    found = []
    for pid, fields in _process_stats().items():
        with contextlib.suppress(OSError):  # it ended meanwhile
            if fields[0] != b"Z" and os.stat(f"/proc/{pid}").st_uid == uid:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found.append((pid, int(fields[3]), needle in f.read()))
    return found


def _kill_notebook_processes(folder: Path, uid: int) -> None:
    """End the processes of user ``uid`` left by the notebook run in ``folder`` when its
    runner was killed before it could end them itself: every session one of whose
    processes names a file in ``folder`` on its command line. The kernel lives in a
    session of its own, with what the student's code forked (a daemon too, which keeps
    the kernel's command line). Best effort, not a boundary: a process that runs a new
    program in a new session escapes it; only a sandbox user is ended whole."""
    if not os.path.exists("/proc/self/stat"):
        return
    needle = os.fsencode(os.path.join(str(folder), ""))  # not a sibling that starts alike
    own, killed = os.getsid(0), set()
    deadline = time.monotonic() + _CLEANUP_SECONDS
    while time.monotonic() < deadline:
        processes = _running_processes(uid, needle)
        sessions = {session for _, session, named in processes if named} - {own}
        members = [pid for pid, session, _ in processes if session in sessions]
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed.update(members)
        if not members and not killed & {pid for pid, _, _ in processes}:
            return  # those killed have ended, not merely been signalled
        time.sleep(0.01)


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


# ------------------------------------------------------------- running the notebook
def run_notebook(path: Path, cell_timeout: float, total_seconds: float = RUN_SECONDS,
                 fast: bool = True, uid: int | None = None) -> list[str]:
    """Execute the notebook at ``path`` (a copy alone in a temporary folder) in a
    kernel, in a limited process (as ``uid``, when given), for at most
    ``total_seconds``; returns its cell errors ("cell N: Name: message")."""
    home = path.parent
    result = home / ".cell-errors.json"
    request = {"path": str(path), "cell_timeout": cell_timeout, "seconds": total_seconds,
               "deadline": time.time() + total_seconds, "result": str(result)}
    # No pipe to this process or its kernel: what the student's code leaves running
    # could hold one open and hang the grader, or flood it.
    proc = subprocess.Popen(
        [sys.executable, "-I", "-m", "gan_helpers.grading", "--run", json.dumps(request)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=home, start_new_session=True, env=_student_env(home, fast),
        **({"user": uid, "group": uid, "extra_groups": []} if uid is not None else {}),
    )
    try:
        proc.wait(timeout=total_seconds + _GRACE_SECONDS)
    except subprocess.TimeoutExpired:  # the runner stops the notebook itself: not this time
        return [_stopped(total_seconds)]
    finally:
        _kill_group(proc.pid)
        proc.wait()
        if uid is not None:
            _kill_user_processes(uid)
        _kill_notebook_processes(home, os.getuid() if uid is None else uid)
    try:
        with open(result, "rb") as f:
            errors = json.loads(f.read(1 << 20))
        if not (isinstance(errors, list) and all(isinstance(e, str) for e in errors)):
            raise ValueError("not a list of strings")
    except (OSError, ValueError) as err:
        return [f"the notebook could not be run to the end ({type(err).__name__})"]
    return [_text(e) for e in errors[:100]]


def _stopped(seconds: float) -> str:
    return f"the notebook did not finish within {seconds:.0f} s and was stopped"


def _run(request: dict) -> None:
    """In the limited process: execute the notebook with nbclient for at most
    ``request["seconds"]``, writing its cell errors, as a JSON list of strings, to
    ``request["result"]``; then end everything the notebook started."""
    adopt_orphans()
    limit_this_process(request["seconds"])
    lock, state = threading.Lock(), {"finished": False, "stopped": False}

    def stop() -> None:  # ending the kernel ends nbclient's run with DeadKernelError
        with lock:  # the main thread reaps, after this: no pid is reused under our kill
            if not state["finished"]:
                state["stopped"] = True
                kill_descendants()

    # From the grader's clock: the runner's own start-up counts against the limit.
    timer = threading.Timer(max(0.0, request["deadline"] - time.time()), stop)
    timer.daemon = True
    timer.start()
    errors: list[str] = []  # the cells'
    failure: list[str] = []  # why the run stopped short, if it did
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
            failure = [f"the notebook could not be run to the end: {type(err).__name__}: "
                       f"{str(err).splitlines()[0] if str(err) else ''}"]
        for index, cell in enumerate(nb.cells):
            for out in cell.get("outputs", []):
                if out.get("output_type") != "error":
                    continue
                if out.get("ename") == "KeyboardInterrupt":  # nbclient interrupts at the limit
                    errors.append(f"cell {index + 1}: stopped at its {request['cell_timeout']:.0f}-s "
                                  "limit (an endless loop, or a long wait?)")
                else:
                    errors.append(f"cell {index + 1}: {out.get('ename')}: {out.get('evalue')}")
    except Exception as err:  # noqa: BLE001 - reported to the teacher, not raised
        failure = [f"the notebook could not be run: {type(err).__name__}: {err}"]
    with lock:
        state["finished"] = True
    timer.cancel()
    end_descendants()
    # When the timer ended the kernel, its death (the failure) was ours: say why instead.
    errors += [_stopped(request["seconds"])] if state["stopped"] else failure
    with open(request["result"], "w") as f:
        json.dump(errors, f)
