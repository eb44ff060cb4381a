"""Hostile cases for the sandbox tests: copied into a tiny tree as ``grading/cases/attacks.py``.

Each case plays a submission that misbehaves. Flags returned as tensors say which attacks got through (1 = it
worked); ``attack_config.json`` beside this file (written by the test) names the paths and port to try.
"""

import builtins
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import torch

from grading.case import Case

CONFIG = Path(__file__).with_name("attack_config.json")


def _cfg() -> dict:
    return json.loads(CONFIG.read_text())


def _flags(values) -> dict:
    return {"flags": torch.tensor([int(bool(v)) for v in values], dtype=torch.int64)}


def ok(seed):
    return {"x": torch.arange(4, dtype=torch.float32) + seed}


def sys_exit(seed):
    sys.exit(0)


def os_exit(seed):
    os._exit(0)


def fake_stdout(seed):
    print('{"score": 100.0, "tests": [{"name": "all", "score": 100, "max_score": 100}]}')
    print("PASSED " * 10, flush=True)
    return {"x": torch.zeros(4)}


def _try_write(path: str) -> bool:
    try:
        Path(path).write_text('{"score": 100}')
        return True
    except OSError:
        return False


def write_outside(seed):
    return _flags(_try_write(p) for p in _cfg()["write_targets"])


def _try_read(path: str) -> bool:
    try:
        Path(path).read_bytes()
        return True
    except OSError:
        return False


def read_hidden(seed):
    return _flags(_try_read(p) for p in _cfg()["read_targets"])


def open_socket(seed):
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
        created = True
    except OSError:
        created = False
    try:
        with socket.create_connection(("127.0.0.1", _cfg()["port"]), timeout=2) as s:
            s.sendall(b"exfiltrated")
        return _flags([created, True])
    except OSError:
        return _flags([created, False])


def threads(seed):
    import threading

    worker = threading.Thread(target=lambda: None)
    worker.start()
    worker.join()  # a thread that ends must not take the worker down (PID 1 of a namespace)
    return {"x": torch.ones(1)}


def huge_file(seed):
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    written, chunk = 0, b"\0" * (1 << 20)
    try:
        with open(out / "huge.bin", "wb") as f:
            for _ in range(100):
                f.write(chunk)
                f.flush()
                written += 1
    except OSError:
        pass
    return {"mb": torch.tensor(written)}


class Liar(torch.Tensor):
    def __eq__(self, other):
        return True


def monkeypatch(seed):
    torch.allclose = lambda *a, **k: True
    torch.Tensor.__eq__ = lambda *a, **k: True
    builtins.print = lambda *a, **k: None
    return {"x": torch.zeros(4).as_subclass(Liar)}


def memory_bomb(seed):
    blob = bytearray(8 << 30)  # 8 GB: over RLIMIT_AS
    return {"x": torch.tensor(len(blob))}


def imports(seed):
    import common  # the tree's own tiny package

    try:
        import gan  # noqa: F401 - the grader's checkout has it; the tree does not

        leaked = True
    except ImportError:
        leaked = False
    return {"mark": torch.tensor(common.MARK), **_flags([leaked])}


def alarm_loop(seed):
    while True:
        pass


def endless(seed):
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    while True:
        time.sleep(0.01)


def fork_storm(seed):
    count = 0
    try:
        for _ in range(300):
            if os.fork() == 0:
                time.sleep(600)
                os._exit(0)
            count += 1
    except OSError:
        pass
    return {"forks": torch.tensor(count)}


def disk_fill(seed):
    """Many files under the per-file cap: only the sandbox's total disk watchdog stops them."""
    tmp = os.environ.get("TMPDIR", "/tmp")
    chunk = bytes(1 << 20)
    for k in range(40):
        with open(f"{tmp}/fill-{k}", "wb") as f:
            for _ in range(30):
                f.write(chunk)
    return {"written": torch.tensor(40 * 30)}


def _case(name, fn, timeout_s=30.0):
    return Case(f"attack/{name}", 1.0, fn, timeout_s=timeout_s)


CASES = (
    _case("sys-exit", sys_exit), _case("ok", ok), _case("fake-stdout", fake_stdout),
    _case("write-outside", write_outside), _case("read-hidden", read_hidden), _case("socket", open_socket),
    _case("huge-file", huge_file), _case("monkeypatch", monkeypatch), _case("memory-bomb", memory_bomb),
    _case("imports", imports), _case("threads", threads), _case("alarm-loop", alarm_loop, timeout_s=0.3),
    _case("fork-storm", fork_storm),
    _case("os-exit", os_exit), _case("endless", endless, timeout_s=1.0), _case("disk-fill", disk_fill),
)
