"""python -m dps.main end to end on a tiny random DDPM folder, and its one-line errors."""

import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from common.toy.train_faces import build_tiny_unet, save_pipeline
from dps.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_pipeline(build_tiny_unet(16), tmp_path_factory.mktemp("tiny") / "ddpm"))


def _run(args):
    return CliRunner().invoke(main, args + ["--device", "cpu", "--no-progress"])


def test_inpainting_on_heldout_faces_writes_everything(model_dir, tmp_path):
    out = tmp_path / "out"
    result = _run(["--task", "inpainting", "--model", model_dir, "--num_images", "3", "--batch_size", "2",
                   "--num_inference_steps", "3", "--save_dir", str(out)])
    assert result.exit_code == 0 and not result.exception, result.output
    for i in range(3):
        for kind in ("input", "measurement", "reconstruction", "panel"):
            assert (out / f"{i:03d}_{kind}.png").is_file()
    assert Image.open(out / "000_panel.png").size[0] > 4 * 16
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_image"]) == 3 and {"psnr", "ssim", "psnr_naive"} <= set(metrics["mean"])
    assert metrics["scale"] == 0.5 and "DPS inpainting 3 steps" in result.output
    assert json.loads((out / "config.json").read_text())["seed"] == 0


@pytest.mark.parametrize("task", ["super_resolution", "gaussian_blur", "motion_blur"])
def test_other_tasks_with_an_image_folder(model_dir, tmp_path, task):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(16, 16, 3) * 255).byte().numpy()).save(images / f"{i}.png")
    out = tmp_path / "out"
    result = _run(["--task", task, "--model", model_dir, "--images", str(images), "--num_inference_steps", "2",
                   "--save_dir", str(out), "--kernel_size", "9"])
    assert result.exit_code == 0 and not result.exception, result.output
    assert Image.open(out / "001_measurement.png").size == ((4, 4) if task == "super_resolution" else (16, 16))
    assert json.loads((out / "metrics.json").read_text())["scale"] == 0.3


def _bad_folder(tmp_path, size, mode):
    folder = tmp_path / f"bad_{size}_{mode}"
    folder.mkdir()
    Image.new(mode, (size, size)).save(folder / "x.png")
    return str(folder)


@pytest.mark.parametrize("case", ["task", "size", "channels", "alpha", "steps", "scale", "model", "folder"])
def test_bad_input_gives_one_line_and_exit_2(model_dir, tmp_path, case):
    args = {"task": ["--task", "colorize"], "steps": ["--num_inference_steps", "0"], "scale": ["--scale", "-1"],
            "size": ["--images", _bad_folder(tmp_path, 32, "RGB")],
            "channels": ["--images", _bad_folder(tmp_path, 16, "L")],
            "alpha": ["--images", _bad_folder(tmp_path, 16, "RGBA")], "model": ["--model", "no-such-model"],
            "folder": ["--images", str(tmp_path / "missing")]}[case]
    base = ["--task", "inpainting", "--model", model_dir, "--num_inference_steps", "2",
            "--save_dir", str(tmp_path / "o")]
    result = _run(base + args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Error" in result.output
    if case in ("size", "channels", "alpha", "model", "folder"):  # domain errors: exactly one line
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error: ")
    assert not (tmp_path / "o" / "metrics.json").exists()
