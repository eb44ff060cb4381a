"""Options of synchronization.main / evaluate: refusals in one line, the config dataclasses, skeleton output folders,
labelled panels, the image-px width message and the toy judge in the evaluation."""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from common.images import load_image, save_image
from synchronization import evaluate
from synchronization.config import AmbiguousConfig, WideConfig, build_config, output_dir
from synchronization.main import main
from synchronization.wide_image import check_side

CIRCLE, SQUARE = "a white circle on a black background", "a white square on a black background"


def _one_line_error(result, needle):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], result.output
    assert "Traceback" not in result.output


def _evaluate(folder):
    return CliRunner().invoke(evaluate.main, ["--app", "ambiguous_image", "--fdir", str(folder), "--device", "cpu"])


@pytest.mark.parametrize("args,needle", [
    (["--app", "wide_image", "--prompt", "x", "--guidance_scale", "nan"], "--guidance_scale"),
    (["--app", "wide_image", "--prompt", "x", "--guidance_scale", "inf"], "not a finite number"),
    (["--app", "wide_image", "--prompt", "x", "--guidance_scale", "1e30"], "--guidance_scale"),
    (["--app", "ambiguous_image", "--prompts", "a", "b", "--views_names", "identity", "inner_rotate",
      "--rotate_angle", "nan"], "--rotate_angle"),
    (["--app", "ambiguous_image", "--prompts", "a", "b", "--width", "64"], "--width is not an option"),
    (["--app", "wide_image", "--prompt", "x", "--tag", "t", "--save_dir", "d"], "not both"),
    (["--app", "wide_image", "--prompt", "x", "--canonical_denoising", "--init", "independent"], "--init canonical"),
])
def test_bad_options_are_one_line_and_write_nothing(args, needle, tmp_path):
    result = CliRunner().invoke(main, [*args, "--save_top_dir", str(tmp_path / "top"), "--device", "cpu"],
                                catch_exceptions=False)
    _one_line_error(result, needle)
    assert not (tmp_path / "top").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lazy", [False, True])  # True: each step's check is read a step late, as on a GPU
def test_huge_guidance_stops_at_the_step_that_blew_up(tiny_pixel_folder, tmp_path, monkeypatch, lazy):
    import synchronization.core

    if lazy:
        monkeypatch.setattr(synchronization.core, "LAZY_DEVICES", ("cuda", "cpu"))
    made = []

    class Recorded(synchronization.core.StepChecks):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(synchronization.core, "StepChecks", Recorded)
    out = tmp_path / "amb"
    result = CliRunner().invoke(main, ["--app", "ambiguous_image", "--prompts", "a red circle", "a blue square",
                                       "--model", str(tiny_pixel_folder), "--num_inference_steps", "3",
                                       "--guidance_scale", "1e6", "--save_dir", str(out), "--device", "cpu",
                                       "--no_progress"])
    _one_line_error(result, "at step 0 diverged")
    assert "--guidance_scale" in result.output and not out.exists()
    assert sum(c.calls for c in made) == (2 if lazy else 0)  # lazy: step 0 queued, read when step 1 is queued


def test_configs_validate_in_one_place_and_record_as_json():
    cfg = build_config({"app": "ambiguous_image", "prompts": ("p", "q"), "views_names": (), "model": None,
                        "guidance_scale": None, "rotate_angle": 90.0, "no_progress": True})
    assert isinstance(cfg, AmbiguousConfig) and cfg.views_names == ("identity", "rotate_cw")
    assert (cfg.model, cfg.num_inference_steps, cfg.guidance_scale, cfg.precision) == ("toy-pixel", 30, 10.0, "auto")
    record = json.loads(json.dumps(cfg.record(), allow_nan=False))
    assert record["prompts"] == ["p", "q"] and record["progress"] is False
    wide = WideConfig(prompt="p", eval_pos=[0, 8])
    assert (wide.model, wide.num_inference_steps, wide.guidance_scale, wide.eval_pos) == ("toy-sd", 50, 7.5, (0, 8))
    with pytest.raises(ValueError, match="1 prompt"):
        AmbiguousConfig(prompts=("only one",))
    with pytest.raises(ValueError, match="guidance_scale"):
        WideConfig(prompt="p", guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="unknown view"):
        AmbiguousConfig(prompts=("a", "b"), views_names=("identity", "spin"))
    with pytest.raises(ValueError, match="non-empty --prompt"):
        WideConfig(prompt="  ")


def test_tag_and_save_dir_now_name_the_folder_like_the_skeleton(tmp_path):
    now = dt.datetime(2024, 11, 2, 9, 5, 7)
    assert output_dir("wide_image", tag="wide_image", save_dir_now=True, save_top_dir=str(tmp_path), now=now) \
        == tmp_path / "wide_image" / "11-02-090507"
    assert output_dir("wide_image", tag="t", save_top_dir="outputs") == tmp_path.__class__("outputs/t")
    assert output_dir("ambiguous_image") == tmp_path.__class__("outputs/ambiguous_image")
    assert output_dir("wide_image", save_dir=str(tmp_path / "d"), save_dir_now=True, now=now) \
        == tmp_path / "d" / "11-02-090507"
    with pytest.raises(ValueError, match="plain folder name"):
        output_dir("wide_image", tag="../up")


def test_tagged_ambiguous_run_writes_a_labelled_toy_panel(tiny_pixel_folder, tmp_path):
    result = CliRunner().invoke(main, ["--app", "ambiguous_image", "--prompts", CIRCLE, SQUARE, "--model",
                                       str(tiny_pixel_folder), "--num_inference_steps", "2", "--tag",
                                       "ambiguous_image", "--save_dir_now", "--save_top_dir", str(tmp_path),
                                       "--device", "cpu", "--no_progress"])
    assert result.exit_code == 0 and not result.exception, result.output
    (run,) = list((tmp_path / "ambiguous_image").iterdir())
    dt.datetime.strptime(run.name, "%m-%d-%H%M%S")  # the skeleton's time stamp folder
    config = json.loads((run / "config.json").read_text())
    assert config["tag"] == "ambiguous_image" and config["save_dir_now"] is True and config["precision"] == "auto"
    assert config["save_dir"] == run.as_posix() and (run / "a_white_circle_on_a_black_background.png").is_file()
    with Image.open(run / "extra" / "panel.png") as img:
        panel = np.asarray(img.convert("L")).astype(int)
    assert panel.shape[1] == 2 * (16 * 4 + 4) + 4 and panel.shape[0] > 16 * 4 + 4 + 20  # x4 tiles + a label band
    for left in (4, 4 + 68):  # each tile: the image, then its label (dark text on white) under it
        band = panel[4 + 64 : -4, left : left + 64]
        assert band.max() == 255 and (band < 100).sum() > 30


def test_width_error_states_the_image_pixel_constraint():
    with pytest.raises(ValueError) as info:
        check_side("width", 90, factor=2, window=8, stride=2)  # 16-px windows every 4 px
    msg = str(info.value)
    assert "--width 90 px is not reachable" in msg and "16 + k * 4 px" in msg and "e.g. 88 or 92" in msg
    check_side("width", 96, factor=2, window=8, stride=2)  # 16 + 20 * 4
    with pytest.raises(ValueError, match="multiple of the stride 8 px"):
        check_side("width", 100, factor=2, window=8, stride=4, circular=True)


L_BLOB = Path(__file__).with_name("toy_pixel_l_blob.png")  # toy-pixel, seed 1, 30 steps: CIRCLE / SQUARE


def _write_l_shaped_illusion(folder):
    """toy-pixel's failed illusion: an L-shaped blob, identity view for CIRCLE, rotated cw for SQUARE."""
    canonical = load_image(L_BLOB)  # [3, 64, 64]
    save_image(canonical, folder / "a_white_circle_on_a_black_background.png")
    save_image(torch.rot90(canonical, -1, dims=(-2, -1)), folder / "a_white_square_on_a_black_background.png")
    (folder / "pairs.json").write_text(json.dumps([{"prompts": [CIRCLE, SQUARE], "views": ["identity", "rotate_cw"]}]))
    (folder / "config.json").write_text(json.dumps({"model": "toy-pixel"}))


def test_pixel_judge_fits_clean_shapes_and_rejects_the_l_blob():
    from common.toy import shapes
    from common.toy.shape_judge import judge_image, verdict

    specs = shapes.sample_specs(12, shapes.split_seed("test"))
    for spec, image in zip(specs, shapes.render(specs)):
        got = verdict(image, shapes.caption(spec))
        assert got["correct"] and got["iou"] > 0.9, (spec, got)
    blob = verdict(load_image(L_BLOB), CIRCLE)
    assert not blob["correct"] and blob["color"] == "white" and blob["background"] == "black" and blob["iou"] < 0.7
    assert judge_image(torch.full((3, 64, 64), -0.8))["shape"] is None  # a flat image has no object


def test_both_toy_judges_report_the_l_blob_illusion(tmp_path):
    from common.toy.clip_model import DEFAULT_FOLDER

    if not (DEFAULT_FOLDER / "open_clip_model.safetensors").is_file():
        pytest.skip("shipped toy-clip weights (the judge) not present")
    _write_l_shaped_illusion(tmp_path)
    result = _evaluate(tmp_path)
    assert result.exit_code == 0 and not result.exception, result.output
    assert "CLIP model: toy-clip (run of toy model 'toy-pixel')" in result.output
    data = json.loads((tmp_path / "eval.json").read_text())
    circle, square = ((tmp_path / f"{p.replace(' ', '_')}.png").as_posix() for p in (CIRCLE, SQUARE))
    assert min(data[circle], data[square]) > 0.85  # the cosine alone passes both views
    judged = data["toy_judge"]["images"]
    assert judged[square]["clip"] == SQUARE and isinstance(judged[circle]["clip_correct"], bool)
    assert judged[circle]["pixel_correct"] is False and judged[square]["pixel_correct"] is False
    assert data["toy_judge"]["judged"] == 2 and data["toy_judge"]["pixel_accuracy"] == 0.0
    assert data["illusions"][0]["toy_judge"]["pixel_all_correct"] is False
    assert data["illusions_judged_correct"]["pixel"] == 0.0 and "WRONG" in result.output


@pytest.mark.parametrize("content,needle", [
    ("{not json", "is not valid JSON"),
    ('[{"prompts": "a white circle"}]', "must be a list of"),
    ('[{"prompts": [NaN]}]', "is not valid JSON"),
])
def test_malformed_pairs_json_is_one_line(content, needle, tmp_path):
    _write_l_shaped_illusion(tmp_path)
    (tmp_path / "pairs.json").write_text(content)
    result = _evaluate(tmp_path)
    _one_line_error(result, needle)
    assert not (tmp_path / "eval.json").exists()


def test_malformed_pairs_json_stops_a_run_before_it_starts(tmp_path):
    out = tmp_path / "amb"
    out.mkdir()
    (out / "pairs.json").write_text("[1, 2")
    result = CliRunner().invoke(main, ["--app", "ambiguous_image", "--prompts", CIRCLE, SQUARE, "--save_dir", str(out),
                                       "--device", "cpu", "--no_progress"])
    _one_line_error(result, "pairs.json")
    assert [p.name for p in out.iterdir()] == ["pairs.json"]


@pytest.mark.parametrize("config,expected", [
    ({"model": "toy-sd"}, "toy-clip"), ({"model": "sd-2-base"}, "clip-vit-b-32"),
    ("{broken", "is not valid JSON"), ({"model": "toy-nonexistent"}, "unknown here"), ([1, 2], "names no model"),
])
def test_default_clip_follows_the_registry_toy_flag(config, expected, tmp_path):
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if expected.startswith(("toy-", "clip-")):
        assert evaluate.default_clip_model(tmp_path)[0] == expected
        return
    with pytest.raises(ValueError, match=expected) as info:
        evaluate.default_clip_model(tmp_path)
    assert "\n" not in str(info.value)


def test_a_local_model_folder_is_not_a_toy_run(tiny_sd_folder, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model": str(tiny_sd_folder)}))
    assert evaluate.default_clip_model(tmp_path)[0] == "clip-vit-b-32"
