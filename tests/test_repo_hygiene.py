"""Repository-wide rules: lint clean, small modules, no pickle loading, balanced solution markers."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["common", "gan", "ddpm_ddim", "dps", "distillation", "synchronization", "grading"]
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_top_level_layout():
    required = set(PACKAGES) | {"tests", "pyproject.toml", "README.md"}
    present = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    assert required <= present
    allowed = {"docs", "benchmarks", "outputs", "build"} | {p for p in present if p.endswith(".egg-info")}
    extra = present - required - allowed
    assert not extra, f"unexpected top-level entries: {sorted(extra)}"


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff not installed")
    result = subprocess.run([ruff, "check", "--quiet", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small_and_safe(path):
    text = path.read_text()
    assert text.count("\n") <= 500, "modules stay under ~400 lines"
    assert not re.search(r"\bpickle\.load|\btorch\.load\(", text), "load safetensors/JSON only, never pickle"
    lines = [line.strip() for line in text.splitlines()]
    begins, ends = lines.count("# BEGIN SOLUTION"), lines.count("# END SOLUTION")
    assert begins == ends, "unbalanced solution markers"
