"""Bad input to python -m distillation.main / evaluate: one line, exit code 2, nothing written (issues #20, #21).

Also the shared option list (evaluate takes every main option), divergence, prompt limits, batches, --threads,
UMich HW5's output names and evaluate's strict JSON. Tiny random SD folder, 1-3 steps, in-process CliRunner.
"""

import json

import pytest
import torch
from click.testing import CliRunner

from distillation import evaluate, main, runner


@pytest.fixture
def invoke(tiny_sd_folder):
    """``invoke(args)``: python -m distillation.main on the tiny SD folder, on the CPU, 1 step unless given."""
    def call(args, command=main.main):
        base = ["--model", str(tiny_sd_folder), "--device", "cpu"] + ([] if "--steps" in args else ["--steps", "1"])
        return CliRunner().invoke(command, base + args)
    return call


def one_line_error(res) -> str:
    """The single ``Error:`` line of a refused command (no traceback), exit code 2."""
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


@pytest.mark.parametrize("args,message", [
    (["--guidance_scale", "nan"], "not a finite number"),
    (["--guidance_scale", "inf"], "not a finite number"),
    (["--guidance_scale", "1e30"], "-1000.0<=x<=1000.0"),
    (["--lr", "nan"], "not a finite number"),
    (["--lr", "inf"], "not a finite number"),
    (["--lr", "0"], "0<x<=10"),
    (["--inversion_eta", "1.5"], "0<=x<=1"),
    (["--lora_lr", "-inf"], "not a finite number"),
    (["--grad_clip", "nan"], "not a finite number"),
    (["--model", "toy-nope"], "unknown model 'toy-nope'"),
    (["--model", "toy-clip"], "is a clip model"),
    (["--prompt", "b" * 5000], "5000 characters"),
    (["--prompt", "a\x1bb"], "U+001B"),
    (["--negative_prompt", "x\x00"], "U+0000"),
    (["--loss_type", "pds", "--edit_prompt", "b", "--src_img_path", "BAD"], "not a valid image"),
])
def test_bad_values_are_one_line_and_write_nothing(tmp_path, invoke, args, message):
    (tmp_path / "BAD").write_text("not an image")
    args = [str(tmp_path / "BAD") if a == "BAD" else a for a in args]
    prompt = [] if "--prompt" in args else ["--prompt", "a"]
    res = invoke(prompt + args + ["--save_dir", str(tmp_path / "out")])
    assert message in one_line_error(res)
    assert not (tmp_path / "out").exists()  # not even config.json


def test_a_folder_in_the_way_of_a_final_image_is_found_before_optimising(tmp_path, invoke):
    (tmp_path / "out" / "a_dog.png").mkdir(parents=True)
    line = one_line_error(invoke(["--prompt", "a dog", "--save_dir", str(tmp_path / "out")]))
    assert "a_dog.png is a folder" in line and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_dog.png"]


def test_prompts_file_control_characters_and_size_name_the_line(tmp_path, invoke):
    bad = tmp_path / "p.txt"
    bad.write_bytes(b"a red circle\n# fine\na blue\x00 square\n")
    assert "p.txt line 3" in one_line_error(invoke(["--prompts_file", str(bad), "--save_dir", str(tmp_path / "o")]))
    bad.write_text("a\x0cb\nc\n")  # a form feed is not a line end here: still line 1
    assert "line 1" in one_line_error(invoke(["--prompts_file", str(bad), "--save_dir", str(tmp_path / "o")]))
    many = tmp_path / "many.txt"
    many.write_text("".join(f"prompt {i}\n" for i in range(10_000)))
    line = one_line_error(invoke(["--prompts_file", str(many), "--save_dir", str(tmp_path / "o")]))
    assert f"more than {runner.MAX_PROMPTS} prompts (line {runner.MAX_PROMPTS + 1})" in line
    assert not (tmp_path / "o").exists()


def test_a_finite_blow_up_stops_naming_the_step_and_cause(tmp_path, load_tiny_sd):
    cfg = runner.RunConfig(items=[runner.Item("a red circle")], steps=3, lr=1e6, warmup_steps=0, log_step=1,
                           save_dir=str(tmp_path), model="unused")
    with pytest.raises(runner.UserError, match=r"latents at step 0 diverged .*too large --lr \(1e\+06\)"):
        runner.run(cfg, progress=False, pipe=load_tiny_sd())
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob(".tmp-*"))  # no garbage snapshot


def test_pixels_diverge_under_the_cli_learning_rate_cap(tmp_path, invoke):
    res = invoke(["--prompt", "a", "--representation", "pixel", "--lr", "10", "--warmup_steps", "0", "--steps", "40",
                  "--log_step", "0", "--save_dir", str(tmp_path)])
    assert "the optimised pixels at step" in one_line_error(res) and not list(tmp_path.glob("*.png"))


def test_evaluate_takes_every_main_option_from_one_declaration():
    own = {"prompts", "prompts_file", "edit_prompt", "src_img_path", "save_dir", "debug", "help"}
    main_opts = {p.name: p.opts for p in main.main.params if p.name not in own}
    eval_opts = {p.name: p.opts for p in evaluate.main.params}
    assert set(runner.OPTION_NAMES) <= set(main_opts) and {"inversion_n_steps", "ism_grid"} <= set(main_opts)
    assert all(eval_opts[name] == opts for name, opts in main_opts.items())


def test_evaluate_refuses_an_unknown_clip_before_optimising(tmp_path, invoke):
    res = invoke(["--clip_model", "toy-nope", "--save_root", str(tmp_path / "ev")], command=evaluate.main)
    assert "unknown model 'toy-nope'" in one_line_error(res) and not (tmp_path / "ev").exists()


def test_evaluate_runs_an_ablation_flag_through(tmp_path, invoke):
    from common.toy.clip_model import create_toy_clip, save_toy_clip

    clip = save_toy_clip(create_toy_clip(), tmp_path / "clip")
    res = invoke(["--loss_type", "sdi", "--inversion_n_steps", "2", "--sdi_update_interval", "3",
                  "--sdi_inversion_form", "ddim", "--batch_size", "4", "--clip_model", str(clip), "--log_step", "0",
                  "--save_root", str(tmp_path / "ev")], command=evaluate.main)
    assert res.exit_code == 0 and not res.exception, res.output
    cfg = json.loads((tmp_path / "ev" / "sdi" / "config.json").read_text())
    assert (cfg["inversion_n_steps"], cfg["sdi_update_interval"], cfg["sdi_inversion_form"]) == (2, 3, "ddim")
    assert cfg["batch_size"] == 4 and len(cfg["prompts"]) == 10  # 10 handout prompts in batches 4 + 4 + 2
    data = json.loads((tmp_path / "ev" / "sdi" / "eval.json").read_text(), parse_constant=pytest.fail)
    assert -1 <= data["score"] <= 1 and "not_finite" not in data


def test_eval_json_reports_a_nan_score_as_null_never_zero(tmp_path):
    data = evaluate.write_results(tmp_path, {"source_dir": "x", "x/a.png": float("nan"), "score": float("nan")},
                                  {"all": 0.5})
    stored = json.loads((tmp_path / "eval.json").read_text(), parse_constant=pytest.fail)
    assert stored == data and stored["score"] is None and stored["x/a.png"] is None
    assert stored["not_finite"] == ["x/a.png", "score"] and stored["toy_judge"] == {"all": 0.5}


def test_batches_threads_and_umich_names(tmp_path, invoke, monkeypatch):
    sizes = []
    build = runner.Run.__init__
    monkeypatch.setattr(runner.Run, "__init__", lambda self, cfg, *a: (sizes.append(len(cfg.items)),
                                                                       build(self, cfg, *a))[1])
    out = tmp_path / "three"
    torch.set_num_threads(2)  # the fixture restores 1; --threads 1 must hold during the run, 2 after it
    res = invoke(["--prompt", "a", "--prompt", "b", "--prompt", "c", "--batch_size", "2", "--threads", "1",
                  "--log_step", "0", "--save_dir", str(out)])
    assert res.exit_code == 0 and not res.exception, res.output
    cfg = json.loads((out / "config.json").read_text())
    assert sizes == [2, 1] and len(cfg["prompts"]) == 3 and sorted(p.name for p in out.glob("*.png")) == \
        ["a.png", "b.png", "c.png"]
    assert cfg["threads"] == 1 and cfg["_run"]["torch_threads"] == 1 and torch.get_num_threads() == 2
    torch.set_num_threads(1)
    umich = tmp_path / "SDS_results"
    res = invoke(["--generation_mode=sds", f"--store_dir={umich}", "--prompt", "a dog", "--steps", "3",
                  "--log_step", "1"])
    assert res.exit_code == 0 and not res.exception, res.output
    from common.images import load_image

    torch.testing.assert_close(load_image(umich / "generated_image.png"), load_image(umich / "a_dog.png"))
    strip = load_image(umich / "generated_progressive.png")  # steps 0, 1, 2: 16 px frames x 4 = 64 px cells
    assert strip.shape[-1] == 3 * (64 + 4) + 4 and strip.shape[-2] > 4 + 64 + 4 + 10  # a label band under them
    torch.testing.assert_close(strip, load_image(umich / "progress" / "a_dog" / "progressive.png"))
    assert not list(tmp_path.rglob(".tmp-*"))


def test_model_defaults_follow_the_registry_not_the_name(tmp_path, tiny_sd_folder, monkeypatch):
    from distillation.presets import resolve_settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "toy-local").symlink_to(tiny_sd_folder)  # a local folder named toy-*: still a real model

    def layered(model):
        out = resolve_settings("vsd", "latent", None, {}, {"model": model, "lora_lr": None, "threads": None})
        return out["lora_lr"], out["threads"]

    assert layered("toy-sd") == (1e-3, 1) and layered("toy-local") == (1e-4, 0) and layered("sd-2.1-base") == (1e-4, 0)


def test_measure_toy_set_uses_the_option_types():
    from distillation.measure_toy import parse_overrides

    assert parse_overrides(("lr=0.05", "ism_grid=luciddreamer")) == {"lr": 0.05, "ism_grid": "luciddreamer"}
    for bad in ("lr=nan", "guidance_scale=1e30", "precision=fp8"):
        with pytest.raises(ValueError, match=f"--set {bad.split('=')[0]}"):
            parse_overrides((bad,))
