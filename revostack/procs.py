"""Processes without an event loop: argv, spawning with a pipe, process groups, reaping.

Shared by the asyncio runtime (``process``) and ``revostack start``'s own loop (``starter``),
so that neither imports what only the other needs.
"""

from __future__ import annotations

import _signal  # builtin; signal.py's enums are not needed here
import os
import re
from typing import Mapping

_SHELL_SYNTAX = re.compile(r"[;&|<>()`\n\\*?\[\]{}!#~'\"]")
_NOT_EXECUTABLE = {"if", "for", "while", "until", "case", "cd", "export", "exec", "set", "trap", ".", "source",
                   "ulimit", "umask", "eval", "{", "!"}  # keywords and builtins: `exec` cannot run them


def is_simple(cmd: str) -> bool:
    """A single simple command (no shell syntax, no leading assignment, not a keyword or a
    builtin), which ``sh -c`` can ``exec``: the rule of ``up``, ``start`` and every export."""
    words = cmd.split(None, 1)
    if not words or _SHELL_SYNTAX.search(cmd):
        return False
    return "=" not in words[0] and words[0] not in _NOT_EXECUTABLE


def argv_for(cmd: str | tuple[str, ...]) -> list[str]:
    """A string runs through ``/bin/sh -c``; a single simple command is ``exec``'d so that the
    pid we track is the program itself. An array is exec'd as is."""
    if not isinstance(cmd, str):
        return list(cmd)
    return ["/bin/sh", "-c", "exec " + cmd if is_simple(cmd) else cmd]


FDS_PER_INSTANCE = 8  # its pipes, log file, pidfd, reserved or public socket, proxy connections


def ensure_open_files(instances: int) -> str | None:
    """Raise the soft limit of open files (towards the hard one) when a stack of this size may
    need more than it allows; a small stack leaves it, and so its children's, as it was.
    A warning when even the hard limit looks too low."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 256 + instances * FDS_PER_INSTANCE
        if soft == resource.RLIM_INFINITY or soft >= need:
            return None
        target = need * 2 if hard == resource.RLIM_INFINITY else min(hard, need * 2)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < need:
            return (f"{instances} instances may need about {need} open files, but the limit of open files "
                    f"(RLIMIT_NOFILE) is {target}; raise it with `ulimit -n` if some cannot start")
    except (ImportError, ValueError, OSError):
        pass
    return None


def why_not_started(e: OSError) -> str:
    """An OSError of a spawn, said so that a limit hit is named."""
    import errno

    if e.errno in (errno.EMFILE, errno.ENFILE):
        try:
            import resource

            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            limit = f"the limit of open files (RLIMIT_NOFILE) is {soft}, hard limit {hard}"
        except (ImportError, OSError):
            limit = "a limit of open files was hit"
        which = "the system's table of open files is full" if e.errno == errno.ENFILE else limit
        return f"{e.strerror}: {which} (raise it with `ulimit -n`)"
    if e.errno == errno.EAGAIN:
        return f"{e.strerror}: a limit of processes (RLIMIT_NPROC, or the cgroup's pids.max) was hit"
    return e.strerror or str(e)


_malloc_trim = None


def trim_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``). Each spawn
    builds its child's whole environment — every other service's port — and drops it; between
    the long-lived objects made meanwhile, those freed blocks stay resident otherwise (1,000
    services: ~60 MB). Nothing where the C library has no such call."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            import ctypes

            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (ImportError, OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


# pids of children whose spawner reaps them (asyncio's child watcher, or the start loop); any
# other zombie child of ours is an orphaned grandchild re-parented to us (we are a subreaper)
# and is ours to reap.
spawned: set[int] = set()


def reap_orphans() -> None:
    """Reap zombies re-parented to us. Never ``waitpid(-1)``: a child's spawner reaps it."""
    me = os.getpid()
    try:
        with open(f"/proc/{me}/task/{me}/children") as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        return
    for pid in pids:
        if pid in spawned or is_alive(pid):
            continue
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def is_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat[stat.rfind(")") + 2] != "Z"
    except OSError:
        return False


def create_time(pid: int) -> float | None:
    """Process start time as psutil reports it (seconds since the epoch): /proc/PID/stat's
    starttime in clock ticks + /proc/stat's btime, psutil's own arithmetic. Read directly
    because this runs on every spawn, and importing psutil for it cost the first spawn ~30 ms
    (and `start`, which needs psutil for nothing else, its memory)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        ticks = float(stat[stat.rfind(b")") + 2:].split()[19])
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    return ticks / _CLOCK_TICKS + float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:  # no /proc (not Linux)
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


try:
    _CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
except (ValueError, OSError, AttributeError):
    _CLOCK_TICKS = 100


def signal_group(pgid: int, sig: int) -> bool:
    """Signal a whole process group; False when it is gone. ESRCH/EPERM races are ignored."""
    if pgid <= 1:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def group_alive(pgid: int) -> bool:
    """Whether any process of the group lives (zombies count until they are reaped)."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def group_stopped(pgid: int) -> bool:
    """Whether every process of the group is stopped (or gone): /proc state T, t, Z or X."""
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return True
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"T", b"t", b"Z", b"X"):
            return False
    return True


def become_subreaper() -> bool:
    """Make orphaned descendants ours (Linux), so a daemonising grandchild can still be found
    and stopped. Returns whether it worked."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_CHILD_SUBREAPER = 36
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except Exception:
        return False


def signal_name(sig: int) -> str:
    import signal

    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def spawn_piped(argv: list[str], cwd: str, env: Mapping[str, str]) -> tuple[int, int]:
    """Start ``argv`` in its own session with stdin from /dev/null and stdout and stderr into one
    pipe: (pid, the pipe's non-blocking read end). One ``posix_spawn`` (a vfork in glibc): no
    Python between fork and exec; ~0.75 ms a child on the test VM, mostly the kernel's exec,
    where asyncio's ``subprocess_exec`` took ~1.7 ms. OSError when the program (or ``cwd``)
    cannot be found or run."""
    r, w = os.pipe()  # close-on-exec (PEP 446): the child gets only the copies dup2 makes
    here = None
    try:
        if cwd != os.getcwd() and os.path.realpath(cwd) != os.path.realpath("."):  # no chdir action before 3.13
            here = os.open(".", os.O_RDONLY | os.O_CLOEXEC)
            os.chdir(cwd)
        pid = os.posix_spawnp(argv[0], argv, env, setsid=True, setsigdef=_RESTORED, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, w, 1),
            (os.POSIX_SPAWN_DUP2, w, 2),
        ])
    except BaseException:
        os.close(r)
        raise
    finally:
        os.close(w)
        if here is not None:
            os.fchdir(here)
            os.close(here)
    os.set_blocking(r, False)
    spawned.add(pid)
    return pid, r


# what Python ignores at start-up and a child must not inherit ignored (subprocess's restore_signals)
_RESTORED = (_signal.SIGPIPE, _signal.SIGXFSZ)
