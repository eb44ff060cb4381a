"""The sandboxed worker against hostile cases (tests/grading/attacks/attack_cases.py) in a tiny tree.

A few worker runs only (each imports torch: ~2-5 s on 2 busy cores): one batch of attacks per available isolation
mode, one ``os._exit``, one endless loop that ignores the per-case alarm.
"""

import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path

import pytest
import torch

from grading import sandbox_view, worker
from grading.case import Case
from grading.compare import score_case
from grading.sandbox import GRADER_ROOT, Limits, SandboxError, plan, run_worker

ROOT = Path(__file__).resolve().parents[2]
ATTACKS = Path(__file__).with_name("attacks") / "attack_cases.py"
BATCH = ["sys-exit", "ok", "fake-stdout", "write-outside", "read-hidden", "socket", "huge-file", "monkeypatch",
         "memory-bomb", "imports", "threads", "alarm-loop", "fork-storm"]
LIMITS = dict(wall_s=90.0, memory_mb=4096)


def _modes() -> list[str]:
    out = []
    for mode in ("bwrap", "unshare"):
        try:
            plan(Limits(mode=mode))
            out.append(mode)
        except SandboxError:
            pass
    return out


MODES = _modes()
needs_isolation = pytest.mark.skipif(not MODES, reason="needs root with bwrap or mount namespaces")


def _world_dir() -> Path:
    """A fresh root-owned dir that any uid may read (0755): a stand-in for readable grader data."""
    d = Path(tempfile.mkdtemp(prefix="grading-test-"))
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope="module")
def setup():
    base = _world_dir()
    tree, secret_dir, out_parent = base / "tree", base / "secret", base / "graded"
    for sub in (tree / "grading" / "cases", tree / "common", secret_dir, out_parent):
        sub.mkdir(parents=True)
    for name in ("__init__.py", "case.py", "worker.py"):
        shutil.copy(ROOT / "grading" / name, tree / "grading" / name)
    (tree / "grading" / "cases" / "__init__.py").write_text("")
    shutil.copy(ATTACKS, tree / "grading" / "cases" / "attacks.py")
    (tree / "common" / "__init__.py").write_text("MARK = 7\n")
    secret = secret_dir / "expected.txt"
    secret.write_text("the reference answer")
    os.chmod(secret, 0o644)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    server.setblocking(False)
    writes = [out_parent / "results.json", tree / "grading" / "pwned.py", secret_dir / "pwned.txt",
              Path("/tmp") / f"grading-attack-{os.getpid()}.txt"]
    config = {"write_targets": [str(p) for p in writes], "port": server.getsockname()[1],
              "read_targets": [str(secret), str(GRADER_ROOT / "grading" / "sandbox.py"), "/etc/shadow",
                               f"/proc/{os.getpid()}/cmdline"]}  # the grader's command line
    (tree / "grading" / "cases" / "attack_config.json").write_text(json.dumps(config))
    yield {"tree": tree, "secret": secret, "out_parent": out_parent, "server": server, "writes": writes}
    server.close()
    for p in writes:
        p.unlink(missing_ok=True)
    shutil.rmtree(base, ignore_errors=True)


def _request(*names: str) -> dict:
    return {"module": "grading.cases.attacks", "cases": [f"attack/{n}" for n in names], "seed": 5, "threads": 1}


def _assert_nothing_left(uid: int) -> None:
    """No live process of ``uid`` (checked only while no other grader on the machine holds that uid's lock)."""
    fd = sandbox_view.lock_uid(uid)
    if fd is None:
        return  # another grading process took the uid right away
    try:
        assert not sandbox_view.live_pids(uid), f"a process of sandbox uid {uid} outlived its worker"
    finally:
        os.close(fd)


@needs_isolation
@pytest.mark.parametrize("mode", MODES)
def test_attack_batch_fails_only_the_attacking_cases(setup, mode):
    out = setup["out_parent"] / f"out-{mode}"
    res = run_worker(setup["tree"], _request(*BATCH), out, Limits(mode=mode, **LIMITS),
                     hidden=(GRADER_ROOT, setup["secret"]))
    st = {k.split("/", 1)[1]: v for k, v in res.status.items()}
    got = {k.split("/", 1)[1]: v for k, v in res.outputs.items()}
    assert not res.timed_out and res.layers["mode"] == mode, res.summary()
    assert res.layers["network"] != "open" and res.layers["uid"].startswith("sandbox uid")
    assert "SystemExit" in st["sys-exit"]  # and the cases after it still ran:
    assert torch.equal(got["ok"]["x"], torch.arange(4.0) + 5)
    assert "PASSED" in res.stdout_tail and st["fake-stdout"] == "ok"  # stdout is kept, never parsed
    expected = {"x": torch.arange(4.0) + 5}
    assert score_case(Case("attack/fake-stdout", 1, ok_run), expected, got["fake-stdout"], "ok").fraction == 0
    assert got["write-outside"]["flags"].tolist() == [0, 0, 0, 0], "a write outside OUT went through"
    assert not any(p.exists() for p in setup["writes"])
    assert got["read-hidden"]["flags"].tolist() == [0, 0, 0, 0], "a hidden file was readable"
    assert got["socket"]["flags"].tolist() == [int("seccomp" not in res.layers["network"]), 0]
    with pytest.raises(BlockingIOError):
        setup["server"].accept()
    assert got["huge-file"]["mb"].item() <= 64 and "huge.bin" in res.stray_files and not (out / "huge.bin").exists()
    liar = got["monkeypatch"]["x"]
    assert type(liar) is torch.Tensor and score_case(Case("m", 1, ok_run), expected, got["monkeypatch"],
                                                     "ok").fraction == 0
    assert "MemoryError" in st["memory-bomb"]
    assert got["imports"]["mark"].item() == 7 and got["imports"]["flags"].tolist() == [0]
    assert "CaseTimeout" in st["alarm-loop"] and st["threads"] == "ok"
    assert st["fork-storm"] == "ok" and got["fork-storm"]["forks"].item() < Limits().processes
    _assert_nothing_left(res.uid)
    assert sorted(os.listdir(out)) == ["outputs.safetensors", "status.json"]


def ok_run(seed):
    return {"x": torch.arange(4.0) + seed}


@needs_isolation
def test_os_exit_is_a_failed_case_not_a_crash(setup):
    res = run_worker(setup["tree"], _request("os-exit", "ok"), setup["out_parent"] / "out-exit", Limits(**LIMITS))
    assert res.returncode == 0 and not res.outputs
    assert all("exited with code 0 before it finished" in s for s in res.status.values()), res.status


@needs_isolation
def test_endless_loop_is_killed_at_the_wall_clock_limit(setup):
    res = run_worker(setup["tree"], _request("endless"), setup["out_parent"] / "out-loop",
                     Limits(wall_s=6.0, memory_mb=4096))
    assert res.timed_out and res.wall_s < 9, res.summary()
    assert "time limit" in res.status["attack/endless"]
    _assert_nothing_left(res.uid)


@needs_isolation
def test_disk_watchdog_stops_many_files_under_the_per_file_cap(setup):
    res = run_worker(setup["tree"], _request("disk-fill"), setup["out_parent"] / "out-disk",
                     Limits(wall_s=60.0, memory_mb=4096, disk_mb=96))
    assert res.timed_out and not res.outputs and res.wall_s < 30, res.summary()  # 1.2 GB were on their way
    _assert_nothing_left(res.uid)


def test_plan_none_and_limits_validation():
    layers = plan(Limits(mode="none")).layers
    assert layers["mode"] == "none" and layers["network"] == "open"
    with pytest.raises(ValueError, match="sandbox mode"):
        Limits(mode="docker")
    with pytest.raises(ValueError, match="wall_s"):
        Limits(wall_s=0)
    assert "layers" in Limits().describe()


def test_run_worker_rejects_a_tree_without_the_worker(tmp_path):
    with pytest.raises(SandboxError, match="not a grading tree"):
        run_worker(tmp_path, _request("ok"), tmp_path / "out", Limits(mode="none"))
    with pytest.raises(ValueError, match="cases"):
        run_worker(tmp_path, {"module": "m"}, tmp_path / "out", Limits(mode="none"))


def test_bwrap_argv_binds_only_what_is_needed():
    argv = sandbox_view.bwrap_argv("bwrap", ["/opt/py", "/srv/tree"], ["/srv/work/out"], ["/srv/tree/secret", "/x"],
                               gpu=False)
    pairs = [tuple(argv[i:i + 3]) for i in range(len(argv) - 2)]
    assert "--unshare-net" in argv and "--die-with-parent" in argv
    assert ("--ro-bind", "/srv/tree", "/srv/tree") in pairs and ("--bind", "/srv/work/out", "/srv/work/out") in pairs
    assert "/x" not in argv and not any(p[0] in ("--bind", "--ro-bind") and p[1] == "/" for p in pairs)
    assert ("--perms", "0755", "--dir") in pairs


def test_permission_check_of_mode_uid(tmp_path):
    open_dir = _world_dir()
    try:
        (open_dir / "f").write_text("x")
        os.chmod(open_dir / "f", 0o644)
        assert sandbox_view.other_can_reach(open_dir / "f", stat.S_IROTH)
        with pytest.raises(SandboxError, match="hidden path"):
            sandbox_view.check_permissions([], [str(open_dir / "f")])
        os.chmod(open_dir, 0o700)
        sandbox_view.check_permissions([], [str(open_dir / "f")])
        with pytest.raises(SandboxError, match="not readable"):
            sandbox_view.check_permissions([str(open_dir / "f")], [])
    finally:
        shutil.rmtree(open_dir)


def test_worker_request_and_output_checks():
    import io

    req = worker.read_request(io.BytesIO(b'{"module": "grading.cases.x", "cases": ["a/b"], "seed": 1}'))
    assert req == {"module": "grading.cases.x", "cases": ["a/b"], "seed": 1, "threads": 1}
    for bad in (b'{"module": "os; rm", "cases": [], "seed": 1}', b'{"module": "m", "cases": "a", "seed": 1}',
                b'{"module": "m", "cases": [], "seed": "1"}', b"x" * (worker.MAX_REQUEST_BYTES + 1)):
        with pytest.raises(ValueError):
            worker.read_request(io.BytesIO(bad))

    class Sub(torch.Tensor):
        pass

    out = worker.plain_tensors(torch, {"y": torch.ones(2, 3).t().as_subclass(Sub)})
    assert type(out["y"]) is torch.Tensor and out["y"].is_contiguous()
    for bad in ({"a/b": torch.ones(1)}, {"y": [1.0]}, [torch.ones(1)]):
        with pytest.raises(ValueError):
            worker.plain_tensors(torch, bad)


def test_worker_import_check_refuses_modules_from_outside_the_tree(tmp_path):
    (tmp_path / "grading").mkdir()
    (tmp_path / "grading" / "__init__.py").write_text("")
    with pytest.raises(RuntimeError, match="not from the tree"):
        worker.check_imports(tmp_path)  # this process's grading package is the checkout's, not tmp_path's
