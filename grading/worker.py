"""The grading worker: runs one task's seeded cases inside the sandbox, over a tree with the student's code.

Started only by :func:`grading.sandbox.run_worker` (``grading.worker --out DIR`` from the tree, after the bootstrap
put the tree first on ``sys.path``); not a user command. It reads ONE JSON request from stdin::

    {"module": "grading.cases.sds", "cases": ["sds/b3", ...], "seed": 1234, "threads": 1}

sets torch's threads and determinism, imports the case module (asserting that every imported module of the tree's
packages comes from the tree, never from the grader's editable install), runs each case with a per-case alarm
(``Case.timeout_s``), catching everything a case raises (``SystemExit`` included), and writes exactly two files:
``OUT/outputs.safetensors`` (keys ``<case id>/<name>``, contiguous CPU tensors) and then ``OUT/status.json``
(per case: ok, or a short error). Nothing it writes is trusted: the parent only reads tensors and compares them.
"""

from __future__ import annotations

import importlib
import json
import os
import random
import re
import signal
import sys
import time
import traceback
from pathlib import Path

MAX_REQUEST_BYTES = 1 << 16
MAX_ERROR_CHARS = 1500
TREE = Path(__file__).resolve().parents[1]
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class CaseTimeout(Exception):
    """A case ran past its ``timeout_s``."""


def read_request(stream) -> dict:
    """The validated request (module, cases, seed, threads) from a binary stream."""
    data = stream.read(MAX_REQUEST_BYTES + 1)
    if len(data) > MAX_REQUEST_BYTES:
        raise ValueError(f"request over {MAX_REQUEST_BYTES} bytes")
    req = json.loads(data)
    if not isinstance(req, dict) or not isinstance(req.get("module"), str) or not _MODULE.match(req["module"]):
        raise ValueError("request needs a dotted 'module'")
    if not isinstance(req.get("cases"), list) or not all(isinstance(c, str) for c in req["cases"]):
        raise ValueError("request needs 'cases', a list of case ids")
    if not isinstance(req.get("seed"), int) or not isinstance(req.get("threads", 1), int):
        raise ValueError("request 'seed' and 'threads' must be integers")
    return {"module": req["module"], "cases": req["cases"], "seed": req["seed"], "threads": req.get("threads", 1)}


def check_imports(tree: Path = TREE) -> None:
    """Every loaded module of a package that the tree holds must come from the tree (not from an editable install)."""
    tops = {p.name for p in tree.iterdir() if (p / "__init__.py").is_file()}
    root = str(tree) + os.sep
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in tops:
            continue
        where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), "")
        if not os.path.abspath(where).startswith(root):  # abspath: links inside the tree (toy models) count
            raise RuntimeError(f"module {name} was imported from {where}, not from the tree {tree}")
    if any("__editable__" in (getattr(f, "__module__", "") or "") for f in sys.meta_path):
        raise RuntimeError("an editable-install finder is still on sys.meta_path")


def _setup_torch(threads: int):
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    return torch


def describe(err: BaseException, tree: Path = TREE) -> str:
    """'<Type>: <message>' plus the last frames inside the tree (relative paths), capped."""
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if f.filename.startswith(str(tree) + os.sep) and f.filename != __file__]
    where = "; ".join(f"{os.path.relpath(f.filename, tree)}:{f.lineno} in {f.name}" for f in frames[-3:])
    if isinstance(err, SystemExit):
        text = f"SystemExit: the code called sys.exit({err.code!r})"
    else:
        text = "".join(traceback.format_exception_only(type(err), err)).strip()
    text = f"{text} ({where})" if where else text
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " ..."


def plain_tensors(torch, out) -> dict:
    """name -> detached, contiguous, plain CPU tensor (own memory); ValueError for anything else."""
    if not isinstance(out, dict):
        raise ValueError(f"a case must return a dict of tensors, got {type(out).__name__}")
    tensors = {}
    for name, value in out.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"output name {name!r} must match {_NAME.pattern}")
        if not isinstance(value, torch.Tensor) or value.layout != torch.strided:
            raise ValueError(f"output {name!r} is a {type(value).__name__}, not a dense tensor")
        plain = value.detach().to("cpu").as_subclass(torch.Tensor)
        tensors[name] = plain.contiguous().clone()
    return tensors


def _alarm(signum, frame):
    raise CaseTimeout("the case ran past its time limit")


def run_case(torch, case, seed: int) -> dict:
    """Run one case with fresh global RNG/dtype/grad state and an alarm at ``case.timeout_s``."""
    torch.manual_seed(seed)
    random.seed(seed)
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(True)
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, float(case.timeout_s))
    try:
        return plain_tensors(torch, case.run(seed))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)


def run(request: dict) -> tuple[dict, dict, dict]:
    """(flat tensors, per-case status, worker status) for a request."""
    start = time.monotonic()
    torch = _setup_torch(request["threads"])
    worker = {"ok": True, "error": "", "python": sys.version.split()[0], "torch": torch.__version__}
    tensors, cases = {}, {}
    try:
        module = importlib.import_module(request["module"])
        check_imports()
        by_id = {c.id: c for c in module.CASES}
    except BaseException as err:  # noqa: B036 - the student's import-time sys.exit included
        worker.update(ok=False, error=f"importing {request['module']} failed: {describe(err)}")
        return tensors, cases, worker
    worker["import_s"] = round(time.monotonic() - start, 3)
    for cid in request["cases"]:
        t0 = time.monotonic()
        if cid not in by_id:
            cases[cid] = {"ok": False, "error": f"unknown case {cid!r}"}
            continue
        try:
            out = run_case(torch, by_id[cid], request["seed"])
            check_imports()  # a case may import lazily
            tensors.update({f"{cid}/{name}": t for name, t in out.items()})
            cases[cid] = {"ok": True, "error": ""}
        except BaseException as err:  # noqa: B036 - SystemExit/KeyboardInterrupt in a case fail that case only
            cases[cid] = {"ok": False, "error": describe(err)}
        cases[cid]["wall_s"] = round(time.monotonic() - t0, 3)
    return tensors, cases, worker


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM of its own image, not inherited across exec)."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
        return round(int(line.split()[1]) / 1024, 1)
    except (OSError, StopIteration, ValueError):
        return 0.0


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] != "--out":
        print("grading.worker is started by grading.sandbox.run_worker only", file=sys.stderr)
        return 2
    out = Path(argv[2])
    request = read_request(sys.stdin.buffer)
    tensors, cases, worker = run(request)
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(out / "outputs.safetensors"))
    except Exception as err:  # e.g. a dtype safetensors cannot store: those cases fail, the status still lands
        for cid in {k.rpartition("/")[0] for k in tensors}:
            cases[cid] = {"ok": False, "error": f"outputs could not be saved: {describe(err)}"}
        save_file({}, str(out / "outputs.safetensors"))
    status = {"worker": {**worker, "peak_rss_mb": peak_rss_mb()}, "cases": cases}
    (out / "status.json").write_text(json.dumps(status, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit hook or lingering thread of submitted code runs after the status is written
