"""Supervise a sandboxed worker's processes (helpers of :mod:`grading.sandbox`): reap the launcher against a
deadline and a disk budget, kill its process group, and read back its pipe and the tails of its logs.

Nothing here trusts the worker: logs are read from the end with a size bound, links are never followed when disk use
is measured, and a process group or file that vanished is not an error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def read_tail(path: Path, chars: int) -> str:
    """The last ``chars`` characters of a log (only its last ``4 * chars`` bytes are read)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 4 * chars))
        return f.read().decode("utf-8", "replace")[-chars:]


def read_pipe(fd: int) -> str:
    """Everything written so far to the read end ``fd`` of a pipe (without blocking); closes ``fd``."""
    os.set_blocking(fd, False)
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def disk_use(folder: Path) -> int:
    """Bytes in the regular files under ``folder`` (links not followed; vanishing files ignored)."""
    total, stack = 0, [str(folder)]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for e in entries:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


def reap(proc: subprocess.Popen, deadline: float, scratch: Path | None = None,
         disk_bytes: int = 0) -> tuple[int, bool, float]:
    """Reap the launcher (returncode in Popen's convention, timed out, peak RSS in MB of it and its children).

    RLIMIT_FSIZE caps each file, not their number: every half second the worker's scratch folder (HOME, TMPDIR,
    out) is measured, and a worker past ``disk_bytes`` in total is killed like one past its time limit.
    """
    delay, timed_out, next_check = 0.005, False, time.monotonic() + 0.5
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        over = bool(scratch and disk_bytes and time.monotonic() >= next_check and disk_use(scratch) > disk_bytes)
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + 0.5
        if over or time.monotonic() >= deadline:
            timed_out = True
            killpg(proc.pid)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(delay)
        delay = min(0.05, delay * 1.5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, timed_out, usage.ru_maxrss / 1024


def killpg(pgid: int) -> None:
    """SIGKILL process group ``pgid``; one already gone (or no longer ours) is not an error."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
