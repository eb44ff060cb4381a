"""python -m ddpm_ddim.main end to end on a tiny random DDPM folder, and its one-line errors."""

import json

import pytest
import torch
from click.testing import CliRunner
from diffusers import DDPMPipeline
from PIL import Image

from common.toy.train_faces import build_tiny_unet, save_pipeline
from ddpm_ddim.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_pipeline(build_tiny_unet(16), tmp_path_factory.mktemp("tiny") / "ddpm"))


def test_folder_is_a_diffusers_ddpm_pipeline(model_dir):
    pipe = DDPMPipeline.from_pretrained(model_dir)
    cfg = pipe.scheduler.config
    assert (cfg.variance_type, cfg.clip_sample, cfg.beta_schedule, cfg.num_train_timesteps) == (
        "fixed_small", True, "linear", 1000)
    assert (cfg.beta_start, cfg.beta_end) == (1e-4, 0.02)
    assert pipe.unet.config.sample_size == 16


@pytest.mark.parametrize("name,steps,extra", [("DDPM", 3, []), ("DDIM", 2, ["--eta", "0.5"]),
                                              ("DDIM", 3, ["--timestep_spacing", "linspace"])])
def test_sampling_writes_pngs_grid_timing_config(model_dir, tmp_path, name, steps, extra):
    out = tmp_path / name
    result = CliRunner().invoke(main, ["--scheduler_name", name, "--num_inference_steps", str(steps), "--num_samples",
                                       "3", "--batch_size", "2", "--model", model_dir, "--device", "cpu",
                                       "--save_dir", str(out), "--no-progress"] + extra)
    assert result.exit_code == 0 and not result.exception, result.output
    assert [p.name for p in sorted(out.glob("0*.png"))] == ["000.png", "001.png", "002.png"]
    assert Image.open(out / "000.png").size == (16, 16) and (out / "grid.png").is_file()
    timing = json.loads((out / "timing.json").read_text())
    assert timing["num_inference_steps"] == steps and timing["seconds"] > 0
    assert f"{name} {steps} steps: 3 images in" in result.output
    assert json.loads((out / "config.json").read_text())["scheduler_name"] == name


def test_timing_records_the_batch_that_ran(model_dir, tmp_path):
    """--num_samples 2 with the default --batch_size 10 runs one UNet batch of 2 (issue #20)."""
    out = tmp_path / "two"
    result = CliRunner().invoke(main, ["-n", "DDIM", "--num_inference_steps", "1", "--num_samples", "2", "--model",
                                       model_dir, "--device", "cpu", "--save_dir", str(out), "--no-progress"])
    assert result.exit_code == 0 and not result.exception, result.output
    timing = json.loads((out / "timing.json").read_text())
    assert (timing["batch_size"], timing["requested_batch_size"], timing["num_samples"]) == (2, 10, 2)
    assert "batch 2," in result.output


@pytest.mark.parametrize("args", [["--num_inference_steps", "0"], ["--num_inference_steps", "5000"],
                                  ["--eta", "2"], ["--model", "no-such-model"], ["--scheduler_name", "PNDM"]])
def test_bad_input_exit_2(model_dir, tmp_path, args):
    base = ["--scheduler_name", "DDIM", "--model", model_dir, "--device", "cpu", "--save_dir", str(tmp_path / "o")]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2 and "Error" in result.output and "Traceback" not in result.output, result.output
    if args[0] == "--model" or args[1] == "5000":
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "grid.png").exists()
