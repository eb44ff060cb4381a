"""Run the grading worker over a tree in a sandbox: student code never runs in the process that scores it.

:func:`run_worker` starts ``grading.worker`` (through the launcher ``grading/sandbox_launch.py``) over a tree that
holds the student's grafted region bodies, sends it one JSON request on stdin (then closes stdin), waits at most
``Limits.wall_s``, kills everything it started, and reads back only ``outputs.safetensors`` and ``status.json``.

Layers (each probed once per process; what was active is recorded in ``WorkerResult.layers``):

- always: scrubbed environment, fresh HOME and TMPDIR in a private scratch dir, stdin closed after the request,
  ``python -I -B`` with the tree inserted explicitly (and setuptools' editable finder for this repo removed, so
  ``import gan`` can never fall back to the grader's own checkout), a new session whose group is killed at the end,
  a wall-clock timeout, rlimits (CPU, address space on CPU, file size, open files, core 0);
- as root: a non-root sandbox uid from a pool (one per concurrent worker, so RLIMIT_NPROC binds and every process
  of that uid is killed at the end), and hidden paths made invisible;
- ``bwrap`` (bubblewrap, when its probe passes) or, failing it, our own ``unshare`` of mount/net/PID namespaces:
  a whitelist view of the file system (only system dirs, the interpreter, the tree and the scratch dir), a private
  ``/proc``, no network interfaces, and every process dies with the namespace;
- ``pyseccomp`` when importable: IP/netlink sockets, io_uring, ptrace and mount/namespace syscalls are refused.

``Limits.mode``: ``auto`` (the strongest that works), ``bwrap``, ``unshare``, ``uid`` (no namespaces: hidden paths
must then be unreadable by permissions, which is checked) or ``none`` (a student's local check; no isolation).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grading import sandbox_launch
from grading.compare import read_outputs
from grading.sandbox_proc import killpg, read_pipe, read_tail, reap
from grading.sandbox_view import (
    BASE_UID,
    SandboxError,
    bwrap_argv,
    check_permissions,
    kill_uid,
    needed_paths,
    release_uid,
    rlimits,
    take_uid,
    worker_env,
)

GRADER_ROOT = Path(__file__).resolve().parents[1]  # this checkout: it holds the reference, so it is always hidden
MODES = ("auto", "bwrap", "unshare", "uid", "none")
_BOOT = (  # runs as the worker's ``-c``: the tree first, no editable finder, then grading.worker from the tree
    "import sys\n"
    "tree, grader, out = sys.argv[1:4]\n"
    "bad = lambda o: '__editable__' in (getattr(o, '__module__', '') or '') or '__editable__' in str(o)\n"
    "sys.path[:] = [tree] + [p for p in sys.path if p and p != grader and not bad(p)]\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if not bad(f)]\n"
    "sys.path_hooks[:] = [h for h in sys.path_hooks if not bad(h)]\n"
    "sys.path_importer_cache.clear()\n"
    "sys.argv = ['grading.worker', '--out', out]\n"
    "import runpy\n"
    "runpy.run_module('grading.worker', run_name='__main__', alter_sys=True)\n"
)


@dataclass(frozen=True)
class Limits:
    """Resource limits and isolation mode of one worker run."""

    wall_s: float = 600.0  # wall-clock limit of the whole worker (start-up included)
    cpu_s: float | None = None  # RLIMIT_CPU per process; None: wall_s + 10
    memory_mb: int | None = 6144  # RLIMIT_AS; torch on CPU maps ~3.3 GB at import; None for a GPU worker
    file_size_mb: int = 64  # RLIMIT_FSIZE: any file the worker writes, its stdout/stderr included
    open_files: int = 256  # RLIMIT_NOFILE
    processes: int = 64  # RLIMIT_NPROC of the sandbox uid (threads count); only with a dropped uid
    output_mb: int = 256  # largest outputs.safetensors the parent will read
    disk_mb: int = 256  # all files the worker writes together (HOME, TMPDIR, out); past it the worker is killed
    tail_chars: int = 4000  # stdout/stderr kept in the result
    mode: str = "auto"
    gpu: bool = False  # expose /dev/nvidia* in a bwrap view and keep CUDA_VISIBLE_DEVICES

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"sandbox mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.wall_s > 0:
            raise ValueError(f"wall_s must be positive, got {self.wall_s}")

    def describe(self) -> dict:
        try:
            layers = plan(self).layers
        except SandboxError as err:
            layers = {"error": str(err)}
        return {**asdict(self), "layers": layers}


@dataclass
class WorkerResult:
    """What one worker run did. ``status``: case id -> "ok" or a one-paragraph error; ``outputs`` only for ok."""

    returncode: int | None
    timed_out: bool
    wall_s: float
    stdout_tail: str
    stderr_tail: str
    layers: dict[str, str]
    outputs: dict[str, dict] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    error: str = ""  # why cases have no status of their own ("" when the worker finished)
    peak_rss_mb: float = 0.0  # of the worker (its own VmHWM when it reported one)
    stray_files: tuple[str, ...] = ()  # what the worker left in its out dir besides its two files (discarded)
    uid: int | None = None  # the sandbox uid it ran as
    worker: dict = field(default_factory=dict)  # the worker's own report (versions, import_s): diagnostics only

    def summary(self) -> dict:
        keep = ("returncode", "timed_out", "wall_s", "layers", "error", "peak_rss_mb", "stray_files", "uid", "worker")
        return {k: getattr(self, k) for k in keep}


@dataclass(frozen=True)
class Plan:
    mode: str
    uid: bool
    unshare: tuple[str, ...]
    seccomp: bool
    layers: dict[str, str]


_lock = threading.Lock()
_probes: dict[str, object] = {}


def _cached(name: str, fn):
    with _lock:
        if name not in _probes:
            _probes[name] = fn()
        return _probes[name]


def _probe_namespaces() -> dict:
    if os.geteuid() != 0:
        return {"net": False, "pid": False, "mount": False}
    cmd = [sys.executable, "-I", "-B", "-c", _launcher_source(), json.dumps({"probe": True})]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        return json.loads(res.stdout)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {"net": False, "pid": False, "mount": False}


def _probe_bwrap() -> str:
    """Path of a working bwrap, or "" (it fails under Docker's default seccomp profile, containers/bubblewrap#505)."""
    exe = shutil.which("bwrap")
    if not exe or os.geteuid() != 0:
        return ""
    cmd = [exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
           "--tmpfs", "/tmp", "true"]
    try:
        ok = subprocess.run(cmd, capture_output=True, timeout=30, stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return exe if ok else ""


def _has_seccomp() -> bool:
    import ctypes.util

    return importlib.util.find_spec("pyseccomp") is not None and ctypes.util.find_library("seccomp") is not None


def _launcher_source() -> str:
    return Path(sandbox_launch.__file__).read_text()


def plan(limits: Limits) -> Plan:
    """Which layers a run with ``limits`` gets here (probes are cached), or SandboxError if the mode cannot run."""
    root = os.geteuid() == 0
    ns = _cached("ns", _probe_namespaces)
    bwrap = _cached("bwrap", _probe_bwrap) if limits.mode in ("auto", "bwrap") else ""
    mode = limits.mode
    if mode == "auto":
        mode = "bwrap" if bwrap else "unshare" if ns["mount"] else "uid" if root else "none"
    if mode == "bwrap" and not bwrap:
        raise SandboxError("sandbox mode 'bwrap' asked for, but bwrap is missing or its probe failed here")
    if mode in ("unshare", "uid") and not root:
        raise SandboxError(f"sandbox mode {mode!r} needs root (to drop to a sandbox uid)")
    if mode == "unshare" and not ns["mount"]:
        raise SandboxError("sandbox mode 'unshare' asked for, but mount namespaces do not work here")
    unshare = tuple(n for n in ("mount", "net", "pid") if ns[n]) if mode == "unshare" else ()
    seccomp = mode != "none" and _cached("seccomp", _has_seccomp)
    netns = mode == "bwrap" or "net" in unshare
    layers = {
        "mode": mode,
        "uid": f"sandbox uid (pool from {BASE_UID})" if mode != "none" else f"{os.geteuid()} (not dropped)",
        "network": "+".join(n for n, on in (("seccomp", seccomp), ("netns", netns)) if on) or "open",
        "view": {"bwrap": "bwrap whitelist", "unshare": "mount-namespace whitelist"}.get(mode, "host (permissions)"),
        "pid": "namespace" if mode == "bwrap" or "pid" in unshare else "session + kill by uid" if mode == "uid"
        else "session",
        "rlimits": "cpu,as,fsize,nofile,core" + (",nproc" if mode != "none" else ""),
    }
    return Plan(mode, mode != "none", unshare, seccomp, layers)


def _describe_exit(rc: int | None, timed_out: bool, limits: Limits) -> str:
    if timed_out:
        return f"the worker was stopped at the {limits.wall_s:g} s time limit (an endless loop or a very slow case?)"
    if rc is not None and rc < 0:
        name = signal.Signals(-rc).name
        why = {"SIGKILL": " (memory, CPU-time or process limit?)", "SIGXCPU": " (CPU-time limit)",
               "SIGXFSZ": f" (wrote a file over {limits.file_size_mb} MB)", "SIGSEGV": " (a crash)"}.get(name, "")
        return f"the worker was killed by {name}{why} before it finished"
    return f"the worker exited with code {rc} before it finished (sys.exit or os._exit in submitted code?)"


def _check_request(request: dict) -> list[str]:
    cases = request.get("cases")
    if not isinstance(request.get("module"), str) or not isinstance(cases, list) or not all(
            isinstance(c, str) for c in cases):
        raise ValueError(f"a worker request needs 'module' (str) and 'cases' (list of str), got {request!r}")
    threads = request.get("threads", 1)
    if not isinstance(threads, int) or not 1 <= threads <= 64:
        raise ValueError(f"request 'threads' must be an int in 1..64, got {threads!r}")
    return cases


def run_worker(tree: Path, request: dict, out_dir: Path, limits: Limits = Limits(), *,
               hidden: tuple[Path, ...] | None = None) -> WorkerResult:
    """Run ``grading.worker`` over ``tree`` for ``request`` in the sandbox; copy its two files into ``out_dir``.

    ``hidden``: paths the worker must not see (default: the grader's own checkout, which holds the reference);
    a mount view hides them, mode 'uid' checks they are unreadable. Raises SandboxError only for grader-side
    problems; whatever the worker does ends up in the result (a missing case gets ``error`` as its status).
    """
    cases = _check_request(request)
    tree = Path(os.path.realpath(tree))
    if not (tree / "grading" / "worker.py").is_file():
        raise SandboxError(f"{tree} is not a grading tree (no grading/worker.py)")
    p = plan(limits)
    hide = [os.path.realpath(h) for h in (hidden if hidden is not None else (GRADER_ROOT,))]
    inside = [h for h in hide if sandbox_launch.inside(h, str(tree))]
    if inside and p.mode != "none":
        raise SandboxError(f"hidden path {inside[0]} is inside the tree {tree}")
    uid = take_uid() if p.uid else None
    work = Path(tempfile.mkdtemp(prefix="grading-sandbox-"))
    try:
        if uid is not None:
            kill_uid(uid)  # leftovers of a grader that died while it held this uid
        return _run(tree, request, cases, Path(out_dir), limits, p, uid, work, hide)
    finally:
        try:
            if uid is not None:
                kill_uid(uid)
        finally:
            shutil.rmtree(work, ignore_errors=True)
            release_uid(uid)


def _launch_argv(tree: Path, limits: Limits, p: Plan, uid: int | None, work: Path, hide: list[str],
                 threads: int, status_fd: int) -> list[str]:
    home, tmp, out = work / "home", work / "tmp", work / "out"
    needed = needed_paths(tree)
    if p.mode == "uid":
        check_permissions(needed, hide)
    cfg = {"status_fd": status_fd, "rlimits": rlimits(limits, uid is not None), "uid": uid, "gid": uid,
           "seccomp": p.seccomp, "unshare": list(p.unshare), "cwd": str(home),
           "argv": [sys.executable, "-I", "-B", "-c", _BOOT, str(tree), str(GRADER_ROOT), str(out)],
           "env": worker_env(home, tmp, threads, limits.gpu)}
    if "mount" in p.unshare:
        cfg["mounts"] = {"reveal": needed + [str(work)], "hide": hide}
    argv = [sys.executable, "-I", "-B", "-c", _launcher_source(), json.dumps(cfg)]
    if p.mode == "bwrap":
        exe = _cached("bwrap", _probe_bwrap)
        argv = bwrap_argv(exe, needed, [str(home), str(tmp), str(out)], hide, limits.gpu) + [
            "--chdir", str(home), "--"] + argv
    return argv


def _run(tree: Path, request: dict, cases: list[str], out_dir: Path, limits: Limits, p: Plan, uid: int | None,
         work: Path, hide: list[str]) -> WorkerResult:
    os.chmod(work, 0o711)
    for name in ("home", "tmp", "out"):
        (work / name).mkdir(mode=0o700)
        if uid is not None:
            os.chown(work / name, uid, uid)
    (work / "log").mkdir(mode=0o700)
    read_fd, write_fd = os.pipe()
    try:
        argv = _launch_argv(tree, limits, p, uid, work, hide, request.get("threads", 1), write_fd)
    except BaseException:
        os.close(read_fd)
        os.close(write_fd)
        raise
    logs = work / "log" / "stdout", work / "log" / "stderr"
    start = time.monotonic()
    with open(logs[0], "wb") as fout, open(logs[1], "wb") as ferr:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=fout, stderr=ferr, pass_fds=(write_fd,),
                                start_new_session=True, cwd=work, env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    os.close(write_fd)
    try:
        proc.stdin.write(json.dumps(request).encode())
        proc.stdin.close()
    except BrokenPipeError:
        pass
    rc, timed_out, peak = reap(proc, start + limits.wall_s, work, limits.disk_mb * 2**20)
    if p.mode == "bwrap" and 128 < rc < 128 + 65:
        rc = 128 - rc  # bwrap reports a child killed by signal N as exit code 128 + N
    wall = time.monotonic() - start
    killpg(proc.pid)
    if uid is not None:
        kill_uid(uid)  # nothing of the sandbox uid is left before anything is read
    launched = read_pipe(read_fd)
    stdout, stderr = read_tail(logs[0], limits.tail_chars), read_tail(logs[1], limits.tail_chars)
    if launched != "R" and not (timed_out and not launched):
        detail = launched[1:].lstrip("E") if launched else stderr.strip()[-500:]
        raise SandboxError(f"sandbox setup failed ({p.mode}): {detail or f'exit code {rc}'}")
    return _collect(work / "out", cases, out_dir, limits, uid,
                    WorkerResult(rc, timed_out, round(wall, 3), stdout, stderr, dict(p.layers), peak_rss_mb=peak))


def _collect(out: Path, cases: list[str], out_dir: Path, limits: Limits, uid: int | None,
             res: WorkerResult) -> WorkerResult:
    """Fill ``res`` with what the (dead) worker left in ``out``; copy its two files to ``out_dir``."""
    files = read_outputs(out, cases, limits.output_mb)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("outputs.safetensors", "status.json"):
        src = out / name
        if src.is_file() and not src.is_symlink() and src.stat().st_nlink == 1:
            shutil.copyfile(src, out_dir / name)
    missing = [c for c in cases if c not in files.status]
    res.error = files.error or (_describe_exit(res.returncode, res.timed_out, limits) if missing else "")
    res.status = {**files.status, **{c: res.error for c in missing}}
    res.outputs, res.stray_files, res.uid, res.worker = files.outputs, tuple(files.stray), uid, files.worker
    reported = files.worker.get("peak_rss_mb")  # the worker's own VmHWM (wait4 mixes in the launcher chain)
    if isinstance(reported, (int, float)) and reported > 0:
        res.peak_rss_mb = reported
    res.peak_rss_mb = round(res.peak_rss_mb, 1)
    return res
