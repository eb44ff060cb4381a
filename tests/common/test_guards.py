"""The shared bad-input primitives: finite float options, divergence guards, strict atomic JSON and folders,
the safe image reader and byte-stable safetensors."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import struct
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from safetensors.torch import load_file

from common.cli import finite
from common.divergence import BlowUpGuard, Diverged, check_bounded
from common.files import save_safetensors
from common.images import load_image, read_pil
from common.runs import JSON_INDENT, atomic_dir, json_number, write_json_atomic


@click.command()
@click.option("--x", type=finite(min=0, max=10, max_open=True), default=1.0)
def _cmd(x: float) -> None:
    click.echo(f"x={x}")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "-1", "10", "abc"])
def test_finite_refuses_nonfinite_and_out_of_range(value):
    result = CliRunner().invoke(_cmd, ["--x", value])
    assert result.exit_code == 2
    assert "Invalid value for '--x'" in result.output


def test_finite_accepts_in_range():
    result = CliRunner().invoke(_cmd, ["--x", "9.5"])
    assert result.exit_code == 0 and result.output.strip() == "x=9.5"


def test_check_bounded_names_step_and_peak():
    check_bounded(torch.tensor([1.0, -999.0]), 1e3, "latents", 3)
    with pytest.raises(Diverged, match=r"latents at step 7 diverged \(max \|value\| 2e\+03 > 1000\)"):
        check_bounded(torch.tensor([1.0, -2000.0]), 1e3, "latents", 7)
    with pytest.raises(Diverged, match="NaN or infinite"):
        check_bounded(torch.tensor([float("nan")]), 1e3, "x0_hat")


def test_blow_up_guard_uses_early_scale():
    guard = BlowUpGuard("the G loss", factor=100, warmup=2, floor=1.0)
    for step, value in enumerate([5.0, 3.0, 400.0, 499.0]):  # scale 5 from the first two updates
        guard.update(value, step)
    with pytest.raises(Diverged, match="the G loss at step 4 diverged"):
        guard.update(501.0, 4)
    with pytest.raises(Diverged, match="NaN"):
        guard.update(torch.tensor(float("inf")), 5)


def test_write_json_atomic_is_strict_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"\$\.rows\[1\]\.ms"):
        write_json_atomic(tmp_path / "a.json", {"rows": [{"ms": 1.0}, {"ms": math.nan}]})
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "b.json").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        write_json_atomic(tmp_path / "b.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]
    write_json_atomic(tmp_path / "c.json", {"mem": json_number(float("nan")), "ms": json_number(2.5)})
    assert json.loads((tmp_path / "c.json").read_text()) == {"mem": None, "ms": 2.5}


def test_every_json_writer_uses_the_one_indent(tmp_path):
    """write_json_atomic writes json.dumps(data, indent=2) plus a newline; a json.dump(s) call elsewhere that sets
    ``indent`` (a hand-written file) sets it to JSON_INDENT's value, so every eval.json / config.json looks alike."""
    data = {"score": 0.25, "images": {"a.png": 0.5}, "rows": [1, None]}
    write_json_atomic(tmp_path / "eval.json", data)
    assert (tmp_path / "eval.json").read_text() == json.dumps(data, indent=2) + "\n" and JSON_INDENT == 2
    root, bad = Path(__file__).resolve().parents[2], []
    for top in ("common", "gan", "ddpm_ddim", "dps", "distillation", "synchronization", "grading", "benchmarks"):
        for path in sorted((root / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("dump", "dumps"):
                    bad += [f"{path.relative_to(root)}:{node.lineno}" for k in node.keywords if k.arg == "indent"
                            and not (isinstance(k.value, ast.Constant) and k.value.value == JSON_INDENT)
                            and not (isinstance(k.value, ast.Name) and k.value.id == "JSON_INDENT")]
    assert not bad, f"json indent other than {JSON_INDENT}: {', '.join(bad)}"


def test_atomic_dir_renames_only_on_success(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "ds") as tmp:
            (tmp / "0.png").write_bytes(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(tmp_path / "ds") as tmp:
        (tmp / "captions.txt").write_text("a\n")
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    assert (tmp_path / "ds" / "captions.txt").read_text() == "a\n"
    with pytest.raises(ValueError, match="not empty"):
        with atomic_dir(tmp_path / "ds"):
            pass


def test_read_pil_rescales_16_bit(tmp_path):
    ramp = (np.arange(16 * 16).reshape(16, 16) * 257).astype(np.uint16)  # 0 .. 65535 * 255 / 257
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    img = read_pil(tmp_path / "g16.png")
    arr = np.asarray(img)
    assert img.mode == "RGB"
    expected = np.clip(ramp / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(arr[..., 0], expected)
    assert abs(float(load_image(tmp_path / "g16.png", value_range=(0.0, 1.0)).mean()) - ramp.mean() / 65535) < 3e-3


def test_read_pil_refuses_bombs_and_garbage(tmp_path):
    Image.new("L", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 MP of zeros: a small file
    with pytest.raises(ValueError, match="megapixels"):
        read_pil(tmp_path / "bomb.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ValueError, match="not a valid image file"):
        read_pil(tmp_path / "bad.png")


def test_save_safetensors_header_is_sorted_and_loads(tmp_path):
    tensors = {f"layer{i}.w": torch.full((i + 1, 2), float(i)) for i in range(12)}
    tensors["a"] = torch.arange(3)
    save_safetensors(tensors, tmp_path / "x.safetensors", {"state": "{}", "arch": "{}"})
    blob = (tmp_path / "x.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    assert n % 8 == 0
    keys = list(json.loads(blob[8 : 8 + n]))
    assert keys == sorted(keys)
    back = load_file(tmp_path / "x.safetensors")
    assert all(torch.equal(back[k], v) for k, v in tensors.items())
    reordered = dict(reversed(list(tensors.items())))
    save_safetensors(reordered, tmp_path / "y.safetensors", {"arch": "{}", "state": "{}"})
    digest = [hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() for f in ("x.safetensors", "y.safetensors")]
    assert digest[0] == digest[1]
