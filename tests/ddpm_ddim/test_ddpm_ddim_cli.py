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
    assert sorted(p.name for p in out.glob("*_generated_image*.png")) == [f"{name}_generated_image{i}.png"
                                                                            for i in range(3)]
    assert Image.open(out / f"{name}_generated_image0.png").size == (16, 16)
    assert Image.open(out / "grid.png").size == (2 * 66 + 2, 2 * 66 + 2)  # 2 x 2 of 16 px enlarged x4, 2 px padding
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


def test_default_save_dir_is_the_handouts(model_dir, tmp_path, monkeypatch):
    """The handout's execute_DDPM_DDIM.py writes DDPM_results/DDPM_generated_image{i}.png (DDIM likewise)."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["-n", "ddpm", "--num_inference_steps", "1", "--num_samples", "1", "--model",
                                       model_dir, "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0 and not result.exception, result.output
    assert (tmp_path / "DDPM_results" / "DDPM_generated_image0.png").is_file()
    timing = json.loads((tmp_path / "DDPM_results" / "timing.json").read_text())
    assert (timing["precision"], timing["unet_dtype"]) == ("auto", "float32")  # auto is fp32 on a CPU


@pytest.mark.parametrize("args,needle", [
    (["--num_inference_steps", "0"], "--num_inference_steps"), (["--num_inference_steps", "5000"], "at most 1000"),
    (["--eta", "2"], "--eta"), (["--eta", "nan"], "not a finite number"), (["--model", "no-such-model"], "no-such"),
    (["--scheduler_name", "PNDM"], "PNDM"), (["--batch_size", "30000"], "at most 16384"),
    (["--num_samples", "20000"], "--num_samples")])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(model_dir, tmp_path, args, needle):
    base = ["--scheduler_name", "DDIM", "--model", model_dir, "--device", "cpu", "--save_dir", str(tmp_path / "o")]
    result = CliRunner().invoke(main, base + args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("Error: "), result.output
    assert needle in result.output
    assert not (tmp_path / "o").exists()
