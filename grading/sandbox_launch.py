"""The sandbox launcher: a tiny stdlib-only program that sets up the isolation layers and then becomes the worker.

``grading.sandbox`` starts it as ``python -I -B -c <this file's source> <config JSON>`` (so it never imports from a
tree), with the grader's interpreter, in a new session. It runs as the grader (root in CI and on Gradescope) and:

1. (``unshare``) enters new mount / network / PID namespaces, where the kernel allows it; with a new PID namespace it
   forks, the child becomes PID 1 of the namespace (every process the worker starts dies with it) and the parent
   only waits and mirrors the child's exit status;
2. (``mounts``) builds a whitelist view of the file system: every top-level directory except the system ones
   (``/usr``, ``/etc``, ...) and every hidden path is covered by an empty read-only tmpfs (files by ``/dev/null``),
   the paths the worker needs (interpreter, site-packages, tree, scratch dir) are bound back, ``/proc`` is remounted
   for the new PID namespace (no other process's command line is visible);
3. applies the rlimits, drops to the sandbox uid/gid (no supplementary groups), sets ``no_new_privs`` and, with
   ``pyseccomp`` importable, a seccomp filter that denies IP/netlink/packet sockets, io_uring, ptrace and namespace
   or mount syscalls;
4. reports ``R`` on the status pipe (close-on-exec, so the parent knows the exec happened) and ``execve``s the worker.

Any failure before the exec writes ``E<reason>`` on the status pipe and exits 125: a grader-side sandbox error,
never blamed on the student. ``probe`` mode only reports which namespaces and mounts work (JSON on stdout).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import resource
import signal
import sys

CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38  # no PR_SET_PDEATHSIG: with PID 1 of a namespace it fires when a thread exits
FLAGS = {"mount": CLONE_NEWNS, "net": CLONE_NEWNET, "pid": CLONE_NEWPID}
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "sys")
DENIED_SYSCALLS = ("ptrace", "process_vm_readv", "process_vm_writev", "mount", "umount2", "unshare", "setns",
                   "bpf", "perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register", "keyctl",
                   "add_key", "request_key", "pivot_root", "chroot")
_libc = ctypes.CDLL(None, use_errno=True)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)), f"mount {target}")


def prctl(option: int, value: int) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0)), f"prctl({option})")


def inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _cover(path: str) -> None:
    """Mount an empty read-only tmpfs over a directory, or /dev/null over a file."""
    if os.path.isdir(path) and not os.path.islink(path):
        mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
    elif os.path.exists(path) and not os.path.islink(path):
        mount("/dev/null", path, None, MS_BIND)


def mount_view(reveal: list[str], hide: list[str], proc: bool) -> None:
    """Whitelist view (see the module docstring). ``reveal``/``hide``: absolute real paths."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    tops = [f"/{n}" for n in sorted(os.listdir("/")) if n not in SYSTEM_DIRS and os.path.isdir(f"/{n}")
            and not os.path.islink(f"/{n}")]
    covers = sorted({*tops, "/dev/shm", *hide}, key=len)
    fds = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in reveal}  # handles that survive the covers
    early = [c for c in covers if not any(inside(c, r) for r in reveal)]
    done: list[str] = []
    for path in early:
        if not any(inside(path, d) for d in done):  # a covered parent already hides it
            _cover(path)
            done.append(path)
    for path, fd in fds.items():
        if any(inside(path, d) for d in done):
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                os.makedirs(path, exist_ok=True)
            elif not os.path.exists(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "w").close()
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
        os.close(fd)
    for path in covers:
        if path not in early and os.path.exists(path):
            _cover(path)  # hidden paths inside a revealed one, covered last
    if proc:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def seccomp_deny_network() -> None:
    """Deny IP/netlink/packet sockets (EACCES) and the syscalls in ``DENIED_SYSCALLS`` (EPERM); needs pyseccomp."""
    import socket

    import pyseccomp as sc

    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    for family in (socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK, socket.AF_PACKET):
        filt.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.EQ, family))
    for name in DENIED_SYSCALLS:
        filt.add_rule(sc.ERRNO(errno.EPERM), name)
    filt.load()


def drop(cfg: dict) -> None:
    """rlimits, then uid/gid, then no_new_privs and seccomp (in that order: each step needs the one before)."""
    os.umask(0o022)
    for name, (soft, hard) in cfg["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))
    if cfg.get("uid") is not None:
        uid, gid = cfg["uid"], cfg["gid"]
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise RuntimeError("setuid(0) still works after dropping privileges")
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    if cfg.get("seccomp"):
        seccomp_deny_network()


def _mirror(pid: int) -> None:
    """The outer launcher: wait for the namespace's PID 1 and exit the way it did."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 125)


def launch(cfg: dict) -> None:
    status = cfg["status_fd"]
    try:
        flags = sum(FLAGS[n] for n in cfg.get("unshare", ()))
        if flags:
            unshare(flags)
        if "pid" in cfg.get("unshare", ()):
            pid = os.fork()
            if pid:
                os.close(status)
                status = -1
                _mirror(pid)
        if cfg.get("mounts"):
            mount_view(cfg["mounts"]["reveal"], cfg["mounts"]["hide"], "pid" in cfg.get("unshare", ()))
        drop(cfg)
        os.chdir(cfg["cwd"])
        os.write(status, b"R")
        os.set_inheritable(status, False)  # closed by a successful exec: EOF tells the parent it happened
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as err:  # noqa: B036 - anything before the exec is a sandbox failure
        if status >= 0:
            os.write(status, f"E{type(err).__name__}: {err}".encode()[:2000])
        os._exit(125)


def probe() -> dict:
    """Which of unshare(mount/net/pid) and a private tmpfs mount work for this process (as JSON-able bools)."""
    out = {}
    for name in ("net", "pid", "mount"):
        try:
            unshare(FLAGS[name])
            out[name] = True
        except OSError:
            out[name] = False
    if out["mount"]:
        try:
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
        except OSError:
            out["mount"] = False
    return out


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    if config.get("probe"):
        print(json.dumps(probe()))
    else:
        launch(config)
