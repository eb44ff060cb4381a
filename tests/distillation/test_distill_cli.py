"""python -m distillation.main through click's runner on a tiny random Stable Diffusion folder."""

import json

import pytest
import torch
from click.testing import CliRunner
from distill_helpers import one_thread, tiny_sd_folder

from common.images import save_image
from distillation.main import main
from distillation.presets import PRESETS


@pytest.fixture(autouse=True)
def _single_thread():
    with one_thread():
        yield


def invoke(args):
    return CliRunner().invoke(main, ["--model", str(tiny_sd_folder()), "--device", "cpu"] + args)


def finals(folder):
    return sorted(p.name for p in folder.glob("*.png"))


def test_sds_run_writes_final_image_progress_and_config(tmp_path):
    out = tmp_path / "out"
    res = invoke(["--prompt", "a red circle", "--prompt", "a blue square", "--steps", "4", "--log_step", "2",
                  "--save_dir", str(out), "--seed", "3"])
    assert res.exit_code == 0 and not res.exception, res.output
    assert finals(out) == ["a_blue_square.png", "a_red_circle.png"]
    progress = out / "progress" / "a_red_circle"
    assert sorted(p.name for p in progress.iterdir()) == ["progress.gif", "step_0000.png", "step_0002.png",
                                                          "step_0003.png"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 3 and cfg["guidance_scale"] == 25.0 and cfg["steps"] == 4 and cfg["lr"] == 0.1
    assert "torch" in cfg["_run"]["versions"] and len(cfg["prompts"]) == 2


def test_preset_applies_and_explicit_flags_override(tmp_path):
    out = tmp_path / "o"
    res = invoke(["--preset", "nycu-lab3", "--loss_type", "sdi", "--prompt", "a dog", "--step", "2",
                  "--inversion_n_steps", "2", "--log_step", "0", "--save_dir", str(out), "--lr", "0.05"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    nycu = PRESETS["nycu-lab3"]
    assert cfg["lr"] == 0.05 and cfg["steps"] == 2 and cfg["inversion_n_steps"] == 2  # explicit flags win
    assert cfg["model"] == str(tiny_sd_folder())
    assert cfg["guidance_scale"] == nycu["sdi"]["guidance_scale"] and cfg["grad_clip"] == nycu["common"]["grad_clip"]
    assert cfg["negative_prompt"] == "low quality" and cfg["t_schedule"] == "linear"
    assert finals(out) == ["a_dog.png"]


def test_pds_pixel_edit_from_prompts_file(tmp_path):
    src = tmp_path / "src.png"
    save_image(torch.rand(3, 16, 16) * 2 - 1, src)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"a red circle | a green circle | {src}\n# comment\na blue square | a blue star\n")
    out = tmp_path / "edit"
    res = invoke(["--loss_type", "pds", "--prompts_file", str(pairs), "--src_img_path", str(src),
                  "--representation", "pixel", "--steps", "2", "--log_step", "1", "--save_dir", str(out)])
    assert res.exit_code == 0, res.output
    assert finals(out) == ["a_blue_star.png", "a_green_circle.png"]


def test_vsd_and_dds_smoke(tmp_path):
    src = tmp_path / "src.png"
    save_image(torch.zeros(3, 16, 16), src)
    for args in (["--loss_type", "vsd"], ["--loss_type", "dds", "--edit_prompt", "a cat", "--src_img_path", str(src)],
                 ["--loss_type", "ism", "--t_schedule", "hifa"]):
        out = tmp_path / args[1]
        res = invoke(args + ["--prompt", "a dog", "--steps", "2", "--log_step", "0", "--save_dir", str(out)])
        assert res.exit_code == 0, (args, res.output)
        assert len(finals(out)) == 1


@pytest.mark.parametrize("args,message", [
    (["--prompt", "  "], "prompt is empty"),
    (["--prompt", "a", "--loss_type", "pds", "--edit_prompt", "b"], "--src_img_path"),
    (["--prompt", "a", "--loss_type", "pds", "--edit_prompt", "b", "--src_img_path", "BAD"], "not a valid image"),
    (["--prompt", "a", "--loss_type", "pds", "--src_img_path", "BAD"], "--edit_prompt"),
    (["--prompt", "a", "--loss_type", "xyz"], "xyz"),
    (["--prompt", "a", "--preset", "mit-6.s978"], "mit-6.s978"),
    (["--prompt", "a", "--preset", "kaist-a4", "--loss_type", "sdi"], "covers"),
    (["--prompt", "a", "--steps", "-5"], "-5"),
    (["--prompt", "a", "--prompt", "a"], "duplicate"),
    ([], "--prompt"),
])
def test_bad_inputs_give_one_line_error_and_no_image(tmp_path, args, message):
    (tmp_path / "BAD").write_text("not an image")
    args = [a if a != "BAD" else str(tmp_path / "BAD") for a in args]
    out = tmp_path / "out"
    res = invoke(args + ["--steps", "1", "--save_dir", str(out)] if "--steps" not in args else
                 args + ["--save_dir", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists() or not finals(out)


def test_nan_during_optimisation_is_a_clean_error(tmp_path, monkeypatch):
    from distillation.guidance import Guidance

    def nan_loss(self, latents, *args, **kwargs):
        return (latents * float("nan")).sum()

    monkeypatch.setattr(Guidance, "get_sds_loss", nan_loss)
    out = tmp_path / "nan"
    res = invoke(["--prompt", "a red circle", "--steps", "3", "--save_dir", str(out)])
    assert res.exit_code == 2 and "NaN" in res.output
    assert len(res.output.strip().splitlines()[-1]) > 0 and "Traceback" not in res.output
    assert not finals(out)


def test_schedules_plot_cli(tmp_path):
    from distillation.schedules import main as schedules_main

    res = CliRunner().invoke(schedules_main, ["--plot", str(tmp_path / "s.png"), "--steps", "50"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_lora_lr_default_depends_on_model_and_yields_to_presets_and_flags():
    from distillation.presets import resolve_settings

    def lora_lr(model, preset=None, explicit=None):
        defaults = {"model": model, "lora_lr": None}
        return resolve_settings("vsd", "latent", preset, explicit or {}, defaults)["lora_lr"]

    assert lora_lr("toy-sd") == 1e-3
    assert lora_lr("sd-2.1-base") == 1e-4
    assert lora_lr("toy-sd", preset="nycu-lab3") == 1e-4  # the preset's handout value (and its SD model)
    assert lora_lr("toy-sd", explicit={"lora_lr": 5e-4}) == 5e-4
