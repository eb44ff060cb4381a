"""cli helpers, images, GPU utilities and run configs."""

import json
import math
import time

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from common.cli import CommaChoice, CommaInts, IntListType, UserError, check_finite, parse_int_list, user_errors
from common.eval.frechet import compute_features, frechet_distance
from common.gpu import CudaTimer, get_device, make_generators, precision_dtype, randn_per_sample, seed_everything
from common.images import load_image, pil_to_tensor, save_gif, save_grid, tensor_to_pil
from common.runs import write_config


@click.command()
@click.option("--path", required=True)
@click.option("--seeds", type=IntListType(), default="0-2", show_default=True)
@user_errors
def _demo(path, seeds):
    load_image(path)
    click.echo(f"seeds={seeds}")


def test_user_errors_are_one_line_exit_2(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(_demo, ["--path", str(tmp_path / "nope.png")])
    assert missing.exit_code == 2 and missing.output.strip().count("\n") == 0
    assert missing.output.startswith("Error: file not found")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    broken = runner.invoke(_demo, ["--path", str(bad)])
    assert broken.exit_code == 2 and "not a valid image" in broken.output
    good = tmp_path / "ok.png"
    Image.new("RGB", (4, 4)).save(good)
    ok = runner.invoke(_demo, ["--path", str(good), "--seeds", "1-3,7"])
    assert ok.exit_code == 0 and not ok.exception and "seeds=[1, 2, 3, 7]" in ok.output


def test_parse_int_list():
    assert parse_int_list("0-3,7") == [0, 1, 2, 3, 7]
    for bad in ["", "a", "5-1"]:
        with pytest.raises(ValueError):
            parse_int_list(bad)


@click.command()
@click.option("--modes", type=CommaChoice(("eager", "graphs")), default="eager")
@click.option("--sizes", type=CommaInts(min=2), default="2")
def _lists(modes, sizes):
    click.echo(f"{modes} {sizes}")


def test_comma_list_types():
    """Items canonicalised like click.Choice (case-insensitive), order kept, duplicates dropped; bad items exit 2."""
    ok = CliRunner().invoke(_lists, ["--modes", " Graphs,eager,graphs", "--sizes", "4, 2,4"])
    assert ok.exit_code == 0 and ok.output.strip() == "['graphs', 'eager'] [4, 2]", ok.output
    for args, message in [(["--modes", "eager,bogus"], "'bogus': choose from eager, graphs"),
                          (["--modes", ","], "expected a comma-separated list"),
                          (["--sizes", "1,4"], "expected integers >= 2"), (["--sizes", "4,x"], "not a comma")]:
        bad = CliRunner().invoke(_lists, args)
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)


def test_check_finite():
    check_finite(torch.ones(2), "loss")
    with pytest.raises(UserError, match="NaN"):
        check_finite(torch.tensor([1.0, float("nan")]), "loss")


@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0)])
def test_tensor_pil_round_trip(value_range):
    lo, hi = value_range
    x = torch.randint(0, 256, (3, 5, 7)).float() / 255 * (hi - lo) + lo
    back = pil_to_tensor(tensor_to_pil(x, value_range), value_range)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-6)


def test_grid_and_gif(tmp_path):
    imgs = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)])  # black, grey, white in [-1, 1]
    save_grid(imgs, tmp_path / "g.png", nrow=2)  # torchvision.utils.make_grid: 2 per row, 2 px white padding
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("RGB"))
    assert grid.shape == (2 * 6 + 2, 2 * 6 + 2, 3)
    assert (grid[2:6, 2:6] == 0).all() and (grid[2:6, 8:12] == 128).all() and (grid[8:12, 2:6] == 255).all()
    assert (grid[:2] == 255).all() and (grid[:, 6:8] == 255).all() and (grid[8:12, 8:12] == 255).all()  # pad, empty
    save_grid(torch.zeros(5, 1, 4, 4), tmp_path / "g5.png", value_range=(0.0, 1.0))  # default: ceil(sqrt(5)) = 3
    assert Image.open(tmp_path / "g5.png").size == (3 * 6 + 2, 2 * 6 + 2)
    save_gif(list(imgs), tmp_path / "a.gif")
    assert Image.open(tmp_path / "a.gif").n_frames == 3
    assert load_image(tmp_path / "g.png", size=8).shape == (3, 8, 8)


def test_frechet_distance_closed_forms():
    a, b = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [5.0]])  # 1-D: means 1, 3; unbiased variances 2, 8
    assert frechet_distance(a, b) == pytest.approx(4 + (2**0.5 - 8**0.5) ** 2, abs=1e-12)  # = 6
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64) @ torch.tensor([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 2]],
                                                                          dtype=torch.float64)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(x, x + 3.0) == pytest.approx(27.0, abs=1e-6)  # a shift adds |mu_a - mu_b|^2 only
    scaled = frechet_distance(x, 2 * x)  # S_b = 4 S_a: tr(S_a + 4 S_a - 2 * 2 S_a) = tr(S_a), plus the mean term
    cov = torch.cov(x.T)
    assert scaled == pytest.approx(float(torch.trace(cov) + (x.mean(0) ** 2).sum()), rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(x[:1], x)
    features = compute_features(x.float(), lambda t: t[:, :2], batch_size=7)
    assert features.dtype == torch.float64 and torch.equal(features, x.float()[:, :2].double())


def test_seeding_and_per_sample_generators():
    seed_everything(3)
    a = torch.randn(3)
    seed_everything(3)
    assert torch.equal(a, torch.randn(3))
    batch = randn_per_sample((2, 2), make_generators([5, 6]))
    alone = randn_per_sample((2, 2), make_generators([6]))
    assert torch.equal(batch[1], alone[0])  # a sample does not depend on its batch


def test_device_and_precision():
    assert get_device("cpu").type == "cpu"
    assert get_device("auto").type in ("cpu", "cuda", "mps")
    assert precision_dtype("bf16", "cpu") == torch.bfloat16
    assert precision_dtype("fp16", "cpu") == torch.float32
    with pytest.raises(ValueError):
        precision_dtype("fp8")
    with pytest.raises(ValueError, match="unknown device 'nope'"):
        get_device("nope")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")
    assert math.isnan(CudaTimer("cpu").ms)  # nothing timed yet
    with CudaTimer("cpu") as t:
        time.sleep(0.05)
    assert 45 <= t.ms < 5000  # milliseconds of the block, not seconds or nanoseconds


def test_write_config(tmp_path):
    path = write_config(tmp_path / "run", {"seed": 3, "prompt": "a", "dir": tmp_path})
    data = json.loads(path.read_text())
    assert data["seed"] == 3 and "torch" in data["_run"]["versions"] and isinstance(data["dir"], str)
