"""Who a sandboxed worker runs as and what it sees and may do (helpers of :mod:`grading.sandbox`): the pool of
sandbox uids (locked machine-wide, every process of a uid killed after its run), the paths it needs, the bwrap
command line, the permission checks of mode 'uid', its scrubbed environment and its rlimits."""

from __future__ import annotations

import fcntl
import math
import os
import pwd
import signal
import stat
import sys
import threading
import time
from pathlib import Path

from grading.sandbox_launch import SYSTEM_DIRS, inside

BASE_UID, UID_SLOTS = 61000, 64  # sandbox uids BASE_UID.. (unused by any account; one per concurrent worker)
UID_LOCKS = Path("/tmp/grading-sandbox-uids")  # flock per uid: other grader processes on the machine skip it
_lock = threading.Lock()
_uids_in_use: dict[int, int] = {}  # uid -> fd of its lock file (held while a worker runs as that uid)


class SandboxError(RuntimeError):
    """The sandbox itself could not be set up as asked (a grader-side problem, never the student's)."""


def other_can_reach(path: Path, leaf: int) -> bool:
    """Whether a uid that is neither owner nor in the group can traverse to ``path`` and has ``leaf`` on it."""
    parts = path.parts
    for k in range(1, len(parts)):
        if not os.stat(Path(*parts[:k])).st_mode & stat.S_IXOTH:
            return False
    return os.stat(path).st_mode & leaf == leaf


def needed_paths(tree: Path) -> list[str]:
    """Real paths the worker reads: interpreter prefixes, the tree and the targets of links inside it."""
    paths = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    exe = sys.executable
    while os.path.islink(exe):  # every hop of the venv's python link chain
        paths.add(os.path.realpath(os.path.dirname(exe)))
        exe = os.path.join(os.path.dirname(exe), os.readlink(exe))
    paths.add(str(tree))
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                paths.add(os.path.realpath(p))
    out: list[str] = []
    for p in sorted(paths, key=len):
        if not any(inside(p, q) for q in out) and p != "/":
            out.append(p)
    return out


def bwrap_argv(exe: str, reveal: list[str], writable: list[str], hidden: list[str], gpu: bool) -> list[str]:
    argv = [exe, "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--dev", "/dev", "--proc", "/proc"]
    for name in SYSTEM_DIRS:
        p = f"/{name}"
        if name in ("dev", "proc") or not os.path.exists(p):
            continue
        argv += ["--symlink", os.readlink(p), p] if os.path.islink(p) else ["--ro-bind", p, p]
    if gpu:
        argv += [a for d in sorted(Path("/dev").glob("nvidia*")) for a in ("--dev-bind", str(d), str(d))]
    parents = sorted({str(q) for p in reveal + writable for q in Path(p).parents if str(q) != "/"}, key=len)
    argv += [a for q in parents if not os.path.islink(q) and q.split("/")[1] not in SYSTEM_DIRS
             for a in ("--perms", "0755", "--dir", q)]  # bwrap would create them 0700: unreachable for the uid
    argv += [a for p in reveal for a in ("--ro-bind", p, p)]
    argv += [a for p in writable for a in ("--bind", p, p)]
    for h in hidden:
        if any(inside(h, r) for r in reveal) and os.path.exists(h):
            argv += ["--tmpfs", h] if os.path.isdir(h) else ["--ro-bind", "/dev/null", h]
    return argv


def check_permissions(needed: list[str], hidden: list[str]) -> None:
    """Mode 'uid' has no mount view: what the worker needs must be readable, what is hidden must not be."""
    for p in needed:
        if not other_can_reach(Path(p), stat.S_IROTH | (stat.S_IXOTH if os.path.isdir(p) else 0)):
            raise SandboxError(f"{p} is not readable by the sandbox uid (mode 'uid' has no mount view)")
    for h in hidden:
        if os.path.exists(h) and other_can_reach(Path(h), stat.S_IROTH):
            raise SandboxError(f"hidden path {h} is readable by the sandbox uid; chmod 700 it (or a parent dir) "
                               "or use sandbox mode bwrap/unshare")


def worker_env(home: Path, tmp: Path, threads: int, gpu: bool) -> dict[str, str]:
    n = str(threads)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "TMPDIR": str(tmp), "TMP": str(tmp),
           "TEMP": str(tmp), "USER": "grader", "LOGNAME": "grader", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "NUMEXPR_NUM_THREADS": n,
           "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(tmp), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home / ".cache" / "huggingface"),
           "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    if gpu and "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


def rlimits(limits, nproc: bool) -> dict[str, list[int]]:
    cpu = math.ceil(limits.cpu_s if limits.cpu_s is not None else limits.wall_s + 10)
    mb = 1 << 20
    out = {"RLIMIT_CPU": [cpu, cpu + 2], "RLIMIT_FSIZE": [limits.file_size_mb * mb] * 2,
           "RLIMIT_NOFILE": [limits.open_files] * 2, "RLIMIT_CORE": [0, 0]}
    if limits.memory_mb is not None:
        out["RLIMIT_AS"] = [limits.memory_mb * mb] * 2
    if nproc:
        out["RLIMIT_NPROC"] = [limits.processes] * 2
    return out


def take_uid() -> int:
    with _lock:
        for uid in range(BASE_UID, BASE_UID + UID_SLOTS):
            if uid in _uids_in_use:
                continue
            try:
                pwd.getpwuid(uid)
                continue  # a real account: never ours to kill
            except KeyError:
                fd = lock_uid(uid)
                if fd is None:
                    continue  # another grading process on this machine runs a worker as this uid
                _uids_in_use[uid] = fd
                return uid
    raise SandboxError(f"all {UID_SLOTS} sandbox uids are in use")


def lock_uid(uid: int) -> int | None:
    """An exclusive, non-blocking flock on the uid's lock file, or None when another process holds it.

    Threads of one grader share ``_uids_in_use``; separate grader processes (two ``grade`` runs, a test suite next
    to a batch) coordinate through these locks, so one never kills the other's worker in ``kill_uid``.
    """
    UID_LOCKS.mkdir(mode=0o700, exist_ok=True)
    st = os.lstat(UID_LOCKS)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise SandboxError(f"{UID_LOCKS} must be a directory of uid {os.geteuid()} with mode 0700")
    fd = os.open(UID_LOCKS / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def release_uid(uid: int | None) -> None:
    with _lock:
        fd = _uids_in_use.pop(uid, None)
    if fd is not None:
        os.close(fd)  # closing drops the flock


def live_pids(uid: int) -> list[int]:
    pids = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{entry}/status").read_text().splitlines()
                          if ":" in line)
        except OSError:
            continue
        state = (fields.get("State", "").split() or ["?"])[0]
        if int(fields.get("Uid", "-1").split()[0]) == uid and state not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def kill_uid(uid: int, patience_s: float = 20.0) -> int:
    """SIGKILL every live process of ``uid`` until none is left (dying processes may take a moment to go)."""
    killed, deadline, delay = 0, time.monotonic() + patience_s, 0.01
    while pids := live_pids(uid):
        if time.monotonic() > deadline:
            raise SandboxError(f"{len(pids)} processes of sandbox uid {uid} survive SIGKILL")
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        time.sleep(delay)
        delay = min(0.2, delay * 2)
    return killed
