"""Run grading case modules over several graded trees in ONE subprocess, the way the case tests need it.

``run(jobs, work, ...)`` writes a JSON spec, starts ``python multitree.py <spec>`` (this file, as a script) and reads
the results back. The script, for each job (a tree), drops the already imported modules of the ``drop`` packages
from ``sys.modules``, puts the tree first on ``sys.path``, imports the job's case modules, runs every
``case.run(seed)`` for each of the job's seeds (recording ok / the error / seconds), checks that the ``check``
modules' ``__file__`` lie inside the tree and saves the outputs with safetensors (one file per job and seed).

A job: ``{"name": str, "tree": str, "seeds": [int], "modules": [case module], "check": [module]}``. ``checked`` says
what happens to a ``check`` module that is not imported: ``"loaded"`` checks only the ones the cases imported,
``"required"`` counts a missing one as outside the tree, ``"imported"`` imports them all before the cases run.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve()


@dataclass
class Run:
    """One job on one seed: case id -> {name: tensor}, case id -> "ok" or the error, case id -> seconds, and the
    ``check`` modules' files (module -> ``__file__``, None when not imported) with whether all lie inside the tree."""

    outputs: dict
    status: dict
    seconds: dict
    files: dict
    files_ok: bool

    def checked(self, run: str) -> tuple[dict, dict]:
        """(outputs, status), after asserting that every ``check`` module came from the tree under test."""
        assert self.files_ok, f"{run}: modules were imported from outside the tree: {self.files}"
        return self.outputs, self.status


def run(jobs: list[dict], work: Path, *, drop: tuple[str, ...], checked: str = "loaded", deterministic: bool = False,
        timeout: float = 600, env: dict | None = None) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Runs ``jobs`` in one subprocess (cwd ``work``); returns the process and, when it exited with 0,
    (job name, seed) -> ``Run``."""
    from safetensors.torch import load_file

    out = work / "out"
    out.mkdir()
    spec = work / "spec.json"
    spec.write_text(json.dumps({"jobs": jobs, "drop": list(drop), "checked": checked, "deterministic": deterministic,
                                "out": str(out)}))
    proc = subprocess.run([sys.executable, str(HERE), str(spec)], cwd=work, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        return proc, None
    runs = {}
    for key, report in json.loads((out / "status.json").read_text()).items():
        outputs: dict = {}
        for name, value in load_file(out / f"{key}.safetensors").items():
            case, _, tensor = name.rpartition("/")
            outputs.setdefault(case, {})[tensor] = value
        cases = report["cases"]
        runs[report["job"], report["seed"]] = Run(
            outputs, {c: "ok" if r["ok"] else r["error"] for c, r in cases.items()},
            {c: r["seconds"] for c, r in cases.items()}, report["files"], report["files_ok"])
    return proc, runs


def _inside(file: str | None, tree: str) -> bool:
    return file is not None and Path(file).is_relative_to(tree)


def main(spec_path: str) -> None:
    import torch
    from safetensors.torch import save_file

    spec = json.loads(Path(spec_path).read_text())
    torch.set_num_threads(1)
    if spec["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    drop, out = tuple(spec["drop"]), Path(spec["out"])
    base_path, status = list(sys.path), {}
    for k, job in enumerate(spec["jobs"]):
        tree = job["tree"]
        for name in [m for m in sys.modules if m.split(".")[0] in drop]:
            del sys.modules[name]
        sys.path[:] = [tree] + base_path
        importlib.invalidate_caches()
        if spec["checked"] == "imported":
            for module in job["check"]:
                importlib.import_module(module)
        for seed in job["seeds"]:
            tensors, cases = {}, {}
            for module in job["modules"]:
                for case in importlib.import_module(module).CASES:
                    start = time.perf_counter()
                    try:
                        for key, value in case.run(seed).items():
                            tensors[f"{case.id}/{key}"] = value
                        cases[case.id] = {"ok": True}
                    except Exception as err:
                        cases[case.id] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
                    cases[case.id]["seconds"] = time.perf_counter() - start
            files = {m: getattr(sys.modules.get(m), "__file__", None) for m in job["check"]}
            if spec["checked"] == "loaded":
                files = {m: f for m, f in files.items() if m in sys.modules}
            save_file(tensors, str(out / f"{k}-{seed}.safetensors"))
            status[f"{k}-{seed}"] = {"job": job["name"], "seed": seed, "cases": cases, "files": files,
                                     "files_ok": all(_inside(f, tree) for f in files.values())}
    (out / "status.json").write_text(json.dumps(status))


if __name__ == "__main__":
    if sys.path and Path(sys.path[0]).resolve() == HERE.parent:
        sys.path[0] = ""  # as under ``python -c``: the working directory, not this test folder, leads sys.path
    main(sys.argv[1])
