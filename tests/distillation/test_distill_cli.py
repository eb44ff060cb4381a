"""python -m distillation.main through click's runner on a tiny random Stable Diffusion folder."""

import json

import pytest
import torch
from click.testing import CliRunner

from common.images import load_image, save_image
from distillation.main import main
from distillation.presets import PRESETS


@pytest.fixture
def invoke(tiny_sd_folder):
    """``invoke(args)``: python -m distillation.main on the tiny SD folder, on the CPU."""
    return lambda args: CliRunner().invoke(main, ["--model", str(tiny_sd_folder), "--device", "cpu"] + args)


def finals(folder):
    """Final images named after their prompts (not UMich HW5's generated_*.png of a single-prompt run)."""
    return sorted(p.name for p in folder.glob("*.png") if not p.name.startswith("generated_"))


def test_sds_run_writes_final_image_progress_and_config(tmp_path, invoke):
    out = tmp_path / "out"
    res = invoke(["--prompt", "a red circle", "--prompt", "a blue square", "--steps", "4", "--log_step", "2",
                  "--save_dir", str(out), "--seed", "3"])
    assert res.exit_code == 0 and not res.exception, res.output
    assert finals(out) == ["a_blue_square.png", "a_red_circle.png"]
    progress = out / "progress" / "a_red_circle"
    assert sorted(p.name for p in progress.iterdir()) == ["progress.gif", "progressive.png", "step_0000.png",
                                                          "step_0002.png", "step_0003.png"]
    assert not (out / "generated_image.png").exists()  # UMich's names only for a single-prompt run
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 3 and cfg["guidance_scale"] == 25.0 and cfg["steps"] == 4 and cfg["lr"] == 0.1
    assert cfg["precision"] == "auto" and cfg["threads"] == 0 and cfg["batch_size"] == 32  # a local folder: 0
    assert "torch" in cfg["_run"]["versions"] and len(cfg["prompts"]) == 2


def test_preset_applies_and_explicit_flags_override(tmp_path, invoke, tiny_sd_folder):
    out = tmp_path / "o"
    res = invoke(["--preset", "nycu-lab3", "--loss_type", "sdi", "--prompt", "a dog", "--step", "2",
                  "--inversion_n_steps", "2", "--log_step", "0", "--save_dir", str(out), "--lr", "0.05"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "config.json").read_text())
    nycu = PRESETS["nycu-lab3"]
    assert cfg["lr"] == 0.05 and cfg["steps"] == 2 and cfg["inversion_n_steps"] == 2  # explicit flags win
    assert cfg["model"] == str(tiny_sd_folder)
    assert cfg["guidance_scale"] == nycu["sdi"]["guidance_scale"] and cfg["grad_clip"] == nycu["common"]["grad_clip"]
    assert cfg["negative_prompt"] == "low quality" and cfg["t_schedule"] == "linear"
    assert finals(out) == ["a_dog.png"]


def test_pds_pixel_edit_from_prompts_file(tmp_path, invoke):
    src = tmp_path / "src.png"
    save_image(torch.rand(3, 16, 16) * 2 - 1, src)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(f"a red circle | a green circle | {src}\n# comment\na blue square | a blue star\n")
    out = tmp_path / "edit"
    res = invoke(["--loss_type", "pds", "--prompts_file", str(pairs), "--src_img_path", str(src),
                  "--representation", "pixel", "--steps", "2", "--log_step", "1", "--save_dir", str(out)])
    assert res.exit_code == 0, res.output
    assert finals(out) == ["a_blue_star.png", "a_green_circle.png"]


def test_vsd_and_dds_smoke(tmp_path, invoke):
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
    (["--prompt", "a", "--loss_type", "vsd", "--compile"], "--compile does not apply to vsd"),
    ([], "--prompt"),
])
def test_bad_inputs_give_one_line_error_and_no_image(tmp_path, args, message, invoke):
    (tmp_path / "BAD").write_text("not an image")
    args = [a if a != "BAD" else str(tmp_path / "BAD") for a in args]
    out = tmp_path / "out"
    res = invoke(args + ["--steps", "1", "--save_dir", str(out)] if "--steps" not in args else
                 args + ["--save_dir", str(out)])
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert not out.exists() or not finals(out)


def test_nan_during_optimisation_is_a_clean_error(tmp_path, monkeypatch, invoke):
    from distillation.guidance import Guidance

    def nan_loss(self, latents, *args, **kwargs):
        return (latents * float("nan")).sum()

    monkeypatch.setattr(Guidance, "get_sds_loss", nan_loss)
    out = tmp_path / "nan"
    res = invoke(["--prompt", "a red circle", "--steps", "3", "--save_dir", str(out)])
    assert res.exit_code == 2 and "NaN" in res.output
    assert len(res.output.strip().splitlines()[-1]) > 0 and "Traceback" not in res.output
    assert not finals(out)


def test_schedules_plot_cli(tmp_path, invoke):
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


def test_untyped_warmup_is_at_most_a_fifth_of_the_run():
    from distillation.presets import resolve_settings

    def warmup(steps, preset=None, loss_type="sdi", explicit=None):
        explicit = {"steps": steps, **(explicit or {})} if steps is not None else dict(explicit or {})
        return resolve_settings(loss_type, "latent", preset, explicit, {"warmup_steps": 100, "steps": 500})[
            "warmup_steps"]

    assert warmup(50) == 10 and warmup(None) == 100 and warmup(2000) == 100  # the handouts' 100 of 500 steps
    assert warmup(None, "nycu-lab3") == 100 and warmup(50, "kaist-a4", "sds") == 10  # a preset's 100 too
    assert warmup(50, explicit={"warmup_steps": 30}) == 30  # typed: kept


def test_typed_warmup_as_long_as_the_run_is_refused(tmp_path, invoke):
    res = invoke(["--prompt", "a red circle", "--steps", "4", "--warmup_steps", "4", "--save_dir", str(tmp_path)])
    assert res.exit_code == 2 and res.output.count("\n") == 1, res.output
    assert "--warmup_steps 4 is not below --steps 4" in res.output and not finals(tmp_path)


def test_a_50_step_sdi_run_on_the_toy_default_is_judged_right(tmp_path, invoke):
    """Issue #20: with the 100-step warm-up of a 500-step run, 50 steps never left warm-up (coloured noise)."""
    from common.toy.judge import fully_correct

    prompt = "a red circle on a blue background"
    res = CliRunner().invoke(main, ["--loss_type", "sdi", "--steps", "50", "--prompt", prompt, "--device", "cpu",
                                    "--log_step", "0", "--save_dir", str(tmp_path)])
    assert res.exit_code == 0 and not res.exception, res.output
    assert json.loads((tmp_path / "config.json").read_text())["warmup_steps"] == 10
    image = load_image(tmp_path / f"{prompt.replace(' ', '_')}.png", size=64)
    assert bool(fully_correct(image[None], [prompt])[0])
