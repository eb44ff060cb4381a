"""python -m dps.main end to end on a tiny random DDPM folder: the handout's DPS_results files, labelled panels,
and one-line refusals of bad input that leave nothing behind."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from common.panels import labelled_grid
from common.toy.train_faces import build_tiny_unet, save_pipeline
from dps.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_pipeline(build_tiny_unet(16), tmp_path_factory.mktemp("tiny") / "ddpm"))


def _run(args):
    return CliRunner().invoke(main, args + ["--device", "cpu", "--no-progress"])


def test_defaults_write_the_handouts_dps_results(model_dir, tmp_path, monkeypatch):
    """No --task and no --save_dir: inpainting into ./DPS_results, the handout's file names."""
    monkeypatch.chdir(tmp_path)
    result = _run(["--model", model_dir, "--num_images", "3", "--batch_size", "2", "--num_inference_steps", "3"])
    assert result.exit_code == 0 and not result.exception, result.output
    out = tmp_path / "DPS_results"
    for i in range(3):
        for kind in ("ground_truth", "masked_input", "generated", "panel"):
            assert (out / f"DPS_{kind}_image{i}.png").is_file(), kind
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["per_image"]) == 3 and {"psnr", "ssim", "psnr_naive"} <= set(metrics["mean"])
    assert metrics["scale"] == 0.5 and metrics["task"] == "inpainting" and "DPS inpainting 3 steps" in result.output
    config = json.loads((out / "config.json").read_text())
    assert (config["seed"], config["precision"], config["unet_dtype"]) == (0, "auto", "float32")  # auto: CPU fp32
    # the panel (common.panels): truth | masked input | DPS, each 16 px enlarged x4, 4 px padding, labels under them
    panel = np.asarray(Image.open(out / "DPS_panel_image0.png").convert("L"))
    assert panel.shape[1] == 3 * (64 + 4) + 4 and panel.shape[0] > 4 + 64 + 4 + 10
    assert (panel[4 + 64 : -4] < 128).sum() > 30  # dark label text on the white band under the tiles
    truth = np.asarray(Image.open(out / "DPS_ground_truth_image0.png").convert("L"))
    tile = panel[4:68, 4:68]
    assert np.array_equal(tile[::4, ::4], truth) and np.array_equal(tile[3::4, 3::4], truth)  # nearest x4
    # the handout's masked input (execute_DPS.py saves mask * the [0, 1] image): every pixel is the truth's
    # (no measurement noise) or black (unobserved; not the grey of the [-1, 1] product), 30-70% black
    truth_rgb = np.asarray(Image.open(out / "DPS_ground_truth_image0.png").convert("RGB"))
    masked = np.asarray(Image.open(out / "DPS_masked_input_image0.png").convert("RGB"))
    black = (masked == 0).all(axis=2)
    assert np.array_equal(masked[~black], truth_rgb[~black]) and 0.2 < black.mean() < 0.8, black.mean()
    middle = np.asarray(Image.open(out / "DPS_panel_image0.png").convert("RGB"))[4:68, 72:136]  # the second tile
    assert np.array_equal(middle[::4, ::4], masked)


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
    size = (4, 4) if task == "super_resolution" else (16, 16)
    assert Image.open(out / "DPS_measurement_image1.png").size == size
    expected = labelled_grid(torch.zeros(3, 3, 16, 16), ["truth", "measurement", "DPS reconstruction"])  # x4 tiles
    assert Image.open(out / "DPS_panel_image1.png").size == (3 * 68 + 4, expected.shape[1])
    assert json.loads((out / "metrics.json").read_text())["scale"] == 0.3


def _bad_folder(tmp_path, size, mode, corrupt=False):
    folder = tmp_path / f"bad_{size}_{mode.replace(';', '')}{'_corrupt' if corrupt else ''}"
    folder.mkdir()
    if corrupt:
        (folder / "x.png").write_bytes(b"\x89PNG not really")
    elif mode == "I;16":
        Image.fromarray(np.full((size, size), 40000, dtype=np.uint16)).save(folder / "x.png")
    else:
        Image.new(mode, (size, size)).save(folder / "x.png")
    return str(folder)


BAD = {"task": ["--task", "colorize"], "steps": ["--num_inference_steps", "0"], "scale": ["--scale", "-1"],
       "scale_nan": ["--scale", "nan"], "scale_huge": ["--scale", "1e30"], "noise_inf": ["--noise_sigma", "inf"],
       "blur_nan": ["--blur_sigma", "nan"], "eta_nan": ["--eta", "nan"],
       "kernel": ["--task", "motion_blur", "--kernel_size", "100001"], "batch": ["--batch_size", "30000"],
       "model": ["--model", "no-such-model"]}


@pytest.mark.parametrize("case", [*BAD, "size", "channels", "alpha", "gray16", "corrupt", "folder"])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(model_dir, tmp_path, case):
    folders = {"size": (32, "RGB"), "channels": (16, "L"), "alpha": (16, "RGBA"), "gray16": (16, "I;16")}
    if case in folders:
        args = ["--images", _bad_folder(tmp_path, *folders[case])]
    elif case in ("corrupt", "folder"):
        args = ["--images", _bad_folder(tmp_path, 16, "RGB", True) if case == "corrupt" else str(tmp_path / "no")]
    else:
        args = BAD[case]
    out = tmp_path / "o"
    result = _run(["--model", model_dir, "--num_inference_steps", "2", "--save_dir", str(out), *args])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error: "), result.output
    assert not out.exists()
    needle = {"gray16": "1 channel(s) (mode I;16)", "corrupt": "not a valid image file", "scale_nan": "finite",
              "kernel": "at most 65", "batch": "at most 4096", "scale_huge": "--scale"}.get(case, "")
    assert needle in result.output, result.output


@pytest.mark.parametrize("lazy", [False, True])  # True: the check is read a step late, as on a GPU
def test_a_huge_scale_stops_at_the_step_that_diverged(model_dir, tmp_path, monkeypatch, lazy):
    import dps.dps
    from common.divergence import LazyChecks

    made = []

    class Recorded(LazyChecks):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(dps.dps, "LazyChecks", Recorded)
    if lazy:
        monkeypatch.setattr(dps.dps, "LAZY_DEVICES", ("cuda", "cpu"))
    out = tmp_path / "o"
    result = _run(["--model", model_dir, "--num_images", "1", "--num_inference_steps", "3", "--scale", "1e6",
                   "--save_dir", str(out)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "at step 1 diverged" in result.output and "lower --scale" in result.output
    assert not out.exists()
    assert sum(c.calls for c in made) == (2 if lazy else 0)  # lazy: step 1 queued, read when step 2 is queued
